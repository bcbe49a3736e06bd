#include "events/triggers.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/fileio.h"
#include "common/logging.h"
#include "common/url.h"

namespace pilotlight::events {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Equality of two secrets in time that depends only on their lengths.
bool SameSecret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(1, b.size())]);
  }
  return diff == 0 && !b.empty();
}

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Files a trigger must not treat as inputs: our outputs, hidden and temporary files.
bool Eligible(const std::string& name) {
  std::string base = name.substr(name.rfind('/') + 1);
  return !base.empty() && base[0] != '.' && !EndsWith(base, ".out.jsonl") && !EndsWith(base, ".summary.json") &&
         !EndsWith(base, ".tmp") && !EndsWith(base, ".part") && base.find(".tmp.") == std::string::npos;
}

// One input row: its value for a one-input model (batched with its neighbours), or named
// inputs {"name": [row], ...} (run alone), or why it cannot be used.
struct Row {
  json value;
  bool named = false;
  std::string error{};
};

Row Bad(std::string why) { return Row{json(), false, std::move(why)}; }

bool IsNumber(std::string_view s, double* out) {
  std::string t(s);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  size_t b = 0;
  while (b < t.size() && std::isspace(static_cast<unsigned char>(t[b]))) ++b;
  if (b == t.size()) return false;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(t.c_str() + b, &end);
  if (end != t.c_str() + t.size() || errno == ERANGE) return false;
  *out = v;
  return true;
}

StatusOr<std::vector<Row>> ParseCsv(std::istream& in) {
  std::vector<Row> rows;
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::vector<std::string> cells;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) cells.push_back(c);
    json arr = json::array();
    std::string bad;
    for (const auto& c : cells) {
      double v;
      if (!IsNumber(c, &v)) {
        bad = c;
        break;
      }
      arr.push_back(v == static_cast<double>(static_cast<int64_t>(v)) && std::abs(v) < 9e15
                        ? json(static_cast<int64_t>(v))
                        : json(v));
    }
    if (first && !bad.empty()) {  // a header row: its first row is not numeric
      first = false;
      continue;
    }
    first = false;
    if (!bad.empty()) {
      rows.push_back(Bad("not a number: '" + bad.substr(0, 64) + "'"));
    } else {
      rows.push_back({std::move(arr)});
    }
  }
  return rows;
}

StatusOr<std::vector<Row>> ParseJsonl(std::istream& in) {
  std::vector<Row> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      rows.push_back(Bad("not valid JSON"));
    } else if (j.is_array()) {
      rows.push_back({std::move(j)});  // one row of a one-input model
    } else if (j.is_object() && j.contains("inputs")) {
      json& x = j["inputs"];
      if (x.is_array()) {
        rows.push_back({std::move(x)});
      } else if (x.is_object()) {
        json named = json::object();  // named inputs: each value one row
        for (auto& [k, v] : x.items()) named[k] = json::array({v});
        rows.push_back({std::move(named), true});
      } else {
        rows.push_back(Bad("\"inputs\" must be a row (array) or named rows (object)"));
      }
    } else {
      rows.push_back(Bad("each line must be a row (a JSON array) or {\"inputs\": ...}"));
    }
  }
  return rows;
}

