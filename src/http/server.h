// HttpServer: HTTP/1.1 with keep-alive on Boost.Beast, the only code that knows the HTTP
// library. Parses with limits (header bytes and fields, URI, body), bounds the time to receive
// a whole request from its first byte (a slow client cannot hold a connection by trickling
// bytes) and the keep-alive idle time, caps connections in total and per client address, hands
// each request to the Gateway and writes its answer; writes the one log line per request and
// records request metrics. Refusals are typed JSON errors (408, 413, 414, 429, 431, 503).
//
// Threads: `threads` I/O threads run one io_context; each connection is a strand, so one
// connection's handlers never run concurrently. The gateway may answer from any thread; the
// answer is dispatched back onto the connection's strand.
// Lifecycle: Listen() → Start() → StopAccepting() (drain) → Stop().
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "gateway/gateway.h"

namespace pilotlight::http {

struct HttpOptions {
  std::string listen = "127.0.0.1:8080";                // HOST:PORT; port 0 picks a free one
  int threads = 0;                                      // 0: one per core
  uint64_t max_body_bytes = 6 * 1024 * 1024;            // 413 above it
  uint64_t max_header_bytes = 60 * 1024;                // request line + fields + blank line; 431 above it
  uint32_t max_header_fields = 100;                     // 431 above it
  uint32_t max_uri_bytes = 8 * 1024;                    // request target; 414 above it
  Duration request_timeout = std::chrono::seconds(10);  // first byte → whole request; 408 after it
  Duration idle_timeout = std::chrono::seconds(60);     // keep-alive wait for the next request
  uint32_t max_connections = 1024;                      // in total; 503 to the next one
  uint32_t max_connections_per_client = 256;            // per client IP address; 429 to the next one
};

class HttpServer {
 public:
  HttpServer(HttpOptions options, gateway::Gateway* gateway);
  ~HttpServer();

  // Binds and listens. InvalidArgument for a bad address, Unavailable if the port is taken.
  Status Listen();
  uint16_t port() const;
  void Start();
  // Stops accepting; idle keep-alive connections are closed, busy ones after their response.
  void StopAccepting();
  // Requests received and not yet answered.
  int64_t ActiveRequests() const;
  void Stop();

  struct State;  // implementation (Beast types), public so connection objects can reach it

 private:
  std::unique_ptr<State> state_;
};

}  // namespace pilotlight::http
