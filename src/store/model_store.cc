#include "store/model_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "common/sha256.h"

namespace pilotlight::store {
namespace {

std::string VersionDir(const std::string& name, const std::string& version) { return name + "/versions/" + version; }

}  // namespace

// Serialises read-modify-write of current.json across processes (advisory lock next to it).
class PointerLock {
 public:
  explicit PointerLock(const std::string& path) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ >= 0) ::flock(fd_, LOCK_EX);
  }
  ~PointerLock() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_ = -1;
};

std::unique_ptr<PointerLock> ModelStore::LockPointer(const std::string& name) {
  std::string where = blobs_->Describe();
  if (where.rfind("file://", 0) != 0) return nullptr;  // object stores use conditional writes instead
  return std::make_unique<PointerLock>(where.substr(7) + "/" + name + "/.lock");
}

bool VersionLess(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      std::string_view na(a.data() + i, i2 - i), nb(b.data() + j, j2 - j);
      while (na.size() > 1 && na.front() == '0') na.remove_prefix(1);
      while (nb.size() > 1 && nb.front() == '0') nb.remove_prefix(1);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = i2;
      j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

ModelStore::ModelStore(std::unique_ptr<BlobStore> blobs) : blobs_(std::move(blobs)) {}

StatusOr<std::vector<std::string>> ModelStore::ListModels() {
  PL_ASSIGN_OR_RETURN(auto names, blobs_->ListChildren(""));
  std::vector<std::string> out;
  for (auto& n : names) {
    if (ValidateName(n, "model").ok() && blobs_->Exists(n + "/versions")) out.push_back(n);
  }
  return out;
}

StatusOr<std::vector<std::string>> ModelStore::ListVersions(const std::string& name) {
  PL_RETURN_IF_ERROR(ValidateName(name, "model name"));
  PL_ASSIGN_OR_RETURN(auto vs, blobs_->ListChildren(name + "/versions"));
  std::vector<std::string> out;
  for (auto& v : vs) {
    if (blobs_->Exists(VersionDir(name, v) + "/manifest.json")) out.push_back(v);
  }
  std::sort(out.begin(), out.end(), VersionLess);
  return out;
}

StatusOr<CurrentPointer> ModelStore::ReadCurrent(const std::string& name) {
  PL_RETURN_IF_ERROR(ValidateName(name, "model name"));
  auto text = blobs_->Read(name + "/current.json");
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      if (!blobs_->Exists(name + "/versions")) {
        return NotFoundError("model '" + name + "' is not in the store " + blobs_->Describe());
      }
      return NotFoundError("model '" + name + "' has no promoted version: run `pilotlight model promote " + name +
                           " VERSION`");
    }
    return text.status();
  }
  return CurrentFromJson(*text);
}

StatusOr<Manifest> ModelStore::ReadManifest(const std::string& name, const std::string& version) {
  PL_RETURN_IF_ERROR(ValidateName(name, "model name"));
  PL_RETURN_IF_ERROR(ValidateName(version, "version"));
  auto text = blobs_->Read(VersionDir(name, version) + "/manifest.json");
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      return NotFoundError("model '" + name + "' has no version '" + version + "' in " + blobs_->Describe());
    }
    return text.status();
  }
  return ManifestFromJson(*text);
}

StatusOr<Manifest> ModelStore::PushVersion(const std::string& name, const std::string& version,
                                           const std::string& local_file, Manifest schema) {
  PL_RETURN_IF_ERROR(ValidateName(name, "model name"));
  PL_RETURN_IF_ERROR(ValidateName(version, "version"));
  std::string dir = VersionDir(name, version);
  if (blobs_->Exists(dir + "/manifest.json")) {
    return AlreadyExistsError("model '" + name + "' version '" + version +
                              "' already exists; versions are immutable, push a new version");
  }
  PL_ASSIGN_OR_RETURN(std::string sha, Sha256File(local_file));
  std::error_code ec;
  uint64_t size = std::filesystem::file_size(local_file, ec);
  if (ec) return NotFoundError("cannot read " + local_file + ": " + ec.message());
  PL_RETURN_IF_ERROR(blobs_->Upload(dir + "/model.onnx", local_file));
  schema.name = name;
  schema.version = version;
  schema.created_at = NowRfc3339();
  schema.files = {{"model.onnx", sha, size}};
  // The manifest is written last: a version without one is invisible (an interrupted push).
  PL_RETURN_IF_ERROR(blobs_->Write(dir + "/manifest.json", ManifestToJson(schema)));
  return schema;
}

