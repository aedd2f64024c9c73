"""Per-row weights on one machine: the engine's ``sample_weight`` and the estimators'
``fit(X, y, sample_weight)``. Integer weights equal repeated rows and zero weights equal
removed rows (float64, to 1e-9); bad weights are refused before anything is computed,
naming the row."""
import warnings

import numpy as np
import pytest

from ann_core import LOSSES, Network
from sparkann import MLPClassifier, MLPRegressor
from sparkann.skcompat import ConvergenceWarning


def _case(loss, n=53, seed=0):
    rng = np.random.default_rng(seed)
    net = Network(6, [("dense", 9), ("activation", "tanh"), ("dense", 4), ("loss", loss)],
                  dtype="float64", block_size=16)
    w = rng.normal(scale=0.5, size=net.n_weights)
    X = rng.normal(size=(n, 6))
    y = rng.integers(0, 4, n) if loss == "softmax_cross_entropy" else rng.random((n, 4))
    counts = rng.integers(0, 4, n)
    return net, w, X, y, counts


def _sums(net, w, X, y, sw=None):
    grad = np.zeros(net.n_weights)
    loss, _ = net.loss_grad(w, np.ascontiguousarray(X), np.ascontiguousarray(y), grad,
                            sample_weight=sw)
    return loss, grad


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_engine_integer_weights_equal_repeated_rows(loss):
    net, w, X, y, counts = _case(loss)
    weighted = _sums(net, w, X, y, counts.astype(np.float64))
    repeated = _sums(net, w, np.repeat(X, counts, 0), np.repeat(y, counts, 0))
    assert weighted[0] == pytest.approx(repeated[0], rel=1e-12)
    np.testing.assert_allclose(weighted[1], repeated[1], rtol=1e-9, atol=1e-12)
    kept = counts > 0
    removed = _sums(net, w, X[kept], y[kept], counts[kept].astype(np.float64))
    assert weighted[0] == pytest.approx(removed[0], rel=1e-12)
    np.testing.assert_allclose(weighted[1], removed[1], rtol=1e-9, atol=1e-12)
    ones = _sums(net, w, X, y, np.ones(len(X)))
    plain = _sums(net, w, X, y)
    assert ones[0] == plain[0] and np.array_equal(ones[1], plain[1])


@pytest.mark.parametrize("bad, match", [
    (np.array([1.0, -0.5, 1.0]), r"sample_weight: row 1 is -0\.5"),
    (np.array([1.0, 1.0, np.nan]), r"sample_weight: row 2 is nan"),
    (np.array([np.inf, 1.0, 1.0]), r"sample_weight: row 0 is inf"),
    (np.ones(4), r"shape \(3,\)"),
    (np.ones(3, np.float32), "float64"),
])
def test_engine_refuses_bad_weights_before_adding_anything(bad, match):
    net, w, X, y, _ = _case("softmax_cross_entropy", n=3)
    grad = np.full(net.n_weights, 7.0)
    with pytest.raises(ValueError, match=match):
        net.loss_grad(w, X, y, grad, sample_weight=bad)
    assert (grad == 7.0).all()


def _fit(cls, X, y, sw=None, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "Got `batch_size`")   # one batch of all rows
        return cls(**params).fit(X, y, sample_weight=sw)


ESTIMATOR_CASES = [(MLPClassifier, "multiclass"), (MLPClassifier, "binary"),
                   (MLPClassifier, "multilabel"), (MLPRegressor, "squared_error"),
                   (MLPRegressor, "poisson")]


def _estimator_data(target, n=40):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(n, 5))
    y = {"multiclass": (X[:, 0] > 0).astype(int) + (X[:, 1] > 0),
         "binary": (X[:, 0] + X[:, 2] > 0).astype(int),
         "multilabel": np.column_stack([X[:, 0] > 0, X[:, 1] > 0.3]).astype(int),
         "squared_error": np.column_stack([X[:, 0] - X[:, 1], X[:, 2]]),
         "poisson": np.exp(0.3 * X[:, 0])}[target]
    return X, y, rng.integers(0, 4, n)


@pytest.mark.parametrize("solver", ["lbfgs", "gd", "adam"])
@pytest.mark.parametrize("cls, target", ESTIMATOR_CASES, ids=[c[1] for c in ESTIMATOR_CASES])
def test_fit_integer_weights_equal_repeated_rows(cls, target, solver):
    """Full batch (l-bfgs, gd) and one mini-batch of all rows (adam): the same loss curve and
    weights to 1e-9; rows of weight 0 are as good as absent."""
    X, y, counts = _estimator_data(target)
    params = dict(hidden_layer_sizes=(6,), solver=solver, max_iter=15, random_state=0,
                  dtype="float64", alpha=1e-3, batch_size=10_000, shuffle=False, tol=0.0,
                  learning_rate_init=0.05)
    if cls is MLPRegressor:
        params["loss"] = target if target == "poisson" else "squared_error"
    weighted = _fit(cls, X, y, counts, **params)
    repeated = _fit(cls, np.repeat(X, counts, 0), np.repeat(y, counts, 0), **params)
    kept = counts > 0
    removed = _fit(cls, X[kept], y[kept], counts[kept], **params)
    for other in (repeated, removed):
        np.testing.assert_allclose(weighted.loss_curve_, other.loss_curve_, rtol=1e-9)
        np.testing.assert_allclose(weighted.weights_, other.weights_, rtol=1e-9, atol=1e-12)


def test_fit_weights_change_the_model_and_the_score():
    X, y, _ = _estimator_data("binary")
    sw = np.where(y == 1, 5.0, 0.2)
    plain = _fit(MLPClassifier, X, y, hidden_layer_sizes=(6,), solver="lbfgs",
                 random_state=0, max_iter=30)
    weighted = _fit(MLPClassifier, X, y, sw, hidden_layer_sizes=(6,), solver="lbfgs",
                    random_state=0, max_iter=30)
    assert not np.allclose(plain.weights_, weighted.weights_)
    # class 1 weighs more: its recall does not drop
    assert (weighted.predict(X)[y == 1] == 1).mean() >= (plain.predict(X)[y == 1] == 1).mean()


def test_mini_batches_of_only_zero_weights_take_no_step():
    X, y, _ = _estimator_data("multiclass", n=40)
    sw = np.ones(len(y))
    sw[:10] = 0.0              # the first batch of 10 rows (no shuffling) weighs nothing
    params = dict(hidden_layer_sizes=(6,), solver="sgd", batch_size=10, shuffle=False,
                  max_iter=3, random_state=0, dtype="float64", learning_rate_init=0.1)
    weighted = _fit(MLPClassifier, X, y, sw, **params)
    assert np.isfinite(weighted.weights_).all() and np.isfinite(weighted.loss_curve_).all()
    skipped = _fit(MLPClassifier, X[10:], y[10:], **params)
    np.testing.assert_allclose(weighted.weights_, skipped.weights_, rtol=1e-12)


@pytest.mark.parametrize("bad, match", [
    ([1.0, -2.0] + [1.0] * 38, r"Negative values in sample_weight are not allowed: row 1 is -2"),
    ([1.0] * 5 + [float("nan")] + [1.0] * 34, r"NaN or infinity: row 5 is nan"),
    ([1.0] * 39 + [float("inf")], r"NaN or infinity: row 39 is inf"),
    ([0.0] * 40, "at least one non-zero"),
])
def test_fit_refuses_bad_weights_naming_the_row(bad, match):
    X, y, _ = _estimator_data("binary")
    with pytest.raises(ValueError, match=match):
        MLPClassifier((4,), max_iter=2).fit(X, y, sample_weight=bad)
