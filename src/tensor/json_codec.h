// The seeds' JSON tensor format: nested arrays, batch dimension first.
//
// Decode walks a simdjson DOM value into a Tensor of the spec's dtype, checking on the way:
// a rectangular (non-ragged) nesting of the spec's rank, every fixed dimension, the element
// limit (checked before allocating), and each value's type: JSON integers feed int and float
// inputs, any JSON number feeds float inputs, true/false feed bool inputs, anything else is
// InvalidArgument naming the input and the position. Integers out of the dtype's range are
// refused, never wrapped.
//
// Encode appends a tensor as nested JSON arrays; non-finite floats become null.
// Stateless functions; safe from any thread.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include <simdjson.h>

#include "tensor/tensor.h"

namespace pilotlight::tensor {

struct DecodeLimits {
  int64_t max_elements = 16 * 1024 * 1024;  // per input tensor
};

StatusOr<Tensor> DecodeJsonTensor(simdjson::dom::element value, const TensorSpec& spec, const DecodeLimits& limits);

void EncodeJsonTensor(const Tensor& t, std::string& out);

// Shared by the JSON codecs (seeds' and v2): one JSON scalar stored as an element of `dtype` at
// `dst` — numbers for floats (float32 range-checked), integers for int types (range-checked,
// never wrapped), true/false for bool. Errors name `input`, the element `index` and the dtype as
// `dtype_name` (ONNX's "float32" or v2's "FP32").
Status StoreJsonScalar(simdjson::dom::element v, DType dtype, uint8_t* dst, std::string_view input, int64_t index,
                       std::string_view dtype_name);
// Appends one number in its shortest round-trip form (so v1 and v2 print the same values);
// non-finite floats become null.
template <typename T>
void AppendJsonNumber(T v, std::string& out) {
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(v)) {
      out += "null";
      return;
    }
  }
  char buf[32];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out.append(buf, p);
}
// "an integer", "a string", ... for messages.
std::string JsonTypeName(simdjson::dom::element_type t);

}  // namespace pilotlight::tensor
