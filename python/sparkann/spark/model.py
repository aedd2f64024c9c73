"""Fitted Spark models and their summaries; they save and load through
:mod:`sparkann.spark.persistence` (Spark ML's layout, no pickle)."""
import numpy as np
from pyspark.ml import Model
from pyspark.ml.linalg import DenseVector, VectorUDT
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkann.fitted import class_outputs
from sparkann.hyperparams import array_dtype
from sparkann.spark.data import (_check_finite, _labels, _list_to_dense, _vectors_to_dense,
                                 check_schema, check_weight_column, row_weights, run_checked)
from sparkann.spark.model_files import SparkModelFileError
from sparkann.spark.params import DTYPES, _ClassifierParams, _RegressorParams, add_setters
from sparkann.spark.persistence import PersistMixin
from sparkann.spark.session import classic_context
from sparkann.spark.shipping import ship_to_executors


def _quoted(name):
    """A column name as Spark SQL reads it literally (dots, spaces, backticks)."""
    return "`" + name.replace("`", "``") + "`"


def build_topology(layers, activation, loss, dropout=None):
    """The network the Params describe (Spark's sizes shorthand); ``dropout``: the rates of
    the input and each hidden layer (``dropoutRates()``), None for none."""
    from sparkann.topology import Topology
    return Topology.from_sizes(list(layers), activation=activation, loss=loss, dropout=dropout)


# ------------------------------------------------------------------------ prediction (executor)

def dense_features(batches, features_col, n_features, dtype):
    """Executor side: ``(batch, X)`` per Arrow batch, X checked as ``fit`` checks it (size,
    nulls, finite values); rows are numbered within the partition in error messages."""
    import pyarrow as pa
    from pyspark import TaskContext
    what = f"features column {features_col!r} (partition {TaskContext.get().partitionId()})"
    row0 = 0
    for batch in batches:
        col = batch.column(batch.schema.get_field_index(features_col))
        if pa.types.is_struct(col.type):
            X = _vectors_to_dense(col, n_features, dtype, what, row0)
        else:
            X = _list_to_dense(col, n_features, dtype, what, row0)
        _check_finite(X, what, row0)
        row0 += batch.num_rows
        yield batch, X


def _check_features(batches, features_col, n_features, dtype):
    """Executor side: check every row's features; yield nothing."""
    for _ in dense_features(batches, features_col, n_features, dtype):
        pass
    return iter(())


def vector_column(values):
    """Arrow column of Spark ML dense vectors (VectorUDT's struct) over the rows of a (rows, k)
    array: one contiguous buffer of values and an offsets array, no per-row objects."""
    import pyarrow as pa
    n, k = values.shape
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float64).reshape(-1))
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    return pa.StructArray.from_arrays(
        [pa.array(np.ones(n, np.int8)), pa.nulls(n, pa.int32()), pa.nulls(n, pa.list_(pa.int32())),
         pa.ListArray.from_arrays(offsets, flat)], names=["type", "size", "indices", "values"])


def _predict_arrays(arrays, *, weights, topology, dtype, features_col, n_features,
                    block_size, kind, thresholds, out_names):
    """Executor side: for each Arrow array of one partition's features, the struct of the
    prediction columns (vectors, doubles), one field a name in ``out_names``."""
    import pyarrow as pa
    from sparkann.spark.gradient import task_network
    batches = (pa.RecordBatch.from_arrays([a], names=[features_col]) for a in arrays)
    net = None
    for _, X in dense_features(batches, features_col, n_features, dtype):
        # The workspace holds min(blockSize, rows of the largest batch so far) rows.
        if net is None or (net.block_size < min(block_size, len(X))):
            net = task_network(topology, dtype, min(block_size, max(len(X), 1)), 1)
        out = net.forward(weights, np.ascontiguousarray(X), raw=True).astype(np.float64)
        if kind == "class":
            by_role = class_outputs(out, thresholds)
            columns = {"raw": out, "prob": by_role["probability"],
                       "pred": by_role["label"].astype(np.float64)}
        else:
            columns = {"pred": out[:, 0].copy() if out.shape[1] == 1 else out}
        values = [columns[key] for key, _ in out_names]
        yield pa.StructArray.from_arrays(
            [vector_column(v) if v.ndim == 2 else pa.array(v) for v in values],
            names=[name for _, name in out_names])


