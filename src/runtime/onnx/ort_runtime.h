// OrtRuntime: in-process ONNX Runtime (CPU execution provider).
// One Ort::Env per process with global intra/inter-op thread pools; sessions are created with
// per-session threads disabled, so N loaded models never mean N thread pools. A watchdog
// thread stops runs that pass their deadline (RunOptions::SetTerminate).
// Thread-safety: Load/Inspect/Run may be called concurrently. Construct at most one per process.
#pragma once

#include <memory>

#include "runtime/runtime.h"

namespace pilotlight::runtime {

class OrtRuntime final : public Runtime {
 public:
  struct Options {
    int intra_op_threads = 0;     // 0: one per core
    bool allow_spinning = false;  // spinning buys a few µs of latency for a core of CPU
  };
  explicit OrtRuntime(Options options);
  ~OrtRuntime() override;

  StatusOr<std::unique_ptr<Instance>> Load(const LoadSpec& spec) override;

  // Reads the input/output schema of a model file without keeping it loaded
  // (used by `model push` to write the manifest).
  struct Schema {
    std::vector<tensor::TensorSpec> inputs, outputs;
  };
  StatusOr<Schema> Inspect(const std::string& model_path);

  static std::string Version();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace pilotlight::runtime
