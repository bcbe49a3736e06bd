// ort_raw: raw ONNX Runtime in-process baseline for the benchmarks in bench/.
//
//   ort_raw MODEL.onnx [--batch 1] [--iters 1000] [--intra-threads 0] [--inter-threads 1]
//                      [--spin 0] [--seed 42] [--no-second-session]
//
// Measures, in this (fresh) process, with one Ort::Env built on global thread pools
// (Ort::ThreadingOptions + CreateEnvWithGlobalThreadPools, and
// SessionOptions::DisablePerSessionThreads(), ORT_ENABLE_ALL) the way the server builds its
// runtime (src/runtime/onnx/ort_runtime.cc: intra-op threads = hardware_concurrency unless
// configured, inter-op 1, spinning off); the defaults below mirror those:
//   env_create_ms       creating the Ort::Env (one-off per process; the server pays it at start)
//   session_create_ms   Ort::Session from the model path
//   first_run_ms        the first Run (lazy initialisation, prepacking, arena growth)
//   run_us              steady-state Run over --iters runs: p50/p90/p99/mean/min/max
//   second_session_*    a second session of the same model created in the now-warm process
//                       (what a long-lived server pays on a cold start; informative)
// The inputs are request-sized tensors (dim 0 = --batch, other dynamic dims = 1) of random
// values, names/shapes/dtypes read from the session. Output: one JSON object on stdout.
// The cold-start baseline used by the goals is session_create_ms + first_run_ms.

#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

struct Options {
  std::string model;
  int64_t batch = 1;
  int iters = 1000;
  int intra_threads = 0;  // 0: std::thread::hardware_concurrency(), as the server
  int inter_threads = 1;  // as the server
  int spin = 0;           // SetGlobalSpinControl; the server's default is off; -1: ORT's default
  uint32_t seed = 42;
  bool second_session = true;
};

[[noreturn]] void Usage(const char* msg) {
  if (msg != nullptr) std::fprintf(stderr, "ort_raw: %s\n", msg);
  std::fprintf(stderr,
               "usage: ort_raw MODEL.onnx [--batch 1] [--iters 1000] [--intra-threads 0]\n"
               "               [--inter-threads 1] [--spin 0|1|-1] [--seed 42] "
               "[--no-second-session]\n"
               "Threading defaults mirror the server: intra-op = hardware threads (0),\n"
               "inter-op 1, spinning off (-1 leaves ORT's default).\n"
               "Prints one JSON object: env_create_ms, session_create_ms, first_run_ms,\n"
               "run_us {p50,p90,p99,mean,min,max} over --iters steady runs, and the same\n"
               "create/first-run numbers for a second session in the warm process.\n");
  std::exit(2);
}

long ParseInt(const char* flag, const char* v) {
  char* end = nullptr;
  errno = 0;
  long x = std::strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0') {
    std::fprintf(stderr, "ort_raw: %s expects an integer, got '%s'\n", flag, v);
    std::exit(2);
  }
  return x;
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) Usage((a + " needs a value").c_str());
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      Usage(nullptr);
    } else if (a == "--batch") {
      o.batch = ParseInt("--batch", next());
    } else if (a == "--iters") {
      o.iters = static_cast<int>(ParseInt("--iters", next()));
    } else if (a == "--intra-threads") {
      o.intra_threads = static_cast<int>(ParseInt("--intra-threads", next()));
    } else if (a == "--inter-threads") {
      o.inter_threads = static_cast<int>(ParseInt("--inter-threads", next()));
    } else if (a == "--spin") {
      o.spin = static_cast<int>(ParseInt("--spin", next()));
    } else if (a == "--seed") {
      o.seed = static_cast<uint32_t>(ParseInt("--seed", next()));
    } else if (a == "--no-second-session") {
      o.second_session = false;
    } else if (!a.empty() && a[0] == '-') {
      Usage(("unknown option " + a).c_str());
    } else if (o.model.empty()) {
      o.model = a;
    } else {
      Usage("more than one model given");
    }
  }
  if (o.model.empty()) Usage("no model given");
  if (o.batch < 1) Usage("--batch must be >= 1");
  if (o.iters < 1) Usage("--iters must be >= 1");
  if (o.spin < -1 || o.spin > 1) Usage("--spin must be -1, 0 or 1");
  return o;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

