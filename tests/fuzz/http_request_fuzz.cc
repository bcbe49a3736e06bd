// Fuzzes the HTTP request path the way http/server.cc drives it, minus the socket: the input
// is the bytes a client sends on one connection. Each request in it (pipelined requests too)
// goes through Boost.Beast's request_parser with the server's limits (http::HttpOptions
// defaults: header bytes, header fields, URI, body), is refused with a typed error as the
// server would refuse it, or becomes a gateway::Request for Gateway::Handle, whose answer is
// turned into a Beast response and serialized as Session::Write does.
//
// Behind the gateway is a real scheduler::Scheduler over a real local ModelStore in a
// temporary folder (on /dev/shm when it exists), with fake runtimes instead of ONNX Runtime
// and worker processes:
//   one   onnx, input x float32 [-1,2] → y (identity); also serves /predict and is the default
//   two   onnx, inputs a float32 [-1,4] and b int64 [-1,2] sharing the batch dimension "N"
//   echo  process: the "handler" answers with the request's body (an API Gateway event's
//         "body", or the raw Lambda payload), so the fuzzer writes the handler's response and
//         reaches the function-URL response mapping; "!timeout", "!crash NAME: msg", "!big",
//         "!gone" and "!error ..." bodies make it fail the way workers fail. Also /hook.
// A model run whose first element is 7777, 8888 or 9999 fails (Internal, DeadlineExceeded,
// InvalidArgument). Every other name reaches the store (auto functions) and is not found.
// A real auth::Authenticator guards the routes: the admin API takes `Authorization: Bearer
// fuzz-admin-token-0123456789abcdef`, and `two` requires a JWT (HS256, key "fuzz" in a JWKS
// file; corpus/http_request/jwt_* carry a valid token that expires in 2100).
//
// Properties: Handle calls `done` exactly once (within 8 s: requests queue for at most the
// pool's queue_timeout), with a final HTTP status; a JSON error response is valid JSON; a HEAD
// answer has no body after Write; and nothing throws out of the gateway or the response writer.
// PILOTLIGHT_FUZZ_VERBOSE=1 prints each answer (to check what a seed reaches).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <simdjson.h>
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "auth/authenticator.h"
#include "common/ids.h"
#include "common/logging.h"
#include "common/thread_pool.h"
#include "config/config.h"
#include "fuzz_check.h"
#include "gateway/error_mapping.h"
#include "gateway/gateway.h"
#include "http/server.h"
#include "metrics/metrics.h"
#include "runtime/runtime.h"
#include "scheduler/scheduler.h"
#include "store/blob_store.h"
#include "store/model_store.h"

namespace pilotlight::fuzz {
namespace {

namespace fs = std::filesystem;
namespace bhttp = boost::beast::http;
using tensor::DType;
using tensor::NamedTensor;
using tensor::TensorSpec;

// ---- fake runtimes -----------------------------------------------------------------------------

class IdentityInstance final : public runtime::Instance {
 public:
  IdentityInstance(std::vector<TensorSpec> in, std::vector<TensorSpec> out)
      : in_(std::move(in)), out_(std::move(out)) {}
  const std::vector<TensorSpec>& inputs() const override { return in_; }
  const std::vector<TensorSpec>& outputs() const override { return out_; }

  StatusOr<std::vector<NamedTensor>> Run(const std::vector<NamedTensor>& inputs, TimePoint) override {
    std::vector<NamedTensor> result;
    for (size_t i = 0; i < in_.size(); ++i) {
      auto it = std::find_if(inputs.begin(), inputs.end(), [&](const NamedTensor& t) { return t.name == in_[i].name; });
      FUZZ_CHECK(it != inputs.end(), "the gateway ran a model without its input '" + in_[i].name + "'");
      FUZZ_CHECK(it->tensor.dtype == in_[i].dtype, "the gateway passed a tensor of the wrong dtype");
      FUZZ_CHECK(it->tensor.data.size() ==
                     static_cast<size_t>(it->tensor.element_count()) * tensor::DTypeSize(it->tensor.dtype),
                 "the gateway passed a tensor whose buffer disagrees with its shape");
      if (i == 0 && it->tensor.dtype == DType::kFloat32 && !it->tensor.data.empty()) {
        float first = it->tensor.as<float>()[0];
        if (first == 7777) return InternalError("fuzz: the engine failed");
        if (first == 8888) return DeadlineExceededError("fuzz: the run passed its deadline");
        if (first == 9999) return InvalidArgumentError("fuzz: the engine refused the input");
      }
      result.push_back({out_[i].name, it->tensor});
    }
    return result;
  }

