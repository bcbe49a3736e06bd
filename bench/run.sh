#!/usr/bin/env bash
# Benchmark driver: pilotlight vs raw ONNX Runtime vs nginx, all in the same run.
# See bench/RESULTS.md for what is measured and how to read it.
#
#   bench/run.sh                        full run (10 s per wrk run, 3 repeats, medians)
#   BENCH_DURATION=2s BENCH_REPEATS=1 bench/run.sh --quick      smoke run (< ~2 minutes)
#
# Options:
#   --quick            fewer cold samples (3), fewer ort_raw iterations (200), 2s/1 repeat
#                      unless BENCH_DURATION / BENCH_REPEATS say otherwise
#   --skip-server      baselines only (ort_raw + nginx); no pilotlight needed
#   --models "A B"     subset of: tiny_mlp mlp_10mb cnn big_100mb
#   -h, --help
# Environment knobs (defaults): BENCH_DURATION (10s), BENCH_REPEATS (3), BENCH_COLD_REPEATS (5),
#   BENCH_ORT_ITERS (1000), BENCH_ORT_FLAGS ("": ort_raw's defaults match the server's runtime;
#   e.g. "--intra-threads 1" otherwise), BENCH_WARMUP (1s, 0 = none), BENCH_WRK_TIMEOUT (10s),
#   BENCH_BUILD_DIR (build/release), BENCH_MODELS_DIR (build/models), BENCH_OUT (bench/out), BENCH_START_TIMEOUT (180 s),
#   BENCH_NGINX_BODY_BYTES (only with --skip-server: size of nginx's body, default 128),
#   BENCH_KEEP_TMP (0; 1 keeps the temp dir with the store, config and logs).
# Output: bench/out/results.{json,md} (latest), bench/out/runs/<timestamp>/ (raw.jsonl, meta,
#   config, logs); the markdown is printed on stdout, progress goes to stderr.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
PY=/usr/bin/python3
UTIL="$PY $BENCH/util.py"

INVOCATION="$(env | sed -n -E "/^BENCH_[A-Z_]+=/ s/=(.*)/='\1'/p" | sort | tr '\n' ' ')bench/run.sh $*"
QUICK=0
SKIP_SERVER=0
MODELS="tiny_mlp mlp_10mb cnn big_100mb"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --skip-server) SKIP_SERVER=1 ;;
    --models) MODELS="$2"; shift ;;
    -h|--help) sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ $QUICK == 1 ]]; then
  DURATION=${BENCH_DURATION:-2s}; REPEATS=${BENCH_REPEATS:-1}
  COLD_REPEATS=${BENCH_COLD_REPEATS:-3}; ORT_ITERS=${BENCH_ORT_ITERS:-200}
else
  DURATION=${BENCH_DURATION:-10s}; REPEATS=${BENCH_REPEATS:-3}
  COLD_REPEATS=${BENCH_COLD_REPEATS:-5}; ORT_ITERS=${BENCH_ORT_ITERS:-1000}
fi
ORT_FLAGS=${BENCH_ORT_FLAGS:-}
WARMUP=${BENCH_WARMUP:-1s}
WRK_TIMEOUT=${BENCH_WRK_TIMEOUT:-10s}
BUILD=${BENCH_BUILD_DIR:-$ROOT/build/release}
MODELS_DIR=${BENCH_MODELS_DIR:-$ROOT/build/models}
OUT=${BENCH_OUT:-$BENCH/out}
START_TIMEOUT=${BENCH_START_TIMEOUT:-180}
PL=$BUILD/pilotlight
ORT_RAW=$BUILD/ort_raw

ms() { awk -v s="$1" 'BEGIN{printf "%.3f", s*1000}'; }
qcmd() {  # a command line as one copy-pasteable string (single-quotes args that need it)
  local a out=() re='^[A-Za-z0-9_./:=@%+,-]+$' sq="'\\''"
  for a in "$@"; do
    if [[ $a =~ $re ]]; then out+=("$a"); else out+=("'${a//\'/$sq}'"); fi
  done
  echo "${out[*]}"
}
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in wrk curl /usr/sbin/nginx "$PY" lscpu; do
  command -v "$tool" >/dev/null || die "missing tool: $tool (tools/setup.sh installs it)"
done

# ---- build (only what is missing) -----------------------------------------------------------
if [[ ! -x $ORT_RAW || ( $SKIP_SERVER == 0 && ! -x $PL ) ]]; then
  log "building pilotlight + ort_raw (release preset)"
  (cd "$ROOT" && { [[ -f $BUILD/build.ninja ]] || cmake --preset release >&2; } \
     && cmake --build --preset release --target pilotlight ort_raw >&2)
