// Fuzzes the configuration parser (config/config.h): the input is a pilotlight.yaml. Parse
// errors must be InvalidArgument with a message (yaml-cpp's exceptions caught at the edge);
// a parsed config is then run through Validate, whose errors must carry a message too.
#include <cstdint>
#include <string>

#include "config/config.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string yaml(reinterpret_cast<const char*>(data), size);
  auto cfg = pilotlight::config::ParseConfig(yaml, "fuzz");
  if (!cfg.ok()) {
    FUZZ_CHECK(cfg.status().code() == pilotlight::StatusCode::kInvalidArgument,
               "ParseConfig failed with " + cfg.status().ToString());
    FUZZ_CHECK(!cfg.status().message().empty(), "an error without a message");
    return 0;
  }
  FUZZ_CHECK(cfg->source == "fuzz", "the config does not name its source");
  pilotlight::Status st = pilotlight::config::Validate(*cfg);
  if (!st.ok()) FUZZ_CHECK(!st.message().empty(), "a Validate error without a message");
  return 0;
}
