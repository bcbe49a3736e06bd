#include "tensor/json_codec.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include <fmt/format.h>

namespace pilotlight::tensor {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

std::string TypeName(element_type t) {
  switch (t) {
    case element_type::ARRAY:
      return "an array";
    case element_type::OBJECT:
      return "an object";
    case element_type::INT64:
    case element_type::UINT64:
      return "an integer";
    case element_type::DOUBLE:
      return "a non-integer number";
    case element_type::STRING:
      return "a string";
    case element_type::BOOL:
      return "a boolean";
    case element_type::NULL_VALUE:
      return "null";
  }
  return "a value";
}

template <typename T>
bool StoreInt(element v, uint8_t* dst) {
  T out;
  if (v.type() == element_type::INT64) {
    int64_t x = v.get_int64().value_unsafe();
    if constexpr (std::is_unsigned_v<T>) {
      if (x < 0 || static_cast<uint64_t>(x) > std::numeric_limits<T>::max()) return false;
    } else {
      if (x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max()) return false;
    }
    out = static_cast<T>(x);
  } else {  // UINT64: only values above INT64_MAX arrive here
    uint64_t x = v.get_uint64().value_unsafe();
    if constexpr (!std::is_same_v<T, uint64_t>) return false;
    out = static_cast<T>(x);
  }
  std::memcpy(dst, &out, sizeof(T));
  return true;
}

// The least double that rounds to infinity as a float (FLT_MAX plus half an ulp): comparing with
// FLT_MAX itself would refuse 3.4028235e+38, the shortest form the encoders print FLT_MAX in.
constexpr double kFloatOverflow = 0x1.ffffffp+127;

class Decoder {
 public:
  Decoder(const TensorSpec& spec, const DecodeLimits& limits) : spec_(spec), limits_(limits) {}

  StatusOr<Tensor> Run(element root) {
    size_t rank = spec_.shape.size();
    if (rank == 0) {
      return InvalidArgumentError(fmt::format("input '{}' is a scalar; scalars are not supported", spec_.name));
    }
    // Infer the shape from the first element along each axis, then check everything against it.
    Tensor t;
    t.dtype = spec_.dtype;
    element cur = root;
    int64_t count = 1;
    for (size_t axis = 0; axis < rank; ++axis) {
      if (cur.type() != element_type::ARRAY) {
        if (axis == 0) {
          return InvalidArgumentError(fmt::format("input '{}' must be a nested array of rank {} (shape {}), got {}",
                                                  spec_.name, rank, ShapeString(spec_.shape), TypeName(cur.type())));
        }
        return InvalidArgumentError(fmt::format(
            "input '{}' has rank {} but the model expects rank {} (shape {}); a batch dimension is required, "
            "e.g. [[...]]",
            spec_.name, axis, rank, ShapeString(spec_.shape)));
      }
      simdjson::dom::array arr = cur.get_array().value_unsafe();
      int64_t n = static_cast<int64_t>(arr.size());
      if (spec_.shape[axis] >= 0 && n != spec_.shape[axis]) {
        return InvalidArgumentError(fmt::format("input '{}' dimension {} must be {} (shape {}), got {}", spec_.name,
                                                axis, spec_.shape[axis], ShapeString(spec_.shape), n));
      }
      if (n == 0) {
        return InvalidArgumentError(fmt::format("input '{}' has an empty dimension {}", spec_.name, axis));
      }
      if (__builtin_mul_overflow(count, n, &count) || count > limits_.max_elements) {
        return InvalidArgumentError(fmt::format("input '{}' has more than {} elements (limit max_tensor_elements)",
                                                spec_.name, limits_.max_elements));
      }
      t.shape.push_back(n);
      cur = *arr.begin();
    }
    // The shape came from the first element on each axis; prove the whole nesting has it
    // before allocating, or a 2 KB ragged body could make us allocate for 16M elements.
    PL_RETURN_IF_ERROR(CheckNesting(root, 0, t.shape));
    elem_size_ = DTypeSize(spec_.dtype);
    t.data.resize(static_cast<size_t>(count) * elem_size_);
    dst_ = t.data.data();
    PL_RETURN_IF_ERROR(Walk(root, 0, t.shape));
    return t;
  }

 private:
  // Arrays only: every array on every axis has the inferred length (leaves are checked by Walk).
  Status CheckNesting(element v, size_t axis, const std::vector<int64_t>& shape) {
    if (v.type() != element_type::ARRAY) {
      return InvalidArgumentError(
          fmt::format("input '{}' is ragged or too shallow at depth {}: expected an array "
                      "of {} elements, got {}",
                      spec_.name, axis, shape[axis], TypeName(v.type())));
    }
    simdjson::dom::array arr = v.get_array().value_unsafe();
    if (static_cast<int64_t>(arr.size()) != shape[axis]) {
      return InvalidArgumentError(
          fmt::format("input '{}' is ragged: dimension {} has {} elements here but {} in "
                      "the first row",
                      spec_.name, axis, arr.size(), shape[axis]));
    }
    if (axis + 1 < shape.size()) {
      for (element child : arr) PL_RETURN_IF_ERROR(CheckNesting(child, axis + 1, shape));
    }
    return OkStatus();
  }

  // Stores the leaves in row-major order; CheckNesting already proved every array's length.
  Status Walk(element v, size_t axis, const std::vector<int64_t>& shape) {
    if (axis == shape.size()) return Store(v);
    simdjson::dom::array arr = v.get_array().value_unsafe();  // a copy: never iterate a temporary's value
    for (element child : arr) PL_RETURN_IF_ERROR(Walk(child, axis + 1, shape));
    return OkStatus();
  }

