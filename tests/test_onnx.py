"""ONNX export: onnxruntime on the exported graph computes what the model computes, on 2,000
Fashion-MNIST test rows, for every native activation, both dtypes, classifiers and regressors,
single-machine and Spark models; and bad input is refused clearly."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sparkann import MLPClassifier, MLPRegressor, layers as L  # noqa: E402
from sparkann.datasets import DEBIAN_FASHION_MNIST, fashion_mnist_dir  # noqa: E402
from sparkann.onnx import to_onnx  # noqa: E402

ACTIVATIONS = sorted(L.ACTIVATION_NAMES)
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}

pytestmark = pytest.mark.skipif(
    not os.path.isdir(os.environ.get("SPARKANN_DATA", DEBIAN_FASHION_MNIST)),
    reason="needs the Fashion-MNIST files (dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def rows():
    """2,000 Fashion-MNIST test rows scaled to [0, 1] and their labels."""
    from sparkann.datasets import load_fashion_mnist
    fashion_mnist_dir()
    X, y = load_fashion_mnist(kind="test", dtype="float64")
    return X[:2000], y[:2000].astype(np.int64)


def run(proto, X):
    """``{output name: array}`` computed by onnxruntime."""
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: X})))


def close(got, want, dtype):
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def checked(model):
    proto = to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_estimators_match_onnxruntime(rows, activation, dtype):
    X, y = rows
    Xd = X.astype(dtype)
    clf = MLPClassifier(hidden_layer_sizes=(12, 8), activation=activation, max_iter=2,
                        dtype=dtype, random_state=1).fit(X, y)
    out = run(checked(clf), Xd)
    assert set(out) == {"label", "probabilities"}
    close(out["probabilities"], clf.predict_proba(X), dtype)
    assert out["label"].dtype == np.int64
    np.testing.assert_array_equal(out["label"], clf.predict(X))

    targets = np.stack([y, (y % 3) - 1.0], axis=1)
    reg = MLPRegressor(hidden_layer_sizes=(10,), activation=activation, max_iter=2,
                       dtype=dtype, random_state=2).fit(X, targets)
    out = run(checked(reg), Xd)
    assert list(out) == ["variable"] and out["variable"].shape == (2000, 2)
    close(out["variable"], reg.predict(X), dtype)


def test_batch_of_any_size(rows):
    X, y = rows
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0,
                        dtype="float32").fit(X, y)
    proto = checked(clf)
    for n in (1, 7, 2000):
        out = run(proto, X[:n].astype("float32"))
        close(out["probabilities"], clf.predict_proba(X[:n]), "float32")
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=1, random_state=0,
                       dtype="float32").fit(X, y.astype(float))
    out = run(checked(reg), X[:5].astype("float32"))
    assert out["variable"].shape == (5, 1)  # skl2onnx's shape for one target
    close(out["variable"][:, 0], reg.predict(X[:5]), "float32")


def test_poisson_regressor_exports(rows):
    X, y = rows
    reg = MLPRegressor(loss="poisson", hidden_layer_sizes=(6,), max_iter=2, random_state=0,
                       dtype="float64").fit(X, np.stack([y, y % 2], axis=1))
    out = run(checked(reg), X)
    close(out["variable"], reg.predict(X), "float64")


def test_native_layer_list_exports(rows):
    X, y = rows
    layers = [L.Dense(10), L.LeakyReLU(0.2), L.Tanh(), L.Dense(6), L.GELU()]
    clf = MLPClassifier(layers=layers, max_iter=1, dtype="float64", random_state=3).fit(X, y)
    out = run(checked(clf), X)
    close(out["probabilities"], clf.predict_proba(X), "float64")


def test_dropout_exports_as_the_identity(rows):
    X, y = rows
    layers = [L.Dropout(0.2), L.Dense(10), L.ReLU(), L.Dropout(0.5), L.Dense(6), L.Tanh()]
    clf = MLPClassifier(layers=layers, max_iter=2, dtype="float64", random_state=3).fit(X, y)
    out = run(checked(clf), X)
    close(out["probabilities"], clf.predict_proba(X), "float64")


def _spark_model(kind, activation, dtype, weights, layers, **params):
    from sparkann.spark import (MultilayerPerceptronClassificationModel,
                                MultilayerPerceptronRegressionModel)
    cls = (MultilayerPerceptronClassificationModel if kind == "class"
           else MultilayerPerceptronRegressionModel)
    model = cls(weights=weights)
    model._set(layers=layers, activation=activation, dtype=dtype, **params)
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_spark_models_match_onnxruntime(rows, activation, dtype):
    """The Spark models' own outputs (driver side; transform is compared below)."""
    pytest.importorskip("pyspark")
    X, y = rows
    Xd = X.astype(dtype)
    clf = MLPClassifier(hidden_layer_sizes=(12,), activation=activation, max_iter=2,
                        dtype=dtype, random_state=4).fit(X, y)
    model = _spark_model("class", activation, dtype, clf.weights_, [784, 12, 10])
    out = run(checked(model), Xd)
    assert list(out) == ["rawPrediction", "probability", "prediction"]
    raw = model._forward_raw(X)
    close(out["rawPrediction"], raw, dtype)
    close(out["probability"], clf.predict_proba(X), dtype)
    np.testing.assert_array_equal(out["prediction"], raw.argmax(axis=1))

    reg = MLPRegressor(hidden_layer_sizes=(10,), activation=activation, max_iter=2,
                       dtype=dtype, random_state=5).fit(X, y.astype(float))
    model = _spark_model("regress", activation, dtype, reg.weights_, [784, 10, 1])
    out = run(checked(model), Xd)
    assert out["prediction"].shape == (2000,)  # one target: a column of numbers, as Spark's
    close(out["prediction"], model._forward_raw(X)[:, 0], dtype)


