#include "scheduler/scheduler.h"

#include <algorithm>

#include "common/logging.h"

namespace pilotlight::scheduler {

PoolOptions PoolOptionsFromConfig(const config::FunctionConfig& f, Duration default_poll_interval) {
  PoolOptions o;
  o.poll_interval = f.poll_interval.value_or(default_poll_interval);
  o.function = f.name;
  o.model = f.model.empty() ? f.name : f.model;
  o.version = f.version;
  o.min_instances = f.min_instances;
  o.max_instances = f.max_instances;
  o.concurrency = f.concurrency;
  o.idle_timeout = f.idle_timeout;
  o.max_queue = f.max_queue;
  o.queue_timeout = f.queue_timeout;
  o.timeout = f.timeout;
  if (f.runtime == "process") {
    auto spec = std::make_shared<runtime::ProcessSpec>();
    spec->command = f.command;
    spec->handler = f.handler;
    spec->cwd = f.cwd;
    spec->env = f.env;
    spec->memory_mb = f.memory_mb;
    spec->init_timeout = f.init_timeout;
    if (const char* r = std::getenv("AWS_REGION"); r && *r) spec->region = r;
    o.process = spec;
    o.version = "$LATEST";
    o.concurrency = 1;
    o.poll_interval = Duration::zero();
  }
  return o;
}

Scheduler::Scheduler(SchedulerOptions options, store::ModelStore* store, runtime::Runtime* runtime,
                     metrics::Registry* metrics, Clock* clock)
    : options_(options), store_(store), runtime_(runtime), metrics_(metrics), clock_(clock) {
  int workers = options_.worker_threads > 0 ? options_.worker_threads
                                            : static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  workers_ = std::make_unique<ThreadPool>(workers);
  loaders_ = std::make_unique<ThreadPool>(std::max(1, options_.loader_threads));
  admin_ = std::make_unique<ThreadPool>(1);
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> l(tick_mu_);
    stop_ = true;
  }
  tick_cv_.notify_all();
  if (housekeeping_.joinable()) housekeeping_.join();
  if (watcher_.joinable()) watcher_.join();
  admin_->Shutdown();
  // Finish queued work and loads before the pools (and their instances) go away. Workers and
  // loaders post to each other; a post to a pool already shut down runs inline.
  workers_->Shutdown();
  loaders_->Shutdown();
  workers_->Shutdown();
}

void Scheduler::AddFunction(const PoolOptions& o) {
  std::lock_guard<std::mutex> l(mu_);
  if (pools_.count(o.function)) return;
  runtime::Runtime* rt = o.process ? process_runtime_ : runtime_;
  pools_[o.function] = std::make_unique<FunctionPool>(o, store_, rt, metrics_->ForFunction(o.function), clock_,
                                                      workers_.get(), loaders_.get());
}

FunctionPool* Scheduler::Find(const std::string& name) {
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = pools_.find(name);
    if (it != pools_.end()) return it->second.get();
  }
  if (!options_.auto_functions || !store::ValidateName(name, "function").ok()) return nullptr;
  // Remember names the store does not have for a moment, so a stream of requests to an
  // unknown name does not become a stream of store reads (object-store GETs cost money).
  TimePoint now = clock_->Now();
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = missing_.find(name);
    if (it != missing_.end() && now < it->second) return nullptr;
  }
  if (!store_->ReadCurrent(name).ok()) {
    std::lock_guard<std::mutex> l(mu_);
    if (missing_.size() > 10000) missing_.clear();
    missing_[name] = now + std::chrono::seconds(2);
    return nullptr;
  }
  AddFunction(PoolOptionsFromConfig(config::DefaultFunction(name), options_.default_poll_interval));
  std::lock_guard<std::mutex> l(mu_);
  return pools_[name].get();
}

StatusOr<FunctionPool*> Scheduler::FindVersion(const std::string& name, const std::string& version) {
  FunctionPool* base = Find(name);
  if (!base) return NotFoundError("function '" + name + "' does not exist");
  if (base->IsProcess()) return NotFoundError("process functions have only $LATEST");
  PL_RETURN_IF_ERROR(store::ValidateName(version, "version"));
  std::string key = name + "@" + version;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = pools_.find(key);
    if (it != pools_.end()) return it->second.get();
  }
  PL_RETURN_IF_ERROR(store_->ReadManifest(base->options().model, version).status());
  PoolOptions o = base->options();
  o.function = key;
  o.version = version;
  o.min_instances = 0;
  AddFunction(o);
  std::lock_guard<std::mutex> l(mu_);
  return pools_[key].get();
}

std::vector<std::string> Scheduler::FunctionNames() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::string> out;
  for (const auto& [n, p] : pools_) out.push_back(n);
  return out;
}

void Scheduler::Start() {
  TickAll();  // starts min_instances loads
  if (options_.start_housekeeping) {
    housekeeping_ = std::thread([this] { Housekeeping(); });
    watcher_ = std::thread([this] { Watch(); });
  }
}

