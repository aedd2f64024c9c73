"""DataFrame -> contiguous numpy blocks, built once in the executors and kept there.

The features column (a Spark ML ``Vector``, dense or sparse, or an ``array<float|double>``)
and the label column reach the executors as Arrow batches (``mapInArrow``); they are turned
into C-contiguous ``(rows, n_features)`` blocks of the training dtype with whole-column numpy
operations (no Python object per row), checked while they are stacked, and kept by the
executors in memory-mapped files (:mod:`sparkann.spark.resident`). Every iteration then reads
those only, without passing the data through Spark again.
"""
import contextlib
import functools
import io
import logging
import time
import warnings

import numpy as np
from pyspark import StorageLevel
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import types as T

from sparkann.scaling.model import slice_count
from sparkann.spark import resident
from sparkann.spark.session import classic_context, is_connect

log = logging.getLogger(__name__)

# Executor-side errors carry this prefix so the driver can raise them as a plain ValueError.
DATA_ERROR = "sparkann data error: "

_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
            T.DecimalType)


def _column_type(df, name, role):
    if name not in df.columns:
        raise ValueError(f"{role} column {name!r} is not in the DataFrame; its columns are "
                         f"{df.columns}")
    return df.schema[name].dataType


def check_schema(df, features_col, label_col, targets=False, weight_col=None):
    """Check column presence and types on the driver, before any Spark job.

    Returns the kind of the label column: ``"scalar"`` or ``"vector"`` (regression targets).
    ``weight_col``: a column of numbers (the rows' weights), or None.
    """
    if weight_col is not None:
        wtype = _column_type(df, weight_col, "weight")
        if not isinstance(wtype, _NUMERIC):
            raise ValueError(f"weight column {weight_col!r} must hold numbers, found "
                             f"{wtype.simpleString()}")
    ftype = _column_type(df, features_col, "features")
    if not (isinstance(ftype, VectorUDT) or (isinstance(ftype, T.ArrayType)
                                             and isinstance(ftype.elementType, _NUMERIC))):
        raise ValueError(f"features column {features_col!r} must hold Spark ML vectors or "
                         f"arrays of numbers, found {ftype.simpleString()}")
    ltype = _column_type(df, label_col, "label")
    if isinstance(ltype, _NUMERIC):
        return "scalar"
    if targets and (isinstance(ltype, VectorUDT) or (isinstance(ltype, T.ArrayType)
                                                     and isinstance(ltype.elementType, _NUMERIC))):
        return "vector"
    wanted = "numbers, vectors or arrays of numbers" if targets else "numbers (class indices)"
    raise ValueError(f"label column {label_col!r} must hold {wanted}, found "
                     f"{ltype.simpleString()}")


def _fail(message):
    raise ValueError(DATA_ERROR + message)


def _list_to_dense(lists, n, dtype, what, row0):
    """A list array of equal-length rows -> (rows, n) array (zero-copy before the cast)."""
    import pyarrow as pa
    m = len(lists)
    if lists.null_count:
        bad = int(np.flatnonzero(~np.asarray(lists.is_valid()))[0])
        _fail(f"{what}: row {row0 + bad} is null")
    offsets = np.asarray(lists.offsets)
    lengths = np.diff(offsets)
    wrong = np.flatnonzero(lengths != n)
    if wrong.size:
        bad = int(wrong[0])
        _fail(f"{what}: row {row0 + bad} has {lengths[bad]} values, expected {n}")
    flat = lists.values.slice(offsets[0], offsets[-1] - offsets[0])
    if flat.null_count:
        bad = int(np.flatnonzero(~np.asarray(flat.is_valid()))[0])
        _fail(f"{what}: row {row0 + bad // n} holds a null at index {bad % n}")
    values = flat.to_numpy(zero_copy_only=False) if flat.type != pa.null() else np.empty(0)
    return np.asarray(values, dtype=dtype).reshape(m, n)


def _vectors_to_dense(col, n, dtype, what, row0):
    """A Spark ML vector struct array (dense and sparse rows mixed) -> (rows, n) array."""
    m = len(col)
    if col.null_count:
        bad = int(np.flatnonzero(~np.asarray(col.is_valid()))[0])
        _fail(f"{what}: row {row0 + bad} is null")
    kind, size, indices, values = col.flatten()
    kind = kind.to_numpy(zero_copy_only=False)
    if m and (kind == 1).all():                            # all dense: the fast path
        return _list_to_dense(values, n, dtype, what, row0)
    sizes = size.to_numpy(zero_copy_only=False)
    sparse = kind == 0
    wrong = np.flatnonzero(sparse & (sizes != n))
    if wrong.size:
        bad = int(wrong[0])
        _fail(f"{what}: row {row0 + bad} is a sparse vector of size {int(sizes[bad])}, "
              f"expected {n}")
    offsets = np.asarray(values.offsets)
    lengths = np.diff(offsets)
    wrong = np.flatnonzero(~sparse & (lengths != n))
    if wrong.size:
        bad = int(wrong[0])
        _fail(f"{what}: row {row0 + bad} has {lengths[bad]} values, expected {n}")
    vals = values.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    rows = np.repeat(np.arange(m), lengths)
    # Column of each stored value: its position for dense rows, its index for sparse rows.
    cols = np.arange(vals.size) - np.repeat(offsets[:-1] - offsets[0], lengths)
    if sparse.any():
        # Dense rows have no indices list, so the flat indices are the sparse rows' in order.
        idx_offsets = np.asarray(indices.offsets)
        flat_idx = indices.values.to_numpy(zero_copy_only=False)[idx_offsets[0]:idx_offsets[-1]]
        sparse_vals = np.repeat(sparse, lengths)
        if flat_idx.size != sparse_vals.sum():
            _fail(f"{what}: a sparse vector has different numbers of indices and values")
        out_of_range = (flat_idx < 0) | (flat_idx >= n)
        if out_of_range.any():
            bad = int(rows[sparse_vals][np.flatnonzero(out_of_range)[0]])
            _fail(f"{what}: row {row0 + bad} has a sparse index outside [0, {n})")
        cols = cols.copy()
        cols[sparse_vals] = flat_idx
    out = np.zeros((m, n), dtype)
    out[rows, cols] = vals
    return out


