// pilotlight: the CLI. `serve` runs the server; `model ...` manages the model store;
// `invoke` calls a running server. Every subcommand has --help with examples.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <unistd.h>

#include <chrono>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "auth/keys.h"
#include "common/logging.h"
#include "config/config.h"
#include "http/client.h"
#include "runtime/onnx/ort_runtime.h"
#include "server/server.h"
#include "store/model_store.h"

using namespace pilotlight;

namespace {

// A server URL without trailing slashes, ready for "/v1/...".
std::string BaseUrl(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// Reports an error answer of the admin API on stderr (with a hint for a missing token); 1.
int AdminHttpError(const http::ClientResponse& r, const std::string& base) {
  std::fprintf(stderr, "error: HTTP %ld from %s: %s\n", r.status, base.c_str(), r.body.c_str());
  if (r.status == 401) std::fprintf(stderr, "hint: set PILOTLIGHT_ADMIN_TOKEN to the server's admin token\n");
  return 1;
}

// The admin API's credentials: the admin token from the environment (as the server reads it).
std::vector<std::pair<std::string, std::string>> AdminHeaders() {
  std::vector<std::pair<std::string, std::string>> h = {{"Content-Type", "application/json"}};
  if (const char* t = std::getenv("PILOTLIGHT_ADMIN_TOKEN"); t && *t)
    h.emplace_back("Authorization", std::string("Bearer ") + t);
  return h;
}

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.message().c_str());
  return 1;
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

// Where `model ...` commands find the store: --store, else the --config file's store (with its
// s3: block and state_dir), else file://./models.
struct StoreArgs {
  std::string uri;
  std::string config_path;
  std::string state_dir;
};

StatusOr<std::unique_ptr<store::ModelStore>> OpenStore(const StoreArgs& a) {
  config::Config cfg;
  if (!a.config_path.empty()) {
    PL_ASSIGN_OR_RETURN(cfg, config::LoadConfigFile(a.config_path));
  }
  std::string uri = !a.uri.empty() ? a.uri : cfg.store;
  std::string state = !a.state_dir.empty() ? a.state_dir : cfg.state_dir;
  PL_ASSIGN_OR_RETURN(auto blobs, store::OpenBlobStore(uri, server::ToS3Settings(cfg.s3)));
  return std::make_unique<store::ModelStore>(std::move(blobs),
                                             store::StoreOptions{state + "/cache", cfg.cache.max_bytes});
}

// A one-line progress bar on stderr, only when stderr is a terminal.
class Progress {
 public:
  explicit Progress(std::string label) : label_(std::move(label)), tty_(::isatty(2)) {}
  ~Progress() {
    if (drawn_) std::fputc('\n', stderr);
  }
  store::ProgressFn Fn() {
    if (!tty_) return {};
    return [this](uint64_t done, uint64_t total) { Draw(done, total); };
  }

 private:
  void Draw(uint64_t done, uint64_t total) {
    auto now = std::chrono::steady_clock::now();
    if (drawn_ && done < total && now - last_ < std::chrono::milliseconds(100)) return;
    if (!drawn_) start_ = now;
    last_ = now;
    drawn_ = true;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    int pct = total ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)) : 0;
    int bar = pct * 30 / 100;
    std::fprintf(stderr, "\r%s [%s%s] %3d%% %s / %s  %s/s   ", label_.c_str(), std::string(bar, '#').c_str(),
                 std::string(30 - bar, '.').c_str(), pct, HumanBytes(done).c_str(), HumanBytes(total).c_str(),
                 HumanBytes(static_cast<uint64_t>(rate)).c_str());
    std::fflush(stderr);
  }
  std::string label_;
  bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

