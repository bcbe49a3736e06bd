// ProcessRuntime: `process` functions. Each instance is a worker process started with the
// AWS Lambda execution environment (AWS_LAMBDA_RUNTIME_API, _HANDLER, LAMBDA_TASK_ROOT,
// AWS_LAMBDA_FUNCTION_*, ...) that pulls events through the Lambda Runtime API
// (GET /2018-06-01/runtime/invocation/next, POST .../{id}/response | .../{id}/error,
// POST /2018-06-01/runtime/init/error) from a loopback endpoint of its own, so unmodified
// Lambda handlers and runtime interface clients work. One invocation at a time per worker.
//
// Isolation and limits: own process group (a kill takes its children too), own temporary
// directory (TMPDIR), clean environment, the resident set size watched against memory_mb,
// the deadline enforced by killing the worker; a dead worker marks its instance unhealthy and
// the scheduler replaces it. stdout/stderr go to the logs, tagged with the invocation's
// request id, and the last 4 KB of each invocation's output are returned with its result.
// Thread-safety: Load() and Instance::Invoke() may be called from any thread.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "runtime/runtime.h"

namespace pilotlight::runtime {

class Worker;

class ProcessRuntime final : public Runtime {
 public:
  struct Options {
    std::string tmp_root = "/tmp";  // per-instance temporary directories go under it
    Duration monitor_interval = std::chrono::milliseconds(50);
  };
  explicit ProcessRuntime(Options options);
  ~ProcessRuntime() override;

  // Starts a worker and waits until it asks for its first event (init done), or reports an
  // init error (WorkerFailed with the handler's error), exits, or passes init_timeout.
  StatusOr<std::unique_ptr<Instance>> Load(const LoadSpec& spec) override;
  // Shutdown: kills every worker (their pending invocations complete with an error) and waits
  // up to `wait` for them to be reaped. Call while the scheduler still exists.
  void KillAll(Duration wait);

 private:
  friend class Worker;
  void Register(Worker* w);
  void Unregister(Worker* w);
  void Monitor();

  const Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<Worker*> workers_;  // GUARDED_BY(mu_)
  bool stop_ = false;          // GUARDED_BY(mu_)
  std::thread monitor_;
};

}  // namespace pilotlight::runtime
