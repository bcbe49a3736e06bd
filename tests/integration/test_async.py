"""Asynchronous invocations (issue 6, items 1, 3 and 5): POST /v1/functions/NAME/invoke-async and
the Lambda Invoke API's `Event` type answer 202 once the event is durably stored; events run at
least once within a per-function concurrency share, are retried with exponential backoff, end
`succeeded` or `dead_letter` (with their attempt history), are written once to their on_success /
on_failure destinations (JSONL file or HTTP URL), survive SIGKILL and SIGTERM, can be listed,
shown and redriven over the API and the CLI, and are counted in /metrics.

Process functions run tests/integration/lambda/handlers.py (mostly `handlers.task`, whose
behaviour the event payload chooses: sleep, fail, fail the first N calls, fail until a flag file
exists, log each call to a file).
"""

import collections
import json
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support import (assert_error, assert_ok, cli_output, digits_rows, free_port, json_bytes,
                     new_session, run_cli, wait_until)

LAMBDA_DIR = (Path(__file__).resolve().parent / "lambda").absolute()
BOOTSTRAP = ["/usr/bin/python3", str(LAMBDA_DIR / "bootstrap.py")]
FINAL = ("succeeded", "dead_letter")
REQUEUED_MSG = "asynchronous events interrupted by a restart are queued again"


def proc_fn(handler, **keys):
    spec = {"runtime": "process", "command": BOOTSTRAP, "handler": handler, "cwd": str(LAMBDA_DIR)}
    spec.update(keys)
    return spec


def file_uri(path):
    return "file://" + str(path)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def invoke_async(server, function, payload, **kw):
    """POST /v1/functions/NAME/invoke-async; checks the 202 contract; returns the event id."""
    data = payload if isinstance(payload, (bytes, str)) else json_bytes(payload)
    r = server.post("/v1/functions/%s/invoke-async" % function, data=data,
                    headers={"Content-Type": "application/json"}, **kw)
    assert r.status_code == 202, "invoke-async %s -> %d %s" % (function, r.status_code, r.text[:1000])
    body = r.json()
    eid = body.get("event_id")
    assert isinstance(eid, str) and eid, body
    assert r.headers.get("Location") == "/v1/events/" + eid, dict(r.headers)
    assert r.headers.get("X-Event-Id") == eid, dict(r.headers)
    return eid


def get_event(server, eid):
    r = server.get("/v1/events/" + eid)
    return assert_ok(r, "GET /v1/events/%s:" % eid)


def wait_event(server, eid, statuses=FINAL, timeout=30.0):
    last = {}

    def check():
        last["e"] = get_event(server, eid)
        return last["e"] if last["e"]["status"] in statuses else None
    return wait_until(check, timeout, 0.05,
                      lambda: "event %s to become %s; now %r" % (eid, statuses, last.get("e")))


def list_events(server, **params):
    r = server.get("/v1/events", params=params)
    return assert_ok(r, "GET /v1/events %r:" % params)["events"]


def wait_all_final(server, function, count, timeout):
    """Waits until `function` has `count` events and none is queued or running."""
    last = {}

    def check():
        evs = list_events(server, function=function, limit=10000)
        last["counts"] = collections.Counter(e["status"] for e in evs)
        return evs if len(evs) == count and all(e["status"] in FINAL for e in evs) else None
    return wait_until(check, timeout, 0.2,
                      lambda: "%d events of %s to finish; statuses now %r" % (
                          count, function, dict(last.get("counts", {}))))


def ts(text):
    """RFC 3339 with milliseconds (2024-01-02T03:04:05.678Z) -> epoch seconds."""
    assert isinstance(text, str) and text.endswith("Z"), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def read_jsonl(path):
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), "%s line %d is empty" % (path, i)
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError("%s line %d is not JSON: %r" % (path, i, line[:300])) from None
    return out


def lines_for(path, eid):
    return [l for l in read_jsonl(path) if l.get("event_id") == eid]


def assert_destination_line(line, event):
    """A destination line is the event's document: the contract's keys, same values."""
    for k in ("event_id", "function", "status", "attempts", "payload", "finished_at"):
        assert k in line, "destination line without %r: %r" % (k, line)
    assert line["event_id"] == event["id"], (line, event)
    for k in ("function", "status", "attempts", "payload"):
        assert line[k] == event[k], "destination %s=%r, event %s=%r" % (k, line[k], k, event[k])
    if event["status"] == "succeeded":
        assert line["result"] == event["result"], (line, event)
    else:
        assert line["error"] == event["error"], (line, event)


def metric(server, name):
    return server.metrics().sum(name)


