#include "http/server.h"

#include <array>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "common/ids.h"
#include "common/logging.h"
#include "gateway/error_mapping.h"

namespace pilotlight::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

class Session;

struct HttpServer::State {
  HttpOptions options;
  gateway::Gateway* gateway;
  // Declared before the io_context so they outlive it: destroying the io_context destroys
  // pending handlers, whose sessions unregister themselves here.
  std::mutex sessions_mu;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::atomic<int64_t> active{0};
  std::atomic<bool> stopping{false};

  void Accept();
};

namespace {
std::string_view ReasonFor(const beast::error_code& ec, int* status) {
  if (ec == bhttp::error::body_limit) {
    *status = 413;
    return "payload_too_large";
  }
  if (ec == bhttp::error::header_limit) {
    *status = 431;
    return "headers_too_large";
  }
  *status = 400;
  return "bad_request";
}
}  // namespace

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, HttpServer::State* server) : stream_(std::move(socket)), server_(server) {
    beast::error_code ec;  // once per connection, not per request
    auto remote = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) remote_addr_ = remote.address().to_string();
  }

  ~Session() {
    std::lock_guard<std::mutex> l(server_->sessions_mu);
    server_->sessions.erase(this);
  }

  void Start() {
    {
      std::lock_guard<std::mutex> l(server_->sessions_mu);
      server_->sessions[this] = weak_from_this();
    }
    beast::error_code ec;
    stream_.socket().set_option(tcp::no_delay(true), ec);
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
  }

  // Called on shutdown, on the session's strand: closes the connection if it is idle.
  void CloseIfIdle() {
    if (!busy_) {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
      stream_.socket().close(ec);
    }
  }

  auto executor() { return stream_.get_executor(); }

 private:
  void DoRead() {
    if (server_->stopping.load()) return Close();
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(server_->options.max_header_bytes));
    parser_->body_limit(server_->options.max_body_bytes);
    stream_.expires_after(first_ ? server_->options.read_timeout : server_->options.idle_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnHeader(ec, n); });
  }

  // `head_bytes` is exactly the request line + fields + blank line. Beast's own header_limit is
  // a coarser guard (it may admit a few bytes more), so the configured limit is enforced here.
  void OnHeader(beast::error_code ec, size_t head_bytes) {
    if (!ec && head_bytes > server_->options.max_header_bytes) ec = bhttp::error::header_limit;
    if (ec) return OnReadError(ec);
    busy_ = true;
    start_ = std::chrono::steady_clock::now();
    if (parser_->is_done()) return OnRequest();
    // flat_buffer reads at most its spare capacity per call and starts small: without this a
    // large body arrives in ~512-byte reads (a 250 KB tensor took ~2 ms instead of ~0.2 ms).
    uint64_t expect = parser_->content_length().value_or(64 * 1024);
    buffer_.reserve(static_cast<size_t>(std::min<uint64_t>(expect, 1 << 20)) + 512);
    stream_.expires_after(server_->options.read_timeout);
    bhttp::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->OnReadError(ec);
      self->OnRequest();
    });
  }

  void OnReadError(beast::error_code ec) {
    if (ec == bhttp::error::end_of_stream || ec == net::error::operation_aborted || ec == beast::error::timeout ||
        ec == net::error::connection_reset || ec == net::error::eof || ec == bhttp::error::partial_message) {
      return Close();
    }
    // A malformed or oversized request: answer with a typed error, then close (the byte
    // stream can no longer be trusted to be in sync).
    int status;
    std::string_view type = ReasonFor(ec, &status);
    gateway::Response r;
    std::string message = status == 413   ? fmt::format("the request body exceeds {} bytes (server.max_body_bytes)",
                                                        server_->options.max_body_bytes)
                          : status == 431 ? fmt::format("the request headers exceed {} bytes (server.max_header_bytes)",
                                                        server_->options.max_header_bytes)
                                          : "malformed HTTP request: " + ec.message();
    // The headers may have been read (body too large): echo the client's id when it sent one.
    std::string rid;
    if (parser_) {
      auto& h = parser_->get();
      if (auto it = h.find("X-Request-Id"); it != h.end()) rid = std::string(it->value());
    }
    if (!IsValidRequestId(rid)) rid = NewRequestId();
    r.log.request_id = rid;
    gateway::SetError(r, status, type, message, rid);
    if (!busy_) start_ = std::chrono::steady_clock::now();
    busy_ = true;
    server_->active++;
    keep_alive_ = false;
    linger_ = true;
    Write(std::move(r), "-", "-");
  }

  void OnRequest() {
    server_->active++;
    read_done_ = std::chrono::steady_clock::now();
    auto& req = parser_->get();
    gateway::Request greq;
    greq.method = std::string(req.method_string());
    greq.target = std::string(req.target());
    if (auto it = req.find("X-Request-Id"); it != req.end()) greq.x_request_id = std::string(it->value());
    if (auto it = req.find("X-Model"); it != req.end()) greq.x_model = std::string(it->value());
    if (auto it = req.find(bhttp::field::content_type); it != req.end()) greq.content_type = std::string(it->value());
    // Views into the parser's fields: valid while Handle() runs (it copies what it keeps).
    greq.headers.reserve(8);
    for (const auto& f : req) {
      greq.headers.emplace_back(std::string_view(f.name_string().data(), f.name_string().size()),
                                std::string_view(f.value().data(), f.value().size()));
    }
    greq.remote_addr = remote_addr_;
    greq.body = std::move(req.body());
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    method_ = greq.method;
    target_ = greq.target;
    server_->gateway->Handle(std::move(greq), [self = shared_from_this()](gateway::Response&& r) {
      net::dispatch(self->stream_.get_executor(),
                    [self, r = std::move(r)]() mutable { self->Write(std::move(r), self->method_, self->target_); });
    });
  }

  void Write(gateway::Response&& r, const std::string& method, const std::string& target) {
    Duration total = std::chrono::steady_clock::now() - start_;
    bool keep = keep_alive_ && !server_->stopping.load();
    res_.emplace(static_cast<bhttp::status>(r.status), version_ ? version_ : 11);
    res_->set(bhttp::field::server, "pilotlight");
    res_->set(bhttp::field::content_type, r.content_type);
    if (!r.log.request_id.empty()) res_->set("X-Request-Id", r.log.request_id);
    for (auto& [k, v] : r.headers) res_->insert(k, v);  // insert: Set-Cookie may repeat
    res_->keep_alive(keep);
    if (method != "HEAD") res_->body() = std::move(r.body);
    try {
      res_->prepare_payload();
    } catch (const std::exception& e) {  // e.g. a body on a 204: answer 502, never crash
      res_->result(bhttp::status::bad_gateway);
      res_->body() = gateway::ErrorJson("function_error", e.what(), r.log.request_id);
      res_->set(bhttp::field::content_type, "application/json");
      res_->prepare_payload();
    }
    if (r.function_metrics) {
      r.function_metrics->CountRequest(r.status);
      r.function_metrics->request_duration->Observe(ToSeconds(total));
    }
    LogRequest(r, method, target, total);
    // A small response fits in the socket's send buffer and completes at once: arming a timer
    // for it would cost timer-queue syscalls on every request. Large ones keep the timeout.
    if (res_->body().size() < 64 * 1024) {
      stream_.expires_never();
    } else {
      stream_.expires_after(server_->options.read_timeout);
    }
    bhttp::async_write(stream_, *res_, [self = shared_from_this(), keep](beast::error_code ec, size_t) {
      self->server_->active--;
      self->busy_ = false;
      self->first_ = false;
      if (!ec && self->linger_) return self->LingerClose();
      if (ec || !keep) return self->Close();
      if (self->buffer_.capacity() > 64 * 1024) self->buffer_.shrink_to_fit();  // idle connections stay small
      self->DoRead();
    });
  }

  void LogRequest(const gateway::Response& r, const std::string& method, const std::string& target, Duration total) {
    const auto& l = r.log;
    std::string_view path = std::string_view(target).substr(0, target.find('?'));
    LogLine line(r.status >= 500 ? spdlog::level::warn : spdlog::level::info, "request");
    line.Str("request_id", l.request_id).Str("method", method).Str("path", path).Int("status", r.status);
    if (!l.function.empty()) {
      line.Str("function", l.function)
          .Str("version", l.version)
          .Bool("cold_start", l.cold_start)
          .Num("fetch_ms", l.fetch_ms)
          .Num("load_ms", l.load_ms)
          .Num("queue_ms", l.queue_ms)
          .Num("handler_ms", l.handler_ms);
    }
    if (read_done_ > start_) line.Num("read_ms", ToMillis(read_done_ - start_));
    line.Num("total_ms", ToMillis(total));
    if (!l.input_shapes.empty()) line.Raw("input_shapes", l.input_shapes);
    if (!l.error_type.empty()) line.Str("error", l.error_type);
  }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
  }

  // After refusing a request whose body we did not read (413, 431, 400), closing at once would
  // make the kernel answer the unread bytes with a RST, and the client would often see a reset
  // instead of our error. Send FIN, then read and discard for up to a second (or 1 MiB).
  void LingerClose() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(1));
    Discard();
  }
  void Discard() {
    stream_.async_read_some(net::buffer(discard_), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->discarded_ += n;
      if (ec || self->discarded_ > (1u << 20)) {
        beast::error_code ignored;
        self->stream_.socket().close(ignored);
        return;
      }
      self->Discard();
    });
  }

  beast::tcp_stream stream_;
  std::string remote_addr_;
  HttpServer::State* server_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::optional<bhttp::response<bhttp::string_body>> res_;
  std::string method_, target_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool busy_ = false;
  bool first_ = true;
  bool linger_ = false;
  size_t discarded_ = 0;
  std::array<char, 4096> discard_;
  std::chrono::steady_clock::time_point start_, read_done_;
};

