// BlobCache: the verified, content-addressed cache of model files fetched from a remote store.
//
//   <dir>/<sha256>            a file whose bytes hash to its name (verified before it got it)
//   <dir>/<sha256>.json       sidecar: source, ETag, Last-Modified, size, fetched_at
//   <dir>/tmp/<pid>-...       downloads in progress (removed at start-up once <pid> is gone)
//
// A fetch downloads into tmp/, checks the sha256 the manifest promised (computed while the
// bytes stream), fsyncs and renames into place: a file under its final name is always
// complete and verified; an interrupted or corrupted download never is. Concurrent Get()s of
// the same content share one fetch (single-flight). Files are pinned while a loaded model uses
// them; above `max_bytes`, unpinned files are evicted least recently used first.
// Thread-safety: all methods are thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/status.h"
#include "store/blob_store.h"

namespace pilotlight::store {

struct CacheOptions {
  std::string dir;
  uint64_t max_bytes = uint64_t{10} << 30;
};

struct CacheSidecar {
  std::string source;  // where it came from (store URI + key)
  std::string etag;
  std::string last_modified;
  uint64_t size = 0;
  std::string fetched_at;
};

// Keeps a cached file from eviction while alive.
using CachePin = std::shared_ptr<void>;

struct CachedFile {
  std::string path;
  CachePin pin;
  bool hit = false;  // served from the cache without a download
};

struct CacheStats {
  uint64_t hits = 0, misses = 0, evictions = 0, bytes = 0, files = 0, downloaded_bytes = 0;
};

class BlobCache {
 public:
  explicit BlobCache(CacheOptions options);
  ~BlobCache();

  // Fills `tmp_path` with the content; the cache checks the sha256 it reports.
  using FetchFn = std::function<StatusOr<FetchResult>(const std::string& tmp_path)>;

  // A verified local copy of the content `sha256` (`size` bytes), fetched with `fetch` when
  // absent. DataLoss when the fetched bytes do not hash to `sha256` (nothing is kept).
  StatusOr<CachedFile> Get(const std::string& sha256, uint64_t size, const std::string& source, const FetchFn& fetch);
  // The cached copy, if any (pinned), without fetching.
  std::optional<CachedFile> Lookup(const std::string& sha256);
  std::optional<CacheSidecar> Sidecar(const std::string& sha256);
  CacheStats Stats() const;
  const CacheOptions& options() const { return options_; }
  // A fresh temporary path under <dir>/tmp/ owned by this process (removed at the next start
  // of any process once this one has died).
  std::string TempPath(const std::string& what) const;

 private:
  struct State;
  void Touch(const std::string& sha256);

  const CacheOptions options_;
  std::shared_ptr<State> state_;  // shared with pins, so a pin may outlive the cache
};

}  // namespace pilotlight::store
