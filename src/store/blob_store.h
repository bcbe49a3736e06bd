// BlobStore: the small storage interface under the model store. Keys are '/'-separated
// relative paths ("digits/versions/1.0.0/model.onnx"); implementations refuse keys that
// escape their root. LocalBlobStore is the `file://` backend; S3 arrives with the store issue.
// Thread-safety: implementations are safe for concurrent use.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace pilotlight::store {

class BlobStore {
 public:
  virtual ~BlobStore() = default;
  // NotFound if absent.
  virtual StatusOr<std::string> Read(const std::string& key) = 0;
  // Atomic publication: readers see the old or the new content, never a mix.
  virtual Status Write(const std::string& key, std::string_view data) = 0;
  // Copies a local file into the store atomically.
  virtual Status Upload(const std::string& key, const std::string& local_path) = 0;
  virtual bool Exists(const std::string& key) = 0;
  // Names directly under `prefix` ("" for the root), sorted. Empty if the prefix is absent.
  virtual StatusOr<std::vector<std::string>> ListChildren(const std::string& prefix) = 0;
  // A local file path holding the blob, fetched if needed. For file:// it is the file itself.
  virtual StatusOr<std::string> Localize(const std::string& key) = 0;
  virtual std::string Describe() const = 0;
};

class LocalBlobStore final : public BlobStore {
 public:
  explicit LocalBlobStore(std::string root);
  StatusOr<std::string> Read(const std::string& key) override;
  Status Write(const std::string& key, std::string_view data) override;
  Status Upload(const std::string& key, const std::string& local_path) override;
  bool Exists(const std::string& key) override;
  StatusOr<std::vector<std::string>> ListChildren(const std::string& prefix) override;
  StatusOr<std::string> Localize(const std::string& key) override;
  std::string Describe() const override { return "file://" + root_; }

 private:
  StatusOr<std::string> PathFor(const std::string& key) const;
  std::string root_;
};

// Parses a store URI: "file://./models", "file:///abs/models" or a bare path.
// InvalidArgument for other schemes, saying which ones are supported.
StatusOr<std::unique_ptr<BlobStore>> OpenBlobStore(const std::string& uri);

}  // namespace pilotlight::store