def _labels(col, dtype, kind, n_out, what, row0):
    """Label column -> int64 class indices (classification) or (rows, n_out) targets."""
    if col.null_count:
        bad = int(np.flatnonzero(~np.asarray(col.is_valid()))[0])
        _fail(f"{what}: row {row0 + bad} is null")
    if kind == "class":
        raw = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
        labels = raw.astype(np.int64)
        wrong = np.flatnonzero((labels != raw) | (raw < 0) | (raw >= n_out))
        if wrong.size:
            bad = int(wrong[0])
            _fail(f"{what}: row {row0 + bad} is {float(raw[bad])!r}, expected an integer class "
                  f"index in [0, {n_out})")
        return labels
    if kind == "scalar":
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, 1)
    import pyarrow as pa
    if pa.types.is_struct(col.type):
        return _vectors_to_dense(col, n_out, dtype, what, row0)
    return _list_to_dense(col, n_out, dtype, what, row0)


def row_weights(col, dtype, what, row0):
    """A weight column's Arrow array -> (rows,) weights of ``dtype``, each finite and >= 0
    (else a data error naming the row)."""
    if col.null_count:
        bad = int(np.flatnonzero(~np.asarray(col.is_valid()))[0])
        _fail(f"{what}: row {row0 + bad} is null")
    raw = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
    wrong = np.flatnonzero(~(raw >= 0) | ~np.isfinite(raw) | (raw > np.finfo(dtype).max))
    if wrong.size:
        bad = int(wrong[0])
        _fail(f"{what}: row {row0 + bad} is {float(raw[bad])!r}, expected a finite weight "
              f">= 0")
    return raw.astype(dtype)


def _check_finite(block, what, row0):
    finite = np.isfinite(block)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        row = int(bad[0])
        where = f" at index {int(bad[1])}" if block.ndim == 2 else ""
        _fail(f"{what}: row {row0 + row} holds {float(block[tuple(bad)])!r}{where}; values must "
              f"be finite")


def _grown(buffers, fill, rows):
    """Buffers of ``rows`` rows holding the first ``fill`` rows of the given ones."""
    grown = []
    for buf in buffers:
        new = np.empty((rows,) + buf.shape[1:], buf.dtype)
        new[:fill] = buf[:fill]
        grown.append(new)
    return grown


def stack_blocks(batches, *, features_col, label_col, n_features, n_out, label_kind, dtype,
                 block_size, partition, weight_col=None):
    """Executor side: Arrow batches -> ``(X, y, w)`` numpy blocks of ``block_size`` rows.

    ``X`` is (rows, n_features) of ``dtype``; ``y`` int64 class indices or (rows, n_out)
    targets; ``w`` the rows' weights (rows,) of ``dtype`` read from the batches' third
    column, or None without ``weight_col``. The blocks are views of buffers reused for the
    next block: consume each before asking for the next. Rows are numbered within the
    partition in error messages.
    """
    import pyarrow as pa
    dtype = np.dtype(dtype)
    y_dtype = np.int64 if label_kind == "class" else dtype
    y_width = () if label_kind == "class" else (n_out,)
    # Buffers grow with the rows seen, up to block_size: a blockSize larger than the data
    # costs only the data's size (as MLlib's blocks, which shrink to the partition's rows).
    bufs = [np.empty((0, n_features), dtype), np.empty((0,) + y_width, y_dtype)]
    if weight_col is not None:
        bufs.append(np.empty(0, dtype))
    fill = 0
    row0 = 0
    fwhat = f"features column {features_col!r} (partition {partition})"
    lwhat = f"label column {label_col!r} (partition {partition})"
    wwhat = f"weight column {weight_col!r} (partition {partition})"
    for batch in batches:
        m = batch.num_rows
        if m == 0:
            continue
        fcol = batch.column(0)
        if pa.types.is_struct(fcol.type):
            X = _vectors_to_dense(fcol, n_features, dtype, fwhat, row0)
        else:
            X = _list_to_dense(fcol, n_features, dtype, fwhat, row0)
        _check_finite(X, fwhat, row0)
        y = _labels(batch.column(1), dtype, label_kind, n_out, lwhat, row0)
        if label_kind != "class":
            _check_finite(y, lwhat, row0)
        parts = [X, y]
        if weight_col is not None:
            parts.append(row_weights(batch.column(2), dtype, wwhat, row0))
        if bufs[0].shape[0] < block_size and fill + m > bufs[0].shape[0]:
            bufs = _grown(bufs, fill, min(block_size, max(fill + m, 2 * bufs[0].shape[0])))
        start = 0
        while start < m:
            take = min(block_size - fill, m - start)
            for buf, part in zip(bufs, parts):
                buf[fill:fill + take] = part[start:start + take]
            fill += take
            start += take
            if fill == block_size:
                yield _block(bufs, block_size)
                fill = 0
        row0 += m
    if fill:
        yield _block(bufs, fill)


