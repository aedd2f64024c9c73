"""Dropout as an estimator parameter: ``dropout=`` of MLPClassifier and MLPRegressor and the
Spark Param ``dropout``: where the layers go, deterministic training, prediction without
dropping, rate 0 as no dropout, bad values refused naming the parameter, models saved and
loaded. (The engine's masks and gradients: test_dropout.py.)"""
import numpy as np
import pytest

from sparkann import layers as L
from sparkann.topology import Topology

def _blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 6)) + 2.0 * np.eye(3, 6)[y]
    return X, y


def test_estimator_dropout_places_the_layers():
    from sparkann import MLPClassifier
    X, y = _blobs()
    one = MLPClassifier((8, 5), dropout=0.5, max_iter=2, random_state=0).fit(X, y)
    rates = [(i, layer.rate) for i, layer in enumerate(one.topology_.layers)
             if isinstance(layer, L.Dropout)]
    assert rates == [(2, 0.5), (5, 0.5)]   # after each hidden layer's activation
    each = MLPClassifier((8, 5), dropout=(0.2, 0.0, 0.3), max_iter=2, random_state=0).fit(X, y)
    assert [type(x).__name__ for x in each.topology_.layers] == [
        "Dropout", "Dense", "ReLU", "Dense", "ReLU", "Dropout", "Dense", "SoftmaxCrossEntropy"]
    assert each.topology_.layers[0].rate == 0.2 and each.topology_.layers[5].rate == 0.3


@pytest.mark.filterwarnings("ignore::sparkann.skcompat.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_estimator_dropout_trains_deterministically_and_predicts_without_dropping(solver):
    from sparkann import MLPClassifier
    X, y = _blobs()
    fits = [MLPClassifier((16,), dropout=(0.1, 0.5), solver=solver, max_iter=30,
                          learning_rate_init=0.01, random_state=1).fit(X, y) for _ in range(2)]
    assert fits[0].weights_.tobytes() == fits[1].weights_.tobytes()
    plain = MLPClassifier((16,), solver=solver, max_iter=30, learning_rate_init=0.01,
                          random_state=1).fit(X, y)
    assert fits[0].weights_.tobytes() != plain.weights_.tobytes()
    p = fits[0].predict_proba(X)
    assert p.tobytes() == fits[0].predict_proba(X).tobytes()   # inference draws nothing
    net = Topology(6, [L.Dense(16), L.ReLU(), L.Dense(3), L.SoftmaxCrossEntropy()]).network(
        fits[0].weights_.dtype)
    assert p.tobytes() == net.forward(fits[0].weights_, np.ascontiguousarray(X)).tobytes()
    assert fits[0].score(X, y) > 0.85


@pytest.mark.filterwarnings("ignore::sparkann.skcompat.ConvergenceWarning")
def test_estimator_dropout_zero_is_no_dropout_bitwise():
    from sparkann import MLPClassifier, MLPRegressor
    X, y = _blobs()
    a = MLPClassifier((8,), max_iter=3, random_state=2).fit(X, y)
    b = MLPClassifier((8,), dropout=(0.0, 0.0), max_iter=3, random_state=2).fit(X, y)
    assert a.weights_.tobytes() == b.weights_.tobytes()
    r = MLPRegressor(hidden_layer_sizes=(8,), dropout=0, max_iter=3,
                     random_state=2).fit(X, y.astype(float))
    s = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=2).fit(X, y.astype(float))
    assert r.weights_.tobytes() == s.weights_.tobytes()


def test_estimator_dropout_with_sample_weights_and_poisson():
    """The paths that compute the loss in Python use the masks of the engine's gradient."""
    from sparkann import MLPClassifier, MLPRegressor
    X, y = _blobs()
    w = np.linspace(0.5, 2.0, len(y))
    clf = MLPClassifier((8,), dropout=0.3, max_iter=3, random_state=0).fit(X, y, w)
    assert np.isfinite(clf.loss_curve_).all()
    reg = MLPRegressor("poisson", (8,), dropout=0.3, max_iter=3, random_state=0)
    reg.fit(X, y.astype(float))
    assert np.isfinite(reg.loss_curve_).all()


