#include "gateway/gateway.h"

#include <atomic>
#include <cmath>
#include <ctime>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/base64.h"
#include "common/ids.h"
#include "common/logging.h"
#include "common/url.h"
#include "gateway/error_mapping.h"

namespace pilotlight::gateway {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

simdjson::dom::parser& ThreadParser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

// Value of `key` in a query string ("a=1&model=x"), percent-decoded (boto3 sends
// Qualifier=%24LATEST).
std::string QueryParam(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    size_t eq = part.find('=');
    if (part.substr(0, eq) == key) return eq == std::string_view::npos ? "" : PercentDecode(part.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return "";
}

std::string FormatMs(double ms) { return fmt::format("{:.3f}", ms); }

bool SameSpecs(const std::vector<tensor::TensorSpec>& a, const std::vector<tensor::TensorSpec>& b) {
  if (&a == &b) return true;
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].dtype != b[i].dtype || a[i].shape != b[i].shape ||
        a[i].dim_params != b[i].dim_params) {
      return false;
    }
  }
  return true;
}

std::string InputNames(const std::vector<tensor::TensorSpec>& specs) {
  std::string names;
  for (const auto& s : specs) names += (names.empty() ? "" : ", ") + s.name;
  return names;
}

}  // namespace

// Decodes the request's "inputs" against a model's input specs: every check that does not need
// the model to run (names, dtypes, ranks, fixed and shared dimensions, element limit).
StatusOr<Gateway::Decoded> Gateway::DecodeInputs(const std::vector<tensor::TensorSpec>& specs, element inputs,
                                                 const std::string& function) const {
  Decoded out;
  out.list_form = inputs.type() == element_type::ARRAY;
  if (out.list_form) {
    if (specs.empty()) {
      return InvalidArgumentError(fmt::format("function '{}' takes no inputs; send {{\"inputs\": {{}}}}", function));
    }
    if (specs.size() != 1) {
      return InvalidArgumentError(
          fmt::format("function '{}' has {} inputs ({}); send them by name: {{\"inputs\": {{\"{}\": [[...]], ...}}}}",
                      function, specs.size(), InputNames(specs), specs.front().name));
    }
    PL_ASSIGN_OR_RETURN(tensor::Tensor t, tensor::DecodeJsonTensor(inputs, specs[0], options_.limits));
    out.tensors.push_back({specs[0].name, std::move(t)});
  } else {
    simdjson::dom::object named = inputs.get_object().value_unsafe();
    for (auto [key, value] : named) {
      auto spec = std::find_if(specs.begin(), specs.end(), [&](const auto& s) { return s.name == key; });
      if (spec == specs.end()) {
        return InvalidArgumentError(
            fmt::format("unknown input '{}'; the model's inputs are: {}", std::string(key), InputNames(specs)));
      }
      PL_ASSIGN_OR_RETURN(tensor::Tensor t, tensor::DecodeJsonTensor(value, *spec, options_.limits));
      out.tensors.push_back({spec->name, std::move(t)});
    }
    for (const auto& s : specs) {
      if (std::none_of(out.tensors.begin(), out.tensors.end(), [&](const auto& t) { return t.name == s.name; })) {
        return InvalidArgumentError(fmt::format("missing input '{}' ({} {})", s.name, tensor::DTypeName(s.dtype),
                                                tensor::ShapeString(s.shape)));
      }
    }
  }
  if (out.tensors.size() > 1) PL_RETURN_IF_ERROR(tensor::CheckSymbolicDims(specs, out.tensors));
  return out;
}

namespace {}  // namespace

struct Gateway::Call {
  std::string request_id;
  std::string body;
  Done done;
  Response response;
  // Set while Acquire() runs on `acquire_thread`: a callback running inline may reuse the DOM
  // parsed on this thread; a later one must parse again on its own thread.
  std::atomic<bool> in_acquire{false};
  std::string x_model;             // routing hint for /v1/infer (X-Model header, or a batch item's model)
  std::optional<Decoded> decoded;  // inputs, once decoded
  std::shared_ptr<const std::vector<tensor::TensorSpec>> decoded_for;  // ...against these specs
  std::thread::id acquire_thread;

  void Finish() { done(std::move(response)); }
  void Fail(const Status& s) {
    SetError(response, s, request_id);
    Finish();
  }
  void Fail(int status, std::string_view type, std::string_view message) {
    SetError(response, status, type, message, request_id);
    Finish();
  }
};

Gateway::Gateway(GatewayOptions options, scheduler::Scheduler* scheduler, metrics::Registry* metrics)
    : options_(std::move(options)), scheduler_(scheduler), metrics_(metrics) {}