def features_clean(dataset, features_col, n_features, dtype):
    """One pass that stays in the JVM: True when no row of the features column can fail the
    executors' check (null, wrong size, a null, NaN, infinite or, for ``dtype``, too large a
    value). Only then may the check's own pass, which moves every value through Arrow to
    Python, be left out; when it says False that pass runs to name the first bad row."""
    from pyspark.ml.functions import vector_to_array
    col = F.col(_quoted(features_col))
    values = (vector_to_array(col) if isinstance(dataset.schema[features_col].dataType,
                                                 VectorUDT) else col)
    largest = float(np.finfo(dtype).max)

    def bad_value(x):
        x = x.cast("double")
        return x.isNull() | F.isnan(x) | (F.abs(x) > largest)

    bad = col.isNull() | (F.size(values) != n_features) | F.exists(values, bad_value)
    count = run_checked(dataset.select(F.sum(bad.cast("long"))))[0][0]
    return not count


def _confusion_counts(batches, label_col, k, weight_col=None):
    """Executor side: the partition's ``k * k`` confusion counts (label-major), as one row;
    with ``weight_col`` (the batches' third column) the rows' weights summed instead."""
    import pyarrow as pa
    from pyspark import TaskContext
    part = TaskContext.get().partitionId()
    what = f"label column {label_col!r} (partition {part})"
    wwhat = f"weight column {weight_col!r} (partition {part})"
    counts = np.zeros(k * k, np.int64 if weight_col is None else np.float64)
    row0 = 0
    for batch in batches:
        labels = _labels(batch.column(0), np.float64, "class", k, what, row0)
        predicted = batch.column(1).to_numpy(zero_copy_only=False).astype(np.int64)
        weights = (None if weight_col is None
                   else row_weights(batch.column(2), np.float64, wwhat, row0))
        counts += np.bincount(labels * k + predicted, weights, minlength=k * k).astype(
            counts.dtype)
        row0 += batch.num_rows
    kind = pa.int64() if weight_col is None else pa.float64()
    yield pa.RecordBatch.from_arrays([pa.array([counts.tolist()], pa.list_(kind))],
                                     names=["counts"])


