// Request ids: 16 random bytes as 32 hex chars, cheap (thread-local PRNG seeded from the OS).
#pragma once

#include <string>
#include <string_view>

namespace pilotlight {

std::string NewRequestId();
// A client-supplied id is echoed only if it is 1..128 chars of [A-Za-z0-9._:-].
bool IsValidRequestId(std::string_view id);

}  // namespace pilotlight
