"""transform's lean path: vector columns written by the executors as Spark ML vectors, and the
JVM-side pre-check that lets clean data skip the Python check pass while every bad row still
gets its ValueError, naming column and row."""
import numpy as np
import pytest

pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def model():
    from sparkann.spark import MultilayerPerceptronClassificationModel
    from sparkann.topology import Topology
    model = MultilayerPerceptronClassificationModel(
        weights=Topology.from_sizes([3, 4, 2]).init_weights(seed=0, dtype="float64"))
    model._set(layers=[3, 4, 2], activation="tanh")
    return model


# float64 products of 30 rows and of one row agree to rounding; in float32 a BLAS may round
# them differently by an ulp (MKL does on AMD CPUs, where it takes its generic kernels).
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_vector_columns_and_values(spark, model, dtype, rtol):
    from pyspark.ml.linalg import Vectors, VectorUDT
    model = model.copy({model.dtype: dtype})
    rows = [(Vectors.dense([0.1 * i, -0.2 * i, 1.0]),) for i in range(30)]
    rows[3] = (Vectors.sparse(3, [1], [0.5]),)
    out = model.transform(spark.createDataFrame(rows, ["features"]))
    assert isinstance(out.schema["probability"].dataType, VectorUDT)
    assert isinstance(out.schema["rawPrediction"].dataType, VectorUDT)
    for (x,), r in zip(rows, out.collect()):
        np.testing.assert_allclose(r.probability.toArray(),
                                   model.predictProbability(x).toArray(), rtol=rtol)
        np.testing.assert_allclose(r.rawPrediction.toArray(), model.predictRaw(x).toArray(),
                                   rtol=rtol)
        assert r.prediction == model.predict(x)

    from sparkann.spark import MultilayerPerceptronRegressionModel
    reg = MultilayerPerceptronRegressionModel(weights=np.linspace(-1, 1, 3 * 2 + 2))
    reg._set(layers=[3, 2])
    got = reg.transform(spark.createDataFrame(rows[:4], ["features"])).collect()
    assert isinstance(got[0].prediction.toArray(), np.ndarray)
    np.testing.assert_allclose([r.prediction.toArray() for r in got],
                               [reg.predict(x).toArray() for (x,) in rows[:4]], rtol=1e-6)


@pytest.mark.parametrize("row, dtype, message", [
    ([1.0, 1e39, 2.0], "float32", r"row 2 holds inf at index 1"),   # too large for float32
    ([1.0, None, 2.0], "float64", r"row 2 holds a null at index 1"),
    ([1.0, 2.0], "float64", r"row 2 has 2 values, expected 3"),
    (None, "float64", r"row 2 is null"),
])
def test_bad_array_rows_still_named(spark, model, row, dtype, message):
    from pyspark.sql import types as T
    schema = T.StructType([T.StructField("features", T.ArrayType(T.DoubleType()))])
    rows = [([0.0, 1.0, 2.0],)] * 5
    rows[2] = (row,)
    df = spark.createDataFrame(rows, schema).coalesce(1)
    with pytest.raises(ValueError, match=r"features column 'features' \(partition 0\): "
                                         + message):
        model.copy({model.dtype: dtype}).transform(df)


def test_other_columns_stay_and_the_network_runs_once_per_row(spark, model, capsys):
    """The input's columns come back in order beside the outputs (odd names included), and
    the plan evaluates the Python prediction once per row for all output columns."""
    from pyspark.ml.linalg import Vectors
    rows = [(i, Vectors.dense([0.1 * i, 1.0, -0.5]), f"r{i}") for i in range(8)]
    df = spark.createDataFrame(rows, ["id", "my.features", "name `x`"])
    out = model.copy({model.featuresCol: "my.features"}).transform(df)
    assert out.columns == ["id", "my.features", "name `x`", "rawPrediction", "probability",
                           "prediction"]
    got = out.orderBy("id").collect()
    assert [(r.id, r["name `x`"]) for r in got] == [(i, f"r{i}") for i in range(8)]
    for (_, x, _), r in zip(rows, got):
        assert r.prediction == model.predict(x)
    out.explain()
    plan = capsys.readouterr().out
    assert plan.count("ArrowEvalPython") == 1, plan
    assert plan.count("predict(") == 1, plan
