// Status / StatusOr: recoverable errors as values, spelled like Abseil's.
// Codes are chosen by what the caller should do; gateway/error_mapping.cc maps them to HTTP.
// Thread-safety: value types, no shared state.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace pilotlight {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // caller's input is wrong; retrying the same input fails again (400)
  kNotFound,            // the named thing does not exist (404)
  kAlreadyExists,       // create refused: it exists
  kFailedPrecondition,  // system not in a state to do this (e.g. promote of a missing version)
  kResourceExhausted,   // shed: queue full or queued too long; retry later (429)
  kUnavailable,         // not ready yet / transient; retry later (503)
  kDeadlineExceeded,    // took longer than its timeout (504)
  kDataLoss,            // integrity failure: checksum mismatch, truncated file (503 model_integrity)
  kOutOfRange,          // a size limit exceeded (413 when it is the request body)
  kCancelled,           // stopped on purpose (shutdown)
  kAborted,             // a concurrent change won (conditional write refused); re-read and retry (409)
  kWorkerFailed,        // a function's worker process crashed or broke the protocol (502)
  kUnauthenticated,     // no credentials, or credentials that are not valid (401)
  kPermissionDenied,    // valid credentials that may not do this (403)
  kInternal,            // a bug by definition (500)
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

  // Returns a copy whose message is "context: message".
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status OkStatus() { return Status(); }
inline Status InvalidArgumentError(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFoundError(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExistsError(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status FailedPreconditionError(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status ResourceExhaustedError(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status UnavailableError(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DeadlineExceededError(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
inline Status DataLossError(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status AbortedError(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
inline Status WorkerFailedError(std::string m) { return {StatusCode::kWorkerFailed, std::move(m)}; }
inline Status OutOfRangeError(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
inline Status UnauthenticatedError(std::string m) { return {StatusCode::kUnauthenticated, std::move(m)}; }
inline Status PermissionDeniedError(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
inline Status CancelledError(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status InternalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// Holds either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : v_(std::move(status)) {  // NOLINT: implicit like absl
    if (std::get<0>(v_).ok()) v_ = Status(StatusCode::kInternal, "StatusOr built from OK status");
  }
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT

  bool ok() const { return v_.index() == 1; }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<0>(v_);
  }
  T& value() & { return std::get<1>(v_); }
  const T& value() const& { return std::get<1>(v_); }
  T&& value() && { return std::get<1>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace pilotlight

#define PL_STATUS_CONCAT_INNER(a, b) a##b
#define PL_STATUS_CONCAT(a, b) PL_STATUS_CONCAT_INNER(a, b)

#define PL_RETURN_IF_ERROR(expr)              \
  do {                                        \
    ::pilotlight::Status pl_status_ = (expr); \
    if (!pl_status_.ok()) return pl_status_;  \
  } while (0)

#define PL_ASSIGN_OR_RETURN(lhs, expr) PL_ASSIGN_OR_RETURN_IMPL(PL_STATUS_CONCAT(pl_statusor_, __LINE__), lhs, expr)
#define PL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
