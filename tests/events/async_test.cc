// EventStore (SQLite) and AsyncInvoker with a fake executor: the event lifecycle, retries,
// dead letters, the concurrency share, recovery after a crash, destinations written once.
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "events/async_invoker.h"
#include "events/event_store.h"

namespace pilotlight::events {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

class EventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("pl_events_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::unique_ptr<EventStore> Open() {
    auto s = EventStore::Open((dir_ / "events.db").string());
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }
  static std::vector<std::string> Lines(const fs::path& p) {
    std::vector<std::string> out;
    std::ifstream in(p);
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }
  static void WaitFor(const std::function<bool()>& cond) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!cond()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "condition not reached";
      std::this_thread::sleep_for(5ms);
    }
  }
  fs::path dir_;
};

TEST_F(EventsTest, Store_LifecycleAndPersistence) {
  std::string id;
  {
    auto store = Open();
    auto ids = store->Insert({{"f", "{\"a\":1}"}, {"g", "x"}}, 1000);
    ASSERT_TRUE(ids.ok());
    ASSERT_EQ(ids->size(), 2u);
    id = (*ids)[0];
    auto claimed = store->ClaimDue(1000, 10, [](const Event& e) { return e.function == "f"; });
    ASSERT_TRUE(claimed.ok());
    ASSERT_EQ(claimed->size(), 1u);
    EXPECT_EQ(claimed->front().id, id);
    EXPECT_EQ(claimed->front().attempts, 1);
    ASSERT_TRUE(store->Retry(id, {1000, 1010, "boom"}, 5000).ok());
    EXPECT_TRUE(store->ClaimDue(4999, 10, [](const Event&) { return true; })->size() == 1u)
        << "only g is due; f waits for its backoff";
  }
  auto store = Open();  // reopened: everything is still there
  auto e = store->Get(id);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->status, EventStatus::kQueued);
  EXPECT_EQ(e->history.size(), 1u);
  EXPECT_EQ(e->history[0].error, "boom");
  EXPECT_EQ(store->RecoverRunning(6000).value(), 1) << "g was running when the store closed";
  auto again = store->ClaimDue(6000, 10, [](const Event&) { return true; });
  ASSERT_EQ(again->size(), 2u);
  ASSERT_TRUE(store->DeadLetter(id, {6000, 6001, "boom again"}, 6001).ok());
  EXPECT_EQ(store->Get(id)->status, EventStatus::kDeadLetter);
  EXPECT_EQ(store->Get(id)->history.size(), 2u);
  EXPECT_EQ(store->PendingDestinations()->size(), 1u);
  ASSERT_TRUE(store->MarkDestinationDone(id).ok());
  EXPECT_TRUE(store->PendingDestinations()->empty());
  ASSERT_TRUE(store->Redrive(id, 7000).ok());
  EXPECT_EQ(store->Get(id)->status, EventStatus::kQueued);
  EXPECT_EQ(store->Get(id)->attempts, 0);
  EXPECT_EQ(store->Redrive(id, 7000).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->Get("nope").status().code(), StatusCode::kNotFound);
}

// Runs events with a function chosen per test; counts how many run at once.
struct FakeExecutor {
  std::function<StatusOr<std::string>(const Event&)> fn = [](const Event& e) { return e.payload; };
  std::atomic<int> running{0}, max_running{0}, calls{0};
  Duration hold = 0ms;
  Executor Get() {
    return [this](const Event& e, std::function<void(StatusOr<std::string>)> done) {
      calls++;
      int now = ++running;
      int prev = max_running.load();
      while (now > prev && !max_running.compare_exchange_weak(prev, now)) {
      }
      std::thread([this, e, done = std::move(done)] {
        std::this_thread::sleep_for(hold);
        auto r = fn(e);
        running--;
        done(std::move(r));
      }).detach();
    };
  }
};

