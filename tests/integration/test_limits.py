"""HTTP limits, each at its boundary (the limit passes, one more is refused) and with the
server still serving afterwards — with small values from the config (CONFIG) and, where that is
fast, with the defaults:

- server.max_header_bytes (61440): request line + fields + blank line; more → 431
- server.max_header_fields (100): more fields → 431
- server.max_uri_bytes (8192): a longer request target → 414
- server.max_body_bytes (6 MiB): a Content-Length above → 413 before the body is read; a chunked
  body growing past it → 413 (more body-limit tests, and server.max_tensor_elements at its
  boundary, are in test_errors.py)
- server.max_json_depth (64): a body nested that deep is parsed, one level more → 400 naming
  the nesting depth, on /v1/functions/{name}/invoke and /v1/infer
- server.max_batch_items: items in one /v1/batch
- server.request_timeout (10s; old name read_timeout): the whole request (head and body) must
  arrive within it, counted from its first byte and not restarted by each byte (the slowloris
  defence); then 408 (a JSON error) and the connection is closed
- server.idle_timeout (60s): a connection with nothing sent is closed (no response bytes)
- server.max_connections (1024): beyond → an immediate 503 (JSON error, Retry-After) and close;
  accepted again once some close
- server.max_connections_per_client (256, by client IP address): beyond → 429
  too_many_connections (Retry-After) and close; other addresses unaffected. Tests act as
  several clients by connecting from distinct 127.x.y.z addresses.

Nesting depth: arrays and objects inside one another; {"inputs": [[0.5]]} is 3 deep."""

import re
import select
import socket
import time

import pytest

from support import (assert_error, assert_ok, assert_raw_error, assert_retry_after,
                     assert_still_serving, connect, http_request, json_bytes, raw_roundtrip,
                     read_response, tiny_invoke_request, tiny_rows, wait_closed)

MAX_HEADER = 2048
MAX_FIELDS = 20
MAX_URI = 512
MAX_BODY = 4096
MAX_DEPTH = 8
REQUEST_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0  # differs from request_timeout so the tests can tell the two timers apart
CONFIG = {
    "server": {"max_header_bytes": MAX_HEADER, "max_header_fields": MAX_FIELDS,
               "max_uri_bytes": MAX_URI, "max_body_bytes": MAX_BODY,
               "max_json_depth": MAX_DEPTH, "max_batch_items": 3,
               "request_timeout": "1s", "idle_timeout": "2s"},
    "functions": {"tiny_mlp": {"idle_timeout": "60s"}},
}

# No server: section: every limit at its default.
DEFAULTS_CONFIG = {"functions": {"tiny_mlp": {"idle_timeout": "60s"}}}
DEFAULT_MAX_HEADER = 61440
DEFAULT_MAX_FIELDS = 100
DEFAULT_MAX_URI = 8192
DEFAULT_MAX_BODY = 6 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_PER_CLIENT = 256


@pytest.fixture(scope="module")
def shared_default_server(module_servers):
    return module_servers.shared(DEFAULTS_CONFIG)


@pytest.fixture
def default_server(shared_default_server):
    return shared_default_server.get()


# --------------------------------------------------------------------------------------
# Request builders
# --------------------------------------------------------------------------------------
def head_of_size(size, target="/v1/health"):
    """A GET request head of exactly `size` bytes (request line + fields + CRLFCRLF)."""
    base = ("GET %s HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n" % target).encode()
    pad = size - len(base)
    assert pad >= 0
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"a" * pad)


def head_with_fields(n):
    """A GET /v1/health head with exactly `n` header fields (Host included)."""
    return http_request("GET", "/v1/health", [("X-F%d" % i, "v") for i in range(n - 1)])


def target_of_size(size):
    """A request target for GET /v1/health of exactly `size` bytes (an ignored query string)."""
    base = "/v1/health?pad="
    assert size >= len(base)
    return base + "a" * (size - len(base))


def nested_body(depth, model=None):
    """A request body nested exactly `depth` deep: the object, then depth-1 arrays."""
    inner = "[" * (depth - 1) + "0.5" + "]" * (depth - 1)
    if model:
        return ('{"model":"%s","inputs":%s}' % (model, inner)).encode()
    return ('{"inputs":%s}' % inner).encode()


def padded_body(size):
    """A valid tiny_mlp body of exactly `size` bytes (JSON allows trailing whitespace)."""
    base = json_bytes({"inputs": tiny_rows(1)})
    assert len(base) <= size
    return base + b" " * (size - len(base))


