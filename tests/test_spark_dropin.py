"""The Spark estimators as drop-ins for Spark MLlib's MultilayerPerceptronClassifier: the same
Param values accepted and refused, maxIter=0, the model's string, pyspark's own doctest run on
our classes, and MLlib's trained weights giving MLlib's probabilities."""
import math

import numpy as np
import pytest
from mlpc_doctest import run_mlpc_doctest

pytest.importorskip("pyspark")
from pyspark.ml import classification as mllib  # noqa: E402
from pyspark.ml.functions import vector_to_array  # noqa: E402
from pyspark.ml.linalg import Vectors  # noqa: E402

from sparkann.spark import (MultilayerPerceptronClassificationModel,  # noqa: E402
                            MultilayerPerceptronClassifier, MultilayerPerceptronRegressionModel,
                            MultilayerPerceptronRegressor)
from sparkann.topology import Topology  # noqa: E402

INF, NAN = math.inf, math.nan

# Values at the edges of each MLlib validator (Scala's ParamValidators: maxIter >= 0, tol >= 0,
# stepSize > 0, blockSize > 0, layers > 1 sizes all > 0, thresholds >= 0 with at most one 0).
EDGES = [("maxIter", v) for v in (-1, 0, 1)] \
    + [("tol", v) for v in (-1e-9, 0.0, 1e-6, INF, NAN)] \
    + [("stepSize", v) for v in (-1.0, 0.0, 1e-9, INF, NAN)] \
    + [("blockSize", v) for v in (-1, 0, 1, 10**9)] \
    + [("layers", v) for v in ([], [2], [2, 0, 2], [2, 2], [2, 3, 2])] \
    + [("solver", v) for v in ("l-bfgs", "gd", "L-BFGS", "GD", "newton")] \
    + [("seed", v) for v in (-(2**40), -1, 0, 2**40)] \
    + [("thresholds", v) for v in ([0.0, 0.0], [0.0, 1.0], [-1.0, 1.0], [INF, 1.0],
                                   [NAN, 1.0], [0.3, 0.7])]


def _mllib_accepts(spark, name, value):
    """MLlib checks its Params in the JVM when the estimator hands them over (at fit)."""
    est = mllib.MultilayerPerceptronClassifier(layers=[2, 3, 2])
    est._set(**{name: value})
    try:
        est._transfer_params_to_java()
    except Exception as e:  # py4j's IllegalArgumentException
        assert "given invalid value" in str(e), e
        return False
    return True


def _ours_accepts(name, value):
    """Whether our classifier takes the value; the regressor, which shares the Params (all
    but thresholds), must agree."""
    verdicts = []
    for cls in (MultilayerPerceptronClassifier, MultilayerPerceptronRegressor):
        est = cls(layers=[2, 3, 2])
        if not est.hasParam(name):
            continue
        est._set(**{name: value})
        try:
            est._validate_params()
            verdicts.append(True)
        except ValueError as e:
            assert name in str(e), e          # the error names the Param
            verdicts.append(False)
    assert len(set(verdicts)) == 1, verdicts
    return verdicts[0]


@pytest.mark.parametrize("name, value", EDGES, ids=[f"{n}={v}" for n, v in EDGES])
def test_param_values_accepted_as_mllib_accepts_them(spark, name, value):
    assert _ours_accepts(name, value) == _mllib_accepts(spark, name, value)


def test_extra_solvers_are_a_superset_of_mllibs():
    # l-bfgs and gd are MLlib's; lbfgs, adam, sgd are ours on top (documented in the Param).
    for solver in ("lbfgs", "adam", "sgd"):
        assert _ours_accepts("solver", solver)


@pytest.mark.parametrize("solver", ["gd", "sgd", "adam"])
def test_infinite_step_refused_for_the_solvers_that_step_by_it(solver):
    # (l-bfgs, which ignores stepSize, takes it as MLlib does: see EDGES)
    with pytest.raises(ValueError, match=f"stepSize must be finite for solver '{solver}'"):
        MultilayerPerceptronClassifier(layers=[2, 3, 2], solver=solver,
                                       stepSize=INF)._validate_params()


