#include "http/server.h"

#include <sys/resource.h>

#include <cerrno>

#include <array>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
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
  uint32_t connections = 0;                         // admitted sessions (under sessions_mu)
  std::unordered_map<std::string, int> per_client;  // admitted sessions per client address
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  tcp::acceptor acceptor{ioc};
  net::steady_timer accept_pause{ioc};
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
  Session(tcp::socket&& socket, HttpServer::State* server)
      : stream_(std::move(socket)), server_(server), timer_(stream_.get_executor()) {
    beast::error_code ec;  // once per connection, not per request
    auto remote = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) remote_addr_ = remote.address().to_string();
  }

  ~Session() {
    std::lock_guard<std::mutex> l(server_->sessions_mu);
    server_->sessions.erase(this);
    if (admitted_) {
      server_->connections--;
      auto it = server_->per_client.find(remote_addr_);
      if (it != server_->per_client.end() && --it->second <= 0) server_->per_client.erase(it);
    }
  }

  void Start() {
    int refuse = 0;
    {
      std::lock_guard<std::mutex> l(server_->sessions_mu);
      server_->sessions[this] = weak_from_this();
      const auto& o = server_->options;
      int& mine = server_->per_client[remote_addr_];
      if (server_->connections >= o.max_connections) {
        refuse = 503;
      } else if (static_cast<uint32_t>(mine) >= o.max_connections_per_client) {
        refuse = 429;
      } else {
        admitted_ = true;
        server_->connections++;
        mine++;
      }
      if (!admitted_ && mine == 0) server_->per_client.erase(remote_addr_);
    }
    beast::error_code ec;
    stream_.socket().set_option(tcp::no_delay(true), ec);
    if (refuse) {
      const auto& o = server_->options;
      return net::dispatch(stream_.get_executor(), [self = shared_from_this(), refuse, &o] {
        if (refuse == 503) {
          self->Refuse(503, "overloaded",
                       fmt::format("the server has {} open connections (server.max_connections); retry shortly",
                                   o.max_connections));
        } else {
          self->Refuse(429, "too_many_connections",
                       fmt::format("this client address has {} open connections "
                                   "(server.max_connections_per_client); reuse a keep-alive connection",
                                   o.max_connections_per_client));
        }
      });
    }
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
  // One deadline per phase, on the connection's strand. Expiry cancels the pending read; the
  // read's handler sees `timed_out_` and answers 408 (bytes of a request arrived) or closes.
  // (beast::tcp_stream's own expiry closes the socket, which leaves no way to answer 408.)
  void Arm(Duration d) {
    timed_out_ = false;
    timer_.expires_after(d);
    timer_.async_wait([self = shared_from_this(), gen = ++timer_gen_](beast::error_code ec) {
      if (ec || gen != self->timer_gen_) return;
      self->timed_out_ = true;
      beast::error_code ignored;
      self->stream_.socket().cancel(ignored);
    });
  }
  void Disarm() {
    ++timer_gen_;
    timer_.cancel();
  }

  void DoRead() {
    if (server_->stopping.load()) return Close();
    stream_.expires_never();
    parser_.emplace();
    head_scan_ = line_start_ = 0;
    // Beast's header_limit is a coarse guard; the exact limit is checked in OnHeader.
    parser_->header_limit(static_cast<uint32_t>(server_->options.max_header_bytes + 1024));
    parser_->body_limit(server_->options.max_body_bytes);
    parser_->on_chunk_header(on_chunk_header_);
    if (buffer_.size() > 0) {
      // A pipelined request: its bytes are here, time it from now.
      Arm(server_->options.request_timeout);
      return ReadHeader();
    }
    // Wait for the next request's first byte under the idle timeout (a new connection too),
    // then time the whole request from there.
    Arm(server_->options.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (ec || n == 0) {
        self->Disarm();
        return self->Close();
      }
      self->buffer_.commit(n);
      self->Arm(self->server_->options.request_timeout);
      self->ReadHeader();
    });
  }

  // Reads until the whole head (request line, fields, blank line) is buffered and checks its
  // bytes strictly before Beast parses it: Beast tolerates obs-fold, bare LF and leading
  // whitespace, each a way to make two HTTP parsers disagree about a request (smuggling).
  void ReadHeader() {
    std::string_view data(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    size_t end = std::string_view::npos;
    if (auto problem = ScanHead(data, &end); !problem.empty()) {
      return Refuse(400, "bad_request", "malformed HTTP request: " + problem);
    }
    if (end == std::string_view::npos) {
      if (data.size() > server_->options.max_header_bytes) {
        return Refuse(431, "headers_too_large",
                      fmt::format("the request line and headers exceed {} bytes (server.max_header_bytes)",
                                  server_->options.max_header_bytes));
      }
      return stream_.async_read_some(buffer_.prepare(8192),
                                     [self = shared_from_this()](beast::error_code ec, size_t n) {
                                       if (!ec && self->timed_out_) ec = net::error::operation_aborted;
                                       if (ec) return self->OnReadError(ec);
                                       self->buffer_.commit(n);
                                       self->ReadHeader();
                                     });
    }
    bhttp::async_read_header(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t n) {
      // The deadline may have fired while this completion was queued (its cancel then had
      // nothing to cancel): honour it here, or the rest of the request would have none.
      if (!ec && self->timed_out_) ec = net::error::operation_aborted;
      self->OnHeader(ec, n);
    });
  }

  // Checks the head's bytes strictly, each byte once across reads (head_scan_, line_start_):
  // "" when well-formed so far, else what is wrong. Sets *head_end past the blank line.
  std::string ScanHead(std::string_view data, size_t* head_end) {
    auto is_tchar = [](unsigned char c) {
      return std::isalnum(c) ||
             std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
    };
    for (size_t i = head_scan_; i < data.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(data[i]);
      if (c == 0) return "a NUL byte in the request head";
      if (c == '\r') {
        if (i + 1 == data.size()) {  // its LF may come with the next read
          head_scan_ = i;
          return "";
        }
        if (data[i + 1] != '\n') return "a bare CR";
        continue;
      }
      if (c != '\n') continue;
      if (i == 0 || data[i - 1] != '\r') return "a bare LF (lines end with CRLF)";
      std::string_view line = data.substr(line_start_, i - 1 - line_start_);
      bool first = line_start_ == 0;
      line_start_ = i + 1;
      if (first) {
        for (unsigned char x : line) {
          if (x < 0x20 || x >= 0x7f) return "a control or non-ASCII byte in the request line (percent-encode it)";
        }
        continue;
      }
      if (line.empty()) {  // the blank line ending the head
        *head_end = i + 1;
        head_scan_ = i + 1;
        return "";
      }
      if (line.front() == ' ' || line.front() == '\t') return "a header line starting with whitespace (obs-fold)";
      size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) return "a header line without a field name and ':'";
      for (unsigned char x : line.substr(0, colon)) {
        if (!is_tchar(x)) return "an invalid character in a header field name";
      }
      for (unsigned char x : line.substr(colon + 1)) {
        if ((x < 0x20 && x != '\t') || x == 0x7f) return "a control character in a header field value";
      }
    }
    head_scan_ = data.size();
    return "";
  }

  // `head_bytes` is exactly the request line + fields + blank line.
  void OnHeader(beast::error_code ec, size_t head_bytes) {
    if (ec) return OnReadError(ec);
    const auto& o = server_->options;
    auto& h = parser_->get();
    if (head_bytes > o.max_header_bytes) {
      return Refuse(
          431, "headers_too_large",
          fmt::format("the request line and headers exceed {} bytes (server.max_header_bytes)", o.max_header_bytes));
    }
    if (h.target().size() > o.max_uri_bytes) {
      return Refuse(414, "uri_too_long",
                    fmt::format("the request target exceeds {} bytes (server.max_uri_bytes)", o.max_uri_bytes));
    }
    size_t fields = 0;
    for (auto it = h.begin(); it != h.end(); ++it) ++fields;
    head_fields_ = fields;
    if (fields > o.max_header_fields) {
      return Refuse(431, "headers_too_large",
                    fmt::format("the request has {} header fields; at most {} are accepted "
                                "(server.max_header_fields)",
                                fields, o.max_header_fields));
    }
    // Framing that two parsers could read differently is refused, not guessed at.
    int te = 0, cl = 0, host = 0;
    for (const auto& f : h) {
      if (f.name() == bhttp::field::transfer_encoding) {
        ++te;
        if (!beast::iequals(f.value(), "chunked")) {
          return Refuse(400, "bad_request",
                        "Transfer-Encoding must be exactly 'chunked' (no other codings are accepted)");
        }
      } else if (f.name() == bhttp::field::content_length) {
        ++cl;
        if (f.value().empty() || f.value().find_first_not_of("0123456789") != beast::string_view::npos) {
          return Refuse(400, "bad_request", "Content-Length must be one decimal number");
        }
      } else if (f.name() == bhttp::field::host) {
        ++host;
        if (f.value().find_first_of(" \t") != beast::string_view::npos) {
          return Refuse(400, "bad_request", "the Host header holds whitespace");
        }
      }
    }
    if (te > 1) return Refuse(400, "bad_request", "more than one Transfer-Encoding header");
    if (te && cl) return Refuse(400, "bad_request", "both Transfer-Encoding and Content-Length (request smuggling?)");
    if (cl > 1) return Refuse(400, "bad_request", "more than one Content-Length header");
    if (host > 1) return Refuse(400, "bad_request", "more than one Host header");
    if (h.version() != 10 && h.version() != 11) {
      return Refuse(505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served");
    }
    busy_ = true;
    start_ = std::chrono::steady_clock::now();
    if (parser_->is_done()) {
      Disarm();
      return OnRequest();
    }
    // flat_buffer reads at most its spare capacity per call and starts small: without this a
    // large body arrives in ~512-byte reads (a 250 KB tensor took ~2 ms instead of ~0.2 ms).
    uint64_t expect = parser_->content_length().value_or(64 * 1024);
    buffer_.reserve(static_cast<size_t>(std::min<uint64_t>(expect, 1 << 20)) + 512);
    if (parser_->chunked()) return ReadChunked();
    bhttp::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (!ec && self->timed_out_) ec = net::error::operation_aborted;
      if (ec) return self->OnReadError(ec);
      self->Disarm();
      self->OnRequest();
    });
  }

  // A chunked body, fed to the parser by hand so the framing can be checked between reads:
  // Beast consumes chunk data as it arrives, so bytes it leaves unconsumed are a partial chunk
  // line, and a bare LF there is a framing error (Beast would wait for a CRLF forever).
  void ReadChunked() {
    while (buffer_.size() > 0 && !parser_->is_done()) {
      beast::error_code ec;
      size_t n = parser_->put(buffer_.data(), ec);
      if (ec == bhttp::error::need_more) break;
      if (ec) return OnReadError(ec);
      buffer_.consume(n);
      if (n == 0) break;
    }
    if (parser_->is_done()) {
      Disarm();
      return OnRequest();
    }
    std::string_view pending(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    for (size_t i = pending.find('\n'); i != std::string_view::npos; i = pending.find('\n', i + 1)) {
      if (i == 0 || pending[i - 1] != '\r') {
        return Refuse(400, "bad_request", "malformed HTTP request: a chunk line ends in a bare LF (use CRLF)");
      }
    }
    if (pending.size() > 4096) return Refuse(400, "bad_request", "malformed HTTP request: a chunk line is too long");
    stream_.async_read_some(buffer_.prepare(std::max<size_t>(16384, buffer_.capacity() - buffer_.size())),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (!ec && self->timed_out_) ec = net::error::operation_aborted;
                              if (ec) {
                                if (ec == net::error::eof) ec = bhttp::error::partial_message;
                                return self->OnReadError(ec);
                              }
                              self->buffer_.commit(n);
                              self->ReadChunked();
                            });
  }

  void OnReadError(beast::error_code ec) {
    if (timed_out_ && ec == net::error::operation_aborted) {
      // The request did not arrive in time. Bytes of it arrived: tell the client; none: close.
      if (parser_ && (parser_->got_some() || buffer_.size() > 0)) {
        return Refuse(
            408, "request_timeout",
            fmt::format(
                "the whole request must arrive within {} ms of its first byte "
                "(server.request_timeout)",
                std::chrono::duration_cast<std::chrono::milliseconds>(server_->options.request_timeout).count()));
      }
      return Close();
    }
    Disarm();
    if (ec == bhttp::error::partial_message || ((ec == bhttp::error::end_of_stream || ec == net::error::eof) &&
                                                parser_ && (parser_->got_some() || buffer_.size() > 0))) {
      // The client stopped sending mid-request (it may still read): say so, then close.
      return Refuse(400, "bad_request", "the connection ended before the whole request arrived");
    }
    if (ec == bhttp::error::end_of_stream || ec == net::error::operation_aborted || ec == beast::error::timeout ||
        ec == net::error::connection_reset || ec == net::error::eof) {
      return Close();
    }
    // A malformed or oversized request: answer with a typed error, then close (the byte
    // stream can no longer be trusted to be in sync).
    int status;
    std::string_view type = ReasonFor(ec, &status);
    std::string message = status == 413   ? fmt::format("the request body exceeds {} bytes (server.max_body_bytes)",
                                                        server_->options.max_body_bytes)
                          : status == 431 ? fmt::format(
                                                "the request line and headers exceed {} bytes "
                                                "(server.max_header_bytes)",
                                                server_->options.max_header_bytes)
                                          : "malformed HTTP request: " + ec.message();
    Refuse(status, type, message);
  }

  // Answers a request that will not be served, then closes the connection (after reading and
  // discarding what the client still sends, so it sees the answer rather than a reset).
  void Refuse(int status, std::string_view type, const std::string& message) {
    Disarm();
    gateway::Response r;
    // The headers may have been read (body too large): echo the client's id when it sent one.
    std::string rid;
    if (parser_ && parser_->is_header_done()) {
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
    std::string method = "-", target = "-";
    if (parser_ && parser_->is_header_done()) {
      method = std::string(parser_->get().method_string());
      target = std::string(parser_->get().target().substr(0, 256));
    }
    Write(std::move(r), method, target);
  }

  void OnRequest() {
    server_->active++;
    read_done_ = std::chrono::steady_clock::now();
    auto& req = parser_->get();
    gateway::Request greq;
    greq.method = std::string(req.method_string());
    greq.target = std::string(req.target());
    // Views into the parser's fields: valid while Handle() runs (it copies what it keeps).
    // Only the head's fields: Beast appends chunked trailer fields after them, and those passed
    // none of the head's checks (a trailer must not supply X-Api-Key or Origin) — ignored.
    greq.headers.reserve(8);
    size_t n = 0;
    for (const auto& f : req) {
      if (n++ == head_fields_) break;
      if (greq.x_request_id.empty() && beast::iequals(f.name_string(), "X-Request-Id")) {
        greq.x_request_id = std::string(f.value());
      } else if (greq.x_model.empty() && beast::iequals(f.name_string(), "X-Model")) {
        greq.x_model = std::string(f.value());
      } else if (greq.content_type.empty() && f.name() == bhttp::field::content_type) {
        greq.content_type = std::string(f.value());
      }
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
    res_->keep_alive(keep);
    try {
      // Beast throws on a field over 64 KiB; a handler chooses some of these.
      if (!r.content_type.empty()) res_->set(bhttp::field::content_type, r.content_type);
      if (!r.log.request_id.empty()) res_->set("X-Request-Id", r.log.request_id);
      for (auto& [k, v] : r.headers) res_->insert(k, v);  // insert: Set-Cookie may repeat
      if (method != "HEAD") {
        res_->body() = std::move(r.body);
        res_->prepare_payload();
      } else {
        res_->prepare_payload();
        if (r.status != 204 && r.status != 304 && r.status >= 200) res_->content_length(r.body.size());
      }
    } catch (const std::exception& e) {  // a body on a 204, a header over 64 KiB: answer 502, never crash
      res_.emplace(bhttp::status::bad_gateway, version_ ? version_ : 11);
      res_->set(bhttp::field::server, "pilotlight");
      if (!r.log.request_id.empty()) res_->set("X-Request-Id", r.log.request_id);
      res_->keep_alive(keep);
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
      stream_.expires_after(std::max<Duration>(server_->options.request_timeout, std::chrono::seconds(30)));
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
  net::steady_timer timer_;
  // Chunk extensions are ignored, but Beast buffers them: cap them (a memory DoS otherwise).
  std::function<void(uint64_t, beast::string_view, beast::error_code&)> on_chunk_header_ =
      [](uint64_t, beast::string_view ext, beast::error_code& ec) {
        if (ext.size() > 1024) ec = bhttp::error::bad_chunk_extension;
      };
  uint64_t timer_gen_ = 0;
  size_t head_fields_ = 0;  // fields in the head (chunked trailers come after them)
  size_t head_scan_ = 0;    // head bytes checked so far (ScanHead)
  size_t line_start_ = 0;   // start of the head line being read
  bool timed_out_ = false;
  bool admitted_ = false;
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
      if (ec == net::error::no_descriptors || ec.value() == ENFILE) {
        // Out of file descriptors: accepting again at once would spin. Pause, and say so once
        // per pause (the pending connection waits in the backlog meanwhile).
        LogLine(spdlog::level::warn, "out of file descriptors; accepting again in 100 ms")
            .Str("hint", "raise the open-files limit (ulimit -n) or lower server.max_connections");
        accept_pause.expires_after(std::chrono::milliseconds(100));
        accept_pause.async_wait([this](beast::error_code) {
          if (!stopping.load()) Accept();
        });
        return;
      }
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
  // Each connection is a descriptor: take the hard open-files limit (often 1,024 soft), so
  // server.max_connections, not EMFILE, is what turns connections away.
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
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
