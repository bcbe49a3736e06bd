// Parsing and printing of human durations: "250ms", "2s", "1m", "1h30m", "0s".
#pragma once

#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"

namespace pilotlight {

// Accepts a sequence of <number><unit> with unit in {us, ms, s, m, h}; a bare "0" is zero.
// InvalidArgument with a message naming the expected form otherwise.
StatusOr<Duration> ParseDuration(std::string_view text);

}  // namespace pilotlight
