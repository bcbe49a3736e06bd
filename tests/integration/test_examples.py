"""examples/onnx_handler: the C++ Lambda handler that loads an ONNX model once per instance,
served as a process function — the same answers as the in-process onnx function, typed errors
for bad input and for a model that cannot load."""
import os
from pathlib import Path

import pytest

from support import MODELS_DIR, digits_rows

EXAMPLES = Path(os.environ.get("PILOTLIGHT_EXAMPLES",
                               Path(__file__).resolve().parents[2] / "build" / "asan" / "examples"))
HANDLER = EXAMPLES / "onnx_handler"


@pytest.fixture(scope="module")
def handler_bin():
    if not HANDLER.is_file():
        pytest.fail("%s is missing: build the project (cmake --build --preset asan) or set PILOTLIGHT_EXAMPLES"
                    % HANDLER, pytrace=False)
    return HANDLER


def config(handler_bin, handler="digits.onnx"):
    return {"functions": {
        "digits": {},
        "digits_cpp": {"runtime": "process", "command": [str(handler_bin)], "handler": handler,
                       "cwd": str(MODELS_DIR), "timeout": "10s"},
    }}


def test_cpp_handler_answers_like_the_in_process_function(start_server, handler_bin):
    srv = start_server(config=config(handler_bin))
    rows = digits_rows(8)
    native = srv.session.post(srv.url + "/v1/functions/digits/invoke", json={"inputs": rows}, timeout=60)
    assert native.status_code == 200, native.text
    for path in ("/v1/functions/digits_cpp/invoke", "/2015-03-31/functions/digits_cpp/invocations"):
        r = srv.session.post(srv.url + path, json={"inputs": rows}, timeout=60)
        assert r.status_code == 200, r.text
        got, want = r.json()["outputs"], native.json()["outputs"]
        assert len(got) == len(want) == 8
        for g, w in zip(got, want):
            assert g == pytest.approx(w, rel=1e-5, abs=1e-6)
    # The model is loaded once per instance: both calls above were served by one worker.
    srv.wait_log_record(lambda rec: "onnx_handler: loaded" in str(rec.get("line", "")), what="the handler's init line")
    loaded = [rec for rec in srv.log_records() if "onnx_handler: loaded" in str(rec.get("line", ""))]
    assert len(loaded) == 1, loaded


def test_cpp_handler_bad_input_is_a_function_error_and_the_worker_keeps_serving(start_server, handler_bin):
    srv = start_server(config=config(handler_bin))
    r = srv.session.post(srv.url + "/2015-03-31/functions/digits_cpp/invocations", json={"inputs": [[1, 2]]},
                         timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers.get("X-Amz-Function-Error") == "Unhandled"
    assert r.json() == {"errorType": "InvalidInput", "errorMessage": "rows must have 64 values"}
    r = srv.session.post(srv.url + "/v1/functions/digits_cpp/invoke", json={"inputs": digits_rows(1)}, timeout=60)
    assert r.status_code == 200, r.text


def test_cpp_handler_that_cannot_load_its_model_reports_an_init_error(start_server, handler_bin):
    srv = start_server(config=config(handler_bin, handler="missing.onnx"))
    r = srv.session.post(srv.url + "/v1/functions/digits_cpp/invoke", json={"inputs": digits_rows(1)}, timeout=60)
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["type"] == "function_crashed"
    assert "Runtime.InitError" in err["message"] and "missing.onnx" in err["message"], err
    # the server still serves everything else
    assert srv.session.post(srv.url + "/v1/functions/digits/invoke", json={"inputs": digits_rows(1)},
                            timeout=60).status_code == 200
