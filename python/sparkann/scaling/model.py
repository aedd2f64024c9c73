"""How long one synchronous full-batch iteration takes on n workers, and the best n.

One iteration of the full-batch solvers (``l-bfgs``, ``gd``) is one Spark job: the driver
broadcasts the weights, every partition computes its loss and gradient sums over its cached
blocks, ``treeAggregate`` sums the partial gradients, and the driver takes the step. Its time on
``n`` workers (parallel task slots) with ``P`` partitions (``P = n`` unless told otherwise) is
modelled as::

    t(n) = t_compute(n) + t_broadcast(W, n) + t_aggregate(W, n) + t_overhead

Notation: ``W`` weights, broadcast as ``Wb`` bytes (4 or 8 per weight, the training dtype);
partial gradients of ``Gb`` bytes (sparkann sums them in float64: 8 per weight); ``S``
examples of ``d`` cached bytes each; ``f`` FLOPs per example (``6 * W``: forward 2W, backward
4W); ``F`` FLOP/s of one worker; ``R`` bytes/s at which a task reads its cached blocks; ``B``
bytes/s of one network link; ``a`` seconds of latency per message.

Compute. The ``P`` tasks run in ``ceil(P / n)`` waves; each task reads and processes ``S / P``
examples and pays a fixed ``c_task`` (starting the task, unpacking the weights, zeroing the
gradient)::

    t_compute = ceil(P / n) * (S / P * (f / F + d / R) + c_task)
              # = S * (f / F + d / R) / n + c_task if P = n

Reading: sparkann's tasks map their partition's stacked blocks from a file on the executor
(``sparkann.spark.resident``), so ``R`` is a memory read rate; for a cached PySpark RDD,
which every job streams from the JVM to the Python workers to unpickle, it is far lower
(``R`` is infinite, the term zero, for data the JVM computes on directly, as MLlib's).

Broadcast. Spark's ``TorrentBroadcast`` cuts the serialized value into ``m = ceil(Wb / b)``
pieces of ``spark.broadcast.blockSize`` ``b`` (4 MiB); every executor fetches every piece, in
random order, from the driver or from any executor that already holds it, and then serves it
in turn. This is a pipelined tree: the number of holders of a piece (the driver included)
doubles each round, and pieces follow each other down the tree, so the last of the ``n``
executors is done after ``m + ceil(log2(n + 1)) - 1`` piece transfers of ``Wb / m`` bytes::

    t_broadcast = (m + ceil(log2(n + 1)) - 1) * (a + Wb / (m * B))

so a large vector costs about ``Wb / B`` whatever ``n`` is, and a one-piece vector costs
``ceil(log2(n + 1)) * Wb / B``.

Aggregate. ``treeAggregate(depth=d)`` first reduces each partition to one partial (inside the
task), then with ``scale = max(ceil(P ** (1 / d)), 2)`` adds shuffle levels while ``P > scale +
P / scale`` (PySpark; the JVM's version compares with ``ceil(P / scale)``), each level keeping
``P_{k+1} = P_k // scale`` partitions. A level is PySpark's ``reduceByKey`` of the partials
keyed by ``i % P_{k+1}``: each map task writes its pickled partial to the shuffle instead of
returning it, a new stage starts (``c_stage``), and its ``P_{k+1}`` reduce tasks run in
``ceil(P_{k+1} / n)`` waves; each is a task (``c_task``) that fetches ``ceil(P_k / P_{k+1})``
partials over its link, unpickles and adds them in its Python worker. The driver finally
receives the ``P_L`` remaining partials one after the other over its own link. With
``g = a + Gb / B`` the cost of moving one partial::

    t_aggregate = sum_levels (c_stage + ceil(P_{k+1} / n) * (c_task + ceil(P_k / P_{k+1}) * g))
                  + P_L * g

With one worker the single partial still travels to the driver (a separate machine in a
cluster), so ``t_aggregate(1) = g``, not zero.

Reduce-scatter (``aggregation='reduce-scatter'``: the DataFrame-only path of a Spark Connect
session, ``CachedBlocks.reduce_slices``). Every map task cuts its partial into ``K =
slice_count(W, P)`` slices (``min(P, ceil(W / 2**18))``: one per partition, fewer for a small
vector; one up to 4 partitions) and writes them to one shuffle; a second stage (``c_stage``)
runs ``K + 1`` reduce tasks in ``ceil((K + 1) / n)`` waves (the last one only passes each
partition's scalars through); reduce task ``k`` fetches slice ``k`` of every partition (``P``
messages of ``Gb / K`` bytes) and adds them; the driver then reads the ``K`` summed slices in
float64 (``8 W`` bytes in ``K + 1`` messages)::

    t_aggregate = c_stage + ceil((K + 1) / n) * c_task
                  + ceil(K / n) * P * (a + Gb / (K * B)) + (K + 1) * a + 8 W / B

A vector of one slice (``K = 1``: under ``2**18`` weights, or at most 4 partitions, where
``treeAggregate`` of depth 2 has no level) skips the shuffle, where a single reducer would take
every partial: the driver fetches the ``P`` partials and adds them (``t_aggregate = P * (a +
Gb / B)``, one stage), as ``treeAggregate`` does below its first level.

Otherwise that is two stages (map, reduce) per iteration whatever ``P`` is, against ``1 + L`` for
``treeAggregate``; each map task sends ``Gb`` bytes out over its link (in ``K`` pieces), each
worker's link takes in ``ceil(K / n) * P * Gb / K`` bytes (about ``P * Gb / n``: the sum is
shared by the workers, where ``treeAggregate`` without levels brings all ``P * Gb`` to the
driver), and the driver's link ``8 W`` bytes. The weights reach the map tasks inside the task's
function, which Spark ships as the task binary, a ``TorrentBroadcast``: the broadcast term is
unchanged. :meth:`ScalingModel.traffic` gives these figures for either way of summing.

Exchange (``aggregation='exchange'``: a whole fit in one query, ``sparkann.spark.one_query``).
All ``P <= n`` tasks run for the whole fit; partition 0's task runs the solver, sends the
weights to the other ``P - 1`` tasks and receives their partials, one after the other over its
own link, through TCP connections opened once per fit. Per iteration no task starts, no job
or stage is scheduled, and nothing passes through the driver::

    t_compute   = S * (f / F + d / R) / P        (no c_task: the tasks stay)
    t_broadcast = (P - 1) * (a + Wb / B)
    t_aggregate = (P - 1) * (a + Gb / B)
    t_overhead  = 0

Once per fit come one query, the start of the ``P`` tasks and one barrier ``allGather`` (about a
second: Spark polls a barrier once a second), which this per-iteration model leaves out. The
leader's link carries ``(P - 1) * (Wb + Gb)`` bytes per iteration: a star, fine for the few
partitions of one machine or a small cluster, where ``treeAggregate``'s levels share the sums
out over a large one.

Overhead. ``t_overhead = c_job``: scheduling the job and the driver's step, independent of n.

Every term is linear in the seven parameters ``theta = (1/F, c_task, 1/B, a, c_stage, c_job,
1/R)``: ``t = features(n, P) . theta``. Calibration from measured runs is therefore a
non-negative least-squares fit (:func:`sparkann.scaling.fit.fit_parameters`); the jobs that
calibrate on a live cluster (``spark_observations`` and ``read_observations`` in
``sparkann.spark.calibration``) each isolate a mechanism: an empty job, a broadcast, a gather
of partials, a gather through one explicit shuffle level (the cost of a level) and a read of
cached blocks.

Optimum. For the closed form, take ``P = n``, drop the ceilings and the tree (all ``n`` partials
go to the driver, which is what Spark does for small ``n``) and write ``log2(n + 1)`` as
``log2 n``: with ``C = S * (f / F + d / R)`` (one worker's compute), ``g`` (one partial) and
``h = a + Wb / (m * B)`` (one broadcast round)::

    t~(n) = C / n + g * n + h * log2(n) + const
    dt~/dn = 0  ->  g n^2 + (h / ln 2) n - C = 0
    n* = (-(h / ln 2) + sqrt((h / ln 2)^2 + 4 g C)) / (2 g)   (~ sqrt(C / g))

The discrete optimum is the argmin of the exact ``t(n)`` (tree levels and ceilings included)
over ``n = 1 .. n_max``; :meth:`ScalingModel.optimum` reports both.

Validation data: :data:`sparkann.scaling.fit.ULANOV_BENCHMARK` holds the published seconds per
epoch of Spark's MLP on 1..5 workers; :func:`sparkann.scaling.fit.ulanov_validation` calibrates
on the 1- and 2-worker points and predicts the rest. ``bench/bench_scaling.py`` compares the
model with sparkann's own gradient job on this machine.
"""
import math
from dataclasses import dataclass, field

