// Clock: injectable time source. SystemClock for production, FakeClock (tests/fakes) for tests.
// Thread-safety: implementations must be safe to call from any thread.
#pragma once

#include <chrono>
#include <string>

namespace pilotlight {

using Duration = std::chrono::nanoseconds;
using TimePoint = std::chrono::steady_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  static Clock* Default();
};

inline double ToMillis(Duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
inline double ToSeconds(Duration d) { return std::chrono::duration<double>(d).count(); }

// Wall-clock time as RFC 3339 UTC with milliseconds ("2026-11-23T10:00:00.123Z").
std::string NowRfc3339();
// Milliseconds since the Unix epoch (wall clock), and their RFC 3339 form ("" for 0).
int64_t UnixMillis();
std::string Rfc3339(int64_t unix_ms);

}  // namespace pilotlight