class _NetworkModel(Model, PersistMixin):
    """Shared parts of the fitted classifier and regressor."""

    _loss = None
    _kind = None
    _saves_weights = True
    _outputs_name = None   # what the output units count, in repr(model)

    def __init__(self, weights=None, history=None):
        super().__init__()
        self._weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.history = list(history or [])
        self._summary = None
        self._topology = None

    def __repr__(self):
        # Spark MLlib's model string (its Scala toString), e.g.
        # "MultilayerPerceptronClassificationModel: uid=..., numLayers=3, numClasses=2, ..."
        if not self.isDefined(self.layers):
            return f"{type(self).__name__}: uid={self.uid}"
        layers = self.getLayers()
        return (f"{type(self).__name__}: uid={self.uid}, numLayers={len(layers)}, "
                f"{self._outputs_name}={layers[-1]}, numFeatures={layers[0]}")

    # --- attributes
    @property
    def weights(self):
        """The weights as a DenseVector, in Spark MLlib's order."""
        return DenseVector(self._weights)

    @property
    def numFeatures(self):
        return self.getLayers()[0]

    def _output_width(self):
        return self.getLayers()[-1]

    @property
    def topology(self):
        """The ``sparkann.topology.Topology`` of the network."""
        if self._topology is None:
            self._topology = build_topology(self.getLayers(), self.getActivation(), self._loss,
                                            self.dropoutRates())
        return self._topology

    def _check_weights(self):
        n = self.topology.n_weights
        if self._weights is None or self._weights.shape != (n,):
            got = None if self._weights is None else self._weights.shape
            raise ValueError(f"the model needs {n} weights for layers {self.getLayers()}, "
                             f"received {got}")

    def _check_loaded(self, path):
        """The Params that predictions use can work: refused at load, not at transform."""
        try:
            layers = self.getLayers()
            if len(layers) < 2 or min(layers) < 1:
                raise ValueError(f"layers must hold at least two positive sizes, received "
                                 f"{layers}")
            if self.getDtype() not in DTYPES:
                raise ValueError(f"dtype must be one of {DTYPES}, received {self.getDtype()!r}")
            if self.getBlockSize() < 1:  # a large one is fine: blocks never exceed the rows
                raise ValueError(f"blockSize must be >= 1, received {self.getBlockSize()}")
            self._check_weights()  # builds the topology: sizes, activation, memory
            if self._kind == "class" and self.isDefined(self.thresholds):
                thresholds = self.getThresholds()
                if len(thresholds) != self.numClasses or min(thresholds) < 0:
                    raise ValueError(f"thresholds {thresholds} must be {self.numClasses} values "
                                     ">= 0 (one per class)")
        except (KeyError, ValueError, TypeError, MemoryError) as e:
            raise SparkModelFileError(f"{path}/metadata: {e}") from None

    def _engine(self, rows):
        # A workspace for the rows given, not for a blockSize larger than them.
        block_size = max(1, min(self.getBlockSize(), rows))
        return self.topology.network(dtype=self._predict_dtype(), block_size=block_size)

    def _predict_dtype(self):
        # A model trained in bfloat16 predicts in float32: the weights are float32, and the
        # rounding that makes training faster only loses accuracy in a prediction.
        return array_dtype(self.getDtype())

    def _forward_raw(self, X):
        X = np.ascontiguousarray(np.atleast_2d(np.asarray(X, dtype=self._predict_dtype())))
        net = self._engine(X.shape[0])
        return net.forward(self._weights.astype(self._predict_dtype()), X,
                           raw=True).astype(np.float64)

    # --- transform
    def _output_columns(self):
        raise NotImplementedError

    def _transform(self, dataset):
        features_col = self.getFeaturesCol()
        if features_col not in dataset.columns:
            raise ValueError(f"features column {features_col!r} is not in the DataFrame; its "
                             f"columns are {dataset.columns}")
        check_schema(dataset.withColumn("__label", F.lit(0.0)), features_col, "__label")
        outs = self._output_columns()           # [(key, column name, spark type, as vector)]
        for _, name, _, _ in outs:
            if name in dataset.columns:
                raise ValueError(f"output column {name!r} already exists in the DataFrame")
        # when run from a --py-files wheel (classic sessions only)
        ship_to_executors(classic_context(dataset.sparkSession))
        # The weights travel in the task's function: what a Spark Connect session allows, and
        # in a classic one PySpark broadcasts a function over 1 MiB by itself. Measured here
        # (classic local[2], 4,000 rows, float32, median of 5; bench/bench_connect_paths.py):
        # [784,256,128,10] 0.54 s against 0.58 s with sc.broadcast, the largest benchmark
        # network [784,2500,2000,1500,1000,500,10] 1.04 s against 1.22 s.
        weights = self._weights.astype(self._predict_dtype())
        topology, dtype, n_features = self.topology, self._predict_dtype(), self.numFeatures
        block_size, kind = self.getBlockSize(), self._kind
        thresholds = self._checked_thresholds() if kind == "class" else None
        out_names = [(key, name) for key, name, _, _ in outs]

        # pyarrow only now: a driver that never transforms (e.g. a packed environment
        # shipping the package) need not have it. The hints tell Spark the UDF's kind.
        from typing import Iterator

        import pyarrow as pa

        def predict(arrays: Iterator[pa.Array]) -> Iterator[pa.Array]:
            return _predict_arrays(arrays, weights=weights, topology=topology, dtype=dtype,
                                   features_col=features_col, n_features=n_features,
                                   block_size=block_size, kind=kind, thresholds=thresholds,
                                   out_names=out_names)

        if not dataset.isStreaming and not getattr(self, "_checked_input", False) \
                and not features_clean(dataset, features_col, n_features, dtype):
            # Bad rows raise a ValueError here, naming column and row, rather than a
            # PythonException from inside the user's action.
            def check(batches):
                return _check_features(batches, features_col, n_features, dtype)

            run_checked(dataset.select(F.col(_quoted(features_col))).mapInArrow(check, "ok int"))
        struct = T.StructType([T.StructField(name, VectorUDT() if as_vector else stype)
                               for _, name, stype, as_vector in outs])
        # A scalar Arrow UDF sends only the features to Python and only the predictions
        # back; the other columns stay in the JVM. Spark evaluates it once per row.
        result = F.arrow_udf(predict, struct)(F.col(_quoted(features_col)))
        return dataset.select(*[F.col(_quoted(c)) for c in dataset.columns],
                              *[result[name].alias(name) for _, name in out_names])

    # --- serving outside transform
    def predict_fn(self, output=None):
        """The ``make_predict_fn`` of this model for ``pyspark.ml.functions.predict_batch_udf``
        (one output column's name, or None for all of them): the engine is built once per
        Python worker. :meth:`predict_batch_udf` builds the UDF with its return type."""
        from sparkann.serving import predict_fn
        return predict_fn(self, output)

    def predict_batch_udf(self, output=None, batch_size=1024):
        """A ``predict_batch_udf`` of this model over one column of feature arrays::

            df.withColumn("prediction", model.predict_batch_udf("prediction")(
                vector_to_array("features")))

        ``output``: an output column's name (``"prediction"``, ``"probability"``, ...), or
        None for a struct of all of them."""
        from sparkann.spark.batch_udf import batch_udf
        return batch_udf(self, output, batch_size)

    def _vector(self, value):
        if hasattr(value, "toArray"):
            value = value.toArray()
        x = np.asarray(value, dtype=np.float64)
        if x.shape != (self.numFeatures,):
            raise ValueError(f"expected a vector of {self.numFeatures} features, received "
                             f"shape {x.shape}")
        return x

    @property
    def summary(self):
        """Training summary (objectiveHistory and metrics on the training data).

        Both ``model.summary`` and ``model.summary()`` (pyspark 4's MLPC spelling) work.
        """
        if self._summary is None:
            raise RuntimeError("No training summary available for this model")
        return self._summary

    @property
    def hasSummary(self):
        return self._summary is not None

    def copy(self, extra=None):
        that = super().copy(extra)
        that._weights = None if self._weights is None else self._weights.copy()
        return that


