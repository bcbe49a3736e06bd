#include "metrics/metrics.h"

#include <prometheus/text_serializer.h>

namespace pilotlight::metrics {
namespace {
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return b;
}
}  // namespace

Registry::Registry()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("pilotlight_requests_total")
                    .Help("Function requests answered, by function and HTTP status.")
                    .Register(*registry_)),
      duration_(prometheus::BuildHistogram()
                    .Name("pilotlight_request_duration_seconds")
                    .Help("Time from request received to response ready, by function.")
                    .Register(*registry_)),
      cold_starts_(prometheus::BuildCounter()
                       .Name("pilotlight_cold_starts_total")
                       .Help("Requests that waited for an instance to be loaded for them.")
                       .Register(*registry_)),
      init_phase_(prometheus::BuildHistogram()
                      .Name("pilotlight_init_phase_seconds")
                      .Help("Instance start-up phases: fetch (resolve + verify), load (session create), first_run.")
                      .Register(*registry_)),
      instances_(prometheus::BuildGauge()
                     .Name("pilotlight_instances")
                     .Help("Instances by function and state (loading, warm).")
                     .Register(*registry_)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("pilotlight_queue_depth")
                       .Help("Requests waiting for an instance slot.")
                       .Register(*registry_)),
      in_flight_(prometheus::BuildGauge()
                     .Name("pilotlight_in_flight")
                     .Help("Requests holding an instance slot.")
                     .Register(*registry_)),
      load_failures_(prometheus::BuildCounter()
                         .Name("pilotlight_load_failures_total")
                         .Help("Instance loads that failed (fetch, integrity or load error).")
                         .Register(*registry_)),
      swaps_(prometheus::BuildCounter()
                 .Name("pilotlight_swaps_total")
                 .Help("Hot swaps of a function to a newly promoted version.")
                 .Register(*registry_)),
      swap_failures_(prometheus::BuildCounter()
                         .Name("pilotlight_swap_failures_total")
                         .Help("Promoted versions not switched to: download, verification or load failed.")
                         .Register(*registry_)) {}

prometheus::Counter* Registry::Counter(const std::string& name, const std::string& help,
                                       const std::map<std::string, std::string>& labels) {
  std::lock_guard<std::mutex> l(mu_);
  auto& fam = counters_[name];
  if (!fam) fam = &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_);
  return &fam->Add(labels);
}

prometheus::Gauge* Registry::Gauge(const std::string& name, const std::string& help,
                                   const std::map<std::string, std::string>& labels) {
  std::lock_guard<std::mutex> l(mu_);
  auto& fam = gauges_[name];
  if (!fam) fam = &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
  return &fam->Add(labels);
}

void Registry::AddCollectHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> l(hooks_mu_);
  hooks_.push_back(std::move(hook));
}

FunctionMetrics* Registry::ForFunction(const std::string& name) {
  std::lock_guard<std::mutex> l(mu_);
  auto& slot = functions_[name];
  if (slot) return slot.get();
  slot = std::make_unique<FunctionMetrics>();
  auto* m = slot.get();
  m->function = name;
  m->registry_ = this;
  m->cold_starts = &cold_starts_.Add({{"function", name}});
  m->request_duration = &duration_.Add({{"function", name}}, LatencyBuckets());
  m->init_fetch = &init_phase_.Add({{"function", name}, {"phase", "fetch"}}, LatencyBuckets());
  m->init_load = &init_phase_.Add({{"function", name}, {"phase", "load"}}, LatencyBuckets());
  m->init_first_run = &init_phase_.Add({{"function", name}, {"phase", "first_run"}}, LatencyBuckets());
  m->instances_loading = &instances_.Add({{"function", name}, {"state", "loading"}});
  m->instances_warm = &instances_.Add({{"function", name}, {"state", "warm"}});
  m->queue_depth = &queue_depth_.Add({{"function", name}});
  m->in_flight = &in_flight_.Add({{"function", name}});
  m->load_failures = &load_failures_.Add({{"function", name}});
  m->swaps = &swaps_.Add({{"function", name}});
  m->swap_failures = &swap_failures_.Add({{"function", name}});
  return m;
}

void FunctionMetrics::CountRequest(int status) {
  if (status < 0 || status >= 600) status = 500;
  prometheus::Counter* c = by_status_[status].load(std::memory_order_acquire);
  if (!c) {
    std::lock_guard<std::mutex> l(registry_->mu_);
    c = &registry_->requests_.Add({{"function", function}, {"status", std::to_string(status)}});
    by_status_[status].store(c, std::memory_order_release);
  }
  c->Increment();
}

std::string Registry::Serialize() const {
  {
    std::lock_guard<std::mutex> l(hooks_mu_);
    for (const auto& h : hooks_) h();
  }
  prometheus::TextSerializer s;
  return s.Serialize(registry_->Collect());
}

}  // namespace pilotlight::metrics
