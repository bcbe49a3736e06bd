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
#include "auth/pyjwt_tokens.h"
#include "fuzz_check.h"

namespace {

constexpr const char* kJwks = pilotlight::testdata::kPyJwks;
constexpr const char* kValid[] = {pilotlight::testdata::kPyRs256, pilotlight::testdata::kPyEs256,
                                  pilotlight::testdata::kPyHs256};

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
