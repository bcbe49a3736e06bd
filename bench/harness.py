"""What bench/s3_cold.py and bench/process.py share (standard library only): logging, running
commands, one `pilotlight serve` process, the first request timed by curl, the machine
description, the output files and the main() wrapper. Not a command; see those scripts."""
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import util  # bench/util.py: Server-Timing headers, machine description

ROOT = Path(__file__).resolve().parent.parent
PROG = Path(sys.argv[0]).stem  # the log prefix: "s3_cold", "process"
STOP_TIMEOUT = 10.0
# The environment of every child: ours without AWS_* and proxy variables (the S3 credentials
# are added only where needed).
CHILD_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith("AWS_") and k.lower() not in ("http_proxy", "https_proxy",
                                                               "all_proxy")}


def log(msg):
    print("[%s %s] %s" % (PROG, time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


def qcmd(argv):
    return " ".join(shlex.quote(str(a)) for a in argv)


def run(argv, env=None, timeout=600):
    r = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise BenchError("%s exited with %d:\n%s%s" % (qcmd(argv), r.returncode, r.stdout[-2000:],
                                                       r.stderr[-2000:]))
    return r.stdout


def output(argv):
    """A command's stripped stdout, None when it cannot run (for version strings)."""
    try:
        return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1):
    if x is None:
        return "–"
    return "{:,.{d}f}".format(x, d=digits)


# ------------------------------------------------------------------------------ processes
class Server:
    """One `pilotlight serve` process (started here; stopped by its own PID only). source: the
    arguments naming what to serve, ["--store", URI] or ["--config", PATH]."""

    live = []  # every Server not yet stopped, for cleanup on error

    def __init__(self, pl, source, state_dir, log_path, start_timeout, env=CHILD_ENV):
        self.argv = [str(pl), "serve", *[str(a) for a in source], "--state-dir", str(state_dir),
                     "--listen", "127.0.0.1:0", "--log-format", "json",
                     "--log-file", str(log_path)]
        self.log_path = Path(log_path)
        self.stderr_path = self.log_path.with_suffix(".stderr")
        self.log_path.unlink(missing_ok=True)
        t0 = time.monotonic()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, env=env)
        Server.live.append(self)
        self.url = None
        deadline = t0 + start_timeout
        while self.url is None:
            for rec in self.records():
                if rec.get("msg") == "pilotlight serving":
                    self.url = rec["url"]
                    break
            if self.url:
                break
            if self.proc.poll() is not None:
                raise BenchError("pilotlight serve exited with %s before serving:\n%s"
                                 % (self.proc.returncode, self.diagnostics()))
            if time.monotonic() > deadline:
                raise BenchError("pilotlight serve logged no 'pilotlight serving' within %ss:\n%s"
                                 % (start_timeout, self.diagnostics()))
            time.sleep(0.01)
        # Start to the "pilotlight serving" line seen in the log. Not a start-up time: the log
        # is flushed once a second, so the server has been listening for up to 1 s by then.
        self.start_ms = (time.monotonic() - t0) * 1000.0
        host, port = self.url.split("://", 1)[1].rsplit(":", 1)
        self.host, self.port = host, int(port)

    def _log_lines(self):
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def records(self):
        """The JSON log records written so far (the log is flushed about once a second, and
        completely when the server exits)."""
        out = []
        for line in self._log_lines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def diagnostics(self):
        tail = "\n".join(self._log_lines()[-20:])
        try:
            err = self.stderr_path.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            err = ""
        return "log tail:\n%s\nstderr:\n%s" % (tail, err)

    def stop(self):
        """SIGTERM, SIGKILL after STOP_TIMEOUT; returns the exit code (-9 when killed)."""
        if self in Server.live:
            Server.live.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log("pilotlight (pid %d) still running %ss after SIGTERM: SIGKILL"
                    % (self.proc.pid, STOP_TIMEOUT))
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def curl_post(url, body_path, hdr, out, timeout):
    """One POST of body_path on a new connection, timed by curl (as bench/run.sh times cold
    starts); the headers go to hdr, the body to out. Returns (HTTP code, {"ms", "connect_ms",
    "ttfb_ms"}, util.server_timing(hdr), argv)."""
    argv = ["curl", "-s", "-m", str(timeout), "-o", out, "-D", hdr,
            "-w", "%{http_code} %{time_total} %{time_connect} %{time_starttransfer}",
            "-H", "content-type: application/json", "--data-binary", "@%s" % body_path, url]
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, env=CHILD_ENV)
    fields = r.stdout.split()
    if r.returncode != 0 or len(fields) != 4:
        raise BenchError("%s failed (curl exit %d): %s" % (qcmd(argv), r.returncode, r.stderr))
    code, total, connect, ttfb = int(fields[0]), float(fields[1]), float(fields[2]), float(fields[3])
    times = {"ms": total * 1000.0, "connect_ms": connect * 1000.0, "ttfb_ms": ttfb * 1000.0}
    return code, times, util.server_timing(hdr), argv


