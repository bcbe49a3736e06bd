#include "auth/jwt.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include <curl/curl.h>
#include <fmt/format.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <nlohmann/json.hpp>

#include "common/base64.h"

// Why OpenSSL 3 directly and not Debian's libcpp-jwt-dev (arun11299/cpp-jwt 1.4): its ES256 does
// use the JOSE r||s form (a PyJWT token verified), but it compares HS256 signatures with
// std::string == (not constant time), throws on an `aud` array ("type conversion error"),
// accepts a token without `exp`, decodes base64 leniently (invalid characters are skipped, not
// refused), takes keys only as PEM, reads the wall clock itself, and with an algorithm list such
// as {"HS256", "RS256"} accepts an HS256 token MACed with the RSA public key's PEM. Working round
// all of that would leave it only the RSA/ECDSA verify calls, which are a few lines of EVP here.

namespace pilotlight::auth {

namespace {

using json = nlohmann::json;

constexpr size_t kMaxTokenBytes = 8 * 1024;
constexpr size_t kMaxJwksBytes = 1 << 20;
constexpr Duration kUnknownKidInterval = std::chrono::seconds(30);
constexpr int kMinRsaBits = 2048;
constexpr size_t kMinHmacKeyBytes = 32;  // RFC 7518 §3.2: at least the hash size

enum class Alg { kHS256, kRS256, kES256 };

std::string_view AlgName(Alg a) {
  switch (a) {
    case Alg::kHS256:
      return "HS256";
    case Alg::kRS256:
      return "RS256";
    case Alg::kES256:
      return "ES256";
  }
  return "?";
}

std::optional<Alg> ParseAlg(std::string_view s) {
  if (s == "HS256") return Alg::kHS256;
  if (s == "RS256") return Alg::kRS256;
  if (s == "ES256") return Alg::kES256;
  return std::nullopt;
}

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// Token-controlled text in an error message: printable ASCII only, and short, so that a message
// can neither break a log line nor carry a payload.
std::string Quote(std::string_view s) {
  constexpr size_t kMax = 64;
  std::string out;
  for (char c : s.substr(0, kMax)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (s.size() > kMax) out += "...";
  return "'" + out + "'";
}

// The JWKS source as it may appear in messages: URL credentials are not repeated.
std::string DisplaySource(const std::string& source) {
  size_t scheme = source.find("://");
  if (scheme == std::string::npos) return source;
  size_t host = scheme + 3;
  size_t at = source.find('@', host);
  size_t slash = source.find('/', host);
  if (at == std::string::npos || (slash != std::string::npos && at > slash)) return source;
  return source.substr(0, host) + "***@" + source.substr(at + 1);
}

struct Jwk {
  std::string kid;  // "" when the JWK has none
  Alg alg;
  PkeyPtr pkey;        // RS256, ES256
  std::string secret;  // HS256
};

}  // namespace

struct JwkSet {
  std::vector<Jwk> keys;
};

namespace {

// ---- loading the JWKS ---------------------------------------------------------------------

StatusOr<std::string> ReadJwksFile(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) return InvalidArgumentError(fmt::format("cannot open: {}", std::strerror(errno)));
  std::string text;
  char buf[16384];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f.get())) > 0) {
    text.append(buf, n);
    if (text.size() > kMaxJwksBytes) return InvalidArgumentError("larger than 1 MiB");
  }
  if (std::ferror(f.get())) return InvalidArgumentError(fmt::format("cannot read: {}", std::strerror(errno)));
  return text;
}

size_t OnJwksBody(char* data, size_t size, size_t count, void* user) {
  auto* body = static_cast<std::string*>(user);
  size_t n = size * count;
  if (body->size() + n > kMaxJwksBytes) return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  body->append(data, n);
  return n;
}

