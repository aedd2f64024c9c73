"""A real Spark standalone cluster on loopback, and a Python environment without sparkann.

``StandaloneCluster`` starts a master and N workers (1 core each) with pip-installed pyspark's
``spark-daemon.sh``, all bound to 127.0.0.1, inside one temporary folder: ``SPARK_HOME`` is a
folder of symlinks to pyspark's ``bin``, ``jars``, ``python`` and ``sbin`` so nothing is written
into site-packages. ``stop()`` stops the daemons, then kills (by process id) any process still
running from that folder: executors, drivers, daemons. It is registered with ``atexit`` so an
interpreter that dies of an exception, or of SIGTERM, still stops the cluster.

``bare_python_env`` makes a virtual environment that has numpy, scipy, pyarrow, pandas,
threadpoolctl and tqdm (linked from this interpreter's site-packages, so no network is needed)
and no sparkann: executors run it, so they can only get sparkann from what the job ships.
"""
import atexit
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# What executors may import besides the standard library: sparkann's dependencies and what
# pyspark's Arrow functions need (pandas >= 2.2 with its own dependencies).
EXECUTOR_PACKAGES = ("numpy", "scipy", "pyarrow", "pandas", "dateutil", "pytz", "tzdata", "six",
                     "threadpoolctl", "tqdm")
# Every JVM of the cluster (daemons, drivers, executors) compiles with C1 only: the test jobs
# last seconds, and on two cores C2's compiler threads slow the start of each driver and
# executor (measured: a 5-round training job 41-44 s -> 33 s, evaluating 31-35 s -> 23-25 s).
# The jobs compute the same numbers either way.
JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_under(path):
    """(pid, command line) of every process of this user whose command line mentions ``path``."""
    found = []
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            with open(os.path.join(proc, "cmdline"), "rb") as fh:
                args = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        pid = int(os.path.basename(proc))
        if path in args and pid != os.getpid():
            found.append((pid, args))
    return found


def _exit_on_sigterm():
    """Turn SIGTERM (a CI timeout, ``kill``) into a normal exit, so ``atexit`` stops clusters."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class StandaloneCluster:
    """A standalone master and ``workers`` workers on 127.0.0.1 in a temporary folder.

    Parameters
    ----------
    workers : int
        Number of workers, each with one core and ``worker_memory`` of memory.
    worker_memory : str
        Memory each worker offers to executors (Spark size string).
    """

    def __init__(self, workers=2, worker_memory="2g"):
        import pyspark

        self.workers = workers
        self.worker_memory = worker_memory
        self.root = tempfile.mkdtemp(prefix="sparkann-cluster-")
        self.spark_home = os.path.join(self.root, "spark-home")
        pyspark_dir = os.path.dirname(pyspark.__file__)
        os.makedirs(self.spark_home)
        for name in ("bin", "jars", "python", "sbin"):
            os.symlink(os.path.join(pyspark_dir, name), os.path.join(self.spark_home, name))
        for name in ("conf", "logs", "pids", "work"):
            os.makedirs(os.path.join(self.root, name))
        # Warnings and errors only: a failing job's Python traceback stays readable.
        with open(os.path.join(self.root, "conf", "log4j2.properties"), "w") as fh:
            fh.write("rootLogger.level = warn\nrootLogger.appenderRef.stderr.ref = console\n"
                     "appender.console.type = Console\nappender.console.name = console\n"
                     "appender.console.target = SYSTEM_ERR\n"
                     "appender.console.layout.type = PatternLayout\n"
                     "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n\n")
        # Read by spark-submit, and by plain python's session through it.
        with open(os.path.join(self.root, "conf", "spark-defaults.conf"), "w") as fh:
            fh.write("".join(f"{key} {value}\n" for key, value in java_options().items()))
        self.port = free_port()
        self.webui_port = free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.env = dict(os.environ,
                        SPARK_HOME=self.spark_home,
                        SPARK_CONF_DIR=os.path.join(self.root, "conf"),
                        SPARK_LOG_DIR=os.path.join(self.root, "logs"),
                        SPARK_PID_DIR=os.path.join(self.root, "pids"),
                        SPARK_WORKER_DIR=os.path.join(self.root, "work"),
                        SPARK_LOCAL_IP="127.0.0.1",
                        SPARK_LOCAL_HOSTNAME="localhost",
                        SPARK_IDENT_STRING="sparkann-test",
                        SPARK_DAEMON_JAVA_OPTS=JAVA_OPTIONS)
        self.env.pop("SPARK_NO_DAEMONIZE", None)  # spark-daemon.sh must return at once
        self._started = False

    def _daemon(self, action, cls, instance, *args):
        subprocess.run([os.path.join(self.spark_home, "sbin", "spark-daemon.sh"), action, cls,
                        str(instance), *args],
                       env=self.env, check=action == "start", capture_output=True, timeout=120)

    def start(self, timeout=120):
        """Start the master and the workers; return when all workers are registered."""
        atexit.register(self.stop)
        _exit_on_sigterm()
        self._started = True
        self._daemon("start", MASTER_CLASS, 1, "--host", "127.0.0.1", "--port", str(self.port),
                     "--webui-port", str(self.webui_port))
        for i in range(1, self.workers + 1):
            self._daemon("start", WORKER_CLASS, i, "--host", "127.0.0.1", "--cores", "1",
                         "--memory", self.worker_memory, "--webui-port", str(free_port()),
                         self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state and state.get("aliveworkers", 0) >= self.workers:
                return self
            time.sleep(0.5)
        raise RuntimeError(f"standalone cluster not ready after {timeout} s; master state "
                           f"{self.state()}; logs:\n{self.logs()}")

    def state(self):
        """The master's JSON status, or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.webui_port}/json/",
                                        timeout=2) as resp:
                return json.load(resp)
        except OSError:
            return None

    def logs(self, tail=40):
        """The last lines of every daemon log, for failure messages."""
        out = []
        for path in sorted(glob.glob(os.path.join(self.root, "logs", "*"))):
            with open(path, errors="replace") as fh:
                out.append(f"== {path}\n" + "".join(fh.readlines()[-tail:]))
        return "\n".join(out)

    def leftovers(self):
        """Processes still running from this cluster's folder."""
        return processes_under(self.root)

    def stop(self):
        """Stop workers and master, then kill whatever still runs from the cluster folder."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        for i in range(1, self.workers + 1):
            self._daemon("stop", WORKER_CLASS, i)
        self._daemon("stop", MASTER_CLASS, 1)
        deadline = time.monotonic() + 20
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.25)
        for pid, _ in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.25)

    def remove(self):
        """Delete the cluster folder (after ``stop``)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def submit(self, *args, python=None, env=None, timeout=600):
        """Run ``spark-submit --master <this cluster> args...``; returns the CompletedProcess.

        ``python`` is the interpreter of the driver and the executors.
        """
        run_env = dict(self.env, **(env or {}))
        if python:
            run_env["PYSPARK_PYTHON"] = python
            run_env["PYSPARK_DRIVER_PYTHON"] = python
        # No sparkann from the caller's path: only what the job ships.
        run_env.pop("PYTHONPATH", None)
        cmd = [os.path.join(self.spark_home, "bin", "spark-submit"), "--master", self.url,
               "--conf", "spark.driver.host=127.0.0.1",
               "--conf", "spark.driver.bindAddress=127.0.0.1",
               "--conf", "spark.ui.enabled=false",
               "--conf", "spark.executor.memory=1g",
               "--conf", "spark.task.maxFailures=1",
               # also where the caller gives another SPARK_CONF_DIR
               *(arg for key, value in java_options().items()
                 for arg in ("--conf", f"{key}={value}")),
               *args]
        return subprocess.run(cmd, env=run_env, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout)


