#include "tensor/json_codec.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace pilotlight::tensor {
namespace {

StatusOr<Tensor> Decode(const std::string& json, TensorSpec spec, int64_t max_elements = 1 << 20) {
  static thread_local simdjson::dom::parser parser;
  simdjson::dom::element e;
  EXPECT_EQ(parser.parse(json).get(e), simdjson::SUCCESS) << json;
  return DecodeJsonTensor(e, spec, DecodeLimits{max_elements});
}

std::string Encode(const Tensor& t) {
  std::string out;
  EncodeJsonTensor(t, out);
  return out;
}

TEST(JsonCodec, Float32Matrix_DecodesRowMajorAndRoundTrips) {
  auto t = Decode("[[1, 2.5, -3], [4, 5, 6e-3]]", {"x", DType::kFloat32, {-1, 3}});
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_FLOAT_EQ(t->as<float>()[1], 2.5f);
  EXPECT_FLOAT_EQ(t->as<float>()[5], 0.006f);
  EXPECT_EQ(Encode(*t), "[[1,2.5,-3],[4,5,0.006]]");
}

TEST(JsonCodec, Rank3_EncodesNestedBrackets) {
  auto t = Decode("[[[1,2],[3,4]],[[5,6],[7,8]]]", {"x", DType::kInt32, {-1, 2, 2}});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(Encode(*t), "[[[1,2],[3,4]],[[5,6],[7,8]]]");
}

TEST(JsonCodec, Int64_ExactBeyondDoublePrecision) {
  auto t = Decode("[[9007199254740993, -9223372036854775808]]", {"i", DType::kInt64, {-1, 2}});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->as<int64_t>()[0], 9007199254740993LL);
  EXPECT_EQ(t->as<int64_t>()[1], std::numeric_limits<int64_t>::min());
  EXPECT_EQ(Encode(*t), "[[9007199254740993,-9223372036854775808]]");
}

TEST(JsonCodec, Bool_TakesTrueFalseOnly) {
  auto t = Decode("[[true, false]]", {"b", DType::kBool, {-1, 2}});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(Encode(*t), "[[true,false]]");
  auto bad = Decode("[[1, 0]]", {"b", DType::kBool, {-1, 2}});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(JsonCodec, NonIntegerIntoIntInput_IsInvalidArgument) {
  auto t = Decode("[[1, 1.5]]", {"i", DType::kInt64, {-1, 2}});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("element 1"), std::string::npos) << t.status().message();
}

TEST(JsonCodec, IntOutOfRange_IsRefusedNotWrapped) {
  EXPECT_FALSE(Decode("[[256]]", {"u", DType::kUint8, {-1, 1}}).ok());
  EXPECT_FALSE(Decode("[[-1]]", {"u", DType::kUint8, {-1, 1}}).ok());
  EXPECT_FALSE(Decode("[[128]]", {"i", DType::kInt8, {-1, 1}}).ok());
  EXPECT_TRUE(Decode("[[-128, 127]]", {"i", DType::kInt8, {-1, 2}}).ok());
  EXPECT_FALSE(Decode("[[2147483648]]", {"i", DType::kInt32, {-1, 1}}).ok());
  EXPECT_FALSE(Decode("[[18446744073709551615]]", {"i", DType::kInt64, {-1, 1}}).ok());
}

TEST(JsonCodec, StringsNullsObjects_AreInvalidArgument) {
  for (const char* j : {"[[\"1\", 2]]", "[[null, 2]]", "[[{}, 2]]"}) {
    EXPECT_EQ(Decode(j, {"x", DType::kFloat32, {-1, 2}}).status().code(), StatusCode::kInvalidArgument) << j;
  }
}

TEST(JsonCodec, RaggedArray_IsInvalidArgument) {
  auto t = Decode("[[1, 2], [3]]", {"x", DType::kFloat32, {-1, -1}});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("ragged"), std::string::npos);
}

TEST(JsonCodec, MissingBatchDimension_IsInvalidArgument) {
  auto t = Decode("[1, 2, 3]", {"x", DType::kFloat32, {-1, 3}});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("batch dimension"), std::string::npos) << t.status().message();
}

