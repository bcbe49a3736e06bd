#include "tensor/v2_codec.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace pilotlight::tensor::v2 {
namespace {

StatusOr<InferRequest> Decode(std::string_view body, const std::vector<TensorSpec>& specs,
                              std::optional<size_t> json_length = std::nullopt, int64_t max_elements = 1 << 20,
                              size_t max_depth = 64) {
  return DecodeInferRequest(body, json_length, specs, DecodeLimits{max_elements}, max_depth);
}

// {"inputs":[{"name":..,"datatype":..,"shape":..,"data":..}]}
std::string OneInput(std::string_view name, std::string_view datatype, std::string_view shape, std::string_view data) {
  return fmt::format(R"({{"inputs":[{{"name":"{}","datatype":"{}","shape":{},"data":{}}}]}})", name, datatype, shape,
                     data);
}

// The same with the values in the binary tail; returns the body and sets *json_length.
std::string OneBinaryInput(std::string_view name, std::string_view datatype, std::string_view shape,
                           std::string_view bytes, size_t* json_length, std::optional<size_t> declared = {}) {
  std::string json =
      fmt::format(R"({{"inputs":[{{"name":"{}","datatype":"{}","shape":{},"parameters":{{"binary_data_size":{}}}}}]}})",
                  name, datatype, shape, declared.value_or(bytes.size()));
  *json_length = json.size();
  return json + std::string(bytes);
}

template <typename T>
std::string Bytes(std::initializer_list<T> values) {
  std::string out(values.size() * sizeof(T), '\0');
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

::testing::AssertionResult IsInvalid(const StatusOr<InferRequest>& r, std::string_view needle) {
  if (r.ok()) return ::testing::AssertionFailure() << "decoded, expected an error containing: " << needle;
  if (r.status().code() != StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "code is not InvalidArgument: " << r.status().ToString();
  }
  if (r.status().message().find(needle) == std::string::npos) {
    return ::testing::AssertionFailure() << "message '" << r.status().message() << "' lacks '" << needle << "'";
  }
  return ::testing::AssertionSuccess();
}

// The response's JSON part and binary tail.
struct Parsed {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::string_view tail;
};

void ParseResponse(const std::string& body, std::optional<size_t> json_length, Parsed& p) {
  size_t n = json_length.value_or(body.size());
  ASSERT_LE(n, body.size());
  ASSERT_EQ(p.parser.parse(body.data(), n, true).get(p.root), simdjson::SUCCESS) << body.substr(0, n);
  p.tail = std::string_view(body).substr(n);
}

// A response's "outputs" fed back as a request's "inputs" (the objects have the same form), with
// the response's binary tail as the request's.
StatusOr<InferRequest> DecodeResponseAsRequest(const std::string& response, std::optional<size_t> json_length,
                                               const std::vector<TensorSpec>& specs) {
  Parsed p;
  ParseResponse(response, json_length, p);
  std::string body = "{\"inputs\":" + simdjson::to_string(p.root["outputs"].value()) + "}";
  std::optional<size_t> length;
  if (json_length) length = body.size();
  body += p.tail;
  return Decode(body, specs, length);
}

struct DTypeCase {
  DType dtype;
  const char* datatype;
  const char* data;  // three values, flat
};

const DTypeCase kCases[] = {
    {DType::kFloat32, "FP32", "[1.5,-0.1,3.4028234663852886e38]"},
    {DType::kFloat64, "FP64", "[0.1,-1e+300,5e-324]"},
    {DType::kInt8, "INT8", "[-128,127,0]"},
    {DType::kUint8, "UINT8", "[0,255,7]"},
    {DType::kInt16, "INT16", "[-32768,32767,1]"},
    {DType::kUint16, "UINT16", "[0,65535,2]"},
    {DType::kInt32, "INT32", "[-2147483648,2147483647,3]"},
    {DType::kUint32, "UINT32", "[0,4294967295,4]"},
    {DType::kInt64, "INT64", "[-9223372036854775808,9223372036854775807,9007199254740993]"},
    {DType::kUint64, "UINT64", "[0,18446744073709551615,9223372036854775808]"},
    {DType::kBool, "BOOL", "[true,false,true]"},
};

TEST(V2Codec, DatatypeNames_MapEveryDTypeBothWays) {
  for (const auto& c : kCases) {
    EXPECT_EQ(DatatypeName(c.dtype), c.datatype);
    EXPECT_EQ(DatatypeFromName(c.datatype), c.dtype);
  }
  EXPECT_EQ(DatatypeFromName("FP16"), std::nullopt);
  EXPECT_EQ(DatatypeFromName("BYTES"), std::nullopt);
  EXPECT_EQ(DatatypeFromName("fp32"), std::nullopt);  // case-sensitive, as the protocol says
}

TEST(V2Codec, EveryDType_JsonRoundTrip_KeepsBytesAndPrintsTheSameText) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.datatype);
    std::vector<TensorSpec> specs = {{"x", c.dtype, {-1, 3}}};
    auto req = Decode(OneInput("x", c.datatype, "[1,3]", c.data), specs);
    ASSERT_TRUE(req.ok()) << req.status().ToString();
    ASSERT_EQ(req->inputs.size(), 1u);
    const Tensor& t = req->inputs[0].tensor;
    EXPECT_EQ(t.dtype, c.dtype);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{1, 3}));
    EXPECT_EQ(t.data.size(), 3 * DTypeSize(c.dtype));

    std::optional<size_t> json_length = 123;
    std::string resp = EncodeInferResponse({"m", "1", ""}, {{"x", t}}, {}, false, &json_length);
    EXPECT_EQ(json_length, std::nullopt);
    if (c.dtype != DType::kFloat32) {  // float32 prints its shortest float form, not the double's
      EXPECT_NE(resp.find(fmt::format("\"data\":{}", c.data)), std::string::npos) << resp;
    }
    auto back = DecodeResponseAsRequest(resp, json_length, specs);
    ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << resp;
    EXPECT_EQ(back->inputs[0].tensor.data, t.data);
    EXPECT_EQ(back->inputs[0].tensor.shape, t.shape);
  }
}

