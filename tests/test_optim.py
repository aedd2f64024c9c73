"""Optimizers: hand-computed steps, L-BFGS (against scipy, exact resume) and GD, schedules,
early stopping."""
import math

import numpy as np
import pytest
from scipy.optimize import minimize, rosen, rosen_der

from sparkann import optim
from sparkann.optim import SGD, Adam, EarlyStopping, History

W0 = np.array([1.0, -2.0, 0.5])
G1 = np.array([0.5, 0.25, -1.0])
G2 = np.array([-0.5, 1.0, 2.0])


def test_sgd_plain_step():
    w = W0.copy()
    SGD(lr=0.1).step(w, G1)
    np.testing.assert_allclose(w, [1.0 - 0.05, -2.0 - 0.025, 0.5 + 0.1])


def test_sgd_momentum_two_steps():
    w, opt = W0.copy(), SGD(lr=0.1, momentum=0.9)
    opt.step(w, G1)                      # v1 = G1
    opt.step(w, G2)                      # v2 = 0.9 * G1 + G2
    v2 = np.array([0.9 * 0.5 - 0.5, 0.9 * 0.25 + 1.0, 0.9 * -1.0 + 2.0])
    np.testing.assert_allclose(w, W0 - 0.1 * G1 - 0.1 * v2)


def test_sgd_nesterov_two_steps():
    w, opt = W0.copy(), SGD(lr=0.1, momentum=0.9, nesterov=True)
    opt.step(w, G1)                      # v1 = G1, step G1 + 0.9 v1
    opt.step(w, G2)                      # v2 = 0.9 G1 + G2, step G2 + 0.9 v2
    v2 = 0.9 * G1 + G2
    np.testing.assert_allclose(w, W0 - 0.1 * (1.9 * G1) - 0.1 * (G2 + 0.9 * v2))


def test_sgd_weight_decay_adds_l2_gradient():
    w = W0.copy()
    SGD(lr=0.1, weight_decay=0.01).step(w, G1)
    np.testing.assert_allclose(w, W0 - 0.1 * (G1 + 0.01 * W0))


def test_adam_first_two_steps_by_hand():
    w, opt = W0.copy(), Adam(lr=0.01)
    opt.step(w, G1)
    # t=1: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps)
    expected1 = W0 - 0.01 * G1 / (np.abs(G1) + 1e-8)
    np.testing.assert_allclose(w, expected1, rtol=1e-12)
    opt.step(w, G2)
    m = 0.9 * (0.1 * G1) + 0.1 * G2
    v = 0.999 * (0.001 * G1 ** 2) + 0.001 * G2 ** 2
    m_hat, v_hat = m / (1 - 0.9 ** 2), v / (1 - 0.999 ** 2)
    np.testing.assert_allclose(w, expected1 - 0.01 * m_hat / (np.sqrt(v_hat) + 1e-8),
                               rtol=1e-12)


def test_adam_float32_weights_stay_float32_in_place():
    w = W0.astype(np.float32)
    before = w.ctypes.data
    Adam(lr=0.1).step(w, G1.astype(np.float32))
    assert w.dtype == np.float32 and w.ctypes.data == before


def test_state_dict_round_trip_continues_identically():
    for make in (lambda: SGD(lr=0.1, momentum=0.5), lambda: Adam(lr=0.1)):
        a, wa = make(), W0.copy()
        a.step(wa, G1)
        b, wb = make(), wa.copy()
        b.load_state_dict(a.state_dict())
        a.step(wa, G2)
        b.step(wb, G2)
        np.testing.assert_array_equal(wa, wb)


def test_schedule_scales_the_step():
    w, opt = W0.copy(), SGD(lr=0.1, schedule=optim.StepDecay(1, gamma=0.5))
    opt.step(w, G1)
    opt.step(w, G1)
    np.testing.assert_allclose(w, W0 - 0.1 * G1 - 0.05 * G1)