# --------------------------------------------------------------------------------------------
# an HTTP destination
# --------------------------------------------------------------------------------------------
class Hook:
    """A loopback HTTP endpoint that records every POST (path, JSON body)."""

    def __init__(self, port=0):
        self.posts = []
        self.lock = threading.Lock()
        hook = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with hook.lock:
                    hook.posts.append((self.path, self.headers.get("Content-Type"), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def for_event(self, eid):
        with self.lock:
            return [(p, ct, json.loads(b)) for p, ct, b in self.posts
                    if json.loads(b).get("event_id") == eid]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------------------------
# the module's shared server
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hook():
    h = Hook()
    yield h
    h.close()


@pytest.fixture(scope="module")
def dests(tmp_path_factory):
    return tmp_path_factory.mktemp("async_dest")


@pytest.fixture(scope="module")
def async_server(module_servers, dests, hook):
    d = dests
    config = {
        "server": {"poll_interval": "0s"},
        "functions": {
            "digits": {"max_instances": 1},
            "compute": proc_fn("handlers.compute"),
            "echo": proc_fn("handlers.echo"),
            "fail3": proc_fn("handlers.task", async_={
                "max_retries": 2, "retry_backoff": "100ms",
                "on_success": file_uri(d / "fail3_ok.jsonl"),
                "on_failure": file_uri(d / "fail3_dead.jsonl")}),
            "fail0": proc_fn("handlers.task", async_={
                "max_retries": 0, "on_failure": file_uri(d / "fail0_dead.jsonl")}),
            "flaky": proc_fn("handlers.task", async_={
                "max_retries": 2, "retry_backoff": "50ms",
                "on_success": file_uri(d / "flaky_ok.jsonl"),
                "on_failure": file_uri(d / "flaky_dead.jsonl")}),
            "redrive": proc_fn("handlers.task", async_={
                "max_retries": 0,
                "on_success": file_uri(d / "redrive_ok.jsonl"),
                "on_failure": file_uri(d / "redrive_dead.jsonl")}),
            "hooked": proc_fn("handlers.task", async_={
                "max_retries": 0,
                "on_success": "http://127.0.0.1:%d/ok" % hook.port,
                "on_failure": "http://127.0.0.1:%d/failed" % hook.port}),
            "listing": proc_fn("handlers.task", async_={"max_retries": 0}),
            "listing2": proc_fn("handlers.task", async_={"max_retries": 0}),
        },
    }
    return module_servers.shared(fix_async_keys(config))


def fix_async_keys(config):
    """`async` is a Python keyword: the specs above say async_."""
    for spec in config.get("functions", {}).values():
        if "async_" in spec:
            spec["async"] = spec.pop("async_")
    return config


@pytest.fixture
def server(async_server):
    return async_server.get()


@pytest.fixture(scope="module")
def boto_lambda(async_server):
    import boto3
    from botocore.config import Config

    server = async_server.get()
    client = boto3.client("lambda", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(retries={"max_attempts": 1}, read_timeout=60,
                                        connect_timeout=5, proxies={}))
    yield client
    client.close()


# --------------------------------------------------------------------------------------------
# 1. accept, run, same result as the synchronous invoke
# --------------------------------------------------------------------------------------------
def test_invoke_async_onnx_result_equals_sync_invoke(server):
    body = {"inputs": digits_rows(3)}
    sync = assert_ok(server.invoke("digits", body), "sync digits:")
    eid = invoke_async(server, "digits", body)
    ev = wait_event(server, eid)
    assert ev["status"] == "succeeded", ev
    assert ev["id"] == eid and ev["event_id"] == eid, ev
    assert ev["function"] == "digits" and ev["attempts"] == 1, ev
    assert ev["payload"] == body, ev
    assert ev["result"] == sync, "async result differs from the synchronous invoke:\n%r\n%r" % (
        ev["result"], sync)
    assert "error" not in ev, ev
    assert len(ev["history"]) == 1 and "error" not in ev["history"][0], ev
    created, started, finished = ts(ev["created_at"]), ts(ev["history"][0]["started_at"]), ts(
        ev["finished_at"])
    assert created <= started + 0.001 <= finished + 0.002, ev
    assert abs(time.time() - finished) < 60, ev


def test_invoke_async_process_gets_the_raw_payload_and_matches_sync(server):
    payload = {"values": [1, 2, 3.5], "tag": "async"}
    sync_http = assert_ok(server.invoke("compute", payload), "sync compute (HTTP):")
    sync_lambda = server.post("/2015-03-31/functions/compute/invocations", data=json_bytes(payload))
    assert sync_lambda.status_code == 200, sync_lambda.text
    ids = [invoke_async(server, "compute", payload) for _ in range(3)]
    for eid in ids:
        ev = wait_event(server, eid)
        assert ev["status"] == "succeeded" and ev["attempts"] == 1, ev
        assert ev["result"] == sync_http == sync_lambda.json(), (ev, sync_http)
        assert ev["result"] == {"sum": 6.5, "payload": payload}, ev
    assert len(set(ids)) == 3, ids
    # the handler sees the raw payload (Lambda's Event), not an API Gateway envelope
    eid = invoke_async(server, "echo", {"hello": "world"})
    ev = wait_event(server, eid)
    assert ev["status"] == "succeeded", ev
    assert ev["result"]["event"] == {"hello": "world"}, ev


def test_lambda_event_invocation_type(server, boto_lambda):
    for name, payload in (("digits", {"inputs": digits_rows(1)}), ("compute", {"values": [4, 5]})):
        resp = boto_lambda.invoke(FunctionName=name, InvocationType="Event", Payload=json_bytes(payload))
        assert resp["StatusCode"] == 202, resp
        assert resp["Payload"].read() == b""
        eid = resp["ResponseMetadata"]["HTTPHeaders"].get("x-event-id")
        assert eid, resp["ResponseMetadata"]
        ev = wait_event(server, eid)
        assert ev["status"] == "succeeded" and ev["function"] == name and ev["payload"] == payload, ev
        if name == "compute":
            assert ev["result"] == {"sum": 9, "payload": payload}, ev
    # raw: 202, empty body, X-Event-Id
    r = server.post("/2015-03-31/functions/compute/invocations", data=b'{"values": [1]}',
                    headers={"X-Amz-Invocation-Type": "Event"})
    assert r.status_code == 202 and r.content == b"", (r.status_code, r.text)
    assert get_event(server, r.headers["X-Event-Id"])["function"] == "compute"


# --------------------------------------------------------------------------------------------
# 2. retries with exponential backoff, dead letter, on_failure written once
# --------------------------------------------------------------------------------------------
def test_retries_then_dead_letter_with_history_and_growing_backoff(server, dests):
    payload = {"n": "r1", "fail": True}
    eid = invoke_async(server, "fail3", payload)
    ev = wait_event(server, eid, timeout=20)
    assert ev["status"] == "dead_letter", ev
    assert ev["attempts"] == 3, "max_retries 2 means 3 attempts: %r" % ev
    assert "fails on purpose" in ev.get("error", ""), ev
    assert "result" not in ev, ev
    hist = ev["history"]
    assert len(hist) == 3, ev
    for h in hist:
        assert "fails on purpose" in h.get("error", ""), hist
        assert ts(h["started_at"]) <= ts(h["finished_at"]), hist
    # backoff 100ms doubling with x[0.5, 1.5] jitter: the waits are >= 50ms and >= 100ms.
    waits = [ts(hist[i + 1]["started_at"]) - ts(hist[i]["finished_at"]) for i in range(2)]
    assert waits[0] >= 0.045, "first retry after %.3fs (backoff 100ms, jitter >= 0.5x): %r" % (
        waits[0], hist)
    assert waits[1] >= 0.095, "second retry after %.3fs (doubled: >= 100ms): %r" % (waits[1], hist)
    assert waits[1] >= waits[0] * 0.5, "the backoff did not grow: %r" % (waits,)
    assert max(waits) < 5, "retries far later than their backoff: %r" % (waits,)
    # the on_failure file: exactly one line for it, with the event's document
    wait_until(lambda: lines_for(dests / "fail3_dead.jsonl", eid), 5, message="on_failure line")
    time.sleep(0.3)
    lines = lines_for(dests / "fail3_dead.jsonl", eid)
    assert len(lines) == 1, lines
    assert_destination_line(lines[0], ev)
    assert lines[0]["status"] == "dead_letter" and lines[0]["payload"] == payload, lines[0]
    assert not lines_for(dests / "fail3_ok.jsonl", eid)
    # the server logged the retries and the dead letter
    recs = [r for r in server.log_records() if r.get("event_id") == eid]
    assert sum(1 for r in recs if "retrying" in r.get("msg", "")) == 2, recs
    assert sum(1 for r in recs if "dead-letter" in r.get("msg", "")) == 1, recs


def test_max_retries_0_is_one_attempt(server, dests):
    eid = invoke_async(server, "fail0", {"n": "z", "fail": True})
    ev = wait_event(server, eid)
    assert ev["status"] == "dead_letter" and ev["attempts"] == 1 and len(ev["history"]) == 1, ev
    wait_until(lambda: lines_for(dests / "fail0_dead.jsonl", eid), 5, message="on_failure line")
    assert len(lines_for(dests / "fail0_dead.jsonl", eid)) == 1


# --------------------------------------------------------------------------------------------
# 3. fails once, then succeeds
# --------------------------------------------------------------------------------------------
def test_failure_then_success_on_retry(server, dests, tmp_path):
    counter = tmp_path / "flaky.count"
    payload = {"n": "f1", "counter": str(counter), "fail_times": 1}
    eid = invoke_async(server, "flaky", payload)
    ev = wait_event(server, eid, timeout=20)
    assert ev["status"] == "succeeded", ev
    assert ev["attempts"] == 2, ev
    assert len(ev["history"]) == 2, ev
    assert "call 1 fails" in ev["history"][0].get("error", ""), ev
    assert "error" not in ev["history"][1], ev
    assert ev["result"]["calls"] == 2 and ev["result"]["n"] == "f1", ev
    assert "error" not in ev, "a succeeded event carries no error: %r" % ev
    assert counter.read_text() == "2"
    wait_until(lambda: lines_for(dests / "flaky_ok.jsonl", eid), 5, message="on_success line")
    time.sleep(0.3)
    lines = lines_for(dests / "flaky_ok.jsonl", eid)
    assert len(lines) == 1, lines
    assert_destination_line(lines[0], ev)
    assert not lines_for(dests / "flaky_dead.jsonl", eid), "a retried failure is no dead letter"


def test_http_destinations(server, hook):
    ok = invoke_async(server, "hooked", {"n": "h-ok"})
    bad = invoke_async(server, "hooked", {"n": "h-bad", "fail": True})
    ev_ok, ev_bad = wait_event(server, ok), wait_event(server, bad)
    assert ev_ok["status"] == "succeeded" and ev_bad["status"] == "dead_letter", (ev_ok, ev_bad)
    wait_until(lambda: hook.for_event(ok) and hook.for_event(bad), 10, message="HTTP destination POSTs")
    time.sleep(0.3)
    (p1, ct1, d1), = hook.for_event(ok)
    (p2, ct2, d2), = hook.for_event(bad)
    assert p1 == "/ok" and p2 == "/failed", (p1, p2)
    assert ct1.startswith("application/json") and ct2.startswith("application/json"), (ct1, ct2)
    assert_destination_line(d1, ev_ok)
    assert_destination_line(d2, ev_bad)


# --------------------------------------------------------------------------------------------
# 4. redrive
# --------------------------------------------------------------------------------------------
def test_redrive_a_dead_letter(server, dests, tmp_path):
    flag = tmp_path / "flag"
    payload = {"n": "rd", "flag": str(flag)}
    eid = invoke_async(server, "redrive", payload)
    ev = wait_event(server, eid)
    assert ev["status"] == "dead_letter" and ev["attempts"] == 1, ev
    assert "flag file" in ev["error"], ev
    wait_until(lambda: lines_for(dests / "redrive_dead.jsonl", eid), 5, message="on_failure line")
    # a dead letter's redrive route only takes POST
    r = server.get("/v1/events/%s/redrive" % eid)
    assert_error(r, 405, "method_not_allowed")
    flag.write_text("go")
    r = server.post("/v1/events/%s/redrive" % eid)
    doc = assert_ok(r, "redrive:")
    assert doc["id"] == eid and doc["status"] in ("queued", "running", "succeeded"), doc
    if doc["status"] == "queued":
        assert doc["attempts"] == 0, "a redrive resets the attempts: %r" % doc
        assert "error" not in doc, doc
    assert len(doc["history"]) >= 1, "a redrive keeps the history: %r" % doc
    ev = wait_event(server, eid)
    assert ev["status"] == "succeeded" and ev["attempts"] == 1, ev
    assert len(ev["history"]) == 2, "history kept across the redrive: %r" % ev
    assert "flag file" in ev["history"][0]["error"] and "error" not in ev["history"][1], ev
    assert ev["payload"] == payload, ev
    wait_until(lambda: lines_for(dests / "redrive_ok.jsonl", eid), 5, message="on_success line")
    time.sleep(0.3)
    assert len(lines_for(dests / "redrive_ok.jsonl", eid)) == 1
    assert len(lines_for(dests / "redrive_dead.jsonl", eid)) == 1
    # only dead letters are redriven
    r = server.post("/v1/events/%s/redrive" % eid)
    assert_error(r, 409, "conflict")
    assert get_event(server, eid)["status"] == "succeeded"
    r = server.post("/v1/events/%s/redrive" % ("0" * 32))
    assert_error(r, 404, "not_found")


# --------------------------------------------------------------------------------------------
# 5. listing, errors, the CLI
# --------------------------------------------------------------------------------------------
def test_list_filters_and_order(server):
    ok_ids = [invoke_async(server, "listing", {"n": i}) for i in range(4)]
    dead_ids = [invoke_async(server, "listing", {"n": 10 + i, "fail": True}) for i in range(2)]
    other = invoke_async(server, "listing2", {"n": 99})
    for eid in ok_ids + dead_ids + [other]:
        wait_event(server, eid)
    every = list_events(server, function="listing")
    assert [e["id"] for e in every] == list(reversed(ok_ids + dead_ids)), "newest first"
    assert all(e["function"] == "listing" for e in every)
    succ = list_events(server, function="listing", status="succeeded")
    assert [e["id"] for e in succ] == list(reversed(ok_ids)), succ
    dead = list_events(server, function="listing", status="dead_letter")
    assert [e["id"] for e in dead] == list(reversed(dead_ids)), dead
    assert all("fails on purpose" in e["error"] for e in dead), dead
    assert list_events(server, function="listing", status="queued") == []
    two = list_events(server, function="listing", limit=2)
    assert [e["id"] for e in two] == list(reversed(dead_ids)), two
    assert [e["id"] for e in list_events(server, function="listing2")] == [other]
    assert list_events(server, function="no_such_function") == []
    # every status across functions includes both
    all_dead = {e["id"] for e in list_events(server, status="dead_letter", limit=10000)}
    assert set(dead_ids) <= all_dead
    # list entries are the same documents as GET /v1/events/ID
    assert succ[0] == get_event(server, succ[0]["id"])


def test_api_errors(server):
    assert_error(server.get("/v1/events", params={"status": "done"}), 400, "invalid_input")
    assert_error(server.get("/v1/events", params={"limit": "0"}), 400, "invalid_input")
    assert_error(server.get("/v1/events/" + "f" * 32), 404, "not_found")
    assert_error(server.post("/v1/events"), 405, "method_not_allowed")
    eid = invoke_async(server, "compute", {"values": [1]})
    assert_error(server.request("DELETE", "/v1/events/" + eid), 405, "method_not_allowed")
    # invoke-async: unknown function, GET, onnx body without "inputs" / not JSON
    r = server.post("/v1/functions/nope/invoke-async", data=b"{}")
    assert_error(r, 404, "not_found")
    assert_error(server.get("/v1/functions/compute/invoke-async"), 405, "method_not_allowed")
    for bad in (b'{"rows": [[1]]}', b"not json", b"[1, 2]"):
        r = server.post("/v1/functions/digits/invoke-async", data=bad)
        assert_error(r, 400, "invalid_input")
    # the Lambda Invoke API: unknown function → ResourceNotFoundException, bad onnx payload → 400
    r = server.post("/2015-03-31/functions/nope/invocations", data=b"{}",
                    headers={"X-Amz-Invocation-Type": "Event"})
    assert r.status_code == 404 and r.headers.get("X-Amzn-ErrorType", "").startswith(
        "ResourceNotFoundException"), (r.status_code, dict(r.headers), r.text)
    r = server.post("/2015-03-31/functions/digits/invocations", data=b'{"x": 1}',
                    headers={"X-Amz-Invocation-Type": "Event"})
    assert r.status_code == 400, (r.status_code, r.text)
    # none of the refused requests created an event
    assert not [e for e in list_events(server, limit=10000) if e["function"] == "nope"]


def test_cli_list_show_redrive(server, tmp_path):
    flag = tmp_path / "flag"
    dead = invoke_async(server, "redrive", {"n": "cli", "flag": str(flag)})
    good = invoke_async(server, "compute", {"values": [2, 3]})
    wait_event(server, dead)
    wait_event(server, good)

    p = run_cli("events", "list", "--url", server.url, "--status", "dead_letter",
                "--function", "redrive")
    assert p.returncode == 0, cli_output(p)
    assert "ID" in p.stdout and "STATUS" in p.stdout, p.stdout
    row = [l for l in p.stdout.splitlines() if l.startswith(dead)]
    assert len(row) == 1 and "dead_letter" in row[0] and "redrive" in row[0], p.stdout
    assert good not in p.stdout, p.stdout

    p = run_cli("events", "list", "--url", server.url, "--function", "compute", "--limit", "1",
                "--json")
    assert p.returncode == 0, cli_output(p)
    doc = json.loads(p.stdout)
    assert [e["id"] for e in doc["events"]] == [good], doc

    p = run_cli("events", "list", "--url", server.url, "--function", "no_such_fn")
    assert p.returncode == 0 and "(no events)" in p.stdout, cli_output(p)

    p = run_cli("events", "list", "--url", server.url, "--status", "finished")
    assert p.returncode != 0, cli_output(p)

    p = run_cli("events", "show", good, "--url", server.url, "--json")
    assert p.returncode == 0, cli_output(p)
    assert json.loads(p.stdout) == get_event(server, good)

    p = run_cli("events", "show", dead, "--url", server.url)
    assert p.returncode == 0, cli_output(p)
    assert dead in p.stdout and "dead_letter" in p.stdout and "flag file" in p.stdout, p.stdout

    p = run_cli("events", "show", "0" * 32, "--url", server.url)
    assert p.returncode == 1, cli_output(p)
    assert "404" in p.stderr, cli_output(p)

    flag.write_text("go")
    p = run_cli("events", "redrive", dead, "--url", server.url)
    assert p.returncode == 0, cli_output(p)
    assert "redriven" in p.stdout and dead in p.stdout, p.stdout
    assert wait_event(server, dead)["status"] == "succeeded"

    p = run_cli("events", "redrive", good, "--url", server.url)
    assert p.returncode == 1, cli_output(p)
    assert "409" in p.stderr, cli_output(p)

    p = run_cli("events", "list", "--url", "http://127.0.0.1:1")
    assert p.returncode != 0, cli_output(p)


# --------------------------------------------------------------------------------------------
# 6. the concurrency share leaves room for synchronous traffic
# --------------------------------------------------------------------------------------------
def test_concurrency_share_limits_events_and_spares_sync_traffic(start_server):
    server = start_server(fix_async_keys({"server": {"poll_interval": "0s"}, "functions": {
        "shared": proc_fn("handlers.task", max_instances=2,
                          async_={"concurrency_share": 0.5}),
    }}))
    ids = [invoke_async(server, "shared", {"n": i, "ms": 150}) for i in range(12)]
    # once events are running, synchronous requests are served by the other instance at once
    wait_until(lambda: list_events(server, function="shared", status="running"), 10,
               message="a running event")
    lat = []
    for i in range(5):
        t0 = time.monotonic()
        r = server.invoke("shared", {"n": "sync%d" % i, "ms": 10})
        lat.append(time.monotonic() - t0)
        assert_ok(r, "synchronous request while events run:")
        running = list_events(server, function="shared", status="running")
        assert len(running) <= 1, "concurrency_share 0.5 of 2 instances: %d running" % len(running)
    assert lat[0] < 3.0 and max(lat[1:]) < 0.75, (
        "synchronous requests waited behind events (latencies %r)" % (lat,))
    evs = [wait_event(server, eid, timeout=30) for eid in ids]
    assert all(e["status"] == "succeeded" for e in evs), evs
    # the handlers' own clocks: no two events overlapped
    spans = sorted((e["result"]["start"], e["result"]["end"]) for e in evs)
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert s2 >= e1 - 0.005, "two events ran at once: %r and %r" % ((s1, e1), (s2, e2))


def test_one_functions_backlog_does_not_hold_up_another_functions_events(start_server):
    """Events of a function with a long backlog must not delay another function's events: each
    function's share is its own."""
    server = start_server(fix_async_keys({"server": {"poll_interval": "0s"}, "functions": {
        "backlog": proc_fn("handlers.task", max_instances=1, async_={"concurrency_share": 1}),
        "other": proc_fn("handlers.task", max_instances=1, async_={"concurrency_share": 1}),
    }}))
    answers = _post_many(server.url, "backlog", [{"n": i, "ms": 200} for i in range(600)])
    assert all(a[0] == 202 for a in answers), [a for a in answers if a[0] != 202][:3]
    t0 = time.monotonic()
    eid = invoke_async(server, "other", {"n": "other"})
    ev = wait_event(server, eid, timeout=20)
    waited = time.monotonic() - t0
    assert ev["status"] == "succeeded", ev
    assert waited < 3.0, ("an event of an idle function waited %.1fs behind another function's "
                          "600 queued events" % waited)


def test_a_throttled_attempt_is_retried_without_using_up_max_retries(start_server):
    """As on Lambda: an attempt refused because the function had no capacity (429, synchronous
    traffic holding every instance) is not a failure of the event; the event waits and runs
    (within max_event_age), without counting the throttle against max_retries."""
    server = start_server(fix_async_keys({"server": {"poll_interval": "0s"}, "functions": {
        "busy": proc_fn("handlers.task", max_instances=1, min_instances=1, queue_timeout="500ms",
                        async_={"max_retries": 0, "concurrency_share": 1}),
    }}))
    server.wait_state("busy", "warm", timeout=30)
    out = {}
    sync = threading.Thread(target=lambda: out.setdefault(
        "r", server.invoke("busy", {"n": "sync", "ms": 1500})))
    sync.start()
    try:
        time.sleep(0.2)
        eid = invoke_async(server, "busy", {"n": "ev"})
        ev = wait_event(server, eid, timeout=20)
    finally:
        sync.join()
    assert_ok(out["r"], "the synchronous request:")
    assert ev["status"] == "succeeded", (
        "an event that never ran (the function was busy with synchronous requests) was "
        "dead-lettered: %r" % ev)


# --------------------------------------------------------------------------------------------
# 7. max_event_age
# --------------------------------------------------------------------------------------------
def test_max_event_age_dead_letters_stale_events_without_running_them(start_server, tmp_path):
    calls = tmp_path / "calls.jsonl"
    server = start_server(fix_async_keys({"server": {"poll_interval": "0s"}, "functions": {
        "slow": proc_fn("handlers.task", max_instances=1, min_instances=1,
                        async_={"max_event_age": "1s", "concurrency_share": 1, "max_retries": 0,
                                "on_failure": file_uri(tmp_path / "dead.jsonl")}),
    }}))
    server.wait_state("slow", "warm", timeout=30)
    ids = [invoke_async(server, "slow", {"n": i, "ms": 400, "log": str(calls)}) for i in range(8)]
    evs = [wait_event(server, eid, timeout=30) for eid in ids]
    ok = [e for e in evs if e["status"] == "succeeded"]
    dead = [e for e in evs if e["status"] == "dead_letter"]
    assert ok and len(dead) >= 4, "with 400ms per event and max_event_age 1s: %d ok, %d dead" % (
        len(ok), len(dead))
    ran = {json.loads(l)["n"] for l in calls.read_text().splitlines()}
    for e in dead:
        assert "max_event_age" in e["error"], e
        assert e["payload"]["n"] not in ran, "a stale event was run: %r" % e
        assert ts(e["finished_at"]) - ts(e["created_at"]) >= 0.99, e
    for e in ok:
        assert e["payload"]["n"] in ran
    assert {e["payload"]["n"] for e in ok} == ran
    dead_lines = read_jsonl(tmp_path / "dead.jsonl")
    assert sorted(l["event_id"] for l in dead_lines) == sorted(e["id"] for e in dead)


# --------------------------------------------------------------------------------------------
# 8. crash safety: SIGKILL with 1,000 events queued or running
# --------------------------------------------------------------------------------------------
def _post_many(url, function, payloads, workers=16):
    local = threading.local()

    def one(p):
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = new_session()
        r = s.post(url + "/v1/functions/%s/invoke-async" % function, data=json_bytes(p),
                   headers={"Content-Type": "application/json"}, timeout=60)
        return r.status_code, r.headers.get("X-Event-Id"), r.text

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, payloads))


