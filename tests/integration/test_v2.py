"""Open Inference Protocol v2 (KServe / Triton REST) — what a v2 client relies on.

Server and model metadata, health, inference with every datatype all_dtypes takes (JSON
"data" and the binary tensor extension, in both directions), output selection, "id" and
"parameters", the versions path, and v2 answers equal to /v1/functions/X/invoke for the same
input. Errors are {"error": "<message>"} (a string, the v2 shape). Reference:
/work/shared/reference/protocols.md (d).

all_dtypes (tools/make_models.py): one input/output pair per dtype, all [N, 2]:
f32*2, f64*2, i32+1, i64+1, Not(b), u8 (identity), i8 (identity).
"""

import json

import numpy as np
import pytest

import support
from support import assert_ok, tiny_rows

FUNCTIONS = {"idle_timeout": "600s", "min_instances": 1}
CONFIG = {
    "functions": {
        "tiny_mlp": dict(FUNCTIONS),
        "all_dtypes": dict(FUNCTIONS),
        "multi_input": dict(FUNCTIONS),
    },
}

# input name -> (v2 datatype, numpy dtype (little-endian), output name, reference function)
ALL_DTYPES = {
    "f32": ("FP32", "<f4", "f32_out", lambda a: a * np.float32(2)),
    "f64": ("FP64", "<f8", "f64_out", lambda a: a * 2.0),
    "i32": ("INT32", "<i4", "i32_out", lambda a: a + np.int32(1)),
    "i64": ("INT64", "<i8", "i64_out", lambda a: a + np.int64(1)),
    "b": ("BOOL", "|b1", "b_out", lambda a: np.logical_not(a)),
    "u8": ("UINT8", "|u1", "u8_out", lambda a: a.copy()),
    "i8": ("INT8", "|i1", "i8_out", lambda a: a.copy()),
}
OUT_DTYPE = {v[2]: (v[0], v[1]) for v in ALL_DTYPES.values()}

# Boundary values per input, two rows ([2, 2]): extremes that survive the model's arithmetic.
VALUES = {
    "f32": [[1.5, -2.25], [3.0e38 / 4, -1.0e-30]],
    "f64": [[1.0e300, -2.5], [5e-324, 0.1]],
    "i32": [[2147483646, -2147483648], [0, -1]],
    "i64": [[2 ** 62, -(2 ** 63)], [9007199254740993, -1]],
    "b": [[True, False], [False, True]],
    "u8": [[0, 255], [128, 1]],
    "i8": [[-128, 127], [0, -1]],
}


@pytest.fixture(scope="module")
def v2(shared_server):
    s = shared_server.get()
    s.warm_all()
    return s


def arrays():
    return {n: np.array(VALUES[n], dtype=np.dtype(ALL_DTYPES[n][1])) for n in ALL_DTYPES}


def expected_outputs(inputs):
    return {ALL_DTYPES[n][2]: ALL_DTYPES[n][3](a) for n, a in inputs.items()}


def json_input(name, arr, datatype=None):
    return {"name": name, "shape": list(arr.shape), "datatype": datatype or ALL_DTYPES[name][0],
            "data": arr.reshape(-1).tolist()}


def binary_request(json_part, blobs):
    """(body bytes, headers) for the binary tensor extension."""
    head = json.dumps(json_part, separators=(",", ":")).encode()
    body = head + b"".join(blobs)
    return body, {"Inference-Header-Content-Length": str(len(head)),
                  "Content-Type": "application/octet-stream"}


