"""Model files: loading runs no code, and damaged files are refused (single-machine and Spark)."""
import glob
import json
import os
import pickle

import numpy as np
import pytest

from sparkann.estimator import MLPClassifier
from sparkann.persist import ModelFileError, load


class Evil:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------ single-machine format

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=5,
                        random_state=0).fit(X, y)
    path = str(tmp_path_factory.mktemp("m") / "model")
    clf.save(path)
    return clf, path


def _copy(path, tmp_path):
    import shutil
    target = str(tmp_path / "copy")
    shutil.copytree(path, target)
    return target


def test_every_byte_flip_of_the_weights_is_refused_or_harmless(saved, tmp_path):
    """Flip each of 300 bytes spread over weights.npz: the load is refused, or (a byte
    outside the array, e.g. a zip timestamp) gives exactly the saved weights."""
    clf, path = saved
    target = _copy(path, tmp_path)
    weights = os.path.join(target, "weights.npz")
    original = open(weights, "rb").read()
    refused = 0
    for i in np.linspace(0, len(original) - 1, 300).astype(int):
        data = bytearray(original)
        data[i] ^= 0x5A
        open(weights, "wb").write(bytes(data))
        try:
            loaded = load(target)
        except ModelFileError as error:
            assert str(error)
            refused += 1
        else:
            np.testing.assert_array_equal(loaded.weights_, clf.weights_)
    assert refused > 200
    print(f"\nweights.npz byte flips: {refused}/300 refused, the rest harmless")


def test_every_truncation_of_the_metadata_is_refused(saved, tmp_path):
    _, path = saved
    target = _copy(path, tmp_path)
    meta = os.path.join(target, "model.json")
    text = open(meta).read()
    for cut in range(0, len(text) - 1, max(1, len(text) // 60)):
        open(meta, "w").write(text[:cut])
        with pytest.raises(ModelFileError):
            load(target)


# ------------------------------------------------------------------------------ Spark format

@pytest.fixture(scope="module")
def spark_model(spark, tmp_path_factory):
    from sparkann.spark import MultilayerPerceptronClassifier
    from sparkann.spark.data import dataframe_from_numpy
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 4))
    df = dataframe_from_numpy(spark, X, (X[:, 0] > 0).astype(float), num_partitions=2)
    model = MultilayerPerceptronClassifier(layers=[4, 5, 2], maxIter=5, seed=1).fit(df)
    path = str(tmp_path_factory.mktemp("spark") / "model")
    model.save(path)
    return model, path


def _spark_copy(path, tmp_path):
    import shutil
    target = str(tmp_path / "copy")
    shutil.copytree(path, target)
    for crc in glob.glob(os.path.join(target, "**", ".*.crc"), recursive=True):
        os.remove(crc)  # as if copied by a tool that drops Hadoop's checksum files
    return target


def _edit_metadata(target, change):
    part = glob.glob(os.path.join(target, "metadata", "part-*"))[0]
    meta = json.loads(open(part).read())
    change(meta)
    open(part, "w").write(json.dumps(meta))


def _load(path):
    from sparkann.spark.model import MultilayerPerceptronClassificationModel
    return MultilayerPerceptronClassificationModel.load(path)


def test_spark_round_trip_checks_out(spark_model, tmp_path):
    model, path = spark_model
    loaded = _load(_spark_copy(path, tmp_path))
    np.testing.assert_array_equal(loaded._weights, model._weights)


@pytest.mark.parametrize("change, fragment", [
    (lambda m: m.update(sparkann=99), "format version 99 is not supported"),
    (lambda m: m.pop("sparkann"), "format version None is not supported"),
    (lambda m: m.update(weightsSha256="0" * 64), "SHA-256"),
    (lambda m: m.update(**{"class": "os.system"}), "holds a os.system"),
])
def test_spark_metadata_tampering_is_refused(spark_model, tmp_path, change, fragment):
    _, path = spark_model
    target = _spark_copy(path, tmp_path)
    _edit_metadata(target, change)
    with pytest.raises(ValueError, match=fragment):
        _load(target)


