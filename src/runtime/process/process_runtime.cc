#include "runtime/process/process_runtime.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>

#include <fmt/format.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "common/ids.h"
#include "common/logging.h"

extern char** environ;

namespace pilotlight::runtime {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;

namespace {

constexpr size_t kLogTail = 4096;                    // per invocation, returned with the result
constexpr size_t kLoggedPerInvocation = 256 * 1024;  // output lines logged per invocation at most
constexpr size_t kMaxLine = 8192;

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return fmt::format("was killed by signal {} ({})", sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
  }
  return "stopped";
}

std::string LogStreamName() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}/{:02}/{:02}/[$LATEST]{}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, NewRequestId());
}

void AppendTail(std::string& buf, std::string_view data) {
  buf.append(data);
  if (buf.size() > 2 * kLogTail) buf.erase(0, buf.size() - kLogTail);
}

}  // namespace

// One worker process and its Runtime API endpoint.
class Worker final : public Instance {
 public:
  Worker(ProcessRuntime* rt, std::string function, ProcessSpec spec)
      : rt_(rt), function_(std::move(function)), spec_(std::move(spec)), acceptor_(ioc_) {}

  ~Worker() override {
    rt_->Unregister(this);
    Stop();
    std::error_code ec;
    if (!tmpdir_.empty()) std::filesystem::remove_all(tmpdir_, ec);
  }

  Status Start();

  const std::vector<tensor::TensorSpec>& inputs() const override { return none_; }
  const std::vector<tensor::TensorSpec>& outputs() const override { return none_; }
  StatusOr<std::vector<tensor::NamedTensor>> Run(const std::vector<tensor::NamedTensor>&, TimePoint) override {
    return FailedPreconditionError("function '" + function_ + "' is a process function: it takes events, not tensors");
  }
  bool IsProcess() const override { return true; }
  bool Healthy() const override {
    std::lock_guard<std::mutex> l(mu_);
    return !dead_ && !killing_;
  }

  void Invoke(const Invocation& inv, InvokeCallback done) override {
    std::unique_lock<std::mutex> l(mu_);
    if (dead_ || killing_) {
      std::string why = death_.empty() ? "it is being replaced" : death_;
      l.unlock();
      done(UnavailableError("the worker of function '" + function_ + "' is not running (" + why + ")"));
      return;
    }
    if (pending_ || running_) {
      l.unlock();
      done(InternalError("worker of function '" + function_ + "' got a second concurrent invocation"));
      return;
    }
    pending_ = inv;
    done_ = std::move(done);
    inv_log_.clear();
    logged_ = 0;
    current_id_ = inv.request_id;
    l.unlock();
    cv_.notify_all();
  }

  // Server shutdown: stop the worker now; its pending invocation completes with an error.
  void Kill() {
    std::lock_guard<std::mutex> l(mu_);
    if (!dead_ && !killing_ && pid_ > 0) KillLocked("shutdown");
  }
  bool Dead() const {
    std::lock_guard<std::mutex> l(mu_);
    return dead_;
  }

  // Called by the runtime's monitor thread: deadline and memory.
  void CheckLimits(TimePoint now, bool check_memory) {
    std::unique_lock<std::mutex> l(mu_);
    if (dead_ || killing_ || pid_ <= 0) return;
    const Invocation* inv = running_ ? &*running_ : pending_ ? &*pending_ : nullptr;
    if (inv && now >= inv->deadline) {
      KillLocked("timeout");
      return;
    }
    if (!check_memory) return;
    l.unlock();
    uint64_t rss = ResidentBytes();
    l.lock();
    if (!dead_ && !killing_ && rss > static_cast<uint64_t>(spec_.memory_mb) * 1024 * 1024) {
      last_rss_ = rss;
      KillLocked("memory");
    }
  }

 private:
  uint64_t ResidentBytes() const {
    std::ifstream in(fmt::format("/proc/{}/statm", pid_));
    uint64_t size = 0, resident = 0;
    in >> size >> resident;
    return resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  }

