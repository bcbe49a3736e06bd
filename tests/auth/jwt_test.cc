// JwtVerifier: HS256, RS256 and ES256 tokens checked against JWKS files and an http URL; the
// algorithm comes from the key (alg none and algorithm confusion refused); exp, nbf, iss and aud
// with a leeway; malformed and oversized tokens; key rotation through refresh (fake clock, no
// sleeps); interop with tokens signed by PyJWT, a client we did not write.
#include "auth/jwt.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <nlohmann/json.hpp>

#include "auth/pyjwt_tokens.h"
#include "common/base64.h"
#include "fakes/fake_clock.h"

namespace pilotlight::auth {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

using testdata::kPyEs256;
using testdata::kPyHs256;
using testdata::kPyJwks;
using testdata::kPyRs256;

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Bn(const BIGNUM* bn, int width = 0) {
  int n = width > 0 ? width : BN_num_bytes(bn);
  std::string out(static_cast<size_t>(n), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), n);
  return out;
}

std::string BnParam(EVP_PKEY* pkey, const char* name, int width = 0) {
  BIGNUM* bn = nullptr;
  EXPECT_EQ(EVP_PKEY_get_bn_param(pkey, name, &bn), 1) << name;
  std::string out = Bn(bn, width);
  BN_free(bn);
  return out;
}

// A signing key of the test, with its JWK.
struct Key {
  std::string kid;
  std::string alg;           // HS256, RS256, ES256
  EVP_PKEY* pkey = nullptr;  // RS256, ES256 (owned)
  std::string secret;        // HS256

  Key(std::string kid_, std::string alg_, EVP_PKEY* pkey_, std::string secret_ = "")
      : kid(std::move(kid_)), alg(std::move(alg_)), pkey(pkey_), secret(std::move(secret_)) {}
  ~Key() { EVP_PKEY_free(pkey); }
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;

  json Jwk() const {
    if (alg == "HS256") return {{"kty", "oct"}, {"kid", kid}, {"k", Base64UrlEncode(secret)}};
    if (alg == "RS256") {
      return {{"kty", "RSA"},
              {"kid", kid},
              {"use", "sig"},
              {"n", Base64UrlEncode(BnParam(pkey, OSSL_PKEY_PARAM_RSA_N))},
              {"e", Base64UrlEncode(BnParam(pkey, OSSL_PKEY_PARAM_RSA_E))}};
    }
    return {{"kty", "EC"},
            {"kid", kid},
            {"crv", "P-256"},
            {"x", Base64UrlEncode(BnParam(pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32))},
            {"y", Base64UrlEncode(BnParam(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32))}};
  }

  std::string PublicPem() const {
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, pkey);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    std::string pem(data, static_cast<size_t>(n));
    BIO_free(bio);
    return pem;
  }

  std::string Sign(std::string_view input) const {
    if (alg == "HS256") return HmacSha256(secret, input);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EXPECT_EQ(EVP_DigestSignInit_ex(ctx, nullptr, "SHA256", nullptr, nullptr, pkey, nullptr), 1);
    size_t len = 0;
    auto in = reinterpret_cast<const unsigned char*>(input.data());
    EXPECT_EQ(EVP_DigestSign(ctx, nullptr, &len, in, input.size()), 1);
    std::string sig(len, '\0');
    EXPECT_EQ(EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, in, input.size()), 1);
    sig.resize(len);
    EVP_MD_CTX_free(ctx);
    if (alg == "RS256") return sig;
    // ES256 in JWS is r||s, 32 bytes each, not OpenSSL's DER.
    auto p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* ecsig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    std::string raw = Bn(ECDSA_SIG_get0_r(ecsig), 32) + Bn(ECDSA_SIG_get0_s(ecsig), 32);
    ECDSA_SIG_free(ecsig);
    return raw;
  }

  static std::string HmacSha256(std::string_view secret, std::string_view input) {
    unsigned char mac[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
    return std::string(reinterpret_cast<char*>(mac), len);
  }
};

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n));
  return out;
}

// header.payload.signature with the header and payload as given and `sign` over the first two.
std::string Token(const json& header, const json& payload, const std::function<std::string(std::string_view)>& sign) {
  std::string input = Base64UrlEncode(header.dump()) + "." + Base64UrlEncode(payload.dump());
  return input + "." + Base64UrlEncode(sign(input));
}

