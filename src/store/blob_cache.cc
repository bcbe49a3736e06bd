#include "store/blob_cache.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/fileio.h"
#include "common/logging.h"
#include "common/sha256.h"

namespace pilotlight::store {
namespace fs = std::filesystem;

namespace {

bool IsSha256Hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string RandomSuffix() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}", rng());
}

}  // namespace

struct BlobCache::State {
  struct Entry {
    uint64_t size = 0;
    int64_t last_used_ns = 0;
    int pins = 0;
    bool verified = false;  // hashed by this process
  };
  struct Flight {
    bool done = false;
    Status status;
    std::condition_variable cv;
  };
  std::string dir;
  uint64_t max_bytes = 0;
  std::mutex mu;
  std::map<std::string, Entry> entries;                    // GUARDED_BY(mu)
  std::map<std::string, std::shared_ptr<Flight>> flights;  // GUARDED_BY(mu)
  uint64_t total = 0;                                      // GUARDED_BY(mu)
  CacheStats stats;                                        // GUARDED_BY(mu)

  static CachePin Pin(const std::shared_ptr<State>& self, const std::string& sha) {  // requires mu
    self->entries[sha].pins++;
    std::weak_ptr<State> weak = self;
    return CachePin(static_cast<void*>(nullptr), [weak, sha](void*) {
      if (auto s = weak.lock()) {
        std::lock_guard<std::mutex> l(s->mu);
        auto it = s->entries.find(sha);
        if (it != s->entries.end() && it->second.pins > 0) it->second.pins--;
        s->EvictLocked();
      }
    });
  }

  void RemoveLocked(const std::string& sha) {
    auto it = entries.find(sha);
    if (it == entries.end()) return;
    std::error_code ec;
    fs::remove(dir + "/" + sha, ec);
    fs::remove(dir + "/" + sha + ".json", ec);
    total -= it->second.size;
    entries.erase(it);
  }

  void EvictLocked() {
    while (total > max_bytes) {
      auto victim = entries.end();
      for (auto it = entries.begin(); it != entries.end(); ++it) {
        if (it->second.pins > 0 || flights.count(it->first)) continue;
        if (victim == entries.end() || it->second.last_used_ns < victim->second.last_used_ns) victim = it;
      }
      if (victim == entries.end()) return;  // everything left is in use
      LogLine(spdlog::level::info, "model cache eviction")
          .Str("sha256", victim->first)
          .Int("bytes", static_cast<int64_t>(victim->second.size))
          .Int("cache_bytes", static_cast<int64_t>(total))
          .Int("max_bytes", static_cast<int64_t>(max_bytes));
      stats.evictions++;
      RemoveLocked(victim->first);
    }
  }
};

BlobCache::BlobCache(CacheOptions options) : options_(std::move(options)), state_(std::make_shared<State>()) {
  state_->dir = options_.dir;
  state_->max_bytes = options_.max_bytes;
  std::error_code ec;
  fs::create_directories(options_.dir + "/tmp", ec);
  // Downloads a dead process did not finish are garbage by construction. Temporary files are
  // named "<pid>-..." so another live process sharing the state directory (a server and a CLI)
  // keeps its downloads in progress.
  for (const auto& e : fs::directory_iterator(options_.dir + "/tmp", ec)) {
    std::string name = e.path().filename().string();
    long pid = std::strtol(name.c_str(), nullptr, 10);
    bool alive = pid > 0 && (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
    if (!alive) fs::remove(e.path(), ec);
  }
  for (const auto& e : fs::directory_iterator(options_.dir, ec)) {
    std::string name = e.path().filename().string();
    if (!IsSha256Hex(name) || !e.is_regular_file()) continue;
    struct stat st {};
    if (::stat(e.path().c_str(), &st) != 0) continue;
    State::Entry entry;
    entry.size = static_cast<uint64_t>(st.st_size);
    entry.last_used_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    state_->entries[name] = entry;
    state_->total += entry.size;
  }
  // No eviction here: a process that only opens the cache (a CLI command) must not delete
  // files a server is using. Eviction runs after each download and when pins are released.
}

BlobCache::~BlobCache() = default;

std::string BlobCache::TempPath(const std::string& what) const {
  return fmt::format("{}/tmp/{}-{}-{}.part", options_.dir, ::getpid(), what, RandomSuffix());
}

void BlobCache::Touch(const std::string& sha256) {
  std::string path = options_.dir + "/" + sha256;
  ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);  // LRU order survives restarts
}

