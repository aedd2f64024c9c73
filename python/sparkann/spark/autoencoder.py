"""``StackedAutoencoder``: greedy layer-wise pretraining of an autoencoder on a DataFrame.

Every network (each layer, then optionally the whole stack) is trained by the estimators'
own training path (:class:`~sparkann.spark.estimator._NetworkEstimator`: cached blocks, the
distributed solvers) with the features as their own targets; encoding and decoding are the
models' Arrow UDF transform. The networks and weight layout are those of
:mod:`sparkann.stacking`.
"""
import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import DenseVector, VectorUDT
from pyspark.ml.param import TypeConverters
from pyspark.ml.param.shared import (HasBlockSize, HasInputCol, HasMaxIter, HasOutputCol,
                                     HasSeed, HasSolver, HasStepSize, HasTol)
from pyspark.sql import functions as F

from sparkann import hyperparams, stacking
from sparkann.spark.estimator import _NetworkEstimator
from sparkann.spark.data import run_checked
from sparkann.spark.model import (MultilayerPerceptronRegressionModel, _quoted, build_topology,
                                  dense_features)
from sparkann.spark.model_files import SparkModelFileError
from sparkann.spark.params import (_NetworkParams, _param, _RegressorParams, add_getters,
                                   add_setters, set_params_like)
from sparkann.spark.persistence import PersistMixin

# the column of a network's training frame that holds the same values as its input, the target
_TARGET = "__autoencoder_target"


@add_getters
class _AutoencoderParams(HasInputCol, HasOutputCol, HasSeed, HasMaxIter, HasTol, HasStepSize,
                         HasSolver, HasBlockSize):
    """Params of the stacked autoencoder and its model."""

    layers = _param("layers", "Sizes of the input and of each encoding layer, e.g. [784, 256, "
                    "64]: codes of 64 values; the decoder mirrors them.",
                    _NetworkParams.layers.typeConverter)
    dataIn01Interval = _param("dataIn01Interval", "True: the input lies in [0, 1] and is "
                              "reconstructed through a sigmoid with cross-entropy; False: a "
                              "linear output with squared error.",
                              TypeConverters.toBoolean)
    fineTune = _param("fineTune", "After the layer-wise pretraining, train the whole stack "
                      "(encoder and decoder) on the reconstruction of the input.",
                      TypeConverters.toBoolean)
    solver = _NetworkParams.solver
    activation = _NetworkParams.activation
    regParam = _NetworkParams.regParam
    dtype = _NetworkParams.dtype
    initScheme = _NetworkParams.initScheme

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(inputCol="features", outputCol="encoded", maxIter=100, tol=1e-6,
                         blockSize=128, stepSize=0.03, solver="l-bfgs", activation="sigmoid",
                         regParam=0.0, dtype="float32", initScheme="spark",
                         dataIn01Interval=True, fineTune=False)
        self._setDefault(seed=0x5A17E)   # stable across Python processes, as the others'

    def _validate_params(self):
        if not self.isDefined(self.layers):
            raise ValueError("layers must be set, e.g. layers=[784, 256, 64]")
        sizes = stacking.check_sizes(self.getLayers())
        hyperparams.check({rule.param: self.getOrDefault(rule.param)
                           for rule in hyperparams.RULES
                           if rule.param is not None and self.hasParam(rule.param)}, "param")
        stacking.layer_loss(1, True, self.getActivation())  # an unknown activation fails here
        return sizes


def _network_model(topology, weights, features_col, output_col, dtype, block_size):
    """A regression model that computes ``topology``'s raw output (codes, reconstructions) into
    ``output_col``: the estimators' transform (an Arrow UDF) for our networks."""
    model = MultilayerPerceptronRegressionModel(weights=weights)
    model._set(layers=[topology.n_in, topology.n_out], featuresCol=features_col,
               predictionCol=output_col, dtype=dtype, blockSize=block_size)
    model._topology = topology
    return model


def _check_column(dataset, col, what):
    if col not in dataset.columns:
        raise ValueError(f"{what} {col!r} is not in the DataFrame; its columns are "
                         f"{dataset.columns}")