StatusOr<std::string> FetchJwksUrl(const std::string& url) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return InternalError("curl_easy_init failed");
  CURL* c = curl.get();
  char errbuf[CURL_ERROR_SIZE] = "";
  std::string body;
  curl_slist* headers = curl_slist_append(nullptr, "Accept: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnJwksBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  if (rc == CURLE_WRITE_ERROR && body.size() + CURL_MAX_WRITE_SIZE > kMaxJwksBytes) {
    return InvalidArgumentError("larger than 1 MiB");
  }
  if (rc != CURLE_OK) {
    return UnavailableError(fmt::format("fetch failed: {}", errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc)));
  }
  if (status >= 500) return UnavailableError(fmt::format("fetch failed: HTTP {}", status));
  if (status != 200) return InvalidArgumentError(fmt::format("fetch failed: HTTP {}", status));
  return body;
}

StatusOr<std::string> ReadJwksSource(const std::string& source) {
  if (source.starts_with("https://") || source.starts_with("http://")) return FetchJwksUrl(source);
  if (source.starts_with("file://")) return ReadJwksFile(source.substr(7));
  if (source.find("://") != std::string::npos) {
    return InvalidArgumentError("unsupported scheme (use a path, file://, http:// or https://)");
  }
  return ReadJwksFile(source);
}

StatusOr<std::string> B64Member(const json& jwk, const char* name) {
  auto it = jwk.find(name);
  if (it == jwk.end() || !it->is_string()) return InvalidArgumentError(fmt::format("'{}' is missing", name));
  auto bytes = Base64UrlDecode(it->get_ref<const std::string&>());
  if (!bytes || bytes->empty()) return InvalidArgumentError(fmt::format("'{}' is not base64url", name));
  return *std::move(bytes);
}

// Builds a public key from OSSL_PARAMs and runs OpenSSL's public-key checks on it (RSA: odd
// modulus and a sane exponent; EC: the point is on the curve).
StatusOr<PkeyPtr> PkeyFromParams(const char* type, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, void (*)(OSSL_PARAM*)> params(OSSL_PARAM_BLD_to_param(bld), OSSL_PARAM_free);
  std::unique_ptr<EVP_PKEY_CTX, void (*)(EVP_PKEY_CTX*)> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr),
                                                             EVP_PKEY_CTX_free);
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    ERR_clear_error();
    return InvalidArgumentError("not a valid public key");
  }
  PkeyPtr pkey(raw);
  std::unique_ptr<EVP_PKEY_CTX, void (*)(EVP_PKEY_CTX*)> check(EVP_PKEY_CTX_new_from_pkey(nullptr, raw, nullptr),
                                                               EVP_PKEY_CTX_free);
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    return InvalidArgumentError("not a valid public key");
  }
  return pkey;
}

StatusOr<PkeyPtr> RsaKey(const json& jwk) {
  PL_ASSIGN_OR_RETURN(std::string n, B64Member(jwk, "n"));
  PL_ASSIGN_OR_RETURN(std::string e, B64Member(jwk, "e"));
  std::unique_ptr<BIGNUM, void (*)(BIGNUM*)> bn_n(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()), nullptr), BN_free);
  std::unique_ptr<BIGNUM, void (*)(BIGNUM*)> bn_e(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()), nullptr), BN_free);
  if (!bn_n || !bn_e) return InternalError("out of memory");
  if (BN_num_bits(bn_n.get()) < kMinRsaBits) {
    return InvalidArgumentError(
        fmt::format("RSA modulus is {} bits; at least {} are required", BN_num_bits(bn_n.get()), kMinRsaBits));
  }
  std::unique_ptr<OSSL_PARAM_BLD, void (*)(OSSL_PARAM_BLD*)> bld(OSSL_PARAM_BLD_new(), OSSL_PARAM_BLD_free);
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return InternalError("OSSL_PARAM_BLD failed");
  }
  return PkeyFromParams("RSA", bld.get());
}

