// pilotlight: the CLI. `serve` runs the server; `model ...` manages the model store;
// `invoke` calls a running server. Every subcommand has --help with examples.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "common/logging.h"
#include "config/config.h"
#include "http/client.h"
#include "runtime/onnx/ort_runtime.h"
#include "server/server.h"
#include "store/model_store.h"

using namespace pilotlight;

namespace {

constexpr const char* kDefaultStore = "file://./models";

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.message().c_str());
  return 1;
}

StatusOr<std::unique_ptr<store::ModelStore>> OpenStore(const std::string& uri) {
  PL_ASSIGN_OR_RETURN(auto blobs, store::OpenBlobStore(uri));
  return std::make_unique<store::ModelStore>(std::move(blobs));
}

std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.1f} {}", v, units[u]);
}

int ModelPush(const std::string& store_uri, const std::string& file, const std::string& name,
              const std::string& version, bool promote) {
  auto st = OpenStore(store_uri);
  if (!st.ok()) return Fail(st.status());
  runtime::OrtRuntime ort(runtime::OrtRuntime::Options{.intra_op_threads = 1});
  auto schema = ort.Inspect(file);
  if (!schema.ok()) return Fail(schema.status());
  store::Manifest m;
  auto convert = [](const std::vector<tensor::TensorSpec>& specs) {
    std::vector<store::TensorInfo> out;
    for (const auto& s : specs) out.push_back({s.name, std::string(tensor::DTypeName(s.dtype)), s.shape});
    return out;
  };
  m.inputs = convert(schema->inputs);
  m.outputs = convert(schema->outputs);
  auto pushed = (*st)->PushVersion(name, version, file, m);
  if (!pushed.ok()) return Fail(pushed.status());
  const auto& f = *pushed->ModelFile();
  std::printf("pushed %s@%s to %s (%s, sha256 %s)\n", name.c_str(), version.c_str(), (*st)->Describe().c_str(),
              HumanBytes(f.size_bytes).c_str(), f.sha256.substr(0, 12).c_str());
  for (const auto& i : pushed->inputs) {
    std::printf("  input  %-16s %-8s %s\n", i.name.c_str(), i.dtype.c_str(), tensor::ShapeString(i.shape).c_str());
  }
  for (const auto& o : pushed->outputs) {
    std::printf("  output %-16s %-8s %s\n", o.name.c_str(), o.dtype.c_str(), tensor::ShapeString(o.shape).c_str());
  }
  if (promote) {
    if (Status p = (*st)->Promote(name, version); !p.ok()) return Fail(p);
    std::printf("promoted %s@%s to current\n", name.c_str(), version.c_str());
  }
  return 0;
}

int ModelList(const std::string& store_uri) {
  auto st = OpenStore(store_uri);
  if (!st.ok()) return Fail(st.status());
  auto models = (*st)->ListModels();
  if (!models.ok()) return Fail(models.status());
  if (models->empty()) {
    std::printf("no models in %s; add one with `pilotlight model push FILE --name NAME --version 1 --promote`\n",
                (*st)->Describe().c_str());
    return 0;
  }
  std::printf("%-24s %-12s %s\n", "NAME", "CURRENT", "VERSIONS");
  for (const auto& m : *models) {
    auto cur = (*st)->ReadCurrent(m);
    auto vs = (*st)->ListVersions(m);
    std::printf("%-24s %-12s %zu\n", m.c_str(), cur.ok() ? cur->version.c_str() : "-", vs.ok() ? vs->size() : 0);
  }
  return 0;
}