def _squared_errors(batches, *, column, topology, weights, dtype, n_in):
    """Executor side: one row, the squared reconstruction errors summed over the partition's
    rows of ``column`` and the number of values."""
    import pyarrow as pa
    from sparkann.spark.gradient import task_network
    sse, count = 0.0, 0
    for _, X in dense_features(batches, column, n_in, dtype):
        if len(X):
            net = task_network(topology, dtype, min(len(X), 1024), 1)
            out = net.forward(weights, np.ascontiguousarray(X), raw=True)
            sse += float(np.square(out.astype(np.float64) - X).sum())
            count += X.size
    yield pa.RecordBatch.from_arrays([pa.array([sse]), pa.array([count], pa.int64())],
                                     names=["sse", "count"])


def reconstruction_mse(dataset, column, topology, weights, dtype):
    """Mean squared error per value of ``topology``'s reconstruction of ``column``: one
    mapInArrow job, a row per partition."""
    weights = np.asarray(weights).astype(dtype)
    n_in = topology.n_in

    def errors(batches):
        return _squared_errors(batches, column=column, topology=topology, weights=weights,
                               dtype=dtype, n_in=n_in)

    rows = run_checked(dataset.select(F.col(_quoted(column))).mapInArrow(
        errors, "sse double, count long"))
    count = sum(r["count"] for r in rows)
    return sum(r["sse"] for r in rows) / max(count, 1)


def _check_in_01(dataset, col):
    """One pass in the JVM: refuse a value outside [0, 1] (dataIn01Interval=True)."""
    from pyspark.ml.functions import vector_to_array
    values = (vector_to_array(F.col(_quoted(col)))
              if isinstance(dataset.schema[col].dataType, VectorUDT) else F.col(_quoted(col)))
    bad = dataset.select(values.alias("v")).filter(F.exists("v", lambda x: (x < 0) | (x > 1)))
    row = run_checked(bad.limit(1))
    if row:
        v = np.asarray(row[0]["v"], dtype=np.float64)
        i = int(np.flatnonzero((v < 0) | (v > 1))[0])
        raise ValueError(f"inputCol {col!r}: a row holds {float(v[i])!r} at index {i}; "
                         "dataIn01Interval=True needs every value in [0, 1] (scale the data, "
                         "or set dataIn01Interval=False for a linear output)")


class _ReconstructionNetwork(_NetworkEstimator, _RegressorParams):
    """One network trained on (input, the same input as target) by the estimators' path,
    with the reconstruction loss ``loss``."""

    _targets = True
    _model_class = MultilayerPerceptronRegressionModel

    def __init__(self, loss, **params):
        super().__init__()
        self._loss = loss
        self._set(**params)


