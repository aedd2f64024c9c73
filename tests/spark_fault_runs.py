"""Training runs with injected faults, in a Spark application of their own.

Run by tests/test_reliability_spark.py as a subprocess, because the master URL (``local[2,4]``
for task retries, ``local-cluster[2,1,1024]`` for real executor processes) is fixed when a
SparkContext starts and the test session already has one::

    python tests/spark_fault_runs.py SCENARIO[,SCENARIO...] OUT_DIR

Scenarios: ``retry`` (``local[2,4]``), ``kill`` and ``hygiene`` (``local-cluster``). Scenarios
named together run one after the other in one application (they must share a master), which
starts the cluster once. Writes ``OUT_DIR/SCENARIO.npz`` (weights of every run, bitwise) and
``OUT_DIR/SCENARIO.json`` (fault counts, iterations, executor pids) for each.
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
    from spark_jvm import CONF
    local = os.path.join(tmp, "local")  # the driver's and the executors' local directories
    os.makedirs(local, exist_ok=True)
    builder = (SparkSession.builder.master(master).appName("sparkann-faults")
               .config("spark.local.dir", local)
               # Spark's default: a task waits 3 s for the executor that holds its stacked
               # file, then runs elsewhere (its partition is computed again there). Where tasks
               # run changes neither the weights (kill) nor which files a fit must leave behind
               # (hygiene: none); 30 s made a fit after a lost executor take 40-70 s, not 13-24.
               .config("spark.locality.wait", "3s")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.executor.memory", "512m")
               .config("spark.executorEnv.PYTHONPATH", os.pathsep.join(sys.path))
               .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable))
    for key, value in CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("OFF")
    return session


def make_data(spark, partitions=4):
    """A DataFrame from a parallelized list: recomputing a lost partition gives the same rows
    in the same order (no shuffle), so a recomputed block sums exactly as before."""
    return spark.createDataFrame(spark.sparkContext.parallelize(vector_rows(), partitions),
                                 vector_schema())


def vector_schema():
    """features (ML vector), label (double)."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T
    return T.StructType([T.StructField("features", VectorUDT()),
                         T.StructField("label", T.DoubleType())])


def vector_rows():
    """The rows of ``training_arrays`` as (ML vector, float label) pairs."""
    from pyspark.ml.linalg import Vectors
    X, y = training_arrays()
    return [(Vectors.dense(X[i]), float(y[i])) for i in range(len(y))]


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


def retry(spark, tmp):
    """Task failures at several iterations and partitions under local[2,4] (adam with
    dropout)."""
    plans = {
        "gd": ("gd", 8, dict(stepSize=0.5), [(0, 0), (3, 1), (3, 2), (7, 3)]),
        "lbfgs": ("l-bfgs", 8, {}, [(1, 0), (4, 3)]),
        # dropout on the input and the hidden layer: a retried task draws the same masks
        "adam": ("adam", 4, dict(stepSize=0.01, dropout=[0.2, 0.5]), [(0, 2), (3, 1)]),
    }
    return fit_with_failures(make_data(spark).cache(), plans, tmp)


def fit_with_failures(df, plans, tmp):
    """For each plan ``name: (solver, maxIter, params, [(iteration, partition), ...])``: an
    undisturbed fit, and one whose first attempt of each chosen task fails."""
    weights, report = {}, {}
    log = os.path.join(tmp, "faults.log")
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
    return weights, report


def fit_killed(df, solver, max_iter, tmp, name, at=3, **params):
    """``fit`` while the executor JVM that runs partition 1 of job ``at`` is SIGKILLed."""
    pidfile = os.path.join(tmp, f"{name}.pid")
    log = os.path.join(tmp, f"{name}.log")
    kills = []

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
            kills.append({"pid": pid, "executor": "CoarseGrainedExecutorBackend" in cmdline})

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    model = fit(df, solver, max_iter, faults=f"kill_executor:iteration={at},partition=1,"
                                             f"attempt=0,pidfile={pidfile},log={log},wait=15,"
                                             f"times=1",
                **params)
    thread.join(5)
    return model, {"kills": kills, "fired": count_lines(log)}


