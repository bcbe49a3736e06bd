"""Routing: /v1/functions/{name}/invoke, /v1/infer by ?model=, X-Model and "model" in the
body (plus default_function), /v1/batch, pinned versions, aliases, keep-alive, chunked bodies.

Two models are deployed as two functions (digits: [N,64] -> [N,10]; tiny_mlp: [N,16] ->
[N,4]); the response's `model` and the output shape prove which one answered."""

import http.client
import json

import numpy as np
import pytest

from support import (assert_error, assert_ok, digits_rows, json_bytes, reference_outputs,
                     shape_of, tiny_rows)

CONFIG = {
    "default_function": "digits",
    "functions": {
        "digits": {"model": "digits", "version": "current", "min_instances": 0,
                   "max_instances": 2, "concurrency": 4, "idle_timeout": "60s",
                   "max_queue": 64, "queue_timeout": "10s", "timeout": "30s"},
        "tiny_mlp": {"model": "tiny_mlp", "idle_timeout": "60s"},
        # the function's name differs from the model's
        "classifier": {"model": "digits", "idle_timeout": "60s"},
        # a pinned, not promoted version of tiny_mlp (same weights, different bytes)
        "tiny_pinned": {"model": "tiny_mlp", "version": "2.0.0", "idle_timeout": "60s"},
    },
}

OUT_DIM = {"digits": 10, "tiny_mlp": 4}



def body_for(model, rows=1):
    return {"inputs": digits_rows(rows) if model == "digits" else tiny_rows(rows)}


def check_answer(body, model, rows):
    assert body.get("model") == model, "answered by %r, expected %r: %s" % (
        body.get("model"), model, json.dumps(body)[:500])
    assert body.get("version") == "1.0.0", body.get("version")
    assert shape_of(body["outputs"]) == [rows, OUT_DIM[model]], body["outputs"]


def test_invoke_digits_matches_reference(server):
    rows = digits_rows(3, start=5)
    r = server.invoke("digits", {"inputs": rows})
    body = assert_ok(r)
    check_answer(body, "digits", 3)
    assert r.headers.get("Content-Type", "").startswith("application/json")
    got = np.array(body["outputs"], dtype=np.float64)
    want = reference_outputs("digits", {"input": rows})["probabilities"]
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-4), got.sum(axis=1)
    assert np.allclose(got, want, atol=1e-5), (got, want)


def test_invoke_tiny_mlp_matches_reference(server):
    rows = tiny_rows(2)
    body = assert_ok(server.invoke("tiny_mlp", {"inputs": rows}))
    check_answer(body, "tiny_mlp", 2)
    want = reference_outputs("tiny_mlp", {"x": rows})["y"]
    assert np.allclose(np.array(body["outputs"]), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["tiny_mlp", "digits"])
def test_infer_routes_by_query_parameter(server, model):
    body = assert_ok(server.infer(body_for(model, 2), params={"model": model}))
    check_answer(body, model, 2)


@pytest.mark.parametrize("model", ["tiny_mlp", "digits"])
def test_infer_routes_by_x_model_header(server, model):
    body = assert_ok(server.infer(body_for(model, 2), headers={"X-Model": model}))
    check_answer(body, model, 2)


@pytest.mark.parametrize("model", ["tiny_mlp", "digits"])
def test_infer_routes_by_model_in_body(server, model):
    req = dict(body_for(model, 2), model=model)
    body = assert_ok(server.infer(req))
    check_answer(body, model, 2)


def test_infer_without_model_uses_default_function(server):
    body = assert_ok(server.infer(body_for("digits", 1)))
    check_answer(body, "digits", 1)


@pytest.mark.parametrize("how", ["query", "header", "body"])
def test_infer_really_reaches_the_named_function(server, how):
    # digits-shaped input (64 columns) sent to tiny_mlp (16 columns) must be refused by
    # tiny_mlp's schema, not answered by the default function.
    req = body_for("digits", 1)
    kw = {}
    if how == "query":
        kw["params"] = {"model": "tiny_mlp"}
    elif how == "header":
        kw["headers"] = {"X-Model": "tiny_mlp"}
    else:
        req["model"] = "tiny_mlp"
    assert_error(server.infer(req, **kw), 400, "invalid_input")


@pytest.mark.parametrize("how", ["query", "header", "body", "invoke"])
def test_unknown_function_is_not_found(server, how):
    req = body_for("tiny_mlp", 1)
    if how == "invoke":
        r = server.invoke("no_such_function", req)
    elif how == "query":
        r = server.infer(req, params={"model": "no_such_function"})
    elif how == "header":
        r = server.infer(req, headers={"X-Model": "no_such_function"})
    else:
        r = server.infer(dict(req, model="no_such_function"))
    assert_error(r, 404, "not_found")