def test_schedules():
    assert [optim.StepDecay(2, 0.1)(t) for t in range(5)] == pytest.approx([1, 1, .1, .1, .01])
    assert optim.ExponentialDecay(0.5)(3) == 0.125
    assert optim.InverseSqrt()(3) == 0.5
    c = optim.Cosine(10, floor=0.1)
    assert c(0) == 1 and c(5) == pytest.approx(0.55) and c(10) == c(50) == 0.1
    assert optim.Constant()(100) == 1
    for s in (optim.StepDecay(3, 0.5), optim.Cosine(5), optim.InverseSqrt()):
        assert optim.schedule_from_dict(s.to_dict()) == s


# a quadratic with a known optimum: f(w) = 0.5 (w - c)^T A (w - c) + 7
A = np.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
C = np.array([1.0, -2.0, 3.0])


def quadratic(w):
    d = w - C
    return 0.5 * d @ A @ d + 7.0, A @ d


def test_lbfgs_minimises_a_quadratic():
    calls = []
    result = optim.lbfgs(quadratic, np.zeros(3), max_iter=100, tol=1e-15,
                         callback=lambda it, w, f: calls.append((it, f)))
    np.testing.assert_allclose(result.x, C, atol=1e-6)
    assert result.fun == pytest.approx(7.0)
    assert [c[0] for c in calls] == list(range(1, result.nit + 1))
    assert all(a[1] >= b[1] for a, b in zip(calls, calls[1:]))  # monotone


def test_lbfgs_keeps_dtype_and_stops_on_stopiteration():
    def stop_at_two(it, w, f):
        if it == 2:
            raise StopIteration

    result = optim.lbfgs(quadratic, np.zeros(3, np.float32), callback=stop_at_two)
    assert result.nit == 2 and result.x.dtype == np.float32


W_ROSEN = np.array([-1.2, 1.0, -1.2, 1.0, 0.5, 0.3])


def rosenbrock(w):
    return float(rosen(w)), rosen_der(w)


def test_lbfgs_visits_the_iterates_of_scipys_lbfgsb():
    """Independent reference: scipy's L-BFGS-B without bounds uses the same memory, initial
    scaling, line search constants and first trial step, so it visits the same points
    (measured: within 2e-15 over 12 iterations, line searches of several evaluations
    included)."""
    theirs = []
    minimize(rosenbrock, W_ROSEN, jac=True, method="L-BFGS-B",
             callback=lambda x: theirs.append(x.copy()),
             options={"maxiter": 12, "maxcor": 10, "ftol": 0, "gtol": 0})
    ours = []
    result = optim.lbfgs(rosenbrock, W_ROSEN, max_iter=12, tol=0, gtol=0,
                         callback=lambda it, w, f: ours.append(w.copy()))
    assert len(ours) == len(theirs) == 12
    assert result.nfev > result.nit + 1  # some line searches took more than one evaluation
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_lbfgs_solves_rosenbrock():
    result = optim.lbfgs(rosenbrock, W_ROSEN, max_iter=500, tol=0, gtol=1e-7)
    np.testing.assert_allclose(result.x, np.ones(6), atol=1e-6)
    assert result.success and "gradient" in result.message and result.nit < 200


def mlp_objective():
    """A small network's mean cross-entropy on fixed random data (387 weights)."""
    from ann_core import Network
    rng = np.random.default_rng(4)
    X = rng.normal(size=(64, 20))
    y = rng.integers(0, 3, 64).astype(np.int64)
    net = Network(20, [("dense", 16), ("activation", "tanh"), ("dense", 3),
                       ("loss", "softmax_cross_entropy")], dtype="float64")

    def fun_grad(w):
        grad = np.zeros(net.n_weights)
        loss, n = net.loss_grad(w, X, y, grad)
        return loss / n, grad / n

    return fun_grad, 0.3 * rng.normal(size=net.n_weights)


def rosenbrock_objective():
    return rosenbrock, W_ROSEN