def _sealed(model, change):
    """An edit that also recomputes the digest: reaches the checks behind the digest."""
    from sparkann.spark.model_files import model_digest

    def edit(meta):
        change(meta)
        meta["sha256"] = model_digest(meta, model._weights, model.history)
    return edit


def _set(section, **values):
    return lambda m: m[section].update(values)


@pytest.mark.parametrize("change", [
    _set("defaultParamMap", activation="relu"),
    _set("paramMap", activation="tanh"),
    _set("paramMap", layers=[4, 5, 3]),
    _set("defaultParamMap", dtype="float64"),
    _set("defaultParamMap", blockSize=7),
    _set("paramMap", thresholds=[0.9, 0.1]),
    _set("paramMap", predictionCol="other"),
    lambda m: m.update(uid="MultilayerPerceptronClassificationModel_other"),
    lambda m: m.update(timestamp=0),
], ids=["activation default", "activation", "layers", "dtype", "blockSize", "thresholds",
        "predictionCol", "uid", "timestamp"])
def test_spark_metadata_edits_are_refused_by_the_digest(spark_model, tmp_path, change):
    from sparkann.spark import SparkModelFileError
    _, path = spark_model
    target = _spark_copy(path, tmp_path)
    _edit_metadata(target, change)
    with pytest.raises(SparkModelFileError, match="do not match the SHA-256 recorded"):
        _load(target)


@pytest.mark.parametrize("change, fragment", [
    (_set("paramMap", nonsense=1), "unknown Param 'nonsense' in paramMap"),
    (_set("defaultParamMap", nonsense=1), "unknown Param 'nonsense' in defaultParamMap"),
    (_set("paramMap", layers="abc"), "paramMap layers='abc' cannot be used"),
    (_set("paramMap", layers=[4, 0, 2]), "layers must hold at least two positive sizes"),
    (_set("paramMap", layers=[4, 6, 2]), "the model needs 44 weights"),
    (_set("defaultParamMap", blockSize=0), "blockSize must be >= 1, received 0"),
    (_set("defaultParamMap", blockSize=2.5), "defaultParamMap blockSize=2.5 cannot be used"),
    (_set("defaultParamMap", blockSize="big"), "blockSize='big' cannot be used"),
    (_set("defaultParamMap", dtype="float16"), "dtype must be one of"),
    (_set("defaultParamMap", activation="nope"), "nope"),
    (_set("paramMap", thresholds=[0.5]), "thresholds \\[0.5\\] must be 2 values"),
    (lambda m: m.update(paramMap=[1]), "'paramMap' is \\[1\\], expected a JSON object"),
    (lambda m: m.update(**{"class": "sparkann.spark.model."
                           "MultilayerPerceptronRegressionModel"}),
     "holds a sparkann.spark.model.MultilayerPerceptronRegressionModel, not a"),
])
def test_spark_metadata_that_cannot_work_is_refused_at_load(spark_model, tmp_path, change,
                                                            fragment):
    from sparkann.spark import SparkModelFileError
    model, path = spark_model
    target = _spark_copy(path, tmp_path)
    _edit_metadata(target, _sealed(model, change))
    with pytest.raises(SparkModelFileError, match=fragment):
        _load(target)


@pytest.mark.parametrize("change, fragment", [
    (_set("paramMap", layers="abc"), "layers 'abc' must be at least two positive integers"),
    (_set("paramMap", layers=[4, 0, 2]), "must be at least two positive integers"),
    (_set("defaultParamMap", blockSize=2.5), "blockSize 2.5 must be a positive integer"),
    (_set("defaultParamMap", blockSize=0), "blockSize 0 must be a positive integer"),
    (_set("defaultParamMap", dtype="float16"), "dtype"),
    (_set("defaultParamMap", activation="nope"), "nope"),
    (_set("paramMap", thresholds=[0.9, 0.1]), "thresholds \\[0.9, 0.1\\], which only the "
                                              "Spark model applies"),
    (lambda m: m.update(paramMap=[1]), "must be JSON objects"),
])
def test_spark_model_read_without_spark_refuses_params_that_cannot_work(spark_model, tmp_path,
                                                                        change, fragment):
    from sparkann.spark import SparkModelFileError
    from sparkann.spark.local_model import load_local
    model, path = spark_model
    target = _spark_copy(path, tmp_path)
    _edit_metadata(target, _sealed(model, change))
    with pytest.raises(SparkModelFileError, match=fragment):
        load_local(target)