 private:
  std::vector<TensorSpec> in_, out_;
};

class FakeOnnxRuntime final : public runtime::Runtime {
 public:
  StatusOr<std::unique_ptr<runtime::Instance>> Load(const runtime::LoadSpec& spec) override {
    std::string model = spec.function.substr(0, spec.function.find('@'));
    if (model == "two") {
      return std::unique_ptr<runtime::Instance>(std::make_unique<IdentityInstance>(
          std::vector<TensorSpec>{{"a", DType::kFloat32, {-1, 4}, {"N", ""}}, {"b", DType::kInt64, {-1, 2}, {"N", ""}}},
          std::vector<TensorSpec>{{"a_out", DType::kFloat32, {-1, 4}}, {"b_out", DType::kInt64, {-1, 2}}}));
    }
    return std::unique_ptr<runtime::Instance>(
        std::make_unique<IdentityInstance>(std::vector<TensorSpec>{{"x", DType::kFloat32, {-1, 2}}},
                                           std::vector<TensorSpec>{{"y", DType::kFloat32, {-1, 2}}}));
  }
};

// A process function's worker that answers each event with the body it was sent.
class EchoInstance final : public runtime::Instance {
 public:
  explicit EchoInstance(ThreadPool* replies) : replies_(replies) {}
  const std::vector<TensorSpec>& inputs() const override { return none_; }
  const std::vector<TensorSpec>& outputs() const override { return none_; }
  StatusOr<std::vector<NamedTensor>> Run(const std::vector<NamedTensor>&, TimePoint) override {
    return FailedPreconditionError("fuzz: a process function ran as a model");
  }
  bool IsProcess() const override { return true; }

  void Invoke(const runtime::Invocation& inv, runtime::InvokeCallback done) override {
    StatusOr<runtime::InvocationResult> result = Answer(inv.payload);
    // As a real worker: the answer arrives on another thread.
    replies_->Post([done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
  }

 private:
  static StatusOr<runtime::InvocationResult> Answer(const std::string& payload) {
    std::string text = payload;
    auto event = nlohmann::json::parse(payload, nullptr, false);
    if (event.is_object() && event.contains("rawPath") && event.contains("body") && event["body"].is_string()) {
      text = event["body"].get<std::string>();
    }
    auto starts = [&](std::string_view p) { return text.compare(0, p.size(), p) == 0; };
    if (starts("!timeout")) return DeadlineExceededError("fuzz: Task timed out after 30.00 seconds");
    if (starts("!crash")) return WorkerFailedError("fuzz: the worker failed to initialize: " + text.substr(6));
    if (starts("!big")) return OutOfRangeError("fuzz: the response is larger than 6291456 bytes");
    if (starts("!gone")) return UnavailableError("fuzz: the worker went away before taking the event");
    runtime::InvocationResult r;
    if (starts("!error")) {
      r.function_error = true;
      r.error_type = "Fuzz.Error";
      text = text.substr(6);
    }
    r.payload = std::move(text);
    r.log = "fuzz handler log line\n";
    return r;
  }

  ThreadPool* replies_;
  std::vector<TensorSpec> none_;
};

class FakeProcessRuntime final : public runtime::Runtime {
 public:
  StatusOr<std::unique_ptr<runtime::Instance>> Load(const runtime::LoadSpec& spec) override {
    FUZZ_CHECK(spec.process != nullptr, "a process function loaded without its ProcessSpec");
    return std::unique_ptr<runtime::Instance>(std::make_unique<EchoInstance>(&replies_));
  }

 private:
  ThreadPool replies_{1};
};

// ---- the server, built once per process ------------------------------------------------------

// Removes the folders of earlier runs that did not exit cleanly (a crash skips atexit).
void RemoveStaleFolders(const fs::path& parent) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    std::string name = e.path().filename().string();
    constexpr std::string_view kPrefix = "pilotlight-fuzz-http-";
    if (name.rfind(kPrefix, 0) != 0) continue;
    std::string pid = name.substr(kPrefix.size());
    if (!pid.empty() && !fs::exists("/proc/" + pid, ec)) fs::remove_all(e.path(), ec);
  }
}

struct World {
  fs::path dir;
  std::unique_ptr<store::ModelStore> store;
  FakeOnnxRuntime onnx;
  FakeProcessRuntime process;
  metrics::Registry metrics;
  std::unique_ptr<scheduler::Scheduler> scheduler;
  std::unique_ptr<auth::Authenticator> auth;
  std::unique_ptr<gateway::Gateway> gateway;
  http::HttpOptions http;

