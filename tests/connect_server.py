"""A Spark Connect server for the tests: a separate process on loopback, stopped by its test.

Why not ``SparkSession.builder.remote("local[2]")``: that starts the server inside this Python
process from a classic SparkContext, and refuses to start while the tests' classic session
runs (``SESSION_OR_CONTEXT_EXISTS``); stopping it also stops the classic session. pip's pyspark
runs the same server class through ``spark-submit``, as ``sbin/start-connect-server.sh`` does.

PySpark picks Connect or classic functions (``pyspark.sql.functions`` and the like) by the
process-wide ``SPARK_CONNECT_MODE_ENABLED``: it is set while the Connect session is open and
restored after, so one process cannot use both session kinds at the same time.
"""
import os
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
        import pyspark
        self.port = _free_port()
        self.log_path = os.path.join(folder, "connect-server.log")
        settings = {"spark.connect.grpc.binding.address": "127.0.0.1",
                    "spark.connect.grpc.binding.port": str(self.port),
                    "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                    "spark.ui.enabled": "false", "spark.log.level": "ERROR"}
        settings.update(conf or {})
        command = [os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"),
                   "--class", SERVER_CLASS, "--name", "sparkann-connect-tests",
                   "--master", master]
        for key, value in settings.items():
            command += ["--conf", f"{key}={value}"]
        # Python workers run this interpreter and import the installed sparkann.
        env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
                   PYTHONSAFEPATH="1")
        env.pop("SPARK_REMOTE", None)
        env.pop(MODE, None)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, env=env, cwd=folder, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the Spark Connect server did not start; see "
                                       f"{self.log_path}")
                time.sleep(0.2)
        self.url = f"sc://127.0.0.1:{self.port}"

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