def _block(bufs, rows):
    """``(X, y, w)`` of the first ``rows`` rows of the buffers (w None when unweighted)."""
    return tuple(b[:rows] for b in bufs) + (() if len(bufs) == 3 else (None,))


def blocks_from_arrow(batches, **stacking):
    """Executor side: Arrow batches -> Arrow rows, one per block (see :func:`stack_blocks`).

    Each output row holds the raw bytes of ``X``, ``y`` and the weights (none without a
    weight column) and the row count.
    """
    import pyarrow as pa
    for X, y, w in stack_blocks(batches, **stacking):
        yield pa.RecordBatch.from_arrays(
            [pa.array([X.tobytes()], pa.large_binary()),
             pa.array([y.tobytes()], pa.large_binary()),
             pa.array([X.shape[0]], pa.int32()), pa.array([stacking["partition"]], pa.int32()),
             pa.array([b"" if w is None else w.tobytes()], pa.large_binary())],
            names=["X", "y", "rows", "partition", "w"])


def resident_from_arrow(batches, token, **stacking):
    """Executor side: stack a partition into its resident file; yield its handle as Arrow."""
    import pyarrow as pa
    from pyspark import TaskContext
    try:
        written = resident.write_partition(stack_blocks(batches, **stacking), token,
                                           stacking["partition"],
                                           TaskContext.get().attemptNumber())
        handle = written[:6] + (None, written[6])
    except ValueError as error:
        # Bad rows end the partition, not the job: the driver then removes every partition's
        # file before raising (a failed job would leave the finished partitions' files).
        text = str(error)
        if not text.startswith(DATA_ERROR):
            raise
        handle = (stacking["partition"], "", 0, 0, 0.0, 0.0, text[len(DATA_ERROR):], 0.0)
    types = [pa.int32(), pa.string(), pa.int64(), pa.int32(), pa.float64(), pa.float64(),
             pa.string(), pa.float64()]
    names = [f.split()[0] for f in resident.HANDLE_SCHEMA.split(", ")]
    yield pa.RecordBatch.from_arrays([pa.array([v], t) for v, t in zip(handle, types)],
                                     names=names)


BLOCK_SCHEMA = "X binary, y binary, rows int, partition int, w binary"