StatusOr<std::string> EnqueueNow(AsyncInvoker& inv, const std::string& fn, const std::string& payload) {
  std::promise<StatusOr<std::string>> p;
  inv.Enqueue(fn, payload, [&](StatusOr<std::string> id) { p.set_value(std::move(id)); });
  return p.get_future().get();
}

TEST_F(EventsTest, Invoker_RetriesThenDeadLetter_DestinationsOnce) {
  auto store = Open();
  FakeExecutor exec;
  exec.fn = [](const Event& e) -> StatusOr<std::string> {
    if (e.payload == "bad") return UnavailableError("handler failed");
    return std::string("{\"ok\":true}");
  };
  AsyncInvoker inv({.max_batch = 256, .poll_interval = 5ms}, store.get(), exec.Get(), nullptr);
  AsyncConfig cfg;
  cfg.max_retries = 2;
  cfg.retry_backoff = 10ms;
  cfg.max_concurrency = 4;
  cfg.on_success = "file://" + (dir_ / "ok.jsonl").string();
  cfg.on_failure = "file://" + (dir_ / "dlq.jsonl").string();
  inv.Configure("f", cfg);
  ASSERT_TRUE(inv.Start().ok());
  auto good = EnqueueNow(inv, "f", "good");
  auto bad = EnqueueNow(inv, "f", "bad");
  ASSERT_TRUE(good.ok() && bad.ok());
  WaitFor([&] {
    auto b = inv.Get(*bad);
    auto g = inv.Get(*good);
    return b.ok() && g.ok() && b->status == EventStatus::kDeadLetter && g->status == EventStatus::kSucceeded;
  });
  auto b = inv.Get(*bad).value();
  EXPECT_EQ(b.attempts, 3);
  EXPECT_EQ(b.history.size(), 3u);
  EXPECT_EQ(b.error, "handler failed");
  EXPECT_GE(b.history[1].started_ms - b.history[0].finished_ms, 4) << "retried after a backoff";
  // The destination line is written just after the outcome is recorded.
  WaitFor([&] { return !Lines(dir_ / "ok.jsonl").empty() && !Lines(dir_ / "dlq.jsonl").empty(); });
  auto ok_lines = Lines(dir_ / "ok.jsonl");
  auto dlq_lines = Lines(dir_ / "dlq.jsonl");
  ASSERT_EQ(ok_lines.size(), 1u);
  ASSERT_EQ(dlq_lines.size(), 1u);
  auto okj = nlohmann::json::parse(ok_lines[0]);
  EXPECT_EQ(okj["event_id"], *good);
  EXPECT_EQ(okj["result"], nlohmann::json({{"ok", true}}));
  EXPECT_EQ(nlohmann::json::parse(dlq_lines[0])["status"], "dead_letter");
  inv.Stop(1s);
}

TEST_F(EventsTest, Invoker_ConcurrencyShareIsAHardLimit) {
  auto store = Open();
  FakeExecutor exec;
  exec.hold = 20ms;
  AsyncInvoker inv({.max_batch = 256, .poll_interval = 2ms}, store.get(), exec.Get(), nullptr);
  AsyncConfig cfg;
  cfg.max_concurrency = 2;
  inv.Configure("f", cfg);
  ASSERT_TRUE(inv.Start().ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 12; ++i) ids.push_back(EnqueueNow(inv, "f", std::to_string(i)).value());
  WaitFor([&] { return inv.List(EventStatus::kSucceeded, "f", 100)->size() == 12u; });
  EXPECT_EQ(exec.max_running.load(), 2);
  EXPECT_EQ(exec.calls.load(), 12);
  inv.Stop(1s);
}

