"""``sparkann evaluate`` / ``predict`` on a model saved by the Spark estimator: read without
Spark, same predictions as the Spark model."""
import os

import numpy as np
import pytest

pytest.importorskip("pyspark")
from pyspark.ml.functions import vector_to_array  # noqa: E402
from pyspark.ml.linalg import Vectors  # noqa: E402

from sparkann import cli  # noqa: E402
from sparkann.datasets import DEBIAN_FASHION_MNIST, load_fashion_mnist  # noqa: E402
from sparkann.spark import MultilayerPerceptronClassifier  # noqa: E402
from sparkann.spark.local_model import load_local  # noqa: E402
from sparkann.spark.model_files import SparkModelFileError  # noqa: E402

pytestmark = [pytest.mark.spark,
              pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST),
                                 reason="needs Debian's dataset-fashion-mnist")]


@pytest.fixture(scope="module")
def saved(spark, tmp_path_factory):
    """A Spark model (784-24-10 relu, float32) saved to a folder, and its test probabilities."""
    X, y = load_fashion_mnist(kind="train", dtype="float64")
    Xt, _ = load_fashion_mnist(kind="test", dtype="float64")
    train = spark.createDataFrame([(Vectors.dense(x), float(label))
                                   for x, label in zip(X[:600], y[:600])], ["features", "label"])
    model = MultilayerPerceptronClassifier(layers=[784, 24, 10], maxIter=4, solver="adam",
                                           activation="relu", stepSize=0.003, seed=2).fit(train)
    test = spark.createDataFrame([(Vectors.dense(x),) for x in Xt[:200]], ["features"])
    rows = model.transform(test).select(vector_to_array("probability").alias("p")).collect()
    path = str(tmp_path_factory.mktemp("spark-model") / "model")
    model.save(path)
    return path, np.array([r.p for r in rows]), model.summary.objectiveHistory


def test_local_model_predicts_as_the_spark_model(saved):
    path, probabilities, history = saved
    local = load_local(path)
    Xt, _ = load_fashion_mnist(kind="test", dtype="float32")
    np.testing.assert_allclose(local.predict_proba(Xt[:200]), probabilities, atol=1e-5)
    assert local.history_.loss == pytest.approx(history)
    assert local.activation == "relu" and local.dtype == "float32"


def test_cli_evaluate_and_predict_read_a_spark_model(saved, tmp_path, capsys):
    path, probabilities, _ = saved
    assert cli.main(["evaluate", "--model", path, "--limit", "200"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "on 200 rows" in out
    assert cli.main(["predict", "--model", path, "--limit", "200", "--proba",
                     "--output", str(tmp_path / "p.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), probabilities, atol=1e-5)
    assert cli.main(["predict", "--model", path, "--limit", "200"]) == 0
    labels = np.array(capsys.readouterr().out.split(), dtype=int)
    np.testing.assert_array_equal(labels, probabilities.argmax(1))


def test_altered_spark_model_is_refused(saved, tmp_path, capsys):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "altered")
    shutil.copytree(saved[0], path)
    data = os.path.join(path, "data")
    [name] = [f for f in os.listdir(data) if f.endswith(".parquet")]
    table = pq.read_table(os.path.join(data, name))
    weights = np.array(table.column("weights")[0].as_py())
    weights[0] += 1.0
    pq.write_table(table.set_column(0, "weights", pa.array([weights.tolist()])),
                   os.path.join(data, name))
    with pytest.raises(SparkModelFileError, match="not match the SHA-256"):
        load_local(path)
    assert cli.main(["evaluate", "--model", path]) == 2
    assert "not match the SHA-256" in capsys.readouterr().err
