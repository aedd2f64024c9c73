"""pyspark.ml persistence of sparkann's Spark estimators and models, without pickle.

A saved folder is Spark ML's layout: ``metadata/`` (JSON: class, uid, Params) and, for a
model, ``data/`` (Parquet: the weights as ``array<double>`` and the objective history).
Loading reads JSON and Parquet only (checked by :mod:`sparkann.spark.model_files`).
"""
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter

from sparkann.spark.model_files import (SparkModelFileError, check_digest, load_metadata,
                                        load_weights, set_params, write_metadata)
from sparkann.spark.session import is_connect
from sparkann.spark.weights_frame import write_weights


def _json_params(instance):
    """The set Params as JSON values (vectors become lists)."""
    out = {}
    for param, value in instance._paramMap.items():
        out[param.name] = value.toArray().tolist() if hasattr(value, "toArray") else value
    return out


class ParamsWriter(MLWriter):
    """Writes ``metadata/`` (and ``data/`` for a model's weights) under ``path``."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def _handleOverwrite(self, path):
        # MLlib removes the folder through Py4J, which a Spark Connect session does not
        # have: there the DataFrame writers of metadata/ and data/ replace them instead.
        if not is_connect(self.sparkSession):
            super()._handleOverwrite(path)

    def saveImpl(self, path):
        weights = getattr(self.instance, "_weights", None)
        history = list(getattr(self.instance, "history", []))
        mode = "overwrite" if self.shouldOverwrite else "error"
        write_metadata(self.instance, path, self.sparkSession, _json_params(self.instance),
                       weights, history, mode)
        if weights is not None:
            write_weights(self.sparkSession, path + "/data", weights, history, mode)


class ParamsReader(MLReader):
    """Reads what :class:`ParamsWriter` wrote: JSON and Parquet only, nothing unpickled, and
    only into the class it was asked for (the class named in the file is never imported)."""

    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path):
        metadata = load_metadata(path, self.sparkSession)
        expected = self.cls.__module__ + "." + self.cls.__name__
        if metadata["class"] != expected:
            raise SparkModelFileError(f"{path} holds a {metadata['class']}, not a {expected}")
        if self.cls._saves_weights:
            weights, history = load_weights(path, self.sparkSession)
            check_digest(path, metadata, weights, history)
            instance = self.cls(weights=weights, history=history)
        else:
            check_digest(path, metadata)
            instance = self.cls()
        instance._resetUid(metadata["uid"])
        set_params(path, instance, metadata)
        if instance._saves_weights:
            instance._check_loaded(path)
        return instance


class PersistMixin(MLReadable, MLWritable):
    """pyspark.ml persistence: ``save``, ``write().overwrite().save``, ``Cls.load``."""

    #: a fitted model: its weights and history go to ``data/``, and load checks them
    _saves_weights = False

    def write(self):
        return ParamsWriter(self)

    @classmethod
    def read(cls):
        return ParamsReader(cls)
