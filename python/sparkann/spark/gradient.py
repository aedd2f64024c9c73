"""The distributed full-batch loss and gradient.

One evaluation is one Spark job: every partition runs the native engine over its cached
blocks and returns ``(loss sum, gradient sum, row count, weight sum)``, and Spark adds them
up. With a weight column the engine's loss kernel multiplies each row's loss and output
delta by the row's weight, and the mean divides by the weight sum. In a
classic session the weights are broadcast and ``treeAggregate`` sums; in a Spark Connect
session (no SparkContext) the weights travel in the task's function and the partial gradients
are added in slices by a shuffle (:meth:`~sparkann.spark.data.CachedBlocks.reduce_slices`).
The functions that run in the executors live at module level and receive plain values, so
nothing but the data they need is shipped with a task.
"""
import time

import numpy as np

from sparkann.hyperparams import array_dtype
from sparkann.optim import mean_objective
from sparkann.spark.faults import active_spec
from sparkann.spark.session import task_cpus

# A gradient job multiplies at least this many rows at a time, whatever the stacking block:
# with 128 rows per GEMM the weights are repacked for every block. Measured here on
# [784,1024,1024,10], float32: one thread over 30,000 rows 3.7-3.9 s at 128 rows, 3.1-3.3 s
# at 1024; a local[2] gradient job 3.5-3.6 s -> 3.2-3.4 s. Same rows, same sums; only the
# order of the float additions differs.
GRADIENT_ROWS = 1024

# Executor side: one engine per (topology, dtype, block size) and Python worker, reused by
# every task that worker runs, so the workspace is allocated once, not once per iteration.
_NETWORKS = {}
_THREADS = {"set": None}


class Stages:
    """A topology given directly as the engine's stage list (see ``ann_core.Network``).

    Anything with ``network(dtype, block_size)`` and ``to_dict()`` (a
    ``sparkann.topology.Topology``) can stand where this is used.
    """

    def __init__(self, n_in, stages):
        self.n_in = int(n_in)
        self.stages = list(stages)

    def network(self, dtype="float32", block_size=128):
        from ann_core import Network
        return Network(self.n_in, self.stages, dtype=dtype, block_size=block_size)

    def to_dict(self):
        return {"n_in": self.n_in, "stages": [list(s) for s in self.stages]}


def task_network(topology, dtype, block_size, blas_threads):
    """The engine for this topology in this Python worker, with BLAS capped to the task."""
    from ann_core import set_blas_threads
    if _THREADS["set"] != blas_threads:
        set_blas_threads(blas_threads)
        _THREADS["set"] = blas_threads
    key = (repr(topology.to_dict()), dtype, block_size)
    net = _NETWORKS.get(key)
    if net is None:
        if len(_NETWORKS) > 8:
            _NETWORKS.clear()
        net = _NETWORKS[key] = topology.network(dtype=dtype, block_size=block_size)
    return net


def weights_value(weights):
    """Executor side: the weights a task was given, as a broadcast or as an array."""
    return weights.value if hasattr(weights, "value") else weights


def partition_loss_grad(blocks, weights, topology, dtype, block_size, blas_threads,
                        faults=None, iteration=0):
    """Executor side: ``(loss sum, gradient sum, rows, weight sum)`` over one partition's
    blocks (the weight sum is the row count when the rows have no weights).

    An overflow in the engine gives a NaN loss (the driver stops with a DivergenceError)
    rather than a failed task that Spark would retry for nothing.
    """
    from sparkann.spark.faults import trigger
    trigger(faults, iteration)
    net = task_network(topology, dtype, block_size, blas_threads)
    w = weights_value(weights)
    grad = np.zeros(net.n_weights, net.dtype)
    loss = 0.0
    rows = 0
    weight = 0.0
    for X, y, sw in blocks:
        if loss == loss:  # not NaN yet
            try:
                loss += net.loss_grad(w, X, y, grad, sample_weight=sw)[0]
            except FloatingPointError:
                loss = float("nan")
        rows += X.shape[0]
        weight += X.shape[0] if sw is None else float(sw.sum(dtype=np.float64))
    yield loss, grad, rows, weight


def _add(a, b):
    # Partials travel in the engine's dtype (half the bytes in float32) and add up in float64.
    grad = a[1] if a[1].dtype == np.float64 else a[1].astype(np.float64)
    grad += b[1]
    return a[0] + b[0], grad, a[2] + b[2], a[3] + b[3]


def engine_rows(block_size, blocks):
    """Rows of an engine's workspace: ``block_size``, but never more than the largest
    partition holds (a blockSize larger than the data must not allocate for rows that do not
    exist). Every block still goes through the engine in one piece, so sums are unchanged."""
    most = getattr(blocks, "max_partition_rows", 0)
    return max(1, min(int(block_size), most)) if most else int(block_size)