def _db_statuses(state_dir):
    """{event id: (status, payload n)} read from the killed server's events.db."""
    db = sqlite3.connect("file:%s?mode=ro" % (Path(state_dir) / "events.db"), uri=True)
    try:
        return {i: (s, json.loads(p)["n"]) for i, s, p in
                db.execute("SELECT id, status, payload FROM events")}
    finally:
        db.close()


def test_sigkill_with_1000_events_loses_none_and_writes_each_destination_once(start_server,
                                                                              tmp_path):
    n_events = 1000
    ok_file, dead_file, calls = tmp_path / "ok.jsonl", tmp_path / "dead.jsonl", tmp_path / "calls"
    state = tmp_path / "state"
    config = fix_async_keys({"server": {"poll_interval": "0s"}, "functions": {
        "work": proc_fn("handlers.task", max_instances=4, async_={
            "concurrency_share": 1, "max_retries": 1, "retry_backoff": "20ms",
            "on_success": file_uri(ok_file), "on_failure": file_uri(dead_file)}),
    }})
    # every 10th event fails on every attempt: it must end as a dead letter
    payloads = [{"n": i, "ms": 15, "log": str(calls), "fail": i % 10 == 7} for i in range(n_events)]
    should_fail = {p["n"] for p in payloads if p["fail"]}

    server = start_server(config, state_dir=state)
    t0 = time.monotonic()
    answers = _post_many(server.url, "work", payloads)
    bad = [a for a in answers if a[0] != 202 or not a[1]]
    assert not bad, "%d of %d enqueues were not 202: %r" % (len(bad), n_events, bad[:5])
    id_of = {p["n"]: a[1] for p, a in zip(payloads, answers)}
    assert len(set(id_of.values())) == n_events, "event ids are not unique"
    enqueue_s = time.monotonic() - t0

    # three SIGKILLs at different points (each after some events succeeded in that run), so that
    # several crash windows (claimed, running, finished but destination not yet written...) are hit
    running_at_kill = set()
    restarts = []  # (server started after a kill, events running at that kill)
    for round_no, threshold in enumerate((150, 200, 200)):
        wait_until(lambda: metric(server, "pilotlight_async_succeeded_total") >= threshold, 60,
                   message="%d events to succeed before kill %d" % (threshold, round_no + 1))
        server.expect_exit = None
        server.kill()
        assert server.proc.returncode == -signal.SIGKILL, server.proc.returncode
        at_kill = _db_statuses(state)
        assert set(at_kill) == set(id_of.values()), "events.db at kill %d lacks accepted events" % (
            round_no + 1)
        counts = collections.Counter(s for s, _ in at_kill.values())
        unfinished = counts["queued"] + counts["running"]
        if round_no == 0:
            assert unfinished >= 200, ("the kill came too late to test anything: %r (enqueue took "
                                       "%.1fs)" % (dict(counts), enqueue_s))
        else:
            assert unfinished > 0, "all events finished before kill %d: %r" % (round_no + 1, dict(counts))
        running = {n for s, n in at_kill.values() if s == "running"}
        running_at_kill |= running
        server = start_server(config, state_dir=state)
        restarts.append((server, running))
    server2 = server

    evs = wait_all_final(server2, "work", n_events, timeout=45)
    by_id = {e["id"]: e for e in evs}
    assert set(by_id) == set(id_of.values()), "events lost or invented across the crash"
    wrong = [(n, by_id[i]["status"]) for n, i in id_of.items()
             if by_id[i]["status"] != ("dead_letter" if n in should_fail else "succeeded")]
    assert not wrong, "events ended in the wrong state: %r" % wrong[:10]
    for n, i in id_of.items():
        assert by_id[i]["payload"] == payloads[n], by_id[i]
        if n not in should_fail:
            assert by_id[i]["result"]["n"] == n, by_id[i]

    # each destination line exactly once per finished event, none for anything else
    time.sleep(0.3)
    ok_lines, dead_lines = read_jsonl(ok_file), read_jsonl(dead_file)
    ok_count = collections.Counter(l["event_id"] for l in ok_lines)
    dead_count = collections.Counter(l["event_id"] for l in dead_lines)
    dup_ok = {i: c for i, c in ok_count.items() if c != 1}
    dup_dead = {i: c for i, c in dead_count.items() if c != 1}
    assert not dup_ok, "on_success lines written more than once: %r" % list(dup_ok.items())[:10]
    assert not dup_dead, "on_failure lines written more than once: %r" % list(dup_dead.items())[:10]
    want_ok = {i for n, i in id_of.items() if n not in should_fail}
    want_dead = {i for n, i in id_of.items() if n in should_fail}
    assert set(ok_count) == want_ok, "on_success: %d missing, %d unexpected" % (
        len(want_ok - set(ok_count)), len(set(ok_count) - want_ok))
    assert set(dead_count) == want_dead, "on_failure: %d missing, %d unexpected" % (
        len(want_dead - set(dead_count)), len(set(dead_count) - want_dead))
    for l in ok_lines:
        assert l["status"] == "succeeded" and l["result"]["n"] == l["payload"]["n"], l
    for l in dead_lines:
        assert l["status"] == "dead_letter" and "fails on purpose" in l["error"], l

    # at-least-once: every event ran; a successful event ran twice only if the crash caught it
    ran = collections.Counter(json.loads(l)["n"] for l in calls.read_text().splitlines())
    assert set(ran) == set(range(n_events)), "events never run: %r" % sorted(
        set(range(n_events)) - set(ran))[:10]
    twice = {n for n, c in ran.items() if c > 1 and n not in should_fail}
    assert twice <= running_at_kill, "ran more than once without being interrupted: %r" % sorted(
        twice - running_at_kill)[:10]

    # each restart said how many events it queued again
    for srv, running in restarts:
        recs = [r for r in srv.log_records() if r.get("msg") == REQUEUED_MSG]
        if running:
            assert len(recs) == 1 and recs[0].get("events") == len(running), (recs, len(running))
        else:
            assert not recs, recs
    assert time.monotonic() - t0 < 60, "the crash test took %.1fs" % (time.monotonic() - t0)


