"""The Spark estimators and models in a Spark Connect session (no SparkContext, RDD,
broadcast or Py4J): the same numbers as in a classic session.

The classic side is computed first, in the module's ``classic`` fixture: once the Connect
session is open this process speaks Connect only (see ``connect_server``).
"""
import os

import numpy as np
import pytest

pytest.importorskip("pyspark")
from sparkann.datasets import DEBIAN_FASHION_MNIST, load_fashion_mnist  # noqa: E402
from sparkann.spark import (MultilayerPerceptronClassificationModel,  # noqa: E402
                            MultilayerPerceptronClassifier)
from sparkann.spark.data import dataframe_from_numpy  # noqa: E402
from sparkann.topology import Topology  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST),
                                reason="needs Debian's dataset-fashion-mnist")

LAYERS = [784, 12, 10]
SEED = 11
# Small runs of every solver, float64 so that classic and Connect can be compared to 1e-9.
SOLVERS = {"l-bfgs": dict(maxIter=6), "gd": dict(maxIter=4, stepSize=0.5),
           "adam": dict(maxIter=3, stepSize=0.01), "sgd": dict(maxIter=3, stepSize=0.05)}


def _data():
    X, y = load_fashion_mnist(kind="train", dtype="float64")
    return X[:300], y[:300], X[300:420], y[300:420]


def _frames(session):
    X, y, Xt, yt = _data()
    return (dataframe_from_numpy(session, X, y, num_partitions=2),
            dataframe_from_numpy(session, Xt, yt, num_partitions=2))


def _probabilities(df):
    from pyspark.ml.functions import vector_to_array
    rows = df.select(vector_to_array("probability").alias("p")).collect()
    return np.array([r.p for r in rows])


def _estimator(solver):
    return MultilayerPerceptronClassifier(layers=LAYERS, solver=solver, seed=SEED,
                                          dtype="float64", blockSize=64, **SOLVERS[solver])


def _fixed_model():
    w = Topology.from_sizes(LAYERS).init_weights(seed=5, dtype="float64")
    return MultilayerPerceptronClassificationModel(weights=w).setLayers(LAYERS) \
        .setDtype("float64")


@pytest.fixture(scope="module")
def classic(spark):
    """Everything the tests compare with, computed in the classic session."""
    train, test = _frames(spark)
    out = {"fits": {}}
    for solver in SOLVERS:
        model = _estimator(solver).fit(train)
        out["fits"][solver] = (model.weights.toArray(), _probabilities(model.transform(test)))
    fixed = _fixed_model()
    out["probability"] = _probabilities(fixed.transform(test))
    out["accuracy"] = fixed.evaluate(test).accuracy
    weighted = _weighted_estimator().fit(_weighted(train))
    out["weighted"] = (weighted.weights.toArray(), weighted.evaluate(_weighted(test)).accuracy,
                       weighted.summary.objectiveHistory)
    return out


def _weighted(df):
    """``df`` with a weight column ``w`` of 0, 1 or 2 (from the label), made by Spark."""
    from pyspark.sql import functions as F
    return df.withColumn("w", (F.col("label") % 3).cast("double"))


def _weighted_estimator():
    return MultilayerPerceptronClassifier(layers=LAYERS, solver="l-bfgs", maxIter=5, seed=SEED,
                                          dtype="float64", blockSize=64, weightCol="w")


@pytest.fixture(scope="module")
def remote(classic, connect):
    """The Connect session, opened after the classic side is computed."""
    return connect


@pytest.fixture(scope="module")
def remote_frames(remote):
    train, test = _frames(remote)
    return train.cache(), test.cache()


def test_the_session_is_a_connect_session(remote):
    from sparkann.spark.session import is_connect
    assert is_connect(remote)
    with pytest.raises(Exception, match="sparkContext"):
        remote.sparkContext


def test_transform_and_evaluate_give_the_classic_numbers(classic, remote_frames):
    _, test = remote_frames
    model = _fixed_model()
    np.testing.assert_allclose(_probabilities(model.transform(test)), classic["probability"],
                               rtol=0, atol=1e-9)
    assert model.evaluate(test).accuracy == classic["accuracy"]