const char* DtypeName(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
      return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
      return "int8";
    default:
      return nullptr;
  }
}

size_t DtypeSize(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return 8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return 8;
    default:
      return 1;  // bool, uint8, int8
  }
}

// One input tensor: its bytes live here for the whole benchmark (no copy per Run).
struct Input {
  std::string name;
  ONNXTensorElementDataType type{};
  std::vector<int64_t> model_shape;  // as declared (-1 for dynamic)
  std::vector<int64_t> shape;        // what we feed
  std::vector<unsigned char> bytes;
};

std::vector<Input> MakeInputs(Ort::Session& session, const Options& o) {
  Ort::AllocatorWithDefaultOptions alloc;
  std::mt19937 rng(o.seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<Input> inputs;
  for (size_t i = 0; i < session.GetInputCount(); ++i) {
    Input in;
    in.name = session.GetInputNameAllocated(i, alloc).get();
    Ort::TypeInfo ti = session.GetInputTypeInfo(i);
    auto tinfo = ti.GetTensorTypeAndShapeInfo();
    in.type = tinfo.GetElementType();
    if (DtypeName(in.type) == nullptr) {
      throw std::runtime_error("input '" + in.name + "' has an unsupported element type " +
                               std::to_string(static_cast<int>(in.type)));
    }
    in.model_shape = tinfo.GetShape();
    in.shape = in.model_shape;
    for (size_t d = 0; d < in.shape.size(); ++d) {
      if (in.shape[d] < 0) in.shape[d] = (d == 0) ? o.batch : 1;
    }
    if (!in.shape.empty() && in.model_shape[0] > 0 && in.model_shape[0] != o.batch) {
      std::fprintf(stderr, "ort_raw: note: input '%s' has a fixed batch dimension %lld\n", in.name.c_str(),
                   static_cast<long long>(in.model_shape[0]));
    }
    size_t count = 1;
    for (int64_t d : in.shape) count *= static_cast<size_t>(d);
    in.bytes.resize(count * DtypeSize(in.type));
    for (size_t k = 0; k < count; ++k) {
      float v = uni(rng);
      unsigned char* p = in.bytes.data() + k * DtypeSize(in.type);
      switch (in.type) {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
          std::memcpy(p, &v, 4);
          break;
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: {
          double x = v;
          std::memcpy(p, &x, 8);
          break;
        }
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: {
          int32_t x = static_cast<int32_t>(rng() % 10);
          std::memcpy(p, &x, 4);
          break;
        }
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: {
          int64_t x = static_cast<int64_t>(rng() % 10);
          std::memcpy(p, &x, 8);
          break;
        }
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
          *p = (rng() & 1u) ? 1 : 0;
          break;
        default:
          *p = static_cast<unsigned char>(rng() % 10);
          break;
      }
    }
    inputs.push_back(std::move(in));
  }
  return inputs;
}

struct Bound {
  std::vector<std::string> input_names_storage, output_names_storage;
  std::vector<const char*> input_names, output_names;
  std::vector<Ort::Value> values;
};

Bound Bind(Ort::Session& session, std::vector<Input>& inputs) {
  Bound b;
  Ort::AllocatorWithDefaultOptions alloc;
  Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  for (auto& in : inputs) {
    b.input_names_storage.push_back(in.name);
    b.values.push_back(
        Ort::Value::CreateTensor(mem, in.bytes.data(), in.bytes.size(), in.shape.data(), in.shape.size(), in.type));
  }
  for (size_t i = 0; i < session.GetOutputCount(); ++i) {
    b.output_names_storage.push_back(session.GetOutputNameAllocated(i, alloc).get());
  }
  for (auto& s : b.input_names_storage) b.input_names.push_back(s.c_str());
  for (auto& s : b.output_names_storage) b.output_names.push_back(s.c_str());
  return b;
}

void RunOnce(Ort::Session& session, Bound& b) {
  auto out = session.Run(Ort::RunOptions{nullptr}, b.input_names.data(), b.values.data(), b.values.size(),
                         b.output_names.data(), b.output_names.size());
  if (out.empty()) throw std::runtime_error("Run returned no outputs");
}

// Nearest-rank percentile over a sorted vector.
double Pct(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size()) + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > sorted.size()) rank = sorted.size();
  return sorted[rank - 1];
}