def _set_destination_pending(state_dir, ids):
    """Puts events back into the state a crash leaves between appending a destination line and
    recording that it was written (the server is stopped)."""
    db = sqlite3.connect(str(Path(state_dir) / "events.db"))
    try:
        with db:
            db.executemany("UPDATE events SET destination_done = 0 WHERE id = ?", [(i,) for i in ids])
    finally:
        db.close()


def test_unwritten_destinations_are_written_once_at_the_next_start(start_server, tmp_path):
    """A destination that could not be written when its event finished (missing folder, HTTP
    endpoint down — the same state as a crash between the event's commit and its line) is
    written at the next start, exactly once per finished event; a line that did reach the file
    before a crash is not written again."""
    state = tmp_path / "state"
    ok_dir, dead_dir = tmp_path / "okdir", tmp_path / "deaddir"
    dead_dir.mkdir()
    ok_file, dead_file = ok_dir / "ok.jsonl", dead_dir / "dead.jsonl"
    flag = tmp_path / "flag"
    hook_port = free_port()
    config = fix_async_keys({"server": {"poll_interval": "0s"}, "functions": {
        "d": proc_fn("handlers.task", async_={
            "max_retries": 0, "on_success": file_uri(ok_file), "on_failure": file_uri(dead_file)}),
        "h": proc_fn("handlers.task", async_={
            "max_retries": 0, "on_success": "http://127.0.0.1:%d/ok" % hook_port}),
    }})
    server = start_server(config, state_dir=state)
    plain = invoke_async(server, "d", {"n": "plain"})
    # dead-lettered first (its on_failure line is written), then redriven and succeeded
    redriven = invoke_async(server, "d", {"n": "redriven", "flag": str(flag)})
    assert wait_event(server, redriven)["status"] == "dead_letter"
    wait_until(lambda: lines_for(dead_file, redriven), 5, message="on_failure line")
    flag.write_text("go")
    assert_ok(server.post("/v1/events/%s/redrive" % redriven), "redrive:")
    hooked = invoke_async(server, "h", {"n": "hooked"})
    for eid in (plain, redriven, hooked):
        assert wait_event(server, eid)["status"] == "succeeded"
    # the destinations failed: logged, and nothing written yet
    for eid in (plain, redriven, hooked):
        server.wait_log_record(lambda r, eid=eid: r.get("event_id") == eid and "destination" in r.get(
            "msg", ""), 5, "the destination error of %s" % eid)
    assert not ok_dir.exists()
    assert server.terminate() == 0, server.diagnostics()

    ok_dir.mkdir()
    hook = Hook(hook_port)
    try:
        server = start_server(config, state_dir=state)
        wait_until(lambda: hook.for_event(hooked), 10, message="the HTTP destination at start-up")
        evs = {eid: get_event(server, eid) for eid in (plain, redriven, hooked)}
        lines = collections.Counter(l["event_id"] for l in read_jsonl(ok_file))
        assert lines[plain] == 1, "the unwritten on_success line of an event: %r" % dict(lines)
        assert lines[redriven] == 1, (
            "an event that succeeded after a redrive lost its on_success line across the restart "
            "(its event_id is in the on_failure file from its first, dead-lettered run): %r" % dict(lines))
        for l in read_jsonl(ok_file):
            assert_destination_line(l, evs[l["event_id"]])
        assert len(hook.for_event(hooked)) == 1
        assert_destination_line(hook.for_event(hooked)[0][2], evs[hooked])
        assert server.terminate() == 0, server.diagnostics()

        # a crash right after the lines were appended, before they were recorded as written
        _set_destination_pending(state, [plain, redriven])
        server = start_server(config, state_dir=state)
        time.sleep(0.5)
        lines = collections.Counter(l["event_id"] for l in read_jsonl(ok_file))
        assert lines[plain] == 1 and lines[redriven] <= 1, "lines written again: %r" % dict(lines)
        assert len(hook.for_event(hooked)) == 1, "the HTTP destination was posted again"
        # and once written, later restarts write nothing more
        assert server.terminate() == 0, server.diagnostics()
        server = start_server(config, state_dir=state)
        time.sleep(0.5)
        assert collections.Counter(l["event_id"] for l in read_jsonl(ok_file)) == lines
        assert len(read_jsonl(dead_file)) == 1
    finally:
        hook.close()