void Gateway::Handle(Request&& req, Done done) {
  auto call = std::make_shared<Call>();
  call->request_id = IsValidRequestId(req.x_request_id) ? std::move(req.x_request_id) : NewRequestId();
  call->body = std::move(req.body);
  call->done = std::move(done);
  call->response.log.request_id = call->request_id;
  call->x_model = std::move(req.x_model);

  std::string_view target = req.target;
  size_t qpos = target.find('?');
  std::string_view path = target.substr(0, qpos);
  std::string_view query = qpos == std::string_view::npos ? std::string_view() : target.substr(qpos + 1);
  bool post = req.method == "POST";
  bool get = req.method == "GET" || req.method == "HEAD";
  auto wrong_method = [&](const char* allow) {
    call->response.headers.emplace_back("Allow", allow);
    call->Fail(405, "method_not_allowed", fmt::format("{} {} is not supported; use {}", req.method, path, allow));
  };

  constexpr std::string_view kFn = "/v1/functions/";
  constexpr std::string_view kInvoke = "/invoke";
  if (path.substr(0, kFn.size()) == kFn) {
    std::string_view rest = path.substr(kFn.size());
    size_t slash = rest.find('/');
    std::string_view after = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
    if (after == "/invoke-async" && slash > 0) {
      if (!post) return wrong_method("POST");
      return InvokeAsync(call, std::string(rest.substr(0, slash)), false);
    }
    bool exact = after == kInvoke;
    bool proxied = after.size() > kInvoke.size() && after.substr(0, kInvoke.size() + 1) == "/invoke/";
    if (slash != std::string_view::npos && slash > 0 && (exact || proxied)) {
      std::string name(rest.substr(0, slash));
      auto* pool = Route(name, call->response, call->request_id);
      if (!pool) return call->Finish();
      if (pool->IsProcess()) {
        return ProcessHttp(call, pool, req, path, query, proxied ? after.substr(kInvoke.size() + 1) : "");
      }
      if (!exact) {
        return call->Fail(404, "not_found",
                          fmt::format("function '{}' runs a model: call POST /v1/functions/{}/invoke (sub-paths are "
                                      "for process functions)",
                                      name, name));
      }
      if (!post) return wrong_method("POST");
      element doc;
      if (ThreadParser().parse(call->body).get(doc) != simdjson::SUCCESS) {
        return call->Fail(400, "invalid_json", "the request body is not valid JSON");
      }
      return Invoke(call, pool, doc);
    }
  }
  constexpr std::string_view kLambda = "/2015-03-31/functions/";
  constexpr std::string_view kInvocations = "/invocations";
  if (path.substr(0, kLambda.size()) == kLambda && path.size() > kLambda.size() + kInvocations.size() &&
      path.substr(path.size() - kInvocations.size()) == kInvocations) {
    if (!post) return wrong_method("POST");
    return LambdaInvoke(call, req, path.substr(kLambda.size(), path.size() - kLambda.size() - kInvocations.size()),
                        query);
  }
  constexpr std::string_view kAdminModels = "/admin/models/";
  if (path.substr(0, kAdminModels.size()) == kAdminModels) {
    std::string_view rest = path.substr(kAdminModels.size());
    auto slash = rest.find('/');
    std::string_view action = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (action == "promote" || action == "rollback") {
      if (!post) return wrong_method("POST");
      return AdminModel(call, std::string(rest.substr(0, slash)), std::string(action));
    }
  }
  if (path == "/v1/events/s3") {
    if (!post) return wrong_method("POST");
    if (!triggers_ || triggers_->empty()) {
      return call->Fail(404, "not_found",
                        "no triggers are configured (see `triggers:` in the configuration reference)");
    }
    auto created = triggers_->OnS3Notification(call->body, QueryParam(query, "token"));
    if (!created.ok()) {
      if (created.status().code() == StatusCode::kFailedPrecondition) {
        return call->Fail(403, "forbidden", created.status().message());
      }
      return call->Fail(created.status());
    }
    call->response.body = fmt::format("{{\"jobs_created\":{}}}", *created);
    return call->Finish();
  }
  if (path == "/v1/jobs") {
    if (!get) return wrong_method("GET");
    nlohmann::json jobs = nlohmann::json::array();
    if (triggers_) {
      auto list = triggers_->Jobs(std::max(1, std::min(10000, std::atoi(QueryParam(query, "limit").c_str()) ?: 100)));
      if (!list.ok()) return call->Fail(list.status());
      for (const auto& j : *list) {
        jobs.push_back({{"id", j.id},
                        {"source", j.trigger},
                        {"key", j.key},
                        {"etag", j.etag},
                        {"status", j.status},
                        {"rows", j.rows},
                        {"rows_done", j.rows_done},
                        {"ok", j.ok},
                        {"errors", j.errors},
                        {"error", j.error}});
      }
    }
    call->response.body =
        nlohmann::json({{"jobs", jobs}}).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return call->Finish();
  }
  if (path == "/v1/events" || path.substr(0, 11) == "/v1/events/") return EventsApi(call, req, path, query);
  if (path == "/v1/infer") return post ? Infer(call, query) : wrong_method("POST");
  if (path == "/v1/batch") return post ? Batch(call, query) : wrong_method("POST");
  if (path == "/v1/health") return get ? Health(call, query) : wrong_method("GET");
  if (path == "/metrics") {
    if (!get) return wrong_method("GET");
    call->response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    call->response.body = metrics_->Serialize();
    return call->Finish();
  }
  auto route = options_.routes.find(std::string(path));
  if (route != options_.routes.end()) {
    if (!post) return wrong_method("POST");
    auto* pool = Route(route->second, call->response, call->request_id);
    if (!pool) return call->Finish();
    if (pool->IsProcess()) return ProcessHttp(call, pool, req, path, query, "");
    element doc;
    if (ThreadParser().parse(call->body).get(doc) != simdjson::SUCCESS) {
      return call->Fail(400, "invalid_json", "the request body is not valid JSON");
    }
    return Invoke(call, pool, doc);
  }
  call->Fail(404, "not_found",
             fmt::format("no route for {} {}; see /openapi.json or the README's API reference", req.method, path));
}

scheduler::FunctionPool* Gateway::Route(const std::string& name, Response& r, std::string_view request_id) {
  auto* pool = scheduler_->Find(name);
  if (!pool) {
    SetError(r, 404, "not_found", fmt::format("function '{}' does not exist", name), request_id);
    r.log.function = name.size() <= 128 ? name : name.substr(0, 128);
    return nullptr;
  }
  r.log.function = name;
  r.function_metrics = pool->metrics();
  return pool;
}

void Gateway::Infer(std::shared_ptr<Call> call, std::string_view query) {
  element doc;
  if (ThreadParser().parse(call->body).get(doc) != simdjson::SUCCESS) {
    return call->Fail(400, "invalid_json", "the request body is not valid JSON");
  }
  std::string name = QueryParam(query, "model");
  if (name.empty()) name = call->x_model;
  if (name.empty() && doc.type() == element_type::OBJECT) {
    std::string_view m;
    if (doc["model"].get(m) == simdjson::SUCCESS) name = std::string(m);
  }
  if (name.empty()) name = options_.default_function;
  if (name.empty()) {
    return call->Fail(400, "invalid_input",
                      "no model given: pass ?model=NAME, an X-Model header or \"model\" in the body "
                      "(or set default_function in the config)");
  }
  auto* pool = Route(name, call->response, call->request_id);
  if (!pool) return call->Finish();
  Invoke(call, pool, doc);
}

