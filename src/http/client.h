// A small blocking HTTP client on libcurl, for the CLI (`pilotlight invoke`).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace pilotlight::http {

struct ClientResponse {
  long status = 0;
  std::string body;
};

// Unavailable when the server cannot be reached (with curl's reason and what to check).
StatusOr<ClientResponse> Post(const std::string& url, const std::string& body,
                              const std::vector<std::pair<std::string, std::string>>& headers,
                              long timeout_seconds = 300);
StatusOr<ClientResponse> Get(const std::string& url, long timeout_seconds = 60);
StatusOr<ClientResponse> Request(const std::string& method, const std::string& url, const std::string& body,
                                 const std::vector<std::pair<std::string, std::string>>& headers, long timeout_seconds);

}  // namespace pilotlight::http