TEST(V2Codec, EveryDType_BinaryRoundTrip_KeepsBytes) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.datatype);
    std::vector<TensorSpec> specs = {{"x", c.dtype, {-1, 3}}};
    auto json = Decode(OneInput("x", c.datatype, "[1,3]", c.data), specs);
    ASSERT_TRUE(json.ok()) << json.status().ToString();
    const Tensor& t = json->inputs[0].tensor;

    size_t json_length;
    std::string body =
        OneBinaryInput("x", c.datatype, "[1,3]",
                       std::string_view(reinterpret_cast<const char*>(t.data.data()), t.data.size()), &json_length);
    auto bin = Decode(body, specs, json_length);
    ASSERT_TRUE(bin.ok()) << bin.status().ToString();
    EXPECT_EQ(bin->inputs[0].tensor.data, t.data);

    std::optional<size_t> resp_length;
    std::string resp = EncodeInferResponse({"m", "1", ""}, {{"x", t}}, {}, true, &resp_length);
    ASSERT_TRUE(resp_length.has_value());
    EXPECT_EQ(resp.size(), *resp_length + t.data.size());
    auto back = DecodeResponseAsRequest(resp, resp_length, specs);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->inputs[0].tensor.data, t.data);
  }
}

TEST(V2Codec, Float32_PrintsLikeJsonCodec) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {1, 4}}};
  auto req = Decode(OneInput("x", "FP32", "[1,4]", "[0.1, 2.5, -3, 6e-3]"), specs);
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  std::string v1;
  EncodeJsonTensor(req->inputs[0].tensor, v1);
  ASSERT_EQ(v1, "[[0.1,2.5,-3,0.006]]");
  std::optional<size_t> len;
  std::string resp = EncodeInferResponse({"m", "1", ""}, {{"y", req->inputs[0].tensor}}, {}, false, &len);
  EXPECT_NE(resp.find("\"data\":" + v1.substr(1, v1.size() - 2)), std::string::npos) << resp;
}

