#include "common/duration.h"

#include <cctype>
#include <charconv>

namespace pilotlight {

StatusOr<Duration> ParseDuration(std::string_view text) {
  auto bad = [&] {
    return InvalidArgumentError("'" + std::string(text) +
                                "' is not a duration; use a number with a unit, e.g. 500ms, 2s, 1m, 1h");
  };
  if (text == "0") return Duration::zero();
  if (text.empty()) return bad();
  Duration total{0};
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
    if (i == start) return bad();
    double value = 0;
    auto [p, ec] = std::from_chars(text.data() + start, text.data() + i, value);
    if (ec != std::errc() || p != text.data() + i || value < 0) return bad();
    size_t ustart = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(ustart, i - ustart);
    double ns;
    if (unit == "us")
      ns = 1e3;
    else if (unit == "ms")
      ns = 1e6;
    else if (unit == "s")
      ns = 1e9;
    else if (unit == "m")
      ns = 60e9;
    else if (unit == "h")
      ns = 3600e9;
    else
      return bad();
    double add = value * ns;
    if (add > 1e18) return bad();
    total += Duration(static_cast<int64_t>(add));
  }
  return total;
}

}  // namespace pilotlight
