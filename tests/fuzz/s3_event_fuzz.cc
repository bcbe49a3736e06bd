// Fuzzes the S3 event notification parser (events/triggers.h ParseS3Notification): the input
// is the body of POST /v1/events/s3 (S3's document, SNS-wrapped, or MinIO's webhook). It must
// return the objects or InvalidArgument: never throw (an exception would leave the gateway on
// an HTTP I/O thread and end the process) or crash.
#include <cstdint>
#include <string_view>

#include "events/triggers.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto refs = pilotlight::events::ParseS3Notification(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!refs.ok()) {
    FUZZ_CHECK(refs.status().code() == pilotlight::StatusCode::kInvalidArgument,
               "ParseS3Notification failed with " + refs.status().ToString());
    return 0;
  }
  FUZZ_CHECK(refs->size() <= size, "more objects than input bytes");
  return 0;
}