Status ModelStore::Promote(const std::string& name, const std::string& version) {
  PL_ASSIGN_OR_RETURN(Manifest m, ReadManifest(name, version));
  auto lock = LockPointer(name);
  CurrentPointer next;
  auto cur = ReadCurrent(name);
  if (cur.ok()) {
    next.history = cur->history;
    if (cur->version != version) next.history.push_back({cur->version, cur->promoted_at});
  } else if (cur.status().code() != StatusCode::kNotFound) {
    return cur.status();
  }
  next.version = version;
  next.sha256 = m.ModelFile()->sha256;
  next.promoted_at = NowRfc3339();
  return blobs_->Write(name + "/current.json", CurrentToJson(next));
}

StatusOr<std::string> ModelStore::Rollback(const std::string& name) {
  auto lock = LockPointer(name);
  PL_ASSIGN_OR_RETURN(CurrentPointer cur, ReadCurrent(name));
  if (cur.history.empty()) {
    return FailedPreconditionError("model '" + name + "' has no earlier promotion to roll back to (current is " +
                                   cur.version + ")");
  }
  HistoryEntry prev = cur.history.back();
  PL_ASSIGN_OR_RETURN(Manifest m, ReadManifest(name, prev.version));
  CurrentPointer next;
  next.history = cur.history;
  next.history.pop_back();
  next.version = prev.version;
  next.sha256 = m.ModelFile()->sha256;
  next.promoted_at = NowRfc3339();
  PL_RETURN_IF_ERROR(blobs_->Write(name + "/current.json", CurrentToJson(next)));
  return prev.version;
}

StatusOr<std::string> ModelStore::HashCached(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return NotFoundError(path + " does not exist");
  uint64_t mtime = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ull + st.st_mtim.tv_nsec;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = hash_cache_.find(path);
    if (it != hash_cache_.end() && it->second.size == static_cast<uint64_t>(st.st_size) &&
        it->second.mtime_ns == mtime && it->second.inode == st.st_ino) {
      return it->second.sha256;
    }
  }
  PL_ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
  std::lock_guard<std::mutex> l(mu_);
  hash_cache_[path] = {static_cast<uint64_t>(st.st_size), mtime, static_cast<uint64_t>(st.st_ino), sha};
  return sha;
}

Status ModelStore::VerifyFile(const std::string& path, const FileEntry& entry) {
  PL_ASSIGN_OR_RETURN(std::string sha, HashCached(path));
  if (sha != entry.sha256) {
    return DataLossError("sha256 mismatch for " + path + ": manifest says " + entry.sha256 + ", file has " + sha +
                         "; the file was modified or corrupted — push it again as a new version");
  }
  return OkStatus();
}

StatusOr<ResolvedModel> ModelStore::Resolve(const std::string& name, const std::string& selector) {
  auto start = std::chrono::steady_clock::now();
  std::string version = selector;
  if (selector.empty() || selector == "current") {
    PL_ASSIGN_OR_RETURN(CurrentPointer cur, ReadCurrent(name));
    version = cur.version;
  }
  ResolvedModel out;
  PL_ASSIGN_OR_RETURN(out.manifest, ReadManifest(name, version));
  std::string dir = VersionDir(name, version);
  for (const auto& f : out.manifest.files) {
    PL_ASSIGN_OR_RETURN(std::string path, blobs_->Localize(dir + "/" + f.path));
    Status st = VerifyFile(path, f);
    if (!st.ok()) return st.WithContext("model '" + name + "' version '" + version + "'");
    if (&f == out.manifest.ModelFile()) out.local_path = path;
  }
  out.fetch_time = std::chrono::steady_clock::now() - start;
  return out;
}

}  // namespace pilotlight::store