# ------------------------------------------------------------------------ classification

@add_setters
class MultilayerPerceptronClassificationModel(_NetworkModel, _ClassifierParams):
    """A fitted :class:`~sparkann.spark.MultilayerPerceptronClassifier` (Spark MLlib's model
    API: ``weights``, ``layers``, ``numFeatures``, ``numClasses``, ``predict``,
    ``predictRaw``, ``predictProbability``, ``transform``, ``summary``, ``evaluate``)."""

    _loss = "softmax_cross_entropy"
    _kind = "class"
    _outputs_name = "numClasses"
    numClasses = property(_NetworkModel._output_width, doc="Number of classes (output units).")

    def predictRaw(self, value):
        """Output layer values before the softmax, for one feature vector."""
        return DenseVector(self._forward_raw(self._vector(value))[0])

    def _one_row_outputs(self, value):
        thresholds = (np.asarray(self.getThresholds(), dtype=np.float64)
                      if self.isDefined(self.thresholds) else None)
        raw = np.asarray(self._forward_raw(self._vector(value)), dtype=np.float64)
        return class_outputs(raw, thresholds)

    def predictProbability(self, value):
        """Class probabilities for one feature vector."""
        return DenseVector(self._one_row_outputs(value)["probability"][0])

    def predict(self, value):
        """Predicted class index (as a float, like Spark) for one feature vector."""
        return float(self._one_row_outputs(value)["label"][0])

    def _output_columns(self):
        vec = T.ArrayType(T.DoubleType())
        outs = [("raw", self.getRawPredictionCol(), vec, True),
                ("prob", self.getProbabilityCol(), vec, True),
                ("pred", self.getPredictionCol(), T.DoubleType(), False)]
        return [o for o in outs if o[1]]

    def evaluate(self, dataset):
        """Metrics of the model on ``dataset`` (a :class:`ClassificationSummary`), weighted
        by ``weightCol`` when it is set."""
        return ClassificationSummary(self._evaluated(dataset), self.getLabelCol(),
                                     self.getPredictionCol(), self.numClasses,
                                     weight_col=self.weightColumn())

    def _evaluated(self, dataset):
        check_schema(dataset, self.getFeaturesCol(), self.getLabelCol(),
                     weight_col=self.weightColumn())
        model = self
        if not self.getPredictionCol():
            model = self.copy({self.predictionCol: "prediction"})
        return model.transform(dataset)