void Gateway::Invoke(std::shared_ptr<Call> call, scheduler::FunctionPool* pool, element doc) {
  if (pool->IsProcess()) {
    return call->Fail(400, "invalid_input",
                      fmt::format("function '{}' runs a handler, not a model: call /v1/functions/{}/invoke or the "
                                  "Lambda Invoke API",
                                  call->response.log.function, call->response.log.function));
  }
  element inputs;
  if (doc.type() != element_type::OBJECT || doc["inputs"].get(inputs) != simdjson::SUCCESS ||
      (inputs.type() != element_type::ARRAY && inputs.type() != element_type::OBJECT)) {
    return call->Fail(400, "invalid_input",
                      "the body must be a JSON object with \"inputs\": [[...]] (one input) or "
                      "{\"name\": [[...]], ...} (named inputs)");
  }
  // When the function has a loaded version, decode against its schema now: bad input is
  // refused before it takes a queue slot, and the body is parsed once even if the request
  // runs on another thread later.
  if (auto specs = pool->InputSpecs()) {
    auto decoded = DecodeInputs(*specs, inputs, call->response.log.function);
    if (!decoded.ok()) return call->Fail(decoded.status());
    call->decoded = std::move(decoded).value();
    call->decoded_for = std::move(specs);
  }
  call->acquire_thread = std::this_thread::get_id();
  call->in_acquire.store(true);
  pool->Acquire([this, call, doc](StatusOr<scheduler::Lease> lease) {
    if (!lease.ok()) return call->Fail(lease.status());
    // The DOM is only valid on the thread that parsed it, while that parse is current.
    bool same_parse = call->in_acquire.load() && std::this_thread::get_id() == call->acquire_thread;
    Execute(call, *lease, same_parse ? &doc : nullptr);
  });
  call->in_acquire.store(false);
}

void Gateway::Execute(const std::shared_ptr<Call>& call, scheduler::Lease& lease, const element* doc) {
  Response& r = call->response;
  RequestLog& log = r.log;
  log.version = lease.version();
  log.cold_start = lease.cold_start;
  log.fetch_ms = ToMillis(lease.fetch_time);
  log.load_ms = ToMillis(lease.load_time);
  // A cold request waits in the queue while its instance loads; report that wait as fetch and
  // load, and only the remainder as queueing, so the Server-Timing phases add up.
  log.queue_ms = std::max(0.0, ToMillis(lease.queue_time) - (lease.cold_start ? log.fetch_ms + log.load_ms : 0.0));

  const auto& specs = lease.instance().inputs();
  if (!call->decoded || !call->decoded_for || !SameSpecs(*call->decoded_for, specs)) {
    // Not decoded before admission (cold function, or another version answered): decode now,
    // from the DOM parsed on this thread (`doc`, or a fresh parse when the lease came later).
    element d;
    if (doc) {
      d = *doc;
    } else {
      if (ThreadParser().parse(call->body).get(d) != simdjson::SUCCESS) {
        return call->Fail(InternalError("re-parse of an accepted body failed"));
      }
    }
    auto decoded = DecodeInputs(specs, d["inputs"].value_unsafe(), log.function);
    if (!decoded.ok()) return call->Fail(decoded.status());
    call->decoded = std::move(decoded).value();
  }
  std::vector<tensor::NamedTensor>& tensors = call->decoded->tensors;
  bool list_form = call->decoded->list_form;
  log.input_shapes = "{";
  for (size_t i = 0; i < tensors.size(); ++i) {
    log.input_shapes +=
        fmt::format("{}\"{}\":{}", i ? "," : "", tensors[i].name, tensor::ShapeString(tensors[i].tensor.shape));
  }
  log.input_shapes += "}";

  auto t0 = std::chrono::steady_clock::now();
  auto outputs = lease.instance().Run(tensors, lease.run_deadline);
  Duration run = std::chrono::steady_clock::now() - t0;
  log.handler_ms = ToMillis(run);
  lease.RecordRun(run);
  if (lease.first_run) {
    lease.RecordFirstRun(run);
    log.first_run_ms = log.handler_ms;
  }
  lease.Release();
  if (!outputs.ok()) return call->Fail(outputs.status());

  std::string& body = r.body;
  body.reserve(256);
  body += "{\"model\":\"";
  body += JsonEscape(log.function);
  body += "\",\"version\":\"";
  body += JsonEscape(log.version);
  body += "\",\"outputs\":";
  if (list_form && outputs->size() == 1) {
    tensor::EncodeJsonTensor(outputs->front().tensor, body);
  } else {
    body += '{';
    for (size_t i = 0; i < outputs->size(); ++i) {
      if (i) body += ',';
      body += '"';
      body += JsonEscape((*outputs)[i].name);
      body += "\":";
      tensor::EncodeJsonTensor((*outputs)[i].tensor, body);
    }
    body += '}';
  }
  body += "}";
  r.headers.emplace_back("X-Cold-Start", log.cold_start ? "true" : "false");
  r.headers.emplace_back(
      "Server-Timing",
      fmt::format("fetch;dur={}, load;dur={}, first_run;dur={}, queue;dur={}, run;dur={}", FormatMs(log.fetch_ms),
                  FormatMs(log.load_ms), FormatMs(log.first_run_ms), FormatMs(log.queue_ms), FormatMs(log.handler_ms)));
  call->Finish();
}