  void KillLocked(const char* reason) {
    killing_ = true;
    kill_reason_ = reason;
    if (pid_ > 0) ::kill(-pid_, SIGKILL);  // the whole process group
    cv_.notify_all();
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stopping_ = true;
      if (pid_ > 0 && !dead_) {
        killing_ = true;
        if (kill_reason_.empty()) kill_reason_ = "stop";
        ::kill(-pid_, SIGKILL);
      }
      for (int fd : conn_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    cv_.notify_all();
    boost::system::error_code ec;
    if (acceptor_.is_open()) ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    // Never join a thread from itself (an instance released from one of its own callbacks).
    auto join = [](std::thread& t) {
      if (!t.joinable()) return;
      if (t.get_id() == std::this_thread::get_id()) {
        t.detach();
      } else {
        t.join();
      }
    };
    join(reaper_);
    join(server_);
    join(output_);
    acceptor_.close(ec);
  }

  void Serve();
  void ServeConnection(tcp::socket& s);
  bool Handle(tcp::socket& s, bhttp::request<bhttp::string_body>& req, bhttp::response<bhttp::string_body>& res);
  void Reap();
  void PumpOutput(int fd);
  void Complete(StatusOr<InvocationResult> r, const std::string& id = "");  // the in-flight invocation's answer

  ProcessRuntime* const rt_;
  const std::string function_;
  const ProcessSpec spec_;
  const std::vector<tensor::TensorSpec> none_;
  std::string tmpdir_;
  boost::asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread server_, reaper_, output_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  pid_t pid_ = -1;                                          // GUARDED_BY(mu_) process group leader
  std::set<int> conn_fds_;                                  // GUARDED_BY(mu_) open Runtime API connections
  bool ready_ = false;                                      // GUARDED_BY(mu_) asked for its first event
  std::string init_error_;                                  // GUARDED_BY(mu_) from POST /runtime/init/error
  bool dead_ = false, killing_ = false, stopping_ = false;  // GUARDED_BY(mu_)
  std::string death_, kill_reason_;                         // GUARDED_BY(mu_)
  uint64_t last_rss_ = 0;                                   // GUARDED_BY(mu_)
  std::optional<Invocation> pending_, running_;             // GUARDED_BY(mu_)
  InvokeCallback done_;                                     // GUARDED_BY(mu_)
  std::string current_id_;                                  // GUARDED_BY(mu_) for tagging output
  std::string inv_log_;                                     // GUARDED_BY(mu_) output of the current invocation (tail)
  std::string init_log_;                                    // GUARDED_BY(mu_) output before the first event (tail)
  size_t logged_ = 0;                                       // GUARDED_BY(mu_)
};

Status Worker::Start() {
  // Runtime API endpoint: loopback, a port of its own.
  boost::system::error_code ec;
  acceptor_.open(tcp::v4(), ec);
  if (!ec) ::fcntl(acceptor_.native_handle(), F_SETFD, FD_CLOEXEC);
  if (!ec) acceptor_.bind(tcp::endpoint(boost::asio::ip::make_address_v4("127.0.0.1"), 0), ec);
  if (!ec) acceptor_.listen(4, ec);
  if (ec) return InternalError("cannot open a Runtime API endpoint: " + ec.message());
  int port = acceptor_.local_endpoint().port();

  std::string tmpl = rt_->options_.tmp_root + "/pilotlight-" + function_ + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data()))
    return InternalError("cannot create a temporary directory: " + std::string(std::strerror(errno)));
  tmpdir_ = buf.data();

  std::error_code fec;
  std::string cwd = spec_.cwd.empty() ? std::filesystem::current_path(fec).string()
                                      : std::filesystem::absolute(spec_.cwd, fec).string();
  if (!std::filesystem::is_directory(cwd, fec)) {
    return FailedPreconditionError("function '" + function_ + "': cwd '" + cwd + "' is not a directory");
  }
  std::map<std::string, std::string> env;
  if (const char* p = std::getenv("PATH")) env["PATH"] = p;
  if (const char* p = std::getenv("LD_LIBRARY_PATH")) env["LD_LIBRARY_PATH"] = p;
  env["LANG"] = "en_US.UTF-8";
  env["TZ"] = ":UTC";
  env["HOME"] = tmpdir_;
  env["TMPDIR"] = tmpdir_;
  env["AWS_LAMBDA_RUNTIME_API"] = fmt::format("127.0.0.1:{}", port);
  env["_HANDLER"] = spec_.handler;
  env["LAMBDA_TASK_ROOT"] = cwd;
  env["LAMBDA_RUNTIME_DIR"] = cwd;
  env["AWS_LAMBDA_FUNCTION_NAME"] = function_;
  env["AWS_LAMBDA_FUNCTION_VERSION"] = "$LATEST";
  env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = std::to_string(spec_.memory_mb);
  env["AWS_LAMBDA_LOG_GROUP_NAME"] = "/aws/lambda/" + function_;
  env["AWS_LAMBDA_LOG_STREAM_NAME"] = LogStreamName();
  env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "on-demand";
  env["AWS_EXECUTION_ENV"] = "AWS_Lambda_pilotlight";
  env["AWS_REGION"] = spec_.region;
  env["AWS_DEFAULT_REGION"] = spec_.region;
  for (const auto& [k, v] : spec_.env) env[k] = v;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = spec_.command;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return InternalError("pipe: " + std::string(std::strerror(errno)));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, out[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&attr, &none);         // our threads block SIGTERM/SIGINT
  posix_spawnattr_setsigdefault(&attr, &defaults);  // and ignore SIGPIPE
  posix_spawnattr_setpgroup(&attr, 0);              // its own process group
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    return FailedPreconditionError(
        fmt::format("function '{}': cannot start {}: {}", function_, spec_.command.front(), std::strerror(rc)));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    pid_ = pid;
  }
  output_ = std::thread([this, fd = out[0]] { PumpOutput(fd); });
  reaper_ = std::thread([this] { Reap(); });
  server_ = std::thread([this] { Serve(); });

  std::unique_lock<std::mutex> l(mu_);
  bool done = cv_.wait_for(l, spec_.init_timeout, [&] { return ready_ || dead_ || !init_error_.empty(); });
  if (ready_) return OkStatus();
  std::string tail = init_log_.size() > kLogTail ? init_log_.substr(init_log_.size() - kLogTail) : init_log_;
  if (!init_error_.empty()) {
    return WorkerFailedError("function '" + function_ + "' failed to initialize: " + init_error_);
  }
  if (!done) {
    return DeadlineExceededError(
        fmt::format("function '{}' did not ask for its first event within {} ms (init "
                    "timeout); output: {}",
                    function_, ToMillis(spec_.init_timeout), tail));
  }
  return WorkerFailedError("the worker of function '" + function_ + "' " + death_ + " during init; output: " + tail);
}