class CachedBlocks:
    """The training data, stacked once into ``(X, y, w)`` numpy blocks kept by the executors
    (``w``: the rows' weights, None without a weight column).

    Each partition's blocks live in a memory-mapped file on the executor that built them
    (:mod:`sparkann.spark.resident`); Spark caches one small handle per partition.

    Attributes
    ----------
    n_rows, n_blocks, n_partitions, n_features : int
    max_partition_rows : int
        The rows of the largest partition: no engine needs a larger workspace.
    weight_sum : float
        The rows' weights summed (``n_rows`` without a weight column).
    handles : pyspark.sql.DataFrame
        The cached handles (``resident.HANDLE_SCHEMA``), one row per partition; their rows
        are ``handle_rows``.
    context : pyspark.SparkContext or None
        None when sums use DataFrame operations only (``frame``).
    """

    def __init__(self, handles, source, layout, n_rows, n_blocks, session, token, handle_rows,
                 frame):
        # A cached DataFrame of handles, one row per partition, with its rows collected once.
        self.handles, self.handle_rows = handles, handle_rows
        self.session, self.token = session, token
        self._source = source  # the blocks' RDD from the DataFrame, or a function making it
        self.layout = layout
        # Sums with DataFrame operations only (Spark Connect), or by treeAggregate over the
        # handles' RDD (classic sessions; read from the DataFrame's cache, so each task still
        # runs where its handle, and so its file, is).
        self.frame = bool(frame)
        self.handle_rdd = None if self.frame else handles.rdd.map(tuple)
        self.context = None if self.frame else self.handle_rdd.context
        self.n_rows = n_rows
        self.n_blocks = n_blocks
        self.n_partitions = len(handle_rows)
        self.n_features = layout.n_features
        self.max_partition_rows = 0
        self.weight_sum = float(n_rows)
        self.columns = None  # the source DataFrame's two columns (DataFrame path)

    @property
    def source(self):
        """The blocks computed from the source DataFrame (built on first use: with adaptive
        execution, making a DataFrame's RDD already runs its shuffles)."""
        if callable(self._source):
            self._source = self._source()
        return self._source

    @property
    def rdd(self):
        """RDD of the ``(X, y, w)`` blocks (read-only arrays), partitioned as the data."""
        layout = self.layout

        def read(handles):
            for handle in handles:
                blocks = resident.open_partition(handle, layout)
                if blocks is None:
                    raise RuntimeError(f"the stacked data of partition {handle[0]} is not on "
                                       f"this executor ({handle[1]})")
                yield from blocks

        return self.handle_rdd.mapPartitions(read)

    def tree_aggregate(self, partition_fn, combine, depth=2, whole=False):
        """``treeAggregate`` of one value per partition computed from its blocks.

        Parameters
        ----------
        partition_fn : callable
            Executor side: ``partition_fn(blocks)`` (a list of ``(X, y, w)``) yields one
            value.
        combine : callable
            Adds two values (may modify and return its first argument).
        depth : int
        whole : bool
            Hand each partition over as one block of all its rows where the stored blocks are
            row ranges of one array (they always are, except when a partition is recomputed
            from the source).

        A partition whose task ran away from its file is computed again from the source
        DataFrame, in one more job, and added last.
        """
        layout = self.layout

        def on_executor(handles):
            for handle in handles:
                blocks = resident.open_partition(handle, layout, whole)
                if blocks is None:
                    yield [handle[0]], None
                else:
                    for value in partition_fn(blocks):
                        yield [], value

        def add(a, b):
            if a[1] is None or b[1] is None:
                return a[0] + b[0], b[1] if a[1] is None else a[1]
            return a[0] + b[0], combine(a[1], b[1])

        missing, value = self.handle_rdd.mapPartitions(on_executor).treeAggregate(
            ([], None), add, add, depth=depth)
        if missing:
            log.warning("%d partition(s) ran away from their stacked data; computing them "
                        "from the source again", len(missing))
            for extra in self.context.runJob(self.source.mapPartitions(
                    lambda it: partition_fn(list(it))), lambda it: it, partitions=missing):
                value = extra if value is None else combine(value, extra)
        return value

    def reduce_slices(self, partition_fn, vector_dtype, size, whole=False):
        """Sum one vector per partition inside Spark, in slices (a reduce-scatter), with
        DataFrame operations only (what a Spark Connect session offers).

        Every task emits its partition's vector in ``K`` slices keyed by slice, plus one row
        of its own scalars; a shuffle by slice brings slice ``k`` of every partition to one
        task, which adds them (in partition order, so sums do not depend on which task
        finished first); the driver reads the ``K`` summed slices and the scalar rows. One
        slice (a small vector, or at most 4 partitions: ``slice_count``) skips the shuffle:
        the driver adds the partials (see :func:`summed_slices`). The cost per iteration is
        in ``sparkann.scaling`` (its ``reduce-scatter`` aggregation).

        Parameters
        ----------
        partition_fn : callable
            Executor side: ``partition_fn(blocks)`` (a list of ``(X, y, w)``) returns
            ``(vector, scalars)``: a 1-D array of ``size`` values of ``vector_dtype``
            (summed) and a small 1-D float64 array (returned per partition).
        vector_dtype : str
            The dtype the vectors travel in; they add up in float64.
        size : int
        whole : bool
            As in :meth:`tree_aggregate`.

        Returns
        -------
        (ndarray float64 of ``size``, list of (partition, scalars)) sorted by partition.
        A partition whose task ran away from its file is computed from the source data in
        one more job and added last.
        """
        layout, n_slices = self.layout, slice_count(size, self.n_partitions)

        def partials(batches):
            return partition_slices(batches, layout, partition_fn, vector_dtype, n_slices,
                                    whole)

        table = summed_slices(self.handles.mapInArrow(partials, SLICE_SCHEMA), vector_dtype,
                              n_slices)
        total, scalars, missing = read_slices(table, size, n_slices)
        if missing:
            log.warning("%d partition(s) ran away from their stacked data; computing them "
                        "from the source again", len(missing))
            extra, more, _ = self._from_source(partition_fn, vector_dtype, size, missing)
            total += extra
            scalars = sorted(scalars + more, key=lambda item: item[0])
        return total, scalars

    def _from_source(self, partition_fn, vector_dtype, size, partitions):
        """Stack the given partitions again from the source DataFrame and reduce them."""
        wanted, n_slices = set(partitions), slice_count(size, len(partitions))
        stacking = dict(self._stacking)

        def partials(batches):
            from pyspark import TaskContext
            part = TaskContext.get().partitionId()
            if part not in wanted:
                return iter(())
            blocks = [tuple(None if a is None else a.copy() for a in block)
                      for block in stack_blocks(batches, partition=part, **stacking)]
            return _slice_rows(part, partition_fn(blocks), vector_dtype, n_slices)

        table = summed_slices(self.columns.mapInArrow(partials, SLICE_SCHEMA), vector_dtype,
                              n_slices)
        return read_slices(table, size, n_slices)

    def partition_summaries(self):
        """Per partition ``(index, rows, feature sum, label sum)``, and its weight sum when
        the rows are weighted: read from the handles."""
        extra = (lambda h: (h[7],)) if self.layout.weighted else (lambda h: ())
        return sorted((h[0], h[2], h[4], h[5]) + extra(h) for h in self.handle_rows)

    def unpersist(self):
        """Delete the stacked files and release the handles."""
        discard(self.session, self.handles, self.token)


