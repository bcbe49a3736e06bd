"""Tensor decoding and encoding: the multi-input model (float32 + int64 inputs by name, two
outputs keyed by name), every boundary dtype of all_dtypes (ints as JSON integers, bools as
true/false, int64 beyond 2^53 exact), the response's shape rules (list form + one output →
nested array; otherwise an object keyed by output name), JSON number spellings, and the cnn's
4-D input against a numpy evaluation of the graph."""

import json
import math

import numpy as np
import pytest

from support import assert_ok, reference_outputs, shape_of, tiny_rows

CONFIG = {"functions": {name: {"idle_timeout": "60s"}
                        for name in ("tiny_mlp", "digits", "multi_input", "all_dtypes", "cnn")}}



def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_float_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------
# multi_input: features float32 [N,4], ids int64 [N,2] -> score float32 [N,1], ids_sum int64 [N,1]
# --------------------------------------------------------------------------------------
def test_multi_input_by_name(server):
    body = assert_ok(server.invoke("multi_input", {"inputs": {
        "features": [[1, 1, 1, 1], [0.5, -1, 2, 0]], "ids": [[2, 3], [-7, 100]]}}))
    assert body["model"] == "multi_input" and body["version"] == "1.0.0"
    out = body["outputs"]
    assert isinstance(out, dict) and set(out) == {"score", "ids_sum"}, out
    assert shape_of(out["score"]) == [2, 1] and shape_of(out["ids_sum"]) == [2, 1]
    assert out["score"][0][0] == pytest.approx(15.0) and out["score"][1][0] == pytest.approx(97.5)
    assert out["ids_sum"] == [[5], [93]]
    assert all(is_int(v[0]) for v in out["ids_sum"]), "int64 output not JSON integers: %r" % out
    assert all(is_float_number(v[0]) for v in out["score"])


def test_multi_input_through_infer_with_model_in_body(server):
    body = assert_ok(server.infer({"model": "multi_input", "inputs": {
        "ids": [[1, 2]], "features": [[1, 2, 3, 4]]}}))  # input order does not matter
    assert body["outputs"]["ids_sum"] == [[3]]
    assert body["outputs"]["score"][0][0] == pytest.approx(1 + 4 + 9 + 16 + 3)


def test_int64_beyond_2_pow_53_is_exact(server):
    big = 2 ** 53
    ids = [[big + 1, big + 3], [2 ** 62, 2 ** 62 - 1], [-(2 ** 62), -(2 ** 62)], [-1, 1]]
    feats = [[0, 0, 0, 0]] * len(ids)
    r = server.invoke("multi_input", {"inputs": {"features": feats, "ids": ids}})
    out = assert_ok(r)["outputs"]
    # parse the raw text again with exact integers, so no float ever stands in between
    raw = json.loads(r.text)["outputs"]["ids_sum"]
    want = [[a + b] for a, b in ids]
    assert want[1] == [2 ** 63 - 1] and want[2] == [-(2 ** 63)]
    assert raw == want, "int64 outputs not exact: %r != %r" % (raw, want)
    assert all(is_int(v[0]) for v in raw)
    assert out["score"][0][0] == pytest.approx(2.0 * big, rel=1e-6)


# --------------------------------------------------------------------------------------
# all_dtypes
# --------------------------------------------------------------------------------------
ALL_IN = {
    "f32": [[1.5, -2.25], [0, 1e-3]],
    "f64": [[0.1, 1e300], [3.141592653589793, -2.5e-300]],
    "i32": [[2147483646, -2147483648], [0, -1]],
    "i64": [[2 ** 62, -(2 ** 63)], [9007199254740993, -9007199254740993]],
    "b": [[True, False], [False, False]],
    "u8": [[0, 255], [7, 128]],
    "i8": [[-128, 127], [0, -1]],
}


