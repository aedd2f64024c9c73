"""MLPClassifier / MLPRegressor: training, scikit-learn conventions, input checking."""
import math
import re
import pickle

import numpy as np
import pytest
from gradcheck import central_differences

from sparkann import layers as L
from sparkann import optim
from sparkann.estimator import MLPClassifier, MLPRegressor, NotFittedError

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


@pytest.fixture(autouse=True)
def one_blas_thread():
    # small problems: one thread avoids contention on a shared machine
    import ann_core

    previous = ann_core.set_blas_threads(1)
    yield
    ann_core.set_blas_threads(previous)


def blobs(n=300, n_features=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, n_features))
    y = rng.integers(0, k, n)
    return centers[y] + rng.normal(size=(n, n_features)), y


def regression(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 3))
    return X, np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 - X[:, 2]


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs", "gd"])
def test_classifier_learns_with_every_solver(solver):
    X, y = blobs()
    rate = {"gd": 0.5, "sgd": 0.05, "adam": 0.01, "lbfgs": 1e-3}[solver]
    clf = MLPClassifier((16,), solver=solver, max_iter=150, random_state=0,
                        learning_rate_init=rate)
    clf.fit(X, y)
    assert clf.score(X, y) > 0.95
    assert clf.predict(X).dtype == np.int64 and clf.classes_.tolist() == [0, 1, 2]
    p = clf.predict_proba(X)
    assert p.shape == (300, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert len(clf.history_) == clf.n_iter_ > 0
    assert clf.history_.loss[-1] < clf.history_.loss[0]


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_regressor_learns(solver):
    X, y = regression()
    reg = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", solver=solver, max_iter=300,
                       learning_rate_init=0.01, random_state=1, dtype="float64")
    reg.fit(X, y)
    assert reg.predict(X).shape == (300,)
    assert reg.score(X, y) > 0.95
    Y2 = np.column_stack([y, -y])
    reg2 = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", solver="lbfgs", max_iter=300,
                        random_state=1).fit(X, Y2)
    assert reg2.predict(X).shape == (300, 2) and reg2.score(X, Y2) > 0.95


def test_objective_is_mean_loss_plus_alpha_over_2n_l2_on_weights():
    X, y = blobs(50)
    clf = MLPClassifier((4,), solver="lbfgs", max_iter=1, alpha=0.3 * 50, random_state=0,
                        dtype="float64").fit(X, y)
    w = clf.weights_.copy()
    grad = np.zeros_like(w)
    J = clf._objective(w, np.ascontiguousarray(X), y.astype(np.int64), grad)
    p = clf.predict_proba(X)
    W = np.concatenate([c.ravel() for c in clf.coefs_])
    expected = -np.mean(np.log(p[np.arange(50), y])) + 0.15 * np.sum(W ** 2)
    assert J == pytest.approx(expected, rel=1e-10)
    # and its gradient by central differences
    estimates = central_differences(lambda v: clf._objective(v, X, y, np.zeros_like(w)), w,
                                    [0, 5, 6 * 4 + 1, len(w) - 1], 1e-6)
    for i, fd in estimates.items():
        assert fd == pytest.approx(grad[i], rel=1e-5, abs=1e-8)


def test_random_state_makes_fit_reproducible():
    X, y = blobs()
    a = MLPClassifier((8,), max_iter=5, random_state=3).fit(X, y)
    b = MLPClassifier((8,), max_iter=5, random_state=3).fit(X, y)
    c = MLPClassifier((8,), max_iter=5, random_state=4).fit(X, y)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert not np.array_equal(a.weights_, c.weights_)


