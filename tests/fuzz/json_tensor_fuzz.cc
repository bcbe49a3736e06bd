// Fuzzes the seeds' JSON tensor decoder (tensor/json_codec.h): the input is parsed with
// simdjson and the document (and, when it is an object, each member value, as named inputs
// arrive) is decoded against fixed specs. What decodes must have the spec's rank and fixed
// dimensions, a buffer of exactly element_count() elements within the limit, and must survive
// a round trip: EncodeJsonTensor, parse, decode again gives the same shape and bytes.
#include <cstdint>
#include <string>
#include <vector>

#include <simdjson.h>

#include "fuzz_check.h"
#include "tensor/json_codec.h"

namespace {

using pilotlight::tensor::DecodeJsonTensor;
using pilotlight::tensor::DecodeLimits;
using pilotlight::tensor::DType;
using pilotlight::tensor::EncodeJsonTensor;
using pilotlight::tensor::Tensor;
using pilotlight::tensor::TensorSpec;

const std::vector<TensorSpec>& Specs() {
  static const std::vector<TensorSpec> specs = {
      {"f", DType::kFloat32, {-1, 4}},
      {"i", DType::kInt64, {-1, 2}},
      {"b", DType::kBool, {2, 2}},
      {"u", DType::kUint8, {-1, -1, 3}},
  };
  return specs;
}

// Small enough that the limit is reachable from a few KB of input.
constexpr DecodeLimits kLimits{.max_elements = 4096};

void CheckDecoded(const Tensor& t, const TensorSpec& spec) {
  FUZZ_CHECK(t.dtype == spec.dtype, "dtype differs from the spec's");
  FUZZ_CHECK(t.shape.size() == spec.shape.size(), "rank differs from the spec's");
  int64_t count = 1;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    FUZZ_CHECK(t.shape[i] > 0, "empty or negative dimension decoded");
    if (spec.shape[i] >= 0) FUZZ_CHECK(t.shape[i] == spec.shape[i], "fixed dimension not enforced");
    count *= t.shape[i];
  }
  FUZZ_CHECK(count == t.element_count(), "element_count() disagrees with the shape");
  FUZZ_CHECK(count <= kLimits.max_elements, "element limit not enforced");
  FUZZ_CHECK(t.data.size() == static_cast<size_t>(count) * pilotlight::tensor::DTypeSize(t.dtype),
             "buffer size disagrees with the shape");
  if (t.dtype == DType::kBool) {
    for (uint8_t b : t.data) FUZZ_CHECK(b == 0 || b == 1, "bool element neither 0 nor 1");
  }
}

void RoundTrip(const Tensor& t, const TensorSpec& spec) {
  std::string json;
  EncodeJsonTensor(t, json);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  auto err = parser.parse(json).get(doc);
  FUZZ_CHECK(err == simdjson::SUCCESS, "EncodeJsonTensor wrote invalid JSON: " + json.substr(0, 200));
  auto again = DecodeJsonTensor(doc, spec, kLimits);
  FUZZ_CHECK(again.ok(), "re-decoding the encoded tensor failed: " + again.status().message());
  FUZZ_CHECK(again->shape == t.shape, "round trip changed the shape");
  if (t.dtype == DType::kFloat32) {
    // Compared as values: -0.0 is written "-0", which reads back as the integer 0.
    for (int64_t i = 0; i < t.element_count(); ++i) {
      FUZZ_CHECK(again->as<float>()[i] == t.as<float>()[i], "round trip changed float element " + std::to_string(i));
    }
  } else {
    FUZZ_CHECK(again->data == t.data, "round trip changed the data");
  }
}

void DecodeAll(simdjson::dom::element value) {
  for (const auto& spec : Specs()) {
    auto t = DecodeJsonTensor(value, spec, kLimits);
    if (!t.ok()) {
      FUZZ_CHECK(!t.status().message().empty(), "an error without a message");
      continue;
    }
    CheckDecoded(*t, spec);
    RoundTrip(*t, spec);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(reinterpret_cast<const char*>(data), size).get(doc) != simdjson::SUCCESS) return 0;
  DecodeAll(doc);
  simdjson::dom::object obj;
  if (doc.get_object().get(obj) == simdjson::SUCCESS) {
    for (auto field : obj) DecodeAll(field.value);
  }
  return 0;
}