std::string Token(const Key& key, const json& payload) {
  return Token({{"alg", key.alg}, {"typ", "JWT"}, {"kid", key.kid}}, payload,
               [&](std::string_view in) { return key.Sign(in); });
}

// Serves a JWKS over HTTP on a loopback port until destroyed; the answer can be changed.
class JwksServer {
 public:
  JwksServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(fd_, 16);
    thread_ = std::thread([this] { Serve(); });
  }
  ~JwksServer() {
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
    thread_.join();
    ::close(fd_);
  }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/.well-known/jwks.json"; }
  void Answer(int status, std::string body) {
    std::lock_guard lock(mu_);
    status_ = status;
    body_ = std::move(body);
  }
  int requests() const { return requests_.load(); }

 private:
  void Serve() {
    for (;;) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string got;
      char buf[4096];
      while (got.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        got.append(buf, static_cast<size_t>(n));
      }
      std::string resp;
      {
        std::lock_guard lock(mu_);
        resp = "HTTP/1.1 " + std::to_string(status_) +
               " X\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body_.size()) +
               "\r\nConnection: close\r\n\r\n" + body_;
      }
      requests_++;
      (void)!::write(c, resp.data(), resp.size());
      ::close(c);
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  int status_ = 200;
  std::string body_;
  std::atomic<int> requests_{0};
};

class JwtTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_ = new Key("rsa-1", "RS256", EVP_RSA_gen(2048));
    rsa2_ = new Key("rsa-2", "RS256", EVP_RSA_gen(2048));
    ec_ = new Key("ec-1", "ES256", EVP_EC_gen("P-256"));
    ec2_ = new Key("ec-2", "ES256", EVP_EC_gen("P-256"));
    hs_ = new Key("hs-1", "HS256", nullptr, RandomBytes(32));
  }
  static void TearDownTestSuite() {
    for (Key* k : {rsa_, rsa2_, ec_, ec2_, hs_}) delete k;
  }

  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("pl_jwt_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    jwks_path_ = (dir_ / "jwks.json").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Replaces the JWKS file atomically (a reader never sees half of it).
  void WriteJwks(const std::string& text) {
    std::string tmp = jwks_path_ + ".tmp";
    std::ofstream(tmp) << text;
    fs::rename(tmp, jwks_path_);
  }
  void WriteJwks(std::initializer_list<const Key*> keys) { WriteJwks(JwksOf(keys)); }
  static std::string JwksOf(std::initializer_list<const Key*> keys) {
    json arr = json::array();
    for (const Key* k : keys) arr.push_back(k->Jwk());
    return json{{"keys", arr}}.dump();
  }

  JwtConfig Config() {
    return JwtConfig{.jwks = jwks_path_, .issuer = "https://issuer.test", .audience = "pilotlight", .clock = &clock_};
  }
  std::unique_ptr<JwtVerifier> Verifier(JwtConfig config) {
    auto v = JwtVerifier::Create(std::move(config));
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? std::move(v).value() : nullptr;
  }
  // All three kinds of key, verified with the default config.
  std::unique_ptr<JwtVerifier> AllKeysVerifier() {
    WriteJwks({rsa_, ec_, hs_});
    return Verifier(Config());
  }

  static json Claims() {
    return {{"sub", "alice"}, {"iss", "https://issuer.test"}, {"aud", "pilotlight"}, {"exp", NowSeconds() + 600}};
  }

  static ::testing::AssertionResult Refused(const StatusOr<JwtClaims>& r, std::string_view message) {
    if (r.ok()) return ::testing::AssertionFailure() << "accepted";
    if (r.status().code() != StatusCode::kUnauthenticated)
      return ::testing::AssertionFailure() << r.status().ToString();
    if (r.status().message().find(message) == std::string::npos) {
      return ::testing::AssertionFailure() << "message '" << r.status().message() << "' lacks '" << message << "'";
    }
    return ::testing::AssertionSuccess();
  }

  static inline Key* rsa_ = nullptr;
  static inline Key* rsa2_ = nullptr;
  static inline Key* ec_ = nullptr;
  static inline Key* ec2_ = nullptr;
  static inline Key* hs_ = nullptr;
  fs::path dir_;
  std::string jwks_path_;
  testing::FakeClock clock_;
};

// ---- each algorithm, and interop ----------------------------------------------------------

