#include "server/server.h"

#include <csignal>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "auth/authenticator.h"
#include "common/logging.h"
#include "events/async_invoker.h"
#include "events/triggers.h"
#include "gateway/gateway.h"
#include "http/server.h"
#include "metrics/metrics.h"
#include "runtime/onnx/ort_runtime.h"
#include "runtime/process/process_runtime.h"
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

store::S3Settings ToS3Settings(const config::S3Config& c) {
  store::S3Settings s;
  s.endpoint = c.endpoint;
  s.region = c.region;
  s.profile = c.profile;
  s.path_style = c.path_style;
  s.multipart_threshold = c.multipart_threshold;
  s.part_size = c.part_size;
  return s;
}

void BlockStopSignals() {
  sigset_t s = StopSignals();
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
}

int Serve(const config::Config& cfg) {
  // Stop signals are blocked in every thread we start; this thread waits for them with sigwait.
  BlockStopSignals();
  sigset_t stop_signals = StopSignals();
  std::signal(SIGPIPE, SIG_IGN);

  auto blobs = store::OpenBlobStore(cfg.store, ToS3Settings(cfg.s3));
  if (!blobs.ok()) {
    LogLine(spdlog::level::err, "cannot open the model store").Str("error", blobs.status().message());
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(cfg.state_dir, ec);
  store::ModelStore store(std::move(blobs).value(), store::StoreOptions{cfg.state_dir + "/cache", cfg.cache.max_bytes});

  runtime::OrtRuntime runtime(runtime::OrtRuntime::Options{.intra_op_threads = cfg.server.intra_op_threads});
  metrics::Registry metrics;
  if (store.remote()) {
    auto* cache = store.cache();
    auto* hits = metrics.Counter("pilotlight_model_cache_hits_total", "Model files served from the verified cache.");
    auto* misses =
        metrics.Counter("pilotlight_model_cache_misses_total", "Model files downloaded into the verified cache.");
    auto* evictions =
        metrics.Counter("pilotlight_model_cache_evictions_total", "Model files evicted (least recently used).");
    auto* downloaded = metrics.Counter("pilotlight_model_download_bytes_total", "Bytes downloaded from the store.");
    auto* bytes = metrics.Gauge("pilotlight_model_cache_bytes", "Bytes in the verified model cache.");
    auto* files = metrics.Gauge("pilotlight_model_cache_files", "Files in the verified model cache.");
    auto* cap = metrics.Gauge("pilotlight_model_cache_max_bytes", "Configured cache size cap (cache.max_bytes).");
    cap->Set(static_cast<double>(cfg.cache.max_bytes));
    metrics.AddCollectHook([=] {
      store::CacheStats s = cache->Stats();
      // Counters only go up: add what changed since the last scrape.
      auto bump = [](prometheus::Counter* c, uint64_t v) {
        if (static_cast<double>(v) > c->Value()) c->Increment(static_cast<double>(v) - c->Value());
      };
      bump(hits, s.hits);
      bump(misses, s.misses);
      bump(evictions, s.evictions);
      bump(downloaded, s.downloaded_bytes);
      bytes->Set(static_cast<double>(s.bytes));
      files->Set(static_cast<double>(s.files));
    });
  }
  scheduler::SchedulerOptions sopts;
  sopts.auto_functions = !cfg.functions_listed;
  sopts.default_poll_interval = cfg.server.poll_interval;
  runtime::ProcessRuntime process_runtime(runtime::ProcessRuntime::Options{});
  auto sched = std::make_unique<scheduler::Scheduler>(sopts, &store, &runtime, &metrics, SystemClock::Default());
  sched->SetProcessRuntime(&process_runtime);

  std::vector<std::string> names;
  if (cfg.functions_listed) {
    for (const auto& [name, f] : cfg.functions) {
      sched->AddFunction(scheduler::PoolOptionsFromConfig(f, cfg.server.poll_interval));
      names.push_back(name);
    }
  } else {
    auto models = store.ListModels();
    if (models.ok()) {
      for (const auto& m : *models) {
        if (!store.ReadCurrent(m).ok()) continue;
        sched->AddFunction(scheduler::PoolOptionsFromConfig(config::DefaultFunction(m), cfg.server.poll_interval));
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
  gopts.max_json_depth = cfg.server.max_json_depth;
  for (const auto& [name, f] : cfg.functions) {
    for (const auto& r : f.routes) gopts.routes[r] = name;
  }
  gopts.shared_cors = cfg.server.cors;
  for (const auto& [name, f] : cfg.functions) {
    if (f.cors.enabled()) gopts.function_cors[name] = f.cors;
  }
  gopts.server_version = "0.1.0";
  gateway::Gateway gateway(gopts, sched.get(), &metrics);

  // Authentication: the admin token from the environment, API keys in the state store, JWTs.
  auth::Authenticator::Options aopts;
  aopts.admin_token_env = cfg.auth.admin_token_env;
  if (const char* t = std::getenv(cfg.auth.admin_token_env.c_str())) aopts.admin_token = t;
  aopts.plans = cfg.usage_plans;
  if (cfg.auth.jwt) {
    auth::JwtConfig j;
    j.jwks = cfg.auth.jwt->jwks;
    j.issuer = cfg.auth.jwt->issuer;
    j.audience = cfg.auth.jwt->audience;
    j.leeway = cfg.auth.jwt->leeway;
    j.refresh = cfg.auth.jwt->refresh;
    aopts.jwt = j;
  }
  aopts.key_db = cfg.state_dir + "/auth.db";
  aopts.default_policy.mode = cfg.auth.default_auth;
  for (const auto& [name, f] : cfg.functions) {
    auth::Policy p;
    p.mode = f.auth.empty() ? cfg.auth.default_auth : f.auth;
    p.plans = f.plans;
    p.rate_limit = f.rate_limit;
    aopts.policies[name] = p;
  }
  auto authenticator = auth::Authenticator::Create(aopts);
  if (!authenticator.ok()) {
    LogLine(spdlog::level::err, "cannot start authentication").Str("error", authenticator.status().message());
    return 2;
  }
  gateway.SetAuth(authenticator->get());
  if (aopts.admin_token.empty()) {
    LogLine(spdlog::level::info, "the admin API is disabled (401): set the admin token to enable it")
        .Str("env", cfg.auth.admin_token_env);
  } else if (aopts.admin_token.size() < 16) {
    LogLine(spdlog::level::warn, "the admin token is short; use at least 32 random characters")
        .Str("env", cfg.auth.admin_token_env);
  }

  // Asynchronous invocations: durable events in SQLite under the state directory.
  auto event_store = events::EventStore::Open(cfg.state_dir + "/events.db");
  if (!event_store.ok()) {
    LogLine(spdlog::level::err, "cannot open the event store").Str("error", event_store.status().message());
    return 2;
  }
  events::AsyncInvoker::Options async_options;
  async_options.retention = cfg.server.event_retention;
  events::AsyncInvoker async(
      async_options, event_store->get(),
      [&gateway](const events::Event& e, std::function<void(StatusOr<std::string>)> done) {
        gateway.RunAsyncEvent(e, std::move(done));
      },
      &metrics);
  auto async_config = [](const config::FunctionConfig& f) {
    events::AsyncConfig a;
    a.max_retries = f.async.max_retries;
    a.retry_backoff = f.async.retry_backoff;
    a.max_event_age = f.async.max_event_age;
    a.max_concurrency = std::max(1, static_cast<int>(f.async.concurrency_share * f.max_instances * f.concurrency));
    a.on_success = f.async.on_success;
    a.on_failure = f.async.on_failure;
    return a;
  };
  async.ConfigureDefault(async_config(config::DefaultFunction("default")));
  for (const auto& [name, f] : cfg.functions) async.Configure(name, async_config(f));
  gateway.SetAsync(&async);
  if (Status st = async.Start(); !st.ok()) {
    LogLine(spdlog::level::err, "cannot start asynchronous invocations").Str("error", st.message());
    return 2;
  }
  std::vector<events::TriggerSpec> trigger_specs;
  for (const auto& t : cfg.triggers) trigger_specs.push_back({t.source, t.function, t.output, t.batch_size, t.token});
  events::Triggers triggers(
      trigger_specs, event_store->get(),
      [&gateway](const events::Event& e, std::function<void(StatusOr<std::string>)> done) {
        gateway.RunAsyncEvent(e, std::move(done));
      },
      cfg.state_dir + "/jobs", ToS3Settings(cfg.s3), &metrics);
  if (Status st = triggers.Start(); !st.ok()) {
    LogLine(spdlog::level::err, "cannot start the triggers").Str("error", st.message());
    return 2;
  }
  gateway.SetTriggers(&triggers);

  http::HttpOptions hopts;
  hopts.listen = cfg.server.listen;
  hopts.threads = cfg.server.threads;
  hopts.max_body_bytes = cfg.server.max_body_bytes;
  hopts.max_header_bytes = cfg.server.max_header_bytes;
  hopts.max_header_fields = cfg.server.max_header_fields;
  hopts.max_uri_bytes = cfg.server.max_uri_bytes;
  hopts.request_timeout = cfg.server.request_timeout;
  hopts.idle_timeout = cfg.server.idle_timeout;
  hopts.max_connections = cfg.server.max_connections;
  hopts.max_connections_per_client = cfg.server.max_connections_per_client;
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
  // Events still running after the deadline stay `running` in the store and run again at the
  // next start (at-least-once).
  triggers.Stop();  // an object being processed resumes from its last checkpoint at the next start
  async.Stop(std::max<Duration>(Duration::zero(),
                                std::chrono::duration_cast<Duration>(deadline - std::chrono::steady_clock::now())));
  sched->BeginDrain();
  int64_t left = server.ActiveRequests();
  server.Stop();
  // Workers still running (a handler past the drain) are stopped while their pools exist.
  process_runtime.KillAll(std::chrono::seconds(5));
  sched.reset();
  LogLine(left ? spdlog::level::warn : spdlog::level::info, "stopped").Int("unanswered", left);
  spdlog::shutdown();
  return left ? 1 : 0;
}

}  // namespace pilotlight::server
