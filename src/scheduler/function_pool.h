// FunctionPool: the instances of one function and the requests waiting for them.
//
// Instance states (per slot):  kLoading → kWarm → (idle past idle_timeout, beyond the warm
// pool) → unloaded. A failed load leaves no slot. The pool as a whole is `cold` (no instance),
// `loading` or `warm` (at least one instance).
//
// Admission contract (Acquire): the callback is called exactly once —
//  * inline, on the caller's thread, with a Lease when a warm instance has a free slot, nobody
//    is queued ahead and the function's typical run is short (else on a worker thread);
//  * later, on a worker thread, with a Lease when a slot frees up or an instance finishes
//    loading;
//  * with ResourceExhausted when the queue is full (at once) or the request waited longer
//    than queue_timeout; with Unavailable when the pool is draining; with the load's error
//    (NotFound, DataLoss, FailedPrecondition, ...) when no instance can be loaded.
// A request that has been queued is never dropped: it gets a Lease or an error.
//
// Loads are single-flight: at most one load is in progress per function, so any number of
// concurrent first requests cause exactly one load. Scale-out starts another load only when
// every warm instance is saturated and requests are queued. When the target version fails
// integrity checks, the pool falls back to the last version it loaded successfully.
//
// Thread-safety: all public methods are thread-safe. Callbacks run without the pool lock.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "metrics/metrics.h"
#include "runtime/runtime.h"
#include "store/model_store.h"

namespace pilotlight::scheduler {

struct PoolOptions {
  std::string function = {};
  std::string model = {};
  std::string version = "current";
  int min_instances = 0;
  int max_instances = 1;
  int concurrency = 8;
  Duration idle_timeout = std::chrono::seconds(300);
  int max_queue = 64;
  Duration queue_timeout = std::chrono::seconds(2);
  Duration timeout = std::chrono::seconds(30);
  // Requests run on the caller's (I/O) thread while the function's typical run is shorter
  // than this; slower functions run on worker threads so I/O threads stay responsive.
  Duration inline_run_limit = std::chrono::microseconds(500);
  // How often the scheduler re-reads current.json for this function (0: never). Pinned
  // versions are never polled.
  Duration poll_interval = std::chrono::seconds(2);
  // After a failed swap, the same version is tried again no sooner than this.
  Duration swap_retry = std::chrono::seconds(30);
  // Set for `process` functions: instances are worker processes started from this spec (no
  // model in the store; version "$LATEST"; concurrency 1).
  std::shared_ptr<const runtime::ProcessSpec> process = nullptr;
};

struct Slot;
class FunctionPool;

// Pins one instance slot for one request; releases it on destruction. Move-only.
class Lease {
 public:
  Lease(Lease&& o) noexcept;
  Lease& operator=(Lease&& o) = delete;
  Lease(const Lease&) = delete;
  ~Lease();

  runtime::Instance& instance() const;
  const store::Manifest& manifest() const;
  const std::string& version() const;

  bool cold_start = false;  // this request waited for an instance loaded for it
  Duration fetch_time{0};   // when cold_start
  Duration load_time{0};    // when cold_start
  Duration queue_time{0};   // time spent waiting for the slot
  bool first_run = false;   // first Run on this instance
  TimePoint run_deadline = TimePoint::max();

  // Report how long the model ran (feeds the inline-or-worker decision).
  void RecordRun(Duration d) const;
  // Report the duration of this instance's first Run (metrics only).
  void RecordFirstRun(Duration d) const;
  // Releases the slot now (before the response is encoded and written).
  void Release();

 private:
  friend class FunctionPool;
  Lease(FunctionPool* pool, std::shared_ptr<Slot> slot) : pool_(pool), slot_(std::move(slot)) {}
  FunctionPool* pool_;
  std::shared_ptr<Slot> slot_;
};

using AcquireCallback = std::function<void(StatusOr<Lease>)>;

struct PoolSnapshot {
  std::string state;  // cold | loading | warm
  std::string version;
  std::string swapping_to;  // version being loaded for a hot swap
  int retiring = 0;         // instances of the previous version still finishing requests
  int instances = 0;
  int loading = 0;
  int queue_depth = 0;
  int in_flight = 0;
  std::string last_error;
};

class FunctionPool {
 public:
  FunctionPool(PoolOptions options, store::ModelStore* store, runtime::Runtime* runtime,
               metrics::FunctionMetrics* metrics, Clock* clock, ThreadPool* workers, ThreadPool* loaders);
  ~FunctionPool();

  void Acquire(AcquireCallback cb);

  // Makes sure at least one instance is warm (loads one if needed); `done` gets OK or the
  // load's error. Never blocks.
  void WarmUp(std::function<void(Status)> done);

