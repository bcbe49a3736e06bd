#include "events/async_invoker.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/fileio.h"
#include "common/logging.h"

namespace pilotlight::events {
namespace {

// A payload or result as JSON when it is JSON, else as a string.
nlohmann::json Embed(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_discarded()) return j;
  return text;
}

Status AppendLine(const std::string& path, const std::string& line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return UnavailableError("cannot open destination " + path + ": " + std::strerror(errno));
  Status st = WriteAll(fd, line + "\n", "destination " + path);
  if (st.ok() && ::fsync(fd) != 0) st = UnavailableError("cannot fsync destination " + path);
  ::close(fd);
  return st;
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

Status PostJson(const std::string& url, const std::string& body) {
  CURL* c = curl_easy_init();
  curl_slist* h = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Discard);
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  if (rc != CURLE_OK) return UnavailableError(std::string("destination ") + url + ": " + curl_easy_strerror(rc));
  if (status < 200 || status >= 300) return UnavailableError(fmt::format("destination {} answered {}", url, status));
  return OkStatus();
}

std::string FilePath(const std::string& uri) { return uri.rfind("file://", 0) == 0 ? uri.substr(7) : ""; }

}  // namespace

std::string AsyncInvoker::EventJson(const Event& e) {
  nlohmann::json j = {{"id", e.id},
                      {"event_id", e.id},
                      {"function", e.function},
                      {"status", StatusName(e.status)},
                      {"attempts", e.attempts},
                      {"created_at", Rfc3339(e.created_ms)},
                      {"payload", Embed(e.payload)}};
  if (e.status == EventStatus::kSucceeded) j["result"] = Embed(e.result);
  if (!e.error.empty() && e.status != EventStatus::kSucceeded) j["error"] = e.error;
  if (e.finished_ms) j["finished_at"] = Rfc3339(e.finished_ms);
  if (e.status == EventStatus::kQueued && e.attempts > 0) j["next_attempt_at"] = Rfc3339(e.next_attempt_ms);
  nlohmann::json history = nlohmann::json::array();
  for (const auto& a : e.history) {
    nlohmann::json h = {{"started_at", Rfc3339(a.started_ms)}, {"finished_at", Rfc3339(a.finished_ms)}};
    if (!a.error.empty()) h["error"] = a.error;
    history.push_back(h);
  }
  j["history"] = history;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

AsyncInvoker::AsyncInvoker(Options options, EventStore* store, Executor executor, metrics::Registry* metrics)
    : options_(options), store_(store), executor_(std::move(executor)), metrics_(metrics) {
  if (metrics_) {
    enqueued_ = metrics_->Counter("pilotlight_async_events_total", "Asynchronous events accepted (durably stored).");
    succeeded_ = metrics_->Counter("pilotlight_async_succeeded_total", "Asynchronous events that succeeded.");
    retries_ = metrics_->Counter("pilotlight_async_retries_total", "Failed attempts of asynchronous events retried.");
    dead_letters_ =
        metrics_->Counter("pilotlight_async_dead_letters_total", "Asynchronous events moved to the dead-letter state.");
    depth_ = metrics_->Gauge("pilotlight_async_queue_depth", "Asynchronous events queued or running.");
    oldest_ = metrics_->Gauge("pilotlight_async_oldest_event_age_seconds", "Age of the oldest queued event.");
    metrics_->AddCollectHook([this] { UpdateGauges(); });
  }
}

AsyncInvoker::~AsyncInvoker() { Stop(std::chrono::seconds(0)); }

void AsyncInvoker::UpdateGauges() {
  auto s = store_->Stats();
  if (!s.ok()) return;
  depth_->Set(static_cast<double>(s->queued + s->running));
  oldest_->Set(s->oldest_queued_ms ? static_cast<double>(UnixMillis() - s->oldest_queued_ms) / 1000.0 : 0.0);
}

void AsyncInvoker::ConfigureDefault(AsyncConfig config) {
  std::lock_guard<std::mutex> l(mu_);
  default_config_ = std::move(config);
}

void AsyncInvoker::Configure(const std::string& function, AsyncConfig config) {
  std::lock_guard<std::mutex> l(mu_);
  configs_[function] = std::move(config);
}

bool AsyncInvoker::Knows(const std::string& function) const {
  std::lock_guard<std::mutex> l(mu_);
  return configs_.count(function) > 0;
}

AsyncConfig AsyncInvoker::ConfigFor(const std::string& function) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = configs_.find(function);
  return it == configs_.end() ? default_config_ : it->second;
}

