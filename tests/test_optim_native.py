"""The engine's fused optimizer step (ann_core.optimizer_step, csrc/ann_optim.h) against the
numpy formulas of sparkann.optim's docstrings, for both dtypes.

Tolerance: the native Adam step multiplies by 1 / (1 - beta2^t) and by lr / (1 - beta1^t),
each rounded once, where the formula divides by 1 - beta2^t and by 1 - beta1^t and then
multiplies by lr: each step's update differs from the formula's by at most a few units in the
last place of the update (the square root halves the relative error of its argument), and
subtracting it from a weight may then round to the neighbouring value (1 ulp of the weight).
So after k steps the weights are compared to k * (8 ulp of the largest update + 1 ulp of the
weight), and the moments to 4 ulp relative. A wrong bias
correction or a missing decay term is off by orders of magnitude more. SGD's steps are the
formula's own operations in the same order (no contraction into fused multiply-adds: the build
compiles C99 with contraction off), so they are compared to 1 ulp.
"""
import numpy as np
import pytest

import ann_core
from sparkann.optim import SGD, Adam

N = 5003  # more than two of the kernel's 2048-weight chunks, and not a multiple of 16
DTYPES = [np.float32, np.float64]


def _ulp(dtype):
    return float(np.finfo(dtype).eps)


def _adam_formula(w, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, decay=0.0):
    """Adam's docstring formula, in the arrays' dtype: returns new (w, m, v)."""
    dt = w.dtype.type
    g = g + np.asarray(decay, dtype=w.dtype) * w
    m = dt(beta1) * m + dt(1 - beta1) * g
    v = dt(beta2) * v + dt(1 - beta2) * g ** 2
    step = dt(lr) * (m / dt(1 - beta1 ** t)) / (np.sqrt(v / dt(1 - beta2 ** t)) + dt(eps))
    return w - step, m, v


def _sgd_formula(w, g, vel, lr, momentum, nesterov, decay=0.0):
    """SGD's docstring formula, in the arrays' dtype: returns new (w, velocity)."""
    dt = w.dtype.type
    g = g + np.asarray(decay, dtype=w.dtype) * w
    vel = dt(momentum) * vel + g
    direction = g + dt(momentum) * vel if nesterov else vel if momentum else g
    return w - dt(lr) * direction, vel


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(scale=0.5, size=N).astype(dtype)
    grads = [rng.normal(scale=s, size=N).astype(dtype) for s in (1.0, 0.01, 3.0, 1e-4, 0.5)]
    return w, grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("start", [0, 40, 10**6], ids=["t=1", "t=41", "large-t"])
def test_native_adam_step_follows_the_formula(dtype, weight_decay, start):
    w, grads = _problem(dtype)
    rng = np.random.default_rng(1)
    opt = Adam(lr=0.01, weight_decay=weight_decay)
    m = np.zeros(N, dtype) if start == 0 else rng.normal(scale=0.1, size=N).astype(dtype)
    v = np.zeros(N, dtype) if start == 0 else rng.uniform(0, 0.5, size=N).astype(dtype)
    opt.load_state_dict({"t": start, "m": m.copy(), "v": v.copy()})
    w_ref, m_ref, v_ref = w.copy(), m, v
    assert opt._native(w, grads[0])
    largest = 0.0
    for k, g in enumerate(grads, 1):
        before = w_ref
        w_ref, m_ref, v_ref = _adam_formula(w_ref, g, m_ref, v_ref, start + k, 0.01,
                                            decay=weight_decay)
        largest = max(largest, float(np.abs(w_ref - before).max()))
        assert opt.step(w, g) is w
        assert w.dtype == dtype and opt.t == start + k
        np.testing.assert_allclose(w, w_ref, rtol=k * _ulp(dtype),
                                   atol=8 * _ulp(dtype) * largest * k)
        np.testing.assert_allclose(opt.m, m_ref, rtol=4 * _ulp(dtype), atol=0)
        np.testing.assert_allclose(opt.v, v_ref, rtol=4 * _ulp(dtype), atol=0)
    if start == 0:  # t = 1: the bias-corrected step is lr * g / (|g| + eps) with g decayed
        w1 = _problem(dtype)[0]
        first = Adam(lr=0.01, weight_decay=weight_decay)
        first.step(w1, grads[0])
        w0 = _problem(dtype)[0]
        g = grads[0] + dtype(weight_decay) * w0
        np.testing.assert_allclose(w1, w0 - dtype(0.01) * g / (np.abs(g) + dtype(1e-8)),
                                   rtol=2 * _ulp(dtype), atol=8 * _ulp(dtype) * 0.01)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_native_sgd_step_follows_the_formula(dtype, momentum, nesterov):
    w, grads = _problem(dtype)
    opt = SGD(lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=0.01)
    w_ref, vel = w.copy(), np.zeros(N, dtype)
    for g in grads:
        assert opt._native(w, g)
        w_ref, vel = _sgd_formula(w_ref, g, vel, 0.05, momentum, nesterov, decay=0.01)
        opt.step(w, g)
        np.testing.assert_allclose(w, w_ref, rtol=_ulp(dtype), atol=0)