def test_all_dtypes_round_trip(server):
    r = server.invoke("all_dtypes", {"inputs": ALL_IN})
    body = assert_ok(r)
    out = body["outputs"]
    assert set(out) == {n + "_out" for n in ALL_IN}, out
    for name in out:
        assert shape_of(out[name]) == [2, 2], (name, out[name])

    f32 = np.array(out["f32_out"], dtype=np.float64)
    want = np.array(ALL_IN["f32"], dtype=np.float32).astype(np.float64) * 2
    assert np.allclose(f32, want, rtol=1e-6, atol=0), (f32, want)
    assert all(is_float_number(v) for row in out["f32_out"] for v in row)

    for got, x in zip(sum(out["f64_out"], []), sum(ALL_IN["f64"], [])):
        assert is_float_number(got)
        assert math.isclose(got, 2 * x, rel_tol=1e-15), "float64 lost precision: %r vs %r" % (
            got, 2 * x)

    assert out["i32_out"] == [[2147483647, -2147483647], [1, 0]]
    assert out["i64_out"] == [[2 ** 62 + 1, -(2 ** 63) + 1], [9007199254740994, -9007199254740992]]
    assert out["b_out"] == [[False, True], [True, True]]
    assert out["u8_out"] == ALL_IN["u8"]
    assert out["i8_out"] == ALL_IN["i8"]
    for name in ("i32_out", "i64_out", "u8_out", "i8_out"):
        assert all(is_int(v) for row in out[name] for v in row), (name, out[name])
    assert all(isinstance(v, bool) for row in out["b_out"] for v in row), out["b_out"]
    # the text itself uses true/false, not 1/0
    raw = json.loads(r.text)["outputs"]["b_out"]
    assert raw == [[False, True], [True, True]]


def test_json_integers_feed_float_inputs(server):
    ints = {**ALL_IN, "f32": [[1, -2], [3, 4]], "f64": [[5, -6], [7, 2 ** 40]]}
    out = assert_ok(server.invoke("all_dtypes", {"inputs": ints}))["outputs"]
    assert out["f32_out"] == [[2, -4], [6, 8]]
    assert out["f64_out"] == [[10, -12], [14, 2 ** 41]]


# --------------------------------------------------------------------------------------
# Response shape rules
# --------------------------------------------------------------------------------------
def test_list_form_single_output_is_nested_array(server):
    body = assert_ok(server.invoke("tiny_mlp", {"inputs": tiny_rows(3)}))
    assert isinstance(body["outputs"], list) and shape_of(body["outputs"]) == [3, 4]
    assert body["model"] == "tiny_mlp" and body["version"] == "1.0.0"


def test_object_form_single_output_is_keyed_by_output_name(server):
    rows = tiny_rows(2)
    keyed = assert_ok(server.invoke("tiny_mlp", {"inputs": {"x": rows}}))
    assert isinstance(keyed["outputs"], dict) and set(keyed["outputs"]) == {"y"}, keyed
    listed = assert_ok(server.invoke("tiny_mlp", {"inputs": rows}))
    assert keyed["outputs"]["y"] == listed["outputs"]


def test_json_number_spellings(server):
    # exponents, negative zero, integers and decimals mixed in one row
    text = ('{"inputs": [[1e-3, -2.5E+2, -0.0, 0, 7, 1.25e1, 3E0, -1, 0.5, 2, 1e0, -1e-1, '
            '100, 0.001, 4.0, -0]]}')
    values = [1e-3, -250.0, -0.0, 0, 7, 12.5, 3.0, -1, 0.5, 2, 1.0, -0.1, 100, 0.001, 4.0, 0]
    body = assert_ok(server.invoke("tiny_mlp", text.encode()))
    want = reference_outputs("tiny_mlp", {"x": [values]})["y"]
    assert np.allclose(np.array(body["outputs"]), want, rtol=1e-5, atol=1e-5)


def test_float_outputs_are_finite_numbers_with_full_precision(server):
    rows = tiny_rows(4, offset=0.123)
    body = assert_ok(server.invoke("tiny_mlp", {"inputs": rows}))
    got = np.array(body["outputs"], dtype=np.float64)
    want = reference_outputs("tiny_mlp", {"x": rows})["y"].astype(np.float64)
    # float32 printed with fewer than ~7 significant digits would fail this
    assert np.allclose(got, want, rtol=2e-6, atol=1e-6), (got, want)


def test_cnn_four_dimensional_input(server):
    rng = np.random.default_rng(7)
    images = np.round(rng.standard_normal((2, 3, 64, 64)), 3).astype(np.float32)
    body = assert_ok(server.invoke("cnn", {"inputs": images.tolist()}))
    assert shape_of(body["outputs"]) == [2, 10]
    want = reference_outputs("cnn", {"image": images.tolist()})["logits"]
    assert np.allclose(np.array(body["outputs"]), want, rtol=1e-3, atol=1e-3)
