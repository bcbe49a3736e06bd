// EventStore: the durable record of asynchronous invocations, in SQLite (WAL mode,
// synchronous=FULL: a committed event survives a crash or power loss of the machine).
//
//   queued ──claim──▶ running ──ok──▶ succeeded
//     ▲                  │
//     └──retry (backoff)─┤
//                        └──last failure / too old──▶ dead_letter ──redrive──▶ queued
//
// Events found `running` at start-up were interrupted by a crash: they go back to `queued`
// (at-least-once execution). A finished event records whether its destination was written,
// so a destination is written once even across a crash between the two.
// Thread-safety: all methods are thread-safe (one connection, serialised).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

struct sqlite3;

namespace pilotlight::events {

enum class EventStatus { kQueued, kRunning, kSucceeded, kDeadLetter };
std::string_view StatusName(EventStatus s);
std::optional<EventStatus> ParseStatus(std::string_view s);

struct Attempt {
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  std::string error;  // empty when it succeeded
};

struct Event {
  std::string id;
  std::string function;
  std::string payload;
  EventStatus status = EventStatus::kQueued;
  int attempts = 0;
  int64_t created_ms = 0;
  int64_t next_attempt_ms = 0;
  int64_t finished_ms = 0;
  std::string result;  // succeeded: the function's response
  std::string error;   // dead_letter: the last error
  std::vector<Attempt> history;
  bool destination_done = false;
};

struct NewEvent {
  std::string function;
  std::string payload;
};

// One object to run through a function (object-upload triggers), with its progress.
struct Job {
  int64_t id = 0;
  std::string trigger;  // the trigger's name (its source URI)
  std::string key;      // object key relative to the source
  std::string etag;
  std::string status;  // queued | running | done | failed
  int64_t rows_done = 0;
  int64_t partial_bytes = 0;  // bytes of the local partial output covering rows_done rows
  int64_t rows = 0, ok = 0, errors = 0;
  std::string error;
  int64_t created_ms = 0, started_ms = 0, finished_ms = 0;
};

struct QueueStats {
  int64_t queued = 0, running = 0, succeeded = 0, dead_letter = 0;
  int64_t oldest_queued_ms = 0;  // created_ms of the oldest queued event (0: none)
};

class EventStore {
 public:
  // Creates the database (and its folder) if needed.
  static StatusOr<std::unique_ptr<EventStore>> Open(const std::string& path);
  ~EventStore();

  // Inserts events in one transaction, durable when this returns; their ids, in order.
  StatusOr<std::vector<std::string>> Insert(const std::vector<NewEvent>& events, int64_t now_ms);
  StatusOr<Event> Get(const std::string& id);  // NotFound
  // Newest first. Empty filters match everything.
  StatusOr<std::vector<Event>> List(std::optional<EventStatus> status, const std::string& function, int limit);
  // Marks up to `limit` due queued events running (attempts + 1), oldest first, taking only
  // those `accept(function)` admits (called once per candidate, in order).
  // `skip`: functions not to look at (already at their concurrency limit), so one function's
  // backlog never hides another's events.
  StatusOr<std::vector<Event>> ClaimDue(int64_t now_ms, int limit, const std::function<bool(const Event&)>& accept,
                                        const std::vector<std::string>& skip = {});
  // Ends the running attempt: succeeded (result), or back to queued at `retry_at_ms`, or
  // dead_letter (error).
  Status Succeed(const std::string& id, const std::string& result, const Attempt& attempt);
  Status Retry(const std::string& id, const Attempt& attempt, int64_t retry_at_ms);
  // Throttled (no capacity): back to queued at `retry_at_ms` without using up an attempt.
  Status Requeue(const std::string& id, int64_t retry_at_ms);
  Status DeadLetter(const std::string& id, const Attempt& attempt, int64_t now_ms);
  Status MarkDestinationDone(const std::string& id);
  // Finished events whose destination was not written yet (a crash in between).
  StatusOr<std::vector<Event>> PendingDestinations();
  // dead_letter → queued (attempts reset, history kept). FailedPrecondition otherwise.
  Status Redrive(const std::string& id, int64_t now_ms);
  // At start-up: running → queued (interrupted by a crash). Returns how many.
  StatusOr<int> RecoverRunning(int64_t now_ms);
  StatusOr<QueueStats> Stats();
  // Deletes succeeded events (destination written) and done jobs that finished before
  // `before_ms`. Dead letters and failed jobs stay until redriven or replaced. Returns how many.
  StatusOr<int64_t> Purge(int64_t before_ms);

  // Object-upload jobs. InsertJob is idempotent per (trigger, key, etag): false when known.
  StatusOr<bool> InsertJob(const std::string& trigger, const std::string& key, const std::string& etag, int64_t now_ms);
  // The oldest queued or running job (running ones were interrupted by a crash), marked running.
  StatusOr<std::optional<Job>> NextJob(int64_t now_ms);
  Status JobProgress(int64_t id, int64_t rows, int64_t rows_done, int64_t partial_bytes, int64_t ok, int64_t errors);
  Status FinishJob(int64_t id, const std::string& status, int64_t rows, const std::string& error, int64_t now_ms);
  StatusOr<std::vector<Job>> ListJobs(int limit);

 private:
  explicit EventStore(sqlite3* db) : db_(db) {}
  Status Exec(const char* sql);
  StatusOr<std::vector<Event>> Query(const std::string& where, const std::vector<std::string>& args,
                                     const std::string& tail);
  Status Finish(const std::string& id, const char* status, const std::string* result, const std::string* error,
                const Attempt& attempt, int64_t next_attempt_ms, int64_t finished_ms);

  std::mutex mu_;
  sqlite3* db_;
};

}  // namespace pilotlight::events
