#include "tensor/v2_codec.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include "common/logging.h"

namespace pilotlight::tensor::v2 {
namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

// Binary tensors are memcpy'd between the wire (little-endian) and Tensor::data (native).
static_assert(std::endian::native == std::endian::little, "the v2 binary tensor extension is little-endian");

constexpr std::pair<DType, std::string_view> kDatatypes[] = {
    {DType::kBool, "BOOL"},     {DType::kUint8, "UINT8"},  {DType::kUint16, "UINT16"}, {DType::kUint32, "UINT32"},
    {DType::kUint64, "UINT64"}, {DType::kInt8, "INT8"},    {DType::kInt16, "INT16"},   {DType::kInt32, "INT32"},
    {DType::kInt64, "INT64"},   {DType::kFloat32, "FP32"}, {DType::kFloat64, "FP64"},
};

// Valid v2 datatypes with no DType of ours: recognised so the refusal says "not supported"
// rather than "unknown".
constexpr std::string_view kUnsupportedDatatypes[] = {"FP16", "BF16", "BYTES"};

std::string SpecNames(const std::vector<TensorSpec>& specs) {
  std::string names;
  for (const auto& s : specs) names += (names.empty() ? "" : ", ") + s.name;
  return names.empty() ? "none" : names;
}

simdjson::dom::parser& ThreadParser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

// The root of `json`, parsed by this thread's parser (valid until its next parse).
StatusOr<element> ParseJson(std::string_view json, size_t max_depth) {
  simdjson::dom::parser& parser = ThreadParser();
  // simdjson counts the document itself as a level: its max_depth N admits N-1 nested arrays
  // and objects. A fresh parser would also allocate itself with simdjson's default on first
  // use, and callers may differ in max_depth, so the depth is set whenever it changes.
  size_t levels = max_depth < std::numeric_limits<size_t>::max() ? max_depth + 1 : max_depth;
  if (parser.max_depth() != levels) {
    size_t capacity = std::max(parser.capacity(), simdjson::dom::MINIMAL_DOCUMENT_CAPACITY);
    if (parser.allocate(capacity, levels) != simdjson::SUCCESS) {
      return ResourceExhaustedError(fmt::format("cannot allocate a JSON parser of depth {}", max_depth));
    }
  }
  element root;
  // realloc_if_needed: the body is a view without simdjson's padding, so the parser copies it.
  simdjson::error_code err = parser.parse(json.data(), json.size(), true).get(root);
  if (err == simdjson::DEPTH_ERROR) return InvalidArgumentError(fmt::format("JSON nesting deeper than {}", max_depth));
  if (err == simdjson::MEMALLOC) return ResourceExhaustedError("out of memory parsing the request JSON");
  if (err) {
    return InvalidArgumentError(fmt::format("the request body is not valid JSON: {}", simdjson::error_message(err)));
  }
  return root;
}

// The number of scalars under `v`, nested arrays flattened.
int64_t CountLeaves(element v) {
  if (v.type() != element_type::ARRAY) return 1;
  int64_t n = 0;
  array arr = v.get_array().value_unsafe();
  for (element child : arr) n += CountLeaves(child);
  return n;
}

// Decodes one entry of "inputs" into the tensor of its spec: the checks of json_codec's
// Decoder (value types, integer and float32 ranges, same messages) over v2's shape+data form.
class InputDecoder {
 public:
  InputDecoder(const TensorSpec& spec, const DecodeLimits& limits) : spec_(spec), limits_(limits) {}

