"""The store as the server sees it: a model whose bytes do not match the manifest's sha256 is
never loaded (503 model_integrity when nothing verified can be served; the previous good
version keeps serving otherwise), and promote/rollback take effect at the next cold start."""

import numpy as np
import pytest

from support import (assert_error, assert_ok, assert_still_serving, cli_output, digits_rows,
                     push_model, run_cli, tiny_rows)


def corrupt(path):
    """Flip one byte in the middle: same size, still parses as ONNX, sha256 differs."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("min_instances", [0, 1])
def test_corrupt_model_is_refused_with_503_model_integrity(start_server, store_copy, min_instances):
    corrupt(store_copy.version_dir("digits", "1.0.0") / "model.onnx")
    server = start_server({"functions": {"digits": {"min_instances": min_instances},
                                         "tiny_mlp": {"idle_timeout": "60s"}}},
                          store=store_copy.uri)
    for _ in range(2):
        r = server.invoke("digits", {"inputs": digits_rows(1)})
        err = assert_error(r, 503, "model_integrity")
        msg = err["message"].lower()
        assert any(w in msg for w in ("sha256", "checksum", "digest", "integrity")), err
        assert_still_serving(server)
    h = server.health()
    assert h["status"] == "ok"
    assert h["functions"]["digits"]["state"] != "warm", h
    assert h["functions"]["digits"]["instances"] == 0, h


def test_corrupt_new_version_keeps_serving_the_previous_one(start_server, store_copy,
                                                           models_dir):
    server = start_server({"functions": {"digits": {"min_instances": 0, "idle_timeout": "0s"}}},
                          store=store_copy.uri)
    rows = digits_rows(2)
    first = assert_ok(server.invoke("digits", {"inputs": rows}))
    assert first["version"] == "1.0.0"

    push_model(store_copy.uri, models_dir / "digits.onnx", "digits", "2.0.0", promote=True)
    corrupt(store_copy.version_dir("digits", "2.0.0") / "model.onnx")
    server.wait_cold("digits")

    for _ in range(3):
        r = server.invoke("digits", {"inputs": rows})
        body = assert_ok(r, "after a corrupt version was promoted:")
        assert body["version"] == "1.0.0", "served %r, not the previous good version" % body
        assert np.allclose(np.array(body["outputs"]), np.array(first["outputs"]), atol=1e-6)
        server.wait_cold("digits")


def test_promote_and_rollback_take_effect_at_next_cold_start(start_server, store_copy):
    server = start_server({"functions": {"tiny_mlp": {"min_instances": 0, "idle_timeout": "0s"}}},
                          store=store_copy.uri)
    req = {"inputs": tiny_rows(1)}
    assert assert_ok(server.invoke("tiny_mlp", req))["version"] == "1.0.0"

    p = run_cli("model", "promote", "tiny_mlp", "2.0.0", "--store", store_copy.uri)
    assert p.returncode == 0, cli_output(p)
    server.wait_cold("tiny_mlp")
    r = server.invoke("tiny_mlp", req)
    assert assert_ok(r)["version"] == "2.0.0"
    assert r.headers.get("X-Cold-Start") == "true"

    p = run_cli("model", "rollback", "tiny_mlp", "--store", store_copy.uri)
    assert p.returncode == 0, cli_output(p)
    server.wait_cold("tiny_mlp")
    assert assert_ok(server.invoke("tiny_mlp", req))["version"] == "1.0.0"
