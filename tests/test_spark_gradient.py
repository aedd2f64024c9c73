"""Acceptance 1: the distributed loss and gradient equal the single-machine ones."""
import logging
import os

import numpy as np
import pytest
from gradcheck import central_differences

pytest.importorskip("pyspark")
from pyspark.ml.linalg import VectorUDT, Vectors  # noqa: E402
from pyspark.sql import types as T  # noqa: E402

from sparkann.spark.data import cache_blocks  # noqa: E402
from sparkann.spark.gradient import DistributedLossGrad, Stages  # noqa: E402

SCHEMA = T.StructType([T.StructField("features", VectorUDT()),
                       T.StructField("label", T.DoubleType())])
TOPOLOGY = Stages(12, [("dense", 9), ("activation", "sigmoid"), ("dense", 7),
                       ("activation", "tanh"), ("dense", 4), ("loss", "softmax_cross_entropy")])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(203, 12))
    y = rng.integers(0, 4, size=203)
    return X, y


@pytest.mark.parametrize("partitions,frame", [(1, False), (3, False), (7, False), (7, True)])
def test_partition_invariance(spark, data, partitions, frame):
    X, y = data
    sc = spark.sparkContext
    rows = [(Vectors.dense(X[i]), float(y[i])) for i in range(len(y))]
    # Uneven partitions plus two empty ones: the sums must not care.
    rdd = sc.parallelize(rows, partitions).union(sc.parallelize([], 2))
    df = spark.createDataFrame(rdd, SCHEMA)
    # frame: the DataFrame path of Spark Connect sessions (slices summed by a shuffle)
    blocks = cache_blocks(df, "features", "label", 12, 4, dtype="float64", block_size=16,
                          frame=frame)
    try:
        net = TOPOLOGY.network(dtype="float64", block_size=16)
        w = np.random.default_rng(1).normal(scale=0.5, size=net.n_weights)
        grad_ref = np.zeros(net.n_weights)
        loss_ref, n = net.loss_grad(w, np.ascontiguousarray(X), y.astype(np.int64), grad_ref)
        dist = DistributedLossGrad(blocks, TOPOLOGY, "float64", 16)
        loss, grad, rows_seen = dist.sums(w)
        assert rows_seen == n == 203
        assert blocks.n_partitions == partitions + 2
        np.testing.assert_allclose(loss, loss_ref, rtol=1e-9)
        np.testing.assert_allclose(grad, grad_ref, rtol=1e-9, atol=1e-12 * np.abs(grad_ref).max())
        mean_loss, mean_grad = dist(w)
        np.testing.assert_allclose(mean_loss, loss_ref / n, rtol=1e-9)
        np.testing.assert_allclose(mean_grad, grad_ref / n, rtol=1e-9,
                                   atol=1e-12 * np.abs(grad_ref).max())
    finally:
        blocks.unpersist()


def test_l2_penalty_matches_finite_differences(spark, data):
    X, y = data
    rows = [(Vectors.dense(X[i]), float(y[i])) for i in range(60)]
    df = spark.createDataFrame(rows, SCHEMA).repartition(3)
    blocks = cache_blocks(df, "features", "label", 12, 4, dtype="float64", block_size=8)
    try:
        dist = DistributedLossGrad(blocks, TOPOLOGY, "float64", 8, reg_param=0.1)
        w = np.random.default_rng(2).normal(scale=0.3, size=TOPOLOGY.network().n_weights)
        _, grad = dist(w)
        estimates = central_differences(lambda v: dist(v)[0], w, (0, 50, len(w) - 1), 1e-5)
        for i, numeric in estimates.items():
            assert abs(numeric - grad[i]) < 1e-7 * max(1.0, abs(grad[i]))
    finally:
        blocks.unpersist()


def _blocks_and_reference(spark, data, partitions, frame=False):
    X, y = data
    rows = [(Vectors.dense(X[i]), float(y[i])) for i in range(len(y))]
    df = spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions), SCHEMA)
    blocks = cache_blocks(df, "features", "label", 12, 4, dtype="float64", block_size=16,
                          frame=frame)
    net = TOPOLOGY.network(dtype="float64", block_size=16)
    w = np.random.default_rng(3).normal(scale=0.5, size=net.n_weights)
    grad_ref = np.zeros(net.n_weights)
    loss_ref, _ = net.loss_grad(w, np.ascontiguousarray(X), y.astype(np.int64), grad_ref)
    return blocks, w, loss_ref, grad_ref


