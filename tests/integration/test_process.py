"""Process functions (runtime: process): Lambda handlers run as worker processes on the AWS Lambda
Runtime API, the API Gateway 2.0 events of /v1/functions/NAME/invoke[/{proxy+}], and the Lambda
Invoke API (/2015-03-31/functions/NAME/invocations) driven by boto3 from Debian against onnx and
process functions.

The workers run tests/integration/lambda/bootstrap.py (a minimal Python runtime interface client)
with the handlers in tests/integration/lambda/handlers.py (plus broken.py, exit_init.py and
slow_init.py). Failure figures of issue 5: SIGKILL mid-request → typed 502 within 1 s and a new
worker for the next request; a hung handler → 504 at the timeout, worker gone, replaced; 10 MB of
stdout and a 7 MB response do not take the server down; RSS over memory_mb → killed.
"""

import base64
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support import (CHILD_ENV, BIN, assert_error, assert_ok, cli_output, digits_rows, free_port,
                     json_bytes, tiny_rows, to_yaml, wait_until)

LAMBDA_DIR = (Path(__file__).resolve().parent / "lambda").absolute()
BOOTSTRAP = ["/usr/bin/python3", str(LAMBDA_DIR / "bootstrap.py")]
REGION_DEFAULT = "us-east-1"


def proc_fn(handler, **keys):
    spec = {"runtime": "process", "command": BOOTSTRAP, "handler": handler, "cwd": str(LAMBDA_DIR)}
    spec.update(keys)
    return spec


