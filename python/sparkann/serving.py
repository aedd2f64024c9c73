"""Predictions outside the model object: the ``make_predict_fn`` of Spark's
``pyspark.ml.functions.predict_batch_udf`` and the batch predictor of the MLflow flavor.

Both hold a :class:`~sparkann.fitted.Fitted` description (topology and weights, no engine) that
pickles small, and build the native engine where they run, once: ``predict_batch_udf`` calls
``make_predict_fn`` once per Python worker and keeps what it returns for every later batch.
"""
import sys

import numpy as np

from sparkann.fitted import describe


def _cap_blas_to_task():
    """Inside a Spark task, BLAS gets the task's CPUs (``spark.task.cpus``), not the machine's."""
    pyspark = sys.modules.get("pyspark")  # a Spark task's Python worker has imported it
    if pyspark is None:
        return
    context = pyspark.TaskContext.get()
    if context is not None:
        from ann_core import set_blas_threads
        set_blas_threads(max(1, int(context.cpus())))


class Predictor:
    """Outputs of a fitted model for batches of rows, computed by one engine.

    Parameters
    ----------
    fitted : sparkann.fitted.Fitted
    output : str or None
        The name of one output (``"prediction"``, ``"probability"``, ... as the model names
        them): batches return that array. None: batches return ``{name: array}`` of all.
    """

    def __init__(self, fitted, output=None):
        names = [name for _, name in fitted.outputs]
        if output is not None and output not in names:
            raise ValueError(f"output {output!r} is not one of the model's outputs {names}")
        self.fitted, self.output = fitted, output
        self._net = None

    def __getstate__(self):
        return {"fitted": self.fitted, "output": self.output, "_net": None}

    def predict(self, X):
        """Outputs for the rows of ``X`` (rows, features): an array, or a dict of arrays."""
        X = np.asarray(X)
        if X.ndim == 1 and X.dtype == object:  # a column of per-row arrays
            X = np.stack(X) if len(X) else np.empty((0, self.fitted.n_features))
        if X.ndim != 2 or X.shape[1] != self.fitted.n_features:
            raise ValueError(f"expected rows of {self.fitted.n_features} features, received "
                             f"shape {X.shape}")
        if len(X) == 0:
            return self._empty()
        if self._net is None or self._net.block_size < min(len(X), 1024):
            self._net = self.fitted.network(min(len(X), 1024))
        by_role = self.fitted.predict(X, self._net)
        if self.fitted.style == "spark" and "label" in by_role:
            by_role["label"] = by_role["label"].astype(np.float64)  # Spark's prediction: double
        out = {name: by_role[role] for role, name in self.fitted.outputs}
        return out if self.output is None else out[self.output]

    def _empty(self):
        by_role = self.fitted.predict(np.zeros((1, self.fitted.n_features)))
        out = {name: by_role[role][:0] for role, name in self.fitted.outputs}
        return out if self.output is None else out[self.output]

    __call__ = predict


class MakePredictFn:
    """``make_predict_fn`` for ``pyspark.ml.functions.predict_batch_udf``: called once per
    Python worker, it caps BLAS to the task and returns a :class:`Predictor`."""

    def __init__(self, fitted, output=None):
        Predictor(fitted, output)  # the output name is checked on the driver
        self.fitted, self.output = fitted, output

    def __call__(self):
        _cap_blas_to_task()
        return Predictor(self.fitted, self.output)


def predict_fn(model, output=None):
    """The ``make_predict_fn`` of a fitted sparkann model for ``predict_batch_udf``.

    ::

        from pyspark.ml.functions import predict_batch_udf, vector_to_array
        udf = predict_batch_udf(predict_fn(model, "prediction"), return_type=DoubleType(),
                                batch_size=1024, input_tensor_shapes=[[model.numFeatures]])
        df.withColumn("prediction", udf(vector_to_array("features")))

    (``model.predict_batch_udf()`` of the Spark models builds exactly this, with the return
    type filled in.) ``output`` names one output (see :mod:`sparkann.fitted`); None returns
    them all, for a ``StructType`` return type.
    """
    return MakePredictFn(describe(model, "serve"), output)


__all__ = ["predict_fn", "Predictor", "MakePredictFn"]
