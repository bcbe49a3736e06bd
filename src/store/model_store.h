// ModelStore: the seeds' versioned layout over a BlobStore.
//
//   <name>/versions/<ver>/model.onnx + manifest.json
//   <name>/current.json        {"version", "sha256", "promoted_at", "history": [...]}
//
// Resolve() turns "name@current" or "name@<ver>" into a verified local path: every file's
// sha256 is checked against the manifest before the path is handed out (a small in-memory cache
// keyed by path, size, mtime and inode avoids re-hashing unchanged files). A file whose sha256
// does not match is never handed out (DataLoss).
// Thread-safety: all methods may be called concurrently; promote/rollback serialise per model
// with an advisory file lock (local) so two CLIs cannot interleave.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "store/blob_store.h"
#include "store/manifest.h"

namespace pilotlight::store {

class PointerLock;

struct ResolvedModel {
  Manifest manifest;
  std::string local_path;  // verified model file
  Duration fetch_time{0};  // resolve + localize + verify
};

class ModelStore {
 public:
  explicit ModelStore(std::unique_ptr<BlobStore> blobs);

  StatusOr<std::vector<std::string>> ListModels();
  // Versions that have a manifest, sorted (natural order: "1.10" after "1.9").
  StatusOr<std::vector<std::string>> ListVersions(const std::string& name);
  // NotFound when the model has never been promoted.
  StatusOr<CurrentPointer> ReadCurrent(const std::string& name);
  StatusOr<Manifest> ReadManifest(const std::string& name, const std::string& version);

  // Uploads `local_file` as versions/<version>/model.onnx and writes its manifest (files filled
  // in here from the bytes uploaded). AlreadyExists if the version exists: versions are immutable.
  StatusOr<Manifest> PushVersion(const std::string& name, const std::string& version, const std::string& local_file,
                                 Manifest schema);
  // Points current.json at `version` (which must exist), pushing the old one onto history.
  Status Promote(const std::string& name, const std::string& version);
  // Re-promotes the most recent history entry; FailedPrecondition when there is none.
  StatusOr<std::string> Rollback(const std::string& name);

  // `selector` is "current" (or empty) or a version. NotFound / DataLoss / InvalidArgument.
  StatusOr<ResolvedModel> Resolve(const std::string& name, const std::string& selector);

  std::string Describe() const { return blobs_->Describe(); }

 private:
  std::unique_ptr<PointerLock> LockPointer(const std::string& name);
  Status VerifyFile(const std::string& path, const FileEntry& entry);
  StatusOr<std::string> HashCached(const std::string& path);

  std::unique_ptr<BlobStore> blobs_;
  std::mutex mu_;
  struct CachedHash {
    uint64_t size, mtime_ns, inode;
    std::string sha256;
  };
  std::map<std::string, CachedHash> hash_cache_;  // GUARDED_BY(mu_)
};

// Natural version comparison: numeric runs compare as numbers.
bool VersionLess(const std::string& a, const std::string& b);

}  // namespace pilotlight::store
