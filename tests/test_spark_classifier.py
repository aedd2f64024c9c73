"""The Spark classifier: parity with Spark MLlib (acceptance 2), ML pipelines and persistence."""
import numpy as np
import pytest

pytest.importorskip("pyspark")
from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.ml.classification import MultilayerPerceptronClassifier as MLlibMLPC  # noqa: E402
from pyspark.ml.evaluation import MulticlassClassificationEvaluator  # noqa: E402
from pyspark.ml.feature import StandardScaler  # noqa: E402
from pyspark.ml.functions import vector_to_array  # noqa: E402
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit  # noqa

from sparkann.datasets import DEBIAN_FASHION_MNIST, load_fashion_mnist  # noqa: E402
from sparkann.spark import (MultilayerPerceptronClassificationModel,  # noqa: E402
                            MultilayerPerceptronClassifier)
from sparkann.spark.data import dataframe_from_numpy  # noqa: E402
from sparkann.topology import Topology  # noqa: E402

pytestmark = pytest.mark.skipif(not __import__("os").path.isdir(DEBIAN_FASHION_MNIST),
                                reason="needs Debian's dataset-fashion-mnist")


@pytest.fixture(scope="module")
def fashion(spark):
    X, y = load_fashion_mnist(kind="train", dtype="float64")
    Xt, yt = load_fashion_mnist(kind="test", dtype="float64")
    return X, y, Xt, yt


def _probabilities(df, col="probability"):
    rows = df.select(vector_to_array(col).alias("p")).collect()
    return np.array([r.p for r in rows])


def test_probabilities_equal_mllib(spark, fashion):
    X, y, Xt, yt = fashion
    layers = [784, 32, 10]
    w0 = Topology.from_sizes(layers).init_weights(seed=3, dtype="float64")
    train = dataframe_from_numpy(spark, X[:1024], y[:1024], num_partitions=1)
    test = dataframe_from_numpy(spark, Xt[:2000], yt[:2000], num_partitions=2).cache()
    spark_model = MLlibMLPC(layers=layers, initialWeights=w0.tolist(), maxIter=3,
                            seed=1).fit(train)
    weights = spark_model.weights.toArray()
    ours = MultilayerPerceptronClassificationModel(weights=weights)
    ours._set(layers=layers, dtype="float64")
    theirs = spark_model.transform(test)
    mine = ours.transform(test)
    p_theirs, p_mine = _probabilities(theirs), _probabilities(mine)
    np.testing.assert_allclose(p_mine, p_theirs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(_probabilities(mine, "rawPrediction"),
                               _probabilities(theirs, "rawPrediction"), rtol=1e-9, atol=1e-9)
    pred_theirs = [r.prediction for r in theirs.select("prediction").collect()]
    pred_mine = [r.prediction for r in mine.select("prediction").collect()]
    assert pred_mine == pred_theirs
    x0 = test.head().features
    np.testing.assert_allclose(ours.predictProbability(x0).toArray(),
                               spark_model.predictProbability(x0).toArray(), atol=1e-9)
    assert ours.predict(x0) == spark_model.predict(x0)
    test.unpersist()


def test_lbfgs_objective_history_matches_mllib(spark, fashion):
    # 10 full blocks of 128 rows in one partition: both objectives are the mean over rows.
    X, y, _, _ = fashion
    layers = [784, 32, 10]
    w0 = Topology.from_sizes(layers).init_weights(seed=5, dtype="float64")
    train = dataframe_from_numpy(spark, X[:1280], y[:1280], num_partitions=1).cache()
    common = dict(layers=layers, initialWeights=w0.tolist(), maxIter=10, tol=0.0, seed=1)
    theirs = MLlibMLPC(**common).fit(train).summary().objectiveHistory
    ours_model = MultilayerPerceptronClassifier(dtype="float64", **common).fit(train)
    ours = ours_model.summary.objectiveHistory
    train.unpersist()
    # Spark's history starts with the loss at the initial weights; ours lists the loss after
    # each iteration.
    assert len(theirs) == 11 and len(ours) == 10
    theirs, ours = np.array(theirs[1:]), np.array(ours)
    # Breeze's L-BFGS and ours (m=10) take the same steps on the same objective here: the
    # histories agree to rounding (measured: 3e-16 relative). 1e-9 leaves room for BLAS
    # summation order.
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)
    assert ours[-1] < 0.5 * np.log(10)  # both trained well below the initial ln(10)


