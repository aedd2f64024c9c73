"""Spark MLlib's MultilayerPerceptronClassifier vs sparkann's, on one cached Fashion-MNIST
DataFrame, local[2], alternating the two systems.

(a) seconds per full-batch gradient evaluation (the treeAggregate job) and evaluations per
    L-BFGS iteration, for topologies A = [784,256,128,10] and B = [784,1024,1024,10] with
    block sizes 128 and 1024;
(b) wall time to reach 85% test accuracy, each system with its best solver (MLlib: L-BFGS,
    the only one that gets there; ours: adam with relu);
(c) our distributed gradient time over the native single-machine full-batch gradient with the
    same number of threads and block size (the distributed overhead; with blockSize 128 the
    distributed gradient still multiplies 1,024 rows at a time);
(d) the floor no implementation of the same FLOPs can beat here: GEMM time at this host's peak
    plus an empty Spark job, and MLlib's time over it (the largest speed-up any system could
    show against MLlib on this host).

MLlib runs twice for (a): with its default pure-Java BLAS (dev.ludovic.netlib VectorBLAS,
forced with ``-Ddev.ludovic.netlib.blas.allowNative=false``) in this process, and with a
native BLAS (the system's libblas.so.3, e.g. ``apt-get install libopenblas0-pthread``) in a
second Spark driver started by this script. MLlib's job times come from Spark's event log
(job start/end), ours from the driver (which also counts the weight broadcast). Usage::

    python bench/bench_spark.py [--iters 4] [--skip-b-time] [--mllib-85-iters 100]
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

A = [784, 256, 128, 10]
B = [784, 1024, 1024, 10]


def local_session(app, **conf):
    """A local[2] session on loopback, quiet, with the extra settings ``conf``."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession
    builder = (SparkSession.builder.master("local[2]").appName(app)
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def session(event_dir, native_blas=False):
    return local_session(
        "bench_spark", **{
            "spark.driver.memory": "8g",
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": event_dir,
            "spark.eventLog.compress": "false",
            "spark.driver.extraJavaOptions":
                f"-Ddev.ludovic.netlib.blas.allowNative={str(native_blas).lower()}"})


def mllib_blas(spark):
    """The BLAS class MLlib's level-3 calls go to in this driver."""
    try:
        blas = spark._jvm.dev.ludovic.netlib.blas.NativeBLAS.getInstance()
        return blas.getClass().getSimpleName()
    except Exception:   # noqa: BLE001 - no native library: MLlib uses its Java BLAS
        return spark._jvm.dev.ludovic.netlib.blas.JavaBLAS.getInstance().getClass().getSimpleName()


def cached_train(spark, X, y):
    from sparkann.spark.data import dataframe_from_numpy
    df = dataframe_from_numpy(spark, X, y, num_partitions=2).cache()
    df.count()
    return df


def mllib_native_gradients(iters):
    """Second driver: MLlib's seconds per gradient job with the native BLAS, as JSON."""
    from pyspark.ml.classification import MultilayerPerceptronClassifier as MLlib
    from sparkann.datasets import load_fashion_mnist
    from sparkann.topology import Topology
    # Spark's advice for MLlib with a native BLAS: one BLAS thread per task (2 tasks, 2 cores)
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    event_dir = tempfile.mkdtemp(prefix="bench-spark-events-")
    spark = session(event_dir, native_blas=True)
    blas = mllib_blas(spark)
    X, y = load_fashion_mnist(kind="train", dtype="float64")
    df = cached_train(spark, X, y)
    out = {"blas": blas}
    if blas == "JNIBLAS":
        for name, sizes in (("A", A), ("B", B)):
            w0 = Topology.from_sizes(sizes).init_weights(seed=1, dtype="float64")
            for block in (128, 1024):
                spark.sparkContext.setJobGroup(f"mllib-{name}-{block}", "mllib")
                MLlib(layers=sizes, blockSize=block, maxIter=iters, tol=0.0, seed=1,
                      initialWeights=w0.tolist()).fit(df)
    spark.stop()
    for group, seconds in job_seconds(event_dir).items():
        out[group.replace("mllib-", "")] = statistics.median(seconds)
    print("NATIVE " + json.dumps(out), flush=True)


def job_seconds(event_dir):
    """{job group: [seconds of each treeAggregate job]} from the event log."""
    starts, out = {}, {}
    # Spark 4 writes rolling event logs: a folder of files per application
    paths = sorted(p for p in glob.glob(os.path.join(event_dir, "**", "*"), recursive=True)
                   if os.path.isfile(p))
    for path in paths:
        with open(path) as f:
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:          # a line still being written
                    continue
                kind = e.get("Event")
                if kind == "SparkListenerJobStart":
                    group = (e.get("Properties") or {}).get("spark.jobGroup.id")
                    names = " ".join(s.get("Stage Name", "") for s in e.get("Stage Infos", []))
                    starts[e["Job ID"]] = (group, e["Submission Time"], "treeAggregate" in names)
                elif kind == "SparkListenerJobEnd" and e["Job ID"] in starts:
                    group, t0, is_agg = starts[e["Job ID"]]
                    if group and is_agg:
                        out.setdefault(group, []).append((e["Completion Time"] - t0) / 1000)
    return out


def floor_seconds(sc, sizes, n_rows, repeats=9):
    """A lower bound on one gradient job here: ``(bound, empty job, GEMM seconds)``.

    The GEMM seconds are the gradient's actual FLOPs (no input gradient) over all rows at the
    best float32 rate of 2048^3 products on one thread (either backend), times the two cores;
    the empty job is the median of a two-task Spark job that computes nothing. No
    implementation of the same FLOPs on this host can finish a gradient job faster than
    their sum.
    """
    import ann_core
    from ann_core._blas import gemm
    from sparkann.topology import Topology
    rdd = sc.parallelize([0, 1], 2)
    empty = []
    for _ in range(repeats):
        t = time.perf_counter()
        rdd.mapPartitions(lambda it: [sum(it)]).collect()
        empty.append(time.perf_counter() - t)
    M = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    C = np.empty_like(M)
    in_use = ann_core.backend()["name"]
    best = 0.0   # the fastest product seen, of either backend: the floor stays a floor
    for name in ["openblas"] + (["mkl"] if ann_core.find_mkl() else []):
        ann_core.set_backend(name)
        previous = ann_core.set_blas_threads(1)
        gemm(M, M, C)
        for _ in range(5):
            t = time.perf_counter()
            gemm(M, M, C)
            best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t))
        ann_core.set_blas_threads(previous)
    ann_core.set_backend(in_use)
    actual = Topology.from_sizes(sizes).network("float32").flops_per_example()[1]
    gemm_s = actual * n_rows / (2 * best)
    return gemm_s + statistics.median(empty), statistics.median(empty), gemm_s


