#include "events/event_store.h"

#include <sqlite3.h>

#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/ids.h"

namespace pilotlight::events {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL,
  function TEXT NOT NULL,
  payload BLOB NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL,
  next_attempt_ms INTEGER NOT NULL,
  finished_ms INTEGER NOT NULL DEFAULT 0,
  result BLOB,
  error TEXT,
  history TEXT NOT NULL DEFAULT '[]',
  destination_done INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_due ON events(status, next_attempt_ms);
CREATE INDEX IF NOT EXISTS events_function ON events(function, status);
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  trigger TEXT NOT NULL,
  key TEXT NOT NULL,
  etag TEXT NOT NULL,
  status TEXT NOT NULL,
  rows_done INTEGER NOT NULL DEFAULT 0,
  partial_bytes INTEGER NOT NULL DEFAULT 0,
  rows INTEGER NOT NULL DEFAULT 0,
  ok INTEGER NOT NULL DEFAULT 0,
  errors INTEGER NOT NULL DEFAULT 0,
  error TEXT,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL DEFAULT 0,
  finished_ms INTEGER NOT NULL DEFAULT 0,
  UNIQUE (trigger, key, etag)
);
)sql";

constexpr const char* kColumns =
    "id, function, payload, status, attempts, created_ms, next_attempt_ms, finished_ms, result, error, history, "
    "destination_done";

