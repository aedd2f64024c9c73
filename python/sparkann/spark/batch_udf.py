"""Spark's ``predict_batch_udf`` over a sparkann model: its output types and the UDF."""
from pyspark.sql import types as T

from sparkann.fitted import describe
from sparkann.serving import MakePredictFn


def _spark_type(fitted, role):
    """The Spark SQL type of one output, as :class:`sparkann.serving.Predictor` returns it."""
    number = (T.DoubleType() if fitted.style == "spark" or fitted.dtype == "float64"
              else T.FloatType())
    if role == "label":
        return T.DoubleType() if fitted.style == "spark" else T.LongType()
    if role == "value" and fitted.one_target:
        return number
    return T.ArrayType(number)


def return_type(fitted, output=None):
    """The ``return_type`` for ``predict_batch_udf``: one output's type, or a struct of all."""
    roles = {name: role for role, name in fitted.outputs}
    if output is not None:
        return _spark_type(fitted, roles[output])
    return T.StructType([T.StructField(name, _spark_type(fitted, role))
                         for role, name in fitted.outputs])


def batch_udf(model, output=None, batch_size=1024):
    """A ``predict_batch_udf`` computing ``output`` (None: all outputs, as a struct) of a
    fitted sparkann model from one column of feature arrays (``vector_to_array`` turns a
    vector column into one)."""
    from pyspark.ml.functions import predict_batch_udf

    fitted = describe(model, "serve")
    make = MakePredictFn(fitted, output)  # checks the output name
    return predict_batch_udf(make, return_type=return_type(fitted, output),
                             batch_size=batch_size, input_tensor_shapes=[[fitted.n_features]])
