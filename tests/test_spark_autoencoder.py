"""The Spark stacked autoencoder: layer-wise training, encode / decode against the engine,
fine-tuning, persistence, the encoder-initialised classifier, and bad input."""
import numpy as np
import pytest
from test_autoencoder import unit_data

pytest.importorskip("pyspark")
from pyspark.ml.functions import vector_to_array  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from sparkann import stacking  # noqa: E402
from sparkann.spark import (MultilayerPerceptronClassifier, StackedAutoencoder,  # noqa: E402
                            StackedAutoencoderModel, SparkModelFileError)
from sparkann.spark.data import dataframe_from_numpy  # noqa: E402

SIZES = [12, 6, 3]


@pytest.fixture(scope="module")
def data(spark):
    X = unit_data(rows=400)
    df = dataframe_from_numpy(spark, X, np.arange(400) % 2, features_col="pixels").cache()
    yield X, df
    df.unpersist()


@pytest.fixture(scope="module")
def model(data):
    X, df = data
    return StackedAutoencoder(layers=SIZES, inputCol="pixels", maxIter=30, fineTune=True,
                              dtype="float64", seed=3).fit(df)


def column(df, name):
    return np.array([r[0] for r in df.select(vector_to_array(name)).collect()])


def test_layers_learn_and_fine_tuning_lowers_the_error(model, data):
    X, df = data
    assert [s["layers"] for s in model.layerSummaries] == [[12, 6, 12], [6, 3, 6]]
    assert [s["loss"] for s in model.layerSummaries] == ["sigmoid_cross_entropy"] * 2
    for s in model.layerSummaries:
        h = s["objectiveHistory"]
        assert h[-1] < h[0]
    baseline = float(np.mean((X - X.mean(axis=0)) ** 2))
    assert model.reconstructionErrors[0] < 0.8 * baseline
    stacked = StackedAutoencoder(layers=SIZES, inputCol="pixels", maxIter=30, dtype="float64",
                                 seed=3).fit(df)
    assert stacked.fineTuneError is None
    # the layers train the same with and without fine-tuning; the fine-tuning improves on them
    assert [s["objectiveHistory"] for s in stacked.layerSummaries] == \
        [s["objectiveHistory"] for s in model.layerSummaries]
    assert model.fineTuneHistory[-1] < model.fineTuneHistory[0]
    assert model.fineTuneError < stacked.reconstructionError(df)
    assert model.reconstructionError(df) == pytest.approx(model.fineTuneError, rel=1e-9)


def test_transform_and_decode_compute_the_engines_networks(model, data, tmp_path):
    X, df = data
    encoded = model.transform(df)
    assert encoded.columns == ["pixels", "label", "encoded"]
    codes = column(encoded, "encoded")
    w = model.weights.toArray()
    expected = stacking.Encoder(SIZES, "sigmoid", stacking.split_weights(w, SIZES)[0]) \
        .encode(X, "float64")
    np.testing.assert_allclose(codes, expected, rtol=1e-10, atol=1e-12)
    decoded = column(model.decode(encoded), "decoded")
    whole = stacking.stack_topology(SIZES, "sigmoid", True).network(dtype="float64") \
        .forward(w, X)                           # the sigmoid output of the trained stack
    np.testing.assert_allclose(decoded, whole, rtol=1e-10, atol=1e-12)
    assert np.mean((decoded - X) ** 2) == pytest.approx(model.fineTuneError, rel=1e-9)

    model.write().overwrite().save(str(tmp_path / "ae"))
    again = StackedAutoencoderModel.load(str(tmp_path / "ae"))
    np.testing.assert_array_equal(again.weights.toArray(), w)
    assert again.getLayers() == SIZES and again.getInputCol() == "pixels"
    np.testing.assert_array_equal(column(again.transform(df), "encoded"), codes)
    StackedAutoencoder(layers=SIZES, fineTune=True).write().overwrite() \
        .save(str(tmp_path / "est"))
    assert StackedAutoencoder.load(str(tmp_path / "est")).getFineTune() is True


