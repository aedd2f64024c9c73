"""Acceptance 4: bad DataFrames fail before training, with a message naming the problem."""
import re

import numpy as np
import pytest

pytest.importorskip("pyspark")
from pyspark.ml.linalg import VectorUDT, Vectors  # noqa: E402
from pyspark.sql import types as T  # noqa: E402

from sparkann.spark import MultilayerPerceptronClassifier  # noqa: E402

VEC = T.StructType([T.StructField("features", VectorUDT()),
                    T.StructField("label", T.DoubleType())])


def _fit(df, **params):
    calls = []
    mlp = MultilayerPerceptronClassifier(layers=[3, 4, 2], maxIter=5, **params)
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


def test_wrong_vector_size(spark):
    rows = _rows()
    rows[7] = (Vectors.dense([1.0, 2.0]), 1.0)
    with pytest.raises(ValueError, match=r"features column 'features'.*row \d+ has 2 values, "
                                         r"expected 3"):
        _fit(_df(spark, rows))


def test_wrong_sparse_vector_size(spark):
    rows = _rows()
    rows[3] = (Vectors.sparse(5, [4], [1.0]), 0.0)
    with pytest.raises(ValueError, match=r"'features'.*sparse vector of size 5, expected 3"):
        _fit(_df(spark, rows))


def test_nan_feature(spark):
    rows = _rows()
    rows[5] = (Vectors.dense([0.0, float("nan"), 1.0]), 1.0)
    with pytest.raises(ValueError, match=r"'features'.*row \d+ holds nan at index 1"):
        _fit(_df(spark, rows))


def test_null_features(spark):
    rows = _rows()
    rows[2] = (None, 1.0)
    with pytest.raises(ValueError, match=r"features column 'features'.*row \d+ is null"):
        _fit(_df(spark, rows))


def test_null_label(spark):
    rows = _rows()
    rows[4] = (rows[4][0], None)
    with pytest.raises(ValueError, match=r"label column 'label'.*row \d+ is null"):
        _fit(_df(spark, rows))


def test_string_label(spark):
    schema = T.StructType([T.StructField("features", VectorUDT()),
                           T.StructField("label", T.StringType())])
    rows = [(r[0], str(r[1])) for r in _rows()]
    with pytest.raises(ValueError, match="label column 'label' must hold numbers.*found string"):
        _fit(_df(spark, rows, schema))


def test_fractional_label(spark):
    rows = _rows()
    rows[9] = (rows[9][0], 3.5)
    with pytest.raises(ValueError, match=r"label column 'label'.*is 3\.5, expected an integer "
                                         r"class index in \[0, 2\)"):
        _fit(_df(spark, rows))


@pytest.mark.parametrize("bad", [2.0, -1.0])
def test_label_outside_classes(spark, bad):
    rows = _rows()
    rows[11] = (rows[11][0], bad)
    with pytest.raises(ValueError, match=re.escape(f"is {bad!r}, expected an integer class index "
                                                   "in [0, 2)")):
        _fit(_df(spark, rows))


def test_empty_dataframe(spark):
    with pytest.raises(ValueError, match="no rows to train on"):
        _fit(spark.createDataFrame([], VEC))


def test_missing_columns(spark):
    df = _df(spark, _rows())
    with pytest.raises(ValueError, match=r"features column 'feats' is not in the DataFrame"):
        _fit(df, featuresCol="feats")
    with pytest.raises(ValueError, match=r"label column 'y' is not in the DataFrame"):
        _fit(df, labelCol="y")


def test_bad_params(spark):
    df = _df(spark, _rows())
    with pytest.raises(ValueError, match="solver must be one of"):
        MultilayerPerceptronClassifier(layers=[3, 2], solver="newton").fit(df)
    with pytest.raises(ValueError, match="layers must be set"):
        MultilayerPerceptronClassifier().fit(df)
    with pytest.raises(ValueError, match=r"initialWeights has 2 values, layers \[3, 2\] need 8"):
        MultilayerPerceptronClassifier(layers=[3, 2], initialWeights=[0.1, 0.2]).fit(df)


def test_transform_checks_vector_size(spark):
    model = MultilayerPerceptronClassifier(layers=[3, 2], maxIter=2).fit(_df(spark, _rows()))
    bad = spark.createDataFrame([(Vectors.dense([1.0]), 0.0)], VEC)
    with pytest.raises(Exception, match=r"features column 'features'.*has 1 values, expected 3"):
        model.transform(bad).collect()


def test_a_network_larger_than_memory_is_refused_before_training(spark):
    from sparkann.spark import MultilayerPerceptronRegressor
    df = _df(spark, _rows())
    for est in (MultilayerPerceptronClassifier(layers=[3, 2000000, 2000000, 2]),
                MultilayerPerceptronRegressor(layers=[3, 2000000, 2000000, 1])):
        with pytest.raises(MemoryError, match=r"the network \[3, 2000000, 2000000, \d\] has "
                                              r"4,000,01\d,000,00\d weights: [\d,]+ bytes"):
            est.fit(df)
