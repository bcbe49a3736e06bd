// Metrics: one prometheus-cpp registry per server and, per function, one struct listing every
// metric it emits (Envoy's stats-block habit). Counters/gauges/histograms are lock-free to
// update; label children are created once (per function, and per status code on first use).
// Thread-safety: everything here is safe from any thread.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace pilotlight::metrics {

class Registry;

struct FunctionMetrics {
  std::string function;
  prometheus::Counter* cold_starts = nullptr;
  prometheus::Histogram* request_duration = nullptr;
  prometheus::Histogram* init_fetch = nullptr;
  prometheus::Histogram* init_load = nullptr;
  prometheus::Histogram* init_first_run = nullptr;
  prometheus::Gauge* instances_loading = nullptr;
  prometheus::Gauge* instances_warm = nullptr;
  prometheus::Gauge* queue_depth = nullptr;
  prometheus::Gauge* in_flight = nullptr;
  prometheus::Counter* load_failures = nullptr;
  prometheus::Counter* swaps = nullptr;          // hot swaps to a new version
  prometheus::Counter* swap_failures = nullptr;  // versions refused (download, verify or load failed)

  // pilotlight_requests_total{function, status}
  void CountRequest(int http_status);

 private:
  friend class Registry;
  Registry* registry_ = nullptr;
  std::array<std::atomic<prometheus::Counter*>, 600> by_status_{};
};

class Registry {
 public:
  Registry();
  // Returns the (stable) metrics block for a function, creating it on first use.
  FunctionMetrics* ForFunction(const std::string& name);
  // Prometheus text exposition format 0.0.4.
  std::string Serialize() const;

  // Plain metrics for other modules (the store's cache), created on first use; the same name
  // and labels give the same object.
  prometheus::Counter* Counter(const std::string& name, const std::string& help,
                               const std::map<std::string, std::string>& labels = {});
  prometheus::Gauge* Gauge(const std::string& name, const std::string& help,
                           const std::map<std::string, std::string>& labels = {});
  // Runs before every Serialize(): lets owners of plain counts copy them into metrics.
  void AddCollectHook(std::function<void()> hook);

 private:
  friend struct FunctionMetrics;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Counter>& cold_starts_;
  prometheus::Family<prometheus::Histogram>& init_phase_;
  prometheus::Family<prometheus::Gauge>& instances_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Family<prometheus::Counter>& load_failures_;
  prometheus::Family<prometheus::Counter>& swaps_;
  prometheus::Family<prometheus::Counter>& swap_failures_;
  std::mutex mu_;
  std::map<std::string, prometheus::Family<prometheus::Counter>*> counters_;  // GUARDED_BY(mu_)
  std::map<std::string, prometheus::Family<prometheus::Gauge>*> gauges_;      // GUARDED_BY(mu_)
  mutable std::mutex hooks_mu_;
  std::vector<std::function<void()>> hooks_;  // GUARDED_BY(hooks_mu_)
  std::map<std::string, std::unique_ptr<FunctionMetrics>> functions_;
};

}  // namespace pilotlight::metrics