TEST_F(JwtTest, EachAlgorithm_VerifiesWithItsKey) {
  auto v = AllKeysVerifier();
  for (const Key* k : {rsa_, ec_, hs_}) {
    json claims = Claims();
    claims["role"] = k->alg;
    auto r = v->Verify(Token(*k, claims));
    ASSERT_TRUE(r.ok()) << k->alg << ": " << r.status().ToString();
    EXPECT_EQ(r->subject, "alice");
    EXPECT_EQ(r->issuer, "https://issuer.test");
    EXPECT_EQ(r->expires_at, claims["exp"].get<int64_t>());
    EXPECT_EQ(json::parse(r->claims_json)["role"], k->alg);
  }
}

TEST_F(JwtTest, TokenWithoutKid_VerifiedByTheKeysOfItsAlgorithm) {
  WriteJwks({rsa2_, rsa_, ec_});
  auto v = Verifier(Config());
  auto sign = [](const Key* k) { return [k](std::string_view in) { return k->Sign(in); }; };
  EXPECT_TRUE(v->Verify(Token({{"alg", "RS256"}}, Claims(), sign(rsa_))).ok());
  EXPECT_TRUE(v->Verify(Token({{"alg", "ES256"}}, Claims(), sign(ec_))).ok());
  EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "ES256"}}, Claims(), sign(ec2_))), "signature does not verify"));
  EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "HS256"}}, Claims(), sign(hs_))),
                      "algorithm 'HS256' is not accepted by any key"));
}

TEST_F(JwtTest, PyJwtTokens_VerifyForEveryAlgorithm) {
  WriteJwks(kPyJwks);
  JwtConfig config{.jwks = "file://" + jwks_path_, .issuer = "https://issuer.example", .audience = "pilotlight"};
  auto v = Verifier(config);
  for (const char* token : {kPyRs256, kPyEs256, kPyHs256}) {
    auto r = v->Verify(token);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->subject, "pyjwt-user");
    EXPECT_EQ(r->expires_at, 4102444800);
    EXPECT_EQ(json::parse(r->claims_json)["scope"], "invoke");

    // The same signature over a payload that names someone else.
    std::string t = token;
    size_t d1 = t.find('.'), d2 = t.rfind('.');
    json payload = json::parse(*Base64UrlDecode(t.substr(d1 + 1, d2 - d1 - 1)));
    payload["sub"] = "mallory";
    std::string forged = t.substr(0, d1 + 1) + Base64UrlEncode(payload.dump()) + t.substr(d2);
    EXPECT_TRUE(Refused(v->Verify(forged), "signature does not verify"));
  }
}

// ---- algorithm none and algorithm confusion -----------------------------------------------

TEST_F(JwtTest, AlgNone_Refused) {
  auto v = AllKeysVerifier();
  auto empty = [](std::string_view) { return std::string(); };
  for (const char* none : {"none", "None", "NONE"}) {
    std::string unsigned_token = Token({{"alg", none}}, Claims(), empty);
    EXPECT_TRUE(Refused(v->Verify(unsigned_token), "algorithm 'none' is not accepted")) << none;
    // ...and with a kid and a signature made by a real key.
    std::string signed_token =
        Token({{"alg", none}, {"kid", "hs-1"}}, Claims(), [](std::string_view in) { return hs_->Sign(in); });
    EXPECT_TRUE(Refused(v->Verify(signed_token), "algorithm 'none' is not accepted")) << none;
  }
}

TEST_F(JwtTest, Hs256MacedWithRsaPublicKeyMaterial_Refused) {
  WriteJwks({rsa_, ec_});
  auto v = Verifier(Config());
  // The classic confusion: the public key is no secret, so a verifier that let the token pick
  // HMAC would accept these.
  std::vector<std::string> materials = {rsa_->PublicPem(), rsa_->Jwk().dump(),
                                        *Base64UrlDecode(rsa_->Jwk()["n"].get<std::string>()), ec_->PublicPem()};
  for (const std::string& secret : materials) {
    auto mac = [&](std::string_view in) { return Key::HmacSha256(secret, in); };
    EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "HS256"}, {"kid", "rsa-1"}}, Claims(), mac)),
                        "algorithm 'HS256' is not accepted for key 'rsa-1'"));
    EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "HS256"}, {"kid", "ec-1"}}, Claims(), mac)),
                        "algorithm 'HS256' is not accepted for key 'ec-1'"));
    EXPECT_TRUE(
        Refused(v->Verify(Token({{"alg", "HS256"}}, Claims(), mac)), "algorithm 'HS256' is not accepted by any key"));
  }
}