int ModelVersions(const std::string& store_uri, const std::string& name) {
  auto st = OpenStore(store_uri);
  if (!st.ok()) return Fail(st.status());
  auto vs = (*st)->ListVersions(name);
  if (!vs.ok()) return Fail(vs.status());
  if (vs->empty()) return Fail(NotFoundError("model '" + name + "' has no versions in " + (*st)->Describe()));
  auto cur = (*st)->ReadCurrent(name);
  std::printf("  %-14s %-10s %-14s %s\n", "VERSION", "SIZE", "SHA256", "CREATED");
  for (const auto& v : *vs) {
    auto m = (*st)->ReadManifest(name, v);
    bool is_cur = cur.ok() && cur->version == v;
    if (!m.ok()) {
      std::printf("%s %-14s (unreadable manifest: %s)\n", is_cur ? "*" : " ", v.c_str(), m.status().message().c_str());
      continue;
    }
    const auto* f = m->ModelFile();
    std::printf("%s %-14s %-10s %-14s %s\n", is_cur ? "*" : " ", v.c_str(), HumanBytes(f->size_bytes).c_str(),
                f->sha256.substr(0, 12).c_str(), m->created_at.c_str());
  }
  if (cur.ok() && !cur->history.empty()) {
    std::printf("rollback would return to %s\n", cur->history.back().version.c_str());
  }
  return 0;
}

