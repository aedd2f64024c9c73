"""Shared fixtures: a local Spark session for the tests that need one, a Spark Connect
session, a fixture that runs a test in each of the two, and BLAS settings restored after the
tests that change them. Every test that uses the ``spark``, ``connect`` or ``any_spark``
fixture gets the ``spark`` marker (``pytest -m "not spark"``
runs the rest); a test that starts Spark in another way (a subprocess, a cluster) marks
itself."""
import os
import shutil
import sys

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_modifyitems(items):
    for item in items:      # before -m selects by marker
        if {"spark", "connect", "any_spark"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.spark)
    yield
    # After pytest has grouped the tests by fixture parameter: in each module, the tests of
    # ``any_spark``'s Connect session last (pytest's grouping keys a parameter by its
    # position in each parametrize list, which keeps them apart only where all lists agree).
    first = {}
    for i, item in enumerate(items):
        first.setdefault(item.module.__name__ if hasattr(item, "module") else "", i)
    items[:] = sorted(items, key=lambda item: (
        first[item.module.__name__ if hasattr(item, "module") else ""],
        _session_kind(item) == "connect"))


def _session_kind(item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("any_spark") if callspec is not None else None


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


class _SharedConnectServer:
    """One Connect server (``local[2]``) for the Connect sessions of every test module: started
    when the first module asks for a session, stopped after the last module that uses it."""

    def __init__(self, folder):
        self.folder, self.server, self.users = folder, None, None

    def get(self):
        if self.server is not None and not self.server.running():
            self.stop()     # it died: the next module gets a new one
        if self.server is None:
            from connect_server import start_server
            self.server = start_server(self.folder)
        return self.server

    def done(self, module, items):
        """``module``'s tests are over: stop the server unless a later module needs it."""
        if self.users is None:
            self.users = {item.module.__name__ for item in items if _uses_shared_connect(item)}
        self.users.discard(module)
        if not self.users:
            self.stop()

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None


def _uses_shared_connect(item):
    """The item runs in a Connect session from this file's ``connect`` fixture (a module
    may define its own ``connect``, on another master)."""
    if not hasattr(item, "module"):
        return False
    wants = "connect" in item.fixturenames or _session_kind(item) == "connect"
    defs = item.session._fixturemanager.getfixturedefs("connect", item) or ()
    return wants and bool(defs) and defs[-1].func.__module__ == __name__


@pytest.fixture(scope="session")
def _connect_server(tmp_path_factory):
    shared = _SharedConnectServer(str(tmp_path_factory.mktemp("connect")))
    yield shared
    shared.stop()


@pytest.fixture(scope="module")
def connect(request, _connect_server):
    """A Spark Connect session (``local[2]`` behind a Connect server process on loopback),
    one per test module, stopped at the end of the module; the server is shared by the
    modules and stopped after the last one that uses it.

    While it is open the process speaks Connect only (PySpark picks its function flavour by
    a process-wide setting): a module that compares with the classic ``spark`` session
    computes the classic side in a fixture this one depends on (see ``connect_server``).
    """
    from connect_server import server_session
    with server_session(_connect_server.get()) as session:
        yield session
    _connect_server.done(request.module.__name__, request.session.items)


@pytest.fixture(scope="module", params=["classic", "connect"])
def any_spark(request):
    """The test runs twice: in the classic ``spark`` session, then in the module's Spark
    Connect session. pytest runs a module's tests of one kind together (module-scoped
    parameter), the classic ones first, so the Connect session opens once per module and
    only after the classic tests are done (while it is open the process speaks Connect
    only). A module that uses this fixture should not use ``spark`` or ``connect`` alone."""
    return request.getfixturevalue("spark" if request.param == "classic" else "connect")


@pytest.fixture
def restore_blas():
    """The test leaves the BLAS backend and thread count as it found them."""
    import ann_core
    before, threads = ann_core.backend()["name"], ann_core.blas_threads()["threads"]
    yield
    ann_core.set_backend(before)
    ann_core.set_blas_threads(threads)