void AsyncInvoker::Enqueue(const std::string& function, std::string payload,
                           std::function<void(StatusOr<std::string>)> done) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) {
      auto st = UnavailableError("the server is shutting down; retry on another instance");
      done(st);
      return;
    }
    pending_.push_back({NewEvent{function, std::move(payload)}, std::move(done)});
  }
  cv_.notify_all();
}

void AsyncInvoker::Wake() {
  {
    std::lock_guard<std::mutex> l(mu_);
    work_ = true;
  }
  cv_.notify_all();
}

Status AsyncInvoker::Redrive(const std::string& id) {
  PL_RETURN_IF_ERROR(store_->Redrive(id, UnixMillis()));
  Wake();
  return OkStatus();
}

Status AsyncInvoker::Start() {
  PL_ASSIGN_OR_RETURN(int recovered, store_->RecoverRunning(UnixMillis()));
  if (recovered > 0) {
    LogLine(spdlog::level::warn, "asynchronous events interrupted by a restart are queued again")
        .Int("events", recovered);
  }
  // Destinations a crash left unwritten: the event finished, but its line may or may not have
  // reached the file before the crash. Lines already there are not written again.
  PL_ASSIGN_OR_RETURN(auto pending, store_->PendingDestinations());
  if (!pending.empty()) {
    std::set<std::string> written;
    std::set<std::string> files;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto add = [&](const AsyncConfig& cfg) {
        for (const auto* uri : {&cfg.on_success, &cfg.on_failure}) {
          if (!FilePath(*uri).empty()) files.insert(FilePath(*uri));
        }
      };
      for (const auto& [fn, cfg] : configs_) add(cfg);
      add(default_config_);
    }
    for (const auto& f : files) {
      std::ifstream in(f);
      std::string line;
      while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        // One line per finish: a redriven event that finishes again writes another line.
        if (j.is_object() && j.contains("event_id") && j["event_id"].is_string()) {
          written.insert(j["event_id"].get<std::string>() + "|" + j.value("status", "") + "|" +
                         j.value("finished_at", ""));
        }
      }
    }
    for (const auto& e : pending) {
      AsyncConfig cfg = ConfigFor(e.function);
      const std::string& uri = e.status == EventStatus::kSucceeded ? cfg.on_success : cfg.on_failure;
      std::string key = e.id + "|" + std::string(StatusName(e.status)) + "|" + Rfc3339(e.finished_ms);
      if (!FilePath(uri).empty() && written.count(key)) {
        (void)store_->MarkDestinationDone(e.id);
      } else {
        WriteDestination(e);
      }
    }
  }
  writer_ = std::thread([this] { WriterLoop(); });
  dispatcher_ = std::thread([this] { DispatchLoop(); });
  completer_ = std::thread([this] { CompleteLoop(); });
  return OkStatus();
}

void AsyncInvoker::Stop(Duration timeout) {
  {
    std::unique_lock<std::mutex> l(mu_);
    claiming_ = false;
    cv_.wait_for(l, timeout, [&] { return running_total_ == 0; });
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (dispatcher_.joinable()) dispatcher_.join();
  if (completer_.joinable()) completer_.join();
}

void AsyncInvoker::WriterLoop() {
  while (true) {
    std::vector<Pending> batch;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return !pending_.empty() || stop_; });
      if (pending_.empty() && stop_) break;
      size_t n = std::min<size_t>(pending_.size(), static_cast<size_t>(options_.max_batch));
      batch.assign(std::make_move_iterator(pending_.begin()), std::make_move_iterator(pending_.begin() + n));
      pending_.erase(pending_.begin(), pending_.begin() + n);
    }
    std::vector<NewEvent> events;
    events.reserve(batch.size());
    for (auto& p : batch) events.push_back(p.event);
    auto ids = store_->Insert(events, UnixMillis());
    if (ids.ok() && enqueued_) enqueued_->Increment(static_cast<double>(ids->size()));
    for (size_t i = 0; i < batch.size(); ++i) {
      if (ids.ok()) {
        batch[i].done((*ids)[i]);
      } else {
        batch[i].done(ids.status());
      }
    }
    Wake();  // the dispatcher has work now
  }
}

