#include "tensor/tensor.h"

#include <algorithm>

#include <fmt/format.h>

namespace pilotlight::tensor {

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kInt8:
      return "int8";
    case DType::kUint8:
      return "uint8";
    case DType::kInt16:
      return "int16";
    case DType::kUint16:
      return "uint16";
    case DType::kInt32:
      return "int32";
    case DType::kUint32:
      return "uint32";
    case DType::kInt64:
      return "int64";
    case DType::kUint64:
      return "uint64";
    case DType::kBool:
      return "bool";
  }
  return "unknown";
}

std::optional<DType> DTypeFromName(std::string_view n) {
  for (DType t : {DType::kFloat32, DType::kFloat64, DType::kInt8, DType::kUint8, DType::kInt16, DType::kUint16,
                  DType::kInt32, DType::kUint32, DType::kInt64, DType::kUint64, DType::kBool}) {
    if (DTypeName(t) == n) return t;
  }
  return std::nullopt;
}

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kBool:
    case DType::kInt8:
    case DType::kUint8:
      return 1;
    case DType::kInt16:
    case DType::kUint16:
      return 2;
    case DType::kFloat32:
    case DType::kInt32:
    case DType::kUint32:
      return 4;
    case DType::kFloat64:
    case DType::kInt64:
    case DType::kUint64:
      return 8;
  }
  return 1;
}

bool IsFloat(DType t) { return t == DType::kFloat32 || t == DType::kFloat64; }

int64_t Tensor::element_count() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += shape[i] < 0 ? std::string("?") : std::to_string(shape[i]);
  }
  return s + "]";
}

Status CheckSymbolicDims(const std::vector<TensorSpec>& specs, const std::vector<NamedTensor>& inputs) {
  struct Seen {
    int64_t size;
    const std::string* input;
  };
  std::vector<std::pair<std::string, Seen>> seen;
  for (const auto& in : inputs) {
    auto spec = std::find_if(specs.begin(), specs.end(), [&](const auto& s) { return s.name == in.name; });
    if (spec == specs.end()) continue;
    for (size_t d = 0; d < spec->dim_params.size() && d < in.tensor.shape.size(); ++d) {
      const std::string& p = spec->dim_params[d];
      if (p.empty()) continue;
      auto it = std::find_if(seen.begin(), seen.end(), [&](const auto& e) { return e.first == p; });
      if (it == seen.end()) {
        seen.push_back({p, {in.tensor.shape[d], &in.name}});
      } else if (it->second.size != in.tensor.shape[d]) {
        return InvalidArgumentError(
            fmt::format("inputs '{}' and '{}' must agree on dimension '{}' (the model names it so), got {} and {}",
                        *it->second.input, in.name, p, it->second.size, in.tensor.shape[d]));
      }
    }
  }
  return OkStatus();
}

}  // namespace pilotlight::tensor