  Status Store(element v) {
    PL_RETURN_IF_ERROR(StoreJsonScalar(v, spec_.dtype, dst_, spec_.name, index_, DTypeName(spec_.dtype)));
    dst_ += elem_size_;
    ++index_;
    return OkStatus();
  }

  const TensorSpec& spec_;
  const DecodeLimits& limits_;
  uint8_t* dst_ = nullptr;
  size_t elem_size_ = 1;
  int64_t index_ = 0;
};

template <typename T>
void EncodeTyped(const Tensor& t, std::string& out) {
  const T* data = t.as<T>();
  size_t rank = t.shape.size();
  if (rank == 0) {
    if constexpr (std::is_same_v<T, bool>)
      out += data[0] ? "true" : "false";
    else
      AppendJsonNumber(data[0], out);
    return;
  }
  int64_t total = t.element_count();
  if (total == 0) {
    for (size_t i = 0; i < rank; ++i) out += '[';
    for (size_t i = 0; i < rank; ++i) out += ']';
    return;
  }
  // An odometer over the indices: after each element, the number of trailing axes that wrap
  // is how many brackets close (and, before the next element, open). O(1) amortised per element.
  out.reserve(out.size() + static_cast<size_t>(total) * 12);
  std::vector<int64_t> idx(rank, 0);
  out.append(rank, '[');
  for (int64_t i = 0; i < total; ++i) {
    if constexpr (std::is_same_v<T, bool>)
      out += data[i] ? "true" : "false";
    else if constexpr (sizeof(T) == 1)
      AppendJsonNumber(static_cast<int>(data[i]), out);
    else
      AppendJsonNumber(data[i], out);
    size_t wraps = 0;
    for (size_t a = rank; a-- > 0;) {
      if (++idx[a] < t.shape[a]) break;
      idx[a] = 0;
      ++wraps;
    }
    out.append(wraps, ']');
    if (i + 1 < total) {
      out += ',';
      out.append(wraps, '[');
    }
  }
}

}  // namespace

std::string JsonTypeName(element_type t) { return TypeName(t); }

Status StoreJsonScalar(element v, DType dtype, uint8_t* dst, std::string_view input, int64_t index,
                       std::string_view dtype_name) {
  element_type type = v.type();
  bool ok = false;
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat64: {
      double d;
      if (type == element_type::DOUBLE)
        d = v.get_double().value_unsafe();
      else if (type == element_type::INT64)
        d = static_cast<double>(v.get_int64().value_unsafe());
      else if (type == element_type::UINT64)
        d = static_cast<double>(v.get_uint64().value_unsafe());
      else
        break;
      if (dtype == DType::kFloat32) {
        if (std::fabs(d) >= kFloatOverflow) {
          return InvalidArgumentError(fmt::format("input '{}' element {} is out of range for float32", input, index));
        }
        float f = static_cast<float>(d);
        std::memcpy(dst, &f, 4);
      } else {
        std::memcpy(dst, &d, 8);
      }
      ok = true;
      break;
    }
    case DType::kBool:
      if (type == element_type::BOOL) {
        *dst = v.get_bool().value_unsafe() ? 1 : 0;
        ok = true;
      }
      break;
    default:
      if (type == element_type::INT64 || type == element_type::UINT64) {
        switch (dtype) {
          case DType::kInt8:
            ok = StoreInt<int8_t>(v, dst);
            break;
          case DType::kUint8:
            ok = StoreInt<uint8_t>(v, dst);
            break;
          case DType::kInt16:
            ok = StoreInt<int16_t>(v, dst);
            break;
          case DType::kUint16:
            ok = StoreInt<uint16_t>(v, dst);
            break;
          case DType::kInt32:
            ok = StoreInt<int32_t>(v, dst);
            break;
          case DType::kUint32:
            ok = StoreInt<uint32_t>(v, dst);
            break;
          case DType::kInt64:
            ok = StoreInt<int64_t>(v, dst);
            break;
          case DType::kUint64:
            ok = StoreInt<uint64_t>(v, dst);
            break;
          default:
            break;
        }
        if (!ok) {
          return InvalidArgumentError(
              fmt::format("input '{}' element {} is out of range for {}", input, index, dtype_name));
        }
      }
      break;
  }
  if (!ok) {
    const char* want = dtype == DType::kBool ? "true/false" : IsFloat(dtype) ? "numbers" : "integers";
    return InvalidArgumentError(
        fmt::format("input '{}' is {} and takes {}; element {} is {}", input, dtype_name, want, index, TypeName(type)));
  }
  return OkStatus();
}

StatusOr<Tensor> DecodeJsonTensor(element value, const TensorSpec& spec, const DecodeLimits& limits) {
  return Decoder(spec, limits).Run(value);
}

void EncodeJsonTensor(const Tensor& t, std::string& out) {
  switch (t.dtype) {
    case DType::kFloat32:
      EncodeTyped<float>(t, out);
      break;
    case DType::kFloat64:
      EncodeTyped<double>(t, out);
      break;
    case DType::kInt8:
      EncodeTyped<int8_t>(t, out);
      break;
    case DType::kUint8:
      EncodeTyped<uint8_t>(t, out);
      break;
    case DType::kInt16:
      EncodeTyped<int16_t>(t, out);
      break;
    case DType::kUint16:
      EncodeTyped<uint16_t>(t, out);
      break;
    case DType::kInt32:
      EncodeTyped<int32_t>(t, out);
      break;
    case DType::kUint32:
      EncodeTyped<uint32_t>(t, out);
      break;
    case DType::kInt64:
      EncodeTyped<int64_t>(t, out);
      break;
    case DType::kUint64:
      EncodeTyped<uint64_t>(t, out);
      break;
    case DType::kBool:
      EncodeTyped<bool>(t, out);
      break;
  }
}

}  // namespace pilotlight::tensor
