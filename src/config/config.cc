#include "config/config.h"

#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "common/duration.h"

namespace pilotlight::config {
namespace {

class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  Status Error(const std::string& key, const std::string& problem) {
    return InvalidArgumentError(fmt::format("{}: {}: {}", source_, key, problem));
  }

  Status CheckKeys(const YAML::Node& node, const std::string& path, const std::set<std::string>& known) {
    if (!node.IsMap()) return Error(path.empty() ? "(top level)" : path, "must be a mapping of key: value");
    for (const auto& kv : node) {
      std::string k = kv.first.as<std::string>();
      if (!known.count(k)) {
        std::string list;
        for (const auto& x : known) list += (list.empty() ? "" : ", ") + x;
        return Error(path.empty() ? k : path + "." + k, "unknown key; known keys here: " + list);
      }
    }
    return OkStatus();
  }

  Status Int(const YAML::Node& n, const std::string& key, int64_t min, int64_t max, int64_t* out) {
    try {
      int64_t v = n.as<int64_t>();
      if (v < min || v > max) return Error(key, fmt::format("must be between {} and {}, got {}", min, max, v));
      *out = v;
      return OkStatus();
    } catch (const YAML::Exception&) {
      return Error(key, fmt::format("must be an integer, got '{}'", n.Scalar()));
    }
  }

  template <typename T>
  Status IntInto(const YAML::Node& parent, const char* name, const std::string& path, int64_t min, int64_t max,
                 T* out) {
    if (!parent[name]) return OkStatus();
    int64_t v;
    PL_RETURN_IF_ERROR(Int(parent[name], path + "." + name, min, max, &v));
    *out = static_cast<T>(v);
    return OkStatus();
  }

  Status DurationInto(const YAML::Node& parent, const char* name, const std::string& path, Duration* out) {
    if (!parent[name]) return OkStatus();
    const YAML::Node& n = parent[name];
    if (!n.IsScalar()) return Error(path + "." + name, "must be a duration such as 500ms, 2s, 1m");
    auto d = ParseDuration(n.Scalar());
    if (!d.ok()) return Error(path + "." + name, d.status().message());
    *out = *d;
    return OkStatus();
  }

  Status StringInto(const YAML::Node& parent, const char* name, const std::string& path, std::string* out) {
    if (!parent[name]) return OkStatus();
    const YAML::Node& n = parent[name];
    if (!n.IsScalar() || n.Scalar().empty()) return Error(path + "." + name, "must be a non-empty string");
    *out = n.Scalar();
    return OkStatus();
  }

