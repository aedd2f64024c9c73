"""Acceptance 4: bad DataFrames fail before training, with a message naming the problem;
in a classic and in a Spark Connect session (``any_spark``)."""
import re

import numpy as np
import pytest

pytest.importorskip("pyspark")
from pyspark.ml.linalg import VectorUDT, Vectors  # noqa: E402
from pyspark.sql import types as T  # noqa: E402

from sparkann.spark import MultilayerPerceptronClassifier  # noqa: E402

# The few tests that run in the classic session only (the rest run in both kinds).
CLASSIC = pytest.mark.parametrize("any_spark", ["classic"], indirect=True)
VEC = T.StructType([T.StructField("features", VectorUDT()),
                    T.StructField("label", T.DoubleType())])


def _fit(df, checkpoint=None, **params):
    calls = []
    mlp = MultilayerPerceptronClassifier(layers=[3, 4, 2], maxIter=5, **params)
    if checkpoint:
        mlp.setCheckpointDir(checkpoint)
    mlp.setCallback(lambda *a: calls.append(a))
    try:
        mlp.fit(df)
    finally:
        assert calls == [], "training started although the data is bad"


def _rows(n=20):
    rng = np.random.default_rng(3)
    return [(Vectors.dense(rng.normal(size=3)), float(i % 2)) for i in range(n)]


def _df(spark, rows, schema=VEC, parts=2):
    return spark.createDataFrame(rows, schema).repartition(parts)


def test_wrong_vector_size(any_spark):
    rows = _rows()
    rows[7] = (Vectors.dense([1.0, 2.0]), 1.0)
    with pytest.raises(ValueError, match=r"features column 'features'.*row \d+ has 2 values, "
                                         r"expected 3"):
        _fit(_df(any_spark, rows))


def test_wrong_sparse_vector_size(any_spark):
    rows = _rows()
    rows[3] = (Vectors.sparse(5, [4], [1.0]), 0.0)
    with pytest.raises(ValueError, match=r"'features'.*sparse vector of size 5, expected 3"):
        _fit(_df(any_spark, rows))


def test_nan_feature(any_spark):
    rows = _rows()
    rows[5] = (Vectors.dense([0.0, float("nan"), 1.0]), 1.0)
    with pytest.raises(ValueError, match=r"'features'.*row \d+ holds nan at index 1"):
        _fit(_df(any_spark, rows))


def test_null_features(any_spark):
    rows = _rows()
    rows[2] = (None, 1.0)
    with pytest.raises(ValueError, match=r"features column 'features'.*row \d+ is null"):
        _fit(_df(any_spark, rows))


def test_null_label(any_spark):
    rows = _rows()
    rows[4] = (rows[4][0], None)
    with pytest.raises(ValueError, match=r"label column 'label'.*row \d+ is null"):
        _fit(_df(any_spark, rows))


def test_string_label(any_spark):
    schema = T.StructType([T.StructField("features", VectorUDT()),
                           T.StructField("label", T.StringType())])
    rows = [(r[0], str(r[1])) for r in _rows()]
    with pytest.raises(ValueError, match="label column 'label' must hold numbers.*found string"):
        _fit(_df(any_spark, rows, schema))


def test_fractional_label(any_spark):
    rows = _rows()
    rows[9] = (rows[9][0], 3.5)
    with pytest.raises(ValueError, match=r"label column 'label'.*is 3\.5, expected an integer "
                                         r"class index in \[0, 2\)"):
        _fit(_df(any_spark, rows))


@pytest.mark.parametrize("any_spark, bad", [("classic", 2.0), ("classic", -1.0),
                                            ("connect", 2.0)], indirect=["any_spark"])
def test_label_outside_classes(any_spark, bad):
    rows = _rows()
    rows[11] = (rows[11][0], bad)
    with pytest.raises(ValueError, match=re.escape(f"is {bad!r}, expected an integer class index "
                                                   "in [0, 2)")):
        _fit(_df(any_spark, rows))


def test_empty_dataframe(any_spark):
    with pytest.raises(ValueError, match="no rows to train on"):
        _fit(any_spark.createDataFrame([], VEC))


