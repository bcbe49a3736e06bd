// JwtVerifier: checks bearer JWTs (JWS compact form) against the keys of a JWKS and returns
// their claims. Accepted algorithms are HS256, RS256 and ES256, and the algorithm a token may
// use is decided by its key, never by the token: a JWK of kty "RSA" verifies RS256 only, "EC"
// with crv "P-256" ES256 only, "oct" HS256 only (a JWK "alg" must agree). "none" is always
// refused. Claims checked: `exp` (required), `nbf`, `iss` and `aud` (string or array), with a
// leeway.
//
// The JWKS comes from a file (`file:///path` or a plain path) or an http(s) URL. It is loaded by
// Create(), re-read by Verify() once `refresh` has passed, and early when a token names an
// unknown `kid` (at most once per 30 s). A refresh that fails keeps the keys already loaded.
//
// Ownership and thread-safety: the verifier owns its keys as an immutable snapshot that a
// refresh replaces whole. Verify() is safe to call from any thread; at most one thread refreshes
// at a time and the others keep verifying with the snapshot they have, without waiting.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"

namespace pilotlight::auth {

struct JwkSet;  // the usable keys of one JWKS (jwt.cc)

struct JwtConfig {
  // `file:///path/jwks.json`, `/path/jwks.json` or `https://issuer/.well-known/jwks.json`.
  std::string jwks{};
  // When not empty, the token's `iss` must equal it.
  std::string issuer{};
  // When not empty, the token's `aud` (a string or an array of strings) must contain it. When
  // empty, `aud` is not checked.
  std::string audience{};
  // Allowed clock skew for `exp` and `nbf`.
  Duration leeway = std::chrono::seconds(60);
  // How often the JWKS is re-read (checked when a token arrives, not on a timer).
  Duration refresh = std::chrono::minutes(5);
  // Times the refreshes (not `exp`/`nbf`, which use the wall clock). nullptr: SystemClock.
  const Clock* clock = nullptr;
};

struct JwtClaims {
  std::string subject;      // `sub`, "" when absent
  std::string issuer;       // `iss`, "" when absent
  int64_t expires_at = 0;   // `exp`, Unix seconds
  std::string claims_json;  // the whole payload, as the token carried it (a JSON object)
};

class JwtVerifier {
 public:
  // Loads the JWKS now. InvalidArgument naming the source when it is missing, unreadable, not a
  // JWKS, holds a malformed key (e.g. a bad RSA modulus, an EC point off the curve, an RSA key
  // under 2048 bits, an oct key under 32 bytes) or no usable key at all. Keys of other types or
  // algorithms (OKP, P-384, RS512, "use": "enc") are skipped. Unavailable when a URL cannot be
  // reached or answers 5xx. InvalidArgument too for a `refresh` <= 0 or a negative `leeway`.
  // Blocks for the fetch (URL timeouts: 5 s connect, 10 s total).
  static StatusOr<std::unique_ptr<JwtVerifier>> Create(JwtConfig config);

  ~JwtVerifier();
  JwtVerifier(const JwtVerifier&) = delete;
  JwtVerifier& operator=(const JwtVerifier&) = delete;

  // Verifies `token` (without a "Bearer " prefix). Unauthenticated with a short reason when the
  // token is malformed, larger than 8 KiB, uses an algorithm its key does not allow, names an
  // unknown key, does not verify, or fails a claim check; the reason never holds key material.
  // May block on a JWKS refresh in the one thread that performs it.
  StatusOr<JwtClaims> Verify(std::string_view token);

 private:
  JwtVerifier(JwtConfig config, std::shared_ptr<const JwkSet> keys);
  // Re-reads the JWKS when it is due (`refresh` since the last attempt, or 30 s for an unknown
  // kid) and no other thread is already re-reading it. Returns the keys to use: the new ones on
  // success, the current ones otherwise.
  std::shared_ptr<const JwkSet> MaybeRefresh(bool unknown_kid);

  const JwtConfig config_;
  const Clock* clock_;

  mutable std::mutex mu_;               // held only to read or swap the members below, never across a fetch
  std::shared_ptr<const JwkSet> keys_;  // GUARDED_BY(mu_)
  TimePoint last_fetch_;                // GUARDED_BY(mu_) last load attempt, good or bad

  std::mutex refresh_mu_;  // single-flight for fetches; only ever try_lock'ed
};

}  // namespace pilotlight::auth
