"""How long one synchronous full-batch iteration takes on n Spark workers, and the best n.

The model and its formulas are in :mod:`sparkann.scaling.model`; :mod:`~sparkann.scaling.fit`
calibrates it from measured seconds; :mod:`~sparkann.scaling.flops` measures one worker's FLOP
rate. ``sparkann scale`` (also ``python -m sparkann.scaling``) is :mod:`sparkann.scaling.cli`,
which alone may start Spark (``--calibrate``): the jobs that calibrate the model on a live
cluster are in ``sparkann.spark.calibration``. Nothing else here imports pyspark.
"""
from sparkann.scaling.fit import ULANOV_BENCHMARK, fit_parameters, ulanov_validation
from sparkann.scaling.flops import measure_flop_rate
from sparkann.scaling.model import (AGGREGATIONS, BROADCAST_BLOCK_BYTES, SLICE_VALUES, Parameters,
                                    ScalingModel, slice_count, tree_levels, weights_of)
from sparkann.scaling.units import parse_bandwidth, parse_duration, parse_flops

__all__ = [
    "AGGREGATIONS", "BROADCAST_BLOCK_BYTES", "SLICE_VALUES", "ULANOV_BENCHMARK", "Parameters",
    "ScalingModel", "fit_parameters", "measure_flop_rate", "parse_bandwidth", "parse_duration",
    "parse_flops", "slice_count", "tree_levels", "ulanov_validation", "weights_of",
]