  Status CheckDatatype(simdjson::simdjson_result<element> v) {
    std::string_view name;
    if (v.get_string().get(name) != simdjson::SUCCESS) {
      return InvalidArgumentError(fmt::format("input '{}' needs a \"datatype\" string (the model expects {})",
                                              spec_.name, DatatypeName(spec_.dtype)));
    }
    std::optional<DType> t = DatatypeFromName(name);
    if (!t) {
      if (std::find(std::begin(kUnsupportedDatatypes), std::end(kUnsupportedDatatypes), name) !=
          std::end(kUnsupportedDatatypes)) {
        return InvalidArgumentError(fmt::format("datatype {} is not supported by pilotlight (model input '{}' is {})",
                                                name, spec_.name, DatatypeName(spec_.dtype)));
      }
      return InvalidArgumentError(fmt::format("input '{}' has unknown datatype '{}' (the model expects {})", spec_.name,
                                              name, DatatypeName(spec_.dtype)));
    }
    if (*t != spec_.dtype) {
      return InvalidArgumentError(fmt::format("input '{}' has datatype {} but the model expects {}", spec_.name, name,
                                              DatatypeName(spec_.dtype)));
    }
    return OkStatus();
  }

  // Reads "shape" into shape_ and count_: rank and fixed dimensions as the spec says, and the
  // element count within the limit, all before anything is allocated.
  Status CheckShape(simdjson::simdjson_result<element> v) {
    array dims;
    if (v.get_array().get(dims) != simdjson::SUCCESS) {
      return InvalidArgumentError(fmt::format("input '{}' needs a \"shape\" array of integers (model shape {})",
                                              spec_.name, ShapeString(spec_.shape)));
    }
    size_t rank = spec_.shape.size();
    if (dims.size() != rank) {
      return InvalidArgumentError(fmt::format("input '{}' has rank {} but the model expects rank {} (shape {})",
                                              spec_.name, dims.size(), rank, ShapeString(spec_.shape)));
    }
    count_ = 1;
    size_t axis = 0;
    for (element d : dims) {
      if (d.type() == element_type::UINT64) {
        return InvalidArgumentError(
            fmt::format("input '{}' has more than {} elements (limit max_tensor_elements): dimension {} is {}",
                        spec_.name, limits_.max_elements, axis, d.get_uint64().value_unsafe()));
      }
      if (d.type() != element_type::INT64) {
        return InvalidArgumentError(fmt::format("input '{}' shape must hold integers; dimension {} is {}", spec_.name,
                                                axis, JsonTypeName(d.type())));
      }
      int64_t n = d.get_int64().value_unsafe();
      if (n < 0) {
        return InvalidArgumentError(fmt::format("input '{}' has a negative dimension {}: {}", spec_.name, axis, n));
      }
      if (spec_.shape[axis] >= 0 && n != spec_.shape[axis]) {
        return InvalidArgumentError(fmt::format("input '{}' dimension {} must be {} (shape {}), got {}", spec_.name,
                                                axis, spec_.shape[axis], ShapeString(spec_.shape), n));
      }
      // A single dimension past the limit is refused even when another is 0: nothing real
      // needs it, and it keeps absurd sizes away from the runtime.
      if (n > limits_.max_elements || __builtin_mul_overflow(count_, n, &count_) || count_ > limits_.max_elements) {
        return InvalidArgumentError(fmt::format("input '{}' has more than {} elements (limit max_tensor_elements)",
                                                spec_.name, limits_.max_elements));
      }
      shape_.push_back(n);
      ++axis;
    }
    return OkStatus();
  }

  // "data": flat or nested; nesting is flattened as Triton does, only the number of values
  // must match the shape.
  StatusOr<Tensor> FromJson(element data) {
    if (data.type() != element_type::ARRAY) {
      return InvalidArgumentError(
          fmt::format("input '{}' \"data\" must be an array, got {}", spec_.name, JsonTypeName(data.type())));
    }
    int64_t values = CountLeaves(data);
    if (values != count_) {
      return InvalidArgumentError(fmt::format("input '{}' has shape {} ({} elements) but \"data\" holds {} values",
                                              spec_.name, ShapeString(shape_), count_, values));
    }
    Tensor t = Allocate();
    dst_ = t.data.data();
    PL_RETURN_IF_ERROR(Walk(data));
    return t;
  }

  // `bytes` is already checked to be ByteSize() long.
  StatusOr<Tensor> FromBinary(std::string_view bytes) {
    Tensor t = Allocate();
    if (!bytes.empty()) std::memcpy(t.data.data(), bytes.data(), bytes.size());
    if (spec_.dtype == DType::kBool) {
      // Anything but 0/1 in a bool tensor is undefined behaviour for whoever reads it as bool.
      for (size_t i = 0; i < t.data.size(); ++i) {
        if (t.data[i] > 1) {
          return InvalidArgumentError(
              fmt::format("input '{}' is BOOL and its binary element {} is {}, not 0 or 1", spec_.name, i, t.data[i]));
        }
      }
    }
    return t;
  }

