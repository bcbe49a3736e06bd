#include "store/s3_client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <pugixml.hpp>

#include "common/logging.h"
#include "common/sha256.h"

namespace pilotlight::store {
namespace {

constexpr const char* kEmptySha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The AWS shared files are INI with an AWS twist (indented sub-keys under "s3 ="); we read
// only top-level `key = value` pairs per section, which is all we need.
using Ini = std::map<std::string, std::map<std::string, std::string>>;
Ini ReadIni(const std::string& path) {
  Ini out;
  std::ifstream in(path);
  std::string line, section;
  while (std::getline(in, line)) {
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) continue;  // nested sub-key
    std::string t = Trim(line);
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    if (t.front() == '[' && t.back() == ']') {
      section = Trim(t.substr(1, t.size() - 2));
      continue;
    }
    auto eq = t.find('=');
    if (eq == std::string::npos || section.empty()) continue;
    out[section][Lower(Trim(t.substr(0, eq)))] = Trim(t.substr(eq + 1));
  }
  return out;
}

std::string HomeFile(const EnvLookup& env, const char* var, const char* rel) {
  if (const char* v = env(var); v && *v) return v;
  const char* home = env("HOME");
  return std::string(home && *home ? home : ".") + "/.aws/" + rel;
}

std::string EnvOr(const EnvLookup& env, const char* name) {
  const char* v = env(name);
  return v ? std::string(v) : std::string();
}

// S3 error documents: <Error><Code>NoSuchKey</Code><Message>...</Message></Error>.
std::pair<std::string, std::string> ParseError(const std::string& body) {
  pugi::xml_document doc;
  if (body.empty() || !doc.load_string(body.c_str())) return {"", ""};
  auto e = doc.child("Error");
  return {e.child_value("Code"), e.child_value("Message")};
}

struct HeaderSink {
  std::string etag, last_modified, content_range, bucket_region;
  uint64_t content_length = 0;
  bool has_length = false;
  void Clear() { *this = HeaderSink{}; }
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* h = static_cast<HeaderSink*>(user);
  std::string_view line(data, size * n);
  // A new status line (after a 100 Continue or redirect) resets what we collected.
  if (line.rfind("HTTP/", 0) == 0) {
    h->Clear();
    return size * n;
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string name = Lower(std::string(line.substr(0, colon)));
  std::string value = Trim(line.substr(colon + 1));
  if (name == "etag") h->etag = value;
  if (name == "last-modified") h->last_modified = value;
  if (name == "content-range") h->content_range = value;
  if (name == "x-amz-bucket-region") h->bucket_region = value;
  if (name == "content-length") {
    h->content_length = std::strtoull(value.c_str(), nullptr, 10);
    h->has_length = true;
  }
  return size * n;
}

// Where a response body goes: memory, or a file descriptor (downloads), hashing as it goes.
struct BodySink {
  CURL* curl = nullptr;
  std::string memory;
  int fd = -1;
  Sha256Hasher* hasher = nullptr;
  uint64_t* have = nullptr;  // bytes in the file so far (resume offset)
  bool decided = false;
  bool to_file = false;
  bool io_error = false;
  ProgressFn progress;
  uint64_t total = 0;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<BodySink*>(user);
  size_t len = size * n;
  if (!s->decided) {
    s->decided = true;
    long code = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
    s->to_file = s->fd >= 0 && (code == 200 || code == 206);
    curl_off_t remaining = -1;
    curl_easy_getinfo(s->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &remaining);
    if (s->to_file && code == 200 && *s->have > 0) {
      // The server ignored our Range: start the file over.
      if (::ftruncate(s->fd, 0) != 0 || ::lseek(s->fd, 0, SEEK_SET) != 0) {
        s->io_error = true;
        return 0;
      }
      *s->have = 0;
      s->hasher->Reset();
    }
    if (s->to_file) s->total = *s->have + static_cast<uint64_t>(std::max<curl_off_t>(remaining, 0));
  }
  if (!s->to_file) {
    if (s->memory.size() + len > (64u << 20)) return 0;  // an error body or document this big is not one
    s->memory.append(data, len);
    return len;
  }
  size_t off = 0;
  while (off < len) {
    ssize_t w = ::write(s->fd, data + off, len - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      s->io_error = true;
      return 0;
    }
    off += static_cast<size_t>(w);
  }
  s->hasher->Update(std::string_view(data, len));
  *s->have += len;
  if (s->progress) s->progress(*s->have, s->total);
  return len;
}

// Request body: memory or a slice of a file (read with pread, so retries can rewind).
struct BodySource {
  std::string_view memory;
  int fd = -1;
  uint64_t offset = 0, length = 0, pos = 0;
  ProgressFn progress;
  uint64_t progress_base = 0, progress_total = 0;
};

size_t OnRead(char* buf, size_t size, size_t n, void* user) {
  auto* s = static_cast<BodySource*>(user);
  size_t want = std::min<uint64_t>(size * n, s->length - s->pos);
  if (want == 0) return 0;
  if (s->fd >= 0) {
    ssize_t r = ::pread(s->fd, buf, want, static_cast<off_t>(s->offset + s->pos));
    if (r <= 0) return CURL_READFUNC_ABORT;
    want = static_cast<size_t>(r);
  } else {
    std::memcpy(buf, s->memory.data() + s->pos, want);
  }
  s->pos += want;
  if (s->progress) s->progress(s->progress_base + s->pos, s->progress_total);
  return want;
}

int OnSeek(void* user, curl_off_t offset, int origin) {
  auto* s = static_cast<BodySource*>(user);
  if (origin != SEEK_SET || offset < 0 || static_cast<uint64_t>(offset) > s->length) return CURL_SEEKFUNC_FAIL;
  s->pos = static_cast<uint64_t>(offset);
  return CURL_SEEKFUNC_OK;
}

struct Request {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;
  bool has_body = false;
  BodySource body;
  std::string payload_sha = kEmptySha;
  BodySink* sink = nullptr;  // null: memory
};

struct Response {
  CURLcode rc = CURLE_OK;
  long status = 0;
  std::string body;
  HeaderSink headers;
  std::string curl_error;
  bool io_error = false;
};

bool Retryable(const Response& r) {
  if (r.io_error) return false;
  if (r.rc != CURLE_OK) {
    switch (r.rc) {
      case CURLE_URL_MALFORMAT:
      case CURLE_UNSUPPORTED_PROTOCOL:
      case CURLE_SSL_CACERT_BADFILE:
      case CURLE_PEER_FAILED_VERIFICATION:
      case CURLE_ABORTED_BY_CALLBACK:
        return false;
      default:
        return true;
    }
  }
  if (r.status == 500 || r.status == 502 || r.status == 503 || r.status == 504 || r.status == 429) return true;
  if (r.status == 400 && r.body.find("RequestTimeout") != std::string::npos) return true;
  return false;
}

// Exponential backoff with jitter before retry number `attempt` (0-based); plain URLs (no
// options) use a 200 ms base.
void Backoff(const S3Options* o, int attempt) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  Duration retry_base = o ? o->retry_base : std::chrono::milliseconds(200);
  double base = static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(retry_base).count());
  double d = std::min(base * static_cast<double>(1 << std::min(attempt, 10)), 5e6);
  std::uniform_real_distribution<double> jitter(0.5, 1.5);
  std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(d * jitter(rng))));
}

