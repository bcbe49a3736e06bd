// Base64 (RFC 4648, standard alphabet, padded) via OpenSSL.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pilotlight {

std::string Base64Encode(std::string_view data);
// nullopt when `text` is not valid base64 (whitespace is not allowed).
std::optional<std::string> Base64Decode(std::string_view text);

}  // namespace pilotlight