# tol=1e-2 stops the MLP run after iteration 11 (relative reduction): the resumed run must
# stop at once. Rosenbrock's line searches take several evaluations.
@pytest.mark.parametrize("objective, stop_at, tol", [
    (mlp_objective, 1, 0.0), (mlp_objective, 4, 0.0), (mlp_objective, 9, 0.0),
    (mlp_objective, 14, 0.0), (mlp_objective, 11, 1e-2), (rosenbrock_objective, 7, 0.0)])
def test_lbfgs_resumed_from_its_state_is_the_uninterrupted_run(objective, stop_at, tol):
    fun_grad, w0 = objective()
    kwargs = dict(max_iter=14, m=3, tol=tol)  # m=3: the memory is full and rotates
    full = []
    reference = optim.lbfgs(fun_grad, w0, **kwargs,
                            callback=lambda it, w, f: full.append((it, w.copy(), f)))

    def stop(it, w, f):
        if it == stop_at:
            raise StopIteration

    first = optim.LBFGS(fun_grad, w0, m=3)
    first.minimize(kwargs["max_iter"], tol, callback=stop)
    state = first.state_dict()
    assert state["nit"] == min(stop_at, reference.nit)
    assert state["s"].shape == state["y"].shape == (min(state["nit"], 3), w0.size)
    rest = []
    resumed = optim.lbfgs(fun_grad, np.zeros_like(w0), **kwargs, state=state,
                          callback=lambda it, w, f: rest.append((it, w.copy(), f)))
    assert np.array_equal(resumed.x, reference.x)
    assert (resumed.fun, resumed.nit, resumed.nfev, resumed.message) == \
        (reference.fun, reference.nit, reference.nfev, reference.message)
    later = full[state["nit"]:]
    assert [r[0] for r in rest] == [r[0] for r in later]
    assert all(np.array_equal(a[1], b[1]) and a[2] == b[2] for a, b in zip(rest, later))


def test_lbfgs_state_of_another_size_is_refused():
    state = optim.LBFGS(quadratic, np.zeros(3)).state_dict()
    with pytest.raises(ValueError, match="for 3 weights.*has 4"):
        optim.lbfgs(quadratic, np.zeros(4), state=state)
    with pytest.raises(ValueError, match="m = 2"):
        opt = optim.LBFGS(quadratic, np.zeros(3), m=5)
        opt.minimize(4, tol=0)
        optim.LBFGS(quadratic, np.zeros(3), m=2).load_state_dict(opt.state_dict())


def test_lbfgs_line_search_failure_ends_with_the_last_iterate():
    def wrong_gradient(w):  # the gradient's sign is flipped: no step decreases the loss
        return float(w @ w), -2 * w

    result = optim.lbfgs(wrong_gradient, np.ones(3))
    assert not result.success and "line search failed" in result.message
    assert result.nit == 0 and np.array_equal(result.x, np.ones(3)) and result.fun == 3.0


def test_lbfgs_divergence_in_a_line_search_keeps_the_last_iterate():
    seen = [np.zeros(3)]

    def blows_up(w):  # finite only near the start: a trial step eventually overflows
        return (math.inf, w) if np.abs(w).max() > 1.5 else quadratic(w)

    with pytest.raises(optim.DivergenceError, match="non-finite") as info:
        optim.lbfgs(blows_up, np.zeros(3), max_iter=50,
                    callback=lambda it, w, f: seen.append(w.copy()))
    assert np.array_equal(info.value.weights, seen[-1])
    assert info.value.iteration == len(seen) - 1


def test_gd_converges_on_a_quadratic():
    result = optim.gd(quadratic, np.zeros(3), step_size=0.3, max_iter=2000, tol=1e-12)
    np.testing.assert_allclose(result.x, C, atol=1e-8)
    assert result.nit < 2000 and "converged" in result.message


