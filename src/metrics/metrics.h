// Metrics: one prometheus-cpp registry per server and, per function, one struct listing every
// metric it emits (Envoy's stats-block habit). Counters/gauges/histograms are lock-free to
// update; label children are created once (per function, and per status code on first use).
// Thread-safety: everything here is safe from any thread.
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

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
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<FunctionMetrics>> functions_;
};

}  // namespace pilotlight::metrics