  // Bytes the binary form of this input must have; count_ * size fits: count_ <= max_elements.
  uint64_t ByteSize() const { return static_cast<uint64_t>(count_) * DTypeSize(spec_.dtype); }

  std::string BinarySizeMismatch(uint64_t binary_size) const {
    return fmt::format("input '{}' has shape {} ({} elements of {} bytes = {} bytes) but binary_data_size is {}",
                       spec_.name, ShapeString(shape_), count_, DTypeSize(spec_.dtype), ByteSize(), binary_size);
  }

 private:
  Tensor Allocate() const {
    Tensor t;
    t.dtype = spec_.dtype;
    t.shape = shape_;
    t.data.resize(static_cast<size_t>(ByteSize()));
    return t;
  }

  Status Walk(element v) {
    if (v.type() != element_type::ARRAY) return Store(v);
    array arr = v.get_array().value_unsafe();  // a copy: never iterate a temporary's value
    for (element child : arr) PL_RETURN_IF_ERROR(Walk(child));
    return OkStatus();
  }

  Status Store(element v) {
    PL_RETURN_IF_ERROR(StoreJsonScalar(v, spec_.dtype, dst_, spec_.name, index_, DatatypeName(spec_.dtype)));
    dst_ += DTypeSize(spec_.dtype);
    ++index_;
    return OkStatus();
  }

  const TensorSpec& spec_;
  const DecodeLimits& limits_;
  std::vector<int64_t> shape_;
  int64_t count_ = 0;
  uint8_t* dst_ = nullptr;
  int64_t index_ = 0;
};

class RequestDecoder {
 public:
  RequestDecoder(const std::vector<TensorSpec>& specs, const DecodeLimits& limits, std::string_view tail,
                 bool has_header)
      : specs_(specs), limits_(limits), tail_(tail), has_header_(has_header), slots_(specs.size()) {}

  StatusOr<InferRequest> Run(element root) {
    object top;
    if (root.get_object().get(top) != simdjson::SUCCESS) {
      return InvalidArgumentError(fmt::format("the request must be a JSON object, got {}", JsonTypeName(root.type())));
    }
    InferRequest req;
    element v;
    if (top.at_key("id").get(v) == simdjson::SUCCESS) {
      std::string_view id;
      if (v.get_string().get(id) != simdjson::SUCCESS) {
        return InvalidArgumentError(fmt::format("\"id\" must be a string, got {}", JsonTypeName(v.type())));
      }
      req.id = id;
    }
    if (top.at_key("parameters").get(v) == simdjson::SUCCESS) {
      object params;
      if (v.get_object().get(params) != simdjson::SUCCESS) {
        return InvalidArgumentError(fmt::format("\"parameters\" must be an object, got {}", JsonTypeName(v.type())));
      }
      req.parameters_json = simdjson::to_string(v);
      element b;
      if (params.at_key("binary_data_output").get(b) == simdjson::SUCCESS) {
        if (b.get_bool().get(req.binary_data_output) != simdjson::SUCCESS) {
          return InvalidArgumentError(
              fmt::format("parameters.binary_data_output must be true or false, got {}", JsonTypeName(b.type())));
        }
      }
    }
    array inputs;
    if (top.at_key("inputs").get(v) != simdjson::SUCCESS || v.get_array().get(inputs) != simdjson::SUCCESS) {
      return InvalidArgumentError(
          fmt::format("the request needs an \"inputs\" array (the model's inputs: {})", SpecNames(specs_)));
    }
    size_t position = 0;
    for (element in : inputs) PL_RETURN_IF_ERROR(DecodeInput(in, position++));
    std::string missing;
    for (size_t i = 0; i < specs_.size(); ++i) {
      if (!slots_[i]) missing += (missing.empty() ? "'" : ", '") + specs_[i].name + "'";
    }
    if (!missing.empty()) {
      return InvalidArgumentError(fmt::format("missing input {} (the model's inputs: {})", missing, SpecNames(specs_)));
    }
    if (used_ != tail_.size()) {
      return InvalidArgumentError(
          fmt::format("the request has {} bytes of binary data after the JSON that no input claims "
                      "(Inference-Header-Content-Length or binary_data_size is wrong)",
                      tail_.size() - used_));
    }
    req.inputs.reserve(specs_.size());
    for (size_t i = 0; i < specs_.size(); ++i) req.inputs.push_back({specs_[i].name, std::move(*slots_[i])});
    if (top.at_key("outputs").get(v) == simdjson::SUCCESS) {
      PL_ASSIGN_OR_RETURN(req.outputs, DecodeOutputs(v));
    }
    return req;
  }