TEST_F(JwtTest, HeaderAlgOtherThanTheKeys_Refused) {
  auto v = AllKeysVerifier();
  auto by = [](const Key* k) { return [k](std::string_view in) { return k->Sign(in); }; };
  EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "ES256"}, {"kid", "rsa-1"}}, Claims(), by(ec_))),
                      "algorithm 'ES256' is not accepted for key 'rsa-1'"));
  EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "RS256"}, {"kid", "hs-1"}}, Claims(), by(rsa_))),
                      "algorithm 'RS256' is not accepted for key 'hs-1'"));
  EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "RS512"}, {"kid", "rsa-1"}}, Claims(), by(rsa_))),
                      "algorithm 'RS512' is not accepted"));
  EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "PS256"}, {"kid", "rsa-1"}}, Claims(), by(rsa_))),
                      "algorithm 'PS256' is not accepted"));
}

TEST_F(JwtTest, JwkWhoseAlgDisagreesWithItsType_NeverUsed) {
  // An RSA JWK claiming HS256 must not become an HMAC secret (nor an RS256 key).
  json bad = rsa_->Jwk();
  bad["kid"] = "odd";
  bad["alg"] = "HS256";
  WriteJwks(json{{"keys", {bad, ec_->Jwk()}}}.dump());
  auto v = Verifier(Config());
  std::string n = *Base64UrlDecode(bad["n"].get<std::string>());
  auto mac = [&](std::string_view in) { return Key::HmacSha256(n, in); };
  EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "HS256"}, {"kid", "odd"}}, Claims(), mac)), "unknown key id 'odd'"));
  auto rs = [](std::string_view in) { return rsa_->Sign(in); };
  EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "RS256"}, {"kid", "odd"}}, Claims(), rs)), "unknown key id 'odd'"));
}

TEST_F(JwtTest, JwkAlgThatAgrees_Accepted) {
  json k = rsa_->Jwk();
  k["alg"] = "RS256";
  WriteJwks(json{{"keys", {k}}}.dump());
  auto v = Verifier(Config());
  EXPECT_TRUE(v->Verify(Token(*rsa_, Claims())).ok());
}

// ---- keys and signatures ------------------------------------------------------------------

TEST_F(JwtTest, UnknownKid_Refused) {
  auto v = AllKeysVerifier();
  Key other("nope", "RS256", EVP_PKEY_dup(rsa_->pkey));
  EXPECT_TRUE(Refused(v->Verify(Token(other, Claims())), "unknown key id 'nope'"));
}

TEST_F(JwtTest, TamperedPayloadOrSignature_Refused) {
  auto v = AllKeysVerifier();
  for (const Key* k : {rsa_, ec_, hs_}) {
    std::string t = Token(*k, Claims());
    size_t d1 = t.find('.'), d2 = t.rfind('.');
    json payload = Claims();
    payload["sub"] = "root";
    std::string other_payload = t.substr(0, d1 + 1) + Base64UrlEncode(payload.dump()) + t.substr(d2);
    EXPECT_TRUE(Refused(v->Verify(other_payload), "signature does not verify")) << k->alg;

    std::string sig = *Base64UrlDecode(t.substr(d2 + 1));
    sig[sig.size() / 2] ^= 0x01;
    EXPECT_TRUE(Refused(v->Verify(t.substr(0, d2 + 1) + Base64UrlEncode(sig)), "signature does not verify")) << k->alg;
    EXPECT_TRUE(Refused(v->Verify(t.substr(0, d2 + 1) + Base64UrlEncode(sig.substr(1))), "signature does not verify"))
        << k->alg;
  }
}

TEST_F(JwtTest, Es256SignatureInDerForm_Refused) {
  auto v = AllKeysVerifier();
  // OpenSSL's own DER signature is valid ECDSA but not the JWS encoding.
  auto der = [](std::string_view in) {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestSignInit_ex(ctx, nullptr, "SHA256", nullptr, nullptr, ec_->pkey, nullptr);
    size_t len = 0;
    auto p = reinterpret_cast<const unsigned char*>(in.data());
    EVP_DigestSign(ctx, nullptr, &len, p, in.size());
    std::string sig(len, '\0');
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, p, in.size());
    sig.resize(len);
    EVP_MD_CTX_free(ctx);
    return sig;
  };
  EXPECT_TRUE(
      Refused(v->Verify(Token({{"alg", "ES256"}, {"kid", "ec-1"}}, Claims(), der)), "signature does not verify"));
}

