"""The MLflow flavor of sparkann: log, save and load fitted models, and serve them through
``mlflow.pyfunc`` (``load_model``, ``spark_udf``, ``mlflow models serve``).

::

    import sparkann.mlflow
    with mlflow.start_run():
        info = sparkann.mlflow.log_model(model, name="model")
    scorer = mlflow.pyfunc.load_model(info.model_uri)
    scorer.predict(pandas_df)                      # a "features" column of arrays
    udf = mlflow.pyfunc.spark_udf(spark, info.model_uri)
    df.withColumn("prediction", udf(vector_to_array("features")))

The model is stored in its own files, never pickled: a single-machine estimator as JSON and
``.npz`` (:mod:`sparkann.persist`), a Spark model in Spark ML's layout (its ``save``), under
the model's ``model/`` folder. pyfunc reads either without Spark and predicts with the engine.

The signature's input is one column of feature arrays (named as the Spark model's features
column, ``features`` for the single-machine estimators); pyfunc also takes a DataFrame of
one numeric column per feature, or a 2-D array. Its output is the prediction: a Spark model's
``prediction`` (a double, or an array of doubles for several targets), an estimator's
``predict`` (a class index, or the targets). Needs ``pip install 'sparkann[mlflow]'``.
"""
import os

import numpy as np

from sparkann.fitted import CLASSIFIER, describe

FLAVOR_NAME = "sparkann"
DATA = "model"  # the folder of the model's own files inside the MLflow model


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise ImportError("the MLflow flavor needs MLflow: pip install 'sparkann[mlflow]'"
                          ) from None
    return mlflow


def _signature(fitted):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    name = fitted.input_name if fitted.style == "spark" else "features"
    inputs = Schema([ColSpec(Array(DataType.double), name)])
    if fitted.task == CLASSIFIER:
        out = DataType.double if fitted.style == "spark" else DataType.long
        outputs = Schema([ColSpec(out)])
    elif fitted.one_target:
        outputs = Schema([ColSpec(DataType.double)])
    else:
        outputs = Schema([ColSpec(Array(DataType.double))])
    return ModelSignature(inputs, outputs)


def save_model(model, path, mlflow_model=None, signature=None, input_example=None,
               pip_requirements=None, extra_pip_requirements=None, metadata=None):
    """Save a fitted sparkann model as an MLflow model in the new folder ``path``.

    ``signature`` defaults to the one described in this module's docstring.
    """
    mlflow = _mlflow()
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.models.utils import _save_example

    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path):
        raise FileExistsError(f"{path} exists: save_model writes a new folder; remove it or "
                              "choose another path")
    fitted = describe(model, "save")
    os.makedirs(path)
    model.save(os.path.join(path, DATA))
    mlflow_model = mlflow_model or Model()
    mlflow_model.signature = signature or _signature(fitted)
    if input_example is not None:
        _save_example(mlflow_model, input_example, path)
    if metadata is not None:
        mlflow_model.metadata = metadata
    from sparkann import __version__
    requirements = [f"sparkann=={__version__}"]
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module="sparkann.mlflow", data=DATA)
    mlflow_model.add_flavor(FLAVOR_NAME, data=DATA, sparkann_version=__version__,
                            model_class=f"{type(model).__module__}.{type(model).__name__}",
                            style=fitted.style, task=fitted.task)
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))
    with open(os.path.join(path, "requirements.txt"), "w") as f:
        f.write("\n".join(requirements + list(extra_pip_requirements or [])
                          if pip_requirements is None else pip_requirements) + "\n")


def log_model(model, name="model", signature=None, input_example=None,
              registered_model_name=None, **kwargs):
    """Log a fitted sparkann model to the active MLflow run (or start one); returns MLflow's
    ``ModelInfo``, whose ``model_uri`` loads it."""
    import inspect

    _mlflow()
    from mlflow.models import Model

    import sparkann.mlflow as flavor
    # MLflow 3 names a logged model with ``name``; MLflow 2 with ``artifact_path``
    where = ({"artifact_path": None, "name": name}
             if "name" in inspect.signature(Model.log).parameters else {"artifact_path": name})
    return Model.log(flavor=flavor, model=model, signature=signature,
                     input_example=input_example,
                     registered_model_name=registered_model_name, **where, **kwargs)


def _model_folder(model_uri):
    """The local folder of an MLflow model (downloaded when remote) and its flavor's conf."""
    from mlflow.models import Model
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    local = _download_artifact_from_uri(model_uri)
    conf = Model.load(local).flavors.get(FLAVOR_NAME)
    if conf is None:
        raise ValueError(f"{model_uri} is not a sparkann MLflow model (no {FLAVOR_NAME!r} "
                         "flavor in its MLmodel)")
    return local, conf


def load_model(model_uri):
    """The model logged or saved at ``model_uri``, as it was: a Spark model (needs an active
    SparkSession) or a single-machine estimator."""
    _mlflow()
    local, conf = _model_folder(model_uri)
    data = os.path.join(local, conf["data"])
    if conf["style"] == "spark":
        import importlib
        module, _, name = conf["model_class"].rpartition(".")
        return getattr(importlib.import_module(module), name).load(data)
    from sparkann.persist import load
    return load(data)


def _read_without_spark(data):
    """A single-machine estimator of the model files at ``data``, Spark models included."""
    if os.path.isdir(os.path.join(data, "metadata")):
        from sparkann.spark.local_model import load_local
        return load_local(data)
    from sparkann.persist import load
    return load(data)


class PyFuncModel:
    """What ``mlflow.pyfunc.load_model`` returns inside: the engine behind ``predict``."""

    def __init__(self, estimator, style):
        self.estimator, self.style = estimator, style
        self.fitted = describe(estimator, "serve")

    def _rows(self, model_input):
        n = self.fitted.n_features
        if hasattr(model_input, "columns"):  # pandas
            columns = list(model_input.columns)
            if len(columns) == 1 and model_input[columns[0]].dtype == object:
                values = model_input[columns[0]].to_list()
                lengths = {len(v) for v in values}
                if lengths - {n}:
                    raise ValueError(f"column {columns[0]!r}: expected arrays of {n} features, "
                                     f"received lengths {sorted(lengths)[:5]}")
                return np.asarray(values, dtype=np.float64).reshape(len(values), n)
            if len(columns) != n:
                raise ValueError(f"expected one column of feature arrays or {n} numeric "
                                 f"columns, received {len(columns)} columns {columns[:5]}")
            return model_input.to_numpy(dtype=np.float64)
        X = np.asarray(model_input, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != n:
            raise ValueError(f"expected rows of {n} features, received shape {X.shape}")
        return X

    def predict(self, model_input, params=None):
        X = self._rows(model_input)
        pred = self.estimator.predict(X)
        if self.style == "spark":
            pred = np.asarray(pred, dtype=np.float64)  # Spark's prediction column: doubles
            if pred.ndim == 2:
                return list(pred)  # one array per row (an array-typed column)
        elif pred.ndim == 2:
            return list(np.asarray(pred, dtype=np.float64))
        return pred

    def get_raw_model(self):
        return self.estimator


def _load_pyfunc(data):
    """pyfunc's entry point (``loader_module``): the model files at ``data``."""
    from mlflow.models import Model
    conf = Model.load(os.path.dirname(os.path.abspath(data))).flavors[FLAVOR_NAME]
    return PyFuncModel(_read_without_spark(data), conf["style"])


__all__ = ["save_model", "log_model", "load_model", "FLAVOR_NAME"]
