#!/usr/bin/env bash
# Quick start 2: install what is missing, build with ASan+UBSan, make the models, run every
# test (unit tests, the module-boundary check, integration tests against the real binary),
# then the scheduler's unit tests again under ThreadSanitizer, then each fuzz target for 30 s.
# Extra args go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake --preset asan >/dev/null
cmake --build --preset asan
/usr/bin/python3 tools/make_models.py --out build/models
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$PWD/tools/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PILOTLIGHT_BIN="$PWD/build/asan/pilotlight"
export PILOTLIGHT_MODELS="$PWD/build/models"
ctest --test-dir build/asan --output-on-failure --timeout 900 "$@"
# The scheduler's concurrency under ThreadSanitizer (its tests use a fake runtime, so no
# uninstrumented library is involved).
cmake --preset tsan >/dev/null
cmake --build --preset tsan --target function_pool_test
TSAN_OPTIONS="halt_on_error=1" build/tsan/tests/function_pool_test
# libFuzzer targets (clang, ASan+UBSan) for a bounded time each: the HTTP request path, the
# tensor decoders, the config loader, S3 event parsing (tests/fuzz/README.md).
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash tools/fuzz.sh
