#!/usr/bin/python3
"""Cold start with the model only in object storage, beside curl and a local-disk store.

See bench/RESULTS.md ("Cold start from object storage") for the method and how to read it.

  /usr/bin/python3 bench/s3_cold.py              full run: 5 iterations per model, medians
  /usr/bin/python3 bench/s3_cold.py --quick      smoke run: 1 iteration per model

Per model (mlp_10mb, big_100mb), after one unrecorded warm-up iteration, each iteration runs,
in this order, against one S3 server (tests/integration/s3: s3rver behind a SigV4-verifying
front, on loopback) that holds the model pushed by `pilotlight model push --store s3://...`:

  1. curl baselines: the same object fetched with SigV4 by curl, to /dev/null and to a file on
     the same filesystem as pilotlight's state dir (then fsynced, timed separately, deleted).
  2. S3 cold start: `pilotlight serve --store s3://models/bench-M --state-dir FRESH`, wait for
     its "pilotlight serving" log line, then the first invoke timed client-side by curl
     (download + verify + load + first run), with the server's Server-Timing phases. The S3
     server's request records must show exactly one download of model.onnx.
  3. Cache-hit cold start: the server restarted on the SAME state dir; first invoke timed the
     same way; the records must show no download.
  4. Local-disk cold start: the model pushed to a file:// store, served from it with a fresh
     state dir, first invoke timed the same way.

Output: a markdown section on stdout, raw samples and medians in OUT/s3_cold.json (and the
markdown in OUT/s3_cold.md); progress on stderr. Every process started here is stopped on
exit (SIGTERM, then SIGKILL after 10 s), also on error or Ctrl-C.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402  (bench/harness.py: what s3_cold.py and process.py share)
import util  # noqa: E402  (bench/util.py: request bodies)
import s3support  # noqa: E402  (tests/integration/s3support.py: the S3 server)
from harness import CHILD_ENV, BenchError, Server, fmt, log, median, qcmd, run  # noqa: E402

BUCKET = "models"
PHASES = ("fetch", "load", "first_run", "queue", "run")


# ------------------------------------------------------------------------------ measurements
def curl_invoke(url, function, body_path, tmp, timeout):
    """The first request, as bench/run.sh times cold starts: curl's time_total, headers kept."""
    hdr, out = tmp / "invoke.hdr", tmp / "invoke.body"
    code, times, headers, argv = harness.curl_post("%s/v1/functions/%s/invoke" % (url, function),
                                                   body_path, hdr, out, timeout)
    sample = {"http_code": code, **times, "cold_start_header": headers["cold_start_header"],
              "server_timing": headers["server_timing"]}
    if code != 200:
        raise BenchError("invoke answered %d: %s" % (code, out.read_text(errors="replace")[:600]))
    if headers["cold_start_header"] is not True:
        raise BenchError("first invoke was not a cold start (X-Cold-Start: %r)"
                         % headers["cold_start_header"])
    return sample, argv


def curl_get(s3, key, dest, expect_size):
    """SigV4 GET of an object by curl; returns (ms, argv). dest: a path or /dev/null."""
    argv = ["curl", "-s", "-S", "--aws-sigv4", "aws:amz:%s:s3" % s3.region,
            "--user", "%s:%s" % (s3.access_key, s3.secret_key),
            "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "-o", str(dest), "-w", "%{http_code} %{time_total} %{size_download}", s3.url(key)]
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       env=CHILD_ENV)
    fields = r.stdout.split()
    if r.returncode != 0 or len(fields) != 3:
        raise BenchError("curl GET %s failed (exit %d): %s" % (key, r.returncode, r.stderr))
    code, total, size = int(fields[0]), float(fields[1]), int(float(fields[2]))
    if code != 200 or size != expect_size:
        raise BenchError("curl GET %s: HTTP %d, %d bytes (expected 200, %d bytes)"
                         % (key, code, size, expect_size))
    shown = list(argv)
    shown[shown.index("--user") + 1] = "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"
    return total * 1000.0, shown