def test_sklearn_clone_pipeline_gridsearch():
    X, y = blobs(240)
    clf = MLPClassifier((8,), solver="lbfgs", max_iter=50, random_state=0,
                        learning_rate=optim.StepDecay(10), layers=None)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin is not clf
    pipe = make_pipeline(StandardScaler(), clf).fit(X, y)
    assert pipe.score(X, y) > 0.9
    search = GridSearchCV(MLPClassifier(solver="lbfgs", max_iter=40, random_state=0),
                          {"hidden_layer_sizes": [(4,), (16,)], "alpha": [0.0, 1e-3]}, cv=3,
                          n_jobs=2)
    search.fit(X, y)
    assert search.best_score_ > 0.9 and set(search.best_params_) == {"hidden_layer_sizes",
                                                                     "alpha"}
    with pytest.raises(ValueError, match="Invalid parameter 'hidden'"):
        clf.set_params(hidden=3)


def test_layers_list_with_custom_python_activation():
    @L.register("test_cube_act")
    class Cube(L.PythonActivation):
        def function(self, x):
            return x ** 3 / 3 + x

        def derivative(self, x, y):
            return x * x + 1

    X, y = blobs()
    layers = [L.Dense(8), Cube(), L.Dense(8), L.Tanh()]
    clf = MLPClassifier(layers=layers, solver="lbfgs", max_iter=100, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95
    assert clf.layers[0] is layers[0]  # the parameter is not modified
    assert clf.topology_.layers[0] is not layers[0]
    assert "test_cube_act" in str(clf.topology_.to_dict())


def test_partial_fit_continues_training():
    X, y = blobs()
    clf = MLPClassifier((16,), solver="adam", learning_rate_init=0.01, random_state=0)
    clf.partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    first = clf.history_.loss[-1]
    state_t = clf._optimizer.t
    for _ in range(20):
        clf.partial_fit(X, y)
    assert clf._optimizer.t > state_t and clf.history_.loss[-1] < first
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 21 and clf.score(X, y) > 0.95
    clf.partial_fit(X[y == 0], y[y == 0])  # one class in a batch is fine once classes known
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        clf.partial_fit(X, np.full(len(X), 5))
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")


def test_warm_start_continues_and_fit_restarts():
    X, y = blobs()
    clf = MLPClassifier((8,), max_iter=3, random_state=0, warm_start=True).fit(X, y)
    w = clf.weights_.copy()
    clf.fit(X, y)  # as scikit-learn: n_iter_ counts this fit's epochs, t_ all rows seen
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 6 and clf.t_ == 6 * len(X)
    assert not np.array_equal(w, clf.weights_)
    clf.set_params(warm_start=False).fit(X, y)
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3


def test_early_stopping_restores_best_validation_weights():
    X, y = blobs(400, seed=2)
    rng = np.random.default_rng(0)
    y = np.where(rng.random(400) < 0.3, rng.integers(0, 3, 400), y)  # noisy: overfits
    clf = MLPClassifier((64, 64), solver="adam", learning_rate_init=0.02, max_iter=300,
                        early_stopping=True, n_iter_no_change=5, tol=0.0, random_state=0)
    clf.fit(X, y)
    scores = clf.validation_scores_
    # scikit-learn's rule: stop after more than n_iter_no_change epochs without improvement
    count, best, stop = 0, -np.inf, None
    for epoch, score in enumerate(scores):
        count = count + 1 if score < best + 0.0 else 0
        best = max(best, score)
        if count > 5:
            stop = epoch + 1
            break
    assert clf.n_iter_ < 300 and clf.n_iter_ == stop == len(scores)
    best = int(np.argmax(scores))  # the first of the best
    assert clf.best_validation_score_ == scores[best] and clf.best_loss_ is None
    # the kept weights are those of the best epoch: recompute its validation score
    clf._random_state = np.random.RandomState(0)
    dtype = clf.weights_.dtype
    clf._initial_weights(dtype)  # the draws the fit made before splitting
    Y = clf._encode(clf._indicator(y), dtype)
    Xv, yv = clf._validation_split(np.ascontiguousarray(X, dtype), Y, None)[3:5]
    assert clf._validation_score(clf.weights_, Xv, yv, None) == scores[best]


def test_divergence_stops_with_clear_error_and_keeps_finite_weights():
    X, y = regression()
    reg = MLPRegressor(hidden_layer_sizes=(32,), solver="sgd", learning_rate_init=50.0,
                       momentum=0.9, max_iter=50, random_state=0)
    with pytest.raises(optim.DivergenceError, match="non-finite parameter weights.*diverged"):
        reg.fit(X * 100, y * 1e4)
    assert np.isfinite(reg.weights_).all() and reg.n_iter_ < 50
    with pytest.raises(ValueError, match="non-finite parameter weights"):  # scikit-learn's
        reg.fit(X * 100, y * 1e4)


def test_float64_n_threads_block_size_and_pickle():
    import ann_core

    X, y = blobs()
    before = ann_core.blas_threads()["threads"]
    clf = MLPClassifier((8,), solver="lbfgs", max_iter=30, dtype="float64", block_size=7,
                        n_threads=1, random_state=0).fit(X, y)
    assert ann_core.blas_threads()["threads"] == before
    assert clf.weights_.dtype == np.float64 and clf.predict_proba(X).dtype == np.float64
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize("X, y, match", [
    (np.zeros((0, 3)), [], "0 sample"),
    (np.zeros((4, 0)), [0, 1, 0, 1], "0 feature"),
    ([[1.0, 2.0], [3.0, math.nan], [0, 0]], [0, 1, 0],
     r"(?s)Input X contains NaN.*\(X: row 1, column 1 is nan\)"),
    ([[1.0, 2.0], [3.0, math.inf]], [0, 1], r"infinity.*row 1, column 1 is inf"),
    (np.zeros(5), [0, 1, 0, 1, 0], "Reshape your data"),
    (np.eye(3), [0, 1], "inconsistent numbers of samples"),
    (np.eye(3), [0, 1, 1.5], "Unknown label type: continuous"),
    (np.eye(3), [0, 1, math.nan], r"Input y contains NaN. \(y: row 2 is nan\)"),
])
def test_bad_classifier_data(X, y, match):
    clf = MLPClassifier(max_iter=1)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "weights_")  # nothing was trained