# --------------------------------------------------------------------------------------------
# 9. SIGTERM keeps queued events for the next start
# --------------------------------------------------------------------------------------------
def test_sigterm_keeps_queued_events_for_the_next_start(start_server, tmp_path):
    state = tmp_path / "state"
    ok_file = tmp_path / "ok.jsonl"
    config = fix_async_keys({"server": {"poll_interval": "0s"}, "functions": {
        "slow": proc_fn("handlers.task", max_instances=1, async_={
            "concurrency_share": 1, "on_success": file_uri(ok_file)}),
    }})
    server = start_server(config, state_dir=state)
    ids = [invoke_async(server, "slow", {"n": i, "ms": 300}) for i in range(8)]
    wait_event(server, ids[0], statuses=("running", "succeeded"), timeout=15)
    t0 = time.monotonic()
    server.signal(signal.SIGTERM)
    rc = server.wait_exit(20)
    assert rc == 0, "exit %r after SIGTERM\n%s" % (rc, server.diagnostics())
    assert time.monotonic() - t0 < 5, "SIGTERM waited for queued events, not only running ones"
    at_stop = _db_statuses(state)
    counts = collections.Counter(s for s, _ in at_stop.values())
    assert counts["running"] == 0, "a clean stop left running events: %r" % dict(counts)
    assert counts["queued"] >= 4, "queued events were run during shutdown: %r" % dict(counts)
    assert counts["succeeded"] >= 1, "the running event was not finished: %r" % dict(counts)
    assert len(read_jsonl(ok_file)) == counts["succeeded"]

    server2 = start_server(config, state_dir=state)
    evs = [wait_event(server2, eid, timeout=30) for eid in ids]
    assert all(e["status"] == "succeeded" and e["attempts"] == 1 for e in evs), evs
    assert not [r for r in server2.log_records() if r.get("msg") == REQUEUED_MSG], \
        "a clean stop must leave nothing to re-queue"
    time.sleep(0.3)
    lines = collections.Counter(l["event_id"] for l in read_jsonl(ok_file))
    assert lines == collections.Counter(ids), lines


