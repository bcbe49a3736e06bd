#include "auth/authenticator.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <openssl/crypto.h>

#include "common/clock.h"
#include "common/logging.h"
#include "common/sha256.h"

namespace pilotlight::auth {
namespace {

// Constant-time equality of two secrets of any length: compares their SHA-256s.
bool SecretEquals(std::string_view a, std::string_view b) {
  std::string ha = Sha256Hex(a), hb = Sha256Hex(b);
  return CRYPTO_memcmp(ha.data(), hb.data(), ha.size()) == 0;
}

int64_t SecondsToUtcMidnight(int64_t now_ms) {
  int64_t day_ms = 86400 * 1000;
  return std::max<int64_t>(1, ((now_ms / day_ms + 1) * day_ms - now_ms + 999) / 1000);
}

// The tighter of two bucket states.
void Merge(RateInfo* into, const RateInfo& other) {
  if (!other.set) return;
  if (!into->set || other.remaining < into->remaining) *into = other;
}

}  // namespace

TokenBucket::TokenBucket(double rate, double burst)
    : rate_(rate),
      burst_(std::max(1.0, burst)),
      tokens_(std::max(1.0, burst)),
      last_(std::chrono::steady_clock::now()) {}

bool TokenBucket::Take(TimePoint now, RateInfo* info, int* retry_after_s) {
  double elapsed = std::chrono::duration<double>(now - last_).count();
  if (elapsed > 0) {
    tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
    last_ = now;
  }
  bool ok = tokens_ >= 1.0;
  if (ok) tokens_ -= 1.0;
  info->set = true;
  info->limit = static_cast<int64_t>(burst_);
  info->remaining = static_cast<int64_t>(std::floor(tokens_));
  info->reset_s = static_cast<int64_t>(std::ceil((burst_ - tokens_) / rate_));
  if (!ok && retry_after_s) *retry_after_s = std::max(1, static_cast<int>(std::ceil((1.0 - tokens_) / rate_)));
  return ok;
}

Authenticator::Authenticator(Options options) : options_(std::move(options)) {}

StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(Options options) {
  std::unique_ptr<Authenticator> a(new Authenticator(std::move(options)));
  auto store = KeyStore::Open(a->options_.key_db);
  if (!store.ok()) return store.status();
  a->store_ = std::move(*store);
  if (a->options_.jwt) {
    auto v = JwtVerifier::Create(*a->options_.jwt);
    if (!v.ok()) return v.status().WithContext("auth.jwt");
    a->jwt_ = std::move(*v);
  }
  for (const auto& [name, p] : a->options_.policies) {
    if (p.rate_limit.enabled()) {
      a->function_buckets_[name] = std::make_unique<TokenBucket>(p.rate_limit.rate, p.rate_limit.burst);
    }
  }
  a->Reload();
  a->thread_ = std::thread([p = a.get()] { p->Loop(); });
  return a;
}

Authenticator::~Authenticator() {
  {
    std::lock_guard<std::mutex> l(loop_mu_);
    stop_ = true;
  }
  loop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  Flush();
}

void Authenticator::Loop() {
  auto next_flush = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  std::unique_lock<std::mutex> l(loop_mu_);
  while (!stop_) {
    loop_cv_.wait_for(l, std::chrono::milliseconds(250));
    if (stop_) break;
    l.unlock();
    Refresh();
    if (std::chrono::steady_clock::now() >= next_flush) {
      Flush();
      next_flush = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    }
    l.lock();
  }
}

void Authenticator::Refresh() {
  int64_t v;
  {
    std::lock_guard<std::mutex> l(store_mu_);
    v = store_->DataVersion();  // moves only on other connections' commits (the CLI's)
  }
  if (v != data_version_.load()) Reload();
}

void Authenticator::Reload() {
  // One reload at a time, from reading the store to applying it: a stale list applied after a
  // fresh one would bring a revoked key back.
  std::lock_guard<std::mutex> reload(reload_mu_);
  StatusOr<std::vector<ApiKey>> list = Status();
  int64_t version;
  {
    std::lock_guard<std::mutex> l(store_mu_);
    version = store_->DataVersion();  // before reading: a change after it is seen next time
    list = store_->List();
  }
  if (!list.ok()) {
    LogLine(spdlog::level::warn, "cannot read API keys").Str("error", list.status().message());
    return;  // data_version_ unchanged: retried at the next check
  }
  data_version_ = version;
  std::string today = UtcDay(UnixMillis());
  std::lock_guard<std::mutex> l(mu_);
  std::unordered_map<std::string, KeyState> next;
  for (auto& k : *list) {
    KeyState s;
    auto old = keys_.find(k.id);
    if (old != keys_.end()) {
      s = std::move(old->second);
      int64_t stored = k.used_today;
      s.key = std::move(k);
      if (s.day == today) s.used_today = std::max(s.used_today, stored + s.pending);
    } else {
      s.day = today;
      s.used_today = k.used_today;
      s.key = std::move(k);
    }
    if (!s.bucket) {
      auto plan = options_.plans.find(s.key.plan);
      if (plan != options_.plans.end() && plan->second.rate.enabled()) {
        s.bucket = std::make_unique<TokenBucket>(plan->second.rate.rate, plan->second.rate.burst);
      }
    }
    next.emplace(s.key.id, std::move(s));
  }
  keys_ = std::move(next);
}

void Authenticator::Flush() {
  std::map<std::string, std::vector<KeyStore::Usage>> by_day;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [id, s] : keys_) {
      if (s.pending == 0) continue;
      by_day[s.pending_day].push_back({id, s.pending, s.last_used});
      s.pending = 0;
    }
  }
  if (by_day.empty()) return;
  std::lock_guard<std::mutex> l(store_mu_);
  for (const auto& [day, usage] : by_day) {
    if (Status st = store_->FlushUsage(day, usage); !st.ok()) {
      LogLine(spdlog::level::warn, "cannot record API key usage").Str("error", st.message());
    }
  }
}

