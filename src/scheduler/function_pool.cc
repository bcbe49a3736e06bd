#include "scheduler/function_pool.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/logging.h"

namespace pilotlight::scheduler {

struct Slot {
  uint64_t id = 0;
  std::unique_ptr<runtime::Instance> instance;
  store::Manifest manifest;
  int in_flight = 0;
  TimePoint last_used{};
  bool pending_cold = false;  // the next lease reports the cold start that created this slot
  bool first_run_pending = true;
  bool retiring = false;  // replaced by a newer version; unloaded when its last request ends
  Duration fetch_time{0}, load_time{0};
  store::CachePin pin;  // keeps the cached model file while loaded
};

// ---- Lease -----------------------------------------------------------------------------------

Lease::Lease(Lease&& o) noexcept
    : cold_start(o.cold_start),
      fetch_time(o.fetch_time),
      load_time(o.load_time),
      queue_time(o.queue_time),
      first_run(o.first_run),
      run_deadline(o.run_deadline),
      pool_(o.pool_),
      slot_(std::move(o.slot_)) {
  o.pool_ = nullptr;
}

Lease::~Lease() { Release(); }

void Lease::Release() {
  if (pool_ && slot_) {
    std::shared_ptr<Slot> s = std::move(slot_);
    pool_->Release(std::move(s));
  }
  pool_ = nullptr;
}

runtime::Instance& Lease::instance() const { return *slot_->instance; }
const store::Manifest& Lease::manifest() const { return slot_->manifest; }
const std::string& Lease::version() const { return slot_->manifest.version; }

void Lease::RecordRun(Duration d) const {
  if (!pool_) return;
  // Exponential moving average (1/8); relaxed races only blur the average.
  int64_t old = pool_->typical_run_ns_.load(std::memory_order_relaxed);
  pool_->typical_run_ns_.store(old + (d.count() - old) / 8, std::memory_order_relaxed);
}

void Lease::RecordFirstRun(Duration d) const {
  if (pool_) pool_->metrics()->init_first_run->Observe(ToSeconds(d));
}

// ---- FunctionPool ----------------------------------------------------------------------------

FunctionPool::FunctionPool(PoolOptions options, store::ModelStore* store, runtime::Runtime* runtime,
                           metrics::FunctionMetrics* metrics, Clock* clock, ThreadPool* workers, ThreadPool* loaders)
    : options_(std::move(options)),
      store_(store),
      runtime_(runtime),
      metrics_(metrics),
      clock_(clock),
      workers_(workers),
      loaders_(loaders) {}

FunctionPool::~FunctionPool() = default;

std::shared_ptr<Slot> FunctionPool::FreeSlotLocked() {
  std::shared_ptr<Slot> best;
  for (const auto& s : slots_) {
    if (s->in_flight < options_.concurrency && (!best || s->in_flight < best->in_flight)) best = s;
  }
  return best;
}

Lease FunctionPool::MakeLeaseLocked(const std::shared_ptr<Slot>& slot, TimePoint enqueued, bool queued) {
  TimePoint now = clock_->Now();
  slot->in_flight++;
  in_flight_++;
  slot->last_used = now;
  Lease lease(this, slot);
  if (queued) lease.queue_time = now - enqueued;
  if (slot->pending_cold) {
    slot->pending_cold = false;
    lease.cold_start = true;
    lease.fetch_time = slot->fetch_time;
    lease.load_time = slot->load_time;
    metrics_->cold_starts->Increment();
  }
  if (slot->first_run_pending) {
    slot->first_run_pending = false;
    lease.first_run = true;
  }
  lease.run_deadline = now + options_.timeout;
  return lease;
}

void FunctionPool::Acquire(AcquireCallback cb) {
  std::unique_lock<std::mutex> l(mu_);
  if (draining_) {
    l.unlock();
    cb(UnavailableError("the server is shutting down; retry on another instance"));
    return;
  }
  if (queue_.empty()) {
    if (auto slot = FreeSlotLocked()) {
      Lease lease = MakeLeaseLocked(slot, TimePoint{}, false);
      UpdateGaugesLocked();
      l.unlock();
      if (typical_run_ns_.load(std::memory_order_relaxed) <= options_.inline_run_limit.count()) {
        cb(std::move(lease));
      } else {
        Ready ready;
        ready.emplace_back(std::move(cb), std::move(lease));
        Deliver(ready, true);
      }
      return;
    }
  }
  if (static_cast<int>(queue_.size()) >= options_.max_queue) {
    // Shed, but still scale (with max_queue 0 nothing else would ever start an instance).
    if (loading_ == 0 && static_cast<int>(slots_.size()) < options_.max_instances) StartLoadLocked(false);
    UpdateGaugesLocked();
    l.unlock();
    cb(ResourceExhaustedError(fmt::format("function '{}' is at capacity: {} requests already queued (max_queue)",
                                          options_.function, options_.max_queue)));
    return;
  }
  TimePoint now = clock_->Now();
  queue_.push_back({std::move(cb), now, now + options_.queue_timeout});
  if (loading_ == 0 && static_cast<int>(slots_.size()) < options_.max_instances) StartLoadLocked(true);
  UpdateGaugesLocked();
}

void FunctionPool::WarmUp(std::function<void(Status)> done) {
  std::unique_lock<std::mutex> l(mu_);
  if (!slots_.empty()) {
    l.unlock();
    done(OkStatus());
    return;
  }
  warm_waiters_.push_back(std::move(done));
  if (loading_ == 0) StartLoadLocked(false);
  UpdateGaugesLocked();
}

void FunctionPool::StartLoadLocked(bool for_request) {
  loading_++;
  loaders_->Post([this, for_request] { DoLoad(for_request); });
}

namespace {
Status CheckSchema(const store::Manifest& m, const runtime::Instance& inst) {
  auto same = [](const std::vector<store::TensorInfo>& a, const std::vector<tensor::TensorSpec>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i].name != b[i].name || a[i].dtype != tensor::DTypeName(b[i].dtype)) return false;
    }
    return true;
  };
  if (!same(m.inputs, inst.inputs()) || !same(m.outputs, inst.outputs())) {
    return DataLossError("the manifest's inputs/outputs do not match the model file's; push the model again");
  }
  return OkStatus();
}
}  // namespace

