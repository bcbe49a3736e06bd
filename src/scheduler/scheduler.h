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
  bool start_housekeeping = true;  // tests drive Tick() by hand with a fake clock
};

// Builds pool options from a function's config entry.
PoolOptions PoolOptionsFromConfig(const config::FunctionConfig& f);

class Scheduler {
 public:
  Scheduler(SchedulerOptions options, store::ModelStore* store, runtime::Runtime* runtime, metrics::Registry* metrics,
            Clock* clock);
  ~Scheduler();

  void AddFunction(const PoolOptions& options);
  // nullptr when unknown (and, with auto_functions, not in the store either).
  FunctionPool* Find(const std::string& name);
  std::vector<std::string> FunctionNames() const;

  // Starts warm pools (min_instances) now.
  void Start();
  void TickAll();
  void BeginDrain();
  bool Idle() const;

 private:
  void Housekeeping();

  const SchedulerOptions options_;
  store::ModelStore* const store_;
  runtime::Runtime* const runtime_;
  metrics::Registry* const metrics_;
  Clock* const clock_;
  std::unique_ptr<ThreadPool> workers_;
  std::unique_ptr<ThreadPool> loaders_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<FunctionPool>> pools_;  // GUARDED_BY(mu_); never erased
  std::mutex tick_mu_;
  std::condition_variable tick_cv_;
  bool stop_ = false;
  std::thread housekeeping_;
};

}  // namespace pilotlight::scheduler