# The killed fits: gd and l-bfgs run the same gradient job (they differ on the driver only),
# adam its rounds; each job kind is killed on both sources, l-bfgs on one.
KILLED = {"numpy": ("gd", "lbfgs", "adam"), "parquet": ("gd", "adam")}


def kill(spark, tmp):
    """An executor JVM killed with SIGKILL in the middle of a training job (``KILLED``: gd,
    l-bfgs and adam on data from dataframe_from_numpy, gd and adam from Parquet); and two
    undisturbed runs."""
    from sparkann.spark.data import dataframe_from_numpy
    X, y = training_arrays()
    path = os.path.join(tmp, "data.parquet")
    dataframe_from_numpy(spark, X, y, num_partitions=4).write.parquet(path)
    sources = {"numpy": dataframe_from_numpy(spark, X, y, num_partitions=4),
               "parquet": spark.read.parquet(path)}
    plans = {"gd": ("gd", 5, dict(stepSize=0.5)), "lbfgs": ("l-bfgs", 5, {}),
             "adam": ("adam", 4, dict(stepSize=0.01))}
    weights, report = {}, {}
    for source, df in sources.items():
        for name in KILLED[source]:
            solver, iters, params = plans[name]
            key = f"{source}_{name}"
            started = time.monotonic()
            clean = fit(df, solver, iters, **params)
            clean_seconds = time.monotonic() - started
            if name == "gd":
                weights[key + "_again"] = fit(df, solver, iters, **params)._weights
            started = time.monotonic()
            killed, info = fit_killed(df, solver, iters, tmp, key, **params)
            info["seconds"] = [round(clean_seconds, 1), round(time.monotonic() - started, 1)]
            weights[key + "_clean"], weights[key + "_killed"] = clean._weights, killed._weights
            info.update(iterations=len(killed.history), planned=len(clean.history),
                        history_equal=clean.history == killed.history)
            report[key] = info
    return weights, report


def sparkann_files(tmp):
    """Every file or folder of sparkann's under the local directories (driver, executors)."""
    found = []
    for root, dirs, files in os.walk(os.path.join(tmp, "local")):
        found += [os.path.join(root, n) for n in dirs + files if n.startswith("sparkann-")
                  or os.path.basename(root).startswith("sparkann-")]
    return found


def slow_data(spark, seconds):
    """480 rows over 4 partitions whose upstream stage sleeps ``seconds`` per partition, so
    that stacking can be interrupted while its files are open."""
    from pyspark.ml.functions import array_to_vector

    def rows(batches):
        import pyarrow as pa
        for batch in batches:
            time.sleep(seconds)
            ids = batch.column(0).to_numpy()
            X = np.sin(np.outer(ids, np.arange(1, 11)))
            offsets = pa.array(np.arange(0, X.size + 1, 10, dtype=np.int32))
            yield pa.RecordBatch.from_arrays(
                [pa.ListArray.from_arrays(offsets, pa.array(X.ravel())),
                 pa.array((ids % 3).astype(np.float64))], names=["features", "label"])

    df = spark.range(0, 480, 1, 4).mapInArrow(rows, "features array<double>, label double")
    return df.withColumn("features", array_to_vector("features"))


def bad_data(spark, kind):
    """The 480 training rows where row 300 is refused (label 7, a NaN, 9 features)."""
    from pyspark.ml.linalg import Vectors
    rows = vector_rows()
    features, label = rows[300]
    if kind == 0:
        label = 7.0
    elif kind == 1:
        features = Vectors.dense([float("nan")] * 10)
    else:
        features = Vectors.dense([1.0] * 9)
    rows[300] = (features, label)
    return spark.createDataFrame(rows, vector_schema()).coalesce(4)


