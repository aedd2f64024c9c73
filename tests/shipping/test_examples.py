"""The examples run as users run them: the end-to-end Fashion-MNIST job with spark-submit on
the standalone cluster, shipping only the wheel, and the Pipeline example on local[2]."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.spark
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")


def needs_spark_estimator():
    pytest.importorskip("pyspark")
    spark_api = pytest.importorskip("sparkann.spark")
    if not hasattr(spark_api, "MultilayerPerceptronClassifier"):
        pytest.skip("sparkann.spark.MultilayerPerceptronClassifier is not available")


def local_env():
    """This interpreter's path, so the child imports the same sparkann as the tests."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
                PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")


def failure(proc):
    """What a failed spark-submit printed, from the first Python traceback when there is one."""
    err = proc.stderr
    start = err.find("Traceback (most recent call last)")
    return f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{err[start:start + 8000] if start >= 0 else err[-8000:]}"


def printed(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in output:\n{text[-4000:]}"
    return float(match.group(1))


def test_fashion_mnist_job_on_standalone_cluster(cluster, bare_python, wheel, tmp_path):
    """Train (first application), save, load and evaluate (second application); the driver
    and the executors have no sparkann but the wheel given to --py-files."""
    needs_spark_estimator()
    data, model = tmp_path / "data", tmp_path / "model"
    job = os.path.join(EXAMPLES, "fashion_mnist_spark.py")
    prep = subprocess.run([sys.executable, job, "prepare", "--data", str(data),
                           "--train-rows", "10000", "--test-rows", "2000"],
                          env=local_env(), capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-3000:]
    common = ["--data", str(data), "--model", str(model)]
    cache = {"SPARKANN_CACHE_DIR": str(tmp_path / "cache")}
    submit = ["--py-files", wheel, "--conf", f"spark.executorEnv.SPARKANN_CACHE_DIR={tmp_path / 'cache'}"]
    trained = cluster.submit(*submit, job, "train", *common, "--hidden", "64",
                             "--max-iter", "5", "--partitions", "2",
                             python=bare_python, env=cache)
    assert trained.returncode == 0, failure(trained)
    assert "saved the model" in trained.stdout
    assert os.listdir(model)
    evaluated = cluster.submit(*submit, job, "evaluate", *common, python=bare_python, env=cache)
    assert evaluated.returncode == 0, failure(evaluated)
    accuracy = printed(r"test accuracy: ([0-9.]+) on 2000 rows", evaluated.stdout)
    assert accuracy >= 0.80
    # executors really ran the engine extracted from the shipped wheel
    extracted = os.listdir(tmp_path / "cache")
    assert any(name.startswith("ann_core-") for name in extracted), extracted


def test_pipeline_example(tmp_path):
    needs_spark_estimator()
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "pipeline.py"),
                           "--master", "local[2]"], env=local_env(), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    accuracy = printed(r"pipeline test accuracy: ([0-9.]+)", proc.stdout)
    agree = printed(r"names agree on ([0-9.]+)", proc.stdout)
    assert accuracy >= 0.85 and agree == accuracy