void AsyncInvoker::DispatchLoop() {
  // Retention: finished events (and trigger jobs) older than `retention` are purged, checked
  // every retention/2 (at least every second, at most hourly).
  auto purge_every = std::clamp<Duration>(options_.retention / 2, std::chrono::seconds(1), std::chrono::hours(1));
  auto next_purge = std::chrono::steady_clock::now();
  bool idle = false;  // the last look found nothing to start
  while (true) {
    if (options_.retention > Duration::zero() && std::chrono::steady_clock::now() >= next_purge) {
      next_purge = std::chrono::steady_clock::now() + purge_every;
      auto n = store_->Purge(UnixMillis() -
                             std::chrono::duration_cast<std::chrono::milliseconds>(options_.retention).count());
      if (n.ok() && *n > 0) LogLine(spdlog::level::info, "finished events purged (retention)").Int("events", *n);
    }
    std::map<std::string, int> running;
    {
      // New events and finished ones wake this thread at once; the timed wake-up is only for
      // retries coming due, so an idle queue is looked at 10x less often.
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, idle ? options_.poll_interval * 10 : options_.poll_interval, [&] { return work_ || stop_; });
      work_ = false;
      if (stop_) break;
      if (!claiming_) continue;
      running = running_;
    }
    // Room per function: its share of capacity minus what already runs (functions met for the
    // first time, e.g. served without a config, get the defaults).
    std::map<std::string, int> room;
    std::vector<std::string> full;  // functions at their limit: not even looked at
    for (const auto& [fn, n] : running) {
      if (n >= ConfigFor(fn).max_concurrency) full.push_back(fn);
    }
    auto claimed = store_->ClaimDue(
        UnixMillis(), 64,
        [&](const Event& e) {
          auto it = room.find(e.function);
          if (it == room.end())
            it = room.emplace(e.function, ConfigFor(e.function).max_concurrency - running[e.function]).first;
          if (it->second <= 0) return false;
          it->second--;
          return true;
        },
        full);
    if (!claimed.ok()) {
      LogLine(spdlog::level::err, "cannot read the event store").Str("error", claimed.status().ToString());
      continue;
    }
    idle = claimed->empty();
    for (auto& e : *claimed) {
      {
        std::lock_guard<std::mutex> l(mu_);
        running_[e.function]++;
        running_total_++;
      }
      AsyncConfig cfg = ConfigFor(e.function);
      int64_t now = UnixMillis();
      if (now - e.created_ms > std::chrono::duration_cast<std::chrono::milliseconds>(cfg.max_event_age).count()) {
        Finished(e, DeadlineExceededError("the event is older than max_event_age and was not run"), now);
        continue;
      }
      Run(std::move(e));
    }
  }
}

void AsyncInvoker::Run(Event e) {
  int64_t started = UnixMillis();
  auto shared = std::make_shared<Event>(std::move(e));
  executor_(*shared, [this, shared, started](StatusOr<std::string> r) {
    {
      std::lock_guard<std::mutex> l(mu_);
      completions_.push_back({*shared, std::move(r), started});
    }
    cv_.notify_all();
  });
}

void AsyncInvoker::CompleteLoop() {
  while (true) {
    std::optional<Completion> c;
    {
      std::unique_lock<std::mutex> l(mu_);
      // After Stop, answers still arriving are not recorded: those events stay `running` and
      // run again at the next start (at-least-once), as after a crash.
      cv_.wait(l, [&] { return !completions_.empty() || stop_; });
      if (completions_.empty()) return;
      c.emplace(std::move(completions_.front()));
      completions_.pop_front();
    }
    Finished(c->event, std::move(c->result), c->started_ms);
  }
}

