"""Test handlers (plain Lambda handlers: event, context → result)."""
import os
import signal
import sys
import time

print("init: handlers module loaded", flush=True)


def echo(event, context):
    print("echo invoked for", context.aws_request_id, flush=True)
    return {"event": event, "request_id": context.aws_request_id, "arn": context.invoked_function_arn,
            "remaining_ms": context.get_remaining_time_in_millis()}


def http(event, context):
    return {"statusCode": 201, "headers": {"Content-Type": "text/plain", "X-Handler": "http"},
            "cookies": ["a=1", "b=2; Path=/"], "body": "path=%s method=%s" % (
                event["rawPath"], event["requestContext"]["http"]["method"])}


def env(event, context):
    keys = ["AWS_LAMBDA_RUNTIME_API", "_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_NAME",
            "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_REGION",
            "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "TMPDIR", "GREETING"]
    return {k: os.environ.get(k) for k in keys} | {"cwd": os.getcwd(), "pgid_is_own": os.getpgid(0) == os.getpid()}


def fail(event, context):
    raise ValueError("bad input: %r" % (event,))


def crash(event, context):
    print("about to crash", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def hang(event, context):
    time.sleep(3600)


def big(event, context):
    return "x" * (7 * 1024 * 1024)


def noisy(event, context):
    line = "y" * 1023 + "\n"
    for _ in range(10 * 1024):
        sys.stdout.write(line)
    sys.stdout.flush()
    return {"ok": True}


def hog(event, context):
    blocks = []
    for _ in range(400):
        blocks.append(bytearray(1024 * 1024))  # touched: resident
        time.sleep(0.002)
    return len(blocks)


# --- used by test_process.py ----------------------------------------------------------------
def _payload(event):
    """The JSON the caller sent: the event itself (Invoke API), or the body of an API Gateway
    HTTP API 2.0 event (/v1/functions/NAME/invoke)."""
    if isinstance(event, dict) and event.get("version") == "2.0" and "requestContext" in event:
        import base64
        import json
        body = event.get("body") or ""
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8")
        return json.loads(body) if body else {}
    return event


def pid(event, context):
    """The worker's pid (replacement checks), optionally after sleeping event["ms"]."""
    event = _payload(event)
    ms = (event or {}).get("ms", 0) if isinstance(event, dict) else 0
    if ms:
        time.sleep(ms / 1000.0)
    return {"pid": os.getpid()}


def sleep(event, context):
    """Sleeps event["ms"] milliseconds; returns pid and when it ran (epoch seconds)."""
    event = _payload(event)
    t0 = time.time()
    time.sleep(event["ms"] / 1000.0)
    return {"pid": os.getpid(), "start": t0, "end": time.time()}


def context(event, context):
    """The Lambda context as the runtime client saw it (from the /next headers)."""
    return {"aws_request_id": context.aws_request_id, "deadline_ms": context.deadline_ms,
            "invoked_function_arn": context.invoked_function_arn, "trace_id": context.trace_id,
            "function_name": context.function_name, "function_version": context.function_version,
            "memory_limit_in_mb": context.memory_limit_in_mb, "now_ms": int(time.time() * 1000)}


def environ(event, context):
    """The whole environment, the process group, and the temporary directory's state."""
    tmp = os.environ.get("TMPDIR")
    marker = None
    if tmp:
        marker = os.path.join(tmp, "marker.txt")
        with open(marker, "w") as f:
            f.write("written by the handler\n")
    return {"env": dict(os.environ), "pid": os.getpid(), "pgid": os.getpgid(0),
            "sid": os.getsid(0), "ppid": os.getppid(), "cwd": os.getcwd(),
            "tmp_is_dir": bool(tmp) and os.path.isdir(tmp), "marker": marker}


def raw(event, context):
    """Returns event["result"] unchanged (a bare value, or a function-URL response object)."""
    return _payload(event)["result"]


def mirror(event, context):
    """Answers an API Gateway 2.0 event with its own body, decoded, as a binary response."""
    import base64
    body = event.get("body") or ""
    data = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8")
    return {"statusCode": 200, "headers": {"Content-Type": "application/octet-stream"},
            "isBase64Encoded": True, "body": base64.b64encode(data[::-1]).decode("ascii")}


_children = []


def family(event, context):
    """Starts a child process (`sleep 600`, same process group) once per worker; returns both
    pids, after sleeping event["ms"] if given."""
    import subprocess
    event = _payload(event)
    if not _children:
        _children.append(subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL))
    ms = (event or {}).get("ms", 0) if isinstance(event, dict) else 0
    if ms:
        time.sleep(ms / 1000.0)
    return {"pid": os.getpid(), "child": _children[0].pid}


# --- used by test_async.py ------------------------------------------------------------------
def compute(event, context):
    """Deterministic: the sum of event["values"] and the payload it was given."""
    event = _payload(event)
    return {"sum": sum(event.get("values", [])), "payload": event}


def task(event, context):
    """An asynchronous job. Event keys (all optional):
      n          an id echoed in the result
      log        a file: one JSON line {"n", "pid", "start"} is appended per call (O_APPEND)
      ms         sleep this long
      fail       raise (always)
      counter    a file counting the calls for this payload; with fail_times: raise while
                 calls <= fail_times
      flag       raise unless this file exists
    Returns {"n", "pid", "start", "end", "calls"}."""
    import json
    event = _payload(event)
    t0 = time.time()
    n = event.get("n")
    if event.get("log"):
        line = json.dumps({"n": n, "pid": os.getpid(), "start": t0}) + "\n"
        fd = os.open(event["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    calls = None
    if event.get("counter"):
        path = event["counter"]
        calls = (int(open(path).read()) if os.path.exists(path) else 0) + 1
        with open(path, "w") as f:
            f.write(str(calls))
    if event.get("ms"):
        time.sleep(event["ms"] / 1000.0)
    if event.get("fail"):
        raise RuntimeError("task %s fails on purpose" % (n,))
    if event.get("fail_times") and calls is not None and calls <= event["fail_times"]:
        raise RuntimeError("task %s: call %d fails" % (n, calls))
    if event.get("flag") and not os.path.exists(event["flag"]):
        raise RuntimeError("task %s: flag file %s is missing" % (n, event["flag"]))
    return {"n": n, "pid": os.getpid(), "start": t0, "end": time.time(), "calls": calls}
