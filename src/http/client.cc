#include "http/client.h"

#include <curl/curl.h>

namespace pilotlight::http {
namespace {
size_t Collect(char* p, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(p, size * n);
  return size * n;
}
}  // namespace

StatusOr<ClientResponse> Get(const std::string& url, long timeout_seconds) {
  return Request("GET", url, "", {}, timeout_seconds);
}

StatusOr<ClientResponse> Post(const std::string& url, const std::string& body,
                              const std::vector<std::pair<std::string, std::string>>& headers, long timeout_seconds) {
  return Request("POST", url, body, headers, timeout_seconds);
}

StatusOr<ClientResponse> Request(const std::string& method, const std::string& url, const std::string& body,
                                 const std::vector<std::pair<std::string, std::string>>& headers,
                                 long timeout_seconds) {
  static const CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
  (void)init;
  CURL* curl = curl_easy_init();
  if (!curl) return InternalError("curl_easy_init failed");
  ClientResponse out;
  curl_slist* hdrs = nullptr;
  for (const auto& [k, v] : headers) hdrs = curl_slist_append(hdrs, (k + ": " + v).c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  if (method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out.body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout_seconds);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  CURLcode rc = curl_easy_perform(curl);
  if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out.status);
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) {
    return UnavailableError("cannot reach " + url + ": " + curl_easy_strerror(rc) +
                            " (is `pilotlight serve` running there? pass --url to point elsewhere)");
  }
  return out;
}

}  // namespace pilotlight::http