class _Summary:
    """What every summary holds: the predictions, their columns and the objective history."""

    def __init__(self, predictions, label_col, prediction_col, objective_history=None,
                 weight_col=None):
        self.predictions = predictions
        self.labelCol = label_col
        self.predictionCol = prediction_col
        self.weightCol = weight_col    # None: every row weighs 1
        self.objectiveHistory = list(objective_history or [])
        self.totalIterations = len(self.objectiveHistory)

    def __call__(self):
        # pyspark 4 spells the MLPC training summary as a method: model.summary()
        return self


class ClassificationSummary(_Summary):
    """Accuracy and per-label metrics of a classification model on a DataFrame.

    Computed from the confusion matrix (one small aggregation job, on first use); with
    ``weight_col`` the matrix sums the rows' weights, so every metric is weighted.
    """

    def __init__(self, predictions, label_col, prediction_col, num_classes,
                 objective_history=None, weight_col=None):
        super().__init__(predictions, label_col, prediction_col, objective_history,
                         weight_col)
        self.num_classes = num_classes
        self._confusion = None

    @property
    def confusionMatrix(self):
        """``[true label, predicted label]`` counts (numClasses x numClasses ndarray), or
        weight sums (float64) with a weight column.

        Labels (and weights) are checked as ``fit`` checks them (a null, NaN, fractional or
        out-of-range label, a null, negative or non-finite weight raises a ValueError naming
        the column and the row), so the counts always add up to the rows evaluated.
        """
        if self._confusion is None:
            k, label_col, weight_col = self.num_classes, self.labelCol, self.weightCol
            dtype = np.int64 if weight_col is None else np.float64

            def count(batches):
                return _confusion_counts(batches, label_col, k, weight_col)

            columns = [F.col(self.labelCol).cast("double"),
                       F.col(self.predictionCol).cast("double")]
            if weight_col is not None:
                columns.append(F.col(weight_col).cast("double"))
            kind = "long" if weight_col is None else "double"
            m = np.zeros(k * k, dtype)
            for row in run_checked(self.predictions.select(*columns).mapInArrow(
                    count, f"counts array<{kind}>")):
                m += np.asarray(row.counts, dtype)
            self._confusion = m.reshape(k, k)
        return self._confusion

    @property
    def labels(self):
        return [float(i) for i in range(self.confusionMatrix.shape[0])]

    @property
    def accuracy(self):
        m = self.confusionMatrix
        return float(np.trace(m) / max(m.sum(), 1))

    def _per_label(self):
        m = self.confusionMatrix.astype(np.float64)
        tp = np.diag(m)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.nan_to_num(tp / m.sum(axis=0))
            recall = np.nan_to_num(tp / m.sum(axis=1))
        support = m.sum(axis=1) / max(m.sum(), 1)
        return precision, recall, support

    @property
    def precisionByLabel(self):
        return self._per_label()[0].tolist()

    @property
    def recallByLabel(self):
        return self._per_label()[1].tolist()

    @property
    def truePositiveRateByLabel(self):
        return self.recallByLabel

    def fMeasureByLabel(self, beta=1.0):
        p, r, _ = self._per_label()
        b2 = beta * beta
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num((1 + b2) * p * r / (b2 * p + r)).tolist()

    @property
    def weightedPrecision(self):
        p, _, s = self._per_label()
        return float(p @ s)

    @property
    def weightedRecall(self):
        _, r, s = self._per_label()
        return float(r @ s)

    def weightedFMeasure(self, beta=1.0):
        return float(np.asarray(self.fMeasureByLabel(beta)) @ self._per_label()[2])


