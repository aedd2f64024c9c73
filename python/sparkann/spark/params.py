"""Params of the Spark estimators: Spark MLlib's MLPC Params (same names, defaults, meaning)
plus sparkann's extras."""
import inspect
import math
import os
import zlib

import numpy as np
from pyspark import keyword_only
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (HasBlockSize, HasFeaturesCol, HasLabelCol, HasMaxIter,
                                     HasPredictionCol, HasProbabilityCol, HasRawPredictionCol,
                                     HasSeed, HasSolver, HasStepSize, HasThresholds, HasTol,
                                     HasWeightCol)

from sparkann import hyperparams
from sparkann.hyperparams import DTYPES  # noqa: F401  (the names the model loader accepts)
from sparkann.solvers import get_solver
from sparkann.layers import activation_list
from sparkann.spark.checkpointing import HasCheckpoint


def add_getters(cls):
    """Give ``cls`` a ``getX()`` (the value or its default) for each of its Params ``x`` that
    has no getter yet."""
    return _add_accessors(cls, "get", _getter)


def add_setters(cls):
    """Give ``cls`` a ``setX(value)`` for each of its Params ``x`` that has no setter yet, so
    the setters follow the Params."""
    return _add_accessors(cls, "set", _setter)


def set_params_like(init):
    """A ``setParams`` that takes the keywords of ``init`` (an estimator's ``__init__``):
    pyspark's pattern without writing the keyword list twice."""
    signature = inspect.signature(init)

    @keyword_only
    def setParams(self, **kwargs):
        """Sets Params (keyword arguments only)."""
        signature.bind(self, **kwargs)      # an unknown keyword is a TypeError
        return self._set(**kwargs)

    setParams.__signature__ = signature
    return setParams


def _add_accessors(cls, prefix, make):
    for name in dir(cls):
        if isinstance(getattr(cls, name, None), Param):
            method = prefix + name[0].upper() + name[1:]
            if not hasattr(cls, method):
                setattr(cls, method, make(name, method))
    return cls


def _getter(name, method):
    def getter(self):
        return self.getOrDefault(name)
    getter.__name__ = method
    getter.__doc__ = f"Gets the value of :py:attr:`{name}` or its default value."
    return getter


def _setter(name, method):
    def setter(self, value):
        return self._set(**{name: value})
    setter.__name__ = method
    setter.__doc__ = f"Sets the value of :py:attr:`{name}`."
    return setter


