"""The Spark estimators and models in a Spark Connect session (no SparkContext, RDD,
broadcast or Py4J): the same numbers as in a classic session.

The classic side is computed first, in the module's ``classic`` fixture: once the Connect
session is open this process speaks Connect only (see ``connect_server``).
"""
import logging
import os

import numpy as np
import pytest

pytest.importorskip("pyspark")
from sparkann.datasets import DEBIAN_FASHION_MNIST, load_fashion_mnist  # noqa: E402
from sparkann.spark import (MultilayerPerceptronClassificationModel,  # noqa: E402
                            MultilayerPerceptronClassifier, StackedAutoencoder,
                            StackedAutoencoderModel)
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


def _early_stopping_fit(train, seen):
    """adam with every fifth row held out for validation, patience 2, and a callback that
    records (iteration, loss); returns the weights and the summary's histories."""
    from pyspark.sql import functions as F
    framed = train.withColumn("is_val", F.monotonically_increasing_id() % 5 == 0)
    est = MultilayerPerceptronClassifier(layers=LAYERS, solver="adam", stepSize=0.05,
                                         maxIter=25, tol=0.0, seed=SEED, dtype="float64",
                                         blockSize=64, validationIndicatorCol="is_val",
                                         earlyStoppingPatience=2)
    est.setCallback(lambda it, w, loss: seen.append((it, loss)))
    model = est.fit(framed)
    return model.weights.toArray(), model.summary.objectiveHistory


def _autoencoder_run(train, test, path):
    """A stacked autoencoder (two layers, then fine-tuning) fitted on ``train`` and saved to
    ``path``; its weights, errors and histories, and the codes and reconstructions of
    ``test``."""
    model = StackedAutoencoder(layers=[784, 6, 3], maxIter=3, fineTune=True, seed=SEED,
                               dtype="float64", blockSize=64).fit(train)
    model.write().overwrite().save(path)
    return {"weights": model.weights.toArray(), "history": model.history,
            "errors": model.reconstructionErrors, "fine_tune_error": model.fineTuneError,
            **_codes(model, test)}


def _codes(model, test):
    from pyspark.ml.functions import vector_to_array
    decoded = model.decode(model.transform(test)).select(
        vector_to_array("encoded").alias("c"), vector_to_array("decoded").alias("d")).collect()
    return {"codes": np.array([r.c for r in decoded]), "decoded": np.array([r.d for r in decoded]),
            "test_error": model.reconstructionError(test)}


@pytest.fixture(scope="module")
def classic(spark, tmp_path_factory):
    """Everything the tests compare with, computed in the classic session."""
    train, test = _frames(spark)
    out = {"fits": {}}
    for solver in SOLVERS:
        model = _estimator(solver).fit(train)
        out["fits"][solver] = (model.weights.toArray(), _probabilities(model.transform(test)))
    out["early"] = _early_stopping_fit(train, [])
    fixed = _fixed_model()
    out["probability"] = _probabilities(fixed.transform(test))
    out["accuracy"] = fixed.evaluate(test).accuracy
    weighted = _weighted_estimator().fit(_weighted(train))
    out["weighted"] = (weighted.weights.toArray(), weighted.evaluate(_weighted(test)).accuracy,
                       weighted.summary.objectiveHistory)
    out["autoencoder_path"] = str(tmp_path_factory.mktemp("classic") / "autoencoder")
    out["autoencoder"] = _autoencoder_run(train, test, out["autoencoder_path"])
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


ONE_QUERY = "fitted in one query"


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_fit_gives_the_classic_model(classic, remote_frames, solver, caplog):
    train, test = remote_frames
    with caplog.at_level(logging.INFO, logger="sparkann.spark"):
        model = _estimator(solver).fit(train)
    weights, probability = classic["fits"][solver]
    np.testing.assert_allclose(model.weights.toArray(), weights, rtol=0, atol=1e-9)
    np.testing.assert_allclose(_probabilities(model.transform(test)), probability, rtol=0,
                               atol=1e-9)
    assert len(model.summary.objectiveHistory) >= 1
    # The full-batch solvers ran whole in one query (the classic fit: a job per gradient).
    full_batch = solver in ("l-bfgs", "gd")
    assert (ONE_QUERY in caplog.text) == full_batch
    if full_batch:
        assert len(model.gradient_seconds) >= len(model.summary.objectiveHistory)