 private:
  Status DecodeInput(element in, size_t position) {
    object obj;
    std::string_view name;
    element v;
    if (in.get_object().get(obj) != simdjson::SUCCESS) {
      return InvalidArgumentError(
          fmt::format("inputs[{}] must be an object, got {}", position, JsonTypeName(in.type())));
    }
    if (obj.at_key("name").get(v) != simdjson::SUCCESS || v.get_string().get(name) != simdjson::SUCCESS) {
      return InvalidArgumentError(fmt::format("inputs[{}] needs a \"name\" string", position));
    }
    auto it = std::find_if(specs_.begin(), specs_.end(), [&](const TensorSpec& s) { return s.name == name; });
    if (it == specs_.end()) {
      return InvalidArgumentError(fmt::format("unknown input '{}' (the model's inputs: {})", name, SpecNames(specs_)));
    }
    size_t slot = static_cast<size_t>(it - specs_.begin());
    if (slots_[slot]) return InvalidArgumentError(fmt::format("input '{}' is given twice", name));
    const TensorSpec& spec = *it;

    InputDecoder dec(spec, limits_);
    PL_RETURN_IF_ERROR(dec.CheckDatatype(obj.at_key("datatype")));
    PL_RETURN_IF_ERROR(dec.CheckShape(obj.at_key("shape")));

    std::optional<uint64_t> binary_size;
    element params;
    if (obj.at_key("parameters").get(params) == simdjson::SUCCESS) {
      PL_ASSIGN_OR_RETURN(binary_size, BinaryDataSize(params, spec.name));
    }
    element data;
    bool has_data = obj.at_key("data").get(data) == simdjson::SUCCESS;
    if (has_data && binary_size) {
      return InvalidArgumentError(
          fmt::format("input '{}' has both \"data\" and parameters.binary_data_size; send one", spec.name));
    }
    if (has_data) {
      PL_ASSIGN_OR_RETURN(slots_[slot], dec.FromJson(data));
      return OkStatus();
    }
    if (!binary_size) {
      return InvalidArgumentError(
          fmt::format("input '{}' has neither \"data\" nor parameters.binary_data_size", spec.name));
    }
    if (!has_header_) {
      return InvalidArgumentError(
          fmt::format("input '{}' has binary_data_size {} but the request has no Inference-Header-Content-Length "
                      "header saying where its JSON ends",
                      spec.name, *binary_size));
    }
    if (*binary_size != dec.ByteSize()) {
      return InvalidArgumentError(dec.BinarySizeMismatch(*binary_size));
    }
    size_t left = tail_.size() - used_;
    if (*binary_size > left) {
      return InvalidArgumentError(fmt::format(
          "input '{}' needs {} bytes of binary data but only {} remain after the JSON", spec.name, *binary_size, left));
    }
    PL_ASSIGN_OR_RETURN(slots_[slot], dec.FromBinary(tail_.substr(used_, *binary_size)));
    used_ += *binary_size;
    return OkStatus();
  }

