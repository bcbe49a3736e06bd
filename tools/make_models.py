#!/usr/bin/python3
"""Build pilotlight's example and synthetic ONNX models, deterministically.

Usage:
    /usr/bin/python3 tools/make_models.py --out build/models [--only NAME ...] [--force]

Needs only Debian packages: python3-onnx (1.12), python3-numpy, python3-sklearn.
Every model is written with ir_version 8 and the default-domain opset 17, is checked
with onnx.checker, and is run once through a small numpy interpreter of its own graph
(``_run_graph`` below) so that exported constants and shapes are known to be right.
Seeds are fixed per model, so ``--only`` produces the same bytes as a full build.

Idempotent: when every requested output exists and ``<out>/.stamp`` holds the sha256 of
this script, it prints ``models: up to date`` and exits 0 without importing onnx.
When the stamp matches but files are missing, only the models owning them are rebuilt.
The stamp is written after a full build (or after a partial build when the stamp
already matched), never after a failure. ``--force`` rebuilds regardless.
Writes are atomic (``<file>.tmp`` then ``os.replace``).

``N`` below is the dynamic batch dimension (``dim_param "N"``); it is the first dimension
of every input and every output of every model.

Models (file: inputs -> outputs)
--------------------------------
digits.onnx  (real classifier, trained here; seed 20240501 for split and training)
    input          ``input``          float32 [N,64]  raw 8x8 pixel values, 0..16, row-major
    output         ``probabilities``  float32 [N,10]  softmax over the 10 digit classes
    graph: x = (input - mean) / std   (per-pixel train-set mean/std as constants,
           std clamped to >= 1); h = tanh(x @ W1 + b1) (64->32);
           probabilities = Softmax(h @ W2 + b2, axis=1) (32->10).
    Trained on sklearn.datasets.load_digits() (1797 samples) with a fixed-seed
    permutation: first 80 % (1437) train, last 20 % (360) held out.
    Adam (lr 0.01), full batch, 800 steps, L2 1e-3.
    The held-out accuracy is printed (expected about 0.97; asserted >= 0.93 here).
digits_test.json
    {"inputs": [[64 ints 0..16], ...], "labels": [int 0..9, ...]}   the 360 held-out
    samples, in the same order; send ``inputs`` as-is to the digits model.

tiny_mlp.onnx  (seed 1, a few KB)
    input  ``x`` float32 [N,16]  ->  output ``y`` float32 [N,4]
    y = Gemm(Relu(Gemm(x, W1[16,32], b1)), W2[32,4], b2)

mlp_10mb.onnx  (seed 2, ~10.5 MB, 2,631,946 parameters)
    input  ``x`` float32 [N,512]  ->  output ``y`` float32 [N,10]
    512 -> 2048 Relu -> 768 Relu -> 10 (Gemm layers, He-scaled normal weights)

cnn.onnx  (seed 3, ResNet-like, ~0.3 MB)
    input  ``image`` float32 [N,3,64,64]  ->  output ``logits`` float32 [N,10]
    stem:    Conv3x3(3->16, pad 1) + Relu                                    [N,16,64,64]
    block 1: Relu(x + Conv3x3(16->16)(Relu(Conv3x3(16->16)(x))))             [N,16,64,64]
    block 2: Relu(Conv1x1/s2(16->32)(x)
                  + Conv3x3(32->32)(Relu(Conv3x3/s2(16->32)(x))))            [N,32,32,32]
    block 3: same as block 2 with 32->64                                     [N,64,16,16]
    head:    GlobalAveragePool -> Flatten -> Gemm(64->10)                    [N,10]
    No BatchNorm; convs have biases; He-initialised weights keep outputs finite.

big_100mb.onnx  (seed 4, ~100.8 MB, 25,194,496 float32 weights, no biases)
    input  ``x`` float32 [N,256]  ->  output ``y`` float32 [N,16]
    y = Relu(Relu(Relu(x @ W1[256,4096]) @ W2[4096,4096]) @ W3[4096,1792]) @ W4[1792,16]
    (MatMul layers, He-scaled normal weights.)

multi_input.onnx  (no random weights)
    inputs  ``features`` float32 [N,4], ``ids`` int64 [N,2]
    outputs ``score``    float32 [N,1], ``ids_sum`` int64 [N,1]
    score[i]   = 1*features[i,0] + 2*features[i,1] + 3*features[i,2] + 4*features[i,3]
                 + float(ids[i,0]) + float(ids[i,1])
    ids_sum[i] = ids[i,0] + ids[i,1]
    e.g. features [[1,1,1,1]], ids [[2,3]] -> score [[15.0]], ids_sum [[5]]

all_dtypes.onnx  (identity-ish, one input/output pair per boundary dtype, all [N,2])
    f32  float32 -> f32_out float32 = f32 * 2
    f64  float64 -> f64_out float64 = f64 * 2
    i32  int32   -> i32_out int32   = i32 + 1
    i64  int64   -> i64_out int64   = i64 + 1
    b    bool    -> b_out   bool    = Not(b)
    u8   uint8   -> u8_out  uint8   = u8        (Identity)
    i8   int8    -> i8_out  int8    = i8        (Identity)
"""