def _trainer_run(train, remove_a_file=False):
    """l-bfgs by the Trainer over freshly cached blocks; with ``remove_a_file``, a partition's
    stacked file is deleted first (as if its task ran on another executor)."""
    from sparkann.spark.data import cache_blocks
    from sparkann.spark.train import Trainer
    topology = Topology.from_sizes(LAYERS)
    blocks = cache_blocks(train, "features", "label", LAYERS[0], LAYERS[-1], dtype="float64",
                          block_size=64)
    try:
        if remove_a_file:
            os.unlink(next(h for h in blocks.handle_rows if h[2] > 0)[1])
        trainer = Trainer(blocks, topology, dtype="float64", block_size=64, solver="l-bfgs",
                          max_iter=4, tol=1e-6, step_size=0.03, reg_param=0.0, seed=SEED,
                          sync_steps=0, momentum=0.9)
        return trainer.run(topology.init_weights(seed=SEED, dtype="float64")), trainer.history
    finally:
        blocks.unpersist()


def test_a_stacked_file_not_found_takes_the_job_per_gradient_path(remote_frames, caplog):
    train, _ = remote_frames
    with caplog.at_level(logging.INFO, logger="sparkann.spark"):
        whole, whole_history = _trainer_run(train)
        assert ONE_QUERY in caplog.text
        caplog.clear()
        away, away_history = _trainer_run(train, remove_a_file=True)
    assert "a job per gradient instead" in caplog.text and ONE_QUERY not in caplog.text
    np.testing.assert_allclose(away, whole, rtol=0, atol=1e-9)
    np.testing.assert_allclose(away_history, whole_history, rtol=1e-12)


def test_more_partitions_than_task_slots_take_the_job_per_gradient_path(remote, caplog):
    X, y, _, _ = _data()
    df = dataframe_from_numpy(remote, X[:120], y[:120], num_partitions=3)   # local[2]
    with caplog.at_level(logging.INFO, logger="sparkann.spark"):
        model = MultilayerPerceptronClassifier(layers=LAYERS, maxIter=2, seed=SEED).fit(df)
    assert ONE_QUERY not in caplog.text and len(model.gradient_seconds) >= 2


def test_divergence_in_one_query_raises_as_a_job_per_gradient_does(remote, remote_frames,
                                                                       caplog):
    from sparkann.optim import DivergenceError
    from sparkann.spark import one_query
    train, _ = remote_frames
    est = MultilayerPerceptronClassifier(layers=LAYERS, solver="gd", stepSize=1e30, maxIter=5,
                                         seed=SEED, blockSize=64, activation="relu")
    errors = []
    for per_query in (False, True):
        if per_query:
            remote.conf.set(one_query.CONF, "false")
        try:
            with caplog.at_level(logging.INFO, logger="sparkann.spark"):
                with pytest.raises(DivergenceError) as info:
                    est.fit(train)
        finally:
            remote.conf.unset(one_query.CONF)
        assert (ONE_QUERY in caplog.text) != per_query
        caplog.clear()
        errors.append(info.value)
    assert str(errors[0]) == str(errors[1]) and errors[0].iteration == errors[1].iteration
    np.testing.assert_array_equal(errors[0].weights, errors[1].weights)