void Gateway::Batch(std::shared_ptr<Call> call, std::string_view query) {
  element doc;
  if (ThreadParser().parse(call->body).get(doc) != simdjson::SUCCESS) {
    return call->Fail(400, "invalid_json", "the request body is not valid JSON");
  }
  if (doc.type() != element_type::ARRAY) {
    return call->Fail(400, "invalid_input", "the /v1/batch body must be a JSON array of /v1/infer bodies");
  }
  auto arr = doc.get_array().value_unsafe();
  size_t n = arr.size();
  if (n > options_.max_batch_items) {
    return call->Fail(
        400, "invalid_input",
        fmt::format("the batch has {} items; the limit is {} (server.max_batch_items)", n, options_.max_batch_items));
  }
  if (n == 0) {
    call->response.body = "[]";
    return call->Finish();
  }
  struct Join {
    std::vector<std::string> results;
    std::atomic<size_t> remaining;
    std::shared_ptr<Call> call;
    std::chrono::steady_clock::time_point started;
  };
  auto join = std::make_shared<Join>();
  join->results.resize(n);
  join->remaining = n;
  join->call = call;
  join->started = std::chrono::steady_clock::now();
  std::string routed = QueryParam(query, "model");
  if (routed.empty()) routed = call->x_model;

  // Each item becomes its own call with its own body, so items can wait and run independently.
  std::vector<std::string> bodies, models;
  bodies.reserve(n);
  for (element item : arr) {
    bodies.push_back(simdjson::minify(item));
    // An item's own "model" wins over the batch-wide ?model= / X-Model.
    std::string_view m;
    if (item.type() == element_type::OBJECT && item["model"].get(m) == simdjson::SUCCESS) {
      models.emplace_back(m);
    } else {
      models.push_back(routed);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    auto sub = std::make_shared<Call>();
    sub->request_id = fmt::format("{}-{}", call->request_id, i);
    sub->response.log.request_id = sub->request_id;
    sub->body = std::move(bodies[i]);
    sub->done = [join, i](Response&& r) {
      if (r.function_metrics) {
        r.function_metrics->CountRequest(r.status);
        r.function_metrics->request_duration->Observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - join->started).count());
      }
      join->results[i] = std::move(r.body);
      if (join->remaining.fetch_sub(1) == 1) {
        std::string out = "[";
        for (size_t k = 0; k < join->results.size(); ++k) {
          if (k) out += ',';
          out += join->results[k];
        }
        out += "]";
        join->call->response.body = std::move(out);
        join->call->Finish();
      }
    };
    sub->x_model = std::move(models[i]);
    Infer(sub, "");
  }
}

void Gateway::AdminModel(std::shared_ptr<Call> call, const std::string& model, const std::string& action) {
  call->response.log.function = model.substr(0, 128);
  auto reply = [call](StatusOr<scheduler::ModelChange> r) {
    if (!r.ok()) return call->Fail(r.status());
    nlohmann::json fns = nlohmann::json::object();
    for (const auto& [fn, how] : r->functions) fns[fn] = how;
    nlohmann::json j = {{"model", r->model},
                        {"version", r->version},
                        {"previous", r->previous},
                        {"swapped", r->all_swapped},
                        {"functions", fns}};
    call->response.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    call->Finish();
  };
  if (action == "rollback") return scheduler_->Rollback(model, reply);
  element doc;
  std::string_view version;
  if (ThreadParser().parse(call->body).get(doc) != simdjson::SUCCESS || !doc.is_object() ||
      doc["version"].get(version) != simdjson::SUCCESS) {
    return call->Fail(400, "invalid_input", "send {\"version\": \"VERSION\"} to promote a version");
  }
  scheduler_->Promote(model, std::string(version), reply);
}

void Gateway::Health(std::shared_ptr<Call> call, std::string_view query) {
  auto names = scheduler_->FunctionNames();
  auto respond = [this, call, names](const std::map<std::string, std::string>& warm_errors) {
    nlohmann::json fns = nlohmann::json::object();
    for (const auto& n : names) {
      auto* pool = scheduler_->Find(n);
      auto s = pool->Snapshot();
      nlohmann::json f = {{"state", s.state},
                          {"version", s.version},
                          {"instances", s.instances},
                          {"loading", s.loading},
                          {"queue_depth", s.queue_depth},
                          {"in_flight", s.in_flight},
                          {"min_instances", pool->options().min_instances},
                          {"max_instances", pool->options().max_instances}};
      if (!s.last_error.empty()) f["last_error"] = s.last_error;
      if (!s.swapping_to.empty()) f["swapping_to"] = s.swapping_to;
      if (s.retiring > 0) f["retiring"] = s.retiring;
      auto it = warm_errors.find(n);
      if (it != warm_errors.end()) f["warm_error"] = it->second;
      fns[n] = std::move(f);
    }
    bool ok = warm_errors.empty();
    nlohmann::json j = {{"status", ok ? "ok" : "degraded"}, {"functions", fns}};
    call->response.status = ok ? 200 : 503;
    // Error texts may quote bytes from damaged store files: never let invalid UTF-8 throw here.
    call->response.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    call->Finish();
  };
  std::string warm = QueryParam(query, "warm");
  if (warm != "true" && warm != "1") return respond({});
  if (names.empty()) return respond({});
  struct Join {
    std::mutex mu;
    std::map<std::string, std::string> errors;
    size_t remaining;
  };
  auto join = std::make_shared<Join>();
  join->remaining = names.size();
  for (const auto& n : names) {
    scheduler_->Find(n)->WarmUp([join, n, respond](Status st) {
      bool last;
      {
        std::lock_guard<std::mutex> l(join->mu);
        if (!st.ok()) join->errors[n] = st.ToString();
        last = --join->remaining == 0;
      }
      if (last) respond(join->errors);
    });
  }
}

// ---- process functions: API Gateway 2.0 events and the Lambda Invoke API --------------------

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Content types a function URL passes as text; everything else is base64.
bool TextContent(std::string_view ct) {
  std::string t = Lower(ct);
  return t.empty() || t.rfind("text/", 0) == 0 || t.find("json") != std::string::npos ||
         t.find("xml") != std::string::npos || t.find("javascript") != std::string::npos ||
         t.find("x-www-form-urlencoded") != std::string::npos;
}

std::string ClfTime(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%d/%b/%Y:%H:%M:%S +0000", &tm);
  return buf;
}

std::string FunctionArn(const std::string& name) {
  const char* region = std::getenv("AWS_REGION");
  return fmt::format("arn:aws:lambda:{}:000000000000:function:{}", region && *region ? region : "us-east-1", name);
}

std::string TraceId() {
  std::string id = NewRequestId();  // 32 hex
  auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  return fmt::format("Root=1-{:08x}-{};Parent={};Sampled=0", now.count(), id.substr(0, 24), id.substr(16, 16));
}

