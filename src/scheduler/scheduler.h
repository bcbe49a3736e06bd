// Scheduler: owns every function's pool, the worker threads that run queued requests, the
// loader threads that create and destroy instances, and the housekeeping thread that calls
// FunctionPool::Tick. With `auto_functions`, a model pushed to the store after start-up becomes
// a function of the same name on its first request.
// Thread-safety: all methods are thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "config/config.h"
#include "scheduler/function_pool.h"

namespace pilotlight::scheduler {

struct SchedulerOptions {
  int worker_threads = 0;  // 0: one per core
  int loader_threads = 2;
  Duration tick_interval = std::chrono::milliseconds(10);
  bool auto_functions = false;     // serve any model in the store under its own name
  bool start_housekeeping = true;  // tests drive Tick() and PollAll() by hand with a fake clock
  Duration default_poll_interval = std::chrono::seconds(2);  // for functions without their own
};

// Builds pool options from a function's config entry.
PoolOptions PoolOptionsFromConfig(const config::FunctionConfig& f,
                                  Duration default_poll_interval = std::chrono::seconds(2));

// The outcome of a promote or rollback through the server.
struct ModelChange {
  std::string model;
  std::string version;
  std::string previous;
  // Per function serving the model: "swapped", "cold" (nothing loaded; the next request loads
  // the new version), "pinned" (serves a fixed version) or the swap's error.
  std::vector<std::pair<std::string, std::string>> functions;
  bool all_swapped = true;
};

class Scheduler {
 public:
  Scheduler(SchedulerOptions options, store::ModelStore* store, runtime::Runtime* runtime, metrics::Registry* metrics,
            Clock* clock);
  ~Scheduler();

  // The runtime for `process` functions (set before adding any).
  void SetProcessRuntime(runtime::Runtime* r) { process_runtime_ = r; }
  void AddFunction(const PoolOptions& options);
  // nullptr when unknown (and, with auto_functions, not in the store either).
  FunctionPool* Find(const std::string& name);
  std::vector<std::string> FunctionNames() const;
  // A pool serving `version` of onnx function `name` (the Lambda Invoke API's Qualifier),
  // created on first use with the function's limits. NotFound when the version is not in the
  // store.
  StatusOr<FunctionPool*> FindVersion(const std::string& name, const std::string& version);

  // Starts warm pools (min_instances) now.
  void Start();
  void TickAll();
  void BeginDrain();
  bool Idle() const;

  // Re-reads current.json of every warm function whose poll interval has passed (conditional
  // requests: an unchanged pointer costs a 304) and starts hot swaps. `force`: ignore intervals.
  void PollAll(bool force = false);

  // Promote/rollback in the store (verified, compare-and-swap), then swap every function serving
  // the model at once; `done` runs on a background thread when all swaps ended.
  void Promote(const std::string& model, const std::string& version, std::function<void(StatusOr<ModelChange>)> done);
  void Rollback(const std::string& model, std::function<void(StatusOr<ModelChange>)> done);

 private:
  void Housekeeping();
  void Watch();
  void SwapAll(ModelChange change, std::function<void(StatusOr<ModelChange>)> done);

  const SchedulerOptions options_;
  store::ModelStore* const store_;
  runtime::Runtime* const runtime_;
  runtime::Runtime* process_runtime_ = nullptr;
  metrics::Registry* const metrics_;
  Clock* const clock_;
  std::unique_ptr<ThreadPool> workers_;
  std::unique_ptr<ThreadPool> loaders_;
  std::unique_ptr<ThreadPool> admin_;  // promote/rollback (store I/O, verification)
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<FunctionPool>> pools_;  // GUARDED_BY(mu_); never erased
  std::map<std::string, TimePoint> missing_;                    // GUARDED_BY(mu_) negative cache, until
  std::mutex tick_mu_;
  std::condition_variable tick_cv_;
  bool stop_ = false;
  std::thread housekeeping_;
  std::thread watcher_;
  std::mutex poll_mu_;
  std::map<std::string, TimePoint> next_poll_;  // GUARDED_BY(poll_mu_) by function
};

}  // namespace pilotlight::scheduler