  // Periodic housekeeping (the scheduler calls it every few ms; tests call it with a fake
  // clock): expires queued requests past queue_timeout, unloads idle instances beyond the warm
  // pool, and (re)starts loads to reach min_instances.
  void Tick();

  // Hot swap. The store's current version is now `version`: when warm on another version, load
  // it in the background, switch new requests to it atomically, let in-flight requests finish
  // on the old instances, then unload them. A version that fails to load is not switched to
  // (counted in swap_failures) and is retried no sooner than swap_retry. Cold pools do nothing
  // (their next load reads current.json). Ignored for pinned versions.
  // `epoch`: SwapEpoch() sampled before `version` was read; when a swap started since, the
  // reading may predate it and is ignored (the next poll reads again).
  void OnCurrentVersion(const std::string& version, std::optional<uint64_t> epoch = std::nullopt);
  uint64_t SwapEpoch() const;
  // The same, now, ignoring the retry delay; `done` gets OK when `version` serves new requests
  // (or the pool is cold), or the swap's error.
  void SwapTo(const std::string& version, std::function<void(Status)> done);
  bool Warm() const;
  bool Pinned() const { return options_.version != "current"; }
  bool IsProcess() const { return options_.process != nullptr; }

  // Refuses new requests (Unavailable); queued and in-flight ones complete.
  void BeginDrain();
  bool Idle() const;  // nothing queued, in flight or loading

  PoolSnapshot Snapshot() const;
  // Input specs of the most recently loaded instance; null before the first load. Lets the
  // gateway decode (and refuse) inputs before admission.
  std::shared_ptr<const std::vector<tensor::TensorSpec>> InputSpecs() const;
  const PoolOptions& options() const { return options_; }
  metrics::FunctionMetrics* metrics() const { return metrics_; }

 private:
  friend class Lease;
  struct Waiter {
    AcquireCallback cb;
    TimePoint enqueued;
    TimePoint deadline;
  };
  using Ready = std::vector<std::pair<AcquireCallback, StatusOr<Lease>>>;

  // Takes the lease's reference: an instance that must go is destroyed on a loader thread,
  // never on the releasing thread (which may be one of the instance's own threads).
  void Release(std::shared_ptr<Slot> slot);
  void StartLoadLocked(bool for_request);  // requires mu_
  void DoLoad(bool for_request);
  void StartSwapLocked(const std::string& version);  // requires mu_
  void DoSwap(std::string version, int count);
  void PumpLocked(Ready& ready);  // requires mu_
  Lease MakeLeaseLocked(const std::shared_ptr<Slot>& slot, TimePoint enqueued, bool queued);
  std::shared_ptr<Slot> FreeSlotLocked();
  void UpdateGaugesLocked();
  void Deliver(Ready& ready, bool post);

  const PoolOptions options_;
  store::ModelStore* const store_;
  runtime::Runtime* const runtime_;
  metrics::FunctionMetrics* const metrics_;
  Clock* const clock_;
  ThreadPool* const workers_;
  ThreadPool* const loaders_;

  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Slot>> slots_;     // GUARDED_BY(mu_) warm instances
  std::vector<std::shared_ptr<Slot>> retiring_;  // GUARDED_BY(mu_) old version, draining
  std::string active_version_;                   // GUARDED_BY(mu_) version of slots_
  std::string swapping_to_;                      // GUARDED_BY(mu_)
  std::string failed_version_;                   // GUARDED_BY(mu_)
  TimePoint failed_retry_at_{};                  // GUARDED_BY(mu_)
  uint64_t swap_epoch_ = 0;                      // GUARDED_BY(mu_) swaps started
  std::vector<std::pair<std::string, std::function<void(Status)>>> swap_waiters_;  // GUARDED_BY(mu_)
  std::deque<Waiter> queue_;                                                       // GUARDED_BY(mu_)
  int loading_ = 0;                                                                // GUARDED_BY(mu_)
  int in_flight_ = 0;                                                              // GUARDED_BY(mu_)
  bool draining_ = false;                                                          // GUARDED_BY(mu_)
  std::string last_good_version_;                                                  // GUARDED_BY(mu_)
  std::shared_ptr<const std::vector<tensor::TensorSpec>> latest_inputs_;           // GUARDED_BY(mu_)
  Status last_error_;                                                              // GUARDED_BY(mu_)
  TimePoint retry_after_{};  // GUARDED_BY(mu_) min-instances retry backoff
  Duration retry_backoff_{std::chrono::milliseconds(500)};
  std::vector<std::function<void(Status)>> warm_waiters_;  // GUARDED_BY(mu_)
  uint64_t next_slot_id_ = 0;                              // GUARDED_BY(mu_)
  std::atomic<int64_t> typical_run_ns_{0};                 // moving average of Run durations
};

}  // namespace pilotlight::scheduler
