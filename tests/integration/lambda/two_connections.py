#!/usr/bin/env python3
"""A Runtime API client that keeps one connection open and idle while it uses another for the
next requests (allowed by HTTP; some runtime clients' connection pools do it). Handler: echo."""
import http.client
import json
import os

host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
idle = http.client.HTTPConnection(host, int(port))
busy = http.client.HTTPConnection(host, int(port))
first = True
while True:
    conn = idle if first else busy  # the first event over one connection, the rest over another
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    event = r.read()
    first = False
    busy.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid,
                 body=json.dumps({"echo": json.loads(event or b"null"), "pid": os.getpid()}))
    busy.getresponse().read()