  World() {
    Logger().set_level(spdlog::level::off);  // the scheduler logs loads; noise while fuzzing
    std::error_code ec;
    fs::path parent = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
    RemoveStaleFolders(parent);
    dir = parent / ("pilotlight-fuzz-http-" + std::to_string(::getpid()));
    fs::remove_all(dir, ec);
    fs::create_directories(dir / "models");
    auto blobs = store::OpenBlobStore("file://" + (dir / "models").string());
    FUZZ_CHECK(blobs.ok(), "cannot open the model store: " + blobs.status().ToString());
    store = std::make_unique<store::ModelStore>(std::move(blobs).value(),
                                                store::StoreOptions{(dir / "cache").string(), uint64_t{1} << 20});
    std::string model_file = (dir / "model.bin").string();
    std::ofstream(model_file) << "not an ONNX model: the fuzz runtime never reads it\n";
    Push("one", model_file, {{"x", "float32", {-1, 2}}}, {{"y", "float32", {-1, 2}}});
    Push("two", model_file, {{"a", "float32", {-1, 4}}, {"b", "int64", {-1, 2}}},
         {{"a_out", "float32", {-1, 4}}, {"b_out", "int64", {-1, 2}}});

    scheduler::SchedulerOptions sopts;
    sopts.worker_threads = 2;
    sopts.loader_threads = 1;
    sopts.auto_functions = true;
    scheduler = std::make_unique<scheduler::Scheduler>(sopts, store.get(), &onnx, &metrics, SystemClock::Default());
    scheduler->SetProcessRuntime(&process);
    scheduler->AddFunction(scheduler::PoolOptionsFromConfig(config::DefaultFunction("one")));
    scheduler->AddFunction(scheduler::PoolOptionsFromConfig(config::DefaultFunction("two")));
    config::FunctionConfig echo = config::DefaultFunction("echo");
    echo.runtime = "process";
    echo.command = {"fuzz-echo-handler"};
    scheduler->AddFunction(scheduler::PoolOptionsFromConfig(echo));

    gateway::GatewayOptions gopts;
    gopts.default_function = "one";
    gopts.limits.max_elements = 4096;  // reachable from a few KB of input
    gopts.max_batch_items = 16;
    gopts.routes = {{"/predict", "one"}, {"/hook", "echo"}};
    gateway = std::make_unique<gateway::Gateway>(gopts, scheduler.get(), &metrics);

    // The JWKS holds one HS256 key: the 32 bytes "pilotlight-fuzz-hs256-secret-key" (base64url).
    std::ofstream((dir / "jwks.json").string()) << R"({"keys": [{"kty": "oct", "kid": "fuzz", "alg": "HS256", )"
                                                << R"("k": "cGlsb3RsaWdodC1mdXp6LWhzMjU2LXNlY3JldC1rZXk"}]})";
    auth::Authenticator::Options aopts;
    aopts.admin_token = "fuzz-admin-token-0123456789abcdef";
    aopts.key_db = (dir / "auth.db").string();
    aopts.jwt = auth::JwtConfig{.jwks = (dir / "jwks.json").string()};
    aopts.policies["two"].mode = "jwt";
    auto authenticator = auth::Authenticator::Create(aopts);
    FUZZ_CHECK(authenticator.ok(), "cannot create the authenticator: " + authenticator.status().ToString());
    auth = std::move(authenticator).value();
    gateway->SetAuth(auth.get());
    scheduler->Start();
  }