void FunctionPool::DoLoad(bool for_request) {
  TimePoint t0 = clock_->Now();
  // Scale-out loads the version already serving; a load from cold reads current.json.
  std::string selector;
  {
    std::lock_guard<std::mutex> l(mu_);
    selector = !slots_.empty() && !active_version_.empty() ? active_version_ : options_.version;
  }
  StatusOr<store::ResolvedModel> resolved = store::ResolvedModel{};
  Status integrity_error;
  if (options_.process) {
    // A process function has no model in the store: its instance is a worker process.
    resolved->manifest.name = options_.function;
    resolved->manifest.version = "$LATEST";
  } else {
    resolved = store_->Resolve(options_.model, selector);
    if (!resolved.ok() && resolved.status().code() == StatusCode::kDataLoss) {
      integrity_error = resolved.status();
      std::string good;
      {
        std::lock_guard<std::mutex> l(mu_);
        good = last_good_version_;
      }
      LogLine(spdlog::level::err, "model integrity check failed")
          .Str("function", options_.function)
          .Str("error", integrity_error.message())
          .Str("fallback_version", good);
      if (!good.empty()) {
        auto fallback = store_->Resolve(options_.model, good);
        if (fallback.ok()) resolved = std::move(fallback);
      }
    }
  }
  TimePoint t1 = clock_->Now();
  using InstanceOr = StatusOr<std::unique_ptr<runtime::Instance>>;
  InstanceOr inst = !resolved.ok() ? InstanceOr(resolved.status())
                    : runtime_
                        ? runtime_->Load({options_.function, resolved->local_path, options_.process.get()})
                        : InstanceOr(FailedPreconditionError("process functions are not enabled in this server"));
  if (inst.ok() && !options_.process) {
    Status schema = CheckSchema(resolved->manifest, **inst);
    if (!schema.ok()) inst = schema;
  }
  TimePoint t2 = clock_->Now();
  if (!inst.ok() &&
      (inst.status().code() == StatusCode::kNotFound || inst.status().code() == StatusCode::kInvalidArgument)) {
    // The function exists but its model is missing or misnamed in the store: a server-side
    // problem (503 not_ready), not "no such route" or the client's bad input.
    inst = FailedPreconditionError(inst.status().message());
  }

  Ready ready;
  std::vector<std::function<void(Status)>> waiters;
  Status result = inst.ok() ? OkStatus() : inst.status();
  {
    std::lock_guard<std::mutex> l(mu_);
    loading_--;
    if (inst.ok() && !slots_.empty() && resolved->manifest.version != active_version_) {
      // A swap finished while this scale-out load ran: this instance is already outdated.
      loaders_->Post([dead = std::shared_ptr<runtime::Instance>(std::move(inst).value())]() mutable { dead.reset(); });
      UpdateGaugesLocked();
      return;
    }
    if (inst.ok()) {
      auto slot = std::make_shared<Slot>();
      slot->pin = resolved->pin;
      slot->id = ++next_slot_id_;
      slot->instance = std::move(inst).value();
      slot->manifest = resolved->manifest;
      slot->last_used = t2;
      slot->fetch_time = t1 - t0;
      slot->load_time = t2 - t1;
      slot->pending_cold = for_request;
      slots_.push_back(slot);
      active_version_ = slot->manifest.version;
      last_good_version_ = slot->manifest.version;
      latest_inputs_ = std::make_shared<const std::vector<tensor::TensorSpec>>(slot->instance->inputs());
      last_error_ = integrity_error;
      retry_backoff_ = std::chrono::milliseconds(500);
      if (!options_.process) metrics_->init_fetch->Observe(ToSeconds(t1 - t0));
      metrics_->init_load->Observe(ToSeconds(t2 - t1));
      LogLine line(spdlog::level::info, options_.process ? "worker started" : "instance loaded");
      line.Str("function", options_.function);
      if (options_.process) {
        line.Num("init_ms", ToMillis(t2 - t1));
      } else {
        line.Str("version", slot->manifest.version)
            .Num("fetch_ms", ToMillis(t1 - t0))
            .Num("load_ms", ToMillis(t2 - t1));
      }
      line.Int("instances", static_cast<int64_t>(slots_.size())).Bool("for_request", for_request);
      waiters.swap(warm_waiters_);
      PumpLocked(ready);
      // Still saturated with requests waiting: scale out, one load at a time.
      if (!queue_.empty() && !FreeSlotLocked() && static_cast<int>(slots_.size()) < options_.max_instances) {
        StartLoadLocked(true);
      }
    } else {
      last_error_ = result;
      metrics_->load_failures->Increment();
      retry_after_ = t2 + retry_backoff_;
      retry_backoff_ = std::min<Duration>(retry_backoff_ * 2, std::chrono::seconds(30));
      LogLine(spdlog::level::err, options_.process ? "worker failed to start" : "instance load failed")
          .Str("function", options_.function)
          .Str("model", options_.model)
          .Str("version", options_.version)
          .Str("error", result.ToString());
      waiters.swap(warm_waiters_);
      if (slots_.empty()) {
        // Nothing can serve the queued requests: answer them with the reason.
        for (auto& w : queue_) ready.emplace_back(std::move(w.cb), result);
        queue_.clear();
      }
    }
    UpdateGaugesLocked();
  }
  for (auto& w : waiters) w(result);
  Deliver(ready, true);
}

