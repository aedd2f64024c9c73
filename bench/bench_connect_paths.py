"""Classic-session cost of the paths a Spark Connect session needs, against the classic ones.

1. ``transform``: weights in the mapInArrow function's closure (the one path now) against a
   ``SparkContext.broadcast`` read by the same function (the classic-only way).
2. ``gradient``: one ``DistributedLossGrad`` evaluation over blocks cached with an RDD of
   handles and ``treeAggregate`` against a cached DataFrame of handles and the slice
   reduce-scatter (``cache_blocks(frame=True)``), interleaved, same data and weights.

Prints the median seconds of ``--repeats`` runs per network and path. Run it alone (hold the
bench lock): ``python bench/bench_connect_paths.py --what transform gradient``.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_spark import local_session  # noqa: E402

NETWORKS = {"A": [784, 256, 128, 10], "B": [784, 1024, 1024, 10],
            "C": [784, 2500, 2000, 1500, 1000, 500, 10]}


def _data(rows):
    from sparkann.datasets import load_fashion_mnist
    X, y = load_fashion_mnist(kind="train", dtype="float64")
    return X[:rows], y[:rows]


def time_transform(spark, layers, df, repeats, dtype):
    from sparkann.spark import MultilayerPerceptronClassificationModel
    from sparkann.spark.model import _predict_batches
    from pyspark.sql import types as T
    from pyspark.ml.linalg import VectorUDT
    from sparkann.topology import Topology
    w = Topology.from_sizes(layers).init_weights(seed=1, dtype="float64")
    model = MultilayerPerceptronClassificationModel(weights=w).setLayers(layers).setDtype(dtype)
    model._checked_input = True   # time the prediction pass only
    sc = spark.sparkContext

    def closure():
        model.transform(df).write.format("noop").mode("overwrite").save()

    def broadcast():
        bc = sc.broadcast(w.astype(dtype))
        topology, n = model.topology, layers[0]
        outs = [("raw", "rawPrediction"), ("prob", "probability"), ("pred", "prediction")]

        def predict(batches):
            return _predict_batches(batches, weights=bc, topology=topology, dtype=dtype,
                                    features_col="features", n_features=n, block_size=128,
                                    kind="class", thresholds=None, out_names=outs)

        schema = T.StructType(df.schema.fields + [
            T.StructField("rawPrediction", VectorUDT()), T.StructField("probability",
                                                                       VectorUDT()),
            T.StructField("prediction", T.DoubleType())])
        try:
            df.mapInArrow(predict, schema).write.format("noop").mode("overwrite").save()
        finally:
            bc.destroy()

    return _interleaved({"closure": closure, "broadcast": broadcast}, repeats)


def time_gradient(spark, layers, df, repeats, dtype):
    from sparkann.spark.data import cache_blocks
    from sparkann.spark.gradient import DistributedLossGrad
    from sparkann.topology import Topology
    topology = Topology.from_sizes(layers)
    w = topology.init_weights(seed=1, dtype="float64")
    runs, cached = {}, []
    for name, frame in (("treeAggregate", False), ("reduce-scatter", True)):
        blocks = cache_blocks(df, "features", "label", layers[0], layers[-1], dtype=dtype,
                              frame=frame)
        cached.append(blocks)
        loss_grad = DistributedLossGrad(blocks, topology, dtype, 128)
        runs[name] = (lambda lg=loss_grad: lg(w))
    try:
        results = {name: run() for name, run in runs.items()}   # warm: workers, engines
        a, b = results.values()
        assert abs(a[0] - b[0]) <= 1e-9 * abs(a[0]) and np.allclose(a[1], b[1], atol=1e-6)
        return _interleaved(runs, repeats)
    finally:
        for blocks in cached:
            blocks.unpersist()


def _interleaved(runs, repeats):
    seconds = {name: [] for name in runs}
    for name, run in runs.items():
        run()    # warm
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", nargs="+", default=["transform", "gradient"])
    parser.add_argument("--networks", nargs="+", default=["A", "C"])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    spark = local_session("bench_connect_paths", **{"spark.driver.memory": "6g"})
    from sparkann.spark.data import dataframe_from_numpy
    X, y = _data(args.rows)
    df = dataframe_from_numpy(spark, X, y, num_partitions=args.partitions).cache()
    df.count()
    print(f"rows {args.rows}, partitions {args.partitions}, {args.dtype}, local[2], median "
          f"of {args.repeats}")
    for what in args.what:
        for net in args.networks:
            layers = NETWORKS[net]
            timing = (time_transform if what == "transform" else time_gradient)(
                spark, layers, df, args.repeats, args.dtype)
            print(f"{what:9s} {net} {layers}: " + ", ".join(
                f"{name} {s:.3f} s" for name, s in timing.items()), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