void Worker::Reap() {
  int status = 0;
  pid_t pid;
  {
    std::lock_guard<std::mutex> l(mu_);
    pid = pid_;
  }
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  InvokeCallback done;
  Status failure;
  {
    std::lock_guard<std::mutex> l(mu_);
    dead_ = true;
    death_ = DescribeExit(status);
    ::kill(-pid, SIGKILL);  // anything it left behind in its group
    if (!running_ && pending_ && kill_reason_ != "timeout") {
      // The event was never handed out (the worker died between its last answer and its next
      // GET .../next): Unavailable tells the caller it may give it to another instance.
      failure =
          UnavailableError(fmt::format("the worker of function '{}' {} before taking the event", function_, death_));
      done = std::move(done_);
      pending_.reset();
    } else if (running_ || pending_) {
      const Invocation& inv = running_ ? *running_ : *pending_;
      if (kill_reason_ == "timeout") {
        failure = DeadlineExceededError(fmt::format(
            "function '{}' timed out (its deadline passed); the worker was stopped and will be replaced", function_));
      } else if (kill_reason_ == "memory") {
        failure = WorkerFailedError(
            fmt::format("function '{}' used {} MB, over memory_mb ({}); the worker was stopped and will be replaced",
                        function_, last_rss_ >> 20, spec_.memory_mb));
      } else {
        failure =
            WorkerFailedError(fmt::format("the worker of function '{}' {} during invocation {}; it will be replaced",
                                          function_, death_, inv.request_id));
      }
      done = std::move(done_);
      running_.reset();
      pending_.reset();
    }
    for (int fd : conn_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  std::string death, reason;
  bool stopping;
  {
    std::lock_guard<std::mutex> l(mu_);
    death = death_;
    reason = kill_reason_;
    stopping = stopping_;
  }
  cv_.notify_all();
  if (acceptor_.is_open()) ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
  LogLine(stopping ? spdlog::level::info : spdlog::level::warn, "worker exited")
      .Str("function", function_)
      .Int("pid", pid)
      .Str("status", death)
      .Str("reason", reason.empty() ? "exited by itself" : reason);
  if (done) done(failure);
}

void Worker::PumpOutput(int fd) {
  std::string partial;
  char buf[65536];
  auto emit = [&](std::string_view line) {
    std::string id;
    bool log_it = true;
    {
      std::lock_guard<std::mutex> l(mu_);
      id = current_id_;
      std::string_view tail_part = line.substr(0, std::min(line.size(), kLogTail));
      if (id.empty()) {
        AppendTail(init_log_, tail_part);
        AppendTail(init_log_, "\n");
      } else {
        AppendTail(inv_log_, tail_part);
        AppendTail(inv_log_, "\n");
      }
      if (logged_ > kLoggedPerInvocation) {
        log_it = false;
      } else {
        logged_ += line.size();
        if (logged_ > kLoggedPerInvocation) {
          line = "[pilotlight: output over 256 KB in this invocation; the rest is not logged]";
        }
      }
    }
    if (log_it) {
      LogLine(spdlog::level::info, "function output")
          .Str("function", function_)
          .Str("request_id", id)
          .Str("line", line.substr(0, kMaxLine));
    }
  };
  while (true) {
    // A grandchild that left the process group may hold the pipe open after the worker died:
    // once the worker is reaped and the instance is stopping, stop reading.
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, 100);
    if (ready == 0) {
      std::lock_guard<std::mutex> l(mu_);
      if (dead_ && stopping_) break;
      continue;
    }
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    partial.append(buf, static_cast<size_t>(n));
    size_t start = 0, nl;
    while ((nl = partial.find('\n', start)) != std::string::npos) {
      emit(std::string_view(partial).substr(start, nl - start));
      start = nl + 1;
    }
    partial.erase(0, start);
    if (partial.size() > kMaxLine) {  // a very long line without a newline: flush it in pieces
      emit(partial);
      partial.clear();
    }
  }
  if (!partial.empty()) emit(partial);
  ::close(fd);
}

void Worker::Complete(StatusOr<InvocationResult> r, const std::string& id) {
  InvokeCallback done;
  {
    std::lock_guard<std::mutex> l(mu_);
    // The id is checked again under the lock: of two answers for one invocation (a /response
    // and an /error, or duplicates on two connections) only the first completes it.
    if (!id.empty() && (!running_ || running_->request_id != id)) return;
    if (r.ok()) r->log = inv_log_.size() > kLogTail ? inv_log_.substr(inv_log_.size() - kLogTail) : inv_log_;
    done = std::move(done_);
    running_.reset();
    // current_id_ stays: output still in the pipe belongs to this invocation (the next Invoke resets it).
  }
  if (done) done(std::move(r));
}

bool Worker::Handle(tcp::socket& s, bhttp::request<bhttp::string_body>& req, bhttp::response<bhttp::string_body>& res) {
  (void)s;
  std::string target(req.target());
  constexpr std::string_view kInv = "/2018-06-01/runtime/invocation/";
  res.set(bhttp::field::content_type, "application/json");
  auto error = [&](bhttp::status st, const char* type, const std::string& msg) {
    res.result(st);
    res.body() = nlohmann::json({{"errorMessage", msg}, {"errorType", type}}).dump();
  };
  if (req.method() == bhttp::verb::get && target == "/2018-06-01/runtime/invocation/next") {
    std::unique_lock<std::mutex> l(mu_);
    if (!ready_) {
      ready_ = true;
      cv_.notify_all();
    }
    cv_.wait(l, [&] { return pending_.has_value() || stopping_ || dead_ || killing_; });
    if (!pending_ || stopping_ || dead_ || killing_) return false;
    running_ = std::move(pending_);
    pending_.reset();
    const Invocation& inv = *running_;
    res.result(bhttp::status::ok);
    res.set("Lambda-Runtime-Aws-Request-Id", inv.request_id);
    res.set("Lambda-Runtime-Deadline-Ms", std::to_string(inv.deadline_epoch_ms));
    res.set("Lambda-Runtime-Invoked-Function-Arn", inv.function_arn);
    res.set("Lambda-Runtime-Trace-Id", inv.trace_id);
    res.body() = inv.payload;
    return true;
  }
  if (req.method() == bhttp::verb::post && target == "/2018-06-01/runtime/init/error") {
    std::string type(req["Lambda-Runtime-Function-Error-Type"]);
    auto doc = nlohmann::json::parse(req.body(), nullptr, false);
    std::string msg = doc.is_object() ? doc.value("errorMessage", req.body()) : req.body();
    if (doc.is_object() && type.empty()) type = doc.value("errorType", "");
    {
      std::lock_guard<std::mutex> l(mu_);
      init_error_ = (type.empty() ? "" : type + ": ") + msg;
    }
    cv_.notify_all();
    res.result(bhttp::status::accepted);
    res.body() = "{\"status\":\"OK\"}";
    return true;
  }
  if (req.method() == bhttp::verb::post && target.rfind(kInv, 0) == 0) {
    std::string rest = target.substr(kInv.size());
    auto slash = rest.find('/');
    std::string id = rest.substr(0, slash);
    std::string what = slash == std::string::npos ? "" : rest.substr(slash + 1);
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!running_ || running_->request_id != id) {
        error(bhttp::status::bad_request, "InvalidRequestID", "Invalid request ID");
        return true;
      }
    }
    if (what == "response") {
      InvocationResult out;
      out.payload = std::move(req.body());
      Complete(std::move(out), id);
      res.result(bhttp::status::accepted);
      res.body() = "{\"status\":\"OK\"}";
      return true;
    }
    if (what == "error") {
      InvocationResult out;
      out.function_error = true;
      out.error_type = std::string(req["Lambda-Runtime-Function-Error-Type"]);
      auto doc = nlohmann::json::parse(req.body(), nullptr, false);
      if (out.error_type.empty() && doc.is_object()) out.error_type = doc.value("errorType", "");
      if (out.error_type.empty()) out.error_type = "Unhandled";
      out.payload = doc.is_discarded()
                        ? nlohmann::json({{"errorMessage", req.body()}, {"errorType", out.error_type}}).dump()
                        : std::move(req.body());
      Complete(std::move(out));
      res.result(bhttp::status::accepted);
      res.body() = "{\"status\":\"OK\"}";
      return true;
    }
  }
  error(bhttp::status::not_found, "NotFound", "unknown Runtime API path " + target);
  return true;
}