def test_save_and_load_in_a_connect_session(remote, remote_frames, tmp_path, classic):
    _, test = remote_frames
    path = str(tmp_path / "model")
    _fixed_model().save(path)
    loaded = MultilayerPerceptronClassificationModel.load(path)
    np.testing.assert_array_equal(loaded.weights.toArray(), _fixed_model().weights.toArray())
    np.testing.assert_allclose(_probabilities(loaded.transform(test)), classic["probability"],
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_fit_gives_the_classic_model(classic, remote_frames, solver):
    train, test = remote_frames
    model = _estimator(solver).fit(train)
    weights, probability = classic["fits"][solver]
    np.testing.assert_allclose(model.weights.toArray(), weights, rtol=0, atol=1e-9)
    np.testing.assert_allclose(_probabilities(model.transform(test)), probability, rtol=0,
                               atol=1e-9)
    assert len(model.summary.objectiveHistory) >= 1


def test_weight_column_gives_the_classic_model_and_metrics(classic, remote_frames):
    train, test = remote_frames
    model = _weighted_estimator().fit(_weighted(train))
    weights, accuracy, history = classic["weighted"]
    np.testing.assert_allclose(model.weights.toArray(), weights, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.summary.objectiveHistory, history, rtol=1e-9)
    assert model.evaluate(_weighted(test)).accuracy == pytest.approx(accuracy, abs=1e-12)


def test_bad_weights_name_column_and_row(remote):
    from pyspark.ml.linalg import Vectors
    df = remote.createDataFrame([(Vectors.dense([0.0, 1.0]), 0.0, 1.0),
                                 (Vectors.dense([1.0, 1.0]), 1.0, -3.0)],
                                ["features", "label", "w"]).coalesce(1)
    est = MultilayerPerceptronClassifier(layers=[2, 3, 2], maxIter=2, weightCol="w")
    with pytest.raises(ValueError, match=r"weight column 'w' \(partition 0\): row 1 is -3\.0"):
        est.fit(df)


def test_bad_rows_name_column_and_row(remote):
    from pyspark.ml.linalg import Vectors
    df = remote.createDataFrame([(Vectors.dense([0.0, 1.0]), 0.0),
                                 (Vectors.dense([float("nan"), 1.0]), 1.0)],
                                ["features", "label"]).coalesce(1)
    est = MultilayerPerceptronClassifier(layers=[2, 3, 2], maxIter=2)
    with pytest.raises(ValueError, match=r"features column 'features' .*row 1"):
        est.fit(df)


def test_pysparks_own_mlpc_doctest_passes_in_a_connect_session(remote, tmp_path):
    from mlpc_doctest import run_mlpc_doctest
    runner, kept, failures = run_mlpc_doctest(remote, tmp_path)
    assert runner.failures == 0, failures
    assert runner.tries == len(kept)


def test_pipeline_and_cross_validation_in_a_connect_session(remote_frames):
    from pyspark.ml import Pipeline
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import StandardScaler
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
    train, test = remote_frames
    mlpc = MultilayerPerceptronClassifier(layers=[784, 6, 10], featuresCol="scaled", seed=SEED)
    pipeline = Pipeline(stages=[StandardScaler(inputCol="features", outputCol="scaled"), mlpc])
    grid = (ParamGridBuilder().addGrid(mlpc.maxIter, [1, 2])
            .addGrid(mlpc.regParam, [0.0, 0.01]).build())
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    cv = CrossValidator(estimator=pipeline, estimatorParamMaps=grid, evaluator=evaluator,
                        numFolds=2, seed=SEED)
    model = cv.fit(test)    # the smaller frame: 2 folds x 4 fits, then the best refit
    assert len(model.avgMetrics) == 4
    assert all(0.0 <= m <= 1.0 for m in model.avgMetrics)
    best = model.bestModel.stages[-1]
    assert best.getMaxIter() in (1, 2)
    assert 0.0 <= evaluator.evaluate(model.transform(test)) <= 1.0
