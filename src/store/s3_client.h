// S3Client: the S3 REST protocol over libcurl, signed by libcurl's built-in SigV4
// (CURLOPT_AWS_SIGV4; no hand-written signer). Works against AWS S3 and S3-compatible stores
// (MinIO, Ceph RGW, Cloudflare R2, GCS XML interoperability) with virtual-hosted or path-style
// addressing. Every call retries transient failures (connection errors, 5xx, 429/SlowDown)
// with exponential backoff and jitter; downloads resume with a Range request pinned to the
// object's ETag (If-Match) and hash the bytes as they arrive.
//
// Errors: NotFound (404), Aborted (412: a conditional write lost), FailedPrecondition (access
// denied, wrong region, bad bucket — retrying will not help), Unavailable (transient, after the
// retries). Messages name the object and say what to check.
// Thread-safety: an S3Client may be used from any number of threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace pilotlight::store {

// What a user configured (the `s3:` block or CLI flags); empty fields fall back to the
// environment and the shared AWS files, the way AWS tools read them.
struct S3Settings {
  std::string endpoint;            // https://minio.example:9000
  std::string region;              // us-east-1
  std::string profile;             // a profile in ~/.aws/credentials and ~/.aws/config
  std::optional<bool> path_style;  // default: on for a custom endpoint, off for AWS
  uint64_t multipart_threshold = uint64_t{64} << 20;
  uint64_t part_size = uint64_t{16} << 20;
};

struct S3Options {
  std::string bucket;
  std::string endpoint;  // scheme://host[:port], no trailing '/'
  std::string region = "us-east-1";
  bool path_style = false;
  std::string access_key_id;  // empty: anonymous, unsigned requests (public buckets)
  std::string secret_access_key;
  std::string session_token;
  std::string credentials_source;  // for messages: "environment", "profile 'x' in ~/.aws/credentials", ...
  uint64_t multipart_threshold = uint64_t{64} << 20;
  uint64_t part_size = uint64_t{16} << 20;
  int max_attempts = 5;
  Duration retry_base = std::chrono::milliseconds(200);
  long connect_timeout_ms = 5000;
  long low_speed_time_s = 30;  // abort a transfer slower than 1 kB/s for this long (then retry)
  // Test hooks: route the endpoint's host to another address (curl's --connect-to) and sign
  // as if at a fixed time, so a request can be compared with AWS's published examples.
  std::string connect_to;
  std::string fixed_amz_date;
  std::vector<std::string> extra_headers;  // "Name: value", added to every request
};

using EnvLookup = std::function<const char*(const char*)>;
// Settings + environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
// AWS_REGION/AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL, AWS_PROFILE,
// AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE) + the shared files → options.
// An explicitly configured profile wins over environment credentials, as with `--profile`.
StatusOr<S3Options> ResolveS3Options(const std::string& bucket, const S3Settings& settings, const EnvLookup& env);

struct ObjectInfo {
  long status = 0;  // 200, 206, 304, ...
  std::string body;
  std::string etag;  // as received, quoted
  std::string last_modified;
  uint64_t size = 0;   // object size (bytes)
  std::string sha256;  // Download(): of the bytes written
};

struct Conditions {
  std::string if_match;       // PUT: compare-and-swap on the ETag
  std::string if_none_match;  // GET: "\"etag\"" → 304 when unchanged; PUT: "*" → create only
};

using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

struct Listing {
  std::vector<std::string> prefixes;  // common prefixes (with the delimiter), sorted
  std::vector<std::string> keys;
};

class S3Client {
 public:
  explicit S3Client(S3Options options);
  ~S3Client();
  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  // Keys are full object keys in the bucket. A 304 is returned as an ObjectInfo with status 304.
  StatusOr<ObjectInfo> Get(const std::string& key, const Conditions& c = {});
  StatusOr<ObjectInfo> Head(const std::string& key);
  StatusOr<ObjectInfo> Put(const std::string& key, std::string_view body, const Conditions& c = {});
  // Uploads a local file; multipart above options().multipart_threshold.
  StatusOr<ObjectInfo> PutFile(const std::string& key, const std::string& path, const ProgressFn& progress = {});
  // Streams the object into `dest` (created/truncated), resuming after interruptions.
  StatusOr<ObjectInfo> Download(const std::string& key, const std::string& dest, const Conditions& c = {},
                                const ProgressFn& progress = {});
  // ListObjectsV2, every page. `delimiter` "/" lists one level.
  StatusOr<Listing> List(const std::string& prefix, const std::string& delimiter, int max_keys = 1000);
  Status Delete(const std::string& key);

  // The URL of a key (+ "?query", already canonical) under this client's addressing style.
  std::string Url(const std::string& key, const std::string& query = "") const;
  std::string Describe(const std::string& key) const { return "s3://" + options_.bucket + "/" + key; }
  const S3Options& options() const { return options_; }

  struct Impl;  // implementation detail (a pool of curl handles)

 private:
  S3Options options_;
  std::unique_ptr<Impl> impl_;
};

// A plain HTTP(S) download (presigned URLs, web servers): the same retries, resume and hashing,
// no signing.
StatusOr<ObjectInfo> DownloadUrl(const std::string& url, const std::string& dest, const ProgressFn& progress = {});

// RFC 3986 percent-encoding with uppercase hex, as SigV4 canonical requests need; '/' is kept
// when `keep_slash`.
std::string UriEncode(std::string_view s, bool keep_slash);

}  // namespace pilotlight::store