def parse_response(r):
    """(json document, {output name: bytes}) of a v2 response, binary or not."""
    assert r.status_code == 200, "expected 200, got %d: %r" % (r.status_code, r.content[:2000])
    hl = r.headers.get("Inference-Header-Content-Length")
    if hl is None:
        assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
        return r.json(), {}
    n = int(hl)
    assert 0 < n <= len(r.content), (hl, len(r.content))
    doc = json.loads(r.content[:n])
    tail = r.content[n:]
    blobs, pos = {}, 0
    for o in doc["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        assert "data" not in o, "a binary output also carries \"data\": %r" % o
        blobs[o["name"]] = tail[pos:pos + size]
        assert len(blobs[o["name"]]) == size, "binary tail too short for %s" % o["name"]
        pos += size
    assert pos == len(tail), "the response has %d unclaimed binary bytes" % (len(tail) - pos)
    return doc, blobs


def output_array(o, blobs):
    datatype, npdt = OUT_DTYPE.get(o["name"], ("FP32", "<f4"))
    assert o["datatype"] == datatype, o
    if o["name"] in blobs:
        raw = blobs[o["name"]]
        a = np.frombuffer(raw, dtype=np.dtype("|u1") if datatype == "BOOL" else np.dtype(npdt))
        if datatype == "BOOL":
            assert set(a.tolist()) <= {0, 1}, "BOOL bytes other than 0/1: %r" % raw
            a = a.astype(bool)
    else:
        data = o["data"]
        if datatype == "BOOL":
            assert all(isinstance(x, bool) for x in data), data
        a = np.array(data, dtype=np.dtype(npdt))
    return a.reshape(o["shape"])


def assert_outputs(doc, blobs, expected):
    got = {o["name"]: o for o in doc["outputs"]}
    assert set(got) == set(expected), "outputs %s, expected %s" % (sorted(got), sorted(expected))
    for name, want in expected.items():
        a = output_array(got[name], blobs)
        assert list(a.shape) == list(want.shape), (name, a.shape, want.shape)
        if want.dtype.kind == "f":
            np.testing.assert_array_equal(a, want.astype(a.dtype), err_msg=name)
        else:
            assert a.tolist() == want.tolist(), "%s: got %r, expected %r" % (name, a.tolist(), want.tolist())


def assert_v2_error(r, status, *needles):
    assert r.status_code == status, "expected %d, got %d: %s" % (status, r.status_code, r.text[:1000])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    doc = r.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"].strip(), (
        "a v2 error is {\"error\": \"message\"}, got %r" % doc)
    for n in needles:
        assert n in doc["error"], "error %r does not mention %r" % (doc["error"], n)
    return doc["error"]


# --------------------------------------------------------------------------------------
# Server and model metadata, health
# --------------------------------------------------------------------------------------
def test_server_metadata(v2):
    doc = assert_ok(v2.get("/v2"))
    assert isinstance(doc.get("name"), str) and doc["name"], doc
    assert isinstance(doc.get("version"), str) and doc["version"], doc
    assert "binary_tensor_data" in doc.get("extensions", []), doc


@pytest.mark.parametrize("path,key", [("/v2/health/live", "live"), ("/v2/health/ready", "ready")])
def test_server_health(v2, path, key):
    r = v2.get(path)
    doc = assert_ok(r, path)
    assert doc.get(key) is True, doc


