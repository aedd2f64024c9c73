"""The DataFrame -> cached blocks path: layouts, block stacking and row checks."""
import numpy as np
import pytest

pytest.importorskip("pyspark")
from pyspark.ml.linalg import Vectors  # noqa: E402

from sparkann.spark.data import cache_blocks  # noqa: E402


def _collect(blocks):
    parts = blocks.rdd.collect()
    X = np.concatenate([b[0] for b in parts])
    y = np.concatenate([b[1] for b in parts])
    return parts, X, y


@pytest.mark.parametrize("layout", ["dense", "sparse", "mixed", "array_float", "array_double"])
def test_layouts_give_the_same_blocks(spark, layout):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(37, 6))
    X[X < 0.3] = 0.0
    y = rng.integers(0, 3, size=37)

    def vec(i, row):
        if layout == "dense" or (layout == "mixed" and i % 2):
            return Vectors.dense(row)
        if layout in ("sparse", "mixed"):
            nz = np.flatnonzero(row)
            return Vectors.sparse(6, nz.tolist(), row[nz].tolist())
        return [float(v) for v in row]

    from pyspark.sql import types as T
    ftype = {"array_float": T.ArrayType(T.FloatType()),
             "array_double": T.ArrayType(T.DoubleType())}.get(layout)
    rows = [(vec(i, X[i]), float(y[i])) for i in range(37)]
    if ftype is None:
        df = spark.createDataFrame(rows, ["features", "label"])
    else:
        df = spark.createDataFrame(rows, T.StructType([T.StructField("features", ftype),
                                                       T.StructField("label", T.DoubleType())]))
    df = df.repartition(3)
    blocks = cache_blocks(df, "features", "label", 6, 3, dtype="float64", block_size=5)
    try:
        parts, Xb, yb = _collect(blocks)
        assert blocks.n_rows == 37
        assert all(b[0].flags.c_contiguous and b[0].dtype == np.float64 for b in parts)
        assert all(1 <= b[0].shape[0] <= 5 for b in parts)
        # repartition shuffles: compare as sets of rows
        got = sorted(map(tuple, np.column_stack([Xb, yb])))
        tol = 1e-6 if layout == "array_float" else 0
        want = sorted(map(tuple, np.column_stack([X, y])))
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=tol, atol=tol)
        assert yb.dtype == np.int64
    finally:
        blocks.unpersist()


def test_blocks_follow_block_size_and_empty_partitions(spark):
    rows = [(Vectors.dense([float(i), 1.0]), float(i % 2)) for i in range(10)]
    sc = spark.sparkContext
    # one partition of 10 rows, then three empty ones
    rdd = sc.parallelize(rows, 1).union(sc.parallelize([], 3))
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T
    schema = T.StructType([T.StructField("features", VectorUDT()),
                           T.StructField("label", T.DoubleType())])
    df = spark.createDataFrame(rdd, schema)
    blocks = cache_blocks(df, "features", "label", 2, 2, dtype="float32", block_size=3)
    try:
        per_part = blocks.rdd.glom().map(lambda bs: [b[0].shape[0] for b in bs]).collect()
        assert per_part == [[3, 3, 3, 1], [], [], []]
        assert blocks.n_rows == 10
    finally:
        blocks.unpersist()


def test_regression_targets(spark):
    rows = [(Vectors.dense([float(i)]), Vectors.dense([i * 2.0, -i])) for i in range(8)]
    df = spark.createDataFrame(rows, ["features", "label"]).coalesce(1)
    blocks = cache_blocks(df, "features", "label", 1, 2, dtype="float32", block_size=4,
                          targets=True)
    try:
        _, X, y = _collect(blocks)
        np.testing.assert_array_equal(y, np.column_stack([X[:, 0] * 2, -X[:, 0]]))
    finally:
        blocks.unpersist()


def _partitions(df):
    """Per partition, the first feature of each row, in the order the partition gives them."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F
    rows = df.select(F.spark_partition_id().alias("p"),
                     vector_to_array("features")[0].alias("x")).collect()
    out = {}
    for r in rows:
        out.setdefault(r.p, []).append(r.x)
    return out


def test_dataframe_from_numpy_partitions_are_row_ranges(spark):
    """Partition p holds a contiguous range of rows, in order: the same rows in the same
    order however often (and wherever) it is computed."""
    from sparkann.spark.data import dataframe_from_numpy, has_round_robin
    X = np.arange(1000, dtype=np.float64).reshape(500, 2)
    df = dataframe_from_numpy(spark, X, np.arange(500) % 3, num_partitions=3)
    parts = _partitions(df)
    assert sorted(parts) == [0, 1, 2]
    owner = np.arange(500) * 3 // 500     # contiguous, near-equal ranges
    for p in range(3):
        assert parts[p] == X[owner == p, 0].tolist()
    assert _partitions(df) == parts
    assert not has_round_robin(df) and has_round_robin(df.repartition(3))


def test_dataframe_from_numpy_ships_no_large_task(spark):
    """2,000 x 100 float64 (1.6 MB) travels in slices well under Spark's 1,000 KiB 'task of
    very large size' threshold, one slice per task, and arrives whole and in order."""
    from pyspark.ml.functions import vector_to_array

    from sparkann.spark.data import arrow_slices, dataframe_from_numpy
    X = np.random.default_rng(0).normal(size=(2000, 100))
    slices = list(arrow_slices(X, np.zeros(2000), 2))
    assert len(slices) >= 2 and sum(b.num_rows for b in slices) == 2000
    assert max(b.nbytes for b in slices) < 800 * 1024
    rows = dataframe_from_numpy(spark, X, np.zeros(2000), num_partitions=2) \
        .select(vector_to_array("features").alias("f")).collect()
    np.testing.assert_array_equal(np.array([r.f for r in rows]), X)


def test_fit_warns_about_a_round_robin_input(spark):
    from sparkann.spark import MultilayerPerceptronClassifier
    rows = [(Vectors.dense([float(i), 1.0]), float(i % 2)) for i in range(20)]
    df = spark.createDataFrame(rows, ["features", "label"])
    est = MultilayerPerceptronClassifier(layers=[2, 2], maxIter=1)
    with pytest.warns(UserWarning, match="round-robin repartition"):
        est.fit(df.repartition(2))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.fit(df.repartition(2, "label"))