// RAII statement.
class Stmt {
 public:
  Stmt(sqlite3* db, const std::string& sql) { rc_ = sqlite3_prepare_v2(db, sql.c_str(), -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return s_; }
  void Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

std::string Text(sqlite3_stmt* s, int col) {
  const void* p = sqlite3_column_blob(s, col);
  int n = sqlite3_column_bytes(s, col);
  return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

Event Row(sqlite3_stmt* s) {
  Event e;
  e.id = Text(s, 0);
  e.function = Text(s, 1);
  e.payload = Text(s, 2);
  e.status = ParseStatus(Text(s, 3)).value_or(EventStatus::kQueued);
  e.attempts = sqlite3_column_int(s, 4);
  e.created_ms = sqlite3_column_int64(s, 5);
  e.next_attempt_ms = sqlite3_column_int64(s, 6);
  e.finished_ms = sqlite3_column_int64(s, 7);
  e.result = Text(s, 8);
  e.error = Text(s, 9);
  auto h = nlohmann::json::parse(Text(s, 10), nullptr, false);
  if (h.is_array()) {
    for (const auto& a : h) {
      e.history.push_back(
          {a.value("started_ms", int64_t{0}), a.value("finished_ms", int64_t{0}), a.value("error", "")});
    }
  }
  e.destination_done = sqlite3_column_int(s, 11) != 0;
  return e;
}

}  // namespace

std::string_view StatusName(EventStatus s) {
  switch (s) {
    case EventStatus::kQueued:
      return "queued";
    case EventStatus::kRunning:
      return "running";
    case EventStatus::kSucceeded:
      return "succeeded";
    case EventStatus::kDeadLetter:
      return "dead_letter";
  }
  return "queued";
}

std::optional<EventStatus> ParseStatus(std::string_view s) {
  for (auto st : {EventStatus::kQueued, EventStatus::kRunning, EventStatus::kSucceeded, EventStatus::kDeadLetter}) {
    if (StatusName(st) == s) return st;
  }
  return std::nullopt;
}

StatusOr<std::unique_ptr<EventStore>> EventStore::Open(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
      SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return UnavailableError("cannot open the event store " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<EventStore> store(new EventStore(db));
  PL_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  // FULL: every commit is fsynced — an accepted event survives power loss, not just a crash.
  PL_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
  PL_RETURN_IF_ERROR(store->Exec(kSchema));
  return store;
}

EventStore::~EventStore() { sqlite3_close(db_); }

Status EventStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return InternalError("event store: " + msg);
  }
  return OkStatus();
}

StatusOr<std::vector<std::string>> EventStore::Insert(const std::vector<NewEvent>& events, int64_t now_ms) {
  std::lock_guard<std::mutex> l(mu_);
  PL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  std::vector<std::string> ids;
  Stmt st(db_,
          "INSERT INTO events (id, function, payload, status, created_ms, next_attempt_ms) VALUES (?, ?, ?, 'queued', "
          "?, ?)");
  for (const auto& e : events) {
    std::string id = NewRequestId();
    sqlite3_reset(st.get());
    st.Bind(1, id);
    st.Bind(2, e.function);
    st.BindBlob(3, e.payload);
    st.Bind(4, now_ms);
    st.Bind(5, now_ms);
    if (sqlite3_step(st.get()) != SQLITE_DONE) {
      std::string msg = sqlite3_errmsg(db_);
      (void)Exec("ROLLBACK");
      return UnavailableError("event store insert failed: " + msg);
    }
    ids.push_back(std::move(id));
  }
  if (Status c = Exec("COMMIT"); !c.ok()) {
    (void)Exec("ROLLBACK");
    return c;
  }
  return ids;
}

StatusOr<std::vector<Event>> EventStore::Query(const std::string& where, const std::vector<std::string>& args,
                                               const std::string& tail) {
  Stmt st(db_, fmt::format("SELECT {} FROM events {} {}", kColumns, where, tail));
  if (!st.ok()) return InternalError(std::string("event store query: ") + sqlite3_errmsg(db_));
  for (size_t i = 0; i < args.size(); ++i) st.Bind(static_cast<int>(i + 1), args[i]);
  std::vector<Event> out;
  while (sqlite3_step(st.get()) == SQLITE_ROW) out.push_back(Row(st.get()));
  return out;
}

StatusOr<Event> EventStore::Get(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  PL_ASSIGN_OR_RETURN(auto rows, Query("WHERE id = ?", {id}, ""));
  if (rows.empty()) return NotFoundError("event '" + id + "' does not exist");
  return std::move(rows.front());
}

StatusOr<std::vector<Event>> EventStore::List(std::optional<EventStatus> status, const std::string& function,
                                              int limit) {
  std::lock_guard<std::mutex> l(mu_);
  std::string where = "WHERE 1=1";
  std::vector<std::string> args;
  if (status) {
    where += " AND status = ?";
    args.emplace_back(StatusName(*status));
  }
  if (!function.empty()) {
    where += " AND function = ?";
    args.push_back(function);
  }
  return Query(where, args, fmt::format("ORDER BY seq DESC LIMIT {}", limit));
}

StatusOr<std::vector<Event>> EventStore::ClaimDue(int64_t now_ms, int limit,
                                                  const std::function<bool(const Event&)>& accept,
                                                  const std::vector<std::string>& skip) {
  std::lock_guard<std::mutex> l(mu_);
  std::string where = "WHERE status = 'queued' AND next_attempt_ms <= ?";
  std::vector<std::string> args = {std::to_string(now_ms)};
  if (!skip.empty()) {
    where += " AND function NOT IN (";
    for (size_t i = 0; i < skip.size(); ++i) {
      where += i ? ", ?" : "?";
      args.push_back(skip[i]);
    }
    where += ")";
  }
  // Look at more candidates than needed: functions may reach their limit within this pass.
  PL_ASSIGN_OR_RETURN(auto due,
                      Query(where, args, fmt::format("ORDER BY next_attempt_ms, seq LIMIT {}", limit * 8 + 32)));
  std::vector<Event> claimed;
  if (due.empty()) return claimed;
  PL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Stmt st(db_, "UPDATE events SET status = 'running', attempts = attempts + 1 WHERE id = ? AND status = 'queued'");
  for (auto& e : due) {
    if (static_cast<int>(claimed.size()) >= limit) break;
    if (!accept(e)) continue;
    sqlite3_reset(st.get());
    st.Bind(1, e.id);
    if (sqlite3_step(st.get()) != SQLITE_DONE) {
      (void)Exec("ROLLBACK");
      return UnavailableError(std::string("event store claim failed: ") + sqlite3_errmsg(db_));
    }
    e.status = EventStatus::kRunning;
    e.attempts++;
    claimed.push_back(std::move(e));
  }
  if (Status c = Exec("COMMIT"); !c.ok()) {
    (void)Exec("ROLLBACK");
    return c;
  }
  return claimed;
}

Status EventStore::Finish(const std::string& id, const char* status, const std::string* result,
                          const std::string* error, const Attempt& attempt, int64_t next_attempt_ms,
                          int64_t finished_ms) {
  std::lock_guard<std::mutex> l(mu_);
  PL_ASSIGN_OR_RETURN(auto rows, Query("WHERE id = ?", {id}, ""));
  if (rows.empty()) return NotFoundError("event '" + id + "' does not exist");
  nlohmann::json history = nlohmann::json::array();
  for (const auto& a : rows.front().history) {
    history.push_back({{"started_ms", a.started_ms}, {"finished_ms", a.finished_ms}, {"error", a.error}});
  }
  history.push_back(
      {{"started_ms", attempt.started_ms}, {"finished_ms", attempt.finished_ms}, {"error", attempt.error}});
  Stmt st(db_,
          "UPDATE events SET status = ?, result = ?, error = ?, history = ?, next_attempt_ms = ?, finished_ms = ? "
          "WHERE id = ?");
  st.Bind(1, std::string(status));
  if (result) {
    st.BindBlob(2, *result);
  } else {
    sqlite3_bind_null(st.get(), 2);
  }
  if (error) {
    st.Bind(3, *error);
  } else {
    sqlite3_bind_null(st.get(), 3);
  }
  st.Bind(4, history.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  st.Bind(5, next_attempt_ms);
  st.Bind(6, finished_ms);
  st.Bind(7, id);
  if (sqlite3_step(st.get()) != SQLITE_DONE) {
    return UnavailableError(std::string("event store update failed: ") + sqlite3_errmsg(db_));
  }
  return OkStatus();
}

Status EventStore::Succeed(const std::string& id, const std::string& result, const Attempt& attempt) {
  return Finish(id, "succeeded", &result, nullptr, attempt, 0, attempt.finished_ms);
}

Status EventStore::Retry(const std::string& id, const Attempt& attempt, int64_t retry_at_ms) {
  return Finish(id, "queued", nullptr, &attempt.error, attempt, retry_at_ms, 0);
}

Status EventStore::Requeue(const std::string& id, int64_t retry_at_ms) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt st(db_,
          "UPDATE events SET status = 'queued', attempts = MAX(attempts - 1, 0), next_attempt_ms = ? WHERE id = ?");
  st.Bind(1, retry_at_ms);
  st.Bind(2, id);
  if (sqlite3_step(st.get()) != SQLITE_DONE) {
    return UnavailableError(std::string("event store update failed: ") + sqlite3_errmsg(db_));
  }
  return OkStatus();
}

Status EventStore::DeadLetter(const std::string& id, const Attempt& attempt, int64_t now_ms) {
  return Finish(id, "dead_letter", nullptr, &attempt.error, attempt, 0, now_ms);
}

Status EventStore::MarkDestinationDone(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt st(db_, "UPDATE events SET destination_done = 1 WHERE id = ?");
  st.Bind(1, id);
  if (sqlite3_step(st.get()) != SQLITE_DONE) {
    return UnavailableError(std::string("event store update failed: ") + sqlite3_errmsg(db_));
  }
  return OkStatus();
}

StatusOr<std::vector<Event>> EventStore::PendingDestinations() {
  std::lock_guard<std::mutex> l(mu_);
  return Query("WHERE status IN ('succeeded', 'dead_letter') AND destination_done = 0", {}, "ORDER BY seq");
}

Status EventStore::Redrive(const std::string& id, int64_t now_ms) {
  std::lock_guard<std::mutex> l(mu_);
  PL_ASSIGN_OR_RETURN(auto rows, Query("WHERE id = ?", {id}, ""));
  if (rows.empty()) return NotFoundError("event '" + id + "' does not exist");
  if (rows.front().status != EventStatus::kDeadLetter) {
    return FailedPreconditionError("event '" + id + "' is " + std::string(StatusName(rows.front().status)) +
                                   ", not dead_letter: only dead letters can be redriven");
  }
  Stmt st(db_,
          "UPDATE events SET status = 'queued', attempts = 0, next_attempt_ms = ?, created_ms = ?, finished_ms = 0, "
          "error = NULL, destination_done = 0 WHERE id = ?");
  st.Bind(1, now_ms);
  st.Bind(2, now_ms);
  st.Bind(3, id);
  if (sqlite3_step(st.get()) != SQLITE_DONE) {
    return UnavailableError(std::string("event store update failed: ") + sqlite3_errmsg(db_));
  }
  return OkStatus();
}

StatusOr<int> EventStore::RecoverRunning(int64_t now_ms) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt st(db_, "UPDATE events SET status = 'queued', next_attempt_ms = ? WHERE status = 'running'");
  st.Bind(1, now_ms);
  if (sqlite3_step(st.get()) != SQLITE_DONE) {
    return UnavailableError(std::string("event store recovery failed: ") + sqlite3_errmsg(db_));
  }
  return sqlite3_changes(db_);
}

