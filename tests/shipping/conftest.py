"""Fixtures for the shipping tests: the built wheel and sdist, a Python environment without
sparkann, and a real Spark standalone cluster on loopback (see standalone.py)."""
import glob
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_standalone():
    spec = importlib.util.spec_from_file_location(
        "sparkann_test_standalone", os.path.join(os.path.dirname(__file__), "standalone.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


standalone = _load_standalone()


@pytest.fixture(scope="session")
def dists(tmp_path_factory):
    """``{"wheel": path, "sdist": path}`` built from this source tree.

    ``python -m build`` makes the sdist, then the wheel from the unpacked sdist, so a
    successful build also proves the sdist is complete. ``--no-isolation`` builds with the
    installed Cython/numpy/scipy (no network). ``SPARKANN_TEST_WHEEL`` (a built wheel, with its
    sdist beside it) skips the build while iterating.
    """
    given = os.environ.get("SPARKANN_TEST_WHEEL")
    if given:
        return {"wheel": given,
                "sdist": glob.glob(os.path.join(os.path.dirname(given), "*.tar.gz"))[0]}
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "-o", str(out), ROOT],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (f"python -m build failed:\n{proc.stdout[-3000:]}\n"
                                  f"{proc.stderr[-3000:]}")
    wheels = glob.glob(str(out / "*.whl"))
    sdists = glob.glob(str(out / "*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, os.listdir(out)
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.fixture(scope="session")
def wheel(dists):
    return dists["wheel"]


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory):
    """A Python with numpy, scipy, pyarrow, threadpoolctl and tqdm but no sparkann."""
    python = standalone.bare_python_env(str(tmp_path_factory.mktemp("bare-env") / "venv"))
    probe = subprocess.run([python, "-c", "import sparkann"], capture_output=True, text=True,
                           cwd="/", env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert probe.returncode != 0, "the executors' environment must not have sparkann"
    return python


def _spark_available():
    return (importlib.util.find_spec("pyspark") is not None
            and (shutil.which("java") or os.environ.get("JAVA_HOME")))


@pytest.fixture(scope="session")
def cluster(request):
    """A standalone master and 2 workers (1 core each) on 127.0.0.1, stopped at the end of
    the session whatever happens (finalizer, and atexit if the interpreter dies)."""
    if not _spark_available():
        pytest.skip("pyspark or Java is missing")
    running = standalone.StandaloneCluster(workers=2, worker_memory="1500m")
    request.addfinalizer(running.remove)
    request.addfinalizer(running.stop)
    running.start()
    yield running
    running.stop()
    left = running.leftovers()
    assert not left, f"Spark processes left after stopping the cluster: {left}"


@pytest.fixture(scope="session")
def packed_environment(wheel, tmp_path_factory):
    """(venv folder, venv-pack .tar of it): sparkann from the wheel, numpy, scipy & co."""
    pytest.importorskip("venv_pack")
    return standalone.packed_env(str(tmp_path_factory.mktemp("packed")), wheel)
