"""Acceptance 3: Spark MLlib's default recipe on real Fashion-MNIST reaches 85% test accuracy,
on local[2] and on real executor processes (local-cluster). Minutes each: marked slow."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("pyspark")
from sparkann.datasets import DEBIAN_FASHION_MNIST  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.spark,
              pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST),
                                 reason="needs Debian's dataset-fashion-mnist")]
HERE = os.path.dirname(os.path.abspath(__file__))


def test_default_recipe_local(spark):
    from sparkann.datasets import load_fashion_mnist
    from sparkann.spark import MultilayerPerceptronClassifier
    from sparkann.spark.data import dataframe_from_numpy
    X, y = load_fashion_mnist(kind="train", dtype="float64")
    Xt, yt = load_fashion_mnist(kind="test", dtype="float64")
    train = dataframe_from_numpy(spark, X, y, num_partitions=2).cache()
    # Spark MLlib's defaults: sigmoid, l-bfgs, maxIter 100, blockSize 128 (ours in float32)
    model = MultilayerPerceptronClassifier(layers=[784, 256, 128, 10], seed=1).fit(train)
    accuracy = model.evaluate(dataframe_from_numpy(spark, Xt, yt)).accuracy
    train.unpersist()
    assert accuracy >= 0.85


def test_default_recipe_on_executor_processes():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, os.path.join(HERE, "spark_cluster_train.py"),
                          "local-cluster[2,1,1024]"], capture_output=True, text=True,
                         timeout=3600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["block_managers"] == 3  # the driver and two executors
    assert result["accuracy"] >= 0.85, result
