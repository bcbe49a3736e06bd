// Gateway: the public API surface, independent of the transport.
//
//   POST /v1/functions/{name}/invoke   seeds' JSON in, outputs out (onnx functions)
//   ANY  /v1/functions/{name}/invoke[/{proxy+}]   process functions: an API Gateway HTTP API
//                                      (payload format 2.0) event in, its {statusCode, headers,
//                                      body} out, as on Lambda function URLs
//   POST /2015-03-31/functions/{name}/invocations  the AWS Lambda Invoke API, every function
//   POST /v1/functions/{name}/invoke-async   durable asynchronous invocation → 202 {"event_id"}
//   GET  /v1/events[?status=&function=]  GET /v1/events/{id}  POST /v1/events/{id}/redrive
//   POST /v1/events/s3?token=T          S3 event notifications for object-upload triggers
//   GET  /v1/jobs                        trigger jobs (one per object) with their progress
//   POST /v1/infer                     routed by ?model=, X-Model, "model" in the body, or
//                                      default_function
//   POST /v1/batch                     array of /v1/infer bodies → array of results/errors
//   GET  /v1/health[?warm=true]        liveness + per-function state (warm: load first; admin token)
//   GET  /metrics                      Prometheus text
//   POST /admin/models/{name}/promote  {"version": V}: verify, promote, hot-swap every function
//   POST /admin/models/{name}/rollback serving the model, answer when the swaps are done
//   POST <route>                       extra routes from a function's `routes:`
//
// Handle() never blocks: it answers through `done`, exactly once, possibly on another thread.
// Thread-safety: Handle() may be called concurrently from any thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "auth/authenticator.h"
#include "config/config.h"
#include "events/async_invoker.h"
#include "events/triggers.h"
#include "gateway/api.h"
#include "scheduler/scheduler.h"
#include "tensor/json_codec.h"

namespace pilotlight::gateway {

struct GatewayOptions {
  std::string default_function;
  tensor::DecodeLimits limits;
  uint32_t max_batch_items = 256;
  uint32_t max_json_depth = 64;  // nesting of request bodies (simdjson's depth: 1 = a scalar or empty array)
  std::map<std::string, std::string> routes;                // extra path → function
  config::CorsConfig shared_cors;                           // server.cors: /v1/infer, /v1/batch, /v2/...
  std::map<std::string, config::CorsConfig> function_cors;  // functions.X.cors: /v1/functions/X/...
  std::string server_version = "0";                         // GET /v2
};

enum class RouteKind {
  kInvoke,
  kInvokeProxy,
  kInvokeAsync,
  kLambdaInvoke,
  kInfer,
  kBatch,
  kHealth,
  kMetrics,
  kOpenApi,
  kS3Events,
  kEventsList,
  kEventGet,
  kEventRedrive,
  kJobs,
  kPromote,
  kRollback,
  kKeysList,
  kKeysCreate,
  kKeysRevoke,
  kV2Server,
  kV2Live,
  kV2Ready,
  kV2Model,
  kV2ModelReady,
  kV2Infer,
};
// Who may call a route: anyone; per the function's `auth`; per the function the request routes
// to (resolved from the body or query); the admin token only.
enum class RouteAccess { kPublic, kFunction, kShared, kAdmin };

struct RouteInfo {
  std::string_view method;   // "GET", "POST", "DELETE", or "*" (the handler decides)
  std::string_view pattern;  // "/v1/functions/{name}/invoke"; {proxy+} spans segments
  RouteKind kind;
  RouteAccess access;
};

using Done = std::function<void(Response&&)>;

class Gateway {
 public:
  Gateway(GatewayOptions options, scheduler::Scheduler* scheduler, metrics::Registry* metrics);

  void Handle(Request&& request, Done done);

  // Every route the gateway answers (besides a function's extra `routes:`), in match order.
  static const std::vector<RouteInfo>& Routes();
  // The OpenAPI 3 document served at /openapi.json (the embedded src/gateway/openapi.json with
  // the configured extra routes added).
  std::string OpenApiDocument() const;

  // Authentication, authorization and rate limits; null: every route open (tests, tools).
  void SetAuth(auth::Authenticator* auth) { auth_ = auth; }