  Status ParseServer(const YAML::Node& n, ServerConfig* s) {
    PL_RETURN_IF_ERROR(
        CheckKeys(n, "server",
                  {"listen", "max_body_bytes", "max_header_bytes", "max_header_fields", "max_uri_bytes",
                   "max_json_depth", "max_connections", "max_connections_per_client", "max_tensor_elements",
                   "max_batch_items", "threads", "intra_op_threads", "request_timeout", "read_timeout", "idle_timeout",
                   "shutdown_timeout", "poll_interval", "event_retention", "cors"}));
    PL_RETURN_IF_ERROR(StringInto(n, "listen", "server", &s->listen));
    PL_RETURN_IF_ERROR(IntInto(n, "max_body_bytes", "server", 1, int64_t{1} << 34, &s->max_body_bytes));
    PL_RETURN_IF_ERROR(IntInto(n, "max_header_bytes", "server", 256, 1 << 20, &s->max_header_bytes));
    PL_RETURN_IF_ERROR(IntInto(n, "max_tensor_elements", "server", 1, int64_t{1} << 40, &s->max_tensor_elements));
    PL_RETURN_IF_ERROR(IntInto(n, "max_batch_items", "server", 1, 1 << 20, &s->max_batch_items));
    PL_RETURN_IF_ERROR(IntInto(n, "threads", "server", 0, 1024, &s->threads));
    PL_RETURN_IF_ERROR(IntInto(n, "intra_op_threads", "server", 0, 1024, &s->intra_op_threads));
    PL_RETURN_IF_ERROR(IntInto(n, "max_header_fields", "server", 8, 100000, &s->max_header_fields));
    PL_RETURN_IF_ERROR(IntInto(n, "max_uri_bytes", "server", 64, 1 << 20, &s->max_uri_bytes));
    PL_RETURN_IF_ERROR(IntInto(n, "max_json_depth", "server", 2, 10000, &s->max_json_depth));
    PL_RETURN_IF_ERROR(IntInto(n, "max_connections", "server", 1, 1000000, &s->max_connections));
    PL_RETURN_IF_ERROR(IntInto(n, "max_connections_per_client", "server", 1, 1000000, &s->max_connections_per_client));
    if (n["request_timeout"] && n["read_timeout"]) {
      return Error("server.read_timeout", "is the old name of server.request_timeout; set only request_timeout");
    }
    PL_RETURN_IF_ERROR(DurationInto(n, "read_timeout", "server", &s->request_timeout));
    PL_RETURN_IF_ERROR(DurationInto(n, "request_timeout", "server", &s->request_timeout));
    if (s->request_timeout <= Duration::zero()) return Error("server.request_timeout", "must be greater than 0");
    if (n["cors"]) PL_RETURN_IF_ERROR(ParseCors(n["cors"], "server.cors", &s->cors));
    PL_RETURN_IF_ERROR(DurationInto(n, "idle_timeout", "server", &s->idle_timeout));
    PL_RETURN_IF_ERROR(DurationInto(n, "shutdown_timeout", "server", &s->shutdown_timeout));
    PL_RETURN_IF_ERROR(DurationInto(n, "poll_interval", "server", &s->poll_interval));
    PL_RETURN_IF_ERROR(DurationInto(n, "event_retention", "server", &s->event_retention));
    return OkStatus();
  }

  Status StringList(const YAML::Node& n, const std::string& path, std::vector<std::string>* out) {
    if (!n.IsSequence()) return Error(path, "must be a list, e.g. [a, b]");
    out->clear();
    for (const auto& x : n) {
      if (!x.IsScalar() || x.Scalar().empty()) return Error(path, "must be a list of non-empty strings");
      out->push_back(x.Scalar());
    }
    return OkStatus();
  }

