"""``MultilayerPerceptronRegressor``: the regressor Spark never shipped, same conventions."""
from pyspark import keyword_only

from sparkann.spark.estimator import _NetworkEstimator
from sparkann.spark.model import MultilayerPerceptronRegressionModel
from sparkann.spark.params import _RegressorParams, add_setters, set_params_like


@add_setters
class MultilayerPerceptronRegressor(_NetworkEstimator, _RegressorParams):
    """Feed-forward neural network regressor trained on a Spark DataFrame.

    Hidden layers use ``activation``; the output is linear and the loss is the squared error
    ``0.5 * ||out - y||^2`` averaged over rows. The label column holds numbers (one target,
    ``layers[-1] == 1``) or vectors / arrays of ``layers[-1]`` targets. Params and solvers are
    those of :class:`~sparkann.spark.MultilayerPerceptronClassifier` (without the
    probability columns).
    """

    _loss = "squared_error"
    _targets = True
    _model_class = MultilayerPerceptronRegressionModel

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction",
                 maxIter=100, tol=1e-6, seed=None, layers=None, blockSize=128, stepSize=0.03,
                 solver="l-bfgs", initialWeights=None, activation="sigmoid", regParam=0.0,
                 dtype="float32", initScheme="spark", syncSteps=0, momentum=0.9,
                 validationIndicatorCol=None, earlyStoppingPatience=10, dropout=0.0,
                 weightCol=None, stepSizeSchedule="constant"):
        super().__init__()
        self._set(**self._input_kwargs)

    setParams = set_params_like(__init__)

