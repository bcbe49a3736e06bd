// Fuzzes the JWT verifier (auth/jwt.h) with the input as a bearer token, against a JWKS of one
// RSA, one P-256 and one HMAC key. The property is stronger than "no crash": a token verifies
// only if its signed part (header.payload) is exactly that of a token signed with these keys
// (the PyJWT tokens below, also the seeds) — nothing the fuzzer builds may be accepted, whatever
// it does to algorithms, key ids, encodings or claims. Errors must be Unauthenticated.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "auth/jwt.h"
#include "fuzz_check.h"

namespace {

// Signed by PyJWT 2.6.0 (exp 2100-01-01; iss https://issuer.example; aud [other, pilotlight]);
// the same constants as tests/auth/jwt_test.cc.
constexpr const char* kJwks =
    "{\"keys\":[{\"kty\":\"RSA\",\"key_ops\":[\"verify\"],\"n\":\"4AsGADbt-MdbG6zIUWEGtOcTZjTowbMja35snu0wy8OZpK1m"
    "PkyA6X-NE65MP6Gnoao-aNOgXS1TkkFPAbnUAkB3vJNObXWZPiBUngkkU97WyNlc-0HMsqKm7C9Y2wePQ2K6GcbMY-JXttlv"
    "-p1yqQvEmRuhgvMRefQMELn2kWfAkYZbixkI6o1Gb2HE0PyhJ9wlBhxodUfQHYp0IJ7hoUXQEqrFTjsspSq-tst2Zo9G3n7f"
    "qDnglzgmuvRWspN2yTHDJoMM_whOKXAQx_dJi3MqZVzH7wKJTlaHqVR1meUhIN7-oAzBx21_yIPKOnL18zTf3As5WjRXsqLX"
    "seX2oQ\",\"e\":\"AQAB\",\"kid\":\"py-rsa\",\"use\":\"sig\",\"alg\":\"RS256\"},{\"kty\":\"EC\",\"crv\":\"P-256\","
    "\"x\":\"EPzF"
    "o-wOwgKtfB5KobHWjLlL6C2hzEnz4AFT134EZdQ\",\"y\":\"tjFkzkzXxite0eE_Nv78mYL4hF5LU3d62OMN3413CN0\",\"kid\""
    ":\"py-ec\",\"use\":\"sig\",\"alg\":\"ES256\"},{\"kty\":\"oct\",\"kid\":\"py-hs\",\"alg\":\"HS256\",\"k\":"
    "\"oSJtryq1hvrlqI"
    "Vl2UfzAtkrpGof-Nr1Pj-8oeZx5qc\"}]}";
constexpr const char* kValid[] = {
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InB5LXJzYSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJweWp3dC11c2VyIiwiaXNzIjoiaHR"
    "0cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsImF1ZCI6WyJvdGhlciIsInBpbG90bGlnaHQiXSwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQ"
    "iOjE3MDAwMDAwMDAsInNjb3BlIjoiaW52b2tlIn0.aY90_b9TCD9a6EW121YYk-p2nZw11DKvzF1g_TjzvdS8UvR7V_tFAp7"
    "cwfcWhNb2oWGm92ct9XZO9ydX_gqn0Ah-320HnBfKVW1k8OwcPN3K7hgj78sO6CdHDfU8xCnNrtW704QyWnqaz2OJzGH2GNM"
    "-vx9NXHJxkBpBIFLgLo_wQih5rTp6EC1TzAwPV16F64u4OhZhkg0wRAsWsJSaazVvEa2Bmj0CZlexydrjkb5foqZEdYZLZrh"
    "e6UnEnHzJnL4UrrSSu7kmw3DuBFFcac08y_jLaK1xVwAgBlEmBqHjLJuxpiUmlGWYQJXYt8wwBq3QbSgXGaTfsPiF5O-uBg",
    "eyJhbGciOiJFUzI1NiIsImtpZCI6InB5LWVjIiwidHlwIjoiSldUIn0.eyJzdWIiOiJweWp3dC11c2VyIiwiaXNzIjoiaHR0"
    "cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsImF1ZCI6WyJvdGhlciIsInBpbG90bGlnaHQiXSwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQi"
    "OjE3MDAwMDAwMDAsInNjb3BlIjoiaW52b2tlIn0.Dm13uE8jJ9-KpUDs50qXzbamMzQL_xpy-2svz2UkEiZAVcXgYKjcypiy"
    "QvoXX0WzdmJqdw72ZfF1qYsBIDdJSA",
    "eyJhbGciOiJIUzI1NiIsImtpZCI6InB5LWhzIiwidHlwIjoiSldUIn0.eyJzdWIiOiJweWp3dC11c2VyIiwiaXNzIjoiaHR0"
    "cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsImF1ZCI6WyJvdGhlciIsInBpbG90bGlnaHQiXSwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQi"
    "OjE3MDAwMDAwMDAsInNjb3BlIjoiaW52b2tlIn0.mP1sBMs0ZupYZM5taKGNsnZUTRP3OZdBi2IL7zV7PC8",
};

std::string_view SignedPart(std::string_view token) { return token.substr(0, token.rfind('.')); }

pilotlight::auth::JwtVerifier* Verifier() {
  static pilotlight::auth::JwtVerifier* v = [] {
    char path[] = "/tmp/pl-jwt-fuzz-XXXXXX";
    int fd = mkstemp(path);
    FUZZ_CHECK(fd >= 0, "cannot create the JWKS file");
    std::string jwks = kJwks;
    FUZZ_CHECK(write(fd, jwks.data(), jwks.size()) == static_cast<ssize_t>(jwks.size()), "cannot write the JWKS");
    close(fd);
    pilotlight::auth::JwtConfig c;
    c.jwks = path;
    c.issuer = "https://issuer.example";
    c.audience = "pilotlight";
    c.refresh = std::chrono::hours(24);  // no refetch while fuzzing
    auto created = pilotlight::auth::JwtVerifier::Create(c);
    unlink(path);
    FUZZ_CHECK(created.ok(), created.status().ToString());
    for (const char* t : kValid) FUZZ_CHECK(created.value()->Verify(t).ok(), "a known-good token does not verify");
    return created.value().release();
  }();
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string token(reinterpret_cast<const char*>(data), size);
  auto claims = Verifier()->Verify(token);
  if (!claims.ok()) {
    FUZZ_CHECK(claims.status().code() == pilotlight::StatusCode::kUnauthenticated,
               "Verify failed with " + claims.status().ToString());
    FUZZ_CHECK(!claims.status().message().empty(), "a refusal without a reason");
    return 0;
  }
  bool known = false;
  for (const char* t : kValid) known |= SignedPart(token) == SignedPart(t);
  FUZZ_CHECK(known, "a token not signed with the JWKS keys verified: " + token.substr(0, 200));
  FUZZ_CHECK(claims->subject == "pyjwt-user", "claims of a verified token changed");
  return 0;
}