@pytest.mark.parametrize("damage,frame", [("deleted", False), ("truncated", False),
                                          ("deleted", True)])
def test_partition_away_from_its_file_is_computed_from_the_source(spark, data, damage, frame,
                                                                  caplog):
    # What a task sees when it runs on another executor than its partition's file.
    blocks, w, loss_ref, grad_ref = _blocks_and_reference(spark, data, 3, frame)
    try:
        path = blocks.handles.collect()[1][1]
        if damage == "deleted":
            os.unlink(path)
        else:
            os.truncate(path, os.path.getsize(path) - 8)
        with caplog.at_level(logging.WARNING, logger="sparkann.spark.data"):
            loss, grad, rows = DistributedLossGrad(blocks, TOPOLOGY, "float64", 16).sums(w)
        assert rows == 203
        np.testing.assert_allclose(loss, loss_ref, rtol=1e-9)
        np.testing.assert_allclose(grad, grad_ref, rtol=1e-9, atol=1e-12 * np.abs(grad_ref).max())
        assert "1 partition(s) ran away from their stacked data" in caplog.text
        if frame:
            return
        with pytest.raises(Exception, match="stacked data of partition 1 is not on this executor"):
            blocks.rdd.count()
    finally:
        blocks.unpersist()


def test_unpersist_deletes_the_stacked_files(spark, data):
    blocks, _, _, _ = _blocks_and_reference(spark, data, 2)
    paths = [h[1] for h in blocks.handles.collect()]
    assert all(os.path.getsize(p) == blocks.layout.nbytes(h[2])
               for p, h in zip(paths, blocks.handles.collect()))
    blocks.unpersist()
    assert not any(os.path.exists(p) for p in paths)
    assert not os.path.exists(os.path.dirname(paths[0]))


@pytest.mark.parametrize("n_slices", [1, 3])
def test_slices_add_up_in_partition_order_one_slice_in_one_job(spark, n_slices):
    # The reduce-scatter's sum: several slices through a shuffle, one slice at the driver
    # (a shuffle into a single reducer would only add a stage and, adaptively, a job).
    import pyarrow as pa
    from sparkann.spark.data import _slice_rows, read_slices, summed_slices
    vectors = np.random.default_rng(3).normal(size=(4, 10)).astype(np.float32)
    batches = [b for p in (2, 0, 3, 1)
               for b in _slice_rows(p, (vectors[p], np.array([p, 1.0])), "float32", n_slices)]
    rows = spark.createDataFrame(pa.Table.from_batches(batches))
    sc = spark.sparkContext
    sc.setJobGroup("summed-slices", "test")
    try:
        table = summed_slices(rows, "float32", n_slices)
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    total, scalars, missing = read_slices(table, 10, n_slices)
    expected = np.zeros(10)
    for p in range(4):
        expected += vectors[p]
    assert np.array_equal(total, expected)
    assert [p for p, _ in scalars] == [0, 1, 2, 3] and not missing
    if n_slices == 1:
        assert len(sc.statusTracker().getJobIdsForGroup("summed-slices")) == 1


@pytest.mark.parametrize("kind", ["binary", "large_binary"])
def test_binary_values_are_the_column_values_without_copies(kind):
    # Spark returns the partial gradients as `binary` (32-bit offsets), the executors write
    # `large_binary`; both are read in place, sliced chunks and empty values included.
    import pyarrow as pa
    from sparkann.spark.data import binary_values
    typ = getattr(pa, kind)()
    values = [b"abc", b"", np.arange(3.0).tobytes(), b"z"]
    column = pa.chunked_array([pa.array(values[:2], typ), pa.array(values, typ).slice(2, 2)])
    read = binary_values(column)
    assert [v.to_pybytes() for v in read] == values
    assert np.array_equal(np.frombuffer(read[2], np.float64), np.arange(3.0))
    assert read[2].address == column.chunk(1).buffers()[2].address + 3   # a view, no copy
