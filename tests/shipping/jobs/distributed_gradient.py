"""A spark-submit job: the gradient of a small network summed over partitions on the
executors with ann_core, compared with the same gradient computed on the driver.

Prints one line ``RESULT <json>`` with where each side imported sparkann from.
"""
import json
import sys

import numpy as np
from pyspark.sql import SparkSession

import ann_core
import sparkann
from sparkann.spark.shipping import ship_to_executors

STAGES = [("dense", 16), ("activation", "tanh"), ("dense", 3), ("loss", "softmax_cross_entropy")]


def partition_gradient(rows):
    import os
    import sys

    import ann_core
    import sparkann

    rows = list(rows)
    net = ann_core.Network(5, STAGES, dtype="float64")
    grad = np.zeros(net.n_weights)
    loss = 0.0
    if rows:
        X = np.ascontiguousarray([r[0] for r in rows], dtype=np.float64)
        y = np.asarray([r[1] for r in rows], dtype=np.int64)
        loss, _ = net.loss_grad(WEIGHTS, X, y, grad)
    yield (loss, grad, len(rows),
           {"python": sys.executable, "ann_core": ann_core.__path__[0],
            "sparkann": sparkann.__file__, "pid": os.getpid()})


spark = SparkSession.builder.appName("sparkann-distributed-gradient").getOrCreate()
sc = spark.sparkContext
shipped = ship_to_executors(sc)
rng = np.random.default_rng(7)
X = rng.standard_normal((400, 5))
y = rng.integers(0, 3, 400)
net = ann_core.Network(5, STAGES, dtype="float64")
WEIGHTS = rng.standard_normal(net.n_weights) * 0.3
expected = np.zeros(net.n_weights)
expected_loss, _ = net.loss_grad(WEIGHTS, X, y, expected)

parts = sc.parallelize([(X[i].tolist(), int(y[i])) for i in range(len(y))], 4)
results = parts.mapPartitions(partition_gradient).collect()
loss = sum(r[0] for r in results)
grad = np.sum([r[1] for r in results], axis=0)
print("RESULT " + json.dumps({
    "rows": sum(r[2] for r in results),
    "loss_error": abs(loss - expected_loss) / abs(expected_loss),
    "grad_error": float(np.max(np.abs(grad - expected)) / np.max(np.abs(expected))),
    "driver": {"python": sys.executable, "sparkann": sparkann.__file__,
               "ann_core": ann_core.__path__[0], "shipped": shipped},
    "executors": [r[3] for r in results]}))
spark.stop()