def java_options():
    """The Spark settings that give drivers and executors ``JAVA_OPTIONS``."""
    return {"spark.driver.extraJavaOptions": JAVA_OPTIONS,
            "spark.executor.extraJavaOptions": JAVA_OPTIONS}


def bare_python_env(folder):
    """A virtual environment in ``folder`` with only ``EXECUTOR_PACKAGES`` (no sparkann).

    The packages are symlinked from this interpreter's site-packages, so the environment is
    made offline in well under a second and matches the driver's versions.
    Returns the path of its ``python``.
    """
    python = os.path.join(folder, "bin", "python")
    if os.path.exists(python):
        return python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    source = sysconfig.get_path("purelib")
    for package in EXECUTOR_PACKAGES:
        for entry in glob.glob(os.path.join(source, package + "*")):
            name = os.path.basename(entry)
            # numpy, numpy.libs, numpy-2.4.6.dist-info, threadpoolctl.py; not numpydoc & co.
            stem = name.split("-")[0].split(".")[0]
            if stem == package:
                os.symlink(entry, os.path.join(site, name))
    return python


def packed_env(folder, wheel, packages=("numpy", "scipy", "threadpoolctl", "tqdm")):
    """A venv-pack archive of a virtual environment with ``wheel`` installed (pip, offline)
    and ``packages`` copied from this interpreter's site-packages.

    Returns (environment folder, ``.tar.gz`` path). A ``.tar.gz``, not a plain ``.tar``: Spark
    unpacks a plain tar in Java, which refuses the link to the base interpreter that
    venv-pack leaves in ``bin/``; a ``.tar.gz`` is unpacked with ``tar``. Level 1 is fast.
    """
    env = os.path.join(folder, "packed-venv")
    subprocess.run([sys.executable, "-m", "venv", env], check=True)
    python = os.path.join(env, "bin", "python")
    # no PYTHONPATH: pip would take a source tree on it for an installed sparkann
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--disable-pip-version-check", wheel], check=True, env=clean)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    source = sysconfig.get_path("purelib")
    for package in packages:
        for entry in glob.glob(os.path.join(source, package + "*")):
            name = os.path.basename(entry)
            if name.split("-")[0].split(".")[0] != package:
                continue
            target = os.path.join(site, name)
            if os.path.isdir(entry):
                shutil.copytree(entry, target,
                                ignore=shutil.ignore_patterns("tests", "__pycache__"))
            else:
                shutil.copy2(entry, target)
    archive = os.path.join(folder, "environment.tar.gz")
    subprocess.run([sys.executable, "-m", "venv_pack", "--prefix", env, "--output", archive,
                    "--compress-level", "1", "--quiet"], check=True)
    return env, archive