void HttpServer::State::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (!acceptor.is_open()) return;
      LogLine(spdlog::level::warn, "accept failed").Str("error", ec.message());
    } else {
      std::make_shared<Session>(std::move(socket), this)->Start();
    }
    if (!stopping.load()) Accept();
  });
}

HttpServer::HttpServer(HttpOptions options, gateway::Gateway* gateway) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
  state_->gateway = gateway;
}

HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Listen() {
  const std::string& listen = state_->options.listen;
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return InvalidArgumentError("listen address '" + listen + "' must be HOST:PORT");
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  int port;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    return InvalidArgumentError("listen address '" + listen + "' has no valid port");
  }
  if (port < 0 || port > 65535) return InvalidArgumentError("listen port must be 0-65535");
  beast::error_code ec;
  auto addr = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) return InvalidArgumentError("listen host '" + host + "' is not an IP address");
  tcp::endpoint ep(addr, static_cast<uint16_t>(port));
  auto& a = state_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return UnavailableError("cannot listen on " + listen + ": " + ec.message());
  return OkStatus();
}

uint16_t HttpServer::port() const {
  beast::error_code ec;
  auto ep = state_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void HttpServer::Start() {
  state_->work.emplace(state_->ioc.get_executor());
  state_->Accept();
  int n = state_->options.threads > 0 ? state_->options.threads
                                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < n; ++i) state_->threads.emplace_back([this] { state_->ioc.run(); });
}

void HttpServer::StopAccepting() {
  if (state_->stopping.exchange(true)) return;
  net::post(state_->acceptor.get_executor(), [s = state_.get()] {
    beast::error_code ec;
    s->acceptor.close(ec);
  });
  // Collect under the lock, act outside it: dropping the last reference to a session runs its
  // destructor, which takes sessions_mu.
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard<std::mutex> l(state_->sessions_mu);
    for (auto& [raw, weak] : state_->sessions) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) net::dispatch(s->executor(), [s] { s->CloseIfIdle(); });
}

int64_t HttpServer::ActiveRequests() const { return state_->active.load(); }

void HttpServer::Stop() {
  if (state_->threads.empty()) return;
  StopAccepting();
  state_->work.reset();
  state_->ioc.stop();
  for (auto& t : state_->threads) t.join();
  state_->threads.clear();
}

}  // namespace pilotlight::http
