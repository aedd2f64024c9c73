"""A fitted model reduced to what leaves the training system: its topology, its weights, its
number format and what its outputs are called.

ONNX export (:mod:`sparkann.onnx`), the MLflow flavor (:mod:`sparkann.mlflow`) and the
``predict_batch_udf`` function (:mod:`sparkann.serving`) all start from this description, so
they compute and name the same outputs. It needs neither pyspark nor scikit-learn.

Two families of models exist, with two naming conventions for their outputs:

- Spark models (``sparkann.spark``): the input is the features column, the outputs are named
  like MLlib's columns (``rawPrediction``, ``probability``, ``prediction``, as the model's
  Params set them; a Param set to ``""`` drops its output).
- single-machine estimators (``sparkann.MLPClassifier`` / ``MLPRegressor``): the input is
  ``X`` and the outputs are named as skl2onnx names scikit-learn's (``label`` and
  ``probabilities`` for a classifier, ``variable`` for a regressor).
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from sparkann.topology import Topology

CLASSIFIER, REGRESSOR = "classifier", "regressor"


@dataclass(frozen=True)
class Fitted:
    """What a fitted network computes, independent of where it was trained.

    Attributes
    ----------
    topology : Topology
    weights : ndarray (n_weights,) of ``dtype``
    dtype : "float32" or "float64"
    task : "classifier" or "regressor"
    style : "spark" or "sklearn" (which output names and shapes)
    input_name : str
    outputs : tuple of (role, name)
        Roles: ``"raw"`` (the last layer before the output function), ``"probability"``,
        ``"label"`` (class index, int64) and ``"value"`` (regression output).
    thresholds : ndarray or None
        A Spark classifier's ``thresholds`` (class probabilities are divided by them before
        the arg max; a zero threshold makes its class win).
    one_target : bool
        A regressor's output is 1-D (one target, Spark style) rather than (rows, targets).
    exp_output : bool
        A regressor's value is the exponential of the network's output (Poisson loss).
    """

    topology: Topology
    weights: np.ndarray
    dtype: str
    task: str
    style: str
    input_name: str
    outputs: tuple
    thresholds: Optional[np.ndarray] = None
    one_target: bool = False
    exp_output: bool = False

    @property
    def n_features(self):
        return self.topology.n_in

    @property
    def n_outputs(self):
        return self.topology.n_out

    def output_name(self, role):
        """The name given to ``role``'s output, or None when the model does not produce it."""
        return dict(self.outputs).get(role)

    def network(self, rows):
        """The engine for at most ``rows`` rows at a time."""
        return self.topology.network(dtype=self.dtype, block_size=max(1, int(rows)))

    def predict(self, X, net=None):
        """``{role: array}`` for the rows of ``X`` (n, n_features), computed by the engine.

        A Spark model's outputs are what its ``transform`` writes (float64, probabilities
        from the float64 softmax of the raw outputs); an estimator's are what its
        ``predict_proba`` / ``predict`` return (its own dtype), regression 2-D.
        """
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, received an array "
                             f"of shape {X.shape}")
        net = net or self.network(min(len(X), 1024))
        if self.task == REGRESSOR:
            out = net.forward(self.weights, X, raw=True)
            if self.exp_output:
                out = np.exp(out)
            if self.style == "spark":
                out = out.astype(np.float64)
                out = out[:, 0] if self.one_target else out
            return {"value": out}
        if self.style == "spark":
            raw = net.forward(self.weights, X, raw=True).astype(np.float64)
            return class_outputs(raw, self.thresholds)
        prob = net.forward(self.weights, X)
        return {"probability": prob, "label": prob.argmax(axis=1).astype(np.int64)}


