"""dtype="bfloat16": the conversion kernel, the mixed-precision gradient (against the same
computation in float64 on the rounded operands, against float32 and against PyTorch's bf16
autocast) and the float32 fallback.

Bound of the bf16-vs-float32 gradient difference: rounding to bfloat16 (8 significant bits,
round to nearest) changes an operand by a relative 2^-9 at most, so a GEMM whose two operands
are rounded is off by a relative 2^-8 at most where its terms do not cancel. A gradient of an
L-layer network passes through at most 2L such GEMMs (L forward, L - 1 deltas and the
gradient's own), whose first-order errors add: ||g_bf16 - g_f32|| <= 2L * 2^-8 ||g_f32||, 2.3%
for three layers (measured here: 1.2-1.3% on Fashion-MNIST with ReLU). PyTorch's autocast
rounds the same operands, so its gradient lies within the same bound of ours.
"""
import importlib
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import ann_core
from ann_core._network import _set_pack_min_rows, bfloat16_bits

# the module (ann_core.capabilities is also the name of its function, exported by ann_core)
caps = importlib.import_module("ann_core.capabilities")

NATIVE, WHY_NOT = caps.bf16_support()
needs_bf16 = pytest.mark.skipif(not NATIVE, reason=f"no native bfloat16 here: {WHY_NOT}")


def reference_bits(x):
    """Round to nearest even in numpy: the upper 16 bits after adding 0x7FFF + lowest kept."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, np.float32))
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def to_float(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def rounded(x):
    return to_float(bfloat16_bits(x)).astype(np.float64)


def test_conversion_rounds_to_nearest_even():
    one = np.float32(1.0).view(np.uint32)
    # 1 + half an ulp of bfloat16 is a tie: to even (1.0); just above rounds up; 1 + 1.5 ulp
    # is a tie between odd and even: up to the even one.
    x = np.array([one, one + 0x8000, one + 0x8001, one + 0x18000, one + 0x7FFF],
                 np.uint32).view(np.float32)
    np.testing.assert_array_equal(bfloat16_bits(x), [0x3F80, 0x3F80, 0x3F81, 0x3F82, 0x3F80])
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 3.4e38, 1e-40], np.float32)
    bits = bfloat16_bits(special)
    assert list(bits[:2]) == [0x7F80, 0xFF80] and np.isnan(to_float(bits[2:3]))[0]
    assert list(bits[3:5]) == [0x0000, 0x8000]
    assert bits[5] == 0x7F80    # past the largest bfloat16: rounds to infinity
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(scale=100.0, size=20011).astype(np.float32),
                        rng.integers(0, 2**32, 20011, dtype=np.uint32).view(np.float32)])
    np.testing.assert_array_equal(bfloat16_bits(x), reference_bits(x))


def _layers(sizes):
    body = []
    for n in sizes[1:-1]:
        body += [("dense", n), ("activation", "relu")]
    return body + [("dense", sizes[-1]), ("loss", "softmax_cross_entropy")]


def _problem(sizes, rows=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((rows, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], rows).astype(np.int64)
    parts = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        parts += [rng.uniform(-1, 1, a * b) * np.sqrt(6 / (a + b)), rng.normal(0, 0.1, b)]
    return X, y, np.concatenate(parts).astype(np.float32)


def _split(sizes, w):
    mats, offset = [], 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        mats.append((w[offset:offset + a * b].reshape(a, b), w[offset + a * b:offset + a * b + b]))
        offset += a * b + b
    return mats


def rounded_operand_gradient(sizes, w, X, y, block):
    """The mixed-precision gradient in float64: every GEMM operand rounded to bfloat16 as the
    engine rounds it, everything else exact."""
    mats = _split(sizes, w)
    grads = [np.zeros((a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    gbs = [np.zeros(b) for b in sizes[1:]]
    for r in range(0, len(X), block):
        acts = [X[r:r + block]]
        for i, (W, b) in enumerate(mats):
            z = rounded(acts[-1]) @ rounded(W) + b
            acts.append(np.maximum(z, 0).astype(np.float32) if i < len(mats) - 1 else z)
        z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        p[np.arange(len(p)), y[r:r + block]] -= 1
        delta = p.astype(np.float32)
        for i in range(len(mats) - 1, -1, -1):
            grads[i] += rounded(acts[i]).T @ rounded(delta)
            gbs[i] += delta.sum(axis=0)
            if i > 0:
                delta = ((rounded(delta) @ rounded(mats[i][0]).T) * (acts[i] > 0)).astype(
                    np.float32)
    return np.concatenate([np.concatenate([g.ravel(), gb]) for g, gb in zip(grads, gbs)])


@needs_bf16
# a layer of 3000 units: the fused element-wise passes run over several row slices per block,
# the last one short, in the forward and the backward pass
@pytest.mark.parametrize("sizes", [[40, 64, 32, 10], [30, 3000, 10]])
def test_bf16_gradient_is_float32_accumulation_of_rounded_operands(sizes):
    X, y, w = _problem(sizes)
    net = ann_core.Network(sizes[0], _layers(sizes), dtype="bfloat16", block_size=128)
    assert net.precision == "bfloat16" and net.dtype == np.float32
    grad = np.zeros_like(w)
    net.loss_grad(w, X, y, grad)
    ref = rounded_operand_gradient(sizes, w, X, y, 128)
    # float32 accumulation and float32 deltas: agreement to float32 rounding, far below the
    # bf16 error (2^-8), so every GEMM operand and only those were rounded
    assert np.linalg.norm(grad - ref) / np.linalg.norm(ref) < 2e-5


@pytest.fixture
def pack_rows():
    """_set_pack_min_rows for the test: the rows from which a call packs its bfloat16
    weights into oneDNN's layout (restored after)."""
    previous = _set_pack_min_rows(1)
    yield _set_pack_min_rows
    _set_pack_min_rows(previous)