def test_spark_model_read_without_spark_refuses_deeply_nested_json(spark_model, tmp_path):
    from sparkann.spark import SparkModelFileError
    from sparkann.spark.local_model import load_local
    _, path = spark_model
    target = _spark_copy(path, tmp_path)
    part = glob.glob(os.path.join(target, "metadata", "part-*"))[0]
    open(part, "w").write("[" * 100000 + "]" * 100000)
    with pytest.raises(SparkModelFileError, match="not valid JSON"):
        load_local(target)
    assert load_local(_spark_copy(path, tmp_path / "again")).n_features_in_ == 4


def test_spark_large_block_size_still_loads(spark_model, tmp_path):
    model, path = spark_model
    target = _spark_copy(path, tmp_path)
    _edit_metadata(target, _sealed(model, _set("defaultParamMap", blockSize=10**9)))
    assert _load(target).getBlockSize() == 10**9


def test_spark_deeply_nested_or_older_metadata_is_refused(spark_model, tmp_path):
    from sparkann.spark import SparkModelFileError
    model, path = spark_model
    target = _spark_copy(path, tmp_path)
    _edit_metadata(target, lambda m: m.update(sparkann=2))
    with pytest.raises(SparkModelFileError,
                       match="version 2 is not supported.*train and save it again"):
        _load(target)
    part = glob.glob(os.path.join(target, "metadata", "part-*"))[0]
    open(part, "w").write("[" * 100000 + "]" * 100000)
    with pytest.raises(SparkModelFileError, match="not valid JSON"):
        _load(target)


def test_spark_truncated_metadata_is_refused(spark_model, tmp_path):
    _, path = spark_model
    target = _spark_copy(path, tmp_path)
    part = glob.glob(os.path.join(target, "metadata", "part-*"))[0]
    text = open(part).read()
    open(part, "w").write(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        _load(target)


def test_spark_tampered_weights_are_refused(spark, spark_model, tmp_path):
    model, path = spark_model
    target = _spark_copy(path, tmp_path)
    w = model._weights.copy()
    w[0] += 1e-3
    spark.createDataFrame([(w.tolist(), list(model.history))],
                          "weights array<double>, objectiveHistory array<double>") \
        .coalesce(1).write.mode("overwrite").parquet(target + "/data")
    with pytest.raises(ValueError, match="do not match the SHA-256"):
        _load(target)


def test_spark_truncated_or_missing_weights_are_refused(spark_model, tmp_path):
    _, path = spark_model
    target = _spark_copy(path, tmp_path)
    part = glob.glob(os.path.join(target, "data", "part-*.parquet"))[0]
    data = open(part, "rb").read()
    open(part, "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="unreadable weights"):
        _load(target)
    import shutil
    shutil.rmtree(os.path.join(target, "data"))
    with pytest.raises(ValueError, match="unreadable weights"):
        _load(target)


def test_spark_load_never_unpickles(spark_model, tmp_path):
    _, path = spark_model
    target = _spark_copy(path, tmp_path)
    marker = str(tmp_path / "ran")
    part = glob.glob(os.path.join(target, "data", "part-*.parquet"))[0]
    open(part, "wb").write(pickle.dumps(Evil(marker)))
    with pytest.raises(ValueError):
        _load(target)
    open(glob.glob(os.path.join(target, "metadata", "part-*"))[0], "wb").write(
        pickle.dumps(Evil(marker)))
    with pytest.raises(ValueError):
        _load(target)
    assert not os.path.exists(marker)