class LossGrad:
    """Mean loss (+ L2 penalty) and its float64 gradient from the sums over every row that
    :meth:`sums` returns; subclasses say how the sums are computed.

    Parameters
    ----------
    dtype : {"float32", "float64", "bfloat16"}
        The engine's dtype ("bfloat16": mixed precision); weights are cast to that of its
        arrays before they travel.
    reg_param : float
        L2 penalty: ``0.5 * reg_param * ||w * l2_mask||^2`` is added to the mean loss
        (``sparkann.optim.mean_objective``, as on one machine).
    l2_mask : ndarray or None
        Which weights the penalty applies to (``Topology.l2_mask()``: not biases); all if None.
    """

    def __init__(self, dtype, reg_param=0.0, l2_mask=None):
        self.net_dtype = "bfloat16" if str(dtype) == "bfloat16" else np.dtype(dtype).name
        self.dtype = array_dtype(self.net_dtype)
        self.reg_param = float(reg_param)
        self.l2_mask = None if l2_mask is None else np.asarray(l2_mask, np.float64)
        self.evaluations = 0
        self.seconds = []

    def cast(self, weights):
        """The weights as they travel to the tasks (contiguous, the engine's array dtype)."""
        w_cast = np.ascontiguousarray(weights, dtype=self.dtype)
        if not np.isfinite(w_cast).all():
            raise FloatingPointError(f"the weights hold non-finite values in {self.dtype}")
        return w_cast

    @staticmethod
    def check_rows(rows, expected):
        if rows != expected:  # a lost or retried task must neither drop nor repeat rows
            raise RuntimeError(f"the gradient job summed {rows} rows, the cached data holds "
                               f"{expected}")

    def sums(self, weights):
        """``(loss sum, gradient sum (float64), weight)`` over all rows, no penalty; the
        weight is the row count, or the rows' weights summed with a weight column."""
        raise NotImplementedError

    def __call__(self, weights):
        """Mean loss (+ L2 penalty) and its float64 gradient at ``weights``: the sums divided
        by the row count, or by the weight sum with a weight column."""
        loss, grad, weight = self.sums(weights)
        w = np.asarray(weights, np.float64)
        return mean_objective(loss, grad, weight, w, self.reg_param, self.l2_mask), grad


class DistributedLossGrad(LossGrad):
    """Mean loss and its gradient over cached blocks, one Spark job per call.

    Parameters
    ----------
    blocks : sparkann.spark.data.CachedBlocks
    topology : sparkann.topology.Topology or Stages
        Builds the engine in each Python worker (``network(dtype, block_size)``).
    dtype, reg_param, l2_mask
        As :class:`LossGrad`.
    block_size : int
        The stacking block of ``blocks``. The engine multiplies ``max(block_size,
        GRADIENT_ROWS)`` rows at a time over each partition's stacked rows (at most the
        largest partition's rows).
    depth : int
        ``treeAggregate`` depth.

    Notes
    -----
    The objective is the mean loss over all rows (plus the penalty). Spark MLlib averages
    per-block means instead; both agree whenever every block is full.
    """

    def __init__(self, blocks, topology, dtype, block_size, reg_param=0.0, l2_mask=None,
                 depth=2):
        super().__init__(dtype, reg_param, l2_mask)
        self.blocks = blocks
        self.topology = topology
        self.block_size = block_size
        self.engine_rows = engine_rows(max(int(block_size), GRADIENT_ROWS), blocks)
        self.depth = depth
        self.sc = blocks.context   # None on the DataFrame path (Spark Connect)
        # Read once: SparkContext.getConf() copies the whole conf (~20 ms of Py4J calls)
        self.threads = task_cpus(blocks.session)
        self.faults = active_spec(blocks.session)

    def sums(self, weights):
        start = time.perf_counter()
        w_cast = self.cast(weights)
        if self.blocks.frame:
            loss, grad, rows, weight = self._frame_sums(w_cast)
        else:
            loss, grad, rows, weight = self._rdd_sums(w_cast)
        self.evaluations += 1
        self.seconds.append(time.perf_counter() - start)
        self.check_rows(rows, getattr(self.blocks, "n_rows", rows))
        return loss, np.asarray(grad, np.float64), weight

    def task_spec(self):
        """What a task needs to compute its partition's partial gradient (plain values)."""
        return {"network": (self.topology, self.net_dtype, self.engine_rows, self.threads),
                "dtype": self.dtype, "reg_param": self.reg_param, "l2_mask": self.l2_mask}

    def _task_args(self):
        # Plain values: the task closure must not capture self (or the SparkContext).
        return (self.topology, self.net_dtype, self.engine_rows, self.threads, self.faults,
                self.evaluations)

    def _rdd_sums(self, w_cast):
        """Classic session: broadcast weights, ``treeAggregate`` of the partials."""
        bc = self.sc.broadcast(w_cast)
        args = self._task_args()

        def one_partition(blocks):
            return partition_loss_grad(blocks, bc, *args)

        try:
            return self.blocks.tree_aggregate(one_partition, _add, depth=self.depth, whole=True)
        finally:
            bc.destroy()

    def _frame_sums(self, w_cast):
        """DataFrame operations only: weights in the task's function, partial gradients
        added in slices by a shuffle."""
        args = self._task_args()

        def one_partition(blocks):
            loss, grad, rows, weight = next(partition_loss_grad(blocks, w_cast, *args))
            return grad, np.array([loss, rows, weight], np.float64)

        grad, scalars = self.blocks.reduce_slices(one_partition, self.dtype, w_cast.size,
                                                  whole=True)
        loss = sum(float(v[0]) for _, v in scalars)
        return (loss, grad, int(sum(v[1] for _, v in scalars)),
                float(sum(v[2] for _, v in scalars)))
