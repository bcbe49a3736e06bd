// BlobStore: the small storage interface under the model store. Keys are '/'-separated
// relative paths ("digits/versions/1.0.0/model.onnx"); implementations refuse keys that
// escape their root. Two backends: LocalBlobStore (`file://`, the default) and S3BlobStore
// (`s3://bucket/prefix`, any S3-compatible service).
//
// Every blob has an ETag (S3's own; for local files one derived from inode, size and mtime) so
// readers can re-validate cheaply (If-None-Match → not modified) and writers can
// compare-and-swap (If-Match → Aborted when someone else wrote first).
// Thread-safety: implementations are safe for concurrent use.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/s3_client.h"

namespace pilotlight::store {

struct ReadResult {
  std::string data;  // empty when not_modified
  std::string etag;
  bool not_modified = false;
};

struct WriteCondition {
  std::string if_match;    // write only if the blob's ETag is still this
  bool if_absent = false;  // write only if the blob does not exist
};

struct FetchResult {
  std::string etag;
  std::string last_modified;
  uint64_t size = 0;
  std::string sha256;  // of the bytes written
  bool not_modified = false;
};

class BlobStore {
 public:
  virtual ~BlobStore() = default;
  // NotFound if absent. With `if_none_match` equal to the blob's ETag: not_modified, no data.
  virtual StatusOr<ReadResult> Read(const std::string& key, const std::string& if_none_match = "") = 0;
  // Atomic publication: readers see the old or the new content, never a mix. Aborted when
  // `cond` does not hold. Returns the new ETag.
  virtual StatusOr<std::string> Write(const std::string& key, std::string_view data,
                                      const WriteCondition& cond = {}) = 0;
  // Copies a local file into the store atomically (multipart for big files on S3).
  virtual Status Upload(const std::string& key, const std::string& local_path, const ProgressFn& progress = {}) = 0;
  // True when `key` is a blob or a non-empty folder.
  virtual bool Exists(const std::string& key) = 0;
  // Names directly under `prefix` ("" for the root), sorted. Empty if the prefix is absent.
  virtual StatusOr<std::vector<std::string>> ListChildren(const std::string& prefix) = 0;
  // Streams the blob into `dest` (a new local file), hashing it. With `if_none_match` equal to
  // the blob's ETag: not_modified and nothing written.
  virtual StatusOr<FetchResult> Fetch(const std::string& key, const std::string& dest,
                                      const std::string& if_none_match = "", const ProgressFn& progress = {}) = 0;
  // The blob's own local path when the store is a local folder (no copy needed); nullopt for
  // remote stores.
  virtual std::optional<std::string> LocalPath(const std::string& key) = 0;
  virtual std::string Describe() const = 0;
  virtual std::string Describe(const std::string& key) const { return Describe() + "/" + key; }
};

class LocalBlobStore final : public BlobStore {
 public:
  explicit LocalBlobStore(std::string root);
  StatusOr<ReadResult> Read(const std::string& key, const std::string& if_none_match = "") override;
  StatusOr<std::string> Write(const std::string& key, std::string_view data, const WriteCondition& cond = {}) override;
  Status Upload(const std::string& key, const std::string& local_path, const ProgressFn& progress = {}) override;
  bool Exists(const std::string& key) override;
  StatusOr<std::vector<std::string>> ListChildren(const std::string& prefix) override;
  StatusOr<FetchResult> Fetch(const std::string& key, const std::string& dest, const std::string& if_none_match = "",
                              const ProgressFn& progress = {}) override;
  std::optional<std::string> LocalPath(const std::string& key) override;
  std::string Describe() const override { return "file://" + root_; }
  const std::string& root() const { return root_; }

 private:
  StatusOr<std::string> PathFor(const std::string& key) const;
  std::string root_;
};

class S3BlobStore final : public BlobStore {
 public:
  // `prefix` without leading or trailing '/' ("" for the bucket root).
  S3BlobStore(S3Options options, std::string prefix);
  StatusOr<ReadResult> Read(const std::string& key, const std::string& if_none_match = "") override;
  StatusOr<std::string> Write(const std::string& key, std::string_view data, const WriteCondition& cond = {}) override;
  Status Upload(const std::string& key, const std::string& local_path, const ProgressFn& progress = {}) override;
  bool Exists(const std::string& key) override;
  StatusOr<std::vector<std::string>> ListChildren(const std::string& prefix) override;
  StatusOr<FetchResult> Fetch(const std::string& key, const std::string& dest, const std::string& if_none_match = "",
                              const ProgressFn& progress = {}) override;
  std::optional<std::string> LocalPath(const std::string&) override { return std::nullopt; }
  std::string Describe() const override;
  std::string Describe(const std::string& key) const override;
  S3Client& client() { return client_; }

 private:
  StatusOr<std::string> FullKey(const std::string& key) const;
  S3Client client_;
  std::string prefix_;
};

// Checks a relative key: no absolute keys, no "." / ".." / empty segments.
Status ValidateKey(const std::string& key);

// Opens a store URI: "file://./models", "file:///abs/models", a bare path, or
// "s3://bucket/prefix" (with `s3` settings + the AWS environment). InvalidArgument otherwise.
StatusOr<std::unique_ptr<BlobStore>> OpenBlobStore(const std::string& uri, const S3Settings& s3 = {});

}  // namespace pilotlight::store