  ~World() {
    gateway.reset();
    auth.reset();
    scheduler.reset();  // joins its threads before the runtimes and the store go
    store.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  void Push(const std::string& name, const std::string& file, std::vector<store::TensorInfo> inputs,
            std::vector<store::TensorInfo> outputs) {
    store::Manifest schema;
    schema.inputs = std::move(inputs);
    schema.outputs = std::move(outputs);
    auto pushed = store->PushVersion(name, "1", file, schema);
    FUZZ_CHECK(pushed.ok(), "cannot push " + name + ": " + pushed.status().ToString());
    auto promoted = store->Promote(name, "1");
    FUZZ_CHECK(promoted.ok(), "cannot promote " + name + ": " + promoted.status().ToString());
  }
};

World* g_world = nullptr;

World& TheWorld() {
  if (!g_world) {
    g_world = new World();
    // Stop the scheduler's threads at exit, before the statics they use are destroyed.
    std::atexit([] {
      delete g_world;
      g_world = nullptr;
    });
  }
  return *g_world;
}

// ---- one connection ------------------------------------------------------------------------

// Session::Write: the gateway's answer as a Beast response, serialized.
void WriteResponse(gateway::Response&& r, unsigned version, const std::string& method) {
  bhttp::response<bhttp::string_body> res(static_cast<bhttp::status>(r.status), version ? version : 11);
  res.set(bhttp::field::server, "pilotlight");
  res.set(bhttp::field::content_type, r.content_type);
  if (!r.log.request_id.empty()) res.set("X-Request-Id", r.log.request_id);
  for (auto& [k, v] : r.headers) res.insert(k, v);
  res.keep_alive(true);
  if (method != "HEAD") res.body() = std::move(r.body);
  try {
    res.prepare_payload();
  } catch (const std::exception& e) {
    res.result(bhttp::status::bad_gateway);
    res.body() = gateway::ErrorJson("function_error", e.what(), r.log.request_id);
    res.set(bhttp::field::content_type, "application/json");
    res.prepare_payload();
  }
  if (r.function_metrics) r.function_metrics->CountRequest(r.status);
  if (method == "HEAD") FUZZ_CHECK(res.body().empty(), "a HEAD answer with a body");
  std::ostringstream wire;
  wire << res;
  FUZZ_CHECK(!wire.str().empty(), "an empty response on the wire");
}

// Session::Refuse: a typed error for a request that will not be served.
void Refuse(const std::optional<bhttp::request_parser<bhttp::string_body>>& parser, int status, std::string_view type,
            const std::string& message) {
  gateway::Response r;
  std::string rid;
  std::string method = "-";
  if (parser && parser->is_header_done()) {
    auto& h = parser->get();
    if (auto it = h.find("X-Request-Id"); it != h.end()) rid = std::string(it->value());
    method = std::string(h.method_string());
  }
  if (!IsValidRequestId(rid)) rid = NewRequestId();
  r.log.request_id = rid;
  gateway::SetError(r, status, type, message, rid);
  FUZZ_CHECK(r.status == status, "SetError changed the status");
  WriteResponse(std::move(r), 11, method);
}

struct Answer {
  std::mutex mu;
  std::condition_variable cv;
  int calls = 0;
  gateway::Response response;
};

// Session::OnRequest: the parsed request through the gateway. False when the connection closes.
bool Serve(bhttp::request_parser<bhttp::string_body>& parser) {
  World& world = TheWorld();
  auto& req = parser.get();
  gateway::Request greq;
  greq.method = std::string(req.method_string());
  greq.target = std::string(req.target());
  if (auto it = req.find("X-Request-Id"); it != req.end()) greq.x_request_id = std::string(it->value());
  if (auto it = req.find("X-Model"); it != req.end()) greq.x_model = std::string(it->value());
  if (auto it = req.find(bhttp::field::content_type); it != req.end()) greq.content_type = std::string(it->value());
  for (const auto& f : req) {
    greq.headers.emplace_back(std::string_view(f.name_string().data(), f.name_string().size()),
                              std::string_view(f.value().data(), f.value().size()));
  }
  greq.remote_addr = "127.0.0.1";
  greq.body = std::move(req.body());
  bool keep_alive = req.keep_alive();
  unsigned version = req.version();
  std::string method = greq.method;

  auto answer = std::make_shared<Answer>();
  world.gateway->Handle(std::move(greq), [answer](gateway::Response&& r) {
    std::lock_guard<std::mutex> l(answer->mu);
    FUZZ_CHECK(++answer->calls == 1, "Gateway::Handle called done more than once");
    answer->response = std::move(r);
    answer->cv.notify_all();
  });
  gateway::Response r;
  {
    std::unique_lock<std::mutex> l(answer->mu);
    bool answered = answer->cv.wait_for(l, std::chrono::seconds(8), [&] { return answer->calls > 0; });
    FUZZ_CHECK(answered, "Gateway::Handle never called done (8 s) for " + method + " " + std::string(req.target()));
    r = std::move(answer->response);
  }
  if (std::getenv("PILOTLIGHT_FUZZ_VERBOSE")) {  // to see what a seed reaches
    std::fprintf(stderr, "%s %s -> %d %s\n", method.c_str(), std::string(req.target()).c_str(), r.status,
                 r.body.substr(0, 300).c_str());
  }
  FUZZ_CHECK(r.status >= 200 && r.status <= 599, "not a final HTTP status: " + std::to_string(r.status));
  if (r.status >= 400 && !r.log.error_type.empty() && r.content_type == "application/json") {
    simdjson::dom::parser json;
    simdjson::dom::element doc;
    FUZZ_CHECK(json.parse(r.body).get(doc) == simdjson::SUCCESS, "a JSON error body is not JSON: " + r.body);
  }
  WriteResponse(std::move(r), version, method);
  return keep_alive;
}

void Connection(std::string_view in) {
  const http::HttpOptions& o = TheWorld().http;
  // A keep-alive connection's requests one after another, as Session::DoRead loops.
  for (int n = 0; n < 4 && !in.empty(); ++n) {
    std::optional<bhttp::request_parser<bhttp::string_body>> parser;
    parser.emplace();
    parser->header_limit(static_cast<uint32_t>(o.max_header_bytes + 1024));
    parser->body_limit(o.max_body_bytes);
    boost::beast::error_code ec;

    // async_read_header: the whole input is already buffered, so one put() reads the header.
    size_t head_bytes = parser->put(boost::asio::buffer(in.data(), in.size()), ec);
    if (ec == bhttp::error::need_more) return;  // the client stopped mid-header: the server closes
    auto refuse_for = [&](const boost::beast::error_code& e) {
      if (e == bhttp::error::body_limit) {
        return Refuse(parser, 413, "payload_too_large", "the request body exceeds the limit");
      }
      if (e == bhttp::error::header_limit) {
        return Refuse(parser, 431, "headers_too_large", "the request line and headers exceed the limit");
      }
      Refuse(parser, 400, "bad_request", "malformed HTTP request: " + e.message());
    };
    if (ec) return refuse_for(ec);  // the server answers, then closes
    in.remove_prefix(head_bytes);
    auto& h = parser->get();
    if (head_bytes > o.max_header_bytes) return Refuse(parser, 431, "headers_too_large", "header bytes");
    if (h.target().size() > o.max_uri_bytes) return Refuse(parser, 414, "uri_too_long", "target bytes");
    size_t fields = 0;
    for (auto it = h.begin(); it != h.end(); ++it) ++fields;
    if (fields > o.max_header_fields) return Refuse(parser, 431, "headers_too_large", "header fields");

    // async_read: the body, as far as the input goes.
    while (!parser->is_done()) {
      size_t used = parser->put(boost::asio::buffer(in.data(), in.size()), ec);
      in.remove_prefix(used);
      if (ec == bhttp::error::need_more) {
        ec = {};
        if (used == 0) break;
        continue;
      }
      if (ec || used == 0) break;
    }
    if (!ec && !parser->is_done()) parser->put_eof(ec);
    if (ec == bhttp::error::partial_message || ec == bhttp::error::end_of_stream) return;  // closed
    if (ec) return refuse_for(ec);
    if (!parser->is_done()) return;
    if (!Serve(*parser)) return;
  }
}

}  // namespace
}  // namespace pilotlight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pilotlight::fuzz::Connection(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