# Rows of the reduce-scatter: slice ``k < K`` holds values of the vector (in the vector's
# dtype before the sum, float64 after it); slice ``K`` holds each partition's float64
# scalars, or no bytes for a partition whose stacked file was not found. How many slices:
# ``sparkann.scaling.slice_count``, which also states what the shuffle costs.
SLICE_SCHEMA = "slice int, partition int, values binary"


def _slice_bounds(size, n_slices):
    return np.linspace(0, size, n_slices + 1).astype(np.int64)


def _slice_rows(partition, value, vector_dtype, n_slices):
    """Arrow rows of one partition's ``(vector, scalars)``: K slices and a scalar row."""
    import pyarrow as pa
    if value is None:      # the partition's stacked file is not here
        slices, parts, values = [n_slices], [partition], [b""]
    else:
        vector, scalars = value
        vector = np.ascontiguousarray(vector, dtype=vector_dtype)
        bounds = _slice_bounds(vector.size, n_slices)
        slices = list(range(n_slices + 1))
        parts = [partition] * (n_slices + 1)
        values = [vector[bounds[k]:bounds[k + 1]].tobytes() for k in range(n_slices)]
        values.append(np.ascontiguousarray(scalars, dtype=np.float64).tobytes())
    yield pa.RecordBatch.from_arrays(
        [pa.array(slices, pa.int32()), pa.array(parts, pa.int32()),
         pa.array(values, pa.large_binary())], names=["slice", "partition", "values"])


def summed_slices(rows, vector_dtype, n_slices):
    """The Arrow table of ``rows`` (a DataFrame of ``SLICE_SCHEMA`` rows, ``n_slices`` slices
    per partition) with each slice summed over the partitions.

    Several slices: a shuffle by slice brings slice ``k`` of every partition to one task.
    One slice: that task would receive every partial, as the driver does here, and the
    shuffle would only add a stage (and, with adaptive execution, a job); the driver adds the
    partials with the same function, in the same order.
    """
    if n_slices > 1:
        def add(batches):
            return add_slices(batches, vector_dtype, n_slices)

        return (rows.repartitionById(n_slices + 1, "slice").mapInArrow(add, SLICE_SCHEMA)
                .toArrow())
    import pyarrow as pa
    table = rows.toArrow()
    summed = list(add_slices(table.to_batches(), vector_dtype, n_slices))
    return pa.Table.from_batches(summed) if summed else table


def partition_slices(batches, layout, partition_fn, vector_dtype, n_slices, whole):
    """Executor side: for each handle, open its stacked file and emit ``partition_fn``'s
    vector in slices (see :meth:`CachedBlocks.reduce_slices`)."""
    for batch in batches:
        for handle in zip(*(batch.column(i).to_pylist() for i in range(batch.num_columns))):
            blocks = resident.open_partition(handle, layout, whole)
            value = None if blocks is None else partition_fn(blocks)
            yield from _slice_rows(handle[0], value, vector_dtype, n_slices)