Decision Authenticator::Unauthorized(std::string message, bool invalid_token, const char* realm) const {
  Decision d;
  d.status = UnauthenticatedError(std::move(message));
  d.error_type = "unauthorized";
  d.www_authenticate = invalid_token ? fmt::format("Bearer realm=\"{}\", error=\"invalid_token\"", realm)
                                     : fmt::format("Bearer realm=\"{}\"", realm);
  return d;
}

Decision Authenticator::Admin(const Credentials& c) {
  constexpr const char* kRealm = "pilotlight-admin";
  if (options_.admin_token.empty()) {
    return Unauthorized(fmt::format("the admin API is disabled: start the server with the admin token in ${} "
                                    "(auth.admin_token_env) and send it as Authorization: Bearer TOKEN",
                                    options_.admin_token_env),
                        false, kRealm);
  }
  const std::string& presented = c.bearer.empty() ? c.api_key : c.bearer;
  if (presented.empty()) {
    return Unauthorized("the admin API needs the admin token: send Authorization: Bearer TOKEN", false, kRealm);
  }
  if (SecretEquals(presented, options_.admin_token)) {
    Decision d;
    d.principal = "admin";
    return d;
  }
  // Valid credentials of another kind (an API key) are known but not allowed here: 403.
  if (auto id = KeyId(presented)) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = keys_.find(*id);
    if (it != keys_.end() && it->second.key.revoked_at == 0) {
      std::string h = KeyHash(presented);
      if (CRYPTO_memcmp(h.data(), it->second.key.hash.data(), std::min(h.size(), it->second.key.hash.size())) == 0 &&
          h.size() == it->second.key.hash.size()) {
        Decision d;
        d.status = PermissionDeniedError("API keys cannot use the admin API; send the admin token");
        d.error_type = "forbidden";
        d.www_authenticate = fmt::format("Bearer realm=\"{}\", error=\"insufficient_scope\"", kRealm);
        return d;
      }
    }
  }
  return Unauthorized("the admin token is not valid", true, kRealm);
}

const Policy& Authenticator::PolicyFor(const std::string& function) const {
  auto it = options_.policies.find(function);
  return it == options_.policies.end() ? options_.default_policy : it->second;
}

