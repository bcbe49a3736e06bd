"""Helpers shared by pilotlight's integration tests.

Everything here talks to the real binary: the CLI through ``run_cli`` and the server through
``ServerFactory.start``, which runs ``pilotlight serve`` on a free loopback port and waits for
``GET /v1/health`` to answer. Nothing is mocked.

Environment:
    PILOTLIGHT_BIN     the binary (default <repo>/build/asan/pilotlight)
    PILOTLIGHT_MODELS  the folder tools/make_models.py wrote (default <repo>/build/models)
"""

import hashlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
# Relative paths in the environment are taken from the directory pytest was started in.
BIN = Path(os.environ.get("PILOTLIGHT_BIN") or REPO / "build" / "asan" / "pilotlight").absolute()
MODELS_DIR = Path(os.environ.get("PILOTLIGHT_MODELS") or REPO / "build" / "models").absolute()


def _child_env():
    """The environment for every pilotlight process: ONNX Runtime's own process-lifetime
    allocations are suppressed for LeakSanitizer (lsan.supp) unless the caller already chose
    LSAN_OPTIONS suppressions; everything else (ASAN_OPTIONS, ...) passes through."""
    env = dict(os.environ)
    supp = Path(__file__).resolve().parent / "lsan.supp"
    opts = env.get("LSAN_OPTIONS", "")
    if "suppressions=" not in opts:
        extra = "suppressions=%s:print_suppressions=0" % supp
        env["LSAN_OPTIONS"] = (opts + ":" + extra) if opts else extra
    env["PILOTLIGHT_ADMIN_TOKEN"] = ADMIN_TOKEN
    return env


# Every test server gets this admin token (auth.admin_token_env's default variable), and
# new_session() sends it, so tests of admin routes (promote, events, jobs, keys) need no setup.
# Tests of authentication itself send their own Authorization header or none (headers={
# "Authorization": None} removes the session's).
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
CHILD_ENV = _child_env()

STARTUP_TIMEOUT = 60.0   # seconds until GET /v1/health must answer
STOP_TIMEOUT = 20.0      # seconds between SIGTERM and SIGKILL
HTTP_TIMEOUT = 60.0      # per request

# Inputs and outputs of the models tools/make_models.py writes (see its docstring).
# name -> {"inputs": {input: (dtype, dims after N)}, "outputs": {output: (dtype, dims)}}
MODELS = {
    "digits": {"inputs": {"input": ("float32", [64])},
               "outputs": {"probabilities": ("float32", [10])}},
    "tiny_mlp": {"inputs": {"x": ("float32", [16])}, "outputs": {"y": ("float32", [4])}},
    "cnn": {"inputs": {"image": ("float32", [3, 64, 64])},
            "outputs": {"logits": ("float32", [10])}},
    "multi_input": {"inputs": {"features": ("float32", [4]), "ids": ("int64", [2])},
                    "outputs": {"score": ("float32", [1]), "ids_sum": ("int64", [1])}},
    "all_dtypes": {
        "inputs": {n: (t, [2]) for n, t in [("f32", "float32"), ("f64", "float64"),
                                             ("i32", "int32"), ("i64", "int64"),
                                             ("b", "bool"), ("u8", "uint8"), ("i8", "int8")]},
        "outputs": {n + "_out": (t, [2]) for n, t in [("f32", "float32"), ("f64", "float64"),
                                                      ("i32", "int32"), ("i64", "int64"),
                                                      ("b", "bool"), ("u8", "uint8"),
                                                      ("i8", "int8")]},
    },
}
# The generated models the session store holds (big_100mb and mlp_10mb are for benchmarks).
STORE_MODELS = ["digits", "tiny_mlp", "cnn", "multi_input", "all_dtypes"]
# Plus "sleep", made here by make_sleep_model: x float32 [N,1] -> y float32 [N,1],
# y = x + trunc(max(x)), computed by a Loop of trunc(max(x)) iterations (~1 µs each), so a
# request decides how long its Run holds the instance, with one thread and a 12-byte body.
MODELS["sleep"] = {"inputs": {"x": ("float32", [1])}, "outputs": {"y": ("float32", [1])}}
ALL_STORE_MODELS = STORE_MODELS + ["sleep"]


