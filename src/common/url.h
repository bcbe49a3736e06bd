// URL component decoding.
#pragma once

#include <string>
#include <string_view>

namespace pilotlight {

// Decodes %XX escapes and '+' as a space (query strings, S3 notification keys). Malformed
// escapes are kept as they are.
std::string PercentDecode(std::string_view s);

}  // namespace pilotlight
