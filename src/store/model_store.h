// ModelStore: the seeds' versioned layout over a BlobStore.
//
//   <name>/versions/<ver>/model.onnx + manifest.json
//   <name>/current.json   {"version", "sha256" (of that version's manifest.json), "promoted_at",
//                          "history": [{"version", "promoted_at"}, ...]}
//
// Resolve() turns "name@current" or "name@<ver>" into a verified local path. Local stores hand
// out the file itself after checking its sha256 (memoised by path, size, mtime and inode);
// remote stores go through the verified content-addressed BlobCache. Small documents
// (current.json, manifests) are cached with their ETag and re-validated with conditional
// requests, so polling an unchanged current.json costs one 304.
//
// Promote and Rollback are compare-and-swap on current.json's ETag (If-Match; If-None-Match: *
// for the first promotion): a concurrent promote is reported (Aborted), never overwritten.
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "store/blob_cache.h"
#include "store/blob_store.h"
#include "store/manifest.h"

namespace pilotlight::store {

struct StoreOptions {
  std::string cache_dir;  // verified cache for remote stores (<state_dir>/cache)
  uint64_t cache_max_bytes = uint64_t{10} << 30;
};

struct ResolvedModel {
  Manifest manifest;
  std::string local_path;  // verified model file
  Duration fetch_time{0};  // resolve + download/cache + verify
  CachePin pin;            // keeps the cached file from eviction while the model is loaded
  bool cache_hit = true;   // no bytes were downloaded
};

struct CurrentState {
  CurrentPointer pointer;
  std::string etag;
};

struct PromoteResult {
  std::string version;
  std::string previous;  // empty on the first promotion
};

class ModelStore {
 public:
  explicit ModelStore(std::unique_ptr<BlobStore> blobs, StoreOptions options = {});

  StatusOr<std::vector<std::string>> ListModels();
  // Versions that have a manifest, sorted (natural order: "1.10" after "1.9").
  StatusOr<std::vector<std::string>> ListVersions(const std::string& name);
  // NotFound when the model has never been promoted. Re-validated with If-None-Match.
  StatusOr<CurrentPointer> ReadCurrent(const std::string& name);
  StatusOr<CurrentState> ReadCurrentState(const std::string& name);
  StatusOr<Manifest> ReadManifest(const std::string& name, const std::string& version);

  // Uploads `local_file` as versions/<version>/model.onnx and writes its manifest (files filled
  // in here from the bytes uploaded). AlreadyExists if the version exists: versions are immutable.
  StatusOr<Manifest> PushVersion(const std::string& name, const std::string& version, const std::string& local_file,
                                 Manifest schema, const ProgressFn& progress = {});
  // Verifies `version` (every file against its manifest), then points current.json at it,
  // pushing the old one onto history. Aborted when current.json changed concurrently.
  StatusOr<PromoteResult> Promote(const std::string& name, const std::string& version, bool verify = true);
  // Re-promotes the most recent history entry (which leaves history); FailedPrecondition when
  // there is none.
  StatusOr<PromoteResult> Rollback(const std::string& name);
  // Checks every file of a version against its manifest: DataLoss naming the file on a
  // mismatch. Remote files already cached are re-validated with a conditional request.
  Status VerifyVersion(const std::string& name, const std::string& version);

  // `selector` is "current" (or empty) or a version. NotFound / DataLoss / InvalidArgument.
  StatusOr<ResolvedModel> Resolve(const std::string& name, const std::string& selector);

  std::string Describe() const { return blobs_->Describe(); }
  bool remote() const { return remote_; }
  // The verified cache (created on first use under options.cache_dir).
  BlobCache* cache();

 private:
  struct Doc {
    std::string data;
    std::string etag;
  };
  StatusOr<Doc> ReadDoc(const std::string& key);
  StatusOr<FetchResult> FetchFile(const std::string& key, const FileEntry& f, const std::string& dest);
  Status VerifyFile(const std::string& path, const FileEntry& entry);
  StatusOr<std::string> HashCached(const std::string& path);
  StatusOr<PromoteResult> WritePointer(const std::string& name, const std::string& version,
                                       const std::optional<std::string>& expected_etag, CurrentPointer next,
                                       const std::string& previous);

  std::unique_ptr<BlobStore> blobs_;
  StoreOptions options_;
  const bool remote_;
  std::once_flag cache_once_;
  std::unique_ptr<BlobCache> cache_;
  std::mutex mu_;
  struct CachedHash {
    uint64_t size, mtime_ns, inode;
    std::string sha256;
  };
  std::map<std::string, CachedHash> hash_cache_;  // GUARDED_BY(mu_)
  std::map<std::string, Doc> docs_;               // GUARDED_BY(mu_) small documents by key
};

// Natural version comparison: numeric runs compare as numbers.
bool VersionLess(const std::string& a, const std::string& b);

}  // namespace pilotlight::store