@needs_bf16
@pytest.mark.parametrize("sizes", [[40, 64, 32, 10], [30, 3000, 10]])
def test_packed_weights_give_the_same_bits(sizes, pack_rows):
    # the same products on the same rounded operands, W only laid out as oneDNN reads it
    X, y, w = _problem(sizes)
    net = ann_core.Network(sizes[0], _layers(sizes), dtype="bfloat16", block_size=128)
    results = []
    for rows in (1, 2 ** 40):   # always packed, never packed
        pack_rows(rows)
        grad = np.zeros_like(w)
        loss = net.loss_grad(w, X, y, grad)
        results.append((loss, grad, net.forward(w, X)))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][2], results[1][2])


_PACK_SCRIPT = """
import sys
import numpy as np
import ann_core
from ann_core._network import _set_pack_min_rows
_set_pack_min_rows(int(sys.argv[1]))
net = ann_core.Network(30, [("dense", 64), ("activation", "relu"), ("dense", 10),
                            ("loss", "softmax_cross_entropy")], dtype="bfloat16", block_size=128)
rng = np.random.default_rng(0)
net.forward(rng.normal(0, 0.1, net.n_weights).astype(np.float32),
            rng.random((300, 30), dtype=np.float32))
"""


def _forward_weight_layouts(rows, folder):
    """The layouts of W in the forward products (those with a bias) of a forward call of
    300 rows that packs from `rows` rows on, as oneDNN's own log of its calls names them."""
    log = subprocess.run([sys.executable, "-c", _PACK_SCRIPT, str(rows)], cwd=folder,
                         env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True,
                         text=True, check=True).stdout
    return {m.group(1) for line in log.splitlines()
            if ",exec," in line and ",matmul," in line and "bia" in line
            for m in [re.search(r"wei[_:]bf16:[^:]*:blocked:([^:]+):", line)] if m}


@needs_bf16
def test_forward_products_read_the_packed_weights(tmp_path):
    plain = _forward_weight_layouts(2 ** 40, tmp_path)
    if not plain:
        pytest.skip("this oneDNN logs no matmul calls (ONEDNN_VERBOSE)")
    assert plain == {"ab"}   # W (n_in, n_out) as stored
    packed = _forward_weight_layouts(1, tmp_path)
    assert packed and "ab" not in packed


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@needs_bf16
@pytest.mark.parametrize("sizes", [[784, 256, 128, 10], [784, 1024, 1024, 10]])
def test_bf16_gradient_within_rounding_bound_of_float32_and_pytorch(sizes):
    torch = pytest.importorskip("torch")
    from sparkann.datasets import load_fashion_mnist
    try:   # real images: the bound assumes the terms of a product do not cancel much
        X, y = load_fashion_mnist(kind="train", dtype="float32")
    except (OSError, ValueError) as error:
        pytest.skip(f"needs Fashion-MNIST: {error}")
    X, y = np.ascontiguousarray(X[:512]), y[:512].astype(np.int64)
    w = _problem(sizes, rows=1, seed=1)[2]
    g32, gbf = np.zeros_like(w), np.zeros_like(w)
    ann_core.Network(784, _layers(sizes), "float32", 128).loss_grad(w, X, y, g32)
    ann_core.Network(784, _layers(sizes), "bfloat16", 128).loss_grad(w, X, y, gbf)
    bound = 2 * (len(sizes) - 1) * 2.0 ** -8
    error = _rel(gbf, g32)
    assert 2.0 ** -12 < error < bound   # rounded (not float32), within the bound

    mods = []
    for i, (W, b) in enumerate(_split(sizes, w)):
        lin = torch.nn.Linear(*W.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b.copy()))
        mods += [lin] + ([torch.nn.ReLU()] if i < len(sizes) - 2 else [])
    model = torch.nn.Sequential(*mods)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.from_numpy(X))
    torch.nn.functional.cross_entropy(out.float(), torch.from_numpy(y), reduction="sum").backward()
    g_torch = np.concatenate([t for lin in model if isinstance(lin, torch.nn.Linear)
                              for t in (lin.weight.grad.T.numpy().ravel(),
                                        lin.bias.grad.numpy())])
    assert _rel(gbf, g_torch) < bound
    assert _rel(g_torch, g32) < bound


