// Fuzzes the Open Inference Protocol v2 JSON request decoder (tensor/v2_codec.h): the whole
// input is the request body, with no Inference-Header-Content-Length. See v2_fuzz_common.h for
// the properties checked.
#include <cstdint>
#include <string_view>

#include "v2_fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pilotlight::fuzz::DecodeAndCheck(std::string_view(reinterpret_cast<const char*>(data), size), std::nullopt);
  return 0;
}
