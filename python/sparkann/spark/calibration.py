"""Short Spark jobs that calibrate the scaling model (:mod:`sparkann.scaling`) on a live
cluster: the FLOP rate of a worker inside its executor, and jobs that each isolate one cost of
an iteration (an empty job, a broadcast, a gather of partials, one shuffle level, a read of
cached blocks). Their observations feed :func:`sparkann.scaling.fit.fit_parameters`.

The jobs time the mechanisms of a classic session (``sc.broadcast``, ``treeAggregate``, an
RDD of cached blocks), which a Spark Connect session does not have: given one, they refuse
with a TypeError that says so (:func:`random_frame` works in both)."""
import os
import sys
import time

import numpy as np
from pyspark.sql import SparkSession

from sparkann.scaling.fit import fit_parameters
from sparkann.scaling.flops import measure_flop_rate
from sparkann.scaling.model import Parameters, ScalingModel
from sparkann.spark.data import cache_blocks
from sparkann.spark.session import is_connect


def refuse_connect(spark, what):
    """TypeError when ``spark`` is a Spark Connect session: ``what`` needs a classic one."""
    if is_connect(spark):
        raise TypeError(f"{what} times classic Spark's SparkContext jobs (broadcast, "
                        f"treeAggregate, RDDs), which a Spark Connect session does not have: "
                        f"calibrate with a classic SparkSession (`sparkann scale --calibrate` "
                        f"starts one)")


def worker_flop_rate(sc, layers, workers, dtype="float32", rows=4096, repeats=5, threads=1,
                     statistic="best"):
    """FLOP/s of one worker measured on the cluster itself.

    Runs ``workers`` tasks at once, each timing :func:`measure_flop_rate` in its executor,
    so the rate is that of a core while the others compute too (on a shared machine, or a
    node of several executors, it is lower than one core's alone). Each task keeps its
    fastest repeat by default (work that is not ours only slows a repeat down); the result
    is the slowest task's rate, as a synchronous iteration waits for it. ``sc`` is a live
    SparkContext whose executors can import sparkann and ann_core.
    """
    refuse_connect(sc, "worker_flop_rate")
    layers = [int(v) for v in layers]

    def rate(_):
        yield measure_flop_rate(layers, dtype, rows, threads, repeats, statistic=statistic)

    return min(sc.parallelize(range(workers), workers).mapPartitions(rate).collect())


