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
(job start/end); ours are what the fit measured: in the task that runs the solver (weights out
and partial gradients back included) when the whole fit runs in one query, on the driver
(the weight broadcast included) when it runs a job per gradient. Usage::

    python bench/bench_spark.py [--iters 4] [--skip-b-time] [--mllib-85-iters 100]

``--connect`` runs (a) only, in both session kinds side by side: each of ``--repeats`` rounds
starts one driver process with a classic ``local[2]`` session and one with a Spark Connect
session (``SparkSession.builder.remote("local[2]")``: a local Connect server in front of the
same ``local[2]``), back to back, classic first in odd rounds and Connect first in even ones;
MLlib and ours both run through the session. It prints table (a) for each kind (medians over
the rounds), every round's figures, and per configuration the ratio of our ratio to MLlib
under Connect to the same ratio in the classic session (1.00: Connect costs us what it costs
MLlib), as the median of each round's own figure: a round's two sessions ran minutes apart,
rounds may be far apart on a machine whose load drifts. Each session also fits float32 once
more with ``spark.sparkann.oneQueryFit=false`` (a job, under Connect a query, per gradient)
and prints those seconds beside the one-query ones. ``--passes N`` runs MLlib, ours float32
and ours float64 N times in turn in each session and takes each system's median over all
its gradients there (a single fit's few gradients swing with the JVM's warm-up and the
machine's load). ``--rows`` and ``--configs`` narrow the run; ``--results FILE`` keeps the
rounds, so that several shorter runs add up (``--repeats 0`` prints the tables of the rounds
saved)::

    python bench/bench_spark.py --connect --repeats 3 --rows 20000 --configs A-128 A-1024 B-1024

``--paths classic`` (or ``connect``) times only that: our float32 fit in one query against a
job per gradient, alternating, in one session::

    python bench/bench_spark.py --paths classic --repeats 3 --configs A-1024 B-1024
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
NETWORKS = {"A": A, "B": B}
CONFIGS = ["A-128", "A-1024", "B-128", "B-1024"]
ONE_QUERY_CONF = "spark.sparkann.oneQueryFit"


def local_session(app, connect=False, **conf):
    """A local[2] session on loopback, quiet, with the extra settings ``conf``; with
    ``connect``, a Spark Connect session to a local Connect server in this process (the
    settings go to the server's SparkContext)."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession
    builder = SparkSession.builder.remote("local[2]") if connect else (
        SparkSession.builder.master("local[2]"))
    builder = (builder.appName(app)
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false")
               .config("spark.log.level", "ERROR")
               .config("spark.ui.showConsoleProgress", "false"))
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def session(event_dir, native_blas=False, connect=False):
    return local_session(
        "bench_spark", connect=connect, **{
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


def tag_jobs(spark, group):
    """Mark the jobs that follow as ``group`` in the event log: a job group in a classic
    session, a job tag under Spark Connect (which has no SparkContext)."""
    from sparkann.spark.session import is_connect
    if is_connect(spark):
        spark.clearTags()
        spark.addTag(group)
    else:
        spark.sparkContext.setJobGroup(group, group)


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
                    group = job_group(e.get("Properties") or {})
                    starts[e["Job ID"]] = (group, e["Submission Time"], is_tree_aggregate(e))
                elif kind == "SparkListenerJobEnd" and e["Job ID"] in starts:
                    group, t0, is_agg = starts[e["Job ID"]]
                    if group and is_agg:
                        out.setdefault(group, []).append((e["Completion Time"] - t0) / 1000)
    return out


def is_tree_aggregate(job_start):
    """Whether a job is a ``treeAggregate``: by its stage names (classic), or by the scope of
    its RDDs (Spark Connect names stages after the client's plan)."""
    for stage in job_start.get("Stage Infos", []):
        if "treeAggregate" in stage.get("Stage Name", ""):
            return True
        for rdd in stage.get("RDD Info", []):
            if '"name":"treeAggregate"' in (rdd.get("Scope") or ""):
                return True
    return False


def job_group(properties):
    """The group a job was started in: its job group (classic), or the user's tag that Spark
    Connect attaches as ``SparkConnect_..._Tag_<tag>`` to the jobs of an operation."""
    group = properties.get("spark.jobGroup.id")
    for tag in (properties.get("spark.job.tags") or "").split(","):
        if "_Tag_" in tag:
            group = tag.rsplit("_Tag_", 1)[1]
    return group


def gradient_rows(spark, df, configs, iters, passes=1):
    """(a) for each configuration ``"A-128"`` (network, block size): MLlib's fit, then ours
    in float32 and float64, from the same initial weights, all of it ``passes`` times over
    (the systems alternate in every pass). Returns ``{config: row}`` with our median seconds
    per gradient over the gradients of every pass; MLlib's gradient seconds are in the event
    log, under the job group ``mllib-<config>`` (all passes)."""
    from pyspark.ml.classification import MultilayerPerceptronClassifier as MLlib
    from sparkann.spark import MultilayerPerceptronClassifier as Ours
    from sparkann.topology import Topology
    seconds = {key: {"float32": [], "float64": [], "per_query": []} for key in configs}
    results = {key: {"mllib_wall": 0.0, "mllib_iters": 0, "ours_float32_wall": 0.0,
                     "ours_float64_wall": 0.0, "ours_float32_iters": 0,
                     "ours_float64_iters": 0} for key in configs}
    for index in range(passes):
        for key in configs:
            name, block = key.split("-")
            sizes, block, row = NETWORKS[name], int(block), results[key]
            w0 = Topology.from_sizes(sizes).init_weights(seed=1, dtype="float64").tolist()
            # MLlib first, then ours, then ours in float64: alternating per configuration
            tag_jobs(spark, f"mllib-{key}")
            t = time.perf_counter()
            m = MLlib(layers=sizes, blockSize=block, maxIter=iters, tol=0.0, seed=1,
                      initialWeights=w0).fit(df)
            row["mllib_wall"] += time.perf_counter() - t
            row["mllib_iters"] += len(m.summary().objectiveHistory) - 1
            for dtype in ("float32", "float64"):
                tag_jobs(spark, f"ours-{dtype}-{key}")
                t = time.perf_counter()
                model = Ours(layers=sizes, blockSize=block, maxIter=iters, tol=0.0,
                             initialWeights=w0, dtype=dtype).fit(df)
                row[f"ours_{dtype}_wall"] += time.perf_counter() - t
                row[f"ours_{dtype}_iters"] += max(1, len(model.history))
                seconds[key][dtype] += model.gradient_seconds
            if index == 0:
                # The same float32 fit with a job (and under Connect a query) per gradient:
                # the path every fit took before whole fits ran in one query.
                spark.conf.set(ONE_QUERY_CONF, "false")
                try:
                    model = Ours(layers=sizes, blockSize=block, maxIter=iters, tol=0.0,
                                 initialWeights=w0, dtype="float32").fit(df)
                finally:
                    spark.conf.unset(ONE_QUERY_CONF)
                seconds[key]["per_query"] += model.gradient_seconds
    for key, row in results.items():
        for dtype in ("float32", "float64"):
            row[f"ours_{dtype}_grad"] = statistics.median(seconds[key][dtype])
            row[f"ours_{dtype}_evals_per_iter"] = (len(seconds[key][dtype])
                                                   / row.pop(f"ours_{dtype}_iters"))
        row["ours_float32_per_query_grad"] = statistics.median(seconds[key]["per_query"])
        print(key, {k: round(v, 3) for k, v in row.items()}, flush=True)
    return results


def with_mllib_jobs(results, jobs):
    """Add MLlib's median gradient seconds and gradients per iteration from the event log."""
    for key, row in results.items():
        mj = jobs.get(f"mllib-{key}", [])
        row["mllib_grad"] = statistics.median(mj) if mj else float("nan")
        row["mllib_evals_per_iter"] = len(mj) / max(1, row["mllib_iters"])
    return results


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


def gradient_section(kind, iters, rows, configs, passes):
    """One driver process of ``--connect``: (a) through a ``kind`` session, ``passes`` times
    over, as JSON."""
    from sparkann.datasets import load_fashion_mnist
    event_dir = tempfile.mkdtemp(prefix="bench-spark-events-")
    spark = session(event_dir, connect=kind == "connect")
    X, y = load_fashion_mnist(kind="train", dtype="float64")
    df = cached_train(spark, X[:rows], y[:rows])
    results = gradient_rows(spark, df, configs, iters, passes)
    spark.stop()
    print("SECTION " + json.dumps(with_mllib_jobs(results, job_seconds(event_dir))), flush=True)


SESSION_KINDS = ("classic", "connect")


def round_order(index):
    """The session kinds of round ``index`` (0-based) in the order they run: classic first in
    even rounds, Connect first in odd ones, so a load that drifts during a run weighs on both
    kinds alike over pairs of rounds."""
    return SESSION_KINDS if index % 2 == 0 else SESSION_KINDS[::-1]


def our_ratio(row, dtype):
    """MLlib's seconds per gradient over ours (``dtype``) in one run of one configuration."""
    return row["mllib_grad"] / row[f"ours_{dtype}_grad"]


def ratio_of_ratios(rounds, key, dtype):
    """Per round, our ratio to MLlib under Connect over the same ratio in the classic session
    of that round (1.00: Connect costs us what it costs MLlib); ``rounds`` is a list of
    ``{"classic": section, "connect": section}``. Each round's two sessions ran back to back,
    so its figure compares like with like even when the machine's load moves between rounds."""
    return [our_ratio(r["connect"][key], dtype) / our_ratio(r["classic"][key], dtype)
            for r in rounds]


def run_section(kind, args):
    """One driver process of table (a) in a ``kind`` session; its results as a dict."""
    run = subprocess.run([sys.executable, __file__, "--gradient-section", kind,
                          "--iters", str(args.iters), "--rows", str(args.rows),
                          "--passes", str(args.passes),
                          "--configs", *args.configs], capture_output=True, text=True)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("SECTION ")]
    if not lines:
        sys.stderr.write(run.stdout[-3000:] + run.stderr[-5000:])
        raise RuntimeError(f"the {kind} driver failed (exit status {run.returncode})")
    return json.loads(lines[-1][8:])


def load_rounds(path, args):
    """Rounds saved by earlier runs with the same settings (``--results``)."""
    if not path or not os.path.exists(path):
        return []
    rounds = []
    with open(path) as f:
        for line in f:
            saved = json.loads(line)
            if (saved["rows"], saved["iters"], saved.get("passes", 1)) == (
                    args.rows, args.iters, args.passes) and all(
                    key in saved["classic"] for key in args.configs):
                rounds.append(saved)
    return rounds


def side_by_side(args):
    """``--connect``: (a) in classic and Connect driver processes, in turns, then the tables."""
    rounds = load_rounds(args.results, args)
    if rounds:
        print(f"{len(rounds)} round(s) read from {args.results}", flush=True)
    for _ in range(args.repeats):
        index = len(rounds)
        done = {"rows": args.rows, "iters": args.iters, "passes": args.passes}
        for kind in round_order(index):
            t = time.perf_counter()
            done[kind] = run_section(kind, args)
            print(f"round {index + 1} {kind} ({time.perf_counter() - t:.0f} s): " + "; ".join(
                f"{key} MLlib {row['mllib_grad']:.3f} f32 {row['ours_float32_grad']:.3f} "
                f"f64 {row['ours_float64_grad']:.3f}" for key, row in done[kind].items()),
                flush=True)
        rounds.append(done)
        if args.results:
            with open(args.results, "a") as f:
                f.write(json.dumps(done) + "\n")
    if not rounds:
        raise SystemExit("no rounds to report")
    print_tables(rounds, args)


def print_tables(rounds, args):
    n = len(rounds)
    medians = {kind: {key: {field: statistics.median(r[kind][key][field] for r in rounds)
                            for field in rounds[0][kind][key]} for key in args.configs}
               for kind in SESSION_KINDS}
    for kind in SESSION_KINDS:
        print(f"\n(a) {kind} session: seconds per full-batch gradient evaluation, medians of "
              f"{n} driver processes; {args.rows} rows, local[2], MLlib float64 "
              "with its Java BLAS")
        print(f"{'config':8s} {'MLlib java':>10s} {'ev/it':>6s} {'ours f32':>9s} {'ev/it':>6s} "
              f"{'ours f64':>9s} {'java/f32':>8s} {'java/f64':>8s}")
        for key, row in medians[kind].items():
            f32, f64, m_grad = row["ours_float32_grad"], row["ours_float64_grad"], row["mllib_grad"]
            print(f"{key:8s} {m_grad:10.3f} {row['mllib_evals_per_iter']:6.2f} {f32:9.3f} "
                  f"{row['ours_float32_evals_per_iter']:6.2f} {f64:9.3f} {m_grad / f32:8.2f} "
                  f"{m_grad / f64:8.2f}")
    print("\nper round (the first kind named ran first): seconds per gradient, MLlib / ours "
          "float32 / ours float64, and our ratio to MLlib under Connect over the classic one")
    print(f"{'round':6s} {'config':8s} {'classic':>23s} {'connect':>23s} {'f32':>5s} {'f64':>5s}")
    for i, r in enumerate(rounds):
        order = "/".join(round_order(i))
        for key in args.configs:
            cells = ["/".join(f"{r[k][key][f]:.3f}" for f in (
                "mllib_grad", "ours_float32_grad", "ours_float64_grad")) for k in SESSION_KINDS]
            rr = [ratio_of_ratios([r], key, d)[0] for d in ("float32", "float64")]
            print(f"{i + 1:<6d} {key:8s} {cells[0]:>23s} {cells[1]:>23s} {rr[0]:5.2f} "
                  f"{rr[1]:5.2f}  {order}")
    print("\nour ratio to MLlib (MLlib seconds / ours) under Connect over the same ratio in the "
          "classic session (1.00: Connect costs us what it costs MLlib); conn/clas is the "
          f"median over the {n} rounds of each round's own figure")
    print(f"{'config':8s} {'classic f32':>11s} {'connect f32':>11s} {'conn/clas':>9s} "
          f"{'classic f64':>11s} {'connect f64':>11s} {'conn/clas':>9s}")
    for key in args.configs:
        line = f"{key:8s}"
        for dtype in ("float32", "float64"):
            ratio = [our_ratio(medians[k][key], dtype) for k in SESSION_KINDS]
            line += (f" {ratio[0]:11.2f} {ratio[1]:11.2f} "
                     f"{statistics.median(ratio_of_ratios(rounds, key, dtype)):9.2f}")
        print(line)
    print_per_query(rounds, args)


def print_per_query(rounds, args):
    """Our float32 seconds per gradient with the whole fit in one query and with a job (a
    query) per gradient, in the same session; medians of the rounds that have both."""
    rounds = [r for r in rounds if all("ours_float32_per_query_grad" in r[k][key]
                                       for k in SESSION_KINDS for key in args.configs)]
    if not rounds:
        return
    print(f"\nours float32, seconds per gradient: the fit in one query / a job (a query) per "
          f"gradient, same session, medians of {len(rounds)} rounds")
    print(f"{'config':8s} {'classic':>15s} {'ratio':>6s} {'connect':>15s} {'ratio':>6s}")
    for key in args.configs:
        line = f"{key:8s}"
        for kind in SESSION_KINDS:
            one = statistics.median(r[kind][key]["ours_float32_grad"] for r in rounds)
            per = statistics.median(r[kind][key]["ours_float32_per_query_grad"] for r in rounds)
            ratio = statistics.median(r[kind][key]["ours_float32_per_query_grad"]
                                      / r[kind][key]["ours_float32_grad"] for r in rounds)
            line += f" {one:7.3f}/{per:7.3f} {ratio:6.2f}"
        print(line)


def one_query_against_a_job_per_gradient(kind, args):
    """``--paths KIND``: ours float32 with the whole fit in one query and with a job (under
    Connect a query) per gradient, in one ``kind`` session, the two alternating ``--repeats``
    times each (which goes first alternates too); prints each fit's median seconds per
    gradient and the median of the pairs' ratios."""
    from sparkann.datasets import load_fashion_mnist
    from sparkann.spark import MultilayerPerceptronClassifier as Ours
    from sparkann.topology import Topology
    spark = session(tempfile.mkdtemp(prefix="bench-spark-events-"), connect=kind == "connect")
    X, y = load_fashion_mnist(kind="train", dtype="float64")
    df = cached_train(spark, X[:args.rows], y[:args.rows])
    for key in args.configs:
        name, block = key.split("-")
        sizes = NETWORKS[name]
        w0 = Topology.from_sizes(sizes).init_weights(seed=1, dtype="float64").tolist()
        seconds = {"one query": [], "per gradient": []}
        for i in range(args.repeats):
            for way in sorted(seconds, reverse=i % 2 == 1):
                if way == "per gradient":
                    spark.conf.set(ONE_QUERY_CONF, "false")
                try:
                    model = Ours(layers=sizes, blockSize=int(block), maxIter=args.iters,
                                 tol=0.0, initialWeights=w0, dtype="float32").fit(df)
                finally:
                    spark.conf.unset(ONE_QUERY_CONF)
                seconds[way].append(statistics.median(model.gradient_seconds))
        ratios = [p / o for o, p in zip(seconds["one query"], seconds["per gradient"])]
        print(f"{kind} {key}: seconds per gradient, one query "
              f"{' '.join(f'{t:.3f}' for t in seconds['one query'])}; a job per gradient "
              f"{' '.join(f'{t:.3f}' for t in seconds['per gradient'])}; a job per gradient / "
              f"one query, median of the pairs: {statistics.median(ratios):.2f}", flush=True)
    spark.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=3, help="L-BFGS iterations per (a) run")
    ap.add_argument("--connect", action="store_true",
                    help="(a) only, in classic and Spark Connect sessions side by side")
    ap.add_argument("--repeats", type=int, default=3,
                    help="--connect: rounds to run (one driver process per session kind each)")
    ap.add_argument("--passes", type=int, default=1,
                    help="--connect: times each session runs every system and configuration "
                         "(alternating); its figures are medians over all passes")
    ap.add_argument("--rows", type=int, default=60000,
                    help="--connect: the first ROWS training rows")
    ap.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS,
                    help="--connect: network-blockSize configurations")
    ap.add_argument("--results", metavar="FILE",
                    help="--connect: append each finished round to FILE (JSON lines) and "
                         "count the rounds already there with the same --rows and --iters")
    ap.add_argument("--paths", choices=SESSION_KINDS,
                    help="ours float32, the fit in one query against a job per gradient, "
                         "alternating --repeats times in one session of this kind")
    ap.add_argument("--gradient-section", choices=SESSION_KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--mllib-85-iters", type=int, default=100)
    ap.add_argument("--skip-b-time", action="store_true", help="skip (b) for topology B")
    ap.add_argument("--skip-mllib-85", action="store_true")
    ap.add_argument("--skip-native", action="store_true",
                    help="skip MLlib with the native BLAS")
    ap.add_argument("--mllib-native-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mllib_native_only:
        return mllib_native_gradients(args.iters)
    if args.gradient_section:
        return gradient_section(args.gradient_section, args.iters, args.rows, args.configs,
                                args.passes)
    if args.connect:
        return side_by_side(args)
    if args.paths:
        return one_query_against_a_job_per_gradient(args.paths, args)

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
    for key in CONFIGS:
        row = gradient_rows(spark, df, [key], args.iters)[key]
        name, block = key.split("-")
        sizes, block = NETWORKS[name], int(block)
        w0 = Topology.from_sizes(sizes).init_weights(seed=1, dtype="float64")
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
    with_mllib_jobs(results, jobs)
    print("\n(a) seconds per full-batch gradient evaluation (median), local[2]; MLlib float64 "
          "with Java BLAS (java) and native BLAS (nat)")
    print(f"{'config':8s} {'MLlib java':>10s} {'ev/it':>6s} {'MLlib nat':>9s} {'ours f32':>9s} "
          f"{'ev/it':>6s} {'ours f64':>9s} {'java/f32':>8s} {'nat/f32':>8s} {'java/f64':>8s} "
          f"{'nat/f64':>8s} {'(c) f32/native':>14s}")
    for key, row in results.items():
        m_grad, m_nat = row["mllib_grad"], native.get(key, float("nan"))
        f32, f64 = row["ours_float32_grad"], row["ours_float64_grad"]
        print(f"{key:8s} {m_grad:10.3f} {row['mllib_evals_per_iter']:6.2f} {m_nat:9.3f} "
              f"{f32:9.3f} {row['ours_float32_evals_per_iter']:6.2f} {f64:9.3f} "
              f"{m_grad / f32:8.2f} {m_nat / f32:8.2f} {m_grad / f64:8.2f} {m_nat / f64:8.2f} "
              f"{f32 / row['native_float32_grad']:14.2f}")
    print("\n(d) the floor of any gradient job here: float32 GEMM seconds at this host's "
          "one-thread 2048^3 rate on both cores, plus an empty two-task Spark job")
    print(f"{'config':8s} {'GEMM s':>7s} {'empty job':>9s} {'floor':>7s} {'java/floor':>10s} "
          f"{'ours f32/floor':>14s}")
    for key, row in results.items():
        m_grad = row["mllib_grad"]
        print(f"{key:8s} {row['gemm_bound']:7.3f} {row['empty_job']:9.3f} {row['bound']:7.3f} "
              f"{m_grad / row['bound']:10.2f} {row['ours_float32_grad'] / row['bound']:14.2f}")
    print("\n(b) wall seconds to 85% test accuracy")
    for key, value in to85.items():
        print(f"{key:10s} {value:8.1f}")
    if "mllib-A" in to85 and "ours-A" in to85:
        print(f"ratio A (MLlib / ours): {to85['mllib-A'] / to85['ours-A']:.2f}")


if __name__ == "__main__":
    main()