StatusOr<int64_t> EventStore::Purge(int64_t before_ms) {
  std::lock_guard<std::mutex> l(mu_);
  int64_t n = 0;
  for (const char* sql : {"DELETE FROM events WHERE status = 'succeeded' AND destination_done = 1 AND finished_ms < ?",
                          "DELETE FROM jobs WHERE status = 'done' AND finished_ms < ?"}) {
    Stmt st(db_, sql);
    st.Bind(1, before_ms);
    if (sqlite3_step(st.get()) != SQLITE_DONE) {
      return UnavailableError(std::string("event store purge failed: ") + sqlite3_errmsg(db_));
    }
    n += sqlite3_changes(db_);
  }
  return n;
}

StatusOr<QueueStats> EventStore::Stats() {
  std::lock_guard<std::mutex> l(mu_);
  QueueStats s;
  Stmt st(db_, "SELECT status, COUNT(*), MIN(created_ms) FROM events GROUP BY status");
  while (sqlite3_step(st.get()) == SQLITE_ROW) {
    std::string status = Text(st.get(), 0);
    int64_t n = sqlite3_column_int64(st.get(), 1);
    if (status == "queued") {
      s.queued = n;
      s.oldest_queued_ms = sqlite3_column_int64(st.get(), 2);
    } else if (status == "running") {
      s.running = n;
    } else if (status == "succeeded") {
      s.succeeded = n;
    } else if (status == "dead_letter") {
      s.dead_letter = n;
    }
  }
  return s;
}