# ------------------------------------------------------------------------------ the run
def add_common_args(ap):
    ap.add_argument("--build-dir", default=str(ROOT / "build" / "release"))
    ap.add_argument("--models-dir", default=str(ROOT / "build" / "models"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--start-timeout", type=float, default=60.0,
                    help="seconds for pilotlight to log 'pilotlight serving' (default 60)")


def check_tools(tools, pl):
    for tool in tools:
        if shutil.which(tool) is None:
            raise BenchError("missing tool: %s (tools/setup.sh installs it)" % tool)
    if not os.access(pl, os.X_OK):
        raise BenchError("%s not found: cmake --preset release && cmake --build --preset release "
                         "--target pilotlight" % pl)


def make_models(models_dir):
    log("making models into %s" % models_dir)
    run([sys.executable, ROOT / "tools" / "make_models.py", "--out", models_dir])


def invocation():
    return "/usr/bin/python3 bench/%s.py" % PROG + ("" if len(sys.argv) == 1 else
                                                    " " + qcmd(sys.argv[1:]))


def machine_meta(pl, node):
    """util.meta() without nginx, with `pilotlight --version` and `node --version`."""
    meta = util.meta()
    meta.pop("nginx", None)
    meta["pilotlight"] = output([pl, "--version"])
    meta["node"] = output([node, "--version"])
    return meta


def curl_version():
    cv = (output(["curl", "--version"]) or "").split()
    return " ".join(cv[:2]) if len(cv) >= 2 else None


def md_machine(meta):
    return ("- Machine: %s · %s CPUs (%s socket × %s cores × %s threads) · %s GiB · hypervisor: %s"
            % (meta.get("cpu_model"), meta.get("cpus"), meta.get("sockets"),
               meta.get("cores_per_socket"), meta.get("threads_per_core"), meta.get("mem_gib"),
               meta.get("hypervisor") or "none"))


def md_commands(commands):
    L = ["##### Commands (as run; temp paths vary)", "", "```"]
    for k, v in commands.items():
        L.append("# " + k)
        L.append(v)
    L.append("```")
    return L


def write_results(out, doc, md):
    """OUT/PROG.json and OUT/PROG.md; the markdown also on stdout."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ("%s.json" % PROG)).write_text(json.dumps(doc, indent=1) + "\n")
    (out_dir / ("%s.md" % PROG)).write_text(md)
    sys.stdout.write(md)
    log("wrote %s and %s" % (out_dir / ("%s.json" % PROG), out_dir / ("%s.md" % PROG)))


def stop_servers():
    for srv in list(Server.live):
        srv.stop()


def remove_tmp(tmp, keep):
    if keep:
        log("temp dir kept: %s" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def _on_term(signum, frame):
    log("terminated (signal %d): stopping what was started" % signum)
    raise SystemExit(128 + signum)


def run_main(main):
    """Runs main() with SIGTERM turned into SystemExit (so finally: blocks stop what was
    started); BenchError: exit 1, Ctrl-C: exit 130."""
    signal.signal(signal.SIGTERM, _on_term)
    try:
        sys.exit(main())
    except BenchError as e:
        log("ERROR: %s" % e)
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
