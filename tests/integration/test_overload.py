"""Honest overload: what the server does when more arrives than it can take.

- 500 slowloris clients (a partial request head, one more byte every second, from a few
  addresses so that the per-client limit is not what protects) and 500 idle connections do
  not keep a normal client from being served; the slow ones get 408 once request_timeout
  has passed since their first byte.
- A function whose queue is full answers the extra requests 429 at once (Retry-After), and
  every request it accepted is answered with its own result: 200s + 429s == requests sent.
- While draining after SIGTERM, new connections are refused (or answered 503) and keep-alive
  connections are closed or answered 503 — nothing is accepted and then lost; the requests
  accepted before the signal complete with their results. (test_shutdown.py covers the drain
  of in-flight requests and the exit code.)

Timing assertions here are liveness checks with generous bounds (ASan builds are slow)."""

import select
import selectors
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from support import (SleepCalibration, assert_ok, assert_raw_error, assert_retry_after,
                     connect, json_bytes, new_session, read_response,
                     tiny_invoke_request, tiny_rows)

SLOW_CLIENTS = 500
IDLE_CLIENTS = 500
REQUEST_TIMEOUT = 4.0
SLOW_SOURCES = ["127.0.0.%d" % i for i in range(11, 15)]  # 125 connections each
IDLE_SOURCES = ["127.0.0.%d" % i for i in range(21, 25)]
NORMAL_LATENCY = 2.0  # seconds; liveness, not performance