# --------------------------------------------------------------------------------------------
# 10. metrics
# --------------------------------------------------------------------------------------------
def test_metrics(start_server):
    server = start_server(fix_async_keys({"server": {"poll_interval": "0s"}, "functions": {
        "m": proc_fn("handlers.task", max_instances=1, async_={
            "concurrency_share": 1, "max_retries": 1, "retry_backoff": "50ms"}),
    }}))
    m = server.metrics()
    for name in ("pilotlight_async_events_total", "pilotlight_async_succeeded_total",
                 "pilotlight_async_retries_total", "pilotlight_async_dead_letters_total",
                 "pilotlight_async_queue_depth", "pilotlight_async_oldest_event_age_seconds"):
        assert m.find(name), "%s missing:\n%s" % (name, m.text[:3000])
        assert m.sum(name) == 0, (name, m.sum(name))
    blocker = invoke_async(server, "m", {"n": "b", "ms": 1500})
    wait_event(server, blocker, statuses=("running",), timeout=15)
    ids = [invoke_async(server, "m", {"n": i}) for i in range(3)]
    ids.append(invoke_async(server, "m", {"n": "x", "fail": True}))
    time.sleep(0.6)
    m = server.metrics()
    assert m.sum("pilotlight_async_events_total") == 5
    assert m.sum("pilotlight_async_queue_depth") == 5, m.sum("pilotlight_async_queue_depth")
    age = m.sum("pilotlight_async_oldest_event_age_seconds")
    assert 0.5 <= age < 5, age
    for eid in [blocker] + ids:
        wait_event(server, eid, timeout=20)
    m = server.metrics()
    assert m.sum("pilotlight_async_events_total") == 5
    assert m.sum("pilotlight_async_succeeded_total") == 4
    assert m.sum("pilotlight_async_retries_total") == 1
    assert m.sum("pilotlight_async_dead_letters_total") == 1
    assert m.sum("pilotlight_async_queue_depth") == 0
    assert m.sum("pilotlight_async_oldest_event_age_seconds") == 0