// ---- claims -------------------------------------------------------------------------------

TEST_F(JwtTest, Expired_RefusedBeyondLeeway_AcceptedWithin) {
  auto v = AllKeysVerifier();
  json claims = Claims();
  claims["exp"] = NowSeconds() - 120;
  EXPECT_TRUE(Refused(v->Verify(Token(*rsa_, claims)), "token expired"));
  claims["exp"] = NowSeconds() - 30;
  EXPECT_TRUE(v->Verify(Token(*rsa_, claims)).ok());

  JwtConfig strict = Config();
  strict.leeway = Duration::zero();
  auto s = Verifier(strict);
  EXPECT_TRUE(Refused(s->Verify(Token(*rsa_, claims)), "token expired"));
}

TEST_F(JwtTest, NotBefore_RefusedInFuture_AcceptedWithinLeeway) {
  auto v = AllKeysVerifier();
  json claims = Claims();
  claims["nbf"] = NowSeconds() + 3600;
  EXPECT_TRUE(Refused(v->Verify(Token(*ec_, claims)), "not valid yet"));
  claims["nbf"] = NowSeconds() + 30;
  EXPECT_TRUE(v->Verify(Token(*ec_, claims)).ok());
  claims["nbf"] = "soon";
  EXPECT_TRUE(Refused(v->Verify(Token(*ec_, claims)), "claim 'nbf' is not a number"));
}

TEST_F(JwtTest, MissingOrNonNumericExp_Refused) {
  auto v = AllKeysVerifier();
  json claims = Claims();
  claims.erase("exp");
  EXPECT_TRUE(Refused(v->Verify(Token(*hs_, claims)), "token has no 'exp' claim"));
  claims["exp"] = std::to_string(NowSeconds() + 600);
  EXPECT_TRUE(Refused(v->Verify(Token(*hs_, claims)), "claim 'exp' is not a number"));
  claims["exp"] = static_cast<double>(NowSeconds()) + 600.5;  // NumericDate may be fractional
  EXPECT_TRUE(v->Verify(Token(*hs_, claims)).ok());
}

TEST_F(JwtTest, Issuer_MustMatchWhenConfigured) {
  auto v = AllKeysVerifier();
  json claims = Claims();
  claims["iss"] = "https://evil.test";
  EXPECT_TRUE(Refused(v->Verify(Token(*rsa_, claims)), "issuer 'https://evil.test' is not accepted"));
  claims.erase("iss");
  EXPECT_TRUE(Refused(v->Verify(Token(*rsa_, claims)), "token has no 'iss' claim"));

  JwtConfig any = Config();
  any.issuer = "";
  claims["iss"] = "https://evil.test";
  EXPECT_TRUE(Verifier(any)->Verify(Token(*rsa_, claims)).ok());
}

TEST_F(JwtTest, Audience_StringOrArrayMustContainIt) {
  auto v = AllKeysVerifier();
  json claims = Claims();
  claims["aud"] = "someone-else";
  EXPECT_TRUE(Refused(v->Verify(Token(*ec_, claims)), "audience 'someone-else' is not accepted"));
  claims["aud"] = {"a", "pilotlight", "b"};
  EXPECT_TRUE(v->Verify(Token(*ec_, claims)).ok());
  claims["aud"] = {"a", "b"};
  EXPECT_TRUE(Refused(v->Verify(Token(*ec_, claims)), "is not accepted"));
  claims["aud"] = 7;
  EXPECT_TRUE(Refused(v->Verify(Token(*ec_, claims)), "neither a string nor an array"));
  claims.erase("aud");
  EXPECT_TRUE(Refused(v->Verify(Token(*ec_, claims)), "token has no 'aud' claim"));

  JwtConfig any = Config();
  any.audience = "";
  EXPECT_TRUE(Verifier(any)->Verify(Token(*ec_, claims)).ok());
}

TEST_F(JwtTest, TokenControlledTextInMessages_IsSanitizedAndShort) {
  auto v = AllKeysVerifier();
  json claims = Claims();
  claims["iss"] = "evil\r\nX-Injected: 1" + std::string(200, 'a');
  auto r = v->Verify(Token(*rsa_, claims));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  EXPECT_LT(r.status().message().size(), 120u);
}

