// The composition root: builds store, runtime, metrics, scheduler, gateway and HTTP server
// from a Config, owns their threads, and runs until SIGTERM/SIGINT, then drains: stops
// accepting, lets in-flight and queued requests finish (up to server.shutdown_timeout) and
// returns 0.
#pragma once

#include "config/config.h"
#include "store/s3_client.h"

namespace pilotlight::server {

// The config's `s3:` block as the store module's settings.
store::S3Settings ToS3Settings(const config::S3Config& c);

// Blocks SIGTERM/SIGINT in the calling thread, so threads started afterwards inherit the mask
// and Serve() can sigwait for them. Call before starting any thread (e.g. the logger's).
void BlockStopSignals();

// Blocks until a stop signal. Returns the process exit code; prints the reason on failure.
int Serve(const config::Config& config);

}  // namespace pilotlight::server
