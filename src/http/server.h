// HttpServer: HTTP/1.1 with keep-alive on Boost.Beast, the only code that knows the HTTP
// library. Parses with limits (header bytes, body bytes), applies the read and keep-alive
// timeouts, hands each request to the Gateway and writes its answer; writes the one log line
// per request and records request metrics.
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
  std::string listen = "127.0.0.1:8080";  // HOST:PORT; port 0 picks a free one
  int threads = 0;                        // 0: one per core
  uint64_t max_body_bytes = 6 * 1024 * 1024;
  uint64_t max_header_bytes = 16 * 1024;
  Duration read_timeout = std::chrono::seconds(30);
  Duration idle_timeout = std::chrono::seconds(60);
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