// The AWS error shape the SDKs parse: X-Amzn-ErrorType + {"Type", "message"}.
void SetLambdaError(Response& r, int status, std::string_view type, std::string_view message) {
  r.status = status;
  r.content_type = "application/json";
  r.headers.emplace_back("X-Amzn-ErrorType", std::string(type));
  r.body = nlohmann::json({{"Type", status >= 500 ? "Service" : "User"}, {"message", message}, {"Message", message}})
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  r.log.error_type = std::string(type);
  if (status == 429) r.headers.emplace_back("Retry-After", "1");
}

std::string LambdaErrorType(int http_status) {
  switch (http_status) {
    case 400:
      return "InvalidRequestContentException";
    case 404:
      return "ResourceNotFoundException";
    case 413:
      return "RequestTooLargeException";
    case 429:
      return "TooManyRequestsException";
    case 409:
      return "ResourceConflictException";
    default:
      return "ServiceException";
  }
}

}  // namespace

void Gateway::ProcessHttp(std::shared_ptr<Call> call, scheduler::FunctionPool* pool, const Request& req,
                          std::string_view path, std::string_view query, std::string_view proxy) {
  using nlohmann::json;
  json headers = json::object();
  json cookies = json::array();
  std::string content_type, host, user_agent;
  for (const auto& [k, v] : req.headers) {
    std::string name = Lower(k);
    if (name == "cookie") {
      std::string_view rest = v;
      while (!rest.empty()) {
        size_t semi = rest.find(';');
        std::string_view c = rest.substr(0, semi);
        while (!c.empty() && c.front() == ' ') c.remove_prefix(1);
        if (!c.empty()) cookies.push_back(std::string(c));
        if (semi == std::string_view::npos) break;
        rest.remove_prefix(semi + 1);
      }
      continue;
    }
    if (name == "content-type") content_type = v;
    if (name == "host") host = std::string(v.substr(0, !v.empty() && v[0] == '[' ? v.find(']') + 1 : v.find(':')));
    if (name == "user-agent") user_agent = v;
    if (headers.contains(name)) {
      headers[name] = headers[name].get<std::string>() + "," + std::string(v);
    } else {
      headers[name] = std::string(v);
    }
  }
  json params = json::object();
  for (std::string_view q = query; !q.empty();) {
    size_t amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    size_t eq = part.find('=');
    std::string k = PercentDecode(part.substr(0, eq));
    std::string v = eq == std::string_view::npos ? "" : PercentDecode(part.substr(eq + 1));
    if (!k.empty()) params[k] = params.contains(k) ? params[k].get<std::string>() + "," + v : v;
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  auto now = std::chrono::system_clock::now();
  bool text = TextContent(content_type) && simdjson::validate_utf8(call->body.data(), call->body.size());
  json event = {
      {"version", "2.0"},
      {"routeKey", "$default"},
      {"rawPath", std::string(path)},
      {"rawQueryString", std::string(query)},
      {"headers", headers},
      {"requestContext",
       {{"accountId", "000000000000"},
        {"apiId", "pilotlight"},
        {"domainName", host},
        {"domainPrefix", host.substr(0, host.find('.'))},
        {"http",
         {{"method", req.method},
          {"path", std::string(path)},
          {"protocol", "HTTP/1.1"},
          {"sourceIp", req.remote_addr},
          {"userAgent", user_agent}}},
        {"requestId", call->request_id},
        {"routeKey", "$default"},
        {"stage", "$default"},
        {"time", ClfTime(now)},
        {"timeEpoch", std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count()}}},
      {"isBase64Encoded", !text}};
  if (!cookies.empty()) event["cookies"] = cookies;
  if (!params.empty()) event["queryStringParameters"] = params;
  if (!proxy.empty()) event["pathParameters"] = {{"proxy", std::string(proxy)}};
  if (!call->body.empty()) event["body"] = text ? call->body : Base64Encode(call->body);
  std::string payload = event.dump(-1, ' ', false, json::error_handler_t::replace);

  RunEvent(call, pool, std::move(payload), [](const std::shared_ptr<Call>& c, StatusOr<runtime::InvocationResult> r) {
    Response& res = c->response;
    if (!r.ok()) return c->Fail(r.status());
    if (r->function_error) {
      auto doc = json::parse(r->payload, nullptr, false);
      std::string type = r->error_type, message = r->payload;
      if (doc.is_object()) {
        message = doc.value("errorMessage", r->payload);
        if (doc.contains("errorType") && doc["errorType"].is_string()) type = doc["errorType"].get<std::string>();
      }
      res.headers.emplace_back("X-Amz-Function-Error", "Unhandled");
      return c->Fail(502, "function_error", (type.empty() ? "" : type + ": ") + message);
    }
    // Lambda function URL response mapping.
    auto doc = json::parse(r->payload, nullptr, false);
    if (doc.is_discarded()) {
      return c->Fail(502, "function_error", "the handler's response is not JSON: " + r->payload.substr(0, 200));
    }
    if (!doc.is_object() || !doc.contains("statusCode")) {
      res.status = 200;
      res.content_type = "application/json";
      res.body = std::move(r->payload);
      return c->Finish();
    }
    int status = doc["statusCode"].is_number_integer() ? doc["statusCode"].get<int>() : 0;
    // A final response only (1xx would leave the client waiting).
    if (status < 200 || status > 599) {
      return c->Fail(502, "function_error",
                     "the handler's statusCode is not a final HTTP status (200-599): " + doc["statusCode"].dump());
    }
    res.status = status;
    res.content_type = "application/json";
    // Header names must be tokens and values free of CR, LF and NUL (no response splitting).
    auto token = [](const std::string& n) {
      return !n.empty() &&
             n.find_first_not_of("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") ==
                 std::string::npos;
    };
    auto clean = [](const std::string& v) { return v.find_first_of(std::string("\r\n\0", 3)) == std::string::npos; };
    if (doc.contains("headers") && doc["headers"].is_object()) {
      for (auto& [k, v] : doc["headers"].items()) {
        std::string value = v.is_string() ? v.get<std::string>() : v.dump();
        if (!token(k) || !clean(value)) continue;
        std::string lk = Lower(k);
        if (lk == "content-type") {
          res.content_type = value;
        } else if (lk != "content-length" && lk != "transfer-encoding" && lk != "connection") {
          res.headers.emplace_back(k, value);
        }
      }
    }
    if (doc.contains("cookies") && doc["cookies"].is_array()) {
      for (auto& cookie : doc["cookies"]) {
        if (cookie.is_string() && clean(cookie.get<std::string>())) {
          res.headers.emplace_back("Set-Cookie", cookie.get<std::string>());
        }
      }
    }
    std::string body =
        doc.contains("body") ? (doc["body"].is_string() ? doc["body"].get<std::string>() : doc["body"].dump()) : "";
    if (doc.value("isBase64Encoded", false)) {
      auto decoded = Base64Decode(body);
      if (!decoded)
        return c->Fail(502, "function_error", "the handler's body is marked isBase64Encoded but is not base64");
      body = std::move(*decoded);
    }
    if (status == 204 || status == 304) body.clear();  // these carry no body
    res.body = std::move(body);
    c->Finish();
  });
}

void Gateway::RunEvent(std::shared_ptr<Call> call, scheduler::FunctionPool* pool, std::string payload,
                       std::function<void(const std::shared_ptr<Call>&, StatusOr<runtime::InvocationResult>)> finish) {
  RunEventAttempt(std::move(call), pool, std::make_shared<const std::string>(std::move(payload)), std::move(finish), 0);
}

void Gateway::RunEventAttempt(
    std::shared_ptr<Call> call, scheduler::FunctionPool* pool, std::shared_ptr<const std::string> shared_payload,
    std::function<void(const std::shared_ptr<Call>&, StatusOr<runtime::InvocationResult>)> finish, int attempt) {
  pool->Acquire([this, call, pool, shared_payload, finish = std::move(finish),
                 attempt](StatusOr<scheduler::Lease> acquired) mutable {
    if (!acquired.ok()) return finish(call, acquired.status());
    auto lease = std::make_shared<scheduler::Lease>(std::move(acquired).value());
    RequestLog& log = call->response.log;
    log.version = lease->version();
    log.cold_start = lease->cold_start;
    log.load_ms = ToMillis(lease->load_time);
    log.queue_ms = std::max(0.0, ToMillis(lease->queue_time) - (lease->cold_start ? log.load_ms : 0.0));
    runtime::Invocation inv;
    inv.request_id = call->request_id;
    inv.payload = *shared_payload;
    inv.deadline = lease->run_deadline;
    auto left = lease->run_deadline - SystemClock::Default()->Now();
    inv.deadline_epoch_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                (std::chrono::system_clock::now() + left).time_since_epoch())
                                .count();
    inv.function_arn = FunctionArn(log.function);
    inv.trace_id = TraceId();
    auto t0 = std::chrono::steady_clock::now();
    lease->instance().Invoke(inv, [this, call, pool, lease, t0, finish, shared_payload,
                                   attempt](StatusOr<runtime::InvocationResult> r) mutable {
      if (!r.ok() && r.status().code() == StatusCode::kUnavailable && attempt < 2) {
        // The worker went away before it took the event (never delivered): give it to another
        // instance, as Lambda only hands events to a runtime waiting in /next.
        lease->Release();
        return RunEventAttempt(call, pool, shared_payload, std::move(finish), attempt + 1);
      }
      Duration run = std::chrono::steady_clock::now() - t0;
      call->response.log.handler_ms = ToMillis(run);
      lease->RecordRun(run);
      if (lease->first_run) call->response.log.first_run_ms = call->response.log.handler_ms;
      lease->Release();
      call->response.headers.emplace_back("X-Cold-Start", call->response.log.cold_start ? "true" : "false");
      finish(call, std::move(r));
    });
  });
}