@add_setters
class StackedAutoencoder(Estimator, PersistMixin, _AutoencoderParams):
    """Stacked autoencoder trained on a Spark DataFrame, layer by layer.

    Layer ``i`` learns to reconstruct the codes of the layers below it (the network
    ``[n(i), n(i+1), n(i)]``), with ``solver``, ``maxIter``, ``stepSize``, ``regParam`` and
    ``blockSize`` as the classifier uses them; ``fineTune=True`` then trains the whole stack.
    The first layer's output is a sigmoid with cross-entropy (``dataIn01Interval=True``, data
    in [0, 1]) or linear with squared error; deeper layers reconstruct codes, with
    cross-entropy for the sigmoid activation and squared error for the others.

    Examples
    --------
    >>> ae = StackedAutoencoder(layers=[784, 256, 64], inputCol="features")  # doctest: +SKIP
    >>> model = ae.fit(unlabelled)                                           # doctest: +SKIP
    >>> codes = model.transform(df)            # column "encoded"            # doctest: +SKIP
    >>> clf = model.classifier(10, maxIter=50).fit(labelled)                 # doctest: +SKIP
    """

    @keyword_only
    def __init__(self, *, layers=None, inputCol="features", outputCol="encoded", maxIter=100,
                 tol=1e-6, seed=None, blockSize=128, stepSize=0.03, solver="l-bfgs",
                 activation="sigmoid", regParam=0.0, dtype="float32", initScheme="spark",
                 dataIn01Interval=True, fineTune=False):
        super().__init__()
        self._set(**self._input_kwargs)

    setParams = set_params_like(__init__)

    def _network(self, loss, layers, seed, **extra):
        names = ["maxIter", "tol", "blockSize", "solver", "activation", "regParam", "dtype",
                 "initScheme"]
        if self.isSet(self.stepSize):   # unset: the solver's own default (adam's 0.001)
            names.append("stepSize")
        common = {name: self.getOrDefault(name) for name in names}
        return _ReconstructionNetwork(loss, layers=layers, seed=seed,
                                      featuresCol=self.getInputCol(), labelCol=_TARGET,
                                      **common, **extra)

    def _fit(self, dataset):
        sizes = self._validate_params()
        col, act = self.getInputCol(), self.getActivation()
        _check_column(dataset, col, "inputCol")
        in01, dtype = self.getDataIn01Interval(), self.getDtype()
        if in01:
            _check_in_01(dataset, col)
        seed = self.getSeed()
        seed = self._defaultParamMap[self.seed] if seed is None else seed
        # every network reads its input from a column named inputCol (so that errors name it)
        source = dataset.select(F.col(_quoted(col)))
        encoders, layer_weights, summaries, history = [], [], [], []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            frame = source
            if i:
                topology = stacking.encoder_topology(sizes[:i + 1], act)
                frame = _network_model(topology, np.concatenate(encoders), col, "__code", dtype,
                                       self.getBlockSize()).transform(source) \
                    .select(F.col("__code").alias(col))
            loss = stacking.layer_loss(i, in01, act)
            model = self._network(loss, [a, b, a], (seed + i) & 0x7FFFFFFF).fit(
                frame.withColumn(_TARGET, F.col(_quoted(col))))
            w = model._weights
            error = reconstruction_mse(
                frame, col, stacking.reconstruction_topology(
                    [a, b], act, loss == stacking.RECONSTRUCTION_LOSSES["sigmoid"]), w, dtype)
            encoders.append(w[:a * b + b])
            layer_weights.append(w)
            summaries.append({"layer": i, "layers": [a, b, a], "loss": loss,
                              "objectiveHistory": list(model.history),
                              "reconstructionError": error})
            history += list(model.history)
        weights = stacking.stack_weights(layer_weights, sizes)
        if self.getFineTune():
            model = self._network(stacking.layer_loss(0, in01, act), stacking.stack_sizes(sizes),
                                  (seed + len(sizes)) & 0x7FFFFFFF,
                                  initialWeights=DenseVector(weights)) \
                .fit(source.withColumn(_TARGET, F.col(_quoted(col))))
            weights = model._weights
            history += list(model.history)
        result = StackedAutoencoderModel(weights=weights, history=history)
        result._resetUid(self.uid)
        self._copyValues(result)
        result.layerSummaries = summaries
        if self.getFineTune():
            result.fineTuneHistory = list(model.history)
            result.fineTuneError = reconstruction_mse(
                source, col, result._reconstruction_topology(), weights, dtype)
        return result