void FunctionPool::PumpLocked(Ready& ready) {
  while (!queue_.empty()) {
    auto slot = FreeSlotLocked();
    if (!slot) break;
    Waiter w = std::move(queue_.front());
    queue_.pop_front();
    ready.emplace_back(std::move(w.cb), MakeLeaseLocked(slot, w.enqueued, true));
  }
}

void FunctionPool::Deliver(Ready& ready, bool post) {
  for (auto& [cb, result] : ready) {
    if (post) {
      auto task = std::make_shared<std::pair<AcquireCallback, StatusOr<Lease>>>(std::move(cb), std::move(result));
      workers_->Post([task] { task->first(std::move(task->second)); });
    } else {
      cb(std::move(result));
    }
  }
  ready.clear();
}

void FunctionPool::Release(std::shared_ptr<Slot> slot) {
  Ready ready;
  std::shared_ptr<Slot> unload;
  {
    std::lock_guard<std::mutex> l(mu_);
    slot->in_flight--;
    in_flight_--;
    slot->last_used = clock_->Now();
    if (!slot->retiring && slot->in_flight == 0 && !slot->instance->Healthy()) {
      // Its worker died or was killed (crash, timeout, memory): replace it.
      auto it = std::find(slots_.begin(), slots_.end(), slot);
      if (it != slots_.end()) {
        unload = *it;
        slots_.erase(it);
        LogLine(spdlog::level::warn, "instance replaced (unhealthy)")
            .Str("function", options_.function)
            .Int("instances", static_cast<int64_t>(slots_.size()));
        if (!draining_ && loading_ == 0 &&
            (!queue_.empty() || static_cast<int>(slots_.size()) < options_.min_instances) &&
            static_cast<int>(slots_.size()) < options_.max_instances) {
          StartLoadLocked(!queue_.empty());
        }
      }
    }
    if (slot->retiring && slot->in_flight == 0) {
      auto it = std::find(retiring_.begin(), retiring_.end(), slot);
      if (it != retiring_.end()) {
        unload = *it;
        retiring_.erase(it);
        LogLine(spdlog::level::info, "instance unloaded (replaced)")
            .Str("function", options_.function)
            .Str("version", slot->manifest.version);
      }
    }
    PumpLocked(ready);
    if (!unload && options_.idle_timeout == Duration::zero() && slot->in_flight == 0 && queue_.empty() &&
        static_cast<int>(slots_.size()) > options_.min_instances) {
      auto it = std::find(slots_.begin(), slots_.end(), slot);
      if (it != slots_.end()) {
        unload = *it;
        slots_.erase(it);
        LogLine(spdlog::level::info, "instance unloaded (idle)")
            .Str("function", options_.function)
            .Str("version", slot->manifest.version)
            .Int("instances", static_cast<int64_t>(slots_.size()));
      }
    }
    UpdateGaugesLocked();
  }
  // Destroying a session takes a while: never on the request's thread.
  if (unload) {
    slot.reset();
    loaders_->Post([unload = std::move(unload)]() mutable { unload.reset(); });
  }
  Deliver(ready, true);
}