def test_initial_objective_equals_mllib(spark, fashion):
    X, y, _, _ = fashion
    layers = [784, 16, 10]
    w0 = Topology.from_sizes(layers).init_weights(seed=9, dtype="float64")
    train = dataframe_from_numpy(spark, X[:640], y[:640], num_partitions=1)
    theirs = MLlibMLPC(layers=layers, initialWeights=w0.tolist(), maxIter=1,
                       seed=1).fit(train).summary().objectiveHistory[0]
    from sparkann.spark.data import cache_blocks
    from sparkann.spark.gradient import DistributedLossGrad
    blocks = cache_blocks(train, "features", "label", 784, 10, dtype="float64")
    loss, _ = DistributedLossGrad(blocks, Topology.from_sizes(layers), "float64", 128)(w0)
    blocks.unpersist()
    assert abs(loss - theirs) <= 1e-12 * theirs


def test_pipeline_cross_validator_and_persistence(spark, fashion, tmp_path):
    X, y, Xt, yt = fashion
    train = dataframe_from_numpy(spark, X[:1500], y[:1500]).withColumnRenamed(
        "features", "raw").cache()
    test = dataframe_from_numpy(spark, Xt[:500], yt[:500]).withColumnRenamed("features", "raw")
    scaler = StandardScaler(inputCol="raw", outputCol="features")
    mlp = MultilayerPerceptronClassifier(layers=[784, 32, 10], solver="adam", maxIter=12,
                                         activation="relu", seed=4)
    grid = (ParamGridBuilder().addGrid(mlp.stepSize, [0.003, 0.01])
            .addGrid(mlp.regParam, [0.0, 1e-4]).build())
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    cv = CrossValidator(estimator=Pipeline(stages=[scaler, mlp]), estimatorParamMaps=grid,
                        evaluator=evaluator, numFolds=2, seed=2)
    cv_model = cv.fit(train)
    assert len(cv_model.avgMetrics) == 4
    best = cv_model.bestModel
    accuracy = evaluator.evaluate(best.transform(test))
    assert accuracy > 0.6

    path = str(tmp_path / "pipeline")
    best.write().overwrite().save(path)
    loaded = PipelineModel.load(path)
    np.testing.assert_array_equal(_probabilities(loaded.transform(test)),
                                  _probabilities(best.transform(test)))
    model = best.stages[-1]
    model.save(str(tmp_path / "model"))
    again = MultilayerPerceptronClassificationModel.load(str(tmp_path / "model"))
    assert again.uid == model.uid and again.getLayers() == model.getLayers()
    np.testing.assert_array_equal(again.weights.toArray(), model.weights.toArray())
    assert again.getActivation() == "relu" and again.getSolver() == "adam"
    mlp.write().overwrite().save(str(tmp_path / "estimator"))
    est = MultilayerPerceptronClassifier.load(str(tmp_path / "estimator"))
    assert est.getLayers() == [784, 32, 10] and est.getActivation() == "relu"

    tvs = TrainValidationSplit(estimator=mlp.copy({mlp.maxIter: 3}).setFeaturesCol("raw"),
                               estimatorParamMaps=grid[:2], evaluator=evaluator, trainRatio=0.7)
    assert len(tvs.fit(train).validationMetrics) == 2
    train.unpersist()


def test_summary_evaluate_callback_and_early_stopping(spark, fashion):
    X, y, Xt, yt = fashion
    from pyspark.sql import functions as F
    train = dataframe_from_numpy(spark, X[:2000], y[:2000]).withColumn(
        "is_val", F.rand(seed=1) < 0.2).cache()
    seen = []
    mlp = MultilayerPerceptronClassifier(layers=[784, 32, 10], solver="adam", maxIter=30,
                                         stepSize=0.01, activation="relu", seed=2,
                                         validationIndicatorCol="is_val",
                                         earlyStoppingPatience=2, tol=0.0)
    mlp.setCallback(lambda it, w, loss: seen.append((it, loss)))
    model = mlp.fit(train)
    summary = model.summary
    assert [it for it, _ in seen] == list(range(1, len(seen) + 1))
    assert summary.objectiveHistory == [loss for _, loss in seen]
    assert len(seen) < 30, "early stopping never triggered on an overfitting run"
    assert 0.7 < summary.accuracy <= 1.0
    assert abs(summary.weightedRecall - summary.accuracy) < 1e-12
    assert len(summary.precisionByLabel) == 10
    test = dataframe_from_numpy(spark, Xt[:1000], yt[:1000])
    assert model.evaluate(test).accuracy > 0.65
    assert model.numFeatures == 784 and model.numClasses == 10
    train.unpersist()