def _median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def spark_observations(sc, workers, broadcast_sizes, aggregate_sizes, partitions=None,
                       repeats=5, depth=2):
    """Short Spark jobs that expose the communication costs of the model.

    For each partition count (default ``n, 2n, 4n``): an empty job (``c_job``, ``c_task``,
    latency); per size in ``broadcast_sizes`` (bytes) a job that reads a broadcast vector;
    and per size in ``aggregate_sizes`` a ``treeAggregate`` of such vectors and a gather
    through one explicit shuffle level into one partition, built as PySpark's
    ``treeAggregate`` builds its levels (the cost of a level: ``c_stage``). Give a small and
    a large size of each kind, so that bandwidth separates from per-message costs. Returns
    observations (median seconds) for :func:`fit_parameters`. ``sc`` is a live
    SparkContext.
    """
    refuse_connect(sc, "spark_observations")
    partitions = partitions or [workers, 2 * workers, 4 * workers]
    obs = []
    for p in partitions:
        rdd = sc.parallelize(range(p), p).cache()
        rdd.count()
        base = {"n": workers, "partitions": p, "examples": 0, "aggregate_bytes": 8,
                "parts": ("compute", "aggregate", "overhead")}

        def empty():
            rdd.map(lambda i: 0.0).treeAggregate(0.0, _add, _add, depth)

        obs.append(dict(base, seconds=_timed(empty, repeats), job="empty"))
        for size in sorted({max(8, int(b)) // 8 for b in broadcast_sizes}):
            def broadcast(size=size):
                value = sc.broadcast(np.ones(size))
                rdd.map(lambda i: float(value.value[0])).treeAggregate(0.0, _add, _add, depth)
                value.destroy()

            obs.append(dict(base, seconds=_timed(broadcast, repeats), broadcast_bytes=size * 8,
                            parts=("compute", "broadcast", "aggregate", "overhead"),
                            job="broadcast"))
        for size in sorted({max(8, int(b)) // 8 for b in aggregate_sizes}):
            # None as the zero: a vector zero would travel inside every task closure.
            def aggregate(size=size):
                rdd.map(lambda i: np.ones(size)).treeAggregate(None, _add_or_none,
                                                               _add_or_none, depth)

            def one_level(size=size):
                through_one_level(rdd.map(lambda i: np.ones(size)))

            obs.append(dict(base, seconds=_timed(aggregate, repeats), aggregate_bytes=size * 8,
                            job="aggregate"))
            obs.append(dict(base, seconds=_timed(one_level, repeats), aggregate_bytes=size * 8,
                            levels=[p, 1], job="level"))
        rdd.unpersist()
    return obs


def read_observations(spark, workers, n_features, dtype="float32", rows=(20000, 60000),
                      repeats=5, partitions=None):
    """Jobs that only read training blocks cached by ``sparkann.spark.data.cache_blocks``.

    For each count in ``rows``, random ``rows x n_features`` data in ``partitions``
    partitions (default ``n``) are stacked as training stacks them; each job reads every
    block in the Python workers and computes nothing (``flops_per_example=0``). Two
    sizes give the read rate as a slope, apart from the fixed costs of a job.
    """
    refuse_connect(spark, "read_observations")
    obs = []
    for p in partitions or [workers]:
        for count in sorted({int(r) for r in np.atleast_1d(rows)}):
            blocks = cache_blocks(random_frame(spark, n_features, 2, count, p), "features",
                                  "label", n_features, 2, dtype=dtype)
            try:
                def read():
                    blocks.rdd.mapPartitions(_rows_in).treeAggregate(0, _add, _add)

                obs.append({"n": workers, "partitions": p, "examples": count,
                            "flops_per_example": 0, "aggregate_bytes": 8,
                            "parts": ("compute", "aggregate", "overhead"),
                            "seconds": _timed(read, repeats), "job": "read"})
            finally:
                blocks.unpersist()
    return obs


def random_frame(spark, n_features, n_classes, rows, partitions, seed=0):
    """A DataFrame of random float32 feature arrays and int64 class labels, made in the
    executors (``partitions`` partitions, nothing shipped from the driver)."""
    def generate(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        for _ in batches:                   # the input is one id per partition: unused
            pass
        part = TaskContext.get().partitionId()
        lo, hi = rows * part // partitions, rows * (part + 1) // partitions
        rng = np.random.default_rng([seed, part])
        x = rng.random((hi - lo, n_features), dtype=np.float32)
        offsets = pa.array(np.arange(0, x.size + 1, n_features, dtype=np.int32))
        yield pa.RecordBatch.from_arrays(
            [pa.ListArray.from_arrays(offsets, pa.array(x.ravel())),
             pa.array(rng.integers(0, n_classes, hi - lo))], names=["features", "label"])

    return spark.range(0, partitions, numPartitions=partitions).mapInArrow(
        generate, "features array<float>, label long")


def through_one_level(partials):
    """Sum an RDD of one partial per partition through one shuffle level into one partition,
    as PySpark's ``treeAggregate`` builds a level (``reduceByKey`` on ``index % P'``)."""
    return (partials.mapPartitionsWithIndex(_keyed_by_zero)
            .reduceByKey(_add_or_none, 1).values().reduce(_add_or_none))


def _timed(fn, repeats):
    fn()                                    # warm-up
    return _median_seconds(fn, repeats)


def _rows_in(blocks):
    yield sum(block[0].shape[0] for block in blocks)


def _keyed_by_zero(index, partials):
    return ((0, v) for v in partials)


def _add(a, b):
    return a + b


def _add_or_none(a, b):
    return b if a is None else a if b is None else a + b


def calibrate_local(layers, examples, dtype="float32", master="local[2]", workers=2,
                    repeats=5, threads=1):
    """A model calibrated on this machine: native FLOP rate plus short Spark jobs.

    The FLOP rate is :func:`worker_flop_rate`'s; the other jobs are those of
    :func:`spark_observations` (with the network's weight and partial sizes and 16 MB) and
    :func:`read_observations`. Starts (and stops) a SparkSession on
    ``master``; needs pyspark and Java.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    bpw = 4 if dtype == "float32" else 8
    spark = (SparkSession.builder.master(master).appName("sparkann-scaling-calibration")
             .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    try:
        flops = worker_flop_rate(spark.sparkContext, layers, workers, dtype, threads=threads)
        model = ScalingModel(layers, examples, Parameters(flops=flops, bandwidth=1e9),
                             bytes_per_weight=bpw)
        probe = 16_000_000
        obs = spark_observations(spark.sparkContext, workers, [model.weight_bytes, probe],
                                 [model.partial_bytes, probe], repeats=repeats)
        obs += read_observations(spark, workers, model.layers[0], dtype, repeats=repeats)
    finally:
        spark.stop()
    model.params = fit_parameters(model, obs, fixed={"sec_per_flop": 1.0 / flops})
    return model