def test_param_types_and_defaults_are_mllibs(spark):
    theirs, ours = mllib.MultilayerPerceptronClassifier(), MultilayerPerceptronClassifier()
    for param in theirs.params:
        mine = ours.getParam(param.name)
        assert mine.typeConverter is param.typeConverter, param.name
        if param.name != "seed":   # ours is stable across Python processes, MLlib's is not
            assert ours._defaultParamMap.get(mine) == theirs._defaultParamMap.get(param), \
                param.name


def _xor(spark):
    return spark.createDataFrame([(0.0, Vectors.dense([0.0, 0.0])),
                                  (1.0, Vectors.dense([0.0, 1.0])),
                                  (1.0, Vectors.dense([1.0, 0.0])),
                                  (0.0, Vectors.dense([1.0, 1.0]))], ["label", "features"])


def test_max_iter_zero_returns_the_initial_weights(spark):
    # (every solver: the trainer returns before choosing one)
    w0 = np.linspace(-1, 1, 12)
    model = MultilayerPerceptronClassifier(layers=[2, 2, 2], maxIter=0, solver="adam",
                                           initialWeights=w0.tolist()).fit(_xor(spark))
    np.testing.assert_array_equal(model.weights.toArray(), w0)
    assert model.summary.totalIterations == 0


def test_max_iter_zero_without_initial_weights_is_the_seeded_start(spark):
    reg = MultilayerPerceptronRegressor(layers=[2, 3, 1], maxIter=0, seed=7).fit(_xor(spark))
    w = Topology.from_sizes([2, 3, 1], loss="squared_error").init_weights(seed=7,
                                                                         dtype="float64")
    np.testing.assert_array_equal(reg.weights.toArray(), w)


def test_model_string_is_mllibs(spark):
    df = _xor(spark)
    w0 = np.linspace(-1, 1, 12).tolist()
    theirs = mllib.MultilayerPerceptronClassifier(layers=[2, 2, 2], maxIter=0,
                                                  initialWeights=w0).fit(df)
    ours = MultilayerPerceptronClassificationModel(weights=w0)._set(layers=[2, 2, 2])
    expected = str(theirs).replace(theirs.uid, ours.uid)
    assert str(ours) == repr(ours) == expected
    assert expected.startswith("MultilayerPerceptronClassificationModel: uid=")
    reg = MultilayerPerceptronRegressionModel()._set(layers=[2, 4, 3, 1])
    assert repr(reg) == (f"MultilayerPerceptronRegressionModel: uid={reg.uid}, numLayers=4, "
                         f"numTargets=1, numFeatures=2")
    bare = MultilayerPerceptronClassificationModel()
    assert repr(bare) == f"MultilayerPerceptronClassificationModel: uid={bare.uid}"


def test_pysparks_own_mlpc_doctest_passes_on_our_classes(spark, tmp_path):
    runner, kept, failures = run_mlpc_doctest(spark, tmp_path)
    assert runner.failures == 0, failures
    assert runner.tries == len(kept)


def test_mllib_weights_as_initial_weights_give_mllibs_model(spark):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(float) + (X[:, 2] > 0.8)
    df = spark.createDataFrame([(float(t), Vectors.dense(x)) for x, t in zip(X, y)],
                               ["label", "features"]).cache()
    layers = [4, 6, 5, 3]
    theirs = mllib.MultilayerPerceptronClassifier(layers=layers, maxIter=20, seed=11).fit(df)
    w = theirs.weights.toArray()
    ours = MultilayerPerceptronClassifier(layers=layers, maxIter=0, dtype="float64",
                                          initialWeights=w.tolist()).fit(df)
    np.testing.assert_array_equal(ours.weights.toArray(), w)

    def columns(model):
        out = model.transform(df).select(vector_to_array("probability").alias("p"),
                                         vector_to_array("rawPrediction").alias("r"),
                                         "prediction").collect()
        return (np.array([r.p for r in out]), np.array([r.r for r in out]),
                [r.prediction for r in out])

    p_theirs, r_theirs, pred_theirs = columns(theirs)
    p_ours, r_ours, pred_ours = columns(ours)
    assert np.abs(p_ours - p_theirs).max() <= 1e-9
    assert np.abs(r_ours - r_theirs).max() <= 1e-9
    assert pred_ours == pred_theirs
    assert len(set(pred_theirs)) == 3       # a trained model, not a constant one
    df.unpersist()
