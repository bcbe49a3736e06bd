"""GET /v1/health (shape, per-function cold/warm state, ?warm=true) and GET /metrics
(Prometheus text exposition, parsed: requests by function and status, latency histograms,
cold starts, init phases, instances by state, queue depth, in-flight)."""

import time
from concurrent.futures import ThreadPoolExecutor

from support import (Metrics, SleepCalibration, assert_ok, digits_rows, new_session, sleep_body,
                     tiny_rows, wait_until)

STATES = {"cold", "loading", "warm"}


def test_health_shape_and_states(start_server):
    server = start_server({"functions": {
        "digits": {"min_instances": 0, "idle_timeout": "60s"},
        "tiny_mlp": {"min_instances": 1, "idle_timeout": "60s"},
    }})
    server.wait_state("tiny_mlp", "warm", timeout=30)
    r = server.get("/v1/health")
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Type", "").startswith("application/json")
    h = r.json()
    assert h.get("status") == "ok", h
    assert set(h.get("functions", {})) == {"digits", "tiny_mlp"}, h
    for name, f in h["functions"].items():
        for key in ("state", "version", "instances"):
            assert key in f, "health of %s lacks %r: %r" % (name, key, f)
        assert f["state"] in STATES, f
        assert isinstance(f["instances"], int) and not isinstance(f["instances"], bool), f
    assert h["functions"]["digits"]["state"] == "cold", h
    assert h["functions"]["digits"]["instances"] == 0, h
    tiny = h["functions"]["tiny_mlp"]
    assert tiny["state"] == "warm" and tiny["instances"] == 1 and tiny["version"] == "1.0.0", tiny

    assert_ok(server.invoke("digits", {"inputs": digits_rows(1)}))
    d = server.function_health("digits")
    assert d["state"] == "warm" and d["instances"] == 1 and d["version"] == "1.0.0", d


def test_health_warm_true_loads_every_function(start_server):
    server = start_server({"functions": {
        "digits": {"min_instances": 0, "idle_timeout": "60s"},
        "tiny_mlp": {"min_instances": 0, "idle_timeout": "60s"},
        "multi_input": {"min_instances": 0, "idle_timeout": "60s"},
    }})
    before = server.health()["functions"]
    assert all(f["state"] == "cold" for f in before.values()), before

    h = server.health(warm=True)
    assert h.get("status") == "ok", h
    assert set(h["functions"]) == {"digits", "tiny_mlp", "multi_input"}
    for name, f in h["functions"].items():
        assert f["state"] == "warm" and f["instances"] >= 1, "after ?warm=true %s: %r" % (name, f)
        assert f["version"] == "1.0.0", f

    after = server.health()["functions"]
    assert all(f["state"] == "warm" for f in after.values()), after
    # the instance is loaded: the first request does not pay a cold start
    r = server.invoke("digits", {"inputs": digits_rows(1)})
    assert_ok(r)
    assert r.headers.get("X-Cold-Start") == "false", dict(r.headers)
    # a second ?warm=true on warm functions answers at once, still warm
    h2 = server.health(warm=True)
    assert all(f["state"] == "warm" for f in h2["functions"].values()), h2


