"""The element-wise kernels, seen through tiny networks.

A network ``1 -> dense(1) -> activation`` with ``W = 1, b = 0`` outputs the activation of its
input exactly, so activations are compared with numpy/scipy one value per row. Accuracy is
relative, against float64 references of the same (rounded) inputs; values whose true result
is below the smallest normal number must come out as exactly 0 (flush to zero).
"""
import math
import os

import numpy as np
import pytest
from scipy.special import expit, log_expit

import reference as ref

import ann_core
from ann_core._blas import gemm
from ann_core import Network

# Measured worst cases are about 9 ulp (float32 tanh near |x| = 0.07) and 8 ulp (float64).
RELATIVE = {"float32": 2e-6, "float64": 4e-15}
REFERENCE = {name: (lambda v, name=name: ref.activate(name, v)) for name in ref.ACTIVATIONS}


def activation_of(name, values, dtype):
    """The engine's activation `name` of each value, through a 1-input, 1-unit network."""
    net = Network(1, [("dense", 1), ("activation", name), ("loss", "squared_error")],
                  dtype=dtype, block_size=64)
    X = np.ascontiguousarray(np.asarray(values, dtype).reshape(-1, 1))
    return net.forward(np.array([1.0, 0.0], dtype), X)[:, 0]


def subnormal_count(a):
    a = np.abs(np.asarray(a))
    return int(np.count_nonzero((a > 0) & (a < np.finfo(a.dtype).tiny)))


def assert_accurate(got, expected, dtype, what):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    tiny = np.finfo(dtype).tiny
    normal = np.abs(expected) >= tiny
    # Results that would be subnormal are flushed: exactly zero, or (rounding at the edge) tiny.
    assert np.all((got[~normal] == 0) | (np.abs(got[~normal]) <= tiny)), what
    rel = np.abs(got[normal] - expected[normal]) / np.abs(expected[normal])
    worst = int(np.argmax(rel)) if rel.size else 0
    assert rel.size == 0 or rel.max() <= RELATIVE[dtype], (
        f"{what} ({dtype}): relative error {rel.max():.3g} > {RELATIVE[dtype]} "
        f"at {expected[normal][worst]!r}, engine {got[normal][worst]!r}")