import argparse
import hashlib
import json
import os
import sys
import time

SCRIPT_PATH = os.path.abspath(__file__)
STAMP_NAME = ".stamp"

IR_VERSION = 8
OPSET = 17
BATCH = "N"

# model name -> files it writes (relative to --out)
OUTPUTS = {
    "digits": ["digits.onnx", "digits_test.json"],
    "tiny_mlp": ["tiny_mlp.onnx"],
    "mlp_10mb": ["mlp_10mb.onnx"],
    "cnn": ["cnn.onnx"],
    "big_100mb": ["big_100mb.onnx"],
    "multi_input": ["multi_input.onnx"],
    "all_dtypes": ["all_dtypes.onnx"],
}

DIGITS_SEED = 20240501
DIGITS_MIN_ACCURACY = 0.93


def script_sha256():
    h = hashlib.sha256()
    with open(SCRIPT_PATH, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def read_stamp(out_dir):
    try:
        with open(os.path.join(out_dir, STAMP_NAME), "r", encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def human_size(n):
    if n >= 1000 * 1000:
        return "%.1f MB" % (n / 1e6)
    if n >= 1000:
        return "%.1f kB" % (n / 1e3)
    return "%d B" % n


# --------------------------------------------------------------------------------------
# Everything below needs numpy/onnx; they are imported in main() only when work is due.
# --------------------------------------------------------------------------------------
np = None
onnx = None
helper = None
numpy_helper = None
TensorProto = None


def _import_heavy():
    global np, onnx, helper, numpy_helper, TensorProto
    import numpy
    import onnx as onnx_mod
    from onnx import TensorProto as TP
    from onnx import helper as h
    from onnx import numpy_helper as nh

    np, onnx, helper, numpy_helper, TensorProto = numpy, onnx_mod, h, nh, TP


def _vi(name, elem_type, dims):
    """Value info with the dynamic batch dim first."""
    return helper.make_tensor_value_info(name, elem_type, [BATCH] + list(dims))


def _init(name, array):
    return numpy_helper.from_array(np.ascontiguousarray(array), name=name)


def _make_model(graph_name, nodes, inputs, outputs, initializers, doc):
    graph = helper.make_graph(nodes, graph_name, inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="pilotlight-make_models",
        producer_version="1",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    return model


def _he(rng, fan_in, shape, gain=1.0):
    w = rng.standard_normal(shape, dtype=np.float32)
    w *= np.float32(gain * np.sqrt(2.0 / fan_in))
    return w


# --------------------------------------------------------------------------------------
# A tiny numpy interpreter for the ops these graphs use (verification only).
# --------------------------------------------------------------------------------------
def _np_dtype(elem_type):
    # onnx 1.12 has no helper.tensor_dtype_to_np_dtype; onnx.mapping is its spelling there.
    from onnx import mapping
    return np.dtype(mapping.TENSOR_TYPE_TO_NP_TYPE[elem_type])


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b, strides, pads):
    n, c, _, _ = x.shape
    m, _, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    win = win[:, :, :: strides[0], :: strides[1]]  # [n, c, oh, ow, kh, kw]
    y = np.einsum("ncijkl,mckl->nmij", win, w, optimize=True)
    if b is not None:
        y = y + b[None, :, None, None]
    return y.astype(x.dtype, copy=False)


def _run_graph(model, feeds):
    env = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    env.update(feeds)
    for node in model.graph.node:
        a = _attrs(node)
        xs = [env[n] if n else None for n in node.input]
        op = node.op_type
        if op == "Add":
            y = xs[0] + xs[1]
        elif op == "Sub":
            y = xs[0] - xs[1]
        elif op == "Mul":
            y = xs[0] * xs[1]
        elif op == "Div":
            y = xs[0] / xs[1]
        elif op == "MatMul":
            y = xs[0] @ xs[1]
        elif op == "Gemm":
            p = xs[0].T if a.get("transA", 0) else xs[0]
            q = xs[1].T if a.get("transB", 0) else xs[1]
            y = a.get("alpha", 1.0) * (p @ q)
            if len(xs) > 2 and xs[2] is not None:
                y = y + a.get("beta", 1.0) * xs[2]
            y = y.astype(np.float32)
        elif op == "Relu":
            y = np.maximum(xs[0], 0)
        elif op == "Tanh":
            y = np.tanh(xs[0])
        elif op == "Softmax":
            ax = a.get("axis", -1)
            e = np.exp(xs[0] - xs[0].max(axis=ax, keepdims=True))
            y = e / e.sum(axis=ax, keepdims=True)
        elif op == "Conv":
            y = _conv(xs[0], xs[1], xs[2] if len(xs) > 2 else None,
                      a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0]))
        elif op == "GlobalAveragePool":
            y = xs[0].mean(axis=(2, 3), keepdims=True)
        elif op == "Flatten":
            ax = a.get("axis", 1)
            y = xs[0].reshape(int(np.prod(xs[0].shape[:ax])), -1)
        elif op == "Cast":
            y = xs[0].astype(_np_dtype(a["to"]))
        elif op == "ReduceSum":
            y = xs[0].sum(axis=tuple(int(v) for v in xs[1]), keepdims=bool(a.get("keepdims", 1)),
                          dtype=xs[0].dtype)
        elif op == "Not":
            y = np.logical_not(xs[0])
        elif op == "Identity":
            y = xs[0].copy()
        else:
            raise NotImplementedError(op)
        env[node.output[0]] = np.asarray(y)
    return {o.name: env[o.name] for o in model.graph.output}


