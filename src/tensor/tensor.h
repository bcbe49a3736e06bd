// Tensor: a dense, row-major, owned buffer with a dtype and a shape; TensorSpec: the schema of
// one model input or output (-1 marks a dynamic dimension). Value types; not thread-safe to
// mutate concurrently, safe to read from many threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pilotlight::tensor {

enum class DType { kFloat32, kFloat64, kInt8, kUint8, kInt16, kUint16, kInt32, kUint32, kInt64, kUint64, kBool };

// Canonical names are ONNX's lower-case ones ("float32", "int64", "bool", ...).
std::string_view DTypeName(DType t);
std::optional<DType> DTypeFromName(std::string_view name);
size_t DTypeSize(DType t);
bool IsFloat(DType t);

struct TensorSpec {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;  // -1 = dynamic
  // ONNX dim_param per dimension ("" when none): dimensions sharing a name must be equal
  // across all inputs of one request (e.g. the batch dimension "N").
  std::vector<std::string> dim_params = {};
};

struct Tensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // element_count() * DTypeSize(dtype) bytes

  int64_t element_count() const;
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(data.data());
  }
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data.data());
  }
};

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

struct NamedTensor;
// InvalidArgument when two inputs give different sizes to the same named dimension.
Status CheckSymbolicDims(const std::vector<TensorSpec>& specs, const std::vector<NamedTensor>& inputs);

// "[1,64]" for logs and error messages.
std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace pilotlight::tensor
