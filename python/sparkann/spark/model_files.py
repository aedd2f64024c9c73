"""Integrity checks of saved Spark models: format version and a digest of the weights.

The writer records ``sparkann`` (the format version) and ``weightsSha256`` (SHA-256 of the
float64 weights followed by the objective history) in ``metadata/``; the reader refuses a
model whose version it does not know, whose metadata or data files are unreadable, truncated
or missing, or whose weights do not match the digest. Only JSON and Parquet are read.
"""
import hashlib

import numpy as np

FORMAT_VERSION = 2  # 1: no digest


class SparkModelFileError(ValueError):
    """A saved Spark model that is missing, truncated, altered, or of another version."""


def weights_digest(weights, history):
    h = hashlib.sha256(np.ascontiguousarray(weights, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(history, dtype="<f8").tobytes())
    return h.hexdigest()


def metadata_extra(weights, history):
    """What the writer adds to Spark ML's metadata JSON."""
    extra = {"sparkann": FORMAT_VERSION}
    if weights is not None:
        extra["weightsSha256"] = weights_digest(weights, history)
    return extra


def load_metadata(path, spark):
    """Spark ML's metadata JSON of the model at ``path``, with its format version checked."""
    from pyspark.ml.util import DefaultParamsReader
    try:
        metadata = DefaultParamsReader.loadMetadata(path, spark)
    except ValueError as e:  # json.JSONDecodeError
        raise SparkModelFileError(f"{path}/metadata: not valid JSON (truncated or edited?): {e}"
                                  ) from None
    except Exception as e:  # missing directory: Spark's AnalysisException or a Py4J error
        raise SparkModelFileError(f"{path}: not a saved sparkann model (cannot read "
                                  f"metadata/: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(metadata, dict) or "class" not in metadata:
        raise SparkModelFileError(f"{path}/metadata: not Spark ML metadata")
    version = metadata.get("sparkann")
    if version != FORMAT_VERSION:
        raise SparkModelFileError(f"{path}/metadata: sparkann model format version {version!r} "
                                  f"is not supported; this sparkann reads version "
                                  f"{FORMAT_VERSION}")
    return metadata


def load_weights(path, spark, metadata):
    """``(weights, history)`` from ``path/data``, checked against the metadata's digest."""
    try:
        row = spark.read.parquet(path + "/data").head()
    except Exception as e:  # truncated or missing Parquet: Spark reports it as a Java error
        raise SparkModelFileError(f"{path}/data: unreadable weights (truncated or corrupt?): "
                                  f"{str(e).splitlines()[0][:200]}") from None
    if row is None or row.weights is None:
        raise SparkModelFileError(f"{path}/data holds no weights")
    weights = np.array(row.weights, dtype=np.float64)
    history = list(row.objectiveHistory or [])
    if weights_digest(weights, history) != metadata.get("weightsSha256"):
        raise SparkModelFileError(f"{path}/data: the weights do not match the SHA-256 recorded "
                                  "in metadata/ (altered or corrupt)")
    return weights, history