# --------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------
def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_session():
    """A keep-alive session that never goes through an HTTP proxy from the environment."""
    s = requests.Session()
    s.trust_env = False
    s.headers["Authorization"] = "Bearer " + ADMIN_TOKEN
    return s


def wait_until(predicate, timeout, interval=0.05, message="condition"):
    """Polls predicate() until it returns a truthy value and returns that; fails at the
    deadline with `message` (a string, or a callable evaluated then, to show the last state)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, text))
        time.sleep(interval)


def run_cli(*args, cwd=None, timeout=120, env=None, input=None):
    """Runs `pilotlight ARGS...` to completion; returns the CompletedProcess (text output)."""
    cmd = [str(BIN)] + [str(a) for a in args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout, env=env or CHILD_ENV, input=input)


def cli_output(proc):
    return "exit %s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        proc.returncode, proc.stdout[-4000:], sanitizer_excerpt(proc.stderr, 4000))


def push_model(store_uri, file, name, version, promote=True, cwd=None):
    args = ["model", "push", file, "--name", name, "--version", version]
    if promote:
        args.append("--promote")
    if store_uri is not None:
        args += ["--store", store_uri]
    p = run_cli(*args, cwd=cwd)
    assert p.returncode == 0, "model push %s failed:\n%s" % (name, cli_output(p))
    return p


def store_uri(path):
    return "file://" + str(Path(path).resolve())


_SAFE_SCALAR = re.compile(r"^[A-Za-z0-9_./:@+-]+$")


def to_yaml(obj, indent=0):
    """Block-style YAML for nested dicts of scalars (the config's shape). Strings that are
    plain YAML scalars stay unquoted, as a person writes `idle_timeout: 60s`."""
    pad = " " * indent
    lines = []
    for key, value in obj.items():
        if isinstance(value, dict):
            if value:
                lines.append("%s%s:" % (pad, key))
                lines.append(to_yaml(value, indent + 2))
            else:
                lines.append("%s%s: {}" % (pad, key))
        else:
            lines.append("%s%s: %s" % (pad, key, _yaml_scalar(value)))
    return "\n".join(lines)


def _yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml_scalar(x) for x in v) + "]"
    s = str(v)
    return s if _SAFE_SCALAR.match(s) else json.dumps(s)


# --------------------------------------------------------------------------------------
# Request bodies and reference outputs
# --------------------------------------------------------------------------------------
def tiny_rows(n, offset=0.0):
    """n deterministic, distinct rows for tiny_mlp (16 floats each)."""
    return [[round(((i * 16 + j) % 11) * 0.25 - 1.25 + offset, 4) for j in range(16)]
            for i in range(n)]


_digits_cache = {}


def digits_test():
    """(rows, labels) from digits_test.json: 64 ints 0..16 per row, label 0..9."""
    if "data" not in _digits_cache:
        with open(MODELS_DIR / "digits_test.json", "r", encoding="utf-8") as f:
            doc = json.load(f)
        rows, labels = doc["inputs"], doc["labels"]
        assert len(rows) == len(labels) and rows, "digits_test.json: inputs/labels mismatch"
        _digits_cache["data"] = (rows, labels)
    return _digits_cache["data"]


def digits_rows(n, start=0):
    rows, _ = digits_test()
    return [list(r) for r in rows[start:start + n]]


def cnn_body(batch, value="1"):
    """The JSON body of a cnn request with `batch` images of constant pixels, built as text
    (a 3x64x64 image is 12288 numbers; json.dumps of nested lists is slow in big batches)."""
    row = "[" + ",".join([value] * 64) + "]"
    channel = "[" + ",".join([row] * 64) + "]"
    image = "[" + ",".join([channel] * 3) + "]"
    return ('{"inputs":[' + ",".join([image] * batch) + "]}").encode("ascii")


def json_bytes(obj):
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def shape_of(nested):
    """Shape of a (rectangular) nested list; raises AssertionError on a ragged one."""
    shape = []
    cur = nested
    while isinstance(cur, list):
        shape.append(len(cur))
        if not cur:
            break
        cur = cur[0]

    def check(x, depth):
        if depth == len(shape):
            assert not isinstance(x, list), "ragged/deeper than expected: %r" % (shape,)
            return
        assert isinstance(x, list) and len(x) == shape[depth], "ragged nested array"
        for y in x:
            check(y, depth + 1)

    check(nested, 0)
    return shape


_make_models = {}


def reference_outputs(model, feeds):
    """Runs build/models/<model>.onnx through the numpy interpreter in tools/make_models.py
    (the one the generator verifies its own graphs with). feeds: name -> nested list.
    Returns name -> numpy array."""
    if "mod" not in _make_models:
        spec = importlib.util.spec_from_file_location("pl_make_models",
                                                      REPO / "tools" / "make_models.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod._import_heavy()
        _make_models["mod"] = mod
    mod = _make_models["mod"]
    import numpy as np
    import onnx

    m = onnx.load(str(MODELS_DIR / (model + ".onnx")))
    arrays = {}
    for name, value in feeds.items():
        dtype = MODELS[model]["inputs"][name][0]
        arrays[name] = np.asarray(value, dtype=np.dtype(dtype if dtype != "bool" else np.bool_))
    return mod._run_graph(m, arrays)


def make_sleep_model(path):
    """Writes the "sleep" model (see MODELS["sleep"]) with python3-onnx."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    one = numpy_helper.from_array(np.array(1, dtype=np.float32))
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Constant", [], ["one"], value=one),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
        "sleep_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["N", 1])])
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["x_max"], keepdims=0),
        helper.make_node("Cast", ["x_max"], ["trip_count"], to=TensorProto.INT64),
        helper.make_node("Constant", [], ["keep_going"],
                         value=numpy_helper.from_array(np.array(True))),
        helper.make_node("Loop", ["trip_count", "keep_going", "x"], ["y"], body=body),
    ]
    graph = helper.make_graph(
        nodes, "sleep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="pilotlight-integration-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def sleep_body(iterations):
    return json_bytes({"inputs": [[float(iterations)]]})


class SleepCalibration:
    """How many Loop iterations of the sleep model make a Run last `seconds` on this machine
    (measured through the server, so it includes whatever the build costs)."""

    def __init__(self, server, function="sleep"):
        def timed(n):
            t0 = time.monotonic()
            r = server.invoke(function, sleep_body(n))
            assert r.status_code == 200, "sleep calibration: %d %s" % (r.status_code, r.text[:300])
            return time.monotonic() - t0

        timed(1)
        base = min(timed(1) for _ in range(3))
        n = 20000
        while True:
            t = timed(n)
            if t - base >= 0.05 or n >= 5_000_000:
                break
            n *= 4
        self.per_iteration = max((t - base) / n, 1e-8)

    def iterations(self, seconds):
        return int(min(max(seconds / self.per_iteration, 1000), 16_000_000))


# --------------------------------------------------------------------------------------
# Prometheus text exposition and Server-Timing
# --------------------------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


class Metrics:
    """A parsed Prometheus text exposition: samples (name, labels, value) and # TYPE lines."""

    def __init__(self, text):
        self.text = text
        self.samples = []
        self.types = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                continue
            m = _SAMPLE.match(line)
            assert m, "metrics line %d is not a valid sample: %r" % (lineno, line)
            name, label_text, value = m.group(1), m.group(2), m.group(3)
            labels = {}
            if label_text:
                inner = label_text[1:-1]
                pos = 0
                while pos < len(inner):
                    lm = _LABEL.match(inner, pos)
                    assert lm, "metrics line %d: bad labels %r" % (lineno, label_text)
                    labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace(
                        "\\n", "\n").replace("\\\\", "\\")
                    pos = lm.end()
                    if lm.group(3) == "":
                        break
            self.samples.append((name, labels, float(value)))

    def find(self, name, **labels):
        """[(labels, value)] of samples called `name` whose labels include `labels`."""
        out = []
        for n, ls, v in self.samples:
            if n == name and all(ls.get(k) == str(val) for k, val in labels.items()):
                out.append((ls, v))
        return out

    def sum(self, name, **labels):
        return sum(v for _, v in self.find(name, **labels))

    def value(self, name, **labels):
        """The one sample's value, or None when there is none."""
        found = self.find(name, **labels)
        assert len(found) <= 1, "more than one sample for %s%r: %r" % (name, labels, found)
        return found[0][1] if found else None

    def names(self):
        return {n for n, _, _ in self.samples}

    def family_type(self, family):
        return self.types.get(family)

    def check_histogram(self, family, **labels):
        """Checks the histogram samples of `family` matching `labels` (grouped by their other
        labels): buckets cumulative, +Inf bucket == _count, _sum present. Returns the total count."""
        buckets = self.find(family + "_bucket", **labels)
        assert buckets, "no %s_bucket samples with %r:\n%s" % (family, labels, self.text[:3000])
        groups = {}
        for ls, v in buckets:
            key = tuple(sorted((k, x) for k, x in ls.items() if k != "le"))
            groups.setdefault(key, []).append((ls["le"], v))
        total = 0.0
        for key, bs in groups.items():
            keyd = dict(key)
            les = sorted(bs, key=lambda p: float(p[0]))
            assert les[-1][0] in ("+Inf", "Inf", "inf"), "%s%r has no +Inf bucket" % (family, keyd)
            values = [v for _, v in les]
            assert values == sorted(values), "%s%r buckets not cumulative: %r" % (family, keyd, les)
            count = self.value(family + "_count", **keyd)
            assert count is not None, "%s_count%r missing" % (family, keyd)
            assert count == values[-1], "%s%r: +Inf bucket %s != _count %s" % (
                family, keyd, values[-1], count)
            assert self.value(family + "_sum", **keyd) is not None, "%s_sum%r missing" % (family, keyd)
            total += count
        return total


def parse_server_timing(header):
    """`fetch;dur=1.2, load;dur=3` -> {"fetch": 1.2, "load": 3.0} (None when no dur)."""
    out = {}
    for part in header.split(","):
        part = part.strip()
        if not part:
            continue
        items = [p.strip() for p in part.split(";")]
        dur = None
        for p in items[1:]:
            if p.lower().startswith("dur="):
                dur = float(p[4:].strip('"'))
        out[items[0]] = dur
    return out


# --------------------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------------------
_SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                      "WARNING: ThreadSanitizer", "terminate called", "Assertion `")