@add_setters
class StackedAutoencoderModel(Model, PersistMixin, _AutoencoderParams):
    """A fitted :class:`StackedAutoencoder`: ``transform`` adds the codes (``outputCol``),
    :meth:`decode` the reconstructions of codes, :meth:`classifier` a classifier that starts
    from the encoder. Saves and loads as the other Spark models (JSON and Parquet).

    Attributes
    ----------
    weights : DenseVector
        The stack's flat weights: the encoder's layers, then the decoder's.
    layerSummaries : list of dict
        Per pretrained layer: ``layers``, ``loss``, ``objectiveHistory`` and
        ``reconstructionError`` (mean squared error per value of the layer's input); not saved.
    fineTuneHistory, fineTuneError
        The fine-tuning's objective history and the whole stack's reconstruction error (None
        without fine-tuning; not saved).
    """

    _saves_weights = True

    def __init__(self, weights=None, history=None):
        super().__init__()
        self._weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.history = list(history or [])
        self.layerSummaries = []
        self.fineTuneHistory = self.fineTuneError = None

    @property
    def weights(self):
        return DenseVector(self._weights)

    @property
    def encoderWeights(self):
        """The encoder's part of the weights (its layers' ``W, b`` in order)."""
        return DenseVector(stacking.split_weights(self._weights, self.getLayers())[0])

    @property
    def reconstructionErrors(self):
        """The pretrained layers' reconstruction errors, first layer first."""
        return [s["reconstructionError"] for s in self.layerSummaries]

    def _encoder(self):
        return stacking.Encoder(self.getLayers(), self.getActivation(),
                                self.encoderWeights.toArray())

    def _reconstruction_topology(self):
        return stacking.reconstruction_topology(self.getLayers(), self.getActivation(),
                                                self.getDataIn01Interval())

    def _check_loaded(self, path):
        try:
            sizes = stacking.check_sizes(self.getLayers())
            if self.getDtype() not in hyperparams.DTYPES:
                raise ValueError(f"dtype must be one of {hyperparams.DTYPES}, received "
                                 f"{self.getDtype()!r}")
            n = self._reconstruction_topology().n_weights
            if self._weights.shape != (n,):
                raise ValueError(f"layers {sizes} need {n} weights, the model holds "
                                 f"{self._weights.size}")
        except (KeyError, ValueError, TypeError, MemoryError) as e:
            raise SparkModelFileError(f"{path}/metadata: {e}") from None

    def _run(self, dataset, topology, weights, input_col, output_col, what):
        _check_column(dataset, input_col, what)
        return _network_model(topology, weights, input_col, output_col, self.getDtype(),
                              self.getBlockSize()).transform(dataset)

    def _transform(self, dataset):
        """Add ``outputCol``: the codes of ``inputCol`` (vectors of ``layers[-1]`` values)."""
        return self._run(dataset, self._encoder().topology(), self.encoderWeights.toArray(),
                         self.getInputCol(), self.getOutputCol(), "inputCol")

    def decode(self, dataset, inputCol=None, outputCol="decoded"):
        """Add ``outputCol``: the reconstructions (vectors of ``layers[0]`` values) of the codes
        in ``inputCol`` (default: ``outputCol``, where ``transform`` puts them)."""
        sizes = self.getLayers()
        topology = stacking.decoder_topology(sizes, self.getActivation(),
                                             self.getDataIn01Interval())
        return self._run(dataset, topology, stacking.split_weights(self._weights, sizes)[1],
                         inputCol or self.getOutputCol(), outputCol, "decode inputCol")

    def reconstructionError(self, dataset):
        """Mean squared error per value with which the whole stack reconstructs ``inputCol``."""
        _check_column(dataset, self.getInputCol(), "inputCol")
        return reconstruction_mse(dataset, self.getInputCol(), self._reconstruction_topology(),
                                  self._weights, self.getDtype())

    def classifierInitialWeights(self, numClasses, seed=None, initScheme="spark"):
        """``initialWeights`` of a classifier with ``layers + [numClasses]`` and this
        activation: the encoder's weights, then the output layer initialised as the classifier
        would with ``seed`` (default: the classifier's default seed), so the only difference
        from a random start with that seed is the encoder."""
        from sparkann.spark.classifier import MultilayerPerceptronClassifier
        sizes = self.getLayers() + [int(numClasses)]
        if int(numClasses) < 2:
            raise ValueError(f"numClasses must be at least 2, received {numClasses!r}")
        if seed is None:
            probe = MultilayerPerceptronClassifier()
            seed = probe.getOrDefault(probe.seed)
        topology = build_topology(sizes, self.getActivation(), "softmax_cross_entropy")
        w = topology.init_weights(seed=seed & 0x7FFFFFFF, scheme=initScheme, dtype="float64")
        return DenseVector(self._encoder().initialise(topology, w))

    def classifier(self, numClasses, **params):
        """A :class:`~sparkann.spark.MultilayerPerceptronClassifier` whose hidden layers start
        from the encoder (``layers + [numClasses]``, this activation, ``featuresCol`` =
        ``inputCol``); ``params`` are its other Params (``seed`` also seeds the output
        layer)."""
        from sparkann.spark.classifier import MultilayerPerceptronClassifier
        params.setdefault("featuresCol", self.getInputCol())
        w = self.classifierInitialWeights(numClasses, params.get("seed"),
                                          params.get("initScheme", "spark"))
        return MultilayerPerceptronClassifier(layers=self.getLayers() + [int(numClasses)],
                                              activation=self.getActivation(),
                                              initialWeights=w, **params)

    def copy(self, extra=None):
        that = super().copy(extra)
        that._weights = None if self._weights is None else self._weights.copy()
        return that


__all__ = ["StackedAutoencoder", "StackedAutoencoderModel"]