def test_fallback_warns_once_and_computes_float32(monkeypatch):
    monkeypatch.setenv("SPARKANN_BF16", "off")
    monkeypatch.setattr(caps, "_warned", set())
    sizes = [20, 16, 3]
    X, y, w = _problem(sizes, rows=50)
    with pytest.warns(RuntimeWarning, match="computes in float32.*SPARKANN_BF16=off"):
        net = ann_core.Network(20, _layers(sizes), dtype="bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # once: a second network does not warn again
        again = ann_core.Network(20, _layers(sizes), dtype="bfloat16")
    assert net.precision == again.precision == "float32" and net.dtype == np.float32
    g, g32 = np.zeros_like(w), np.zeros_like(w)
    loss = net.loss_grad(w, X, y, g)
    loss32 = ann_core.Network(20, _layers(sizes), dtype="float32").loss_grad(w, X, y, g32)
    assert loss == loss32
    np.testing.assert_array_equal(g, g32)
    assert caps.capabilities()["bf16"] == {"native": False,
                                           "reason": "bfloat16 GEMMs are turned off "
                                                     "(SPARKANN_BF16=off)"}


def test_capabilities_report():
    report = ann_core.capabilities()
    assert set(report) == {"cpu", "blas", "onednn", "bf16"}
    assert set(report["cpu"]["features"]) <= set(caps.FEATURES)
    assert report["bf16"]["native"] == NATIVE
    if NATIVE:   # native bfloat16 needs the CPU flag that oneDNN's ISA says it runs
        assert {"avx512_bf16", "amx_bf16"} & set(report["cpu"]["features"])
        assert report["onednn"]["library"] and report["onednn"]["error"] is None
    else:
        assert report["bf16"]["reason"]


def test_bad_dtype_names_the_choices():
    with pytest.raises(ValueError, match="'float32', 'float64' or 'bfloat16'.*'bf8'"):
        ann_core.Network(4, [("dense", 2), ("loss", "squared_error")], dtype="bf8")


def _blobs(rows=400, features=12, classes=3, seed=5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2, (classes, features))
    y = rng.integers(0, classes, rows)
    return (centers[y] + rng.normal(0, 1, (rows, features))).astype(np.float32), y


def test_estimator_dtype_bfloat16():
    from sparkann import MLPClassifier
    X, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the fallback's, on CPUs without it
        clf = MLPClassifier(hidden_layer_sizes=(16,), activation="relu", solver="adam",
                            max_iter=30, random_state=0, dtype="bfloat16").fit(X, y)
        ref = MLPClassifier(hidden_layer_sizes=(16,), activation="relu", solver="adam",
                            max_iter=30, random_state=0, dtype="float32").fit(X, y)
    assert clf.weights_.dtype == np.float32
    assert clf._net().precision == ("bfloat16" if NATIVE else "float32")
    assert abs(clf.score(X, y) - ref.score(X, y)) < 0.05
    if NATIVE:   # trained with rounded operands: close to float32, not equal
        assert not np.array_equal(clf.weights_, ref.weights_)


def test_estimator_bad_dtype_names_the_choices():
    from sparkann import MLPClassifier
    with pytest.raises(ValueError, match="bfloat16"):
        MLPClassifier(dtype="float16").fit(*_blobs())


def test_spark_param_dtype_bfloat16(spark):
    from sparkann.spark import MultilayerPerceptronClassifier
    from sparkann.spark.data import dataframe_from_numpy
    X, y = _blobs()
    df = dataframe_from_numpy(spark, X.astype(np.float64), y, num_partitions=2)
    fits = {}
    for dtype in ("float32", "bfloat16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fits[dtype] = MultilayerPerceptronClassifier(
                layers=[12, 16, 3], activation="relu", maxIter=20, seed=3,
                dtype=dtype).fit(df)
    w32, wbf = (np.asarray(fits[d].weights.toArray()) for d in ("float32", "bfloat16"))
    assert fits["bfloat16"].getDtype() == "bfloat16"
    accuracy = {d: fits[d].evaluate(df).accuracy for d in fits}
    assert abs(accuracy["bfloat16"] - accuracy["float32"]) < 0.05
    assert np.linalg.norm(wbf - w32) / np.linalg.norm(w32) < 0.1
    if NATIVE:   # the executors computed with rounded operands
        assert not np.array_equal(wbf, w32)
