// Base64 (RFC 4648): the standard alphabet, padded, via OpenSSL; and base64url without padding
// (RFC 4648 §5, as JOSE/JWT use it).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pilotlight {

std::string Base64Encode(std::string_view data);
// nullopt when `text` is not valid base64 (whitespace is not allowed).
std::optional<std::string> Base64Decode(std::string_view text);

// base64url ('-' and '_', no '=' padding).
std::string Base64UrlEncode(std::string_view data);
// nullopt unless `text` is canonical unpadded base64url: only [A-Za-z0-9_-], a length that is
// not 1 mod 4, and zero unused bits in the last character (so each byte string has exactly one
// accepted encoding).
std::optional<std::string> Base64UrlDecode(std::string_view text);

}  // namespace pilotlight
