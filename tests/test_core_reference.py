"""The engine against independent implementations of the same networks.

For the same flat weights and data, the engine's outputs (probabilities, values and raw
logits), summed loss and gradient equal those of the plain numpy reference in
``tests/reference.py`` and of PyTorch autograd. Tolerances, element-wise:
``|engine - reference| <= rtol * max(|reference|, 0.01 * max|reference|)`` with rtol 1e-10
in float64 and 1e-4 in float32 (the floor stops elements that cancel to almost zero from
needing an impossible relative accuracy). float32 results are compared
with the float64 reference computed from the same float32-rounded weights and data.
The MKL backend gives the same results as OpenBLAS.
"""

import numpy as np
import pytest

import reference as ref

import ann_core
from ann_core import ACTIVATIONS, LOSSES, Network

RTOL = {"float64": 1e-10, "float32": 1e-4}
N_IN = 17


def assert_close(actual, expected, dtype, what):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    rtol = RTOL[dtype]
    bound = rtol * np.maximum(np.abs(expected), 0.01 * np.abs(expected).max(initial=0.0))
    excess = np.abs(actual - expected) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.ndim else ()
    assert np.all(excess <= 0), (
        f"{what} ({dtype}): at {worst} engine {actual[worst]!r} vs reference "
        f"{expected[worst]!r}, difference {abs(actual[worst] - expected[worst]):.3g} "
        f"> bound {bound[worst]:.3g}")


def network_case(activation, loss, dtype, dense, n_rows=301, block_size=64, seed=0):
    """A two-hidden-layer network, weights, data and targets (labels or dense)."""
    layers = [("dense", 13), ("activation",) + activation, ("dense", 7),
              ("activation",) + activation, ("dense", 5), ("loss", loss)]
    net = Network(N_IN, layers, dtype=dtype, block_size=block_size)
    rng = np.random.default_rng(seed)
    w = rng.normal(scale=0.4, size=net.n_weights).astype(dtype)
    X = rng.normal(size=(n_rows, N_IN)).astype(dtype)
    if dense:
        y = (rng.normal(size=(n_rows, 5)) if loss == "squared_error"
             else rng.uniform(size=(n_rows, 5))).astype(dtype)
    else:
        y = rng.integers(0, 5, n_rows).astype(np.int64)
    return net, layers, w, X, y


ACTIVATION_SPECS = [(name,) for name in sorted(ACTIVATIONS)] + [("leaky_relu", 0.25)]
ACT_IDS = ["-".join(map(str, spec)) for spec in ACTIVATION_SPECS]


def engine_results(net, w, X, y):
    grad = np.zeros(net.n_weights, net.dtype)
    loss, n = net.loss_grad(w, X, y, grad)
    assert n == X.shape[0]
    return net.forward(w, X), net.forward(w, X, raw=True), loss, grad


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dense", [False, True], ids=["labels", "targets"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", ACTIVATION_SPECS, ids=ACT_IDS)
def test_matches_numpy_reference(activation, loss, dense, dtype):
    net, layers, w, X, y = network_case(activation, loss, dtype, dense)
    out, raw, loss_sum, grad = engine_results(net, w, X, y)
    assert out.dtype == raw.dtype == grad.dtype == np.dtype(dtype)
    assert_close(out, ref.forward(N_IN, layers, w, X), dtype, "forward")
    assert_close(raw, ref.forward(N_IN, layers, w, X, raw=True), dtype, "raw forward")
    ref_loss, ref_grad = ref.loss_grad(N_IN, layers, w, X, y)
    assert_close(loss_sum, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "gradient")


def test_deep_mixed_network_matches_reference():
    layers = [("dense", 13), ("activation", "softplus"), ("dense", 7), ("activation", "tanh"),
              ("dense", 13), ("activation", "relu"), ("dense", 7), ("activation", "sigmoid"),
              ("dense", 4), ("loss", "softmax_cross_entropy")]
    rng = np.random.default_rng(2)
    for dtype in ("float64", "float32"):
        net = Network(N_IN, layers, dtype=dtype, block_size=100)
        w = rng.normal(scale=0.5, size=net.n_weights).astype(dtype)
        X = rng.normal(size=(1000, N_IN)).astype(dtype)
        y = rng.integers(0, 4, 1000).astype(np.int64)
        out, raw, loss_sum, grad = engine_results(net, w, X, y)
        ref_loss, ref_grad = ref.loss_grad(N_IN, layers, w, X, y)
        assert_close(out, ref.forward(N_IN, layers, w, X), dtype, "forward")
        assert_close(loss_sum, ref_loss, dtype, "loss")
        assert_close(grad, ref_grad, dtype, "gradient")