// NumPy .npy (format 1.0/2.0/3.0): a C-order 1-D or 2-D array of bool, int or float.
StatusOr<std::vector<Row>> ParseNpy(std::istream& in) {
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    return InvalidArgumentError("not a .npy file (bad magic)");
  }
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  if (header_len > 65536) return InvalidArgumentError(".npy header too large");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len)) return InvalidArgumentError(".npy header truncated");
  auto field = [&](const std::string& key) -> std::string {
    auto p = header.find("'" + key + "'");
    if (p == std::string::npos) return "";
    p = header.find(':', p);
    size_t e = header.find_first_of(key == "shape" ? ")" : ",}", p);
    return header.substr(p + 1, e == std::string::npos ? std::string::npos : e - p);
  };
  std::string descr = field("descr"), fortran = field("fortran_order"), shape_text = field("shape");
  descr.erase(std::remove_if(descr.begin(), descr.end(), [](char c) { return c == '\'' || c == ' '; }), descr.end());
  if (fortran.find("True") != std::string::npos) return InvalidArgumentError(".npy in Fortran order is not supported");
  std::vector<int64_t> shape;
  for (size_t i = shape_text.find('('); i != std::string::npos && i < shape_text.size();) {
    size_t j = shape_text.find_first_of("0123456789", i);
    if (j == std::string::npos) break;
    size_t k = shape_text.find_first_not_of("0123456789", j);
    shape.push_back(std::stoll(shape_text.substr(j, k - j)));
    i = k;
  }
  if (shape.empty() || shape.size() > 2) return InvalidArgumentError(".npy must hold a 1-D or 2-D array");
  int64_t n = shape[0], d = shape.size() == 2 ? shape[1] : 1;
  if (n < 0 || d <= 0 || n > (int64_t{1} << 32) || d > (int64_t{1} << 24))
    return InvalidArgumentError(".npy shape is too large");
  size_t size = 0;
  char kind = descr.size() >= 3 ? descr[1] : '?';
  if (descr.size() >= 3 && (descr[0] == '<' || descr[0] == '|' || descr[0] == '=')) size = std::stoul(descr.substr(2));
  if (!((kind == 'f' && (size == 4 || size == 8)) ||
        ((kind == 'i' || kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
        (kind == 'b' && size == 1))) {
    return InvalidArgumentError(".npy dtype '" + descr + "' is not supported (little-endian bool, int, uint, float)");
  }
  std::vector<Row> rows;
  rows.reserve(static_cast<size_t>(n));
  std::vector<char> buf(static_cast<size_t>(d) * size);
  for (int64_t r = 0; r < n; ++r) {
    if (!in.read(buf.data(), static_cast<std::streamsize>(buf.size())))
      return InvalidArgumentError(".npy data truncated");
    json arr = json::array();
    for (int64_t c = 0; c < d; ++c) {
      const char* p = buf.data() + c * size;
      if (kind == 'f' && size == 4) {
        float v;
        std::memcpy(&v, p, 4);
        arr.push_back(v);
      } else if (kind == 'f') {
        double v;
        std::memcpy(&v, p, 8);
        arr.push_back(v);
      } else if (kind == 'b') {
        arr.push_back(*p != 0);
      } else {
        int64_t v = 0;
        uint64_t u = 0;
        std::memcpy(&u, p, size);
        if (kind == 'i' && size < 8 && (u >> (size * 8 - 1)) & 1) u |= ~uint64_t{0} << (size * 8);
        v = static_cast<int64_t>(u);
        if (kind == 'u') {
          arr.push_back(u);
        } else {
          arr.push_back(v);
        }
      }
    }
    rows.push_back({shape.size() == 2 ? std::move(arr) : std::move(arr[0])});
  }
  return rows;
}

StatusOr<std::vector<Row>> ParseRows(const std::string& key, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return UnavailableError("cannot read the fetched object " + path);
  std::string lower = key;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (EndsWith(lower, ".npy")) return ParseNpy(in);
  if (EndsWith(lower, ".csv")) return ParseCsv(in);
  return ParseJsonl(in);
}

// Splits a function response {"outputs": ...} for `n` rows into one JSON value per row.
std::optional<std::vector<json>> SplitOutputs(const std::string& body, size_t n) {
  auto j = json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("outputs")) return std::nullopt;
  const json& o = j["outputs"];
  std::vector<json> out(n);
  if (o.is_array()) {
    if (o.size() != n) return std::nullopt;
    for (size_t i = 0; i < n; ++i) out[i] = o[i];
    return out;
  }
  if (o.is_object()) {
    for (auto& [name, v] : o.items()) {
      if (!v.is_array() || v.size() != n) return std::nullopt;
      for (size_t i = 0; i < n; ++i) out[i][name] = v[i];
    }
    return out;
  }
  return std::nullopt;
}