std::string Describe(const Response& r) {
  if (r.rc != CURLE_OK) return fmt::format("{} ({})", curl_easy_strerror(r.rc), r.curl_error);
  auto [code, message] = ParseError(r.body);
  if (!code.empty()) return fmt::format("HTTP {} {}: {}", r.status, code, message);
  return fmt::format("HTTP {}", r.status);
}

}  // namespace

std::string UriEncode(std::string_view s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

StatusOr<S3Options> ResolveS3Options(const std::string& bucket, const S3Settings& s, const EnvLookup& env) {
  S3Options o;
  o.bucket = bucket;
  o.multipart_threshold = s.multipart_threshold;
  o.part_size = std::max<uint64_t>(s.part_size, uint64_t{5} << 20);  // S3's minimum part size
  std::string profile = !s.profile.empty() ? s.profile : EnvOr(env, "AWS_PROFILE");
  if (profile.empty()) profile = "default";
  std::string cred_file = HomeFile(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials");
  std::string conf_file = HomeFile(env, "AWS_CONFIG_FILE", "config");
  Ini creds = ReadIni(cred_file);
  Ini conf = ReadIni(conf_file);
  // In ~/.aws/config, profiles other than default are "[profile NAME]".
  const std::map<std::string, std::string>* pconf = nullptr;
  if (auto it = conf.find(profile == "default" ? "default" : "profile " + profile); it != conf.end()) {
    pconf = &it->second;
  } else if (auto it2 = conf.find(profile); it2 != conf.end()) {
    pconf = &it2->second;
  }
  auto conf_value = [&](const char* key) -> std::string {
    if (!pconf) return "";
    auto it = pconf->find(key);
    return it == pconf->end() ? "" : it->second;
  };
  auto from_profile = [&]() -> bool {
    auto it = creds.find(profile);
    const std::map<std::string, std::string>* sec = it != creds.end() ? &it->second : pconf;
    if (!sec) return false;
    auto get = [&](const char* k) {
      auto i = sec->find(k);
      return i == sec->end() ? std::string() : i->second;
    };
    if (get("aws_access_key_id").empty()) return false;
    o.access_key_id = get("aws_access_key_id");
    o.secret_access_key = get("aws_secret_access_key");
    o.session_token = get("aws_session_token");
    o.credentials_source = "profile '" + profile + "' in " + (it != creds.end() ? cred_file : conf_file);
    return true;
  };

  if (!s.profile.empty()) {
    if (!from_profile()) {
      return InvalidArgumentError("s3.profile '" + s.profile + "' has no aws_access_key_id in " + cred_file + " or " +
                                  conf_file);
    }
  } else if (!EnvOr(env, "AWS_ACCESS_KEY_ID").empty()) {
    o.access_key_id = EnvOr(env, "AWS_ACCESS_KEY_ID");
    o.secret_access_key = EnvOr(env, "AWS_SECRET_ACCESS_KEY");
    o.session_token = EnvOr(env, "AWS_SESSION_TOKEN");
    o.credentials_source = "environment (AWS_ACCESS_KEY_ID)";
    if (o.secret_access_key.empty()) {
      return InvalidArgumentError("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
    }
  } else if (!from_profile()) {
    o.credentials_source = "none (anonymous requests)";
  }

  o.region = s.region;
  if (o.region.empty()) o.region = EnvOr(env, "AWS_REGION");
  if (o.region.empty()) o.region = EnvOr(env, "AWS_DEFAULT_REGION");
  if (o.region.empty()) o.region = conf_value("region");
  if (o.region.empty()) o.region = "us-east-1";

  std::string endpoint = s.endpoint;
  if (endpoint.empty()) endpoint = EnvOr(env, "AWS_ENDPOINT_URL_S3");
  if (endpoint.empty()) endpoint = EnvOr(env, "AWS_ENDPOINT_URL");
  if (endpoint.empty()) endpoint = conf_value("endpoint_url");
  bool custom = !endpoint.empty();
  if (!custom) endpoint = "https://s3." + o.region + ".amazonaws.com";
  if (endpoint.find("://") == std::string::npos) endpoint = "https://" + endpoint;
  if (endpoint.rfind("http://", 0) != 0 && endpoint.rfind("https://", 0) != 0) {
    return InvalidArgumentError("s3 endpoint '" + endpoint + "' must start with http:// or https://");
  }
  while (endpoint.size() > 8 && endpoint.back() == '/') endpoint.pop_back();
  o.endpoint = endpoint;
  // Buckets with dots break TLS names under virtual hosting; custom endpoints (MinIO, Ceph,
  // localhost) usually cannot resolve bucket subdomains.
  o.path_style = s.path_style.value_or(custom || bucket.find('.') != std::string::npos);
  return o;
}

// A small pool of easy handles so connections (and TLS sessions) are reused between requests.
struct S3Client::Impl {
  std::mutex mu;
  std::vector<CURL*> idle;
  ~Impl() {
    for (CURL* c : idle) curl_easy_cleanup(c);
  }
  CURL* Take() {
    {
      std::lock_guard<std::mutex> l(mu);
      if (!idle.empty()) {
        CURL* c = idle.back();
        idle.pop_back();
        curl_easy_reset(c);
        return c;
      }
    }
    return curl_easy_init();
  }
  void Give(CURL* c) {
    std::lock_guard<std::mutex> l(mu);
    if (idle.size() < 8) {
      idle.push_back(c);
    } else {
      curl_easy_cleanup(c);
    }
  }
};

namespace {

Response Perform(CURL* c, const S3Options* o, Request& req) {
  Response resp;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, o ? o->connect_timeout_ms : 10000L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o ? o->low_speed_time_s : 30L);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &resp.headers);
  BodySink memory_sink;
  BodySink* sink = req.sink ? req.sink : &memory_sink;
  sink->curl = c;
  sink->decided = false;
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
  curl_slist* headers = nullptr;
  std::vector<std::string> hs = req.headers;
  if (o) hs.insert(hs.end(), o->extra_headers.begin(), o->extra_headers.end());
  if (o && !o->access_key_id.empty()) {
    hs.push_back("x-amz-content-sha256: " + req.payload_sha);
    if (!o->session_token.empty()) hs.push_back("x-amz-security-token: " + o->session_token);
    if (!o->fixed_amz_date.empty()) hs.push_back("x-amz-date: " + o->fixed_amz_date);
    std::string provider = "aws:amz:" + o->region + ":s3";
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, provider.c_str());
    curl_easy_setopt(c, CURLOPT_USERNAME, o->access_key_id.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, o->secret_access_key.c_str());
  }
  curl_slist* connect_to = nullptr;
  if (o && !o->connect_to.empty()) {
    connect_to = curl_slist_append(nullptr, o->connect_to.c_str());
    curl_easy_setopt(c, CURLOPT_CONNECT_TO, connect_to);
  }
  if (!o) curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);  // plain URLs may redirect (S3 ones must not)
  req.body.pos = 0;
  if (req.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (req.method == "PUT") {
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(c, CURLOPT_READDATA, &req.body);
    curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, OnSeek);
    curl_easy_setopt(c, CURLOPT_SEEKDATA, &req.body);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(req.body.length));
  } else if (req.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(c, CURLOPT_READDATA, &req.body);
    curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, OnSeek);
    curl_easy_setopt(c, CURLOPT_SEEKDATA, &req.body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.length));
  } else if (req.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }
  for (const auto& h : hs) headers = curl_slist_append(headers, h.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  resp.rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.status);
  curl_slist_free_all(headers);
  curl_slist_free_all(connect_to);
  resp.curl_error = errbuf;
  resp.io_error = sink->io_error;
  if (!sink->to_file) resp.body = std::move(sink->memory);
  sink->memory.clear();
  return resp;
}