std::string ShapeJson(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << ']';
  return os.str();
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseArgs(argc, argv);
  try {
    // The environment, exactly as the server builds it: one per process, global pools.
    auto t_env = Clock::now();
    if (o.intra_threads <= 0) {
      o.intra_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    }
    Ort::ThreadingOptions tp;
    tp.SetGlobalIntraOpNumThreads(o.intra_threads);
    if (o.inter_threads > 0) tp.SetGlobalInterOpNumThreads(o.inter_threads);
    if (o.spin >= 0) tp.SetGlobalSpinControl(o.spin);
    Ort::Env env(tp, ORT_LOGGING_LEVEL_ERROR, "ort_raw");
    double env_create_ms = MsSince(t_env);

    Ort::SessionOptions so;
    so.DisablePerSessionThreads();
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);

    auto t_sess = Clock::now();
    Ort::Session session(env, o.model.c_str(), so);
    double session_create_ms = MsSince(t_sess);

    std::vector<Input> inputs = MakeInputs(session, o);
    Bound bound = Bind(session, inputs);

    auto t_first = Clock::now();
    RunOnce(session, bound);
    double first_run_ms = MsSince(t_first);

    std::vector<double> us;
    us.reserve(static_cast<size_t>(o.iters));
    for (int i = 0; i < o.iters; ++i) {
      auto t = Clock::now();
      RunOnce(session, bound);
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
    }
    double sum = 0;
    for (double x : us) sum += x;
    std::sort(us.begin(), us.end());

    // A second session in the now-warm process: what a long-running server pays.
    double second_create_ms = -1, second_first_run_ms = -1;
    if (o.second_session) {
      auto t2 = Clock::now();
      Ort::Session s2(env, o.model.c_str(), so);
      second_create_ms = MsSince(t2);
      std::vector<Input> in2 = MakeInputs(s2, o);
      Bound b2 = Bind(s2, in2);
      auto t3 = Clock::now();
      RunOnce(s2, b2);
      second_first_run_ms = MsSince(t3);
    }

    std::ostringstream js;
    js.setf(std::ios::fixed);
    js.precision(3);
    js << "{\"model\":\"" << JsonEscape(o.model) << "\",\"ort_version\":\"" << JsonEscape(Ort::GetVersionString())
       << "\",\"batch\":" << o.batch << ",\"iters\":" << o.iters << ",\"threads\":{\"intra_op\":" << o.intra_threads
       << ",\"inter_op\":" << o.inter_threads << ",\"spin\":" << o.spin
       << ",\"global_thread_pools\":true},\"inputs\":[";
    for (size_t i = 0; i < inputs.size(); ++i) {
      js << (i ? "," : "") << "{\"name\":\"" << JsonEscape(inputs[i].name) << "\",\"dtype\":\""
         << DtypeName(inputs[i].type) << "\",\"model_shape\":" << ShapeJson(inputs[i].model_shape)
         << ",\"shape\":" << ShapeJson(inputs[i].shape) << "}";
    }
    js << "],\"env_create_ms\":" << env_create_ms << ",\"session_create_ms\":" << session_create_ms
       << ",\"first_run_ms\":" << first_run_ms << ",\"cold_baseline_ms\":" << (session_create_ms + first_run_ms)
       << ",\"run_us\":{\"p50\":" << Pct(us, 50) << ",\"p90\":" << Pct(us, 90) << ",\"p99\":" << Pct(us, 99)
       << ",\"mean\":" << sum / static_cast<double>(us.size()) << ",\"min\":" << us.front() << ",\"max\":" << us.back()
       << "}";
    if (o.second_session) {
      js << ",\"second_session_create_ms\":" << second_create_ms
         << ",\"second_session_first_run_ms\":" << second_first_run_ms;
    }
    js << "}\n";
    std::fputs(js.str().c_str(), stdout);
    return 0;
  } catch (const Ort::Exception& e) {
    std::fprintf(stderr, "ort_raw: onnxruntime error: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ort_raw: %s\n", e.what());
  }
  return 1;
}