def add_slices(batches, vector_dtype, n_slices):
    """Executor side: add up the slices of one shuffle partition, each in partition order
    (float64); scalar rows pass through."""
    import pyarrow as pa
    table = pa.Table.from_batches(list(batches))
    if table.num_rows == 0:
        return
    slices = table.column("slice").to_pylist()
    parts = table.column("partition").to_pylist()
    values = binary_values(table.column("values"))
    out_slices, out_parts, out_values = [], [], []
    for k in sorted(set(slices)):
        rows = sorted(((parts[i], values[i]) for i in range(len(slices)) if slices[i] == k),
                      key=lambda row: row[0])
        if k == n_slices:
            for part, value in rows:
                out_slices.append(k), out_parts.append(part)
                out_values.append(value.to_pybytes())
            continue
        total = np.zeros(rows[0][1].size // np.dtype(vector_dtype).itemsize, np.float64)
        for _, value in rows:
            total += np.frombuffer(value, vector_dtype)
        out_slices.append(k), out_parts.append(-1), out_values.append(total.tobytes())
    yield pa.RecordBatch.from_arrays(
        [pa.array(out_slices, pa.int32()), pa.array(out_parts, pa.int32()),
         pa.array(out_values, pa.large_binary())], names=["slice", "partition", "values"])


def binary_values(column):
    """The values of an Arrow binary column as buffers over its memory: ``to_pylist`` would
    copy each partial gradient (megabytes) into a Python bytes object first."""
    import pyarrow as pa
    values = []
    for chunk in column.chunks:
        _, offsets, data = chunk.buffers()
        width = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        ends = np.frombuffer(offsets, width)[chunk.offset:chunk.offset + len(chunk) + 1]
        data = pa.py_buffer(b"") if data is None else data
        values += [data.slice(int(a), int(b - a)) for a, b in zip(ends[:-1], ends[1:])]
    return values


def read_slices(table, size, n_slices):
    """Driver side: ``(summed vector, [(partition, scalars)], [missing partitions])``."""
    total = np.zeros(size, np.float64)
    bounds = _slice_bounds(size, n_slices)
    scalars, missing = [], []
    for k, part, value in zip(table.column("slice").to_pylist(),
                              table.column("partition").to_pylist(),
                              binary_values(table.column("values"))):
        if k < n_slices:
            total[bounds[k]:bounds[k + 1]] = np.frombuffer(value, np.float64)
        elif value.size:
            scalars.append((part, np.frombuffer(value, np.float64)))
        else:
            missing.append(part)
    return total, sorted(scalars, key=lambda item: item[0]), sorted(missing)


def cancel_jobs(session, timeout=30.0):
    """Cancel the running jobs after Ctrl-C, as PySpark's own SIGINT handler means to (its
    call into the JVM fails while the interrupted thread waits for a job's result, so the
    tasks would run on), and wait until their tasks have stopped writing."""
    try:
        sc = session.sparkContext
        sc.cancelAllJobs()
    except Exception:  # noqa: BLE001 - Spark Connect: no SparkContext
        try:
            session.interruptAll()
        except Exception as error:  # noqa: BLE001
            log.warning("could not cancel the running jobs: %s", error)
        return
    tracker, end = sc.statusTracker(), time.monotonic() + timeout
    while time.monotonic() < end and any(
            getattr(tracker.getStageInfo(s), "numActiveTasks", 0)
            for s in tracker.getActiveStageIds()):
        time.sleep(0.1)
    # A killed task's Python worker may run on for spark.python.task.killTimeout.
    time.sleep(_seconds(sc.getConf().get("spark.python.task.killTimeout", "2s")) + 2)


def _seconds(text):
    """A Spark time setting ("2s", "500ms", "1min", "3") in seconds."""
    text = str(text).strip().lower()
    for unit, scale in (("ms", 1e-3), ("min", 60.0), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * scale
    return float(text)


# Driver side: the tokens of this process's finished stackings, newest last. Every sweep
# removes the files of all of them, so an executor a sweep missed is cleaned by the next.
_RETIRED = []
_KEEP_RETIRED = 1000


def discard(session, handles, token):
    """Release the handles and remove the files of ``token`` from the executors.

    Does not touch the handles' data (that could stack a partition again): one small job,
    with a few tasks per core so that every executor runs one, removes the files of every
    finished stacking of this driver from the executors' local directories.
    """
    if handles is not None:
        handles.unpersist()
    if token is not None:
        _RETIRED.append(token)
        del _RETIRED[:-_KEEP_RETIRED]
    if session is None:
        return
    tokens = list(_RETIRED)

    def sweep(batches):
        import pyarrow as pa
        for _ in batches:
            pass
        removed = resident.sweep(tokens)
        yield pa.RecordBatch.from_arrays([pa.array([removed], pa.int64())], names=["files"])

    try:
        tasks = 2 * max(1, _default_parallelism(session))
        session.range(0, tasks, 1, tasks).mapInArrow(sweep, "files long").collect()
    except Exception as error:  # noqa: BLE001 - the next sweep removes them
        log.warning("could not remove the stacked data from the executors: %s", error)


def _to_numpy_block(row, n_features, dtype, y_shape, weighted):
    X = np.frombuffer(row[0], dtype=dtype).reshape(row[2], n_features)
    y = np.frombuffer(row[1], dtype=np.int64 if y_shape is None else dtype)
    if y_shape is not None:
        y = y.reshape(row[2], y_shape)
    return X, y, np.frombuffer(row[4], dtype=dtype) if weighted else None


def unwrap_data_error(error):
    """Return the ValueError an executor raised for bad data, or None."""
    text = str(error)
    at = text.rfind(DATA_ERROR)
    if at < 0:
        return None
    return ValueError(text[at + len(DATA_ERROR):].splitlines()[0].strip())


def has_round_robin(df):
    """Whether the DataFrame's plan holds a round-robin repartition (``repartition(n)``
    without columns), read from ``DataFrame.explain`` (classic and Spark Connect alike)."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        df.explain()
    return "RoundRobinPartitioning" in text.getvalue()


def warn_round_robin(df):
    """Warn when recomputing a partition of ``df`` may give its rows in another order."""
    if has_round_robin(df):
        warnings.warn(
            "the training DataFrame's plan holds a round-robin repartition (repartition(n) "
            "without columns): a partition recomputed after a lost executor gets its rows in "
            "another order, so the weights are no longer exactly those of an undisturbed "
            "run. Repartition by a unique key and sort by it within partitions "
            "(repartition(n, key).sortWithinPartitions(key)), or read the data from files; "
            "sparkann.spark.data.dataframe_from_numpy is order-stable.",
            UserWarning, stacklevel=4)


def run_checked(df):
    """``df.collect()``, an executor's data error raised as the plain ValueError it is."""
    try:
        return df.collect()
    except Exception as error:
        plain = unwrap_data_error(error)
        if plain is None:
            raise
        raise plain from None


def check_weight_column(df, weight_col):
    """Check every row of a weight column (not null, finite, >= 0) in one pass; a bad row
    raises a ValueError naming the column, the partition and the row."""
    def check(batches):
        from pyspark import TaskContext
        what = f"weight column {weight_col!r} (partition {TaskContext.get().partitionId()})"
        row0 = 0
        for batch in batches:
            row_weights(batch.column(0), np.float64, what, row0)
            row0 += batch.num_rows
        return iter(())

    run_checked(df.select(weight_col).mapInArrow(check, "ok int"))


def cache_blocks(df, features_col, label_col, n_features, n_out, dtype="float32",
                 block_size=128, targets=False, empty="the DataFrame has no rows to train on",
                 frame=None, weight_col=None):
    """Stack a DataFrame into cached blocks, checking every row; fails before any training.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
    features_col, label_col : str
    n_features : int
        Expected vector length (``layers[0]``).
    n_out : int
        Number of classes (classification) or of targets (regression).
    dtype : {"float32", "float64"}
    block_size : int
    targets : bool
        False: labels are class indices in [0, n_out). True: real-valued targets.
    empty : str
        What the ValueError raised for a DataFrame without rows says.
    frame : bool or None
        Sum with DataFrame operations only (:meth:`CachedBlocks.reduce_slices`), as a Spark
        Connect session needs; False: by ``treeAggregate`` over the handles' RDD. None:
        DataFrame operations under Spark Connect only (``treeAggregate`` is the faster one in
        classic sessions: measured here, local[2], 4,000 rows in 2 partitions, float32,
        median of 5, one gradient of [784,256,128,10] 0.18 s with ``treeAggregate`` and
        0.46 s with the slices, of [784,2500,2000,1500,1000,500,10] 2.1 s and 3.3 s;
        ``bench/bench_connect_paths.py``). Either way the handles are a cached DataFrame, so
        that a whole fit can run in one query (:mod:`sparkann.spark.one_query`).
    weight_col : str or None
        A column of row weights (finite, >= 0, not null; not all 0), kept with the blocks.

    Returns
    -------
    CachedBlocks

    Raises
    ------
    ValueError
        Naming the column and an offending row (partition and row within it), or when the
        DataFrame has no rows.
    """
    if block_size < 1:
        raise ValueError(f"blockSize must be a positive integer, received {block_size}")
    lkind = check_schema(df, features_col, label_col, targets, weight_col)
    if targets:
        label_kind = "vector" if lkind == "vector" else "scalar"
        if label_kind == "scalar" and n_out != 1:
            raise ValueError(f"label column {label_col!r} holds one number per row but the "
                             f"network has {n_out} outputs")
    else:
        label_kind = "class"
    dtype = np.dtype(dtype).name
    # Plain locals only: the closures are shipped to the executors.
    stacking = dict(features_col=features_col, label_col=label_col, n_features=n_features,
                    n_out=n_out, label_kind=label_kind, dtype=dtype, block_size=block_size,
                    weight_col=weight_col)
    token = resident.new_token()

    def to_blocks(batches):
        from pyspark import TaskContext
        return blocks_from_arrow(batches, partition=TaskContext.get().partitionId(), **stacking)

    def to_resident(batches):
        from pyspark import TaskContext
        return resident_from_arrow(batches, token, partition=TaskContext.get().partitionId(),
                                   **stacking)

    columns = df.select(features_col, label_col, *(() if weight_col is None else (weight_col,)))
    y_shape, weighted = None if label_kind == "class" else n_out, weight_col is not None

    def source():
        return columns.mapInArrow(to_blocks, BLOCK_SCHEMA).rdd.map(
            lambda row: _to_numpy_block(row, n_features, dtype, y_shape, weighted))

    session, handles = df.sparkSession, None
    if frame is None:
        frame = is_connect(session)
    try:
        handles = columns.mapInArrow(to_resident, resident.HANDLE_SCHEMA)
        # Collecting the handles fills the cache: one job, one small row per partition.
        handles = handles.persist(StorageLevel.MEMORY_AND_DISK)
        handle_rows = [tuple(row) for row in handles.collect()]
        rows, n_blocks, max_rows, refused, weight = functools.reduce(
            _add_counts, map(_counts, handle_rows), (0, 0, 0, None, 0.0))
    except BaseException as error:  # failed or interrupted (Ctrl-C): leave no file behind
        if isinstance(error, KeyboardInterrupt):
            cancel_jobs(session)
        discard(session, handles, token)
        plain = unwrap_data_error(error) if isinstance(error, Exception) else None
        if plain is None:
            raise
        raise plain from None
    if refused is not None or rows == 0 or weight <= 0:
        discard(session, handles, token)
        if refused is not None:   # the first partition with bad rows: say what, plainly
            raise ValueError(refused[1])
        if rows == 0:
            raise ValueError(f"{empty} (columns {features_col!r}, {label_col!r})")
        raise ValueError(f"weight column {weight_col!r}: every row's weight is 0, so there "
                         f"is nothing to train on")
    layout = resident.Layout(n_features, dtype, y_shape, block_size, weighted)
    blocks = CachedBlocks(handles, source, layout, rows, n_blocks, session, token, handle_rows,
                          frame)
    blocks.max_partition_rows, blocks.weight_sum = max_rows, float(weight)
    blocks.columns, blocks._stacking = columns, stacking
    return blocks


def _counts(h):
    """Rows, blocks, rows (for the largest), refusal and weight sum of one handle."""
    return h[2], h[3], h[2], (h[0], h[6]) if h[6] else None, h[7]


def _add_counts(a, b):
    """Rows, blocks, largest partition, first refusal (lowest partition) and weight sum of
    two parts."""
    refused = min((r for r in (a[3], b[3]) if r is not None), default=None)
    return a[0] + b[0], a[1] + b[1], max(a[2], b[2]), refused, a[4] + b[4]


# Rows per slice of the local data: a slice travels inside one task, and Spark warns about
# tasks over 1,000 KiB.
SLICE_BYTES = 768 * 1024


def dataframe_from_numpy(spark, X, y=None, *, features_col="features", label_col="label",
                         num_partitions=None, vectors=True):
    """A DataFrame of ``X`` rows (and labels ``y``) built through Arrow, without Python rows.

    Partition ``p`` holds a contiguous range of rows in their order, the same every time it
    is computed (rows go to their partition by row index, not round-robin), so training on
    it is exact under lost executors. The array travels in slices of about 768 KiB, each in
    its own task, never as one large task.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    X : ndarray (n, d)
    y : ndarray (n,) or (n, k), optional
    features_col, label_col : str
    num_partitions : int, optional
        Number of partitions (default: the session's default parallelism).
    vectors : bool
        True: features as Spark ML dense vectors (VectorUDT); False: ``array<double>``.
    """
    import pyarrow as pa
    from pyspark.ml.functions import array_to_vector
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features), received shape {X.shape}")
    n, d = X.shape
    if n == 0:
        raise ValueError("X has no rows")
    if y is not None:
        y = np.asarray(y, dtype=np.float64)
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} rows, X has {n}")
    parts = int(num_partitions or _default_parallelism(spark))
    if parts < 1:
        raise ValueError(f"num_partitions must be >= 1, received {num_partitions}")

    # One Arrow batch per slice, one slice per task; then each row to its partition by index
    # and sorted by it: a shuffle reads map outputs in no fixed order.
    df = spark.createDataFrame(pa.Table.from_batches(
        arrow_slices(X, y, parts, features_col, label_col)))
    by_id = getattr(df, "repartitionById", None)     # pyspark >= 4.1
    df = by_id(parts, "__sparkann_part") if by_id else df.repartition(parts, "__sparkann_part")
    df = df.sortWithinPartitions("__sparkann_row").drop("__sparkann_row", "__sparkann_part")
    if vectors:
        df = df.withColumn(features_col, array_to_vector(features_col))
        if y is not None and y.ndim == 2:
            df = df.withColumn(label_col, array_to_vector(label_col))
    return df