class Crowd:
    """Slow and idle connections watched by one thread: every `interval` it sends each slow
    connection one more byte of its never-ending request head, and it records what each
    connection receives and when it is closed."""

    def __init__(self, interval=1.0):
        self.interval = interval
        self.sel = selectors.DefaultSelector()
        self.conns = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = None

    def add(self, sock, slow):
        sock.setblocking(False)
        c = {"sock": sock, "slow": slow, "first_byte": None, "data": b"", "closed": None,
             "answered": None, "sent": 0}
        if slow:
            try:
                sock.send(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            except OSError as e:
                c["closed"] = time.monotonic()
                c["error"] = repr(e)
            c["first_byte"] = time.monotonic()
        self.conns.append(c)
        self.sel.register(sock, selectors.EVENT_READ, c)

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        next_round = time.monotonic() + self.interval
        while not self.stop.is_set():
            timeout = max(0.0, next_round - time.monotonic())
            for key, _ in self.sel.select(timeout):
                c = key.data
                try:
                    chunk = c["sock"].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                now = time.monotonic()
                with self.lock:
                    if chunk:
                        if c["answered"] is None:
                            c["answered"] = now
                        c["data"] += chunk
                    else:
                        c["closed"] = now
                        self.sel.unregister(c["sock"])
            if time.monotonic() >= next_round:
                next_round += self.interval
                with self.lock:
                    for c in self.conns:
                        if c["slow"] and c["closed"] is None and c["answered"] is None:
                            try:
                                c["sock"].send(b"a")
                                c["sent"] += 1
                            except (BlockingIOError, InterruptedError):
                                pass
                            except OSError:
                                pass  # the close is seen by the reader

    def snapshot(self):
        with self.lock:
            return [dict(c) for c in self.conns]

    def close(self):
        self.stop.set()
        if self.thread:
            self.thread.join(10)
        for c in self.conns:
            try:
                c["sock"].close()
            except OSError:
                pass
        self.sel.close()


def timed_request(session, method, url, **kw):
    t0 = time.monotonic()
    r = session.request(method, url, timeout=30, **kw)
    return r, time.monotonic() - t0


def parse_raw(data):
    """(status, headers, body) of a response received as bytes, or None."""
    if b"\r\n\r\n" not in data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    line = head.split(b"\r\n")[0].decode("latin-1")
    return int(line.split(" ")[1]), head, body


def test_slowloris_and_idle_connections_do_not_starve_a_normal_client(start_server):
    server = start_server({
        "server": {"request_timeout": "%ds" % REQUEST_TIMEOUT, "idle_timeout": "60s"},
        "functions": {"tiny_mlp": {"min_instances": 1, "idle_timeout": "60s"}}})
    server.wait_state("tiny_mlp", "warm", timeout=30)
    server.session.close()
    crowd = Crowd()
    try:
        for i in range(IDLE_CLIENTS):
            crowd.add(connect(server.port, IDLE_SOURCES[i % len(IDLE_SOURCES)]), slow=False)
        for i in range(SLOW_CLIENTS):
            crowd.add(connect(server.port, SLOW_SOURCES[i % len(SLOW_SOURCES)]), slow=True)
        crowd.start()
        last_slow_byte = max(c["first_byte"] for c in crowd.snapshot() if c["slow"])

        # A normal client, while all 1,000 are open: one new keep-alive connection, then
        # single requests on new connections.
        url = server.url + "/v1/functions/tiny_mlp/invoke"
        body = {"inputs": tiny_rows(1)}
        latencies = []
        s = new_session()
        try:
            for _ in range(4):
                r, dt = timed_request(s, "POST", url, json=body)
                assert_ok(r, "normal client among 1,000 slow and idle connections:")
                latencies.append(dt)
            r, dt = timed_request(s, "GET", server.url + "/v1/health")
            assert r.status_code == 200, r.text[:300]
            latencies.append(dt)
        finally:
            s.close()
        for _ in range(3):
            s = new_session()
            try:
                r, dt = timed_request(s, "POST", url, json=body)
                assert_ok(r, "normal client (new connection) among 1,000 slow and idle ones:")
                latencies.append(dt)
            finally:
                s.close()
        done_normal = time.monotonic()
        assert max(latencies) < NORMAL_LATENCY, (
            "normal requests took %s s with %d slow and %d idle connections open"
            % (["%.2f" % x for x in latencies], SLOW_CLIENTS, IDLE_CLIENTS))
        conns = crowd.snapshot()
        early = [c for c in conns if c["closed"] is not None or c["answered"] is not None]
        assert done_normal - last_slow_byte < REQUEST_TIMEOUT - 0.5, (
            "setting up took too long: the normal requests ended %.1fs after the last slow "
            "client started" % (done_normal - last_slow_byte))
        assert not early, (
            "%d of the slow/idle connections were answered or closed before request_timeout "
            "(the test expects them all open while the normal client is served), e.g. %r"
            % (len(early), {k: early[0][k] for k in ("slow", "data", "closed")}))

        # Then every slow client gets its 408 once request_timeout has passed since its first
        # byte, and its connection is closed.
        deadline = last_slow_byte + REQUEST_TIMEOUT + 5
        while time.monotonic() < deadline:
            conns = crowd.snapshot()
            if all(c["closed"] is not None for c in conns if c["slow"]):
                break
            time.sleep(0.1)
        conns = crowd.snapshot()
        slow = [c for c in conns if c["slow"]]
        problems = []
        waits = []
        for c in slow:
            parsed = parse_raw(c["data"])
            if parsed is None or parsed[0] != 408:
                problems.append("got %r, %s" % (
                    c["data"][:120], "closed %.0fs after its first byte" % (c["closed"] - c["first_byte"])
                    if c["closed"] is not None else "still open"))
                continue
            if c["closed"] is None:
                problems.append("408 but the connection was left open")
                continue
            waits.append(c["answered"] - c["first_byte"])
        assert not problems, "%d of %d slow clients did not get 408 and a close: %s" % (
            len(problems), len(slow), "; ".join(sorted(set(problems))[:5]))
        assert min(waits) >= REQUEST_TIMEOUT * 0.8 and max(waits) <= REQUEST_TIMEOUT + 4, (
            "slow clients got 408 between %.2fs and %.2fs after their first byte "
            "(request_timeout %.0fs)" % (min(waits), max(waits), REQUEST_TIMEOUT))
        status, head, body_bytes = parse_raw(slow[0]["data"])
        assert b"application/json" in head.lower() and b'"error"' in body_bytes, (head, body_bytes)
        # idle connections are still open (idle_timeout 60s), and the server still serves
        idle_closed = [c for c in conns if not c["slow"] and c["closed"] is not None]
        assert not idle_closed, "%d idle connections were closed before idle_timeout" % len(idle_closed)
        s = new_session()
        try:
            r, dt = timed_request(s, "POST", url, json=body)
            assert_ok(r, "normal client after the slow ones were cut off:")
        finally:
            s.close()
    finally:
        crowd.close()


# --------------------------------------------------------------------------------------
# A full queue sheds at once, and loses nothing it accepted
# --------------------------------------------------------------------------------------
QUEUE = 4
BURST = 24


def sleep_config(**overrides):
    spec = {"min_instances": 1, "max_instances": 1, "concurrency": 1, "max_queue": QUEUE,
            "queue_timeout": "60s", "timeout": "60s", "idle_timeout": "60s"}
    spec.update(overrides)
    return {"functions": {"sleep": spec, "tiny_mlp": {"idle_timeout": "60s"}}}


def post_timed(url, data, timeout=120):
    """(response or the exception, seconds) for one request on its own connection."""
    s = new_session()
    t0 = time.monotonic()
    try:
        r = s.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=timeout)
    except requests.RequestException as e:
        r = e
    finally:
        s.close()
    return r, time.monotonic() - t0