StatusOr<PkeyPtr> P256Key(const json& jwk) {
  PL_ASSIGN_OR_RETURN(std::string x, B64Member(jwk, "x"));
  PL_ASSIGN_OR_RETURN(std::string y, B64Member(jwk, "y"));
  if (x.size() != 32 || y.size() != 32) return InvalidArgumentError("'x' and 'y' must be 32 bytes each");
  std::string point = "\x04" + x + y;  // SEC 1 uncompressed point
  std::unique_ptr<OSSL_PARAM_BLD, void (*)(OSSL_PARAM_BLD*)> bld(OSSL_PARAM_BLD_new(), OSSL_PARAM_BLD_free);
  if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
    return InternalError("OSSL_PARAM_BLD failed");
  }
  return PkeyFromParams("EC", bld.get());
}

std::string OptionalString(const json& obj, const char* name) {
  auto it = obj.find(name);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// nullopt for a key this verifier does not use (another type, curve or algorithm, or an
// encryption key); an error for a key of a type it uses that is malformed.
StatusOr<std::optional<Jwk>> ParseJwk(const json& j) {
  if (!j.is_object()) return InvalidArgumentError("not a JSON object");
  std::string use = OptionalString(j, "use");
  if (!use.empty() && use != "sig") return std::optional<Jwk>();
  std::string kty = OptionalString(j, "kty");
  Alg alg;
  if (kty == "RSA") {
    alg = Alg::kRS256;
  } else if (kty == "EC") {
    if (OptionalString(j, "crv") != "P-256") return std::optional<Jwk>();
    alg = Alg::kES256;
  } else if (kty == "oct") {
    alg = Alg::kHS256;
  } else {
    return std::optional<Jwk>();
  }
  // The key's type decides its algorithm; an "alg" member may only confirm it (a JWK saying
  // kty RSA, alg HS256 is never used, so it cannot be turned into an HMAC secret).
  if (j.contains("alg") && OptionalString(j, "alg") != AlgName(alg)) return std::optional<Jwk>();
  if (j.contains("kid") && !j["kid"].is_string()) return InvalidArgumentError("'kid' is not a string");
  Jwk key{.kid = OptionalString(j, "kid"), .alg = alg, .pkey = nullptr, .secret = {}};
  switch (alg) {
    case Alg::kRS256: {
      PL_ASSIGN_OR_RETURN(key.pkey, RsaKey(j));
      break;
    }
    case Alg::kES256: {
      PL_ASSIGN_OR_RETURN(key.pkey, P256Key(j));
      break;
    }
    case Alg::kHS256: {
      PL_ASSIGN_OR_RETURN(key.secret, B64Member(j, "k"));
      if (key.secret.size() < kMinHmacKeyBytes) {
        return InvalidArgumentError(
            fmt::format("HS256 secret is {} bytes; at least {} are required", key.secret.size(), kMinHmacKeyBytes));
      }
      break;
    }
  }
  return std::optional<Jwk>(std::move(key));
}

StatusOr<std::shared_ptr<const JwkSet>> ParseJwks(const std::string& text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return InvalidArgumentError("not valid JSON");
  if (!doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array()) {
    return InvalidArgumentError("not a JWKS (no \"keys\" array)");
  }
  auto set = std::make_shared<JwkSet>();
  const json& keys = doc["keys"];
  for (size_t i = 0; i < keys.size(); ++i) {
    auto key = ParseJwk(keys[i]);
    if (!key.ok()) {
      std::string kid = keys[i].is_object() ? OptionalString(keys[i], "kid") : "";
      std::string name = kid.empty() ? fmt::format("#{}", i) : Quote(kid);
      return key.status().WithContext(fmt::format("key {}", name));
    }
    if (key->has_value()) set->keys.push_back(std::move(**key));
  }
  if (set->keys.empty()) return InvalidArgumentError("no usable key (RSA, EC P-256 or oct, for signatures)");
  return std::shared_ptr<const JwkSet>(std::move(set));
}

StatusOr<std::shared_ptr<const JwkSet>> LoadJwks(const std::string& source) {
  auto text = ReadJwksSource(source);
  if (!text.ok()) return text.status().WithContext(fmt::format("jwks '{}'", DisplaySource(source)));
  auto keys = ParseJwks(*text);
  if (!keys.ok()) return keys.status().WithContext(fmt::format("jwks '{}'", DisplaySource(source)));
  return keys;
}

// ---- signatures ---------------------------------------------------------------------------

bool VerifyDigestSha256(EVP_PKEY* pkey, std::string_view data, std::string_view sig) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool ok = ctx && EVP_DigestVerifyInit_ex(ctx.get(), nullptr, "SHA256", nullptr, nullptr, pkey, nullptr) == 1 &&
            EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                             reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  if (!ok) ERR_clear_error();
  return ok;
}

