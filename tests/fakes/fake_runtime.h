// FakeRuntime: counts loads, can hold loads at a gate, and serves an identity "model" with one
// float32 input "x" [-1, 2] and one output "y". Lets scheduler tests run without ONNX Runtime.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "runtime/runtime.h"

namespace pilotlight::testing {

class FakeInstance final : public runtime::Instance {
 public:
  FakeInstance() {
    in_ = {{"x", tensor::DType::kFloat32, {-1, 2}}};
    out_ = {{"y", tensor::DType::kFloat32, {-1, 2}}};
  }
  const std::vector<tensor::TensorSpec>& inputs() const override { return in_; }
  const std::vector<tensor::TensorSpec>& outputs() const override { return out_; }
  StatusOr<std::vector<tensor::NamedTensor>> Run(const std::vector<tensor::NamedTensor>& inputs, TimePoint) override {
    return std::vector<tensor::NamedTensor>{{"y", inputs.at(0).tensor}};
  }

 private:
  std::vector<tensor::TensorSpec> in_, out_;
};

class FakeRuntime final : public runtime::Runtime {
 public:
  StatusOr<std::unique_ptr<runtime::Instance>> Load(const runtime::LoadSpec& spec) override {
    loads++;
    last_path = spec.model_path;
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this] { return open_; });
    if (fail_next) {
      fail_next = false;
      return FailedPreconditionError("fake load failure");
    }
    return std::unique_ptr<runtime::Instance>(std::make_unique<FakeInstance>());
  }
  void Hold() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = false;
  }
  void Open() {
    {
      std::lock_guard<std::mutex> l(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  std::atomic<int> loads{0};
  std::atomic<bool> fail_next{false};
  std::string last_path;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
};

}  // namespace pilotlight::testing