def expected_sleep_output(x):
    """The sleep model's y = x + trunc(max(x)) for one row [x]."""
    return x + float(int(x))


def test_full_queue_sheds_429_at_once_and_loses_no_accepted_request(start_server):
    server = start_server(sleep_config())
    server.wait_state("sleep", "warm", timeout=60)
    cal = SleepCalibration(server)
    base = cal.iterations(0.5) // 2 * 2  # each accepted request holds the only slot ~0.5s
    url = server.url + "/v1/functions/sleep/invoke"
    # distinct inputs, so each answer can be matched to its request
    xs = [float(base + 2 * i) for i in range(BURST)]
    barrier = threading.Barrier(BURST)

    def one(x):
        barrier.wait(10)
        return post_timed(url, json_bytes({"inputs": [[x]]}))

    with ThreadPoolExecutor(BURST) as ex:
        results = list(ex.map(one, xs))
    failures = [(x, r) for x, (r, _) in zip(xs, results) if not isinstance(r, requests.Response)]
    assert not failures, "requests that got no answer at all: %r" % failures[:3]
    ok = [(x, r, dt) for x, (r, dt) in zip(xs, results) if r.status_code == 200]
    shed = [(x, r, dt) for x, (r, dt) in zip(xs, results) if r.status_code == 429]
    other = [(x, r.status_code, r.text[:200]) for x, (r, _) in zip(xs, results)
             if r.status_code not in (200, 429)]
    assert not other, "answers other than 200 and 429: %r" % other[:5]
    assert len(ok) + len(shed) == BURST
    assert shed, "a burst of %d on 1 slot + a queue of %d shed nothing (%d answered 200)" % (
        BURST, QUEUE, len(ok))
    assert len(ok) >= 1 + QUEUE, (
        "only %d of %d requests were accepted: 1 running + max_queue %d should be"
        % (len(ok), BURST, QUEUE))
    for x, r, dt in ok:
        out = r.json()["outputs"]
        assert abs(out[0][0] - expected_sleep_output(x)) <= 2.0, (
            "request x=%r got the answer %r (expected %r)" % (x, out, expected_sleep_output(x)))
    for x, r, dt in shed:
        body = r.json()
        assert body["error"]["type"] == "overloaded", body
        assert_retry_after(r, "429 from a full queue")
    slowest_shed = max(dt for _, _, dt in shed)
    slowest_ok = max(dt for _, _, dt in ok)
    assert slowest_shed < 1.5 and slowest_shed < slowest_ok, (
        "the shed requests were answered after up to %.2fs (the accepted ones after up to "
        "%.2fs): a full queue must answer 429 at once" % (slowest_shed, slowest_ok))
    m = server.metrics()
    assert m.sum("pilotlight_queue_depth", function="sleep") == 0


# --------------------------------------------------------------------------------------
# Draining after SIGTERM: refused or 503, never accepted and lost
# --------------------------------------------------------------------------------------
def busy(server):
    m = server.metrics()
    return (int(m.sum("pilotlight_in_flight", function="sleep")),
            int(m.sum("pilotlight_queue_depth", function="sleep")))