int ModelPush(const StoreArgs& sa, std::string file, const std::string& name, const std::string& version,
              bool promote) {
  auto st = OpenStore(sa);
  if (!st.ok()) return Fail(st.status());
  // An http(s) source (a presigned URL, a web server): download it first, then push the copy.
  std::string downloaded;
  struct Cleanup {
    std::string* path;
    ~Cleanup() {
      if (!path->empty()) std::remove(path->c_str());
    }
  } cleanup{&downloaded};
  if (file.rfind("https://", 0) == 0 || file.rfind("http://", 0) == 0) {
    downloaded =
        (std::filesystem::temp_directory_path() / ("pilotlight-push-" + std::to_string(::getpid()) + ".onnx")).string();
    Progress bar("downloading");
    auto got = store::DownloadUrl(file, downloaded, bar.Fn());
    if (!got.ok()) return Fail(got.status());
    file = downloaded;
  } else if (!std::filesystem::is_regular_file(file)) {
    return Fail(NotFoundError(file + " is not a readable file"));
  }
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
  StatusOr<store::Manifest> pushed = store::Manifest{};
  {
    Progress bar("uploading  ");
    pushed = (*st)->PushVersion(name, version, file, m, bar.Fn());
  }
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
    // Just uploaded and hashed from the same bytes: no need to download them again to verify.
    auto p = (*st)->Promote(name, version, /*verify=*/false);
    if (!p.ok()) return Fail(p.status());
    std::printf("promoted %s@%s to current\n", name.c_str(), version.c_str());
  }
  return 0;
}

int ModelVerify(const StoreArgs& sa, const std::string& name, std::string version) {
  auto st = OpenStore(sa);
  if (!st.ok()) return Fail(st.status());
  if (version.empty()) {
    auto cur = (*st)->ReadCurrent(name);
    if (!cur.ok()) return Fail(cur.status());
    version = cur->version;
  }
  auto m = (*st)->ReadManifest(name, version);
  if (!m.ok()) return Fail(m.status());
  if (Status v = (*st)->VerifyVersion(name, version); !v.ok()) return Fail(v);
  for (const auto& f : m->files) {
    std::printf("ok  %s@%s  %-12s %10s  sha256 %s\n", name.c_str(), version.c_str(), f.path.c_str(),
                HumanBytes(f.size_bytes).c_str(), f.sha256.c_str());
  }
  return 0;
}

// Promote/rollback through a running server (which then swaps at once), or in the store.
int ModelChange(const StoreArgs& sa, const std::string& server, const std::string& name, const std::string& version,
                bool rollback) {
  if (!server.empty()) {
    std::string base = BaseUrl(server);
    std::string url = base + "/admin/models/" + name + (rollback ? "/rollback" : "/promote");
    std::string body = rollback ? "{}" : nlohmann::json({{"version", version}}).dump();
    auto r = http::Post(url, body, AdminHeaders());
    if (!r.ok()) return Fail(r.status());
    if (r->status >= 400) return AdminHttpError(*r, base);
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    if (j.is_discarded()) return Fail(InternalError("unreadable answer from " + base + ": " + r->body));
    std::printf("%s %s to %s (was %s)\n", rollback ? "rolled back" : "promoted", name.c_str(),
                j.value("version", "").c_str(), j.value("previous", "").c_str());
    bool ok = j.value("swapped", false);
    for (auto& [fn, how] : j["functions"].items()) {
      std::printf("  function %-20s %s\n", fn.c_str(), how.get<std::string>().c_str());
    }
    return ok ? 0 : 1;
  }
  auto st = OpenStore(sa);
  if (!st.ok()) return Fail(st.status());
  auto r = rollback ? (*st)->Rollback(name) : (*st)->Promote(name, version);
  if (!r.ok()) return Fail(r.status());
  if (rollback) {
    std::printf("rolled %s back to %s (was %s)\n", name.c_str(), r->version.c_str(), r->previous.c_str());
  } else {
    std::printf("promoted %s@%s to current%s\n", name.c_str(), r->version.c_str(),
                r->previous.empty() ? "" : (" (was " + r->previous + ")").c_str());
  }
  std::printf("running servers switch within their poll_interval; use --server URL to switch one at once\n");
  return 0;
}

