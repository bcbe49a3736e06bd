#!/usr/bin/python3
"""Small helpers for bench/run.sh (standard library only).

  util.py free-port
  util.py body ORT_RAW_JSON OUT.json [--seed N]      request body from ort_raw's input list
  util.py nginx-conf TEMPLATE OUT PREFIX PORT BODY_FILE
  util.py synthetic-body NBYTES OUT                  a JSON body of exactly NBYTES bytes
  util.py wait-health URL TIMEOUT_S [FN=STATE ...]   wait until /v1/health answers and the
                                                     functions are in the given states
  util.py health-state URL FN
  util.py server-timing HEADERS_FILE                 Server-Timing + X-Cold-Start as JSON
  util.py meta                                       machine description as JSON
  util.py record RAW.jsonl key=value ... [data=@FILE] append one JSON line (values that parse
                                                     as JSON are stored as JSON; @FILE loads a
                                                     JSON file, or the last "WRK_JSON " line in it)
"""
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(port)


def _nested(shape, gen):
    if len(shape) == 1:
        return [gen() for _ in range(shape[0])]
    return [_nested(shape[1:], gen) for _ in range(shape[0])]


def body(ort_json_path, out_path, seed=42):
    """Writes {"inputs": [[...]]} (one input) or {"inputs": {name: [[...]]}} (several)."""
    with open(ort_json_path) as f:
        info = json.load(f)
    rng = random.Random(seed)
    gens = {
        "float32": lambda: round(rng.uniform(-1, 1), 5),
        "float64": lambda: round(rng.uniform(-1, 1), 5),
        "int32": lambda: rng.randrange(10),
        "int64": lambda: rng.randrange(10),
        "uint8": lambda: rng.randrange(10),
        "int8": lambda: rng.randrange(10),
        "bool": lambda: rng.random() < 0.5,
    }
    tensors = {i["name"]: _nested(i["shape"], gens[i["dtype"]]) for i in info["inputs"]}
    if len(tensors) == 1:
        doc = {"inputs": next(iter(tensors.values()))}
    else:
        doc = {"inputs": tensors}
    with open(out_path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))


def synthetic_body(nbytes, out_path):
    head = '{"model":"tiny_mlp","version":"1","outputs":[[0.0]],"pad":"'
    tail = '"}'
    pad = max(0, nbytes - len(head) - len(tail))
    with open(out_path, "w") as f:
        f.write(head + "x" * pad + tail)


def nginx_conf(template, out, prefix, port, body_file):
    with open(body_file, "rb") as f:
        b = f.read().decode("utf-8").rstrip("\n")
    if "'" in b or "$" in b or "\\" in b:
        # Not representable verbatim in nginx's single-quoted `return` text: keep the size.
        n = len(b.encode())
        b = '{"pad":"' + "x" * max(0, n - 10) + '"}'
    with open(template) as f:
        t = f.read()
    t = t.replace("@PREFIX@", prefix).replace("@PORT@", str(port)).replace("@BODY@", b)
    with open(out, "w") as f:
        f.write(t)


def _health(url):
    with urllib.request.urlopen(url.rstrip("/") + "/v1/health", timeout=5) as r:
        return json.loads(r.read())


def wait_health(url, timeout_s, wants):
    deadline = time.monotonic() + float(timeout_s)
    want = dict(w.split("=", 1) for w in wants)
    last = None
    while time.monotonic() < deadline:
        try:
            h = _health(url)
            last = h
            fns = h.get("functions", {})
            if all(fns.get(fn, {}).get("state") == st for fn, st in want.items()):
                return 0
        except (urllib.error.URLError, ConnectionError, OSError, ValueError) as e:
            last = repr(e)
        time.sleep(0.02)
    print(f"wait-health: timed out after {timeout_s}s waiting for {want}; last: {last}",
          file=sys.stderr)
    return 1


def health_state(url, fn):
    print(_health(url).get("functions", {}).get(fn, {}).get("state", "?"))


def server_timing(headers_file):
    """The HTTP status, X-Cold-Start and Server-Timing durations of a `curl -D` headers file."""
    st, cold, status = {}, None, None
    with open(headers_file, errors="replace") as f:
        for line in f:
            line = line.strip()
            m = re.match(r"HTTP/\S+\s+(\d+)", line)
            if m:
                status = int(m.group(1))
            if ":" not in line:
                continue
            k, v = line.split(":", 1)
            k = k.strip().lower()
            if k == "server-timing":
                for part in v.split(","):
                    fields = [p.strip() for p in part.split(";")]
                    name = fields[0]
                    for p in fields[1:]:
                        if p.startswith("dur="):
                            try:
                                st[name] = float(p[4:])
                            except ValueError:
                                pass
            elif k == "x-cold-start":
                cold = v.strip().lower() == "true"
    return {"status": status, "cold_start_header": cold, "server_timing": st}


def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def meta():
    lscpu = _run(["lscpu"])

    def field(name):
        m = re.search(rf"^{re.escape(name)}:\s*(.+)$", lscpu, re.M)
        return m.group(1).strip() if m else None

    mem_kib = None
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        pass
    try:
        nginx_v = subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True, text=True).stderr
    except OSError:  # bench/run.sh checks for nginx; s3_cold.py and process.py do not need it
        nginx_v = ""
    wrk_v = _run(["wrk", "-v"]).splitlines()
    git = _run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short",
                "HEAD"]).strip()
    dirty = _run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "status",
                  "--porcelain"]).strip()
    return {
        "cpu_model": field("Model name"),
        "cpus": os.cpu_count(),
        "cores_per_socket": field("Core(s) per socket"),
        "threads_per_core": field("Thread(s) per core"),
        "sockets": field("Socket(s)"),
        "hypervisor": field("Hypervisor vendor"),
        "mem_gib": round(mem_kib / 1048576, 1) if mem_kib else None,
        "kernel": platform.release(),
        "os": _run(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]).strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "nginx": nginx_v.strip().replace("nginx version: ", ""),
        "wrk": wrk_v[0].split(" [")[0].strip() if wrk_v else None,
        "git": (git + ("-dirty" if dirty else "")) if git else None,
    }


def _value(v):
    if v.startswith("@"):
        with open(v[1:], errors="replace") as f:
            text = f.read()
        lines = [ln[len("WRK_JSON "):] for ln in text.splitlines() if ln.startswith("WRK_JSON ")]
        try:
            return json.loads(lines[-1] if lines else text)
        except ValueError:
            return {"error": "unparsable output", "output": text[-2000:]}
    try:
        return json.loads(v)
    except ValueError:
        return v


def record(raw_path, pairs):
    rec = {}
    for p in pairs:
        k, v = p.split("=", 1)
        rec[k] = _value(v)
    with open(raw_path, "a") as f:
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "free-port":
        free_port()
    elif cmd == "body":
        body(args[0], args[1], int(args[3]) if len(args) > 3 and args[2] == "--seed" else 42)
    elif cmd == "synthetic-body":
        synthetic_body(int(args[0]), args[1])
    elif cmd == "nginx-conf":
        nginx_conf(*args[:5])
    elif cmd == "wait-health":
        return wait_health(args[0], args[1], args[2:])
    elif cmd == "health-state":
        health_state(args[0], args[1])
    elif cmd == "server-timing":
        print(json.dumps(server_timing(args[0])))
    elif cmd == "record":
        record(args[0], args[1:])
    elif cmd == "meta":
        print(json.dumps(meta()))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