// {"row": i, "outputs": ...} with "row" first, for people reading the file.
std::string OutputLine(size_t row, const json& outputs) {
  return fmt::format("{{\"row\":{},\"outputs\":{}}}", row,
                     outputs.dump(-1, ' ', false, json::error_handler_t::replace));
}

}  // namespace

Triggers::Triggers(std::vector<TriggerSpec> specs, EventStore* db, Executor executor, std::string work_dir,
                   store::S3Settings s3, metrics::Registry* metrics)
    : specs_(std::move(specs)), db_(db), executor_(std::move(executor)), work_dir_(std::move(work_dir)), s3_(s3) {
  if (metrics) {
    objects_ok_ =
        metrics->Counter("pilotlight_trigger_objects_total", "Objects processed by triggers.", {{"result", "done"}});
    objects_failed_ =
        metrics->Counter("pilotlight_trigger_objects_total", "Objects processed by triggers.", {{"result", "failed"}});
    rows_ = metrics->Counter("pilotlight_trigger_rows_total", "Input rows run by triggers.");
  }
}

Triggers::~Triggers() { Stop(); }

Triggers::Source* Triggers::SourceFor(const std::string& name) {
  for (auto& s : sources_) {
    if (s->spec.source == name) return s.get();
  }
  return nullptr;
}

Status Triggers::Start() {
  if (specs_.empty()) return OkStatus();
  std::error_code ec;
  fs::create_directories(work_dir_, ec);
  inotify_ = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  for (const auto& spec : specs_) {
    auto src = std::make_unique<Source>();
    src->spec = spec;
    PL_ASSIGN_OR_RETURN(src->in, store::OpenBlobStore(spec.source, s3_));
    PL_ASSIGN_OR_RETURN(src->out, store::OpenBlobStore(spec.output, s3_));
    if (spec.source.rfind("s3://", 0) == 0) {
      std::string rest = spec.source.substr(5);
      auto slash = rest.find('/');
      src->bucket = rest.substr(0, slash);
      src->prefix = slash == std::string::npos ? "" : rest.substr(slash + 1);
      while (!src->prefix.empty() && src->prefix.back() == '/') src->prefix.pop_back();
    } else {
      src->local_dir = src->in->LocalPath("x").value();
      src->local_dir.resize(src->local_dir.size() - 2);
      fs::create_directories(src->local_dir, ec);
      if (inotify_ >= 0) {
        src->watch = ::inotify_add_watch(inotify_, src->local_dir.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO);
      }
      // Objects already there (or that arrived while the server was down).
      for (const auto& e : fs::directory_iterator(src->local_dir, ec)) {
        if (e.is_regular_file()) Consider(*src, e.path().filename().string());
      }
    }
    sources_.push_back(std::move(src));
  }
  watcher_ = std::thread([this] { WatchLoop(); });
  worker_ = std::thread([this] { WorkLoop(); });
  return OkStatus();
}

void Triggers::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  if (worker_.joinable()) worker_.join();
  if (inotify_ >= 0) ::close(inotify_);
}

void Triggers::Consider(Source& src, const std::string& name) {
  if (!Eligible(name)) return;
  struct stat st {};
  std::string path = src.local_dir + "/" + name;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
  std::string etag = fmt::format("{:x}-{:x}-{:x}", static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_size),
                                 static_cast<uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ull + st.st_mtim.tv_nsec);
  auto inserted = db_->InsertJob(src.spec.source, name, etag, UnixMillis());
  if (inserted.ok() && *inserted) {
    LogLine(spdlog::level::info, "trigger: new object").Str("source", src.spec.source).Str("key", name);
    std::lock_guard<std::mutex> l(mu_);
    wake_ = true;
    cv_.notify_all();
  }
}