def _to_rates(value):
    """The ``dropout`` Param's converter: one rate, or a list of them."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [TypeConverters.toFloat(v) for v in value]
    return TypeConverters.toFloat(value)


#: the stepSizeSchedule Param's values
STEP_SIZE_SCHEDULES = ("constant", "cosine")


def _param(name, doc, converter):
    """A Param declared on a Params class (pyspark's pattern: a placeholder parent, replaced
    by each instance's own copy)."""
    return Param(Params._dummy(), name, doc, typeConverter=converter)


@add_getters
class _NetworkParams(HasFeaturesCol, HasLabelCol, HasPredictionCol, HasSeed, HasMaxIter, HasTol,
                     HasStepSize, HasSolver, HasBlockSize, HasCheckpoint, HasWeightCol):
    """Params shared by the classifier, the regressor and their models."""

    layers = _param("layers", "Sizes of layers from input layer to output layer E.g., Array(780, "
                    "100, 10) means 780 inputs, one hidden layer with 100 neurons and output "
                    "layer of 10 neurons.", TypeConverters.toListInt)
    solver = _param("solver", "The solver algorithm for optimization. Supported options: l-bfgs "
                    "(also lbfgs), gd (Spark's), adam, sgd (mini-batch, local steps averaged "
                    "across partitions).", TypeConverters.toString)
    initialWeights = _param("initialWeights", "The initial weights of the model.",
                            TypeConverters.toVector)
    # ---- extras (not in Spark MLlib)
    activation = _param("activation", f"Activation of the hidden layers: {activation_list()} "
                        "(Spark's: sigmoid), or a registered name.",
                        TypeConverters.toString)
    regParam = _param("regParam", "L2 penalty regParam/2 * ||W||^2 over the weight matrices "
                      "(not biases).", TypeConverters.toFloat)
    dtype = _param("dtype", "Floating point type of the computation: float32, float64 or "
                   "bfloat16 (float32 with bfloat16 GEMM operands where the CPU has native "
                   "bfloat16; else float32).", TypeConverters.toString)
    initScheme = _param("initScheme", "Weight initialisation when initialWeights is not set: "
                        "spark, glorot, he.", TypeConverters.toString)
    syncSteps = _param("syncSteps", "adam/sgd: local mini-batch steps per partition between two "
                       "weight averagings (one maxIter round); 0 means one pass over the local "
                       "data.", TypeConverters.toInt)
    stepSizeSchedule = _param("stepSizeSchedule", "adam/sgd: the step size over the rounds: "
                              "constant, or cosine (stepSize * (1 + cos(pi * round / maxIter)) "
                              "/ 2 in round 0, 1, ..., decaying to 0).",
                              TypeConverters.toString)
    momentum = _param("momentum", "sgd: momentum in [0, 1).", TypeConverters.toFloat)
    validationIndicatorCol = _param("validationIndicatorCol", "Name of a boolean column: true "
                                    "rows are held out and monitored for early stopping.",
                                    TypeConverters.toString)
    earlyStoppingPatience = _param("earlyStoppingPatience", "Stop after this many iterations "
                                   "without the validation loss improving by more than tol "
                                   "(relative); the best weights are kept.", TypeConverters.toInt)
    dropout = _param("dropout", "Inverted dropout in training (adam and sgd only; transform "
                     "never drops): one rate in [0, 1) after every hidden layer, or a list of "
                     "len(layers) - 1 rates: the input's, then each hidden layer's. 0 adds "
                     "nothing.", _to_rates)

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(maxIter=100, tol=1e-6, blockSize=128, stepSize=0.03, solver="l-bfgs",
                         activation="sigmoid", regParam=0.0, dtype="float32", initScheme="spark",
                         syncSteps=0, momentum=0.9, earlyStoppingPatience=10, dropout=0.0,
                         stepSizeSchedule="constant")
        # pyspark's default seed is hash(class name), which changes with every Python process;
        # a stable default keeps results reproducible.
        self._setDefault(seed=zlib.crc32(type(self).__name__.encode()))

    def _validate_params(self):
        """Check the Params on the driver before any Spark job; raise ValueError naming them."""
        if not self.isDefined(self.layers):
            raise ValueError("layers must be set, e.g. layers=[784, 128, 10]")
        layers = self.getLayers()
        if len(layers) < 2 or any(n < 1 for n in layers):
            raise ValueError(f"layers must hold at least two positive sizes, received {layers}")
        hyperparams.check({rule.param: self.getOrDefault(rule.param)
                           for rule in hyperparams.RULES if rule.param is not None}, "param")
        if self.getStepSizeSchedule() not in STEP_SIZE_SCHEDULES:
            raise ValueError(f"stepSizeSchedule must be one of {STEP_SIZE_SCHEDULES}, received "
                             f"{self.getStepSizeSchedule()!r}")
        if any(self.dropoutRates()):
            hyperparams.check_dropout_solver(self.getSolver())
        step, solver = self.getStepSize(), get_solver(self.getSolver())
        if not math.isfinite(step) and solver.learning_rate is not None:
            # MLlib takes +inf; l-bfgs ignores stepSize, the other solvers would step to
            # non-finite weights: refused before any job.
            raise ValueError(f"stepSize must be finite for solver {self.getSolver()!r}, "
                             f"which steps by it, received {step!r}")
        directory = self.getCheckpointDir()
        if directory and os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(f"checkpointDir {directory!r} is a file, not a directory")

    def weightColumn(self):
        """The ``weightCol`` Param's column, or None when it is unset or empty (every row
        weighs 1, as in MLlib)."""
        return (self.getWeightCol() or None) if self.isDefined(self.weightCol) else None

    def dropoutRates(self):
        """The ``dropout`` Param as the rates of the input and of each hidden layer."""
        return hyperparams.dropout_rates(self.getOrDefault(self.dropout),
                                         len(self.getLayers()) - 2)


class _ClassifierParams(_NetworkParams, HasProbabilityCol, HasRawPredictionCol, HasThresholds):
    """The classifier's Params: as Spark MLlib's MultilayerPerceptronClassifier, plus extras."""

    def _validate_params(self):
        super()._validate_params()
        self._checked_thresholds()

    def _checked_thresholds(self):
        """``thresholds`` as an array (None when unset), refused as MLlib refuses it: one
        value per class, none negative or NaN, at most one zero (+inf is allowed, as in MLlib:
        that class is never predicted unless every other class has probability 0)."""
        if not self.isDefined(self.thresholds):
            return None
        t = np.asarray(self.getThresholds(), dtype=np.float64)
        k = self.getLayers()[-1]
        if t.shape != (k,):
            raise ValueError(f"thresholds has {t.size} values, expected {k} (numClasses)")
        if not (t >= 0).all() or (t == 0).sum() > 1:   # NaN fails t >= 0
            raise ValueError(f"thresholds must be non-negative numbers (not NaN) with at most "
                             f"one zero, received {t.tolist()}")
        return t


class _RegressorParams(_NetworkParams):
    """The regressor's Params (Spark has no MLP regressor; same conventions)."""

