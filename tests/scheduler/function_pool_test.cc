#include "scheduler/function_pool.h"

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "fakes/fake_clock.h"
#include "fakes/fake_runtime.h"
#include "scheduler/scheduler.h"

namespace pilotlight::scheduler {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

class PoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("pl_pool_test_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    store_ = std::make_unique<store::ModelStore>(std::make_unique<store::LocalBlobStore>(root_.string()));
    Push("1");
    ASSERT_TRUE(store_->Promote("m", "1").ok());
  }
  void TearDown() override {
    sched_.reset();
    fs::remove_all(root_);
  }

  void Push(const std::string& version) {
    auto src = root_ / ("src_" + version);
    std::ofstream(src, std::ios::binary) << "fake model " << version;
    store::Manifest m;
    m.inputs = {{"x", "float32", {-1, 2}}};
    m.outputs = {{"y", "float32", {-1, 2}}};
    ASSERT_TRUE(store_->PushVersion("m", version, src.string(), m).ok());
  }

  FunctionPool* MakePool(PoolOptions o) {
    o.function = "f";
    o.model = "m";
    sched_ = std::make_unique<Scheduler>(
        SchedulerOptions{.worker_threads = 2, .loader_threads = 1, .start_housekeeping = false}, store_.get(),
        &runtime_, &metrics_, &clock_);
    sched_->AddFunction(o);
    return sched_->Find("f");
  }

  // Acquires and returns a future for the result, whichever thread delivers it.
  static std::future<StatusOr<Lease>> AcquireAsync(FunctionPool* pool) {
    auto p = std::make_shared<std::promise<StatusOr<Lease>>>();
    auto f = p->get_future();
    pool->Acquire([p](StatusOr<Lease> r) { p->set_value(std::move(r)); });
    return f;
  }
  static StatusOr<Lease> AcquireNow(FunctionPool* pool) { return AcquireAsync(pool).get(); }

  static void WaitFor(const std::function<bool()>& cond) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!cond()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "condition not reached";
      std::this_thread::yield();
    }
  }

  fs::path root_;
  std::unique_ptr<store::ModelStore> store_;
  testing::FakeRuntime runtime_;
  testing::FakeClock clock_;
  metrics::Registry metrics_;
  std::unique_ptr<Scheduler> sched_;
};

TEST_F(PoolTest, ScaleFromZero_FirstRequestLoadsAndReportsColdStart) {
  auto* pool = MakePool({});
  EXPECT_EQ(pool->Snapshot().state, "cold");
  {
    auto lease = AcquireNow(pool);
    ASSERT_TRUE(lease.ok()) << lease.status().ToString();
    EXPECT_TRUE(lease->cold_start);
    EXPECT_TRUE(lease->first_run);
    EXPECT_EQ(lease->version(), "1");
  }
  auto second = AcquireNow(pool);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->cold_start);
  EXPECT_FALSE(second->first_run);
  EXPECT_EQ(runtime_.loads.load(), 1);
  EXPECT_EQ(pool->Snapshot().state, "warm");
}