import numpy as np

BROADCAST_BLOCK_BYTES = 4 * 1024 * 1024     # spark.broadcast.blockSize default (4m)
# Values per slice of the reduce-scatter, at least: a slice is one row through the shuffle, and
# fewer, larger rows cost less per value than many small ones.
SLICE_VALUES = 1 << 18
AGGREGATIONS = ("tree", "reduce-scatter", "exchange")


def slice_count(size, partitions):
    """Slices of a vector of ``size`` values summed over ``partitions`` partitions by the
    reduce-scatter: one per partition (each reducer adds a ``1/K`` share), fewer for small
    vectors; one (no shuffle: the driver adds the partials) where ``treeAggregate`` of
    depth 2 has no level either (up to 4 partitions), so the driver receives what it receives
    in a classic session. Measured under Spark Connect (``local[2]``, 2 partitions, 2,000
    rows, medians of 5): a gradient of [784,1024,1024,10] 1.36 s with 2 slices, 0.67 s
    adding the partials at the driver (float32; float64 1.99 s and 1.58 s), of
    [784,2500,2000,1500,1000,500,10] (float32) 6.26 s and 4.40 s."""
    if len(tree_levels(max(1, int(partitions)))) == 1:
        return 1
    return max(1, min(int(partitions), -(-int(size) // SLICE_VALUES)))


def weights_of(layers):
    """Number of weights (matrices and biases) of a dense network ``[n_in, ..., n_out]``."""
    layers = [int(v) for v in layers]
    if len(layers) < 2 or min(layers) < 1:
        raise ValueError(f"layers: expected at least two positive sizes, received {layers}")
    return sum(a * b + b for a, b in zip(layers[:-1], layers[1:]))


def tree_levels(partitions, depth=2, rule="python"):
    """Partition counts of ``treeAggregate``'s levels: ``[P, P_1, ..., P_L]``.

    ``rule='python'`` follows PySpark's ``RDD.treeAggregate`` (``P > scale + P / scale``),
    ``rule='scala'`` the JVM's (``P > scale + ceil(P / scale)``); both keep ``P // scale``.
    """
    if partitions < 1 or depth < 1:
        raise ValueError(f"tree_levels: partitions and depth must be >= 1, received "
                         f"partitions={partitions}, depth={depth}")
    if rule not in ("python", "scala"):
        raise ValueError(f"tree_levels: rule must be 'python' or 'scala', received {rule!r}")
    levels = [int(partitions)]
    scale = max(int(math.ceil(partitions ** (1.0 / depth))), 2)
    current = float(partitions) if rule == "python" else int(partitions)

    def more(p):
        return p > scale + (p / scale if rule == "python" else math.ceil(p / scale))

    while more(current):
        current = current / scale if rule == "python" else current // scale
        levels.append(max(int(current), 1))
    return levels


@dataclass(frozen=True)
class Parameters:
    """Machine and Spark costs of the model (SI units: seconds, bytes, FLOP).

    Attributes
    ----------
    flops : float
        FLOP/s of one worker on this network (nominal ``6 * W`` FLOPs per example).
    bandwidth : float
        Bytes/s of one network link (effective, including serialization).
    latency : float
        Seconds per message (task result, shuffle fetch, broadcast piece).
    task : float
        Fixed seconds per task on its worker.
    stage : float or None
        Seconds per extra ``treeAggregate`` level beyond its reduce tasks and their fetches
        (submitting the shuffle stage, waiting on its map outputs); ``None`` means ``job``.
    job : float
        Fixed seconds per iteration (job scheduling, the driver's step).
    read : float or None
        Bytes/s at which a task reads its cached training blocks into the Python worker
        (a memory-mapped file for sparkann; far slower for a cached PySpark RDD, kept pickled
        in the JVM); ``None``: reading is free, as for data cached in the JVM's own memory
        (MLlib).
    """

    flops: float
    bandwidth: float
    latency: float = 0.0
    task: float = 0.0
    stage: float = None
    job: float = 0.0
    read: float = None

    NAMES = ("sec_per_flop", "task", "sec_per_byte", "latency", "stage", "job",
             "sec_per_read_byte")

    def __post_init__(self):
        for name in ("flops", "bandwidth"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Parameters.{name}: must be > 0, received {getattr(self, name)}")
        for name in ("latency", "task", "job"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"Parameters.{name}: must be >= 0, received {getattr(self, name)}")
        if self.stage is not None and not self.stage >= 0:
            raise ValueError(f"Parameters.stage: must be >= 0 or None, received {self.stage}")
        if self.read is not None and not self.read > 0:
            raise ValueError(f"Parameters.read: must be > 0 or None, received {self.read}")

    @property
    def theta(self):
        """The linear coefficients ``(1/F, c_task, 1/B, a, c_stage, c_job, 1/R)``."""
        stage = self.job if self.stage is None else self.stage
        read = 0.0 if self.read is None else 1.0 / self.read
        return np.array([1.0 / self.flops, self.task, 1.0 / self.bandwidth, self.latency,
                         stage, self.job, read])

    @classmethod
    def from_theta(cls, theta):
        """Inverse of :attr:`theta`."""
        t = [float(v) for v in theta]
        if len(t) == 6:
            t.append(0.0)
        return cls(flops=1.0 / t[0], bandwidth=1.0 / t[2], latency=t[3], task=t[1],
                   stage=t[4], job=t[5], read=1.0 / t[6] if t[6] > 0 else None)


@dataclass
class ScalingModel:
    """Time of one full-batch iteration of a network on n workers (see the module docstring).

    Parameters
    ----------
    layers : list of int
        Layer sizes ``[n_in, hidden..., n_out]``.
    examples : int
        Number of training examples per iteration.
    params : Parameters
        Machine and Spark costs.
    bytes_per_weight : int
        Bytes of a broadcast weight: 4 for float32, 8 for float64.
    partial_bytes_per_weight : int or None
        Bytes per weight of a partial gradient sent up the tree; default ``bytes_per_weight``
        (sparkann's partials travel in the training dtype and are added in float64).
    partitions_per_worker : int
        ``P = partitions_per_worker * n`` unless ``partitions`` is given to a method.
    depth : int
        ``treeAggregate`` depth.
    rule : {'python', 'scala'}
        Which ``treeAggregate`` decides the levels (PySpark's or the JVM's).
    flops_per_example : float or None
        Defaults to ``6 * W``.
    broadcast_block : int
        ``spark.broadcast.blockSize`` in bytes.
    input_bytes_per_example : float or None
        Bytes of one cached training example (features and label) that a task reads;
        defaults to ``n_in * bytes_per_weight + 8`` (an int64 class label).
    aggregation : {'tree', 'reduce-scatter', 'exchange'}
        How the partial gradients are summed: ``treeAggregate`` (a job per gradient in a
        classic session), the shuffle of slices (a query per gradient in a Spark Connect
        session) or the exchange of a whole fit in one query; see the module docstring.
    """

    layers: list
    examples: int
    params: Parameters
    bytes_per_weight: int = 4
    partial_bytes_per_weight: int = None
    partitions_per_worker: int = 1
    depth: int = 2
    rule: str = "python"
    flops_per_example: float = None
    broadcast_block: int = BROADCAST_BLOCK_BYTES
    input_bytes_per_example: float = None
    aggregation: str = "tree"
    n_weights: int = field(init=False)

    def __post_init__(self):
        self.n_weights = weights_of(self.layers)
        if self.flops_per_example is None:
            self.flops_per_example = 6.0 * self.n_weights
        if int(self.examples) < 1:
            raise ValueError(f"examples: must be >= 1, received {self.examples}")
        if self.partial_bytes_per_weight is None:
            self.partial_bytes_per_weight = self.bytes_per_weight
        for name in ("bytes_per_weight", "partial_bytes_per_weight"):
            if getattr(self, name) not in (4, 8):
                raise ValueError(f"{name}: expected 4 or 8, received {getattr(self, name)}")
        if self.input_bytes_per_example is None:
            self.input_bytes_per_example = int(self.layers[0]) * self.bytes_per_weight + 8
        if self.partitions_per_worker < 1 or self.depth < 1:
            raise ValueError("partitions_per_worker and depth must be >= 1, received "
                             f"{self.partitions_per_worker} and {self.depth}")
        tree_levels(1, self.depth, self.rule)   # validates the rule
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation: expected one of {AGGREGATIONS}, received "
                             f"{self.aggregation!r}")

    # -- structure ------------------------------------------------------------------------

    @property
    def weight_bytes(self):
        """Bytes of the broadcast weight vector."""
        return self.n_weights * self.bytes_per_weight

    @property
    def partial_bytes(self):
        """Bytes of one partial gradient on its way up the tree."""
        return self.n_weights * self.partial_bytes_per_weight

    def _partitions(self, n, partitions):
        n = int(n)
        if n < 1:
            raise ValueError(f"workers: must be >= 1, received {n}")
        p = self.partitions_per_worker * n if partitions is None else int(partitions)
        if p < 1:
            raise ValueError(f"partitions: must be >= 1, received {p}")
        return n, p

    def features(self, n, partitions=None, broadcast_bytes=None, aggregate_bytes=None,
                 examples=None, parts=("compute", "broadcast", "aggregate", "overhead"),
                 flops_per_example=None, levels=None):
        """Coefficients of ``theta`` for each requested part: ``{part: array(7)}``.

        ``broadcast_bytes``, ``aggregate_bytes``, ``examples`` and ``flops_per_example``
        override the network's, and ``levels`` (``[P, P_1, ...]``) the tree that
        :func:`tree_levels` gives: calibration jobs move vectors of other sizes, read data
        without computing, or shuffle through levels of their own.
        """
        n, p = self._partitions(n, partitions)
        s = self.examples if examples is None else examples
        f = self.flops_per_example if flops_per_example is None else flops_per_example
        if self.aggregation == "exchange" and levels is None:
            return self._exchange_features(n, p, s, f, broadcast_bytes, aggregate_bytes,
                                           parts)
        out = {}
        if "compute" in parts:
            waves = math.ceil(p / n)
            out["compute"] = np.array([waves * f * s / p, waves, 0, 0, 0, 0,
                                       waves * self.input_bytes_per_example * s / p],
                                      dtype=float)
        if "broadcast" in parts:
            wb = self.weight_bytes if broadcast_bytes is None else float(broadcast_bytes)
            m = max(1, math.ceil(wb / self.broadcast_block))
            rounds = m + math.ceil(math.log2(n + 1)) - 1 if wb > 0 else 0
            out["broadcast"] = np.array([0, 0, rounds * wb / m, rounds, 0, 0, 0], dtype=float)
        if "aggregate" in parts:
            wb = self.partial_bytes if aggregate_bytes is None else float(aggregate_bytes)
            if self.aggregation == "reduce-scatter" and levels is None:
                out["aggregate"] = self._reduce_scatter_features(n, p, wb)
                return self._with_overhead(out, parts)
            if levels is None:
                levels = tree_levels(p, self.depth, self.rule)
            elif levels[0] != p or any(b < 1 for b in levels):
                raise ValueError(f"levels: expected [{p}, ...] of positive counts, received "
                                 f"{levels}")
            out["aggregate"] = self._aggregate_features(n, levels, wb)
        return self._with_overhead(out, parts)

    @staticmethod
    def _with_overhead(out, parts):
        if "overhead" in parts:
            out["overhead"] = np.array([0, 0, 0, 0, 0, 1, 0], dtype=float)
        return out

    def _exchange_features(self, n, p, s, f, broadcast_bytes, aggregate_bytes, parts):
        # The tasks stay for the whole fit: no task, stage or job per iteration; the leader
        # sends the weights to, and receives a partial from, each of the other P - 1 tasks.
        if p > n:
            raise ValueError(f"the exchange runs every partition at once: {p} partitions need "
                             f"{p} task slots, there are {n}")
        wb = self.weight_bytes if broadcast_bytes is None else float(broadcast_bytes)
        gb = self.partial_bytes if aggregate_bytes is None else float(aggregate_bytes)
        rows = {"compute": [f * s / p, 0, 0, 0, 0, 0, self.input_bytes_per_example * s / p],
                "broadcast": [0, 0, (p - 1) * wb, p - 1, 0, 0, 0],
                "aggregate": [0, 0, (p - 1) * gb, p - 1, 0, 0, 0],
                "overhead": [0] * 7}
        return {part: np.array(rows[part], dtype=float) for part in parts}

    def _reduce_scatter_features(self, n, p, wb):
        # One shuffle stage of K + 1 reduce tasks; reducer k fetches slice k of all P partials;
        # the driver reads K float64 sums (8 bytes per value) and the scalar rows.
        k = slice_count(wb / self.partial_bytes_per_weight, p)
        if k == 1:      # no shuffle: the driver adds the partials
            return np.array([0, 0, p * wb, p, 0, 0, 0], dtype=float)
        task_waves, slice_waves = math.ceil((k + 1) / n), math.ceil(k / n)
        summed = 8.0 * wb / self.partial_bytes_per_weight
        return np.array([0, task_waves, slice_waves * p * wb / k + summed,
                         slice_waves * p + k + 1, 1, 0, 0], dtype=float)

    def traffic(self, n, partitions=None):
        """What summing the partial gradients moves per iteration, by :attr:`aggregation`.

        Returns
        -------
        dict
            ``stages`` (stages of the gradient job; 0 for the exchange), ``slices`` (``K``;
            0 for the tree and the exchange, 1 when the reduce-scatter adds at the driver),
            ``map_out_bytes`` (bytes one map task sends out), ``worker_in_bytes`` (the most
            bytes into one worker's link), ``driver_in_bytes`` (into the driver's link) and
            ``messages`` (fetches, driver's included).
        """
        n, p = self._partitions(n, partitions)
        gb = float(self.partial_bytes)
        if self.aggregation == "exchange":   # into the leader's link; no stage, no driver
            return {"stages": 0, "slices": 0, "map_out_bytes": gb,
                    "worker_in_bytes": (p - 1) * gb, "driver_in_bytes": 0,
                    "messages": 2 * (p - 1)}
        k = slice_count(self.n_weights, p)
        if self.aggregation == "reduce-scatter" and k == 1:
            return {"stages": 1, "slices": 1, "map_out_bytes": gb, "worker_in_bytes": 0,
                    "driver_in_bytes": p * gb, "messages": p}
        if self.aggregation == "reduce-scatter":
            return {"stages": 2, "slices": k, "map_out_bytes": gb,
                    "worker_in_bytes": math.ceil(k / n) * p * gb / k,
                    "driver_in_bytes": 8.0 * self.n_weights,
                    "messages": math.ceil(k / n) * p + k + 1}
        levels = tree_levels(p, self.depth, self.rule)
        worker = sum(math.ceil(there / n) * math.ceil(here / there) * gb
                     for here, there in zip(levels[:-1], levels[1:]))
        fetches = sum(math.ceil(there / n) * math.ceil(here / there)
                      for here, there in zip(levels[:-1], levels[1:]))
        return {"stages": len(levels), "slices": 0, "map_out_bytes": gb,
                "worker_in_bytes": worker, "driver_in_bytes": levels[-1] * gb,
                "messages": fetches + levels[-1]}

    @staticmethod
    def _aggregate_features(n, levels, wb):
        # A level is a shuffle stage: its P_{k+1} reduce tasks run in waves on the n slots,
        # each fetching ceil(P_k / P_{k+1}) partials; then the driver fetches P_L of them.
        row = np.zeros(7)
        for here, there in zip(levels[:-1], levels[1:]):
            waves = math.ceil(there / n)
            fetches = waves * math.ceil(here / there)
            row += [0, waves, fetches * wb, fetches, 1, 0, 0]
        row += [0, 0, levels[-1] * wb, levels[-1], 0, 0, 0]
        return row

    # -- predictions ----------------------------------------------------------------------

    def breakdown(self, n, partitions=None):
        """Seconds of each part of one iteration on ``n`` workers: a dict with ``total``."""
        theta = self.params.theta
        parts = {k: float(v @ theta) for k, v in self.features(n, partitions).items()}
        parts["total"] = sum(parts.values())
        return parts

    def time(self, n, partitions=None):
        """Predicted seconds per iteration on ``n`` workers."""
        return self.breakdown(n, partitions)["total"]

    def curve(self, n_max=32):
        """Rows ``{'workers', 'partitions', 'compute', ..., 'total', 'speedup'}`` for
        n = 1..n_max."""
        if int(n_max) < 1:
            raise ValueError(f"n_max: must be >= 1, received {n_max}")
        base = self.time(1)
        rows = []
        for n in range(1, int(n_max) + 1):
            row = {"workers": n, "partitions": self.partitions_per_worker * n}
            row.update(self.breakdown(n))
            row["speedup"] = base / row["total"]
            rows.append(row)
        return rows

    def closed_form_optimum(self):
        """Stationary point of the relaxed model (no ceilings, no tree): a float >= 1."""
        p = self.params
        theta = p.theta
        compute = self.examples * (self.flops_per_example * theta[0]
                                   + self.input_bytes_per_example * theta[6])
        wb = self.weight_bytes
        m = max(1, math.ceil(wb / self.broadcast_block))
        g = p.latency + self.partial_bytes / p.bandwidth
        if self.aggregation == "exchange":   # C / n + (n - 1) * (g + a + Wb / B)
            return max(1.0, math.sqrt(compute / (g + p.latency + wb / p.bandwidth)))
        h = (p.latency + wb / (m * p.bandwidth)) / math.log(2)
        n = (-h + math.sqrt(h * h + 4.0 * g * compute)) / (2.0 * g)
        return max(1.0, n)

    def optimum(self, n_max=None, within=0.05):
        """Best number of workers.

        Returns
        -------
        dict
            ``n_closed_form`` (float, :meth:`closed_form_optimum`), ``n_best`` (argmin of
            :meth:`time` over 1..n_max), ``time_best``, ``n_within`` (the fewest workers
            within ``within`` of the best time: past it, workers buy little), ``n_max``.
            ``n_max`` defaults to ``max(64, 4 * n_closed_form)``.
        """
        n_cf = self.closed_form_optimum()
        if n_max is None:
            n_max = int(max(64, math.ceil(4 * n_cf)))
        times = [self.time(n) for n in range(1, int(n_max) + 1)]
        best = int(np.argmin(times)) + 1
        enough = next(n for n, t in enumerate(times, 1) if t <= (1 + within) * times[best - 1])
        return {"n_closed_form": n_cf, "n_best": best, "time_best": times[best - 1],
                "n_within": enough, "n_max": int(n_max)}

    def table(self, n_max=16, measured=None):
        """The curve as text; ``measured`` ``{n: seconds}`` adds measured and error columns."""
        measured = measured or {}
        head = (f"{'n':>4} {'P':>4} {'compute':>9} {'bcast':>8} {'aggr':>8} {'overhead':>8} "
                f"{'total':>9} {'speedup':>7}")
        if measured:
            head += f" {'measured':>9} {'error':>7}"
        lines = [head]
        for row in self.curve(n_max):
            line = (f"{row['workers']:>4} {row['partitions']:>4} {row['compute']:>9.3f} "
                    f"{row['broadcast']:>8.3f} {row['aggregate']:>8.3f} {row['overhead']:>8.3f} "
                    f"{row['total']:>9.3f} {row['speedup']:>7.2f}")
            if row["workers"] in measured:
                got = measured[row["workers"]]
                line += f" {got:>9.3f} {(row['total'] - got) / got:>+7.1%}"
            lines.append(line)
        return "\n".join(lines)

    def shown_workers(self, opt=None):
        """How many workers the printed table and the plot cover by default: past the optimum
        (by a quarter, at least 2), to twice the fewest workers within 5% of it, at least 8."""
        opt = opt or self.optimum()
        n_best = opt["n_best"]
        return min(opt["n_max"], max(8, 2 * opt["n_within"], n_best + max(2, n_best // 4)))

    def figure(self, n_max=None, measured=None, title=None):
        """The matplotlib figure of :meth:`plot` (the caller closes it)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        opt = self.optimum()
        n_max = n_max or self.shown_workers(opt)
        rows = self.curve(n_max)
        ns = [r["workers"] for r in rows]
        fig, ax = plt.subplots(figsize=(7, 4.8))
        ax.plot(ns, [r["total"] for r in rows], "-", color="C0", label="predicted total")
        ax.plot(ns, [r["compute"] for r in rows], "--", color="C2", label="compute")
        ax.plot(ns, [r["broadcast"] + r["aggregate"] + r["overhead"] for r in rows], ":",
                color="C3", label="broadcast + aggregate + overhead")
        if measured:
            xs = sorted(measured)
            ax.plot(xs, [measured[x] for x in xs], "o", color="k", label="measured")
        # One optimum: the best n of the exact curve (the closed form is a relaxation of it)
        if opt["n_best"] <= n_max:
            ax.plot([opt["n_best"]], [opt["time_best"]], "*", color="C1", markersize=14,
                    linestyle="none",
                    label=f"optimum n* = {opt['n_best']} ({opt['time_best']:.3g} s)")
        ax.set_xlabel("workers n")
        ax.set_ylabel("seconds per iteration")
        ax.set_xlim(0.5, n_max + 0.5)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        head = title or f"{'-'.join(map(str, self.layers))}, {self.examples:,} examples"
        if opt["n_best"] > n_max:
            head += f"\n(optimum n* = {opt['n_best']} lies past the {n_max} workers shown)"
        ax.set_title(head)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False,
                  fontsize=9)
        fig.tight_layout()
        return fig

    def plot(self, path, n_max=None, measured=None, title=None):
        """Write a PNG: predicted curve, its parts, measured points and the optimum n*, over
        1..n_max workers (default :meth:`shown_workers`)."""
        import matplotlib.pyplot as plt

        fig = self.figure(n_max, measured, title)
        try:
            fig.savefig(path, dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)
        return path
