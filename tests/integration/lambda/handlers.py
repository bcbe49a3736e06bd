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
