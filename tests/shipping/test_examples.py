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
    tail = err[start:start + 8000] if start >= 0 else err[-8000:]
    return f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{tail}"


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
    submit = ["--py-files", wheel,
              "--conf", f"spark.executorEnv.SPARKANN_CACHE_DIR={tmp_path / 'cache'}"]
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


def app_names(cluster):
    """Names of the applications the master has seen (running or completed)."""
    state = cluster.state() or {}
    return [app["name"] for key in ("activeapps", "completedapps") for app in state.get(key, [])]


def test_fashion_mnist_all_trains_on_the_master_it_is_given(cluster, tmp_path):
    """``all`` under spark-submit runs on spark-submit's master, not local[*]; with plain
    python, on $SPARK_MASTER. The data is prepared once, Spark warns of no oversized task
    (the weights of [784, 256, 128, 10] are 1.8 MiB), and the INFO lines of Spark's default
    logging stop as the session starts."""
    needs_spark_estimator()
    data, model = tmp_path / "data", tmp_path / "model"
    job = os.path.join(EXAMPLES, "fashion_mnist_spark.py")
    args = ["all", "--data", str(data), "--model", str(model), "--train-rows", "2000",
            "--test-rows", "500", "--max-iter", "2", "--partitions", "2"]
    before = app_names(cluster).count("sparkann-fashion-mnist")
    # Spark's own log4j defaults (INFO), not the cluster's quiet configuration
    defaults = tmp_path / "no-conf"
    defaults.mkdir()
    submitted = cluster.submit(job, *args, python=sys.executable,
                               env={"SPARK_CONF_DIR": str(defaults)})
    assert submitted.returncode == 0, failure(submitted)
    assert "wrote 2000 train rows" in submitted.stdout
    printed(r"test accuracy: ([0-9.]+) on 500 rows", submitted.stdout)
    assert re.search(r"round 2/2: loss [0-9.]+ \| this round [0-9.]+ s \| total [0-9.]+ s",
                     submitted.stdout), submitted.stdout
    assert app_names(cluster).count("sparkann-fashion-mnist") == before + 1
    assert "task of very large size" not in submitted.stderr, submitted.stderr[-4000:]
    info = [line for line in submitted.stderr.splitlines() if " INFO " in line]
    assert len(info) <= 5, "\n".join(info[:20])

    prepared = os.path.getmtime(data / "train.parquet")
    plain = subprocess.run([sys.executable, job, "all", "--data", str(data), "--model",
                            str(model), "--max-iter", "1", "--partitions", "2"],
                           env=dict(cluster.env, SPARK_MASTER=cluster.url,
                                    PYSPARK_PYTHON=sys.executable),
                           capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, failure(plain)
    assert "using the data prepared in" in plain.stdout
    assert os.path.getmtime(data / "train.parquet") == prepared
    assert app_names(cluster).count("sparkann-fashion-mnist") == before + 2


def test_fashion_mnist_all_keeps_prepared_data_of_another_size(tmp_path):
    """Rows asked for that the prepared data does not hold: an error, nothing rewritten."""
    pytest.importorskip("pyarrow")
    from sparkann.datasets import DEBIAN_FASHION_MNIST
    if not os.path.isdir(DEBIAN_FASHION_MNIST):
        pytest.skip("needs Debian's dataset-fashion-mnist")
    job = os.path.join(EXAMPLES, "fashion_mnist_spark.py")
    data = tmp_path / "data"
    prep = subprocess.run([sys.executable, job, "prepare", "--data", str(data),
                           "--train-rows", "300", "--test-rows", "100"],
                          env=local_env(), capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-3000:]
    before = os.path.getmtime(data / "train.parquet")
    again = subprocess.run([sys.executable, job, "all", "--data", str(data), "--model",
                            str(tmp_path / "m"), "--train-rows", "200"],
                           env=local_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2
    assert "already holds 300 train rows, --train-rows asks for 200" in again.stderr
    assert "--overwrite" in again.stderr
    assert os.path.getmtime(data / "train.parquet") == before


def test_pipeline_example(tmp_path):
    needs_spark_estimator()
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "pipeline.py"),
                           "--master", "local[2]", "--max-iter", "150"],
                          env=local_env(), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    accuracy = printed(r"pipeline test accuracy: ([0-9.]+)", proc.stdout)
    agree = printed(r"names agree on ([0-9.]+)", proc.stdout)
    assert accuracy >= 0.85 and agree == accuracy