TEST(V2Codec, NestedAndFlatData_GiveTheSameRowMajorTensor) {
  std::vector<TensorSpec> specs = {{"x", DType::kInt32, {-1, 2, 3}}};
  auto flat = Decode(OneInput("x", "INT32", "[2,2,3]", "[1,2,3,4,5,6,7,8,9,10,11,12]"), specs);
  auto nested = Decode(OneInput("x", "INT32", "[2,2,3]", "[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,12]]]"), specs);
  ASSERT_TRUE(flat.ok()) << flat.status().ToString();
  ASSERT_TRUE(nested.ok()) << nested.status().ToString();
  EXPECT_EQ(flat->inputs[0].tensor.data, nested->inputs[0].tensor.data);
  EXPECT_EQ(flat->inputs[0].tensor.as<int32_t>()[4], 5);
  EXPECT_EQ(nested->inputs[0].tensor.shape, (std::vector<int64_t>{2, 2, 3}));
}

TEST(V2Codec, WrongValueCount_IsRefusedNamingTheInput) {
  std::vector<TensorSpec> specs = {{"pixels", DType::kFloat32, {-1, 3}}};
  EXPECT_TRUE(IsInvalid(Decode(OneInput("pixels", "FP32", "[2,3]", "[1,2,3,4,5]"), specs), "input 'pixels'"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("pixels", "FP32", "[2,3]", "[[1,2,3],[4,5,6,7]]"), specs), "holds 7 values"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("pixels", "FP32", "[2,3]", "5"), specs), "must be an array"));
}

TEST(V2Codec, ZeroSizedDimension_IsAnEmptyTensor) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1, 3}}};
  auto req = Decode(OneInput("x", "FP32", "[0,3]", "[]"), specs);
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  EXPECT_EQ(req->inputs[0].tensor.shape, (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(req->inputs[0].tensor.data.empty());
}

TEST(V2Codec, InputsComeBackInSpecOrder) {
  std::vector<TensorSpec> specs = {{"a", DType::kInt64, {-1}}, {"b", DType::kBool, {-1}}};
  auto req = Decode(R"({"inputs":[{"name":"b","datatype":"BOOL","shape":[1],"data":[true]},
                                  {"name":"a","datatype":"INT64","shape":[2],"data":[7,8]}]})",
                    specs);
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  ASSERT_EQ(req->inputs.size(), 2u);
  EXPECT_EQ(req->inputs[0].name, "a");
  EXPECT_EQ(req->inputs[0].tensor.as<int64_t>()[1], 8);
  EXPECT_EQ(req->inputs[1].name, "b");
}

TEST(V2Codec, UnknownDuplicateAndMissingInputs_AreRefused) {
  std::vector<TensorSpec> specs = {{"a", DType::kFloat32, {-1}}, {"b", DType::kFloat32, {-1}}};
  const char* a = R"({"name":"a","datatype":"FP32","shape":[1],"data":[1]})";
  const char* b = R"({"name":"b","datatype":"FP32","shape":[1],"data":[1]})";
  const char* z = R"({"name":"zz","datatype":"FP32","shape":[1],"data":[1]})";
  EXPECT_TRUE(IsInvalid(Decode(fmt::format(R"({{"inputs":[{},{},{}]}})", a, b, z), specs), "unknown input 'zz'"));
  EXPECT_TRUE(IsInvalid(Decode(fmt::format(R"({{"inputs":[{},{},{}]}})", a, b, a), specs), "input 'a' is given twice"));
  EXPECT_TRUE(IsInvalid(Decode(fmt::format(R"({{"inputs":[{}]}})", a), specs), "missing input 'b'"));
  EXPECT_TRUE(IsInvalid(Decode(R"({"inputs":[]})", specs), "missing input 'a', 'b'"));
}

TEST(V2Codec, DatatypeMismatchAndUnsupported_AreRefusedNamingTheInput) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1}}};
  EXPECT_TRUE(IsInvalid(Decode(OneInput("x", "FP64", "[1]", "[1]"), specs),
                        "input 'x' has datatype FP64 but the model expects FP32"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("x", "FP16", "[1]", "[1]"), specs),
                        "datatype FP16 is not supported by pilotlight (model input 'x' is FP32)"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("x", "BYTES", "[1]", "[\"a\"]"), specs),
                        "datatype BYTES is not supported by pilotlight (model input 'x'"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("x", "float32", "[1]", "[1]"), specs), "input 'x' has unknown datatype"));
  EXPECT_TRUE(IsInvalid(Decode(R"({"inputs":[{"name":"x","shape":[1],"data":[1]}]})", specs),
                        "input 'x' needs a \"datatype\""));
}

