"""Training runs with injected faults, each in its own Spark application.

Run by tests/test_reliability_spark.py as a subprocess, because the master URL (``local[2,4]``
for task retries, ``local-cluster[2,1,1024]`` for real executor processes) is fixed when a
SparkContext starts and the test session already has one::

    python tests/spark_fault_runs.py retry|kill OUT_DIR

Writes ``OUT_DIR/result.npz`` (weights of every run, bitwise) and ``OUT_DIR/result.json``
(fault counts, iterations, executor pids).
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import numpy as np


def make_session(master, tmp):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    if master.startswith("local-cluster"):
        # Worker directories go under SPARK_HOME/work: keep them out of site-packages.
        import pyspark
        home = os.path.join(tmp, "spark_home")
        os.makedirs(home)
        for name in ("bin", "jars", "python", "sbin"):
            src = os.path.join(os.path.dirname(pyspark.__file__), name)
            if os.path.exists(src):
                os.symlink(src, os.path.join(home, name))
        os.environ["SPARK_HOME"] = home
    from pyspark.sql import SparkSession
    builder = (SparkSession.builder.master(master).appName("sparkann-faults")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.executor.memory", "512m")
               .config("spark.executorEnv.PYTHONPATH", os.pathsep.join(sys.path))
               .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("OFF")
    return session


def make_data(spark, partitions=4):
    """A DataFrame from a parallelized list: recomputing a lost partition gives the same rows
    in the same order (no shuffle), so a recomputed block sums exactly as before."""
    from pyspark.ml.linalg import VectorUDT, Vectors
    from pyspark.sql import types as T
    rng = np.random.default_rng(3)
    X = rng.normal(size=(480, 10))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 0.5)
    rows = [(Vectors.dense(X[i]), float(y[i])) for i in range(len(y))]
    schema = T.StructType([T.StructField("features", VectorUDT()),
                           T.StructField("label", T.DoubleType())])
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions), schema)


def fit(df, solver, max_iter, faults=None, **params):
    from sparkann.spark import MultilayerPerceptronClassifier
    if faults:
        os.environ["SPARKANN_FAULTS"] = faults
    else:
        os.environ.pop("SPARKANN_FAULTS", None)
    try:
        est = MultilayerPerceptronClassifier(layers=[10, 8, 3], solver=solver, maxIter=max_iter,
                                             tol=0.0, seed=11, blockSize=32, **params)
        model = est.fit(df)
    finally:
        os.environ.pop("SPARKANN_FAULTS", None)
    return model


def count_lines(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


def retry(out, tmp):
    """Task failures at several iterations and partitions under local[2,4]."""
    spark = make_session("local[2,4]", tmp)
    try:
        df = make_data(spark).cache()
        weights, report = {}, {}
        log = os.path.join(tmp, "faults.log")
        plans = {
            "gd": ("gd", 8, dict(stepSize=0.5), [(0, 0), (3, 1), (3, 2), (7, 3)]),
            "lbfgs": ("l-bfgs", 8, {}, [(1, 0), (4, 3)]),
            "adam": ("adam", 4, dict(stepSize=0.01), [(0, 2), (3, 1)]),
        }
        for name, (solver, iters, params, where) in plans.items():
            clean = fit(df, solver, iters, **params)
            rules = ";".join(f"fail_task:iteration={i},partition={p},attempt=0,log={log}"
                             for i, p in where)
            before = count_lines(log)
            faulted = fit(df, solver, iters, faults=rules, **params)
            weights[name + "_clean"] = clean._weights
            weights[name + "_faulted"] = faulted._weights
            report[name] = {"planned": len(where), "injected": count_lines(log) - before,
                            "iterations": len(faulted.history),
                            "history_equal": clean.history == faulted.history}
    finally:
        spark.stop()
    return weights, report


def kill(out, tmp):
    """An executor JVM killed with SIGKILL in the middle of a gradient job."""
    spark = make_session("local-cluster[2,1,1024]", tmp)
    try:
        df = make_data(spark)
        weights, report = {}, {"kills": []}
        clean = fit(df, "gd", 10, stepSize=0.5)
        pidfile = os.path.join(tmp, "executor.pid")
        log = os.path.join(tmp, "kill.log")

        def killer():
            deadline = time.monotonic() + 240
            while not os.path.exists(pidfile) and time.monotonic() < deadline:
                time.sleep(0.05)
            if os.path.exists(pidfile):
                with open(pidfile) as f:
                    pid = int(f.read())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode()
                os.kill(pid, signal.SIGKILL)
                report["kills"].append({"pid": pid, "executor": "CoarseGrainedExecutorBackend"
                                        in cmdline})

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        # Iteration 5, partition 1: the executor that runs it dies with its cached blocks.
        faulted = fit(df, "gd", 10, stepSize=0.5,
                      faults=f"kill_executor:iteration=5,partition=1,attempt=0,"
                             f"pidfile={pidfile},log={log}")
        thread.join(5)
        weights["gd_clean"], weights["gd_killed"] = clean._weights, faulted._weights
        report["iterations"] = len(faulted.history)
        report["fired"] = count_lines(log)
        report["history_equal"] = clean.history == faulted.history
        # executors registered at the end (the driver's block manager is listed too)
        report["executors_after"] = spark.sparkContext._jsc.sc().getExecutorMemoryStatus() \
            .size() - 1
    finally:
        spark.stop()
    return weights, report


def main():
    scenario, out = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="sparkann-faults-")
    try:
        start = time.perf_counter()
        weights, report = {"retry": retry, "kill": kill}[scenario](out, tmp)
        report["seconds"] = round(time.perf_counter() - start, 1)
        np.savez(os.path.join(out, "result.npz"), **weights)
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(report, f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