def test_spark_transform_matches_onnxruntime(spark, rows):
    """A classifier (thresholds set, renamed columns) and a two-target regressor:
    onnxruntime equals transform's columns."""
    from pyspark.ml.functions import vector_to_array

    from sparkann.spark.data import dataframe_from_numpy
    X, y = rows
    df = dataframe_from_numpy(spark, X, y, num_partitions=2).cache()
    clf = MLPClassifier(hidden_layer_sizes=(12,), activation="elu", max_iter=2, random_state=6,
                        dtype="float32").fit(X, y)
    model = _spark_model("class", "elu", "float32", clf.weights_, [784, 12, 10],
                         probabilityCol="p", rawPredictionCol="",
                         thresholds=[0.5, 0.1, 1, 1, 1, 1, 1, 1, 0, 1])
    out = run(checked(model), X.astype("float32"))
    assert list(out) == ["p", "prediction"]
    got = model.transform(df).select(vector_to_array("p").alias("p"), "prediction").collect()
    close(out["p"], np.array([r.p for r in got]).astype("float32"), "float32")
    np.testing.assert_array_equal(out["prediction"], [r.prediction for r in got])
    assert (out["prediction"] == 8).all()  # threshold 0: that class wins

    reg = _spark_model("regress", "gelu", "float64",
                       np.random.default_rng(0).normal(0, 0.1, 784 * 5 + 5 + 5 * 2 + 2),
                       [784, 5, 2])
    out = run(checked(reg), X)
    got = reg.transform(df).select(vector_to_array("prediction").alias("v")).collect()
    close(out["prediction"], np.array([r.v for r in got]), "float64")
    df.unpersist()


# ----------------------------------------------------------------------------- bad input

def test_unfitted_model_refused():
    from sparkann import NotFittedError
    with pytest.raises(NotFittedError, match="MLPClassifier: it is not fitted yet"):
        to_onnx(MLPClassifier())
    pytest.importorskip("pyspark")
    from sparkann.spark import MultilayerPerceptronClassificationModel
    with pytest.raises(ValueError, match="has no weights"):
        to_onnx(MultilayerPerceptronClassificationModel())
    with pytest.raises(TypeError, match="expected a fitted sparkann"):
        to_onnx(object())


@L.register("onnx_test_cube")
class Cube(L.PythonActivation):
    def function(self, x):
        return x ** 3

    def derivative(self, x, y):
        return 3 * x ** 2


def test_python_layer_refused_by_name(rows):
    X, y = rows
    clf = MLPClassifier(layers=[L.Dense(4), Cube()], max_iter=1, random_state=0).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match=r"layer 1, Cube\(\) \(.*Cube\), is written in Python"):
        to_onnx(clf)


def test_logistic_outputs_and_other_labels_refused(rows):
    X, y = rows
    binary = MLPClassifier(hidden_layer_sizes=(4,), max_iter=1).fit(X[:50], y[:50] > 4)
    with pytest.raises(ValueError, match="its output is logistic"):
        to_onnx(binary)
    named = MLPClassifier(hidden_layer_sizes=(4,), max_iter=1).fit(X[:50], y[:50] + 1)
    with pytest.raises(ValueError, match=r"its classes \[1, 2, 3, 4, 5\] are not"):
        to_onnx(named)


def test_existing_path_refused(rows, tmp_path):
    X, y = rows
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=1, random_state=0).fit(X[:50], y[:50])
    path = tmp_path / "model.onnx"
    proto = to_onnx(clf, path)
    assert onnx.load(str(path)) == proto
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="model.onnx exists"):
        to_onnx(clf, path)
    assert path.read_bytes() == before
    with pytest.raises(FileExistsError, match="exists"):
        to_onnx(clf, tmp_path)  # a folder
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_onnx(clf, tmp_path / "missing" / "model.onnx")