int ModelList(const StoreArgs& sa) {
  auto st = OpenStore(sa);
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

int ModelVersions(const StoreArgs& sa, const std::string& name) {
  auto st = OpenStore(sa);
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
  std::string base = BaseUrl(url);
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

// `pilotlight events ...`: the server's /v1/events API, printed for people (or --json).
int Events(const std::string& url, const std::string& action, const std::string& id, const std::string& status,
           const std::string& function, int limit, bool as_json) {
  std::string base = BaseUrl(url);
  StatusOr<http::ClientResponse> r = InternalError("unreachable");
  if (action == "list") {
    std::string q = fmt::format("?limit={}", limit);
    if (!status.empty()) q += "&status=" + status;
    if (!function.empty()) q += "&function=" + function;
    r = http::Request("GET", base + "/v1/events" + q, "", AdminHeaders(), 60);
  } else if (action == "show") {
    r = http::Request("GET", base + "/v1/events/" + id, "", AdminHeaders(), 60);
  } else {
    r = http::Post(base + "/v1/events/" + id + "/redrive", "", AdminHeaders());
  }
  if (!r.ok()) return Fail(r.status());
  if (r->status >= 400) return AdminHttpError(*r, base);
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (as_json || j.is_discarded()) {
    std::printf("%s\n", r->body.c_str());
    return 0;
  }
  auto row = [](const nlohmann::json& e) {
    std::printf("%-32s  %-16s  %-11s  %8d  %-24s  %s\n", e.value("id", "").c_str(), e.value("function", "").c_str(),
                e.value("status", "").c_str(), e.value("attempts", 0), e.value("created_at", "").c_str(),
                e.value("error", "").substr(0, 80).c_str());
  };
  if (action == "list") {
    std::printf("%-32s  %-16s  %-11s  %8s  %-24s  %s\n", "ID", "FUNCTION", "STATUS", "ATTEMPTS", "CREATED", "ERROR");
    for (const auto& e : j["events"]) row(e);
    if (j["events"].empty()) std::printf("(no events)\n");
    return 0;
  }
  if (action == "redrive") std::printf("redriven: %s is queued again\n", id.c_str());
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

}  // namespace

// `pilotlight keys ...`: API keys in the state store (the server picks changes up within a second).
int Keys(const std::string& action, const std::string& config_path, const std::string& state_dir,
         const std::string& plan, const std::vector<std::string>& functions, const std::string& description,
         const std::string& id, bool as_json) {
  config::Config cfg;
  if (!config_path.empty()) {
    auto c = config::LoadConfigFile(config_path);
    if (!c.ok()) return Fail(c.status());
    cfg = std::move(c).value();
  }
  std::string dir = !state_dir.empty() ? state_dir : cfg.state_dir;
  auto store = auth::KeyStore::Open(dir + "/auth.db");
  if (!store.ok()) return Fail(store.status());
  if (action == "create") {
    if (!config_path.empty() && !cfg.usage_plans.count(plan)) {
      std::string known;
      for (const auto& [n, p] : cfg.usage_plans) known += (known.empty() ? "" : ", ") + n;
      return Fail(InvalidArgumentError(fmt::format("'{}' is not one of the usage_plans in {} (known: {})", plan,
                                                   config_path, known.empty() ? "none" : known)));
    }
    auto k = (*store)->Create(plan, functions, description);
    if (!k.ok()) return Fail(k.status());
    std::fprintf(stderr, "created API key %s (plan %s%s); it is shown once, store it now:\n", k->record.id.c_str(),
                 plan.c_str(),
                 functions.empty() ? "" : (", functions " + fmt::format("{}", fmt::join(functions, ","))).c_str());
    std::printf("%s\n", k->key.c_str());
    return 0;
  }
  if (action == "revoke") {
    auto k = (*store)->Revoke(id);
    if (!k.ok()) return Fail(k.status());
    std::printf("revoked %s\n", id.c_str());
    return 0;
  }
  auto list = (*store)->List();
  if (!list.ok()) return Fail(list.status());
  if (as_json) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& k : *list) {
      a.push_back(auth::KeyRecordJson(k));
    }
    std::printf("%s\n", nlohmann::json({{"keys", a}}).dump(2).c_str());
    return 0;
  }
  std::printf("%-14s %-10s %-8s %-24s %-24s %s\n", "ID", "PLAN", "TODAY", "LAST USED", "CREATED", "STATUS");
  for (const auto& k : *list) {
    std::printf("%-14s %-10s %-8lld %-24s %-24s %s\n", k.id.c_str(), k.plan.c_str(),
                static_cast<long long>(k.used_today), k.last_used_at ? Rfc3339(k.last_used_at).c_str() : "never",
                Rfc3339(k.created_at).c_str(), k.revoked_at ? "revoked" : "active");
  }
  if (list->empty()) std::printf("(no keys; create one with `pilotlight keys create --plan PLAN`)\n");
  return 0;
}

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
  StoreArgs sa;
  std::string m_file, m_name, m_version, m_server;
  bool m_promote = false;
  auto* model = app.add_subcommand("model", "Manage the model store: push, list, versions, promote, rollback, verify");
  model->require_subcommand(1);
  model->footer(
      "Stores: file://PATH (default file://./models) or s3://BUCKET/PREFIX (AWS S3, MinIO, R2, Ceph, GCS).\n"
      "S3 settings come from --config's s3: block, else AWS_ENDPOINT_URL(_S3), AWS_REGION,\n"
      "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws/{credentials,config}.");
  auto add_store = [&](CLI::App* c) {
    c->add_option("--store", sa.uri, "model store URI (default: the config's store, else file://./models)");
    c->add_option("-c,--config", sa.config_path, "pilotlight.yaml whose store, s3: and state_dir to use")
        ->check(CLI::ExistingFile);
    c->add_option("--state-dir", sa.state_dir, "state directory holding the verified cache (default ./.pilotlight)");
  };
  add_store(model);
  auto* push = model->add_subcommand("push", "Upload a model file as a new immutable version");
  push->footer(
      "Reads the model's inputs and outputs through ONNX Runtime, uploads the file to\n"
      "<store>/NAME/versions/VERSION/model.onnx (multipart above s3.multipart_threshold, 64 MiB)\n"
      "and writes manifest.json (sha256, size, schema) last. FILE may be an https:// URL\n"
      "(a presigned URL or a web server): it is downloaded, then pushed.\n\n"
      "Examples:\n  pilotlight model push build/models/digits.onnx --name digits --version 1.0.0 --promote\n"
      "  pilotlight model push ./resnet.onnx -n resnet -v 2 --store s3://my-models/prod");
  push->add_option("file", m_file, "the .onnx file, or an http(s):// URL")->required();
  push->add_option("-n,--name", m_name, "model name (A-Z a-z 0-9 . _ -)")->required();
  push->add_option("-v,--version", m_version, "version label, e.g. 1.0.0 (versions are immutable)")->required();
  push->add_flag("--promote", m_promote, "also make this version current");
  add_store(push);
  auto* list = model->add_subcommand("list", "List models with their current version");
  add_store(list);
  auto* versions = model->add_subcommand("versions", "List a model's versions (* marks current)");
  versions->add_option("name", m_name, "model name")->required();
  add_store(versions);
  auto* promote = model->add_subcommand("promote", "Verify VERSION, then make it current");
  promote->footer(
      "Every file of the version is checked against its manifest first; a version that fails is\n"
      "refused. current.json is replaced only if nobody changed it meanwhile (a conditional write):\n"
      "a concurrent promote is reported, never overwritten. Servers switch within poll_interval;\n"
      "--server switches a running server at once and waits for its hot swap.\n\n"
      "Examples:\n  pilotlight model promote digits 1.1.0\n"
      "  pilotlight model promote digits 1.1.0 --server http://127.0.0.1:8080");
  promote->add_option("name", m_name, "model name")->required();
  promote->add_option("version", m_version, "version to promote")->required();
  promote->add_option("--server", m_server, "promote through this running server (POST /admin/models/NAME/promote)");
  add_store(promote);
  auto* rollback = model->add_subcommand("rollback", "Return to the previously promoted version");
  rollback->footer("A second rollback goes one further back. The history is in current.json.");
  rollback->add_option("name", m_name, "model name")->required();
  rollback->add_option("--server", m_server, "roll back through this running server");
  add_store(rollback);
  auto* verify = model->add_subcommand("verify", "Check a version's files against its manifest (sha256)");
  verify->footer(
      "Exits non-zero and names the file on any mismatch. Remote files already in the verified\n"
      "cache are re-validated with a conditional request (no download when unchanged).\n\n"
      "Example:\n  pilotlight model verify digits 1.0.0 --store s3://my-models/prod");
  verify->add_option("name", m_name, "model name")->required();
  verify->add_option("version", m_version, "version (default: current)");
  add_store(verify);

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

  // events
  std::string e_url = "http://127.0.0.1:8080", e_id, e_status, e_function;
  int e_limit = 100;
  bool e_json = false;
  auto* events_cmd = app.add_subcommand("events", "Asynchronous invocations on a running server: list, show, redrive");
  events_cmd->require_subcommand(1);
  events_cmd->footer(
      "Events come from POST /v1/functions/NAME/invoke-async or the Lambda Invoke API with\n"
      "X-Amz-Invocation-Type: Event. Statuses: queued, running, succeeded, dead_letter.\n\n"
      "Examples:\n  pilotlight events list --status dead_letter\n  pilotlight events show 3f2a...\n"
      "  pilotlight events redrive 3f2a...");
  auto* e_list = events_cmd->add_subcommand("list", "List events, newest first");
  e_list->add_option("--status", e_status, "queued, running, succeeded or dead_letter")
      ->check(CLI::IsMember({"queued", "running", "succeeded", "dead_letter"}));
  e_list->add_option("--function", e_function, "only this function's events");
  e_list->add_option("--limit", e_limit, "at most this many (1-10000)")->capture_default_str();
  auto* e_show = events_cmd->add_subcommand("show", "Show one event: payload, result or error, attempt history");
  e_show->add_option("id", e_id, "event id")->required();
  auto* e_redrive = events_cmd->add_subcommand("redrive", "Queue a dead-lettered event again");
  e_redrive->add_option("id", e_id, "event id")->required();
  for (auto* c : {e_list, e_show, e_redrive}) {
    c->add_option("--url", e_url, "server base URL")->capture_default_str();
    c->add_flag("--json", e_json, "print the server's JSON as is");
  }

  // keys
  std::string k_config, k_state, k_plan, k_description, k_id;
  std::vector<std::string> k_functions;
  bool k_json = false;
  auto* keys_cmd = app.add_subcommand("keys", "API keys for functions with `auth: api_key`: create, list, revoke");
  keys_cmd->require_subcommand(1);
  keys_cmd->footer(
      "Keys are stored as SHA-256 hashes in STATE_DIR/auth.db; a running server sees changes within a\n"
      "second. Clients send a key as X-Api-Key: KEY or Authorization: Bearer KEY. A key's plan (from\n"
      "`usage_plans:` in the config) sets its rate, burst and daily quota.\n\n"
      "Examples:\n  KEY=$(pilotlight keys create --plan basic -c pilotlight.yaml)\n"
      "  pilotlight keys create --plan basic --function digits --description 'mobile app'\n"
      "  pilotlight keys list\n  pilotlight keys revoke 4f1c2a9b0d3e");
  auto* k_create = keys_cmd->add_subcommand("create", "Create a key; prints the key alone on stdout (shown once)");
  k_create->add_option("--plan", k_plan, "usage plan (a key of `usage_plans:`)")->required();
  k_create->add_option("--function", k_functions, "restrict the key to this function (repeatable)");
  k_create->add_option("--description", k_description, "a note for `keys list` (who has it)");
  auto* k_list = keys_cmd->add_subcommand("list", "List keys with plan, today's requests and last use");
  k_list->add_flag("--json", k_json, "print JSON");
  auto* k_revoke = keys_cmd->add_subcommand("revoke", "Revoke a key (by id; the server refuses it within a second)");
  k_revoke->add_option("id", k_id, "key id (see `keys list`)")->required();
  for (auto* c : {k_create, k_list, k_revoke}) {
    c->add_option("-c,--config", k_config, "pilotlight.yaml (its state_dir and usage_plans)");
    c->add_option("--state-dir", k_state, "state directory (default: the config's, else ./.pilotlight)");
  }

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
  if (*push) return ModelPush(sa, m_file, m_name, m_version, m_promote);
  if (*list) return ModelList(sa);
  if (*versions) return ModelVersions(sa, m_name);
  if (*promote) return ModelChange(sa, m_server, m_name, m_version, false);
  if (*rollback) return ModelChange(sa, m_server, m_name, "", true);
  if (*verify) return ModelVerify(sa, m_name, m_version);
  if (*invoke) return Invoke(i_url, i_name, i_data);
  if (*e_list) return Events(e_url, "list", "", e_status, e_function, e_limit, e_json);
  if (*e_show) return Events(e_url, "show", e_id, "", "", 0, e_json);
  if (*e_redrive) return Events(e_url, "redrive", e_id, "", "", 0, e_json);
  if (*k_create) return Keys("create", k_config, k_state, k_plan, k_functions, k_description, "", false);
  if (*k_list) return Keys("list", k_config, k_state, "", {}, "", "", k_json);
  if (*k_revoke) return Keys("revoke", k_config, k_state, "", {}, "", k_id, false);
  return 0;
}
