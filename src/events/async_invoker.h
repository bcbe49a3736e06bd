// AsyncInvoker: durable asynchronous invocations (Lambda's `Event` invocation type).
//
// Enqueue() answers only after the event is committed to the EventStore (group commit: the
// events accepted while one commit runs share the next one). A dispatcher thread claims due
// events and runs them through an Executor (the gateway's invoke path), at most
// `concurrency_share` of each function's capacity at once so events never starve synchronous
// traffic. Failures and timeouts are retried with exponential backoff and jitter up to
// `max_retries`; an event that fails its last attempt, or waits longer than `max_event_age`,
// goes to the dead-letter state with its error and attempt history. Destinations
// (`on_success`, `on_failure`: a JSONL file or an HTTP URL) get one JSON object per finished
// event; a file destination is written exactly once, even across a crash.
// Thread-safety: all public methods are thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "events/event_store.h"
#include "metrics/metrics.h"

namespace pilotlight::events {

struct AsyncConfig {
  int max_retries = 2;
  Duration retry_backoff = std::chrono::seconds(1);  // first retry; doubles, with jitter
  Duration max_event_age = std::chrono::hours(6);
  int max_concurrency = 1;  // events of this function running at once (share of its capacity)
  std::string on_success;   // file://PATH.jsonl | http(s)://URL | ""
  std::string on_failure;
};

// Runs one event: `done` gets the function's response, or an error (the attempt failed).
using Executor = std::function<void(const Event& event, std::function<void(StatusOr<std::string>)> done)>;

class AsyncInvoker {
 public:
  struct Options {
    int max_batch = 256;                                     // events per group commit
    Duration poll_interval = std::chrono::milliseconds(20);  // how often due events are looked for
    Duration retention = std::chrono::hours(24 * 7);         // finished events kept this long (0: forever)
  };
  AsyncInvoker(Options options, EventStore* store, Executor executor, metrics::Registry* metrics);
  ~AsyncInvoker();

  void Configure(const std::string& function, AsyncConfig config);
  // For functions without their own (served without a config file).
  void ConfigureDefault(AsyncConfig config);
  bool Knows(const std::string& function) const;

  // Durably records an event; `done` gets its id once committed (or the store's error).
  void Enqueue(const std::string& function, std::string payload, std::function<void(StatusOr<std::string>)> done);

  StatusOr<Event> Get(const std::string& id) { return store_->Get(id); }
  StatusOr<std::vector<Event>> List(std::optional<EventStatus> s, const std::string& fn, int limit) {
    return store_->List(s, fn, limit);
  }
  Status Redrive(const std::string& id);

  // Re-queues events interrupted by a crash, writes destinations a crash left unwritten, and
  // starts the writer and dispatcher threads.
  Status Start();
  // Stops claiming new events; waits (up to `timeout`) for running ones to finish.
  void Stop(Duration timeout);

  static std::string EventJson(const Event& e);  // the API's and the destinations' document

 private:
  struct Pending {
    NewEvent event;
    std::function<void(StatusOr<std::string>)> done;
  };
  void WriterLoop();
  void DispatchLoop();
  void Wake();  // tells the dispatcher there may be events to start
  void CompleteLoop();
  void Run(Event e);
  void Finished(const Event& e, StatusOr<std::string> result, int64_t started_ms);
  void WriteDestination(const Event& e);
  AsyncConfig ConfigFor(const std::string& function) const;
  void UpdateGauges();

  const Options options_;
  EventStore* const store_;
  Executor executor_;
  metrics::Registry* const metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, AsyncConfig> configs_;  // GUARDED_BY(mu_)
  AsyncConfig default_config_;                  // GUARDED_BY(mu_)
  std::map<std::string, int> running_;          // GUARDED_BY(mu_) per function
  int running_total_ = 0;                       // GUARDED_BY(mu_)
  std::vector<Pending> pending_;                // GUARDED_BY(mu_) waiting for the next commit
  bool stop_ = false;                           // GUARDED_BY(mu_)
  bool claiming_ = true;                        // GUARDED_BY(mu_)
  bool work_ = false;                           // GUARDED_BY(mu_) new, freed or redriven: look now
  struct Completion {
    Event event;
    StatusOr<std::string> result;
    int64_t started_ms;
  };
  // Finished attempts are recorded (SQLite commit, destination write) on a thread of their
  // own, never on the thread that finished them (a worker's Runtime API thread, a scheduler
  // worker): a slow destination must not hold up functions.
  std::deque<Completion> completions_;  // GUARDED_BY(mu_)
  std::thread writer_, dispatcher_, completer_;
  std::mutex dest_mu_;  // serialises destination writes

  prometheus::Counter* enqueued_ = nullptr;
  prometheus::Counter* retries_ = nullptr;
  prometheus::Counter* dead_letters_ = nullptr;
  prometheus::Counter* succeeded_ = nullptr;
  prometheus::Gauge* depth_ = nullptr;
  prometheus::Gauge* oldest_ = nullptr;
};

}  // namespace pilotlight::events