StatusOr<CachedFile> BlobCache::Get(const std::string& sha256, uint64_t size, const std::string& source,
                                    const FetchFn& fetch) {
  if (!IsSha256Hex(sha256)) return DataLossError("manifest sha256 '" + sha256 + "' for " + source + " is not valid");
  std::string path = options_.dir + "/" + sha256;
  std::shared_ptr<State::Flight> flight;
  {
    std::unique_lock<std::mutex> l(state_->mu);
    while (true) {
      auto it = state_->entries.find(sha256);
      if (it != state_->entries.end()) {
        // Another process sharing the state dir (a CLI) may have evicted it: check it is there.
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != it->second.size) {
          state_->RemoveLocked(sha256);
          continue;
        }
        CachePin pin = State::Pin(state_, sha256);
        bool verified = it->second.verified;
        it->second.last_used_ns = NowNs();
        l.unlock();
        if (!verified) {
          // Files were verified when they arrived; hash once per process anyway so a cache
          // damaged on disk is caught before a model is built from it.
          auto sha = Sha256File(path);
          if (!sha.ok() || *sha != sha256) {
            LogLine(spdlog::level::err, "model cache file damaged; fetching again")
                .Str("path", path)
                .Str("error", sha.ok() ? "sha256 " + *sha : sha.status().message());
            pin.reset();
            l.lock();
            state_->RemoveLocked(sha256);
            continue;
          }
          l.lock();
          if (auto again = state_->entries.find(sha256); again != state_->entries.end()) again->second.verified = true;
          state_->stats.hits++;
          l.unlock();
        } else {
          std::lock_guard<std::mutex> g(state_->mu);
          state_->stats.hits++;
        }
        Touch(sha256);
        return CachedFile{path, std::move(pin), true};
      }
      auto f = state_->flights.find(sha256);
      if (f == state_->flights.end()) break;
      auto waiting = f->second;  // someone else is fetching it: wait for their result
      waiting->cv.wait(l, [&] { return waiting->done; });
      if (!waiting->status.ok()) return waiting->status;
    }
    flight = std::make_shared<State::Flight>();
    state_->flights[sha256] = flight;
    state_->stats.misses++;
  }

  std::string tmp = TempPath(sha256);
  auto fetched = fetch(tmp);
  Status st = fetched.status();
  CacheSidecar side;
  if (st.ok()) {
    if (fetched->sha256 != sha256) {
      st = DataLossError(fmt::format(
          "sha256 mismatch for {}: the manifest says {}, the downloaded bytes hash to {}; the object was modified "
          "or corrupted in the store — push it again as a new version",
          source, sha256, fetched->sha256));
    } else if (size != 0 && fetched->size != size) {
      st = DataLossError(
          fmt::format("size mismatch for {}: manifest says {} bytes, got {}", source, size, fetched->size));
    }
  }
  if (st.ok()) st = FsyncPath(tmp, false);
  if (st.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    st = InternalError("rename " + tmp + ": " + std::strerror(errno));
  }
  if (st.ok()) {
    side = CacheSidecar{source, fetched->etag, fetched->last_modified, fetched->size, NowRfc3339()};
    nlohmann::json j = {{"source", side.source},
                        {"etag", side.etag},
                        {"last_modified", side.last_modified},
                        {"size", side.size},
                        {"fetched_at", side.fetched_at},
                        {"sha256", sha256}};
    std::string sp = path + ".json", stmp = tmp + ".json";
    {
      std::ofstream out(stmp, std::ios::trunc);
      out << j.dump(2) << "\n";
    }
    std::rename(stmp.c_str(), sp.c_str());
    st = FsyncPath(options_.dir, true);
  }
  if (!st.ok()) {
    std::error_code ec;
    fs::remove(tmp, ec);
  }

  std::lock_guard<std::mutex> l(state_->mu);
  state_->flights.erase(sha256);
  flight->done = true;
  flight->status = st;
  flight->cv.notify_all();
  if (!st.ok()) return st;
  auto& e = state_->entries[sha256];
  e.size = fetched->size;
  e.last_used_ns = NowNs();
  e.verified = true;
  state_->total += e.size;
  state_->stats.downloaded_bytes += e.size;
  CachePin pin = State::Pin(state_, sha256);
  state_->EvictLocked();
  return CachedFile{path, std::move(pin), false};
}

std::optional<CachedFile> BlobCache::Lookup(const std::string& sha256) {
  std::lock_guard<std::mutex> l(state_->mu);
  if (!state_->entries.count(sha256)) return std::nullopt;
  return CachedFile{options_.dir + "/" + sha256, State::Pin(state_, sha256), true};
}

std::optional<CacheSidecar> BlobCache::Sidecar(const std::string& sha256) {
  if (!IsSha256Hex(sha256)) return std::nullopt;
  std::ifstream in(options_.dir + "/" + sha256 + ".json");
  if (!in) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(in);
    return CacheSidecar{j.value("source", ""), j.value("etag", ""), j.value("last_modified", ""),
                        j.value("size", uint64_t{0}), j.value("fetched_at", "")};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

CacheStats BlobCache::Stats() const {
  std::lock_guard<std::mutex> l(state_->mu);
  CacheStats s = state_->stats;
  s.bytes = state_->total;
  s.files = state_->entries.size();
  return s;
}

}  // namespace pilotlight::store