TEST(V2Codec, ShapeRankAndFixedDims_AreChecked) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1, 3}}};
  EXPECT_TRUE(IsInvalid(Decode(OneInput("x", "FP32", "[3]", "[1,2,3]"), specs), "input 'x' has rank 1"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("x", "FP32", "[1,1,3]", "[1,2,3]"), specs), "input 'x' has rank 3"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("x", "FP32", "[1,4]", "[1,2,3,4]"), specs), "input 'x' dimension 1 must be 3"));
  EXPECT_TRUE(
      IsInvalid(Decode(OneInput("x", "FP32", "[-1,3]", "[1,2,3]"), specs), "input 'x' has a negative dimension"));
  EXPECT_TRUE(
      IsInvalid(Decode(OneInput("x", "FP32", "[1.0,3]", "[1,2,3]"), specs), "input 'x' shape must hold integers"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("x", "FP32", "[\"1\",3]", "[1,2,3]"), specs), "input 'x' shape"));
  EXPECT_TRUE(IsInvalid(Decode(R"({"inputs":[{"name":"x","datatype":"FP32","data":[1,2,3]}]})", specs),
                        "input 'x' needs a \"shape\""));
}

TEST(V2Codec, HugeAndOverflowingShapes_AreRefusedBeforeAllocating) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1, -1, -1}}};
  const char* shapes[] = {
      "[4294967296,4294967296,16]",                   // 2^68 elements: overflows int64
      "[9223372036854775807,9223372036854775807,1]",  // each dim at INT64_MAX
      "[18446744073709551615,1,1]",                   // past int64 (simdjson's UINT64)
      "[0,9223372036854775807,1]",                    // zero elements, absurd dimension
      "[2048,1024,1]",                                // 2^21 elements > 2^20 limit
  };
  for (const char* shape : shapes) {
    EXPECT_TRUE(
        IsInvalid(Decode(OneInput("x", "FP32", shape, "[1]"), specs), "input 'x' has more than 1048576 elements"))
        << shape;
  }
  EXPECT_TRUE(IsInvalid(Decode(OneInput("x", "FP32", "[1,2,2]", "[1,2,3,4]"), specs, std::nullopt, 3),
                        "limit max_tensor_elements"));
}

TEST(V2Codec, IntInputs_TakeIntegersOnly) {
  std::vector<TensorSpec> specs = {{"ids", DType::kInt64, {-1}}};
  EXPECT_TRUE(IsInvalid(Decode(OneInput("ids", "INT64", "[2]", "[1,1.5]"), specs),
                        "input 'ids' is INT64 and takes integers; element 1 is a non-integer number"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("ids", "INT64", "[2]", "[1,1e2]"), specs), "input 'ids'"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("ids", "INT64", "[2]", "[1,\"NaN\"]"), specs), "input 'ids'"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("ids", "INT64", "[2]", "[1,null]"), specs), "input 'ids'"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("ids", "INT64", "[2]", "[true,false]"), specs), "input 'ids'"));
  // Bare NaN/Infinity are not JSON: the whole body is refused before any input is read.
  for (const char* token : {"NaN", "Infinity", "-Infinity", "nan", "inf"}) {
    auto r = Decode(OneInput("ids", "INT64", "[2]", fmt::format("[1,{}]", token)), specs);
    EXPECT_TRUE(IsInvalid(r, "not valid JSON")) << token;
  }
}