Decision Authenticator::Function(const std::string& function, const Credentials& c) {
  std::unique_lock<std::mutex> l(mu_, std::defer_lock);  // not held while a JWT is verified
  const Policy& p = PolicyFor(function);
  Decision d;
  TimePoint now = std::chrono::steady_clock::now();
  std::string key_id;
  if (p.mode == "api_key") {
    const std::string& presented = !c.api_key.empty() ? c.api_key : c.bearer;
    if (presented.empty()) {
      return Unauthorized(fmt::format("function '{}' needs an API key: send X-Api-Key: KEY (or Authorization: "
                                      "Bearer KEY); create one with `pilotlight keys create --plan PLAN`",
                                      function),
                          false);
    }
    auto id = KeyId(presented);
    if (!id) return Unauthorized("the API key is not valid", true);
    std::string h = KeyHash(presented);
    l.lock();  // held through the function bucket and the count: quota checked and used at once
    auto it = keys_.find(*id);
    if (it == keys_.end() || it->second.key.hash.size() != h.size() ||
        CRYPTO_memcmp(h.data(), it->second.key.hash.data(), h.size()) != 0) {
      return Unauthorized("the API key is not valid", true);
    }
    KeyState& ks = it->second;
    if (ks.key.revoked_at != 0) return Unauthorized("the API key was revoked", true);
    auto forbid = [&](std::string message) {
      Decision f;
      f.status = PermissionDeniedError(std::move(message));
      f.error_type = "forbidden";
      f.www_authenticate = "Bearer realm=\"pilotlight\", error=\"insufficient_scope\"";
      f.principal = "key:" + ks.key.id;
      return f;
    };
    if (!ks.key.functions.empty() &&
        std::find(ks.key.functions.begin(), ks.key.functions.end(), function) == ks.key.functions.end()) {
      return forbid(fmt::format("this API key may not call function '{}'", function));
    }
    if (!p.plans.empty() && std::find(p.plans.begin(), p.plans.end(), ks.key.plan) == p.plans.end()) {
      return forbid(fmt::format("API keys of plan '{}' may not call function '{}'", ks.key.plan, function));
    }
    auto plan = options_.plans.find(ks.key.plan);
    if (plan == options_.plans.end()) {
      return forbid(fmt::format("the key's usage plan '{}' is not configured (usage_plans)", ks.key.plan));
    }
    int64_t now_ms = UnixMillis();
    std::string today = UtcDay(now_ms);
    if (ks.day != today) {
      ks.day = today;
      ks.used_today = 0;
    }
    d.principal = "key:" + ks.key.id;
    if (plan->second.quota_per_day > 0 && ks.used_today >= plan->second.quota_per_day) {
      d.status = ResourceExhaustedError(
          fmt::format("the API key used its quota of {} requests today (usage plan '{}'); it resets at 00:00 UTC",
                      plan->second.quota_per_day, ks.key.plan));
      d.error_type = "quota_exceeded";
      d.retry_after_s = static_cast<int>(SecondsToUtcMidnight(now_ms));
      return d;
    }
    if (ks.bucket) {
      RateInfo info;
      int retry = 0;
      if (!ks.bucket->Take(now, &info, &retry)) {
        d.status = ResourceExhaustedError(fmt::format("the API key exceeds its rate of {} requests/s (usage plan '{}')",
                                                      plan->second.rate.rate, ks.key.plan));
        d.error_type = "rate_limited";
        d.retry_after_s = retry;
        d.rate = info;
        return d;
      }
      Merge(&d.rate, info);
    }
    key_id = ks.key.id;
  } else if (p.mode == "jwt") {
    if (c.bearer.empty()) {
      return Unauthorized(fmt::format("function '{}' needs a JWT: send Authorization: Bearer TOKEN", function), false);
    }
    if (!jwt_) return Unauthorized("JWT authentication is not configured (auth.jwt)", false);
    auto claims = jwt_->Verify(c.bearer);
    if (!claims.ok()) return Unauthorized("the token is not accepted: " + claims.status().message(), true);
    d.principal = "jwt:" + claims->subject;
  }
  if (!l.owns_lock()) l.lock();
  auto fb = function_buckets_.find(function);
  if (fb != function_buckets_.end()) {
    RateInfo info;
    int retry = 0;
    if (!fb->second->Take(now, &info, &retry)) {
      d.status = ResourceExhaustedError(
          fmt::format("function '{}' exceeds its rate limit of {} requests/s (functions.{}.rate_limit)", function,
                      p.rate_limit.rate, function));
      d.error_type = "rate_limited";
      d.retry_after_s = retry;
      d.rate = info;
      return d;
    }
    Merge(&d.rate, info);
  }
  if (!key_id.empty()) {
    auto it = keys_.find(key_id);
    if (it != keys_.end()) {
      if (it->second.pending > 0 && it->second.pending_day != it->second.day) {
        // A new UTC day began with yesterday's count unwritten: write it under its own day.
        l.unlock();
        Flush();
        l.lock();
        it = keys_.find(key_id);
        if (it == keys_.end()) return d;
      }
      it->second.pending_day = it->second.day;
      it->second.used_today++;
      it->second.pending++;
      it->second.last_used = UnixMillis();
    }
  }
  return d;
}

StatusOr<CreatedKey> Authenticator::CreateKey(const std::string& plan, const std::vector<std::string>& functions,
                                              const std::string& description) {
  if (!options_.plans.count(plan)) {
    return InvalidArgumentError(fmt::format("'{}' is not one of the usage_plans in the configuration", plan));
  }
  StatusOr<CreatedKey> k = Status();
  {
    std::lock_guard<std::mutex> l(store_mu_);
    k = store_->Create(plan, functions, description);
  }
  if (k.ok()) Reload();
  return k;
}

StatusOr<ApiKey> Authenticator::RevokeKey(const std::string& id) {
  StatusOr<ApiKey> k = Status();
  {
    std::lock_guard<std::mutex> l(store_mu_);
    k = store_->Revoke(id);
  }
  if (k.ok()) Reload();
  return k;
}

StatusOr<std::vector<ApiKey>> Authenticator::ListKeys() {
  Flush();
  std::lock_guard<std::mutex> l(store_mu_);
  return store_->List();
}

}  // namespace pilotlight::auth
