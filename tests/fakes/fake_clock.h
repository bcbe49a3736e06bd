// FakeClock: time moves only when a test says so.
#pragma once

#include <atomic>

#include "common/clock.h"

namespace pilotlight::testing {

class FakeClock final : public Clock {
 public:
  TimePoint Now() const override { return TimePoint(Duration(now_.load())); }
  void Advance(Duration d) { now_ += d.count(); }

 private:
  std::atomic<int64_t> now_{1'000'000'000};
};

}  // namespace pilotlight::testing
