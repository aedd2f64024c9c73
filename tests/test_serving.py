"""model.predict_fn() / model.predict_batch_udf() under Spark's predict_batch_udf on local[2]:
the same outputs as transform, the engine built once per Python worker."""
import os

import numpy as np
import pytest

from sparkann import MLPClassifier, MLPRegressor
from sparkann.serving import predict_fn

pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 12))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    return X, y


def _spark_model(cls_name, weights, layers, **params):
    import sparkann.spark as S
    model = getattr(S, cls_name)(weights=weights)
    model._set(layers=layers, **params)
    return model


def test_batch_udf_matches_transform(spark, data, tmp_path):
    from pyspark.ml.functions import predict_batch_udf, vector_to_array
    from pyspark.sql import functions as F

    from sparkann.spark.data import dataframe_from_numpy
    X, y = data
    clf = MLPClassifier(hidden_layer_sizes=(8,), activation="tanh", max_iter=5, random_state=0,
                        dtype="float64").fit(X, y)
    model = _spark_model("MultilayerPerceptronClassificationModel", clf.weights_, [12, 8, 3],
                         activation="tanh", dtype="float64")
    df = dataframe_from_numpy(spark, X, y, num_partitions=2)
    df = df.withColumn("id", F.monotonically_increasing_id())
    want = sorted(model.transform(df).select("id", vector_to_array("probability").alias("p"),
                                             "prediction").collect())

    # every output as a struct, from the model's own UDF (batches of 50 rows)
    udf = model.predict_batch_udf(batch_size=50)
    got = sorted(df.select("id", udf(vector_to_array("features")).alias("out")).collect())
    np.testing.assert_allclose([r.out.probability for r in got], [r.p for r in want],
                               rtol=1e-12, atol=1e-15)
    assert [r.out.prediction for r in got] == [r.prediction for r in want]

    # model.predict_fn() in the user's own predict_batch_udf; each call of make_predict_fn
    # is recorded with its process: Spark keeps the predict function for later batches
    calls, make = str(tmp_path), model.predict_fn("prediction")

    def counted():
        with open(os.path.join(calls, f"{os.getpid()}-{os.urandom(4).hex()}"), "w"):
            pass
        return make()

    from pyspark.sql.types import DoubleType
    udf = predict_batch_udf(counted, return_type=DoubleType(), batch_size=40,
                            input_tensor_shapes=[[12]])
    got = sorted(df.select("id", udf(vector_to_array("features")).alias("p")).collect())
    assert [r.p for r in got] == [r.prediction for r in want]
    pids = [name.split("-")[0] for name in os.listdir(calls)]
    assert pids and len(pids) == len(set(pids))  # once per worker, though 15 batches ran


def test_output_names_and_types(data):
    X, y = data
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, X[:, :2])
    fn = predict_fn(reg)()
    out = fn(X[:5])
    assert set(out) == {"variable"} and out["variable"].shape == (5, 2)
    np.testing.assert_array_equal(out["variable"], reg.predict(X[:5]))
    rows = np.empty(3, dtype=object)  # a pandas column of per-row arrays
    rows[:] = list(X[:3])
    np.testing.assert_array_equal(predict_fn(reg, "variable")()(rows), reg.predict(X[:3]))
    assert predict_fn(reg, "variable")()(X[:0]).shape == (0, 2)
    with pytest.raises(ValueError, match=r"output 'probability' is not one of the model's "
                                         r"outputs \['variable'\]"):
        predict_fn(reg, "probability")
    with pytest.raises(ValueError, match="expected rows of 12 features, received shape"):
        fn(X[:, :5])

    from sparkann.fitted import describe
    from sparkann.spark.batch_udf import return_type
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0,
                        dtype="float32").fit(X, y)
    assert return_type(describe(clf)).simpleString() == \
        "struct<probabilities:array<float>,label:bigint>"
    model = _spark_model("MultilayerPerceptronRegressionModel", reg.weights_.astype(float),
                         [12, 4, 2])
    assert return_type(describe(model), "prediction").simpleString() == "array<double>"