void FunctionPool::Tick() {
  Ready ready;
  std::vector<std::shared_ptr<Slot>> unload;
  {
    std::lock_guard<std::mutex> l(mu_);
    TimePoint now = clock_->Now();
    while (!queue_.empty() && queue_.front().deadline <= now) {
      Waiter w = std::move(queue_.front());
      queue_.pop_front();
      ready.emplace_back(
          std::move(w.cb),
          ResourceExhaustedError(fmt::format(
              "function '{}' had no free instance within queue_timeout ({} ms); retry later", options_.function,
              std::chrono::duration_cast<std::chrono::milliseconds>(options_.queue_timeout).count())));
    }
    // Instances whose worker died while idle go at once.
    for (auto it = slots_.begin(); it != slots_.end();) {
      if ((*it)->in_flight == 0 && !(*it)->instance->Healthy()) {
        LogLine(spdlog::level::warn, "instance replaced (unhealthy)").Str("function", options_.function);
        unload.push_back(std::move(*it));
        it = slots_.erase(it);
      } else {
        ++it;
      }
    }
    // Unload idle instances beyond the warm pool, least recently used first.
    std::sort(slots_.begin(), slots_.end(), [](const auto& a, const auto& b) { return a->last_used > b->last_used; });
    while (static_cast<int>(slots_.size()) > options_.min_instances) {
      auto& s = slots_.back();
      if (s->in_flight > 0 || now - s->last_used < options_.idle_timeout || !queue_.empty()) break;
      LogLine(spdlog::level::info, "instance unloaded (idle)")
          .Str("function", options_.function)
          .Str("version", s->manifest.version)
          .Int("instances", static_cast<int64_t>(slots_.size() - 1));
      unload.push_back(std::move(s));
      slots_.pop_back();
    }
    if (!draining_ && loading_ == 0 && static_cast<int>(slots_.size()) < options_.min_instances &&
        now >= retry_after_) {
      StartLoadLocked(false);
    }
    UpdateGaugesLocked();
  }
  // Destroying an instance can take a while (a session, a worker): never on housekeeping.
  if (!unload.empty()) loaders_->Post([unload = std::move(unload)]() mutable { unload.clear(); });
  Deliver(ready, false);
}

