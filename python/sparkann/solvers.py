"""The solvers both estimators offer: one table of names, aliases, kinds and default steps.

``sparkann.MLPClassifier``/``MLPRegressor`` (``solver=``), the Spark estimators (``solver``
Param) and the ``sparkann train`` command line all read :data:`SOLVERS`, so a name accepted by
one is accepted by all (``"lbfgs"`` and Spark's ``"l-bfgs"`` alike). To add a solver, see
CONTRIBUTING.md.
"""
from dataclasses import dataclass, field

from sparkann import optim


@dataclass(frozen=True)
class Solver:
    """One row of :data:`SOLVERS`.

    Attributes
    ----------
    name : str
        The name the code uses (``Solver.name``); ``aliases`` are accepted as well.
    mini_batch : bool
        True: an optimizer object steps on each mini-batch (``partial_fit`` works, the Spark
        estimators average local steps); False: the solver runs its own loop over the full
        objective, one evaluation (a Spark job) per call.
    learning_rate : float or None
        A customary step for the solver (the estimators' ``learning_rate_init`` defaults to
        scikit-learn's 0.001 for every solver); None for a solver without one.
    spark_step_size : float or None
        The Spark estimators' step when ``stepSize`` is not set; None: ``stepSize``'s default
        (Spark MLlib's 0.03).
    optimizer : type or None
        A mini-batch solver's :mod:`sparkann.optim` class.
    options : dict
        Estimator hyperparameter -> keyword of ``optimizer`` (what :func:`make_optimizer`
        passes on besides the learning rate and schedule).
    """

    name: str
    aliases: tuple = ()
    mini_batch: bool = False
    learning_rate: float = None
    spark_step_size: float = None
    optimizer: type = None
    options: dict = field(default_factory=dict)


SOLVERS = (
    Solver("lbfgs", aliases=("l-bfgs",)),
    Solver("gd", learning_rate=0.03),
    Solver("sgd", mini_batch=True, learning_rate=0.01, optimizer=optim.SGD,
           options={"momentum": "momentum", "nesterovs_momentum": "nesterov"}),
    # Spark's default stepSize (0.03) is meant for gd; Adam's customary rate is 0.001.
    Solver("adam", mini_batch=True, learning_rate=0.001, spark_step_size=0.001,
           optimizer=optim.Adam, options={"beta_1": "beta1", "beta_2": "beta2", "epsilon": "eps"}),
)

#: every accepted spelling
NAMES = tuple(n for s in SOLVERS for n in (s.name, *s.aliases))


def get_solver(name):
    """The :class:`Solver` called ``name`` (or one of its aliases); ValueError otherwise."""
    for solver in SOLVERS:
        if name == solver.name or name in solver.aliases:
            return solver
    raise ValueError(f"solver must be one of {NAMES}, received {name!r}")


def make_optimizer(name, lr, schedule=None, **hyperparameters):
    """A fresh optimizer of the mini-batch solver ``name``, stepping ``lr`` times
    ``schedule(t)``; of ``hyperparameters`` (estimator names: ``momentum``, ``beta_1``...)
    it takes those its row lists in ``options`` and ignores the others."""
    solver = get_solver(name)
    if not solver.mini_batch:
        raise ValueError(f"solver {name!r} runs its own loop: it has no step optimizer")
    kwargs = {arg: hyperparameters[key] for key, arg in solver.options.items()
              if key in hyperparameters}
    return solver.optimizer(lr=lr, schedule=schedule, **kwargs)
