"""Finite-difference checks of the engine's gradients, in float64.

Every activation and every loss, with class-index labels and dense targets, in topologies of
1 to 4 hidden layers with odd widths, for batch sizes 1, 3, 128 and 1000 computed in blocks
that do not divide them, and with layers written in Python mixed among native stages.

The check: central differences ``(L(w + h e_i) - L(w - h e_i)) / 2h`` of the summed loss on a
sample of weight indices that always includes some of every layer's ``W`` and ``b``. Each
index must satisfy ``|fd - grad| <= 1e-6 * max(|fd|, |grad|, floor)`` where ``floor`` is 1e-3
times the largest sampled gradient magnitude: a component of almost zero cannot have a
meaningful relative error. With ReLU-like activations, an index whose +-h step moves any
pre-activation across 0 is skipped (the loss has a kink there), and the test asserts that
most indices were still checked.
"""
import numpy as np
import pytest
import reference as ref
from gradcheck import central_differences, sign_flip

from ann_core import ACTIVATIONS, LOSSES, Network

TOLERANCE = 1e-6
STEP = 1e-5
KINKED = ("relu", "leaky_relu")


def make_targets(rng, loss, n, n_out, dense):
    """Class indices, or dense targets suited to the loss (rows not summing to 1 on purpose)."""
    if not dense:
        return rng.integers(0, n_out, n).astype(np.int64)
    if loss == "softmax_cross_entropy":
        return rng.uniform(0.0, 1.0, (n, n_out))
    if loss == "sigmoid_cross_entropy":
        return rng.uniform(0.0, 1.0, (n, n_out))
    return rng.normal(size=(n, n_out))


def sample_indices(net, rng, per_w, per_b):
    """Indices into the flat weights: up to per_w of every W and per_b of every b."""
    chosen = []
    for name, offset, shape in net.layout:
        size = int(np.prod(shape))
        k = per_b if name.endswith(".b") else per_w
        chosen.extend(offset + rng.choice(size, size=min(k, size), replace=False))
    return np.array(sorted(chosen))


def finite_difference_check(net, w, X, y, indices, kink=None, key=None, sample_weight=None):
    """Assert the engine's gradient matches central differences at `indices`; returns #checked.
    A dropout network draws its masks from ``key``: fixed, so every evaluation uses one mask.
    ``sample_weight``: the rows' weights of the loss (the weighted sum is checked)."""
    grad = np.zeros(net.n_weights)
    net.loss_grad(w, X, y, grad, key=key, sample_weight=sample_weight)
    scratch = np.zeros(net.n_weights)
    estimates = central_differences(
        lambda v: net.loss_grad(v, X, y, scratch, key=key, sample_weight=sample_weight)[0], w,
        indices, STEP, kink)
    fd = np.array(list(estimates.values()))
    analytic = grad[list(estimates)]
    floor = 1e-3 * max(np.abs(analytic).max(initial=0.0), 1e-12)
    scale = np.maximum(np.maximum(np.abs(fd), np.abs(analytic)), floor)
    rel = np.abs(fd - analytic) / scale
    worst = int(np.argmax(rel)) if rel.size else 0
    assert rel.size == 0 or rel.max() < TOLERANCE, (
        f"relative error {rel.max():.3g} at sampled index {list(estimates)[worst]}: "
        f"finite difference {fd[worst]!r}, engine {analytic[worst]!r}")
    return rel.size


def check_network(n_in, layers, n_rows, block_size, dense, seed, per_w=6, per_b=3):
    rng = np.random.default_rng(seed)
    net = Network(n_in, layers, dtype="float64", block_size=block_size)
    w = rng.normal(scale=0.6, size=net.n_weights)
    X = rng.normal(size=(n_rows, n_in))
    y = make_targets(rng, layers[-1][1], n_rows, net.n_out, dense)
    indices = sample_indices(net, rng, per_w, per_b)
    kinked = any(spec[0] == "activation" and spec[1] in KINKED for spec in layers)
    kink = sign_flip(lambda v: ref.pre_activations(n_in, layers, v, X), w, STEP) if kinked else None
    checked = finite_difference_check(net, w, X, y, indices, kink)
    assert checked >= 0.5 * len(indices), f"only {checked} of {len(indices)} indices off kinks"


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dense", [False, True], ids=["labels", "targets"])
def test_every_activation_and_loss(activation, loss, dense):
    layers = [("dense", 7), ("activation", activation), ("dense", 13),
              ("activation", activation), ("dense", 5), ("loss", loss)]
    check_network(4, layers, n_rows=9, block_size=4, dense=dense, seed=11, per_w=40, per_b=13)


