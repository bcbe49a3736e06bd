#include "store/model_store.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/sha256.h"

namespace pilotlight::store {
namespace {
namespace fs = std::filesystem;

class ModelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("pl_store_test_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    store_ = std::make_unique<ModelStore>(std::make_unique<LocalBlobStore>(root_.string()));
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string WriteFile(const std::string& name, const std::string& content) {
    auto p = root_ / ("src_" + name);
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }

  Manifest Schema() {
    Manifest m;
    m.inputs = {{"x", "float32", {-1, 2}}};
    m.outputs = {{"y", "float32", {-1, 2}}};
    return m;
  }

  fs::path root_;
  std::unique_ptr<ModelStore> store_;
};

TEST_F(ModelStoreTest, Push_WritesSeedsLayoutWithSha256AndSize) {
  auto f = WriteFile("a", "model-bytes-v1");
  auto m = store_->PushVersion("digits", "1.0.0", f, Schema());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(fs::exists(root_ / "digits/versions/1.0.0/model.onnx"));
  EXPECT_TRUE(fs::exists(root_ / "digits/versions/1.0.0/manifest.json"));
  auto read = store_->ReadManifest("digits", "1.0.0");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->files.at(0).sha256, Sha256Hex("model-bytes-v1"));
  EXPECT_EQ(read->files.at(0).size_bytes, 14u);
  EXPECT_EQ(read->inputs.at(0).shape, (std::vector<int64_t>{-1, 2}));
  EXPECT_FALSE(read->created_at.empty());
}

TEST_F(ModelStoreTest, Push_SameVersionTwice_AlreadyExists) {
  auto f = WriteFile("a", "x");
  ASSERT_TRUE(store_->PushVersion("m", "1", f, Schema()).ok());
  EXPECT_EQ(store_->PushVersion("m", "1", f, Schema()).status().code(), StatusCode::kAlreadyExists);
}

TEST_F(ModelStoreTest, PromoteAndRollback_KeepHistory) {
  ASSERT_TRUE(store_->PushVersion("m", "1", WriteFile("1", "one"), Schema()).ok());
  ASSERT_TRUE(store_->PushVersion("m", "2", WriteFile("2", "two"), Schema()).ok());
  ASSERT_TRUE(store_->PushVersion("m", "3", WriteFile("3", "three"), Schema()).ok());
  EXPECT_EQ(store_->ReadCurrent("m").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->Promote("m", "1").ok());
  ASSERT_TRUE(store_->Promote("m", "2").ok());
  ASSERT_TRUE(store_->Promote("m", "3").ok());
  auto cur = store_->ReadCurrent("m");
  ASSERT_TRUE(cur.ok());
  EXPECT_EQ(cur->version, "3");
  std::ifstream mf(root_ / "m/versions/3/manifest.json", std::ios::binary);
  std::string manifest_bytes((std::istreambuf_iterator<char>(mf)), std::istreambuf_iterator<char>());
  EXPECT_EQ(cur->sha256, Sha256Hex(manifest_bytes));  // current.json names the manifest's hash
  ASSERT_EQ(cur->history.size(), 2u);
  EXPECT_EQ(store_->Rollback("m")->version, "2");
  EXPECT_EQ(store_->Rollback("m")->version, "1");
  EXPECT_EQ(store_->ReadCurrent("m")->version, "1");
  EXPECT_EQ(store_->Rollback("m").status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(ModelStoreTest, Promote_MissingVersion_NotFound) {
  ASSERT_TRUE(store_->PushVersion("m", "1", WriteFile("1", "one"), Schema()).ok());
  EXPECT_EQ(store_->Promote("m", "9").status().code(), StatusCode::kNotFound);
}

TEST_F(ModelStoreTest, Resolve_VerifiesSha256_MismatchIsDataLoss) {
  ASSERT_TRUE(store_->PushVersion("m", "1", WriteFile("1", "original"), Schema()).ok());
  ASSERT_TRUE(store_->Promote("m", "1").ok());
  auto ok = store_->Resolve("m", "current");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->manifest.version, "1");
  EXPECT_TRUE(fs::exists(ok->local_path));
  std::ofstream(root_ / "m/versions/1/model.onnx", std::ios::binary) << "tampered!";
  auto bad = store_->Resolve("m", "current");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("sha256 mismatch"), std::string::npos);
}

TEST_F(ModelStoreTest, ListVersions_NaturalOrderAndHidesUnfinishedPushes) {
  for (const char* v : {"1.10", "1.9", "1.2"}) ASSERT_TRUE(store_->PushVersion("m", v, WriteFile(v, v), Schema()).ok());
  fs::create_directories(root_ / "m/versions/2.0");  // no manifest: an interrupted push
  auto vs = store_->ListVersions("m");
  ASSERT_TRUE(vs.ok());
  EXPECT_EQ(*vs, (std::vector<std::string>{"1.2", "1.9", "1.10"}));
}

TEST_F(ModelStoreTest, Names_RefusePathTraversal) {
  auto f = WriteFile("a", "x");
  for (const char* bad : {"..", "../etc", "a/b", ".hidden", "", "a b"}) {
    EXPECT_EQ(store_->PushVersion(bad, "1", f, Schema()).status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(store_->PushVersion("m", bad, f, Schema()).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(LocalBlobStore(root_.string()).Read("../x").ok());
}

TEST(OpenBlobStore, Schemes) {
  EXPECT_TRUE(OpenBlobStore("file://./models").ok());
  EXPECT_TRUE(OpenBlobStore("/tmp/models").ok());
  EXPECT_EQ(OpenBlobStore("ftp://x").status().code(), StatusCode::kInvalidArgument);
}

TEST(ManifestJson, UntrustedInputGivesDataLossNotCrash) {
  for (const char* bad :
       {"", "{", "[]", "{\"name\":1}", "{\"name\":\"a\",\"version\":\"1\",\"files\":[]}",
        "{\"name\":\"a\",\"version\":\"1\",\"files\":[{\"path\":\"../x\",\"sha256\":\"\",\"size\":1}]}"}) {
    EXPECT_EQ(ManifestFromJson(bad).status().code(), StatusCode::kDataLoss) << bad;
  }
}

}  // namespace
}  // namespace pilotlight::store

namespace pilotlight::store {
namespace {

TEST_F(ModelStoreTest, ConditionalWrites_StaleEtagOrExistingKeyIsAborted) {
  LocalBlobStore blobs(root_.string());
  auto first = blobs.Write("k/doc.json", "one", WriteCondition{.if_match = "", .if_absent = true});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(blobs.Write("k/doc.json", "again", WriteCondition{.if_match = "", .if_absent = true}).status().code(),
            StatusCode::kAborted);
  auto second = blobs.Write("k/doc.json", "two", WriteCondition{.if_match = *first, .if_absent = false});
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_NE(*second, *first);
  // Someone else wrote in between: the writer holding the old ETag loses and nothing changes.
  EXPECT_EQ(blobs.Write("k/doc.json", "three", WriteCondition{.if_match = *first, .if_absent = false}).status().code(),
            StatusCode::kAborted);
  EXPECT_EQ(blobs.Read("k/doc.json")->data, "two");
  // Re-validation: the current ETag gives "not modified" and no data.
  auto again = blobs.Read("k/doc.json", *second);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->not_modified);
  EXPECT_TRUE(again->data.empty());
}

TEST_F(ModelStoreTest, Promote_VerifiesFirst_AndRefusesAVersionThatFails) {
  ASSERT_TRUE(store_->PushVersion("m", "1", WriteFile("1", "one"), Schema()).ok());
  ASSERT_TRUE(store_->Promote("m", "1").ok());
  ASSERT_TRUE(store_->PushVersion("m", "2", WriteFile("2", "two"), Schema()).ok());
  std::ofstream(root_ / "m/versions/2/model.onnx", std::ios::binary) << "tampered";
  auto r = store_->Promote("m", "2");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("model.onnx"), std::string::npos) << r.status().message();
  EXPECT_EQ(store_->ReadCurrent("m")->version, "1");
  EXPECT_EQ(store_->VerifyVersion("m", "2").code(), StatusCode::kDataLoss);
  EXPECT_TRUE(store_->VerifyVersion("m", "1").ok());
}

TEST_F(ModelStoreTest, Resolve_ManifestReplacedAfterPromotion_IsDataLoss) {
  ASSERT_TRUE(store_->PushVersion("m", "1", WriteFile("1", "one"), Schema()).ok());
  ASSERT_TRUE(store_->Promote("m", "1").ok());
  // Rewrite the manifest (valid JSON, different bytes): current.json's sha256 no longer matches.
  auto path = root_ / "m/versions/1/manifest.json";
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text << "\n";
  auto r = store_->Resolve("m", "current");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("current.json"), std::string::npos);
  EXPECT_TRUE(store_->Resolve("m", "1").ok()) << "an explicit version has no pointer to check against";
}

TEST_F(ModelStoreTest, ConcurrentPromotes_NeverLoseAnUpdate) {
  for (const char* v : {"1", "2", "3", "4", "5"}) {
    ASSERT_TRUE(store_->PushVersion("m", v, WriteFile(v, v), Schema()).ok());
  }
  ASSERT_TRUE(store_->Promote("m", "1").ok());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, aborted{0};
  for (const char* v : {"2", "3", "4", "5"}) {
    threads.emplace_back([&, v] {
      ModelStore other(std::make_unique<LocalBlobStore>(root_.string()));  // like another CLI process
      auto r = other.Promote("m", v, /*verify=*/false);
      if (r.ok()) ok++;
      if (!r.ok() && r.status().code() == StatusCode::kAborted) aborted++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok + aborted, 4);
  auto cur = store_->ReadCurrent("m");
  ASSERT_TRUE(cur.ok());
  // Every promote that reported success is in the pointer or its history: none was overwritten.
  EXPECT_EQ(static_cast<int>(cur->history.size()), ok.load()) << "history has one entry per successful promote";
}

}  // namespace
}  // namespace pilotlight::store