def sanitizer_excerpt(text, limit):
    """The start of the first sanitizer/abort report in `text` (where the useful frames are),
    else the tail."""
    starts = [i for i in (text.find(m) for m in _SANITIZER_MARKERS) if i >= 0]
    if starts:
        begin = text.rfind("\n", 0, min(starts)) + 1
        return text[begin:begin + limit]
    return text[-limit:]


class StartupError(Exception):
    pass


class Server:
    """One running `pilotlight serve`. Owns its process (by PID) and a keep-alive session."""

    def __init__(self, proc, port, workdir, argv, expect_exit):
        self.proc = proc
        self.port = port
        self.workdir = Path(workdir)
        self.argv = argv
        self.expect_exit = expect_exit
        self.url = "http://127.0.0.1:%d" % port
        self.session = new_session()
        self.log_path = self.workdir / "server.log"
        self.stdout_path = self.workdir / "stdout.txt"
        self.stderr_path = self.workdir / "stderr.txt"
        self.state_dir = None  # the --state-dir ServerFactory.start passed, if any
        self.returncode = None

    # HTTP ------------------------------------------------------------------------------
    def request(self, method, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        if not self.alive():
            raise AssertionError("the server had already exited (code %s) before %s %s\n%s" % (
                self.proc.returncode, method, path, self.diagnostics(2000)))
        try:
            return self.session.request(method, self.url + path, **kw)
        except requests.ConnectionError as e:
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                raise e from None  # still running: the connection error is the finding
            raise AssertionError("the server died during %s %s (exit code %s)\n%s" % (
                method, path, self.proc.returncode, self.diagnostics(2000))) from None

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def invoke(self, function, body, **kw):
        if isinstance(body, (bytes, str)):
            kw.setdefault("headers", {}).setdefault("Content-Type", "application/json")
            return self.post("/v1/functions/%s/invoke" % function, data=body, **kw)
        return self.post("/v1/functions/%s/invoke" % function, json=body, **kw)

    def infer(self, body, **kw):
        if isinstance(body, (bytes, str)):
            kw.setdefault("headers", {}).setdefault("Content-Type", "application/json")
            return self.post("/v1/infer", data=body, **kw)
        return self.post("/v1/infer", json=body, **kw)

    def health(self, warm=False, timeout=HTTP_TIMEOUT):
        r = self.get("/v1/health", params={"warm": "true"} if warm else None, timeout=timeout)
        assert r.status_code == 200, "GET /v1/health%s -> %d %s" % (
            "?warm=true" if warm else "", r.status_code, r.text[:1000])
        return r.json()

    def function_health(self, name):
        return self.health()["functions"][name]

    def metrics(self):
        r = self.get("/metrics")
        assert r.status_code == 200, "GET /metrics -> %d %s" % (r.status_code, r.text[:500])
        return Metrics(r.text)

    def wait_state(self, function, state, timeout=30.0):
        """Polls GET /v1/health until `function` is in `state`; returns its health entry."""
        def check():
            f = self.function_health(function)
            return f if f.get("state") == state else None
        return wait_until(check, timeout, 0.1, lambda: "%s to become %s; health now: %s" % (
            function, state, self.health()))

    def wait_cold(self, function, timeout=30.0):
        """Polls GET /v1/health until `function` has scaled to zero (cold, 0 instances)."""
        def check():
            f = self.function_health(function)
            return f if f.get("state") == "cold" and f.get("instances") == 0 else None
        return wait_until(check, timeout, 0.1, lambda: "%s to scale to zero; health now: %s" % (
            function, self.health()))

    def warm_all(self):
        """GET /v1/health?warm=true and check every function is warm."""
        h = self.health(warm=True)
        for name, f in h["functions"].items():
            assert f.get("state") == "warm", "after ?warm=true %s is %r" % (name, f)
        return h

    # Process and logs ---------------------------------------------------------------------
    def alive(self):
        return self.proc.poll() is None

    def _read(self, path):
        try:
            return Path(path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self):
        """The request/server log (--log-file)."""
        return self._read(self.log_path)

    def stderr_text(self):
        return self._read(self.stderr_path)

    def stdout_text(self):
        return self._read(self.stdout_path)

    def log_lines(self):
        return [l for l in self.log_text().splitlines() if l.strip()]

    def log_records(self):
        """Log lines that parse as JSON objects."""
        out = []
        for line in self.log_lines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def wait_log_record(self, predicate, timeout=15.0, what="log record"):
        def check():
            for rec in self.log_records():
                if predicate(rec):
                    return rec
            return None
        try:
            return wait_until(check, timeout, 0.1, what)
        except AssertionError as e:
            raise AssertionError("%s\n--- log ---\n%s" % (e, self.log_text()[-4000:]))

    def diagnostics(self, limit=6000):
        return "argv: %s\nexit: %s\n--- log (%s) ---\n%s\n--- stderr ---\n%s\n--- stdout ---\n%s" % (
            " ".join(self.argv), self.proc.poll(), self.log_path, self.log_text()[-limit:],
            sanitizer_excerpt(self.stderr_text(), limit), self.stdout_text()[-2000:])

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def terminate(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code, or None when it
        had to be killed."""
        self.session.close()
        if self.proc.poll() is not None:
            self.returncode = self.proc.returncode
            return self.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.kill()
            return None
        return rc

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


_DEFAULT = object()


class ServerFactory:
    """Starts servers under `root`; stop_all() stops every one it started, by PID."""

    def __init__(self, root, default_store_uri):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.default_store_uri = default_store_uri
        self.servers = []
        self._lock = threading.Lock()
        self._count = 0

    def _workdir(self):
        with self._lock:
            self._count += 1
            d = self.root / ("server%d" % self._count)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start(self, config=None, extra_args=(), *, store=_DEFAULT, log_format="json",
              listen=True, port=None, expect_exit=0, wait=True, cwd=None, log_file=True,
              state_dir=True, env=None):
        """Starts `pilotlight serve`.

        config: YAML text, a dict (written as YAML) or None (no --config).
        store: URI for --store (default: the session store); None passes no --store.
        listen: pass --listen 127.0.0.1:PORT (False: the config names the address; give port).
        expect_exit: the exit code teardown asserts after SIGTERM (None: don't check).
        wait: wait until GET /v1/health answers (fails with the log if the process dies).
        state_dir: True: --state-dir <workdir>/state; a path: that folder (shared by restarts);
        False: none. env: the process environment (default CHILD_ENV), e.g. s3.env(CHILD_ENV).
        """
        attempts = 3 if (listen and port is None) else 1
        last_error = None
        for _ in range(attempts):
            p = port or free_port()
            wd = self._workdir()
            argv = [str(BIN), "serve"]
            if config is not None:
                text = to_yaml(config) if isinstance(config, dict) else str(config)
                cfg = wd / "pilotlight.yaml"
                cfg.write_text(text + "\n", encoding="utf-8")
                argv += ["--config", str(cfg)]
            if listen:
                argv += ["--listen", "127.0.0.1:%d" % p]
            s = self.default_store_uri if store is _DEFAULT else store
            if s:
                argv += ["--store", s]
            state = None
            if state_dir is True:
                state = wd / "state"
            elif state_dir:
                state = Path(state_dir)
            if state is not None:
                argv += ["--state-dir", str(state)]
            if log_format:
                argv += ["--log-format", log_format]
            if log_file:
                argv += ["--log-file", str(wd / "server.log")]
            argv += [str(a) for a in extra_args]
            with open(wd / "stdout.txt", "wb") as out, open(wd / "stderr.txt", "wb") as err:
                proc = subprocess.Popen(argv, cwd=str(cwd or wd), stdout=out, stderr=err,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        env=env or CHILD_ENV)
            server = Server(proc, p, wd, argv, expect_exit)
            server.state_dir = state
            with self._lock:
                self.servers.append(server)
            if not wait:
                return server
            try:
                self._wait_ready(server)
                return server
            except StartupError as e:
                last_error = e
                text = (server.log_text() + server.stderr_text()).lower()
                if "in use" in text or "eaddrinuse" in text:
                    server.expect_exit = None
                    continue  # lost the race for the port: try another one
                break
        raise AssertionError(str(last_error))

    def shared(self, config=None, extra_args=(), **options):
        """A server shared by several tests (module scope) that is started again when a test
        crashed it, so one crash fails one test, not every later one. The dead server still
        fails teardown with its exit code."""
        return SharedServer(self, config, extra_args, options)

    def _wait_ready(self, server, timeout=STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        probe = new_session()
        try:
            while True:
                if not server.alive():
                    server.expect_exit = None
                    raise StartupError("pilotlight serve exited before answering "
                                       "GET /v1/health\n" + server.diagnostics())
                try:
                    probe.get(server.url + "/v1/health", timeout=2)
                    return
                except requests.RequestException:
                    pass
                if time.monotonic() >= deadline:
                    server.expect_exit = None
                    server.kill()
                    raise StartupError("GET /v1/health did not answer within %ds\n%s" % (
                        timeout, server.diagnostics()))
                time.sleep(0.05)
        finally:
            probe.close()

    def stop_all(self):
        """Stops every server (SIGTERM, then SIGKILL after STOP_TIMEOUT). Returns the problems:
        servers that had to be killed or exited with an unexpected code."""
        problems = []
        with self._lock:
            servers, self.servers = list(self.servers), []
        for s in reversed(servers):
            already_exited = s.proc.poll() is not None
            rc = s.terminate()
            if s.expect_exit is None:
                continue
            if rc is None:
                problems.append("server on port %d did not exit within %ds of SIGTERM (killed)\n%s"
                                % (s.port, STOP_TIMEOUT, s.diagnostics()))
            elif rc != s.expect_exit:
                problems.append("server on port %d %s with code %s (expected %s)\n%s" % (
                    s.port, "had exited" if already_exited else "exited after SIGTERM", rc,
                    s.expect_exit, s.diagnostics()))
        return problems


class SharedServer:
    def __init__(self, factory, config, extra_args, options):
        self.factory = factory
        self.config = config
        self.extra_args = extra_args
        self.options = options
        self.server = None

    def get(self):
        if self.server is None or not self.server.alive():
            self.server = self.factory.start(self.config, self.extra_args, **self.options)
        return self.server


# --------------------------------------------------------------------------------------
# Assertions used by several files
# --------------------------------------------------------------------------------------
def assert_ok(r, what=""):
    assert r.status_code == 200, "%s expected 200, got %d: %s" % (what, r.status_code, r.text[:2000])
    return r.json()


def assert_error(r, status, etype, request_id=None):
    """A typed JSON error: status, {"error": {"type", "message", "request_id"}}, the request id
    echoed in X-Request-Id and equal to the body's."""
    assert r.status_code == status, "expected %d %s, got %d: %s" % (
        status, etype, r.status_code, r.text[:2000])
    ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith("application/json"), "error Content-Type %r: %s" % (ctype, r.text[:500])
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    err = body["error"]
    assert err.get("type") == etype, "expected error type %r, got %r" % (etype, err)
    assert isinstance(err.get("message"), str) and err["message"].strip(), err
    rid = err.get("request_id")
    assert isinstance(rid, str) and rid, "error without request_id: %r" % err
    assert r.headers.get("X-Request-Id") == rid, "X-Request-Id %r != body request_id %r" % (
        r.headers.get("X-Request-Id"), rid)
    if request_id is not None:
        assert rid == request_id, (rid, request_id)
    return err


def assert_still_serving(server, function="tiny_mlp"):
    """After an error the server still answers a good request."""
    r = server.invoke(function, {"inputs": tiny_rows(1)} if function == "tiny_mlp"
                      else {"inputs": digits_rows(1)})
    body = assert_ok(r, "good request after an error:")
    assert "outputs" in body, body
    return body


# --------------------------------------------------------------------------------------
# Raw HTTP on a socket (for what an HTTP library hides: exact request heads, trickled bytes,
# answers sent before any request, connections from several loopback addresses)
# --------------------------------------------------------------------------------------
def connect(port, source=None, timeout=10.0):
    """A TCP connection to 127.0.0.1:port. `source`: a loopback address to connect from
    (Linux lets a client bind any 127.x.y.z), so tests can act as several client addresses."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if source:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
    except BaseException:
        s.close()
        raise
    return s


class RawResponse:
    """One HTTP response read off a socket: status, reason, headers (lower-case names), body,
    and `elapsed` (seconds from the read call until the whole response had arrived)."""

    def __init__(self, status, reason, headers, body, elapsed):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.elapsed = elapsed

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<HTTP %s %s %r %r>" % (self.status, self.reason, self.headers, self.body[:300])


def read_response(sock, timeout=10.0):
    """Reads one response (its head, then a Content-Length body, or up to EOF without one).
    Returns a RawResponse, or None when the connection was closed (EOF or reset) before any
    byte of a response arrived. Raises socket.timeout when nothing complete arrived in time."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    data = b""

    def more():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("no complete response within %.1fs (got %r)" % (timeout, data[:300]))
        sock.settimeout(remaining)
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""

    while b"\r\n\r\n" not in data:
        chunk = more()
        if not chunk:
            if not data:
                return None
            raise AssertionError("connection closed inside a response head: %r" % data[:500])
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert len(parts) >= 2 and parts[0].startswith("HTTP/1."), "not an HTTP response: %r" % head[:300]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(body) < n:
            chunk = more()
            if not chunk:
                raise AssertionError("connection closed inside a response body (%d of %d bytes)"
                                     % (len(body), n))
            body += chunk
    else:
        while True:
            chunk = more()
            if not chunk:
                break
            body += chunk
    return RawResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body,
                       time.monotonic() - t0)


def wait_closed(sock, timeout=10.0):
    """Waits until the peer closes the connection (EOF or reset). Returns (seconds waited,
    bytes received meanwhile); raises AssertionError when it is still open after `timeout`."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    got = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("connection still open after %.1fs (received %r)" % (timeout, got[:300]))
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return time.monotonic() - t0, got
        got += chunk


def raw_roundtrip(port, data, source=None, timeout=10.0):
    """Sends `data` on a new connection and returns its first response (None: closed before
    any answer). Sending may fail once the server has answered and closed early; that is
    ignored and the answer read anyway."""
    with connect(port, source, timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_response(s, timeout)


def http_request(method, target, headers=(), body=b"", host="127.0.0.1"):
    """The bytes of one HTTP/1.1 request: request line, Host, `headers` (pairs), a
    Content-Length when there is a body, the blank line and the body."""
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: %s" % host]
    lines += ["%s: %s" % (k, v) for k, v in headers]
    if body:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def tiny_invoke_request(keep_alive=True):
    body = json_bytes({"inputs": tiny_rows(1)})
    headers = [("Content-Type", "application/json")]
    if not keep_alive:
        headers.append(("Connection", "close"))
    return http_request("POST", "/v1/functions/tiny_mlp/invoke", headers, body)


def assert_raw_error(resp, status, etype=None, what=""):
    """A RawResponse that is a typed JSON error with `status` (and type `etype` when given):
    {"error": {"type", "message", "request_id"}}, X-Request-Id equal to the body's id.
    Returns the error object."""
    assert resp is not None, "%s expected %d, the connection was closed without an answer" % (
        what, status)
    assert resp.status == status, "%s expected %d%s, got %r" % (
        what, status, " " + etype if etype else "", resp)
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), "%s error Content-Type %r: %r" % (what, ctype, resp)
    try:
        doc = resp.json()
    except ValueError:
        raise AssertionError("%s error body is not JSON: %r" % (what, resp)) from None
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), "%s %r" % (what, doc)
    err = doc["error"]
    if etype is not None:
        assert err.get("type") == etype, "%s expected error type %r, got %r" % (what, etype, err)
    assert isinstance(err.get("type"), str) and err["type"], "%s %r" % (what, err)
    assert isinstance(err.get("message"), str) and err["message"].strip(), "%s %r" % (what, err)
    rid = err.get("request_id")
    assert isinstance(rid, str) and rid, "%s error without request_id: %r" % (what, err)
    assert resp.headers.get("x-request-id") == rid, "%s X-Request-Id %r != body request_id %r" % (
        what, resp.headers.get("x-request-id"), rid)
    return err


def assert_retry_after(resp, what=""):
    ra = resp.headers.get("retry-after") if isinstance(resp, RawResponse) else resp.headers.get("Retry-After")
    assert ra is not None and ra.strip().isdigit(), "%s without a delta-seconds Retry-After: %r" % (
        what, resp)
    return int(ra)