def new_connection_outcome(port):
    """What a new connection gets during the drain: "refused", ("status", RawResponse), or
    "closed" (accepted and closed without an answer)."""
    try:
        s = connect(port, timeout=10)
    except ConnectionRefusedError:
        return "refused"
    with s:
        try:
            s.sendall(tiny_invoke_request())
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = read_response(s, 10)
    return "closed" if r is None else ("status", r)


def keep_alive_outcome(conn_sock):
    """A request on a keep-alive connection opened before SIGTERM: "closed" when the server
    had closed it (we never sent), else the answer (None: closed after the request was sent,
    i.e. the request was lost)."""
    readable, _, _ = select.select([conn_sock], [], [], 0)
    if readable:
        try:
            data = conn_sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return "closed"
        return ("unsolicited", data[:300])
    try:
        conn_sock.sendall(tiny_invoke_request())
    except (BrokenPipeError, ConnectionResetError):
        return "closed"
    r = read_response(conn_sock, 10)
    return ("status", r)


def test_draining_refuses_new_work_and_completes_what_it_accepted(start_server):
    server = start_server(sleep_config(max_queue=8))
    server.wait_state("sleep", "warm", timeout=60)
    server.warm_all()
    cal = SleepCalibration(server)
    url = server.url + "/v1/functions/sleep/invoke"
    queued_xs = [1001.0, 1003.0, 1005.0]
    with ThreadPoolExecutor(8) as ex:
        for hold in (3.0, 8.0):
            keep = [connect(server.port) for _ in range(3)]
            try:
                for s in keep:
                    s.sendall(tiny_invoke_request())
                    r = read_response(s)
                    assert r is not None and r.status == 200, r
                hx = float(cal.iterations(hold))
                holder = ex.submit(post_timed, url, json_bytes({"inputs": [[hx]]}))
                deadline = time.monotonic() + 10
                while not holder.done() and busy(server)[0] < 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                queued = [ex.submit(post_timed, url, json_bytes({"inputs": [[x]]}))
                          for x in queued_xs]
                deadline = time.monotonic() + 10
                while not holder.done() and busy(server)[1] < len(queued) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if holder.done():  # finished before we could signal: hold longer
                    for f in [holder] + queued:
                        r, _ = f.result()
                        assert isinstance(r, requests.Response) and r.status_code == 200, r
                    continue
                assert busy(server) == (1, len(queued)), busy(server)
                server.signal(signal.SIGTERM)
                time.sleep(0.5)  # the signal is handled
                news = list(ex.map(lambda _: new_connection_outcome(server.port), range(12)))
                kept = [keep_alive_outcome(s) for s in keep]
                still_draining = not holder.done()
                hr, _ = holder.result()
                qr = [f.result()[0] for f in queued]
            finally:
                for s in keep:
                    s.close()
            # what was accepted before the signal completes, each with its own result
            for x, r in [(hx, hr)] + list(zip(queued_xs, qr)):
                assert isinstance(r, requests.Response), (
                    "a request accepted before SIGTERM got no answer: %r" % (r,))
                body = assert_ok(r, "request accepted before SIGTERM:")
                assert abs(body["outputs"][0][0] - expected_sleep_output(x)) <= 2.0, (x, body)
            assert still_draining, "the drain ended before the new requests were tried"
            problems = []
            for o in news:
                if o == "refused":
                    continue
                if o == "closed":
                    problems.append("new connection accepted, then closed without an answer")
                    continue
                try:
                    assert_raw_error(o[1], 503, None, "new request during the drain:")
                    assert_retry_after(o[1], "503 during the drain")
                except AssertionError as e:
                    problems.append(str(e)[:300])
            for o in kept:
                if o == "closed":
                    continue
                if o[0] == "status" and o[1] is not None:
                    try:
                        assert_raw_error(o[1], 503, None, "keep-alive request during the drain:")
                    except AssertionError as e:
                        problems.append(str(e)[:300])
                else:
                    problems.append("keep-alive connection: %r (a request sent on it was "
                                    "neither answered nor refused before it was read)" % (o,))
            assert not problems, "during the drain:\n" + "\n".join(problems)
            rc = server.wait_exit(60)
            assert rc == 0, "exit code %r after SIGTERM\n%s" % (rc, server.diagnostics())
            return
    raise AssertionError("every request finished before SIGTERM could be sent")
