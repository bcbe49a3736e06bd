#include "runtime/onnx/ort_runtime.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <onnxruntime_cxx_api.h>

namespace pilotlight::runtime {
namespace {

using tensor::DType;

std::optional<DType> FromOrt(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return DType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return DType::kFloat64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
      return DType::kInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return DType::kUint8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
      return DType::kInt16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
      return DType::kUint16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return DType::kInt32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
      return DType::kUint32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return DType::kInt64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
      return DType::kUint64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
      return DType::kBool;
    default:
      return std::nullopt;
  }
}

ONNXTensorElementDataType ToOrt(DType t) {
  switch (t) {
    case DType::kFloat32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DType::kFloat64:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    case DType::kInt8:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case DType::kUint8:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DType::kInt16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16;
    case DType::kUint16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16;
    case DType::kInt32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DType::kUint32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32;
    case DType::kInt64:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case DType::kUint64:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64;
    case DType::kBool:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

Status FromOrtException(const Ort::Exception& e, std::string_view what) {
  std::string msg = fmt::format("{}: {}", what, e.what());
  switch (e.GetOrtErrorCode()) {
    case ORT_INVALID_ARGUMENT:
    case ORT_INVALID_PROTOBUF:
    case ORT_NO_SUCHFILE:
    case ORT_NO_MODEL:
    case ORT_INVALID_GRAPH:
      return FailedPreconditionError(msg);
    default:
      return InternalError(msg);
  }
}

// Stops runs that outlive their deadline. Entries are (deadline → RunOptions*), removed by the
// run itself when it finishes; the watchdog only calls SetTerminate under the lock.
class Watchdog {
 public:
  Watchdog() : thread_([this] { Loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  uint64_t Add(TimePoint deadline, Ort::RunOptions* ro, std::atomic<bool>* fired) {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t id = ++next_id_;
    entries_.emplace(std::make_pair(deadline, id), Entry{ro, fired});
    // Wake the watchdog only if it sleeps past this deadline: with one timeout per function
    // that is about once per timeout, not once per request.
    if (deadline < sleeping_until_) cv_.notify_one();
    return id;
  }
  void Remove(TimePoint deadline, uint64_t id) {
    std::lock_guard<std::mutex> l(mu_);
    entries_.erase({deadline, id});
  }

 private:
  struct Entry {
    Ort::RunOptions* ro;
    std::atomic<bool>* fired;
  };
  void Loop() {
    std::unique_lock<std::mutex> l(mu_);
    while (!stop_) {
      if (entries_.empty()) {
        sleeping_until_ = TimePoint::max();
        cv_.wait(l);
        continue;
      }
      auto first = entries_.begin();
      if (std::chrono::steady_clock::now() >= first->first.first) {
        first->second.fired->store(true);
        first->second.ro->SetTerminate();
        entries_.erase(first);
        continue;
      }
      TimePoint wake = first->first.first;  // a copy: the entry may be erased while we wait
      sleeping_until_ = wake;
      cv_.wait_until(l, wake);
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t next_id_ = 0;
  TimePoint sleeping_until_ = TimePoint::min();  // until when Loop sleeps (min: not yet asleep)
  std::map<std::pair<TimePoint, uint64_t>, Entry> entries_;
  std::thread thread_;
};

StatusOr<std::vector<tensor::TensorSpec>> ReadSpecs(Ort::Session& s, bool inputs) {
  Ort::AllocatorWithDefaultOptions alloc;
  size_t n = inputs ? s.GetInputCount() : s.GetOutputCount();
  std::vector<tensor::TensorSpec> out;
  for (size_t i = 0; i < n; ++i) {
    auto name = inputs ? s.GetInputNameAllocated(i, alloc) : s.GetOutputNameAllocated(i, alloc);
    Ort::TypeInfo ti = inputs ? s.GetInputTypeInfo(i) : s.GetOutputTypeInfo(i);
    if (ti.GetONNXType() != ONNX_TYPE_TENSOR) {
      return FailedPreconditionError(fmt::format("{} '{}' is not a tensor; only tensor inputs/outputs are supported",
                                                 inputs ? "input" : "output", name.get()));
    }
    auto info = ti.GetTensorTypeAndShapeInfo();
    auto dt = FromOrt(info.GetElementType());
    if (!dt) {
      return FailedPreconditionError(fmt::format("{} '{}' has an unsupported element type ({})",
                                                 inputs ? "input" : "output", name.get(),
                                                 static_cast<int>(info.GetElementType())));
    }
    tensor::TensorSpec spec{name.get(), *dt, info.GetShape(), {}};
    for (auto& d : spec.shape) d = d < 0 ? -1 : d;
    std::vector<const char*> params(spec.shape.size(), nullptr);
    info.GetSymbolicDimensions(params.data(), params.size());
    for (const char* p : params) spec.dim_params.emplace_back(p ? p : "");
    out.push_back(std::move(spec));
  }
  return out;
}

class OrtInstance final : public Instance {
 public:
  OrtInstance(std::unique_ptr<Ort::Session> s, std::vector<tensor::TensorSpec> in, std::vector<tensor::TensorSpec> out,
              Watchdog* wd)
      : session_(std::move(s)),
        inputs_(std::move(in)),
        outputs_(std::move(out)),
        watchdog_(wd),
        mem_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)) {
    for (auto& i : inputs_) input_names_.push_back(i.name.c_str());
    for (auto& o : outputs_) output_names_.push_back(o.name.c_str());
  }
  const std::vector<tensor::TensorSpec>& inputs() const override { return inputs_; }
  const std::vector<tensor::TensorSpec>& outputs() const override { return outputs_; }

  StatusOr<std::vector<tensor::NamedTensor>> Run(const std::vector<tensor::NamedTensor>& inputs,
                                                 TimePoint deadline) override {
    // Nothing ORT throws may cross the module boundary: the whole call is guarded.
    try {
      return RunUnguarded(inputs, deadline);
    } catch (const Ort::Exception& e) {
      return InternalError(std::string("model run failed: ") + e.what());
    } catch (const std::exception& e) {
      return InternalError(std::string("model run failed: ") + e.what());
    }
  }

 private:
  StatusOr<std::vector<tensor::NamedTensor>> RunUnguarded(const std::vector<tensor::NamedTensor>& inputs,
                                                          TimePoint deadline) {
    std::vector<Ort::Value> values;
    values.reserve(inputs_.size());
    for (const auto& spec : inputs_) {
      auto it = std::find_if(inputs.begin(), inputs.end(), [&](const auto& n) { return n.name == spec.name; });
      if (it == inputs.end()) return InvalidArgumentError("missing input '" + spec.name + "'");
      const tensor::Tensor& t = it->tensor;
      values.push_back(Ort::Value::CreateTensor(mem_, const_cast<uint8_t*>(t.data.data()), t.data.size(),
                                                t.shape.data(), t.shape.size(), ToOrt(t.dtype)));
    }
    Ort::RunOptions ro;
    std::atomic<bool> fired{false};
    uint64_t wd_id = 0;
    bool watched = deadline != TimePoint::max();
    if (watched) wd_id = watchdog_->Add(deadline, &ro, &fired);
    std::vector<Ort::Value> results;
    Status err;
    try {
      results = session_->Run(ro, input_names_.data(), values.data(), values.size(), output_names_.data(),
                              output_names_.size());
    } catch (const Ort::Exception& e) {
      err = e.GetOrtErrorCode() == ORT_INVALID_ARGUMENT ? InvalidArgumentError(e.what())
                                                        : InternalError(std::string("model run failed: ") + e.what());
    }
    if (watched) watchdog_->Remove(deadline, wd_id);
    if (fired.load()) return DeadlineExceededError("the model run exceeded the function's timeout and was stopped");
    if (!err.ok()) return err;
    std::vector<tensor::NamedTensor> out;
    out.reserve(results.size());
    for (size_t i = 0; i < results.size(); ++i) {
      auto info = results[i].GetTensorTypeAndShapeInfo();
      auto dt = FromOrt(info.GetElementType());
      if (!dt) return InternalError("output '" + outputs_[i].name + "' has an unsupported element type");
      tensor::NamedTensor nt{outputs_[i].name, {*dt, info.GetShape(), {}}};
      size_t bytes = info.GetElementCount() * tensor::DTypeSize(*dt);
      const auto* src = static_cast<const uint8_t*>(results[i].GetTensorRawData());
      nt.tensor.data.assign(src, src + bytes);
      out.push_back(std::move(nt));
    }
    return out;
  }

  std::unique_ptr<Ort::Session> session_;
  std::vector<tensor::TensorSpec> inputs_, outputs_;
  std::vector<const char*> input_names_, output_names_;
  Watchdog* watchdog_;
  Ort::MemoryInfo mem_;
};

}  // namespace

struct OrtRuntime::State {
  std::unique_ptr<Ort::Env> env;
  Watchdog watchdog;
};

OrtRuntime::OrtRuntime(Options options) : state_(std::make_unique<State>()) {
  Ort::ThreadingOptions tp;
  int threads = options.intra_op_threads > 0 ? options.intra_op_threads
                                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  tp.SetGlobalIntraOpNumThreads(threads);
  tp.SetGlobalInterOpNumThreads(1);
  tp.SetGlobalSpinControl(options.allow_spinning ? 1 : 0);
  state_->env = std::make_unique<Ort::Env>(tp, ORT_LOGGING_LEVEL_ERROR, "pilotlight");
}

OrtRuntime::~OrtRuntime() = default;

std::string OrtRuntime::Version() { return Ort::GetVersionString(); }

namespace {
Ort::SessionOptions MakeSessionOptions() {
  Ort::SessionOptions so;
  so.DisablePerSessionThreads();
  so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
  return so;
}
}  // namespace

StatusOr<std::unique_ptr<Instance>> OrtRuntime::Load(const LoadSpec& spec) {
  try {
    auto so = MakeSessionOptions();
    auto session = std::make_unique<Ort::Session>(*state_->env, spec.model_path.c_str(), so);
    PL_ASSIGN_OR_RETURN(auto in, ReadSpecs(*session, true));
    PL_ASSIGN_OR_RETURN(auto out, ReadSpecs(*session, false));
    return std::unique_ptr<Instance>(
        std::make_unique<OrtInstance>(std::move(session), std::move(in), std::move(out), &state_->watchdog));
  } catch (const Ort::Exception& e) {
    return FromOrtException(e, "cannot load " + spec.model_path);
  }
}

StatusOr<OrtRuntime::Schema> OrtRuntime::Inspect(const std::string& model_path) {
  try {
    Ort::SessionOptions so = MakeSessionOptions();
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_DISABLE_ALL);
    Ort::Session session(*state_->env, model_path.c_str(), so);
    Schema s;
    PL_ASSIGN_OR_RETURN(s.inputs, ReadSpecs(session, true));
    PL_ASSIGN_OR_RETURN(s.outputs, ReadSpecs(session, false));
    return s;
  } catch (const Ort::Exception& e) {
    return FromOrtException(e, model_path + " is not a loadable ONNX model");
  }
}

}  // namespace pilotlight::runtime
