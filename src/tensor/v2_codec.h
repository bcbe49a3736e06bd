// Open Inference Protocol v2 (KServe / Triton REST) tensor codec.
//
// Request body: {"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "parameters"?,
// "data"?}], "outputs"?: [{"name", "parameters"?: {"binary_data": bool}}]}. With the binary
// tensor extension the body is that JSON followed by the raw tensor bytes, the JSON's length in
// the `Inference-Header-Content-Length` header, and an input carrying
// "parameters": {"binary_data_size": N} takes its next N bytes (row-major, little-endian) from
// the tail, in input order, instead of "data".
//
// Decoding is checked against the model's input specs: every input named and known, no input
// twice, datatype equal to the spec's dtype, rank and every fixed dimension, no negative
// dimension, the element count computed without overflow and at most limits.max_elements
// (checked before allocating), "data" (flat or nested, row-major) holding exactly that many
// values of the right JSON type (integers range-checked, never wrapped; booleans for BOOL),
// binary sizes exact and the tail fully used. Every failure is InvalidArgument (the element
// limit too, as in json_codec) with a message naming the input; a body nested deeper than
// `max_depth` is InvalidArgument "JSON nesting deeper than N"; only the parser running out of
// memory is ResourceExhausted.
//
// Datatypes: BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP32, FP64 map
// to our DTypes; FP16 and BYTES are recognised and refused as unsupported.
//
// Stateless functions; safe from any thread (JSON parsing uses a thread-local parser whose
// nesting depth is capped at `max_depth`).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/json_codec.h"
#include "tensor/tensor.h"

namespace pilotlight::tensor::v2 {

// "FP32", "INT64", "BOOL", ...
std::string_view DatatypeName(DType t);
std::optional<DType> DatatypeFromName(std::string_view name);

struct RequestedOutput {
  std::string name;
  std::optional<bool> binary;  // parameters.binary_data; unset: the request's default
};

struct InferRequest {
  std::string id;                        // echoed in the response ("" when absent)
  std::string parameters_json;           // the request's "parameters" object as JSON, "" when absent
  std::vector<NamedTensor> inputs;       // in the order of `specs`
  std::vector<RequestedOutput> outputs;  // empty: every output of the model
  bool binary_data_output = false;       // parameters.binary_data_output: default for outputs
};

// `json_length`: the Inference-Header-Content-Length header, nullopt when absent (the whole body
// is JSON). A json_length larger than the body is InvalidArgument.
StatusOr<InferRequest> DecodeInferRequest(std::string_view body, std::optional<size_t> json_length,
                                          const std::vector<TensorSpec>& specs, const DecodeLimits& limits,
                                          size_t max_depth = 64);

struct ResponseMeta {
  std::string model_name;
  std::string model_version;
  std::string id;  // omitted from the JSON when empty
};

// The response body for `outputs` (already filtered and ordered by the caller). Outputs whose
// RequestedOutput::binary (or, unset or absent, `binary_default`) is true are written after the
// JSON with "parameters": {"binary_data_size": N}; then *json_length is set to the JSON's
// length (the caller sends it as Inference-Header-Content-Length with
// Content-Type: application/octet-stream). Otherwise *json_length is nullopt and "data" is a
// flat JSON array (non-finite floats as null).
std::string EncodeInferResponse(const ResponseMeta& meta, const std::vector<NamedTensor>& outputs,
                                const std::vector<RequestedOutput>& requested, bool binary_default,
                                std::optional<size_t>* json_length);

}  // namespace pilotlight::tensor::v2