def chunked(body, chunk=1000):
    out = b""
    for i in range(0, len(body), chunk):
        part = body[i:i + chunk]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


INVOKE_HEAD = (b"POST /v1/functions/tiny_mlp/invoke HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/json\r\n")


def post_on_socket(port, path, body, headers=(("Content-Type", "application/json"),)):
    return raw_roundtrip(port, http_request("POST", path, list(headers), body))


# --------------------------------------------------------------------------------------
# server.max_header_bytes
# --------------------------------------------------------------------------------------
def test_request_head_exactly_at_max_header_bytes_is_accepted(server):
    r = raw_roundtrip(server.port, head_of_size(MAX_HEADER))
    assert r is not None and r.status == 200, r


def test_request_head_one_byte_over_max_header_bytes_is_431(server):
    r = raw_roundtrip(server.port, head_of_size(MAX_HEADER + 1))
    assert_raw_error(r, 431, "headers_too_large")
    assert_still_serving(server)


def test_many_headers_over_the_limit_is_431_typed(server):
    headers = {"X-H%d" % i: "v" * 40 for i in range(60)}  # ~3 KB of fields
    r = server.get("/v1/health", headers=headers)
    assert_error(r, 431, "headers_too_large")
    assert_still_serving(server)


def test_default_max_header_bytes_is_61440(default_server):
    r = raw_roundtrip(default_server.port, head_of_size(DEFAULT_MAX_HEADER))
    assert r is not None and r.status == 200, "a %d-byte head (the default limit): %r" % (
        DEFAULT_MAX_HEADER, r)
    r = raw_roundtrip(default_server.port, head_of_size(DEFAULT_MAX_HEADER + 1))
    assert_raw_error(r, 431, "headers_too_large", "a %d-byte head:" % (DEFAULT_MAX_HEADER + 1))
    assert_still_serving(default_server)


# --------------------------------------------------------------------------------------
# server.max_header_fields
# --------------------------------------------------------------------------------------
def test_header_fields_at_max_header_fields_are_accepted_one_more_is_431(server):
    head = head_with_fields(MAX_FIELDS)
    assert len(head) < MAX_HEADER
    r = raw_roundtrip(server.port, head)
    assert r is not None and r.status == 200, "%d header fields (the limit): %r" % (MAX_FIELDS, r)
    r = raw_roundtrip(server.port, head_with_fields(MAX_FIELDS + 1))
    assert_raw_error(r, 431, "headers_too_large", "%d header fields:" % (MAX_FIELDS + 1))
    assert_still_serving(server)


def test_default_max_header_fields_is_100(default_server):
    r = raw_roundtrip(default_server.port, head_with_fields(DEFAULT_MAX_FIELDS))
    assert r is not None and r.status == 200, "%d header fields (the default limit): %r" % (
        DEFAULT_MAX_FIELDS, r)
    r = raw_roundtrip(default_server.port, head_with_fields(DEFAULT_MAX_FIELDS + 1))
    assert_raw_error(r, 431, "headers_too_large", "%d header fields:" % (DEFAULT_MAX_FIELDS + 1))
    assert_still_serving(default_server)


# --------------------------------------------------------------------------------------
# server.max_uri_bytes
# --------------------------------------------------------------------------------------
def test_request_target_at_max_uri_bytes_is_accepted_one_more_is_414(server):
    r = raw_roundtrip(server.port, http_request("GET", target_of_size(MAX_URI)))
    assert r is not None and r.status == 200, "a %d-byte target (the limit): %r" % (MAX_URI, r)
    r = raw_roundtrip(server.port, http_request("GET", target_of_size(MAX_URI + 1)))
    err = assert_raw_error(r, 414, None, "a %d-byte target:" % (MAX_URI + 1))
    assert re.search(r"max_uri_bytes|uri|target", err["message"], re.I), err
    assert_still_serving(server)


def test_default_max_uri_bytes_is_8192(default_server):
    r = raw_roundtrip(default_server.port, http_request("GET", target_of_size(DEFAULT_MAX_URI)))
    assert r is not None and r.status == 200, "a %d-byte target (the default limit): %r" % (
        DEFAULT_MAX_URI, r)
    r = raw_roundtrip(default_server.port, http_request("GET", target_of_size(DEFAULT_MAX_URI + 1)))
    assert_raw_error(r, 414, None, "a %d-byte target:" % (DEFAULT_MAX_URI + 1))
    assert_still_serving(default_server)


