"""The MLflow flavor against a real local tracking store (files in a temporary folder): a Spark
model and a single-machine model logged, loaded back through mlflow.pyfunc, scoring a pandas
DataFrame and, through spark_udf, a Spark DataFrame on local[2]."""
import os

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("pyspark")

import sparkann.mlflow as flavor  # noqa: E402
from sparkann import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A file tracking store of its own, the previous URI restored afterwards (MLflow 3
    keeps the file store behind MLFLOW_ALLOW_FILE_STORE; sqlite needs SQLAlchemy, which
    mlflow-skinny leaves out)."""
    before, allowed = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow.set_tracking_uri("file://" + str(tmp_path_factory.mktemp("mlruns")))
    mlflow.set_experiment("sparkann-tests")
    yield
    mlflow.set_tracking_uri(before)
    if allowed is None:
        del os.environ["MLFLOW_ALLOW_FILE_STORE"]
    else:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = allowed


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y


def _features_frame(X):
    import pandas as pd
    return pd.DataFrame({"features": list(X)})


def _spark_model(weights):
    from sparkann.spark import MultilayerPerceptronClassificationModel
    model = MultilayerPerceptronClassificationModel(weights=weights)
    model._set(layers=[6, 5, 3], activation="relu", dtype="float64")
    return model


def test_round_trip_single_machine_and_spark(spark, store, data):
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from sparkann.spark.data import dataframe_from_numpy
    X, y = data
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, random_state=0).fit(X, y)
    spark_model = _spark_model(MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, random_state=1,
                                             dtype="float64").fit(X, y).weights_)
    with mlflow.start_run():
        single = flavor.log_model(clf, name="single")
        on_spark = flavor.log_model(spark_model, name="on_spark")

    # pandas through mlflow.pyfunc: one column of arrays, or one column per feature
    scorer = mlflow.pyfunc.load_model(single.model_uri)
    np.testing.assert_array_equal(scorer.predict(_features_frame(X)), clf.predict(X))
    assert scorer.metadata.get_input_schema().input_names() == ["features"]
    import pandas as pd
    np.testing.assert_array_equal(flavor.PyFuncModel(clf, "sklearn").predict(pd.DataFrame(X)),
                                  clf.predict(X))
    df = dataframe_from_numpy(spark, X, y, num_partitions=2).withColumn(
        "id", F.monotonically_increasing_id())
    want = sorted(spark_model.transform(df).select("id", "prediction").collect())
    scorer = mlflow.pyfunc.load_model(on_spark.model_uri)
    got = scorer.predict(_features_frame(X))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [spark_model.predict(x) for x in X])

    # Spark through spark_udf on local[2]
    for info, expected in ((on_spark, [r.prediction for r in want]), (single, None)):
        udf = mlflow.pyfunc.spark_udf(spark, info.model_uri, env_manager="local")
        rows = sorted(df.select("id", udf(vector_to_array("features")).alias("p"),
                                vector_to_array("features").alias("x")).collect())
        if expected is None:
            expected = clf.predict(np.array([r.x for r in rows])).astype(float)
        assert [r.p for r in rows] == list(expected)

    # the native flavor gives back the original kind of model, weights unchanged
    again = flavor.load_model(single.model_uri)
    assert type(again) is MLPClassifier
    np.testing.assert_array_equal(again.weights_, clf.weights_)
    again = flavor.load_model(on_spark.model_uri)
    assert type(again) is type(spark_model)
    np.testing.assert_array_equal(again.weights.toArray(), spark_model.weights.toArray())


def test_files_are_not_pickles(store, data, tmp_path):
    X, y = data
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0).fit(X, X[:, :2])
    flavor.save_model(reg, tmp_path / "m")
    names = {f for _, _, files in os.walk(tmp_path / "m") for f in files}
    assert not {n for n in names if n.endswith((".pkl", ".pickle", ".cloudpickle"))}
    scorer = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    np.testing.assert_allclose(np.stack(scorer.predict(_features_frame(X[:7]))),
                               reg.predict(X[:7]), rtol=1e-6)
    with pytest.raises(FileExistsError, match="exists: save_model writes a new folder"):
        flavor.save_model(reg, tmp_path / "m")
    from sparkann import NotFittedError
    with pytest.raises(NotFittedError, match="cannot save this MLPRegressor: it is not fitted"):
        flavor.save_model(MLPRegressor(), tmp_path / "n")
    assert not (tmp_path / "n").exists()
    with pytest.raises(ValueError, match="column 'features': expected arrays of 6 features"):
        scorer.predict(_features_frame(X[:3, :4]))
