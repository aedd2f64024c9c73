"""Saving and loading estimators: round trips and every kind of damaged file."""
import io
import json
import os
import zipfile

import numpy as np
import pytest

import sparkann
from sparkann import layers as L
from sparkann import optim
from sparkann.estimator import MLPClassifier, MLPRegressor
from sparkann.model_file import meta_digest
from sparkann.persist import ModelFileError, load, save


@pytest.fixture(autouse=True)
def one_blas_thread():
    import ann_core

    previous = ann_core.set_blas_threads(1)
    yield
    ann_core.set_blas_threads(previous)


@L.register("test_persist_swish")
class Swish(L.PythonActivation):
    def __init__(self, beta=1.0):
        self.beta = beta

    def function(self, x):
        return x / (1 + np.exp(-self.beta * x))

    def derivative(self, x, y):
        s = 1 / (1 + np.exp(-self.beta * x))
        return s + self.beta * x * s * (1 - s)


def data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)


@pytest.fixture
def fitted(tmp_path):
    X, y = data()
    clf = MLPClassifier(layers=[L.Dense(6), Swish(0.5), L.Dense(4), L.Tanh()], solver="adam",
                        learning_rate_init=0.01, learning_rate=optim.StepDecay(5, 0.5),
                        max_iter=5, random_state=0).fit(X, y)
    path = str(tmp_path / "model")
    clf.save(path)
    return clf, path, X


def test_round_trip_gives_identical_predictions(fitted):
    clf, path, X = fitted
    again = sparkann.load(path)
    assert type(again) is MLPClassifier
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(again.weights_, clf.weights_)
    assert again.get_params()["learning_rate"] == optim.StepDecay(5, 0.5)
    assert again.get_params()["layers"] == clf.layers
    assert again.history_.loss == clf.history_.loss and again.n_iter_ == 5
    assert again.classes_.tolist() == [0, 1, 2]
    # a loaded model can keep training
    again.set_params(warm_start=True).fit(X, np.asarray(data()[1]))
    assert again.n_iter_ == 5 and len(again.loss_curve_) == 10


def test_regressor_round_trip(tmp_path):
    X, _ = data()
    y = X[:, 0] - 2 * X[:, 3]
    reg = MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=20, dtype="float64",
                       random_state=0).fit(X, y)
    save(reg, tmp_path / "r")
    again = load(tmp_path / "r")
    assert again.predict(X).shape == (120,) and again.weights_.dtype == np.float64
    np.testing.assert_array_equal(again.predict(X), reg.predict(X))


def test_unfitted_or_unsupported_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        save(MLPClassifier(), tmp_path / "x")
    with pytest.raises(ValueError, match="expected an MLPClassifier or MLPRegressor"):
        save(object(), tmp_path / "x")


def edit_meta(path, change, seal=True):
    """Edit model.json; ``seal`` recomputes its digest, to reach the checks behind it."""
    meta_path = os.path.join(path, "model.json")
    with open(meta_path) as f:
        meta = json.load(f)
    change(meta)
    if seal:
        meta["sha256"] = meta_digest(meta)
    with open(meta_path, "w") as f:
        json.dump(meta, f)


def write_npz(path, **arrays):
    with open(os.path.join(path, "weights.npz"), "wb") as f:
        np.savez(f, **arrays)


def test_wrong_version(fitted):
    _, path, _ = fitted
    edit_meta(path, lambda m: m.update(version=99))
    with pytest.raises(ModelFileError, match="format version 99 is not supported"):
        load(path)


def test_not_a_model(tmp_path, fitted):
    with pytest.raises(ModelFileError, match="model.json is missing"):
        load(tmp_path / "nothing")
    _, path, _ = fitted
    edit_meta(path, lambda m: m.update(format="keras"))
    with pytest.raises(ModelFileError, match="not a sparkann model"):
        load(path)


