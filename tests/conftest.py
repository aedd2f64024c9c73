"""Shared fixtures: a local Spark session for the tests that need one, and BLAS settings
restored after the tests that change them. Every test that uses the ``spark`` fixture gets
the ``spark`` marker (``pytest -m "not spark"`` runs the rest); a test that starts Spark in
another way (a subprocess, a cluster) marks itself."""
import os
import shutil
import sys

import pytest


@pytest.hookimpl(tryfirst=True)         # before -m selects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)


def _java_available():
    return shutil.which("java") is not None or bool(os.environ.get("JAVA_HOME"))


@pytest.fixture(scope="session")
def spark():
    """A ``local[2]`` SparkSession on loopback, stopped at the end of the session.

    Skipped cleanly when pyspark or Java is missing.
    """
    pytest.importorskip("pyspark")
    pytest.importorskip("pyarrow")
    if not _java_available():
        pytest.skip("Java is not installed")
    # Executors must import the same numpy / ann_core as the driver.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("sparkann-tests")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false")
               .config("spark.task.maxFailures", "1")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.driver.memory", "3g")
               .config("spark.executorEnv.PYTHONPATH", os.pathsep.join(sys.path))
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def restore_blas():
    """The test leaves the BLAS backend and thread count as it found them."""
    import ann_core
    before, threads = ann_core.backend()["name"], ann_core.blas_threads()["threads"]
    yield
    ann_core.set_backend(before)
    ann_core.set_blas_threads(threads)