# ------------------------------------------------------------------------ regression

@add_setters
class MultilayerPerceptronRegressionModel(_NetworkModel, _RegressorParams):
    """A fitted :class:`~sparkann.spark.MultilayerPerceptronRegressor`."""

    _loss = "squared_error"
    _kind = "regress"
    _outputs_name = "numTargets"
    numTargets = property(_NetworkModel._output_width, doc="Number of targets (output units).")

    def predict(self, value):
        """Prediction for one feature vector: a float (one target) or a DenseVector."""
        out = self._forward_raw(self._vector(value))[0]
        return float(out[0]) if out.size == 1 else DenseVector(out)

    def _output_columns(self):
        if self.numTargets == 1:
            return [("pred", self.getPredictionCol(), T.DoubleType(), False)]
        return [("pred", self.getPredictionCol(), T.ArrayType(T.DoubleType()), True)]

    def evaluate(self, dataset):
        """Metrics of the model on ``dataset`` (a :class:`RegressionSummary`), weighted by
        ``weightCol`` when it is set."""
        weight_col = self.weightColumn()
        check_schema(dataset, self.getFeaturesCol(), self.getLabelCol(), targets=True,
                     weight_col=weight_col)
        if weight_col is not None and not getattr(self, "_checked_input", False):
            check_weight_column(dataset, weight_col)
        return RegressionSummary(self.transform(dataset), self.getLabelCol(),
                                 self.getPredictionCol(), self.numTargets,
                                 weight_col=weight_col)


class RegressionSummary(_Summary):
    """Mean squared / absolute error, RMSE and R^2 (averaged over targets) on a DataFrame;
    with ``weight_col``, weighted means (and R^2 about the weighted mean), as MLlib's."""

    def __init__(self, predictions, label_col, prediction_col, num_targets,
                 objective_history=None, weight_col=None):
        super().__init__(predictions, label_col, prediction_col, objective_history,
                         weight_col)
        self.num_targets = num_targets
        self._stats = None

    def _compute(self):
        if self._stats is None:
            from pyspark.ml.functions import vector_to_array
            df = self.predictions
            k = self.num_targets

            def columns(name):
                dtype = df.schema[name].dataType
                if isinstance(dtype, T.NumericType):
                    return [F.col(name).cast("double")]
                arr = vector_to_array(name) if not isinstance(dtype, T.ArrayType) else F.col(name)
                return [arr[i].cast("double") for i in range(k)]

            ys, ps = columns(self.labelCol), columns(self.predictionCol)
            if self.weightCol is None:
                total, weighed = F.count(F.lit(1)), (lambda x: x)
            else:   # each row's terms times its weight; n is the weight sum
                w = F.col(self.weightCol).cast("double")
                total, weighed = F.sum(w), (lambda x: w * x)
            aggs = []
            for y, p in zip(ys, ps):
                aggs += [F.sum(weighed((y - p) ** 2)), F.sum(weighed(F.abs(y - p))),
                         F.sum(weighed(y)), F.sum(weighed(y * y))]
            row = run_checked(df.agg(total, *aggs))[0]
            n = row[0] or 0
            v = np.array(row[1:], dtype=np.float64).reshape(k, 4)
            sse, sae, sy, syy = v.T
            d = n if n > 0 else 1
            sst = syy - sy * sy / d
            self._stats = {"n": n, "mse": float(np.mean(sse / d)),
                           "mae": float(np.mean(sae / d)),
                           "r2": float(np.mean(1 - sse / np.where(sst > 0, sst, np.nan)))}
        return self._stats

    @property
    def meanSquaredError(self):
        return self._compute()["mse"]

    @property
    def rootMeanSquaredError(self):
        return float(np.sqrt(self.meanSquaredError))

    @property
    def meanAbsoluteError(self):
        return self._compute()["mae"]

    @property
    def r2(self):
        return self._compute()["r2"]


__all__ = ["MultilayerPerceptronClassificationModel", "MultilayerPerceptronRegressionModel",
           "ClassificationSummary", "RegressionSummary"]