void Gateway::LambdaInvoke(std::shared_ptr<Call> call, const Request& req, std::string_view function_part,
                           std::string_view query) {
  Response& res = call->response;
  res.headers.emplace_back("x-amzn-RequestId", call->request_id);
  std::string invocation_type = "RequestResponse", log_type = "None";
  for (const auto& [k, v] : req.headers) {
    std::string name = Lower(k);
    if (name == "x-amz-invocation-type") invocation_type = v;
    if (name == "x-amz-log-type") log_type = v;
  }
  // FunctionName may be a name, NAME:QUALIFIER, or an ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME[:Q]).
  std::string fn = PercentDecode(function_part);
  std::string qualifier = QueryParam(query, "Qualifier");
  if (fn.rfind("arn:", 0) == 0) {
    auto pos = fn.find(":function:");
    fn = pos == std::string::npos ? "" : fn.substr(pos + 10);
  }
  if (auto colon = fn.find(':'); colon != std::string::npos) {
    if (qualifier.empty()) qualifier = fn.substr(colon + 1);
    fn = fn.substr(0, colon);
  }
  auto fail = [&](int status, std::string_view type, std::string_view msg) {
    SetLambdaError(res, status, type, msg);
    call->Finish();
  };
  if (invocation_type != "RequestResponse" && invocation_type != "DryRun" && invocation_type != "Event") {
    return fail(400, "InvalidParameterValueException",
                "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, not '" + invocation_type + "'");
  }
  auto* pool = scheduler_->Find(fn);
  res.log.function = fn.substr(0, 128);
  if (!pool) return fail(404, "ResourceNotFoundException", "Function not found: " + FunctionArn(fn));
  res.function_metrics = pool->metrics();
  bool latest = qualifier.empty() || qualifier == "$LATEST";
  if (pool->IsProcess() && !latest) {
    return fail(404, "ResourceNotFoundException",
                "Function not found: " + FunctionArn(fn) + ":" + qualifier + " (process functions have only $LATEST)");
  }
  if (!pool->IsProcess() && !latest) {
    auto pinned = scheduler_->FindVersion(fn, qualifier);
    if (!pinned.ok()) {
      return fail(404, "ResourceNotFoundException",
                  "Function not found: " + FunctionArn(fn) + ":" + qualifier + " (" + pinned.status().message() + ")");
    }
    pool = *pinned;
  }
  if (invocation_type == "DryRun") {
    res.status = 204;
    res.content_type = "application/json";
    return call->Finish();
  }
  if (invocation_type == "Event") {
    if (!latest) {
      return fail(400, "InvalidParameterValueException",
                  "asynchronous invocations run the function's current version; drop the Qualifier");
    }
    return InvokeAsync(call, fn, true);
  }
  bool tail = log_type == "Tail";
  std::string request_id = call->request_id;
  // Lambda's START/END/REPORT framing around the invocation's output, for X-Amz-Log-Result.
  auto log_result = [request_id](const RequestLog& log, std::string_view output, const std::string& version) {
    std::string text = fmt::format("START RequestId: {} Version: {}\n", request_id, version);
    text += output;
    if (!output.empty() && output.back() != '\n') text += '\n';
    text += fmt::format("END RequestId: {}\nREPORT RequestId: {}\tDuration: {:.2f} ms\tBilled Duration: {} ms",
                        request_id, request_id, log.handler_ms, static_cast<int64_t>(std::ceil(log.handler_ms)));
    if (log.cold_start) text += fmt::format("\tInit Duration: {:.2f} ms", log.fetch_ms + log.load_ms);
    text += "\t\n";
    if (text.size() > 4096) text = text.substr(text.size() - 4096);
    return Base64Encode(text);
  };

  if (pool->IsProcess()) {
    return RunEvent(
        call, pool, call->body,
        [tail, log_result](const std::shared_ptr<Call>& c, StatusOr<runtime::InvocationResult> r) {
          Response& res = c->response;
          res.headers.emplace_back("X-Amz-Executed-Version", "$LATEST");
          std::string output;
          if (!r.ok()) {
            StatusCode code = r.status().code();
            // As on Lambda: timeouts, crashes and oversized responses are function errors
            // (200 with X-Amz-Function-Error), not service errors.
            const char* type = code == StatusCode::kDeadlineExceeded ? "Sandbox.Timedout"
                               : code == StatusCode::kWorkerFailed   ? "Runtime.ExitError"
                               : code == StatusCode::kOutOfRange     ? "Function.ResponseSizeTooLarge"
                                                                     : nullptr;
            if (!type) {
              ApiError e = MapStatus(r.status());
              SetLambdaError(res, e.http_status, LambdaErrorType(e.http_status), r.status().message());
              return c->Finish();
            }
            res.status = 200;
            res.content_type = "application/json";
            res.headers.emplace_back("X-Amz-Function-Error", "Unhandled");
            std::string error_type = type, message = r.status().message();
            // An init error keeps the handler's own type ("... failed to initialize:
            // Runtime.HandlerNotFound: index.x is undefined"), as Lambda reports it.
            constexpr std::string_view kInit = "failed to initialize: ";
            if (auto at = message.find(kInit); code == StatusCode::kWorkerFailed && at != std::string::npos) {
              std::string rest = message.substr(at + kInit.size());
              auto sep = rest.find(": ");
              if (sep != std::string::npos && sep > 0 &&
                  rest.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._") >= sep) {
                error_type = rest.substr(0, sep);
                message = rest.substr(sep + 2);
              }
            }
            res.body = nlohmann::json({{"errorType", error_type}, {"errorMessage", message}})
                           .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
            res.log.error_type = error_type;
          } else {
            res.status = 200;
            res.content_type = "application/json";
            if (r->function_error) {
              res.headers.emplace_back("X-Amz-Function-Error", "Unhandled");
              res.log.error_type = "function_error";
            }
            res.body = std::move(r->payload);
            output = std::move(r->log);
          }
          if (tail) res.headers.emplace_back("X-Amz-Log-Result", log_result(res.log, output, "$LATEST"));
          c->Finish();
        });
  }
  // onnx: the seeds' JSON as payload, through the same path as /v1/functions/{name}/invoke;
  // the answer is reshaped into the Invoke API's headers and error types.
  element doc;
  if (ThreadParser().parse(call->body).get(doc) != simdjson::SUCCESS) {
    return fail(400, "InvalidRequestContentException", "Could not parse request body into json");
  }
  auto done = std::move(call->done);
  call->done = [done = std::move(done), tail, log_result](Response&& r) {
    if (r.status >= 400) {
      auto doc = nlohmann::json::parse(r.body, nullptr, false);
      std::string message = r.body;
      if (doc.is_object() && doc.contains("error")) message = doc["error"].value("message", r.body);
      Response out;
      out.log = std::move(r.log);
      out.function_metrics = r.function_metrics;
      for (auto& h : r.headers) {
        if (h.first == "x-amzn-RequestId") out.headers.push_back(h);
      }
      SetLambdaError(out, r.status, LambdaErrorType(r.status), message);
      return done(std::move(out));
    }
    r.headers.emplace_back("X-Amz-Executed-Version", r.log.version);
    if (tail) r.headers.emplace_back("X-Amz-Log-Result", log_result(r.log, "", r.log.version));
    done(std::move(r));
  };
  Invoke(call, pool, doc);
}

