// BlobCache: verified content-addressed files, single-flight fetches, LRU eviction that never
// touches pinned files, no partial file under a final name.
#include "store/blob_cache.h"

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include <unistd.h>

#include <gtest/gtest.h>

#include "common/sha256.h"

namespace pilotlight::store {
namespace {
namespace fs = std::filesystem;

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("pl_cache_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A fetch that writes `content` and reports its real sha256 (as a download would).
  static BlobCache::FetchFn Writes(const std::string& content, std::atomic<int>* calls = nullptr) {
    return [content, calls](const std::string& tmp) -> StatusOr<FetchResult> {
      if (calls) (*calls)++;
      std::ofstream(tmp, std::ios::binary) << content;
      return FetchResult{"\"etag-" + content + "\"", "Mon, 23 Nov 2026 10:00:00 GMT", content.size(),
                         Sha256Hex(content), false};
    };
  }
  static std::vector<std::string> Files(const fs::path& d) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(d)) {
      if (e.is_regular_file()) out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path dir_;
};

TEST_F(CacheTest, MissThenHit_SidecarKeepsEtag) {
  BlobCache cache({dir_.string(), 1 << 20});
  std::string sha = Sha256Hex("model-a");
  std::atomic<int> calls{0};
  auto a = cache.Get(sha, 7, "s3://b/m/model.onnx", Writes("model-a", &calls));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_FALSE(a->hit);
  EXPECT_EQ(a->path, (dir_ / sha).string());
  auto b = cache.Get(sha, 7, "s3://b/m/model.onnx", Writes("model-a", &calls));
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->hit);
  EXPECT_EQ(calls.load(), 1);
  auto side = cache.Sidecar(sha);
  ASSERT_TRUE(side.has_value());
  EXPECT_EQ(side->etag, "\"etag-model-a\"");
  EXPECT_EQ(side->source, "s3://b/m/model.onnx");
  EXPECT_EQ(cache.Stats().hits, 1u);
  EXPECT_EQ(cache.Stats().misses, 1u);
  // A new process (a restart) finds it without fetching.
  BlobCache again({dir_.string(), 1 << 20});
  auto c = again.Get(sha, 7, "s3://b/m/model.onnx", Writes("model-a", &calls));
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->hit);
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(CacheTest, ChecksumMismatch_DataLossAndNothingKept) {
  BlobCache cache({dir_.string(), 1 << 20});
  std::string promised = Sha256Hex("the real model");
  auto r = cache.Get(promised, 0, "s3://b/m/model.onnx", Writes("tampered bytes"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("s3://b/m/model.onnx"), std::string::npos) << r.status().message();
  EXPECT_TRUE(Files(dir_).empty());
  EXPECT_TRUE(Files(dir_ / "tmp").empty());
}

TEST_F(CacheTest, FailedFetch_LeavesNoPartialFile_AndInterruptedOnesAreCleanedAtStart) {
  {
    BlobCache cache({dir_.string(), 1 << 20});
    auto r = cache.Get(Sha256Hex("x"), 1, "src", [](const std::string& tmp) -> StatusOr<FetchResult> {
      std::ofstream(tmp) << "half";
      return UnavailableError("connection reset");
    });
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
    EXPECT_TRUE(Files(dir_).empty());
    EXPECT_TRUE(Files(dir_ / "tmp").empty());
  }
  std::ofstream(dir_ / "tmp" / "999999999-leftover.part") << "from a killed process";
  std::string live = std::to_string(::getppid()) + "-download-in-progress.part";
  std::ofstream(dir_ / "tmp" / live) << "another live process (a server sharing the state dir)";
  BlobCache cache({dir_.string(), 1 << 20});
  EXPECT_EQ(Files(dir_ / "tmp"), std::vector<std::string>{live});
}

TEST_F(CacheTest, ConcurrentGets_OneFetch) {
  BlobCache cache({dir_.string(), 1 << 20});
  std::string sha = Sha256Hex("shared");
  std::atomic<int> calls{0};
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  auto slow = [&](const std::string& tmp) -> StatusOr<FetchResult> {
    calls++;
    gate.wait();
    std::ofstream(tmp) << "shared";
    return FetchResult{"\"e\"", "", 6, Sha256Hex("shared"), false};
  };
  std::vector<std::future<StatusOr<CachedFile>>> gets;
  for (int i = 0; i < 8; ++i) {
    gets.push_back(std::async(std::launch::async, [&] { return cache.Get(sha, 6, "src", slow); }));
  }
  while (calls.load() == 0) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the others queue up behind it
  release.set_value();
  for (auto& g : gets) {
    auto r = g.get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(CacheTest, Eviction_LeastRecentlyUsedFirst_PinnedFilesStay) {
  BlobCache cache({dir_.string(), 25});  // room for two 10-byte files
  std::string a = Sha256Hex("aaaaaaaaaa"), b = Sha256Hex("bbbbbbbbbb"), c = Sha256Hex("cccccccccc");
  auto pa = cache.Get(a, 10, "a", Writes("aaaaaaaaaa"));  // pinned: a loaded model uses it
  ASSERT_TRUE(pa.ok());
  { ASSERT_TRUE(cache.Get(b, 10, "b", Writes("bbbbbbbbbb")).ok()); }  // unpinned at once
  { ASSERT_TRUE(cache.Get(c, 10, "c", Writes("cccccccccc")).ok()); }
  // Over the cap: b is the least recently used unpinned file; a is pinned, c is newest.
  EXPECT_TRUE(fs::exists(dir_ / a));
  EXPECT_FALSE(fs::exists(dir_ / b));
  EXPECT_FALSE(fs::exists(dir_ / (b + ".json")));
  EXPECT_TRUE(fs::exists(dir_ / c));
  EXPECT_EQ(cache.Stats().evictions, 1u);
  EXPECT_LE(cache.Stats().bytes, 25u);
}

TEST_F(CacheTest, DamagedCacheFile_IsFetchedAgain) {
  std::string sha = Sha256Hex("good bytes");
  std::atomic<int> calls{0};
  {
    BlobCache cache({dir_.string(), 1 << 20});
    ASSERT_TRUE(cache.Get(sha, 10, "src", Writes("good bytes", &calls)).ok());
  }
  std::ofstream(dir_ / sha, std::ios::binary) << "bad bytes!";  // bit rot or tampering on disk
  BlobCache cache({dir_.string(), 1 << 20});
  auto r = cache.Get(sha, 10, "src", Writes("good bytes", &calls));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(*Sha256File(r->path), sha);
}

}  // namespace
}  // namespace pilotlight::store

namespace pilotlight::store {
namespace {

TEST_F(CacheTest, FileDeletedByAnotherProcess_IsFetchedAgain) {
  BlobCache cache({dir_.string(), 1 << 20});
  std::string sha = Sha256Hex("model");
  std::atomic<int> calls{0};
  { ASSERT_TRUE(cache.Get(sha, 5, "src", Writes("model", &calls)).ok()); }
  fs::remove(dir_ / sha);  // e.g. a CLI sharing the state dir evicted it
  auto r = cache.Get(sha, 5, "src", Writes("model", &calls));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->hit);
  EXPECT_EQ(calls.load(), 2);
  EXPECT_TRUE(fs::exists(r->path));
}

}  // namespace
}  // namespace pilotlight::store
