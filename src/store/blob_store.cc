#include "store/blob_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "common/fileio.h"
#include "common/sha256.h"

namespace pilotlight::store {
namespace fs = std::filesystem;

namespace {

std::string TempName(const std::string& path) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rng() % 1000000);
}

// Temp file → fsync → rename over the target → fsync the directory (leveldb SetCurrentFile).
Status PublishAtomically(const std::string& path, const std::function<Status(const std::string&)>& fill) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) return InternalError("cannot create " + fs::path(path).parent_path().string() + ": " + ec.message());
  std::string tmp = TempName(path);
  Status st = fill(tmp);
  if (st.ok()) st = FsyncPath(tmp, false);
  if (st.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    st = InternalError("rename " + tmp + ": " + std::strerror(errno));
  }
  if (!st.ok()) {
    fs::remove(tmp, ec);
    return st;
  }
  return FsyncPath(fs::path(path).parent_path().string(), true);
}

// Local ETag: changes whenever the file is replaced (atomic rename → new inode) or rewritten.
std::string LocalEtag(const struct stat& st) {
  return fmt::format("\"{:x}-{:x}-{:x}\"", static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_size),
                     static_cast<uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ull + st.st_mtim.tv_nsec);
}

std::string EtagOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "";
  return LocalEtag(st);
}

// Serialises conditional writes to one key across processes (advisory lock beside it).
class KeyLock {
 public:
  explicit KeyLock(const std::string& path) {
    fd_ = ::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ >= 0) ::flock(fd_, LOCK_EX);
  }
  ~KeyLock() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_ = -1;
};

}  // namespace

Status ValidateKey(const std::string& key) {
  if (key.empty() || key.front() == '/') return InvalidArgumentError("invalid store key '" + key + "'");
  std::stringstream ss(key);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgumentError("store key '" + key + "' escapes the store root");
    }
  }
  if (key.back() == '/') return InvalidArgumentError("invalid store key '" + key + "'");
  return OkStatus();
}

LocalBlobStore::LocalBlobStore(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

StatusOr<std::string> LocalBlobStore::PathFor(const std::string& key) const {
  PL_RETURN_IF_ERROR(ValidateKey(key));
  return root_ + "/" + key;
}

StatusOr<ReadResult> LocalBlobStore::Read(const std::string& key, const std::string& if_none_match) {
  PL_ASSIGN_OR_RETURN(std::string path, PathFor(key));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFoundError(path + " does not exist");
  struct stat st {};
  ::fstat(fd, &st);
  ReadResult out;
  out.etag = LocalEtag(st);
  if (!if_none_match.empty() && if_none_match == out.etag) {
    ::close(fd);
    out.not_modified = true;
    return out;
  }
  out.data.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.data.size()) {
    ssize_t r = ::read(fd, out.data.data() + got, out.data.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  if (got != out.data.size()) return DataLossError("short read on " + path);
  return out;
}

StatusOr<std::string> LocalBlobStore::Write(const std::string& key, std::string_view data, const WriteCondition& cond) {
  PL_ASSIGN_OR_RETURN(std::string path, PathFor(key));
  std::optional<KeyLock> lock;
  if (!cond.if_match.empty() || cond.if_absent) {
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    lock.emplace(path);
    std::string now = EtagOf(path);
    if (cond.if_absent && !now.empty()) return AbortedError(path + " already exists (written concurrently)");
    if (!cond.if_match.empty() && now != cond.if_match) {
      return AbortedError(path + " changed since it was read (written concurrently)");
    }
  }
  PL_RETURN_IF_ERROR(PublishAtomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.close();
    if (!out) return InternalError("cannot write " + tmp);
    return OkStatus();
  }));
  return EtagOf(path);
}

Status LocalBlobStore::Upload(const std::string& key, const std::string& local_path, const ProgressFn& progress) {
  PL_ASSIGN_OR_RETURN(std::string path, PathFor(key));
  if (!fs::is_regular_file(local_path)) return NotFoundError(local_path + " is not a readable file");
  return PublishAtomically(path, [&](const std::string& tmp) {
    std::error_code ec;
    fs::copy_file(local_path, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) return InternalError("cannot copy " + local_path + " to " + tmp + ": " + ec.message());
    if (progress) {
      uint64_t n = fs::file_size(tmp, ec);
      progress(n, n);
    }
    return OkStatus();
  });
}

bool LocalBlobStore::Exists(const std::string& key) {
  auto path = PathFor(key);
  return path.ok() && fs::exists(*path);
}

