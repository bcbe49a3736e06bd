// Tokens signed by a JWT library we did not write (PyJWT), with their JWKS: the interop fixture
// of tests/auth/jwt_test.cc and the seeds and oracle of tests/fuzz/jwt_fuzz.cc.
#pragma once

namespace pilotlight::testdata {

// Signed by PyJWT 2.6.0 (python3-jwt, Debian 12) with keys made by python3-cryptography; exp is
// 2100-01-01. Claims: sub pyjwt-user, iss https://issuer.example, aud [other, pilotlight].
// Generated once with /usr/bin/python3; PyJWT itself verified each token against this JWKS.
constexpr const char* kPyJwks =
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
constexpr const char* kPyRs256 =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InB5LXJzYSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJweWp3dC11c2VyIiwiaXNzIjoiaHR"
    "0cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsImF1ZCI6WyJvdGhlciIsInBpbG90bGlnaHQiXSwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQ"
    "iOjE3MDAwMDAwMDAsInNjb3BlIjoiaW52b2tlIn0.aY90_b9TCD9a6EW121YYk-p2nZw11DKvzF1g_TjzvdS8UvR7V_tFAp7"
    "cwfcWhNb2oWGm92ct9XZO9ydX_gqn0Ah-320HnBfKVW1k8OwcPN3K7hgj78sO6CdHDfU8xCnNrtW704QyWnqaz2OJzGH2GNM"
    "-vx9NXHJxkBpBIFLgLo_wQih5rTp6EC1TzAwPV16F64u4OhZhkg0wRAsWsJSaazVvEa2Bmj0CZlexydrjkb5foqZEdYZLZrh"
    "e6UnEnHzJnL4UrrSSu7kmw3DuBFFcac08y_jLaK1xVwAgBlEmBqHjLJuxpiUmlGWYQJXYt8wwBq3QbSgXGaTfsPiF5O-uBg";
constexpr const char* kPyEs256 =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6InB5LWVjIiwidHlwIjoiSldUIn0.eyJzdWIiOiJweWp3dC11c2VyIiwiaXNzIjoiaHR0"
    "cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsImF1ZCI6WyJvdGhlciIsInBpbG90bGlnaHQiXSwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQi"
    "OjE3MDAwMDAwMDAsInNjb3BlIjoiaW52b2tlIn0.Dm13uE8jJ9-KpUDs50qXzbamMzQL_xpy-2svz2UkEiZAVcXgYKjcypiy"
    "QvoXX0WzdmJqdw72ZfF1qYsBIDdJSA";
constexpr const char* kPyHs256 =
    "eyJhbGciOiJIUzI1NiIsImtpZCI6InB5LWhzIiwidHlwIjoiSldUIn0.eyJzdWIiOiJweWp3dC11c2VyIiwiaXNzIjoiaHR0"
    "cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsImF1ZCI6WyJvdGhlciIsInBpbG90bGlnaHQiXSwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQi"
    "OjE3MDAwMDAwMDAsInNjb3BlIjoiaW52b2tlIn0.mP1sBMs0ZupYZM5taKGNsnZUTRP3OZdBi2IL7zV7PC8";

}  // namespace pilotlight::testdata