def test_layout_is_w_then_b_per_dense_stage():
    net = Network(3, [("dense", 4), ("activation", "relu"), ("dense", 2),
                      ("loss", "squared_error")], dtype="float64")
    assert net.layout == [("dense0.W", 0, (3, 4)), ("dense0.b", 12, (4,)),
                          ("dense1.W", 16, (4, 2)), ("dense1.b", 24, (2,))]
    assert net.n_weights == 26 == ref.n_weights(3, [("dense", 4), ("dense", 2), ("loss", "x")])
    assert net.sizes == [3, 4, 2]
    # W is row-major (n_in, n_out): weight k of stage 0 links input k // 4 to unit k % 4.
    w = np.zeros(26)
    w[1 * 4 + 2] = 1.0  # input 1 -> unit 2
    w[16 + 2 * 2 + 1] = 1.0  # unit 2 -> output 1
    w[25] = 0.5  # bias of output 1
    out = net.forward(w, np.array([[0.0, 3.0, 0.0]]))
    np.testing.assert_array_equal(out, [[0.0, 3.5]])


# -------------------------------------------------------------------------------- PyTorch

def torch_results(layers, w, X, y, dtype, masks=None, sample_weight=None):
    """Outputs, logits, summed loss and flat gradient computed by PyTorch autograd; a
    dropout stage multiplies by its mask in ``masks`` (engine stage index -> multipliers);
    ``sample_weight`` weighs each row's loss in the sum."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tdtype = getattr(torch, dtype)
    stages, loss = ref.parse(X.shape[1], layers)
    flat = torch.tensor(w, dtype=tdtype, requires_grad=True)
    h = torch.tensor(X, dtype=tdtype)
    offset = 0
    for i, (n_in, n_out, act, alpha) in enumerate(stages):
        if act == "dropout":
            h = h * torch.tensor(masks[i], dtype=tdtype)
            continue
        W = flat[offset:offset + n_in * n_out].view(n_in, n_out)
        offset += n_in * n_out
        b = flat[offset:offset + n_out]
        offset += n_out
        h = h @ W + b
        h = ref.torch_activate(act, h, alpha)
    n_out = stages[-1][1]
    if y.ndim == 1:
        labels = torch.tensor(y)
        target = F.one_hot(labels, n_out).to(tdtype)
    else:
        labels = target = torch.tensor(y, dtype=tdtype)
    if loss == "softmax_cross_entropy":
        rows, out = F.cross_entropy(h, labels, reduction="none"), torch.softmax(h, dim=1)
    elif loss == "sigmoid_cross_entropy":
        rows = F.binary_cross_entropy_with_logits(h, target, reduction="none").sum(dim=1)
        out = torch.sigmoid(h)
    else:
        rows, out = 0.5 * ((h - target) ** 2).sum(dim=1), h
    value = (rows if sample_weight is None
             else rows * torch.tensor(sample_weight, dtype=tdtype)).sum()
    value.backward()
    return (out.detach().numpy(), h.detach().numpy(), float(value.detach()),
            flat.grad.numpy())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dense", [False, True], ids=["labels", "targets"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", ACTIVATION_SPECS, ids=ACT_IDS)
def test_matches_pytorch_autograd(activation, loss, dense, dtype):
    pytest.importorskip("torch")
    # PyTorch float32 carries its own rounding: compare with its float64 run, and check the
    # float32 run agrees with it to float32 accuracy too.
    net, layers, w, X, y = network_case(activation, loss, dtype, dense, seed=1)
    out, raw, loss_sum, grad = engine_results(net, w, X, y)
    y64 = y if y.ndim == 1 else y.astype(np.float64)
    t_out, t_raw, t_loss, t_grad = torch_results(layers, w.astype(np.float64),
                                                 X.astype(np.float64), y64, "float64")
    assert_close(out, t_out, dtype, "forward vs torch")
    assert_close(raw, t_raw, dtype, "raw forward vs torch")
    assert_close(loss_sum, t_loss, dtype, "loss vs torch")
    assert_close(grad, t_grad, dtype, "gradient vs torch")
    if dtype == "float32":
        t32 = torch_results(layers, w, X, y, "float32")
        assert_close(grad, t32[3], dtype, "gradient vs torch float32")
        assert_close(out, t32[0], dtype, "forward vs torch float32")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dense", [False, True], ids=["labels", "targets"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_weighted_loss_matches_pytorch(loss, dense, dtype, restore_blas):
    """Per-row weights: the engine's weighted loss sum and its gradient equal PyTorch's
    ``(per-row loss * weight).sum()`` and its autograd gradient, rows split among threads."""
    pytest.importorskip("torch")
    ann_core.set_blas_threads(2)
    net, layers, w, X, y = network_case(("tanh",), loss, dtype, dense, seed=3)
    sw = np.random.default_rng(3).choice([0.0, 0.5, 1.0, 3.0], size=len(X)).astype(dtype)
    grad = np.zeros(net.n_weights, dtype)
    loss_sum, n = net.loss_grad(w, X, y, grad, sample_weight=sw)
    assert n == len(X)
    y64 = y if y.ndim == 1 else y.astype(np.float64)
    _, _, t_loss, t_grad = torch_results(layers, w.astype(np.float64), X.astype(np.float64),
                                         y64, "float64", sample_weight=sw.astype(np.float64))
    assert_close(loss_sum, t_loss, dtype, "weighted loss vs torch")
    assert_close(grad, t_grad, dtype, "weighted gradient vs torch")


# ------------------------------------------------------------------------------------ MKL

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mkl_backend_gives_the_same_results(dtype, restore_blas):
    if ann_core.find_mkl() is None:
        pytest.skip("MKL (pip install mkl) is not installed")
    layers = [("dense", 64), ("activation", "sigmoid"), ("dense", 33), ("activation", "relu"),
              ("dense", 10), ("loss", "softmax_cross_entropy")]
    rng = np.random.default_rng(4)
    net = Network(N_IN, layers, dtype=dtype, block_size=96)
    w = rng.normal(scale=0.3, size=net.n_weights).astype(dtype)
    X = rng.normal(size=(500, N_IN)).astype(dtype)
    y = rng.integers(0, 10, 500).astype(np.int64)
    ann_core.set_backend("openblas")
    openblas = engine_results(net, w, X, y)
    assert ann_core.set_backend("mkl") == "mkl"
    assert ann_core.backend()["name"] == "mkl"
    mkl = engine_results(net, w, X, y)
    for name, a, b in zip(["forward", "raw forward", "loss", "gradient"], mkl, openblas):
        assert_close(a, b, dtype, f"MKL vs OpenBLAS {name}")
    ref_loss, ref_grad = ref.loss_grad(N_IN, layers, w, X, y)
    assert_close(mkl[3], ref_grad, dtype, "MKL gradient vs reference")


# -------------------------------------------------------------------------------- dropout

DROPOUT_LAYERS = [("dropout", 0.2), ("dense", 13), ("activation", "relu"), ("dropout", 0.5),
                  ("dense", 7), ("activation", "tanh"), ("dropout", 0.3), ("dense", 5),
                  ("loss", "softmax_cross_entropy")]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dropout_matches_numpy_and_pytorch_with_the_same_masks(dtype, threads, restore_blas):
    """Input and hidden dropout: the engine's loss, gradient and training-mode outputs equal
    those of the numpy reference and of PyTorch autograd given the masks the engine's stream
    documents, with rows split among blocks (and engine threads) that do not divide them."""
    ann_core.set_blas_threads(threads)
    rng = np.random.default_rng(5)
    net = Network(N_IN, DROPOUT_LAYERS, dtype=dtype, block_size=37)
    w = rng.normal(scale=0.4, size=net.n_weights).astype(dtype)
    X = rng.normal(size=(301, N_IN)).astype(dtype)
    y = rng.integers(0, 5, 301).astype(np.int64)
    key = (12345, 7, 3)
    masks = ref.engine_masks(N_IN, DROPOUT_LAYERS, key, len(X), dtype)
    grad = np.zeros(net.n_weights, dtype)
    loss_sum, _ = net.loss_grad(w, X, y, grad, key=key)
    ref_loss, ref_grad = ref.loss_grad(N_IN, DROPOUT_LAYERS, w, X, y, masks)
    assert_close(loss_sum, ref_loss, dtype, "dropout loss")
    assert_close(grad, ref_grad, dtype, "dropout gradient")
    raw = net.forward(w, X, raw=True, key=key)
    assert_close(raw, ref.forward(N_IN, DROPOUT_LAYERS, w, X, raw=True, masks=masks), dtype,
                 "dropout training forward")
    t_out, t_raw, t_loss, t_grad = torch_results(
        DROPOUT_LAYERS, w.astype(np.float64), X.astype(np.float64), y, "float64",
        {i: m.astype(np.float64) for i, m in masks.items()})
    assert_close(raw, t_raw, dtype, "dropout raw forward vs torch")
    assert_close(loss_sum, t_loss, dtype, "dropout loss vs torch")
    assert_close(grad, t_grad, dtype, "dropout gradient vs torch")
    # inference: dropout is the identity
    assert_close(net.forward(w, X), ref.forward(N_IN, DROPOUT_LAYERS, w, X), dtype,
                 "dropout inference forward")
