"""Per-request observability: X-Request-Id taken or generated and echoed, and one log line per
request (--log-format json: request_id, function, version, status, cold_start, fetch_ms,
load_ms, handler_ms, total_ms, input shapes; never the input values; --log-format text too)."""

import json


from support import assert_error, assert_ok, wait_until

CONFIG = {"functions": {"tiny_mlp": {"min_instances": 0, "idle_timeout": "60s"},
                        # only test_json_request_log_line calls it: its first request is cold
                        "tiny_log": {"model": "tiny_mlp", "min_instances": 0,
                                     "idle_timeout": "60s"},
                        "multi_input": {"min_instances": 0, "idle_timeout": "60s"}}}

# Distinctive input values: none of them may appear in the log.
SECRET_VALUES = [31337.25, -4242.125, 271828.5, 0.000123456]


def secret_rows(n):
    rows = []
    for i in range(n):
        row = [SECRET_VALUES[(i + j) % len(SECRET_VALUES)] for j in range(16)]
        rows.append(row)
    return rows



def test_request_id_is_echoed(server):
    r = server.invoke("tiny_mlp", {"inputs": secret_rows(1)}, headers={"X-Request-Id": "my-id-123"})
    assert_ok(r)
    assert r.headers.get("X-Request-Id") == "my-id-123"
    r = server.invoke("tiny_mlp", {"inputs": [[1]]}, headers={"X-Request-Id": "my-id-456"})
    assert_error(r, 400, "invalid_input", request_id="my-id-456")
    r = server.post("/v1/batch", json=[{"model": "tiny_mlp", "inputs": secret_rows(1)}],
                    headers={"X-Request-Id": "my-batch-789"})
    assert_ok(r)
    assert r.headers.get("X-Request-Id") == "my-batch-789"


def test_request_id_is_generated_when_absent(server):
    ids = set()
    for _ in range(3):
        r = server.invoke("tiny_mlp", {"inputs": secret_rows(1)})
        assert_ok(r)
        rid = r.headers.get("X-Request-Id")
        assert rid and rid.strip() == rid and rid.isprintable(), rid
        ids.add(rid)
    assert len(ids) == 3, "generated request ids repeat: %r" % ids
    r = server.invoke("no_such_function", {"inputs": secret_rows(1)})
    err = assert_error(r, 404, "not_found")
    assert err["request_id"] not in ids


def _shapes_text(rec):
    """The JSON text of every field of a log record that talks about shapes or inputs."""
    parts = [json.dumps(v, separators=(",", ":")) for k, v in rec.items()
             if "shape" in k.lower() or k.lower() in ("inputs", "input")]
    return " ".join(parts)


def test_json_request_log_line(server):
    r1 = server.invoke("tiny_log", {"inputs": secret_rows(3)}, headers={"X-Request-Id": "log-cold-1"})
    assert_ok(r1)
    r2 = server.invoke("tiny_log", {"inputs": secret_rows(3)}, headers={"X-Request-Id": "log-warm-2"})
    assert_ok(r2)

    cold = server.wait_log_record(lambda rec: rec.get("request_id") == "log-cold-1",
                                  what="the log line of request log-cold-1")
    warm = server.wait_log_record(lambda rec: rec.get("request_id") == "log-warm-2",
                                  what="the log line of request log-warm-2")
    for rec, is_cold in ((cold, True), (warm, False)):
        for key in ("request_id", "function", "version", "status", "cold_start", "fetch_ms",
                    "load_ms", "handler_ms", "total_ms"):
            assert key in rec, "request log line lacks %r: %r" % (key, rec)
        assert rec["function"] == "tiny_log", rec
        assert rec["version"] == "1.0.0", rec
        assert int(rec["status"]) == 200, rec
        assert rec["cold_start"] is is_cold, rec
        for key in ("fetch_ms", "load_ms", "handler_ms", "total_ms"):
            assert isinstance(rec[key], (int, float)) and not isinstance(rec[key], bool), rec
            assert rec[key] >= 0, rec
        assert rec["total_ms"] >= rec["handler_ms"] - 0.01, rec
        shapes = _shapes_text(rec)
        assert shapes, "request log line has no input shapes: %r" % rec
        assert "3,16" in shapes or "3x16" in shapes, "input shape [3,16] not in %r" % rec
    assert cold["load_ms"] > 0, cold


def test_multi_input_shapes_logged(server):
    body = {"inputs": {"features": [[1, 2, 3, 4]] * 2, "ids": [[5, 6]] * 2}}
    assert_ok(server.invoke("multi_input", body, headers={"X-Request-Id": "log-multi"}))
    rec = server.wait_log_record(lambda rec: rec.get("request_id") == "log-multi",
                                 what="the log line of request log-multi")
    shapes = _shapes_text(rec)
    assert "features" in shapes and "ids" in shapes, rec
    assert ("2,4" in shapes or "2x4" in shapes) and ("2,2" in shapes or "2x2" in shapes), rec


def test_errors_are_logged_with_their_status(server):
    r = server.invoke("tiny_mlp", {"inputs": [[1, 2]]}, headers={"X-Request-Id": "log-bad-400"})
    assert_error(r, 400, "invalid_input")
    rec = server.wait_log_record(lambda rec: rec.get("request_id") == "log-bad-400",
                                 what="the log line of request log-bad-400")
    assert int(rec["status"]) == 400, rec
    r = server.invoke("nope", {"inputs": [[1]]}, headers={"X-Request-Id": "log-bad-404"})
    assert_error(r, 404, "not_found")
    rec = server.wait_log_record(lambda rec: rec.get("request_id") == "log-bad-404",
                                 what="the log line of request log-bad-404")
    assert int(rec["status"]) == 404, rec


def test_log_is_json_lines_and_never_holds_input_values(server):
    server.invoke("tiny_mlp", {"inputs": secret_rows(2)}, headers={"X-Request-Id": "log-last"})
    server.wait_log_record(lambda rec: rec.get("request_id") == "log-last", what="log-last")
    text = server.log_text()
    for line in text.splitlines():
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:
                raise AssertionError("--log-format json wrote a non-JSON line: %r" % line)
            assert isinstance(rec, dict), line
    for v in SECRET_VALUES:
        assert repr(v) not in text, "input value %r appears in the log" % v


def test_text_log_format(start_server):
    server = start_server(CONFIG, log_format="text")
    r = server.invoke("tiny_mlp", {"inputs": secret_rows(1)}, headers={"X-Request-Id": "text-req-1"})
    assert_ok(r)
    line = wait_until(lambda: next((l for l in server.log_lines() if "text-req-1" in l), None),
                      15, 0.1, lambda: "a text log line with the request id\n"
                      + server.log_text()[-2000:])
    assert "tiny_mlp" in line and "200" in line, line
    try:
        json.loads(line)
        raise AssertionError("--log-format text wrote JSON: %r" % line)
    except ValueError:
        pass
    assert repr(SECRET_VALUES[0]) not in server.log_text()