TEST_F(PoolTest, ScaleFromZero_ConcurrentFirstRequests_LoadOnce) {
  auto* pool = MakePool({.concurrency = 64, .max_queue = 64});
  runtime_.Hold();
  std::vector<std::future<StatusOr<Lease>>> futures(50);
  std::vector<std::thread> threads;
  for (int i = 0; i < 50; ++i) threads.emplace_back([&, i] { futures[i] = AcquireAsync(pool); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(pool->Snapshot().queue_depth, 50);
  EXPECT_EQ(pool->Snapshot().state, "loading");
  runtime_.Open();
  int cold = 0;
  std::vector<StatusOr<Lease>> leases;
  for (auto& f : futures) {
    leases.push_back(f.get());
    ASSERT_TRUE(leases.back().ok()) << leases.back().status().ToString();
    cold += leases.back()->cold_start ? 1 : 0;
  }
  EXPECT_EQ(runtime_.loads.load(), 1);
  EXPECT_EQ(cold, 1);
  EXPECT_EQ(pool->Snapshot().in_flight, 50);
}

TEST_F(PoolTest, WarmPool_LoadedAtStartAndKeptPastIdleTimeout) {
  auto* pool = MakePool({.min_instances = 1, .idle_timeout = 1s});
  sched_->Start();
  WaitFor([&] { return pool->Snapshot().state == "warm"; });
  clock_.Advance(1h);
  pool->Tick();
  EXPECT_EQ(pool->Snapshot().instances, 1);
  auto lease = AcquireNow(pool);
  ASSERT_TRUE(lease.ok());
  EXPECT_FALSE(lease->cold_start) << "a warm-pool instance was not loaded for this request";
  EXPECT_EQ(runtime_.loads.load(), 1);
}

TEST_F(PoolTest, IdleUnload_ScalesToZeroAfterIdleTimeoutThenColdStartsAgain) {
  auto* pool = MakePool({.idle_timeout = 5s});
  { ASSERT_TRUE(AcquireNow(pool).ok()); }
  clock_.Advance(4s);
  pool->Tick();
  EXPECT_EQ(pool->Snapshot().instances, 1);
  clock_.Advance(2s);
  pool->Tick();
  EXPECT_EQ(pool->Snapshot().instances, 0);
  EXPECT_EQ(pool->Snapshot().state, "cold");
  auto again = AcquireNow(pool);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->cold_start);
  EXPECT_EQ(runtime_.loads.load(), 2);
}

TEST_F(PoolTest, IdleTimeoutZero_UnloadsAsSoonAsIdle) {
  auto* pool = MakePool({.idle_timeout = 0s});
  { ASSERT_TRUE(AcquireNow(pool).ok()); }
  EXPECT_EQ(pool->Snapshot().instances, 0);
}

TEST_F(PoolTest, Queue_FullIsShedAtOnce_QueuedOneServedOnRelease) {
  auto* pool = MakePool({.max_instances = 1, .concurrency = 1, .max_queue = 1});
  auto held = AcquireNow(pool);
  ASSERT_TRUE(held.ok());
  auto queued = AcquireAsync(pool);
  EXPECT_EQ(pool->Snapshot().queue_depth, 1);
  auto shed = AcquireNow(pool);
  ASSERT_FALSE(shed.ok());
  EXPECT_EQ(shed.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(shed.status().message().find("max_queue"), std::string::npos);
  held->Release();
  auto served = queued.get();
  ASSERT_TRUE(served.ok()) << served.status().ToString();
}

TEST_F(PoolTest, Queue_WaitPastQueueTimeout_IsShed) {
  auto* pool = MakePool({.max_instances = 1, .concurrency = 1, .max_queue = 4, .queue_timeout = 2s});
  auto held = AcquireNow(pool);
  ASSERT_TRUE(held.ok());
  auto queued = AcquireAsync(pool);
  clock_.Advance(1s);
  pool->Tick();
  EXPECT_EQ(pool->Snapshot().queue_depth, 1);
  clock_.Advance(2s);
  pool->Tick();
  auto r = queued.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("queue_timeout"), std::string::npos);
}

TEST_F(PoolTest, ScaleOut_SecondInstanceOnlyWhenSaturated) {
  auto* pool = MakePool({.max_instances = 2, .concurrency = 1});
  auto a = AcquireNow(pool);
  ASSERT_TRUE(a.ok());
  auto b = AcquireNow(pool);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(runtime_.loads.load(), 2);
  EXPECT_EQ(pool->Snapshot().instances, 2);
}

TEST_F(PoolTest, Integrity_CorruptNewVersion_KeepsServingLastGood) {
  auto* pool = MakePool({.idle_timeout = 0s});
  { ASSERT_TRUE(AcquireNow(pool).ok()); }
  Push("2");
  ASSERT_TRUE(store_->Promote("m", "2").ok());
  std::ofstream(root_ / "m/versions/2/model.onnx", std::ios::binary) << "corrupted";
  auto lease = AcquireNow(pool);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_EQ(lease->version(), "1");
  EXPECT_NE(pool->Snapshot().last_error.find("sha256 mismatch"), std::string::npos);
}

TEST_F(PoolTest, Integrity_NothingVerified_IsDataLoss) {
  std::ofstream(root_ / "m/versions/1/model.onnx", std::ios::binary) << "corrupted";
  auto* pool = MakePool({});
  auto r = AcquireNow(pool);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(runtime_.loads.load(), 0) << "a file that failed verification reached the runtime";
}

TEST_F(PoolTest, LoadFailure_QueuedRequestsGetTheReason) {
  auto* pool = MakePool({});
  runtime_.fail_next = true;
  auto r = AcquireNow(pool);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(pool->Snapshot().last_error.find("fake load failure"), std::string::npos);
  EXPECT_TRUE(AcquireNow(pool).ok()) << "the next request retries the load";
}

TEST_F(PoolTest, Drain_RefusesNewRequestsButServesQueued) {
  auto* pool = MakePool({.concurrency = 1});
  auto held = AcquireNow(pool);
  ASSERT_TRUE(held.ok());
  auto queued = AcquireAsync(pool);
  pool->BeginDrain();
  auto refused = AcquireNow(pool);
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(pool->Idle());
  held->Release();
  EXPECT_TRUE(queued.get().ok());
}

TEST_F(PoolTest, WarmUp_LoadsWithoutARequest) {
  auto* pool = MakePool({});
  std::promise<Status> p;
  pool->WarmUp([&](Status s) { p.set_value(s); });
  EXPECT_TRUE(p.get_future().get().ok());
  EXPECT_EQ(pool->Snapshot().state, "warm");
  auto lease = AcquireNow(pool);
  EXPECT_FALSE(lease->cold_start);
}

}  // namespace
}  // namespace pilotlight::scheduler

