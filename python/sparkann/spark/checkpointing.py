"""Driver-side checkpoints of distributed training (Params and resume logic).

With ``checkpointDir`` set, the trainer saves its state every ``checkpointInterval``
iterations (and once more when training ends) with :mod:`sparkann.checkpoint`; a later
``fit`` with the same directory, topology, Params and data resumes from it.

What is saved, per solver (every resume is exact: the resumed run ends with bitwise the
weights and history of the uninterrupted one):

- ``gd``: the weights after the step and the iteration count (the step-size schedule
  depends on it): the same arithmetic continues.
- ``adam`` / ``sgd``: the weights, the optimizer state (step count, Adam's moments or the
  momentum buffer) and the round index. The mini-batch order of a round comes from a
  generator seeded with ``(seed, round, partition)``, so the round index restores it.
- ``l-bfgs``: :meth:`sparkann.optim.LBFGS.state_dict`: the weights, loss and gradient, the
  previous loss (for the ``tol`` test), the correction pairs in order and the counters. The
  pairs dominate the size: ``2 * m * n_weights`` float64 numbers (m = 10: 160 bytes per
  weight, e.g. 37 MB for 784-256-128-10), plus three more vectors of ``n_weights``.

Always saved: the objective history (and validation history with the early-stopping state),
and a fingerprint of the topology, the training Params, the initial weights and the data
(row count and per-partition sums of features, labels and weights).
"""
import numpy as np
from pyspark.ml.param import Param, Params, TypeConverters

from sparkann import checkpoint, solvers


class HasCheckpoint(Params):
    """Params ``checkpointDir`` and ``checkpointInterval``."""

    checkpointDir = Param(Params._dummy(), "checkpointDir",
                          "Directory (on the driver's file system) where training state is "
                          "saved every checkpointInterval iterations; a fit that finds a "
                          "checkpoint of the same run there resumes from it.",
                          typeConverter=TypeConverters.toString)
    checkpointInterval = Param(Params._dummy(), "checkpointInterval",
                               "Save a checkpoint every this many iterations (>= 1) when "
                               "checkpointDir is set.", typeConverter=TypeConverters.toInt)

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(checkpointInterval=10)

    def getCheckpointDir(self):
        """Gets the value of checkpointDir (None when unset)."""
        return self.getOrDefault(self.checkpointDir) if self.isDefined(self.checkpointDir) \
            else None

    def getCheckpointInterval(self):
        """Gets the value of checkpointInterval or its default value."""
        return self.getOrDefault(self.checkpointInterval)

    def setCheckpointDir(self, value):
        """Sets the value of :py:attr:`checkpointDir`."""
        return self._set(checkpointDir=value)

    def setCheckpointInterval(self, value):
        """Sets the value of :py:attr:`checkpointInterval`."""
        if value < 1:
            raise ValueError(f"checkpointInterval must be >= 1, received {value}")
        return self._set(checkpointInterval=value)


# The Params that change what training computes (not column names, not the directory).
TRAINING_PARAMS = ("layers", "activation", "solver", "maxIter", "tol", "stepSize", "regParam",
                   "seed", "dtype", "blockSize", "initScheme", "syncSteps", "momentum",
                   "earlyStoppingPatience", "stepSizeSchedule")


def data_fingerprint(blocks):
    """Row count and per-partition (rows, feature sum, label sum and, with a weight column,
    weight sum), noted when stacking."""
    return {"rows": blocks.n_rows, "partitions": [[i, rows, *map(repr, sums)]
                                                  for i, rows, *sums in
                                                  blocks.partition_summaries()]}


def run_fingerprint(estimator, topology, w0, blocks):
    """The fingerprint a checkpoint of this fit must carry."""
    params = {name: estimator.getOrDefault(name) for name in TRAINING_PARAMS}
    params["stepSizeSet"] = estimator.isSet(estimator.stepSize)
    return checkpoint.fingerprint({
        "topology": topology.to_dict(), "params": params,
        "initial_weights": checkpoint.fingerprint(np.asarray(w0, np.float64).tobytes().hex()),
        "data": data_fingerprint(blocks)})


class TrainingCheckpoint:
    """Saves and restores the trainer's state in ``directory`` every ``interval`` iterations.

    Parameters
    ----------
    directory : str
    interval : int
    fp : str
        The run's fingerprint (:func:`run_fingerprint`).
    """

    def __init__(self, directory, interval, fp):
        if interval < 1:
            raise ValueError(f"checkpointInterval must be >= 1, received {interval}")
        self.directory, self.interval, self.fp = directory, int(interval), fp
        self.saved = []  # iterations written by this process

    def restore(self):
        """``(iteration, arrays, meta)`` of the checkpoint in the directory, or None."""
        return checkpoint.load(self.directory, self.fp)

    def due(self, iteration):
        return iteration % self.interval == 0

    def save(self, iteration, arrays, meta):
        checkpoint.save(self.directory, iteration, arrays, meta, self.fp)
        self.saved.append(int(iteration))