CONFIG = {
    "server": {"poll_interval": "0s"},
    "functions": {
        # onnx functions, for the Invoke API
        "digits": {"max_instances": 1},
        "tiny_mlp": {"max_instances": 1},
        # process functions
        "echo": proc_fn("handlers.echo", env={"GREETING": "hello from config"}),
        "ctx": proc_fn("handlers.context", timeout="7s", memory_mb=512),
        "environ": proc_fn("handlers.environ", memory_mb=640,
                           env={"GREETING": "hi there", "AWS_LAMBDA_FUNCTION_TIMEOUT_TEST": "x"}),
        "tmpenv": proc_fn("handlers.environ", idle_timeout="1s"),
        "fail": proc_fn("handlers.fail"),
        "http": proc_fn("handlers.http"),
        "raw": proc_fn("handlers.raw"),
        "mirror": proc_fn("handlers.mirror"),
        "victim": proc_fn("handlers.pid", timeout="30s"),
        "crash": proc_fn("handlers.crash"),
        "stuck": proc_fn("handlers.pid", timeout="1s"),
        "hang": proc_fn("handlers.hang", timeout="1s"),
        "big": proc_fn("handlers.big"),
        "big_api": proc_fn("handlers.big"),
        "big2": proc_fn("handlers.big"),
        "family": proc_fn("handlers.family", timeout="1s"),
        "noisy": proc_fn("handlers.noisy"),
        "hog": proc_fn("handlers.hog", memory_mb=256),
        "broken": proc_fn("broken.handler"),
        "exitinit": proc_fn("exit_init.handler"),
        "slowinit": proc_fn("slow_init.handler", env={"SLOW_INIT_MS": "1200"}),
        "slowinit_short": proc_fn("slow_init.handler", init_timeout="400ms",
                                  env={"SLOW_INIT_MS": "5000"}),
        "single": proc_fn("handlers.sleep", min_instances=1, max_instances=1, max_queue=0,
                          concurrency=1),
        "warm": proc_fn("handlers.pid", min_instances=1, max_instances=1),
    },
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def pid_gone(pid):
    """True when `pid` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def lambda_invoke(server, name, payload=b"", headers=None, query=None):
    """POST /2015-03-31/functions/NAME/invocations with requests (for what boto3 hides)."""
    return server.post("/2015-03-31/functions/%s/invocations" % name, data=payload,
                       headers=headers or {}, params=query)


def assert_lambda_error(r, status, etype):
    """The AWS error shape the SDKs parse: X-Amzn-ErrorType + {"Type", "message", "Message"}."""
    assert r.status_code == status, "expected %d %s, got %d %s: %s" % (
        status, etype, r.status_code, dict(r.headers), r.text[:1000])
    assert r.headers.get("X-Amzn-ErrorType", "").split(":")[0] == etype, dict(r.headers)
    body = r.json()
    assert body.get("Type") in ("User", "Service"), body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert body.get("Message") == body["message"], body
    return body


def decode_tail(log_result):
    assert log_result, "no LogResult / X-Amz-Log-Result"
    raw = base64.b64decode(log_result, validate=True)
    assert len(raw) <= 4096, "LogResult is %d bytes (Lambda returns the last 4 KB)" % len(raw)
    return raw.decode("utf-8")


def output_records(server, function, request_id=None):
    return [rec for rec in server.log_records()
            if rec.get("msg") == "function output" and rec.get("function") == function
            and (request_id is None or rec.get("request_id") == request_id)]


# --------------------------------------------------------------------------------------------
# boto3
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def boto_lambda(shared_server):
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        pytest.fail("boto3 is needed (Debian: apt-get install python3-boto3): %s" % e, pytrace=False)

    server = shared_server.get()
    client = boto3.client("lambda", endpoint_url=server.url, region_name=REGION_DEFAULT,
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(retries={"max_attempts": 1}, read_timeout=60,
                                        connect_timeout=5, proxies={}))
    yield client
    client.close()


def boto_error(excinfo):
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"].get("Message")


def test_boto3_onnx_function_matches_the_http_route(server, boto_lambda):
    rows = digits_rows(3)
    ref = assert_ok(server.invoke("digits", {"inputs": rows}), "digits via /v1/functions:")
    resp = boto_lambda.invoke(FunctionName="digits", Payload=json_bytes({"inputs": rows}))
    assert resp["StatusCode"] == 200, resp
    assert "FunctionError" not in resp, resp
    assert resp["ExecutedVersion"] == "1.0.0", resp
    body = json.loads(resp["Payload"].read())
    assert body["version"] == "1.0.0" and body["model"] == "digits", body
    assert body["outputs"] == ref["outputs"], (body, ref)


def test_boto3_onnx_tail_log(server, boto_lambda):
    resp = boto_lambda.invoke(FunctionName="digits", LogType="Tail",
                              Payload=json_bytes({"inputs": digits_rows(1)}))
    rid = resp["ResponseMetadata"]["RequestId"]
    text = decode_tail(resp.get("LogResult"))
    assert text.startswith("START RequestId: %s Version: 1.0.0\n" % rid), text
    assert "END RequestId: %s\n" % rid in text, text
    assert "REPORT RequestId: %s\tDuration: " % rid in text, text


def test_boto3_qualifier_selects_a_model_version(server, boto_lambda):
    payload = json_bytes({"inputs": tiny_rows(2)})
    current = boto_lambda.invoke(FunctionName="tiny_mlp", Payload=payload)
    assert current["ExecutedVersion"] == "1.0.0", current
    cur_body = json.loads(current["Payload"].read())
    for kwargs in ({"FunctionName": "tiny_mlp", "Qualifier": "2.0.0"},
                   {"FunctionName": "tiny_mlp:2.0.0"},
                   {"FunctionName": "arn:aws:lambda:us-east-1:000000000000:function:tiny_mlp:2.0.0"}):
        resp = boto_lambda.invoke(Payload=payload, **kwargs)
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp, (kwargs, resp)
        assert resp["ExecutedVersion"] == "2.0.0", (kwargs, resp)
        body = json.loads(resp["Payload"].read())
        assert body["version"] == "2.0.0", (kwargs, body)
        # same weights, different bytes: same outputs
        assert body["outputs"] == cur_body["outputs"], (kwargs, body, cur_body)
    # the pinned pool did not move the function's current version
    assert assert_ok(server.invoke("tiny_mlp", {"inputs": tiny_rows(1)}))["version"] == "1.0.0"

    from botocore.exceptions import ClientError
    with pytest.raises(ClientError) as e:
        boto_lambda.invoke(FunctionName="tiny_mlp", Qualifier="9.9.9", Payload=payload)
    code, status, _ = boto_error(e)
    assert (code, status) == ("ResourceNotFoundException", 404), e.value.response


def test_boto3_process_function_with_tail_log(server, boto_lambda):
    event = {"hello": "world", "n": [1, 2, 3]}
    resp = boto_lambda.invoke(FunctionName="echo", LogType="Tail", Payload=json_bytes(event))
    assert resp["StatusCode"] == 200, resp
    assert "FunctionError" not in resp, resp
    assert resp["ExecutedVersion"] == "$LATEST", resp
    rid = resp["ResponseMetadata"]["RequestId"]
    body = json.loads(resp["Payload"].read())
    assert body["event"] == event, body           # the raw event, not an API Gateway event
    assert body["request_id"] == rid, (body, rid)
    assert body["arn"] == "arn:aws:lambda:us-east-1:000000000000:function:echo", body
    text = decode_tail(resp.get("LogResult"))
    lines = text.splitlines()
    assert lines[0] == "START RequestId: %s Version: $LATEST" % rid, text
    assert "echo invoked for %s" % rid in lines, text   # the handler's own print
    assert "END RequestId: %s" % rid in lines, text
    report = [l for l in lines if l.startswith("REPORT RequestId: %s\t" % rid)]
    assert len(report) == 1, text
    fields = dict(f.split(": ", 1) for f in report[0].split("\t")[1:] if f)
    assert fields["Duration"].endswith(" ms") and float(fields["Duration"][:-3]) >= 0, report
    assert fields["Billed Duration"].endswith(" ms"), report
    assert int(fields["Billed Duration"][:-3]) >= float(fields["Duration"][:-3]), report
    order = [lines.index(l) for l in ("START RequestId: %s Version: $LATEST" % rid,
                                      "echo invoked for %s" % rid, "END RequestId: %s" % rid)]
    assert order == sorted(order), text


def test_boto3_function_error(server, boto_lambda):
    resp = boto_lambda.invoke(FunctionName="fail", Payload=json_bytes({"x": 1}))
    assert resp["StatusCode"] == 200, resp
    assert resp.get("FunctionError") == "Unhandled", resp
    body = json.loads(resp["Payload"].read())
    assert body["errorType"] == "ValueError", body
    assert "bad input" in body["errorMessage"] and "'x': 1" in body["errorMessage"], body
    assert isinstance(body.get("stackTrace"), list) and body["stackTrace"], body


def test_boto3_unknown_function_and_qualifier_on_process_function(server, boto_lambda):
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError) as e:
        boto_lambda.invoke(FunctionName="no_such_function", Payload=b"{}")
    assert boto_error(e)[:2] == ("ResourceNotFoundException", 404), e.value.response
    with pytest.raises(ClientError) as e:
        boto_lambda.invoke(FunctionName="echo", Qualifier="1.0.0", Payload=b"{}")
    assert boto_error(e)[:2] == ("ResourceNotFoundException", 404), e.value.response


def test_qualifier_latest_raw(server):
    """Qualifier=$LATEST, spelled as a client may send it ($ unescaped)."""
    r = lambda_invoke(server, "tiny_mlp", json_bytes({"inputs": tiny_rows(1)}),
                      query="Qualifier=$LATEST")
    assert r.status_code == 200 and r.headers.get("X-Amz-Executed-Version") == "1.0.0", r.text
    r = lambda_invoke(server, "echo", b"{}", query="Qualifier=$LATEST")
    assert r.status_code == 200 and r.headers.get("X-Amz-Executed-Version") == "$LATEST", r.text


def test_boto3_qualifier_latest(server, boto_lambda):
    """boto3 percent-encodes the query: ?Qualifier=%24LATEST must mean $LATEST."""
    payload = json_bytes({"inputs": tiny_rows(1)})
    latest = boto_lambda.invoke(FunctionName="tiny_mlp", Qualifier="$LATEST", Payload=payload)
    assert latest["ExecutedVersion"] == "1.0.0", latest
    ok = boto_lambda.invoke(FunctionName="echo", Qualifier="$LATEST", Payload=b"{}")
    assert ok["StatusCode"] == 200 and ok["ExecutedVersion"] == "$LATEST", ok


def test_boto3_invocation_types(server, boto_lambda):
    from botocore.exceptions import ClientError
    for name, payload in (("digits", json_bytes({"inputs": digits_rows(1)})), ("echo", b"{}")):
        dry = boto_lambda.invoke(FunctionName=name, InvocationType="DryRun", Payload=payload)
        assert dry["StatusCode"] == 204, (name, dry)
        # Event: durably queued, 202 with an empty payload, as on Lambda.
        queued = boto_lambda.invoke(FunctionName=name, InvocationType="Event", Payload=payload)
        assert queued["StatusCode"] == 202, (name, queued)
        assert queued["Payload"].read() == b""
        event_id = queued["ResponseMetadata"]["HTTPHeaders"]["x-event-id"]
        deadline = time.time() + 20
        while True:
            ev = server.session.get(server.url + "/v1/events/" + event_id, timeout=10).json()
            if ev["status"] in ("succeeded", "dead_letter") or time.time() > deadline:
                break
            time.sleep(0.05)
        assert ev["status"] == "succeeded", ev
        assert ev["function"] == name and ev["attempts"] == 1, ev
    with pytest.raises(ClientError) as e:
        boto_lambda.invoke(FunctionName="no_such_function", InvocationType="DryRun")
    assert boto_error(e)[:2] == ("ResourceNotFoundException", 404), e.value.response


def test_invoke_api_errors_raw(server):
    r = lambda_invoke(server, "echo", b"{}", {"X-Amz-Invocation-Type": "Sometimes"})
    assert_lambda_error(r, 400, "InvalidParameterValueException")
    r = lambda_invoke(server, "nope", b"{}")
    assert_lambda_error(r, 404, "ResourceNotFoundException")
    r = lambda_invoke(server, "digits", b"{not json")
    assert_lambda_error(r, 400, "InvalidRequestContentException")
    r = lambda_invoke(server, "digits", json_bytes({"inputs": [[1.0, 2.0]]}))  # wrong shape
    assert_lambda_error(r, 400, "InvalidRequestContentException")
    r = lambda_invoke(server, "tiny_mlp", json_bytes({"inputs": tiny_rows(1)}),
                      query={"Qualifier": "0.0.0-missing"})
    assert_lambda_error(r, 404, "ResourceNotFoundException")
    r = server.get("/2015-03-31/functions/echo/invocations")
    assert r.status_code == 405, (r.status_code, r.text)
    # the server still serves both kinds
    r = lambda_invoke(server, "echo", b'{"still": "ok"}')
    assert r.status_code == 200 and r.json()["event"] == {"still": "ok"}, r.text
    assert r.headers.get("X-Amz-Executed-Version") == "$LATEST", dict(r.headers)


def test_invoke_api_process_failures_are_function_errors(server):
    """Timeouts, crashes and oversize responses: 200 + X-Amz-Function-Error, as Lambda does."""
    cases = [("crash", "Runtime.ExitError"), ("hang", "Sandbox.Timedout"),
             ("big_api", "Function.ResponseSizeTooLarge")]
    for name, etype in cases:
        r = lambda_invoke(server, name, b"{}")
        assert r.status_code == 200, (name, r.status_code, r.text[:500])
        assert r.headers.get("X-Amz-Function-Error") == "Unhandled", (name, dict(r.headers))
        body = r.json()
        assert body.get("errorType") == etype, (name, body)
        assert body.get("errorMessage"), (name, body)


def test_invoke_api_queue_full_is_too_many_requests(server, boto_lambda):
    from botocore.exceptions import ClientError
    server.wait_state("single", "warm", timeout=15)  # min_instances 1: max_queue 0 sheds while cold
    assert_ok(server.invoke("single", {"ms": 0}), "warm single:")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=server.invoke(
        "single", {"ms": 1500}, timeout=30)))
    t.start()
    try:
        wait_until(lambda: server.function_health("single").get("in_flight") == 1, 5,
                   message="single to have its request in flight")
        r = server.invoke("single", {"ms": 0})
        assert_error(r, 429, "overloaded")
        assert r.headers.get("Retry-After"), dict(r.headers)
        r = lambda_invoke(server, "single", json_bytes({"ms": 0}))
        assert_lambda_error(r, 429, "TooManyRequestsException")
        with pytest.raises(ClientError) as e:
            boto_lambda.invoke(FunctionName="single", Payload=json_bytes({"ms": 0}))
        assert boto_error(e)[:2] == ("TooManyRequestsException", 429), e.value.response
    finally:
        t.join(30)
    assert result["r"].status_code == 200, result["r"].text


# --------------------------------------------------------------------------------------------
# the Lambda environment
# --------------------------------------------------------------------------------------------
def test_lambda_environment(server):
    r = server.invoke("environ", {})
    body = assert_ok(r)
    env = body["env"]
    port = server.url.rsplit(":", 1)[1]
    api = env.get("AWS_LAMBDA_RUNTIME_API", "")
    assert api.startswith("127.0.0.1:") and api.split(":")[1].isdigit(), env
    assert api.split(":")[1] != port, "the Runtime API must be the worker's own port: %s" % api
    expected = {
        "_HANDLER": "handlers.environ",
        "LAMBDA_TASK_ROOT": str(LAMBDA_DIR),
        "AWS_LAMBDA_FUNCTION_NAME": "environ",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "640",
        "AWS_REGION": REGION_DEFAULT,
        "AWS_DEFAULT_REGION": REGION_DEFAULT,
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/environ",
        "GREETING": "hi there",
        "AWS_LAMBDA_FUNCTION_TIMEOUT_TEST": "x",
    }
    for k, v in expected.items():
        assert env.get(k) == v, "%s=%r, expected %r\n%s" % (k, env.get(k), v, env)
    for k in ("LAMBDA_RUNTIME_DIR", "AWS_LAMBDA_LOG_STREAM_NAME", "TZ", "LANG", "PATH",
              "TMPDIR", "HOME"):
        assert env.get(k), "%s missing from the worker's environment: %s" % (k, env)
    assert env["TMPDIR"] == env["HOME"], env
    assert body["tmp_is_dir"], body
    assert body["cwd"] == str(LAMBDA_DIR), body
    # own process group, not the server's
    assert body["pgid"] == body["pid"], body
    assert body["pgid"] != os.getpgid(server.proc.pid), body
    assert body["ppid"] == server.proc.pid, body
    # a clean environment: the server's own variables do not leak into the worker
    leaked = sorted(k for k in ("LSAN_OPTIONS", "PYTEST_CURRENT_TEST", "AWS_CA_BUNDLE")
                    if k in env and k in os.environ)
    assert not leaked, "server environment leaked into the worker: %s" % leaked


def test_context_from_next_headers(server):
    rid = "0123456789abcdef0123456789abcdef"
    t0 = time.time()
    r = server.invoke("ctx", {}, headers={"X-Request-Id": rid})
    body = assert_ok(r)
    assert r.headers.get("X-Request-Id") == rid, dict(r.headers)
    assert body["aws_request_id"] == rid, body
    assert body["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:ctx", body
    assert body["function_name"] == "ctx" and body["function_version"] == "$LATEST", body
    assert body["memory_limit_in_mb"] == "512", body
    assert body["trace_id"] and body["trace_id"].startswith("Root=1-"), body
    # deadline: epoch ms of now + timeout (7s)
    left = body["deadline_ms"] - t0 * 1000
    assert 5000 <= left <= 7500, "Lambda-Runtime-Deadline-Ms is %.0f ms after the request" % left
    # a second request gets its own id, deadline and trace
    body2 = assert_ok(server.invoke("ctx", {}))
    assert body2["aws_request_id"] != rid and body2["trace_id"] != body["trace_id"], body2
    assert body2["deadline_ms"] > body["deadline_ms"], (body, body2)


def test_region_from_server_environment(start_server):
    env = dict(CHILD_ENV)
    env["AWS_REGION"] = "eu-west-3"
    server = start_server({"functions": {"ctx": proc_fn("handlers.context"),
                                         "environ": proc_fn("handlers.environ")}}, env=env)
    body = assert_ok(server.invoke("ctx", {}))
    assert body["invoked_function_arn"] == "arn:aws:lambda:eu-west-3:000000000000:function:ctx", body
    envd = assert_ok(server.invoke("environ", {}))["env"]
    assert envd["AWS_REGION"] == "eu-west-3" and envd["AWS_DEFAULT_REGION"] == "eu-west-3", envd


def test_tmpdir_removed_and_worker_stopped_when_instance_unloads(server):
    body = assert_ok(server.invoke("tmpenv", {}))
    tmp, pid = body["env"]["TMPDIR"], body["pid"]
    assert body["tmp_is_dir"] and os.path.isfile(body["marker"]), body
    assert not pid_gone(pid), "the worker should live while the instance is warm"
    server.wait_cold("tmpenv", timeout=15)   # idle_timeout 1s
    wait_until(lambda: pid_gone(pid), 5, message="worker %d to exit after unload" % pid)
    wait_until(lambda: not os.path.exists(tmp), 5,
               message="per-instance TMPDIR %s to be removed after unload" % tmp)
    # cold again: a new worker with a new temporary directory
    body2 = assert_ok(server.invoke("tmpenv", {}))
    assert body2["pid"] != pid and body2["env"]["TMPDIR"] != tmp, (body, body2)


def test_server_shutdown_stops_workers_and_removes_tmpdirs(start_server):
    server = start_server({"functions": {
        "w": proc_fn("handlers.environ", min_instances=1),
        "busy": proc_fn("handlers.family", timeout="30s")}})
    body = assert_ok(server.invoke("w", {}))
    first = assert_ok(server.invoke("busy", {}))
    result = {}
    t = threading.Thread(target=lambda: result.update(r=server.invoke("busy", {"ms": 1000})))
    t.start()
    wait_until(lambda: server.function_health("busy").get("in_flight") == 1, 5,
               message="busy to have a request in flight")
    rc = server.terminate()
    t.join(20)
    assert rc == 0, "pilotlight serve exited %s after SIGTERM\n%s" % (rc, server.diagnostics())
    # the in-flight request was let finish (drain), not cut off
    assert result.get("r") is not None and result["r"].status_code == 200, result
    for pid in (body["pid"], first["pid"], first["child"]):
        wait_until(lambda: pid_gone(pid), 3, message="worker process %d to be gone" % pid)
    assert not os.path.exists(body["env"]["TMPDIR"]), body["env"]["TMPDIR"]


def test_min_instances_keeps_a_warm_worker(server):
    f = server.wait_state("warm", "warm", timeout=15)
    assert f["instances"] == 1, f
    r = server.invoke("warm", {})
    body = assert_ok(r)
    assert r.headers.get("X-Cold-Start") == "false", dict(r.headers)
    r2 = server.invoke("warm", {})
    assert assert_ok(r2)["pid"] == body["pid"], "one warm worker serves both"


def test_function_output_is_logged_with_request_id(server):
    r = server.invoke("echo", {"log": "me"})
    rid = assert_ok(r)["request_id"]
    rec = server.wait_log_record(
        lambda rec: rec.get("msg") == "function output" and rec.get("request_id") == rid,
        what="function output of %s" % rid)
    assert rec.get("function") == "echo", rec
    assert rec.get("line") == "echo invoked for %s" % rid, rec


# --------------------------------------------------------------------------------------------
# API Gateway HTTP API payload 2.0
# --------------------------------------------------------------------------------------------
def raw_request(server, method, path, body=None, headers=()):
    """http.client, so that one header can be sent twice."""
    host, port = server.url[len("http://"):].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        resp = c.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        c.close()


def test_apigw_v2_event_shape(server):
    t0 = int(time.time() * 1000)
    status, headers, data = raw_request(
        server, "PATCH", "/v1/functions/echo/invoke/items/42?x=1&x=2&y=hello%20world&flag",
        body=b'{"k": "v"}',
        headers=[("Content-Type", "application/json"), ("X-Multi", "a"), ("X-Multi", "b"),
                 ("User-Agent", "pilotlight-tests/1.0"), ("Cookie", "session=abc; theme=dark"),
                 ("X-Request-Id", "fedcba9876543210fedcba9876543210")])
    assert status == 200, (status, data[:1000])
    body = json.loads(data)
    ev = body["event"]
    assert ev["version"] == "2.0" and ev["routeKey"] == "$default", ev
    assert ev["rawPath"] == "/v1/functions/echo/invoke/items/42", ev
    assert ev["rawQueryString"] == "x=1&x=2&y=hello%20world&flag", ev
    assert ev["queryStringParameters"]["x"] == "1,2", ev
    assert ev["queryStringParameters"]["y"] == "hello world", ev
    assert ev["pathParameters"] == {"proxy": "items/42"}, ev
    h = ev["headers"]
    assert all(k == k.lower() for k in h), h
    assert h["x-multi"] == "a,b", h
    assert h["content-type"] == "application/json", h
    assert h["user-agent"] == "pilotlight-tests/1.0", h
    assert "cookie" not in h, "cookies go to event.cookies: %s" % h
    assert ev["cookies"] == ["session=abc", "theme=dark"], ev
    assert ev["isBase64Encoded"] is False and ev["body"] == '{"k": "v"}', ev
    rc = ev["requestContext"]
    for k in ("accountId", "apiId", "domainName", "requestId", "routeKey", "stage", "time",
              "timeEpoch", "http"):
        assert k in rc, (k, rc)
    assert rc["http"] == {"method": "PATCH", "path": "/v1/functions/echo/invoke/items/42",
                          "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                          "userAgent": "pilotlight-tests/1.0"}, rc
    assert rc["requestId"] == "fedcba9876543210fedcba9876543210" == body["request_id"], rc
    assert rc["routeKey"] == "$default", rc
    assert abs(rc["timeEpoch"] - t0) < 10000, (rc["timeEpoch"], t0)
    time.strptime(rc["time"], "%d/%b/%Y:%H:%M:%S +0000")
    assert rc["domainName"].startswith("127.0.0.1"), rc


def test_apigw_v2_get_without_body_or_query(server):
    r = server.get("/v1/functions/echo/invoke")
    ev = assert_ok(r)["event"]
    assert ev["rawPath"] == "/v1/functions/echo/invoke" and ev["rawQueryString"] == "", ev
    assert ev["requestContext"]["http"]["method"] == "GET", ev
    assert "pathParameters" not in ev or not ev["pathParameters"], ev
    assert "queryStringParameters" not in ev or not ev["queryStringParameters"], ev
    assert not ev.get("body"), ev


def test_apigw_v2_text_and_binary_bodies(server):
    # text/plain: as text
    r = server.post("/v1/functions/echo/invoke", data="héllo wörld".encode(),
                    headers={"Content-Type": "text/plain; charset=utf-8"})
    ev = assert_ok(r)["event"]
    assert ev["isBase64Encoded"] is False and ev["body"] == "héllo wörld", ev
    # binary: base64 in, base64 out (decoded by the gateway)
    payload = bytes(range(256)) * 4 + b"\x00\xff\xfe"
    r = server.post("/v1/functions/echo/invoke", data=payload,
                    headers={"Content-Type": "application/octet-stream"})
    ev = assert_ok(r)["event"]
    assert ev["isBase64Encoded"] is True, ev
    assert base64.b64decode(ev["body"]) == payload
    r = server.post("/v1/functions/mirror/invoke/bin", data=payload,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text[:500]
    assert r.headers.get("Content-Type") == "application/octet-stream", dict(r.headers)
    assert r.content == payload[::-1]


def test_function_url_response_mapping(server):
    r = server.request("PUT", "/v1/functions/http/invoke/a/b", data=b"x")
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers.get("Content-Type") == "text/plain", dict(r.headers)
    assert r.headers.get("X-Handler") == "http", dict(r.headers)
    assert r.headers.get("X-Cold-Start") in ("true", "false"), dict(r.headers)
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2; Path=/"], r.raw.headers
    assert r.text == "path=/v1/functions/http/invoke/a/b method=PUT", r.text


@pytest.mark.parametrize("result,status,ctype,body", [
    ([1, 2, 3], 200, "application/json", [1, 2, 3]),
    ({"a": 1}, 200, "application/json", {"a": 1}),
    ("hello", 200, "application/json", "hello"),
    (None, 200, "application/json", None),
    ({"statusCode": 404, "body": "nope", "headers": {"Content-Type": "text/plain"}}, 404,
     "text/plain", "nope"),
    ({"statusCode": 200, "body": base64.b64encode(b"\x00\x01binary").decode(),
      "isBase64Encoded": True, "headers": {"content-type": "application/octet-stream"}},
     200, "application/octet-stream", b"\x00\x01binary"),
])
def test_response_mapping_cases(server, result, status, ctype, body):
    r = server.invoke("raw", {"result": result})
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers.get("Content-Type", "").startswith(ctype), dict(r.headers)
    if isinstance(body, bytes):
        assert r.content == body
    elif ctype == "application/json":
        assert r.json() == body, r.text
    else:
        assert r.text == body


def test_bad_status_code_and_handler_error_are_typed(server):
    r = server.invoke("raw", {"result": {"statusCode": "teapot"}})
    assert_error(r, 502, "function_error")
    r = server.invoke("fail", {"why": "because"})
    err = assert_error(r, 502, "function_error")
    assert r.headers.get("X-Amz-Function-Error") == "Unhandled", dict(r.headers)
    assert "bad input" in err["message"] and "because" in err["message"], err


def test_cold_start_header(server):
    r1 = server.invoke("mirror", {}, headers={"Content-Type": "text/plain"})
    r2 = server.invoke("mirror", {}, headers={"Content-Type": "text/plain"})
    assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
    assert r2.headers.get("X-Cold-Start") == "false", dict(r2.headers)


def test_v1_infer_to_process_function_is_400(server):
    r = server.infer({"inputs": [[1.0]]}, params={"model": "echo"})
    assert_error(r, 400, "invalid_input")
    # sub-paths are for process functions only
    r = server.post("/v1/functions/digits/invoke/extra", json={"inputs": digits_rows(1)})
    assert_error(r, 404, "not_found")


# --------------------------------------------------------------------------------------------
# failure figures
# --------------------------------------------------------------------------------------------
def test_sigkill_mid_request_gives_502_within_1s_and_a_replacement(server):
    pid1 = assert_ok(server.invoke("victim", {}))["pid"]
    result = {}

    def call():
        result["r"] = server.invoke("victim", {"ms": 20000}, timeout=30)
        result["t"] = time.monotonic()

    t = threading.Thread(target=call)
    t.start()
    wait_until(lambda: server.function_health("victim").get("in_flight") == 1, 5,
               message="victim to have its request in flight")
    time.sleep(0.3)  # let the worker get into the handler
    t_kill = time.monotonic()
    os.kill(pid1, signal.SIGKILL)
    t.join(25)
    assert "r" in result, "the request did not complete after its worker was killed"
    delay = result["t"] - t_kill
    err = assert_error(result["r"], 502, "function_crashed")
    assert delay < 1.0, "502 came %.2fs after the SIGKILL" % delay
    assert "signal 9" in err["message"] or "KILL" in err["message"], err
    r = server.invoke("victim", {})
    pid2 = assert_ok(r, "the request after the crash:")["pid"]
    assert pid2 != pid1, "served by the killed worker's pid?"
    assert pid_gone(pid1)


def test_self_crash_is_502_and_replaced(server):
    r = server.invoke("crash", {})
    assert_error(r, 502, "function_crashed")
    r = server.invoke("crash", {})  # a replacement worker runs (and crashes) again
    assert_error(r, 502, "function_crashed")
    rid = r.headers["X-Request-Id"]
    server.wait_log_record(lambda rec: rec.get("msg") == "function output"
                           and rec.get("request_id") == rid and rec.get("line") == "about to crash",
                           what="the crashing handler's output")


def test_hung_handler_504_at_timeout_worker_killed_and_replaced(server):
    pid1 = assert_ok(server.invoke("stuck", {}))["pid"]
    t0 = time.monotonic()
    r = server.invoke("stuck", {"ms": 30000}, timeout=20)
    elapsed = time.monotonic() - t0
    assert_error(r, 504, "timeout")
    assert 0.9 <= elapsed <= 2.0, "504 after %.2fs for a 1s timeout" % elapsed
    wait_until(lambda: pid_gone(pid1), 2, message="the hung worker %d to be killed" % pid1)
    r = server.invoke("stuck", {})
    pid2 = assert_ok(r, "the request after the timeout:")["pid"]
    assert pid2 != pid1


def test_timeout_kills_the_whole_process_group(server):
    first = assert_ok(server.invoke("family", {}))
    assert not pid_gone(first["child"]), first
    r = server.invoke("family", {"ms": 30000}, timeout=20)
    assert_error(r, 504, "timeout")
    wait_until(lambda: pid_gone(first["pid"]) and pid_gone(first["child"]), 3,
               message="the worker %(pid)d and its child %(child)d to be killed" % first)
    second = assert_ok(server.invoke("family", {}))
    assert second["pid"] != first["pid"] and second["child"] != first["child"], (first, second)


def test_noisy_stdout_is_capped_in_the_log(server):
    t0 = time.monotonic()
    r = server.invoke("noisy", {})
    assert assert_ok(r, "10 MB of stdout:") == {"ok": True}
    assert time.monotonic() - t0 < 15
    rid = r.headers["X-Request-Id"]
    marker = server.wait_log_record(
        lambda rec: rec.get("msg") == "function output" and rec.get("request_id") == rid
        and "[pilotlight: output over 256 KB" in rec.get("line", ""),
        what="the 256 KB cap line")
    assert marker.get("function") == "noisy", marker
    recs = output_records(server, "noisy", rid)
    logged = sum(len(rec.get("line", "")) for rec in recs)
    ys = [rec for rec in recs if rec.get("line", "").startswith("yyyy")]
    assert ys, "no output lines logged"
    assert all(len(rec["line"]) == 1023 for rec in ys), "lines were cut or merged"
    assert logged <= 256 * 1024 + 8 * 1024, "logged %d bytes of output for one invocation" % logged
    assert len(server.log_text()) < 2 * 1024 * 1024, "log grew to %d bytes" % len(server.log_text())
    # the server and the function keep serving
    assert assert_ok(server.invoke("noisy", {})) == {"ok": True}
    assert_ok(server.invoke("echo", {}))


def test_oversize_response_is_413_and_the_server_keeps_serving(server):
    t0 = time.monotonic()
    r = server.invoke("big", {})
    assert time.monotonic() - t0 < 10
    err = assert_error(r, 413, "payload_too_large")
    assert "6" in err["message"] or "bytes" in err["message"], err
    assert_ok(server.invoke("echo", {"after": "big"}))
    assert server.alive()


def test_back_to_back_oversize_responses_both_get_413(server):
    """After an oversize response the worker may still be busy (our bootstrap reports the 413 and
    exits, as a runtime client may): the next request must go to a worker that asks for it
    (GET /next), or to a replacement, not fail with the old worker's exit."""
    assert_error(server.invoke("big2", {}), 413, "payload_too_large")
    r = server.invoke("big2", {})
    assert_error(r, 413, "payload_too_large")


def test_memory_over_memory_mb_kills_the_worker(server):
    t0 = time.monotonic()
    r = server.invoke("hog", {}, timeout=30)
    elapsed = time.monotonic() - t0
    err = assert_error(r, 502, "function_crashed")
    assert "memory_mb" in err["message"] and "256" in err["message"], err
    assert elapsed < 10, elapsed
    assert_ok(server.invoke("echo", {"after": "hog"}))


def test_init_error_reports_the_handlers_error(server):
    r = server.invoke("broken", {})
    err = assert_error(r, 502, "function_crashed")
    assert "Runtime.ImportModuleError" in err["message"], err
    assert "missing dependency 'torch'" in err["message"], err


def test_worker_exiting_during_init_reports_its_output(server):
    r = server.invoke("exitinit", {})
    err = assert_error(r, 502, "function_crashed")
    assert "cannot find the model file /nonexistent/model.onnx" in err["message"], err
    assert "7" in err["message"], err


def test_slow_init_and_init_duration(server):
    r = lambda_invoke(server, "slowinit", b"{}", {"X-Amz-Log-Type": "Tail"})
    assert r.status_code == 200, r.text
    assert r.headers.get("X-Cold-Start") == "true", dict(r.headers)
    text = decode_tail(r.headers.get("X-Amz-Log-Result"))
    assert "\tInit Duration: " in text, text
    init_ms = float(text.split("\tInit Duration: ")[1].split(" ms")[0])
    assert init_ms >= 1200, text
    r2 = lambda_invoke(server, "slowinit", b"{}", {"X-Amz-Log-Type": "Tail"})
    assert "Init Duration" not in decode_tail(r2.headers.get("X-Amz-Log-Result")), "warm call"


def test_init_timeout(server):
    t0 = time.monotonic()
    r = server.invoke("slowinit_short", {})
    elapsed = time.monotonic() - t0
    assert r.status_code in (502, 503, 504), (r.status_code, r.text)
    err = r.json()["error"]
    assert "init" in err["message"], err
    assert elapsed < 3, "init_timeout 400ms, answered after %.2fs" % elapsed


def test_max_instances_2_with_4_concurrent_requests(start_server):
    server = start_server({"functions": {
        "pool2": proc_fn("handlers.sleep", max_instances=2, max_queue=10, queue_timeout="20s")}})
    results = [None] * 4

    def call(i):
        results[i] = server.invoke("pool2", {"ms": 700}, timeout=30)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wall = time.monotonic() - t0
    bodies = [assert_ok(r, "pool2 request:") for r in results]
    pids = {b["pid"] for b in bodies}
    assert len(pids) <= 2, "more than max_instances workers: %s" % pids
    intervals = sorted((b["start"], b["end"], b["pid"]) for b in bodies)
    for s, _, _ in intervals:
        running = [iv for iv in intervals if iv[0] <= s + 1e-3 and iv[1] > s + 1e-3]
        assert len(running) <= 2, "more than 2 invocations at once: %s" % intervals
    for p in pids:  # one invocation at a time per worker
        mine = sorted(iv for iv in intervals if iv[2] == p)
        for a, b in zip(mine, mine[1:]):
            assert b[0] >= a[1] - 1e-3, "worker %d ran two invocations at once: %s" % (p, mine)
    assert wall >= 1.3, "4 × 700 ms on 2 workers took only %.2fs" % wall
    h = server.function_health("pool2")
    assert h["instances"] <= 2, h


# --------------------------------------------------------------------------------------------
# config validation
# --------------------------------------------------------------------------------------------
def _with(**changes):
    spec = proc_fn("handlers.echo")
    for k, v in changes.items():
        if v is None:
            spec.pop(k, None)
        else:
            spec[k] = v
    return {"functions": {"fn": spec}}


BAD_CONFIGS = {
    "no_command": (_with(command=None), ["command"]),
    "empty_command": (_with(command=[]), ["command"]),
    "command_not_a_list": (_with(command="/usr/bin/python3"), ["command"]),
    "concurrency_2": (_with(concurrency=2), ["concurrency"]),
    "model_on_process": (_with(model="digits"), ["model"]),
    "version_on_process": (_with(version="1.0.0"), ["version"]),
    "memory_mb_too_small": (_with(memory_mb=64), ["memory_mb"]),
    "memory_mb_too_big": (_with(memory_mb=20000), ["memory_mb"]),
    "memory_mb_not_a_number": (_with(memory_mb="lots"), ["memory_mb"]),
    "bad_init_timeout": (_with(init_timeout="soon"), ["init_timeout"]),
    "bad_timeout": (_with(timeout="forever"), ["timeout"]),
    "env_not_a_map": (_with(env="A=1"), ["env"]),
    "unknown_runtime": (_with(runtime="docker"), ["runtime"]),
    "unknown_key": (_with(memory=512), ["memory"]),
    "command_on_onnx": ({"functions": {"digits": {"command": ["/bin/true"]}}}, ["command"]),
    "handler_on_onnx": ({"functions": {"digits": {"handler": "x.y"}}}, ["handler"]),
    "memory_mb_on_onnx": ({"functions": {"digits": {"memory_mb": 512}}}, ["memory_mb"]),
}


def _serve(tmp_path, text, store_uri):
    cfg = tmp_path / "pilotlight.yaml"
    cfg.write_text(text, encoding="utf-8")
    argv = [str(BIN), "serve", "--config", str(cfg), "--state-dir", str(tmp_path / "state"),
            "--listen", "127.0.0.1:%d" % free_port(), "--store", store_uri]
    try:
        return subprocess.run(argv, cwd=str(tmp_path), capture_output=True, text=True,
                              errors="replace", timeout=10, stdin=subprocess.DEVNULL,
                              env=CHILD_ENV)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("pilotlight serve accepted a bad config and kept running:\n%s\n%s"
                             % (text, (e.stderr or b"")[-2000:]))


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_process_config_is_refused_naming_the_key(tmp_path, store, pilotlight_bin, case):
    config, keys = BAD_CONFIGS[case]
    text = to_yaml(config) + "\n"
    p = _serve(tmp_path, text, store.uri)
    assert p.returncode != 0, "config accepted:\n%s\n%s" % (text, cli_output(p))
    out = p.stdout + p.stderr
    assert any(k in out for k in keys), "message does not name %s:\n%s\n%s" % (
        " or ".join(keys), text, cli_output(p))
    assert "fn" in out or "digits" in out, "message does not name the function:\n%s" % out


def test_good_process_config_with_every_key(start_server):
    server = start_server({"functions": {"fn": proc_fn(
        "handlers.echo", env={"A": "1"}, timeout="5s", memory_mb=128, init_timeout="5s",
        min_instances=0, max_instances=3, idle_timeout="30s", max_queue=5,
        queue_timeout="3s", concurrency=1)}})
    body = assert_ok(server.invoke("fn", {"k": 1}))
    assert body["event"]["body"] == '{"k": 1}' or body["event"]["body"] == '{"k":1}', body


def test_runtime_client_with_two_connections_is_served(start_server):
    """A client may keep a connection idle and open another: /next on the second must not wait
    for the first to close."""
    lam = Path(__file__).resolve().parent / "lambda"
    srv = start_server(config={"functions": {"two": {
        "runtime": "process", "command": ["/usr/bin/python3", str(lam / "two_connections.py")],
        "cwd": str(lam), "timeout": "5s"}}})
    pids = set()
    for i in range(3):
        r = srv.session.post(srv.url + "/2015-03-31/functions/two/invocations", json={"n": i}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["echo"] == {"n": i}
        pids.add(r.json()["pid"])
    assert len(pids) == 1, "one worker served all three"