// ---- malformed tokens ---------------------------------------------------------------------

TEST_F(JwtTest, GarbageTokens_RefusedAsMalformed) {
  auto v = AllKeysVerifier();
  std::string good = Token(*hs_, Claims());
  size_t d1 = good.find('.'), d2 = good.rfind('.');
  std::string header = good.substr(0, d1), payload = good.substr(d1 + 1, d2 - d1 - 1), sig = good.substr(d2 + 1);
  std::vector<std::pair<std::string, std::string>> cases = {
      {"abc", "expected header.payload.signature"},
      {header + "." + payload, "expected header.payload.signature"},
      {good + ".x", "expected header.payload.signature"},
      {"..", "header is not a JSON object"},
      {"!!!." + payload + "." + sig, "header is not base64url"},
      {header + "." + payload + "." + sig + "=", "signature is not base64url"},
      {header + "." + payload + "+." + sig, "payload is not base64url"},
      {header + "." + payload + ".", "signature is not base64url"},
      {Base64UrlEncode("{\"alg\":") + "." + payload + "." + sig, "header is not a JSON object"},
      {Base64UrlEncode("[\"HS256\"]") + "." + payload + "." + sig, "header is not a JSON object"},
      {Base64UrlEncode("{\"typ\":\"JWT\"}") + "." + payload + "." + sig, "header has no 'alg'"},
      {Base64UrlEncode("{\"alg\":256}") + "." + payload + "." + sig, "header has no 'alg'"},
      {Base64UrlEncode("{\"alg\":\"HS256\",\"kid\":1}") + "." + payload + "." + sig, "'kid' is not a string"},
      {header + "." + Base64UrlEncode("not json") + "." + sig, "payload is not a JSON object"},
      {header + "." + Base64UrlEncode("\"a string\"") + "." + sig, "payload is not a JSON object"},
  };
  for (const auto& [token, message] : cases) {
    EXPECT_TRUE(Refused(v->Verify(token), message)) << token;
  }
  EXPECT_TRUE(Refused(v->Verify(""), "token is empty"));
  EXPECT_TRUE(Refused(v->Verify(Token({{"alg", "HS256"}, {"kid", "hs-1"}, {"crit", {"exp"}}}, Claims(),
                                      [](std::string_view in) { return hs_->Sign(in); })),
                      "'crit' is not supported"));
}

TEST_F(JwtTest, TokenOver8KiB_Refused) {
  auto v = AllKeysVerifier();
  json claims = Claims();
  claims["pad"] = std::string(5000, 'x');
  std::string fits = Token(*rsa_, claims);
  ASSERT_LT(fits.size(), 8192u);
  EXPECT_TRUE(v->Verify(fits).ok());
  claims["pad"] = std::string(6500, 'x');
  std::string big = Token(*rsa_, claims);
  ASSERT_GT(big.size(), 8192u);
  EXPECT_TRUE(Refused(v->Verify(big), "token is larger than 8 KiB"));
}

// ---- loading the JWKS ---------------------------------------------------------------------