def _check_outputs(model, feeds, batch):
    """Run the graph in numpy; check declared dtypes, shapes and finiteness."""
    outs = _run_graph(model, feeds)
    for o in model.graph.output:
        t = o.type.tensor_type
        want_dtype = _np_dtype(t.elem_type)
        want_shape = tuple(batch if d.dim_param else d.dim_value for d in t.shape.dim)
        got = outs[o.name]
        assert got.dtype == want_dtype, (o.name, got.dtype, want_dtype)
        assert got.shape == want_shape, (o.name, got.shape, want_shape)
        if got.dtype.kind == "f":
            assert np.all(np.isfinite(got)), o.name
    return outs


def _save_model(model, path, check_by_path=False):
    """Check, then write atomically. Returns the file size."""
    if not check_by_path:
        onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    del data
    if check_by_path:
        onnx.checker.check_model(tmp)  # full_check on a path would rewrite the file
    os.replace(tmp, path)
    return os.path.getsize(path)


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------
def build_digits(out_dir):
    from sklearn.datasets import load_digits

    ds = load_digits()
    X = ds.data.astype(np.float64)  # [1797, 64], integers 0..16
    y = ds.target.astype(np.int64)
    rng = np.random.default_rng(DIGITS_SEED)
    perm = rng.permutation(len(X))
    n_train = int(len(X) * 0.8)
    tr, te = perm[:n_train], perm[n_train:]
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]

    mean = Xtr.mean(axis=0)
    std = np.maximum(Xtr.std(axis=0), 1.0)
    Ztr = (Xtr - mean) / std

    # 64 -> 32 tanh -> 10 softmax, full-batch Adam with a little L2 (cross-entropy loss).
    hidden, classes = 32, 10
    W1 = rng.standard_normal((64, hidden)) * np.sqrt(1.0 / 64)
    b1 = np.zeros(hidden)
    W2 = rng.standard_normal((hidden, classes)) * np.sqrt(1.0 / hidden)
    b2 = np.zeros(classes)
    params = [W1, b1, W2, b2]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, beta1, beta2, eps, l2 = 0.01, 0.9, 0.999, 1e-8, 1e-3
    Y = np.eye(classes)[ytr]
    for step in range(1, 801):
        H = np.tanh(Ztr @ W1 + b1)
        logits = H @ W2 + b2
        logits -= logits.max(axis=1, keepdims=True)
        P = np.exp(logits)
        P /= P.sum(axis=1, keepdims=True)
        G = (P - Y) / len(Ztr)
        gW2 = H.T @ G + l2 * W2
        gb2 = G.sum(axis=0)
        GH = (G @ W2.T) * (1.0 - H * H)
        gW1 = Ztr.T @ GH + l2 * W1
        gb1 = GH.sum(axis=0)
        for i, g in enumerate([gW1, gb1, gW2, gb2]):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            mh = m[i] / (1 - beta1 ** step)
            vh = v[i] / (1 - beta2 ** step)
            params[i] -= lr * mh / (np.sqrt(vh) + eps)

    f32 = np.float32
    c_mean, c_std = mean.astype(f32), std.astype(f32)
    cW1, cb1, cW2, cb2 = (p.astype(f32) for p in params)

    # Held-out accuracy straight from the (float32) weights.
    Xte32 = Xte.astype(f32)
    Hte = np.tanh(((Xte32 - c_mean) / c_std) @ cW1 + cb1)
    acc = float(np.mean(np.argmax(Hte @ cW2 + cb2, axis=1) == yte))

    nodes = [
        helper.make_node("Sub", ["input", "pixel_mean"], ["centered"]),
        helper.make_node("Div", ["centered", "pixel_std"], ["normalized"]),
        helper.make_node("Gemm", ["normalized", "W1", "b1"], ["fc1"]),
        helper.make_node("Tanh", ["fc1"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "W2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    inits = [_init("pixel_mean", c_mean), _init("pixel_std", c_std),
             _init("W1", cW1), _init("b1", cb1), _init("W2", cW2), _init("b2", cb2)]
    model = _make_model(
        "digits", nodes,
        [_vi("input", TensorProto.FLOAT, [64])],
        [_vi("probabilities", TensorProto.FLOAT, [10])],
        inits,
        "8x8 handwritten digits (sklearn load_digits). input: raw pixels 0..16, "
        "float32 [N,64]; output: class probabilities float32 [N,10].",
    )

    # Re-run the exported graph in numpy to be sure the constants match.
    probs = _check_outputs(model, {"input": Xte32}, len(Xte32))["probabilities"]
    acc_graph = float(np.mean(np.argmax(probs, axis=1) == yte))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    if acc_graph != acc:
        raise SystemExit("digits: graph accuracy %.4f != weight accuracy %.4f" % (acc_graph, acc))
    if acc < DIGITS_MIN_ACCURACY:
        raise SystemExit("digits: held-out accuracy %.4f < %.2f" % (acc, DIGITS_MIN_ACCURACY))

    size = _save_model(model, os.path.join(out_dir, "digits.onnx"))

    test = {
        "inputs": [[int(round(v)) for v in row] for row in Xte],
        "labels": [int(t) for t in yte],
    }
    assert all(0 <= v <= 16 for row in test["inputs"] for v in row)
    json_path = os.path.join(out_dir, "digits_test.json")
    write_atomic(json_path, (json.dumps(test, separators=(",", ":")) + "\n").encode("ascii"))

    return [
        ("digits.onnx", size,
         "held-out accuracy %.4f (%d/%d; graph re-run %.4f; trained on %d)"
         % (acc, int(round(acc * len(yte))), len(yte), acc_graph, len(ytr))),
        ("digits_test.json", os.path.getsize(json_path), "%d held-out samples" % len(yte)),
    ]


def _gemm_mlp(name, seed, sizes, in_name, out_name, doc):
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = in_name
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        w = _he(rng, a, (a, b))
        bias = (rng.standard_normal(b, dtype=np.float32) * np.float32(0.01))
        inits += [_init("W%d" % (i + 1), w), _init("b%d" % (i + 1), bias)]
        fc = out_name if last else "fc%d" % (i + 1)
        nodes.append(helper.make_node("Gemm", [cur, "W%d" % (i + 1), "b%d" % (i + 1)], [fc]))
        if not last:
            nodes.append(helper.make_node("Relu", [fc], ["relu%d" % (i + 1)]))
            cur = "relu%d" % (i + 1)
    model = _make_model(name, nodes,
                        [_vi(in_name, TensorProto.FLOAT, [sizes[0]])],
                        [_vi(out_name, TensorProto.FLOAT, [sizes[-1]])],
                        inits, doc)
    x = np.random.default_rng(seed + 1000).standard_normal((3, sizes[0]), dtype=np.float32)
    _check_outputs(model, {in_name: x}, 3)
    return model


def build_tiny_mlp(out_dir):
    model = _gemm_mlp("tiny_mlp", 1, [16, 32, 4], "x", "y",
                      "tiny MLP: x float32 [N,16] -> Gemm 16x32, Relu, Gemm 32x4 -> y float32 [N,4]")
    size = _save_model(model, os.path.join(out_dir, "tiny_mlp.onnx"))
    return [("tiny_mlp.onnx", size, "")]


def build_mlp_10mb(out_dir):
    sizes = [512, 2048, 768, 10]
    model = _gemm_mlp("mlp_10mb", 2, sizes, "x", "y",
                      "MLP: x float32 [N,512] -> 2048 Relu -> 768 Relu -> y float32 [N,10]")
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    size = _save_model(model, os.path.join(out_dir, "mlp_10mb.onnx"))
    return [("mlp_10mb.onnx", size, "%d parameters" % n_params)]


def build_cnn(out_dir):
    rng = np.random.default_rng(3)
    nodes, inits = [], []
    counter = [0]

    def conv(x, cin, cout, k, stride, gain=1.0):
        counter[0] += 1
        i = counter[0]
        w = _he(rng, cin * k * k, (cout, cin, k, k), gain)
        b = np.zeros(cout, dtype=np.float32)
        inits.extend([_init("conv%d_w" % i, w), _init("conv%d_b" % i, b)])
        out = "conv%d" % i
        p = k // 2
        nodes.append(helper.make_node("Conv", [x, "conv%d_w" % i, "conv%d_b" % i], [out],
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[p, p, p, p]))
        return out

    def relu(x):
        out = x + "_relu"
        nodes.append(helper.make_node("Relu", [x], [out]))
        return out

    def add(a, b, name):
        nodes.append(helper.make_node("Add", [a, b], [name]))
        return name

    def block(x, cin, cout, stride, name):
        h = relu(conv(x, cin, cout, 3, stride))
        h = conv(h, cout, cout, 3, 1, gain=0.5)
        skip = x if (cin == cout and stride == 1) else conv(x, cin, cout, 1, stride)
        return relu(add(skip, h, name))

    x = relu(conv("image", 3, 16, 3, 1))
    x = block(x, 16, 16, 1, "block1")
    x = block(x, 16, 32, 2, "block2")
    x = block(x, 32, 64, 2, "block3")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    inits += [_init("fc_w", _he(rng, 64, (64, 10))),
              _init("fc_b", np.zeros(10, dtype=np.float32))]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]))

    model = _make_model(
        "cnn", nodes,
        [_vi("image", TensorProto.FLOAT, [3, 64, 64])],
        [_vi("logits", TensorProto.FLOAT, [10])],
        inits,
        "ResNet-like CNN: image float32 [N,3,64,64] -> logits float32 [N,10]",
    )
    img = np.random.default_rng(1003).standard_normal((2, 3, 64, 64), dtype=np.float32)
    _check_outputs(model, {"image": img}, 2)
    n_params = sum(int(np.prod(i.dims)) for i in inits)
    size = _save_model(model, os.path.join(out_dir, "cnn.onnx"))
    return [("cnn.onnx", size, "%d parameters" % n_params)]