TEST(V2Codec, IntegersOutOfRange_AreRefusedNotWrapped) {
  struct Case {
    DType dtype;
    const char* datatype;
    const char* value;
  } cases[] = {
      {DType::kUint8, "UINT8", "256"},
      {DType::kUint8, "UINT8", "-1"},
      {DType::kInt8, "INT8", "128"},
      {DType::kInt8, "INT8", "-129"},
      {DType::kInt16, "INT16", "32768"},
      {DType::kUint16, "UINT16", "65536"},
      {DType::kInt32, "INT32", "2147483648"},
      {DType::kUint32, "UINT32", "4294967296"},
      {DType::kInt64, "INT64", "9223372036854775808"},
      {DType::kUint64, "UINT64", "-1"},
  };
  for (const auto& c : cases) {
    std::vector<TensorSpec> specs = {{"n", c.dtype, {-1}}};
    EXPECT_TRUE(IsInvalid(Decode(OneInput("n", c.datatype, "[1]", fmt::format("[{}]", c.value)), specs),
                          fmt::format("input 'n' element 0 is out of range for {}", c.datatype)))
        << c.datatype << " " << c.value;
  }
}

TEST(V2Codec, FloatInputs_TakeAnyNumberWithinRange) {
  std::vector<TensorSpec> specs = {{"f", DType::kFloat32, {-1}}};
  auto ok = Decode(OneInput("f", "FP32", "[3]", "[1, -2.5e-3, 18446744073709551615]"), specs);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_FLOAT_EQ(ok->inputs[0].tensor.as<float>()[1], -2.5e-3f);
  EXPECT_TRUE(IsInvalid(Decode(OneInput("f", "FP32", "[1]", "[1e39]"), specs), "input 'f' element 0 is out of range"));
  // FLT_MAX as printed (3.4028235e+38 is above FLT_MAX as a double but rounds to it) is taken;
  // the first double that rounds to infinity is not.
  auto max = Decode(OneInput("f", "FP32", "[2]", "[3.4028235e+38, -3.4028235e+38]"), specs);
  ASSERT_TRUE(max.ok()) << max.status().ToString();
  EXPECT_EQ(max->inputs[0].tensor.as<float>()[0], std::numeric_limits<float>::max());
  EXPECT_TRUE(IsInvalid(Decode(OneInput("f", "FP32", "[1]", "[3.4028235677973366e+38]"), specs), "out of range"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("f", "FP32", "[1]", "[null]"), specs), "input 'f' is FP32 and takes numbers"));
  EXPECT_TRUE(IsInvalid(Decode(OneInput("f", "FP32", "[1]", "[true]"), specs), "input 'f'"));
  std::vector<TensorSpec> f64 = {{"d", DType::kFloat64, {-1}}};
  EXPECT_TRUE(Decode(OneInput("d", "FP64", "[1]", "[1e300]"), f64).ok());
}

TEST(V2Codec, BoolInputs_TakeTrueFalseOnly) {
  std::vector<TensorSpec> specs = {{"mask", DType::kBool, {-1}}};
  EXPECT_TRUE(
      IsInvalid(Decode(OneInput("mask", "BOOL", "[2]", "[1,0]"), specs), "input 'mask' is BOOL and takes true/false"));
  size_t len;
  std::string body = OneBinaryInput("mask", "BOOL", "[3]", std::string("\x01\x00\x02", 3), &len);
  EXPECT_TRUE(IsInvalid(Decode(body, specs, len), "input 'mask' is BOOL and its binary element 2 is 2"));
}

TEST(V2Codec, DeepNesting_IsRefusedWithoutCrashing) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1}}};
  std::string deep = std::string(10000, '[') + "1" + std::string(10000, ']');
  EXPECT_TRUE(IsInvalid(Decode(OneInput("x", "FP32", "[1]", deep), specs), "JSON nesting deeper than 64"));
  std::string unclosed = std::string(10000, '[');
  EXPECT_EQ(Decode(OneInput("x", "FP32", "[1]", unclosed), specs).status().code(), StatusCode::kInvalidArgument);
  std::string objects;
  for (int i = 0; i < 10000; ++i) objects += "{\"a\":";
  objects += "1" + std::string(10000, '}');
  EXPECT_TRUE(IsInvalid(Decode(objects, specs), "JSON nesting deeper than 64"));
}