def test_missing_columns(any_spark):
    df = _df(any_spark, _rows())
    with pytest.raises(ValueError, match=r"features column 'feats' is not in the DataFrame"):
        _fit(df, featuresCol="feats")
    with pytest.raises(ValueError, match=r"label column 'y' is not in the DataFrame"):
        _fit(df, labelCol="y")


def test_bad_params(any_spark):
    df = _df(any_spark, _rows())
    with pytest.raises(ValueError, match="solver must be one of"):
        MultilayerPerceptronClassifier(layers=[3, 2], solver="newton").fit(df)
    with pytest.raises(ValueError, match="layers must be set"):
        MultilayerPerceptronClassifier().fit(df)
    with pytest.raises(ValueError, match=r"initialWeights has 2 values, layers \[3, 2\] need 8"):
        MultilayerPerceptronClassifier(layers=[3, 2], initialWeights=[0.1, 0.2]).fit(df)


def test_transform_checks_vector_size(any_spark):
    model = MultilayerPerceptronClassifier(layers=[3, 2], maxIter=2) \
        .fit(_df(any_spark, _rows()))
    bad = any_spark.createDataFrame([(Vectors.dense([1.0]), 0.0)], VEC)
    with pytest.raises(Exception, match=r"features column 'features'.*has 1 values, expected 3"):
        model.transform(bad).collect()


def test_a_network_larger_than_memory_is_refused_before_training(any_spark):
    from sparkann.spark import MultilayerPerceptronRegressor
    df = _df(any_spark, _rows())
    for est in (MultilayerPerceptronClassifier(layers=[3, 2000000, 2000000, 2]),
                MultilayerPerceptronRegressor(layers=[3, 2000000, 2000000, 1])):
        with pytest.raises(MemoryError, match=r"the network \[3, 2000000, 2000000, \d\] has "
                                              r"4,000,01\d,000,00\d weights: [\d,]+ bytes"):
            est.fit(df)


# ---------------------------------------------------------- evaluate, transform, Params

@pytest.fixture(scope="module")
def model(any_spark):
    return MultilayerPerceptronClassifier(layers=[3, 4, 2], maxIter=3, seed=1) \
        .fit(_df(any_spark, _rows()))


NULLABLE = T.StructType([T.StructField("features", VectorUDT()),
                         T.StructField("label", T.DoubleType(), True)])


@pytest.mark.parametrize("any_spark, bad, shown", [
    ("classic", -1.0, "-1.0"), ("classic", 2.0, "2.0"), ("classic", 0.5, "0.5"),
    ("classic", float("nan"), "nan"), ("classic", None, None),
    ("connect", 0.5, "0.5"), ("connect", None, None),
], indirect=["any_spark"])
def test_evaluate_checks_labels_as_fit_does(any_spark, model, bad, shown):
    rows = _rows(40)
    rows[13] = (rows[13][0], bad)
    df = any_spark.createDataFrame(rows, NULLABLE).coalesce(1)
    what = "is null" if bad is None else f"is {shown}, expected an integer class index in"
    with pytest.raises(ValueError, match=rf"label column 'label' \(partition 0\): row 13 {what}"):
        model.evaluate(df).confusionMatrix


@CLASSIC   # not bad input (test_spark_connect compares evaluate in both kinds)
def test_confusion_matrix_adds_up_to_the_rows(any_spark, model):
    df = _df(any_spark, _rows(200), parts=3)
    m = model.evaluate(df).confusionMatrix
    assert m.shape == (2, 2) and m.sum() == 200
    truth = np.zeros((2, 2), np.int64)
    for r in model.transform(df).select("label", "prediction").collect():
        truth[int(r.label), int(r.prediction)] += 1
    np.testing.assert_array_equal(m, truth)