namespace pilotlight::scheduler {
namespace {

TEST_F(PoolTest, MaxQueueZero_ShedsWhileColdButStillScalesFromZero) {
  auto* pool = MakePool({.max_queue = 0});
  auto first = AcquireNow(pool);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), StatusCode::kResourceExhausted);
  WaitFor([&] { return pool->Snapshot().state == "warm"; });
  EXPECT_TRUE(AcquireNow(pool).ok());
  EXPECT_EQ(runtime_.loads.load(), 1);
}

}  // namespace
}  // namespace pilotlight::scheduler

// ---- Hot swap ----------------------------------------------------------------------------------

namespace pilotlight::scheduler {
namespace {

std::future<Status> SwapAsync(FunctionPool* pool, const std::string& version) {
  auto p = std::make_shared<std::promise<Status>>();
  auto f = p->get_future();
  pool->SwapTo(version, [p](Status s) { p->set_value(s); });
  return f;
}

TEST_F(PoolTest, Swap_NewRequestsGoToNewVersion_InFlightFinishOnOldThenItUnloads) {
  auto* pool = MakePool({});
  auto old_lease = AcquireNow(pool);
  ASSERT_TRUE(old_lease.ok());
  EXPECT_EQ(old_lease->version(), "1");
  Push("2");
  Status swapped = SwapAsync(pool, "2").get();
  ASSERT_TRUE(swapped.ok()) << swapped.ToString();
  auto new_lease = AcquireNow(pool);
  ASSERT_TRUE(new_lease.ok());
  EXPECT_EQ(new_lease->version(), "2");
  EXPECT_FALSE(new_lease->cold_start) << "a swap is not a cold start for the request";
  // The old instance still serves the request it holds, then goes away.
  EXPECT_EQ(old_lease->version(), "1");
  EXPECT_EQ(pool->Snapshot().retiring, 1);
  EXPECT_EQ(pool->Snapshot().version, "2");
  old_lease->Release();
  EXPECT_EQ(pool->Snapshot().retiring, 0);
  EXPECT_EQ(pool->Snapshot().instances, 1);
  EXPECT_EQ(metrics_.ForFunction("f")->swaps->Value(), 1);
}

TEST_F(PoolTest, Swap_LoadFails_OldVersionStaysAndTheFailureIsCountedAndNotRetriedAtOnce) {
  auto* pool = MakePool({.swap_retry = 30s});
  { ASSERT_TRUE(AcquireNow(pool).ok()); }
  Push("2");
  runtime_.fail_next = true;
  Status st = SwapAsync(pool, "2").get();
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(metrics_.ForFunction("f")->swap_failures->Value(), 1);
  auto lease = AcquireNow(pool);
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->version(), "1");
  lease->Release();
  int loads = runtime_.loads.load();
  pool->OnCurrentVersion("2");  // the poller sees the same pointer again: no reload storm
  EXPECT_TRUE(pool->Snapshot().swapping_to.empty());
  EXPECT_EQ(runtime_.loads.load(), loads);
  clock_.Advance(31s);
  pool->OnCurrentVersion("2");  // after swap_retry it tries again, and now succeeds
  WaitFor([&] { return pool->Snapshot().version == "2"; });
  EXPECT_EQ(metrics_.ForFunction("f")->swaps->Value(), 1);
}

TEST_F(PoolTest, Swap_VersionFailingVerification_IsNeverLoaded) {
  auto* pool = MakePool({});
  { ASSERT_TRUE(AcquireNow(pool).ok()); }
  Push("2");
  std::ofstream(root_ / "m/versions/2/model.onnx", std::ios::binary) << "corrupted";
  int loads = runtime_.loads.load();
  Status st = SwapAsync(pool, "2").get();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_EQ(runtime_.loads.load(), loads) << "a file that failed verification reached the runtime";
  EXPECT_EQ(AcquireNow(pool)->version(), "1");
}

TEST_F(PoolTest, Swap_PollerPicksUpAPromoteInTheStore_ColdAndPinnedPoolsAreLeftAlone) {
  auto* pool = MakePool({});
  sched_->AddFunction({.function = "pinned", .model = "m", .version = "1"});
  auto* pinned = sched_->Find("pinned");
  { ASSERT_TRUE(AcquireNow(pool).ok()); }
  { ASSERT_TRUE(AcquireNow(pinned).ok()); }
  Push("2");
  ASSERT_TRUE(store_->Promote("m", "2").ok());
  sched_->PollAll(/*force=*/true);
  WaitFor([&] { return pool->Snapshot().version == "2" && pool->Snapshot().swapping_to.empty(); });
  EXPECT_EQ(AcquireNow(pool)->version(), "2");
  EXPECT_EQ(AcquireNow(pinned)->version(), "1");
}

TEST_F(PoolTest, Swap_RequestsQueuedDuringTheSwapAreServed) {
  auto* pool = MakePool({.concurrency = 1});
  auto held = AcquireNow(pool);
  ASSERT_TRUE(held.ok());
  Push("2");
  runtime_.Hold();
  auto swap = SwapAsync(pool, "2");
  auto queued = AcquireAsync(pool);  // waits: the only slot is taken, the new version is loading
  runtime_.Open();
  ASSERT_TRUE(swap.get().ok());
  auto got = queued.get();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->version(), "2");
  held->Release();
}

}  // namespace
}  // namespace pilotlight::scheduler