TEST_F(JwtTest, Create_BadJwks_InvalidArgumentNamingTheSource) {
  auto create_error = [&](const std::string& text) {
    WriteJwks(text);
    auto v = JwtVerifier::Create(Config());
    EXPECT_FALSE(v.ok());
    EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(v.status().message().find(jwks_path_), std::string::npos) << v.status().message();
    return v.status().message();
  };
  EXPECT_NE(create_error("{not json").find("not valid JSON"), std::string::npos);
  EXPECT_NE(create_error("{\"keys\": {}}").find("no \"keys\" array"), std::string::npos);
  EXPECT_NE(create_error("{\"keys\": []}").find("no usable key"), std::string::npos);
  // Only keys this verifier does not use: an Ed25519 key, a P-384 key, an encryption key, RS512.
  json rs512 = rsa_->Jwk();
  rs512["alg"] = "RS512";
  json enc = rsa_->Jwk();
  enc["use"] = "enc";
  json p384 = ec_->Jwk();
  p384["crv"] = "P-384";
  json okp = {{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}};
  EXPECT_NE(create_error(json{{"keys", {rs512, enc, p384, okp}}}.dump()).find("no usable key"), std::string::npos);

  json off_curve = ec_->Jwk();
  std::string y = *Base64UrlDecode(off_curve["y"].get<std::string>());
  y[31] ^= 0x01;
  off_curve["y"] = Base64UrlEncode(y);
  EXPECT_NE(create_error(json{{"keys", {off_curve}}}.dump()).find("key 'ec-1': not a valid public key"),
            std::string::npos);
  json short_secret = {{"kty", "oct"}, {"kid", "short"}, {"k", Base64UrlEncode("secret")}};
  EXPECT_NE(create_error(json{{"keys", {short_secret}}}.dump()).find("key 'short': HS256 secret is 6 bytes"),
            std::string::npos);
  Key small("small", "RS256", EVP_RSA_gen(1024));
  EXPECT_NE(create_error(JwksOf({&small})).find("key 'small': RSA modulus is 1024 bits"), std::string::npos);
  json no_n = rsa_->Jwk();
  no_n.erase("n");
  EXPECT_NE(create_error(json{{"keys", {no_n}}}.dump()).find("key 'rsa-1': 'n' is missing"), std::string::npos);

  fs::remove(jwks_path_);
  auto missing = JwtVerifier::Create(Config());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find(jwks_path_ + "': cannot open"), std::string::npos);
  auto scheme = JwtVerifier::Create(JwtConfig{.jwks = "ftp://host/jwks.json"});
  EXPECT_EQ(scheme.status().code(), StatusCode::kInvalidArgument);
  WriteJwks({rsa_});
  JwtConfig no_refresh = Config();
  no_refresh.refresh = Duration::zero();
  EXPECT_EQ(JwtVerifier::Create(no_refresh).status().code(), StatusCode::kInvalidArgument);
  JwtConfig negative_leeway = Config();
  negative_leeway.leeway = -std::chrono::seconds(1);
  EXPECT_EQ(JwtVerifier::Create(negative_leeway).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(JwtTest, Create_FileUrlAndPlainPath_BothLoad) {
  WriteJwks({ec_});
  JwtConfig config = Config();
  config.jwks = "file://" + jwks_path_;
  EXPECT_TRUE(Verifier(config)->Verify(Token(*ec_, Claims())).ok());
  EXPECT_TRUE(Verifier(Config())->Verify(Token(*ec_, Claims())).ok());
}

// ---- refresh ------------------------------------------------------------------------------

TEST_F(JwtTest, Refresh_AfterInterval_PicksUpRotatedKey) {
  WriteJwks({rsa_});
  JwtConfig config = Config();
  config.refresh = std::chrono::minutes(10);
  auto v = Verifier(config);
  WriteJwks({rsa2_});
  // Within the interval (and within 30 s of the load) the old set stays.
  clock_.Advance(std::chrono::seconds(20));
  EXPECT_TRUE(v->Verify(Token(*rsa_, Claims())).ok());
  EXPECT_TRUE(Refused(v->Verify(Token(*rsa2_, Claims())), "unknown key id 'rsa-2'"));
  clock_.Advance(std::chrono::minutes(10));
  EXPECT_TRUE(v->Verify(Token(*rsa2_, Claims())).ok());
  EXPECT_TRUE(Refused(v->Verify(Token(*rsa_, Claims())), "unknown key id 'rsa-1'"));
}

TEST_F(JwtTest, UnknownKid_RefetchesEarly_AtMostOncePer30s) {
  WriteJwks({rsa_});
  JwtConfig config = Config();
  config.refresh = std::chrono::hours(1);
  auto v = Verifier(config);
  clock_.Advance(std::chrono::seconds(31));
  WriteJwks({rsa_, rsa2_});
  EXPECT_TRUE(v->Verify(Token(*rsa2_, Claims())).ok());  // fetched because of the unknown kid
  WriteJwks({rsa_, rsa2_, ec_});
  clock_.Advance(std::chrono::seconds(29));
  EXPECT_TRUE(Refused(v->Verify(Token(*ec_, Claims())), "unknown key id 'ec-1'"));  // too soon
  clock_.Advance(std::chrono::seconds(1));
  EXPECT_TRUE(v->Verify(Token(*ec_, Claims())).ok());
}

TEST_F(JwtTest, FailedRefresh_KeepsOldKeys) {
  WriteJwks({rsa_});
  JwtConfig config = Config();
  config.refresh = std::chrono::seconds(10);
  auto v = Verifier(config);
  WriteJwks("{\"keys\": [truncated");
  clock_.Advance(std::chrono::seconds(11));
  EXPECT_TRUE(v->Verify(Token(*rsa_, Claims())).ok());
  fs::remove(jwks_path_);
  clock_.Advance(std::chrono::seconds(11));
  EXPECT_TRUE(v->Verify(Token(*rsa_, Claims())).ok());
  WriteJwks({rsa2_});  // a good file again replaces the set
  clock_.Advance(std::chrono::seconds(11));
  EXPECT_TRUE(v->Verify(Token(*rsa2_, Claims())).ok());
  EXPECT_TRUE(Refused(v->Verify(Token(*rsa_, Claims())), "unknown key id 'rsa-1'"));
}

TEST_F(JwtTest, ConcurrentVerify_WhileRefreshing_AllSucceed) {
  WriteJwks({rsa_, ec_, hs_});
  JwtConfig config = Config();
  config.refresh = std::chrono::seconds(1);
  auto v = Verifier(config);
  std::vector<std::string> tokens = {Token(*rsa_, Claims()), Token(*ec_, Claims()), Token(*hs_, Claims())};
  std::atomic<int> failures{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        if (!v->Verify(tokens[(t + i) % tokens.size()]).ok()) failures++;
      }
    });
  }
  std::thread rotator([&] {
    while (!stop) {
      clock_.Advance(std::chrono::seconds(2));
      WriteJwks({rsa_, ec_, hs_});
      std::this_thread::yield();
    }
  });
  for (auto& t : threads) t.join();
  stop = true;
  rotator.join();
  EXPECT_EQ(failures.load(), 0);
}