def test_metrics_exposition(start_server):
    server = start_server({"functions": {
        "digits": {"min_instances": 0, "idle_timeout": "60s"},
        "tiny_mlp": {"min_instances": 0, "idle_timeout": "60s"},
    }})
    for i in range(5):
        assert_ok(server.invoke("digits", {"inputs": digits_rows(1, start=i)}))
    for _ in range(2):
        r = server.invoke("digits", {"inputs": [[1, 2, 3]]})
        assert r.status_code == 400, r.text
    for i in range(3):
        assert_ok(server.invoke("tiny_mlp", {"inputs": tiny_rows(1, offset=i)}))

    r = server.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers.get("Content-Type")
    m = Metrics(r.text)

    # declared types (a counter's TYPE line may name the family with or without _total)
    def family_type(name):
        return m.family_type(name) or m.family_type(name[:-len("_total")])
    assert family_type("pilotlight_requests_total") == "counter", r.text[:2000]
    assert family_type("pilotlight_cold_starts_total") == "counter"
    assert m.family_type("pilotlight_request_duration_seconds") == "histogram"
    assert m.family_type("pilotlight_init_phase_seconds") == "histogram"
    for g in ("pilotlight_instances", "pilotlight_queue_depth", "pilotlight_in_flight"):
        assert m.family_type(g) == "gauge", "%s: %r" % (g, m.family_type(g))

    # requests by function and status
    assert m.sum("pilotlight_requests_total", function="digits", status="200") >= 5
    assert m.sum("pilotlight_requests_total", function="digits", status="400") >= 2
    assert m.sum("pilotlight_requests_total", function="tiny_mlp", status="200") >= 3

    # latency histogram per function
    assert m.check_histogram("pilotlight_request_duration_seconds", function="digits") >= 5
    assert m.check_histogram("pilotlight_request_duration_seconds", function="tiny_mlp") >= 3

    # cold starts: one per function (both were cold, idle_timeout 60s)
    cs = m.find("pilotlight_cold_starts_total")
    assert cs, "pilotlight_cold_starts_total missing"
    if any("function" in ls for ls, _ in cs):
        assert m.sum("pilotlight_cold_starts_total", function="digits") == 1
        assert m.sum("pilotlight_cold_starts_total", function="tiny_mlp") == 1
    else:
        assert m.sum("pilotlight_cold_starts_total") == 2

    # init phase durations by function and phase
    for phase in ("fetch", "load", "first_run"):
        n = m.check_histogram("pilotlight_init_phase_seconds", function="digits", phase=phase)
        assert n == 1, "init phase %s observed %s times for one cold start" % (phase, n)

    # instances by state: digits has one loaded instance
    inst = m.find("pilotlight_instances", function="digits")
    assert inst and all("state" in ls for ls, _ in inst), inst
    assert sum(v for _, v in inst) >= 1, inst

    # nothing running or queued once every response has been read
    def idle():
        mm = server.metrics()
        return all(mm.find(g, function=f) and mm.sum(g, function=f) == 0
                   for g in ("pilotlight_queue_depth", "pilotlight_in_flight")
                   for f in ("digits", "tiny_mlp"))
    wait_until(idle, 10, 0.1, lambda: "queue_depth and in_flight gauges to read 0 for both "
               "functions:\n" + server.get("/metrics").text[-3000:])


def test_request_counter_counts_exactly(start_server):
    server = start_server({"functions": {"tiny_mlp": {"idle_timeout": "60s"}}})
    assert_ok(server.invoke("tiny_mlp", {"inputs": tiny_rows(1)}))
    before = server.metrics().sum("pilotlight_requests_total", function="tiny_mlp", status="200")
    for i in range(7):
        assert_ok(server.invoke("tiny_mlp", {"inputs": tiny_rows(2, offset=i)}))
    after = server.metrics().sum("pilotlight_requests_total", function="tiny_mlp", status="200")
    assert after - before == 7, (before, after)


def test_metrics_and_health_answer_while_functions_are_cold(start_server):
    server = start_server({"functions": {"digits": {"min_instances": 0}}})
    m = server.metrics()
    assert m.samples, "empty /metrics"
    assert server.function_health("digits")["state"] == "cold"
    # the queue/in-flight gauges exist for a configured function before its first request
    assert m.find("pilotlight_queue_depth", function="digits"), m.text[:2000]
    assert m.find("pilotlight_in_flight", function="digits"), m.text[:2000]


def test_health_metrics_and_other_functions_answer_while_requests_run(start_server):
    """Liveness, metrics and other functions do not wait behind inference: with four long
    Runs in flight (more than this 2-core machine has cores), GET /v1/health, GET /metrics and
    a tiny_mlp request answer before the first of those runs ends."""
    n = 4
    server = start_server({"functions": {
        "sleep": {"min_instances": 1, "max_instances": 1, "concurrency": n, "max_queue": 8,
                  "queue_timeout": "60s", "timeout": "60s"},
        "tiny_mlp": {"min_instances": 1}}})
    server.wait_state("sleep", "warm", timeout=60)
    server.wait_state("tiny_mlp", "warm", timeout=60)
    cal = SleepCalibration(server)
    body = sleep_body(cal.iterations(3.0))

    def post():
        s = new_session()
        try:
            return s.post(server.url + "/v1/functions/sleep/invoke", data=body,
                          headers={"Content-Type": "application/json"}, timeout=120)
        finally:
            s.close()

    took = {}
    before_end = {}
    with ThreadPoolExecutor(n) as ex:
        futs = [ex.submit(post) for _ in range(n)]
        time.sleep(0.5)  # the long requests have been sent and are running
        for what, call in (("GET /v1/health", server.health),
                           ("GET /metrics", server.metrics),
                           ("POST tiny_mlp", lambda: assert_ok(server.invoke(
                               "tiny_mlp", {"inputs": tiny_rows(1)})))):
            t0 = time.monotonic()
            call()
            took[what] = time.monotonic() - t0
            before_end[what] = not any(f.done() for f in futs)
        results = [f.result() for f in futs]
    for r in results:
        assert_ok(r)
    blocked = ["%s answered only after a 3s run had ended (it took %.2fs)" % (w, took[w])
               for w in took if not before_end[w]]
    assert not blocked, "; ".join(blocked)