def test_dropout_trains_deterministically_never_drops_in_transform_and_saves(spark, fashion,
                                                                           tmp_path):
    X, y, Xt, yt = fashion
    train = dataframe_from_numpy(spark, X[:600], y[:600]).cache()
    test = dataframe_from_numpy(spark, Xt[:200], yt[:200])
    mlp = MultilayerPerceptronClassifier(layers=[784, 32, 10], solver="adam", maxIter=3,
                                         stepSize=0.003, activation="relu", seed=7,
                                         dropout=[0.2, 0.5])
    first, second = mlp.fit(train), mlp.fit(train)
    w = first.weights.toArray()
    np.testing.assert_array_equal(second.weights.toArray(), w)   # the same masks
    plain = mlp.copy({mlp.dropout: 0.0}).fit(train)
    assert not np.array_equal(plain.weights.toArray(), w)
    net = Topology.from_sizes([784, 32, 10], "relu").network("float32")
    expected = net.forward(w.astype(np.float32), np.ascontiguousarray(Xt[:200],
                                                                      dtype=np.float32))
    np.testing.assert_allclose(_probabilities(first.transform(test)), expected, rtol=1e-5,
                               atol=1e-7)   # transform draws no mask
    first.save(str(tmp_path / "model"))
    again = MultilayerPerceptronClassificationModel.load(str(tmp_path / "model"))
    assert again.getDropout() == [0.2, 0.5] and again.topology.spec()[0] == ("dropout", 0.2)
    np.testing.assert_array_equal(_probabilities(again.transform(test)),
                                  _probabilities(first.transform(test)))
    train.unpersist()


def test_cosine_step_size_schedule_steps_each_round_by_its_factor(spark, fashion):
    # plain SGD, one partition holding one block, one step a round: round r moves the
    # weights by exactly stepSize * (1 + cos(pi r / maxIter)) / 2 times the gradient, so
    # the cosine run equals constant-step runs chained with those step sizes
    X, y, _, _ = fashion
    train = dataframe_from_numpy(spark, X[:100], y[:100], num_partitions=1).cache()
    common = dict(layers=[784, 8, 10], solver="sgd", momentum=0.0, syncSteps=1,
                  blockSize=128, activation="relu", dtype="float64", seed=3, tol=0.0)
    cosine = MultilayerPerceptronClassifier(maxIter=3, stepSize=0.1,
                                            stepSizeSchedule="cosine", **common).fit(train)
    w = MultilayerPerceptronClassifier(maxIter=0, **common).fit(train).weights
    for factor in (1.0, 0.75, 0.25):
        w = MultilayerPerceptronClassifier(maxIter=1, stepSize=0.1 * factor, initialWeights=w,
                                           **common).fit(train).weights
    np.testing.assert_allclose(cosine.weights.toArray(), w.toArray(), rtol=1e-12, atol=1e-15)
    constant = MultilayerPerceptronClassifier(maxIter=3, stepSize=0.1, **common).fit(train)
    assert not np.allclose(constant.weights.toArray(), w.toArray())
    with pytest.raises(ValueError, match="stepSizeSchedule must be one of"):
        MultilayerPerceptronClassifier(stepSizeSchedule="linear", **common).fit(train)
    train.unpersist()


@pytest.mark.parametrize("solver", ["l-bfgs", "gd"])
def test_one_query_fit_equals_a_job_per_gradient_in_a_classic_session(spark, fashion, solver,
                                                                       caplog):
    """A classic session runs an eligible full-batch fit in one barrier query; with
    ``spark.sparkann.oneQueryFit=false`` (set at run time) it runs a treeAggregate job per
    gradient: the same model, in float64 to 1e-9."""
    import logging

    from sparkann.spark import one_query
    X, y, _, _ = fashion
    df = dataframe_from_numpy(spark, X[:400], y[:400], num_partitions=2)
    est = MultilayerPerceptronClassifier(layers=[784, 16, 10], solver=solver, maxIter=5,
                                         stepSize=0.5, seed=3, dtype="float64")
    fits = {}
    for one in (True, False):
        if not one:
            spark.conf.set(one_query.CONF, "false")
        try:
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="sparkann.spark"):
                fits[one] = est.fit(df)
        finally:
            spark.conf.unset(one_query.CONF)
        assert ("fitted in one query" in caplog.text) == one
    np.testing.assert_allclose(fits[True].weights.toArray(), fits[False].weights.toArray(),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(fits[True].summary.objectiveHistory,
                               fits[False].summary.objectiveHistory, rtol=1e-12)
    assert len(fits[True].gradient_seconds) == len(fits[False].gradient_seconds)