Status ErrorFor(const Response& r, const std::string& what, const S3Options* o) {
  std::string detail = Describe(r);
  if (r.io_error) return InternalError("writing " + what + " to local disk failed (disk full?)");
  if (r.rc != CURLE_OK || r.status >= 500 || r.status == 429) {
    return UnavailableError("cannot reach " + what + ": " + detail + (o ? " (endpoint " + o->endpoint + ")" : "") +
                            "; retried with backoff");
  }
  auto [code, message] = ParseError(r.body);
  if (r.status == 404) {
    if (code == "NoSuchBucket") return NotFoundError("bucket of " + what + " does not exist: " + detail);
    return NotFoundError(what + " does not exist");
  }
  if (r.status == 412) return AbortedError(what + " changed since it was read (precondition failed)");
  if (r.status == 401 || r.status == 403) {
    return FailedPreconditionError("access to " + what + " denied: " + detail + "; credentials from " +
                                   (o ? o->credentials_source : std::string("none")) +
                                   " — check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the profile and the region");
  }
  if (r.status == 301 || r.status == 307 || code == "AuthorizationHeaderMalformed" || code == "PermanentRedirect") {
    return FailedPreconditionError(
        what + ": wrong region or endpoint (" + detail + ")" +
        (r.headers.bucket_region.empty() ? "" : "; the bucket is in " + r.headers.bucket_region + ": set s3.region"));
  }
  return FailedPreconditionError(what + ": " + detail);
}

