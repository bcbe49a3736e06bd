// pilotlight.yaml → typed, validated specs. Every problem names the key path and what is
// wrong ("functions.digits.idle_timeout: 'banana' is not a duration; ..."). Unknown keys are
// errors (typos must not silently fall back to defaults). Value types; no shared state.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace pilotlight::config {

// CORS for a route: which browser origins may call it, with which methods and headers.
struct CorsConfig {
  std::vector<std::string> origins;  // exact origins ("https://app.example"), or "*" (never with credentials)
  std::vector<std::string> methods = {"GET", "POST"};
  std::vector<std::string> headers = {"content-type"};  // request headers a page may send
  std::vector<std::string> expose_headers;              // response headers a page may read
  bool allow_credentials = false;
  Duration max_age = std::chrono::minutes(10);  // how long a browser caches a preflight answer
  bool enabled() const { return !origins.empty(); }
};

// A token bucket: `rate` requests per second on average, bursts of up to `burst`.
struct RateLimitConfig {
  double rate = 0;   // 0: no limit
  double burst = 0;  // default: max(rate, 1)
  bool enabled() const { return rate > 0; }
};

struct ServerConfig {
  std::string listen = "127.0.0.1:8080";
  uint64_t max_body_bytes = 6 * 1024 * 1024;              // request body limit (413 above it)
  uint64_t max_header_bytes = 60 * 1024;                  // request line + headers (431 above it)
  uint32_t max_header_fields = 100;                       // header fields (431 above it)
  uint32_t max_uri_bytes = 8 * 1024;                      // request target (414 above it)
  uint32_t max_json_depth = 64;                           // JSON nesting in request bodies (400 above it)
  uint32_t max_connections = 1024;                        // open connections in total (503 above it)
  uint32_t max_connections_per_client = 256;              // per client IP address (429 above it)
  int64_t max_tensor_elements = 16 * 1024 * 1024;         // per input tensor (400 above it)
  uint32_t max_batch_items = 256;                         // elements in a /v1/batch array
  int threads = 0;                                        // HTTP threads; 0 = one per core
  int intra_op_threads = 0;                               // ONNX Runtime shared pool; 0 = one per core
  Duration request_timeout = std::chrono::seconds(10);    // first byte → whole request (408); alias read_timeout
  Duration idle_timeout = std::chrono::seconds(60);       // keep-alive idle connection
  Duration shutdown_timeout = std::chrono::seconds(30);   // SIGTERM drain limit
  Duration poll_interval = std::chrono::seconds(2);       // re-check each model's current.json; 0 = never
  Duration event_retention = std::chrono::hours(24 * 7);  // finished events/jobs kept this long; 0 = forever
  CorsConfig cors;                                        // for the shared routes: /v1/infer, /v1/batch, /v2/...
};

// `auth.jwt`: bearer JWTs for functions with `auth: jwt`.
struct JwtSettings {
  std::string jwks;  // file://PATH, a path, or an http(s):// URL of a JSON Web Key Set
  std::string issuer;
  std::string audience;
  Duration leeway = std::chrono::seconds(60);
  Duration refresh = std::chrono::minutes(5);
};

// The `auth:` block.
struct AuthConfig {
  std::string admin_token_env = "PILOTLIGHT_ADMIN_TOKEN";  // the admin API is refused (401) without it
  std::optional<JwtSettings> jwt;
  std::string default_auth = "none";  // `auth.default`: for functions without their own `auth:`
};

// One entry of `usage_plans:` — what an API key of this plan may use.
struct UsagePlan {
  std::string name;
  RateLimitConfig rate;
  int64_t quota_per_day = 0;  // requests per UTC day; 0: no quota
};

// The `s3:` block: settings for s3:// stores. Empty fields fall back to the AWS environment
// variables and the shared ~/.aws files.
struct S3Config {
  std::string endpoint;
  std::string region;
  std::string profile;
  std::optional<bool> path_style;
  uint64_t multipart_threshold = uint64_t{64} << 20;  // upload in parts above this size
  uint64_t part_size = uint64_t{16} << 20;
};

// The `cache:` block: the verified cache of model files from remote stores.
struct CacheConfig {
  uint64_t max_bytes = uint64_t{10} << 30;  // least recently used unpinned files go above it
};

// A function's `async:` block: asynchronous (Event) invocations.
struct AsyncFunctionConfig {
  int max_retries = 2;                               // retries after the first failed attempt
  Duration retry_backoff = std::chrono::seconds(1);  // first retry delay; doubles, with jitter
  Duration max_event_age = std::chrono::hours(6);    // older events go to the dead-letter store
  double concurrency_share = 0.5;                    // of the function's capacity, for events
  std::string on_success;                            // file://PATH.jsonl | http(s)://URL
  std::string on_failure;
};

struct FunctionConfig {
  std::string name;
  std::string model;                // store model name; default: the function's name
  std::string version = "current";  // or a pinned version
  int min_instances = 0;
  int max_instances = 1;
  int concurrency = 8;  // in-flight requests per instance
  Duration idle_timeout = std::chrono::seconds(300);
  int max_queue = 64;
  Duration queue_timeout = std::chrono::seconds(2);
  Duration timeout = std::chrono::seconds(30);  // one model run
  std::vector<std::string> routes;              // extra POST paths that invoke this function
  std::string auth;                             // none | api_key | jwt ("" until defaulted from auth.default)
  std::vector<std::string> plans;               // api_key: usage plans allowed here (empty: any)
  CorsConfig cors;                              // for /v1/functions/{name}/...
  RateLimitConfig rate_limit;                   // token bucket for the whole function
  std::optional<Duration> poll_interval;        // overrides server.poll_interval
  // runtime: process — a worker process speaking the AWS Lambda Runtime API.
  std::string runtime = "onnx";            // onnx | process
  std::vector<std::string> command;        // argv of the worker
  std::string handler;                     // _HANDLER
  std::string cwd;                         // working directory and LAMBDA_TASK_ROOT (default: the server's)
  std::map<std::string, std::string> env;  // extra environment variables
  int memory_mb = 1024;                    // AWS_LAMBDA_FUNCTION_MEMORY_SIZE; RSS above it replaces the worker
  Duration init_timeout = std::chrono::seconds(10);  // worker start until its first event request
  AsyncFunctionConfig async;
};

// One entry of `triggers:` (object-upload batch inference).
struct TriggerConfig {
  std::string source;  // file://DIR | s3://BUCKET/PREFIX
  std::string function;
  std::string output;  // file://DIR | s3://BUCKET/PREFIX
  int batch_size = 256;
  std::string token;  // required on POST /v1/events/s3?token=... for this source's notifications
};

struct Config {
  ServerConfig server;
  AuthConfig auth;
  std::map<std::string, UsagePlan> usage_plans;
  std::string store = "file://./models";
  std::string state_dir = "./.pilotlight";
  S3Config s3;
  CacheConfig cache;
  std::string default_function;
  std::map<std::string, FunctionConfig> functions;
  std::vector<TriggerConfig> triggers;
  bool functions_listed = false;  // false: serve every model in the store with defaults
  std::string source = "<defaults>";
};

// InvalidArgument naming file, key and problem.
StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& source_name);
StatusOr<Config> LoadConfigFile(const std::string& path);
// A function spec with every default, for models served without a config entry.
FunctionConfig DefaultFunction(const std::string& name);
// Cross-field checks (default_function exists, min ≤ max, ...), also after CLI overrides.
Status Validate(const Config& c);

}  // namespace pilotlight::config
