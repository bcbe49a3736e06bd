#include "scheduler/scheduler.h"

#include <algorithm>

namespace pilotlight::scheduler {

PoolOptions PoolOptionsFromConfig(const config::FunctionConfig& f) {
  PoolOptions o;
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
  return o;
}

Scheduler::Scheduler(SchedulerOptions options, store::ModelStore* store, runtime::Runtime* runtime,
                     metrics::Registry* metrics, Clock* clock)
    : options_(options), store_(store), runtime_(runtime), metrics_(metrics), clock_(clock) {
  int workers = options_.worker_threads > 0 ? options_.worker_threads
                                            : static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  workers_ = std::make_unique<ThreadPool>(workers);
  loaders_ = std::make_unique<ThreadPool>(std::max(1, options_.loader_threads));
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> l(tick_mu_);
    stop_ = true;
  }
  tick_cv_.notify_all();
  if (housekeeping_.joinable()) housekeeping_.join();
  // Finish queued work and loads before the pools (and their instances) go away. Workers and
  // loaders post to each other; a post to a pool already shut down runs inline.
  workers_->Shutdown();
  loaders_->Shutdown();
  workers_->Shutdown();
}

void Scheduler::AddFunction(const PoolOptions& o) {
  std::lock_guard<std::mutex> l(mu_);
  if (pools_.count(o.function)) return;
  pools_[o.function] = std::make_unique<FunctionPool>(o, store_, runtime_, metrics_->ForFunction(o.function), clock_,
                                                      workers_.get(), loaders_.get());
}

FunctionPool* Scheduler::Find(const std::string& name) {
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = pools_.find(name);
    if (it != pools_.end()) return it->second.get();
  }
  if (!options_.auto_functions || !store::ValidateName(name, "function").ok()) return nullptr;
  if (!store_->ReadCurrent(name).ok()) return nullptr;
  AddFunction(PoolOptionsFromConfig(config::DefaultFunction(name)));
  std::lock_guard<std::mutex> l(mu_);
  return pools_[name].get();
}

std::vector<std::string> Scheduler::FunctionNames() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::string> out;
  for (const auto& [n, p] : pools_) out.push_back(n);
  return out;
}

void Scheduler::Start() {
  TickAll();  // starts min_instances loads
  if (options_.start_housekeeping) housekeeping_ = std::thread([this] { Housekeeping(); });
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