void Triggers::WatchLoop() {
  alignas(struct inotify_event) char buf[16384];
  while (true) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return;
    }
    if (inotify_ < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    pollfd p{inotify_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    ssize_t n = ::read(inotify_, buf, sizeof buf);
    for (ssize_t off = 0; n > 0 && off < n;) {
      auto* ev = reinterpret_cast<struct inotify_event*>(buf + off);
      if (ev->len > 0) {
        for (auto& s : sources_) {
          if (s->watch == ev->wd) Consider(*s, ev->name);
        }
      }
      off += static_cast<ssize_t>(sizeof(struct inotify_event) + ev->len);
    }
  }
}

namespace {
// The string at `key`, "" when `obj` is not an object or the value is absent or not a string.
// (json::value() throws on a value of another type, and notification bodies are untrusted.)
std::string StringField(const json& obj, const char* key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}
}  // namespace

namespace {
// Parses untrusted JSON nested at most 64 deep (a notification needs 6): nlohmann copies
// recursively, so a deeper document could overflow a thread's stack. Discarded when invalid.
json ParseShallow(std::string_view text) {
  struct TooDeep {};
  try {
    return json::parse(
        text,
        [](int depth, json::parse_event_t, json&) {
          if (depth > 64) throw TooDeep{};
          return true;
        },
        false);
  } catch (const TooDeep&) {
    return json(json::value_t::discarded);
  }
}
}  // namespace

StatusOr<std::vector<S3ObjectRef>> ParseS3Notification(std::string_view body) {
  auto doc = ParseShallow(body);
  if (!doc.is_object()) return InvalidArgumentError("the body is not an S3 event notification (JSON object)");
  // SNS wraps the S3 document in "Message"; S3's test event has no Records.
  if (doc.contains("Message") && doc["Message"].is_string()) {
    auto inner = ParseShallow(doc["Message"].get<std::string>());
    if (inner.is_object()) doc = std::move(inner);
  }
  std::vector<S3ObjectRef> refs;
  if (!doc.contains("Records")) return refs;
  if (!doc["Records"].is_array()) return InvalidArgumentError("\"Records\" must be an array");
  for (const auto& r : doc["Records"]) {
    if (!r.is_object() || !r.contains("s3") || !r["s3"].is_object()) continue;
    std::string event = StringField(r, "eventName");
    if (event.rfind("ObjectCreated", 0) != 0 && event.rfind("s3:ObjectCreated", 0) != 0) continue;
    const json& s3 = r["s3"];
    if (!s3.contains("object") || !s3["object"].is_object()) continue;
    const json& object = s3["object"];
    S3ObjectRef ref;
    ref.bucket = s3.contains("bucket") ? StringField(s3["bucket"], "name") : "";
    ref.key = PercentDecode(StringField(object, "key"));
    ref.etag = StringField(object, object.contains("eTag") ? "eTag" : "etag");
    refs.push_back(std::move(ref));
  }
  return refs;
}

StatusOr<int> Triggers::OnS3Notification(std::string_view body, const std::string& token) {
  PL_ASSIGN_OR_RETURN(std::vector<S3ObjectRef> refs, ParseS3Notification(body));
  int created = 0;
  bool authorised_any = false, matched_any = false;
  for (const auto& ref : refs) {
    for (auto& src : sources_) {
      if (src->bucket.empty() || src->bucket != ref.bucket) continue;
      std::string want = src->prefix.empty() ? "" : src->prefix + "/";
      if (ref.key.rfind(want, 0) != 0) continue;
      matched_any = true;
      if (!src->spec.token.empty() && !SameSecret(src->spec.token, token)) continue;
      authorised_any = true;
      std::string rel = ref.key.substr(want.size());
      if (rel.empty() || !Eligible(rel) || !store::ValidateKey(rel).ok()) continue;
      PL_ASSIGN_OR_RETURN(bool inserted, db_->InsertJob(src->spec.source, rel, ref.etag, UnixMillis()));
      if (inserted) created++;
    }
  }
  if (matched_any && !authorised_any) {
    return FailedPreconditionError("the notification's token does not match the trigger's token");
  }
  if (created) {
    std::lock_guard<std::mutex> l(mu_);
    wake_ = true;
    cv_.notify_all();
  }
  return created;
}

