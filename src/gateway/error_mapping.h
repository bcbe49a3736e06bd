// The one place where Status codes become HTTP statuses and API error types.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "gateway/api.h"

namespace pilotlight::gateway {

struct ApiError {
  int http_status;
  std::string_view type;  // invalid_json, invalid_input, not_found, payload_too_large, overloaded,
                          // not_ready, timeout, model_integrity, internal, method_not_allowed, ...
};

ApiError MapStatus(const Status& status);

// {"error": {"type", "message", "request_id"}} as a JSON string.
std::string ErrorJson(std::string_view type, std::string_view message, std::string_view request_id);

// Fills `r` with the error: status, body, Retry-After where the client should retry.
void SetError(Response& r, const Status& status, std::string_view request_id);
void SetError(Response& r, int http_status, std::string_view type, std::string_view message,
              std::string_view request_id);

}  // namespace pilotlight::gateway