@pytest.mark.parametrize("dropout, match", [
    (-0.1, "dropout must be a rate in \\[0, 1\\)"),
    (1.0, "dropout must be a rate in \\[0, 1\\)"),
    (float("nan"), "dropout must be a finite number"),
    ((0.2, 1.5, 0.5), "dropout must be a rate in \\[0, 1\\)"),
    ((0.2, 0.5), "dropout has 2 rates, expected 3: one for the input, then one for each of "
                 "the 2 hidden layers"),
    ("0.5", "dropout must be"),
])
def test_estimator_refuses_bad_dropout_naming_it(dropout, match):
    from sparkann import MLPClassifier
    X, y = _blobs(30)
    with pytest.raises(ValueError, match=match):
        MLPClassifier((4, 4), dropout=dropout, max_iter=1).fit(X, y)


def test_estimator_dropout_needs_a_mini_batch_solver_and_no_layers_list():
    from sparkann import MLPClassifier
    X, y = _blobs(30)
    for solver in ("lbfgs", "gd"):
        with pytest.raises(ValueError, match="dropout needs a mini-batch solver \\(sgd or "
                                             f"adam\\), received solver '{solver}'"):
            MLPClassifier((4,), dropout=0.5, solver=solver).fit(X, y)
        with pytest.raises(ValueError, match="a Dropout layer needs a mini-batch solver"):
            MLPClassifier(layers=[L.Dense(4), L.Dropout(0.5)], solver=solver).fit(X, y)
    with pytest.raises(ValueError, match="with layers, put Dropout layers in the list"):
        MLPClassifier(layers=[L.Dense(4)], dropout=0.5).fit(X, y)


def test_estimator_with_dropout_saves_and_loads(tmp_path):
    from sparkann import MLPClassifier, load
    X, y = _blobs()
    clf = MLPClassifier((8,), dropout=(0.2, 0.5), max_iter=3, random_state=0).fit(X, y)
    clf.save(tmp_path / "m")
    again = load(tmp_path / "m")
    assert again.topology_ == clf.topology_ and list(again.dropout) == [0.2, 0.5]
    assert again.predict_proba(X).tobytes() == clf.predict_proba(X).tobytes()


def test_spark_param_dropout_is_checked_as_on_one_machine():
    pytest.importorskip("pyspark")
    from sparkann.spark import MultilayerPerceptronClassifier, MultilayerPerceptronRegressor
    from sparkann.spark.model import build_topology

    for cls in (MultilayerPerceptronClassifier, MultilayerPerceptronRegressor):
        est = cls(layers=[4, 5, 5, 3], dropout=[0.2, 0.5, 0.5], solver="adam")
        est._validate_params()
        assert est.getDropout() == [0.2, 0.5, 0.5]
        assert cls(layers=[4, 5, 5, 3], dropout=0.5).dropoutRates() == [0.0, 0.5, 0.5]
        assert cls(layers=[4, 5, 3]).getDropout() == 0.0
        topology = build_topology([4, 5, 5, 3], "relu", "squared_error", est.dropoutRates())
        assert [x.rate for x in topology.layers if isinstance(x, L.Dropout)] == [0.2, 0.5, 0.5]
        for bad, match in [([0.2, 0.5], "dropout has 2 rates, expected 3"),
                           (float("nan"), "dropout must be a finite number"),
                           (-0.5, "dropout must be a rate in \\[0, 1\\)")]:
            with pytest.raises(ValueError, match=match):
                cls(layers=[4, 5, 5, 3], dropout=bad, solver="adam")._validate_params()
        with pytest.raises(ValueError, match="dropout needs a mini-batch solver"):
            cls(layers=[4, 5, 3], dropout=0.5)._validate_params()   # l-bfgs by default


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_training_resumed_from_a_saved_estimator_with_dropout_is_bitwise(solver):
    """Epochs of partial_fit with input and hidden dropout, the estimator pickled after the
    third and the unpickled copy trained on: bitwise the weights and loss curve of the run
    that never stopped (the optimizer state and the dropout seed travel with it)."""
    import pickle
    from sparkann import MLPClassifier
    X, y = _blobs(120)
    params = dict(hidden_layer_sizes=(8,), dropout=(0.2, 0.5), solver=solver, batch_size=32,
                  random_state=0, learning_rate_init=0.01)
    straight, resumed = MLPClassifier(**params), MLPClassifier(**params)
    for _ in range(6):
        straight.partial_fit(X, y, classes=[0, 1, 2])
    for _ in range(3):
        resumed.partial_fit(X, y, classes=[0, 1, 2])
    resumed = pickle.loads(pickle.dumps(resumed))
    for _ in range(3):
        resumed.partial_fit(X, y)
    assert resumed.weights_.tobytes() == straight.weights_.tobytes()
    assert resumed.loss_curve_ == straight.loss_curve_