// One attempt on a pooled handle (its connection is kept for the next request).
Response PerformOnce(S3Client::Impl* impl, const S3Options* o, Request& req) {
  CURL* c = impl->Take();
  Response r = Perform(c, o, req);
  impl->Give(c);
  return r;
}

// Runs `req` with retries; the result of the last attempt.
Response WithRetries(S3Client::Impl* impl, const S3Options* o, Request& req, int max_attempts) {
  Response r;
  for (int attempt = 0; attempt < max_attempts; ++attempt) {
    if (attempt > 0) Backoff(o, attempt - 1);
    r = PerformOnce(impl, o, req);
    if (!Retryable(r)) break;
    LogLine(spdlog::level::warn, "object store request failed; retrying")
        .Str("method", req.method)
        .Str("url", req.url)
        .Str("error", Describe(r))
        .Int("attempt", attempt + 1);
  }
  return r;
}

ObjectInfo InfoFrom(const Response& r) {
  ObjectInfo info;
  info.status = r.status;
  info.etag = r.headers.etag;
  info.last_modified = r.headers.last_modified;
  info.size = r.headers.content_length;
  // "bytes 0-9/443" → 443
  if (auto slash = r.headers.content_range.rfind('/'); slash != std::string::npos) {
    info.size = std::strtoull(r.headers.content_range.c_str() + slash + 1, nullptr, 10);
  }
  info.body = r.body;
  return info;
}