namespace pilotlight::scheduler {
namespace {

TEST_F(PoolTest, AutoFunctions_UnknownNamesAreRememberedBriefly_ThenFoundOncePromoted) {
  sched_ = std::make_unique<Scheduler>(
      SchedulerOptions{.worker_threads = 1, .loader_threads = 1, .auto_functions = true, .start_housekeeping = false},
      store_.get(), &runtime_, &metrics_, &clock_);
  EXPECT_NE(sched_->Find("m"), nullptr);
  EXPECT_EQ(sched_->Find("late"), nullptr);
  auto src = root_ / "src_late";
  std::ofstream(src, std::ios::binary) << "late model";
  store::Manifest m;
  m.inputs = {{"x", "float32", {-1, 2}}};
  m.outputs = {{"y", "float32", {-1, 2}}};
  ASSERT_TRUE(store_->PushVersion("late", "1", src.string(), m).ok());
  ASSERT_TRUE(store_->Promote("late", "1").ok());
  EXPECT_EQ(sched_->Find("late"), nullptr) << "a miss is cached for a moment (no store read per request)";
  clock_.Advance(3s);
  EXPECT_NE(sched_->Find("late"), nullptr);
}

}  // namespace
}  // namespace pilotlight::scheduler

namespace pilotlight::scheduler {
namespace {

TEST_F(PoolTest, Swap_PollerReadingOlderThanAnAdminSwapDoesNotSwapBack) {
  auto* pool = MakePool({});
  { ASSERT_TRUE(AcquireNow(pool).ok()); }
  Push("2");
  uint64_t epoch = pool->SwapEpoch();            // the poller samples, then reads current.json = "1" ...
  ASSERT_TRUE(SwapAsync(pool, "2").get().ok());  // ... while an admin promote swaps to 2
  pool->OnCurrentVersion("1", epoch);            // the stale reading arrives
  EXPECT_TRUE(pool->Snapshot().swapping_to.empty());
  EXPECT_EQ(AcquireNow(pool)->version(), "2");
  pool->OnCurrentVersion("1", pool->SwapEpoch());  // a fresh reading of "1" (a rollback) does swap
  WaitFor([&] { return pool->Snapshot().version == "1"; });
}

}  // namespace
}  // namespace pilotlight::scheduler