void Worker::Serve() {
  // One thread per connection: a client may keep one connection idle and open another (the
  // Runtime API has no rule against it), and /next blocks its connection while it waits.
  struct Conn {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Conn> conns;
  while (true) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_ || dead_) break;
    }
    auto s = std::make_shared<tcp::socket>(ioc_);
    boost::system::error_code ec;
    acceptor_.accept(*s, ec);
    if (ec) break;
    ::fcntl(s->native_handle(), F_SETFD, FD_CLOEXEC);
    {
      std::lock_guard<std::mutex> l(mu_);
      conn_fds_.insert(s->native_handle());
      if (stopping_ || dead_) ::shutdown(s->native_handle(), SHUT_RDWR);
    }
    for (auto it = conns.begin(); it != conns.end();) {  // reap finished connection threads
      if (it->done->load()) {
        it->thread.join();
        it = conns.erase(it);
      } else {
        ++it;
      }
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    conns.push_back({std::thread([this, s, done] {
                       ServeConnection(*s);
                       done->store(true);
                     }),
                     done});
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int fd : conn_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  cv_.notify_all();
  for (auto& c : conns) c.thread.join();
}

void Worker::ServeConnection(tcp::socket& s) {
  boost::system::error_code ec;
  beast::flat_buffer buffer;
  while (true) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(64 * 1024);
    parser.body_limit(spec_.max_response_bytes);
    bhttp::read(s, buffer, parser, ec);
    if (ec == bhttp::error::body_limit) {
      // A response over the cap: Lambda answers the runtime 413 and the caller gets an error.
      bool ours;
      {
        std::lock_guard<std::mutex> l(mu_);
        ours = running_.has_value();
      }
      if (ours) {
        Complete(OutOfRangeError(
            fmt::format("function '{}' returned a response over {} bytes (Lambda's synchronous payload limit)",
                        function_, spec_.max_response_bytes)));
      }
      bhttp::response<bhttp::string_body> res{bhttp::status::payload_too_large, 11};
      res.set(bhttp::field::content_type, "application/json");
      res.body() = "{\"errorMessage\":\"Payload too large\",\"errorType\":\"RequestEntityTooLarge\"}";
      res.prepare_payload();
      res.keep_alive(false);
      bhttp::write(s, res, ec);
      break;
    }
    if (ec) break;
    auto req = parser.release();
    bhttp::response<bhttp::string_body> res{bhttp::status::ok, req.version()};
    if (!Handle(s, req, res)) break;
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    bhttp::write(s, res, ec);
    if (ec || !req.keep_alive()) break;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    conn_fds_.erase(s.native_handle());
  }
  s.shutdown(tcp::socket::shutdown_both, ec);
  s.close(ec);
}