void Scheduler::Watch() {
  std::unique_lock<std::mutex> l(tick_mu_);
  while (!stop_) {
    tick_cv_.wait_for(l, std::chrono::milliseconds(50));
    if (stop_) break;
    l.unlock();
    PollAll(false);
    l.lock();
  }
}

void Scheduler::PollAll(bool force) {
  std::vector<FunctionPool*> pools;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [n, p] : pools_) pools.push_back(p.get());
  }
  TimePoint now = clock_->Now();
  // Swap epochs before any read: a pointer read while an admin promote swapped the pool may be
  // older than that swap, and must not swap it back.
  std::map<FunctionPool*, uint64_t> epochs;
  for (auto* p : pools) epochs[p] = p->SwapEpoch();
  std::map<std::string, std::string> current;  // model → version, read once per model per pass
  for (auto* p : pools) {
    const PoolOptions& o = p->options();
    if (p->Pinned() || !p->Warm() || (!force && o.poll_interval <= Duration::zero())) continue;
    {
      std::lock_guard<std::mutex> l(poll_mu_);
      TimePoint& next = next_poll_[o.function];
      if (!force && now < next) continue;
      next = now + o.poll_interval;
    }
    auto it = current.find(o.model);
    if (it == current.end()) {
      auto cur = store_->ReadCurrent(o.model);
      if (!cur.ok()) {
        LogLine(spdlog::level::warn, "cannot read current.json; still serving the loaded version")
            .Str("function", o.function)
            .Str("error", cur.status().ToString());
        current[o.model] = "";
        continue;
      }
      it = current.emplace(o.model, cur->version).first;
    }
    p->OnCurrentVersion(it->second, epochs[p]);
  }
}

void Scheduler::SwapAll(ModelChange change, std::function<void(StatusOr<ModelChange>)> done) {
  std::vector<FunctionPool*> pools;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [n, p] : pools_) {
      if (p->options().model == change.model) pools.push_back(p.get());
    }
  }
  struct Join {
    std::mutex mu;
    ModelChange change;
    size_t left = 0;
    std::function<void(StatusOr<ModelChange>)> done;
  };
  auto join = std::make_shared<Join>();
  join->change = std::move(change);
  join->left = pools.size();
  join->done = std::move(done);
  if (pools.empty()) {
    join->done(std::move(join->change));
    return;
  }
  for (auto* p : pools) {
    std::string name = p->options().function;
    std::string how = p->Pinned() ? "pinned" : p->Warm() ? "swapped" : "cold";
    p->SwapTo(join->change.version, [join, name, how](Status st) {
      std::unique_lock<std::mutex> l(join->mu);
      join->change.functions.emplace_back(name, st.ok() ? how : st.ToString());
      if (!st.ok()) join->change.all_swapped = false;
      if (--join->left == 0) {
        l.unlock();
        std::sort(join->change.functions.begin(), join->change.functions.end());
        join->done(std::move(join->change));
      }
    });
  }
}

void Scheduler::Promote(const std::string& model, const std::string& version,
                        std::function<void(StatusOr<ModelChange>)> done) {
  admin_->Post([this, model, version, done = std::move(done)]() mutable {
    auto r = store_->Promote(model, version);
    if (!r.ok()) {
      done(r.status());
      return;
    }
    LogLine(spdlog::level::info, "model promoted")
        .Str("model", model)
        .Str("version", version)
        .Str("previous", r->previous);
    SwapAll(ModelChange{model, r->version, r->previous, {}, true}, std::move(done));
  });
}

void Scheduler::Rollback(const std::string& model, std::function<void(StatusOr<ModelChange>)> done) {
  admin_->Post([this, model, done = std::move(done)]() mutable {
    auto r = store_->Rollback(model);
    if (!r.ok()) {
      done(r.status());
      return;
    }
    LogLine(spdlog::level::info, "model rolled back")
        .Str("model", model)
        .Str("version", r->version)
        .Str("previous", r->previous);
    SwapAll(ModelChange{model, r->version, r->previous, {}, true}, std::move(done));
  });
}

void Scheduler::TickAll() {
  std::vector<FunctionPool*> pools;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [n, p] : pools_) pools.push_back(p.get());
  }
  for (auto* p : pools) p->Tick();
}

void Scheduler::Housekeeping() {
  std::unique_lock<std::mutex> l(tick_mu_);
  while (!stop_) {
    tick_cv_.wait_for(l, options_.tick_interval);
    if (stop_) break;
    l.unlock();
    TickAll();
    l.lock();
  }
}

void Scheduler::BeginDrain() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [n, p] : pools_) p->BeginDrain();
}

bool Scheduler::Idle() const {
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [n, p] : pools_) {
    if (!p->Idle()) return false;
  }
  return true;
}

}  // namespace pilotlight::scheduler