  // parameters.binary_data_size, nullopt when absent.
  static StatusOr<std::optional<uint64_t>> BinaryDataSize(element params, std::string_view input) {
    object obj;
    if (params.get_object().get(obj) != simdjson::SUCCESS) {
      return InvalidArgumentError(
          fmt::format("input '{}' \"parameters\" must be an object, got {}", input, JsonTypeName(params.type())));
    }
    element v;
    if (obj.at_key("shared_memory_region").get(v) == simdjson::SUCCESS) {
      return InvalidArgumentError(
          fmt::format("input '{}' uses shared memory, which pilotlight does not support", input));
    }
    if (obj.at_key("binary_data_size").get(v) != simdjson::SUCCESS) return std::optional<uint64_t>();
    if (v.type() == element_type::UINT64) return std::optional<uint64_t>(v.get_uint64().value_unsafe());
    if (v.type() != element_type::INT64 || v.get_int64().value_unsafe() < 0) {
      return InvalidArgumentError(fmt::format(
          "input '{}' parameters.binary_data_size must be a non-negative integer, got {}", input,
          v.type() == element_type::INT64 ? std::to_string(v.get_int64().value_unsafe()) : JsonTypeName(v.type())));
    }
    return std::optional<uint64_t>(static_cast<uint64_t>(v.get_int64().value_unsafe()));
  }

  // Output names are the gateway's to check against the model; this only reads the form.
  static StatusOr<std::vector<RequestedOutput>> DecodeOutputs(element v) {
    array arr;
    if (v.get_array().get(arr) != simdjson::SUCCESS) {
      return InvalidArgumentError(fmt::format("\"outputs\" must be an array, got {}", JsonTypeName(v.type())));
    }
    std::vector<RequestedOutput> out;
    size_t position = 0;
    for (element o : arr) {
      object obj;
      std::string_view name;
      element e;
      if (o.get_object().get(obj) != simdjson::SUCCESS || obj.at_key("name").get(e) != simdjson::SUCCESS ||
          e.get_string().get(name) != simdjson::SUCCESS) {
        return InvalidArgumentError(fmt::format("outputs[{}] must be an object with a \"name\" string", position));
      }
      RequestedOutput r{std::string(name), std::nullopt};
      if (obj.at_key("parameters").get(e) == simdjson::SUCCESS) {
        object params;
        if (e.get_object().get(params) != simdjson::SUCCESS) {
          return InvalidArgumentError(
              fmt::format("output '{}' \"parameters\" must be an object, got {}", name, JsonTypeName(e.type())));
        }
        element b;
        if (params.at_key("binary_data").get(b) == simdjson::SUCCESS) {
          bool binary;
          if (b.get_bool().get(binary) != simdjson::SUCCESS) {
            return InvalidArgumentError(fmt::format("output '{}' parameters.binary_data must be true or false, got {}",
                                                    name, JsonTypeName(b.type())));
          }
          r.binary = binary;
        }
      }
      out.push_back(std::move(r));
      ++position;
    }
    return out;
  }

  const std::vector<TensorSpec>& specs_;
  const DecodeLimits& limits_;
  std::string_view tail_;
  bool has_header_;
  size_t used_ = 0;                           // bytes of tail_ taken by earlier inputs
  std::vector<std::optional<Tensor>> slots_;  // by spec index
};

template <typename T>
void AppendFlat(const Tensor& t, std::string& out) {
  // Counted from the buffer, not the shape, so a tensor whose shape disagrees with its data
  // can never make us read past it.
  size_t n = t.data.size() / sizeof(T);
  out.reserve(out.size() + n * 12);
  for (size_t i = 0; i < n; ++i) {
    if (i) out += ',';
    T x;
    std::memcpy(&x, t.data.data() + i * sizeof(T), sizeof(T));
    if constexpr (std::is_same_v<T, bool>)
      out += x ? "true" : "false";
    else if constexpr (sizeof(T) == 1)
      AppendJsonNumber(static_cast<int>(x), out);
    else
      AppendJsonNumber(x, out);
  }
}

void AppendData(const Tensor& t, std::string& out) {
  switch (t.dtype) {
    case DType::kFloat32:
      return AppendFlat<float>(t, out);
    case DType::kFloat64:
      return AppendFlat<double>(t, out);
    case DType::kInt8:
      return AppendFlat<int8_t>(t, out);
    case DType::kUint8:
      return AppendFlat<uint8_t>(t, out);
    case DType::kInt16:
      return AppendFlat<int16_t>(t, out);
    case DType::kUint16:
      return AppendFlat<uint16_t>(t, out);
    case DType::kInt32:
      return AppendFlat<int32_t>(t, out);
    case DType::kUint32:
      return AppendFlat<uint32_t>(t, out);
    case DType::kInt64:
      return AppendFlat<int64_t>(t, out);
    case DType::kUint64:
      return AppendFlat<uint64_t>(t, out);
    case DType::kBool: {
      // Bytes, not bool: a byte other than 0/1 read as bool is undefined behaviour.
      for (size_t i = 0; i < t.data.size(); ++i) {
        if (i) out += ',';
        out += t.data[i] ? "true" : "false";
      }
      return;
    }
  }
}

}  // namespace