// JWS carries an ES256 signature as the 32-byte big-endian r and s side by side (RFC 7518 §3.4);
// OpenSSL verifies the DER ECDSA-Sig-Value, so the pair is re-encoded first.
bool VerifyEs256(EVP_PKEY* pkey, std::string_view data, std::string_view sig) {
  if (sig.size() != 64) return false;
  std::unique_ptr<ECDSA_SIG, void (*)(ECDSA_SIG*)> ecsig(ECDSA_SIG_new(), ECDSA_SIG_free);
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()) + 32, 32, nullptr);
  if (!ecsig || !r || !s || ECDSA_SIG_set0(ecsig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return false;
  }
  int len = i2d_ECDSA_SIG(ecsig.get(), nullptr);
  if (len <= 0) return false;
  std::string der(static_cast<size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_ECDSA_SIG(ecsig.get(), &p) != len) return false;
  return VerifyDigestSha256(pkey, data, der);
}

bool VerifyHs256(const std::string& secret, std::string_view data, std::string_view sig) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &mac_len) == nullptr) {
    ERR_clear_error();
    return false;
  }
  return sig.size() == mac_len && CRYPTO_memcmp(mac, sig.data(), mac_len) == 0;
}

bool VerifySignature(const Jwk& key, std::string_view data, std::string_view sig) {
  switch (key.alg) {
    case Alg::kHS256:
      return VerifyHs256(key.secret, data, sig);
    case Alg::kRS256:
      return VerifyDigestSha256(key.pkey.get(), data, sig);
    case Alg::kES256:
      return VerifyEs256(key.pkey.get(), data, sig);
  }
  return false;
}

// ---- claims -------------------------------------------------------------------------------

Status Malformed(std::string_view what) { return UnauthenticatedError(fmt::format("malformed token: {}", what)); }

struct JsonPart {
  std::string text;
  json value;
};

StatusOr<JsonPart> DecodeJsonObject(std::string_view b64, std::string_view part) {
  auto bytes = Base64UrlDecode(b64);
  if (!bytes) return Malformed(fmt::format("{} is not base64url", part));
  json j = json::parse(*bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Malformed(fmt::format("{} is not a JSON object", part));
  return JsonPart{.text = *std::move(bytes), .value = std::move(j)};
}

// A NumericDate (RFC 7519 §2): a JSON number of seconds, possibly fractional.
StatusOr<std::optional<double>> NumericDate(const json& payload, const char* name) {
  auto it = payload.find(name);
  if (it == payload.end()) return std::optional<double>();
  if (!it->is_number()) return UnauthenticatedError(fmt::format("claim '{}' is not a number", name));
  return std::optional<double>(it->get<double>());
}

StatusOr<std::string> StringClaim(const json& payload, const char* name) {
  auto it = payload.find(name);
  if (it == payload.end()) return std::string();
  if (!it->is_string()) return UnauthenticatedError(fmt::format("claim '{}' is not a string", name));
  return it->get<std::string>();
}

Status CheckAudience(const json& payload, const std::string& audience) {
  auto it = payload.find("aud");
  if (it == payload.end()) return UnauthenticatedError("token has no 'aud' claim");
  if (it->is_string()) {
    if (it->get_ref<const std::string&>() == audience) return OkStatus();
    return UnauthenticatedError(fmt::format("audience {} is not accepted", Quote(it->get_ref<const std::string&>())));
  }
  if (it->is_array()) {
    for (const json& a : *it) {
      if (a.is_string() && a.get_ref<const std::string&>() == audience) return OkStatus();
    }
    return UnauthenticatedError(fmt::format("audience {} is not accepted", Quote(it->dump())));
  }
  return UnauthenticatedError("claim 'aud' is neither a string nor an array");
}

}  // namespace