def test_tiny_mlp_metadata(v2):
    doc = assert_ok(v2.get("/v2/models/tiny_mlp"))
    assert doc["name"] == "tiny_mlp", doc
    assert "1.0.0" in doc.get("versions", []), doc
    assert isinstance(doc.get("platform"), str) and doc["platform"], doc
    assert doc["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}], doc
    assert doc["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}], doc


def test_all_dtypes_metadata_lists_every_datatype(v2):
    doc = assert_ok(v2.get("/v2/models/all_dtypes"))
    inputs = {t["name"]: t for t in doc["inputs"]}
    outputs = {t["name"]: t for t in doc["outputs"]}
    assert set(inputs) == set(ALL_DTYPES), doc
    assert set(outputs) == {v[2] for v in ALL_DTYPES.values()}, doc
    for name, (datatype, _, out, _) in ALL_DTYPES.items():
        assert inputs[name]["datatype"] == datatype, inputs[name]
        assert inputs[name]["shape"] == [-1, 2], inputs[name]
        assert outputs[out]["datatype"] == datatype, outputs[out]
        assert outputs[out]["shape"] == [-1, 2], outputs[out]


def test_model_ready(v2):
    doc = assert_ok(v2.get("/v2/models/tiny_mlp/ready"))
    assert doc.get("name") == "tiny_mlp" and doc.get("ready") is True, doc


def test_versioned_metadata_and_ready(v2):
    doc = assert_ok(v2.get("/v2/models/tiny_mlp/versions/1.0.0"))
    assert doc["name"] == "tiny_mlp" and doc.get("versions") == ["1.0.0"], doc
    doc = assert_ok(v2.get("/v2/models/tiny_mlp/versions/1.0.0/ready"))
    assert doc.get("ready") is True, doc


@pytest.mark.parametrize("method,path", [
    ("GET", "/v2/models/no_such_model"),
    ("GET", "/v2/models/no_such_model/ready"),
    ("POST", "/v2/models/no_such_model/infer"),
    ("POST", "/v2/models/no_such_model/versions/1.0.0/infer"),
])
def test_unknown_model_is_404(v2, method, path):
    body = {"inputs": [json_input("f32", np.zeros((1, 2), "<f4"))]} if method == "POST" else None
    r = v2.request(method, path, json=body)
    assert_v2_error(r, 404, "no_such_model")


# --------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------
def test_infer_every_datatype_json(v2):
    ins = arrays()
    body = {"inputs": [json_input(n, a) for n, a in ins.items()]}
    r = v2.post("/v2/models/all_dtypes/infer", json=body)
    doc, blobs = parse_response(r)
    assert blobs == {}, "binary outputs nobody asked for"
    assert doc["model_name"] == "all_dtypes", doc
    assert doc.get("model_version") == "1.0.0", doc
    for o in doc["outputs"]:
        assert o["shape"] == [2, 2], o
        assert "data" in o and isinstance(o["data"], list) and len(o["data"]) == 4, (
            "JSON output data must be a flat array: %r" % o)
    assert_outputs(doc, blobs, expected_outputs(ins))


def test_infer_nested_json_data_is_accepted(v2):
    """"data" may be nested row-major arrays as well as flat."""
    ins = arrays()
    body = {"inputs": [dict(json_input(n, a), data=a.tolist()) for n, a in ins.items()]}
    doc, blobs = parse_response(v2.post("/v2/models/all_dtypes/infer", json=body))
    assert_outputs(doc, blobs, expected_outputs(ins))


def test_infer_every_datatype_binary_in_and_out(v2):
    ins = arrays()
    json_part = {"inputs": [], "parameters": {"binary_data_output": True}}
    blobs_out = []
    for n, a in ins.items():
        raw = a.astype(np.uint8).tobytes() if a.dtype == bool else a.tobytes()
        json_part["inputs"].append({"name": n, "shape": list(a.shape), "datatype": ALL_DTYPES[n][0],
                                    "parameters": {"binary_data_size": len(raw)}})
        blobs_out.append(raw)
    body, headers = binary_request(json_part, blobs_out)
    r = v2.post("/v2/models/all_dtypes/infer", data=body, headers=headers)
    doc, blobs = parse_response(r)
    assert r.headers.get("Inference-Header-Content-Length"), "binary_data_output without a binary response"
    assert r.headers.get("Content-Type", "").startswith("application/octet-stream"), r.headers
    assert set(blobs) == {v[2] for v in ALL_DTYPES.values()}, "not every output is binary: %r" % doc
    for o in doc["outputs"]:
        size = o["parameters"]["binary_data_size"]
        assert size == 4 * np.dtype(OUT_DTYPE[o["name"]][1]).itemsize, o
    assert_outputs(doc, blobs, expected_outputs(ins))


def test_binary_request_with_json_response(v2):
    """Binary inputs only: outputs stay JSON unless asked for."""
    ins = arrays()
    json_part = {"inputs": []}
    raws = []
    for n, a in ins.items():
        raw = a.astype(np.uint8).tobytes() if a.dtype == bool else a.tobytes()
        json_part["inputs"].append({"name": n, "shape": [2, 2], "datatype": ALL_DTYPES[n][0],
                                    "parameters": {"binary_data_size": len(raw)}})
        raws.append(raw)
    body, headers = binary_request(json_part, raws)
    r = v2.post("/v2/models/all_dtypes/infer", data=body, headers=headers)
    doc, blobs = parse_response(r)
    assert "Inference-Header-Content-Length" not in r.headers, r.headers
    assert blobs == {}
    assert_outputs(doc, blobs, expected_outputs(ins))


def test_mixed_binary_and_json_inputs_and_per_output_binary(v2):
    """Some inputs binary, some JSON; outputs[].parameters.binary_data overrides the default
    either way."""
    ins = arrays()
    json_part = {"inputs": [], "parameters": {"binary_data_output": True},
                 "outputs": [{"name": "f32_out", "parameters": {"binary_data": False}},
                             {"name": "i64_out"},
                             {"name": "b_out", "parameters": {"binary_data": True}}]}
    raws = []
    for i, (n, a) in enumerate(ins.items()):
        if i % 2:
            json_part["inputs"].append(json_input(n, a))
        else:
            raw = a.astype(np.uint8).tobytes() if a.dtype == bool else a.tobytes()
            json_part["inputs"].append({"name": n, "shape": [2, 2], "datatype": ALL_DTYPES[n][0],
                                        "parameters": {"binary_data_size": len(raw)}})
            raws.append(raw)
    body, headers = binary_request(json_part, raws)
    doc, blobs = parse_response(v2.post("/v2/models/all_dtypes/infer", data=body, headers=headers))
    assert [o["name"] for o in doc["outputs"]] == ["f32_out", "i64_out", "b_out"], doc
    assert set(blobs) == {"i64_out", "b_out"}, "binary outputs %s" % sorted(blobs)
    exp = expected_outputs(ins)
    assert_outputs(doc, blobs, {k: exp[k] for k in ("f32_out", "i64_out", "b_out")})


def test_output_selection_returns_only_the_requested_output(v2):
    ins = arrays()
    body = {"inputs": [json_input(n, a) for n, a in ins.items()], "outputs": [{"name": "i64_out"}]}
    doc, blobs = parse_response(v2.post("/v2/models/all_dtypes/infer", json=body))
    assert [o["name"] for o in doc["outputs"]] == ["i64_out"], doc
    assert_outputs(doc, blobs, {"i64_out": expected_outputs(ins)["i64_out"]})


def test_unknown_output_is_400(v2):
    ins = arrays()
    body = {"inputs": [json_input(n, a) for n, a in ins.items()],
            "outputs": [{"name": "i64_out"}, {"name": "no_such_output"}]}
    assert_v2_error(v2.post("/v2/models/all_dtypes/infer", json=body), 400, "no_such_output")


def test_id_is_echoed_and_parameters_accepted(v2):
    body = {"id": "req-42/α", "parameters": {"priority": 3, "tag": "x", "flag": True},
            "inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": tiny_rows(1)[0]}]}
    doc, _ = parse_response(v2.post("/v2/models/tiny_mlp/infer", json=body))
    assert doc.get("id") == "req-42/α", doc
    assert doc["outputs"][0]["name"] == "y" and doc["outputs"][0]["shape"] == [1, 4], doc
    # without an id, none comes back (or an empty one)
    body.pop("id")
    doc, _ = parse_response(v2.post("/v2/models/tiny_mlp/infer", json=body))
    assert not doc.get("id"), doc


