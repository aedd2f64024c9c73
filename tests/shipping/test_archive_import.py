"""Importing sparkann from the wheel itself (a zip on sys.path), as spark-submit --py-files does.

Each import runs in a fresh interpreter (``python -I``: no PYTHONPATH, no user site, no
source tree on the path) whose only sparkann is the archive.
"""
import importlib.machinery
import json
import os
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest
from ann_core._archive import COMPILED_MODULES

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
# the start of the error that names every compiled module the archive lacks for this Python
CANNOT_LOAD_ALL = "ImportError: sparkann cannot load " + ", ".join(
    f"ann_core.{m}" for m in COMPILED_MODULES)

GRADIENT_JOB = """
import json, sys
sys.path.insert(0, ARCHIVE)
import numpy as np
import ann_core, sparkann
rng = np.random.default_rng(0)
X = rng.standard_normal((7, 4))
y = np.array([0, 1, 2, 1, 0, 2, 2], dtype=np.int64)
w = rng.standard_normal(4 * 3 + 3)
net = ann_core.Network(4, [("dense", 3), ("loss", "softmax_cross_entropy")], dtype="float64")
grad = np.zeros(net.n_weights)
loss, n = net.loss_grad(w, X, y, grad)
print(json.dumps({"ann_core": ann_core.__file__, "sparkann": sparkann.__file__,
                  "path": ann_core.__path__, "loss": loss, "grad": grad.tolist()}))
"""


def run_from_archive(archive, cache_dir, job=GRADIENT_JOB):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SPARKANN_CACHE_DIR"] = str(cache_dir)
    return subprocess.run([sys.executable, "-I", "-c", f"ARCHIVE = {str(archive)!r}\n" + job],
                          cwd=str(cache_dir.parent), env=env, capture_output=True, text=True)


def reference_softmax_gradient(seed=0):
    """Loss sum and gradient of a dense + softmax cross-entropy layer, in plain numpy."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((7, 4))
    y = np.array([0, 1, 2, 1, 0, 2, 2])
    w = rng.standard_normal(4 * 3 + 3)
    W, b = w[:12].reshape(4, 3), w[12:]
    z = X @ W + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(7), y]).sum()
    d = p.copy()
    d[np.arange(7), y] -= 1
    return loss, np.concatenate([(X.T @ d).ravel(), d.sum(axis=0)])


def rewrite_wheel(source, target, rename=None, drop=None):
    """Copy the wheel to ``target``, renaming members (and tags in WHEEL) or dropping some."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            name = item.filename
            if drop and drop in name:
                continue
            data = src.read(item.filename)
            for old, new in (rename or {}).items():
                name = name.replace(old, new)
                if name.endswith(".dist-info/WHEEL"):  # its platform tag
                    data = data.replace(old.encode(), new.encode())
            dst.writestr(name, data)
    return target


@pytest.mark.parametrize("extension", [".zip", ".whl"])
def test_import_from_archive_extracts_and_computes_gradient(wheel, tmp_path, extension):
    archive = tmp_path / f"sparkann{extension}"
    archive.write_bytes(open(wheel, "rb").read())
    cache = tmp_path / "cache"
    proc = run_from_archive(archive, cache)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ann_core"].startswith(str(archive) + os.sep)
    assert result["sparkann"].startswith(str(archive) + os.sep)
    # compiled modules come from one content-named folder in the cache
    extracted = result["path"][0]
    assert os.path.dirname(extracted) == str(cache)
    assert os.path.basename(extracted).startswith("ann_core-")
    assert sorted(os.listdir(extracted)) == sorted(m + SUFFIX for m in COMPILED_MODULES)
    loss, grad = reference_softmax_gradient()
    np.testing.assert_allclose(result["loss"], loss, rtol=1e-12)
    np.testing.assert_allclose(result["grad"], grad, rtol=1e-10, atol=1e-12)


def test_cache_is_reused_and_left_without_temporary_files(wheel, tmp_path):
    archive = tmp_path / "sparkann.zip"
    archive.write_bytes(open(wheel, "rb").read())
    cache = tmp_path / "cache"
    first = run_from_archive(archive, cache)
    assert first.returncode == 0, first.stderr
    folder = json.loads(first.stdout)["path"][0]
    stamps = {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)}
    second = run_from_archive(archive, cache)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["path"][0] == folder
    assert {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)} == stamps
    assert os.listdir(cache) == [os.path.basename(folder)]


def test_corrupted_cached_module_is_replaced(wheel, tmp_path):
    archive = tmp_path / "sparkann.zip"
    archive.write_bytes(open(wheel, "rb").read())
    cache = tmp_path / "cache"
    folder = json.loads(run_from_archive(archive, cache).stdout)["path"][0]
    (cache / folder / f"_network{SUFFIX}").write_bytes(b"truncated")
    again = run_from_archive(archive, cache)
    assert again.returncode == 0, again.stderr


def test_default_cache_is_under_xdg_cache_home(wheel, tmp_path):
    archive = tmp_path / "sparkann.zip"
    archive.write_bytes(open(wheel, "rb").read())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARKANN_CACHE_DIR")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    code = (f"import sys; sys.path.insert(0, {str(archive)!r}); import ann_core; "
            "print(ann_core.__path__[0])")
    proc = subprocess.run([sys.executable, "-I", "-c", code], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(tmp_path / "xdg" / "sparkann" / "ann_core-"))


def _assert_names_interpreter(message):
    assert sys.implementation.cache_tag in message
    assert sys.version.split()[0] in message
    assert sysconfig.get_platform() in message


def test_foreign_platform_wheel_names_interpreter_and_platform(wheel, tmp_path):
    foreign_suffix = ".cpython-311-aarch64-linux-gnu.so"
    archive = rewrite_wheel(wheel, tmp_path / "foreign.zip",
                            rename={SUFFIX: foreign_suffix,
                                    "linux_x86_64": "linux_aarch64"})
    proc = run_from_archive(archive, tmp_path / "cache")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(CANNOT_LOAD_ALL)
    _assert_names_interpreter(last)
    assert f"ann_core/_blas{foreign_suffix}" in last
    assert "linux_aarch64" in last  # the wheel's own tag, read from its metadata
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")


def test_foreign_python_version_wheel_is_refused(wheel, tmp_path):
    archive = rewrite_wheel(wheel, tmp_path / "old.zip",
                            rename={SUFFIX: ".cpython-38-x86_64-linux-gnu.so"})
    proc = run_from_archive(archive, tmp_path / "cache")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert CANNOT_LOAD_ALL in last
    assert "cpython-38" in last
    _assert_names_interpreter(last)


def test_wheel_missing_a_module_names_it(wheel, tmp_path):
    archive = rewrite_wheel(wheel, tmp_path / "broken.zip", drop=f"_network{SUFFIX}")
    proc = run_from_archive(archive, tmp_path / "cache")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: sparkann cannot load ann_core._network from")
    assert f"ann_core/_blas{SUFFIX}" in last  # what the archive does hold
    _assert_names_interpreter(last)


def test_unwritable_cache_dir_is_a_clear_error(wheel, tmp_path):
    archive = tmp_path / "sparkann.zip"
    archive.write_bytes(open(wheel, "rb").read())
    blocker = tmp_path / "cache"
    blocker.write_text("a file, not a folder")
    proc = run_from_archive(archive, blocker)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "ImportError: sparkann cannot extract its compiled modules" in last
    assert "SPARKANN_CACHE_DIR" in last