def training_arrays():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(480, 10))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 0.5)
    return X, y


def interrupt_when(condition, deadline=120):
    """A thread that sends SIGINT to this process (as Ctrl-C does) once ``condition()``."""
    def watch():
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if condition():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def hygiene(spark, tmp):
    """Refused, interrupted and good fits on local-cluster leave no stacked file anywhere;
    the driver's memory stays flat over 20 good fits."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from rss import rss_bytes
    from sparkann.spark.data import dataframe_from_numpy
    report = {"left": {}, "errors": [], "interrupted": [], "phase_seconds": {}}
    started = time.monotonic()

    def phase(name):  # seconds since the previous phase ended
        nonlocal started
        now = time.monotonic()
        report["phase_seconds"][name] = round(now - started, 1)
        started = now

    for kind in range(3):
        try:
            fit(bad_data(spark, kind), "gd", 2)
            report["errors"].append(None)
        except ValueError as error:
            report["errors"].append(str(error))
    report["left"]["failed"] = sparkann_files(tmp)
    phase("failed")
    # Ctrl-C while stacking: once a partition's file is open.
    for _ in range(2):
        tmp_open = lambda: any(f.endswith(".tmp") for f in sparkann_files(tmp))  # noqa
        watcher = interrupt_when(tmp_open)
        try:
            fit(slow_data(spark, 2.0), "gd", 2)
            report["interrupted"].append("finished")
        except KeyboardInterrupt:
            report["interrupted"].append("stacking")
        watcher.join(5)
    phase("interrupted while stacking")
    # Ctrl-C while training: a gradient task of iteration 2 holds on (fault hook).
    df = dataframe_from_numpy(spark, *training_arrays(), num_partitions=4).cache()
    pidfile = os.path.join(tmp, "training.pid")
    watcher = interrupt_when(lambda: os.path.exists(pidfile))
    try:
        fit(df, "gd", 10, stepSize=0.5,
            faults=f"kill_executor:iteration=2,partition=1,attempt=0,pidfile={pidfile},"
                   f"wait=5")
        report["interrupted"].append("finished")
    except KeyboardInterrupt:
        report["interrupted"].append("training")
    watcher.join(5)
    report["left"]["interrupted"] = sparkann_files(tmp)
    phase("interrupted while training")
    rss = []
    for i in range(20):
        fit(df, "gd", 1)
        rss.append(rss_bytes())
        if i == 4:
            report["left"]["good"] = sparkann_files(tmp)
    report["rss_mib"] = [round(r / 2**20, 1) for r in rss]
    report["left"]["end"] = sparkann_files(tmp)
    df.unpersist()
    phase("good")
    return {}, report


# Each scenario's master: scenarios run together only where they agree.
MASTERS = {"retry": "local[2,4]", "kill": "local-cluster[2,1,1024]",
           "hygiene": "local-cluster[2,1,1024]"}
SCENARIOS = {"retry": retry, "kill": kill, "hygiene": hygiene}


def main():
    import faulthandler
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: where a stuck run waits
    scenarios, out = sys.argv[1].split(","), sys.argv[2]
    masters = {MASTERS[name] for name in scenarios}
    if len(masters) != 1:
        sys.exit(f"scenarios {scenarios} need different masters {sorted(masters)}")
    tmp = tempfile.mkdtemp(prefix="sparkann-faults-")
    try:
        spark = make_session(masters.pop(), tmp)
        try:
            for name in scenarios:
                start = time.perf_counter()
                weights, report = SCENARIOS[name](spark, tmp)
                report["seconds"] = round(time.perf_counter() - start, 1)
                np.savez(os.path.join(out, f"{name}.npz"), **weights)
                with open(os.path.join(out, f"{name}.json"), "w") as f:
                    json.dump(report, f)
        finally:
            spark.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