  Status ParseCors(const YAML::Node& n, const std::string& path, CorsConfig* c) {
    PL_RETURN_IF_ERROR(
        CheckKeys(n, path, {"origins", "methods", "headers", "expose_headers", "allow_credentials", "max_age"}));
    if (n["origins"]) PL_RETURN_IF_ERROR(StringList(n["origins"], path + ".origins", &c->origins));
    if (n["methods"]) PL_RETURN_IF_ERROR(StringList(n["methods"], path + ".methods", &c->methods));
    if (n["headers"]) PL_RETURN_IF_ERROR(StringList(n["headers"], path + ".headers", &c->headers));
    if (n["expose_headers"])
      PL_RETURN_IF_ERROR(StringList(n["expose_headers"], path + ".expose_headers", &c->expose_headers));
    if (n["allow_credentials"]) {
      try {
        c->allow_credentials = n["allow_credentials"].as<bool>();
      } catch (const YAML::Exception&) {
        return Error(path + ".allow_credentials", "must be true or false");
      }
    }
    PL_RETURN_IF_ERROR(DurationInto(n, "max_age", path, &c->max_age));
    for (auto& m : c->methods) {
      for (auto& ch : m) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    }
    for (auto& h : c->headers) {
      for (auto& ch : h) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
    for (const auto& o : c->origins) {
      if (o == "*") {
        if (c->allow_credentials) {
          return Error(path + ".origins",
                       "'*' (any origin) cannot be combined with allow_credentials: true; list the origins");
        }
        continue;
      }
      if ((o.rfind("http://", 0) != 0 && o.rfind("https://", 0) != 0) || o.back() == '/' ||
          o.find_first_of(" ,*") != std::string::npos) {
        return Error(path + ".origins",
                     "'" + o + "' is not an origin: scheme://host[:port] with no path, e.g. https://app.example");
      }
    }
    return OkStatus();
  }

  Status ParseRate(const YAML::Node& n, const std::string& path, RateLimitConfig* r) {
    if (!n.IsMap()) return Error(path, "must be {rate: N, burst: M}");
    for (const char* k : {"rate", "burst"}) {
      if (!n[k]) continue;
      double v;
      try {
        v = n[k].as<double>();
      } catch (const YAML::Exception&) {
        return Error(path + "." + k, "must be a number");
      }
      if (!(v >= 0 && v <= 1e9)) return Error(path + "." + k, "must be between 0 and 1e9");
      (std::string(k) == "rate" ? r->rate : r->burst) = v;
    }
    if (r->burst == 0) r->burst = std::max(1.0, r->rate);
    if (r->burst < 1) return Error(path + ".burst", "must be at least 1");
    return OkStatus();
  }

  Status ParseAuthMode(const YAML::Node& n, const std::string& path, std::string* out) {
    std::string v = n.IsScalar() ? n.Scalar() : "";
    if (v != "none" && v != "api_key" && v != "jwt") {
      return Error(path, "'" + v + "' is not an auth mode; use none, api_key or jwt");
    }
    *out = v;
    return OkStatus();
  }

  Status ParseAuth(const YAML::Node& n, AuthConfig* a) {
    PL_RETURN_IF_ERROR(CheckKeys(n, "auth", {"admin_token_env", "jwt", "default"}));
    PL_RETURN_IF_ERROR(StringInto(n, "admin_token_env", "auth", &a->admin_token_env));
    if (n["default"]) PL_RETURN_IF_ERROR(ParseAuthMode(n["default"], "auth.default", &a->default_auth));
    if (n["jwt"]) {
      const auto& j = n["jwt"];
      PL_RETURN_IF_ERROR(CheckKeys(j, "auth.jwt", {"jwks", "issuer", "audience", "leeway", "refresh"}));
      JwtSettings js;
      PL_RETURN_IF_ERROR(StringInto(j, "jwks", "auth.jwt", &js.jwks));
      PL_RETURN_IF_ERROR(StringInto(j, "issuer", "auth.jwt", &js.issuer));
      PL_RETURN_IF_ERROR(StringInto(j, "audience", "auth.jwt", &js.audience));
      PL_RETURN_IF_ERROR(DurationInto(j, "leeway", "auth.jwt", &js.leeway));
      PL_RETURN_IF_ERROR(DurationInto(j, "refresh", "auth.jwt", &js.refresh));
      if (js.jwks.empty()) return Error("auth.jwt.jwks", "is required: file://PATH or https://URL of a JWKS");
      if (js.issuer.empty() || js.audience.empty()) {
        return Error("auth.jwt", "issuer and audience are required (tokens are checked against both)");
      }
      a->jwt = std::move(js);
    }
    return OkStatus();
  }

  Status ParseS3(const YAML::Node& n, S3Config* s) {
    PL_RETURN_IF_ERROR(
        CheckKeys(n, "s3", {"endpoint", "region", "profile", "path_style", "multipart_threshold", "part_size"}));
    PL_RETURN_IF_ERROR(StringInto(n, "endpoint", "s3", &s->endpoint));
    PL_RETURN_IF_ERROR(StringInto(n, "region", "s3", &s->region));
    PL_RETURN_IF_ERROR(StringInto(n, "profile", "s3", &s->profile));
    if (n["path_style"]) {
      try {
        s->path_style = n["path_style"].as<bool>();
      } catch (const YAML::Exception&) {
        return Error("s3.path_style", "must be true or false, got '" + n["path_style"].Scalar() + "'");
      }
    }
    if (!s->endpoint.empty() && s->endpoint.rfind("http://", 0) != 0 && s->endpoint.rfind("https://", 0) != 0) {
      return Error("s3.endpoint", "'" + s->endpoint + "' must start with http:// or https://");
    }
    PL_RETURN_IF_ERROR(
        IntInto(n, "multipart_threshold", "s3", int64_t{5} << 20, int64_t{5} << 40, &s->multipart_threshold));
    PL_RETURN_IF_ERROR(IntInto(n, "part_size", "s3", int64_t{5} << 20, int64_t{5} << 30, &s->part_size));
    return OkStatus();
  }

  Status ParseAsync(const YAML::Node& n, const std::string& path, AsyncFunctionConfig* a) {
    PL_RETURN_IF_ERROR(CheckKeys(
        n, path, {"max_retries", "retry_backoff", "max_event_age", "concurrency_share", "on_success", "on_failure"}));
    PL_RETURN_IF_ERROR(IntInto(n, "max_retries", path, 0, 100, &a->max_retries));
    PL_RETURN_IF_ERROR(DurationInto(n, "retry_backoff", path, &a->retry_backoff));
    PL_RETURN_IF_ERROR(DurationInto(n, "max_event_age", path, &a->max_event_age));
    if (a->max_event_age < std::chrono::seconds(1)) return Error(path + ".max_event_age", "must be at least 1s");
    if (n["concurrency_share"]) {
      try {
        a->concurrency_share = n["concurrency_share"].as<double>();
      } catch (const YAML::Exception&) {
        return Error(path + ".concurrency_share", "must be a number between 0 and 1, e.g. 0.5");
      }
      if (!(a->concurrency_share > 0 && a->concurrency_share <= 1)) {
        return Error(path + ".concurrency_share", "must be greater than 0 and at most 1");
      }
    }
    for (const char* k : {"on_success", "on_failure"}) {
      std::string* out = std::string(k) == "on_success" ? &a->on_success : &a->on_failure;
      PL_RETURN_IF_ERROR(StringInto(n, k, path, out));
      if (!out->empty() && out->rfind("file://", 0) != 0 && out->rfind("http://", 0) != 0 &&
          out->rfind("https://", 0) != 0) {
        return Error(path + "." + k, "'" + *out + "' must be file://PATH.jsonl or an http(s):// URL");
      }
    }
    return OkStatus();
  }

  Status ParseCache(const YAML::Node& n, CacheConfig* c) {
    PL_RETURN_IF_ERROR(CheckKeys(n, "cache", {"max_bytes"}));
    return IntInto(n, "max_bytes", "cache", 1, int64_t{1} << 50, &c->max_bytes);
  }

  Status ParseFunction(const std::string& name, const YAML::Node& n, FunctionConfig* f) {
    std::string path = "functions." + name;
    *f = DefaultFunction(name);
    if (n.IsNull()) return OkStatus();
    PL_RETURN_IF_ERROR(CheckKeys(
        n, path, {"model",     "version",       "min_instances", "max_instances", "concurrency", "idle_timeout",
                  "max_queue", "queue_timeout", "timeout",       "routes",        "runtime",     "poll_interval",
                  "command",   "handler",       "cwd",           "env",           "memory_mb",   "init_timeout",
                  "async",     "auth",          "plans",         "cors",          "rate_limit"}));
    if (n["auth"]) PL_RETURN_IF_ERROR(ParseAuthMode(n["auth"], path + ".auth", &f->auth));
    if (n["plans"]) PL_RETURN_IF_ERROR(StringList(n["plans"], path + ".plans", &f->plans));
    if (n["cors"]) PL_RETURN_IF_ERROR(ParseCors(n["cors"], path + ".cors", &f->cors));
    if (n["rate_limit"]) {
      PL_RETURN_IF_ERROR(CheckKeys(n["rate_limit"], path + ".rate_limit", {"rate", "burst"}));
      PL_RETURN_IF_ERROR(ParseRate(n["rate_limit"], path + ".rate_limit", &f->rate_limit));
    }
    if (n["async"]) PL_RETURN_IF_ERROR(ParseAsync(n["async"], path + ".async", &f->async));
    if (n["runtime"]) {
      f->runtime = n["runtime"].IsScalar() ? n["runtime"].Scalar() : "";
      if (f->runtime != "onnx" && f->runtime != "process") {
        return Error(path + ".runtime",
                     "'" + f->runtime + "' is not a runtime; use onnx (a model) or process (a Lambda handler)");
      }
    }
    bool process = f->runtime == "process";
    for (const char* k : {"command", "handler", "cwd", "env", "memory_mb", "init_timeout"}) {
      if (n[k] && !process) return Error(path + "." + k, "only for runtime: process");
    }
    for (const char* k : {"model", "version", "poll_interval"}) {
      if (n[k] && process) return Error(path + "." + k, "not for runtime: process (it runs a command, not a model)");
    }
    if (process) {
      f->model.clear();
      f->version = "$LATEST";
      if (!n["command"] || !n["command"].IsSequence() || n["command"].size() == 0) {
        return Error(path + ".command", "runtime: process needs a command: a list such as [node, index.js]");
      }
      for (const auto& a : n["command"]) {
        if (!a.IsScalar() || a.Scalar().empty()) return Error(path + ".command", "must be a list of non-empty strings");
        f->command.push_back(a.Scalar());
      }
      PL_RETURN_IF_ERROR(StringInto(n, "handler", path, &f->handler));
      PL_RETURN_IF_ERROR(StringInto(n, "cwd", path, &f->cwd));
      if (n["env"]) {
        if (!n["env"].IsMap()) return Error(path + ".env", "must be a mapping of NAME: value");
        for (const auto& kv : n["env"]) {
          std::string k = kv.first.as<std::string>();
          if (!kv.second.IsScalar()) return Error(path + ".env." + k, "must be a string");
          f->env[k] = kv.second.Scalar();
        }
      }
      PL_RETURN_IF_ERROR(IntInto(n, "memory_mb", path, 128, 10240, &f->memory_mb));
      PL_RETURN_IF_ERROR(DurationInto(n, "init_timeout", path, &f->init_timeout));
      if (n["concurrency"]) {
        int64_t c = 0;
        PL_RETURN_IF_ERROR(Int(n["concurrency"], path + ".concurrency", 1, 1, &c));
      }
      f->concurrency = 1;  // one invocation per worker, as on Lambda
    }
    PL_RETURN_IF_ERROR(StringInto(n, "model", path, &f->model));
    if (n["version"]) {
      const auto& v = n["version"];
      if (!v.IsScalar() || v.Scalar().empty()) return Error(path + ".version", "must be 'current' or a version");
      f->version = v.Scalar();
    }
    PL_RETURN_IF_ERROR(IntInto(n, "min_instances", path, 0, 1024, &f->min_instances));
    PL_RETURN_IF_ERROR(IntInto(n, "max_instances", path, 1, 1024, &f->max_instances));
    if (!process) PL_RETURN_IF_ERROR(IntInto(n, "concurrency", path, 1, 100000, &f->concurrency));
    PL_RETURN_IF_ERROR(IntInto(n, "max_queue", path, 0, 1000000, &f->max_queue));
    PL_RETURN_IF_ERROR(DurationInto(n, "idle_timeout", path, &f->idle_timeout));
    PL_RETURN_IF_ERROR(DurationInto(n, "queue_timeout", path, &f->queue_timeout));
    PL_RETURN_IF_ERROR(DurationInto(n, "timeout", path, &f->timeout));
    if (n["poll_interval"]) {
      Duration d{};
      PL_RETURN_IF_ERROR(DurationInto(n, "poll_interval", path, &d));
      f->poll_interval = d;
    }
    if (f->timeout <= Duration::zero()) return Error(path + ".timeout", "must be greater than 0");
    if (n["routes"]) {
      const auto& r = n["routes"];
      if (!r.IsSequence()) return Error(path + ".routes", "must be a list of paths such as [/v1/digits]");
      for (const auto& p : r) {
        std::string route = p.IsScalar() ? p.Scalar() : "";
        if (route.empty() || route.front() != '/' || route.find_first_of("?# ") != std::string::npos) {
          return Error(path + ".routes", "'" + route + "' must be a path starting with '/'");
        }
        f->routes.push_back(route);
      }
    }
    if (f->min_instances > f->max_instances) {
      return Error(path + ".min_instances",
                   fmt::format("({}) must not exceed max_instances ({})", f->min_instances, f->max_instances));
    }
    return OkStatus();
  }

  StatusOr<Config> Parse(const std::string& text) {
    Config c;
    c.source = source_;
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return InvalidArgumentError(fmt::format("{}: not valid YAML at line {}: {}", source_, e.mark.line + 1, e.msg));
    }
    if (root.IsNull()) return c;
    try {
      PL_RETURN_IF_ERROR(CheckKeys(root, "",
                                   {"server", "store", "state_dir", "default_function", "functions", "s3", "cache",
                                    "triggers", "auth", "usage_plans"}));
      if (root["server"]) PL_RETURN_IF_ERROR(ParseServer(root["server"], &c.server));
      if (root["auth"]) PL_RETURN_IF_ERROR(ParseAuth(root["auth"], &c.auth));
      if (root["usage_plans"]) {
        const auto& ps = root["usage_plans"];
        if (!ps.IsMap()) return Error("usage_plans", "must be a mapping of plan name to {rate, burst, quota_per_day}");
        for (const auto& kv : ps) {
          std::string name = kv.first.as<std::string>();
          std::string path = "usage_plans." + name;
          PL_RETURN_IF_ERROR(CheckKeys(kv.second, path, {"rate", "burst", "quota_per_day"}));
          UsagePlan plan;
          plan.name = name;
          PL_RETURN_IF_ERROR(ParseRate(kv.second, path, &plan.rate));
          PL_RETURN_IF_ERROR(IntInto(kv.second, "quota_per_day", path, 0, int64_t{1} << 50, &plan.quota_per_day));
          c.usage_plans[name] = std::move(plan);
        }
      }
      PL_RETURN_IF_ERROR(StringInto(root, "store", "", &c.store));
      if (root["s3"]) PL_RETURN_IF_ERROR(ParseS3(root["s3"], &c.s3));
      if (root["cache"]) PL_RETURN_IF_ERROR(ParseCache(root["cache"], &c.cache));
      if (root["triggers"]) {
        const auto& ts = root["triggers"];
        if (!ts.IsSequence()) return Error("triggers", "must be a list of {source, function, output, ...}");
        for (size_t i = 0; i < ts.size(); ++i) {
          std::string path = fmt::format("triggers[{}]", i);
          const auto& t = ts[i];
          PL_RETURN_IF_ERROR(CheckKeys(t, path, {"source", "function", "output", "batch_size", "token"}));
          TriggerConfig tc;
          PL_RETURN_IF_ERROR(StringInto(t, "source", path, &tc.source));
          PL_RETURN_IF_ERROR(StringInto(t, "function", path, &tc.function));
          PL_RETURN_IF_ERROR(StringInto(t, "output", path, &tc.output));
          PL_RETURN_IF_ERROR(StringInto(t, "token", path, &tc.token));
          PL_RETURN_IF_ERROR(IntInto(t, "batch_size", path, 1, 100000, &tc.batch_size));
          for (const auto* k : {"source", "function", "output"}) {
            if (!t[k]) return Error(path + "." + k, "is required");
          }
          if (tc.source.rfind("s3://", 0) == 0 && tc.token.empty()) {
            return Error(path + ".token",
                         "is required for an s3:// source: S3 notifications to POST /v1/events/s3?token=... "
                         "must be authenticated (pick a long random string)");
          }
          for (const std::string* uri : {&tc.source, &tc.output}) {
            if (uri->rfind("file://", 0) != 0 && uri->rfind("s3://", 0) != 0) {
              return Error(path, "'" + *uri + "' must be file://DIR or s3://BUCKET/PREFIX");
            }
          }
          c.triggers.push_back(std::move(tc));
        }
      }
      PL_RETURN_IF_ERROR(StringInto(root, "state_dir", "", &c.state_dir));
      PL_RETURN_IF_ERROR(StringInto(root, "default_function", "", &c.default_function));
      if (root["functions"]) {
        const auto& fs = root["functions"];
        if (!fs.IsMap()) return Error("functions", "must be a mapping of function name to settings");
        c.functions_listed = true;
        for (const auto& kv : fs) {
          std::string name = kv.first.as<std::string>();
          FunctionConfig f;
          PL_RETURN_IF_ERROR(ParseFunction(name, kv.second, &f));
          c.functions[name] = std::move(f);
        }
      }
    } catch (const YAML::Exception& e) {
      return InvalidArgumentError(fmt::format("{}: line {}: {}", source_, e.mark.line + 1, e.msg));
    }
    for (auto& [name, f] : c.functions) {
      if (f.auth.empty()) f.auth = c.auth.default_auth;
    }
    PL_RETURN_IF_ERROR(Validate(c));
    return c;
  }