def test_stacked_autoencoder_gives_the_classic_model_codes_and_files(classic, remote_frames,
                                                                    tmp_path):
    train, test = remote_frames
    expected = classic["autoencoder"]
    got = _autoencoder_run(train, test, str(tmp_path / "autoencoder"))
    np.testing.assert_allclose(got["weights"], expected["weights"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got["history"], expected["history"], rtol=1e-9)
    np.testing.assert_allclose(got["errors"], expected["errors"], rtol=1e-9)
    assert got["fine_tune_error"] == pytest.approx(expected["fine_tune_error"], rel=1e-9)
    for key in ("codes", "decoded"):
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-9)
    assert got["test_error"] == pytest.approx(expected["test_error"], rel=1e-9)
    # files written by either session load in this one and give the same numbers
    for path in (str(tmp_path / "autoencoder"), classic["autoencoder_path"]):
        loaded = StackedAutoencoderModel.load(path)
        np.testing.assert_array_equal(loaded.weights.toArray(), got["weights"]
                                      if path.startswith(str(tmp_path)) else expected["weights"])
        again = _codes(loaded, test)
        np.testing.assert_allclose(again["codes"], expected["codes"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(again["decoded"], expected["decoded"], rtol=0, atol=1e-9)


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


def test_early_stopping_and_callback_give_the_classic_run(classic, remote_frames):
    train, _ = remote_frames
    seen = []
    weights, history = _early_stopping_fit(train, seen)
    assert [it for it, _ in seen] == list(range(1, len(seen) + 1))
    assert history == [loss for _, loss in seen]
    assert len(seen) < 25, "early stopping never triggered"
    np.testing.assert_allclose(weights, classic["early"][0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(history, classic["early"][1], rtol=0, atol=1e-9)


def test_progress_callback_reports_every_round(remote_frames):
    import io
    from sparkann.progress import TrainingProgress
    train, _ = remote_frames
    out = io.StringIO()
    with TrainingProgress(3, stream=out) as progress:
        _estimator("adam").setCallback(progress).fit(train)
    assert len(progress.round_seconds) == 3
    assert out.getvalue().count("loss") >= 3, out.getvalue()


def test_train_validation_split_and_pipeline_persistence_in_a_connect_session(
        remote_frames, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import StandardScaler
    from pyspark.ml.tuning import ParamGridBuilder, TrainValidationSplit
    _, test = remote_frames
    mlpc = MultilayerPerceptronClassifier(layers=[784, 6, 10], featuresCol="scaled", seed=SEED,
                                          maxIter=2)
    pipeline = Pipeline(stages=[StandardScaler(inputCol="features", outputCol="scaled"), mlpc])
    grid = ParamGridBuilder().addGrid(mlpc.regParam, [0.0, 0.01]).build()
    tvs = TrainValidationSplit(estimator=pipeline, estimatorParamMaps=grid, trainRatio=0.7,
                               evaluator=MulticlassClassificationEvaluator(), seed=SEED)
    model = tvs.fit(test)
    assert len(model.validationMetrics) == 2
    best = model.bestModel
    best.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    np.testing.assert_array_equal(_probabilities(loaded.transform(test)),
                                  _probabilities(best.transform(test)))
    mlpc.write().overwrite().save(str(tmp_path / "estimator"))
    again = MultilayerPerceptronClassifier.load(str(tmp_path / "estimator"))
    assert again.getLayers() == [784, 6, 10] and again.getFeaturesCol() == "scaled"


def test_scaling_calibration_refuses_a_connect_session_and_says_why(remote):
    from sparkann.spark import calibration
    for call in (lambda: calibration.worker_flop_rate(remote, [4, 3, 2], 2),
                 lambda: calibration.spark_observations(remote, 2, [8], [8]),
                 lambda: calibration.read_observations(remote, 2, 4, rows=(10,))):
        with pytest.raises(TypeError, match="Spark Connect session does not have: calibrate "
                                            "with a classic SparkSession"):
            call()
    # the random training frame of the benchmarks is DataFrame-only: it works under Connect
    rows = calibration.random_frame(remote, 5, 3, rows=31, partitions=3, seed=2).collect()
    assert len(rows) == 31 and all(len(r.features) == 5 for r in rows)


def _stacked_folders(session):
    """The stacked-data folders (``sparkann-<token>``) in the executors' local directory."""
    def listing(batches):
        import pyarrow as pa
        from sparkann.spark import resident
        for _ in batches:
            pass
        root = resident._root()
        names = [n for n in os.listdir(root) if n.startswith(resident.PREFIX)]
        yield pa.RecordBatch.from_arrays([pa.array(names, pa.string())], names=["name"])

    return sorted({r.name for r in session.range(0, 4, 1, 4).mapInArrow(
        listing, "name string").collect()})


def test_a_fit_leaves_no_stacked_file_on_the_executors(remote):
    from sparkann.spark.data import _default_parallelism
    assert _default_parallelism(remote) == 2     # local[2]
    X, y, _, _ = _data()
    df = dataframe_from_numpy(remote, X[:100], y[:100])     # default partition count
    MultilayerPerceptronClassifier(layers=LAYERS, maxIter=2, seed=SEED).fit(df)
    assert _stacked_folders(remote) == []


def test_overwrite_replaces_a_saved_model_in_a_connect_session(remote, tmp_path):
    path = str(tmp_path / "model")
    _fixed_model().save(path)
    w = Topology.from_sizes(LAYERS).init_weights(seed=6, dtype="float64")
    other = MultilayerPerceptronClassificationModel(weights=w).setLayers(LAYERS) \
        .setDtype("float64")
    with pytest.raises(Exception, match="already exists"):
        other.save(path)
    other.write().overwrite().save(path)
    loaded = MultilayerPerceptronClassificationModel.load(path)
    np.testing.assert_array_equal(loaded.weights.toArray(), w)
