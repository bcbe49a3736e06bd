// Manifest (versions/<ver>/manifest.json) and CurrentPointer (<name>/current.json): the
// documents of the seeds' model-store layout, with (de)serialisation. Plain value types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace pilotlight::store {

struct FileEntry {
  std::string path;    // relative to the version folder, e.g. "model.onnx"
  std::string sha256;  // lowercase hex
  uint64_t size_bytes = 0;
  // Optional: fetch the file from this http(s) URL (a presigned URL, a web server) instead of
  // the version folder. The sha256 is checked all the same.
  std::string url;
};

struct TensorInfo {
  std::string name;
  std::string dtype;           // "float32", "int64", ...
  std::vector<int64_t> shape;  // -1 = dynamic
};

struct Manifest {
  std::string name;
  std::string version;
  std::string framework = "onnx";
  std::string created_at;  // RFC 3339 UTC
  std::vector<FileEntry> files;
  std::vector<TensorInfo> inputs;
  std::vector<TensorInfo> outputs;

  // The entry for the model file (the first file; "model.onnx" by convention).
  const FileEntry* ModelFile() const { return files.empty() ? nullptr : &files.front(); }
};

struct HistoryEntry {
  std::string version;
  std::string promoted_at;
};

struct CurrentPointer {
  std::string version;
  std::string sha256;  // of the version's manifest.json bytes, so a reader can tell a stale or swapped manifest
  std::string promoted_at;
  std::vector<HistoryEntry> history;  // earlier promotions, oldest first
};

std::string ManifestToJson(const Manifest& m);
// DataLoss when the document is not a valid manifest (it is untrusted input).
StatusOr<Manifest> ManifestFromJson(std::string_view text);
std::string CurrentToJson(const CurrentPointer& c);
StatusOr<CurrentPointer> CurrentFromJson(std::string_view text);

// Model names and versions become path components: 1..128 of [A-Za-z0-9._-], not "." or "..",
// not starting with '.'. InvalidArgument naming `what` otherwise.
Status ValidateName(std::string_view value, std::string_view what);

}  // namespace pilotlight::store
