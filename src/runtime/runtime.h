// Runtime / Instance: the interface between the scheduler and whatever executes a function.
// A Runtime loads an Instance from a local, already-verified path (it never sees the store)
// or, for `process` functions, from a command line. An Instance is one loaded copy: for `onnx`
// one ORT session, shared by concurrent requests (Run() is thread-safe); for `process` one
// worker process speaking the AWS Lambda Runtime API, one invocation at a time (Invoke()).
// The scheduler owns instances and destroys one only when no request holds it.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "tensor/tensor.h"

namespace pilotlight::runtime {

// How to start a `process` function's worker (the Lambda execution environment).
struct ProcessSpec {
  std::vector<std::string> command;                  // argv; argv[0] is looked up in PATH
  std::string handler;                               // _HANDLER
  std::string cwd;                                   // working directory and LAMBDA_TASK_ROOT
  std::map<std::string, std::string> env;            // added to (and overriding) the Lambda variables
  int memory_mb = 1024;                              // AWS_LAMBDA_FUNCTION_MEMORY_SIZE; RSS above it kills the worker
  Duration init_timeout = std::chrono::seconds(10);  // until the first GET .../invocation/next
  std::string region = "us-east-1";
  uint64_t max_response_bytes = 6 * 1024 * 1024;  // Lambda's synchronous response cap
};

struct LoadSpec {
  std::string function;                  // for error messages
  std::string model_path;                // local, verified (onnx)
  const ProcessSpec* process = nullptr;  // process functions
};

// One event for a process function (Lambda's Invoke / Runtime API vocabulary).
struct Invocation {
  std::string request_id;
  std::string payload;
  TimePoint deadline;             // steady clock: the worker is killed when it passes
  int64_t deadline_epoch_ms = 0;  // the same, as Lambda-Runtime-Deadline-Ms
  std::string function_arn;
  std::string trace_id;
};

struct InvocationResult {
  std::string payload;          // the handler's response, or its error document
  bool function_error = false;  // the handler reported an error (POST .../error)
  std::string error_type;       // Lambda-Runtime-Function-Error-Type (or the document's errorType)
  std::string log;              // the worker's output during this invocation (last 4 KB)
};
using InvokeCallback = std::function<void(StatusOr<InvocationResult>)>;

class Instance {
 public:
  virtual ~Instance() = default;
  virtual const std::vector<tensor::TensorSpec>& inputs() const = 0;
  virtual const std::vector<tensor::TensorSpec>& outputs() const = 0;
  // Runs the model. `inputs` must match inputs() by name (any order; all present).
  // InvalidArgument for inputs the engine refuses, DeadlineExceeded if `deadline` passed
  // while running (the run is stopped), Internal for engine failures. Thread-safe; blocks.
  virtual StatusOr<std::vector<tensor::NamedTensor>> Run(const std::vector<tensor::NamedTensor>& inputs,
                                                         TimePoint deadline) = 0;
  // Process functions: hands `inv` to the worker; `done` runs exactly once, on another thread,
  // with the handler's result, DeadlineExceeded (worker killed at the deadline), WorkerFailed
  // (the worker died or misbehaved), OutOfRange (response over the cap), Unavailable (the
  // event was never delivered: the worker had gone; safe to retry elsewhere). Never blocks.
  virtual void Invoke(const Invocation& inv, InvokeCallback done) {
    (void)inv;
    done(FailedPreconditionError("this function runs models, not events"));
  }
  virtual bool IsProcess() const { return false; }
  // False once the instance cannot serve again (its worker died or was killed): the scheduler
  // replaces it.
  virtual bool Healthy() const { return true; }
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  // Blocks while loading. FailedPrecondition if the file is not a loadable model.
  virtual StatusOr<std::unique_ptr<Instance>> Load(const LoadSpec& spec) = 0;
};

}  // namespace pilotlight::runtime