def arrow_slices(X, y, parts, features_col="features", label_col="label"):
    """Arrow batches of about ``SLICE_BYTES`` each: the rows of ``X`` (float64, 2-D) and
    ``y``, with each row's index and partition (contiguous, near-equal row ranges)."""
    import pyarrow as pa

    def as_list(a, width):
        offsets = pa.array(np.arange(0, a.size + 1, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(a.ravel()))

    n, d = X.shape
    row = np.arange(n, dtype=np.int64)
    part = (row * parts // n).astype(np.int32)
    width = d + (0 if y is None or y.ndim == 1 else y.shape[1]) + 2
    chunk = max(1, SLICE_BYTES // (8 * width))
    for r0 in range(0, n, chunk):
        columns, names = [as_list(X[r0:r0 + chunk], d)], [features_col]
        if y is not None:
            piece = y[r0:r0 + chunk]
            columns.append(pa.array(piece) if y.ndim == 1
                           else as_list(np.ascontiguousarray(piece), y.shape[1]))
            names.append(label_col)
        columns += [pa.array(row[r0:r0 + chunk]), pa.array(part[r0:r0 + chunk])]
        names += ["__sparkann_row", "__sparkann_part"]
        yield pa.RecordBatch.from_arrays(columns, names=names)


def _default_parallelism(spark):
    sc = classic_context(spark)
    if sc is not None:
        return sc.defaultParallelism
    # Spark Connect: no SparkContext. A range without a partition count is cut into the
    # default parallelism (spark.sql.leafNodeDefaultParallelism unset): count its partitions
    # (distinct ids: the analyzer refuses spark_partition_id() inside an aggregate).
    from pyspark.sql import functions as F
    setting = spark.conf.get("spark.default.parallelism", None)
    if setting:
        return int(setting)
    return spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p")).distinct().count()
