#!/usr/bin/env python3
"""A minimal AWS Lambda runtime interface client, for tests: it loads _HANDLER
("module.function") from LAMBDA_TASK_ROOT and serves events from AWS_LAMBDA_RUNTIME_API the way
Lambda's Python runtime does (GET .../invocation/next, POST .../response | .../error,
POST /runtime/init/error). The real-client test runs Node's official aws-lambda-ric instead."""
import importlib
import json
import os
import sys
import time
import traceback
import urllib.request

BASE = "http://%s/2018-06-01/runtime" % os.environ["AWS_LAMBDA_RUNTIME_API"]


def post(path, body, headers=None):
    req = urllib.request.Request(BASE + path, data=body, method="POST", headers=headers or {})
    with urllib.request.urlopen(req) as r:
        r.read()


def error_doc(e):
    return json.dumps({"errorMessage": str(e), "errorType": type(e).__name__,
                       "stackTrace": traceback.format_exc().splitlines()}).encode()


class Context:
    def __init__(self, headers):
        self.aws_request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        self.deadline_ms = int(headers["Lambda-Runtime-Deadline-Ms"])
        self.invoked_function_arn = headers["Lambda-Runtime-Invoked-Function-Arn"]
        self.trace_id = headers.get("Lambda-Runtime-Trace-Id")
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]

    def get_remaining_time_in_millis(self):
        return self.deadline_ms - int(time.time() * 1000)


def main():
    sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
    try:
        module, function = os.environ["_HANDLER"].rsplit(".", 1)
        handler = getattr(importlib.import_module(module), function)
    except Exception as e:  # noqa: BLE001 - reported to the Runtime API, as Lambda does
        post("/init/error", error_doc(e), {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})
        sys.exit(1)
    while True:
        with urllib.request.urlopen(BASE + "/invocation/next") as r:
            headers = dict(r.headers)
            body = r.read()
        ctx = Context(headers)
        try:
            result = handler(json.loads(body) if body else None, ctx)
            post("/invocation/%s/response" % ctx.aws_request_id, json.dumps(result).encode())
        except Exception as e:  # noqa: BLE001
            post("/invocation/%s/error" % ctx.aws_request_id, error_doc(e),
                 {"Lambda-Runtime-Function-Error-Type": "Unhandled"})


if __name__ == "__main__":
    main()
