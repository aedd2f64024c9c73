"""One solver table and one table of hyperparameter checks for both estimators."""
import re

import numpy as np
import pytest

from sparkann import MLPClassifier, hyperparams, optim, solvers


def blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 4)) + y[:, None]
    return X, y


def test_the_table_names_every_solver_once():
    assert solvers.NAMES == ("lbfgs", "l-bfgs", "gd", "sgd", "adam")
    assert [s.name for s in solvers.SOLVERS if s.mini_batch] == ["sgd", "adam"]
    assert solvers.get_solver("l-bfgs") is solvers.get_solver("lbfgs")
    with pytest.raises(ValueError, match=r"solver must be one of \('lbfgs', 'l-bfgs'"):
        solvers.get_solver("newton")


def test_both_lbfgs_spellings_train_the_same_model():
    X, y = blobs()
    params = dict(max_iter=15, random_state=1, dtype="float64")
    a = MLPClassifier((5,), solver="lbfgs", **params).fit(X, y)
    b = MLPClassifier((5,), solver="l-bfgs", **params).fit(X, y)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert b.get_params()["solver"] == "l-bfgs"        # what the user set, as scikit-learn wants


def test_make_optimizer_passes_each_solver_its_own_options():
    sgd = solvers.make_optimizer("sgd", 0.1, momentum=0.5, nesterovs_momentum=True, beta_1=0.3)
    assert isinstance(sgd, optim.SGD) and (sgd.lr, sgd.momentum, sgd.nesterov) == (0.1, 0.5, True)
    adam = solvers.make_optimizer("adam", 0.01, momentum=0.5, beta_1=0.8, beta_2=0.9,
                                  epsilon=1e-6)
    assert isinstance(adam, optim.Adam)
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps) == (0.01, 0.8, 0.9, 1e-6)
    with pytest.raises(ValueError, match="runs its own loop"):
        solvers.make_optimizer("l-bfgs", 0.1)


def test_mean_objective_is_its_two_l2_terms():
    rng = np.random.default_rng(0)
    w = rng.normal(size=7)
    mask = rng.random(7) < 0.5
    grad = rng.normal(size=7)
    expected_grad = grad / 4 + 0.3 * w * mask
    J = optim.mean_objective(10.0, grad, 4, w, 0.3, mask)
    assert J == pytest.approx(2.5 + optim.l2_penalty(w, 0.3, mask))
    assert optim.l2_penalty(w, 0.3, mask) == pytest.approx(0.15 * np.sum(w[mask] ** 2))
    np.testing.assert_allclose(grad, expected_grad)
    # a 0/1 float mask (the Spark side's) means the same as the boolean one
    assert optim.l2_penalty(w, 0.3, mask.astype(float)) == optim.l2_penalty(w, 0.3, mask)
    g = np.zeros(7)
    np.testing.assert_array_equal(optim.add_l2_gradient(g, w, 0.3, mask.astype(float)),
                                  0.3 * w * mask)


# The same bad value, under each estimator's name for it.
SAME_RULE = [
    ("solver", "solver", "newton"),
    ("learning_rate_init", "stepSize", -0.1),
    ("alpha", "regParam", -1.0),
    ("momentum", "momentum", 1.0),
    ("max_iter", "maxIter", -1),
    ("tol", "tol", float("nan")),
    ("dtype", "dtype", "float16"),
    ("block_size", "blockSize", 0),
    ("dropout", "dropout", 1.0),
]


@pytest.mark.parametrize("name, param, bad", SAME_RULE)
def test_one_machine_refuses_each_bad_value(name, param, bad):
    X, y = blobs(20)
    with pytest.raises(ValueError, match=f"^{name} must be "):
        MLPClassifier(**{name: bad}).fit(X, y)


@pytest.mark.parametrize("name, param, bad", SAME_RULE)
def test_spark_refuses_the_same_values(name, param, bad):
    pytest.importorskip("pyspark")
    from sparkann.spark import MultilayerPerceptronClassifier, MultilayerPerceptronRegressor

    for cls in (MultilayerPerceptronClassifier, MultilayerPerceptronRegressor):
        expected = f"^{param} must be .*, received {re.escape(repr(bad))}"
        with pytest.raises(ValueError, match=expected):
            cls(layers=[4, 3, 2], **{param: bad})._validate_params()


def test_both_sides_word_a_rule_alike():
    pytest.importorskip("pyspark")
    from sparkann.spark import MultilayerPerceptronClassifier

    X, y = blobs(20)
    for name, param, bad in [("momentum", "momentum", 1.0), ("alpha", "regParam", -1.0),
                             ("tol", "tol", -1.0)]:
        with pytest.raises(ValueError) as local:
            MLPClassifier(**{name: bad}).fit(X, y)
        with pytest.raises(ValueError) as spark:
            MultilayerPerceptronClassifier(layers=[4, 3, 2], **{param: bad})._validate_params()
        assert str(spark.value) == str(local.value).replace(name, param, 1)


def test_spark_accepts_every_solver_name():
    pytest.importorskip("pyspark")
    from sparkann.spark import MultilayerPerceptronClassifier

    for name in solvers.NAMES:
        MultilayerPerceptronClassifier(layers=[4, 3, 2], solver=name)._validate_params()


def test_every_rule_names_a_real_hyperparameter():
    names = set(MLPClassifier().get_params())
    assert {r.name for r in hyperparams.RULES if r.name} <= names
    pytest.importorskip("pyspark")
    from sparkann.spark import MultilayerPerceptronClassifier

    params = {p.name for p in MultilayerPerceptronClassifier().params}
    assert {r.param for r in hyperparams.RULES if r.param} <= params


def test_spark_setters_follow_the_params():
    pytest.importorskip("pyspark")
    from sparkann.spark import (MultilayerPerceptronClassificationModel,
                                MultilayerPerceptronClassifier,
                                MultilayerPerceptronRegressionModel, MultilayerPerceptronRegressor)

    for cls in (MultilayerPerceptronClassifier, MultilayerPerceptronRegressor,
                MultilayerPerceptronClassificationModel, MultilayerPerceptronRegressionModel):
        for param in cls().params:
            setter = getattr(cls, "set" + param.name[0].upper() + param.name[1:])
            assert re.search(param.name, setter.__doc__), (cls.__name__, param.name)
    est = MultilayerPerceptronRegressor()
    assert est.setMomentum(0.5) is est and est.getMomentum() == 0.5
    assert est.setSyncSteps(3).getSyncSteps() == 3


def test_cli_accepts_every_solver_name():
    from sparkann import cli

    parser = cli.build_parser()
    for name in solvers.NAMES:
        assert parser.parse_args(["train", "--solver", name]).solver == name