fi
[[ -x $ORT_RAW ]] || die "$ORT_RAW not found after the build"
[[ $SKIP_SERVER == 1 || -x $PL ]] || die "$PL not found after the build"

missing=0
for m in $MODELS; do [[ -f $MODELS_DIR/$m.onnx ]] || missing=1; done
if [[ $missing == 1 ]]; then
  log "making models into $MODELS_DIR"
  (cd "$ROOT" && $PY tools/make_models.py --out "$MODELS_DIR" >&2)
fi
for m in $MODELS; do [[ -f $MODELS_DIR/$m.onnx ]] || die "model $MODELS_DIR/$m.onnx missing"; done

# ---- run directory, temp dir, cleanup --------------------------------------------------------
STAMP=$(date +%Y%m%d-%H%M%S)
RUN_DIR=$OUT/runs/$STAMP
mkdir -p "$RUN_DIR"
RAW=$RUN_DIR/raw.jsonl
: > "$RAW"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pilotlight-bench.XXXXXX")
SERVER_PID=""
NGINX_PID=""

STOP_RC=0
stop_pid() {  # stop_pid PID NAME: SIGTERM, wait up to 10 s, then SIGKILL; exit code in STOP_RC
  local pid=$1 name=$2 i
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) still running 10 s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  STOP_RC=0
  wait "$pid" 2>/dev/null || STOP_RC=$?
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $NGINX_PID ]] && stop_pid "$NGINX_PID" nginx
  [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID" pilotlight
  for f in server.log server.stderr nginx-error.log; do
    [[ -f $TMP/$f ]] && tail -n 200 "$TMP/$f" > "$RUN_DIR/$f.tail" 2>/dev/null || true
  done
  if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

$UTIL meta > "$RUN_DIR/meta.json"
$PY -c 'import json, sys; a = sys.argv[1:]; d = dict(zip(a[::2], a[1::2]))
for k in ("quick", "skip_server", "repeats", "cold_repeats", "ort_iters"): d[k] = int(d[k])
print(json.dumps(d, indent=1))' \
  quick "$QUICK" skip_server "$SKIP_SERVER" duration "$DURATION" repeats "$REPEATS" \
  cold_repeats "$COLD_REPEATS" ort_iters "$ORT_ITERS" ort_flags "$ORT_FLAGS" warmup "$WARMUP" \
  wrk_timeout "$WRK_TIMEOUT" models "$MODELS" build_dir "$BUILD" models_dir "$MODELS_DIR" \
  invocation "$INVOCATION" > "$RUN_DIR/settings.json"
log "run dir $RUN_DIR (duration $DURATION, repeats $REPEATS, cold samples $COLD_REPEATS)"

# ---- wrk helper ------------------------------------------------------------------------------
# wrk_run TARGET CONC REP URL BODY: runs wrk with the settings for CONC (1 or 64) and records it.
wrk_run() {
  local target=$1 conc=$2 rep=$3 url=$4 body=$5 threads=1 out
  [[ $conc -gt 1 ]] && threads=2
  local cmd=(wrk "-t$threads" "-c$conc" "-d$DURATION" --latency --timeout "$WRK_TIMEOUT"
             -s "$BENCH/wrk/infer.lua" "$url" -- "$body")
  out=$TMP/wrk.out
  if ! "${cmd[@]}" > "$out" 2>&1; then log "wrk failed for $target c=$conc: $(tail -n 3 "$out")"; fi
  $UTIL record "$RAW" kind=wrk target="$target" conc="$conc" rep="$rep" cmd="$(qcmd "${cmd[@]}")" data="@$out"
  grep '^WRK_JSON' "$out" | sed "s/^WRK_JSON /  $target c=$conc rep $rep: /" | cut -c1-160 >&2 || true
  check_server "wrk $target c=$conc"
}
check_server() {  # dies if pilotlight is gone (a crash, or a signal from elsewhere)
  [[ -z $SERVER_PID ]] && return 0
  kill -0 "$SERVER_PID" 2>/dev/null && return 0
  local rc=0
  wait "$SERVER_PID" 2>/dev/null || rc=$?
  SERVER_PID=""
  die "pilotlight exited unexpectedly (code $rc) during: $1; log tail: $(grep -v ' request ' "$TMP/server.log" 2>/dev/null | tail -n 5; tail -n 5 "$TMP/server.stderr" 2>/dev/null)"
}
wrk_warmup() {  # wrk_warmup URL BODY
  [[ $WARMUP == 0 || $WARMUP == 0s ]] && return 0
  wrk -t1 -c1 "-d$WARMUP" --timeout "$WRK_TIMEOUT" -s "$BENCH/wrk/infer.lua" "$1" -- "$2" \
    > /dev/null 2>&1 || true
}

# ---- 1. raw ONNX Runtime, one fresh process per sample ---------------------------------------
for m in $MODELS; do
  for rep in $(seq "$REPEATS"); do
    # shellcheck disable=SC2206
    cmd=("$ORT_RAW" "$MODELS_DIR/$m.onnx" --batch 1 --iters "$ORT_ITERS" $ORT_FLAGS)
    log "ort_raw $m rep $rep"
    "${cmd[@]}" > "$TMP/ort.json" 2> "$TMP/ort.err" || die "ort_raw failed on $m: $(cat "$TMP/ort.err")"
    $UTIL record "$RAW" kind=ort_raw target="$m" rep="$rep" cmd="$(qcmd "${cmd[@]}")" data="@$TMP/ort.json"
    cp "$TMP/ort.json" "$TMP/ort_$m.json"
  done
  # A batch-1 request body with the model's own input names/shapes/dtypes (from the session).
  $UTIL body "$TMP/ort_$m.json" "$TMP/body_$m.json"
  cp "$TMP/body_$m.json" "$RUN_DIR/body_$m.json"
done

# ---- 2. pilotlight: store, config, serve -----------------------------------------------------
PORT=""
if [[ $SKIP_SERVER == 0 ]]; then
  STORE=$TMP/models
  mkdir -p "$STORE" "$TMP/state"
  for m in $MODELS; do
    log "model push $m"
    "$PL" model push "$MODELS_DIR/$m.onnx" --name "$m" --version 1 --promote \
      --store "file://$STORE" > "$TMP/push.out" 2>&1 || die "model push $m failed: $(cat "$TMP/push.out")"
  done
  PORT=$($UTIL free-port)
  CFG=$TMP/bench.yaml
  {
    echo "server: {listen: 127.0.0.1:$PORT, max_body_bytes: 6291456}"
    echo "store: file://$STORE"
    echo "functions:"
    for m in $MODELS; do
      echo "  $m: {model: $m, min_instances: 1, max_instances: 1, concurrency: 64, idle_timeout: 60s, max_queue: 1024, queue_timeout: 5s}"
      echo "  ${m}_cold: {model: $m, min_instances: 0, max_instances: 1, concurrency: 64, idle_timeout: 0s, max_queue: 1024, queue_timeout: 5s}"
    done
  } > "$CFG"
  cp "$CFG" "$RUN_DIR/bench.yaml"
  SERVE_CMD=("$PL" serve --config "$CFG" --listen "127.0.0.1:$PORT" --state-dir "$TMP/state"
             --log-file "$TMP/server.log")
  log "starting: ${SERVE_CMD[*]}"
  "${SERVE_CMD[@]}" > "$TMP/server.stderr" 2>&1 &
  SERVER_PID=$!
  t0=$(date +%s.%N)
  wants=()
  for m in $MODELS; do wants+=("$m=warm"); done
  if ! $UTIL wait-health "http://127.0.0.1:$PORT" "$START_TIMEOUT" "${wants[@]}"; then
    kill -0 "$SERVER_PID" 2>/dev/null || log "pilotlight exited: $(tail -n 20 "$TMP/server.stderr")"
    die "pilotlight did not report the warm functions as warm"
  fi
  t1=$(date +%s.%N)
  $UTIL record "$RAW" kind=server_start cmd="$(qcmd "${SERVE_CMD[@]}")" \
    data="{\"ready_s\": $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')}"
  log "pilotlight ready on :$PORT"
  # Sanity: every warm function answers 200; keep tiny_mlp's response as nginx's body.
  for m in $MODELS; do
    code=$(curl -s -o "$TMP/resp_$m.json" -w '%{http_code}' -H 'content-type: application/json' \
      --data-binary "@$TMP/body_$m.json" "http://127.0.0.1:$PORT/v1/functions/$m/invoke")
    [[ $code == 200 ]] || die "POST /v1/functions/$m/invoke -> $code: $(head -c 400 "$TMP/resp_$m.json")"
    cp "$TMP/resp_$m.json" "$RUN_DIR/response_$m.json"
  done
fi

# ---- 3. nginx: fixed JSON body, the size of a tiny_mlp response ------------------------------
if [[ -f $TMP/resp_tiny_mlp.json ]]; then
  cp "$TMP/resp_tiny_mlp.json" "$TMP/nginx_body.json"
else
  $UTIL synthetic-body "${BENCH_NGINX_BODY_BYTES:-128}" "$TMP/nginx_body.json"
fi
NGINX_PREFIX=$TMP/nginx
mkdir -p "$NGINX_PREFIX"
NGINX_PORT=$($UTIL free-port)
$UTIL nginx-conf "$BENCH/nginx.conf.in" "$NGINX_PREFIX/nginx.conf" "$NGINX_PREFIX" "$NGINX_PORT" \
  "$TMP/nginx_body.json"
cp "$NGINX_PREFIX/nginx.conf" "$RUN_DIR/nginx.conf"
/usr/sbin/nginx -p "$NGINX_PREFIX" -e "$NGINX_PREFIX/error.log" -c "$NGINX_PREFIX/nginx.conf" \
  > "$TMP/nginx-error.log" 2>&1 &
NGINX_PID=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break
  kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(cat "$TMP/nginx-error.log" "$NGINX_PREFIX/error.log" 2>/dev/null)"
  sleep 0.05
done
NGINX_URL=http://127.0.0.1:$NGINX_PORT/v1/functions/tiny_mlp/invoke
nginx_bytes=$(curl -s "$NGINX_URL" -X POST --data-binary "@$TMP/body_tiny_mlp.json" | wc -c)
$UTIL record "$RAW" kind=nginx_setup data="{\"body_bytes\": $nginx_bytes, \"from_server_response\": $([[ -f $TMP/resp_tiny_mlp.json ]] && echo true || echo false)}"
log "nginx ready on :$NGINX_PORT (body $nginx_bytes bytes)"

# ---- 4. wrk: warm latency (c=1) and throughput (c=64), nginx interleaved with the models -----
wrk_warmup "$NGINX_URL" "$TMP/body_tiny_mlp.json"
if [[ $SKIP_SERVER == 0 ]]; then
  for m in $MODELS; do
    wrk_warmup "http://127.0.0.1:$PORT/v1/functions/$m/invoke" "$TMP/body_$m.json"
  done
fi
for rep in $(seq "$REPEATS"); do
  for conc in 1 64; do
    wrk_run nginx "$conc" "$rep" "$NGINX_URL" "$TMP/body_tiny_mlp.json"
    if [[ $SKIP_SERVER == 0 ]]; then
      for m in $MODELS; do
        wrk_run "$m" "$conc" "$rep" "http://127.0.0.1:$PORT/v1/functions/$m/invoke" "$TMP/body_$m.json"
      done
    fi
  done
done

# ---- 5. cold start: first request to a function scaled to zero --------------------------------
if [[ $SKIP_SERVER == 0 ]]; then
  for m in $MODELS; do
    fn=${m}_cold
    for i in $(seq "$COLD_REPEATS"); do
      check_server "cold start $fn"
      if ! $UTIL wait-health "http://127.0.0.1:$PORT" 60 "$fn=cold"; then
        die "$fn never reached state cold (idle_timeout: 0s should unload it)"
      fi
      cmd=(curl -s -o "$TMP/cold.body" -D "$TMP/cold.hdr" -w '%{http_code} %{time_total} %{time_connect} %{time_starttransfer}\n'
           -H 'content-type: application/json' --data-binary "@$TMP/body_$m.json"
           "http://127.0.0.1:$PORT/v1/functions/$fn/invoke")
      read -r code total connect ttfb < <("${cmd[@]}")
      st=$($UTIL server-timing "$TMP/cold.hdr")
      $UTIL record "$RAW" kind=cold target="$m" rep="$i" cmd="$(qcmd "${cmd[@]}")" \
        data="{\"http_code\": $((10#$code)), \"time_total_ms\": $(ms "$total"), \"time_connect_ms\": $(ms "$connect"), \"ttfb_ms\": $(ms "$ttfb"), \"headers\": $st}"
      log "cold $fn #$i: HTTP $code, ${total}s; $st"
      [[ $code == 200 ]] || log "cold request failed: $(head -c 400 "$TMP/cold.body")"
    done
  done
fi

# ---- 6. stop, report --------------------------------------------------------------------------
stop_pid "$NGINX_PID" nginx; NGINX_PID=""
if [[ $SKIP_SERVER == 0 ]]; then
  stop_pid "$SERVER_PID" pilotlight; SERVER_PID=""
  $UTIL record "$RAW" kind=server_exit data="{\"sigterm_exit_code\": $STOP_RC}"
  [[ $STOP_RC == 0 ]] || log "pilotlight exited with $STOP_RC after SIGTERM (expected 0)"
fi

$PY "$BENCH/report.py" "$RUN_DIR" > "$RUN_DIR/results.md"
cp "$RUN_DIR/results.md" "$RUN_DIR/results.json" "$OUT/"
cat "$RUN_DIR/results.md"
log "wrote $OUT/results.md and $OUT/results.json (raw: $RAW)"