// ---- JwtVerifier --------------------------------------------------------------------------

StatusOr<std::unique_ptr<JwtVerifier>> JwtVerifier::Create(JwtConfig config) {
  if (config.jwks.empty()) return InvalidArgumentError("jwks: no source given");
  if (config.refresh <= Duration::zero()) return InvalidArgumentError("jwt refresh interval must be positive");
  if (config.leeway < Duration::zero()) return InvalidArgumentError("jwt leeway must not be negative");
  PL_ASSIGN_OR_RETURN(std::shared_ptr<const JwkSet> keys, LoadJwks(config.jwks));
  return std::unique_ptr<JwtVerifier>(new JwtVerifier(std::move(config), std::move(keys)));
}

JwtVerifier::JwtVerifier(JwtConfig config, std::shared_ptr<const JwkSet> keys)
    : config_(std::move(config)),
      clock_(config_.clock != nullptr ? config_.clock : SystemClock::Default()),
      keys_(std::move(keys)),
      last_fetch_(clock_->Now()) {}

JwtVerifier::~JwtVerifier() = default;

std::shared_ptr<const JwkSet> JwtVerifier::MaybeRefresh(bool unknown_kid) {
  TimePoint now = clock_->Now();
  auto due = [&] {
    Duration since = now - last_fetch_;
    return since >= config_.refresh || (unknown_kid && since >= kUnknownKidInterval);
  };
  {
    std::lock_guard lock(mu_);
    if (!due()) return keys_;
  }
  // Whoever holds refresh_mu_ is already fetching: verify with the current keys rather than wait.
  std::unique_lock refreshing(refresh_mu_, std::try_to_lock);
  if (!refreshing.owns_lock()) {
    std::lock_guard lock(mu_);
    return keys_;
  }
  {
    std::lock_guard lock(mu_);
    if (!due()) return keys_;  // refreshed by another thread since the first look
    // Stamped before the fetch, so a failing source is retried only after the interval again.
    last_fetch_ = now;
  }
  auto loaded = LoadJwks(config_.jwks);
  std::lock_guard lock(mu_);
  if (loaded.ok()) keys_ = *std::move(loaded);
  return keys_;
}