def s3_requests(s3):
    """What the S3 server was asked since the last reset: method, path, status, its own ms."""
    return [{k: r.get(k) for k in ("method", "path", "status", "ms", "range")}
            for r in s3.stats()["requests"]]


def fsync_ms(path):
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return (time.perf_counter() - t0) * 1000.0


# ------------------------------------------------------------------------------ the run
def machine_meta(pl, tmp):
    meta = harness.machine_meta(pl, "node")
    meta.pop("wrk", None)
    meta["curl"] = harness.curl_version()
    try:
        pkg = s3support.S3_DIR / "node_modules" / "s3rver" / "package.json"
        meta["s3rver"] = json.loads(pkg.read_text())["version"]
    except (OSError, ValueError, KeyError):
        meta["s3rver"] = None
    df = (harness.output(["df", "-PT", str(tmp)]) or "").splitlines()
    meta["tmp_fs"] = df[1].split()[1] if len(df) > 1 else None
    meta["tmp_dir"] = str(tmp)
    meta["loadavg_start"] = os.getloadavg()
    return meta


def request_body(model_path, out_path):
    """A batch-1 body with the model's own inputs, the same values bench/run.sh sends."""
    inputs, _ = s3support.onnx_io(model_path)
    spec = {"inputs": [{"name": i["name"], "dtype": i["dtype"],
                        "shape": [1 if d < 0 else d for d in i["shape"]]} for i in inputs]}
    spec_path = Path(str(out_path) + ".spec.json")
    spec_path.write_text(json.dumps(spec))
    util.body(str(spec_path), str(out_path))
    return spec["inputs"]


