"""Typed errors {"error": {"type", "message", "request_id"}} with their status codes, and the
server still answering a good request after each: invalid_json 400, invalid_input 400 (dtype,
shape, batch dimension, ragged, names, ranges, element-count limit), not_found 404,
payload_too_large 413 (and exactly max_body_bytes accepted).

Scheduler errors (overloaded 429, timeout 504) are in test_scheduler.py, model_integrity 503
in test_store.py."""

import json
import socket

import pytest

from support import (assert_error, assert_ok, assert_still_serving, json_bytes, shape_of,
                     tiny_rows)

CONFIG = {
    "functions": {
        "digits": {"idle_timeout": "60s"},
        "tiny_mlp": {"idle_timeout": "60s"},
        "multi_input": {"idle_timeout": "60s"},
        "all_dtypes": {"idle_timeout": "60s"},
    },
}

MAX_BODY = 4096
MAX_ELEMENTS = 64  # = 4 rows of tiny_mlp's 16 columns
LIMITS_CONFIG = {
    "server": {"max_body_bytes": MAX_BODY, "max_tensor_elements": MAX_ELEMENTS},
    "functions": {"tiny_mlp": {"idle_timeout": "60s"}},
}



@pytest.fixture(scope="module")
def shared_limits_server(module_servers):
    return module_servers.shared(LIMITS_CONFIG)


@pytest.fixture
def limits_server(shared_limits_server):
    return shared_limits_server.get()


def post_raw(server, path, data):
    return server.post(path, data=data, headers={"Content-Type": "application/json"})


# --------------------------------------------------------------------------------------
# invalid_json
# --------------------------------------------------------------------------------------
MALFORMED = {
    "truncated": b'{"inputs": [[1, 2, 3',
    "not_json": b"this is not json",
    "empty": b"",
    "trailing_garbage": b'{"inputs": [[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]} xyz',
    "single_quotes": b"{'inputs': [[1]]}",
    "bad_utf8": b'{"inputs": [[1]], "model": "\xff\xfe"}',
    "nan_literal": b'{"inputs": [[NaN,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]}',
}


