"""A Spark Connect server on loopback in front of real executor processes: pip's pyspark's
``sbin/start-connect-server.sh --master local-cluster[2,1,1024]`` (two executor JVMs, each
with its own Python workers). A model fitted and applied through it equals the classic
session's; the test stops the server and checks that no JVM of it is left.
"""
import time

import numpy as np
import pytest

pytest.importorskip("pyspark")
from sparkann.spark import MultilayerPerceptronClassifier  # noqa: E402
from sparkann.spark.data import dataframe_from_numpy  # noqa: E402

LAYERS = [6, 5, 3]


def _frames(session):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(240, LAYERS[0]))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    return (dataframe_from_numpy(session, X[:200], y[:200].astype(np.float64),
                                 num_partitions=4),
            dataframe_from_numpy(session, X[200:], None, num_partitions=2))


def _fit_and_predict(session):
    train, test = _frames(session)
    model = MultilayerPerceptronClassifier(layers=LAYERS, solver="l-bfgs", maxIter=8, seed=3,
                                           dtype="float64", blockSize=32).fit(train)
    from pyspark.ml.functions import vector_to_array
    rows = model.transform(test).select(vector_to_array("probability").alias("p")).collect()
    return model.weights.toArray(), np.array([r.p for r in rows])


@pytest.fixture(scope="module")
def classic(spark):
    """The classic session's model, computed before the Connect session opens."""
    return _fit_and_predict(spark)


@pytest.mark.spark
def test_connect_server_in_front_of_executor_processes(classic, tmp_path):
    pytest.importorskip("grpc", reason="pyspark[connect]'s client needs (grpcio) missing")
    from connect_server import DaemonConnectServer
    from pyspark.sql.connect.session import SparkSession as RemoteSession
    from spark_jvm import CONF
    server = DaemonConnectServer(str(tmp_path), master="local-cluster[2,1,1024]",
                                 conf={"spark.executor.memory": "512m",
                                       "spark.sql.shuffle.partitions": "4",
                                       "spark.task.maxFailures": "1", **CONF})
    try:
        session = server.session()
        try:
            assert isinstance(session, RemoteSession)
            # Tasks run in two executor JVMs, not in the server's own.
            def executor_pid(batches):    # nested: shipped by value, not by module name
                import pyarrow as pa
                from sparkann.spark.faults import _executor_pid
                for _ in batches:
                    pass
                yield pa.RecordBatch.from_arrays([pa.array([_executor_pid()], pa.int64())],
                                                 names=["pid"])

            pids = set()
            for _ in range(30):    # until both executors have registered with the driver
                pids = {r.pid for r in session.range(0, 8, 1, 8).mapInArrow(
                    executor_pid, "pid long").collect()}
                if len(pids) == 2:
                    break
                time.sleep(1)
            assert len(pids) == 2 and server.pid not in pids, (pids, server.pid)
            weights, probability = _fit_and_predict(session)
        finally:
            server.close_session(session)
    finally:
        left = server.stop()
    assert left == [], f"processes of the Connect server outlived its stop: {left}"
    np.testing.assert_allclose(weights, classic[0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(probability, classic[1], rtol=0, atol=1e-9)

