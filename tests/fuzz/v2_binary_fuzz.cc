// Fuzzes the Open Inference Protocol v2 binary tensor extension (tensor/v2_codec.h): the first
// two input bytes (little-endian) are the Inference-Header-Content-Length, the rest is the body
// (that much JSON, then the raw tensor bytes). See v2_fuzz_common.h for the properties checked.
#include <cstdint>
#include <string_view>

#include "v2_fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  size_t json_length = static_cast<size_t>(data[0]) | static_cast<size_t>(data[1]) << 8;
  pilotlight::fuzz::DecodeAndCheck(std::string_view(reinterpret_cast<const char*>(data) + 2, size - 2), json_length);
  return 0;
}
