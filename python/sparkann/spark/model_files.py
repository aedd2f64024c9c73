"""Saved Spark models and estimators: Spark ML's metadata JSON, sealed by a SHA-256.

The writer produces Spark ML's own metadata (``class``, ``timestamp``, ``sparkVersion``,
``uid``, ``paramMap``, ``defaultParamMap``) plus ``sparkann`` (the format version) and
``sha256``: the SHA-256 of every other metadata field (canonical JSON) followed by the float64
weights and the objective history. So an edit of anything that changes predictions (the
class, ``layers``, ``activation``, ``dtype``, ``blockSize``, ``thresholds``, the weights)
is refused. The reader refuses a model whose version it does not know, whose metadata or
data files are unreadable, truncated or missing, whose digest does not match, or whose Params
are unknown or cannot work. Only JSON and Parquet are read; no class named in a file is
imported.
"""
import hashlib
import json
import time

import numpy as np

FORMAT_VERSION = 3  # 1: no digest; 2: a digest of the weights only
DIGEST_KEY = "sha256"


class SparkModelFileError(ValueError):
    """A saved Spark model that is missing, truncated, altered, or of another version."""


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def model_digest(metadata, weights=None, history=()):
    """SHA-256 of ``metadata`` (without its own ``sha256``), then the weights and history."""
    h = hashlib.sha256(_canonical({k: v for k, v in metadata.items() if k != DIGEST_KEY})
                       .encode())
    if weights is not None:
        h.update(np.ascontiguousarray(weights, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(history, dtype="<f8").tobytes())
    return h.hexdigest()


def write_metadata(instance, path, spark, param_map, weights=None, history=(),
                   mode="error"):
    """Write ``path/metadata`` as Spark ML does, sealed with :func:`model_digest` (``mode``:
    the DataFrame writer's save mode)."""
    metadata = {
        "class": type(instance).__module__ + "." + type(instance).__name__,
        "timestamp": int(round(time.time() * 1000)),
        "sparkVersion": spark.version,
        "uid": instance.uid,
        "paramMap": param_map,
        "defaultParamMap": {p.name: v for p, v in instance._defaultParamMap.items()},
        "sparkann": FORMAT_VERSION,
    }
    metadata = json.loads(_canonical(metadata))  # the values exactly as a reader sees them
    metadata[DIGEST_KEY] = model_digest(metadata, weights, history)
    spark.createDataFrame([(json.dumps(metadata, separators=(",", ":")),)], "value string") \
        .coalesce(1).write.mode(mode).text(path + "/metadata")


_FIELDS = {"class": str, "uid": str, "sparkVersion": str, "paramMap": dict,
           "defaultParamMap": dict}


def load_metadata(path, spark):
    """The metadata JSON of the model at ``path``, with its format version and fields checked
    (not yet its digest: that needs the weights, see :func:`check_digest`)."""
    from pyspark.ml.util import DefaultParamsReader
    try:
        metadata = DefaultParamsReader.loadMetadata(path, spark)
    except (ValueError, RecursionError) as e:  # json.JSONDecodeError, deeply nested JSON
        raise SparkModelFileError(f"{path}/metadata: not valid JSON (truncated or edited?): "
                                  f"{str(e)[:200]}") from None
    except Exception as e:  # missing directory: Spark's AnalysisException or a Py4J error
        raise SparkModelFileError(f"{path}: not a saved sparkann model (cannot read "
                                  f"metadata/: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(metadata, dict) or "class" not in metadata:
        raise SparkModelFileError(f"{path}/metadata: not Spark ML metadata")
    version = metadata.get("sparkann")
    if version != FORMAT_VERSION:
        older = (" (saved by an earlier sparkann, whose digest did not cover the Params, which "
                 "this one cannot check: use that version to read it, or train and save it "
                 "again)" if version in (1, 2) else "")
        raise SparkModelFileError(f"{path}/metadata: sparkann model format version {version!r} "
                                  f"is not supported; this sparkann reads version "
                                  f"{FORMAT_VERSION}{older}")
    for name, kind in _FIELDS.items():
        if not isinstance(metadata.get(name), kind):
            raise SparkModelFileError(f"{path}/metadata: {name!r} is "
                                      f"{metadata.get(name)!r}, expected a "
                                      f"{'JSON object' if kind is dict else 'string'}")
    return metadata


def load_weights(path, spark):
    """``(weights, history)`` from ``path/data``."""
    try:
        row = spark.read.parquet(path + "/data").head()
    except Exception as e:  # truncated or missing Parquet: Spark reports it as a Java error
        raise SparkModelFileError(f"{path}/data: unreadable weights (truncated or corrupt?): "
                                  f"{str(e).splitlines()[0][:200]}") from None
    if row is None or row.weights is None:
        raise SparkModelFileError(f"{path}/data holds no weights")
    return np.array(row.weights, dtype=np.float64), list(row.objectiveHistory or [])


def check_digest(path, metadata, weights=None, history=()):
    if model_digest(metadata, weights, history) != metadata.get(DIGEST_KEY):
        what = "metadata/ and data/ do" if weights is not None else "metadata/ does"
        raise SparkModelFileError(f"{path}: {what} not match the SHA-256 recorded in "
                                  "metadata/ (altered or corrupt)")


def set_params(path, instance, metadata):
    """Set the saved Params on ``instance``: unknown names and unconvertible values are
    :class:`SparkModelFileError` naming the Param."""
    for section, setter in (("paramMap", instance.set),
                            ("defaultParamMap", lambda p, v: instance._setDefault(**{p.name: v}))):
        for name, value in metadata[section].items():
            if not instance.hasParam(name):
                raise SparkModelFileError(f"{path}/metadata: unknown Param {name!r} in "
                                          f"{section} for {type(instance).__name__}")
            try:
                setter(instance.getParam(name), value)
            except (TypeError, ValueError) as e:
                raise SparkModelFileError(f"{path}/metadata: {section} {name}={value!r} cannot "
                                          f"be used ({e})") from None
