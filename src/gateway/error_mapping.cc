#include "gateway/error_mapping.h"

#include "common/logging.h"

namespace pilotlight::gateway {

ApiError MapStatus(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return {200, ""};
    case StatusCode::kInvalidArgument:
      return {400, "invalid_input"};
    case StatusCode::kNotFound:
      return {404, "not_found"};
    case StatusCode::kAlreadyExists:
    case StatusCode::kAborted:
      return {409, "conflict"};
    case StatusCode::kOutOfRange:
      return {413, "payload_too_large"};
    case StatusCode::kResourceExhausted:
      return {429, "overloaded"};
    case StatusCode::kFailedPrecondition:
    case StatusCode::kUnavailable:
    case StatusCode::kCancelled:
      return {503, "not_ready"};
    case StatusCode::kDataLoss:
      return {503, "model_integrity"};
    case StatusCode::kDeadlineExceeded:
      return {504, "timeout"};
    case StatusCode::kWorkerFailed:
      return {502, "function_crashed"};
    case StatusCode::kUnauthenticated:
      return {401, "unauthorized"};
    case StatusCode::kPermissionDenied:
      return {403, "forbidden"};
    case StatusCode::kInternal:
      return {500, "internal"};
  }
  return {500, "internal"};
}

std::string ErrorJson(std::string_view type, std::string_view message, std::string_view request_id) {
  std::string out = "{\"error\":{\"type\":\"";
  out += type;
  out += "\",\"message\":\"";
  out += JsonEscape(message);
  out += "\",\"request_id\":\"";
  out += JsonEscape(request_id);
  out += "\"}}";
  return out;
}

void SetError(Response& r, int http_status, std::string_view type, std::string_view message,
              std::string_view request_id) {
  r.status = http_status;
  r.content_type = "application/json";
  r.body = ErrorJson(type, message, request_id);
  r.log.error_type = std::string(type);
  if (http_status == 429 || http_status == 503) r.headers.emplace_back("Retry-After", "1");
}

void SetError(Response& r, const Status& status, std::string_view request_id) {
  ApiError e = MapStatus(status);
  SetError(r, e.http_status, e.type, status.message(), request_id);
}

}  // namespace pilotlight::gateway