def test_versions_path_current_version(v2):
    rows = tiny_rows(2)
    body = {"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": rows}]}
    a, _ = parse_response(v2.post("/v2/models/tiny_mlp/versions/1.0.0/infer", json=body))
    b, _ = parse_response(v2.post("/v2/models/tiny_mlp/infer", json=body))
    assert a["model_version"] == "1.0.0", a
    assert a["outputs"] == b["outputs"], (a, b)


def test_versions_path_other_version(v2):
    """2.0.0 is in the store but not current: the versions path serves it (same weights)."""
    rows = tiny_rows(2)
    body = {"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": rows}]}
    a, _ = parse_response(v2.post("/v2/models/tiny_mlp/versions/2.0.0/infer", json=body))
    b, _ = parse_response(v2.post("/v2/models/tiny_mlp/infer", json=body))
    assert a["model_version"] == "2.0.0", a
    assert b["model_version"] == "1.0.0", b
    np.testing.assert_allclose(a["outputs"][0]["data"], b["outputs"][0]["data"], rtol=1e-6)


@pytest.mark.parametrize("method,suffix", [("POST", "/infer"), ("GET", ""), ("GET", "/ready")])
def test_unknown_version_is_404(v2, method, suffix):
    body = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": tiny_rows(1)[0]}]}
    r = v2.request(method, "/v2/models/tiny_mlp/versions/9.9.9" + suffix,
                   json=body if method == "POST" else None)
    assert_v2_error(r, 404, "9.9.9")