void FunctionPool::BeginDrain() {
  std::lock_guard<std::mutex> l(mu_);
  draining_ = true;
}

bool FunctionPool::Idle() const {
  std::lock_guard<std::mutex> l(mu_);
  return queue_.empty() && in_flight_ == 0 && loading_ == 0 && swapping_to_.empty();
}

bool FunctionPool::Warm() const {
  std::lock_guard<std::mutex> l(mu_);
  return !slots_.empty();
}

uint64_t FunctionPool::SwapEpoch() const {
  std::lock_guard<std::mutex> l(mu_);
  return swap_epoch_;
}

void FunctionPool::OnCurrentVersion(const std::string& version, std::optional<uint64_t> epoch) {
  std::lock_guard<std::mutex> l(mu_);
  if (Pinned() || draining_ || slots_.empty() || version.empty()) return;
  if (epoch && *epoch != swap_epoch_) return;
  if (version == active_version_ || version == swapping_to_ || !swapping_to_.empty()) return;
  if (version == failed_version_ && clock_->Now() < failed_retry_at_) return;
  StartSwapLocked(version);
}

void FunctionPool::SwapTo(const std::string& version, std::function<void(Status)> done) {
  std::unique_lock<std::mutex> l(mu_);
  if (Pinned() || slots_.empty() || (version == active_version_ && swapping_to_.empty())) {
    l.unlock();
    done(OkStatus());
    return;
  }
  if (draining_) {
    l.unlock();
    done(UnavailableError("the server is shutting down"));
    return;
  }
  swap_waiters_.emplace_back(version, std::move(done));
  if (swapping_to_ != version) {
    if (swapping_to_.empty()) {
      StartSwapLocked(version);
    }
    // else: the swap in progress finishes first; DoSwap then starts this one.
  }
}

void FunctionPool::StartSwapLocked(const std::string& version) {
  swapping_to_ = version;
  swap_epoch_++;
  int count = std::clamp(static_cast<int>(slots_.size()), 1, options_.max_instances);
  LogLine(spdlog::level::info, "version swap started")
      .Str("function", options_.function)
      .Str("from", active_version_)
      .Str("to", version)
      .Int("instances", count);
  loaders_->Post([this, version, count] { DoSwap(version, count); });
}