def build_big_100mb(out_dir):
    rng = np.random.default_rng(4)
    sizes = [256, 4096, 4096, 1792, 16]
    nodes, inits = [], []
    cur = "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        inits.append(_init("W%d" % (i + 1), _he(rng, a, (a, b))))
        mm = "y" if last else "mm%d" % (i + 1)
        nodes.append(helper.make_node("MatMul", [cur, "W%d" % (i + 1)], [mm]))
        if not last:
            nodes.append(helper.make_node("Relu", [mm], ["relu%d" % (i + 1)]))
            cur = "relu%d" % (i + 1)
    model = _make_model(
        "big_100mb", nodes,
        [_vi("x", TensorProto.FLOAT, [256])],
        [_vi("y", TensorProto.FLOAT, [16])],
        inits,
        "large MLP for load-time tests: x float32 [N,256] -> 4096 -> 4096 -> 1792 -> y float32 [N,16]",
    )
    x = np.random.default_rng(1004).standard_normal((2, 256), dtype=np.float32)
    _check_outputs(model, {"x": x}, 2)
    n_weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    size = _save_model(model, os.path.join(out_dir, "big_100mb.onnx"), check_by_path=True)
    return [("big_100mb.onnx", size, "%d weights" % n_weights)]


def build_multi_input(out_dir):
    axes = np.array([1], dtype=np.int64)
    inits = [_init("w", np.array([1, 2, 3, 4], dtype=np.float32)), _init("axes", axes)]
    nodes = [
        helper.make_node("Mul", ["features", "w"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axes"], ["feature_score"], keepdims=1),
        helper.make_node("Cast", ["ids"], ["ids_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids_float", "axes"], ["ids_float_sum"], keepdims=1),
        helper.make_node("Add", ["feature_score", "ids_float_sum"], ["score"]),
        helper.make_node("ReduceSum", ["ids", "axes"], ["ids_sum"], keepdims=1),
    ]
    model = _make_model(
        "multi_input", nodes,
        [_vi("features", TensorProto.FLOAT, [4]), _vi("ids", TensorProto.INT64, [2])],
        [_vi("score", TensorProto.FLOAT, [1]), _vi("ids_sum", TensorProto.INT64, [1])],
        inits,
        "score = features @ [1,2,3,4] + float(ids[:,0] + ids[:,1]) (float32 [N,1]); "
        "ids_sum = ids[:,0] + ids[:,1] (int64 [N,1])",
    )
    feats = np.array([[1, 1, 1, 1], [0.5, -1, 2, 0]], dtype=np.float32)
    ids = np.array([[2, 3], [-7, 100]], dtype=np.int64)
    out = _check_outputs(model, {"features": feats, "ids": ids}, 2)
    assert np.allclose(out["score"], [[15.0], [97.5]]), out["score"]
    assert out["ids_sum"].tolist() == [[5], [93]], out["ids_sum"]
    size = _save_model(model, os.path.join(out_dir, "multi_input.onnx"))
    return [("multi_input.onnx", size, "")]


def build_all_dtypes(out_dir):
    T = TensorProto
    inits = [
        _init("two_f32", np.array(2, dtype=np.float32)),
        _init("two_f64", np.array(2, dtype=np.float64)),
        _init("one_i32", np.array(1, dtype=np.int32)),
        _init("one_i64", np.array(1, dtype=np.int64)),
    ]
    nodes = [
        helper.make_node("Mul", ["f32", "two_f32"], ["f32_out"]),
        helper.make_node("Mul", ["f64", "two_f64"], ["f64_out"]),
        helper.make_node("Add", ["i32", "one_i32"], ["i32_out"]),
        helper.make_node("Add", ["i64", "one_i64"], ["i64_out"]),
        helper.make_node("Not", ["b"], ["b_out"]),
        helper.make_node("Identity", ["u8"], ["u8_out"]),
        helper.make_node("Identity", ["i8"], ["i8_out"]),
    ]
    specs = [("f32", T.FLOAT), ("f64", T.DOUBLE), ("i32", T.INT32), ("i64", T.INT64),
             ("b", T.BOOL), ("u8", T.UINT8), ("i8", T.INT8)]
    model = _make_model(
        "all_dtypes", nodes,
        [_vi(n, t, [2]) for n, t in specs],
        [_vi(n + "_out", t, [2]) for n, t in specs],
        inits,
        "f32_out=f32*2, f64_out=f64*2, i32_out=i32+1, i64_out=i64+1, b_out=Not(b), "
        "u8_out=u8, i8_out=i8; all [N,2]",
    )
    feeds = {
        "f32": np.array([[1.5, -2]], dtype=np.float32),
        "f64": np.array([[0.1, 1e300]], dtype=np.float64),
        "i32": np.array([[-1, 2147483646]], dtype=np.int32),
        "i64": np.array([[-1, 9007199254740993]], dtype=np.int64),
        "b": np.array([[True, False]]),
        "u8": np.array([[0, 255]], dtype=np.uint8),
        "i8": np.array([[-128, 127]], dtype=np.int8),
    }
    out = _check_outputs(model, feeds, 1)
    assert out["f32_out"].tolist() == [[3.0, -4.0]]
    assert out["f64_out"].tolist() == [[0.2, 2e300]]
    assert out["i32_out"].tolist() == [[0, 2147483647]]
    assert out["i64_out"].tolist() == [[0, 9007199254740994]]
    assert out["b_out"].tolist() == [[False, True]]
    assert out["u8_out"].tolist() == [[0, 255]]
    assert out["i8_out"].tolist() == [[-128, 127]]
    size = _save_model(model, os.path.join(out_dir, "all_dtypes.onnx"))
    return [("all_dtypes.onnx", size, "")]


BUILDERS = {
    "digits": build_digits,
    "tiny_mlp": build_tiny_mlp,
    "mlp_10mb": build_mlp_10mb,
    "cnn": build_cnn,
    "big_100mb": build_big_100mb,
    "multi_input": build_multi_input,
    "all_dtypes": build_all_dtypes,
}


def _normalize_name(name):
    base = os.path.basename(name)
    for suffix in (".onnx", "_test.json"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Build pilotlight's example and synthetic ONNX models (see the module "
                    "docstring for every model's inputs, outputs and formulas).")
    ap.add_argument("--out", required=True, help="output directory, e.g. build/models")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="build only these models: " + ", ".join(BUILDERS))
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args(argv)

    if args.only:
        names = []
        for n in args.only:
            key = _normalize_name(n)
            if key not in BUILDERS:
                ap.error("unknown model %r (choose from: %s)" % (n, ", ".join(BUILDERS)))
            if key not in names:
                names.append(key)
    else:
        names = list(BUILDERS)
    full = set(names) == set(BUILDERS)

    out_dir = args.out
    digest = script_sha256()
    stamp_ok = read_stamp(out_dir) == digest
    wanted = [os.path.join(out_dir, f) for n in names for f in OUTPUTS[n]]
    if not args.force and stamp_ok and all(os.path.isfile(p) for p in wanted):
        print("models: up to date")
        return 0

    if stamp_ok and not args.force:
        # Same script built the existing files: only make what is missing.
        names = [n for n in names
                 if not all(os.path.isfile(os.path.join(out_dir, f)) for f in OUTPUTS[n])]

    os.makedirs(out_dir, exist_ok=True)
    _import_heavy()

    t_all = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        rows = BUILDERS[name](out_dir)
        dt = time.monotonic() - t0
        for i, (fname, size, note) in enumerate(rows):
            extra = ("  " + note) if note else ""
            took = ("  (%.1fs)" % dt) if i == 0 else ""
            print("%-18s %10s  %11d bytes%s%s" % (fname, human_size(size), size, extra, took))
        sys.stdout.flush()

    if full or stamp_ok:
        write_atomic(os.path.join(out_dir, STAMP_NAME), (digest + "\n").encode("ascii"))
    print("models: built %d in %.1fs -> %s" % (len(names), time.monotonic() - t_all, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
