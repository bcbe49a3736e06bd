// Transport-neutral request and response of the public API. The http module fills Request
// from the wire and writes Response back; nothing here knows about sockets or Beast.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "metrics/metrics.h"

namespace pilotlight::gateway {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as received
  std::string body;
  std::string x_request_id;  // headers the gateway reads
  std::string x_model;
  std::string content_type;
  // Every header, as received. Views into the transport's buffers: valid only during
  // Gateway::Handle() — copy what must live longer.
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::string remote_addr;  // the client's IP
};

// What the one log line per request needs from the gateway.
struct RequestLog {
  std::string request_id;
  std::string function;
  std::string version;
  std::string error_type;
  std::string input_shapes;  // e.g. {"input":[1,64]} — shapes only, never data
  bool cold_start = false;
  double fetch_ms = 0, load_ms = 0, first_run_ms = 0, queue_ms = 0, handler_ms = 0;
};

struct Response {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  RequestLog log;
  metrics::FunctionMetrics* function_metrics = nullptr;  // set for function requests
};

}  // namespace pilotlight::gateway
