"""The scheduler end to end: cold start reported per response (X-Cold-Start, Server-Timing),
scale to zero after idle_timeout and cold start again, the warm pool loaded at start and kept,
single-flight load under 50 concurrent first requests, shedding with 429 + Retry-After when the
queue is full or a request waits past queue_timeout, and 504 when a request exceeds the
function's timeout.

Overload tests hold the only slot with a request to the "sleep" model (its Run lasts as long
as the request asks: a Loop calibrated against this machine and build), watch the gauges in
/metrics to know it is running (and the next one queued), then send the request that must be
shed. If the slow request finished before that point anyway, they retry with a longer one."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support import (SleepCalibration, assert_error, assert_ok, assert_still_serving, cnn_body,
                     digits_rows, json_bytes, new_session, parse_server_timing, sleep_body,
                     tiny_rows)


def per_function(m, name, function):
    """Sum of `name` for `function`; a metric without a function label counts as a whole."""
    samples = m.find(name)
    if any("function" in ls for ls, _ in samples):
        return m.sum(name, function=function)
    return m.sum(name)


def cold_starts(server, function):
    return per_function(server.metrics(), "pilotlight_cold_starts_total", function)


def gauge(server, name, function):
    return server.metrics().sum(name, function=function)


def post(server, function, data, timeout=120):
    """One request on its own connection (safe from any thread)."""
    s = new_session()
    try:
        return s.post("%s/v1/functions/%s/invoke" % (server.url, function), data=data,
                      headers={"Content-Type": "application/json"}, timeout=timeout)
    finally:
        s.close()


def tiny_invoke(server):
    return server.invoke("tiny_mlp", {"inputs": tiny_rows(1)})


# --------------------------------------------------------------------------------------
# Cold start reporting
# --------------------------------------------------------------------------------------
def test_cold_start_header_and_server_timing(start_server):
    server = start_server({"functions": {"tiny_mlp": {"min_instances": 0, "idle_timeout": "60s"}}})
    h = server.function_health("tiny_mlp")
    assert h["state"] == "cold" and h["instances"] == 0, h

    r1 = tiny_invoke(server)
    assert_ok(r1)
    assert r1.headers.get("X-Cold-Start") == "true", dict(r1.headers)
    timing = parse_server_timing(r1.headers.get("Server-Timing", ""))
    for phase in ("fetch", "load", "first_run", "queue", "run"):
        assert phase in timing, "Server-Timing %r lacks %s" % (r1.headers.get("Server-Timing"), phase)
        assert timing[phase] is not None and timing[phase] >= 0, timing
    assert timing["load"] > 0, timing

    for _ in range(2):
        r = tiny_invoke(server)
        assert_ok(r)
        assert r.headers.get("X-Cold-Start") == "false", dict(r.headers)
        timing = parse_server_timing(r.headers.get("Server-Timing", ""))
        assert "queue" in timing and "run" in timing, r.headers.get("Server-Timing")
    h = server.function_health("tiny_mlp")
    assert h["state"] == "warm" and h["instances"] == 1, h
    assert h["version"] == "1.0.0", h
    assert cold_starts(server, "tiny_mlp") == 1


# --------------------------------------------------------------------------------------
# Scale to zero, warm pool
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("idle", ["0s", "1s"])
def test_scale_to_zero_then_cold_start_again(start_server, idle):
    server = start_server({"functions": {"tiny_mlp": {"min_instances": 0, "max_instances": 2,
                                                      "idle_timeout": idle}}})
    h = server.function_health("tiny_mlp")
    assert h["state"] == "cold" and h["instances"] == 0, h

    r = tiny_invoke(server)
    assert_ok(r)
    assert r.headers.get("X-Cold-Start") == "true"

    server.wait_cold("tiny_mlp")

    r = tiny_invoke(server)
    assert_ok(r)
    assert r.headers.get("X-Cold-Start") == "true", "request after scale-to-zero was not cold"
    assert cold_starts(server, "tiny_mlp") == 2
    m = server.metrics()
    assert m.sum("pilotlight_init_phase_seconds_count", function="tiny_mlp", phase="load") == 2


def test_warm_pool_is_loaded_at_start_and_kept(start_server):
    server = start_server({"functions": {
        "tiny_mlp": {"min_instances": 1, "max_instances": 2, "idle_timeout": "1s"},
        "digits": {"min_instances": 0, "idle_timeout": "1s"},
    }})
    # no request sent: the warm pool loads by itself
    f = server.wait_state("tiny_mlp", "warm", timeout=30)
    assert f["instances"] >= 1, f
    assert server.function_health("digits")["state"] == "cold"

    time.sleep(3)  # > idle_timeout: the warm pool must stay
    f = server.function_health("tiny_mlp")
    assert f["state"] == "warm" and f["instances"] >= 1, f

    r = tiny_invoke(server)
    assert_ok(r)
    assert r.headers.get("X-Cold-Start") == "false", "warm pool request paid a cold start"

    time.sleep(2.5)
    f = server.function_health("tiny_mlp")
    assert f["state"] == "warm" and f["instances"] == 1, f
    r = tiny_invoke(server)
    assert r.headers.get("X-Cold-Start") == "false"


# --------------------------------------------------------------------------------------
# Single flight
# --------------------------------------------------------------------------------------
def test_concurrent_first_requests_cause_one_cold_start(start_server):
    server = start_server({"functions": {"digits": {
        "min_instances": 0, "max_instances": 1, "concurrency": 4, "max_queue": 64,
        "queue_timeout": "60s", "timeout": "60s", "idle_timeout": "60s"}}})
    assert server.function_health("digits")["state"] == "cold"
    n = 50
    barrier = threading.Barrier(n)
    body = json_bytes({"inputs": digits_rows(1)})

    def one(_):
        s = new_session()
        try:
            barrier.wait(timeout=60)
            r = s.post(server.url + "/v1/functions/digits/invoke", data=body,
                       headers={"Content-Type": "application/json"}, timeout=120)
            return r.status_code, r.headers.get("X-Cold-Start"), r.text[:300]
        finally:
            s.close()

    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(one, range(n)))
    bad = [r for r in results if r[0] != 200]
    assert not bad, "%d of %d failed, e.g. %r" % (len(bad), n, bad[:3])
    cold = [r for r in results if r[1] == "true"]
    assert len(cold) == 1, "%d responses say X-Cold-Start: true" % len(cold)
    assert all(r[1] in ("true", "false") for r in results), {r[1] for r in results}
    assert cold_starts(server, "digits") == 1
    m = server.metrics()
    assert m.sum("pilotlight_init_phase_seconds_count", function="digits", phase="load") == 1
    assert m.sum("pilotlight_requests_total", function="digits", status="200") >= n
    assert server.function_health("digits")["instances"] == 1


# --------------------------------------------------------------------------------------
# Shedding and timeouts
# --------------------------------------------------------------------------------------
def one_slot_config(**sleep):
    spec = {"min_instances": 1, "max_instances": 1, "concurrency": 1, "max_queue": 1,
            "queue_timeout": "60s", "timeout": "60s", "idle_timeout": "60s"}
    spec.update(sleep)
    return {"functions": {"sleep": spec, "tiny_mlp": {"idle_timeout": "60s"}}}


HOLD_SECONDS = (2.0, 6.0)  # how long the slot-holding request runs; the second is a retry


def slot_holders(server, ex, cal):
    """Yields, once per HOLD_SECONDS entry, the future of a request that is holding the "sleep"
    function's only slot right now; an attempt whose request finished before it was seen in
    flight is checked and skipped (the next one holds longer)."""
    for hold in HOLD_SECONDS:
        a = ex.submit(post, server, "sleep", sleep_body(cal.iterations(hold)))
        wait_for(lambda: a.done() or gauge(server, "pilotlight_in_flight", "sleep") >= 1)
        if a.done():
            assert_ok(a.result(), "slow request:")
            continue
        yield a


def wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def check_retry_after(r):
    ra = r.headers.get("Retry-After")
    assert ra is not None and ra.strip().isdigit(), "429 without a delta-seconds Retry-After: %r" % (
        dict(r.headers),)


def test_full_queue_sheds_429_with_retry_after(start_server):
    server = start_server(one_slot_config(max_queue=1))
    server.wait_state("sleep", "warm", timeout=60)
    cal = SleepCalibration(server)
    quick = sleep_body(1)
    shed = None
    with ThreadPoolExecutor(2) as ex:
        for a in slot_holders(server, ex, cal):
            b = ex.submit(post, server, "sleep", quick)
            wait_for(lambda: a.done() or b.done()
                     or gauge(server, "pilotlight_queue_depth", "sleep") >= 1)
            if a.done() or b.done():
                assert_ok(a.result(), "slow request:")
                assert_ok(b.result(), "queued request:")
                continue
            c = post(server, "sleep", quick)
            a_done_before_c = a.done()
            assert_ok(a.result(), "running request during shedding:")
            assert_ok(b.result(), "queued request during shedding:")
            if c.status_code == 429:
                shed = c
                break
            assert a_done_before_c, (
                "one request running, one queued (max_queue 1), yet a third got %d: %s"
                % (c.status_code, c.text[:300]))
    assert shed is not None, "the slot-holding request never stayed long enough to fill the queue"
    assert_error(shed, 429, "overloaded")
    check_retry_after(shed)
    assert_still_serving(server)
    assert_ok(post(server, "sleep", quick))
    m = server.metrics()
    assert m.sum("pilotlight_requests_total", function="sleep", status="429") >= 1


def test_queue_timeout_sheds_429_with_retry_after(start_server):
    server = start_server(one_slot_config(max_queue=8, queue_timeout="100ms"))
    server.wait_state("sleep", "warm", timeout=60)
    cal = SleepCalibration(server)
    shed = None
    with ThreadPoolExecutor(1) as ex:
        for a in slot_holders(server, ex, cal):
            b = post(server, "sleep", sleep_body(1))
            a_done_before_b = a.done()
            assert_ok(a.result(), "running request:")
            if a_done_before_b and b.status_code == 200:
                continue  # the slot freed before b's queue_timeout: try a longer hold
            assert not a_done_before_b, (
                "a request queued behind a running one with queue_timeout 100ms was answered "
                "only after the running one finished (%d)" % b.status_code)
            shed = b
            break
    assert shed is not None, "the slot-holding request never stayed long enough"
    assert_error(shed, 429, "overloaded")
    check_retry_after(shed)
    assert_still_serving(server)


def test_timeout_is_504(start_server):
    server = start_server(one_slot_config(concurrency=2, max_queue=4, timeout="300ms"))
    server.wait_state("sleep", "warm", timeout=60)
    cal = SleepCalibration(server, function="sleep")
    run = 3.0
    t0 = time.monotonic()
    r = post(server, "sleep", sleep_body(cal.iterations(run)))
    took = time.monotonic() - t0
    assert_error(r, 504, "timeout")
    assert took < run * 0.8, "504 came after %.2fs, not at the 300ms timeout" % took
    assert_still_serving(server)
    # the function itself still answers requests that fit in its timeout
    deadline = time.monotonic() + 30
    while True:
        r = post(server, "sleep", sleep_body(1))
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert_ok(r, "short request after a timeout:")
    m = server.metrics()
    assert m.sum("pilotlight_requests_total", function="sleep", status="504") >= 1
    assert server.health()["status"] == "ok"


def test_timeout_1ms_on_a_big_cnn_batch_is_504(start_server):
    server = start_server({"functions": {
        "cnn": {"min_instances": 1, "max_instances": 1, "concurrency": 2, "timeout": "1ms"},
        "tiny_mlp": {"idle_timeout": "60s"}}})
    server.wait_state("cnn", "warm", timeout=60)
    for _ in range(2):
        r = post(server, "cnn", cnn_body(64))
        assert_error(r, 504, "timeout")
        assert_still_serving(server)


def test_bad_input_to_a_saturated_function_is_400_not_429(start_server):
    """Inputs are checked against a warm function's schema before admission: a malformed request
    is told what is wrong (400) even while the function is full, and takes no queue slot."""
    server = start_server(one_slot_config(max_queue=0))
    server.wait_state("sleep", "warm", timeout=60)
    cal = SleepCalibration(server)
    with ThreadPoolExecutor(1) as ex:
        for a in slot_holders(server, ex, cal):
            bad = post(server, "sleep", json_bytes({"inputs": [["not a number"]]}))
            wrong_shape = post(server, "sleep", json_bytes({"inputs": [[1.0, 2.0]]}))
            still_running = not a.done()
            assert_ok(a.result(), "slot-holding request:")
            if not still_running:
                continue
            assert_error(bad, 400, "invalid_input")
            assert_error(wrong_shape, 400, "invalid_input")
            return
    raise AssertionError("the slot-holding request never stayed long enough")