@pytest.mark.parametrize("path", ["/v1/functions/tiny_mlp/invoke", "/v1/infer?model=tiny_mlp",
                                  "/v1/batch"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_body_is_invalid_json(server, case, path):
    r = post_raw(server, path, MALFORMED[case])
    assert_error(r, 400, "invalid_json")
    assert_still_serving(server)


# --------------------------------------------------------------------------------------
# invalid_input
# --------------------------------------------------------------------------------------
def all_dtypes_inputs():
    return {"f32": [[1.5, -2]], "f64": [[0.25, 1e10]], "i32": [[1, 2]], "i64": [[3, 4]],
            "b": [[True, False]], "u8": [[0, 255]], "i8": [[-128, 127]]}


def with_input(name, value):
    inputs = all_dtypes_inputs()
    inputs[name] = value
    return {"inputs": inputs}


F16 = [0.5] * 16
INVALID = {
    # dtype
    "float_into_int64": ("multi_input", {"inputs": {"features": [[1, 2, 3, 4]], "ids": [[1.5, 2]]}}),
    "float_into_int32": ("all_dtypes", with_input("i32", [[1.5, 2]])),
    "bool_into_float": ("tiny_mlp", {"inputs": [[True] * 16]}),
    "bool_into_int64": ("all_dtypes", with_input("i64", [[True, False]])),
    "int_into_bool": ("all_dtypes", with_input("b", [[1, 0]])),
    "string_into_float": ("tiny_mlp", {"inputs": [["0.5"] * 16]}),
    "null_into_float": ("tiny_mlp", {"inputs": [[None] * 16]}),
    "object_into_float": ("tiny_mlp", {"inputs": [[{}] * 16]}),
    # integer ranges
    "int32_overflow": ("all_dtypes", with_input("i32", [[2 ** 31, 0]])),
    "int64_overflow": ("all_dtypes", with_input("i64", [[2 ** 63, 0]])),
    "uint8_negative": ("all_dtypes", with_input("u8", [[-1, 0]])),
    "uint8_overflow": ("all_dtypes", with_input("u8", [[256, 0]])),
    "int8_overflow": ("all_dtypes", with_input("i8", [[128, 0]])),
    # shapes
    "inner_dimension_too_small": ("tiny_mlp", {"inputs": [[0.5] * 15]}),
    "inner_dimension_too_large": ("tiny_mlp", {"inputs": [[0.5] * 17]}),
    "digits_inner_dimension": ("digits", {"inputs": [[1] * 63]}),
    "missing_batch_dimension": ("tiny_mlp", {"inputs": F16}),
    "rank_too_high": ("tiny_mlp", {"inputs": [[F16]]}),
    "scalar_inputs": ("tiny_mlp", {"inputs": 0.5}),
    "ragged_rows": ("tiny_mlp", {"inputs": [F16, [0.5] * 15]}),
    "ragged_nesting": ("tiny_mlp", {"inputs": [F16, 0.5]}),
    "multi_input_batch_mismatch": ("multi_input", {"inputs": {"features": [[1, 2, 3, 4]],
                                                             "ids": [[1, 2], [3, 4]]}}),
    # names
    "unknown_input_name": ("tiny_mlp", {"inputs": {"not_x": [F16]}}),
    "extra_input_name": ("multi_input", {"inputs": {"features": [[1, 2, 3, 4]], "ids": [[1, 2]],
                                                    "bogus": [[1]]}}),
    "missing_input": ("multi_input", {"inputs": {"features": [[1, 2, 3, 4]]}}),
    "list_form_for_multi_input_model": ("multi_input", {"inputs": [[1, 2, 3, 4]]}),
    # document shape
    "no_inputs_key": ("tiny_mlp", {"input": [F16]}),
    "inputs_null": ("tiny_mlp", {"inputs": None}),
    "inputs_string": ("tiny_mlp", {"inputs": "[[0.5]]"}),
    "body_is_array": ("tiny_mlp", [[0.5] * 16]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_input_is_400(server, case):
    function, body = INVALID[case]
    r = server.invoke(function, json_bytes(body))
    assert_error(r, 400, "invalid_input")
    assert_still_serving(server)


def test_invalid_input_through_infer_and_batch(server):
    r = server.infer({"model": "tiny_mlp", "inputs": [[0.5] * 15]})
    assert_error(r, 400, "invalid_input")
    results = assert_ok(server.post("/v1/batch", json=[{"model": "tiny_mlp", "inputs": [[True] * 16]},
                                                      {"model": "tiny_mlp", "inputs": tiny_rows(1)}]))
    assert results[0]["error"]["type"] == "invalid_input", results[0]
    assert shape_of(results[1]["outputs"]) == [1, 4]


def test_the_valid_all_dtypes_body_used_above_is_accepted(server):
    # guards the negative cases built from it: they fail because of their one change
    body = assert_ok(server.invoke("all_dtypes", {"inputs": all_dtypes_inputs()}))
    assert set(body["outputs"]) == {"f32_out", "f64_out", "i32_out", "i64_out", "b_out",
                                    "u8_out", "i8_out"}


def test_error_message_names_the_problem(server):
    r = server.invoke("multi_input", {"inputs": {"features": [[1, 2, 3, 4]]}})
    err = assert_error(r, 400, "invalid_input")
    assert "ids" in err["message"], err
    r = server.invoke("tiny_mlp", {"inputs": [[0.5] * 15]})
    err = assert_error(r, 400, "invalid_input")
    assert "15" in err["message"] or "16" in err["message"], err


# --------------------------------------------------------------------------------------
# not_found
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/functions/no_such_function/invoke"),
    ("POST", "/v1/infer?model=no_such_function"),
    ("GET", "/v1/no_such_route"),
    ("POST", "/v1/no_such_route"),
    ("GET", "/no_such_route"),
])
def test_not_found(server, method, path):
    kw = {}
    if method == "POST":
        kw = {"data": json_bytes({"inputs": tiny_rows(1)}),
              "headers": {"Content-Type": "application/json"}}
    r = server.request(method, path, **kw)
    assert_error(r, 404, "not_found")
    assert_still_serving(server)


def test_request_id_given_is_used_in_errors(server):
    r = server.invoke("no_such_function", {"inputs": tiny_rows(1)},
                      headers={"X-Request-Id": "err-req-42"})
    assert_error(r, 404, "not_found", request_id="err-req-42")


# --------------------------------------------------------------------------------------
# Limits: max_body_bytes (413) and max_tensor_elements (400)
# --------------------------------------------------------------------------------------
def padded_body(size, rows=1):
    """A valid tiny_mlp body of exactly `size` bytes (JSON allows trailing whitespace)."""
    base = json_bytes({"inputs": tiny_rows(rows)})
    assert len(base) <= size
    return base + b" " * (size - len(base))


def test_body_of_exactly_max_body_bytes_is_accepted(limits_server):
    body = padded_body(MAX_BODY)
    assert len(body) == MAX_BODY
    r = limits_server.invoke("tiny_mlp", body)
    assert shape_of(assert_ok(r)["outputs"]) == [1, 4]


def test_body_one_byte_over_the_limit_is_413(limits_server):
    body = padded_body(MAX_BODY + 1)
    r = limits_server.invoke("tiny_mlp", body)
    assert_error(r, 413, "payload_too_large")
    assert_still_serving(limits_server)


@pytest.mark.parametrize("path", ["/v1/infer?model=tiny_mlp", "/v1/batch"])
def test_body_over_the_limit_on_other_routes_is_413(limits_server, path):
    body = padded_body(MAX_BODY + 1)
    if path == "/v1/batch":
        body = b"[" + padded_body(MAX_BODY) + b"]"
    r = post_raw(limits_server, path, body)
    assert_error(r, 413, "payload_too_large")
    assert_still_serving(limits_server)


def test_much_larger_body_is_413(limits_server):
    body = padded_body(64 * 1024)
    r = limits_server.invoke("tiny_mlp", body)
    assert_error(r, 413, "payload_too_large")
    assert_still_serving(limits_server)


def raw_chunked_post(server, path, body, chunk=1000):
    """POSTs `body` with Transfer-Encoding: chunked on a raw socket and returns (status,
    headers, body). A server may answer 413 and close before the upload ends: sending then
    fails with EPIPE/ECONNRESET, which is ignored, and the answer is read anyway (requests
    cannot do that for chunked bodies)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        try:
            sock.sendall(("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                          "\r\nTransfer-Encoding: chunked\r\n\r\n" % path).encode())
            for i in range(0, len(body), chunk):
                part = body[i:i + chunk]
                sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while True:
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            data += got
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                lengths = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if lengths and len(rest) >= int(lengths[0].split(b":")[1]):
                    break
    finally:
        sock.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head, "no response at all to a chunked body over the limit"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return status, headers, rest


def test_chunked_body_over_the_limit_is_413(limits_server):
    status, headers, body = raw_chunked_post(limits_server, "/v1/functions/tiny_mlp/invoke",
                                             padded_body(MAX_BODY * 3))
    assert status == 413, (status, body[:300])
    err = json.loads(body)["error"]
    assert err["type"] == "payload_too_large", err
    assert err["request_id"] and headers.get("x-request-id") == err["request_id"], (headers, err)
    assert_still_serving(limits_server)


def test_chunked_body_within_the_limit_is_accepted(limits_server):
    status, headers, body = raw_chunked_post(limits_server, "/v1/functions/tiny_mlp/invoke",
                                             padded_body(MAX_BODY), chunk=100)
    assert status == 200, (status, body[:300])
    assert shape_of(json.loads(body)["outputs"]) == [1, 4]


def test_element_count_exactly_at_the_limit_is_accepted(limits_server):
    rows = MAX_ELEMENTS // 16
    r = limits_server.invoke("tiny_mlp", {"inputs": tiny_rows(rows)})
    assert shape_of(assert_ok(r)["outputs"]) == [rows, 4]


def test_element_count_over_the_limit_is_invalid_input(limits_server):
    rows = MAX_ELEMENTS // 16 + 1
    r = limits_server.invoke("tiny_mlp", {"inputs": tiny_rows(rows)})
    assert_error(r, 400, "invalid_input")
    assert_still_serving(limits_server)


def test_limits_server_keeps_the_connection_usable_after_413(limits_server):
    # the same keep-alive session: a refused body must not poison the next request
    for _ in range(3):
        assert_error(limits_server.invoke("tiny_mlp", padded_body(MAX_BODY + 1)), 413,
                     "payload_too_large")
        assert_ok(limits_server.invoke("tiny_mlp", {"inputs": tiny_rows(1)}))