void Triggers::WorkLoop() {
  while (true) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, std::chrono::milliseconds(500), [&] { return stop_ || wake_; });
      if (stop_) return;
      wake_ = false;
    }
    while (true) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (stop_) return;
      }
      auto job = db_->NextJob(UnixMillis());
      if (!job.ok() || !job->has_value()) break;
      Job j = std::move(job->value());
      Status st = RunJob(j);
      if (!st.ok()) {
        {
          std::lock_guard<std::mutex> l(mu_);
          if (stop_) return;  // interrupted by shutdown: stays running, resumes at the next start
        }
        LogLine(spdlog::level::err, "trigger: object failed (dead letter)")
            .Str("source", j.trigger)
            .Str("key", j.key)
            .Str("error", st.ToString());
        (void)db_->FinishJob(j.id, "failed", j.rows, st.message(), UnixMillis());
        if (objects_failed_) objects_failed_->Increment();
      }
    }
  }
}

Status Triggers::RunJob(Job& job) {
  Source* src = SourceFor(job.trigger);
  if (!src) return FailedPreconditionError("the trigger for " + job.trigger + " is no longer configured");
  std::string fetched = fmt::format("{}/job-{}.input", work_dir_, job.id);
  std::string partial = fmt::format("{}/job-{}.partial", work_dir_, job.id);
  struct Cleanup {
    std::string a;
    ~Cleanup() {
      std::error_code ec;
      fs::remove(a, ec);
    }
  } cleanup{fetched};
  std::string input_path;
  if (auto local = src->in->LocalPath(job.key)) {
    input_path = *local;
  } else {
    PL_RETURN_IF_ERROR(src->in->Fetch(job.key, fetched).status());
    input_path = fetched;
  }
  PL_ASSIGN_OR_RETURN(std::vector<Row> rows, ParseRows(job.key, input_path));
  job.rows = static_cast<int64_t>(rows.size());
  auto started = std::chrono::steady_clock::now();
  LogLine(spdlog::level::info, "trigger: processing")
      .Str("source", job.trigger)
      .Str("key", job.key)
      .Int("rows", job.rows)
      .Int("resume_at_row", job.rows_done);

  // Resume: the partial output is trusted up to the length recorded with rows_done.
  int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return UnavailableError("cannot open " + partial + ": " + std::strerror(errno));
  if (::ftruncate(fd, job.partial_bytes) != 0 || ::lseek(fd, job.partial_bytes, SEEK_SET) < 0) {
    ::close(fd);
    return UnavailableError("cannot resume " + partial);
  }
  int64_t bytes = job.partial_bytes, ok = job.ok, errors = job.errors;
  std::string version;  // the model version that answered (from the responses)
  auto run = [&](const std::string& payload) -> StatusOr<std::string> {
    auto p = std::make_shared<std::promise<StatusOr<std::string>>>();
    auto f = p->get_future();
    Event e;
    e.id = fmt::format("job{}", job.id);
    e.function = src->spec.function;
    e.payload = payload;
    executor_(e, [p](StatusOr<std::string> r) { p->set_value(std::move(r)); });
    auto r = f.get();
    // Throttled (the function is busy with other traffic): wait and try the same rows again,
    // as long as the server runs — a busy function must not fail an uploaded object.
    for (int wait_ms = 100; !r.ok() && r.status().code() == StatusCode::kResourceExhausted;
         wait_ms = std::min(wait_ms * 2, 5000)) {
      {
        std::unique_lock<std::mutex> l(mu_);
        if (cv_.wait_for(l, std::chrono::milliseconds(wait_ms), [&] { return stop_; })) break;
      }
      auto p2 = std::make_shared<std::promise<StatusOr<std::string>>>();
      auto f2 = p2->get_future();
      executor_(e, [p2](StatusOr<std::string> r2) { p2->set_value(std::move(r2)); });
      r = f2.get();
    }
    if (r.ok()) {
      auto j = json::parse(*r, nullptr, false);
      if (j.is_object() && j.contains("version") && j["version"].is_string()) version = j["version"];
    }
    return r;
  };
  size_t batch = static_cast<size_t>(std::max(1, src->spec.batch_size));
  for (size_t i = static_cast<size_t>(job.rows_done); i < rows.size();) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) {
        ::close(fd);
        return CancelledError("stopping");
      }
    }
    // Consecutive one-input rows run as one request; a named-input row runs alone.
    size_t end = i;
    json inputs = json::array();
    while (end < rows.size() && end - i < batch && rows[end].error.empty() && !rows[end].named) {
      inputs.push_back(rows[end].value);
      ++end;
    }
    if (end == i) end = i + 1;
    std::vector<std::string> lines;
    std::optional<std::vector<json>> outs;
    if (!rows[i].named && rows[i].error.empty()) {
      auto r = run(json({{"inputs", inputs}}).dump());
      if (r.ok()) outs = SplitOutputs(*r, end - i);
    }
    if (outs) {
      for (size_t k = 0; k < outs->size(); ++k) lines.push_back(OutputLine(i + k, (*outs)[k]));
      ok += static_cast<int64_t>(outs->size());
    } else {
      // Run the rows alone to find the bad ones. A failure that is not about the input (the
      // function is gone, the model cannot load) fails the whole object instead.
      for (size_t k = i; k < end; ++k) {
        const Row& row = rows[k];
        std::string why = row.error;
        if (why.empty()) {
          auto one = run(json({{"inputs", row.named ? row.value : json::array({row.value})}}).dump());
          auto split = one.ok() ? SplitOutputs(*one, 1) : std::nullopt;
          if (split) {
            lines.push_back(OutputLine(k, (*split)[0]));
            ok++;
            continue;
          }
          if (!one.ok() && one.status().code() != StatusCode::kInvalidArgument) {
            ::close(fd);
            return one.status().WithContext("row " + std::to_string(k));
          }
          why = one.ok() ? "unexpected response" : one.status().message();
        }
        lines.push_back(fmt::format(
            "{{\"row\":{},\"error\":{}}}", k,
            json({{"type", "invalid_input"}, {"message", why}}).dump(-1, ' ', false, json::error_handler_t::replace)));
        errors++;
      }
    }
    std::string chunk;
    for (auto& l : lines) chunk += l + "\n";
    Status wrote = WriteAll(fd, chunk, partial);
    if (wrote.ok() && ::fsync(fd) != 0) wrote = UnavailableError("cannot fsync " + partial);
    if (!wrote.ok()) {
      ::close(fd);
      return wrote;
    }
    bytes += static_cast<int64_t>(chunk.size());
    if (rows_) rows_->Increment(static_cast<double>(end - i));
    i = end;
    PL_RETURN_IF_ERROR(db_->JobProgress(job.id, job.rows, static_cast<int64_t>(i), bytes, ok, errors));
  }
  ::close(fd);
  // Publish: the whole output at once (atomic on both stores), then the summary.
  PL_RETURN_IF_ERROR(src->out->Upload(job.key + ".out.jsonl", partial));
  json summary = {{"key", job.key},
                  {"rows", job.rows},
                  {"ok", ok},
                  {"errors", errors},
                  {"function", src->spec.function},
                  {"version", version},
                  {"started_at", Rfc3339(job.started_ms)},
                  {"finished_at", Rfc3339(UnixMillis())},
                  {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()}};
  PL_RETURN_IF_ERROR(src->out->Write(job.key + ".summary.json", summary.dump(2) + "\n").status());
  PL_RETURN_IF_ERROR(db_->FinishJob(job.id, "done", job.rows, "", UnixMillis()));
  std::error_code ec;
  fs::remove(partial, ec);
  if (objects_ok_) objects_ok_->Increment();
  LogLine(spdlog::level::info, "trigger: object done")
      .Str("source", job.trigger)
      .Str("key", job.key)
      .Int("rows", job.rows)
      .Int("ok", ok)
      .Int("errors", errors);
  return OkStatus();
}

}  // namespace pilotlight::events
