"""spark-submit on a real standalone cluster (master + 2 workers on 127.0.0.1) whose driver
and executors run a Python environment without sparkann: only the wheel is shipped."""
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.spark
JOBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobs")


def result_line(proc):
    assert proc.returncode == 0, (f"spark-submit failed:\n{proc.stdout[-3000:]}\n"
                                  f"{proc.stderr[-6000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("ship_as", [".whl", ".zip"])
def test_py_files_wheel_gives_executors_the_engine(cluster, bare_python, wheel, tmp_path, ship_as):
    shipped = tmp_path / (os.path.basename(wheel)[:-4] + ship_as)
    shutil.copyfile(wheel, shipped)
    cache = tmp_path / "cache"
    proc = cluster.submit("--py-files", str(shipped),
                          "--conf", f"spark.executorEnv.SPARKANN_CACHE_DIR={cache}",
                          os.path.join(JOBS, "distributed_gradient.py"),
                          python=bare_python, env={"SPARKANN_CACHE_DIR": str(cache)})
    result = result_line(proc)
    assert result["rows"] == 400
    assert result["loss_error"] < 1e-12 and result["grad_error"] < 1e-12
    assert result["driver"]["python"] == bare_python
    assert result["driver"]["sparkann"].startswith(str(shipped) + os.sep)
    assert (result["driver"]["shipped"] is None) == (ship_as == ".zip")
    executors = result["executors"]
    assert len({e["pid"] for e in executors}) >= 2  # two workers, two Python processes
    for e in executors:
        assert e["python"] == bare_python
        assert ".zip" + os.sep in e["sparkann"]  # from the archive in the executor's files
        assert e["ann_core"].startswith(str(cache) + os.sep + "ann_core-")


def test_failing_test_still_stops_its_cluster(tmp_path):
    """A pytest run whose test fails while a cluster is up leaves no Spark process behind."""
    here = os.path.dirname(os.path.abspath(__file__))
    (tmp_path / "conftest.py").write_text(
        "import importlib.util, pytest\n"
        "spec = importlib.util.spec_from_file_location("
        f"'standalone', {os.path.join(here, 'standalone.py')!r})\n"
        "standalone = importlib.util.module_from_spec(spec); spec.loader.exec_module(standalone)\n"
        "@pytest.fixture\n"
        "def cluster(request):\n"
        "    c = standalone.StandaloneCluster(workers=1, worker_memory='512m')\n"
        "    request.addfinalizer(c.stop)\n"
        "    c.start()\n"
        "    print('CLUSTER_ROOT', c.root)\n"
        "    yield c\n")
    (tmp_path / "test_fails.py").write_text(
        "def test_fails(cluster):\n"
        "    assert cluster.state()['aliveworkers'] == 1\n"
        "    assert False, 'deliberate failure'\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "deliberate failure" in proc.stdout
    root = next(line.split()[1] for line in proc.stdout.splitlines()
                if line.startswith("CLUSTER_ROOT"))
    leftovers = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert root not in leftovers



@pytest.mark.slow
def test_archives_route_with_venv_pack(cluster, packed_environment, tmp_path):
    """The whole environment, sparkann installed in it, shipped with --archives (venv-pack):
    executors run ./environment/bin/python from the unpacked archive; no --py-files."""
    venv, archive = packed_environment
    driver_python = os.path.join(venv, "bin", "python")
    cache = tmp_path / "cache"
    proc = cluster.submit("--archives", f"{archive}#environment",
                          "--conf", "spark.pyspark.python=./environment/bin/python",
                          "--conf", f"spark.pyspark.driver.python={driver_python}",
                          "--conf", f"spark.executorEnv.SPARKANN_CACHE_DIR={cache}",
                          os.path.join(JOBS, "distributed_gradient.py"),
                          env={"SPARKANN_CACHE_DIR": str(cache)})
    result = result_line(proc)
    assert result["rows"] == 400 and result["grad_error"] < 1e-12
    assert result["driver"]["sparkann"].startswith(venv + os.sep)
    assert result["driver"]["shipped"] is None  # installed: nothing to ship
    for e in result["executors"]:
        assert f"{os.sep}environment{os.sep}bin{os.sep}python" in e["python"]
        assert f"{os.sep}environment{os.sep}lib{os.sep}" in e["sparkann"]
        assert ".zip" not in e["sparkann"] and not e["ann_core"].startswith(str(cache))


def test_sigterm_still_stops_the_cluster(tmp_path):
    """A process killed with SIGTERM while its cluster runs (a CI timeout) stops it on exit."""
    here = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "killed.py"
    script.write_text(
        "import importlib.util, os, signal, time\n"
        "spec = importlib.util.spec_from_file_location("
        f"'standalone', {os.path.join(here, 'standalone.py')!r})\n"
        "standalone = importlib.util.module_from_spec(spec); spec.loader.exec_module(standalone)\n"
        "c = standalone.StandaloneCluster(workers=1, worker_memory='512m').start()\n"
        "print('CLUSTER_ROOT', c.root, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(60)\n"
        "print('NOT STOPPED')\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 128 + 15, proc.stdout + proc.stderr[-3000:]
    assert "NOT STOPPED" not in proc.stdout
    root = next(line.split()[1] for line in proc.stdout.splitlines()
                if line.startswith("CLUSTER_ROOT"))
    leftovers = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert root not in leftovers