def test_gd_one_step_by_hand_and_inverse_sqrt_schedule():
    r = optim.gd(quadratic, np.zeros(3), step_size=0.1, max_iter=1)
    np.testing.assert_allclose(r.x, -0.1 * quadratic(np.zeros(3))[1])
    r2 = optim.gd(quadratic, np.zeros(3), step_size=0.1, max_iter=2, schedule=optim.InverseSqrt())
    w1 = -0.1 * quadratic(np.zeros(3))[1]
    np.testing.assert_allclose(r2.x, w1 - 0.1 / math.sqrt(2) * quadratic(w1)[1])


def test_divergence_reports_the_last_finite_weights():
    def explodes(w):
        return (math.inf, w) if w[0] > 10 else (float(w @ w), -2 * w)  # ascent: grows

    with pytest.raises(optim.DivergenceError, match="non-finite") as info:
        optim.gd(explodes, np.ones(2), step_size=1.0, max_iter=100)
    assert np.all(np.isfinite(info.value.weights)) and info.value.weights[0] <= 10

    def engine_overflow(w):
        raise FloatingPointError("overflow")

    with pytest.raises(optim.DivergenceError, match="overflow"):
        optim.lbfgs(engine_overflow, np.ones(2))


@pytest.mark.parametrize("make, match", [
    (lambda: SGD(lr=-0.1), "learning rate"),
    (lambda: SGD(lr=0), "learning rate"),
    (lambda: Adam(lr=math.nan), "learning rate"),
    (lambda: SGD(momentum=1.0), "momentum"),
    (lambda: SGD(nesterov=True), "nesterov"),
    (lambda: Adam(beta1=1.0), "beta1"),
    (lambda: SGD(weight_decay=-1), "weight_decay"),
    (lambda: optim.gd(quadratic, np.zeros(3), step_size=-1), "learning rate"),
    (lambda: optim.lbfgs(quadratic, np.zeros(3), max_iter=0), "max_iter"),
    (lambda: EarlyStopping(patience=0), "patience"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_early_stopping_stops_and_keeps_best_weights():
    stopper = EarlyStopping(tol=0.01, patience=3)
    metrics = [1.0, 0.5, 0.4, 0.395, 0.41, 0.6]  # best at index 2; 0.395 is within tol
    stops = []
    for i, m in enumerate(metrics):
        stops.append(stopper.update(m, np.full(2, float(i))))
        if stops[-1]:
            break
    assert stops == [False, False, False, False, False, True]
    assert stopper.best_iteration == 2 and stopper.best_metric == 0.4
    np.testing.assert_array_equal(stopper.best_weights, [2.0, 2.0])


def test_early_stopping_max_mode_copies_weights():
    stopper, w = EarlyStopping(tol=0, patience=1, mode="max"), np.zeros(2)
    assert not stopper.update(0.8, w)
    w += 1  # the stored best must not change with the live vector
    assert stopper.update(0.7, w)
    np.testing.assert_array_equal(stopper.best_weights, [0, 0])


def test_history_records_time_and_serialises():
    h = History()
    h.append(1.0)
    h.append(0.5, val_loss=0.6, val_metric=0.9)
    d = h.to_dict()
    assert d["loss"] == [1.0, 0.5] and math.isnan(d["val_loss"][0]) and d["val_metric"][1] == 0.9
    assert len(h) == 2 and 0 <= d["seconds"][0] <= d["seconds"][1]
    assert History.from_dict(d).loss == [1.0, 0.5]


def test_mean_objective_divides_by_rows_and_adds_masked_l2():
    w = np.array([1.0, 2.0, -3.0])
    grad = np.array([3.0, 6.0, 9.0])
    mask = np.array([True, False, True])
    J = optim.mean_objective(12.0, grad, 3, w, alpha=0.5, l2_mask=mask)
    assert J == pytest.approx(4.0 + 0.25 * (1 + 9))
    np.testing.assert_allclose(grad, [1.0 + 0.5, 2.0, 3.0 - 1.5])
    with pytest.raises(ValueError, match="at least one row"):
        optim.mean_objective(0.0, grad, 0, w)