RUNS = np.array([[0, 1000], [1100, 3000], [4000, N]])  # the gaps are biases: no L2 term


def _run_mask():
    mask = np.zeros(N, bool)
    for start, stop in RUNS:
        mask[start:stop] = True
    return mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("native", [True, False], ids=["native", "numpy"])
@pytest.mark.parametrize("kind", ["adam", "nesterov"])
def test_update_scales_the_gradient_adds_l2_on_runs_and_returns_the_squares_before(
        dtype, native, kind):
    w, grads = _problem(dtype)
    if not native:  # the same numbers in a strided view: the numpy path
        w = np.repeat(w, 2)[::2]
    mask, decay = _run_mask(), np.where(_run_mask(), 0.05, 0.0)
    opt = Adam(lr=0.01) if kind == "adam" else SGD(lr=0.05, momentum=0.9, nesterov=True)
    assert opt._native(w, grads[0]) == native
    w_ref, m, v, largest = w.copy(), np.zeros(N, dtype), np.zeros(N, dtype), 0.0
    for k, g in enumerate(grads, 1):
        summed = g * dtype(200)  # a gradient summed over 200 rows
        before = w_ref
        if kind == "adam":
            w_ref, m, v = _adam_formula(w_ref, summed * dtype(1 / 200), m, v, k, 0.01,
                                        decay=decay)
        else:
            w_ref, m = _sgd_formula(w_ref, summed * dtype(1 / 200), m, 0.05, 0.9, True,
                                    decay=decay)
        largest = max(largest, float(np.abs(w_ref - before).max()))
        expected_squares = float(np.sum(w[mask].astype(np.float64) ** 2))
        squares, finite = opt.update(w, summed, grad_scale=1 / 200, l2=0.05, l2_runs=RUNS,
                                     squares=True)
        assert finite is True
        assert squares == pytest.approx(expected_squares, rel=1e-12)
        np.testing.assert_allclose(w, w_ref, rtol=k * _ulp(dtype),
                                   atol=8 * _ulp(dtype) * largest * k)
    assert opt.update(w, grads[0], l2=0.05, l2_runs=RUNS)[0] is None  # squares not asked


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_step_reports_weights_that_became_non_finite(dtype):
    for bad in (np.inf, np.nan):
        w, grads = _problem(dtype)
        g = grads[0].copy()
        g[4321] = bad
        _, finite = SGD(lr=0.1).update(w, g)
        assert finite is False and not np.isfinite(w[4321])
        assert np.isfinite(np.delete(w, 4321)).all()
    w, grads = _problem(dtype)
    assert Adam().update(w, grads[0]) == (None, True)


def test_other_layouts_and_dtypes_take_the_numpy_formula():
    w32, grads = _problem(np.float32)
    cases = {
        "strided weights": (np.zeros(2 * N, np.float32)[::2], grads[0]),
        "float64 gradient for float32 weights": (w32.copy(), grads[0].astype(np.float64)),
        "strided gradient": (w32.copy(), np.repeat(grads[0], 2)[::2]),
        "2-D weights": (w32.reshape(1, N).copy(), grads[0].reshape(1, N)),
    }
    for name, (w, g) in cases.items():
        w[...] = w32.reshape(w.shape)
        opt = Adam(lr=0.01)
        assert not opt._native(w, g), name
        wide = np.result_type(w, g)  # the formula in the wider dtype; the step is ~0.01
        expected, _, _ = _adam_formula(w.astype(wide), g.astype(wide), 0, 0, 1, 0.01)
        opt.step(w, g)
        np.testing.assert_allclose(w, expected.astype(w.dtype), rtol=2 * _ulp(w.dtype),
                                   atol=1e-6, err_msg=name)
    # moments kept in another dtype (a state loaded from elsewhere) take numpy too
    opt = Adam(lr=0.01)
    opt.load_state_dict({"t": 3, "m": np.zeros(N), "v": np.zeros(N)})
    assert not opt._native(w32, grads[0])
    assert Adam(lr=0.01)._native(w32, grads[0])


def test_optimizer_step_refuses_bad_arrays_with_a_clear_error():
    w, grads = _problem(np.float32)
    m, v = np.zeros(N, np.float32), np.zeros(N, np.float32)
    step = ann_core.optimizer_step
    with pytest.raises(ValueError, match="g must be a C-contiguous 1-D float32 array of 5003"):
        step("adam", w, grads[0][:-1], m, v, rate=0.1)
    with pytest.raises(ValueError, match="v must be a writable C-contiguous"):
        step("adam", w, grads[0], m, None, rate=0.1)
    with pytest.raises(ValueError, match="w and g share memory"):
        step("sgd", w, w, rate=0.1)
    with pytest.raises(ValueError, match="kind must be one of"):
        step("rmsprop", w, grads[0], rate=0.1)
    with pytest.raises(ValueError, match=r"runs\[1\] = \(10, 5\) is not an ascending slice"):
        step("sgd", w, grads[0], rate=0.1, runs=[(0, 4), (10, 5)])
    with pytest.raises(ValueError, match=r"runs\[0\] = \(0, 6000\)"):
        step("sgd", w, grads[0], rate=0.1, runs=[(0, 6000)])