// Streams into dest with resume. `o` null for unsigned plain URLs.
StatusOr<ObjectInfo> DownloadImpl(S3Client::Impl* impl, const S3Options* o, const std::string& url,
                                  const std::string& what, const std::string& dest, const Conditions& c,
                                  const ProgressFn& progress, int max_attempts) {
  int fd = ::open(dest.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return InternalError("cannot create " + dest + ": " + std::strerror(errno));
  Sha256Hasher hasher;
  uint64_t have = 0;
  std::string etag;
  Response r;
  for (int attempt = 0; attempt < max_attempts; ++attempt) {
    if (attempt > 0) Backoff(o, attempt - 1);
    Request req;
    req.url = url;
    if (have > 0 && !etag.empty()) {
      req.headers.push_back(fmt::format("Range: bytes={}-", have));
      req.headers.push_back("If-Match: " + etag);
    } else {
      if (have > 0) {  // nothing to pin a resume to: start over
        if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0) break;
        have = 0;
        hasher.Reset();
      }
      if (!c.if_none_match.empty()) req.headers.push_back("If-None-Match: " + c.if_none_match);
      if (!c.if_match.empty()) req.headers.push_back("If-Match: " + c.if_match);
    }
    BodySink sink;
    sink.fd = fd;
    sink.hasher = &hasher;
    sink.have = &have;
    sink.progress = progress;
    req.sink = &sink;
    r = PerformOnce(impl, o, req);
    if (!r.headers.etag.empty() && (r.status == 200 || r.status == 206)) etag = r.headers.etag;
    if (r.rc == CURLE_OK && (r.status == 200 || r.status == 206)) {
      ObjectInfo info = InfoFrom(r);
      info.etag = etag;
      if (r.status == 206 && info.size != have) {
        // A short 206 (the server sent part of what was asked): ask for the rest.
        continue;
      }
      if (r.status == 200 && r.headers.has_length && r.headers.content_length != have) continue;
      if (::fsync(fd) != 0) {
        ::close(fd);
        return InternalError("fsync " + dest + ": " + std::strerror(errno));
      }
      ::close(fd);
      info.size = have;
      info.sha256 = hasher.HexDigest();
      info.body.clear();
      return info;
    }
    if (r.rc == CURLE_OK && r.status == 304) {
      ::close(fd);
      return InfoFrom(r);
    }
    if (r.rc == CURLE_OK && r.status == 412 && have > 0) {
      // The object changed under a resumed download: start over against the new one.
      etag.clear();
      continue;
    }
    if (!Retryable(r)) break;
    LogLine(spdlog::level::warn, "download interrupted; resuming")
        .Str("object", what)
        .Str("error", Describe(r))
        .Int("have_bytes", static_cast<int64_t>(have))
        .Int("attempt", attempt + 1);
  }
  ::close(fd);
  return ErrorFor(r, what, o);
}

}  // namespace

S3Client::S3Client(S3Options options) : options_(std::move(options)), impl_(std::make_unique<Impl>()) { GlobalInit(); }

S3Client::~S3Client() = default;

std::string S3Client::Url(const std::string& key, const std::string& query) const {
  std::string url;
  if (options_.path_style) {
    url = options_.endpoint + "/" + UriEncode(options_.bucket, false);
    if (!key.empty()) url += "/" + UriEncode(key, true);
  } else {
    auto scheme_end = options_.endpoint.find("://") + 3;
    url = options_.endpoint.substr(0, scheme_end) + options_.bucket + "." + options_.endpoint.substr(scheme_end) + "/" +
          UriEncode(key, true);
  }
  if (!query.empty()) url += "?" + query;
  return url;
}