namespace {
constexpr const char* kJobColumns =
    "id, trigger, key, etag, status, rows_done, partial_bytes, rows, ok, errors, error, created_ms, started_ms, "
    "finished_ms";
Job JobRow(sqlite3_stmt* s) {
  Job j;
  j.id = sqlite3_column_int64(s, 0);
  j.trigger = Text(s, 1);
  j.key = Text(s, 2);
  j.etag = Text(s, 3);
  j.status = Text(s, 4);
  j.rows_done = sqlite3_column_int64(s, 5);
  j.partial_bytes = sqlite3_column_int64(s, 6);
  j.rows = sqlite3_column_int64(s, 7);
  j.ok = sqlite3_column_int64(s, 8);
  j.errors = sqlite3_column_int64(s, 9);
  j.error = Text(s, 10);
  j.created_ms = sqlite3_column_int64(s, 11);
  j.started_ms = sqlite3_column_int64(s, 12);
  j.finished_ms = sqlite3_column_int64(s, 13);
  return j;
}
}  // namespace

StatusOr<bool> EventStore::InsertJob(const std::string& trigger, const std::string& key, const std::string& etag,
                                     int64_t now_ms) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt st(db_, "INSERT OR IGNORE INTO jobs (trigger, key, etag, status, created_ms) VALUES (?, ?, ?, 'queued', ?)");
  st.Bind(1, trigger);
  st.Bind(2, key);
  st.Bind(3, etag);
  st.Bind(4, now_ms);
  if (sqlite3_step(st.get()) != SQLITE_DONE) {
    return UnavailableError(std::string("event store: cannot record a job: ") + sqlite3_errmsg(db_));
  }
  return sqlite3_changes(db_) > 0;
}

StatusOr<std::optional<Job>> EventStore::NextJob(int64_t now_ms) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt st(db_, fmt::format("SELECT {} FROM jobs WHERE status IN ('running', 'queued') ORDER BY (status = 'running') "
                           "DESC, id LIMIT 1",
                           kJobColumns));
  if (sqlite3_step(st.get()) != SQLITE_ROW) return std::optional<Job>();
  Job j = JobRow(st.get());
  if (j.status != "running") {
    Stmt up(db_, "UPDATE jobs SET status = 'running', started_ms = ? WHERE id = ?");
    up.Bind(1, now_ms);
    up.Bind(2, j.id);
    if (sqlite3_step(up.get()) != SQLITE_DONE) {
      return UnavailableError(std::string("event store: cannot start a job: ") + sqlite3_errmsg(db_));
    }
    j.status = "running";
    j.started_ms = now_ms;
  }
  return std::optional<Job>(std::move(j));
}

Status EventStore::JobProgress(int64_t id, int64_t rows, int64_t rows_done, int64_t partial_bytes, int64_t ok,
                               int64_t errors) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt st(db_, "UPDATE jobs SET rows = ?, rows_done = ?, partial_bytes = ?, ok = ?, errors = ? WHERE id = ?");
  st.Bind(1, rows);
  st.Bind(2, rows_done);
  st.Bind(3, partial_bytes);
  st.Bind(4, ok);
  st.Bind(5, errors);
  st.Bind(6, id);
  if (sqlite3_step(st.get()) != SQLITE_DONE) {
    return UnavailableError(std::string("event store: cannot record progress: ") + sqlite3_errmsg(db_));
  }
  return OkStatus();
}

Status EventStore::FinishJob(int64_t id, const std::string& status, int64_t rows, const std::string& error,
                             int64_t now_ms) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt st(db_, "UPDATE jobs SET status = ?, rows = ?, error = ?, finished_ms = ? WHERE id = ?");
  st.Bind(1, status);
  st.Bind(2, rows);
  st.Bind(3, error);
  st.Bind(4, now_ms);
  st.Bind(5, id);
  if (sqlite3_step(st.get()) != SQLITE_DONE) {
    return UnavailableError(std::string("event store: cannot finish a job: ") + sqlite3_errmsg(db_));
  }
  return OkStatus();
}

StatusOr<std::vector<Job>> EventStore::ListJobs(int limit) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt st(db_, fmt::format("SELECT {} FROM jobs ORDER BY id DESC LIMIT {}", kJobColumns, limit));
  std::vector<Job> out;
  while (sqlite3_step(st.get()) == SQLITE_ROW) out.push_back(JobRow(st.get()));
  return out;
}

}  // namespace pilotlight::events