def test_same_input_same_output_on_every_route(server):
    req = body_for("tiny_mlp", 2)
    a = assert_ok(server.invoke("tiny_mlp", req))["outputs"]
    b = assert_ok(server.infer(req, params={"model": "tiny_mlp"}))["outputs"]
    c = assert_ok(server.infer(req, headers={"X-Model": "tiny_mlp"}))["outputs"]
    d = assert_ok(server.infer(dict(req, model="tiny_mlp")))["outputs"]
    assert a == b == c == d


def test_pinned_version_is_served(server):
    rows = tiny_rows(2)
    pinned = assert_ok(server.invoke("tiny_pinned", {"inputs": rows}))
    assert pinned.get("version") == "2.0.0", pinned
    current = assert_ok(server.invoke("tiny_mlp", {"inputs": rows}))
    assert current.get("version") == "1.0.0", current
    assert np.allclose(np.array(pinned["outputs"]), np.array(current["outputs"]), atol=1e-6)
    h = server.health()["functions"]
    assert h["tiny_pinned"]["version"] == "2.0.0", h["tiny_pinned"]


def test_function_named_differently_from_its_model(server):
    rows = digits_rows(2)
    body = assert_ok(server.invoke("classifier", {"inputs": rows}))
    assert body.get("version") == "1.0.0"
    assert shape_of(body["outputs"]) == [2, 10]
    direct = assert_ok(server.invoke("digits", {"inputs": rows}))
    assert np.allclose(np.array(body["outputs"]), np.array(direct["outputs"]), atol=1e-6)


def test_batch_one_result_or_error_per_element(server):
    good_digits = body_for("digits", 1)                       # default function
    good_tiny = dict(body_for("tiny_mlp", 2), model="tiny_mlp")
    bad_shape = {"model": "tiny_mlp", "inputs": [[1, 2, 3]]}
    unknown = dict(body_for("tiny_mlp", 1), model="no_such_function")
    good_digits_named = dict(body_for("digits", 3), model="digits")
    req = [good_digits, good_tiny, bad_shape, unknown, good_digits_named]
    r = server.post("/v1/batch", json=req)
    results = assert_ok(r)
    assert isinstance(results, list) and len(results) == len(req), results
    check_answer(results[0], "digits", 1)
    check_answer(results[1], "tiny_mlp", 2)
    assert "outputs" not in results[2]
    assert results[2]["error"]["type"] == "invalid_input", results[2]
    assert results[2]["error"].get("message"), results[2]
    assert results[3]["error"]["type"] == "not_found", results[3]
    check_answer(results[4], "digits", 3)
    # the good elements equal what single requests return
    single = assert_ok(server.infer(good_tiny))
    assert np.allclose(np.array(results[1]["outputs"]), np.array(single["outputs"]), atol=1e-6)


def test_batch_of_one_and_empty_batch(server):
    one = assert_ok(server.post("/v1/batch", json=[dict(body_for("tiny_mlp", 1), model="tiny_mlp")]))
    assert len(one) == 1
    check_answer(one[0], "tiny_mlp", 1)
    empty = assert_ok(server.post("/v1/batch", json=[]))
    assert empty == []


def test_batch_body_must_be_an_array(server):
    r = server.post("/v1/batch", json=dict(body_for("tiny_mlp", 1), model="tiny_mlp"))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] in ("invalid_input", "invalid_json"), r.text
    r = server.post("/v1/batch", data=b"[{", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_json")


def test_keep_alive_reuses_the_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.connect()
        sock = conn.sock
        for i in range(5):
            conn.request("POST", "/v1/functions/tiny_mlp/invoke",
                         body=json_bytes({"inputs": tiny_rows(1, offset=i)}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200, data[:500]
            assert (resp.getheader("Connection") or "").lower() != "close"
            assert conn.sock is sock, "server closed the keep-alive connection after request %d" % i
        conn.request("GET", "/v1/health")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and conn.sock is sock
    finally:
        conn.close()


def test_chunked_request_body(server):
    data = json_bytes({"inputs": tiny_rows(2)})

    def gen():
        for i in range(0, len(data), 7):
            yield data[i:i + 7]

    r = server.post("/v1/functions/tiny_mlp/invoke", data=gen(),
                    headers={"Content-Type": "application/json"})
    body = assert_ok(r, "chunked request:")
    check_answer(body, "tiny_mlp", 2)
