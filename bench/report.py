#!/usr/bin/python3
"""Aggregates a bench/run.sh run directory into results.json and a markdown section.

  report.py RUN_DIR            writes RUN_DIR/results.json, prints the markdown on stdout

Input: RUN_DIR/raw.jsonl (one record per measurement, see run.sh), meta.json, settings.json.
Every figure is the median over the repeats of that measurement.
"""
import json
import os
import statistics
import sys

GOAL_A_SLACK_US = 25.0
GOAL_B_MIN_RATIO = 0.5
GOAL_C_FACTOR, GOAL_C_SLACK_MS = 1.2, 5.0


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def load(run_dir):
    recs = []
    with open(os.path.join(run_dir, "raw.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))

    def j(name):
        try:
            with open(os.path.join(run_dir, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    return recs, j("meta.json"), j("settings.json")


def aggregate(recs, settings):
    models = settings.get("models", "").split()
    res = {"ort_raw": {}, "wrk": {}, "cold": {}, "server": {}, "nginx": {}, "commands": {}}

    for m in models:
        rs = [r["data"] for r in recs if r.get("kind") == "ort_raw" and r.get("target") == m]
        if not rs:
            continue
        res["ort_raw"][m] = {
            "samples": len(rs),
            "inputs": rs[0].get("inputs"),
            "threads": rs[0].get("threads"),
            "ort_version": rs[0].get("ort_version"),
            "env_create_ms": med([r.get("env_create_ms") for r in rs]),
            "session_create_ms": med([r.get("session_create_ms") for r in rs]),
            "first_run_ms": med([r.get("first_run_ms") for r in rs]),
            "cold_baseline_ms": med([r.get("cold_baseline_ms") for r in rs]),
            "run_p50_us": med([get(r, "run_us", "p50") for r in rs]),
            "run_p90_us": med([get(r, "run_us", "p90") for r in rs]),
            "run_p99_us": med([get(r, "run_us", "p99") for r in rs]),
            "second_session_create_ms": med([r.get("second_session_create_ms") for r in rs]),
            "second_session_first_run_ms": med([r.get("second_session_first_run_ms") for r in rs]),
        }

    for target in ["nginx"] + models:
        for conc in (1, 64):
            rs = [r for r in recs if r.get("kind") == "wrk" and r.get("target") == target
                  and r.get("conc") == conc]
            if not rs:
                continue
            ds = [r["data"] for r in rs]
            errs = {}
            for d in ds:
                for k, v in (d.get("errors") or {}).items():
                    errs[k] = errs.get(k, 0) + v
            res["wrk"][f"{target}@c{conc}"] = {
                "target": target, "conc": conc, "samples": len(ds),
                "p50_us": med([get(d, "latency_us", "p50") for d in ds]),
                "p90_us": med([get(d, "latency_us", "p90") for d in ds]),
                "p99_us": med([get(d, "latency_us", "p99") for d in ds]),
                "rps": med([d.get("rps") for d in ds]),
                "requests": sum(d.get("requests", 0) or 0 for d in ds),
                "errors": errs,
                "failed_runs": sum(1 for d in ds if "error" in d),
            }
            if target in ("nginx", models[0] if models else None):
                res["commands"].setdefault(f"wrk {target} c={conc}", rs[0].get("cmd"))

    for m in models:
        rs = [r for r in recs if r.get("kind") == "cold" and r.get("target") == m]
        if not rs:
            continue
        ds = [r["data"] for r in rs]
        ok = [d for d in ds if d.get("http_code") == 200]
        phases = {}
        for d in ok:
            for k, v in (get(d, "headers", "server_timing") or {}).items():
                phases.setdefault(k, []).append(v)
        totals = [d.get("time_total_ms") for d in ok]
        res["cold"][m] = {
            "samples": len(ds), "ok": len(ok),
            "cold_header_true": sum(1 for d in ds if get(d, "headers", "cold_start_header")),
            "total_ms_median": med(totals),
            "total_ms_min": min(totals) if totals else None,
            "total_ms_max": max(totals) if totals else None,
            "total_ms_first": totals[0] if totals else None,
            "server_timing_ms_median": {k: med(v) for k, v in phases.items()},
            "http_codes": sorted({d.get("http_code") for d in ds}),
        }
        res["commands"].setdefault("cold (curl)", rs[0].get("cmd"))

    for r in recs:
        k = r.get("kind")
        if k == "server_start":
            res["server"]["ready_s"] = get(r, "data", "ready_s")
            res["commands"]["serve"] = r.get("cmd")
        elif k == "server_exit":
            res["server"]["sigterm_exit_code"] = get(r, "data", "sigterm_exit_code")
        elif k == "nginx_setup":
            res["nginx"] = r.get("data")
        elif k == "ort_raw":
            res["commands"].setdefault("ort_raw", r.get("cmd"))
    return res


def goals(res):
    out = {}
    ort_t = res["ort_raw"].get("tiny_mlp", {})
    ng1, ng64 = res["wrk"].get("nginx@c1", {}), res["wrk"].get("nginx@c64", {})
    t1, t64 = res["wrk"].get("tiny_mlp@c1", {}), res["wrk"].get("tiny_mlp@c64", {})
    if t1.get("p50_us") is not None and ng1.get("p50_us") is not None \
            and ort_t.get("run_p50_us") is not None:
        budget = ng1["p50_us"] + ort_t["run_p50_us"] + GOAL_A_SLACK_US
        out["a_warm_p50"] = {
            "measured_us": t1["p50_us"], "nginx_p50_us": ng1["p50_us"],
            "run_p50_us": ort_t["run_p50_us"], "budget_us": budget,
            "added_over_nginx_plus_run_us": t1["p50_us"] - ng1["p50_us"] - ort_t["run_p50_us"],
            "ratio": t1["p50_us"] / budget, "met": t1["p50_us"] <= budget,
        }
    if t64.get("rps") and ng64.get("rps"):
        ratio = t64["rps"] / ng64["rps"]
        out["b_throughput"] = {"measured_rps": t64["rps"], "nginx_rps": ng64["rps"],
                               "ratio": ratio, "met": ratio >= GOAL_B_MIN_RATIO}
    out["c_cold_start"] = {}
    for m, c in res["cold"].items():
        o = res["ort_raw"].get(m, {})
        if c.get("total_ms_median") is None or o.get("cold_baseline_ms") is None:
            continue
        budget = GOAL_C_FACTOR * o["cold_baseline_ms"] + GOAL_C_SLACK_MS
        entry = {"measured_ms": c["total_ms_median"], "raw_create_plus_first_run_ms":
                 o["cold_baseline_ms"], "budget_ms": budget,
                 "ratio": c["total_ms_median"] / budget, "met": c["total_ms_median"] <= budget}
        if o.get("second_session_create_ms") is not None:
            warm = o["second_session_create_ms"] + o["second_session_first_run_ms"]
            entry["raw_warm_process_create_plus_first_run_ms"] = warm
            entry["ratio_vs_warm_process_baseline"] = c["total_ms_median"] / (
                GOAL_C_FACTOR * warm + GOAL_C_SLACK_MS)
        out["c_cold_start"][m] = entry
    return out


def f(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def verdict(met):
    return "met" if met else "**not met**"


def markdown(res, g, meta, settings):
    L = []
    quick = settings.get("quick") == 1 or settings.get("skip_server") == 1
    L.append(f"## Results: {meta.get('date', '?')}")
    L.append("")
    if quick:
        L.append("> Smoke run (`--quick` or `--skip-server`): short runs, one repeat. Not a "
                 "result to quote.")
        L.append("")
    cores = meta.get("cores_per_socket")
    L.append(f"- Machine: {meta.get('cpu_model')} · {meta.get('cpus')} CPUs "
             f"({meta.get('sockets')} socket × {cores} cores × {meta.get('threads_per_core')} "
             f"threads) · {meta.get('mem_gib')} GiB · hypervisor: {meta.get('hypervisor') or 'none'}")
    L.append(f"- Kernel {meta.get('kernel')} · {meta.get('os')} · {meta.get('nginx')} · "
             f"{meta.get('wrk')} · ONNX Runtime "
             f"{next((o.get('ort_version') for o in res['ort_raw'].values()), '?')} · "
             f"pilotlight {meta.get('git')}")
    L.append(f"- Settings: wrk duration {settings.get('duration')}, {settings.get('repeats')} "
             f"repeat(s) (medians), {settings.get('cold_repeats')} cold samples per model, "
             f"ort_raw {settings.get('ort_iters')} Run iterations, ort_raw flags "
             f"`{settings.get('ort_flags') or '(defaults, as the server)'}`, warm-up {settings.get('warmup')}")
    if settings.get("invocation"):
        L.append(f"- Invocation: `{settings['invocation']}`")
    L.append("")

    L.append("### Goals (issue 3)")
    L.append("")
    L.append("| goal | measured | target | ratio | verdict |")
    L.append("|---|---|---|---|---|")
    a = g.get("a_warm_p50")
    if a:
        L.append(f"| (a) tiny_mlp warm p50, c=1 | {f(a['measured_us'])} µs | ≤ nginx p50 "
                 f"{f(a['nginx_p50_us'])} + Run p50 {f(a['run_p50_us'])} + 25 = "
                 f"{f(a['budget_us'])} µs | {f(a['ratio'], 2)} (≤ 1) | {verdict(a['met'])} |")
    else:
        L.append("| (a) tiny_mlp warm p50, c=1 | – | nginx p50 + Run p50 + 25 µs | – | not measured |")
    b = g.get("b_throughput")
    if b:
        L.append(f"| (b) tiny_mlp throughput, c=64 | {f(b['measured_rps'], 0)} req/s | ≥ 0.5 × "
                 f"nginx {f(b['nginx_rps'], 0)} req/s | {f(b['ratio'], 2)} (≥ 0.5) | "
                 f"{verdict(b['met'])} |")
    else:
        L.append("| (b) tiny_mlp throughput, c=64 | – | ≥ 0.5 × nginx | – | not measured |")
    for m, c in g.get("c_cold_start", {}).items():
        L.append(f"| (c) cold start {m} | {f(c['measured_ms'])} ms | ≤ 1.2 × "
                 f"{f(c['raw_create_plus_first_run_ms'])} + 5 = {f(c['budget_ms'])} ms | "
                 f"{f(c['ratio'], 2)} (≤ 1) | {verdict(c['met'])} |")
    if not g.get("c_cold_start"):
        L.append("| (c) cold start | – | 1.2 × (create + first Run) + 5 ms | – | not measured |")
    L.append("")
    if a:
        L.append(f"What pilotlight adds over nginx + Run at c=1: "
                 f"{f(a['added_over_nginx_plus_run_us'])} µs (p50).")
        L.append("")

    L.append("### Warm latency, concurrency 1 (`wrk -t1 -c1`), and throughput, concurrency 64 "
             "(`wrk -t2 -c64`)")
    L.append("")
    L.append("| target | c=1 p50 µs | c=1 p90 µs | c=1 p99 µs | c=1 req/s | c=64 req/s | "
             "c=64 p50 µs | c=64 p99 µs | errors |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    targets = ["nginx"] + [t for t in settings.get("models", "").split()]
    for t in targets:
        w1, w64 = res["wrk"].get(f"{t}@c1"), res["wrk"].get(f"{t}@c64")
        if not w1 and not w64:
            continue
        w1, w64 = w1 or {}, w64 or {}
        errs = {}
        for w in (w1, w64):
            for k, v in (w.get("errors") or {}).items():
                if v:
                    errs[k] = errs.get(k, 0) + v
        fails = (w1.get("failed_runs") or 0) + (w64.get("failed_runs") or 0)
        etxt = ", ".join(f"{k} {v}" for k, v in errs.items()) or "0"
        if fails:
            etxt += f"; {fails} wrk run(s) failed"
        name = "nginx (fixed body)" if t == "nginx" else t
        L.append(f"| {name} | {f(w1.get('p50_us'))} | {f(w1.get('p90_us'))} | "
                 f"{f(w1.get('p99_us'))} | {f(w1.get('rps'), 0)} | {f(w64.get('rps'), 0)} | "
                 f"{f(w64.get('p50_us'))} | {f(w64.get('p99_us'))} | {etxt} |")
    L.append("")

    if res["cold"]:
        L.append("### Cold start (first request to a function scaled to zero; curl "
                 "`time_total`, model file on local disk)")
        L.append("")
        phase_names = []
        for c in res["cold"].values():
            for k in c["server_timing_ms_median"]:
                if k not in phase_names:
                    phase_names.append(k)
        L.append("| model | median ms | min ms | max ms | first ms | X-Cold-Start true | "
                 + " | ".join(f"{p} ms" for p in phase_names) + (" |" if phase_names else "|"))
        L.append("|---|---|---|---|---|---|" + "---|" * len(phase_names))
        for m, c in res["cold"].items():
            ph = " | ".join(f(c["server_timing_ms_median"].get(p), 2) for p in phase_names)
            L.append(f"| {m} | {f(c['total_ms_median'])} | {f(c['total_ms_min'])} | "
                     f"{f(c['total_ms_max'])} | {f(c['total_ms_first'])} | "
                     f"{c['cold_header_true']}/{c['samples']} | " + ph + (" |" if ph else ""))
        bad = {m: c["http_codes"] for m, c in res["cold"].items() if c["http_codes"] != [200]}
        if bad:
            L.append("")
            L.append(f"Non-200 cold responses: {bad}")
        L.append("")
        L.append("Phases are the server's `Server-Timing` header (medians).")
        L.append("")

    if res["ort_raw"]:
        L.append("### Raw ONNX Runtime in-process (`ort_raw`, a fresh process per sample, "
                 "global thread pools)")
        L.append("")
        L.append("| model | input | env create ms | session create ms | first Run ms | "
                 "create + first Run ms | Run p50 µs | Run p99 µs | 2nd session create + "
                 "first Run ms |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for m, o in res["ort_raw"].items():
            ins = ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in (o["inputs"] or []))
            second = None
            if o.get("second_session_create_ms") is not None:
                second = o["second_session_create_ms"] + o["second_session_first_run_ms"]
            L.append(f"| {m} | {ins} | {f(o['env_create_ms'])} | {f(o['session_create_ms'])} | "
                     f"{f(o['first_run_ms'], 2)} | {f(o['cold_baseline_ms'])} | "
                     f"{f(o['run_p50_us'])} | {f(o['run_p99_us'])} | {f(second)} |")
        L.append("")
        txt = ("The cold-start goal uses session create + first Run in a fresh process. The last "
               "column (a second session of the same model in the now-warm process) is what a "
               "long-running server could pay at best")
        if g.get("c_cold_start"):
            txt += ("; for reference, pilotlight's median cold start over 1.2 × that + 5 ms: " +
                    ", ".join(f"{m} {f(c.get('ratio_vs_warm_process_baseline'), 2)}"
                              for m, c in g["c_cold_start"].items()))
        L.append(txt + ".")
        L.append("")

    if res["server"] or res["nginx"]:
        L.append("### Server and nginx")
        L.append("")
        if res["server"].get("ready_s") is not None:
            L.append(f"- pilotlight start to all warm functions `warm`: "
                     f"{f(res['server']['ready_s'], 2)} s")
        if "sigterm_exit_code" in res["server"]:
            L.append(f"- pilotlight exit code after SIGTERM: {res['server']['sigterm_exit_code']}")
        if res["nginx"]:
            src = ("a copy of pilotlight's tiny_mlp response" if res["nginx"].get(
                "from_server_response") else "a synthetic body (no server in this run)")
            L.append(f"- nginx body: {res['nginx'].get('body_bytes')} bytes, {src}")
        L.append("")

    L.append("### Commands (as run; temp paths vary)")
    L.append("")
    L.append("```")
    for k, v in res["commands"].items():
        if v:
            L.append(f"# {k}")
            L.append(v)
    L.append("/usr/sbin/nginx -p $TMP/nginx -e $TMP/nginx/error.log -c $TMP/nginx/nginx.conf  "
             "# from bench/nginx.conf.in")
    L.append("```")
    return "\n".join(L) + "\n"


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    run_dir = argv[1]
    recs, meta, settings = load(run_dir)
    res = aggregate(recs, settings)
    g = goals(res)
    doc = {"meta": meta, "settings": settings, "results": res, "goals": g}
    with open(os.path.join(run_dir, "results.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
    sys.stdout.write(markdown(res, g, meta, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
