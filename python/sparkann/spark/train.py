"""Distributed solvers: full-batch (l-bfgs, gd) and mini-batch (adam, sgd) on cached blocks.

Full-batch solvers run on the driver (``sparkann.optim``); each loss/gradient evaluation is
one Spark job (:class:`~sparkann.spark.gradient.DistributedLossGrad`). In a Spark Connect
session a fit with nothing to run on the driver between iterations runs whole in one query
instead (:mod:`sparkann.spark.one_query`).

Mini-batch solvers use local steps with periodic averaging: one round (one ``maxIter``
iteration) broadcasts the weights and the optimizer state; every partition runs ``syncSteps``
mini-batch steps (one cached block each; by default one pass over its blocks in a seeded random
order) with its own copy of the optimizer, and returns its weights and state; the driver
averages them weighted by the rows each partition holds (by their weights summed, with a
weight column). (In a Spark Connect session the
weights and state travel in the task's function instead of a broadcast, and the weighted sums
are added in slices by a shuffle: see ``CachedBlocks.reduce_slices``.) One Spark job per
round, instead of one per mini-batch, is what makes mini-batch training worth distributing: a
Spark job costs ~0.1 s here, more than a mini-batch step. ``syncSteps=1`` gives synchronous
per-step data parallelism (one job per step) for comparison.
"""
import logging
import math
import time

import numpy as np

from sparkann.optim import Cosine, add_l2_gradient, l2_penalty
from sparkann.solvers import get_solver, make_optimizer
from sparkann.spark import one_query
from sparkann.spark.checkpointing import resume_from_checkpoint, save_checkpoint
from sparkann.spark.gradient import DistributedLossGrad, engine_rows, task_network, weights_value
from sparkann.spark.session import task_cpus

log = logging.getLogger("sparkann.spark")


def partition_local_steps(blocks, start, topology, dtype, block_size, threads, kind, lr, momentum,
                          steps, seed, round_index, l2_mask, reg_param, faults=None):
    """Executor side: local mini-batch steps from the weights and optimizer state ``start``
    (a ``(weights, state)`` pair, or a broadcast of one).

    Yields ``(rows, weight * w, {name: weight * array}, loss sum, weight seen, t, weight)``,
    the weight being the partition's rows, or their weights summed with a weight column
    (each step then divides by its block's weight sum, and a block whose rows all weigh 0
    takes no step); the loss sum is NaN when the engine overflowed (the driver then stops
    with a DivergenceError).
    """
    from pyspark import TaskContext

    from sparkann.spark.faults import trigger
    trigger(faults, round_index)
    net = task_network(topology, dtype, block_size, threads)
    data = list(blocks)
    rows = sum(X.shape[0] for X, _, _ in data)
    if rows == 0:
        yield 0, None, None, 0.0, 0, 0, 0
        return
    weight = rows if data[0][2] is None else sum(float(sw.sum(dtype=np.float64))
                                                 for _, _, sw in data)
    w, state = weights_value(start)
    w = np.array(w, dtype=np.float64)
    opt = make_optimizer(kind, lr, momentum=momentum)
    opt.load_state_dict(state)
    part = TaskContext.get().partitionId()
    rng = np.random.default_rng([seed & 0x7FFFFFFF, round_index, part])
    order = rng.permutation(len(data)) if steps == 0 else rng.integers(0, len(data), steps)
    w_net = w.astype(net.dtype)   # a bfloat16 network's weights are float32
    grad = np.zeros(net.n_weights, net.dtype)
    loss_sum, seen = 0.0, 0
    for step, i in enumerate(order):
        X, y, sw = data[i]
        n = X.shape[0] if sw is None else float(sw.sum(dtype=np.float64))
        if n == 0:
            continue   # every row of the block weighs 0: nothing to step on
        with np.errstate(over="ignore"):
            w_net[:] = w
        if not np.isfinite(w_net).all():  # the steps overflowed (float32 or float64)
            loss_sum = math.nan
            break
        try:
            # dropout's masks: a function of the seed, the round, the partition and the step
            loss, _ = net.loss_grad(w_net, X, y, grad, zero=True, sample_weight=sw,
                                    key=(seed & 0xFFFFFFFFFFFFFFFF, round_index, part << 32 | step))
        except FloatingPointError:
            loss_sum = math.nan
            break
        loss_sum += loss
        seen += n
        g = add_l2_gradient(grad.astype(np.float64) / n, w, reg_param, l2_mask)
        opt.step(w, g)
    new_state = opt.state_dict()
    arrays = {k: v * weight for k, v in new_state.items() if isinstance(v, np.ndarray)}
    yield rows, w * weight, arrays, loss_sum, seen, int(new_state["t"]), weight


def state_names(kind, lr, momentum):
    """Names of the optimizer's state arrays once it has stepped (each shaped as the
    weights)."""
    opt = make_optimizer(kind, lr, momentum=momentum)
    opt.step(np.zeros(1), np.zeros(1))
    return sorted(k for k, v in opt.state_dict().items() if isinstance(v, np.ndarray))