TEST(V2Codec, MaxDepth_IsPerCallOnTheSameThread) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1}}};
  // {inputs:[{data:[[[1]]]}]}: object, array, object, then three arrays = depth 6.
  std::string body = OneInput("x", "FP32", "[1]", "[[[1]]]");
  EXPECT_TRUE(Decode(body, specs, std::nullopt, 1 << 20, 6).ok());
  EXPECT_TRUE(IsInvalid(Decode(body, specs, std::nullopt, 1 << 20, 5), "JSON nesting deeper than 5"));
  EXPECT_TRUE(Decode(body, specs).ok());
  EXPECT_TRUE(Decode(body, specs, std::nullopt, 1 << 20, 1024).ok());
}

TEST(V2Codec, BinaryInputs_TakeTheTailInInputOrder) {
  std::vector<TensorSpec> specs = {{"a", DType::kInt32, {-1}}, {"b", DType::kFloat64, {-1}}, {"c", DType::kInt8, {-1}}};
  std::string json = R"({"inputs":[{"name":"b","datatype":"FP64","shape":[1],"parameters":{"binary_data_size":8}},
                                  {"name":"c","datatype":"INT8","shape":[2],"data":[-1,1]},
                                  {"name":"a","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}}]})";
  std::string body = json + Bytes<double>({2.5}) + Bytes<int32_t>({7, -9});
  auto req = Decode(body, specs, json.size());
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  EXPECT_EQ(req->inputs[0].tensor.as<int32_t>()[0], 7);
  EXPECT_EQ(req->inputs[0].tensor.as<int32_t>()[1], -9);
  EXPECT_EQ(req->inputs[1].tensor.as<double>()[0], 2.5);
  EXPECT_EQ(req->inputs[2].tensor.as<int8_t>()[0], -1);
}

TEST(V2Codec, BinaryTailTooShortOrTooLong_IsRefused) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1}}};
  size_t len;
  std::string body = OneBinaryInput("x", "FP32", "[2]", Bytes<float>({1, 2}), &len);
  EXPECT_TRUE(Decode(body, specs, len).ok());
  EXPECT_TRUE(IsInvalid(Decode(body.substr(0, body.size() - 1), specs, len),
                        "input 'x' needs 8 bytes of binary data but only 7 remain"));
  EXPECT_TRUE(IsInvalid(Decode(body + "!", specs, len), "1 bytes of binary data after the JSON that no input claims"));
  // binary_data_size disagreeing with shape x datatype.
  body = OneBinaryInput("x", "FP32", "[2]", Bytes<float>({1, 2, 3}), &len);
  EXPECT_TRUE(IsInvalid(Decode(body, specs, len),
                        "input 'x' has shape [2] (2 elements of 4 bytes = 8 bytes) but "
                        "binary_data_size is 12"));
  // A tail with no input claiming any of it.
  std::string json = OneInput("x", "FP32", "[1]", "[1]");
  EXPECT_TRUE(IsInvalid(Decode(json + "abcd", specs, json.size()), "4 bytes of binary data"));
}

TEST(V2Codec, InferenceHeaderContentLength_BiggerThanBody_IsRefused) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1}}};
  std::string json = OneInput("x", "FP32", "[1]", "[1]");
  EXPECT_TRUE(IsInvalid(Decode(json, specs, json.size() + 1), "Inference-Header-Content-Length"));
  EXPECT_TRUE(IsInvalid(Decode(json, specs, std::numeric_limits<size_t>::max()), "Inference-Header-Content-Length"));
  EXPECT_TRUE(IsInvalid(Decode(json, specs, json.size() - 1), "not valid JSON"));  // cut inside the JSON
  EXPECT_TRUE(Decode(json, specs, json.size()).ok());
}

