"""A Spark Connect server for the tests: a separate process on loopback, stopped by its test.

Why not ``SparkSession.builder.remote("local[2]")``: that starts the server inside this Python
process from a classic SparkContext, and refuses to start while the tests' classic session
runs (``SESSION_OR_CONTEXT_EXISTS``); stopping it also stops the classic session. pip's pyspark
runs the same server class through ``spark-submit``, as ``sbin/start-connect-server.sh`` does.

PySpark picks Connect or classic functions (``pyspark.sql.functions`` and the like) by the
process-wide ``SPARK_CONNECT_MODE_ENABLED``: it is set while the Connect session is open and
restored after, so one process cannot use both session kinds at the same time.
"""
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
MODE = "SPARK_CONNECT_MODE_ENABLED"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConnectServer:
    """``spark-submit --class SparkConnectServer`` on a free loopback port.

    Parameters
    ----------
    folder : str
        Working folder of the server and its Python workers (not the source checkout, whose
        unbuilt ``ann_core/`` would shadow the installed one), and its log file.
    master : str
    conf : dict
        More ``--conf`` settings.
    """

    def __init__(self, folder, master="local[2]", conf=None, start_timeout=120):
        self.port = _free_port()
        self.folder = folder
        settings = {"spark.connect.grpc.binding.address": "127.0.0.1",
                    "spark.connect.grpc.binding.port": str(self.port),
                    "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                    "spark.ui.enabled": "false", "spark.log.level": "ERROR"}
        settings.update(conf or {})
        arguments = ["--name", "sparkann-connect-tests", "--master", master]
        for key, value in settings.items():
            arguments += ["--conf", f"{key}={value}"]
        # Python workers run this interpreter and import the installed sparkann.
        env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
                   PYTHONSAFEPATH="1")
        env.pop("SPARK_REMOTE", None)
        env.pop(MODE, None)
        self._launch(arguments, env)
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if not self.running() or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the Spark Connect server did not start; see "
                                       f"{self.log_path}")
                time.sleep(0.2)
        self.url = f"sc://127.0.0.1:{self.port}"

    def _launch(self, arguments, env):
        """Start the server process: ``spark-submit --class SparkConnectServer``."""
        import pyspark
        self.log_path = os.path.join(self.folder, "connect-server.log")
        command = [os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"),
                   "--class", SERVER_CLASS] + arguments
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, env=env, cwd=self.folder, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def running(self):
        return self.process.poll() is None

    def session(self):
        """A Connect session to this server (the classic session, if any, stays open)."""
        from pyspark.sql.connect.session import SparkSession as RemoteSession
        self._mode = os.environ.get(MODE)
        os.environ[MODE] = "1"
        return RemoteSession.builder.remote(self.url).getOrCreate()

    def close_session(self, session):
        """Stop ``session`` and give this process back to classic PySpark."""
        try:
            session.stop()
        finally:
            if getattr(self, "_mode", None) is None:
                os.environ.pop(MODE, None)
            else:
                os.environ[MODE] = self._mode

    def stop(self):
        """Stop the server (its JVM and Python workers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


class DaemonConnectServer(ConnectServer):
    """The server as an administrator starts it: pip's pyspark's
    ``sbin/start-connect-server.sh`` (``spark-daemon.sh submit``, a background JVM whose
    pid file it writes), stopped with ``sbin/stop-connect-server.sh``.

    ``SPARK_HOME`` is a folder of links to pyspark's ``bin``, ``jars``, ``python`` and
    ``sbin`` inside ``folder``: ``local-cluster`` workers write their directories under
    ``$SPARK_HOME/work``, and the daemon its log and pid files there too (not in
    site-packages or ``/tmp``, where another run's pid file would block this start).
    """

    def _launch(self, arguments, env):
        import pyspark
        home = os.path.join(self.folder, "spark_home")
        os.makedirs(home, exist_ok=True)
        for name in ("bin", "jars", "python", "sbin"):
            src = os.path.join(os.path.dirname(pyspark.__file__), name)
            if os.path.exists(src) and not os.path.exists(os.path.join(home, name)):
                os.symlink(src, os.path.join(home, name))
        env.update(SPARK_HOME=home, SPARK_LOG_DIR=os.path.join(self.folder, "logs"),
                   SPARK_PID_DIR=os.path.join(self.folder, "pids"),
                   SPARK_IDENT_STRING="sparkann-tests", SPARK_CONF_DIR=os.path.join(home,
                                                                                  "conf"))
        self.env, self.home = env, home
        self.log_path = os.path.join(env["SPARK_LOG_DIR"], "connect-server.log")
        started = subprocess.run([os.path.join(home, "sbin", "start-connect-server.sh")]
                                 + arguments, env=env, cwd=self.folder, capture_output=True,
                                 text=True, timeout=120)
        pids = os.listdir(env["SPARK_PID_DIR"]) if os.path.isdir(env["SPARK_PID_DIR"]) else []
        if started.returncode != 0 or len(pids) != 1:
            raise RuntimeError(f"start-connect-server.sh failed ({started.returncode}): "
                               f"{started.stdout[-2000:]}{started.stderr[-2000:]}")
        with open(os.path.join(env["SPARK_PID_DIR"], pids[0])) as f:
            self.pid = int(f.read())
        logs = [n for n in os.listdir(env["SPARK_LOG_DIR"]) if n.endswith(".out")]
        self.log_path = os.path.join(env["SPARK_LOG_DIR"], logs[0]) if logs else self.log_path

    def running(self):
        return os.path.exists(f"/proc/{self.pid}") and _state(self.pid) != "Z"

    def stop(self, timeout=60):
        """``stop-connect-server.sh``, then wait until the server JVM and every executor
        JVM it started (their command lines name this ``SPARK_HOME``) are gone. Returns the
        pids still alive after ``timeout`` seconds, which it then kills."""
        if not hasattr(self, "pid"):
            return []
        subprocess.run([os.path.join(self.home, "sbin", "stop-connect-server.sh")],
                       env=self.env, capture_output=True, timeout=60)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.processes()
            if not left:
                return []
            time.sleep(0.5)
        for pid in left:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        return left

    def processes(self):
        """Live processes of this server: its JVM and the JVMs whose command line holds
        this ``SPARK_HOME`` (the local-cluster workers' executors)."""
        found = [self.pid] if self.running() else []
        marker = self.home.encode()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == self.pid:
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if marker in f.read() and _state(int(name)) != "Z":
                        found.append(int(name))
            except OSError:
                pass
        return found


def _state(pid):
    """A process's state letter (``Z`` for a zombie), or ``""`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def start_server(folder, master="local[2]"):
    """A :class:`ConnectServer` on ``master`` for the tests (tasks fail at once unless
    ``master`` says otherwise, 4 shuffle partitions); the test is skipped when pyspark, its
    Connect client or Java is missing."""
    import pytest
    pytest.importorskip("pyspark")
    pytest.importorskip("grpc", reason="pyspark[connect]'s client needs (grpcio) missing")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Java is not installed")
    return ConnectServer(folder, master=master,
                         conf={"spark.task.maxFailures": "1",
                               "spark.sql.shuffle.partitions": "4",
                               "spark.driver.memory": "2g"})


@contextlib.contextmanager
def server_session(server):
    """A Connect session to ``server``, stopped on exit (the server keeps running)."""
    session = server.session()
    try:
        yield session
    finally:
        server.close_session(session)


@contextlib.contextmanager
def connect_session(folder, master="local[2]"):
    """A Connect session to a :func:`start_server` of its own on ``master``, stopped with its
    server on exit."""
    server = start_server(folder, master)
    try:
        with server_session(server) as session:
            yield session
    finally:
        server.stop()
