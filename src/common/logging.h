// Process-wide logging on spdlog: human text or one JSON object per line.
// Init once from main; afterwards Logger() is safe from any thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "common/status.h"

namespace pilotlight {

enum class LogFormat { kText, kJson };

struct LogOptions {
  LogFormat format = LogFormat::kText;
  std::string file;  // empty: stderr
  spdlog::level::level_enum level = spdlog::level::info;
};

Status InitLogging(const LogOptions& options);
spdlog::logger& Logger();

// One structured log line: a message plus key/value fields, printed as
// `message k=v k2="v 2"` in text mode and as one JSON object in JSON mode. Emitted on
// destruction. Use: LogLine(spdlog::level::info, "instance loaded").Str("function", f).Num("load_ms", ms);
class LogLine {
 public:
  LogLine(spdlog::level::level_enum level, std::string_view message);
  ~LogLine();
  LogLine& Str(std::string_view key, std::string_view value);
  LogLine& Num(std::string_view key, double value);
  LogLine& Int(std::string_view key, int64_t value);
  LogLine& Bool(std::string_view key, bool value);
  // A value that is already valid JSON (array/object) in JSON mode; printed as is in text mode.
  LogLine& Raw(std::string_view key, std::string_view json);

 private:
  void Key(std::string_view key);
  spdlog::level::level_enum level_;
  bool json_;
  bool enabled_;
  std::string out_;
};

// Escapes a string for inclusion inside a JSON string literal (no quotes added). Bytes that are
// not well-formed UTF-8 become \ufffd, so the result is always valid JSON text.
std::string JsonEscape(std::string_view s);

}  // namespace pilotlight