std::string_view DatatypeName(DType t) {
  for (const auto& [dtype, name] : kDatatypes) {
    if (dtype == t) return name;
  }
  return "UNKNOWN";
}

std::optional<DType> DatatypeFromName(std::string_view name) {
  for (const auto& [dtype, n] : kDatatypes) {
    if (n == name) return dtype;
  }
  return std::nullopt;
}

StatusOr<InferRequest> DecodeInferRequest(std::string_view body, std::optional<size_t> json_length,
                                          const std::vector<TensorSpec>& specs, const DecodeLimits& limits,
                                          size_t max_depth) {
  std::string_view json = body;
  std::string_view tail;
  if (json_length) {
    if (*json_length > body.size()) {
      return InvalidArgumentError(fmt::format("Inference-Header-Content-Length is {} but the body has only {} bytes",
                                              *json_length, body.size()));
    }
    json = body.substr(0, *json_length);
    tail = body.substr(*json_length);
  }
  PL_ASSIGN_OR_RETURN(element root, ParseJson(json, max_depth));
  return RequestDecoder(specs, limits, tail, json_length.has_value()).Run(root);
}

std::string EncodeInferResponse(const ResponseMeta& meta, const std::vector<NamedTensor>& outputs,
                                const std::vector<RequestedOutput>& requested, bool binary_default,
                                std::optional<size_t>* json_length) {
  std::string out = "{\"model_name\":\"" + JsonEscape(meta.model_name) + "\",\"model_version\":\"" +
                    JsonEscape(meta.model_version) + "\"";
  if (!meta.id.empty()) out += ",\"id\":\"" + JsonEscape(meta.id) + "\"";
  out += ",\"outputs\":[";
  std::vector<const Tensor*> binary;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const NamedTensor& o = outputs[i];
    bool as_binary = binary_default;
    auto r =
        std::find_if(requested.begin(), requested.end(), [&](const RequestedOutput& q) { return q.name == o.name; });
    if (r != requested.end() && r->binary) as_binary = *r->binary;
    if (i) out += ',';
    out += "{\"name\":\"" + JsonEscape(o.name) + "\",\"datatype\":\"";
    out += DatatypeName(o.tensor.dtype);
    out += "\",\"shape\":[";
    for (size_t d = 0; d < o.tensor.shape.size(); ++d) {
      if (d) out += ',';
      AppendJsonNumber(o.tensor.shape[d], out);
    }
    out += ']';
    if (as_binary) {
      out += ",\"parameters\":{\"binary_data_size\":";
      AppendJsonNumber(o.tensor.data.size(), out);
      out += "}}";
      binary.push_back(&o.tensor);
    } else {
      out += ",\"data\":[";
      AppendData(o.tensor, out);
      out += "]}";
    }
  }
  out += "]}";
  std::optional<size_t> length;
  if (!binary.empty()) {
    length = out.size();
    size_t total = out.size();
    for (const Tensor* t : binary) total += t->data.size();
    out.reserve(total);
    for (const Tensor* t : binary) out.append(reinterpret_cast<const char*>(t->data.data()), t->data.size());
  }
  if (json_length) *json_length = length;
  return out;
}

}  // namespace pilotlight::tensor::v2
