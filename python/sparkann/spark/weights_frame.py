"""A saved model's ``data/``: one row of weights and history, written by small tasks.

A DataFrame made from a local list or Arrow table is cut into at most the default parallelism
of partitions, and each task carries its partition's rows: one row holding the weights of
[784, 256, 128, 10] made a 2,077 KiB task, past the 1,000 KiB Spark warns about. So the
weights travel as rows of at most ``CHUNK`` values, one row per partition, and a shuffle
(which moves data between tasks, not inside them) joins them into the single row
``weights array<double>, objectiveHistory array<double>`` that readers expect.
"""
import numpy as np

# 32,768 doubles: 256 KiB of data per task
CHUNK = 32768
LEAF_PARALLELISM = "spark.sql.leafNodeDefaultParallelism"


def write_weights(spark, path, weights, history, mode="error"):
    """Write ``weights`` and ``history`` as one row of Parquet in ``path``, in small tasks.

    Parameters
    ----------
    spark : SparkSession
    path : str
        The folder to write (it must not exist, unless ``mode`` is ``"overwrite"``).
    weights : array-like
        Written as float64.
    history : sequence of float
    mode : str
        The DataFrame writer's save mode.
    """
    import pyarrow as pa
    from pyspark.sql import functions as F

    weights = np.ascontiguousarray(weights, dtype=np.float64)
    batches = []
    for index, start in enumerate(range(0, max(weights.size, 1), CHUNK)):
        part = weights[start:start + CHUNK]
        values = pa.ListArray.from_arrays(pa.array([0, part.size], pa.int32()), pa.array(part))
        batches.append(pa.record_batch([pa.array([index], pa.int32()), values],
                                       names=["chunk", "part"]))
    ordered = F.sort_array(F.collect_list(F.struct("chunk", "part")))  # by chunk index
    # One partition per chunk: a local table is cut into min(rows, this setting) partitions
    # when the plan runs, so the setting holds until the write is done.
    previous = spark.conf.get(LEAF_PARALLELISM, None)
    spark.conf.set(LEAF_PARALLELISM, str(len(batches)))
    try:
        chunks = spark.createDataFrame(pa.Table.from_batches(batches))
        (chunks.groupBy().agg(ordered.alias("chunks"))
         .select(F.flatten(F.transform("chunks", lambda c: c["part"])).alias("weights"),
                 F.array(*[F.lit(float(v)) for v in history]).cast("array<double>")
                 .alias("objectiveHistory"))
         .write.mode(mode).parquet(path))
    finally:
        if previous is None:
            spark.conf.unset(LEAF_PARALLELISM)
        else:
            spark.conf.set(LEAF_PARALLELISM, previous)
