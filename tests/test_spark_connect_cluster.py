"""A Spark Connect server on loopback in front of real executor processes: pip's pyspark's
``sbin/start-connect-server.sh --master local-cluster[2,1,1024]`` (two executor JVMs, each
with its own Python workers). A model fitted and applied through it equals the classic
session's: with 4 partitions (more than the 2 task slots: a job per gradient, the partials
summed by the reduce-scatter) and with 2 (the whole fit in one query, its two tasks in the two
executors talking over TCP). The test stops the server and checks that no JVM of it is left.
"""
import logging
import time

import numpy as np
import pytest

pytest.importorskip("pyspark")
from sparkann.spark import MultilayerPerceptronClassifier  # noqa: E402
from sparkann.spark.data import dataframe_from_numpy  # noqa: E402

LAYERS = [6, 5, 3]


def _frames(session, partitions=4):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(240, LAYERS[0]))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    return (dataframe_from_numpy(session, X[:200], y[:200].astype(np.float64),
                                 num_partitions=partitions),
            dataframe_from_numpy(session, X[200:], None, num_partitions=2))


def _fit_and_predict(session, partitions=4):
    train, test = _frames(session, partitions)
    model = MultilayerPerceptronClassifier(layers=LAYERS, solver="l-bfgs", maxIter=8, seed=3,
                                           dtype="float64", blockSize=32).fit(train)
    from pyspark.ml.functions import vector_to_array
    rows = model.transform(test).select(vector_to_array("probability").alias("p")).collect()
    return model.weights.toArray(), np.array([r.p for r in rows])


@pytest.fixture(scope="module")
def classic(spark):
    """The classic session's models, computed before the Connect session opens."""
    return {p: _fit_and_predict(spark, p) for p in (4, 2)}


@pytest.mark.spark
def test_connect_server_in_front_of_executor_processes(classic, tmp_path, caplog):
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
            got = {}
            for p in (4, 2):
                caplog.clear()
                with caplog.at_level(logging.INFO, logger="sparkann.spark"):
                    got[p] = _fit_and_predict(session, p)
                assert ("fitted in one query" in caplog.text) == (p == 2), p
        finally:
            server.close_session(session)
    finally:
        left = server.stop()
    assert left == [], f"processes of the Connect server outlived its stop: {left}"
    for p, (weights, probability) in got.items():
        np.testing.assert_allclose(weights, classic[p][0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(probability, classic[p][1], rtol=0, atol=1e-9)