// ---- ProcessRuntime ------------------------------------------------------------------------------

ProcessRuntime::ProcessRuntime(Options options) : options_(std::move(options)) {
  monitor_ = std::thread([this] { Monitor(); });
}

void ProcessRuntime::KillAll(Duration wait) {
  std::vector<Worker*> all;
  {
    std::lock_guard<std::mutex> l(mu_);
    all.assign(workers_.begin(), workers_.end());
    for (Worker* w : all) w->Kill();
  }
  // Their reapers complete pending invocations (errors) while the scheduler still exists.
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    bool all_dead = true;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (Worker* w : workers_) all_dead &= w->Dead();
    }
    if (all_dead) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

ProcessRuntime::~ProcessRuntime() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  monitor_.join();
}

void ProcessRuntime::Register(Worker* w) {
  std::lock_guard<std::mutex> l(mu_);
  workers_.insert(w);
}

void ProcessRuntime::Unregister(Worker* w) {
  std::lock_guard<std::mutex> l(mu_);
  workers_.erase(w);
}

void ProcessRuntime::Monitor() {
  std::unique_lock<std::mutex> l(mu_);
  int tick = 0;
  while (!stop_) {
    cv_.wait_for(l, options_.monitor_interval);
    if (stop_) break;
    bool memory = (++tick % 5) == 0;  // RSS every 5 ticks (250 ms by default)
    TimePoint now = SystemClock::Default()->Now();
    // Workers unregister under mu_ before they are destroyed, so they stay valid here.
    for (Worker* w : workers_) w->CheckLimits(now, memory);
  }
}

StatusOr<std::unique_ptr<Instance>> ProcessRuntime::Load(const LoadSpec& spec) {
  if (!spec.process || spec.process->command.empty()) {
    return InvalidArgumentError("function '" + spec.function + "' has no command to run");
  }
  auto w = std::make_unique<Worker>(this, spec.function, *spec.process);
  Status st = w->Start();
  if (!st.ok()) return st;  // ~Worker kills whatever started
  Register(w.get());
  return std::unique_ptr<Instance>(std::move(w));
}

}  // namespace pilotlight::runtime
