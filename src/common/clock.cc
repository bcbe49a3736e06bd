#include "common/clock.h"

#include <ctime>

#include <fmt/format.h>

namespace pilotlight {

Clock* SystemClock::Default() {
  static SystemClock clock;
  return &clock;
}

int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Rfc3339(int64_t unix_ms) {
  if (unix_ms <= 0) return "";
  std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, unix_ms % 1000);
}

std::string NowRfc3339() { return Rfc3339(UnixMillis()); }

}  // namespace pilotlight