@pytest.mark.parametrize("features, fragment", [
    (Vectors.dense([1.0, 2.0]), r"row 5 has 2 values, expected 3"),
    (Vectors.dense([1.0, float("nan"), 2.0]), r"row 5 holds nan at index 1"),
])
def test_transform_bad_features_raise_a_value_error(any_spark, model, features, fragment):
    rows = _rows()
    rows[5] = (features, 0.0)
    df = any_spark.createDataFrame(rows, VEC).coalesce(1)
    pattern = r"features column 'features' \(partition 0\): " + fragment
    with pytest.raises(ValueError, match=pattern):
        model.transform(df).collect()
    with pytest.raises(ValueError, match=pattern):
        model.evaluate(df).accuracy


def test_regression_summary_bad_features_raise_a_value_error(any_spark):
    from sparkann.spark import MultilayerPerceptronRegressor
    reg = MultilayerPerceptronRegressor(layers=[3, 2, 1], maxIter=2) \
        .fit(_df(any_spark, _rows()))
    rows = _rows()
    rows[4] = (Vectors.dense([1.0, float("inf"), 2.0]), 0.0)
    from sparkann.spark.model import RegressionSummary
    bad = any_spark.createDataFrame(rows, VEC).coalesce(1)
    reg._checked_input = True  # as fit's own summary: the check is left to the summary's job
    predictions = reg.transform(bad)
    reg._checked_input = False
    with pytest.raises(ValueError, match=r"features column 'features' \(partition 0\): row 4 "
                                         r"holds inf"):
        RegressionSummary(predictions, "label", "prediction", 1).r2


def test_block_size_larger_than_the_data(any_spark, tmp_path):
    """blockSize 10**9 on 60 rows: workspaces hold the rows there are (fit, transform, a
    saved and loaded model, one-vector predict)."""
    from sparkann.spark import MultilayerPerceptronClassificationModel
    df = _df(any_spark, _rows(60), parts=2)
    for solver in ("l-bfgs", "adam"):
        big = MultilayerPerceptronClassifier(layers=[3, 4, 2], maxIter=2, seed=1, solver=solver,
                                             blockSize=10**9).fit(df)
        small = MultilayerPerceptronClassifier(layers=[3, 4, 2], maxIter=2, seed=1,
                                               solver=solver, blockSize=60).fit(df)
        np.testing.assert_array_equal(big._weights, small._weights)
    assert big.transform(df).count() == 60
    big.write().overwrite().save(str(tmp_path / "m"))
    again = MultilayerPerceptronClassificationModel.load(str(tmp_path / "m"))
    assert again.getBlockSize() == 10**9
    got = [r.prediction for r in again.transform(df).select("prediction").collect()]
    assert got == [r.prediction for r in small.transform(df).select("prediction").collect()]
    assert again.predict(df.head().features) in (0.0, 1.0)


@pytest.mark.parametrize("params, fragment", [
    (dict(regParam=float("nan")), "regParam must be a finite number"),
    (dict(stepSize=float("nan")), "stepSize must be a finite number"),
    (dict(thresholds=[0.5, -0.1]), "thresholds must be non-negative numbers"),
    (dict(thresholds=[float("nan"), 1.0]), "thresholds must be non-negative numbers"),
    (dict(thresholds=[0.0, 0.0]), "at most one zero"),
])
def test_bad_params_are_refused_before_any_job(any_spark, params, fragment):
    with pytest.raises(ValueError, match=fragment):
        _fit(_df(any_spark, _rows()), **params)


def test_negative_thresholds_refused_at_transform(any_spark, model):
    with pytest.raises(ValueError, match="non-negative"):
        model.copy({model.thresholds: [-1.0, 1.0]}).transform(_df(any_spark, _rows()))


def test_checkpoint_dir_that_is_a_file(any_spark, tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    with pytest.raises(ValueError, match=r"checkpointDir .*a-file' is a file"):
        _fit(_df(any_spark, _rows()), checkpoint=str(path))


def test_validation_indicator_all_false(any_spark):
    from pyspark.sql import functions as F
    df = _df(any_spark, _rows()).withColumn("val", F.lit(False))
    with pytest.raises(ValueError, match="the validation set is empty: validationIndicatorCol "
                                         "'val'"):
        _fit(df, validationIndicatorCol="val")
