// Authenticator: who is calling and may they — the admin token, API keys with usage plans,
// JWTs — plus the token buckets of keys and functions. The gateway asks it once per function a
// request reaches (Function) or once per admin request (Admin) and turns a refusal into
// 401 / 403 / 429 with the headers in Decision.
//
// API keys live in the state store (KeyStore); a background thread re-reads them when another
// process (`pilotlight keys create|revoke`) commits (checked every 250 ms) and writes usage
// (last use, requests per UTC day) once a second.
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "auth/jwt.h"
#include "auth/keys.h"
#include "config/config.h"

namespace pilotlight::auth {

// What a request presented, copied out of its headers.
struct Credentials {
  std::string api_key;  // X-Api-Key
  std::string bearer;   // Authorization: Bearer ...
};

// What a function requires. `mode`: none | api_key | jwt.
struct Policy {
  std::string mode = "none";
  std::vector<std::string> plans;  // api_key: allowed usage plans (empty: any)
  config::RateLimitConfig rate_limit;
};

// A token bucket's state for RateLimit-* headers.
struct RateInfo {
  bool set = false;
  int64_t limit = 0;      // the bucket's size (burst)
  int64_t remaining = 0;  // whole tokens left
  int64_t reset_s = 0;    // seconds until the bucket is full again
};

struct Decision {
  Status status;                 // OK, Unauthenticated (401), PermissionDenied (403), ResourceExhausted (429)
  std::string error_type;        // unauthorized | forbidden | rate_limited | quota_exceeded
  std::string www_authenticate;  // for 401 and 403
  int retry_after_s = 0;         // for 429
  RateInfo rate;                 // the most constrained bucket that applied
  std::string principal;         // "key:ID", "jwt:SUB", "admin" — for logs
  bool ok() const { return status.ok(); }
};

// Token bucket: `rate` tokens per second, at most `burst`. Not thread-safe (the caller locks).
class TokenBucket {
 public:
  TokenBucket(double rate, double burst);
  // Takes one token if there is one. Fills `info`; on refusal sets *retry_after_s.
  bool Take(TimePoint now, RateInfo* info, int* retry_after_s);

 private:
  double rate_, burst_, tokens_;
  TimePoint last_;
};

class Authenticator {
 public:
  struct Options {
    std::string admin_token;  // "" : the admin API answers 401 (disabled)
    std::string admin_token_env = "PILOTLIGHT_ADMIN_TOKEN";
    std::map<std::string, config::UsagePlan> plans;
    std::optional<JwtConfig> jwt;
    std::string key_db;  // <state_dir>/auth.db
    std::map<std::string, Policy> policies;
    Policy default_policy;  // functions without an entry (served with defaults)
  };
  static StatusOr<std::unique_ptr<Authenticator>> Create(Options options);
  ~Authenticator();

  Decision Admin(const Credentials& c);
  Decision Function(const std::string& function, const Credentials& c);
  const Policy& PolicyFor(const std::string& function) const;

  // The admin API's key management (same store as the CLI).
  StatusOr<CreatedKey> CreateKey(const std::string& plan, const std::vector<std::string>& functions,
                                 const std::string& description);
  StatusOr<ApiKey> RevokeKey(const std::string& id);
  StatusOr<std::vector<ApiKey>> ListKeys();

  // Re-reads the keys now if another process changed them (also done every 250 ms).
  void Refresh();

 private:
  explicit Authenticator(Options options);
  struct KeyState {
    ApiKey key;
    std::string day;  // UTC day of used_today
    int64_t used_today = 0;
    int64_t pending = 0;      // requests not yet written to the store...
    std::string pending_day;  // ...counted on this UTC day
    int64_t last_used = 0;
    std::unique_ptr<TokenBucket> bucket;
  };
  void Loop();
  void Reload();
  void Flush();
  Decision Unauthorized(std::string message, bool invalid_token, const char* realm = "pilotlight") const;

  Options options_;
  std::unique_ptr<KeyStore> store_;  // guarded by store_mu_
  std::mutex store_mu_;
  std::atomic<int64_t> data_version_{-1};
  std::mutex reload_mu_;  // one Reload at a time (read and apply)
  std::unique_ptr<JwtVerifier> jwt_;

  std::mutex mu_;
  std::unordered_map<std::string, KeyState> keys_;                                  // by id, guarded by mu_
  std::unordered_map<std::string, std::unique_ptr<TokenBucket>> function_buckets_;  // guarded by mu_

  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace pilotlight::auth