@pytest.mark.parametrize("labels", [["cat", "dog", "emu"], [-1, 2**40, 7], [1.0, 2.0, 3.0],
                                    [True, False, True]])
def test_any_labels_come_back_as_given(labels):
    X, y = blobs(90)
    labels = np.array(labels, dtype=object if isinstance(labels[0], str) else None)
    y = labels[y % len(np.unique(labels))]
    clf = MLPClassifier((8,), solver="lbfgs", max_iter=100, random_state=0).fit(X, y)
    assert set(clf.classes_.tolist()) == set(np.unique(y).tolist())
    assert clf.predict(X).dtype == clf.classes_.dtype and clf.score(X, y) > 0.9
    two = len(clf.classes_) == 2
    assert clf.out_activation_ == ("logistic" if two else "softmax")
    assert clf.coefs_[-1].shape == (8, 1 if two else 3)
    assert clf.predict_proba(X).shape == (90, len(clf.classes_))


def test_multilabel_indicator_targets_get_logistic_outputs():
    X, y = blobs(120)
    Y = np.column_stack([y == 0, y != 1, X[:, 0] > 0]).astype(int)
    clf = MLPClassifier((16,), solver="lbfgs", max_iter=200, random_state=0).fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.classes_.tolist() == [0, 1, 2]
    assert clf.predict(X).shape == (120, 3) and clf.score(X, Y) > 0.8
    assert not np.allclose(clf.predict_proba(X).sum(1), 1)


