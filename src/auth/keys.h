// API keys in the state store (SQLite, `<state_dir>/auth.db`).
//
// A key reads `pl_<id>_<secret>`: `id` (12 hex digits) names the record, `secret` is 32 random
// bytes (base64url). Only the SHA-256 of the whole key is stored; a presented key is found by
// its id and accepted when the SHA-256s compare equal in constant time. The key itself is
// returned once, by Create(), and never again.
//
// KeyStore is the table; `pilotlight keys ...` and the admin API write it, the server reads it.
// Usage (last use, requests per UTC day) is written by the server in batches (FlushUsage).
// Thread-safety: one KeyStore per thread or guarded by the caller (sqlite connection).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

struct sqlite3;

namespace pilotlight::auth {

struct ApiKey {
  std::string id;
  std::string hash;  // SHA-256 of the whole key, lower-case hex
  std::string plan;
  std::vector<std::string> functions;  // empty: any function whose auth is api_key
  std::string description;
  int64_t created_at = 0;    // unix ms
  int64_t revoked_at = 0;    // unix ms, 0 = active
  int64_t last_used_at = 0;  // unix ms, 0 = never
  int64_t used_today = 0;    // requests on the current UTC day (when loaded)
};

struct CreatedKey {
  ApiKey record;
  std::string key;  // shown once
};

// Splits "pl_<id>_<secret>" → id; nullopt when the text is not shaped like a key.
std::optional<std::string> KeyId(std::string_view key);
// SHA-256 of `key`, lower-case hex.
std::string KeyHash(std::string_view key);
// A key's record for people and APIs (`keys list --json`, GET /admin/keys): never the key.
nlohmann::json KeyRecordJson(const ApiKey& k);
// "2026-11-23" for a unix-ms time (UTC).
std::string UtcDay(int64_t unix_ms);

class KeyStore {
 public:
  // Opens (creating) the database at `path`; the folder must exist or be creatable.
  static StatusOr<std::unique_ptr<KeyStore>> Open(const std::string& path);
  ~KeyStore();

  StatusOr<CreatedKey> Create(const std::string& plan, const std::vector<std::string>& functions,
                              const std::string& description);
  // NotFound for an unknown id; revoking twice is fine.
  StatusOr<ApiKey> Revoke(const std::string& id);
  // Every key (revoked ones too), newest first, with today's usage.
  StatusOr<std::vector<ApiKey>> List();
  // Changes when another connection commits (PRAGMA data_version): reload when it moves.
  int64_t DataVersion();
  // Adds request counts for `day` and sets last use (one transaction).
  struct Usage {
    std::string id;
    int64_t count = 0;
    int64_t last_used_at = 0;
  };
  Status FlushUsage(const std::string& day, const std::vector<Usage>& usage);

 private:
  explicit KeyStore(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

}  // namespace pilotlight::auth