# ------------------------------------------------------------------ the trainer's state

class ShiftedSchedule:
    """``schedule(t + offset)``: a resumed run continues the step-size schedule."""

    def __init__(self, schedule, offset):
        self.schedule, self.offset = schedule, int(offset)

    def __call__(self, t):
        return self.schedule(t + self.offset)


def optimizer_checkpoint_state(state):
    """An optimizer's ``state_dict`` -> ``(arrays, values)``: arrays for the ``.npz`` file,
    the rest (numbers and None) for the JSON record."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    values = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    return arrays, values


_STOPPER_FIELDS = ("best_metric", "best_iteration", "iteration", "bad")


def save_checkpoint(trainer, iteration, w, finished=False):
    """Write the trainer's state after ``iteration`` (``finished``: the returned weights)."""
    opt_arrays, opt_values = optimizer_checkpoint_state(trainer.optimizer_state())
    arrays = {"weights": np.asarray(w, np.float64)}
    arrays.update({"optimizer_" + k: v for k, v in opt_arrays.items()})
    meta = {"solver": trainer.solver, "finished": bool(finished),
            "history": [float(v) for v in trainer.history],
            "val_history": [float(v) for v in trainer.val_history],
            "optimizer": opt_values,
            "rng": "stateless: mini-batch order is drawn from default_rng([seed, round, "
                   "partition]), so the round index restores it"}
    stopper = trainer._stopper
    if stopper is not None:
        meta["stopper"] = {k: getattr(stopper, k) for k in _STOPPER_FIELDS}
        if stopper.best_weights is not None:
            arrays["stopper_best_weights"] = stopper.best_weights
    trainer.checkpoint.save(iteration, arrays, meta)


def resume_from_checkpoint(trainer):
    """Load the trainer's state from its checkpoint directory.

    Returns None (no checkpoint: start afresh), ``("finished", w)`` (that run already
    ended: its final weights), or ``(iteration, w, optimizer state or None)``.
    """
    restored = trainer.checkpoint.restore()
    if restored is None:
        return None
    iteration, arrays, meta = restored
    where = trainer.checkpoint.directory
    w = arrays.get("weights")
    n = trainer.topology.n_weights
    if w is None or w.shape != (n,) or w.dtype.kind != "f" or not np.isfinite(w).all():
        raise checkpoint.CheckpointError(
            f"{where}: the checkpoint's weights are missing, not {n} finite numbers, "
            f"or of another shape ({None if w is None else w.shape})")
    # A solver is compared by its table row: checkpoints may spell it "l-bfgs" or "lbfgs".
    saved = meta.get("solver")
    same = saved in solvers.NAMES and solvers.get_solver(saved).name == trainer.solver
    if not same or len(meta.get("history", [])) != iteration:
        raise checkpoint.CheckpointError(f"{where}: inconsistent checkpoint (solver "
                                         f"{meta.get('solver')!r}, iteration {iteration})")
    trainer.history = list(meta["history"])
    trainer.val_history = list(meta.get("val_history", []))
    trainer.seconds = [float("nan")] * iteration  # the time of earlier runs is not known
    if trainer._stopper is not None and "stopper" in meta:
        for k in _STOPPER_FIELDS:
            setattr(trainer._stopper, k, meta["stopper"][k])
        best = arrays.get("stopper_best_weights")
        trainer._stopper.best_weights = None if best is None else np.array(best)
    w = np.array(w, dtype=np.float64)
    if meta.get("finished"):
        return "finished", w
    if trainer.solver == "gd":
        return iteration, w, None
    opt_state = dict(meta.get("optimizer") or {})
    opt_state.update({k[len("optimizer_"):]: np.array(v) for k, v in arrays.items()
                      if k.startswith("optimizer_")})
    if trainer.solver == "lbfgs":
        _check_lbfgs_state(opt_state, iteration, w, where)
    return iteration, w, opt_state


def _check_lbfgs_state(state, iteration, w, where):
    from sparkann.optim import LBFGS
    if state.get("nit") != iteration or "x" not in state:
        raise checkpoint.CheckpointError(
            f"{where}: the checkpoint of iteration {iteration} has no L-BFGS state of that "
            f"iteration (found {state.get('nit')!r}); it cannot be resumed exactly")
    try:
        LBFGS(None, w).load_state_dict(state)
    except (KeyError, TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"{where}: the checkpoint's L-BFGS state is "
                                         f"incomplete or inconsistent: {e!r}") from None
    if not np.array_equal(state["x"], w):
        raise checkpoint.CheckpointError(f"{where}: the L-BFGS state's weights differ from "
                                         "the checkpoint's weights")