void AsyncInvoker::Finished(const Event& e, StatusOr<std::string> result, int64_t started_ms) {
  AsyncConfig cfg = ConfigFor(e.function);
  int64_t now = UnixMillis();
  Attempt attempt{started_ms, now, result.ok() ? "" : result.status().message()};
  Event done = e;
  done.history.push_back(attempt);
  Status st;
  bool final = false;
  if (result.ok()) {
    st = store_->Succeed(e.id, *result, attempt);
    done.status = EventStatus::kSucceeded;
    done.result = *result;
    done.finished_ms = now;
    final = true;
    if (succeeded_) succeeded_->Increment();
  } else {
    bool too_old =
        now - e.created_ms > std::chrono::duration_cast<std::chrono::milliseconds>(cfg.max_event_age).count();
    if (result.status().code() == StatusCode::kResourceExhausted && !too_old) {
      // Throttled (the function had no capacity): as on Lambda, this is not a failed attempt;
      // the event waits (up to max_event_age) and tries again.
      thread_local std::mt19937_64 trng{std::random_device{}()};
      int64_t wait = 200 + static_cast<int64_t>(trng() % 800);
      st = store_->Requeue(e.id, now + wait);
    } else if (e.attempts <= cfg.max_retries && !too_old) {
      thread_local std::mt19937_64 rng{std::random_device{}()};
      double base =
          static_cast<double>(std::chrono::duration_cast<std::chrono::milliseconds>(cfg.retry_backoff).count());
      double backoff = std::min(base * static_cast<double>(1 << std::min(e.attempts - 1, 16)), 15.0 * 60 * 1000);
      backoff *= std::uniform_real_distribution<double>(0.5, 1.5)(rng);
      st = store_->Retry(e.id, attempt, now + static_cast<int64_t>(backoff));
      if (retries_) retries_->Increment();
      LogLine(spdlog::level::warn, "asynchronous event failed; retrying")
          .Str("event_id", e.id)
          .Str("function", e.function)
          .Int("attempt", e.attempts)
          .Num("retry_in_ms", backoff)
          .Str("error", attempt.error);
    } else {
      st = store_->DeadLetter(e.id, attempt, now);
      done.status = EventStatus::kDeadLetter;
      done.error = attempt.error;
      done.finished_ms = now;
      final = true;
      if (dead_letters_) dead_letters_->Increment();
      LogLine(spdlog::level::err, "asynchronous event moved to the dead-letter store")
          .Str("event_id", e.id)
          .Str("function", e.function)
          .Int("attempts", e.attempts)
          .Str("error", attempt.error);
    }
  }
  if (!st.ok()) {
    LogLine(spdlog::level::err, "cannot record an event's outcome; it will run again after a restart")
        .Str("event_id", e.id)
        .Str("error", st.ToString());
  } else if (final) {
    WriteDestination(done);
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    running_[e.function]--;
    running_total_--;
    work_ = true;  // a slot is free
  }
  cv_.notify_all();
}

void AsyncInvoker::WriteDestination(const Event& e) {
  AsyncConfig cfg = ConfigFor(e.function);
  const std::string& uri = e.status == EventStatus::kSucceeded ? cfg.on_success : cfg.on_failure;
  Status st;
  if (!uri.empty()) {
    std::lock_guard<std::mutex> l(dest_mu_);
    std::string line = EventJson(e);
    std::string path = FilePath(uri);
    if (!path.empty()) {
      st = AppendLine(path, line);
    } else {
      st = PostJson(uri, line);
    }
  }
  if (!st.ok()) {
    LogLine(spdlog::level::err, "cannot write an event's destination; will try again at the next start")
        .Str("event_id", e.id)
        .Str("destination", uri)
        .Str("error", st.ToString());
    return;
  }
  (void)store_->MarkDestinationDone(e.id);
}

}  // namespace pilotlight::events
