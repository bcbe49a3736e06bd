#include "gateway/gateway.h"

#include <atomic>
#include <charconv>
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
#include "tensor/v2_codec.h"

namespace pilotlight::gateway {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

// Request bodies nest at most this deep (server.max_json_depth); set once before serving.
std::atomic<uint32_t> g_max_json_depth{64};

simdjson::dom::parser& ThreadParser() {
  thread_local simdjson::dom::parser parser;
  thread_local bool ready = false;
  if (!ready) {
    // Capacity grows on demand and keeps this depth (simdjson reallocates with max_depth()).
    auto err = parser.allocate(simdjson::dom::MINIMAL_DOCUMENT_CAPACITY, g_max_json_depth.load() + 1);
    (void)err;  // a failed allocation fails the first parse instead
    ready = true;
  }
  return parser;
}

// Parses `body` on this thread's parser; a nesting deeper than server.max_json_depth and
// invalid JSON are told apart in the message.
simdjson::error_code ParseBody(const std::string& body, element* doc) { return ThreadParser().parse(body).get(*doc); }

std::string JsonErrorMessage(simdjson::error_code ec) {
  if (ec == simdjson::DEPTH_ERROR) {
    return fmt::format("the JSON body nests deeper than {} levels (server.max_json_depth)", g_max_json_depth.load());
  }
  if (ec == simdjson::UTF8_ERROR) return "the request body is not valid UTF-8";
  return "the request body is not valid JSON";
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

// Member `key` of a JSON object a function's worker wrote, or `fallback` when absent or not a
// string: worker output is untrusted, and json::value() throws on a member of another type.
std::string StringMember(const nlohmann::json& doc, const char* key, const std::string& fallback) {
  auto it = doc.is_object() ? doc.find(key) : doc.end();
  return it != doc.end() && it->is_string() ? it->get<std::string>() : fallback;
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
    for (simdjson::dom::key_value_pair field : named) {
      // Named variables, not a structured binding: clang 14 (the fuzz build) cannot capture one.
      std::string_view key = field.key;
      simdjson::dom::element value = field.value;
      auto spec = std::find_if(specs.begin(), specs.end(), [&](const auto& s) { return s.name == key; });
      if (spec == specs.end()) {
        return InvalidArgumentError(
            fmt::format("unknown input '{}'; the model's inputs are: {}", std::string(key), InputNames(specs)));
      }
      if (std::any_of(out.tensors.begin(), out.tensors.end(), [&](const auto& t) { return t.name == spec->name; })) {
        return InvalidArgumentError(fmt::format("input '{}' is given twice", spec->name));
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
  auth::Credentials creds;         // what the request presented (copied: headers are views)
  std::string x_model;             // routing hint for /v1/infer (X-Model header, or a batch item's model)
  std::optional<Decoded> decoded;  // inputs, once decoded
  std::shared_ptr<const std::vector<tensor::TensorSpec>> decoded_for;  // ...against these specs
  std::thread::id acquire_thread;

  // Open Inference Protocol v2 requests: decoded with the v2 codec, answered in its shapes.
  struct V2State {
    std::optional<size_t> json_length;  // Inference-Header-Content-Length
    std::optional<tensor::v2::InferRequest> request;
  };
  std::unique_ptr<V2State> v2;
  bool v2_errors = false;  // errors as {"error": "message"} (the v2 error shape)

  void Finish() {
    if (v2_errors && response.status >= 400 && response.content_type == "application/json") {
      auto j = nlohmann::json::parse(response.body, nullptr, false);
      if (j.is_object() && j.contains("error") && j["error"].is_object()) {
        response.body = nlohmann::json({{"error", j["error"].value("message", "")}})
                            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
    }
    done(std::move(response));
  }
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
    : options_(std::move(options)), scheduler_(scheduler), metrics_(metrics) {
  g_max_json_depth = options_.max_json_depth;
}

namespace {

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

void SetLambdaError(Response& r, int status, std::string_view type, std::string_view message);

bool ValidName(std::string_view n) {
  if (n.empty() || n.size() > 128 || n.front() == '.') return false;
  for (char ch : n) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.')) return false;
  }
  return true;
}

// Matches `path` against a pattern of literal segments, {param} (one segment) and a final
// {proxy+} (one or more segments). Captures go to `params` in order.
bool MatchPattern(std::string_view pattern, std::string_view path, std::vector<std::string_view>* params) {
  params->clear();
  if (pattern.empty() || path.empty() || path.front() != '/') return false;
  size_t pi = 1, xi = 1;
  while (true) {
    size_t pe = pattern.find('/', pi);
    std::string_view pseg = pattern.substr(pi, pe == std::string_view::npos ? std::string_view::npos : pe - pi);
    if (pseg.size() > 3 && pseg.substr(pseg.size() - 2) == "+}") {  // greedy tail
      if (xi >= path.size()) return false;
      params->push_back(path.substr(xi));
      return true;
    }
    size_t xe = path.find('/', xi);
    std::string_view xseg = path.substr(xi, xe == std::string_view::npos ? std::string_view::npos : xe - xi);
    if (!pseg.empty() && pseg.front() == '{') {
      if (xseg.empty()) return false;
      params->push_back(xseg);
    } else if (pseg != xseg) {
      return false;
    }
    if (pe == std::string_view::npos || xe == std::string_view::npos) {
      return pe == std::string_view::npos && xe == std::string_view::npos;
    }
    pi = pe + 1;
    xi = xe + 1;
  }
}

}  // namespace

// Every route, in match order: the first pattern that matches the path wins, then its method.
// "*" answers any method (the handler decides). Documented in src/gateway/openapi.json — a unit
// test keeps the two in step.
const std::vector<RouteInfo>& Gateway::Routes() {
  static const std::vector<RouteInfo> kRoutes = {
      {"*", "/v1/functions/{name}/invoke", RouteKind::kInvoke, RouteAccess::kFunction},
      {"*", "/v1/functions/{name}/invoke/{proxy+}", RouteKind::kInvokeProxy, RouteAccess::kFunction},
      {"POST", "/v1/functions/{name}/invoke-async", RouteKind::kInvokeAsync, RouteAccess::kFunction},
      {"POST", "/2015-03-31/functions/{name}/invocations", RouteKind::kLambdaInvoke, RouteAccess::kFunction},
      {"POST", "/v1/infer", RouteKind::kInfer, RouteAccess::kShared},
      {"POST", "/v1/batch", RouteKind::kBatch, RouteAccess::kShared},
      {"GET", "/v1/health", RouteKind::kHealth, RouteAccess::kPublic},
      {"GET", "/metrics", RouteKind::kMetrics, RouteAccess::kPublic},
      {"GET", "/openapi.json", RouteKind::kOpenApi, RouteAccess::kPublic},
      {"POST", "/v1/events/s3", RouteKind::kS3Events, RouteAccess::kPublic},  // its own token
      {"GET", "/v1/events", RouteKind::kEventsList, RouteAccess::kAdmin},
      {"GET", "/v1/events/{id}", RouteKind::kEventGet, RouteAccess::kAdmin},
      {"POST", "/v1/events/{id}/redrive", RouteKind::kEventRedrive, RouteAccess::kAdmin},
      {"GET", "/v1/jobs", RouteKind::kJobs, RouteAccess::kAdmin},
      {"POST", "/admin/models/{name}/promote", RouteKind::kPromote, RouteAccess::kAdmin},
      {"POST", "/admin/models/{name}/rollback", RouteKind::kRollback, RouteAccess::kAdmin},
      {"GET", "/admin/keys", RouteKind::kKeysList, RouteAccess::kAdmin},
      {"POST", "/admin/keys", RouteKind::kKeysCreate, RouteAccess::kAdmin},
      {"DELETE", "/admin/keys/{id}", RouteKind::kKeysRevoke, RouteAccess::kAdmin},
      {"GET", "/v2", RouteKind::kV2Server, RouteAccess::kPublic},
      {"GET", "/v2/health/live", RouteKind::kV2Live, RouteAccess::kPublic},
      {"GET", "/v2/health/ready", RouteKind::kV2Ready, RouteAccess::kPublic},
      {"GET", "/v2/models/{name}", RouteKind::kV2Model, RouteAccess::kShared},
      {"GET", "/v2/models/{name}/ready", RouteKind::kV2ModelReady, RouteAccess::kShared},
      {"POST", "/v2/models/{name}/infer", RouteKind::kV2Infer, RouteAccess::kShared},
      {"GET", "/v2/models/{name}/versions/{version}", RouteKind::kV2Model, RouteAccess::kShared},
      {"GET", "/v2/models/{name}/versions/{version}/ready", RouteKind::kV2ModelReady, RouteAccess::kShared},
      {"POST", "/v2/models/{name}/versions/{version}/infer", RouteKind::kV2Infer, RouteAccess::kShared},
  };
  return kRoutes;
}

const config::CorsConfig* Gateway::CorsFor(const RouteInfo* route, std::string_view function) const {
  if (!route) return nullptr;
  if (route->access == RouteAccess::kFunction) {
    auto it = options_.function_cors.find(std::string(function));
    return it != options_.function_cors.end() && it->second.enabled() ? &it->second : nullptr;
  }
  if (route->access == RouteAccess::kShared) return options_.shared_cors.enabled() ? &options_.shared_cors : nullptr;
  return nullptr;
}

namespace {

std::string Join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : std::string(sep)) + x;
  return out;
}

std::string LowerAscii(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool OriginAllowed(const config::CorsConfig& c, std::string_view origin) {
  for (const auto& o : c.origins) {
    if (o == "*" || o == origin) return true;
  }
  return false;
}

void AddCorsHeaders(const config::CorsConfig& c, std::string_view origin, Response& r) {
  bool any = std::find(c.origins.begin(), c.origins.end(), "*") != c.origins.end();
  // Never "*" together with credentials: echo the (allowed) origin instead.
  r.headers.emplace_back("Access-Control-Allow-Origin", any && !c.allow_credentials ? "*" : std::string(origin));
  r.headers.emplace_back("Vary", "Origin");
  if (c.allow_credentials) r.headers.emplace_back("Access-Control-Allow-Credentials", "true");
  std::vector<std::string> expose = {"X-Request-Id", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining",
                                     "RateLimit-Reset"};
  expose.insert(expose.end(), c.expose_headers.begin(), c.expose_headers.end());
  r.headers.emplace_back("Access-Control-Expose-Headers", Join(expose, ", "));
}

}  // namespace

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
  if (path == "/v2" || path.substr(0, 4) == "/v2/") call->v2_errors = true;  // {"error": "message"}
  std::string_view origin, preflight_method, preflight_headers;
  for (const auto& [k, v] : req.headers) {
    if (IEquals(k, "X-Api-Key")) {
      call->creds.api_key = std::string(v);
    } else if (IEquals(k, "Authorization")) {
      if (v.size() > 7 && IEquals(v.substr(0, 7), "Bearer ")) {
        std::string_view t = v.substr(7);
        while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
        call->creds.bearer = std::string(t);
      }
    } else if (IEquals(k, "Origin")) {
      origin = v;
    } else if (IEquals(k, "Access-Control-Request-Method")) {
      preflight_method = v;
    } else if (IEquals(k, "Access-Control-Request-Headers")) {
      preflight_headers = v;
    }
  }

  // Route: the first pattern that matches, then the method among that pattern's entries.
  const RouteInfo* route = nullptr;
  const RouteInfo* exact = nullptr;
  std::vector<std::string_view> params;
  for (const auto& r : Routes()) {
    if (route ? r.pattern != route->pattern : !MatchPattern(r.pattern, path, &params)) continue;
    if (!route) route = &r;
    if (r.method == "*" || r.method == req.method || (req.method == "HEAD" && r.method == "GET")) {
      exact = &r;
      break;
    }
  }
  // The methods of the matched pattern, for 405 and OPTIONS answers only (not built per request).
  auto allow = [&] {
    std::string a;
    for (const auto& r : Routes()) {
      if (r.pattern != route->pattern) continue;
      a += (a.empty() ? "" : ", ") + std::string(r.method == "*" ? "GET, POST, PUT, PATCH, DELETE" : r.method);
    }
    return a;
  };
  std::string name = route && !params.empty() ? std::string(params[0]) : std::string();
  if (route) {
    if (!exact && req.method != "OPTIONS") {
      std::string methods = allow();
      call->response.headers.emplace_back("Allow", methods);
      return call->Fail(405, "method_not_allowed",
                        fmt::format("{} {} is not supported; use {}", req.method, path, methods));
    }
    if (exact) route = exact;
    // Names in paths are checked before anything uses them (no "..", no separators).
    if (((route->access == RouteAccess::kFunction && route->kind != RouteKind::kLambdaInvoke) ||
         route->kind == RouteKind::kPromote || route->kind == RouteKind::kRollback ||
         route->kind == RouteKind::kV2Model || route->kind == RouteKind::kV2ModelReady ||
         route->kind == RouteKind::kV2Infer) &&
        !ValidName(name)) {
      return call->Fail(
          404, "not_found",
          fmt::format("no function or model named '{}' (names use 1-128 of A-Z a-z 0-9 . _ -)", name.substr(0, 128)));
    }
  }
  // Extra routes from a function's `routes:` answer POST only.
  std::string extra_function;
  if (!route) {
    auto it = options_.routes.find(std::string(path));
    if (it != options_.routes.end()) extra_function = it->second;
  }

  // CORS: a preflight is answered here (no credentials are sent on one); other requests from an
  // allowed origin get the CORS headers on whatever they are answered.
  static const RouteInfo kExtraRoute{"POST", "", RouteKind::kInvoke, RouteAccess::kFunction};
  const RouteInfo* cors_route = route ? route : (!extra_function.empty() ? &kExtraRoute : nullptr);
  const config::CorsConfig* cors = CorsFor(cors_route, route ? std::string_view(name) : extra_function);
  if (req.method == "OPTIONS" && !origin.empty() && !preflight_method.empty()) {
    if (!cors_route) return call->Fail(404, "not_found", fmt::format("no route for {}", path));
    if (!cors || !OriginAllowed(*cors, origin)) {
      return call->Fail(403, "cors_forbidden",
                        fmt::format("origin '{}' may not call {} (CORS: see `cors.origins` in the configuration)",
                                    origin.substr(0, 256), path));
    }
    if (std::find(cors->methods.begin(), cors->methods.end(), std::string(preflight_method)) == cors->methods.end()) {
      return call->Fail(403, "cors_forbidden",
                        fmt::format("method {} is not allowed from other origins here (cors.methods: {})",
                                    preflight_method.substr(0, 32), Join(cors->methods, ", ")));
    }
    std::string_view hs = preflight_headers;
    while (!hs.empty()) {
      size_t c = hs.find(',');
      std::string h = LowerAscii(hs.substr(0, c));
      h.erase(0, h.find_first_not_of(" \t"));
      h.erase(h.find_last_not_of(" \t") + 1);
      if (!h.empty() && std::find(cors->headers.begin(), cors->headers.end(), h) == cors->headers.end()) {
        return call->Fail(403, "cors_forbidden",
                          fmt::format("request header '{}' is not allowed from other origins here (cors.headers: {})",
                                      h.substr(0, 64), Join(cors->headers, ", ")));
      }
      if (c == std::string_view::npos) break;
      hs.remove_prefix(c + 1);
    }
    Response& r = call->response;
    r.status = 204;
    r.content_type.clear();
    AddCorsHeaders(*cors, origin, r);
    r.headers.emplace_back("Access-Control-Allow-Methods", Join(cors->methods, ", "));
    r.headers.emplace_back("Access-Control-Allow-Headers", Join(cors->headers, ", "));
    r.headers.emplace_back("Access-Control-Max-Age",
                           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(cors->max_age).count()));
    return call->Finish();
  }
  if (cors && !origin.empty() && OriginAllowed(*cors, origin)) {
    AddCorsHeaders(*cors, origin, call->response);
  } else if (cors) {
    call->response.headers.emplace_back("Vary", "Origin");  // caches must not reuse this for other origins
  }
  if (req.method == "OPTIONS" && route) {
    std::string methods = allow();
    call->response.headers.emplace_back("Allow", methods);
    return call->Fail(405, "method_not_allowed",
                      fmt::format("OPTIONS {} is only answered as a CORS preflight (with Origin and "
                                  "Access-Control-Request-Method); use {}",
                                  path, methods));
  }

  if (!route && extra_function.empty()) {
    return call->Fail(404, "not_found",
                      fmt::format("no route for {} {}; see /openapi.json or the README's API reference",
                                  req.method.substr(0, 16), path.substr(0, 256)));
  }
  if (!route) {
    if (req.method != "POST") {
      call->response.headers.emplace_back("Allow", "POST");
      return call->Fail(405, "method_not_allowed", fmt::format("{} {} is not supported; use POST", req.method, path));
    }
    auto* pool = Route(call, extra_function);
    if (!pool) return call->Finish();
    if (pool->IsProcess()) return ProcessHttp(call, pool, req, path, query, "");
    element doc;
    if (auto ec = ParseBody(call->body, &doc); ec != simdjson::SUCCESS) {
      return call->Fail(400, "invalid_json", JsonErrorMessage(ec));
    }
    return Invoke(call, pool, doc);
  }

  if (route->access == RouteAccess::kAdmin && auth_) {
    auth::Decision d = auth_->Admin(call->creds);
    if (!d.ok()) return Refuse(call, d, false);
  } else if (route->access == RouteAccess::kAdmin) {
    return call->Fail(401, "unauthorized", "the admin API is disabled (no authenticator)");
  }

  switch (route->kind) {
    case RouteKind::kInvoke:
    case RouteKind::kInvokeProxy: {
      auto* pool = Route(call, name);
      if (!pool) return call->Finish();
      bool proxied = route->kind == RouteKind::kInvokeProxy;
      if (pool->IsProcess()) return ProcessHttp(call, pool, req, path, query, proxied ? params[1] : "");
      if (proxied) {
        return call->Fail(404, "not_found",
                          fmt::format("function '{}' runs a model: call POST /v1/functions/{}/invoke (sub-paths are "
                                      "for process functions)",
                                      name, name));
      }
      if (req.method != "POST") {
        call->response.headers.emplace_back("Allow", "POST");
        return call->Fail(
            405, "method_not_allowed",
            fmt::format("{} {} is not supported; use POST (function '{}' runs a model)", req.method, path, name));
      }
      element doc;
      if (auto ec = ParseBody(call->body, &doc); ec != simdjson::SUCCESS) {
        return call->Fail(400, "invalid_json", JsonErrorMessage(ec));
      }
      return Invoke(call, pool, doc);
    }
    case RouteKind::kInvokeAsync:
      return InvokeAsync(call, name, false);
    case RouteKind::kLambdaInvoke:
      return LambdaInvoke(call, req, name, query);
    case RouteKind::kInfer:
      return Infer(call, query);
    case RouteKind::kBatch:
      return Batch(call, query);
    case RouteKind::kHealth:
      return Health(call, query);
    case RouteKind::kMetrics:
      call->response.content_type = "text/plain; version=0.0.4; charset=utf-8";
      call->response.body = metrics_->Serialize();
      return call->Finish();
    case RouteKind::kOpenApi:
      call->response.body = OpenApiDocument();
      return call->Finish();
    case RouteKind::kS3Events: {
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
    case RouteKind::kEventsList:
    case RouteKind::kEventGet:
    case RouteKind::kEventRedrive:
      return EventsApi(call, req, path, query);
    case RouteKind::kJobs: {
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
    case RouteKind::kPromote:
      return AdminModel(call, name, "promote");
    case RouteKind::kRollback:
      return AdminModel(call, name, "rollback");
    case RouteKind::kKeysList:
    case RouteKind::kKeysCreate:
    case RouteKind::kKeysRevoke:
      return KeysApi(call, route->kind, name);
    case RouteKind::kV2Server:
    case RouteKind::kV2Live:
    case RouteKind::kV2Ready:
    case RouteKind::kV2Model:
    case RouteKind::kV2ModelReady:
    case RouteKind::kV2Infer:
      return V2(call, req, route->kind, name, params.size() > 1 ? std::string(params[1]) : std::string());
  }
  call->Fail(500, "internal", "unhandled route");
}

// Applies an authenticator refusal: 401 / 403 / 429 with WWW-Authenticate, Retry-After and
// RateLimit-* headers (Lambda-style error bodies on the Invoke API).
void Gateway::ApplyRefusal(const std::shared_ptr<Call>& call, const auth::Decision& d, bool lambda_style) {
  Response& r = call->response;
  if (!d.www_authenticate.empty()) r.headers.emplace_back("WWW-Authenticate", d.www_authenticate);
  AddRateHeaders(d.rate, r);
  ApiError e = MapStatus(d.status);
  if (lambda_style) {
    SetLambdaError(r, e.http_status,
                   e.http_status == 401   ? "UnrecognizedClientException"
                   : e.http_status == 403 ? "AccessDeniedException"
                                          : "TooManyRequestsException",
                   d.status.message());  // adds Retry-After for 429 (set below)
  } else {
    SetError(r, e.http_status, d.error_type.empty() ? e.type : d.error_type, d.status.message(), call->request_id);
  }
  if (e.http_status == 429) {
    for (auto& [k, v] : r.headers) {
      if (k == "Retry-After") v = std::to_string(std::max(1, d.retry_after_s));
    }
  }
}

void Gateway::Refuse(const std::shared_ptr<Call>& call, const auth::Decision& d, bool lambda_style) {
  ApplyRefusal(call, d, lambda_style);
  call->Finish();
}

void Gateway::AddRateHeaders(const auth::RateInfo& info, Response& r) {
  if (!info.set) return;
  r.headers.emplace_back("RateLimit-Limit", std::to_string(info.limit));
  r.headers.emplace_back("RateLimit-Remaining", std::to_string(info.remaining));
  r.headers.emplace_back("RateLimit-Reset", std::to_string(info.reset_s));
}

bool Gateway::Authorize(const std::shared_ptr<Call>& call, const std::string& function, bool lambda_style) {
  if (!auth_) return true;
  auth::Decision d = auth_->Function(function, call->creds);
  if (!d.ok()) {
    Refuse(call, d, lambda_style);
    return false;
  }
  AddRateHeaders(d.rate, call->response);
  return true;
}

scheduler::FunctionPool* Gateway::Route(const std::shared_ptr<Call>& call, const std::string& name) {
  Response& r = call->response;
  if (!ValidName(name)) {
    SetError(r, 404, "not_found", fmt::format("function '{}' does not exist", name.substr(0, 128)), call->request_id);
    r.log.function = name.substr(0, 128);
    return nullptr;
  }
  // Authorization first: with auth on, an unknown name tells an anonymous caller nothing.
  if (auth_) {
    auth::Decision d = auth_->Function(name, call->creds);
    r.log.function = name;
    if (!d.ok()) {
      ApplyRefusal(call, d, false);
      return nullptr;
    }
    AddRateHeaders(d.rate, r);
  }
  auto* pool = scheduler_->Find(name);
  if (!pool) {
    SetError(r, 404, "not_found", fmt::format("function '{}' does not exist", name), call->request_id);
    r.log.function = name;
    return nullptr;
  }
  r.log.function = name;
  r.function_metrics = pool->metrics();
  return pool;
}

void Gateway::Infer(std::shared_ptr<Call> call, std::string_view query) {
  element doc;
  if (auto ec = ParseBody(call->body, &doc); ec != simdjson::SUCCESS) {
    return call->Fail(400, "invalid_json", JsonErrorMessage(ec));
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
  auto* pool = Route(call, name);
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
  if (doc.type() == element_type::OBJECT) {
    // An ambiguous body (a key twice) is refused: two parsers could read it differently.
    simdjson::dom::object obj = doc.get_object().value_unsafe();
    if (obj.size() > 1) {
      std::vector<std::string_view> keys;
      for (auto [k, v] : obj) keys.push_back(k);
      std::sort(keys.begin(), keys.end());
      if (std::adjacent_find(keys.begin(), keys.end()) != keys.end()) {
        return call->Fail(400, "invalid_input", "the JSON body has a key twice");
      }
    }
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
  if (call->v2) {
    if (!call->decoded_for || !SameSpecs(*call->decoded_for, specs)) {
      auto req = tensor::v2::DecodeInferRequest(call->body, call->v2->json_length, specs, options_.limits,
                                                options_.max_json_depth);
      if (!req.ok()) return call->Fail(req.status());
      if (req->inputs.size() > 1) {
        if (Status st = tensor::CheckSymbolicDims(specs, req->inputs); !st.ok()) return call->Fail(st);
      }
      call->decoded.emplace();
      call->decoded->tensors = std::move(req->inputs);
      call->v2->request = std::move(req).value();
    }
  } else if (!call->decoded || !call->decoded_for || !SameSpecs(*call->decoded_for, specs)) {
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

  if (call->v2) {
    const auto& req = *call->v2->request;
    std::vector<tensor::NamedTensor> selected;
    if (req.outputs.empty()) {
      selected = std::move(*outputs);
    } else {
      for (const auto& want : req.outputs) {
        auto it = std::find_if(outputs->begin(), outputs->end(), [&](const auto& o) { return o.name == want.name; });
        if (it == outputs->end()) {
          std::string names;
          for (const auto& o : *outputs) names += (names.empty() ? "" : ", ") + o.name;
          return call->Fail(
              InvalidArgumentError(fmt::format("unknown output '{}'; the model's outputs are: {}", want.name, names)));
        }
        selected.push_back(std::move(*it));
      }
    }
    std::optional<size_t> json_length;
    r.body = tensor::v2::EncodeInferResponse({log.function, log.version, req.id}, selected, req.outputs,
                                             req.binary_data_output, &json_length);
    if (json_length) {
      r.content_type = "application/octet-stream";
      r.headers.emplace_back("Inference-Header-Content-Length", std::to_string(*json_length));
    }
    r.headers.emplace_back("X-Cold-Start", log.cold_start ? "true" : "false");
    return call->Finish();
  }
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
  if (auto ec = ParseBody(call->body, &doc); ec != simdjson::SUCCESS) {
    return call->Fail(400, "invalid_json", JsonErrorMessage(ec));
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
    sub->creds = call->creds;
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
  if (auth_) {
    // Loading every function is an admin action: anyone could otherwise defeat scale-to-zero.
    auth::Decision d = auth_->Admin(call->creds);
    if (!d.ok()) return Refuse(call, d, false);
  }
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
        message = StringMember(doc, "errorMessage", r->payload);
        type = StringMember(doc, "errorType", type);
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
    auto base64 = doc.find("isBase64Encoded");
    if (base64 != doc.end() && !base64->is_boolean()) {
      return c->Fail(502, "function_error", "the handler's isBase64Encoded is not true or false");
    }
    if (base64 != doc.end() && base64->get<bool>()) {
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
  if (!ValidName(fn) || (!qualifier.empty() && qualifier != "$LATEST" && !ValidName(qualifier))) {
    res.log.function = fn.substr(0, 128);
    return fail(404, "ResourceNotFoundException", "Function not found: " + FunctionArn(fn.substr(0, 128)));
  }
  res.log.function = fn.substr(0, 128);
  if (!Authorize(call, fn, true)) return;  // first: an unknown name tells an anonymous caller nothing
  auto* pool = scheduler_->Find(fn);
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
      return fail(
          404, "ResourceNotFoundException",
          "Function not found: " + FunctionArn(fn) + ":" + qualifier);  // not the store's reason: it names the store
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
    return InvokeAsync(call, fn, true, /*authorized=*/true);
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

void Gateway::InvokeAsync(std::shared_ptr<Call> call, const std::string& function, bool lambda_style, bool authorized) {
  Response& res = call->response;
  if (!authorized && !Authorize(call, function, lambda_style)) return;  // before the lookup, as in Route()
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

// ---- Open Inference Protocol v2 --------------------------------------------------------------

void Gateway::V2(std::shared_ptr<Call> call, const Request& req, RouteKind kind, const std::string& model,
                 const std::string& version) {
  call->v2_errors = true;
  Response& r = call->response;
  switch (kind) {
    case RouteKind::kV2Server:
      r.body = nlohmann::json({{"name", "pilotlight"},
                               {"version", options_.server_version},
                               {"extensions", {"binary_tensor_data", "model_repository"}}})
                   .dump();
      return call->Finish();
    case RouteKind::kV2Live:
      r.body = "{\"live\":true}";
      return call->Finish();
    case RouteKind::kV2Ready:
      // Ready to serve: functions scale from zero, so a cold function is not "not ready".
      r.body = "{\"ready\":true}";
      return call->Finish();
    default:
      break;
  }
  auto* pool = Route(call, model);
  if (!pool) return call->Finish();
  if (pool->IsProcess()) {
    return call->Fail(400, "invalid_input",
                      fmt::format("function '{}' runs a handler, not a model: the v2 protocol serves models; call "
                                  "/v1/functions/{}/invoke",
                                  model, model));
  }
  if (!version.empty() && version != pool->Snapshot().version) {
    if (!ValidName(version)) return call->Fail(404, "not_found", "no such model version");
    auto pinned = scheduler_->FindVersion(model, version);
    if (!pinned.ok()) {
      // Not the store's reason: it names the store's location.
      return call->Fail(404, "not_found", fmt::format("model '{}' has no version '{}'", model, version));
    }
    pool = *pinned;
  }
  if (kind == RouteKind::kV2ModelReady) {
    auto snap = pool->Snapshot();
    r.body = nlohmann::json({{"name", model}, {"version", snap.version}, {"ready", true}, {"state", snap.state}})
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return call->Finish();
  }
  if (kind == RouteKind::kV2Model) {
    // Metadata needs the model's schema: take a lease (this loads a cold function).
    return pool->Acquire([call, model](StatusOr<scheduler::Lease> lease) {
      if (!lease.ok()) return call->Fail(lease.status());
      auto specs = [](const std::vector<tensor::TensorSpec>& v) {
        nlohmann::json a = nlohmann::json::array();
        for (const auto& t : v) {
          a.push_back({{"name", t.name}, {"datatype", tensor::v2::DatatypeName(t.dtype)}, {"shape", t.shape}});
        }
        return a;
      };
      nlohmann::json j = {{"name", model},
                          {"versions", {lease->version()}},
                          {"platform", "onnxruntime_onnx"},
                          {"inputs", specs(lease->instance().inputs())},
                          {"outputs", specs(lease->instance().outputs())}};
      lease->Release();
      call->response.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      call->Finish();
    });
  }
  // infer
  call->v2 = std::make_unique<Call::V2State>();
  for (const auto& [k, v] : req.headers) {
    if (IEquals(k, "Inference-Header-Content-Length")) {
      size_t n = 0;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec != std::errc() || p != v.data() + v.size()) {
        return call->Fail(400, "invalid_input", "Inference-Header-Content-Length must be a byte count");
      }
      call->v2->json_length = n;
    }
  }
  if (auto specs = pool->InputSpecs()) {
    auto decoded = tensor::v2::DecodeInferRequest(call->body, call->v2->json_length, *specs, options_.limits,
                                                  options_.max_json_depth);
    if (!decoded.ok()) return call->Fail(decoded.status());
    if (decoded->inputs.size() > 1) {
      if (Status st = tensor::CheckSymbolicDims(*specs, decoded->inputs); !st.ok()) return call->Fail(st);
    }
    call->decoded.emplace();
    call->decoded->tensors = std::move(decoded->inputs);
    call->v2->request = std::move(decoded).value();
    call->decoded_for = std::move(specs);
  }
  pool->Acquire([this, call](StatusOr<scheduler::Lease> lease) {
    if (!lease.ok()) return call->Fail(lease.status());
    Execute(call, *lease, nullptr);
  });
}

// ---- admin: API keys -------------------------------------------------------------------------

void Gateway::KeysApi(std::shared_ptr<Call> call, RouteKind kind, const std::string& id) {
  Response& r = call->response;
  auto dump = [](const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); };
  if (kind == RouteKind::kKeysList) {
    auto keys = auth_->ListKeys();
    if (!keys.ok()) return call->Fail(keys.status());
    nlohmann::json a = nlohmann::json::array();
    for (const auto& k : *keys) a.push_back(auth::KeyRecordJson(k));
    r.body = dump({{"keys", a}});
    return call->Finish();
  }
  if (kind == RouteKind::kKeysRevoke) {
    auto k = auth_->RevokeKey(id);
    if (!k.ok()) return call->Fail(k.status());
    r.body = dump(auth::KeyRecordJson(*k));
    return call->Finish();
  }
  auto j = nlohmann::json::parse(call->body, nullptr, false);
  if (!j.is_object() || !j.contains("plan") || !j["plan"].is_string()) {
    return call->Fail(400, "invalid_input",
                      "send {\"plan\": \"PLAN\", \"functions\": [\"NAME\", ...], \"description\": \"...\"} "
                      "(functions and description are optional)");
  }
  std::vector<std::string> functions;
  if (j.contains("functions")) {
    if (!j["functions"].is_array()) return call->Fail(400, "invalid_input", "\"functions\" must be a list of names");
    for (const auto& f : j["functions"]) {
      if (!f.is_string() || !ValidName(f.get<std::string>())) {
        return call->Fail(400, "invalid_input", "\"functions\" must be a list of function names");
      }
      functions.push_back(f.get<std::string>());
    }
  }
  std::string description =
      j.contains("description") && j["description"].is_string() ? j["description"].get<std::string>() : "";
  auto k = auth_->CreateKey(j["plan"].get<std::string>(), functions, description.substr(0, 256));
  if (!k.ok()) return call->Fail(k.status());
  nlohmann::json out = auth::KeyRecordJson(k->record);
  out["key"] = k->key;
  r.status = 201;
  r.body = dump(out);
  call->Finish();
}

// ---- OpenAPI ---------------------------------------------------------------------------------

extern const char kOpenApiJson[];

std::string Gateway::OpenApiDocument() const {
  std::call_once(openapi_once_, [this] {
    auto doc = nlohmann::json::parse(kOpenApiJson, nullptr, false);
    if (doc.is_discarded()) {
      openapi_ = "{}";
      return;
    }
    // A function's extra `routes:` are public routes too.
    int n = 0;
    for (const auto& [path, function] : options_.routes) {
      doc["paths"][path]["post"] = {
          {"operationId", "extraRoute" + std::to_string(++n)},
          {"summary", "Invoke function " + function + " (an extra route from its `routes:`)"},
          {"tags", {"Functions"}},
          {"requestBody",
           {{"required", true},
            {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/InvokeRequest"}}}}}}}}},
          {"responses",
           {{"200",
             {{"description", "the function's outputs"},
              {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/InvokeResponse"}}}}}}}}},
            {"default",
             {{"description", "an error"},
              {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/Error"}}}}}}}}}}}};
    }
    openapi_ = doc.dump(2);
  });
  return openapi_;
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
        std::string msg = r->payload;
        if (doc.is_object()) {
          msg = StringMember(doc, "errorType", r->error_type) + ": " + StringMember(doc, "errorMessage", "");
        }
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