  // Asynchronous invocations: set before serving (null: invoke-async and Event answer 400).
  void SetAsync(events::AsyncInvoker* async) { async_ = async; }
  // Object-upload triggers: POST /v1/events/s3 and GET /v1/jobs (null: 404 / empty).
  void SetTriggers(events::Triggers* triggers) { triggers_ = triggers; }
  // The AsyncInvoker's executor: runs one stored event through the same path as a request.
  void RunAsyncEvent(const events::Event& e, std::function<void(StatusOr<std::string>)> done);

 private:
  struct Call;
  struct Decoded {
    std::vector<tensor::NamedTensor> tensors;
    bool list_form = false;  // "inputs": [[...]] rather than {"name": ...}
  };
  StatusOr<Decoded> DecodeInputs(const std::vector<tensor::TensorSpec>& specs, simdjson::dom::element inputs,
                                 const std::string& function) const;
  void Infer(std::shared_ptr<Call> call, std::string_view query);
  void Batch(std::shared_ptr<Call> call, std::string_view query);
  void Health(std::shared_ptr<Call> call, std::string_view query);
  void AdminModel(std::shared_ptr<Call> call, const std::string& model, const std::string& action);
  // process functions
  void ProcessHttp(std::shared_ptr<Call> call, scheduler::FunctionPool* pool, const Request& req, std::string_view path,
                   std::string_view query, std::string_view proxy);
  void LambdaInvoke(std::shared_ptr<Call> call, const Request& req, std::string_view function_part,
                    std::string_view query);
  void RunEvent(std::shared_ptr<Call> call, scheduler::FunctionPool* pool, std::string payload,
                std::function<void(const std::shared_ptr<Call>&, StatusOr<runtime::InvocationResult>)> finish);
  void RunEventAttempt(std::shared_ptr<Call> call, scheduler::FunctionPool* pool,
                       std::shared_ptr<const std::string> payload,
                       std::function<void(const std::shared_ptr<Call>&, StatusOr<runtime::InvocationResult>)> finish,
                       int attempt);
  // `doc` is the parse of call->body on this thread's parser, or null when it must be parsed
  // again (the lease arrived on another thread, or later).
  void Invoke(std::shared_ptr<Call> call, scheduler::FunctionPool* pool, simdjson::dom::element doc);
  void Execute(const std::shared_ptr<Call>& call, scheduler::Lease& lease, const simdjson::dom::element* doc);
  // Authorizes the caller for function `name` (401/403/429 into call->response) and finds it
  // (404); null when the call must be answered with its response as it is.
  scheduler::FunctionPool* Route(const std::shared_ptr<Call>& call, const std::string& name);
  bool Authorize(const std::shared_ptr<Call>& call, const std::string& function, bool lambda_style);
  void ApplyRefusal(const std::shared_ptr<Call>& call, const auth::Decision& d, bool lambda_style);
  void Refuse(const std::shared_ptr<Call>& call, const auth::Decision& d, bool lambda_style);
  static void AddRateHeaders(const auth::RateInfo& info, Response& r);
  const config::CorsConfig* CorsFor(const RouteInfo* route, std::string_view function) const;
  void KeysApi(std::shared_ptr<Call> call, RouteKind kind, const std::string& id);
  void V2(std::shared_ptr<Call> call, const Request& req, RouteKind kind, const std::string& model,
          const std::string& version);

  void EventsApi(std::shared_ptr<Call> call, const Request& req, std::string_view path, std::string_view query);
  // `authorized`: the caller already ran Authorize (the Lambda Invoke API's Event type).
  void InvokeAsync(std::shared_ptr<Call> call, const std::string& function, bool lambda_style, bool authorized = false);

  GatewayOptions options_;
  events::AsyncInvoker* async_ = nullptr;
  auth::Authenticator* auth_ = nullptr;
  mutable std::string openapi_;  // built once, lazily
  mutable std::once_flag openapi_once_;
  events::Triggers* triggers_ = nullptr;
  scheduler::Scheduler* scheduler_;
  metrics::Registry* metrics_;
};

}  // namespace pilotlight::gateway
