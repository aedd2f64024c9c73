"""Check the scalability model against the product's gradient job on this machine.

For each cluster ``local-cluster[n,1,1024]`` (n = 1, 2 executors of one core each) and each
topology (A = 784-256-128-10, B = 784-1024-1024-10; float32, sigmoid hidden layers, softmax
output):

1. calibrate, once per cluster and for both topologies: the native FLOP rate of a worker
   (``sparkann.spark.calibration.worker_flop_rate``: n tasks at once, one BLAS thread each,
   per topology) and the short Spark jobs of ``sparkann.spark.calibration.spark_observations``
   (empty job, broadcast of weight-sized vectors, treeAggregate of gradient-sized vectors,
   the same through one explicit shuffle level) and ``read_observations`` (a job that only
   reads cached training blocks), fitted by
   ``sparkann.scaling.fit_parameters``. No gradient job enters the calibration;
2. measure: seconds per call of ``sparkann.spark.gradient.DistributedLossGrad`` (what the
   full-batch solvers run once per iteration: broadcast the weights, the native loss and
   gradient over the blocks ``sparkann.spark.data.cache_blocks`` cached, ``treeAggregate``
   of partials in the training dtype) for several partition counts: P = n is the real point,
   P > n simulates more workers by partition count (more tasks and partials on the same
   slots; P = 5 and 8 add a ``treeAggregate`` level);
3. print measured next to predicted, and write a PNG per topology.

The training data are random (uniform features, random labels), generated in the executors;
only their shape matters to the timing.

Run:  PYTHONPATH=.:python python bench/bench_scaling.py [--quick] [--plot-dir DIR]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
try:        # an installed sparkann (what the executors import too) ...
    import sparkann  # noqa: F401
    SOURCE_PATHS = []
except ImportError:     # ... else the source tree, built in place
    SOURCE_PATHS = [ROOT, os.path.join(ROOT, "python")]
    sys.path[:0] = SOURCE_PATHS

TOPOLOGIES = {"A": [784, 256, 128, 10], "B": [784, 1024, 1024, 10]}


def spark_home():
    """A SPARK_HOME of symlinks, so local-cluster work dirs stay out of site-packages."""
    import pyspark
    src = os.path.dirname(pyspark.__file__)
    home = tempfile.mkdtemp(prefix="sparkann-bench-home-")
    for name in ("bin", "jars", "python", "sbin"):
        if os.path.exists(os.path.join(src, name)):
            os.symlink(os.path.join(src, name), os.path.join(home, name))
    return home


def start(master, executor_memory="1024m", driver_memory="1g"):
    from pyspark.sql import SparkSession
    builder = SparkSession.builder
    if SOURCE_PATHS:
        builder = builder.config("spark.executorEnv.PYTHONPATH", os.pathsep.join(SOURCE_PATHS))
    return (builder.master(master).appName("sparkann-bench-scaling")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", driver_memory)
            .config("spark.executor.memory", executor_memory)
            .config("spark.executorEnv.OMP_NUM_THREADS", "1")
            .config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")
            .getOrCreate())


def cached(spark, layers, dtype, examples, partitions, frame=False):
    """Random training blocks stacked by the product, every partition's handle cached
    (MEMORY_AND_DISK: none is recomputed); with ``frame``, sums by the reduce-scatter
    instead of ``treeAggregate``."""
    from sparkann.spark.calibration import random_frame
    from sparkann.spark.data import cache_blocks

    data = random_frame(spark, layers[0], layers[-1], examples, partitions, seed=7)
    blocks = cache_blocks(data, "features", "label", layers[0], layers[-1], dtype=dtype,
                          block_size=128, frame=frame)
    held = blocks.n_partitions
    if held != partitions or blocks.n_rows != examples:
        blocks.unpersist()
        raise RuntimeError(f"{held} of {partitions} partitions and {blocks.n_rows} of "
                           f"{examples} rows cached; the timing would include recomputing")
    return blocks


def timed_calls(calls, iterations, warmup):
    """Median seconds of each of ``{name: loss_grad}`` at the same weights, in turns."""
    times = {name: [] for name in calls}
    for i in range(warmup + iterations):
        for name, (loss_grad, weights) in calls.items():
            t0 = time.perf_counter()
            loss, _ = loss_grad(weights)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
            if not np.isfinite(loss):
                raise RuntimeError(f"the gradient job gave a loss of {loss}")
    return {name: float(np.median(t)) for name, t in times.items()}


def measure(spark, layers, dtype, examples, partitions, iterations, warmup,
            aggregations=("tree",)):
    """Median seconds per call of the product's distributed loss and gradient, for each way
    of summing the partials (``tree``: treeAggregate; ``reduce-scatter``: the slice shuffle
    of Spark Connect sessions), taken in turns on the same data and weights."""
    from sparkann.spark.gradient import DistributedLossGrad
    from sparkann.topology import Topology

    topology = Topology.from_sizes(layers)
    weights = topology.init_weights(seed=1, dtype=dtype)
    calls, held = {}, []
    try:
        for name in aggregations:
            held.append(cached(spark, layers, dtype, examples, partitions,
                               frame=name == "reduce-scatter"))
            calls[name] = (DistributedLossGrad(held[-1], topology, dtype, 128), weights)
        seconds = timed_calls(calls, iterations, warmup)
    finally:
        for blocks in held:
            blocks.unpersist()
    return seconds if len(aggregations) > 1 else seconds[aggregations[0]]


def calibrate(spark, workers, rates, dtype, examples, repeats, topologies=TOPOLOGIES,
              partitions=None, reads=True):
    """One model per topology from jobs that are not the gradient job (see the docstring)."""
    from sparkann import scaling
    from sparkann.spark import calibration

    models = {name: scaling.ScalingModel(layers, examples[name],
                                         scaling.Parameters(flops=rates[name], bandwidth=1e9),
                                         bytes_per_weight=4 if dtype == "float32" else 8)
              for name, layers in topologies.items()}
    obs = calibration.spark_observations(spark.sparkContext, workers,
                                         [m.weight_bytes for m in models.values()],
                                         [m.partial_bytes for m in models.values()],
                                         partitions=partitions, repeats=repeats)
    if reads:   # else reading the blocks counts as computing (at the measured FLOP rate)
        obs += calibration.read_observations(spark, workers, 784, dtype, repeats=repeats)
    # The Spark jobs compute nothing, so the FLOP rate fixed here does not enter the fit.
    first = next(iter(models.values()))
    machine = scaling.fit_parameters(first, obs, fixed={"sec_per_flop": 1.0 / first.params.flops})
    for model in models.values():
        model.params = replace(machine, flops=model.params.flops)
    for o in obs:
        feats = first.features(o["n"], o.get("partitions"), o.get("broadcast_bytes"),
                               o.get("aggregate_bytes"), o.get("examples"), o["parts"],
                               o.get("flops_per_example"), o.get("levels"))
        o["fitted"] = float(sum(feats.values()) @ machine.theta)
    return models, machine, obs


AGGREGATION_TOPOLOGIES = dict(TOPOLOGIES, C=[784, 2500, 2000, 1500, 1000, 500, 10])


def aggregation_table(args):
    """``--aggregation``: treeAggregate against the slice reduce-scatter on
    ``local-cluster[2,1,...]`` for A, B and C at 2, 4 and 8 partitions, each beside the
    model's prediction (calibrated as above, on jobs that are neither of the two)."""
    from dataclasses import replace as with_fields

    from sparkann.spark import calibration

    examples = dict(zip("ABC", args.examples))
    print(f"# load average at start: {os.getloadavg()} on {os.cpu_count()} cores; "
          f"{args.dtype}; examples {examples}; {args.iterations} timed calls after one warm-up, "
          "in turns", flush=True)
    rows = []
    spark = start(f"local-cluster[2,1,{args.worker_memory}]", args.executor_memory, "3g")
    try:
        rates = {name: calibration.worker_flop_rate(spark.sparkContext, layers, 2,
                                                    args.dtype, rows=1024, repeats=3)
                 for name, layers in AGGREGATION_TOPOLOGIES.items()}
        models, p, obs = calibrate(spark, 2, rates, args.dtype, examples, 2,
                                   AGGREGATION_TOPOLOGIES, partitions=[2, 8], reads=False)
        print("# FLOP rate of a worker " + ", ".join(
            f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in rates.items()) +
            f"; calibrated bandwidth {p.bandwidth / 1e6:.0f} MB/s, latency "
            f"{p.latency * 1e3:.1f} ms, task {p.task * 1e3:.1f} ms, stage {p.stage * 1e3:.1f} "
            f"ms, job {p.job * 1e3:.1f} ms", flush=True)
        for name, layers in AGGREGATION_TOPOLOGIES.items():
            for parts in (2, 4, 8):
                got = measure(spark, layers, args.dtype, examples[name], parts,
                              args.iterations, 1, aggregations=("tree", "reduce-scatter"))
                row = {"topology": name, "P": parts, "load": os.getloadavg()[0]}
                for way in ("tree", "reduce-scatter"):
                    model = with_fields(models[name], aggregation=way)
                    row[way] = (got[way], model.time(2, parts), model.traffic(2, parts))
                rows.append(row)
                print(f"{name} P={parts}: " + ", ".join(
                    f"{way} {row[way][0]:.3f} s (model {row[way][1]:.3f} s)"
                    for way in ("tree", "reduce-scatter")) + f"; load {row['load']:.1f}",
                    flush=True)
    finally:
        spark.stop()
    print("\n| network | P | treeAggregate s | model s | reduce-scatter s | model s | "
          "stages tree / r-s | into a worker MB tree / r-s | into the driver MB tree / r-s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        (t_got, t_pred, t_tr), (s_got, s_pred, s_tr) = r["tree"], r["reduce-scatter"]
        print(f"| {r['topology']} | {r['P']} | {t_got:.3f} | {t_pred:.3f} | {s_got:.3f} | "
              f"{s_pred:.3f} | {t_tr['stages']} / {s_tr['stages']} | "
              f"{t_tr['worker_in_bytes'] / 1e6:.1f} / {s_tr['worker_in_bytes'] / 1e6:.1f} | "
              f"{t_tr['driver_in_bytes'] / 1e6:.1f} / {s_tr['driver_in_bytes'] / 1e6:.1f} |")
    print(f"load average at the end {os.getloadavg()}")
    return 0


def main(argv=None):
    from sparkann import scaling
    from sparkann.spark import calibration

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points and repeats")
    parser.add_argument("--aggregation", action="store_true",
                        help="treeAggregate vs the reduce-scatter, A/B/C at 2, 4, 8 partitions")
    parser.add_argument("--examples", type=int, nargs=3, default=[20000, 6000, 2000],
                        metavar=("A", "B", "C"), help="--aggregation: rows per network")
    parser.add_argument("--iterations", type=int, default=3,
                        help="--aggregation: timed calls per point and way")
    parser.add_argument("--worker-memory", default="2048",
                        help="--aggregation: local-cluster worker memory (MB)")
    parser.add_argument("--executor-memory", default="1536m")
    parser.add_argument("--plot-dir", default=None, help="write scaling_<topology>.png here")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--verbose", action="store_true",
                        help="print every calibration job, measured and fitted")
    args = parser.parse_args(argv)

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    home = spark_home()
    os.environ["SPARK_HOME"] = home
    if args.aggregation:
        try:
            return aggregation_table(args)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    examples = {"A": 60000, "B": 6000 if args.quick else 12000}
    iterations, warmup = (3, 1) if args.quick else (5, 2)
    repeats = 5
    partitions = {1: [1, 2], 2: [2, 4, 5]} if args.quick else {1: [1, 2, 4],
                                                                2: [2, 3, 4, 5, 8]}
    print(f"# load average at start: {os.getloadavg()} on {os.cpu_count()} cores", flush=True)
    results = []
    try:
        for n in (1, 2):
            spark = start(f"local-cluster[{n},1,1024]")
            try:
                # On the executors, n tasks at once (one BLAS thread each), as the gradient
                # job computes: two cores busy at once give less each than one alone.
                rates = {name: calibration.worker_flop_rate(spark.sparkContext, layers, n,
                                                            args.dtype, repeats=7)
                         for name, layers in TOPOLOGIES.items()}
                models, p, obs = calibrate(spark, n, rates, args.dtype, examples, repeats)
                worst = max(abs(o["fitted"] - o["seconds"]) / o["seconds"] for o in obs)
                if args.verbose:
                    for o in obs:
                        size = max(o.get("broadcast_bytes", 0), o.get("aggregate_bytes", 0))
                        print(f"#   calibration {o['job']:>9} P={o['partitions']} "
                              f"{size / 1e6:6.2f} MB: measured {o['seconds']:.3f} s, fitted "
                              f"{o['fitted']:.3f} s", flush=True)
                print(f"# n={n}: FLOP rate of a worker " + ", ".join(
                    f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in rates.items()) +
                    f"; calibrated bandwidth {p.bandwidth / 1e6:.0f} MB/s, latency "
                    f"{p.latency * 1e3:.1f} ms, task {p.task * 1e3:.1f} ms, stage "
                    f"{p.stage * 1e3:.1f} ms, job {p.job * 1e3:.1f} ms, read "
                    f"{(p.read or float('inf')) / 1e6:.0f} MB/s (largest calibration "
                    f"residual {worst:.0%})", flush=True)
                for name, layers in TOPOLOGIES.items():
                    model = models[name]
                    for parts in partitions[n]:
                        got = measure(spark, layers, args.dtype, examples[name], parts,
                                      iterations, warmup)
                        pred = model.breakdown(n, parts)
                        levels = scaling.tree_levels(parts, model.depth, model.rule)
                        results.append({"topology": name, "n": n, "P": parts, "measured": got,
                                        "levels": len(levels) - 1, "model": model, **pred})
                        print(f"{name} n={n} P={parts}: measured {got:.3f} s, predicted "
                              f"{pred['total']:.3f} s {(pred['total'] - got) / got:+.1%}; "
                              f"load {os.getloadavg()[0]:.1f}", flush=True)
            finally:
                spark.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)

    print()
    print(f"{'topology':>8} {'n':>2} {'P':>2} {'levels':>6} {'compute':>8} {'bcast':>7} "
          f"{'aggr':>7} {'overhead':>8} {'predicted':>9} {'measured':>9} {'error':>7}")
    for r in results:
        print(f"{r['topology']:>8} {r['n']:>2} {r['P']:>2} {r['levels']:>6} "
              f"{r['compute']:>8.3f} {r['broadcast']:>7.3f} {r['aggregate']:>7.3f} "
              f"{r['overhead']:>8.3f} {r['total']:>9.3f} {r['measured']:>9.3f} "
              f"{(r['total'] - r['measured']) / r['measured']:>+7.1%}")
    worst = max(abs(r["total"] - r["measured"]) / r["measured"] for r in results)
    real = [r for r in results if r["P"] == r["n"]]
    worst_real = max(abs(r["total"] - r["measured"]) / r["measured"] for r in real)
    print(f"largest error: {worst:.1%} over all points, {worst_real:.1%} over P = n "
          f"(target 20%); load average at the end {os.getloadavg()}")
    if args.plot_dir:
        os.makedirs(args.plot_dir, exist_ok=True)
        for name in TOPOLOGIES:
            rows = [r for r in results if r["topology"] == name and r["P"] == r["n"]]
            model = [r for r in results if r["topology"] == name and r["n"] == 2][0]["model"]
            path = os.path.join(args.plot_dir, f"scaling_{name}.png")
            model.plot(path, measured={r["n"]: r["measured"] for r in rows},
                       title=f"{name} {'-'.join(map(str, TOPOLOGIES[name]))} on this machine "
                             f"(calibrated on local-cluster[2])")
            print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
