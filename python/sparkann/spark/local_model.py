"""A model saved by the Spark estimators, read without Spark, as a single-machine estimator.

``MultilayerPerceptronClassificationModel.save(path)`` writes Spark ML's layout:
``metadata/`` (one line of JSON: class, Params, format version, a SHA-256 over all of it and
the weights) and
``data/`` (Parquet: the weights and the objective history). This module reads both with json
and pyarrow (no SparkSession, no JVM) and returns the ``sparkann.MLPClassifier`` or
``MLPRegressor`` of the same network and weights, so the same predictions: what the command
line's ``evaluate`` and ``predict`` do with such a folder.
"""
import glob
import json
import os

import numpy as np

from sparkann.hyperparams import array_dtype
from sparkann.spark.model_files import FORMAT_VERSION, SparkModelFileError, check_digest

# saved class -> single-machine estimator class
ESTIMATORS = {"sparkann.spark.model.MultilayerPerceptronClassificationModel": "MLPClassifier",
              "sparkann.spark.model.MultilayerPerceptronRegressionModel": "MLPRegressor"}


def read_metadata(path):
    """The metadata JSON of the Spark model at ``path``, its class and version checked."""
    lines = []
    for name in sorted(glob.glob(os.path.join(path, "metadata", "part-*"))):
        with open(name, errors="replace") as f:
            lines += [line for line in f if line.strip()]
    if not lines:
        raise SparkModelFileError(f"{path}/metadata holds no JSON (truncated?)")
    try:
        metadata = json.loads(lines[0])
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested too deeply
        raise SparkModelFileError(f"{path}/metadata: not valid JSON (truncated or edited?): "
                                  f"{str(e)[:200]}") from None
    cls = metadata.get("class") if isinstance(metadata, dict) else None
    if cls not in ESTIMATORS:
        hint = ""
        if isinstance(cls, str) and cls.startswith("org.apache.spark.ml."):
            hint = (f": a Spark MLlib model, to load in Spark with {cls.replace('org.apache.', '')}"
                    f".load(path)")
        raise SparkModelFileError(f"{path} holds a {cls}, not a model of sparkann.spark{hint}")
    if metadata.get("sparkann") != FORMAT_VERSION:
        raise SparkModelFileError(f"{path}/metadata: sparkann model format version "
                                  f"{metadata.get('sparkann')!r} is not supported; this sparkann "
                                  f"reads version {FORMAT_VERSION}")
    return metadata


def read_weights(path, metadata):
    """``(weights, history)`` from ``path/data`` (Parquet), checked with the metadata against
    its digest."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SparkModelFileError(f"{path} holds a model saved by sparkann.spark; reading it "
                                  "without Spark needs pyarrow: pip install "
                                  "'sparkann[spark]'") from None
    try:
        table = pq.read_table(os.path.join(path, "data"), columns=["weights", "objectiveHistory"])
    except (OSError, ValueError, KeyError) as e:  # missing, truncated or foreign Parquet
        raise SparkModelFileError(f"{path}/data: unreadable weights (truncated or corrupt?): "
                                  f"{str(e).splitlines()[0][:200]}") from None
    if table.num_rows != 1 or not table.column("weights")[0].is_valid:
        raise SparkModelFileError(f"{path}/data holds {table.num_rows} rows, expected one row "
                                  "of weights")
    weights = np.asarray(table.column("weights")[0].values.to_numpy(zero_copy_only=False),
                         dtype=np.float64)
    history = table.column("objectiveHistory")[0].as_py() or []
    check_digest(path, metadata, weights, history)
    return weights, history


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _predict_params(path, metadata):
    """The saved Params that predictions use, each checked; a Param that only the Spark model
    can apply (``thresholds``) is refused rather than ignored."""
    sections = [metadata.get(name) for name in ("defaultParamMap", "paramMap")]
    if not all(isinstance(section, dict) for section in sections):
        raise SparkModelFileError(f"{path}/metadata: paramMap and defaultParamMap must be JSON "
                                  "objects")
    params = {**sections[0], **sections[1]}
    layers = params.get("layers")
    if not isinstance(layers, list) or len(layers) < 2 or not all(map(_is_size, layers)):
        raise SparkModelFileError(f"{path}/metadata: layers {layers!r} must be at least two "
                                  "positive integers (input and output sizes)")
    if not _is_size(params.get("blockSize", 128)):
        raise SparkModelFileError(f"{path}/metadata: blockSize {params.get('blockSize')!r} "
                                  "must be a positive integer")
    if params.get("thresholds") is not None:
        raise SparkModelFileError(f"{path}/metadata: the model sets thresholds "
                                  f"{params['thresholds']}, which only the Spark model applies; "
                                  "predict with it in Spark")
    return params


def load_local(path):
    """The single-machine estimator of the Spark model saved at ``path``.

    Returns an ``MLPClassifier`` (``classes_`` 0..numClasses-1) or an ``MLPRegressor`` with
    the saved layers, activation, dtype and weights; ``history_`` holds the objective history.

    Raises
    ------
    SparkModelFileError
        If the folder is not a readable sparkann Spark model (the message says why).
    """
    from sparkann.estimator import MLPClassifier, MLPRegressor
    from sparkann.optim import History

    metadata = read_metadata(path)
    weights, history = read_weights(path, metadata)  # the digest covers the Params too
    params = _predict_params(path, metadata)
    layers = params["layers"]
    cls = {"MLPClassifier": MLPClassifier,
           "MLPRegressor": MLPRegressor}[ESTIMATORS[metadata["class"]]]
    try:
        estimator = cls(hidden_layer_sizes=tuple(layers[1:-1]),
                        activation=params.get("activation", "sigmoid"),
                        dtype=params.get("dtype", "float32"),
                        block_size=params.get("blockSize", 128))
        estimator._validate_params()
        estimator._start(layers[0], layers[-1])  # the topology (and throwaway initial weights)
    except (ValueError, TypeError, MemoryError) as e:
        raise SparkModelFileError(f"{path}/metadata: {e}") from None
    if weights.shape != (estimator.topology_.n_weights,):
        raise SparkModelFileError(f"{path}/data: {weights.size} weights, layers {layers} need "
                                  f"{estimator.topology_.n_weights}")
    estimator.weights_ = weights.astype(array_dtype(estimator.dtype))
    estimator.history_ = History()
    for loss in history:
        estimator.history_.append(float(loss))
    estimator.n_iter_ = len(history)
    if history:
        estimator.loss_ = float(history[-1])
    if cls is MLPClassifier:
        estimator.classes_ = np.arange(layers[-1])
    else:
        estimator._y_1d = layers[-1] == 1
    return estimator