// ---- asynchronous invocations ----------------------------------------------------------------

void Gateway::InvokeAsync(std::shared_ptr<Call> call, const std::string& function, bool lambda_style) {
  Response& res = call->response;
  auto* pool = scheduler_->Find(function);
  res.log.function = function.substr(0, 128);
  if (!pool) {
    if (lambda_style) {
      SetLambdaError(res, 404, "ResourceNotFoundException", "Function not found: " + FunctionArn(function));
      return call->Finish();
    }
    return call->Fail(404, "not_found", fmt::format("function '{}' does not exist", function));
  }
  res.function_metrics = pool->metrics();
  if (!async_) {
    return call->Fail(503, "not_ready", "asynchronous invocations are not enabled in this server");
  }
  if (!pool->IsProcess()) {
    // Check the body now: an event that can never run must not be accepted.
    element doc, inputs;
    if (ThreadParser().parse(call->body).get(doc) != simdjson::SUCCESS || doc.type() != element_type::OBJECT ||
        doc["inputs"].get(inputs) != simdjson::SUCCESS) {
      if (lambda_style) {
        SetLambdaError(res, 400, "InvalidRequestContentException",
                       "the payload must be a JSON object with \"inputs\" (the seeds' JSON)");
        return call->Finish();
      }
      return call->Fail(400, "invalid_input", "the body must be a JSON object with \"inputs\" (the seeds' JSON)");
    }
  }
  std::string body = std::move(call->body);
  async_->Enqueue(function, std::move(body), [call, lambda_style](StatusOr<std::string> id) {
    Response& r = call->response;
    if (!id.ok()) return call->Fail(id.status());
    r.status = 202;
    r.content_type = "application/json";
    r.headers.emplace_back("Location", "/v1/events/" + *id);
    r.headers.emplace_back("X-Event-Id", *id);
    // Lambda answers an Event invocation with 202 and an empty body.
    r.body = lambda_style ? "" : "{\"event_id\":\"" + *id + "\"}";
    call->Finish();
  });
}

