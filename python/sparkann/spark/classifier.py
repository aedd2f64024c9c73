"""``MultilayerPerceptronClassifier``: a drop-in for Spark MLlib's, on the native engine."""
from pyspark import keyword_only

from sparkann.spark.estimator import _NetworkEstimator
from sparkann.spark.model import MultilayerPerceptronClassificationModel
from sparkann.spark.params import _ClassifierParams, add_setters, set_params_like


@add_setters
class MultilayerPerceptronClassifier(_NetworkEstimator, _ClassifierParams):
    """Feed-forward neural network classifier trained on a Spark DataFrame.

    The Params, their names, defaults and meaning are those of
    ``pyspark.ml.classification.MultilayerPerceptronClassifier`` (sigmoid hidden layers,
    softmax output, ``solver="l-bfgs"``, ``maxIter=100``, ``blockSize=128``...), so changing
    the import is enough. Extra Params: ``activation``, solvers ``"adam"`` and ``"sgd"``,
    ``regParam``, ``dtype`` (``"float32"`` default, ``"float64"`` for Spark's exact numbers),
    ``initScheme``, ``syncSteps``, ``momentum``, ``validationIndicatorCol`` with
    ``earlyStoppingPatience``, ``dropout``, ``stepSizeSchedule``, ``weightCol`` (each row's
    loss times its weight, finite and >= 0; the mean is over the weight sum; the summary's
    metrics are weighted). Param values are accepted and refused as MLlib accepts and refuses
    them; ``maxIter=0`` gives the model of ``initialWeights`` (or of the seeded
    initialisation) untrained, as in MLlib.

    The objective is the mean cross-entropy over rows (plus ``regParam / 2 * ||W||^2``); each
    iteration logs ``iteration, loss, seconds`` on the ``sparkann.spark`` logger, and
    :meth:`setCallback` registers ``callback(iteration, weights, loss)``.

    Examples
    --------
    >>> from sparkann.spark import MultilayerPerceptronClassifier
    >>> mlp = MultilayerPerceptronClassifier(layers=[784, 128, 10], maxIter=50)
    >>> model = mlp.fit(train_df)                                  # doctest: +SKIP
    >>> model.summary.accuracy                                     # doctest: +SKIP
    """

    _loss = "softmax_cross_entropy"
    _model_class = MultilayerPerceptronClassificationModel

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction",
                 maxIter=100, tol=1e-6, seed=None, layers=None, blockSize=128, stepSize=0.03,
                 solver="l-bfgs", initialWeights=None, probabilityCol="probability",
                 rawPredictionCol="rawPrediction", thresholds=None, activation="sigmoid",
                 regParam=0.0, dtype="float32", initScheme="spark", syncSteps=0, momentum=0.9,
                 validationIndicatorCol=None, earlyStoppingPatience=10, dropout=0.0,
                 weightCol=None, stepSizeSchedule="constant"):
        super().__init__()
        self._setDefault(probabilityCol="probability", rawPredictionCol="rawPrediction")
        self._set(**self._input_kwargs)

    setParams = set_params_like(__init__)

    def _n_out_check(self, layers):
        if layers[-1] < 2:
            raise ValueError(f"a classifier needs at least 2 output classes, layers={layers}")