def one_iteration(ctx, m, it, record):
    """Runs steps 1-4 for model m; returns the sample dict (record=False: warm-up)."""
    s3, tmp, args, env = ctx["s3"], ctx["tmp"], ctx["args"], ctx["env"]
    key = ctx["keys"][m]
    size = ctx["sizes"][m]
    label = "iteration %d" % it if record else "warm-up"
    sample = {"model": m, "iteration": it}

    # 1. curl baselines (the object is in the S3 server's page cache since the push).
    sample["curl_devnull_ms"], cmd_null = curl_get(s3, key, "/dev/null", size)
    dl = tmp / ("curl-%s.bin" % m)
    sample["curl_file_ms"], cmd_file = curl_get(s3, key, dl, size)
    sample["curl_file_fsync_ms"] = fsync_ms(dl)
    dl.unlink()
    ctx["commands"].setdefault("curl GET to /dev/null", qcmd(cmd_null))
    ctx["commands"].setdefault("curl GET to a file (then fsync, delete)", qcmd(cmd_file))

    # 2. S3 cold start: fresh state dir.
    state = tmp / ("state-%s-%s" % (m, it))
    shutil.rmtree(state, ignore_errors=True)
    s3.reset()
    store = s3.uri("bench-" + m)
    srv = Server(ctx["pl"], ["--store", store], state, tmp / "server.log", args.start_timeout,
                 env)
    ctx["commands"].setdefault("serve (S3 store)", qcmd(srv.argv))
    cold, inv = curl_invoke(srv.url, m, ctx["bodies"][m], tmp, args.invoke_timeout)
    ctx["commands"].setdefault("invoke (first request)", qcmd(inv))
    cold["serving_line_ms"] = srv.start_ms
    cold["exit_code"] = srv.stop()
    cold["s3_model_gets"] = s3.count("GET", key, 200)
    cold["s3_requests"] = s3_requests(s3)
    if cold["s3_model_gets"] != 1:
        raise BenchError("S3 cold start: expected 1 download of %s, the S3 server saw %d"
                         % (key, cold["s3_model_gets"]))
    sample["s3_cold"] = cold

    # 3. Cache-hit cold start: same state dir, new process.
    s3.reset()
    srv = Server(ctx["pl"], ["--store", store], state, tmp / "server.log", args.start_timeout,
                 env)
    hit, _ = curl_invoke(srv.url, m, ctx["bodies"][m], tmp, args.invoke_timeout)
    hit["serving_line_ms"] = srv.start_ms
    hit["exit_code"] = srv.stop()
    hit["s3_model_gets"] = s3.count("GET", key)
    hit["s3_requests"] = s3_requests(s3)
    if hit["s3_model_gets"] != 0:
        raise BenchError("cache hit: expected no request for %s, the S3 server saw %d"
                         % (key, hit["s3_model_gets"]))
    sample["cache_hit"] = hit
    shutil.rmtree(state, ignore_errors=True)

    # 4. Local-disk cold start: file:// store, fresh state dir, new process.
    lstate = tmp / ("lstate-%s-%s" % (m, it))
    shutil.rmtree(lstate, ignore_errors=True)
    srv = Server(ctx["pl"], ["--store", "file://%s" % ctx["local_stores"][m]], lstate,
                 tmp / "server.log", args.start_timeout, ctx["local_env"])
    ctx["commands"].setdefault("serve (local store)", qcmd(srv.argv))
    local, _ = curl_invoke(srv.url, m, ctx["bodies"][m], tmp, args.invoke_timeout)
    local["serving_line_ms"] = srv.start_ms
    local["exit_code"] = srv.stop()
    sample["local_disk"] = local
    shutil.rmtree(lstate, ignore_errors=True)

    bad = [k for k in ("s3_cold", "cache_hit", "local_disk") if sample[k]["exit_code"] != 0]
    if bad:
        log("WARNING: pilotlight exit code after SIGTERM was not 0 in %s" % bad)

    def ph(d):
        return " ".join("%s %.1f" % (p, d["server_timing"][p]) for p in ("fetch", "load", "first_run")
                        if p in d["server_timing"])

    log("%s %s: curl file %.1f ms (fsync %.1f), /dev/null %.1f ms | S3 cold %.1f ms (%s) | "
        "cache hit %.1f ms (%s) | local disk %.1f ms (%s)"
        % (m, label, sample["curl_file_ms"], sample["curl_file_fsync_ms"],
           sample["curl_devnull_ms"], cold["ms"], ph(cold), hit["ms"], ph(hit), local["ms"],
           ph(local)))
    return sample


def summarize(samples, models, sizes):
    out = {}
    for m in models:
        ss = [s for s in samples if s["model"] == m]
        if not ss:
            continue

        def med(f):
            return median([f(s) for s in ss])

        def phases(kind):
            return {p: med(lambda s, p=p: s[kind]["server_timing"].get(p)) for p in PHASES}

        r = {
            "n": len(ss),
            "size_bytes": sizes[m],
            "curl_file_ms": med(lambda s: s["curl_file_ms"]),
            "curl_file_fsync_ms": med(lambda s: s["curl_file_fsync_ms"]),
            "curl_devnull_ms": med(lambda s: s["curl_devnull_ms"]),
        }
        for kind in ("s3_cold", "cache_hit", "local_disk"):
            r[kind] = {"ms": med(lambda s, k=kind: s[k]["ms"]),
                       "min_ms": min(s[kind]["ms"] for s in ss),
                       "max_ms": max(s[kind]["ms"] for s in ss),
                       "serving_line_ms": med(lambda s, k=kind: s[k]["serving_line_ms"]),
                       "phases": phases(kind)}
        r["ratio_cold_vs_curl_file"] = r["s3_cold"]["ms"] / r["curl_file_ms"]
        r["ratio_cold_vs_curl_devnull"] = r["s3_cold"]["ms"] / r["curl_devnull_ms"]
        fetch = r["s3_cold"]["phases"]["fetch"]
        r["ratio_fetch_vs_curl_file"] = fetch / r["curl_file_ms"] if fetch is not None else None
        r["ratio_cache_hit_vs_local_disk"] = r["cache_hit"]["ms"] / r["local_disk"]["ms"]
        out[m] = r
    return out