def _round_vector(value, names, n):
    """One partition's round result as ``(vector, scalars)`` for ``reduce_slices``: the
    weighted weights then the weighted state arrays ``names`` (zeros where a partition
    has none); rows, loss sum, weight seen, ``t`` and weight."""
    rows, w_sum, arrays, loss_sum, seen, t, weight = value
    scalars = np.array([rows, loss_sum, seen, t, weight], np.float64)
    vector = np.zeros(n * (1 + len(names)), np.float64)
    if w_sum is not None:
        vector[:n] = w_sum
        for i, k in enumerate(names):
            if arrays.get(k) is not None:
                vector[n * (i + 1):n * (i + 2)] = arrays[k]
    return vector, scalars


def _round_from_vector(total, scalars, names, n):
    """The sums of ``_round_vector`` as ``_sum_rounds`` gives them."""
    arrays = {k: total[n * (i + 1):n * (i + 2)] for i, k in enumerate(names)}
    return (int(sum(v[0] for _, v in scalars)), total[:n], arrays,
            float(sum(v[1] for _, v in scalars)), sum(float(v[2]) for _, v in scalars),
            int(max((v[3] for _, v in scalars), default=0)),
            sum(float(v[4]) for _, v in scalars))


def _sum_rounds(a, b):
    if a[1] is None:
        return b
    if b[1] is None:
        return a
    arrays = {k: a[2][k] + b[2][k] for k in a[2]}
    return (a[0] + b[0], a[1] + b[1], arrays, a[3] + b[3], a[4] + b[4], max(a[5], b[5]),
            a[6] + b[6])