TEST(JsonCodec, FixedDimensionMismatch_NamesDimension) {
  auto t = Decode("[[1, 2]]", {"x", DType::kFloat32, {-1, 3}});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("dimension 1 must be 3"), std::string::npos) << t.status().message();
}

TEST(JsonCodec, ElementLimit_ExactlyAtLimitOkOneOverRefused) {
  EXPECT_TRUE(Decode("[[1,2],[3,4]]", {"x", DType::kFloat32, {-1, 2}}, 4).ok());
  auto t = Decode("[[1,2],[3,4],[5,6]]", {"x", DType::kFloat32, {-1, 2}}, 4);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("max_tensor_elements"), std::string::npos);
}

TEST(JsonCodec, EmptyDimension_IsInvalidArgument) {
  EXPECT_FALSE(Decode("[]", {"x", DType::kFloat32, {-1, 2}}).ok());
  EXPECT_FALSE(Decode("[[]]", {"x", DType::kFloat32, {-1, -1}}).ok());
}

TEST(JsonCodec, NonFiniteOutput_EncodesAsNull) {
  Tensor t{DType::kFloat32, {1, 2}, std::vector<uint8_t>(8)};
  t.as<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  t.as<float>()[1] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(Encode(t), "[[null,null]]");
}

TEST(JsonCodec, Float64_KeepsFullPrecision) {
  auto t = Decode("[[0.1, 1e300]]", {"d", DType::kFloat64, {-1, 2}});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(Encode(*t), "[[0.1,1e+300]]");
}

}  // namespace
}  // namespace pilotlight::tensor

namespace pilotlight::tensor {
namespace {

TEST(JsonCodec, RaggedBodyClaimingAHugeShape_IsRefusedBeforeAllocating) {
  // First row on each axis says 256x256x256 (16.7M elements, 128 MB of int64), the rest is
  // empty: refused as ragged without allocating for the claimed shape (ASan would see 128 MB).
  std::string row0 = "[";
  for (int i = 0; i < 256; ++i) row0 += (i ? ",0" : "0");
  row0 += "]";
  std::string plane0 = "[" + row0;
  for (int i = 1; i < 256; ++i) plane0 += ",[]";
  plane0 += "]";
  std::string body = "[" + plane0;
  for (int i = 1; i < 256; ++i) body += ",[]";
  body += "]";
  auto t = Decode(body, {"x", DType::kInt64, {-1, -1, -1}}, int64_t{1} << 30);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("ragged"), std::string::npos) << t.status().message();
}

TEST(JsonCodec, FloatBeyondFloat32Range_IsRefused) {
  EXPECT_FALSE(Decode("[[1e300]]", {"x", DType::kFloat32, {-1, 1}}).ok());
  EXPECT_TRUE(Decode("[[1e300]]", {"x", DType::kFloat64, {-1, 1}}).ok());
  EXPECT_TRUE(Decode("[[3.4e38]]", {"x", DType::kFloat32, {-1, 1}}).ok());
}

}  // namespace
}  // namespace pilotlight::tensor

namespace pilotlight::tensor {
namespace {

TEST(JsonCodec, EncodeShapes_Rank1UnitDimsAndRank4) {
  Tensor r1{DType::kInt32, {3}, std::vector<uint8_t>(12)};
  for (int i = 0; i < 3; ++i) r1.as<int32_t>()[i] = i + 1;
  EXPECT_EQ(Encode(r1), "[1,2,3]");
  Tensor unit{DType::kInt32, {1, 1, 2}, std::vector<uint8_t>(8)};
  unit.as<int32_t>()[0] = 7;
  unit.as<int32_t>()[1] = 8;
  EXPECT_EQ(Encode(unit), "[[[7,8]]]");
  Tensor r4{DType::kUint8, {2, 1, 2, 1}, {1, 2, 3, 4}};
  EXPECT_EQ(Encode(r4), "[[[[1],[2]]],[[[3],[4]]]]");
}

}  // namespace
}  // namespace pilotlight::tensor
