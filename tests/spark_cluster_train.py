"""Train the default recipe on Fashion-MNIST on real executor processes, print JSON.

Run by tests/test_spark_fashion.py in its own process (one SparkContext per process):
``python tests/spark_cluster_train.py MASTER``, e.g. ``local-cluster[2,1,1024]``.
"""
import json
import os
import sys
import tempfile
import time


def spark_home():
    """A folder of symlinks to pyspark's parts, so worker directories stay out of
    site-packages."""
    import pyspark
    src = os.path.dirname(pyspark.__file__)
    home = tempfile.mkdtemp(prefix="sparkann-spark-home-")
    for part in ("bin", "jars", "python", "sbin", "conf"):
        if os.path.exists(os.path.join(src, part)):
            os.symlink(os.path.join(src, part), os.path.join(home, part))
    return home


def fashion_on_executors(spark, kind, partitions):
    """Fashion-MNIST's ``kind`` split, read from the IDX files by the executors themselves,
    in ``dataframe_from_numpy``'s layout (partition p: the p-th contiguous range of rows, in
    order, float64): the same blocks and so the same weights, without sending 60,000 x 784
    float64 from the driver through Spark (a third of this run's time)."""
    from pyspark.ml.functions import array_to_vector

    def rows(batches):
        import numpy as np
        import pyarrow as pa
        from pyspark import TaskContext
        from sparkann.datasets import load_fashion_mnist
        for _ in batches:   # one row per partition: its index
            pass
        X, y = load_fashion_mnist(kind=kind, dtype="float64")
        mine = np.arange(len(y)) * partitions // len(y) == TaskContext.get().partitionId()
        X, y = X[mine], y[mine].astype(np.float64)
        for r0 in range(0, len(y), 10_000):
            x = X[r0:r0 + 10_000]
            offsets = pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32))
            yield pa.RecordBatch.from_arrays(
                [pa.ListArray.from_arrays(offsets, pa.array(x.ravel())),
                 pa.array(y[r0:r0 + 10_000])], names=["features", "label"])

    df = spark.range(0, partitions, 1, partitions).mapInArrow(
        rows, "features array<double>, label double")
    return df.withColumn("features", array_to_vector("features"))


def main(master):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["SPARK_HOME"] = spark_home()
    from pyspark.sql import SparkSession
    from sparkann.spark import MultilayerPerceptronClassifier
    path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    spark = (SparkSession.builder.master(master).appName("sparkann-cluster-test")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "3g").config("spark.executor.memory", "1g")
             .config("spark.task.maxFailures", "1")
             .config("spark.executorEnv.PYTHONPATH", path)
             .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
             .getOrCreate())
    try:
        train = fashion_on_executors(spark, "train", 2).cache()
        test = fashion_on_executors(spark, "test", 2)
        start = time.perf_counter()
        model = MultilayerPerceptronClassifier(layers=[784, 256, 128, 10], seed=1).fit(train)
        seconds = time.perf_counter() - start
        executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size()
        print(json.dumps({"accuracy": model.evaluate(test).accuracy, "seconds": seconds,
                          "iterations": len(model.summary.objectiveHistory),
                          "block_managers": executors}))
    finally:
        spark.stop()


if __name__ == "__main__":
    main(sys.argv[1])