def test_sample_weight_is_the_same_as_repeating_rows():
    X, y = blobs(60)
    counts = np.random.default_rng(1).integers(0, 3, len(y))
    params = dict(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=30, random_state=0,
                  dtype="float64")
    for cls, target in ((MLPClassifier, y), (MLPClassifier, y > 0), (MLPRegressor, X[:, 0])):
        weighted = cls(**params).fit(X, target, sample_weight=counts)
        repeated = cls(**params).fit(np.repeat(X, counts, 0), np.repeat(target, counts, 0))
        np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-9)
        np.testing.assert_allclose(weighted.weights_, repeated.weights_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("params, match", [
    ({"learning_rate_init": -0.1}, "learning_rate_init must be a positive number"),
    ({"hidden_layer_sizes": (10, 0)}, r"hidden_layer_sizes\[1\]"),
    ({"layers": []}, "layers must be a non-empty list"),
    ({"layers": [L.Dense(3), L.SquaredError()]}, r"layers\[1\]"),
    ({"block_size": 0}, "block_size must be an integer > 0"),
    ({"solver": "newton"}, "solver must be one of"),
    ({"activation": "swish"}, "unknown activation"),
    ({"alpha": -1}, "alpha"),
    ({"max_iter": 0}, "max_iter"),
    ({"batch_size": 0}, "batch_size"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"dtype": "float16"}, "dtype"),
    ({"momentum": 1.0}, "momentum"),
    ({"n_threads": 0}, "n_threads"),
    ({"init": "zeros"}, "init"),
    ({"learning_rate": 3}, "learning_rate must be one of"),
    ({"n_iter_no_change": 0}, "n_iter_no_change"),
    ({"random_state": -1}, "random_state"),
    ({"max_fun": 0}, "max_fun"),
])
def test_bad_hyperparameters_before_training(params, match):
    X, y = blobs(20)
    clf = MLPClassifier(**params)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "weights_")


def test_predict_checks():
    X, y = blobs()
    clf = MLPClassifier((4,), max_iter=1)
    with pytest.raises(NotFittedError, match="not fitted"):
        clf.predict(X)
    clf.fit(X, y)
    with pytest.raises(ValueError, match="X has 5 features, but MLPClassifier is expecting 6"):
        clf.predict(X[:, :5])
    Xn = X.copy()
    Xn[7, 2] = np.nan
    with pytest.raises(ValueError, match="(?s)Input X contains NaN.*row 7, column 2 is nan"):
        clf.predict(Xn)


def test_bad_regression_targets():
    X, y = regression(20)
    y[3] = np.inf
    with pytest.raises(ValueError, match=r"Input y contains infinity.*y: row 3 is inf"):
        MLPRegressor(max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="could not convert"):
        MLPRegressor(max_iter=1).fit(X, ["a"] * 20)
    with pytest.raises(ValueError, match="negative"):
        MLPRegressor(loss="poisson", max_iter=1).fit(X, -np.abs(regression(20)[1]))