StatusOr<JwtClaims> JwtVerifier::Verify(std::string_view token) {
  if (token.empty()) return UnauthenticatedError("token is empty");
  if (token.size() > kMaxTokenBytes) return UnauthenticatedError("token is larger than 8 KiB");
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return Malformed("expected header.payload.signature");
  }
  std::string_view signing_input = token.substr(0, dot2);
  PL_ASSIGN_OR_RETURN(JsonPart header_part, DecodeJsonObject(token.substr(0, dot1), "header"));
  const json& header = header_part.value;

  auto alg_it = header.find("alg");
  if (alg_it == header.end() || !alg_it->is_string()) return Malformed("header has no 'alg'");
  const std::string& alg_name = alg_it->get_ref<const std::string&>();
  std::string lower = alg_name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "none") return UnauthenticatedError("algorithm 'none' is not accepted");
  std::optional<Alg> alg = ParseAlg(alg_name);
  if (!alg) return UnauthenticatedError(fmt::format("algorithm {} is not accepted", Quote(alg_name)));
  // RFC 7515 §4.1.11: extensions listed in "crit" must be understood, and none are.
  if (header.contains("crit")) return UnauthenticatedError("header parameter 'crit' is not supported");
  std::optional<std::string> kid;
  if (auto it = header.find("kid"); it != header.end()) {
    if (!it->is_string()) return Malformed("'kid' is not a string");
    kid = it->get<std::string>();
  }

  PL_ASSIGN_OR_RETURN(JsonPart payload_part, DecodeJsonObject(token.substr(dot1 + 1, dot2 - dot1 - 1), "payload"));
  const json& payload = payload_part.value;
  std::optional<std::string> signature = Base64UrlDecode(token.substr(dot2 + 1));
  if (!signature || signature->empty()) return Malformed("signature is not base64url");

  // Which keys may verify this token: by kid when it names one, else every key of its algorithm.
  // Either way a key is used only with the algorithm its JWK allows.
  std::shared_ptr<const JwkSet> keys = MaybeRefresh(/*unknown_kid=*/false);
  std::vector<const Jwk*> candidates;
  if (kid) {
    auto named = [&](const JwkSet& set) {
      std::vector<const Jwk*> out;
      for (const Jwk& k : set.keys) {
        if (k.kid == *kid) out.push_back(&k);
      }
      return out;
    };
    std::vector<const Jwk*> found = named(*keys);
    if (found.empty()) {
      keys = MaybeRefresh(/*unknown_kid=*/true);
      found = named(*keys);
    }
    if (found.empty()) return UnauthenticatedError(fmt::format("unknown key id {}", Quote(*kid)));
    for (const Jwk* k : found) {
      if (k->alg == *alg) candidates.push_back(k);
    }
    if (candidates.empty()) {
      return UnauthenticatedError(fmt::format("algorithm {} is not accepted for key {}", Quote(alg_name), Quote(*kid)));
    }
  } else {
    for (const Jwk& k : keys->keys) {
      if (k.alg == *alg) candidates.push_back(&k);
    }
    if (candidates.empty()) {
      return UnauthenticatedError(fmt::format("algorithm {} is not accepted by any key", Quote(alg_name)));
    }
  }
  bool verified = std::any_of(candidates.begin(), candidates.end(),
                              [&](const Jwk* k) { return VerifySignature(*k, signing_input, *signature); });
  if (!verified) return UnauthenticatedError("signature does not verify");

  // Claims are judged only once the signature holds, so a forger learns nothing from them.
  double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  double leeway = std::chrono::duration<double>(config_.leeway).count();
  PL_ASSIGN_OR_RETURN(std::optional<double> exp, NumericDate(payload, "exp"));
  if (!exp) return UnauthenticatedError("token has no 'exp' claim");
  if (now >= *exp + leeway) return UnauthenticatedError("token expired");
  PL_ASSIGN_OR_RETURN(std::optional<double> nbf, NumericDate(payload, "nbf"));
  if (nbf && now + leeway < *nbf) return UnauthenticatedError("token is not valid yet (nbf)");

  JwtClaims claims;
  PL_ASSIGN_OR_RETURN(claims.issuer, StringClaim(payload, "iss"));
  PL_ASSIGN_OR_RETURN(claims.subject, StringClaim(payload, "sub"));
  if (!config_.issuer.empty()) {
    if (!payload.contains("iss")) return UnauthenticatedError("token has no 'iss' claim");
    if (claims.issuer != config_.issuer) {
      return UnauthenticatedError(fmt::format("issuer {} is not accepted", Quote(claims.issuer)));
    }
  }
  if (!config_.audience.empty()) PL_RETURN_IF_ERROR(CheckAudience(payload, config_.audience));

  constexpr double kMaxSeconds = 9.2e18;  // below INT64_MAX, so the cast cannot overflow
  claims.expires_at = static_cast<int64_t>(std::min(std::floor(*exp), kMaxSeconds));
  claims.claims_json = std::move(payload_part.text);
  return claims;
}

}  // namespace pilotlight::auth