SWEEP = np.concatenate([-np.logspace(-10, np.log10(300), 1500), [0.0],
                        np.logspace(-10, np.log10(300), 1500)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_activation_accuracy_over_a_wide_range(name, dtype):
    x = SWEEP.astype(dtype)
    assert_accurate(activation_of(name, x, dtype), REFERENCE[name](x.astype(np.float64)),
                    dtype, name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturation_and_tiny_inputs(dtype):
    x = np.array([-100.0, 100.0, 1e-8, -1e-8, 0.0])
    sig = activation_of("sigmoid", x, dtype)
    tanh = activation_of("tanh", x, dtype)
    assert sig[1] == 1.0 and tanh[1] == 1.0 and tanh[0] == -1.0
    assert sig[4] == 0.5 and tanh[4] == 0.0
    # sigmoid(-100) = 3.7e-44: a normal float64, a subnormal float32 (flushed to 0).
    if dtype == "float64":
        assert math.isclose(sig[0], math.exp(-100) / (1 + math.exp(-100)), rel_tol=1e-14)
    else:
        assert sig[0] == 0.0
    # Near 0: tanh(x) = x (1 - x^2/3), sigmoid(x) = 1/2 + x/4; no cancellation allowed.
    for i, v in ((2, 1e-8), (3, -1e-8)):
        v = float(np.asarray(v, dtype))
        assert math.isclose(tanh[i], math.tanh(v), rel_tol=RELATIVE[dtype])
        assert math.isclose(sig[i], 1 / (1 + math.exp(-v)), rel_tol=RELATIVE[dtype])


def test_float32_exp_accuracy_over_its_range():
    """sigmoid(-|x|) = e / (1 + e) with e = exp(-|x|): the float32 exp kernel, ~1 ulp."""
    x = -np.linspace(0.0, 87.0, 20001).astype(np.float32)
    got = activation_of("sigmoid", x, "float32").astype(np.float64)
    e = np.exp(x.astype(np.float64))
    rel = np.abs(got - e / (1 + e)) / (e / (1 + e))
    assert rel.max() < 4 * np.finfo(np.float32).eps, rel.max()
    # and through softmax: p = softmax([x, 0]) with the same exp
    net = Network(1, [("dense", 2), ("loss", "softmax_cross_entropy")], dtype="float32",
                  block_size=1000)
    p = net.forward(np.array([1, 0, 0, 0], np.float32), x[:, None].copy()).astype(np.float64)
    rel = np.abs(p[:, 0] - e / (1 + e)) / (e / (1 + e))
    assert rel.max() < 4 * np.finfo(np.float32).eps, rel.max()


def identity_network(loss, dtype, n_out=3):
    """Logits equal the input rows: dense with W = I, b = 0."""
    net = Network(n_out, [("dense", n_out), ("loss", loss)], dtype=dtype, block_size=8)
    w = np.concatenate([np.eye(n_out).ravel(), np.zeros(n_out)]).astype(dtype)
    return net, w


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_is_stable_with_huge_logits(dtype):
    net, w = identity_network("softmax_cross_entropy", dtype)
    Z = np.array([[1e4, 1e4 - 1, -1e4], [-1e4, 1e4, 1e4], [1e4, 0.0, -1e4],
                  [-1e4, -1e4 + 2, -1e4 + 1]], dtype)
    labels = np.array([1, 0, 0, 2], np.int64)
    p = net.forward(w, Z)
    # The reference shifts by the row maximum first: z - logsumexp(z) would round at 1e4.
    shifted = Z.astype(np.float64) - Z.astype(np.float64).max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = np.exp(log_p)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=RELATIVE[dtype] * 3)
    assert_accurate(p, expected, dtype, "softmax")
    grad = np.zeros(net.n_weights, dtype)
    loss, _ = net.loss_grad(w, Z, labels, grad)
    expected_loss = -log_p[np.arange(4), labels].sum()
    # 2e4 from row 1 plus O(1) terms: the loss must be right to the dtype's precision.
    assert math.isclose(loss, expected_loss, rel_tol=RELATIVE[dtype]), (loss, expected_loss)
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_loss_of_large_close_logits_is_exact(dtype):
    """With logits 1e4 and 1e4 + 1, the loss is log(1 + e) even in float32."""
    net, w = identity_network("softmax_cross_entropy", dtype, n_out=2)
    Z = np.array([[1e4, 1e4 + 1]], dtype)
    loss, _ = net.loss_grad(w, Z, np.array([0], np.int64), np.zeros(net.n_weights, dtype))
    assert math.isclose(loss, math.log1p(math.e), rel_tol=RELATIVE[dtype]), loss
    T = np.array([[0.25, 0.5]], dtype)  # dense targets, not summing to 1
    loss, _ = net.loss_grad(w, Z, T, np.zeros(net.n_weights, dtype))
    log_p = np.array([-math.log1p(math.e), -math.log1p(math.exp(-1))])
    assert math.isclose(loss, -(0.25 * log_p[0] + 0.5 * log_p[1]), rel_tol=RELATIVE[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_cross_entropy_with_huge_logits(dtype):
    net, w = identity_network("sigmoid_cross_entropy", dtype)
    Z = np.array([[1e4, -1e4, 100.0], [-100.0, 30.0, -1e4]], dtype)
    T = np.array([[0.0, 1.0, 1.0], [1.0, 0.5, 0.0]], dtype)
    loss, _ = net.loss_grad(w, Z, T, np.zeros(net.n_weights, dtype))
    z64, t64 = Z.astype(np.float64), T.astype(np.float64)
    expected = -(t64 * log_expit(z64) + (1 - t64) * log_expit(-z64)).sum()
    assert math.isclose(loss, expected, rel_tol=RELATIVE[dtype]), (loss, expected)
    p = net.forward(w, Z)
    assert_accurate(p, expit(z64), dtype, "sigmoid output")


class Writes:
    """A Python layer (no parameters) whose output is given values, to feed NaN to a kernel."""

    n_params = 0

    def __init__(self, values):
        self.values = np.asarray(values, np.float64)
        self.n_out = self.values.size

    def forward(self, params, x, out):
        out[...] = self.values

    def backward(self, params, x, out, d_out, d_in, grad):
        if d_in is not None:
            d_in[...] = 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(ref.ACTIVATIONS))
def test_nan_propagates_through_activations(name, dtype):
    """NaN must never become a number: relu(NaN) = 0 would hide a diverged computation."""
    values = [np.nan, -1.0, 2.0, np.nan]
    net = Network(2, [("python", Writes(values)), ("activation", name),
                      ("loss", "squared_error")], dtype=dtype)
    X = np.zeros((3, 2), dtype)
    out = net.forward(np.zeros(0, dtype), X)
    assert np.isnan(out[:, [0, 3]]).all(), out
    assert np.isfinite(out[:, [1, 2]]).all(), out
    with pytest.raises(FloatingPointError, match="not finite"):
        net.loss_grad(np.zeros(0, dtype), X, np.zeros((3, 4), dtype), np.zeros(0, dtype))


def test_nan_from_overflow_is_not_hidden_by_relu():
    """inf - inf inside a GEMM gives NaN; relu must pass it on, loss_grad must refuse it."""
    net = Network(1, [("dense", 2), ("dense", 1), ("activation", "relu"),
                      ("loss", "squared_error")], dtype="float64")
    # hidden = x * [1e300, 1e300] overflows to [inf, inf] for x = 1e10; out = 2 h0 - h1.
    w = np.array([1e300, 1e300, 0.0, 0.0, 2.0, -1.0, 0.0])
    X = np.array([[1e10], [1e-300]])
    out = net.forward(w, X)
    assert np.isnan(out[0, 0]) and out[1, 0] == 1.0, out
    with pytest.raises(FloatingPointError):
        net.loss_grad(w, X, np.zeros((2, 1)), np.zeros(7))


def test_exp_of_very_negative_numbers_is_zero():
    """exp below the smallest normal number flushes to 0, not to a floor near it."""
    for dtype in ("float32", "float64"):
        x = -np.array([85.0, 87.0, 87.5, 88.0, 100.0, 700.0, 708.0, 708.5, 709.0, 800.0, 1e4])
        got = activation_of("sigmoid", x, dtype).astype(np.float64)
        expected = np.exp(x)  # sigmoid(x) = exp(x) to double precision here
        assert_accurate(got, expected, dtype, "exp")
        assert (got[expected < np.finfo(dtype).tiny] == 0).all(), got


def saturated_sigmoid_case(n_rows=600):
    rng = np.random.default_rng(0)
    net = Network(40, [("dense", 64), ("activation", "sigmoid"), ("dense", 64),
                       ("activation", "sigmoid"), ("dense", 10),
                       ("loss", "softmax_cross_entropy")], dtype="float32", block_size=128)
    w = (rng.normal(size=net.n_weights) * 8).astype(np.float32)
    X = (rng.normal(size=(n_rows, 40)) * 50).astype(np.float32)  # pre-activations ~ +-1e3
    return net, w, X, rng.integers(0, 10, n_rows).astype(np.int64)


def test_no_subnormal_outputs_after_saturating_sigmoids():
    net, w, X, labels = saturated_sigmoid_case()
    out = net.forward(w, X)
    # the case does saturate: probabilities and sigmoids of 0 or 1 appear
    assert (out == 0).mean() > 0.1
    assert subnormal_count(out) == 0
    assert subnormal_count(net.forward(w, X, raw=True)) == 0
    grad = np.zeros(net.n_weights, np.float32)
    net.loss_grad(w, X, labels, grad)
    assert subnormal_count(grad) == 0


def test_caller_floating_point_state_is_restored():
    """Flush-to-zero is for the engine's compute only: the caller still gets subnormals."""
    net, w, X, labels = saturated_sigmoid_case(50)
    net.loss_grad(w, X, labels, np.zeros(net.n_weights, np.float32))
    net.forward(w, X)
    smallest = np.finfo(np.float32).tiny
    assert np.float32(smallest) / np.float32(4) > 0
    assert np.finfo(np.float64).tiny / 4 > 0


def subnormal_logits(threads):
    """Raw outputs of a last layer with subnormal weights, big enough for threaded GEMM."""
    ann_core.set_blas_threads(threads)
    rng = np.random.default_rng(1)
    net = Network(64, [("dense", 256), ("activation", "sigmoid"), ("dense", 256),
                       ("loss", "squared_error")], dtype="float32", block_size=1024)
    w = rng.normal(size=net.n_weights).astype(np.float32)
    last = 64 * 256 + 256
    w[last:] = (rng.uniform(0.5, 1.0, net.n_weights - last) * 1e-41).astype(np.float32)
    X = rng.normal(size=(2048, 64)).astype(np.float32)
    return net.forward(w, X, raw=True)


def test_denormals_are_zero_in_single_threaded_gemm(restore_blas):
    ann_core.set_backend("openblas")
    assert subnormal_count(subnormal_logits(1)) == 0


@pytest.mark.parametrize("name", ["openblas", "mkl"])
def test_denormals_are_zero_in_blas_worker_threads(name, restore_blas):
    if name == "mkl" and ann_core.find_mkl() is None:
        pytest.skip("MKL is not installed")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: no BLAS worker threads")
    ann_core.set_backend(name)
    ann_core.set_blas_threads(2)
    # Start the worker threads outside the engine first, from a thread that keeps denormals.
    big = np.ones((512, 512), np.float32)
    gemm(big, big, np.empty_like(big))
    assert subnormal_count(subnormal_logits(2)) == 0
