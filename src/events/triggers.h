// Triggers: object-upload batch inference. Each trigger binds a source (a local folder, watched
// with inotify, or an S3 bucket/prefix, told by S3 event notifications) to a function and an
// output location. Every new object — JSON Lines of inputs, CSV of numbers, or .npy — becomes a
// job: its rows run through the function in batches and the results are published next to the
// output prefix as `<key>.out.jsonl` (one line per input row, in order: {"row", "outputs"} or
// {"row", "error"}) plus `<key>.summary.json`.
//
// Jobs are recorded in the EventStore, unique per (trigger, key, ETag): a redelivered
// notification or a restart does no duplicate work. Progress is checkpointed after every batch
// (rows done + the byte length of a local, fsynced partial output), so a job interrupted by a
// crash resumes where it stopped and its output has every row exactly once. An object that
// cannot be read or parsed as a whole is a failed job (the dead-letter state), with its error.
// Thread-safety: all public methods are thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "events/async_invoker.h"
#include "events/event_store.h"
#include "metrics/metrics.h"
#include "store/blob_store.h"

namespace pilotlight::events {

struct TriggerSpec {
  std::string source;  // file://DIR | s3://BUCKET/PREFIX
  std::string function;
  std::string output;  // file://DIR | s3://BUCKET/PREFIX
  int batch_size = 256;
  std::string token;  // required on POST /v1/events/s3 for this trigger's notifications
};

// One object named by an ObjectCreated record of an S3 event notification.
struct S3ObjectRef {
  std::string bucket;  // "" when the record names none
  std::string key;     // percent-decoded
  std::string etag;    // "" when absent
};

// Parses an S3 event notification document — S3's own, the same wrapped by SNS in "Message",
// or MinIO's webhook — into the objects its ObjectCreated records name, in record order.
// Records of other events, or without an "s3" object with an "object" object, are skipped; a
// document without "Records" (S3's test event) names none. InvalidArgument when the body is not
// a JSON object or "Records" is not an array. Pure (no I/O); safe from any thread.
StatusOr<std::vector<S3ObjectRef>> ParseS3Notification(std::string_view body);

class Triggers {
 public:
  Triggers(std::vector<TriggerSpec> specs, EventStore* db, Executor executor, std::string work_dir,
           store::S3Settings s3, metrics::Registry* metrics);
  ~Triggers();

  // Opens sources and outputs, records the objects already in local source folders, and starts
  // the watcher and the job worker.
  Status Start();
  void Stop();
  bool empty() const { return specs_.empty(); }

  // An S3 event notification document (as S3 sends through SNS/HTTP, or MinIO's webhook).
  // PermissionDenied-style FailedPrecondition when `token` matches no trigger of the records'
  // buckets; returns how many new jobs it created.
  StatusOr<int> OnS3Notification(std::string_view body, const std::string& token);
  StatusOr<std::vector<Job>> Jobs(int limit) { return db_->ListJobs(limit); }

 private:
  struct Source {
    TriggerSpec spec;
    std::unique_ptr<store::BlobStore> in, out;
    std::string local_dir;       // file:// sources
    std::string bucket, prefix;  // s3:// sources
    int watch = -1;
  };
  void WatchLoop();
  void WorkLoop();
  void Consider(Source& src, const std::string& name);
  Status RunJob(Job& job);
  Source* SourceFor(const std::string& name);

  std::vector<TriggerSpec> specs_;
  EventStore* const db_;
  Executor executor_;
  const std::string work_dir_;
  const store::S3Settings s3_;
  std::vector<std::unique_ptr<Source>> sources_;
  int inotify_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  bool wake_ = false;  // GUARDED_BY(mu_)
  std::thread watcher_, worker_;
  prometheus::Counter* objects_ok_ = nullptr;
  prometheus::Counter* objects_failed_ = nullptr;
  prometheus::Counter* rows_ = nullptr;
};

}  // namespace pilotlight::events
