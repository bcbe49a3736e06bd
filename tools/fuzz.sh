#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` preset: clang, ASan+UBSan, build/fuzz) and runs each
# for a bounded time on a copy of its seed corpus, so the repository is never modified.
#
#   tools/fuzz.sh [TARGET...]        all targets, or the ones named (e.g. http_request config)
#
#   FUZZ_SECONDS  time per target (default 30)
#   FUZZ_JOBS     build parallelism (default 2)
#
# Prints one line per target (executions, coverage, corpus growth). Fails when a target
# crashes, leaks, times out or runs out of memory; the reproducer is kept under
# build/fuzz/artifacts/<target>/ with the log. How to replay it, fuzz longer and keep a crash as
# a regression seed: tests/fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(http_request json_tensor v2_json v2_binary config s3_event jwt)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
  [ -d "tests/fuzz/corpus/$t" ] || { echo "fuzz: unknown target '$t' (known: ${ALL[*]})" >&2; exit 2; }
done
SECONDS_PER_TARGET=${FUZZ_SECONDS:-30}
JOBS=${FUZZ_JOBS:-2}

configure_log=$(mktemp)
# Quiet unless it fails (the preset names a C compiler this C++-only project never uses).
cmake --preset fuzz >"$configure_log" 2>&1 || { cat "$configure_log" >&2; rm -f "$configure_log"; exit 1; }
rm -f "$configure_log"
build_targets=()
for t in "${TARGETS[@]}"; do build_targets+=("${t}_fuzz"); done
cmake --build build/fuzz -j "$JOBS" --target "${build_targets[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/tools/lsan.supp:print_suppressions=0}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${TARGETS[@]}"; do
  corpus="$work/$t"
  artifacts="build/fuzz/artifacts/$t"
  mkdir -p "$artifacts"
  cp -r "tests/fuzz/corpus/$t" "$corpus"
  seeds=$(find "$corpus" -type f | wc -l)
  case "$t" in
    http_request) dict=tests/fuzz/dict/http.dict ;;
    config) dict=tests/fuzz/dict/yaml.dict ;;
    *) dict=tests/fuzz/dict/json.dict ;;
  esac
  log="$artifacts/last-run.log"
  start=$(date +%s)
  rc=0
  "build/fuzz/tests/fuzz/${t}_fuzz" "$corpus" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -dict="$dict" -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  # The last status line ("#N DONE cov: C ft: F corp: N/SIZE ...") has the final coverage.
  status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$status")
  if [ "$rc" -eq 0 ]; then
    printf 'fuzz: %-13s ok    %9s execs (%s/s) in %ss  cov %s  ft %s  corpus %s -> %s\n' \
      "$t" "${execs:-?}" "${rate:-?}" "$took" "${cov:-?}" "${ft:-?}" "$seeds" "${corp:-?}"
  else
    failed+=("$t")
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    printf 'fuzz: %-13s FAIL  exit %s after %ss; reproducer: %s; log: %s\n' "$t" "$rc" "$took" "${crash:-none}" "$log"
    grep -a -m1 -E 'ERROR: |FUZZ_CHECK|runtime error|terminate called|what\(\)|Assertion' "$log" | sed 's/^/fuzz:   /' || true
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (replay: build/fuzz/tests/fuzz/TARGET_fuzz REPRODUCER)" >&2
  exit 1
fi
echo "fuzz: ok (${#TARGETS[@]} targets, ${SECONDS_PER_TARGET}s each)"