 private:
  std::string source_;
};

bool ValidFunctionName(const std::string& n) {
  if (n.empty() || n.size() > 128 || n.front() == '.') return false;
  for (char ch : n) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.')) return false;
  }
  return true;
}

}  // namespace

FunctionConfig DefaultFunction(const std::string& name) {
  FunctionConfig f;
  f.name = name;
  f.model = name;
  return f;
}

Status Validate(const Config& c) {
  for (const auto& [name, f] : c.functions) {
    if (!ValidFunctionName(name)) {
      return InvalidArgumentError(
          fmt::format("{}: functions.{}: function names use 1-128 of A-Z a-z 0-9 . _ -", c.source, name));
    }
    if (!f.model.empty() && !ValidFunctionName(f.model)) {
      return InvalidArgumentError(
          fmt::format("{}: functions.{}.model: '{}' is not a model name (1-128 of A-Z a-z "
                      "0-9 . _ -, not starting with '.')",
                      c.source, name, f.model));
    }
    if (f.runtime != "process" && f.version != "current" && !ValidFunctionName(f.version)) {
      return InvalidArgumentError(
          fmt::format("{}: functions.{}.version: '{}' is neither 'current' nor a version "
                      "(1-128 of A-Z a-z 0-9 . _ -)",
                      c.source, name, f.version));
    }
  }
  for (const auto& [name, f] : c.functions) {
    std::string mode = f.auth.empty() ? c.auth.default_auth : f.auth;
    if (mode == "jwt" && !c.auth.jwt) {
      return InvalidArgumentError(
          fmt::format("{}: functions.{}.auth: jwt needs an auth.jwt block ({{jwks: file://./jwks.json, issuer: ..., "
                      "audience: ...}})",
                      c.source, name));
    }
    for (const auto& p : f.plans) {
      if (!c.usage_plans.count(p)) {
        return InvalidArgumentError(
            fmt::format("{}: functions.{}.plans: '{}' is not one of the usage_plans", c.source, name, p));
      }
    }
    if (!f.plans.empty() && mode != "api_key") {
      return InvalidArgumentError(fmt::format("{}: functions.{}.plans: only for auth: api_key", c.source, name));
    }
  }
  if (c.auth.default_auth == "jwt" && !c.auth.jwt) {
    return InvalidArgumentError(fmt::format("{}: auth.default: jwt needs an auth.jwt block", c.source));
  }
  if (!c.default_function.empty() && c.functions_listed && !c.functions.count(c.default_function)) {
    return InvalidArgumentError(
        fmt::format("{}: default_function: '{}' is not one of the functions listed", c.source, c.default_function));
  }
  for (size_t i = 0; i < c.triggers.size(); ++i) {
    if (c.functions_listed && !c.functions.count(c.triggers[i].function)) {
      return InvalidArgumentError(fmt::format("{}: triggers[{}].function: '{}' is not one of the functions listed",
                                              c.source, i, c.triggers[i].function));
    }
  }
  auto colon = c.server.listen.rfind(':');
  if (colon == std::string::npos || colon + 1 >= c.server.listen.size()) {
    return InvalidArgumentError(
        fmt::format("{}: server.listen: '{}' must be HOST:PORT, e.g. 127.0.0.1:8080", c.source, c.server.listen));
  }
  return OkStatus();
}

StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& source_name) {
  return Parser(source_name).Parse(yaml_text);
}

StatusOr<Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot read config file " + path + ": no such file (or not readable)");
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str(), path);
}

}  // namespace pilotlight::config
