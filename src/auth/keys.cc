#include "auth/keys.h"

#include <sqlite3.h>

#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>

#include <fmt/format.h>
#include <openssl/rand.h>

#include "common/base64.h"
#include "common/clock.h"
#include "common/sha256.h"

namespace pilotlight::auth {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  hash TEXT NOT NULL,
  plan TEXT NOT NULL,
  functions TEXT NOT NULL DEFAULT '',
  description TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL,
  revoked_ms INTEGER NOT NULL DEFAULT 0,
  last_used_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS api_key_usage (
  id TEXT NOT NULL,
  day TEXT NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (id, day)
);
)sql";

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return s_; }
  void Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

std::string Col(sqlite3_stmt* s, int col) {
  const unsigned char* p = sqlite3_column_text(s, col);
  return p ? std::string(reinterpret_cast<const char*>(p)) : std::string();
}

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t c = s.find(',', start);
    if (c == std::string::npos) c = s.size();
    if (c > start) out.push_back(s.substr(start, c - start));
    start = c + 1;
  }
  return out;
}

Status DbError(sqlite3* db, std::string_view what) {
  return UnavailableError(fmt::format("key store: {}: {}", what, sqlite3_errmsg(db)));
}

}  // namespace

std::optional<std::string> KeyId(std::string_view key) {
  // pl_ + 12 hex + _ + 43 base64url
  if (key.size() != 3 + 12 + 1 + 43 || key.substr(0, 3) != "pl_" || key[15] != '_') return std::nullopt;
  for (char c : key.substr(3, 12)) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  return std::string(key.substr(3, 12));
}

std::string KeyHash(std::string_view key) { return Sha256Hex(key); }

nlohmann::json KeyRecordJson(const ApiKey& k) {
  auto time = [](int64_t ms) { return ms ? nlohmann::json(Rfc3339(ms)) : nlohmann::json(); };
  return {{"id", k.id},
          {"prefix", "pl_" + k.id + "_"},
          {"plan", k.plan},
          {"functions", k.functions},
          {"description", k.description},
          {"created_at", Rfc3339(k.created_at)},
          {"last_used_at", time(k.last_used_at)},
          {"revoked_at", time(k.revoked_at)},
          {"used_today", k.used_today}};
}

std::string UtcDay(int64_t unix_ms) {
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

StatusOr<std::unique_ptr<KeyStore>> KeyStore::Open(const std::string& path) {
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  // Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same mode.
  if (int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600); fd >= 0) ::close(fd);
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
      SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return UnavailableError(fmt::format("cannot open the key store {}: {}", path, msg));
  }
  sqlite3_busy_timeout(db, 5000);
  char* err = nullptr;
  if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", nullptr, nullptr, &err) != SQLITE_OK ||
      sqlite3_exec(db, kSchema, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    sqlite3_close(db);
    return UnavailableError(fmt::format("cannot initialise the key store {}: {}", path, msg));
  }
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::replace, ec);
  return std::unique_ptr<KeyStore>(new KeyStore(db));
}

KeyStore::~KeyStore() { sqlite3_close(db_); }

StatusOr<CreatedKey> KeyStore::Create(const std::string& plan, const std::vector<std::string>& functions,
                                      const std::string& description) {
  unsigned char id_bytes[6], secret[32];
  if (RAND_bytes(id_bytes, sizeof id_bytes) != 1 || RAND_bytes(secret, sizeof secret) != 1) {
    return InternalError("the system random generator failed");
  }
  CreatedKey out;
  for (unsigned char b : id_bytes) out.record.id += fmt::format("{:02x}", b);
  out.key = "pl_" + out.record.id + "_" +
            Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(secret), sizeof secret));
  out.record.hash = KeyHash(out.key);
  out.record.plan = plan;
  out.record.functions = functions;
  out.record.description = description;
  out.record.created_at = UnixMillis();
  std::string fns;
  for (const auto& f : functions) fns += (fns.empty() ? "" : ",") + f;
  Stmt st(db_, "INSERT INTO api_keys (id, hash, plan, functions, description, created_ms) VALUES (?,?,?,?,?,?)");
  if (!st.ok()) return DbError(db_, "prepare insert");
  st.Bind(1, out.record.id);
  st.Bind(2, out.record.hash);
  st.Bind(3, plan);
  st.Bind(4, fns);
  st.Bind(5, description);
  st.Bind(6, out.record.created_at);
  if (sqlite3_step(st.get()) != SQLITE_DONE) return DbError(db_, "insert");
  return out;
}