def markdown(meta, settings, summary, commands):
    L = []
    L.append("#### Run of %s%s" % (meta.get("date"), " (smoke run: %d iteration(s) per model)"
                                   % settings["repeats"] if settings["repeats"] < 3 else ""))
    L.append("")
    L.append(harness.md_machine(meta))
    L.append("- Kernel %s · %s · %s · Node.js %s · s3rver %s · pilotlight %s · temp dir on %s"
             % (meta.get("kernel"), meta.get("os"), meta.get("curl"), meta.get("node"),
                meta.get("s3rver"), meta.get("git"), meta.get("tmp_fs")))
    L.append("- `%s`; load average at start %s"
             % (meta.get("pilotlight"), " ".join("%.2f" % x for x in meta.get("loadavg_start", ()))))
    L.append("- Settings: %d iteration(s) per model (medians), %d unrecorded warm-up iteration(s)"
             % (settings["repeats"], settings["warmup"]))
    L.append("- Invocation: `%s`" % settings["invocation"])
    L.append("")
    L.append("##### S3 cold start (fresh state dir: resolve + download + verify + load + first run)")
    L.append("")
    L.append("| model | size MB | cold start ms | fetch ms | load ms | first_run ms | curl → file ms | "
             "(+ fsync ms) | curl → /dev/null ms | cold / curl→file | fetch / curl→file |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for m, r in summary.items():
        c = r["s3_cold"]
        L.append("| %s | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            m, r["size_bytes"] / 1e6, fmt(c["ms"]), fmt(c["phases"]["fetch"]),
            fmt(c["phases"]["load"]), fmt(c["phases"]["first_run"], 2), fmt(r["curl_file_ms"]),
            fmt(r["curl_file_fsync_ms"]), fmt(r["curl_devnull_ms"]),
            fmt(r["ratio_cold_vs_curl_file"], 2), fmt(r["ratio_fetch_vs_curl_file"], 2)))
    L.append("")
    L.append("##### Cache-hit cold start (restart on the same state dir) beside a local-disk store")
    L.append("")
    L.append("| model | cache hit ms | fetch ms | load ms | first_run ms | local disk ms | fetch ms | "
             "load ms | first_run ms | cache hit / local disk |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for m, r in summary.items():
        h, d = r["cache_hit"], r["local_disk"]
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            m, fmt(h["ms"]), fmt(h["phases"]["fetch"]), fmt(h["phases"]["load"]),
            fmt(h["phases"]["first_run"], 2), fmt(d["ms"]), fmt(d["phases"]["fetch"]),
            fmt(d["phases"]["load"]), fmt(d["phases"]["first_run"], 2),
            fmt(r["ratio_cache_hit_vs_local_disk"], 2)))
    L.append("")
    L.append("Times are curl's `time_total` of the first invoke (client side) and the server's "
             "`Server-Timing` phases, medians over the iterations; min–max of the cold starts: "
             + "; ".join("%s S3 %s–%s, hit %s–%s, local %s–%s" % (
                 m, fmt(r["s3_cold"]["min_ms"]), fmt(r["s3_cold"]["max_ms"]),
                 fmt(r["cache_hit"]["min_ms"]), fmt(r["cache_hit"]["max_ms"]),
                 fmt(r["local_disk"]["min_ms"]), fmt(r["local_disk"]["max_ms"]))
                 for m, r in summary.items()) + ".")
    L.append("")
    L += harness.md_commands(commands)
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(
        description="Cold start with the model only in object storage (see bench/RESULTS.md).")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 iteration per model")
    ap.add_argument("--repeats", type=int, help="iterations per model (default 5; --quick: 1)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="unrecorded warm-up iterations per model (default 1)")
    ap.add_argument("--models", default="mlp_10mb big_100mb",
                    help="space-separated model names in --models-dir (default: %(default)s)")
    harness.add_common_args(ap)
    ap.add_argument("--invoke-timeout", type=float, default=300.0,
                    help="seconds for one invoke (default 300)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (stores, logs)")
    args = ap.parse_args()
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    if repeats < 1:
        ap.error("--repeats must be >= 1")
    models = args.models.split()
    pl = Path(args.build_dir) / "pilotlight"
    models_dir = Path(args.models_dir)

    harness.check_tools(("curl", "node"), pl)
    if any(not (models_dir / ("%s.onnx" % m)).is_file() for m in models):
        harness.make_models(models_dir)
    for m in models:
        if not (models_dir / ("%s.onnx" % m)).is_file():
            raise BenchError("model %s/%s.onnx missing" % (models_dir, m))

    invocation = harness.invocation()
    tmp = Path(tempfile.mkdtemp(prefix="pilotlight-s3cold."))
    s3 = None
    try:
        meta = machine_meta(pl, tmp)
        settings = {"quick": args.quick, "repeats": repeats, "warmup": args.warmup,
                    "models": models, "build_dir": args.build_dir, "models_dir": str(models_dir),
                    "invocation": invocation}
        log("temp dir %s; %d iteration(s) per model, %d warm-up" % (tmp, repeats, args.warmup))

        s3 = s3support.S3Server(buckets=(BUCKET,)).start(tmp / "s3")
        log("S3 server %s (s3rver, SigV4 verification on)" % s3.endpoint)
        base = CHILD_ENV
        env = s3.env(base)
        ctx = {"s3": s3, "tmp": tmp, "args": args, "env": env, "local_env": base, "pl": pl,
               "keys": {}, "sizes": {}, "bodies": {}, "local_stores": {}, "commands": {}}
        for m in models:
            src = models_dir / ("%s.onnx" % m)
            ctx["sizes"][m] = src.stat().st_size
            push = [pl, "model", "push", src, "--name", m, "--version", "1", "--promote",
                    "--store", s3.uri("bench-" + m), "--state-dir", tmp / "push-state"]
            log("model push %s → %s" % (m, s3.uri("bench-" + m)))
            run(push, env=env)
            ctx["commands"].setdefault("push (S3)", qcmd(push))
            shutil.rmtree(tmp / "push-state", ignore_errors=True)
            ctx["keys"][m] = s3support.version_key("bench-" + m, m, "1")
            local = tmp / ("local-%s" % m)
            push = [pl, "model", "push", src, "--name", m, "--version", "1", "--promote",
                    "--store", "file://%s" % local]
            run(push, env=base)
            ctx["commands"].setdefault("push (local)", qcmd(push))
            ctx["local_stores"][m] = local
            ctx["bodies"][m] = tmp / ("body_%s.json" % m)
            request_body(src, ctx["bodies"][m])
            # The object in S3 is the model file, byte for byte.
            obj = s3.object_path(ctx["keys"][m])
            if hashlib.sha256(obj.read_bytes()).digest() != hashlib.sha256(src.read_bytes()).digest():
                raise BenchError("the object stored for %s differs from %s" % (m, src))

        samples = []
        for m in models:
            for w in range(args.warmup):
                one_iteration(ctx, m, "w%d" % (w + 1), record=False)
            for i in range(1, repeats + 1):
                samples.append(one_iteration(ctx, m, i, record=True))

        summary = summarize(samples, models, ctx["sizes"])
        meta["loadavg_end"] = os.getloadavg()
        md = markdown(meta, settings, summary, ctx["commands"])
        doc = {"meta": meta, "settings": settings, "commands": ctx["commands"],
               "summary": summary, "samples": samples}
        harness.write_results(args.out, doc, md)
        return 0
    finally:
        harness.stop_servers()
        if s3 is not None:
            s3.stop()
        harness.remove_tmp(tmp, args.keep_tmp)


if __name__ == "__main__":
    harness.run_main(main)
