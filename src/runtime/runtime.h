// Runtime / Instance: the interface between the scheduler and whatever executes a function.
// A Runtime loads an Instance from a local, already-verified path (it never sees the store).
// An Instance is one loaded copy of a model version (for `onnx`: one ORT session); it is
// shared by concurrent requests, so Run() must be thread-safe. The scheduler owns instances
// and destroys one only when no request holds it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "tensor/tensor.h"

namespace pilotlight::runtime {

struct LoadSpec {
  std::string function;    // for error messages
  std::string model_path;  // local, verified
};

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
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  // Blocks while loading. FailedPrecondition if the file is not a loadable model.
  virtual StatusOr<std::unique_ptr<Instance>> Load(const LoadSpec& spec) = 0;
};

}  // namespace pilotlight::runtime
