"""Batch inference speed on Fashion-MNIST's 60,000 x 784 training images, local[2]: rows per
second of

- our ``transform`` (float32, and float64 as MLlib computes),
- Spark MLlib's ``transform`` with the same weights (float64),
- our model through Spark's ``predict_batch_udf`` (``model.predict_batch_udf``),
- onnxruntime on the exported graph, in this one process (no Spark),

for networks A = [784, 256, 128, 10] and B = [784, 1024, 1024, 10] (those of
bench/bench_spark.py). Every Spark measurement writes all output columns to Spark's ``noop``
sink from one cached DataFrame (a vector column, as MLlib needs); the systems alternate, each
measured ``--runs`` times, and the median is reported with the spread. Usage::

    flock /work/bench.lock python bench/bench_inference.py [--runs 3] [--networks A,B]
"""
import argparse
import json
import statistics
import time

import numpy as np

from bench_spark import local_session  # bench/ is the script's folder: on sys.path

NETWORKS = {"A": [784, 256, 128, 10], "B": [784, 1024, 1024, 10]}


def seconds(action):
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def noop(df):
    return lambda: df.write.format("noop").mode("overwrite").save()


def models(spark, layers, train):
    """MLlib's model and ours (float32 and float64) holding the same weights."""
    from pyspark.ml.classification import MultilayerPerceptronClassifier as MLlib

    from sparkann.spark import MultilayerPerceptronClassificationModel as Ours
    from sparkann.topology import Topology
    w0 = Topology.from_sizes(layers).init_weights(seed=0, dtype="float64")
    mllib = MLlib(layers=layers, initialWeights=w0.tolist(), maxIter=1, seed=0).fit(train)
    weights = mllib.weights.toArray()
    ours = {}
    for dtype in ("float32", "float64"):
        ours[dtype] = Ours(weights=weights)
        ours[dtype]._set(layers=layers, dtype=dtype)
    return mllib, ours


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--networks", default="A,B")
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--only", default="",
                        help="comma-separated words: time only the contenders whose name holds "
                             "one of them (e.g. mllib,ours_transform)")
    args = parser.parse_args()

    import onnxruntime as ort
    from pyspark.ml.functions import vector_to_array

    from sparkann.datasets import load_fashion_mnist
    from sparkann.onnx import to_onnx
    from sparkann.spark.data import dataframe_from_numpy

    spark = local_session("bench_inference", **{"spark.driver.memory": "6g"})
    X, y = load_fashion_mnist(kind="train", dtype="float64")
    X, y = X[:args.rows], y[:args.rows]
    df = dataframe_from_numpy(spark, X, y, num_partitions=2).select("features").cache()
    df.count()
    train = df.limit(500).withColumn("label", (vector_to_array("features")[300] > 0.5)
                                     .cast("double"))
    results = {}
    for name in args.networks.split(","):
        layers = NETWORKS[name]
        mllib, ours = models(spark, layers, train)
        udf = ours["float32"].predict_batch_udf(batch_size=10000)
        contenders = {
            "mllib_transform_float64": noop(mllib.transform(df)),
            "ours_transform_float32": noop(ours["float32"].transform(df)),
            "ours_transform_float64": noop(ours["float64"].transform(df)),
            "ours_predict_batch_udf_float32": noop(df.select(udf(vector_to_array("features")))),
        }
        proto = to_onnx(ours["float32"])
        onnx_session = ort.InferenceSession(proto.SerializeToString(),
                                            providers=["CPUExecutionProvider"])
        X32 = X.astype(np.float32)

        def onnxruntime_run():
            onnx_session.run(None, {"features": X32})

        contenders["onnxruntime_one_process_float32"] = onnxruntime_run
        if args.only:
            contenders = {key: action for key, action in contenders.items()
                          if any(word in key for word in args.only.split(","))}
        for action in contenders.values():  # warm-up: Python workers, JIT, caches
            action()
        times = {key: [] for key in contenders}
        for _ in range(args.runs):
            for key, action in contenders.items():
                times[key].append(seconds(action))
        rows = {}
        for key, values in times.items():
            median = statistics.median(values)
            rows[key] = {"seconds_median": round(median, 3),
                         "seconds_min": round(min(values), 3),
                         "seconds_max": round(max(values), 3),
                         "rows_per_second": round(len(X) / median)}
        base = rows.get("mllib_transform_float64", {}).get("seconds_median", float("nan"))
        print(f"network {name} {layers}, {len(X)} rows, local[2], median of {args.runs}")
        for key, row in rows.items():
            row["speed_vs_mllib"] = round(base / row["seconds_median"], 2)
            print(f"  {key:34s} {row['seconds_median']:7.3f} s "
                  f"[{row['seconds_min']:.3f}-{row['seconds_max']:.3f}]  "
                  f"{row['rows_per_second']:>10,} rows/s  {row['speed_vs_mllib']:5.2f}x MLlib")
        results[name] = rows
    print(json.dumps(results))
    spark.stop()


if __name__ == "__main__":
    main()