def test_import_sparkann_needs_neither_pyspark_nor_sklearn():
    import subprocess
    import sys

    code = ("import sys; sys.modules['pyspark'] = None; sys.modules['sklearn'] = None\n"
            "import sparkann, numpy as np, pytest\n"
            "from sparkann import MLPClassifier, NotFittedError\n"
            "X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)\n"
            "with pytest.raises(NotFittedError, match='not fitted yet'):\n"
            "    MLPClassifier().predict(X)\n"
            "with pytest.raises(ValueError, match='Reshape your data'):\n"
            "    MLPClassifier().fit(X[:, 0], y)\n"
            "labels = np.array(['a', 'b'])[y]\n"
            "c = MLPClassifier((4,), solver='lbfgs', max_iter=20).fit(X, labels)\n"
            "assert c.get_params()['solver'] == 'lbfgs' and c.score(X, labels) > 0.8\n"
            "with pytest.raises(ValueError, match='X has 2 features, but MLPClassifier is "
            "expecting 3'):\n"
            "    c.predict(X[:, :2])\n"
            "assert 'pyspark' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_named_cosine_schedule_decays_over_the_whole_run(solver):
    X, y = blobs(250)
    clf = MLPClassifier((8,), solver=solver, batch_size=50, max_iter=4, tol=0, random_state=0,
                        learning_rate="cosine").fit(X, y)
    opt = clf._optimizer
    assert opt.t == 4 * 5 and opt.current_lr() == 0.0
    assert clf.set_params(learning_rate="warmup").get_params()["learning_rate"] == "warmup"
    with pytest.raises(ValueError, match="learning_rate must be one of"):
        clf.fit(X, y)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_a_network_larger_than_memory_is_refused_with_its_size(cls):
    X, y = blobs(n=20, n_features=4)
    with pytest.raises(MemoryError, match=r"the network \[4, 2000000, 2000000, \d\] has "
                                          r"4,000,01\d,000,00\d weights: [\d,]+ bytes"):
        cls(hidden_layer_sizes=(2000000, 2000000), max_iter=1).fit(X, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_regressor_names_the_row_and_value_of_a_target_too_large_for_its_dtype(dtype):
    X, y = regression(n=20)
    y = y.astype(np.float64)
    y[11] = 1e300 if dtype == "float32" else np.inf
    expected = ("row 11 is 1e+300, too large for float32" if dtype == "float32"
                else "Input y contains infinity or a value too large for dtype('float64'). "
                     "(y: row 11 is inf)")
    with pytest.raises(ValueError, match=re.escape(expected)):
        MLPRegressor(hidden_layer_sizes=(3,), max_iter=1, dtype=dtype).fit(X, y)


@pytest.mark.parametrize("make, data, solver", [
    (lambda s: MLPClassifier((8,), solver=s, alpha=0.0), blobs, "lbfgs"),
    (lambda s: MLPClassifier((8,), solver=s, alpha=0.0), blobs, "gd"),
    (lambda s: MLPRegressor(hidden_layer_sizes=(8,), solver=s, alpha=0.0), regression,
     "lbfgs"),
    (lambda s: MLPRegressor("poisson", (8,), solver=s, alpha=0.0),
     lambda: (regression()[0], np.exp(regression()[1] / 3)), "lbfgs"),
])
def test_validation_data_loss_is_the_training_loss_on_the_same_rows(make, data, solver):
    # full batch without L2: the objective is the data loss, so watching the training rows
    # themselves gives the same numbers. The watched loss is that of the weights after each
    # iteration: L-BFGS reports its objective there too, gd the one before its step.
    X, y = data()
    clf = make(solver).set_params(max_iter=15, random_state=0)
    clf.fit(X, y, validation_data=(X, y))
    h = clf.history_
    assert len(h) == clf.n_iter_ > 0
    if solver == "gd":
        np.testing.assert_allclose(h.val_loss[:-1], h.loss[1:], rtol=1e-9)
    else:
        np.testing.assert_allclose(h.val_loss, h.loss, rtol=1e-9)
    assert h.val_metric[-1] == pytest.approx(clf.score(X, y))


def test_validation_data_watches_without_changing_training():
    X, y = blobs(600)
    X, y, X_test, y_test = X[:400], y[:400], X[400:], y[400:]
    params = dict(solver="adam", max_iter=8, random_state=0, dropout=0.3, batch_size=50)
    plain = MLPClassifier((16,), **params).fit(X, y)
    watched = MLPClassifier((16,), **params).fit(X, y, validation_data=(X_test, y_test))
    np.testing.assert_array_equal(plain.weights_, watched.weights_)
    assert np.isnan(plain.history_.val_loss).all()
    val = np.array(watched.history_.val_loss)
    assert len(val) == 8 and np.isfinite(val).all() and val[-1] < val[0]
    # the last record is the final model's test loss and accuracy (dropout off)
    p = watched.predict_proba(X_test)
    assert val[-1] == pytest.approx(-np.mean(np.log(p[np.arange(200), y_test])), rel=1e-5)
    assert watched.history_.val_metric[-1] == pytest.approx(watched.score(X_test, y_test))


def test_validation_data_is_checked_like_the_training_data():
    X, y = blobs()
    clf = MLPClassifier((4,), max_iter=2)
    with pytest.raises(ValueError, match="validation_data must be"):
        clf.fit(X, y, validation_data=X)
    with pytest.raises(ValueError, match="expecting 6 features"):
        clf.fit(X, y, validation_data=(X[:, :5], y))
    with pytest.raises(ValueError, match="classes not in"):
        clf.fit(X, y, validation_data=(X, y + 5))