TEST_F(EventsTest, Invoker_AfterACrash_RunningEventsRunAgain_DestinationNotDuplicated) {
  std::string done_id, interrupted_id;
  std::string ok_path = (dir_ / "ok.jsonl").string();
  {
    // A "previous process": one event finished and its line reached the file, but the crash
    // came before it was recorded as written; another was running.
    auto store = Open();
    int64_t now =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    auto ids = store->Insert({{"f", "1"}, {"f", "2"}}, now).value();
    done_id = ids[0];
    interrupted_id = ids[1];
    ASSERT_EQ(store->ClaimDue(now, 10, [](const Event&) { return true; })->size(), 2u);
    ASSERT_TRUE(store->Succeed(done_id, "\"r1\"", {now, now + 1, ""}).ok());
    Event e = store->Get(done_id).value();
    std::ofstream(ok_path) << AsyncInvoker::EventJson(e) << "\n";
  }
  auto store = Open();
  FakeExecutor exec;
  AsyncInvoker inv({.max_batch = 256, .poll_interval = 5ms}, store.get(), exec.Get(), nullptr);
  AsyncConfig cfg;
  cfg.on_success = "file://" + ok_path;
  inv.Configure("f", cfg);
  ASSERT_TRUE(inv.Start().ok());
  WaitFor([&] { return inv.Get(interrupted_id)->status == EventStatus::kSucceeded; });
  EXPECT_EQ(exec.calls.load(), 1) << "only the interrupted event runs again";
  WaitFor([&] { return Lines(ok_path).size() >= 2u; });
  auto lines = Lines(ok_path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["event_id"], done_id);
  EXPECT_EQ(nlohmann::json::parse(lines[1])["event_id"], interrupted_id);
  EXPECT_TRUE(store->PendingDestinations()->empty());
  inv.Stop(1s);
}

TEST_F(EventsTest, Invoker_EventsOlderThanMaxAgeAreDeadLetteredWithoutRunning) {
  auto store = Open();
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                 .count();
  auto id = store->Insert({{"f", "old"}}, now - 120000).value()[0];
  FakeExecutor exec;
  AsyncInvoker inv({.max_batch = 256, .poll_interval = 5ms}, store.get(), exec.Get(), nullptr);
  AsyncConfig cfg;
  cfg.max_event_age = 60s;
  inv.Configure("f", cfg);
  ASSERT_TRUE(inv.Start().ok());
  WaitFor([&] { return inv.Get(id)->status == EventStatus::kDeadLetter; });
  EXPECT_EQ(exec.calls.load(), 0);
  EXPECT_NE(inv.Get(id)->error.find("max_event_age"), std::string::npos);
  inv.Stop(1s);
}

}  // namespace
}  // namespace pilotlight::events

namespace pilotlight::events {
namespace {

TEST_F(EventsTest, Store_PurgeRemovesOnlyFinishedAndDeliveredEvents) {
  auto store = Open();
  auto ids = store->Insert({{"f", "ok"}, {"f", "undelivered"}, {"f", "dead"}, {"f", "queued"}}, 1000).value();
  ASSERT_EQ(store->ClaimDue(1000, 3, [](const Event&) { return true; })->size(), 3u);
  ASSERT_TRUE(store->Succeed(ids[0], "r", {1000, 2000, ""}).ok());
  ASSERT_TRUE(store->MarkDestinationDone(ids[0]).ok());
  ASSERT_TRUE(store->Succeed(ids[1], "r", {1000, 2000, ""}).ok());  // its destination is not written yet
  ASSERT_TRUE(store->DeadLetter(ids[2], {1000, 2000, "boom"}, 2000).ok());
  ASSERT_TRUE(store->MarkDestinationDone(ids[2]).ok());
  EXPECT_EQ(store->Purge(2000).value(), 0) << "nothing finished before the cut-off";
  EXPECT_EQ(store->Purge(2001).value(), 1);
  EXPECT_EQ(store->Get(ids[0]).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->Get(ids[1]).ok()) << "an undelivered result is kept";
  EXPECT_TRUE(store->Get(ids[2]).ok()) << "dead letters stay until redriven";
  EXPECT_TRUE(store->Get(ids[3]).ok());
}

}  // namespace
}  // namespace pilotlight::events