class Trainer:
    """Runs one solver over cached blocks and records the objective history.

    Parameters
    ----------
    blocks : CachedBlocks
    topology : sparkann.topology.Topology
    dtype, block_size, solver, max_iter, tol, step_size, reg_param, seed, sync_steps, momentum
        As the estimator Params.
    validation : CachedBlocks or None
        Held-out blocks monitored for early stopping (patience ``patience``).
    step_size_schedule : str
        ``"constant"`` or ``"cosine"``: the step size of each round (:meth:`step_size_factor`).
    callback : callable or None
        ``callback(iteration, weights, loss)`` after each iteration; raising StopIteration
        ends training with the current weights.
    """

    def __init__(self, blocks, topology, *, dtype, block_size, solver, max_iter, tol, step_size,
                 reg_param, seed, sync_steps, momentum, validation=None, patience=10,
                 step_size_schedule="constant",
                 callback=None, step_size_set=True, checkpoint=None):
        self.blocks, self.topology = blocks, topology
        self.dtype, self.block_size = dtype, block_size
        self.solver = get_solver(solver).name
        self.max_iter, self.tol, self.step_size = max_iter, tol, step_size
        self.reg_param, self.seed, self.sync_steps = reg_param, seed, sync_steps
        self.step_size_schedule = step_size_schedule
        self.momentum, self.validation, self.patience = momentum, validation, patience
        self.callback = callback
        self.checkpoint = checkpoint  # a checkpointing.TrainingCheckpoint or None
        self._optimizer_state = {}  # adam/sgd state_dict after the last round
        self._lbfgs = None  # the running optimizer.LBFGS
        self.step_size_set = step_size_set
        self.l2_mask = topology.l2_mask().astype(np.float64)
        self.loss_grad = DistributedLossGrad(blocks, topology, dtype, block_size, reg_param,
                                             l2_mask=self.l2_mask)
        self.val_loss = (DistributedLossGrad(validation, topology, dtype, block_size)
                         if validation is not None else None)
        self.history = []
        self.val_history = []
        self.seconds = []
        self._stopper = None
        self._last = time.perf_counter()

    def optimizer_state(self):
        """The solver's ``state_dict`` that a checkpoint holds besides the weights ({} for
        gd)."""
        return self._lbfgs.state_dict() if self._lbfgs is not None else self._optimizer_state

    def _on_iteration(self, iteration, w, loss):
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        self.history.append(float(loss))
        self.seconds.append(seconds)
        line = f"iteration {iteration}  loss {loss:.6f}  seconds {seconds:.3f}"
        if self.val_loss is not None:
            val = self.val_loss(w)[0]
            self.val_history.append(val)
            line += f"  validation loss {val:.6f}"
        log.info(line)
        stop = self._stopper is not None and self._stopper.update(self.val_history[-1], w)
        if self.checkpoint is not None and self.checkpoint.due(iteration):
            save_checkpoint(self, iteration, w)
        if self.callback is not None:
            self.callback(iteration, w, float(loss))
        if stop:
            log.info("early stopping: no validation improvement in %d iterations",
                     self.patience)
            raise StopIteration

    def run(self, w0):
        """Train from ``w0`` (float64); return the final (or best validated) weights."""
        from sparkann import optim
        if self.val_loss is not None:
            self._stopper = optim.EarlyStopping(tol=self.tol, patience=self.patience)
        w0 = np.asarray(w0, dtype=np.float64)
        start, opt_state = 0, None
        if self.checkpoint is not None:
            resumed = resume_from_checkpoint(self)
            if resumed is not None and resumed[0] == "finished":
                return resumed[1]
            if resumed is not None:
                start, w0, opt_state = resumed
                self._optimizer_state = opt_state or {}
        self._last = time.perf_counter()
        self._current = w0

        try:
            w = w0 if start >= self.max_iter else None
            if w is None and one_query.usable(self):
                w = one_query.fit(self, w0)   # None: a partition is away from its file
            if w is None and self.solver in one_query.SOLVERS:
                if self.solver == "lbfgs":
                    self._lbfgs = optim.LBFGS(self.loss_grad, w0)
                    if opt_state is not None:  # its iterations count on from the checkpoint
                        self._lbfgs.load_state_dict(opt_state)
                w = one_query.minimize_full_batch(
                    self.solver, self.loss_grad, w0, max_iter=self.max_iter, tol=self.tol,
                    step_size=self.step_size, callback=self._on_iteration, start=start,
                    lbfgs=self._lbfgs)
            elif w is None:
                w = self._run_minibatch(w0, start, opt_state)
        except StopIteration:
            w = self._current
        if self._stopper is not None and self._stopper.best_weights is not None:
            w = self._stopper.best_weights
        w = np.asarray(w, dtype=np.float64)
        if self.checkpoint is not None:
            save_checkpoint(self, len(self.history), w, finished=True)
        return w

    def _run_minibatch(self, w0, start=0, state=None):
        sc, session = self.blocks.context, self.blocks.session
        kind, momentum = self.solver, self.momentum
        default = get_solver(kind).spark_step_size
        lr = self.step_size if self.step_size_set or default is None else default
        w = w0.copy()
        if state is None:
            state = make_optimizer(kind, lr, momentum=momentum).state_dict()
        topology, dtype = self.topology, self.dtype
        block_size = engine_rows(self.block_size, self.blocks)
        threads, steps, seed = task_cpus(session), self.sync_steps, int(self.seed)
        l2_mask, reg_param = self.l2_mask, self.reg_param
        from sparkann.spark.faults import active_spec
        from sparkann.optim import DivergenceError
        faults = active_spec(session)
        previous = self.history[-1] if self.history else math.inf
        for r in range(start, self.max_iter):
            self._current = w
            args = (topology, dtype, block_size, threads, kind, lr * self.step_size_factor(r),
                    momentum, steps, seed, r,
                    l2_mask, reg_param, faults)
            if self.blocks.frame:
                rows, w_sum, arrays, loss_sum, seen, t, weight = self._frame_round(w, state,
                                                                                   args)
            else:
                bc = sc.broadcast((w, state))

                def one_partition(it, args=args, bc=bc):
                    return partition_local_steps(it, bc, *args)

                try:
                    rows, w_sum, arrays, loss_sum, seen, t, weight = \
                        self.blocks.tree_aggregate(one_partition, _sum_rounds, depth=2)
                finally:
                    bc.destroy()
            if rows != self.blocks.n_rows:  # a lost or retried task must not drop or repeat
                raise RuntimeError(f"round {r + 1} averaged {rows} rows, the cached data holds "
                                   f"{self.blocks.n_rows}")
            new_w = w_sum / weight
            loss = loss_sum / (seen or 1)
            if not (math.isfinite(loss) and np.isfinite(new_w).all()):
                raise DivergenceError(
                    f"training diverged in round {r + 1} (loss {loss}, or non-finite "
                    f"weights): lower stepSize; the error's weights are the last finite ones "
                    f"(after round {r})", weights=w, iteration=r)
            w = new_w
            state = {"t": t, **{k: v / weight for k, v in arrays.items()}}
            loss += l2_penalty(w, reg_param, l2_mask)
            self._current = w
            self._optimizer_state = state
            self._on_iteration(r + 1, w, loss)
            if abs(previous - loss) <= self.tol * max(abs(loss), 1e-12):
                break
            previous = loss
        return w

    def step_size_factor(self, round_index):
        """The ``stepSizeSchedule`` factor of the step size in round ``round_index`` (from
        0): a function of the round alone, so a resumed run steps as an undisturbed one."""
        if self.step_size_schedule == "cosine":
            return Cosine(self.max_iter)(round_index)
        return 1.0

    def _frame_round(self, w, state, args):
        """One round with DataFrame operations only: ``(w, state)`` in the task's function,
        the rows-weighted sums added in slices by a shuffle."""
        start, n = (w, state), w.size
        kind, lr, momentum = args[4], args[5], args[6]
        names = state_names(kind, lr, momentum)

        def one_partition(blocks):
            return _round_vector(next(partition_local_steps(blocks, start, *args)), names, n)

        total, scalars = self.blocks.reduce_slices(one_partition, "float64",
                                                   n * (1 + len(names)))
        return _round_from_vector(total, scalars, names, n)