TEST(V2Codec, BinaryDataSizeMisuse_IsRefusedNamingTheInput) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1}}};
  std::string both = R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1],
                                   "parameters":{"binary_data_size":4}}]})";
  EXPECT_TRUE(IsInvalid(Decode(both + Bytes<float>({1}), specs, both.size()),
                        "input 'x' has both \"data\" and parameters.binary_data_size"));
  std::string neither = R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]})";
  EXPECT_TRUE(IsInvalid(Decode(neither, specs), "input 'x' has neither"));
  size_t len;
  std::string body = OneBinaryInput("x", "FP32", "[1]", Bytes<float>({1}), &len);
  // No header: the whole body is taken as JSON, the float's bytes included.
  EXPECT_EQ(Decode(body, specs).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(IsInvalid(Decode(body.substr(0, len), specs), "no Inference-Header-Content-Length"));
  for (const char* size : {"-4", "4.0", "\"4\"", "null"}) {
    std::string j = fmt::format(
        R"({{"inputs":[{{"name":"x","datatype":"FP32","shape":[1],"parameters":{{"binary_data_size":{}}}}}]}})", size);
    EXPECT_TRUE(IsInvalid(Decode(j + Bytes<float>({1}), specs, j.size()),
                          "input 'x' parameters.binary_data_size must be a non-negative integer"))
        << size;
  }
  std::string shm = R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1],
                                  "parameters":{"shared_memory_region":"r"}}]})";
  EXPECT_TRUE(IsInvalid(Decode(shm, specs), "input 'x' uses shared memory"));
}

TEST(V2Codec, MalformedRequests_AreInvalidArgument) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1}}};
  EXPECT_TRUE(IsInvalid(Decode("[1]", specs), "must be a JSON object"));
  EXPECT_TRUE(IsInvalid(Decode("{}", specs), "needs an \"inputs\" array (the model's inputs: x)"));
  EXPECT_TRUE(IsInvalid(Decode(R"({"inputs":{}})", specs), "\"inputs\" array"));
  EXPECT_TRUE(IsInvalid(Decode(R"({"inputs":[1]})", specs), "inputs[0] must be an object"));
  EXPECT_TRUE(IsInvalid(Decode(R"({"inputs":[{"datatype":"FP32"}]})", specs), "inputs[0] needs a \"name\""));
  EXPECT_TRUE(IsInvalid(Decode(R"({"id":5,"inputs":[]})", specs), "\"id\" must be a string"));
  EXPECT_TRUE(IsInvalid(Decode(R"({"parameters":[],"inputs":[]})", specs), "\"parameters\" must be an object"));
  EXPECT_TRUE(IsInvalid(Decode("", specs), "not valid JSON"));
  EXPECT_TRUE(IsInvalid(Decode("{\"inputs\":[", specs), "not valid JSON"));
}

TEST(V2Codec, RequestFields_IdParametersAndOutputs) {
  std::vector<TensorSpec> specs = {{"x", DType::kFloat32, {-1}}};
  auto req = Decode(R"({"id":"req-1","parameters":{"binary_data_output":true,"priority":2},
                        "inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}],
                        "outputs":[{"name":"y","parameters":{"binary_data":false}},{"name":"not_checked"},
                                   {"name":"z","parameters":{"binary_data":true}}]})",
                    specs);
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  EXPECT_EQ(req->id, "req-1");
  EXPECT_EQ(req->parameters_json, R"({"binary_data_output":true,"priority":2})");
  EXPECT_TRUE(req->binary_data_output);
  ASSERT_EQ(req->outputs.size(), 3u);
  EXPECT_EQ(req->outputs[0].name, "y");
  EXPECT_EQ(req->outputs[0].binary, false);
  EXPECT_EQ(req->outputs[1].name, "not_checked");
  EXPECT_EQ(req->outputs[1].binary, std::nullopt);
  EXPECT_EQ(req->outputs[2].binary, true);

  auto plain = Decode(OneInput("x", "FP32", "[1]", "[1]"), specs);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->id, "");
  EXPECT_EQ(plain->parameters_json, "");
  EXPECT_FALSE(plain->binary_data_output);
  EXPECT_TRUE(plain->outputs.empty());

  std::string in = R"("inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}])";
  EXPECT_TRUE(IsInvalid(Decode("{" + in + R"(,"outputs":[{"parameters":{}}]})", specs), "outputs[0]"));
  EXPECT_TRUE(IsInvalid(Decode("{" + in + R"(,"outputs":{}})", specs), "\"outputs\" must be an array"));
  EXPECT_TRUE(IsInvalid(Decode("{" + in + R"(,"outputs":[{"name":"y","parameters":{"binary_data":1}}]})", specs),
                        "output 'y' parameters.binary_data must be true or false"));
  EXPECT_TRUE(IsInvalid(Decode("{" + in + R"(,"parameters":{"binary_data_output":"yes"}})", specs),
                        "binary_data_output must be true or false"));
}