StatusOr<ObjectInfo> S3Client::Get(const std::string& key, const Conditions& c) {
  Request req;
  req.url = Url(key);
  if (!c.if_none_match.empty()) req.headers.push_back("If-None-Match: " + c.if_none_match);
  if (!c.if_match.empty()) req.headers.push_back("If-Match: " + c.if_match);
  Response r = WithRetries(impl_.get(), &options_, req, options_.max_attempts);
  if (r.rc == CURLE_OK && (r.status == 200 || r.status == 304)) return InfoFrom(r);
  return ErrorFor(r, Describe(key), &options_);
}

StatusOr<ObjectInfo> S3Client::Head(const std::string& key) {
  Request req;
  req.method = "HEAD";
  req.url = Url(key);
  Response r = WithRetries(impl_.get(), &options_, req, options_.max_attempts);
  if (r.rc == CURLE_OK && r.status == 200) return InfoFrom(r);
  return ErrorFor(r, Describe(key), &options_);
}

StatusOr<ObjectInfo> S3Client::Put(const std::string& key, std::string_view body, const Conditions& c) {
  Request req;
  req.method = "PUT";
  req.url = Url(key);
  req.has_body = true;
  req.body.memory = body;
  req.body.length = body.size();
  req.payload_sha = Sha256Hex(body);
  if (!c.if_match.empty()) req.headers.push_back("If-Match: " + c.if_match);
  if (!c.if_none_match.empty()) req.headers.push_back("If-None-Match: " + c.if_none_match);
  Response r = WithRetries(impl_.get(), &options_, req, options_.max_attempts);
  if (r.rc == CURLE_OK && r.status == 200) return InfoFrom(r);
  if (r.status == 409 && r.body.find("ConditionalRequestConflict") != std::string::npos) {
    return AbortedError(Describe(key) + " was written concurrently by another client (409)");
  }
  return ErrorFor(r, Describe(key), &options_);
}

namespace {
StatusOr<std::string> Sha256Slice(int fd, uint64_t offset, uint64_t length) {
  Sha256Hasher h;
  std::vector<char> buf(1 << 20);
  uint64_t done = 0;
  while (done < length) {
    ssize_t r =
        ::pread(fd, buf.data(), std::min<uint64_t>(buf.size(), length - done), static_cast<off_t>(offset + done));
    if (r <= 0) return DataLossError("short read while hashing an upload");
    h.Update(std::string_view(buf.data(), static_cast<size_t>(r)));
    done += static_cast<uint64_t>(r);
  }
  return h.HexDigest();
}
}  // namespace

StatusOr<ObjectInfo> S3Client::PutFile(const std::string& key, const std::string& path, const ProgressFn& progress) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFoundError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  std::string what = Describe(key);

  if (size <= options_.multipart_threshold) {
    Request req;
    req.method = "PUT";
    req.url = Url(key);
    req.body.fd = fd;
    req.body.length = size;
    req.body.progress = progress;
    req.body.progress_total = size;
    PL_ASSIGN_OR_RETURN(req.payload_sha, Sha256Slice(fd, 0, size));
    Response r = WithRetries(impl_.get(), &options_, req, options_.max_attempts);
    if (r.rc == CURLE_OK && r.status == 200) return InfoFrom(r);
    return ErrorFor(r, what, &options_);
  }

  // Multipart: initiate, upload parts (each retried on its own), complete; abort on failure.
  Request init;
  init.method = "POST";
  init.url = Url(key, "uploads=");
  Response r = WithRetries(impl_.get(), &options_, init, options_.max_attempts);
  if (r.rc != CURLE_OK || r.status != 200) return ErrorFor(r, what + " (initiate multipart upload)", &options_);
  pugi::xml_document doc;
  doc.load_string(r.body.c_str());
  std::string upload_id = doc.child("InitiateMultipartUploadResult").child_value("UploadId");
  if (upload_id.empty()) return UnavailableError(what + ": the store returned no UploadId");
  std::string id_q = "uploadId=" + UriEncode(upload_id, false);
  auto abort = [&](Status st) -> Status {
    Request del;
    del.method = "DELETE";
    del.url = Url(key, id_q);
    WithRetries(impl_.get(), &options_, del, 2);
    return st;
  };
  std::string complete = "<CompleteMultipartUpload>";
  uint64_t part_size = options_.part_size;
  int part = 0;
  for (uint64_t off = 0; off < size; off += part_size) {
    ++part;
    uint64_t len = std::min(part_size, size - off);
    Request put;
    put.method = "PUT";
    put.url = Url(key, fmt::format("partNumber={}&{}", part, id_q));
    put.body.fd = fd;
    put.body.offset = off;
    put.body.length = len;
    put.body.progress = progress;
    put.body.progress_base = off;
    put.body.progress_total = size;
    auto sha = Sha256Slice(fd, off, len);
    if (!sha.ok()) return abort(sha.status());
    put.payload_sha = *sha;
    Response pr = WithRetries(impl_.get(), &options_, put, options_.max_attempts);
    if (pr.rc != CURLE_OK || pr.status != 200 || pr.headers.etag.empty()) {
      return abort(ErrorFor(pr, fmt::format("{} (part {})", what, part), &options_));
    }
    complete += fmt::format("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", part, pr.headers.etag);
  }
  complete += "</CompleteMultipartUpload>";
  Request fin;
  fin.method = "POST";
  fin.url = Url(key, id_q);
  fin.body.memory = complete;
  fin.body.length = complete.size();
  fin.payload_sha = Sha256Hex(complete);
  fin.headers.push_back("Content-Type: application/xml");
  Response fr = WithRetries(impl_.get(), &options_, fin, options_.max_attempts);
  // CompleteMultipartUpload may answer 200 with an <Error> document.
  if (fr.rc != CURLE_OK || fr.status != 200 || fr.body.find("<Error>") != std::string::npos) {
    return abort(ErrorFor(fr.status == 200 ? Response{CURLE_OK, 500, fr.body, {}, "", false} : fr,
                          what + " (complete multipart upload)", &options_));
  }
  doc.load_string(fr.body.c_str());
  ObjectInfo info = InfoFrom(fr);
  info.etag = doc.child("CompleteMultipartUploadResult").child_value("ETag");
  info.size = size;
  return info;
}