def test_classifier_starts_from_the_encoder(model, data):
    X, df = data
    clf = model.classifier(2, maxIter=3, seed=7)
    assert isinstance(clf, MultilayerPerceptronClassifier)
    assert clf.getLayers() == SIZES + [2] and clf.getFeaturesCol() == "pixels"
    w0 = clf.getInitialWeights().toArray()
    k = len(model.encoderWeights)
    np.testing.assert_array_equal(w0[:k], model.encoderWeights.toArray())
    # the output layer starts as a random start with the same seed draws it
    random = MultilayerPerceptronClassifier(layers=SIZES + [2], featuresCol="pixels", seed=7,
                                            maxIter=0).fit(df).weights.toArray()
    np.testing.assert_array_equal(w0[k:], random[k:])
    assert clf.fit(df).summary.totalIterations >= 1


def test_linear_output_and_other_activation(spark):
    X = (unit_data(rows=200) - 0.5) * 4
    df = dataframe_from_numpy(spark, X)
    m = StackedAutoencoder(layers=[12, 5], dataIn01Interval=False, activation="tanh",
                           maxIter=40, dtype="float64").fit(df)
    assert m.layerSummaries[0]["loss"] == "squared_error"
    decoded = column(m.decode(m.transform(df)), "decoded")
    assert decoded.min() < 0     # no sigmoid on the output
    assert np.mean((decoded - X) ** 2) < 0.5 * np.mean((X - X.mean(axis=0)) ** 2)


def test_bad_input_is_named(spark, data, tmp_path):
    X, df = data
    with pytest.raises(ValueError, match=r"inputCol 'features' is not in the DataFrame"):
        StackedAutoencoder(layers=SIZES).fit(df)
    with pytest.raises(ValueError, match="layers must be set"):
        StackedAutoencoder(inputCol="pixels").fit(df)
    with pytest.raises(ValueError, match="layers needs the input size and at least one code"):
        StackedAutoencoder(layers=[12], inputCol="pixels").fit(df)
    with pytest.raises(ValueError, match=r"layers\[1\] must be a positive integer"):
        StackedAutoencoder(layers=[12, 0], inputCol="pixels").fit(df)
    with pytest.raises(ValueError, match="solver must be one of"):
        StackedAutoencoder(layers=SIZES, inputCol="pixels", solver="newton").fit(df)
    with pytest.raises(ValueError, match="features column 'pixels'.* row 0 has 12 "
                                         "values, expected 5"):
        StackedAutoencoder(layers=[5, 2], inputCol="pixels", maxIter=1).fit(df)
    outside = df.withColumn("pixels", F.when(F.col("label") == 1, F.array(F.lit(2.0)))
                            .otherwise(vector_to_array("pixels")))
    with pytest.raises(ValueError, match=r"inputCol 'pixels': a row holds 2.0 at index 0; "
                                         "dataIn01Interval=True"):
        StackedAutoencoder(layers=SIZES, inputCol="pixels").fit(outside)
    m = StackedAutoencoderModel(weights=np.zeros(5))
    m._set(layers=SIZES, inputCol="pixels")
    m.write().overwrite().save(str(tmp_path / "bad"))
    with pytest.raises(SparkModelFileError, match="need 207 weights, the model holds 5"):
        StackedAutoencoderModel.load(str(tmp_path / "bad"))


@pytest.mark.parametrize("solver, given, expected", [
    ("adam", None, None), ("adam", 0.01, 0.01), ("l-bfgs", None, None), ("gd", 0.5, 0.5)])
def test_layer_networks_take_the_step_size_only_when_it_is_set(solver, given, expected):
    # unset, each layer's network keeps its solver's own default step (adam's 0.001), as the
    # classifier does, instead of the autoencoder's Param default
    params = dict(layers=SIZES, inputCol="pixels", solver=solver)
    if given is not None:
        params["stepSize"] = given
    net = StackedAutoencoder(**params)._network("squared_error", [12, 6, 12], seed=1)
    assert net.isSet(net.stepSize) == (expected is not None)
    if expected is not None:
        assert net.getStepSize() == expected
