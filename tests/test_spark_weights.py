"""``weightCol`` on the Spark classifier and regressor: integer weights equal repeated rows
and zero weights equal removed rows (float64, 1e-9), the mini-batch solvers take the
weights too, bad weights are refused before training naming column and row, and the
summaries' metrics are weighted."""
import numpy as np
import pytest

pytest.importorskip("pyspark")
from pyspark.sql import types as T  # noqa: E402

from sparkann.spark import (MultilayerPerceptronClassifier,  # noqa: E402
                            MultilayerPerceptronRegressor)

N = 60


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, 4))
    label = ((X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)).astype(float)
    target = X[:, 0] - 0.5 * X[:, 2]
    counts = rng.integers(0, 4, N).astype(float)
    return X, label, target, counts


def _frame(spark, X, y, w=None, partitions=2):
    """Rows in order over ``partitions`` partitions (a local list's slices, no shuffle)."""
    schema = [T.StructField("features", T.ArrayType(T.DoubleType())),
              T.StructField("label", T.DoubleType())]
    rows = [(X[i].tolist(), float(y[i])) + (() if w is None else (w[i],)) for i in range(len(X))]
    if w is not None:
        schema.append(T.StructField("w", T.DoubleType()))
    rdd = spark.sparkContext.parallelize(rows, partitions)
    return spark.createDataFrame(rdd, T.StructType(schema))