def test_datatype_mismatch_is_400_naming_the_input(v2):
    ins = arrays()
    inputs = [json_input(n, a) for n, a in ins.items()]
    for i in inputs:
        if i["name"] == "i32":
            i["datatype"] = "INT64"
    msg = assert_v2_error(v2.post("/v2/models/all_dtypes/infer", json={"inputs": inputs}), 400, "i32")
    assert "INT32" in msg and "INT64" in msg, msg


def test_json_value_out_of_range_is_400_naming_the_input(v2):
    ins = arrays()
    inputs = [json_input(n, a) for n, a in ins.items()]
    for i in inputs:
        if i["name"] == "u8":
            i["data"] = [0, 256, 1, 2]
    assert_v2_error(v2.post("/v2/models/all_dtypes/infer", json={"inputs": inputs}), 400, "u8")


def test_missing_input_is_400(v2):
    ins = arrays()
    inputs = [json_input(n, a) for n, a in ins.items() if n != "i8"]
    assert_v2_error(v2.post("/v2/models/all_dtypes/infer", json={"inputs": inputs}), 400, "i8")


# --------------------------------------------------------------------------------------
# Same answers as /v1/functions/X/invoke
# --------------------------------------------------------------------------------------
def test_tiny_mlp_equals_v1_invoke(v2):
    rows = tiny_rows(3, offset=0.125)
    v1 = assert_ok(v2.invoke("tiny_mlp", {"inputs": rows}))
    body = {"inputs": [{"name": "x", "shape": [3, 16], "datatype": "FP32", "data": rows}]}
    doc, _ = parse_response(v2.post("/v2/models/tiny_mlp/infer", json=body))
    out = doc["outputs"][0]
    assert out["name"] == "y" and out["shape"] == [3, 4], out
    assert np.array(out["data"]).reshape(3, 4).tolist() == v1["outputs"], (out, v1)
    # and in binary
    raw = np.array(rows, dtype="<f4").tobytes()
    b, headers = binary_request({"inputs": [{"name": "x", "shape": [3, 16], "datatype": "FP32",
                                             "parameters": {"binary_data_size": len(raw)}}],
                                 "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}, [raw])
    doc, blobs = parse_response(v2.post("/v2/models/tiny_mlp/infer", data=b, headers=headers))
    got = np.frombuffer(blobs["y"], dtype="<f4").reshape(3, 4)
    np.testing.assert_array_equal(got, np.array(v1["outputs"], dtype="<f4"))


def test_all_dtypes_equals_v1_invoke(v2):
    ins = arrays()
    v1 = assert_ok(v2.invoke("all_dtypes", {"inputs": {n: a.tolist() for n, a in ins.items()}}))
    doc, blobs = parse_response(v2.post("/v2/models/all_dtypes/infer",
                                        json={"inputs": [json_input(n, a) for n, a in ins.items()]}))
    for o in doc["outputs"]:
        a = output_array(o, blobs)
        want = np.array(v1["outputs"][o["name"]], dtype=a.dtype)
        assert a.tolist() == want.tolist(), (o["name"], a.tolist(), v1["outputs"][o["name"]])


def test_multi_input_equals_v1_invoke(v2):
    feats = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]
    ids = [[3, 4], [2 ** 40, -7]]
    v1 = assert_ok(v2.invoke("multi_input", {"inputs": {"features": feats, "ids": ids}}))
    body = {"inputs": [{"name": "ids", "shape": [2, 2], "datatype": "INT64", "data": ids},
                       {"name": "features", "shape": [2, 4], "datatype": "FP32", "data": feats}]}
    doc, _ = parse_response(v2.post("/v2/models/multi_input/infer", json=body))
    got = {o["name"]: np.array(o["data"]).reshape(o["shape"]).tolist() for o in doc["outputs"]}
    assert got == v1["outputs"], (got, v1)
