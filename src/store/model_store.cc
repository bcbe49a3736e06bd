#include "store/model_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "common/logging.h"
#include "common/sha256.h"

namespace pilotlight::store {
namespace {

std::string VersionDir(const std::string& name, const std::string& version) { return name + "/versions/" + version; }

}  // namespace

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

ModelStore::ModelStore(std::unique_ptr<BlobStore> blobs, StoreOptions options)
    : blobs_(std::move(blobs)), options_(std::move(options)), remote_(!blobs_->LocalPath("x").has_value()) {
  if (options_.cache_dir.empty()) options_.cache_dir = "./.pilotlight/cache";
}

BlobCache* ModelStore::cache() {
  std::call_once(cache_once_, [this] {
    cache_ = std::make_unique<BlobCache>(CacheOptions{options_.cache_dir, options_.cache_max_bytes});
  });
  return cache_.get();
}

StatusOr<ModelStore::Doc> ModelStore::ReadDoc(const std::string& key) {
  std::string etag;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (auto it = docs_.find(key); it != docs_.end()) etag = it->second.etag;
  }
  auto r = blobs_->Read(key, etag);
  std::lock_guard<std::mutex> l(mu_);
  if (!r.ok()) {
    docs_.erase(key);
    return r.status();
  }
  if (r->not_modified) {
    if (auto it = docs_.find(key); it != docs_.end()) return it->second;
    return UnavailableError(Describe() + "/" + key + " answered 'not modified' to an unknown ETag; retry");
  }
  Doc d{std::move(r->data), std::move(r->etag)};
  if (d.data.size() <= (1u << 20)) docs_[key] = d;
  return d;
}

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
    if (ValidateName(v, "version").ok() && blobs_->Exists(VersionDir(name, v) + "/manifest.json")) out.push_back(v);
  }
  std::sort(out.begin(), out.end(), VersionLess);
  return out;
}

StatusOr<CurrentState> ModelStore::ReadCurrentState(const std::string& name) {
  PL_RETURN_IF_ERROR(ValidateName(name, "model name"));
  auto doc = ReadDoc(name + "/current.json");
  if (!doc.ok()) {
    if (doc.status().code() == StatusCode::kNotFound) {
      if (!blobs_->Exists(name + "/versions")) {
        return NotFoundError("model '" + name + "' is not in the store " + blobs_->Describe());
      }
      return NotFoundError("model '" + name + "' has no promoted version: run `pilotlight model promote " + name +
                           " VERSION`");
    }
    return doc.status();
  }
  PL_ASSIGN_OR_RETURN(CurrentPointer p, CurrentFromJson(doc->data));
  return CurrentState{std::move(p), doc->etag};
}

StatusOr<CurrentPointer> ModelStore::ReadCurrent(const std::string& name) {
  PL_ASSIGN_OR_RETURN(CurrentState s, ReadCurrentState(name));
  return std::move(s.pointer);
}

StatusOr<Manifest> ModelStore::ReadManifest(const std::string& name, const std::string& version) {
  PL_RETURN_IF_ERROR(ValidateName(name, "model name"));
  PL_RETURN_IF_ERROR(ValidateName(version, "version"));
  auto doc = ReadDoc(VersionDir(name, version) + "/manifest.json");
  if (!doc.ok()) {
    if (doc.status().code() == StatusCode::kNotFound) {
      return NotFoundError("model '" + name + "' has no version '" + version + "' in " + blobs_->Describe());
    }
    return doc.status();
  }
  return ManifestFromJson(doc->data);
}

StatusOr<Manifest> ModelStore::PushVersion(const std::string& name, const std::string& version,
                                           const std::string& local_file, Manifest schema, const ProgressFn& progress) {
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
  PL_RETURN_IF_ERROR(blobs_->Upload(dir + "/model.onnx", local_file, progress));
  schema.name = name;
  schema.version = version;
  schema.created_at = NowRfc3339();
  schema.files = {{"model.onnx", sha, size, ""}};
  // The manifest is written last, create-only: a version without one is invisible (an
  // interrupted push), and two pushes of the same version cannot both win.
  auto written =
      blobs_->Write(dir + "/manifest.json", ManifestToJson(schema), WriteCondition{.if_match = "", .if_absent = true});
  if (!written.ok() && written.status().code() == StatusCode::kAborted) {
    return AlreadyExistsError("model '" + name + "' version '" + version + "' was pushed concurrently by someone else");
  }
  PL_RETURN_IF_ERROR(written.status());
  return schema;
}