// ---- JWKS over http ------------------------------------------------------------------------

TEST_F(JwtTest, JwksUrl_LoadsRefreshesAndSurvivesServerErrors) {
  JwksServer server;
  server.Answer(200, JwksOf({ec_}));
  JwtConfig config = Config();
  config.jwks = server.Url();
  config.refresh = std::chrono::minutes(5);
  auto v = Verifier(config);
  EXPECT_EQ(server.requests(), 1);
  EXPECT_TRUE(v->Verify(Token(*ec_, Claims())).ok());

  // Unknown kids: one early fetch, then none for 30 s however many arrive.
  server.Answer(200, JwksOf({ec_, ec2_}));
  clock_.Advance(std::chrono::seconds(30));
  EXPECT_TRUE(v->Verify(Token(*ec2_, Claims())).ok());
  EXPECT_EQ(server.requests(), 2);
  Key stranger("stranger", "ES256", EVP_PKEY_dup(ec_->pkey));
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(Refused(v->Verify(Token(stranger, Claims())), "unknown key id"));
  EXPECT_EQ(server.requests(), 2);

  // A server error at refresh time keeps the keys.
  server.Answer(503, "busy");
  clock_.Advance(std::chrono::minutes(5));
  EXPECT_TRUE(v->Verify(Token(*ec2_, Claims())).ok());
  EXPECT_EQ(server.requests(), 3);

  server.Answer(200, JwksOf({rsa_}));
  clock_.Advance(std::chrono::minutes(5));
  EXPECT_TRUE(v->Verify(Token(*rsa_, Claims())).ok());
  EXPECT_EQ(server.requests(), 4);
}

TEST_F(JwtTest, JwksUrl_CreateErrors) {
  JwksServer server;
  server.Answer(404, "no");
  auto not_found = JwtVerifier::Create(JwtConfig{.jwks = server.Url()});
  EXPECT_EQ(not_found.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(not_found.status().message().find("HTTP 404"), std::string::npos) << not_found.status().message();
  server.Answer(500, "oops");
  EXPECT_EQ(JwtVerifier::Create(JwtConfig{.jwks = server.Url()}).status().code(), StatusCode::kUnavailable);
  server.Answer(200, "<html>");
  EXPECT_EQ(JwtVerifier::Create(JwtConfig{.jwks = server.Url()}).status().code(), StatusCode::kInvalidArgument);

  // A port nobody listens on: take one from the kernel and close it again.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  auto refused = JwtVerifier::Create(
      JwtConfig{.jwks = "http://user:hunter2@127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/jwks.json"});
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(refused.status().message().find("hunter2"), std::string::npos) << refused.status().message();
}

}  // namespace
}  // namespace pilotlight::auth
