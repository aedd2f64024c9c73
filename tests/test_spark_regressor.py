"""The Spark regressor: one and many targets, persistence."""
import numpy as np
import pytest

pytest.importorskip("pyspark")
from sparkann.spark import (MultilayerPerceptronRegressionModel,  # noqa: E402
                            MultilayerPerceptronRegressor)
from sparkann.spark.data import dataframe_from_numpy  # noqa: E402


@pytest.mark.parametrize("targets", [1, 2])
def test_regressor_fits_smooth_targets(spark, targets, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(800, 3))
    Y = np.column_stack([np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2], X[:, 0] - X[:, 2] ** 2])
    Y = Y[:, 0] if targets == 1 else Y
    df = dataframe_from_numpy(spark, X, Y).cache()
    reg = MultilayerPerceptronRegressor(layers=[3, 16, targets], activation="tanh",
                                        maxIter=200, dtype="float64", seed=1)
    model = reg.fit(df)
    # a linear fit leaves R^2 ~ 0.6 on these targets; the network must do much better
    assert model.summary.r2 > 0.95
    assert model.summary.objectiveHistory[-1] < model.summary.objectiveHistory[0] / 10
    out = model.transform(df).select("prediction").head()[0]
    first = model.predict(df.head().features)
    if targets == 1:
        assert isinstance(out, float) and abs(out - first) < 1e-12
    else:
        np.testing.assert_allclose(out.toArray(), first.toArray(), atol=1e-12)
    model.write().overwrite().save(str(tmp_path / "reg"))
    again = MultilayerPerceptronRegressionModel.load(str(tmp_path / "reg"))
    assert abs(again.evaluate(df).rootMeanSquaredError - model.summary.rootMeanSquaredError) \
        < 1e-12
    df.unpersist()


def test_regressor_rejects_wrong_target_count(spark):
    df = dataframe_from_numpy(spark, np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="holds one number per row but the network has 3"):
        MultilayerPerceptronRegressor(layers=[2, 3]).fit(df)