StatusOr<PromoteResult> ModelStore::WritePointer(const std::string& name, const std::string& version,
                                                 const std::optional<std::string>& expected_etag, CurrentPointer next,
                                                 const std::string& previous) {
  WriteCondition cond;
  if (expected_etag) {
    cond.if_match = *expected_etag;
  } else {
    cond.if_absent = true;
  }
  auto written = blobs_->Write(name + "/current.json", CurrentToJson(next), cond);
  if (!written.ok()) {
    if (written.status().code() == StatusCode::kAborted) {
      std::string now = "another version";
      if (auto raw = blobs_->Read(name + "/current.json"); raw.ok()) {
        if (auto p = CurrentFromJson(raw->data); p.ok()) now = "'" + p->version + "'";
      }
      return AbortedError("current.json of model '" + name + "' changed while this command ran (it now points at " +
                          now +
                          "): another promote or rollback won. Nothing was overwritten; check `pilotlight "
                          "model versions " +
                          name + "` and run the command again if still wanted");
    }
    return written.status();
  }
  return PromoteResult{version, previous};
}

StatusOr<PromoteResult> ModelStore::Promote(const std::string& name, const std::string& version, bool verify) {
  PL_RETURN_IF_ERROR(ValidateName(name, "model name"));
  PL_RETURN_IF_ERROR(ValidateName(version, "version"));
  std::string mkey = VersionDir(name, version) + "/manifest.json";
  auto mdoc = blobs_->Read(mkey);
  if (!mdoc.ok()) {
    if (mdoc.status().code() == StatusCode::kNotFound) {
      return NotFoundError("model '" + name + "' has no version '" + version + "' in " + blobs_->Describe() +
                           ": push it first");
    }
    return mdoc.status();
  }
  PL_ASSIGN_OR_RETURN(Manifest m, ManifestFromJson(mdoc->data));
  if (verify) {
    Status v = VerifyVersion(name, version);
    if (!v.ok()) return Status(v.code(), "refusing to promote " + name + "@" + version + ": " + v.message());
  }
  // Read the pointer fresh (not through the document cache): its ETag is the CAS token.
  CurrentPointer next;
  std::optional<std::string> etag;
  std::string previous;
  auto cur = blobs_->Read(name + "/current.json");
  if (cur.ok()) {
    etag = cur->etag;
    PL_ASSIGN_OR_RETURN(CurrentPointer c, CurrentFromJson(cur->data));
    previous = c.version;
    next.history = c.history;
    if (c.version != version) next.history.push_back({c.version, c.promoted_at});
  } else if (cur.status().code() != StatusCode::kNotFound) {
    return cur.status();
  }
  next.version = version;
  next.sha256 = Sha256Hex(mdoc->data);
  next.promoted_at = NowRfc3339();
  return WritePointer(name, version, etag, std::move(next), previous);
}