int Invoke(const std::string& url, const std::string& name, std::string data) {
  if (!data.empty() && data.front() == '@') {
    std::string path = data.substr(1);
    std::ifstream in(path == "-" ? "/dev/stdin" : path, std::ios::binary);
    if (!in) return Fail(NotFoundError("cannot read " + path));
    std::stringstream ss;
    ss << in.rdbuf();
    data = ss.str();
  }
  std::string base = url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  auto r = http::Post(base + "/v1/functions/" + name + "/invoke", data, {{"Content-Type", "application/json"}});
  if (!r.ok()) return Fail(r.status());
  std::fwrite(r->body.data(), 1, r->body.size(), stdout);
  std::fputc('\n', stdout);
  if (r->status >= 400) {
    std::fprintf(stderr, "error: HTTP %ld from %s\n", r->status, base.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "pilotlight: serve ONNX models as scale-to-zero HTTP functions.\n\n"
      "  pilotlight model push digits.onnx --name digits --version 1.0.0 --promote\n"
      "  pilotlight serve                      # every promoted model becomes /v1/functions/NAME/invoke\n"
      "  pilotlight invoke digits --data '{\"inputs\": [[0, 0, 5, ...]]}'\n"};
  app.require_subcommand(1);
  app.set_version_flag("--version",
                       std::string("pilotlight 0.1.0 (onnxruntime ") + runtime::OrtRuntime::Version() + ")");

  // serve
  std::string config_path, store_uri, listen, state_dir, log_format = "text", log_file, log_level = "info";
  auto* serve = app.add_subcommand("serve", "Run the HTTP server (gateway + scheduler + ONNX Runtime) in this process");
  serve->footer(
      "Without --config, every promoted model in the store is served as a function of the same name with\n"
      "default limits. With --config, only the functions listed there are served. Flags override the file.\n"
      "Stop with SIGTERM or Ctrl-C: in-flight requests finish first.\n\n"
      "Examples:\n"
      "  pilotlight serve --config pilotlight.yaml\n"
      "  pilotlight serve --store file://./models --listen 0.0.0.0:8080 --log-format json");
  serve->add_option("-c,--config", config_path, "pilotlight.yaml to load (see the README's configuration reference)")
      ->check(CLI::ExistingFile);
  serve->add_option("--store", store_uri, "model store URI (default: the config's store, else file://./models)");
  serve->add_option("--listen", listen, "HOST:PORT to listen on (default 127.0.0.1:8080; port 0 picks one)");
  serve->add_option("--state-dir", state_dir, "where local state lives (default ./.pilotlight)");
  serve->add_option("--log-format", log_format, "text (for people) or json (one object per line)")
      ->check(CLI::IsMember({"text", "json"}));
  serve->add_option("--log-file", log_file, "append logs to this file instead of stderr");
  serve->add_option("--log-level", log_level, "debug, info (one line per request), warn (errors and 5xx only) or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));

  // model
  std::string m_store = kDefaultStore, m_file, m_name, m_version;
  bool m_promote = false;
  auto* model = app.add_subcommand("model", "Manage the model store: push, list, versions, promote, rollback");
  model->require_subcommand(1);
  model->add_option("--store", m_store, "model store URI")->capture_default_str();
  auto* push = model->add_subcommand("push", "Upload a model file as a new immutable version");
  push->footer(
      "Reads the model's inputs and outputs through ONNX Runtime, copies the file to\n"
      "<store>/NAME/versions/VERSION/model.onnx and writes manifest.json (sha256, size, schema).\n\n"
      "Example:\n  pilotlight model push build/models/digits.onnx --name digits --version 1.0.0 --promote");
  push->add_option("file", m_file, "the .onnx file")->required()->check(CLI::ExistingFile);
  push->add_option("-n,--name", m_name, "model name (A-Z a-z 0-9 . _ -)")->required();
  push->add_option("-v,--version", m_version, "version label, e.g. 1.0.0 (versions are immutable)")->required();
  push->add_flag("--promote", m_promote, "also make this version current");
  push->add_option("--store", m_store, "model store URI")->capture_default_str();
  auto* list = model->add_subcommand("list", "List models with their current version");
  list->add_option("--store", m_store, "model store URI")->capture_default_str();
  auto* versions = model->add_subcommand("versions", "List a model's versions (* marks current)");
  versions->add_option("name", m_name, "model name")->required();
  versions->add_option("--store", m_store, "model store URI")->capture_default_str();
  auto* promote =
      model->add_subcommand("promote", "Make VERSION current (a running server picks it up at its next cold start)");
  promote->add_option("name", m_name, "model name")->required();
  promote->add_option("version", m_version, "version to promote")->required();
  promote->add_option("--store", m_store, "model store URI")->capture_default_str();
  auto* rollback = model->add_subcommand("rollback", "Return to the previously promoted version");
  rollback->add_option("name", m_name, "model name")->required();
  rollback->add_option("--store", m_store, "model store URI")->capture_default_str();

  // invoke
  std::string i_url = "http://127.0.0.1:8080", i_name, i_data;
  auto* invoke = app.add_subcommand("invoke", "Call a function on a running server and print the response");
  invoke->footer(
      "Exits non-zero when the server answers with an error status.\n\n"
      "Examples:\n"
      "  pilotlight invoke digits --data '{\"inputs\": [[0,0,5,13,9,1,0,0, ...64 values]]}'\n"
      "  pilotlight invoke digits --data @request.json --url http://10.0.0.5:8080");
  invoke->add_option("name", i_name, "function name")->required();
  invoke->add_option("-d,--data", i_data, "request body: JSON, or @FILE (@- for stdin)")->required();
  invoke->add_option("--url", i_url, "server base URL")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*serve) {
    config::Config cfg;
    if (!config_path.empty()) {
      auto c = config::LoadConfigFile(config_path);
      if (!c.ok()) return Fail(c.status());
      cfg = std::move(c).value();
    }
    if (!store_uri.empty()) cfg.store = store_uri;
    if (!listen.empty()) cfg.server.listen = listen;
    if (!state_dir.empty()) cfg.state_dir = state_dir;
    if (Status v = config::Validate(cfg); !v.ok()) return Fail(v);
    server::BlockStopSignals();  // before the logger starts its thread
    LogOptions lo;
    lo.format = log_format == "json" ? LogFormat::kJson : LogFormat::kText;
    lo.file = log_file;
    lo.level = spdlog::level::from_str(log_level);
    if (Status s = InitLogging(lo); !s.ok()) return Fail(s);
    return server::Serve(cfg);
  }
  if (*push) return ModelPush(m_store, m_file, m_name, m_version, m_promote);
  if (*list) return ModelList(m_store);
  if (*versions) return ModelVersions(m_store, m_name);
  if (*promote) {
    auto st = OpenStore(m_store);
    if (!st.ok()) return Fail(st.status());
    if (Status s = (*st)->Promote(m_name, m_version); !s.ok()) return Fail(s);
    std::printf("promoted %s@%s to current\n", m_name.c_str(), m_version.c_str());
    return 0;
  }
  if (*rollback) {
    auto st = OpenStore(m_store);
    if (!st.ok()) return Fail(st.status());
    auto v = (*st)->Rollback(m_name);
    if (!v.ok()) return Fail(v.status());
    std::printf("rolled %s back to %s\n", m_name.c_str(), v->c_str());
    return 0;
  }
  if (*invoke) return Invoke(i_url, i_name, i_data);
  return 0;
}
