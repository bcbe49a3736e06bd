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
//   GET  /v1/health[?warm=true]        liveness + per-function state (warm: load first)
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
#include <string>

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
  std::map<std::string, std::string> routes;  // extra path → function
};

using Done = std::function<void(Response&&)>;

class Gateway {
 public:
  Gateway(GatewayOptions options, scheduler::Scheduler* scheduler, metrics::Registry* metrics);

  void Handle(Request&& request, Done done);

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
  scheduler::FunctionPool* Route(const std::string& name, Response& r, std::string_view request_id);

  void EventsApi(std::shared_ptr<Call> call, const Request& req, std::string_view path, std::string_view query);
  void InvokeAsync(std::shared_ptr<Call> call, const std::string& function, bool lambda_style);

  GatewayOptions options_;
  events::AsyncInvoker* async_ = nullptr;
  events::Triggers* triggers_ = nullptr;
  scheduler::Scheduler* scheduler_;
  metrics::Registry* metrics_;
};

}  // namespace pilotlight::gateway