# --------------------------------------------------------------------------------------
# server.max_body_bytes
# --------------------------------------------------------------------------------------
def content_length_head_only(port, length, timeout=5):
    """Sends only the head of a POST announcing `length` body bytes (never the body) and
    returns the answer: a limit on Content-Length must be enforced before reading the body."""
    with connect(port, timeout=timeout) as s:
        s.sendall(INVOKE_HEAD + b"Content-Length: %d\r\n\r\n" % length)
        try:
            return read_response(s, timeout)
        except socket.timeout:
            raise AssertionError("no answer within %ds to a head announcing %d body bytes (the "
                                 "server waited for the body instead of refusing it)"
                                 % (timeout, length)) from None


def test_content_length_over_max_body_bytes_is_413_before_the_body_is_sent(server):
    r = post_on_socket(server.port, "/v1/functions/tiny_mlp/invoke", padded_body(MAX_BODY))
    assert r is not None and r.status == 200, "a body of exactly max_body_bytes: %r" % r
    r = content_length_head_only(server.port, MAX_BODY + 1)
    assert_raw_error(r, 413, "payload_too_large")
    assert_still_serving(server)


def test_chunked_body_growing_one_byte_past_max_body_bytes_is_413(server):
    data = INVOKE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    r = raw_roundtrip(server.port, data + chunked(padded_body(MAX_BODY), 100))
    assert r is not None and r.status == 200, "a chunked body of exactly max_body_bytes: %r" % r
    r = raw_roundtrip(server.port, data + chunked(padded_body(MAX_BODY + 1), 100))
    assert_raw_error(r, 413, "payload_too_large", "a chunked body of max_body_bytes + 1:")
    assert_still_serving(server)


def test_default_max_body_bytes_is_6_mib(default_server):
    r = post_on_socket(default_server.port, "/v1/functions/tiny_mlp/invoke",
                       padded_body(DEFAULT_MAX_BODY))
    assert r is not None and r.status == 200, "a body of exactly 6 MiB: %r" % r
    r = content_length_head_only(default_server.port, DEFAULT_MAX_BODY + 1)
    assert_raw_error(r, 413, "payload_too_large", "Content-Length 6 MiB + 1:")
    assert_still_serving(default_server)


# --------------------------------------------------------------------------------------
# server.max_json_depth
# --------------------------------------------------------------------------------------
# The depth error names the nesting depth; an error at the limit must not be it.
DEPTH_ERROR = re.compile(r"max_json_depth|nest\w*\s+(depth|deeper)|too deep", re.I)
DEPTH_MENTION = re.compile(r"depth|deep", re.I)

ROUTES = {"invoke": ("/v1/functions/tiny_mlp/invoke", None),
          "infer": ("/v1/infer", "tiny_mlp")}