def test_truncated_json(fitted):
    _, path, _ = fitted
    meta_path = os.path.join(path, "model.json")
    text = open(meta_path).read()
    open(meta_path, "w").write(text[: len(text) // 2])
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load(path)


def test_truncated_weights(fitted):
    _, path, _ = fitted
    weights_path = os.path.join(path, "weights.npz")
    raw = open(weights_path, "rb").read()
    open(weights_path, "wb").write(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load(path)


def test_truncated_array_inside_a_valid_zip(fitted):
    clf, path, _ = fitted
    buf = io.BytesIO()
    np.save(buf, clf.weights_)
    with zipfile.ZipFile(os.path.join(path, "weights.npz"), "w") as z:
        z.writestr("weights.npy", buf.getvalue()[:-40])
    with pytest.raises(ModelFileError, match="weights.npz"):
        load(path)


def test_pickled_object_is_refused(fitted, tmp_path):
    _, path, _ = fitted
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    write_npz(path, weights=np.array([Evil()], dtype=object))
    with pytest.raises(ModelFileError, match="pickled object"):
        load(path)
    assert not marker.exists()  # nothing ran


def test_wrong_shape_is_refused(fitted):
    clf, path, _ = fitted
    write_npz(path, weights=clf.weights_[:-1])
    with pytest.raises(ModelFileError, match="shape"):
        load(path)
    # consistent metadata but a topology that needs another number of weights
    write_npz(path, weights=clf.weights_[:-1])
    edit_meta(path, lambda m: m["weights"].update(shape=[len(clf.weights_) - 1],
                                                  sha256=__import__("hashlib").sha256(
                                                      clf.weights_[:-1].tobytes()).hexdigest()))
    with pytest.raises(ModelFileError, match="topology needs"):
        load(path)


def test_tampered_weights_are_detected(fitted):
    clf, path, _ = fitted
    w = clf.weights_.copy()
    w[3] += 1
    write_npz(path, weights=w)
    with pytest.raises(ModelFileError, match="SHA-256"):
        load(path)
    write_npz(path, weights=w, extra=w)
    with pytest.raises(ModelFileError, match="one array 'weights'"):
        load(path)


def test_tampered_metadata_is_detected(fitted):
    _, path, _ = fitted
    edit_meta(path, lambda m: m["params"].update(learning_rate_init=-1, bogus=1))
    with pytest.raises(ModelFileError, match="unknown hyperparameters"):
        load(path)
    edit_meta(path, lambda m: m["params"].pop("bogus"))
    with pytest.raises(ModelFileError, match="learning_rate_init must be a positive number"):
        load(path)
    edit_meta(path, lambda m: m["params"].update(learning_rate_init=0.01))
    edit_meta(path, lambda m: m["topology"]["layers"][0].update(type="os.system"))
    with pytest.raises(ModelFileError, match="unknown layer type 'os.system'"):
        load(path)
    edit_meta(path, lambda m: m.update(**{"class": "Popen"}))
    with pytest.raises(ModelFileError, match="unknown estimator class"):
        load(path)


def _set(**values):
    return lambda m: m.update(values)


@pytest.mark.parametrize("change", [
    lambda m: m["topology"]["layers"][3].update(type="sigmoid"),   # tanh -> sigmoid
    lambda m: m["params"].update(activation="identity"),
    _set(**{"class": "MLPRegressor"}),
    lambda m: m["params"].update(dtype="float64"),
    lambda m: m["weights"].update(dtype={"float64": "float32"}.get(m["weights"]["dtype"],
                                                                   "float64")),
    _set(classes=[0, 2, 1]),
    _set(n_iter=1),
    lambda m: m["history"]["loss"].__setitem__(0, 0.0),
    lambda m: m.pop("sha256"),
], ids=["activation", "param", "class", "dtype", "weights dtype", "classes", "n_iter",
        "history", "no digest"])
def test_any_edit_of_model_json_is_refused(fitted, change):
    _, path, _ = fitted
    edit_meta(path, change, seal=False)
    with pytest.raises(ModelFileError, match="does not match the SHA-256 recorded in it"):
        load(path)


@pytest.mark.parametrize("seal", [False, True], ids=["edited", "edited and resealed"])
@pytest.mark.parametrize("change, fragment", [
    (_set(weights="abc"), "'weights' is abc, expected a JSON object"),
    (lambda m: m["weights"].update(shape="abc"), "'weights.shape' is abc, expected a list"),
    (_set(history=[1]), "'history' is \\[1\\], expected a JSON object"),
    (lambda m: m["history"].update(loss="abc"), "history 'loss' must be a list of numbers"),
    (lambda m: m["history"].update(seconds=[1.0]), "history 'seconds' has 1 entries"),
    (_set(n_iter="abc"), "'n_iter' is abc, expected an integer"),
    (_set(n_iter=-3), "'n_iter' is -3, expected a count"),
    (_set(n_iter=2.5), "'n_iter' is 2.5, expected an integer"),
    (_set(targets_1d="yes"), "'targets_1d' is yes, expected true or false"),
    (lambda m: m.pop("history"), "missing fields \\['history'\\]"),
    (lambda m: m["params"].update(dtype="float16"), "dtype"),
])
def test_malformed_fields_are_model_file_errors(fitted, change, fragment, seal):
    _, path, _ = fitted
    edit_meta(path, change, seal=seal)
    with pytest.raises(ModelFileError, match=fragment if seal else None):
        load(path)


def test_deeply_nested_json_is_a_model_file_error(fitted):
    _, path, _ = fitted
    with open(os.path.join(path, "model.json"), "w") as f:
        f.write('{"format": "sparkann-model", "x": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load(path)


def test_files_of_the_format_without_a_digest_of_model_json_are_refused(fitted):
    _, path, _ = fitted
    edit_meta(path, lambda m: (m.pop("sha256"), m.update(version=1)), seal=False)
    with pytest.raises(ModelFileError,
                       match="version 1 is not supported.*train and save it again"):
        load(path)


def test_a_network_too_large_for_memory_in_a_file_is_a_model_file_error(fitted):
    _, path, _ = fitted
    edit_meta(path, lambda m: m["topology"]["layers"][0].update(n_out=2000000000))
    with pytest.raises(ModelFileError, match="weights: [\\d,]+ bytes"):
        load(path)