StatusOr<ObjectInfo> S3Client::Download(const std::string& key, const std::string& dest, const Conditions& c,
                                        const ProgressFn& progress) {
  return DownloadImpl(impl_.get(), &options_, Url(key), Describe(key), dest, c, progress, options_.max_attempts);
}

StatusOr<Listing> S3Client::List(const std::string& prefix, const std::string& delimiter, int max_keys) {
  Listing out;
  std::string token;
  while (true) {
    // Query parameters sorted by name, as the canonical request (and libcurl's signer) wants.
    std::string q;
    if (!token.empty()) q += "continuation-token=" + UriEncode(token, false) + "&";
    if (!delimiter.empty()) q += "delimiter=" + UriEncode(delimiter, false) + "&";
    q += fmt::format("list-type=2&max-keys={}", max_keys);
    if (!prefix.empty()) q += "&prefix=" + UriEncode(prefix, false);
    Request req;
    req.url = Url("", q);
    Response r = WithRetries(impl_.get(), &options_, req, options_.max_attempts);
    if (r.rc != CURLE_OK || r.status != 200) return ErrorFor(r, "s3://" + options_.bucket + "/" + prefix, &options_);
    pugi::xml_document doc;
    if (!doc.load_string(r.body.c_str())) return UnavailableError("unreadable listing from " + options_.endpoint);
    auto root = doc.child("ListBucketResult");
    for (auto p : root.children("CommonPrefixes")) out.prefixes.emplace_back(p.child_value("Prefix"));
    for (auto k : root.children("Contents")) out.keys.emplace_back(k.child_value("Key"));
    if (std::string(root.child_value("IsTruncated")) != "true" || max_keys < 1000) break;
    token = root.child_value("NextContinuationToken");
    if (token.empty()) break;
  }
  std::sort(out.prefixes.begin(), out.prefixes.end());
  std::sort(out.keys.begin(), out.keys.end());
  return out;
}

Status S3Client::Delete(const std::string& key) {
  Request req;
  req.method = "DELETE";
  req.url = Url(key);
  Response r = WithRetries(impl_.get(), &options_, req, options_.max_attempts);
  if (r.rc == CURLE_OK && (r.status == 204 || r.status == 200)) return OkStatus();
  return ErrorFor(r, Describe(key), &options_);
}

StatusOr<ObjectInfo> DownloadUrl(const std::string& url, const std::string& dest, const ProgressFn& progress) {
  GlobalInit();
  // Never log or echo a presigned URL's query: it is a credential.
  std::string what = url.substr(0, url.find('?'));
  static S3Client::Impl handles;  // plain-URL downloads share their connections too
  return DownloadImpl(&handles, nullptr, url, what, dest, {}, progress, 5);
}

}  // namespace pilotlight::store
