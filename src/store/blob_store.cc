#include "store/blob_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

namespace pilotlight::store {
namespace fs = std::filesystem;

namespace {

Status SyncPath(const std::string& path, bool dir) {
  int fd = ::open(path.c_str(), (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return InternalError("open " + path + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return InternalError("fsync " + path + ": " + std::strerror(errno));
  return OkStatus();
}

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
  if (st.ok()) st = SyncPath(tmp, false);
  if (st.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    st = InternalError("rename " + tmp + ": " + std::strerror(errno));
  }
  if (!st.ok()) {
    fs::remove(tmp, ec);
    return st;
  }
  return SyncPath(fs::path(path).parent_path().string(), true);
}

}  // namespace

LocalBlobStore::LocalBlobStore(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

StatusOr<std::string> LocalBlobStore::PathFor(const std::string& key) const {
  // Keys come from validated names, but check anyway: no absolute keys, no "..", no empty parts.
  if (key.empty() || key.front() == '/') return InvalidArgumentError("invalid store key '" + key + "'");
  std::stringstream ss(key);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgumentError("store key '" + key + "' escapes the store root");
    }
  }
  return root_ + "/" + key;
}

StatusOr<std::string> LocalBlobStore::Read(const std::string& key) {
  PL_ASSIGN_OR_RETURN(std::string path, PathFor(key));
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path + " does not exist");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return DataLossError("read error on " + path);
  return ss.str();
}

Status LocalBlobStore::Write(const std::string& key, std::string_view data) {
  PL_ASSIGN_OR_RETURN(std::string path, PathFor(key));
  return PublishAtomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.close();
    if (!out) return InternalError("cannot write " + tmp);
    return OkStatus();
  });
}

Status LocalBlobStore::Upload(const std::string& key, const std::string& local_path) {
  PL_ASSIGN_OR_RETURN(std::string path, PathFor(key));
  if (!fs::is_regular_file(local_path)) return NotFoundError(local_path + " is not a readable file");
  return PublishAtomically(path, [&](const std::string& tmp) {
    std::error_code ec;
    fs::copy_file(local_path, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) return InternalError("cannot copy " + local_path + " to " + tmp + ": " + ec.message());
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
    if (!n.empty() && n.front() != '.' && n.find(".tmp.") == std::string::npos) out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

StatusOr<std::string> LocalBlobStore::Localize(const std::string& key) {
  PL_ASSIGN_OR_RETURN(std::string path, PathFor(key));
  if (!fs::is_regular_file(path)) return NotFoundError(path + " does not exist");
  return path;
}

StatusOr<std::unique_ptr<BlobStore>> OpenBlobStore(const std::string& uri) {
  std::string path;
  if (uri.rfind("file://", 0) == 0) {
    path = uri.substr(7);
  } else if (uri.find("://") != std::string::npos) {
    return InvalidArgumentError("store '" + uri +
                                "' is not supported yet: use file://PATH (s3:// arrives with the object-store "
                                "backend)");
  } else {
    path = uri;
  }
  if (path.empty()) return InvalidArgumentError("store URI '" + uri + "' names no folder");
  return std::unique_ptr<BlobStore>(std::make_unique<LocalBlobStore>(path));
}

}  // namespace pilotlight::store