def accuracy(topology_sizes, activation, weights, Xt, yt):
    from sparkann.topology import Topology
    net = Topology.from_sizes(topology_sizes, activation=activation).network("float64", 1024)
    p = net.forward(np.asarray(weights, np.float64), Xt, raw=True)
    return float(np.mean(p.argmax(1) == yt))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=3, help="L-BFGS iterations per (a) run")
    ap.add_argument("--mllib-85-iters", type=int, default=100)
    ap.add_argument("--skip-b-time", action="store_true", help="skip (b) for topology B")
    ap.add_argument("--skip-mllib-85", action="store_true")
    ap.add_argument("--skip-native", action="store_true",
                    help="skip MLlib with the native BLAS")
    ap.add_argument("--mllib-native-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mllib_native_only:
        return mllib_native_gradients(args.iters)

    import ann_core
    from pyspark.ml.classification import MultilayerPerceptronClassifier as MLlib
    from sparkann.datasets import load_fashion_mnist
    from sparkann.spark import MultilayerPerceptronClassifier as Ours
    from sparkann.topology import Topology

    event_dir = tempfile.mkdtemp(prefix="bench-spark-events-")
    spark = session(event_dir)
    sc = spark.sparkContext
    print(f"MLlib's BLAS in this driver: {mllib_blas(spark)}", flush=True)
    X, y = load_fashion_mnist(kind="train", dtype="float64")
    Xt, yt = load_fashion_mnist(kind="test", dtype="float64")
    t = time.perf_counter()
    df = cached_train(spark, X, y)
    print(f"cached DataFrame: {df.count()} rows, 2 partitions, {time.perf_counter() - t:.1f} s",
          flush=True)

    results = {}
    for name, sizes in (("A", A), ("B", B)):
        w0 = Topology.from_sizes(sizes).init_weights(seed=1, dtype="float64")
        for block in (128, 1024):
            key = f"{name}-{block}"
            # MLlib first, then ours, then ours in float64: alternating per configuration
            sc.setJobGroup(f"mllib-{key}", "mllib")
            t = time.perf_counter()
            m = MLlib(layers=sizes, blockSize=block, maxIter=args.iters, tol=0.0, seed=1,
                      initialWeights=w0.tolist()).fit(df)
            mllib_wall = time.perf_counter() - t
            mllib_iters = len(m.summary().objectiveHistory) - 1
            row = {"mllib_wall": mllib_wall, "mllib_iters": mllib_iters}
            for dtype in ("float32", "float64"):
                sc.setJobGroup(f"ours-{dtype}-{key}", "ours")
                t = time.perf_counter()
                model = Ours(layers=sizes, blockSize=block, maxIter=args.iters, tol=0.0,
                             initialWeights=w0.tolist(), dtype=dtype).fit(df)
                row[f"ours_{dtype}_wall"] = time.perf_counter() - t
                row[f"ours_{dtype}_grad"] = statistics.median(model.gradient_seconds)
                row[f"ours_{dtype}_evals_per_iter"] = (len(model.gradient_seconds)
                                                       / max(1, len(model.history)))
            sc.setJobGroup("native", "native")
            # (c): the native engine on one machine, same number of threads (2), float32
            previous = ann_core.set_blas_threads(2)
            net = Topology.from_sizes(sizes).network("float32", block)
            X32, y64 = np.ascontiguousarray(X, np.float32), y.astype(np.int64)
            w32, g = w0.astype(np.float32), np.zeros(net.n_weights, np.float32)
            times = []
            for _ in range(3):
                t = time.perf_counter()
                net.loss_grad(w32, X32, y64, g, zero=True)
                times.append(time.perf_counter() - t)
            ann_core.set_blas_threads(previous)
            row["native_float32_grad"] = statistics.median(times)
            sc.setJobGroup("bound", "bound")
            row["bound"], row["empty_job"], row["gemm_bound"] = floor_seconds(sc, sizes, len(X))
            results[key] = row
            print(key, {k: round(v, 3) for k, v in row.items()}, flush=True)

    # (b) time to 85% test accuracy
    to85 = {}
    for name, sizes in (("A", A), ("B", B)):
        if name == "B" and args.skip_b_time:
            continue
        hit = {}

        def stop_at_85(iteration, w, loss, sizes=sizes, hit=hit):
            acc = accuracy(sizes, "relu", w, Xt, yt)
            if acc >= 0.85 and "seconds" not in hit:
                hit.update(seconds=time.perf_counter() - hit["t0"], iteration=iteration, acc=acc)
                raise StopIteration

        hit["t0"] = time.perf_counter()
        Ours(layers=sizes, solver="adam", activation="relu", stepSize=0.001, maxIter=30,
             seed=1).setCallback(stop_at_85).fit(df)
        to85[f"ours-{name}"] = hit.get("seconds", float("nan"))
        print(f"ours adam {name}: 85% after {hit.get('iteration')} rounds, "
              f"{to85[f'ours-{name}']:.1f} s", flush=True)
        if args.skip_mllib_85 or name == "B":
            continue
        sc.setJobGroup(f"mllib-85-{name}", "mllib")
        t = time.perf_counter()
        m = MLlib(layers=sizes, maxIter=args.mllib_85_iters, seed=1).fit(df)
        wall = time.perf_counter() - t
        acc = accuracy(sizes, "sigmoid", m.weights.toArray(), Xt, yt)
        to85[f"mllib-{name}"] = wall if acc >= 0.85 else float("nan")
        print(f"mllib l-bfgs {name}: {acc:.4f} after {args.mllib_85_iters} iterations, "
              f"{wall:.1f} s", flush=True)

    spark.stop()
    jobs = job_seconds(event_dir)
    native = {}
    if not args.skip_native:
        run = subprocess.run([sys.executable, __file__, "--mllib-native-only", "--iters",
                              str(args.iters)], capture_output=True, text=True)
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("NATIVE ")]
        native = json.loads(lines[-1][7:]) if lines else {"blas": "failed"}
        if native.get("blas") != "JNIBLAS":
            print(f"MLlib with a native BLAS: not measured ({native.get('blas')}: install one "
                  "as libblas.so.3)")
    print("\n(a) seconds per full-batch gradient evaluation (median), local[2]; MLlib float64 "
          "with Java BLAS (java) and native BLAS (nat)")
    print(f"{'config':8s} {'MLlib java':>10s} {'ev/it':>6s} {'MLlib nat':>9s} {'ours f32':>9s} "
          f"{'ev/it':>6s} {'ours f64':>9s} {'java/f32':>8s} {'nat/f32':>8s} {'java/f64':>8s} "
          f"{'nat/f64':>8s} {'(c) f32/native':>14s}")
    for key, row in results.items():
        mj = jobs.get(f"mllib-{key}", [])
        m_grad = statistics.median(mj) if mj else float("nan")
        m_nat = native.get(key, float("nan"))
        m_evals = len(mj) / max(1, row["mllib_iters"])
        f32, f64 = row["ours_float32_grad"], row["ours_float64_grad"]
        print(f"{key:8s} {m_grad:10.3f} {m_evals:6.2f} {m_nat:9.3f} {f32:9.3f} "
              f"{row['ours_float32_evals_per_iter']:6.2f} {f64:9.3f} {m_grad / f32:8.2f} "
              f"{m_nat / f32:8.2f} {m_grad / f64:8.2f} {m_nat / f64:8.2f} "
              f"{f32 / row['native_float32_grad']:14.2f}")
    print("\n(d) the floor of any gradient job here: float32 GEMM seconds at this host's "
          "one-thread 2048^3 rate on both cores, plus an empty two-task Spark job")
    print(f"{'config':8s} {'GEMM s':>7s} {'empty job':>9s} {'floor':>7s} {'java/floor':>10s} "
          f"{'ours f32/floor':>14s}")
    for key, row in results.items():
        mj = jobs.get(f"mllib-{key}", [])
        m_grad = statistics.median(mj) if mj else float("nan")
        print(f"{key:8s} {row['gemm_bound']:7.3f} {row['empty_job']:9.3f} {row['bound']:7.3f} "
              f"{m_grad / row['bound']:10.2f} {row['ours_float32_grad'] / row['bound']:14.2f}")
    print("\n(b) wall seconds to 85% test accuracy")
    for key, value in to85.items():
        print(f"{key:10s} {value:8.1f}")
    if "mllib-A" in to85 and "ours-A" in to85:
        print(f"ratio A (MLlib / ours): {to85['mllib-A'] / to85['ours-A']:.2f}")


if __name__ == "__main__":
    main()