def test_leaky_relu_slope_is_used():
    layers = [("dense", 7), ("activation", "leaky_relu", 0.3), ("dense", 3),
              ("loss", "squared_error")]
    check_network(5, layers, n_rows=20, block_size=6, dense=True, seed=3, per_w=40, per_b=7)


HIDDEN = {1: [7], 2: [13, 7], 3: [7, 13, 7], 4: [13, 7, 13, 7]}
CYCLE = ["sigmoid", "tanh", "relu", "softplus", ("leaky_relu", 0.2), "identity"]


def topology(depth, loss, start):
    """`depth` hidden layers of odd widths, activations taken in turn from CYCLE."""
    layers = []
    for k, width in enumerate(HIDDEN[depth]):
        act = CYCLE[(start + k) % len(CYCLE)]
        layers += [("dense", width), ("activation",) + (act if isinstance(act, tuple) else (act,))]
    return layers + [("dense", 3), ("loss", loss)]


@pytest.mark.parametrize("n_rows,block_size", [(1, 2), (3, 2), (128, 37), (1000, 37)])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_topologies_and_batch_sizes(depth, n_rows, block_size):
    # Rotate losses and activations over the grid so each appears at every depth.
    loss = sorted(LOSSES)[(depth + n_rows) % len(LOSSES)]
    layers = topology(depth, loss, start=depth + n_rows)
    check_network(6, layers, n_rows, block_size, dense=bool(n_rows % 2), seed=depth * n_rows)


# ------------------------------------------------------------------- layers written in Python

class ScaledTanh:
    """y = a * tanh(x) with one parameter a."""

    n_params = 1

    def __init__(self, width):
        self.n_out = width

    def forward(self, params, x, out):
        np.multiply(params[0], np.tanh(x), out=out)

    def backward(self, params, x, out, d_out, d_in, grad):
        t = np.tanh(x)
        grad[0] += np.sum(d_out * t)
        if d_in is not None:
            d_in[...] = d_out * params[0] * (1 - t * t)


class NumpyDense:
    """y = x @ W + b, parameters W (n_in, n_out) then b."""

    def __init__(self, n_in, n_out):
        self.n_in, self.n_out = n_in, n_out
        self.n_params = n_in * n_out + n_out

    def split(self, params):
        k = self.n_in * self.n_out
        return params[:k].reshape(self.n_in, self.n_out), params[k:]

    def forward(self, params, x, out):
        W, b = self.split(params)
        np.matmul(x, W, out=out)
        out += b

    def backward(self, params, x, out, d_out, d_in, grad):
        W, _ = self.split(params)
        gW, gb = self.split(grad)
        gW += x.T @ d_out
        gb += d_out.sum(axis=0)
        if d_in is not None:
            np.matmul(d_out, W.T, out=d_in)


PYTHON_TOPOLOGIES = {
    "python-middle": (4, [("dense", 7), ("activation", "sigmoid"), ("python", ScaledTanh(7)),
                          ("python", NumpyDense(7, 13)), ("activation", "tanh"), ("dense", 5),
                          ("loss", "softmax_cross_entropy")]),
    "python-first": (6, [("python", NumpyDense(6, 7)), ("activation", "softplus"),
                         ("dense", 5), ("python", ScaledTanh(5)), ("dense", 3),
                         ("loss", "squared_error")]),
    "python-last": (5, [("dense", 13), ("activation", "tanh"), ("python", NumpyDense(13, 4)),
                        ("python", ScaledTanh(4)), ("loss", "sigmoid_cross_entropy")]),
}


@pytest.mark.parametrize("name", sorted(PYTHON_TOPOLOGIES))
@pytest.mark.parametrize("n_rows,block_size", [(3, 2), (128, 37)])
def test_python_layers_among_native_stages(name, n_rows, block_size):
    n_in, layers = PYTHON_TOPOLOGIES[name]
    rng = np.random.default_rng(n_rows)
    net = Network(n_in, layers, dtype="float64", block_size=block_size)
    w = rng.normal(scale=0.6, size=net.n_weights)
    X = rng.normal(size=(n_rows, n_in))
    y = rng.integers(0, net.n_out, n_rows).astype(np.int64)
    indices = sample_indices(net, rng, per_w=25, per_b=6)
    assert finite_difference_check(net, w, X, y, indices) == len(indices)