void FunctionPool::DoSwap(std::string version, int count) {
  TimePoint t0 = clock_->Now();
  auto resolved = store_->Resolve(options_.model, version);
  TimePoint t1 = clock_->Now();
  std::vector<std::unique_ptr<runtime::Instance>> loaded;
  Status st = resolved.status();
  for (int i = 0; st.ok() && i < count; ++i) {
    auto inst = runtime_->Load({options_.function, resolved->local_path});
    if (inst.ok()) {
      Status schema = CheckSchema(resolved->manifest, **inst);
      if (!schema.ok()) inst = schema;
    }
    if (!inst.ok()) {
      st = inst.status();
      break;
    }
    loaded.push_back(std::move(inst).value());
  }
  TimePoint t2 = clock_->Now();

  Ready ready;
  std::vector<std::pair<std::function<void(Status)>, Status>> done;
  std::vector<std::shared_ptr<Slot>> unload;
  std::string next_swap;
  {
    std::lock_guard<std::mutex> l(mu_);
    std::string from = active_version_;
    swapping_to_.clear();
    if (st.ok() && draining_) st = UnavailableError("the server is shutting down");
    if (st.ok()) {
      for (auto& s : slots_) {
        s->retiring = true;
        if (s->in_flight == 0) {
          unload.push_back(s);
        } else {
          retiring_.push_back(s);
        }
      }
      slots_.clear();
      for (auto& inst : loaded) {
        auto slot = std::make_shared<Slot>();
        slot->id = ++next_slot_id_;
        slot->instance = std::move(inst);
        slot->manifest = resolved->manifest;
        slot->pin = resolved->pin;
        slot->last_used = t2;
        slots_.push_back(slot);
      }
      active_version_ = version;
      last_good_version_ = version;
      failed_version_.clear();
      latest_inputs_ = std::make_shared<const std::vector<tensor::TensorSpec>>(slots_.front()->instance->inputs());
      last_error_ = OkStatus();
      metrics_->swaps->Increment();
      metrics_->init_fetch->Observe(ToSeconds(t1 - t0));
      metrics_->init_load->Observe(ToSeconds(t2 - t1));
      LogLine(spdlog::level::info, "version swapped")
          .Str("function", options_.function)
          .Str("from", from)
          .Str("to", version)
          .Num("fetch_ms", ToMillis(t1 - t0))
          .Num("load_ms", ToMillis(t2 - t1))
          .Int("draining_old", static_cast<int64_t>(retiring_.size()));
      PumpLocked(ready);
    } else {
      failed_version_ = version;
      failed_retry_at_ = t2 + options_.swap_retry;
      last_error_ = st;
      metrics_->swap_failures->Increment();
      LogLine(spdlog::level::err, "version swap failed; the previous version stays in service")
          .Str("function", options_.function)
          .Str("serving", from)
          .Str("refused", version)
          .Str("error", st.ToString());
    }
    // Callers waiting for this version get the result; callers waiting for another one start
    // the next swap.
    for (auto it = swap_waiters_.begin(); it != swap_waiters_.end();) {
      if (it->first == version || it->first == active_version_) {
        done.emplace_back(std::move(it->second), it->first == active_version_ ? OkStatus() : st);
        it = swap_waiters_.erase(it);
      } else {
        next_swap = it->first;
        ++it;
      }
    }
    if (!next_swap.empty() && !draining_) StartSwapLocked(next_swap);
    UpdateGaugesLocked();
  }
  if (!st.ok()) loaded.clear();
  if (!unload.empty()) loaders_->Post([unload]() mutable { unload.clear(); });
  for (auto& [fn, result] : done) fn(result);
  Deliver(ready, true);
}

void FunctionPool::UpdateGaugesLocked() {
  metrics_->instances_warm->Set(static_cast<double>(slots_.size()));
  metrics_->instances_loading->Set(loading_);
  metrics_->queue_depth->Set(static_cast<double>(queue_.size()));
  metrics_->in_flight->Set(in_flight_);
}

std::shared_ptr<const std::vector<tensor::TensorSpec>> FunctionPool::InputSpecs() const {
  std::lock_guard<std::mutex> l(mu_);
  return latest_inputs_;
}

PoolSnapshot FunctionPool::Snapshot() const {
  std::lock_guard<std::mutex> l(mu_);
  PoolSnapshot s;
  s.instances = static_cast<int>(slots_.size());
  s.loading = loading_;
  s.state = !slots_.empty() ? "warm" : loading_ > 0 ? "loading" : "cold";
  s.version = !active_version_.empty() ? active_version_ : last_good_version_;
  s.swapping_to = swapping_to_;
  s.retiring = static_cast<int>(retiring_.size());
  s.queue_depth = static_cast<int>(queue_.size());
  s.in_flight = in_flight_;
  if (!last_error_.ok()) s.last_error = last_error_.ToString();
  return s;
}

}  // namespace pilotlight::scheduler