Tensor MakeTensor(DType dtype, std::vector<int64_t> shape, std::string bytes) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data.assign(bytes.begin(), bytes.end());
  return t;
}

TEST(V2Codec, Encode_JsonLayout_FlatDataNullForNonFinite) {
  float nan = std::numeric_limits<float>::quiet_NaN();
  float inf = std::numeric_limits<float>::infinity();
  Tensor t = MakeTensor(DType::kFloat32, {2, 2}, Bytes<float>({1.5f, nan, -inf, 0.25f}));
  Tensor b = MakeTensor(DType::kBool, {1, 2}, std::string("\x01\x00", 2));
  std::optional<size_t> len = 1;
  std::string resp = EncodeInferResponse({"mlp", "3", "abc"}, {{"y", t}, {"mask", b}}, {}, false, &len);
  EXPECT_EQ(len, std::nullopt);
  EXPECT_EQ(resp, R"({"model_name":"mlp","model_version":"3","id":"abc","outputs":[)"
                  R"({"name":"y","datatype":"FP32","shape":[2,2],"data":[1.5,null,null,0.25]},)"
                  R"({"name":"mask","datatype":"BOOL","shape":[1,2],"data":[true,false]}]})");
  // No id: the key is left out; names are escaped.
  resp = EncodeInferResponse({"m\"x", "1", ""}, {}, {}, false, &len);
  EXPECT_EQ(resp, R"({"model_name":"m\"x","model_version":"1","outputs":[]})");
}

TEST(V2Codec, Encode_BinaryLayout_ParsesBack) {
  Tensor y = MakeTensor(DType::kFloat32, {1, 3}, Bytes<float>({1, 2, 3}));
  Tensor ids = MakeTensor(DType::kInt64, {2}, Bytes<int64_t>({-5, 6}));
  Tensor mask = MakeTensor(DType::kBool, {3}, std::string("\x00\x01\x01", 3));
  // Default binary; "ids" asks for JSON; "mask" asks for binary; "y" takes the default.
  std::vector<RequestedOutput> requested = {{"ids", false}, {"mask", true}, {"y", std::nullopt}};
  std::optional<size_t> len;
  std::string resp =
      EncodeInferResponse({"m", "1", "r"}, {{"y", y}, {"ids", ids}, {"mask", mask}}, requested, true, &len);
  ASSERT_TRUE(len.has_value());
  Parsed p;
  ParseResponse(resp, len, p);
  EXPECT_EQ(simdjson::to_string(p.root),
            R"({"model_name":"m","model_version":"1","id":"r","outputs":[)"
            R"({"name":"y","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}},)"
            R"({"name":"ids","datatype":"INT64","shape":[2],"data":[-5,6]},)"
            R"({"name":"mask","datatype":"BOOL","shape":[3],"parameters":{"binary_data_size":3}}]})");
  ASSERT_EQ(p.tail.size(), 15u);
  float f[3];
  std::memcpy(f, p.tail.data(), 12);
  EXPECT_EQ(f[2], 3.0f);
  EXPECT_EQ(p.tail.substr(12), std::string_view("\x00\x01\x01", 3));

  // Default JSON, one output asks for binary.
  resp = EncodeInferResponse({"m", "1", ""}, {{"y", y}, {"ids", ids}}, {{"ids", true}}, false, &len);
  ASSERT_TRUE(len.has_value());
  EXPECT_EQ(resp.substr(*len), Bytes<int64_t>({-5, 6}));
  EXPECT_NE(resp.find(R"("data":[1,2,3])"), std::string::npos);
}

TEST(V2Codec, Decode_FromManyThreads) {
  std::vector<TensorSpec> specs = {{"x", DType::kInt32, {-1, 2}}};
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < 200; ++j) {
        auto r = Decode(OneInput("x", "INT32", "[1,2]", fmt::format("[{},{}]", i, j)), specs, std::nullopt, 1 << 20,
                        j % 2 ? 64 : 32);
        if (!r.ok() || r->inputs[0].tensor.as<int32_t>()[0] != i || r->inputs[0].tensor.as<int32_t>()[1] != j)
          ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace pilotlight::tensor::v2
