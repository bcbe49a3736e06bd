#include "common/thread_pool.h"

#include <atomic>

#include <gtest/gtest.h>

namespace pilotlight {
namespace {

TEST(ThreadPool, ShutdownRunsEveryPostedTask) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(2);
    for (int i = 0; i < 100; ++i) pool.Post([&] { ran++; });
    pool.Shutdown();
    EXPECT_EQ(ran.load(), 100);
  }
}

TEST(ThreadPool, PostAfterShutdown_RunsInlineInsteadOfStranding) {
  ThreadPool pool(1);
  pool.Shutdown();
  bool ran = false;
  pool.Post([&] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST(ThreadPool, PoolsPostingToEachOther_ShutDownWithoutLosingTasks) {
  std::atomic<int> ran{0};
  auto a = std::make_unique<ThreadPool>(1);
  auto b = std::make_unique<ThreadPool>(1);
  for (int i = 0; i < 50; ++i) {
    a->Post([&] { b->Post([&] { ran++; }); });
    b->Post([&] { a->Post([&] { ran++; }); });
  }
  a->Shutdown();
  b->Shutdown();
  a->Shutdown();
  EXPECT_EQ(ran.load(), 100);
}

}  // namespace
}  // namespace pilotlight