def test_finished_events_are_purged_after_server_event_retention(start_server, tmp_path):
    """server.event_retention bounds events.db: succeeded events go after it; dead letters stay."""
    lam = Path(__file__).resolve().parent / "lambda"
    cfg = {"server": {"event_retention": "1s"},
           "functions": {
               "echo": {"runtime": "process", "command": ["/usr/bin/python3", str(lam / "bootstrap.py")],
                        "handler": "handlers.echo", "cwd": str(lam)},
               "fail": {"runtime": "process", "command": ["/usr/bin/python3", str(lam / "bootstrap.py")],
                        "handler": "handlers.fail", "cwd": str(lam),
                        "async": {"max_retries": 0}}}}
    srv = start_server(config=cfg)
    ok = srv.session.post(srv.url + "/v1/functions/echo/invoke-async", json={"a": 1}, timeout=30).json()["event_id"]
    bad = srv.session.post(srv.url + "/v1/functions/fail/invoke-async", json={"b": 1}, timeout=30).json()["event_id"]
    deadline = time.time() + 20
    purged = False
    while time.time() < deadline:
        if srv.session.get(srv.url + "/v1/events/" + ok, timeout=10).status_code == 404:
            purged = True
            break
        time.sleep(0.2)
    assert purged, "a succeeded event outlived server.event_retention"
    dead = srv.session.get(srv.url + "/v1/events/" + bad, timeout=10)
    assert dead.status_code == 200 and dead.json()["status"] == "dead_letter", dead.text