void Gateway::EventsApi(std::shared_ptr<Call> call, const Request& req, std::string_view path, std::string_view query) {
  if (!async_) return call->Fail(503, "not_ready", "asynchronous invocations are not enabled in this server");
  if (path == "/v1/events") {
    if (req.method != "GET" && req.method != "HEAD") {
      call->response.headers.emplace_back("Allow", "GET");
      return call->Fail(405, "method_not_allowed", "use GET /v1/events[?status=S&function=F&limit=N]");
    }
    std::string status = QueryParam(query, "status"), function = QueryParam(query, "function");
    std::string limit_text = QueryParam(query, "limit");
    std::optional<events::EventStatus> st;
    if (!status.empty()) {
      st = events::ParseStatus(status);
      if (!st) {
        return call->Fail(400, "invalid_input",
                          "status must be queued, running, succeeded or dead_letter, not '" + status + "'");
      }
    }
    int limit = 100;
    if (!limit_text.empty()) {
      limit = std::atoi(limit_text.c_str());
      if (limit < 1 || limit > 10000) return call->Fail(400, "invalid_input", "limit must be between 1 and 10000");
    }
    auto list = async_->List(st, function, limit);
    if (!list.ok()) return call->Fail(list.status());
    std::string body = "{\"events\":[";
    for (size_t i = 0; i < list->size(); ++i) {
      if (i) body += ',';
      body += events::AsyncInvoker::EventJson((*list)[i]);
    }
    body += "]}";
    call->response.body = std::move(body);
    return call->Finish();
  }
  std::string_view rest = path.substr(11);
  bool redrive = rest.size() > 8 && rest.substr(rest.size() - 8) == "/redrive";
  std::string id(redrive ? rest.substr(0, rest.size() - 8) : rest);
  if (id.empty() || id.find('/') != std::string::npos || id.size() > 64) {
    return call->Fail(404, "not_found", "no route for " + std::string(path));
  }
  if (redrive) {
    if (req.method != "POST") {
      call->response.headers.emplace_back("Allow", "POST");
      return call->Fail(405, "method_not_allowed", "use POST /v1/events/ID/redrive");
    }
    Status st = async_->Redrive(id);
    if (!st.ok()) {
      if (st.code() == StatusCode::kFailedPrecondition) return call->Fail(409, "conflict", st.message());
      return call->Fail(st);
    }
  } else if (req.method != "GET" && req.method != "HEAD") {
    call->response.headers.emplace_back("Allow", "GET");
    return call->Fail(405, "method_not_allowed", "use GET /v1/events/ID");
  }
  auto e = async_->Get(id);
  if (!e.ok()) return call->Fail(e.status());
  call->response.body = events::AsyncInvoker::EventJson(*e);
  call->Finish();
}

void Gateway::RunAsyncEvent(const events::Event& e, std::function<void(StatusOr<std::string>)> done) {
  auto* pool = scheduler_->Find(e.function);
  if (!pool) return done(NotFoundError("function '" + e.function + "' does not exist (any more)"));
  auto call = std::make_shared<Call>();
  call->request_id = e.id;
  call->response.log.request_id = e.id;
  call->response.log.function = e.function;
  call->body = e.payload;
  call->done = [done = std::move(done)](Response&& r) {
    bool function_error = false;
    for (const auto& h : r.headers) function_error |= h.first == "X-Amz-Function-Error";
    if (r.status >= 200 && r.status < 300 && !function_error) return done(std::move(r.body));
    std::string message = r.body;
    auto doc = nlohmann::json::parse(r.body, nullptr, false);
    if (doc.is_object() && doc.contains("error") && doc["error"].is_object()) {
      message = doc["error"].value("type", "") + ": " + doc["error"].value("message", "");
    }
    StatusCode code = r.status == 504   ? StatusCode::kDeadlineExceeded
                      : r.status == 429 ? StatusCode::kResourceExhausted  // throttled: not the event's fault
                      : r.status == 400 ? StatusCode::kInvalidArgument    // the payload is bad
                                        : StatusCode::kUnavailable;
    done(Status(code, fmt::format("HTTP {}: {}", r.status, message)));
  };
  if (pool->IsProcess()) {
    // As Lambda's Event invocations: the handler gets the raw payload.
    return RunEvent(call, pool, e.payload, [](const std::shared_ptr<Call>& c, StatusOr<runtime::InvocationResult> r) {
      if (!r.ok()) return c->Fail(r.status());
      if (r->function_error) {
        c->response.headers.emplace_back("X-Amz-Function-Error", "Unhandled");
        auto doc = nlohmann::json::parse(r->payload, nullptr, false);
        std::string msg =
            doc.is_object() ? doc.value("errorType", r->error_type) + ": " + doc.value("errorMessage", "") : r->payload;
        return c->Fail(502, "function_error", msg);
      }
      c->response.body = std::move(r->payload);
      c->Finish();
    });
  }
  element doc;
  if (ThreadParser().parse(call->body).get(doc) != simdjson::SUCCESS) {
    return call->Fail(400, "invalid_json", "the event payload is not valid JSON");
  }
  Invoke(call, pool, doc);
}

}  // namespace pilotlight::gateway
