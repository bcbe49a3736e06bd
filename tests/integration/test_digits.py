"""The digits classifier through the HTTP API: every held-out row of digits_test.json, argmax
of the returned probabilities against the labels, accuracy >= 0.90 — batched in one request,
through /v1/batch one row per element, and through /v1/infer's default function."""

import numpy as np

from support import assert_ok, digits_test, reference_outputs, shape_of

MIN_ACCURACY = 0.90

CONFIG = {
    "default_function": "digits",
    "functions": {"digits": {"min_instances": 1, "max_instances": 2, "concurrency": 4,
                             "idle_timeout": "60s", "max_queue": 64, "queue_timeout": "10s"}},
}



def accuracy(probabilities, labels):
    p = np.asarray(probabilities, dtype=np.float64)
    assert p.shape == (len(labels), 10), p.shape
    return float(np.mean(np.argmax(p, axis=1) == np.asarray(labels)))


def test_accuracy_in_one_batched_request(server):
    rows, labels = digits_test()
    body = assert_ok(server.invoke("digits", {"inputs": rows}))
    assert body["model"] == "digits" and body["version"] == "1.0.0"
    acc = accuracy(body["outputs"], labels)
    assert acc >= MIN_ACCURACY, "held-out accuracy through HTTP %.4f < %.2f" % (acc, MIN_ACCURACY)
    # and the numbers are the model's: compare with the graph evaluated in numpy
    want = reference_outputs("digits", {"input": rows})["probabilities"]
    assert np.allclose(np.asarray(body["outputs"]), want, atol=1e-5)


def test_accuracy_through_batch_endpoint(server):
    rows, labels = digits_test()
    results = []
    for start in range(0, len(rows), 120):
        # one element per row, routed to the default function
        req = [{"inputs": [row]} for row in rows[start:start + 120]]
        part = assert_ok(server.post("/v1/batch", json=req))
        assert isinstance(part, list) and len(part) == len(req)
        results.extend(part)
    probs = []
    for i, res in enumerate(results):
        assert "error" not in res, "batch element %d: %r" % (i, res)
        assert shape_of(res["outputs"]) == [1, 10], res
        probs.append(res["outputs"][0])
    acc = accuracy(probs, labels)
    assert acc >= MIN_ACCURACY, "held-out accuracy through /v1/batch %.4f" % acc


def test_accuracy_through_infer_in_chunks(server):
    rows, labels = digits_test()
    probs = []
    for start in range(0, len(rows), 50):
        body = assert_ok(server.infer({"inputs": rows[start:start + 50]}))
        assert body["model"] == "digits"
        probs.extend(body["outputs"])
    acc = accuracy(probs, labels)
    assert acc >= MIN_ACCURACY, "held-out accuracy through /v1/infer %.4f" % acc
