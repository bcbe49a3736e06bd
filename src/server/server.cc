#include "server/server.h"

#include <csignal>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "common/logging.h"
#include "gateway/gateway.h"
#include "http/server.h"
#include "metrics/metrics.h"
#include "runtime/onnx/ort_runtime.h"
#include "scheduler/scheduler.h"
#include "store/model_store.h"

namespace pilotlight::server {

namespace {
sigset_t StopSignals() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGTERM);
  sigaddset(&s, SIGINT);
  return s;
}
}  // namespace

void BlockStopSignals() {
  sigset_t s = StopSignals();
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
}

int Serve(const config::Config& cfg) {
  // Stop signals are blocked in every thread we start; this thread waits for them with sigwait.
  BlockStopSignals();
  sigset_t stop_signals = StopSignals();
  std::signal(SIGPIPE, SIG_IGN);

  auto blobs = store::OpenBlobStore(cfg.store);
  if (!blobs.ok()) {
    LogLine(spdlog::level::err, "cannot open the model store").Str("error", blobs.status().message());
    return 2;
  }
  store::ModelStore store(std::move(blobs).value());
  std::error_code ec;
  std::filesystem::create_directories(cfg.state_dir, ec);

  runtime::OrtRuntime runtime(runtime::OrtRuntime::Options{.intra_op_threads = cfg.server.intra_op_threads});
  metrics::Registry metrics;
  scheduler::SchedulerOptions sopts;
  sopts.auto_functions = !cfg.functions_listed;
  auto sched = std::make_unique<scheduler::Scheduler>(sopts, &store, &runtime, &metrics, SystemClock::Default());

  std::vector<std::string> names;
  if (cfg.functions_listed) {
    for (const auto& [name, f] : cfg.functions) {
      sched->AddFunction(scheduler::PoolOptionsFromConfig(f));
      names.push_back(name);
    }
  } else {
    auto models = store.ListModels();
    if (models.ok()) {
      for (const auto& m : *models) {
        if (!store.ReadCurrent(m).ok()) continue;
        sched->AddFunction(scheduler::PoolOptionsFromConfig(config::DefaultFunction(m)));
        names.push_back(m);
      }
    }
    if (names.empty()) {
      LogLine(spdlog::level::warn,
              "the store has no promoted models yet; push one with "
              "`pilotlight model push FILE --name NAME --version 1 --promote`")
          .Str("store", store.Describe());
    }
  }

  gateway::GatewayOptions gopts;
  gopts.default_function = cfg.default_function;
  if (gopts.default_function.empty() && names.size() == 1) gopts.default_function = names.front();
  gopts.limits.max_elements = cfg.server.max_tensor_elements;
  gopts.max_batch_items = cfg.server.max_batch_items;
  for (const auto& [name, f] : cfg.functions) {
    for (const auto& r : f.routes) gopts.routes[r] = name;
  }
  gateway::Gateway gateway(gopts, sched.get(), &metrics);

  http::HttpOptions hopts;
  hopts.listen = cfg.server.listen;
  hopts.threads = cfg.server.threads;
  hopts.max_body_bytes = cfg.server.max_body_bytes;
  hopts.max_header_bytes = cfg.server.max_header_bytes;
  hopts.read_timeout = cfg.server.read_timeout;
  hopts.idle_timeout = cfg.server.idle_timeout;
  http::HttpServer server(hopts, &gateway);
  if (Status st = server.Listen(); !st.ok()) {
    LogLine(spdlog::level::err, "cannot start the HTTP server").Str("error", st.message());
    return 2;
  }
  sched->Start();
  server.Start();
  std::string fn_list;
  for (const auto& n : names) fn_list += (fn_list.empty() ? "" : ",") + n;
  auto colon = cfg.server.listen.rfind(':');
  LogLine(spdlog::level::info, "pilotlight serving")
      .Str("url", fmt::format("http://{}:{}", cfg.server.listen.substr(0, colon), server.port()))
      .Str("store", store.Describe())
      .Str("functions", fn_list)
      .Str("onnxruntime", runtime::OrtRuntime::Version())
      .Str("config", cfg.source);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  LogLine(spdlog::level::info, "stop signal received: draining")
      .Str("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT")
      .Int("in_flight", server.ActiveRequests());
  server.StopAccepting();
  auto deadline = std::chrono::steady_clock::now() + cfg.server.shutdown_timeout;
  // Every queued or running request is an HTTP request not yet answered, so the HTTP count
  // alone says when the accepted work is done.
  auto next_report = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (std::chrono::steady_clock::now() < deadline && server.ActiveRequests() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (std::chrono::steady_clock::now() >= next_report) {
      LogLine(spdlog::level::info, "draining")
          .Int("unanswered", server.ActiveRequests())
          .Bool("scheduler_idle", sched->Idle());
      next_report += std::chrono::seconds(1);
    }
  }
  sched->BeginDrain();
  int64_t left = server.ActiveRequests();
  server.Stop();
  sched.reset();
  LogLine(left ? spdlog::level::warn : spdlog::level::info, "stopped").Int("unanswered", left);
  spdlog::shutdown();
  return left ? 1 : 0;
}

}  // namespace pilotlight::server
