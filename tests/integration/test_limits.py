"""Connection-level limits at their boundaries: server.max_header_bytes (431),
server.max_batch_items (400), server.read_timeout (a client that stops sending mid-request is
cut off) and server.idle_timeout (an idle keep-alive connection is closed) — each while a
normal client keeps being served."""

import json
import socket
import time


from support import assert_error, assert_ok, assert_still_serving, tiny_rows

MAX_HEADER = 2048
CONFIG = {
    "server": {"max_header_bytes": MAX_HEADER, "max_batch_items": 3, "read_timeout": "1s",
               "idle_timeout": "1s"},
    "functions": {"tiny_mlp": {"idle_timeout": "60s"}},
}



def raw_request(port, head_bytes, timeout=10):
    """Sends one raw request head (no body) and returns (status, raw response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head_bytes)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, data


def head_of_size(size):
    """A GET /v1/health request head of exactly `size` bytes (request line + fields + CRLFCRLF)."""
    base = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n"
    pad = size - len(base)
    assert pad >= 0
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"a" * pad)


def test_request_head_exactly_at_max_header_bytes_is_accepted(server):
    status, raw = raw_request(server.port, head_of_size(MAX_HEADER))
    assert status == 200, raw[:300]


def test_request_head_one_byte_over_max_header_bytes_is_431(server):
    status, raw = raw_request(server.port, head_of_size(MAX_HEADER + 1))
    assert status == 431, raw[:300]
    assert_still_serving(server)


def test_many_headers_over_the_limit_is_431_typed(server):
    headers = {"X-H%d" % i: "v" * 40 for i in range(60)}  # ~3 KB of fields
    r = server.get("/v1/health", headers=headers)
    assert_error(r, 431, "headers_too_large")
    assert_still_serving(server)


def test_batch_at_max_batch_items_is_accepted_one_more_is_400(server):
    item = {"model": "tiny_mlp", "inputs": tiny_rows(1)}
    ok = assert_ok(server.post("/v1/batch", json=[item] * 3))
    assert len(ok) == 3 and all("outputs" in x for x in ok), ok
    r = server.post("/v1/batch", json=[item] * 4)
    assert_error(r, 400, "invalid_input")
    assert "max_batch_items" in r.json()["error"]["message"]


def test_client_that_stops_mid_request_is_cut_off_after_read_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"POST /v1/functions/tiny_mlp/invoke HTTP/1.1\r\nHost: x\r\n")  # no end of head
        t0 = time.monotonic()
        assert_still_serving(server)  # others are served while it dawdles
        slow.settimeout(10)
        data = slow.recv(65536)
        waited = time.monotonic() - t0
    assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:200]
    assert waited < 8, "a stalled request head was kept open for %.1fs (read_timeout 1s)" % waited


def test_client_that_stops_mid_body_is_cut_off_after_read_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"POST /v1/functions/tiny_mlp/invoke HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"inputs\":")
        t0 = time.monotonic()
        data = slow.recv(65536)
        waited = time.monotonic() - t0
    assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:200]
    assert waited < 8, "a stalled body was kept open for %.1fs (read_timeout 1s)" % waited
    assert_still_serving(server)


def test_idle_keep_alive_connection_is_closed_after_idle_timeout(server):
    body = json.dumps({"inputs": tiny_rows(1)}).encode()
    req = (b"POST /v1/functions/tiny_mlp/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(req)
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        head, rest = got.split(b"\r\n\r\n", 1)
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
        while len(rest) < length:
            rest += s.recv(65536)
        # A second request within idle_timeout reuses the connection...
        s.sendall(req)
        second = s.recv(65536)
        assert second.startswith(b"HTTP/1.1 200"), second[:200]
        # ...and after idle_timeout (1s) of silence the server closes it.
        t0 = time.monotonic()
        s.settimeout(10)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
        waited = time.monotonic() - t0
    assert 0.5 < waited < 8, "idle keep-alive connection closed after %.1fs (idle_timeout 1s)" % waited