def check_depth_boundary(server, route, limit):
    path, model = ROUTES[route]
    r = server.post(path, data=nested_body(limit, model),
                    headers={"Content-Type": "application/json"})
    if r.status_code != 200:
        err = assert_error(r, 400, "invalid_input")  # parsed; only the model refuses its shape
        assert not DEPTH_ERROR.search(err["message"]), (
            "a body nested %d deep (the limit) was refused for its depth: %r" % (limit, err))
    r = server.post(path, data=nested_body(limit + 1, model),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400, "a body nested %d deep: %d %s" % (limit + 1, r.status_code,
                                                                   r.text[:500])
    err = r.json()["error"]
    assert err.get("type") in ("invalid_json", "invalid_input"), err
    assert_error(r, 400, err["type"])
    assert DEPTH_MENTION.search(err["message"]), (
        "the error for a body nested %d deep does not mention the nesting depth: %r"
        % (limit + 1, err))
    assert_still_serving(server)


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_json_nested_max_json_depth_is_parsed_one_more_is_400(server, route):
    check_depth_boundary(server, route, MAX_DEPTH)


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_default_max_json_depth_is_64(default_server, route):
    check_depth_boundary(default_server, route, DEFAULT_MAX_DEPTH)


# --------------------------------------------------------------------------------------
# server.max_batch_items
# --------------------------------------------------------------------------------------
def test_batch_at_max_batch_items_is_accepted_one_more_is_400(server):
    item = {"model": "tiny_mlp", "inputs": tiny_rows(1)}
    ok = assert_ok(server.post("/v1/batch", json=[item] * 3))
    assert len(ok) == 3 and all("outputs" in x for x in ok), ok
    r = server.post("/v1/batch", json=[item] * 4)
    assert_error(r, 400, "invalid_input")
    assert "max_batch_items" in r.json()["error"]["message"]


# --------------------------------------------------------------------------------------
# server.request_timeout
# --------------------------------------------------------------------------------------
def trickle(sock, data, interval=0.2, give_up=6.0):
    """Sends `data` one byte every `interval` seconds until the server answers or closes.
    Returns (response or None, seconds from the first trickled byte until the answer or the
    close). Fails when the connection is still open, unanswered, after `give_up` seconds:
    then the request timer is restarted by each byte (or there is none)."""
    t0 = time.monotonic()
    sent = 0
    next_send = t0
    while True:
        now = time.monotonic()
        if now - t0 > give_up:
            raise AssertionError(
                "a client trickling one byte every %.1fs was neither answered nor closed after "
                "%.1fs (%d bytes sent; request_timeout %.0fs): the request timer is restarted "
                "by every byte" % (interval, give_up, sent, REQUEST_TIMEOUT))
        if now >= next_send and sent < len(data):
            try:
                sock.send(data[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            next_send = now + interval
        readable, _, _ = select.select([sock], [], [], max(0.0, min(next_send, t0 + give_up) - now))
        if readable:
            break
    t_answer = time.monotonic() - t0
    return read_response(sock, 10), t_answer


def check_408(resp, waited, what):
    assert resp is not None, (
        "%s: the connection was closed after %.1fs without the 408 answer" % (what, waited))
    assert_raw_error(resp, 408, None, what + ":")
    assert REQUEST_TIMEOUT * 0.8 <= waited <= REQUEST_TIMEOUT + 2.0, (
        "%s: 408 after %.2fs (request_timeout %.0fs counted from the first byte)"
        % (what, waited, REQUEST_TIMEOUT))


def test_trickled_head_gets_408_at_request_timeout_counted_from_the_first_byte(server):
    head = INVOKE_HEAD + b"X-Slow: " + b"a" * 200  # never ends within the test
    with connect(server.port) as s:
        resp, waited = trickle(s, head)
        check_408(resp, waited, "a head trickled one byte per 200ms")
        closed_after, _ = wait_closed(s, 3)
    assert_still_serving(server)


def test_trickled_body_gets_408_at_request_timeout(server):
    with connect(server.port) as s:
        s.sendall(INVOKE_HEAD + b"Content-Length: 500\r\n\r\n")
        resp, waited = trickle(s, b'{"inputs": ' + b" " * 400)
        check_408(resp, waited, "a body trickled one byte per 200ms after a complete head")
        wait_closed(s, 3)
    assert_still_serving(server)


def test_stalled_head_gets_408_while_others_are_served(server):
    with connect(server.port) as slow:
        slow.sendall(INVOKE_HEAD)  # no end of head
        t0 = time.monotonic()
        assert_still_serving(server)  # others are served while it dawdles
        resp = read_response(slow, 8)
        waited = time.monotonic() - t0
        check_408(resp, waited, "a head that stops half-way")
        wait_closed(slow, 3)


def test_stalled_body_gets_408(server):
    with connect(server.port) as slow:
        slow.sendall(INVOKE_HEAD + b"Content-Length: 500\r\n\r\n{\"inputs\":")
        t0 = time.monotonic()
        resp = read_response(slow, 8)
        waited = time.monotonic() - t0
        check_408(resp, waited, "a body that stops half-way")
        wait_closed(slow, 3)
    assert_still_serving(server)


def test_request_timer_of_a_keep_alive_request_starts_at_its_first_byte(server):
    """After a response the connection is idle (idle_timeout 2s, not request_timeout 1s);
    the next request's timer starts at its first byte, and the idle timer no longer runs."""
    with connect(server.port) as s:
        s.sendall(tiny_invoke_request())
        r = read_response(s)
        assert r is not None and r.status == 200, r
        time.sleep(1.3)  # longer than request_timeout, shorter than idle_timeout
        readable, _, _ = select.select([s], [], [], 0)
        assert not readable, ("an idle keep-alive connection was closed (or answered: %r) "
                              "1.3s after its response, before idle_timeout (2s)" % s.recv(300))
        resp, waited = trickle(s, INVOKE_HEAD + b"X-Slow: " + b"a" * 200)
        check_408(resp, waited, "a request trickled on a keep-alive connection 1.3s after "
                  "the previous response")
    assert_still_serving(server)


def test_read_timeout_is_an_alias_of_request_timeout(start_server):
    server = start_server({"server": {"read_timeout": "1s", "idle_timeout": "5s"},
                           "functions": {"tiny_mlp": {"idle_timeout": "60s"}}})
    with connect(server.port) as s:
        resp, waited = trickle(s, INVOKE_HEAD + b"X-Slow: " + b"a" * 200)
        check_408(resp, waited, "read_timeout: 1s, a head trickled one byte per 200ms")
    assert_still_serving(server)


# --------------------------------------------------------------------------------------
# server.idle_timeout
# --------------------------------------------------------------------------------------
def test_connection_with_nothing_sent_is_closed_silently_after_idle_timeout(server):
    with connect(server.port) as s:
        waited, got = wait_closed(s, 10)
    assert got == b"", "a connection that sent nothing got %r (expected a silent close)" % got[:300]
    assert IDLE_TIMEOUT * 0.8 <= waited <= IDLE_TIMEOUT + 3, (
        "a connection with nothing sent was closed after %.2fs (idle_timeout %.0fs, "
        "request_timeout %.0fs)" % (waited, IDLE_TIMEOUT, REQUEST_TIMEOUT))


def test_idle_keep_alive_connection_is_closed_after_idle_timeout(server):
    with connect(server.port) as s:
        s.sendall(tiny_invoke_request())
        r = read_response(s)
        assert r is not None and r.status == 200, r
        # A second request within idle_timeout reuses the connection...
        s.sendall(tiny_invoke_request())
        r = read_response(s)
        assert r is not None and r.status == 200, r
        # ...and after idle_timeout of silence the server closes it, without a word.
        waited, got = wait_closed(s, 10)
    assert got == b"", "an idle keep-alive connection got %r before its close" % got[:300]
    assert IDLE_TIMEOUT * 0.8 <= waited <= IDLE_TIMEOUT + 3, (
        "idle keep-alive connection closed after %.2fs (idle_timeout %.0fs)" % (waited, IDLE_TIMEOUT))


# --------------------------------------------------------------------------------------
# server.max_connections and server.max_connections_per_client
# --------------------------------------------------------------------------------------
def open_connections(port, n, sources):
    """n connections spread over the `sources` addresses, in order, nothing sent."""
    socks = []
    try:
        for i in range(n):
            socks.append(connect(port, sources[i * len(sources) // n]))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def served(sock):
    """A request on an open connection is answered 200 (keep-alive)."""
    sock.sendall(tiny_invoke_request())
    r = read_response(sock)
    return r is not None and r.status == 200, r


def unsolicited(sock, timeout=3.0):
    """What the server sends on a new connection before any request: its answer, or None
    when it closed it silently. Fails when nothing happens within `timeout`."""
    try:
        return read_response(sock, timeout)
    except socket.timeout:
        raise AssertionError("a connection over the limit was neither answered nor closed "
                             "within %.0fs" % timeout) from None


def quiet(socks):
    """The connections in `socks` that received something (an answer or a close)."""
    # poll, not select: with ~1,000 sockets open the descriptors pass select()'s FD_SETSIZE.
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return [by_fd[fd] for fd, _ in poller.poll(0)]


def accepted_again(port, source, timeout=3.0):
    """Retries a new connection from `source` until one is served (the server learns about
    closed connections asynchronously). Returns the last refusal when none was."""
    deadline = time.monotonic() + timeout
    while True:
        with connect(port, source) as s:
            s.sendall(tiny_invoke_request(keep_alive=False))
            r = read_response(s)
        if r is not None and r.status == 200:
            return None
        if time.monotonic() >= deadline:
            return r
        time.sleep(0.1)


def check_connection_refusal(resp, status, etype, what):
    err = assert_raw_error(resp, status, etype, what)
    assert_retry_after(resp, what)
    return err


def test_max_connections_beyond_is_503_at_once_then_accepted_again(start_server):
    limit = 8
    server = start_server({"server": {"max_connections": limit, "idle_timeout": "30s",
                                      "request_timeout": "10s"},
                           "functions": {"tiny_mlp": {"idle_timeout": "60s"}}})
    server.session.close()
    time.sleep(0.3)  # the readiness probe's connection is gone
    held = open_connections(server.port, limit, ["127.0.0.2", "127.0.0.3"])
    try:
        for i, s in enumerate(held):
            ok, r = served(s)
            assert ok, "connection %d of max_connections %d: %r" % (i + 1, limit, r)
        with connect(server.port, "127.0.0.4") as extra:
            t0 = time.monotonic()
            resp = unsolicited(extra)
            elapsed = time.monotonic() - t0
            check_connection_refusal(resp, 503, None, "connection %d (max_connections %d):"
                                     % (limit + 1, limit))
            assert elapsed < 2.0, "the 503 took %.1fs (expected at once)" % elapsed
            wait_closed(extra, 3)
        assert not quiet(held), "the held connections were answered or closed"
        ok, r = served(held[-1])
        assert ok, "a held connection after the refusal: %r" % (r,)
        held.pop(0).close()
        refusal = accepted_again(server.port, "127.0.0.4")
        assert refusal is None, ("after one of %d connections closed, a new one was still "
                                 "refused: %r" % (limit, refusal))
    finally:
        for s in held:
            s.close()


def test_max_connections_per_client_beyond_is_429_other_addresses_unaffected(start_server):
    per_client = 4
    server = start_server({"server": {"max_connections_per_client": per_client,
                                      "idle_timeout": "30s", "request_timeout": "10s"},
                           "functions": {"tiny_mlp": {"idle_timeout": "60s"}}})
    held = open_connections(server.port, per_client, ["127.0.0.2"])
    try:
        for i, s in enumerate(held):
            ok, r = served(s)
            assert ok, "connection %d of max_connections_per_client %d: %r" % (i + 1, per_client, r)
        with connect(server.port, "127.0.0.2") as extra:
            t0 = time.monotonic()
            resp = unsolicited(extra)
            elapsed = time.monotonic() - t0
            check_connection_refusal(resp, 429, "too_many_connections",
                                     "connection %d from one address (per-client limit %d):"
                                     % (per_client + 1, per_client))
            assert elapsed < 2.0, "the 429 took %.1fs (expected at once)" % elapsed
            wait_closed(extra, 3)
        # another client address is unaffected, also with several connections
        others = open_connections(server.port, per_client, ["127.0.0.3"])
        try:
            for s in others:
                ok, r = served(s)
                assert ok, "another client address while 127.0.0.2 is at its limit: %r" % (r,)
        finally:
            for s in others:
                s.close()
        assert not quiet(held), "the held connections were answered or closed"
        held.pop(0).close()
        refusal = accepted_again(server.port, "127.0.0.2")
        assert refusal is None, ("after one of the client's %d connections closed, a new one "
                                 "was still refused: %r" % (per_client, refusal))
    finally:
        for s in held:
            s.close()


def test_default_connection_limits_are_256_per_client_and_1024(start_server):
    server = start_server(DEFAULTS_CONFIG)
    server.session.close()
    time.sleep(0.3)
    held = []
    try:
        # max_connections_per_client: 256 from one address, the 257th refused with 429
        held += open_connections(server.port, DEFAULT_MAX_PER_CLIENT, ["127.0.0.2"])
        ok, r = served(held[-1])
        assert ok, "connection %d from one address (the default per-client limit): %r" % (
            DEFAULT_MAX_PER_CLIENT, r)
        with connect(server.port, "127.0.0.2") as extra:
            check_connection_refusal(unsolicited(extra), 429, "too_many_connections",
                                     "connection %d from one address:" % (DEFAULT_MAX_PER_CLIENT + 1))
        # max_connections: up to 1024 in all from other addresses, the 1025th refused with 503
        more = DEFAULT_MAX_CONNECTIONS - len(held)
        sources = ["127.0.0.%d" % i for i in range(3, 3 + 4)]  # 192 each: under 256
        held += open_connections(server.port, more, sources)
        ok, r = served(held[-1])
        assert ok, "connection %d (the default max_connections): %r" % (DEFAULT_MAX_CONNECTIONS, r)
        with connect(server.port, "127.0.0.9") as extra:
            check_connection_refusal(unsolicited(extra), 503, None,
                                     "connection %d:" % (DEFAULT_MAX_CONNECTIONS + 1))
        assert not quiet(held), "held connections were answered or closed"
    finally:
        for s in held:
            s.close()
    refusal = accepted_again(server.port, "127.0.0.9")
    assert refusal is None, "after the connections closed a new one was refused: %r" % (refusal,)
