// Shared by v2_json_fuzz.cc and v2_binary_fuzz.cc: decodes one Open Inference Protocol v2
// request body against a few fixed spec sets and checks what decodes.
//
// Properties: a decoded request has one tensor per spec, in spec order, with the spec's dtype,
// rank and fixed dimensions, at most limits.max_elements elements and a buffer of exactly that
// many; and the response encoder's output is a decodable request again (its "outputs" renamed
// "inputs") holding the same tensors, whether the outputs went as JSON or binary.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "tensor/v2_codec.h"

namespace pilotlight::fuzz {

using tensor::DecodeLimits;
using tensor::DType;
using tensor::NamedTensor;
using tensor::Tensor;
using tensor::TensorSpec;

inline const std::vector<std::vector<TensorSpec>>& V2SpecSets() {
  static const std::vector<std::vector<TensorSpec>> sets = {
      {{"f", DType::kFloat32, {-1, 4}}},
      {{"i", DType::kInt64, {-1, 2}}},
      {{"b", DType::kBool, {2, 2}}},
      {{"u", DType::kUint8, {-1, -1, 3}}},
      {{"f", DType::kFloat32, {-1, 4}}, {"i", DType::kInt64, {-1, 2}}},
  };
  return sets;
}

inline constexpr DecodeLimits kV2Limits{.max_elements = 4096};
inline constexpr size_t kV2MaxDepth = 16;

inline bool HasNonFinite(const Tensor& t) {
  if (t.dtype != DType::kFloat32) return false;
  for (int64_t i = 0; i < t.element_count(); ++i) {
    if (!std::isfinite(t.as<float>()[i])) return true;
  }
  return false;
}

// Same values: floats by value (-0 and 0 are equal; JSON writes -0 as the integer "-0") or
// bitwise (NaN through the binary path); bools by truth.
inline bool SameTensor(const Tensor& a, const Tensor& b) {
  if (a.dtype != b.dtype || a.shape != b.shape || a.data.size() != b.data.size()) return false;
  if (a.dtype == DType::kFloat32) {
    for (int64_t i = 0; i < a.element_count(); ++i) {
      float x = a.as<float>()[i], y = b.as<float>()[i];
      if (!(x == y) && std::memcmp(&x, &y, sizeof x) != 0) return false;
    }
    return true;
  }
  if (a.dtype == DType::kBool) {
    for (size_t i = 0; i < a.data.size(); ++i) {
      if ((a.data[i] != 0) != (b.data[i] != 0)) return false;
    }
    return true;
  }
  return a.data == b.data;
}

inline void CheckRequest(const tensor::v2::InferRequest& req, const std::vector<TensorSpec>& specs) {
  FUZZ_CHECK(req.inputs.size() == specs.size(), "decoded a request without every input");
  for (size_t k = 0; k < specs.size(); ++k) {
    const TensorSpec& spec = specs[k];
    const NamedTensor& in = req.inputs[k];
    FUZZ_CHECK(in.name == spec.name, "inputs not in spec order");
    FUZZ_CHECK(in.tensor.dtype == spec.dtype, "dtype differs from the spec's");
    FUZZ_CHECK(in.tensor.shape.size() == spec.shape.size(), "rank differs from the spec's");
    int64_t count = 1;
    for (size_t d = 0; d < spec.shape.size(); ++d) {
      FUZZ_CHECK(in.tensor.shape[d] >= 0, "negative dimension decoded");
      if (spec.shape[d] >= 0) FUZZ_CHECK(in.tensor.shape[d] == spec.shape[d], "fixed dimension not enforced");
      count *= in.tensor.shape[d];
    }
    FUZZ_CHECK(count <= kV2Limits.max_elements, "element limit not enforced");
    FUZZ_CHECK(in.tensor.data.size() == static_cast<size_t>(count) * tensor::DTypeSize(spec.dtype),
               "buffer size disagrees with the shape");
  }
}

// Encodes the decoded inputs as a response (as JSON or binary, as the request asked), turns it
// back into a request and decodes that.
inline void RoundTrip(const tensor::v2::InferRequest& req, const std::vector<TensorSpec>& specs) {
  std::optional<size_t> json_length;
  tensor::v2::ResponseMeta meta{"fuzz", "1", req.id};
  std::string body =
      tensor::v2::EncodeInferResponse(meta, req.inputs, req.outputs, req.binary_data_output, &json_length);
  if (json_length) FUZZ_CHECK(*json_length <= body.size(), "json_length past the end of the response");
  size_t at = body.find("\"outputs\":");
  FUZZ_CHECK(at != std::string::npos && (!json_length || at < *json_length), "response without \"outputs\"");
  body.replace(at, 10, "\"inputs\":");
  if (json_length) --*json_length;
  auto again = tensor::v2::DecodeInferRequest(body, json_length, specs, kV2Limits, kV2MaxDepth);
  if (!again.ok()) {
    // Non-finite floats are written as null in JSON, which is not a number on the way back.
    bool non_finite = false;
    for (const auto& in : req.inputs) non_finite |= HasNonFinite(in.tensor);
    FUZZ_CHECK(non_finite, "the encoded response does not decode: " + again.status().message() + "\n" +
                               body.substr(0, json_length.value_or(body.size())));
    return;
  }
  FUZZ_CHECK(again->id == req.id, "round trip changed the id");
  for (size_t k = 0; k < specs.size(); ++k) {
    FUZZ_CHECK(SameTensor(again->inputs[k].tensor, req.inputs[k].tensor),
               "round trip changed input '" + specs[k].name + "'");
  }
}

inline void DecodeAndCheck(std::string_view body, std::optional<size_t> json_length) {
  for (const auto& specs : V2SpecSets()) {
    auto req = tensor::v2::DecodeInferRequest(body, json_length, specs, kV2Limits, kV2MaxDepth);
    if (!req.ok()) {
      FUZZ_CHECK(!req.status().message().empty(), "an error without a message");
      FUZZ_CHECK(req.status().code() == StatusCode::kInvalidArgument || req.status().code() == StatusCode::kOutOfRange,
                 "unexpected error code: " + req.status().ToString());
      continue;
    }
    CheckRequest(*req, specs);
    RoundTrip(*req, specs);
  }
}

}  // namespace pilotlight::fuzz
