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


def main(master):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["SPARK_HOME"] = spark_home()
    from pyspark.sql import SparkSession
    from sparkann.datasets import load_fashion_mnist
    from sparkann.spark import MultilayerPerceptronClassifier
    from sparkann.spark.data import dataframe_from_numpy
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
        X, y = load_fashion_mnist(kind="train", dtype="float64")
        Xt, yt = load_fashion_mnist(kind="test", dtype="float64")
        train = dataframe_from_numpy(spark, X, y, num_partitions=2).cache()
        test = dataframe_from_numpy(spark, Xt, yt, num_partitions=2)
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
