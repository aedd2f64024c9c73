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

Overhead. ``t_overhead = c_job``: scheduling the job and the driver's step, independent of n.

Every term is linear in the seven parameters ``theta = (1/F, c_task, 1/B, a, c_stage, c_job,
1/R)``: ``t = features(n, P) . theta``. Calibration from measured runs is therefore a
non-negative least-squares fit (:func:`fit_parameters`); the jobs that calibrate on a live
cluster (:func:`spark_observations`, :func:`read_observations`) each isolate a mechanism: an
empty job, a broadcast, a gather of partials, a gather through one explicit shuffle level (the
cost of a level) and a read of cached blocks.

Optimum. For the closed form, take ``P = n``, drop the ceilings and the tree (all ``n`` partials
go to the driver, which is what Spark does for small ``n``) and write ``log2(n + 1)`` as
``log2 n``: with ``C = S * (f / F + d / R)`` (one worker's compute), ``g`` (one partial) and
``h = a + Wb / (m * B)`` (one broadcast round)::

    t~(n) = C / n + g * n + h * log2(n) + const
    dt~/dn = 0  ->  g n^2 + (h / ln 2) n - C = 0
    n* = (-(h / ln 2) + sqrt((h / ln 2)^2 + 4 g C)) / (2 g)   (~ sqrt(C / g))

The discrete optimum is the argmin of the exact ``t(n)`` (tree levels and ceilings included)
over ``n = 1 .. n_max``; :meth:`ScalingModel.optimum` reports both.

Validation data: :data:`ULANOV_BENCHMARK` holds the published seconds per epoch of Spark's MLP
on 1..5 workers; :func:`ulanov_validation` calibrates on the 1- and 2-worker points and predicts
the rest. ``bench/bench_scaling.py`` compares the model with sparkann's own gradient job on
this machine.
"""

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ULANOV_BENCHMARK", "Parameters", "ScalingModel", "add_arguments", "fit_parameters",
    "main", "measure_flop_rate", "parse_bandwidth", "parse_duration", "parse_flops",
    "random_frame", "read_observations", "run", "spark_observations", "through_one_level",
    "tree_levels", "ulanov_validation", "weights_of", "worker_flop_rate",
]

BROADCAST_BLOCK_BYTES = 4 * 1024 * 1024     # spark.broadcast.blockSize default (4m)

# Published measurements used for validation.
ULANOV_BENCHMARK = {
    "source": ("Alexander Ulanov, ann-benchmark, README 'Preliminary results (s)', "
               "https://github.com/avulanov/ann-benchmark"),
    "setup": ("Spark MLlib MLP (ann-interface-gemm branch), OpenBLAS, float64, MNIST 60,000 "
              "training examples, full-batch gradient, one epoch including the update; "
              "Xeon E31240 3.3 GHz nodes, 1 GbE, one master and 1..5 workers"),
    "layers": [784, 2500, 2000, 1500, 1000, 500, 10],
    "examples": 60000,
    "bytes_per_weight": 8,
    "bandwidth": "1Gbit",
    "workers": [1, 2, 3, 4, 5],
    "total_s": [86.0, 47.0, 35.2, 27.0, 29.0],
    "compute_s": [84.0, 44.0, 33.0, 24.0, 21.0],
}

# ----------------------------------------------------------------------------- units

_SI = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}
_NUMBER = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"


def _split(text, what):
    match = re.fullmatch(_NUMBER + r"([A-Za-z/]*)\s*", str(text))
    if match is None:
        raise ValueError(f"{what}: cannot read {text!r}; expected a number with a unit, "
                         f"e.g. {_EXAMPLES[what]}")
    return float(match.group(1)), match.group(2)


_EXAMPLES = {"bandwidth": "'1Gbit', '10GbE', '125MB/s'", "flops": "'51G', '2.5TFLOPS'",
             "duration": "'0.1ms', '50us', '2s'"}


def parse_bandwidth(text):
    """Bytes per second from a link speed.

    ``'1Gbit'``, ``'1Gbps'``, ``'10GbE'``, ``'100Mb/s'`` are bits per second; ``'125MB/s'``,
    ``'1GB'`` are bytes per second (SI prefixes, as network speeds are quoted). A bare number
    is bytes per second.
    """
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        value, unit = _split(text, "bandwidth")
    match = re.fullmatch(r"([kKmMgGtT]?)(bit|bits|bps|b|be|B|Bps|)(/s)?", unit.replace("GbE", "Gbe")
                         .replace("MbE", "Mbe"))
    if match is None:
        raise ValueError(f"bandwidth: unknown unit {unit!r} in {text!r}; expected e.g. "
                         f"{_EXAMPLES['bandwidth']}")
    prefix, base = match.group(1).lower(), match.group(2)
    bits = base in ("bit", "bits", "bps", "b", "be")
    if base == "" and prefix:
        raise ValueError(f"bandwidth: {text!r} has a prefix but no unit; write "
                         f"'{match.group(1)}bit' or '{match.group(1)}B/s'")
    rate = value * _SI[prefix] / (8.0 if bits else 1.0)
    if not rate > 0:
        raise ValueError(f"bandwidth: must be positive, received {text!r}")
    return rate


def parse_flops(text):
    """FLOP per second from ``'51G'``, ``'51GFLOPS'``, ``'2.5T'`` or a bare number."""
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        value, unit = _split(text, "flops")
    match = re.fullmatch(r"([kKmMgGtTpP]?)(flops|flop/s|FLOPS|FLOP/s|)", unit)
    if match is None:
        raise ValueError(f"flops: unknown unit {unit!r} in {text!r}; expected e.g. "
                         f"{_EXAMPLES['flops']}")
    rate = value * _SI[match.group(1).lower()]
    if not rate > 0:
        raise ValueError(f"flops: must be positive, received {text!r}")
    return rate


def parse_duration(text):
    """Seconds from ``'0.1ms'``, ``'50us'``, ``'2s'``, ``'1min'`` or a bare number of seconds."""
    if isinstance(text, (int, float)):
        value, unit = float(text), "s"
    else:
        value, unit = _split(text, "duration")
    scale = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "min": 60.0}.get(unit)
    if scale is None:
        raise ValueError(f"duration: unknown unit {unit!r} in {text!r}; expected e.g. "
                         f"{_EXAMPLES['duration']}")
    if value < 0:
        raise ValueError(f"duration: must be >= 0, received {text!r}")
    return value * scale


# ----------------------------------------------------------------------------- the model

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
            if levels is None:
                levels = tree_levels(p, self.depth, self.rule)
            elif levels[0] != p or any(b < 1 for b in levels):
                raise ValueError(f"levels: expected [{p}, ...] of positive counts, received "
                                 f"{levels}")
            out["aggregate"] = self._aggregate_features(n, levels, wb)
        if "overhead" in parts:
            out["overhead"] = np.array([0, 0, 0, 0, 0, 1, 0], dtype=float)
        return out

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
        """Rows ``{'workers', 'partitions', 'compute', ..., 'total', 'speedup'}`` for n = 1..n_max."""
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

    def plot(self, path, n_max=None, measured=None, title=None):
        """Write a PNG: predicted curve, its parts, measured points and the optimum."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        opt = self.optimum()
        n_max = n_max or max(8, min(opt["n_max"], max(opt["n_best"] + 2, 2 * opt["n_within"])))
        rows = self.curve(n_max)
        ns = [r["workers"] for r in rows]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(ns, [r["total"] for r in rows], "-", color="C0", label="predicted total")
        ax.plot(ns, [r["compute"] for r in rows], "--", color="C2", label="compute")
        ax.plot(ns, [r["broadcast"] + r["aggregate"] + r["overhead"] for r in rows], ":",
                color="C3", label="broadcast + aggregate + overhead")
        if measured:
            xs = sorted(measured)
            ax.plot(xs, [measured[x] for x in xs], "o", color="k", label="measured")
        if opt["n_best"] <= n_max:
            ax.plot([opt["n_best"]], [opt["time_best"]], "*", color="C1", markersize=14,
                    label=f"optimum n={opt['n_best']} ({opt['time_best']:.3g} s)")
        ax.axvline(opt["n_closed_form"], color="C1", linewidth=0.8, alpha=0.6,
                   label=f"closed-form n* = {opt['n_closed_form']:.1f}")
        ax.set_xlabel("workers n")
        ax.set_ylabel("seconds per iteration")
        ax.set_ylim(bottom=0)
        ax.set_title(title or f"{'-'.join(map(str, self.layers))}, {self.examples} examples")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


# ----------------------------------------------------------------------------- calibration

def fit_parameters(model, observations, fixed=None):
    """Fit the model's parameters to measured seconds by non-negative least squares.

    Parameters
    ----------
    model : ScalingModel
        Gives the structure (layers, bytes, tree rule); its ``params`` are the starting
        values of the fixed ones.
    observations : list of dict
        Each ``{'seconds': s, 'n': workers, 'parts': (...)}`` and optionally ``partitions``,
        ``broadcast_bytes``, ``aggregate_bytes``, ``examples``, ``flops_per_example`` and
        ``levels`` (see :meth:`ScalingModel.features`): the measured seconds of those parts
        of the model.
    fixed : dict, optional
        ``{name: value}`` for parameters not fitted (names of :attr:`Parameters.NAMES`). A
        parameter that no observation constrains must be fixed, with two defaults: without
        an observed extra tree level a stage costs a job, and without a job that reads
        cached data but computes nothing (``flops_per_example=0``), reading is free (the
        read and FLOP costs of a network are otherwise indistinguishable).

    Returns
    -------
    Parameters
    """
    from scipy.optimize import nnls

    fixed = dict(fixed or {})
    unknown = [k for k in fixed if k not in Parameters.NAMES]
    if unknown:
        raise ValueError(f"fixed: unknown parameter(s) {unknown}; expected {Parameters.NAMES}")
    if not observations:
        raise ValueError("observations: expected at least one measurement")
    rows, rhs = [], []
    for i, obs in enumerate(observations):
        if not obs.get("seconds", -1) >= 0:
            raise ValueError(f"observations[{i}]: 'seconds' must be >= 0, received "
                             f"{obs.get('seconds')!r}")
        feats = model.features(obs["n"], obs.get("partitions"), obs.get("broadcast_bytes"),
                               obs.get("aggregate_bytes"), obs.get("examples"), obs["parts"],
                               obs.get("flops_per_example"), obs.get("levels"))
        rows.append(sum(feats.values()))
        rhs.append(float(obs["seconds"]))
    a, b = np.array(rows), np.array(rhs)
    free = [j for j, name in enumerate(Parameters.NAMES) if name not in fixed]
    theta = np.zeros(len(Parameters.NAMES))
    for j, name in enumerate(Parameters.NAMES):
        if name in fixed:
            theta[j] = fixed[name]
    b = b - a @ theta
    stage = Parameters.NAMES.index("stage")
    tie_stage = stage in free and not np.any(a[:, stage])
    if tie_stage:                      # no extra tree level observed: a stage costs a job
        free.remove(stage)
    read = Parameters.NAMES.index("sec_per_read_byte")
    if read in free and not np.any((a[:, read] > 0) & (a[:, 0] == 0)):
        free.remove(read)              # no read-only job: reading costs nothing extra
    unconstrained = [Parameters.NAMES[j] for j in free if not np.any(a[:, j])]
    if unconstrained:
        raise ValueError(f"fit_parameters: no observation constrains {unconstrained}; "
                         f"fix them")
    # Scale columns so that seconds-per-FLOP and seconds-per-byte fit next to seconds.
    cols = a[:, free]
    norms = np.linalg.norm(cols, axis=0)
    solution, _ = nnls(cols / norms, b)
    theta[free] = solution / norms
    if tie_stage:
        theta[stage] = theta[Parameters.NAMES.index("job")]
    for name, j in (("sec_per_flop", 0), ("sec_per_byte", 2)):
        if theta[j] <= 0:
            raise ValueError(f"fit_parameters: the fit gives {name} = 0 (infinite rate); the "
                             f"observations do not show that cost")
    return Parameters.from_theta(theta)


def ulanov_validation(fit_workers=(1, 2), n_max=None):
    """Calibrate on the published 1- and 2-worker points, predict the others.

    Uses the compute and total columns at ``fit_workers`` (compute fits the FLOP rate and the
    per-task cost; total minus compute fits bandwidth and job overhead). Latency is fixed at
    0.1 ms (1 GbE) and the JVM's ``treeAggregate`` rule is used, as the benchmark ran on the JVM.

    Returns
    -------
    dict
        ``model``, ``rows`` (per worker: measured, predicted, error), ``optimum``,
        ``max_abs_error`` over the predicted (not fitted) points.
    """
    data = ULANOV_BENCHMARK
    start = Parameters(flops=1e9, bandwidth=parse_bandwidth(data["bandwidth"]), latency=1e-4)
    model = ScalingModel(data["layers"], data["examples"], start,
                         bytes_per_weight=data["bytes_per_weight"], rule="scala")
    obs = []
    for n, total, compute in zip(data["workers"], data["total_s"], data["compute_s"]):
        if n in fit_workers:
            obs.append({"n": n, "seconds": compute, "parts": ("compute",)})
            obs.append({"n": n, "seconds": total - compute,
                        "parts": ("broadcast", "aggregate", "overhead")})
    model.params = fit_parameters(model, obs, fixed={"latency": 1e-4})
    rows = []
    for n, total in zip(data["workers"], data["total_s"]):
        pred = model.time(n)
        rows.append({"workers": n, "measured": total, "predicted": pred,
                     "error": (pred - total) / total, "fitted": n in fit_workers})
    predicted = [r for r in rows if not r["fitted"]]
    return {"model": model, "rows": rows, "optimum": model.optimum(n_max),
            "max_abs_error": max(abs(r["error"]) for r in predicted) if predicted else 0.0,
            "measured_best": data["workers"][int(np.argmin(data["total_s"]))]}


def _network(layers, dtype, activation="sigmoid"):
    from ann_core import Network

    spec = []
    for width in layers[1:-1]:
        spec += [("dense", int(width)), ("activation", activation)]
    spec += [("dense", int(layers[-1])), ("loss", "softmax_cross_entropy")]
    return Network(int(layers[0]), spec, dtype=dtype)


def measure_flop_rate(layers, dtype="float32", rows=4096, threads=1, repeats=3, seed=0,
                      statistic="median", block_rows=128):
    """FLOP/s of one worker: the native core's ``loss_grad`` on synthetic data.

    Counts the nominal ``6 * W`` FLOPs per example, as the model does. Calls ``loss_grad``
    once per block of ``block_rows`` rows, as training does over its cached blocks (``None``:
    one call for all rows). Runs with ``threads`` BLAS threads (a Spark task gets
    ``spark.task.cpus``) and returns the median rate, or with ``statistic='best'`` the
    fastest repeat (the rate of an uncontended core on a shared machine).
    """
    if statistic not in ("median", "best"):
        raise ValueError(f"statistic: expected 'median' or 'best', received {statistic!r}")
    from ann_core import blas_threads, set_blas_threads

    net = _network(layers, dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((int(rows), net.n_in)).astype(dtype)
    y = rng.integers(0, net.n_out, int(rows))
    step = int(rows) if block_rows is None else int(block_rows)
    blocks = [(np.ascontiguousarray(x[i:i + step]), y[i:i + step])
              for i in range(0, int(rows), step)]
    w = (0.05 * rng.standard_normal(net.n_weights)).astype(dtype)
    grad = np.zeros_like(w)

    def gradient():
        for xb, yb in blocks:
            net.loss_grad(w, xb, yb, grad)

    previous = blas_threads()["threads"]
    set_blas_threads(int(threads))
    try:
        gradient()                                        # warm-up: workspace, caches
        times = []
        for _ in range(int(repeats)):
            t0 = time.perf_counter()
            gradient()
            times.append(time.perf_counter() - t0)
    finally:
        set_blas_threads(previous)
    seconds = float(np.median(times)) if statistic == "median" else min(times)
    return 6.0 * net.n_weights * rows / seconds


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
    SparkContext; nothing here imports pyspark.
    """
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
    from sparkann.spark.data import cache_blocks

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
    yield sum(x.shape[0] for x, _ in blocks)


def _keyed_by_zero(index, partials):
    return ((0, v) for v in partials)


def _add(a, b):
    return a + b


def _add_or_none(a, b):
    return b if a is None else a if b is None else a + b


def calibrate_local(layers, examples, dtype="float32", master="local[2]", workers=2,
                    repeats=5, threads=1):
    """A model calibrated on this machine: native FLOP rate plus short Spark jobs.

    The FLOP rate is :func:`worker_flop_rate`'s; the other jobs are those of :func:`spark_observations` (with the network's weight and partial
    sizes and 16 MB) and :func:`read_observations`. Starts (and stops) a SparkSession on
    ``master``; needs pyspark and Java.
    """
    import os

    from pyspark.sql import SparkSession

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


# ----------------------------------------------------------------------------- command line

def add_arguments(parser):
    """Add the ``scale`` options to an ``argparse`` parser."""
    parser.add_argument("--layers", help="layer sizes, e.g. 784,2500,2000,1500,1000,500,10")
    parser.add_argument("--examples", type=int, help="training examples")
    parser.add_argument("--ulanov", action="store_true",
                        help="instead: calibrate on the published ann-benchmark's 1- and "
                             "2-worker points and compare the predictions with 3..5 workers")
    parser.add_argument("--bandwidth", default="1Gbit",
                        help="link speed: 1Gbit, 10GbE, 125MB/s (default 1Gbit)")
    parser.add_argument("--flops", help="FLOP/s of one worker: 51G, 2.5T (or --calibrate)")
    parser.add_argument("--latency", default="0.1ms", help="per message (default 0.1ms)")
    parser.add_argument("--job-overhead", default="0.1s",
                        help="fixed seconds per iteration (default 0.1s)")
    parser.add_argument("--task-overhead", default="0s", help="fixed seconds per task")
    parser.add_argument("--read-rate", default=None,
                        help="bytes/s at which a task reads its cached training blocks, e.g. "
                             "1GB/s (default: reading is free)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--depth", type=int, default=2, help="treeAggregate depth")
    parser.add_argument("--partitions-per-worker", type=int, default=1)
    parser.add_argument("--max-workers", type=int, default=None,
                        help="rows of the printed curve (default: 2 x the optimum, >= 8)")
    parser.add_argument("--calibrate", action="store_true",
                        help="measure the FLOP rate and the Spark costs here (needs pyspark)")
    parser.add_argument("--master", default="local[2]", help="Spark master for --calibrate")
    parser.add_argument("--plot", help="write the curve to this PNG file")
    return parser


def _layers(text):
    try:
        layers = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"--layers: expected comma-separated integers, received {text!r}")
    weights_of(layers)
    return layers


def model_from_args(args):
    """The :class:`ScalingModel` the command-line arguments describe."""
    if args.layers is None or args.examples is None:
        raise ValueError("--layers and --examples are required (or --ulanov)")
    layers = _layers(args.layers)
    if args.calibrate:
        return calibrate_local(layers, args.examples, args.dtype, master=args.master)
    if args.flops is None:
        raise ValueError("--flops: required unless --calibrate (e.g. --flops 51G)")
    params = Parameters(flops=parse_flops(args.flops), bandwidth=parse_bandwidth(args.bandwidth),
                        latency=parse_duration(args.latency),
                        task=parse_duration(args.task_overhead),
                        job=parse_duration(args.job_overhead),
                        read=None if args.read_rate is None else parse_bandwidth(args.read_rate))
    return ScalingModel(layers, args.examples, params,
                        bytes_per_weight=4 if args.dtype == "float32" else 8,
                        partitions_per_worker=args.partitions_per_worker, depth=args.depth)


def _run_ulanov(args, out):
    result = ulanov_validation()
    model, data = result["model"], ULANOV_BENCHMARK
    measured = dict(zip(data["workers"], data["total_s"]))
    p = model.params
    print(f"published: {data['source']}", file=out)
    print(f"calibrated on {data['workers'][:2]} workers: {p.flops / 1e9:.1f} GFLOP/s, "
          f"{p.bandwidth * 8 / 1e9:.2f} Gbit/s effective, task {p.task:.2f} s, job "
          f"{p.job:.3f} s", file=out)
    print(model.table(args.max_workers or 8, measured=measured), file=out)
    opt = result["optimum"]
    print(f"largest error on 3..5 workers: {result['max_abs_error']:.1%}; measured best "
          f"{result['measured_best']} workers, predicted n* = {opt['n_best']} (closed form "
          f"{opt['n_closed_form']:.2f}, {opt['n_within']} within 5% of the best)", file=out)
    if args.plot:
        model.plot(args.plot, measured=measured, title="Ulanov ann-benchmark, 1 GbE, float64")
        print(f"plot written to {args.plot}", file=out)
    return model


def run(args, out=None):
    """Print the curve and the optimum for parsed arguments; returns the model."""
    out = out or sys.stdout
    if getattr(args, "ulanov", False):
        return _run_ulanov(args, out)
    model = model_from_args(args)
    opt = model.optimum()
    p = model.params
    n_max = args.max_workers or min(max(8, 2 * opt["n_within"]), opt["n_max"])
    print(f"network {'-'.join(map(str, model.layers))}: {model.n_weights:,} weights "
          f"({model.weight_bytes / 1e6:.1f} MB), {model.examples:,} examples", file=out)
    read = "free" if p.read is None else f"{p.read / 1e6:.3g} MB/s"
    print(f"worker {p.flops / 1e9:.3g} GFLOP/s, link {p.bandwidth * 8 / 1e9:.3g} Gbit/s, "
          f"latency {p.latency * 1e3:.3g} ms, job {p.job:.3g} s, task {p.task:.3g} s, reading "
          f"cached data {read}", file=out)
    print(model.table(n_max), file=out)
    print(f"n* = {opt['n_best']} (predicted {opt['time_best']:.3f} s per iteration, "
          f"{model.time(1) / opt['time_best']:.2f}x one worker); closed form "
          f"n* = {opt['n_closed_form']:.2f}; {opt['n_within']} workers come within 5% of the "
          f"best", file=out)
    if args.plot:
        model.plot(args.plot)
        print(f"plot written to {args.plot}", file=out)
    return model


def _command(args):
    run(args)
    return 0


def _register_command():
    """Make this the ``sparkann scale`` subcommand (``sparkann.cli`` imports this module)."""
    try:
        from sparkann import cli
    except ImportError:                     # the CLI module is optional here
        return
    if "scale" not in cli.COMMANDS:         # `python -m sparkann.scaling` imports us twice
        cli.register_command("scale", "predict seconds per iteration on n workers, and the "
                             "best n", add_arguments, _command)


_register_command()


def main(argv=None):
    """``python -m sparkann.scaling``: print the predicted curve and n*."""
    parser = add_arguments(argparse.ArgumentParser(
        prog="sparkann scale",
        description="Predict seconds per full-batch iteration on n Spark workers, and n*."))
    args = parser.parse_args(argv)
    try:
        run(args)
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
