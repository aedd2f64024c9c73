"""sparkann.MLPClassifier / MLPRegressor against scikit-learn: its estimator checks, its own
MLP test module (import swapped), and the same loss curves from the same weights."""
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn import neural_network  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from sparkann import MLPClassifier, MLPRegressor  # noqa: E402

#: tests of scikit-learn's test_mlp.py that read or write its private attributes
PRIVATE_ATTRIBUTE_TESTS = {
    "test_fit": "sets the private _coef_grads, _intercept_grads, _coef_velocity, "
                "_intercept_velocity and _no_improvement_count before calling the private "
                "_fit_stochastic",
    "test_gradient": "calls the private _loss_grad_lbfgs with scikit-learn's unpacked "
                     "activations, deltas and gradient lists",
}


@pytest.mark.parametrize("estimator", [MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)],
                         ids=["classifier", "regressor"])
def test_check_estimator_passes_in_full(estimator):
    # max_iter=100: what scikit-learn's own test of its MLPs uses
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = check_estimator(estimator, on_fail=None)
    failed = {r["check_name"]: repr(r["exception"]) for r in results if r["status"] == "failed"}
    assert not failed
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    # only what does not apply: array API input (needs SCIPY_ARRAY_API), decision_function
    assert skipped <= {"check_array_api_input",
                       "check_classifiers_multilabel_output_format_decision_function"}
    assert len(results) > 55


def test_scikit_learns_own_mlp_tests_pass_with_the_import_swapped(tmp_path):
    source = os.path.join(os.path.dirname(neural_network.__file__), "tests", "test_mlp.py")
    with open(source) as f:
        text = f.read()
    line = "from sklearn.neural_network import MLPClassifier, MLPRegressor\n"
    assert text.count(line) == 1
    (tmp_path / "test_mlp_sparkann.py").write_text(
        text.replace(line, "from sparkann import MLPClassifier, MLPRegressor\n"))
    deselect = [a for name in PRIVATE_ATTRIBUTE_TESTS
                for a in ("--deselect", f"test_mlp_sparkann.py::{name}")]
    # scikit-learn's conftest gives the global_random_seed fixture
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-p", "sklearn.conftest", "test_mlp_sparkann.py", *deselect],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-4000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 57 and "failed" not in summary and "error" not in summary, summary


def _digits(n_class):
    X, y = load_digits(n_class=n_class, return_X_y=True)
    return X[:150] / 16.0, y[:150]


def _twins(cls_ours, cls_theirs, X, y, **params):
    """Ours and scikit-learn's estimator holding the same weights after one short fit."""
    ours = cls_ours(**params, random_state=0, warm_start=True, max_iter=1)
    theirs = cls_theirs(**params, random_state=0, warm_start=True, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
    ours.coefs_, ours.intercepts_ = theirs.coefs_, theirs.intercepts_
    ours.set_params(max_iter=15)
    theirs.set_params(max_iter=15)
    return ours, theirs


CASES = [
    ("multiclass", MLPClassifier, neural_network.MLPClassifier, lambda: _digits(3)),
    ("binary", MLPClassifier, neural_network.MLPClassifier, lambda: _digits(2)),
    ("regression", MLPRegressor, neural_network.MLPRegressor,
     lambda: (_digits(3)[0], np.column_stack([_digits(3)[1], _digits(3)[0][:, 20]]))),
]


@pytest.mark.parametrize("name, ours_cls, theirs_cls, data", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, True)])
def test_sgd_loss_curve_equals_scikit_learns_from_the_same_weights(name, ours_cls, theirs_cls,
                                                                   data, momentum, nesterov):
    X, y = data()
    params = dict(hidden_layer_sizes=(7, 5), activation="tanh", solver="sgd", alpha=0.05,
                  batch_size=40, learning_rate_init=0.05, shuffle=False, tol=0.0,
                  momentum=momentum, nesterovs_momentum=nesterov)
    ours, theirs = _twins(ours_cls, theirs_cls, X, y, **params)
    assert ours.weights_.dtype == np.float64  # float64 data: float64 network, as theirs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
    assert len(ours.loss_curve_) == len(theirs.loss_curve_) == 16
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name, ours_cls, theirs_cls, data", CASES, ids=[c[0] for c in CASES])
def test_lbfgs_reaches_scikit_learns_loss_from_the_same_weights(name, ours_cls, theirs_cls, data):
    X, y = data()
    params = dict(hidden_layer_sizes=(7,), activation="logistic", solver="lbfgs", alpha=0.05,
                  tol=0.0)
    ours, theirs = _twins(ours_cls, theirs_cls, X, y, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ == 15
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    assert ours.loss_curve_[-1] == ours.loss_
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_the_same_random_state_gives_scikit_learns_initial_weights():
    X, y = _digits(3)
    for activation in ("relu", "logistic"):
        ours = MLPClassifier((6, 4), activation=activation, random_state=3, max_iter=1,
                             learning_rate_init=1e-300).fit(X, y)
        theirs = neural_network.MLPClassifier((6, 4), activation=activation, random_state=3,
                                              max_iter=1, learning_rate_init=1e-300)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            theirs.fit(X, y)
        for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
            np.testing.assert_allclose(a, b, rtol=1e-12)
