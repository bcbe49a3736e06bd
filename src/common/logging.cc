#include "common/logging.h"

#include <cstdio>
#include <iterator>

#include <fmt/format.h>

#include "common/clock.h"

#include <spdlog/async.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace pilotlight {
namespace {
LogFormat g_format = LogFormat::kText;
std::shared_ptr<spdlog::logger> g_logger;
}  // namespace

Status InitLogging(const LogOptions& options) {
  g_format = options.format;
  try {
    spdlog::sink_ptr sink;
    if (options.file.empty()) {
      static char buffer[1 << 16];
      std::setvbuf(stderr, buffer, _IOFBF, sizeof buffer);  // flushed by the logger, as above
      sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    } else {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.file);
    }
    // Synchronous into a stdio buffer: a line costs a format and a memcpy on the request's
    // thread; a hand-off to a logger thread cost more (queue, wake-ups, a second core).
    g_logger = std::make_shared<spdlog::logger>("pilotlight", sink);
    if (options.format == LogFormat::kJson) {
      // Callers pass a complete JSON object as the message in JSON mode.
      g_logger->set_pattern("%v");
    } else {
      g_logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
    }
    g_logger->set_level(options.level);
    // A write per line would cost a syscall per request: lines are buffered and flushed every
    // 1 s, warnings and errors at once, everything at shutdown.
    g_logger->flush_on(spdlog::level::warn);
    spdlog::flush_every(std::chrono::seconds(1));
    spdlog::set_default_logger(g_logger);
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("cannot open log output: ") + e.what());
  }
  return OkStatus();
}

spdlog::logger& Logger() {
  if (!g_logger) {
    g_logger = spdlog::stderr_logger_mt("pilotlight-default");
    g_logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  }
  return *g_logger;
}

namespace {
// Length of the well-formed UTF-8 sequence starting at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), 0 when it is not one.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  auto at = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
  auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) { return at(k) >= lo && at(k) <= hi; };
  unsigned c = at(0);
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c >= 0xE1 && c <= 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}
}  // namespace

std::string JsonEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Bytes from requests (paths, header values) reach error messages: JSON text must be UTF-8.
      size_t n = Utf8SequenceLength(s, i);
      if (n == 0) {
        out += "\\ufffd";
      } else {
        out.append(s.substr(i, n));
        i += n - 1;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

LogLine::LogLine(spdlog::level::level_enum level, std::string_view message)
    : level_(level), json_(g_format == LogFormat::kJson), enabled_(Logger().should_log(level)) {
  if (!enabled_) return;
  out_.reserve(512);  // a request line is ~300 bytes: one allocation instead of five
  if (json_) {
    out_ += "{\"ts\":\"" + NowRfc3339() + "\",\"level\":\"" +
            std::string(spdlog::level::to_string_view(level).data(), spdlog::level::to_string_view(level).size()) +
            "\",\"msg\":\"" + JsonEscape(message) + "\"";
  } else {
    out_.append(message);
  }
}

LogLine::~LogLine() {
  if (!enabled_) return;
  if (json_) out_ += '}';
  Logger().log(level_, "{}", out_);
}

void LogLine::Key(std::string_view key) {
  if (!enabled_) return;
  if (json_) {
    out_ += ",\"";
    out_ += key;
    out_ += "\":";
  } else {
    out_ += ' ';
    out_ += key;
    out_ += '=';
  }
}

LogLine& LogLine::Str(std::string_view key, std::string_view value) {
  if (!enabled_) return *this;
  Key(key);
  if (json_) {
    out_ += '"';
    out_ += JsonEscape(value);
    out_ += '"';
  } else if (value.empty() || value.find_first_of(" \"=") != std::string_view::npos) {
    out_ += '"';
    out_ += JsonEscape(value);
    out_ += '"';
  } else {
    out_ += value;
  }
  return *this;
}

LogLine& LogLine::Num(std::string_view key, double value) {
  if (!enabled_) return *this;
  Key(key);
  fmt::format_to(std::back_inserter(out_), "{:.3f}", value);
  return *this;
}

LogLine& LogLine::Int(std::string_view key, int64_t value) {
  if (!enabled_) return *this;
  Key(key);
  fmt::format_to(std::back_inserter(out_), "{}", value);
  return *this;
}

LogLine& LogLine::Bool(std::string_view key, bool value) {
  if (!enabled_) return *this;
  Key(key);
  out_ += value ? "true" : "false";
  return *this;
}

LogLine& LogLine::Raw(std::string_view key, std::string_view json) {
  if (!enabled_) return *this;
  Key(key);
  out_ += json;
  return *this;
}

}  // namespace pilotlight