StatusOr<std::vector<std::string>> LocalBlobStore::ListChildren(const std::string& prefix) {
  std::string dir = root_;
  if (!prefix.empty()) {
    PL_ASSIGN_OR_RETURN(dir, PathFor(prefix));
  }
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (!n.empty() && n.front() != '.' && n.find(".tmp.") == std::string::npos &&
        !(n.size() > 5 && n.compare(n.size() - 5, 5, ".lock") == 0)) {
      out.push_back(n);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

StatusOr<FetchResult> LocalBlobStore::Fetch(const std::string& key, const std::string& dest,
                                            const std::string& if_none_match, const ProgressFn& progress) {
  PL_ASSIGN_OR_RETURN(std::string path, PathFor(key));
  FetchResult out;
  out.etag = EtagOf(path);
  if (out.etag.empty()) return NotFoundError(path + " does not exist");
  if (!if_none_match.empty() && if_none_match == out.etag) {
    out.not_modified = true;
    return out;
  }
  std::error_code ec;
  fs::copy_file(path, dest, fs::copy_options::overwrite_existing, ec);
  if (ec) return InternalError("cannot copy " + path + " to " + dest + ": " + ec.message());
  PL_ASSIGN_OR_RETURN(out.sha256, Sha256File(dest));
  out.size = fs::file_size(dest, ec);
  if (progress) progress(out.size, out.size);
  return out;
}

std::optional<std::string> LocalBlobStore::LocalPath(const std::string& key) {
  auto path = PathFor(key);
  if (!path.ok()) return std::nullopt;
  return *path;
}

// ---- S3 ----------------------------------------------------------------------------------------

S3BlobStore::S3BlobStore(S3Options options, std::string prefix)
    : client_(std::move(options)), prefix_(std::move(prefix)) {}

std::string S3BlobStore::Describe() const {
  return "s3://" + client_.options().bucket + (prefix_.empty() ? "" : "/" + prefix_);
}

std::string S3BlobStore::Describe(const std::string& key) const { return Describe() + "/" + key; }

StatusOr<std::string> S3BlobStore::FullKey(const std::string& key) const {
  PL_RETURN_IF_ERROR(ValidateKey(key));
  return prefix_.empty() ? key : prefix_ + "/" + key;
}

StatusOr<ReadResult> S3BlobStore::Read(const std::string& key, const std::string& if_none_match) {
  PL_ASSIGN_OR_RETURN(std::string k, FullKey(key));
  PL_ASSIGN_OR_RETURN(ObjectInfo o, client_.Get(k, Conditions{.if_match = "", .if_none_match = if_none_match}));
  ReadResult out;
  out.etag = o.status == 304 ? if_none_match : o.etag;
  out.not_modified = o.status == 304;
  out.data = std::move(o.body);
  return out;
}

StatusOr<std::string> S3BlobStore::Write(const std::string& key, std::string_view data, const WriteCondition& cond) {
  PL_ASSIGN_OR_RETURN(std::string k, FullKey(key));
  Conditions c;
  c.if_match = cond.if_match;
  if (cond.if_absent) c.if_none_match = "*";
  auto put = client_.Put(k, data, c);
  if (!put.ok() && put.status().code() == StatusCode::kAborted) {
    // A retried conditional PUT whose first attempt committed (the answer was lost) gets 412
    // from its own write: if the object now holds exactly our bytes, the write happened.
    auto now = client_.Get(k);
    if (now.ok() && now->status == 200 && now->body == data) return now->etag;
  }
  PL_RETURN_IF_ERROR(put.status());
  return put->etag;
}

Status S3BlobStore::Upload(const std::string& key, const std::string& local_path, const ProgressFn& progress) {
  PL_ASSIGN_OR_RETURN(std::string k, FullKey(key));
  return client_.PutFile(k, local_path, progress).status();
}

bool S3BlobStore::Exists(const std::string& key) {
  auto k = FullKey(key);
  if (!k.ok()) return false;
  if (client_.Head(*k).ok()) return true;
  auto l = client_.List(*k + "/", "/", 1);
  return l.ok() && (!l->keys.empty() || !l->prefixes.empty());
}

StatusOr<std::vector<std::string>> S3BlobStore::ListChildren(const std::string& prefix) {
  std::string p = prefix_;
  if (!prefix.empty()) {
    PL_ASSIGN_OR_RETURN(p, FullKey(prefix));
  }
  if (!p.empty()) p += "/";
  PL_ASSIGN_OR_RETURN(Listing l, client_.List(p, "/"));
  std::vector<std::string> out;
  for (const auto& cp : l.prefixes) {
    std::string n = cp.substr(p.size());
    if (!n.empty() && n.back() == '/') n.pop_back();
    if (!n.empty()) out.push_back(n);
  }
  for (const auto& k : l.keys) {
    std::string n = k.substr(p.size());
    if (!n.empty()) out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

StatusOr<FetchResult> S3BlobStore::Fetch(const std::string& key, const std::string& dest,
                                         const std::string& if_none_match, const ProgressFn& progress) {
  PL_ASSIGN_OR_RETURN(std::string k, FullKey(key));
  PL_ASSIGN_OR_RETURN(ObjectInfo o,
                      client_.Download(k, dest, Conditions{.if_match = "", .if_none_match = if_none_match}, progress));
  FetchResult out;
  out.not_modified = o.status == 304;
  out.etag = out.not_modified ? if_none_match : o.etag;
  out.last_modified = o.last_modified;
  out.size = o.size;
  out.sha256 = o.sha256;
  return out;
}

StatusOr<std::unique_ptr<BlobStore>> OpenBlobStore(const std::string& uri, const S3Settings& s3) {
  std::string path;
  if (uri.rfind("s3://", 0) == 0) {
    std::string rest = uri.substr(5);
    auto slash = rest.find('/');
    std::string bucket = rest.substr(0, slash);
    std::string prefix = slash == std::string::npos ? "" : rest.substr(slash + 1);
    while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
    if (bucket.empty()) return InvalidArgumentError("store '" + uri + "' names no bucket: use s3://BUCKET/PREFIX");
    if (!prefix.empty()) PL_RETURN_IF_ERROR(ValidateKey(prefix).WithContext("store '" + uri + "'"));
    PL_ASSIGN_OR_RETURN(S3Options o, ResolveS3Options(bucket, s3, [](const char* n) { return std::getenv(n); }));
    return std::unique_ptr<BlobStore>(std::make_unique<S3BlobStore>(std::move(o), prefix));
  }
  if (uri.rfind("file://", 0) == 0) {
    path = uri.substr(7);
  } else if (uri.find("://") != std::string::npos) {
    return InvalidArgumentError("store '" + uri + "' has an unsupported scheme: use file://PATH or s3://BUCKET/PREFIX");
  } else {
    path = uri;
  }
  if (path.empty()) return InvalidArgumentError("store URI '" + uri + "' names no folder");
  return std::unique_ptr<BlobStore>(std::make_unique<LocalBlobStore>(path));
}

}  // namespace pilotlight::store