StatusOr<PromoteResult> ModelStore::Rollback(const std::string& name) {
  PL_RETURN_IF_ERROR(ValidateName(name, "model name"));
  auto cur = blobs_->Read(name + "/current.json");
  if (!cur.ok()) {
    if (cur.status().code() == StatusCode::kNotFound) return ReadCurrent(name).status();
    return cur.status();
  }
  PL_ASSIGN_OR_RETURN(CurrentPointer c, CurrentFromJson(cur->data));
  if (c.history.empty()) {
    return FailedPreconditionError("model '" + name + "' has no earlier promotion to roll back to (current is " +
                                   c.version + ")");
  }
  HistoryEntry prev = c.history.back();
  auto mdoc = blobs_->Read(VersionDir(name, prev.version) + "/manifest.json");
  if (!mdoc.ok()) return mdoc.status().WithContext("rolling back " + name + " to " + prev.version);
  PL_RETURN_IF_ERROR(ManifestFromJson(mdoc->data).status());
  CurrentPointer next;
  next.history = c.history;
  next.history.pop_back();
  next.version = prev.version;
  next.sha256 = Sha256Hex(mdoc->data);
  next.promoted_at = NowRfc3339();
  return WritePointer(name, prev.version, cur->etag, std::move(next), c.version);
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

StatusOr<FetchResult> ModelStore::FetchFile(const std::string& key, const FileEntry& f, const std::string& dest) {
  if (!f.url.empty()) {
    PL_ASSIGN_OR_RETURN(ObjectInfo o, DownloadUrl(f.url, dest));
    return FetchResult{o.etag, o.last_modified, o.size, o.sha256, false};
  }
  return blobs_->Fetch(key, dest);
}

Status ModelStore::VerifyVersion(const std::string& name, const std::string& version) {
  PL_ASSIGN_OR_RETURN(Manifest m, ReadManifest(name, version));
  std::string dir = VersionDir(name, version);
  for (const auto& f : m.files) {
    std::string key = dir + "/" + f.path;
    std::string where = f.url.empty() ? blobs_->Describe(key) : f.url.substr(0, f.url.find('?'));
    if (f.url.empty()) {
      if (auto local = blobs_->LocalPath(key)) {
        if (Status st = VerifyFile(*local, f); !st.ok()) {
          return st.WithContext("file " + f.path + " of " + name + "@" + version);
        }
        continue;
      }
    }
    // Remote: a copy we verified before, whose object is unchanged (304), needs no download.
    if (f.url.empty() && cache()->Lookup(f.sha256)) {
      if (auto side = cache()->Sidecar(f.sha256); side && !side->etag.empty()) {
        std::string tmp = cache()->TempPath("verify-" + f.sha256);
        auto r = blobs_->Fetch(key, tmp, side->etag);
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        if (r.ok() && r->not_modified) continue;
        if (!r.ok()) return r.status().WithContext("file " + f.path + " of " + name + "@" + version);
        if (r->sha256 != f.sha256) {
          return DataLossError("file " + f.path + " of " + name + "@" + version + " (" + where +
                               "): sha256 mismatch: manifest says " + f.sha256 + ", the store has " + r->sha256 +
                               " — push it again as a new version");
        }
        continue;
      }
    }
    auto got =
        cache()->Get(f.sha256, f.size_bytes, where, [&](const std::string& tmp) { return FetchFile(key, f, tmp); });
    if (!got.ok()) return got.status().WithContext("file " + f.path + " of " + name + "@" + version);
  }
  return OkStatus();
}

StatusOr<ResolvedModel> ModelStore::Resolve(const std::string& name, const std::string& selector) {
  auto start = std::chrono::steady_clock::now();
  std::string version = selector;
  std::string expected_manifest_sha;
  if (selector.empty() || selector == "current") {
    PL_ASSIGN_OR_RETURN(CurrentPointer cur, ReadCurrent(name));
    version = cur.version;
    expected_manifest_sha = cur.sha256;
  }
  PL_RETURN_IF_ERROR(ValidateName(name, "model name"));
  PL_RETURN_IF_ERROR(ValidateName(version, "version"));
  std::string dir = VersionDir(name, version);
  auto mdoc = ReadDoc(dir + "/manifest.json");
  if (!mdoc.ok()) {
    if (mdoc.status().code() == StatusCode::kNotFound) {
      return NotFoundError("model '" + name + "' has no version '" + version + "' in " + blobs_->Describe());
    }
    return mdoc.status();
  }
  ResolvedModel out;
  PL_ASSIGN_OR_RETURN(out.manifest, ManifestFromJson(mdoc->data));
  if (!expected_manifest_sha.empty()) {
    std::string got = Sha256Hex(mdoc->data);
    // Stores written before current.json named the manifest's hash carry the model file's.
    bool legacy = out.manifest.ModelFile() && expected_manifest_sha == out.manifest.ModelFile()->sha256;
    if (got != expected_manifest_sha && !legacy) {
      return DataLossError("model '" + name + "' version '" + version + "': manifest.json hashes to " + got +
                           " but current.json promised " + expected_manifest_sha +
                           "; the manifest was replaced after promotion — promote the version again");
    }
  }
  std::vector<CachePin> pins;
  for (const auto& f : out.manifest.files) {
    std::string key = dir + "/" + f.path;
    std::string path;
    if (auto local = f.url.empty() ? blobs_->LocalPath(key) : std::nullopt) {
      path = *local;
      Status st = VerifyFile(path, f);
      if (!st.ok()) return st.WithContext("model '" + name + "' version '" + version + "'");
    } else {
      std::string where = f.url.empty() ? blobs_->Describe(key) : f.url.substr(0, f.url.find('?'));
      auto got =
          cache()->Get(f.sha256, f.size_bytes, where, [&](const std::string& tmp) { return FetchFile(key, f, tmp); });
      if (!got.ok()) return got.status().WithContext("model '" + name + "' version '" + version + "'");
      if (!got->hit) out.cache_hit = false;
      path = got->path;
      pins.push_back(got->pin);
    }
    if (&f == out.manifest.ModelFile()) out.local_path = path;
  }
  if (!pins.empty()) {
    out.pin = std::shared_ptr<void>(static_cast<void*>(nullptr), [pins = std::move(pins)](void*) mutable {});
  }
  out.fetch_time = std::chrono::steady_clock::now() - start;
  return out;
}

}  // namespace pilotlight::store