def test_python_layers_match_their_native_twins():
    """A network whose dense stages are NumpyDense computes exactly what the native one does."""
    rng = np.random.default_rng(5)
    native = Network(6, [("dense", 7), ("activation", "tanh"), ("dense", 3),
                         ("loss", "softmax_cross_entropy")], dtype="float64", block_size=10)
    python = Network(6, [("python", NumpyDense(6, 7)), ("activation", "tanh"),
                         ("python", NumpyDense(7, 3)), ("loss", "softmax_cross_entropy")],
                     dtype="float64", block_size=10)
    assert python.n_weights == native.n_weights
    w = rng.normal(size=native.n_weights)
    X = rng.normal(size=(25, 6))
    y = rng.integers(0, 3, 25).astype(np.int64)
    g_native, g_python = np.zeros(native.n_weights), np.zeros(native.n_weights)
    l_native = native.loss_grad(w, X, y, g_native)[0]
    l_python = python.loss_grad(w, X, y, g_python)[0]
    np.testing.assert_allclose(l_python, l_native, rtol=1e-12)
    np.testing.assert_allclose(g_python, g_native, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(python.forward(w, X), native.forward(w, X), rtol=1e-12)


def test_gradient_accumulates_and_zero_clears():
    """loss_grad adds into grad; zero=True clears it first; blocks sum to the whole batch."""
    rng = np.random.default_rng(8)
    layers = [("dense", 7), ("activation", "sigmoid"), ("dense", 3), ("loss", "squared_error")]
    net = Network(5, layers, dtype="float64", block_size=4)
    w = rng.normal(size=net.n_weights)
    X = rng.normal(size=(11, 5))
    y = rng.normal(size=(11, 3))
    whole = np.zeros(net.n_weights)
    loss, n = net.loss_grad(w, X, y, whole)
    assert n == 11
    parts = np.zeros(net.n_weights)
    first = net.loss_grad(w, X[:6].copy(), y[:6].copy(), parts)[0]
    second = net.loss_grad(w, X[6:].copy(), y[6:].copy(), parts)[0]
    np.testing.assert_allclose(first + second, loss, rtol=1e-13)
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-14)
    again = np.full(net.n_weights, 123.0)
    net.loss_grad(w, X, y, again, zero=True)
    np.testing.assert_allclose(again, whole, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------------------- dropout

DROPOUT_TOPOLOGY = [("dropout", 0.2), ("dense", 7), ("activation", "relu"), ("dropout", 0.5),
                    ("dense", 13), ("activation", "sigmoid"), ("dropout", 0.3), ("dense", 3)]


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("n_rows,block_size", [(3, 2), (128, 37)])
def test_dropout_with_its_mask_fixed(loss, n_rows, block_size):
    """Input and hidden dropout, the mask fixed by the key: the gradient is that of the
    network with those units removed, so finite differences agree as for any layer."""
    layers = DROPOUT_TOPOLOGY + [("loss", loss)]
    rng = np.random.default_rng(n_rows)
    net = Network(6, layers, dtype="float64", block_size=block_size)
    w = rng.normal(scale=0.6, size=net.n_weights)
    X = rng.normal(size=(n_rows, 6))
    y = make_targets(rng, loss, n_rows, net.n_out, dense=loss == "squared_error")
    key = (2026, n_rows, 1)
    masks = ref.engine_masks(6, layers, key, n_rows)
    assert any((m == 0).any() for m in masks.values())   # some units are dropped
    indices = sample_indices(net, rng, per_w=25, per_b=6)
    kink = sign_flip(lambda v: ref.pre_activations(6, layers, v, X, masks), w, STEP)
    checked = finite_difference_check(net, w, X, y, indices, kink, key=key)
    assert checked >= 0.5 * len(indices), f"only {checked} of {len(indices)} indices off kinks"


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("dense", [False, True], ids=["labels", "targets"])
@pytest.mark.parametrize("n_rows,block_size", [(9, 4), (70, 32)])
def test_weighted_losses(loss, dense, n_rows, block_size):
    """Per-row weights (zeros, fractions, integers above 1) multiply each row's loss: the
    gradient of the weighted sum agrees with finite differences, with and without dropout."""
    for layers in ([("dense", 7), ("activation", "tanh"), ("dense", 5), ("loss", loss)],
                   [("dropout", 0.3), ("dense", 7), ("activation", "sigmoid"), ("dropout", 0.4),
                    ("dense", 5), ("loss", loss)]):
        rng = np.random.default_rng(n_rows + block_size)
        net = Network(4, layers, dtype="float64", block_size=block_size)
        w = rng.normal(scale=0.6, size=net.n_weights)
        X = rng.normal(size=(n_rows, 4))
        y = make_targets(rng, loss, n_rows, net.n_out, dense)
        sw = rng.choice([0.0, 0.25, 1.0, 2.0, 3.5], size=n_rows)
        indices = sample_indices(net, rng, per_w=30, per_b=10)
        key = (7, 1, 2) if net.stochastic else None
        checked = finite_difference_check(net, w, X, y, indices, key=key, sample_weight=sw)
        assert checked == len(indices)