def class_outputs(raw, thresholds=None):
    """A Spark classifier's ``{"raw", "probability", "label"}`` from its float64 raw outputs.

    The label is the arg max of the raw outputs, or, with ``thresholds``, of the probabilities
    divided by them (a zero threshold: that class wins), as MLlib's ``thresholds`` work.
    """
    z = raw - raw.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    if thresholds is None:
        label = raw.argmax(axis=1)
    else:
        positive = thresholds > 0
        with np.errstate(divide="ignore"):
            scaled = np.where(positive, prob / np.where(positive, thresholds, 1), np.inf)
        label = scaled.argmax(axis=1)
    return {"raw": raw, "probability": prob, "label": label.astype(np.int64)}


def describe(model, action="export"):
    """The :class:`Fitted` description of a fitted sparkann model.

    Raises
    ------
    TypeError
        ``model`` is not a sparkann classifier or regressor.
    ValueError
        It is not fitted (``sparkann.NotFittedError`` for the estimators).
    """
    module = type(model).__module__ or ""
    if module.startswith("sparkann.spark") and getattr(model, "_kind", None) in ("class",
                                                                                "regress"):
        return _describe_spark(model, action)
    from sparkann.estimator import MLPClassifier, MLPRegressor, NotFittedError
    if isinstance(model, (MLPClassifier, MLPRegressor)):
        if getattr(model, "weights_", None) is None or getattr(model, "topology_", None) is None:
            raise NotFittedError(f"cannot {action} this {type(model).__name__}: it is not "
                                 "fitted yet (call fit first)")
        dtype = str(np.dtype(model.weights_.dtype))
        weights = np.ascontiguousarray(model.weights_)
        if isinstance(model, MLPClassifier):
            _check_exportable_classes(model, action)
            return Fitted(model.topology_, weights, dtype, CLASSIFIER, "sklearn", "X",
                          (("probability", "probabilities"), ("label", "label")))
        return Fitted(model.topology_, weights, dtype, REGRESSOR, "sklearn", "X",
                      (("value", "variable"),),
                      exp_output=getattr(model, "out_activation_", "identity") == "exp")
    raise TypeError(f"cannot {action} a {type(model).__module__}.{type(model).__name__}: "
                    "expected a fitted sparkann.MLPClassifier, sparkann.MLPRegressor or a "
                    "model of sparkann.spark")


def _check_exportable_classes(model, action):
    """The exported label is the arg max of a softmax: refuse what it would get wrong."""
    if model.out_activation_ != "softmax":
        raise ValueError(f"cannot {action} this MLPClassifier: its output is logistic (two "
                         "classes, or multilabel targets); only softmax outputs are exported")
    if not np.array_equal(model.classes_, np.arange(model.n_outputs_)):
        raise ValueError(f"cannot {action} this MLPClassifier: its classes "
                         f"{model.classes_.tolist()[:5]} are not the class indices 0..k-1 that "
                         "the exported label gives")


def _describe_spark(model, action):
    name = type(model).__name__
    if getattr(model, "_weights", None) is None:
        raise ValueError(f"cannot {action} this {name}: it has no weights (fit an estimator, "
                         "or load a saved model)")
    model._check_weights()  # the weights match the layers
    dtype = model._predict_dtype()   # a bfloat16-trained model predicts in float32
    weights = np.ascontiguousarray(model._weights, dtype=dtype)
    if model._kind == "regress":
        outputs = ((("value", model.getPredictionCol()),) if model.getPredictionCol() else ())
        fitted = Fitted(model.topology, weights, dtype, REGRESSOR, "spark",
                        model.getFeaturesCol(), outputs,
                        one_target=model.numTargets == 1)
    else:
        outputs = tuple((role, col) for role, col in (
            ("raw", model.getRawPredictionCol()), ("probability", model.getProbabilityCol()),
            ("label", model.getPredictionCol())) if col)
        thresholds = model._checked_thresholds()  # as transform refuses them
        fitted = Fitted(model.topology, weights, dtype, CLASSIFIER, "spark",
                        model.getFeaturesCol(), outputs, thresholds=thresholds)
    if not fitted.outputs:
        raise ValueError(f"cannot {action} this {name}: all its output columns are set to "
                         "''; set predictionCol")
    return fitted


__all__ = ["Fitted", "describe", "class_outputs", "CLASSIFIER", "REGRESSOR"]