StatusOr<ApiKey> KeyStore::Revoke(const std::string& id) {
  {
    Stmt st(db_, "UPDATE api_keys SET revoked_ms = ? WHERE id = ? AND revoked_ms = 0");
    if (!st.ok()) return DbError(db_, "prepare revoke");
    st.Bind(1, UnixMillis());
    st.Bind(2, id);
    if (sqlite3_step(st.get()) != SQLITE_DONE) return DbError(db_, "revoke");
  }
  auto all = List();
  if (!all.ok()) return all.status();
  for (auto& k : *all) {
    if (k.id == id) return k;
  }
  return NotFoundError(fmt::format("no API key with id '{}' (see `pilotlight keys list`)", id));
}

StatusOr<std::vector<ApiKey>> KeyStore::List() {
  Stmt st(db_,
          "SELECT k.id, k.hash, k.plan, k.functions, k.description, k.created_ms, k.revoked_ms, k.last_used_ms, "
          "COALESCE(u.count, 0) FROM api_keys k LEFT JOIN api_key_usage u ON u.id = k.id AND u.day = ? "
          "ORDER BY k.created_ms DESC, k.id");
  if (!st.ok()) return DbError(db_, "prepare list");
  st.Bind(1, UtcDay(UnixMillis()));
  std::vector<ApiKey> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    ApiKey k;
    k.id = Col(st.get(), 0);
    k.hash = Col(st.get(), 1);
    k.plan = Col(st.get(), 2);
    k.functions = SplitComma(Col(st.get(), 3));
    k.description = Col(st.get(), 4);
    k.created_at = sqlite3_column_int64(st.get(), 5);
    k.revoked_at = sqlite3_column_int64(st.get(), 6);
    k.last_used_at = sqlite3_column_int64(st.get(), 7);
    k.used_today = sqlite3_column_int64(st.get(), 8);
    out.push_back(std::move(k));
  }
  if (rc != SQLITE_DONE) return DbError(db_, "list");
  return out;
}

int64_t KeyStore::DataVersion() {
  Stmt st(db_, "PRAGMA data_version");
  if (!st.ok() || sqlite3_step(st.get()) != SQLITE_ROW) return -1;
  return sqlite3_column_int64(st.get(), 0);
}

Status KeyStore::FlushUsage(const std::string& day, const std::vector<Usage>& usage) {
  if (usage.empty()) return OkStatus();
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return DbError(db_, "begin");
  bool ok = true;
  {
    Stmt add(db_,
             "INSERT INTO api_key_usage (id, day, count) VALUES (?,?,?) "
             "ON CONFLICT(id, day) DO UPDATE SET count = count + excluded.count");
    Stmt last(db_, "UPDATE api_keys SET last_used_ms = MAX(last_used_ms, ?) WHERE id = ?");
    ok = add.ok() && last.ok();
    for (const auto& u : usage) {
      if (!ok) break;
      sqlite3_reset(add.get());
      add.Bind(1, u.id);
      add.Bind(2, day);
      add.Bind(3, u.count);
      sqlite3_reset(last.get());
      last.Bind(1, u.last_used_at);
      last.Bind(2, u.id);
      ok = sqlite3_step(add.get()) == SQLITE_DONE && sqlite3_step(last.get()) == SQLITE_DONE;
    }
  }
  if (!ok) {
    Status s = DbError(db_, "record usage");
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return s;
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    Status s = DbError(db_, "commit usage");
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return s;
  }
  return OkStatus();
}

}  // namespace pilotlight::auth