CASES = {
    "classifier-lbfgs": (MultilayerPerceptronClassifier,
                         dict(layers=[4, 5, 3], solver="l-bfgs", maxIter=6, regParam=1e-3)),
    "regressor-gd": (MultilayerPerceptronRegressor,
                     dict(layers=[4, 5, 1], solver="gd", maxIter=5, stepSize=0.3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_integer_weights_equal_repeated_rows_and_zero_weights_removed_rows(spark, case):
    cls, params = CASES[case]
    X, label, target, counts = _data()
    y = label if cls is MultilayerPerceptronClassifier else target
    params = dict(params, dtype="float64", seed=3, blockSize=16)
    weighted = cls(weightCol="w", **params).fit(_frame(spark, X, y, counts.tolist()))
    reps = counts.astype(int)
    repeated = cls(**params).fit(_frame(spark, np.repeat(X, reps, 0), np.repeat(y, reps)))
    kept = counts > 0
    removed = cls(weightCol="w", **params).fit(
        _frame(spark, X[kept], y[kept], counts[kept].tolist()))
    for other in (repeated, removed):
        np.testing.assert_allclose(weighted.weights.toArray(), other.weights.toArray(),
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(weighted.summary.objectiveHistory,
                                   other.summary.objectiveHistory, rtol=1e-9)


def test_mini_batch_solvers_take_the_weights(spark):
    X, label, _, counts = _data(1)
    params = dict(layers=[4, 6, 3], solver="adam", maxIter=3, stepSize=0.05, dtype="float64",
                  seed=5, blockSize=8)
    plain = MultilayerPerceptronClassifier(**params).fit(_frame(spark, X, label))
    ones = MultilayerPerceptronClassifier(weightCol="w", **params).fit(
        _frame(spark, X, label, [1.0] * N))
    np.testing.assert_array_equal(plain.weights.toArray(), ones.weights.toArray())
    weighted = MultilayerPerceptronClassifier(weightCol="w", **params).fit(
        _frame(spark, X, label, counts.tolist()))
    assert np.isfinite(weighted.weights.toArray()).all()
    assert not np.allclose(weighted.weights.toArray(), plain.weights.toArray())


@pytest.mark.parametrize("bad, match", [
    (-1.0, r"weight column 'w' \(partition 0\): row 7 is -1\.0, expected a finite weight"),
    (float("nan"), r"weight column 'w' \(partition 0\): row 7 is nan"),
    (float("inf"), r"weight column 'w' \(partition 0\): row 7 is inf"),
    (None, r"weight column 'w' \(partition 0\): row 7 is null"),
])
def test_bad_weights_fail_before_training_naming_column_and_row(spark, bad, match):
    X, label, _, _ = _data()
    w = [1.0] * N
    w[7] = bad
    df = _frame(spark, X, label, w, partitions=1)
    calls = []
    est = MultilayerPerceptronClassifier(layers=[4, 3, 3], maxIter=2, weightCol="w")
    est.setCallback(lambda *args: calls.append(args))
    with pytest.raises(ValueError, match=match):
        est.fit(df)
    assert calls == []


def test_weight_column_type_and_all_zero_weights_are_refused(spark):
    X, label, _, _ = _data()
    est = MultilayerPerceptronClassifier(layers=[4, 3, 3], maxIter=2, weightCol="w")
    from pyspark.sql import functions as F
    with pytest.raises(ValueError, match=r"weight column 'w' must hold numbers, found string"):
        est.fit(_frame(spark, X, label).withColumn("w", F.lit("1")))
    with pytest.raises(ValueError, match="weight column 'nope' is not in the DataFrame"):
        est.copy({est.weightCol: "nope"}).fit(_frame(spark, X, label))
    with pytest.raises(ValueError, match=r"weight column 'w': every row's weight is 0"):
        est.fit(_frame(spark, X, label, [0.0] * N))


def _weighted_fit(spark, cls, X, y, w, n_out):
    """A short weighted fit on one partition, its frame, and (label, prediction, weight)."""
    df = _frame(spark, X, y, w.tolist(), partitions=1)
    model = cls(layers=[4, 5, n_out], maxIter=4, dtype="float64", weightCol="w", seed=1).fit(df)
    rows = model.transform(df).select("label", "prediction", "w").collect()
    return model, df, [np.array([r[i] for r in rows]) for i in range(3)]


def test_summaries_are_weighted(spark):
    X, label, target, counts = _data(2)
    model, df, (y, p, w) = _weighted_fit(spark, MultilayerPerceptronClassifier, X, label,
                                         counts, 3)
    summary = model.evaluate(df)
    assert summary.accuracy == pytest.approx(np.average(y == p, weights=w), rel=1e-12)
    assert model.summary.accuracy == pytest.approx(summary.accuracy, rel=1e-12)
    assert summary.confusionMatrix.sum() == pytest.approx(w.sum())
    unweighted = model.copy({model.weightCol: ""}).evaluate(df)
    assert unweighted.confusionMatrix.sum() == N

    reg, reg_df, (y, p, w) = _weighted_fit(spark, MultilayerPerceptronRegressor, X, target,
                                           counts, 1)
    s = reg.evaluate(reg_df)
    assert s.meanSquaredError == pytest.approx(np.average((y - p) ** 2, weights=w), rel=1e-9)
    assert s.meanAbsoluteError == pytest.approx(np.average(np.abs(y - p), weights=w), rel=1e-9)
    mean = np.average(y, weights=w)
    r2 = 1 - (w * (y - p) ** 2).sum() / (w * (y - mean) ** 2).sum()
    assert s.r2 == pytest.approx(r2, rel=1e-9)
    bad = _frame(spark, X, target, [1.0] * 5 + [-2.0] + [1.0] * (N - 6), partitions=1)
    with pytest.raises(ValueError, match=r"weight column 'w' \(partition 0\): row 5 is -2\.0"):
        reg.evaluate(bad)


def test_a_checkpoint_belongs_to_its_weights(spark, tmp_path):
    """Other weights on the same rows are another run: its checkpoint is refused."""
    from sparkann.checkpoint import CheckpointError
    X, label, _, counts = _data()
    directory = str(tmp_path / "ckpt")
    est = MultilayerPerceptronClassifier(layers=[4, 3, 3], solver="gd", maxIter=2,
                                         weightCol="w")
    est.setCheckpointDir(directory).setCheckpointInterval(1)
    est.fit(_frame(spark, X, label, counts.tolist()))
    other = counts.copy()
    other[[0, 1]] = other[[1, 0]] + 1
    with pytest.raises(CheckpointError, match="another training run"):
        est.fit(_frame(spark, X, label, other.tolist()))
    with pytest.raises(CheckpointError, match="another training run"):
        est.copy({est.weightCol: ""}).fit(_frame(spark, X, label))
