"""The sdist and the wheel: contents, metadata, portability of the compiled modules."""
import importlib.machinery
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
from ann_core._archive import COMPILED_MODULES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
COMPILED = [f"ann_core/{m}{SUFFIX}" for m in COMPILED_MODULES]


def _source_modules():
    """Every Python module of the three packages, as wheel member names."""
    found = set()
    for top, prefix in (("ann_core", "ann_core"), ("python/sparkann", "sparkann")):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            rel = os.path.relpath(folder, os.path.join(ROOT, top)).replace(os.sep, "/")
            if "__pycache__" in rel:
                continue
            base = prefix if rel == "." else f"{prefix}/{rel}"
            found.update(f"{base}/{f}" for f in files if f.endswith(".py"))
    return found


@pytest.fixture(scope="module")
def unpacked(wheel, tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheel")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(folder)
    return folder


def test_wheel_carries_compiled_modules_packages_and_metadata(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for member in COMPILED + ["ann_core/_archive.py", "sparkann/spark/__init__.py"]:
        assert member in names
    missing = _source_modules() - names
    assert not missing, f"Python modules not in the wheel: {sorted(missing)}"
    assert "ann_core/_blas.pxd" in names  # for cimport by other Cython code
    leaked = [n for n in names if n.endswith((".c", ".pyx")) or "/tests/" in n]
    assert not leaked, f"build inputs in the wheel: {leaked}"
    dist_info = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert len(dist_info) == 1


def test_metadata_single_machine_core_and_spark_extra(wheel):
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith("METADATA"))).decode()
        entry_points = zf.read(next(n for n in zf.namelist()
                                    if n.endswith("entry_points.txt"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]
    core = sorted(r.split(">")[0].split("<")[0].split("=")[0] for r in requires if ";" not in r)
    assert core == ["numpy", "scipy", "threadpoolctl", "tqdm"]
    spark_extra = [r for r in requires if 'extra == "spark"' in r]
    assert {r.split(">")[0].split("<")[0] for r in spark_extra} == {"pyspark", "pyarrow", "pandas"}
    for extra in ("spark", "plot", "mkl", "dev"):
        assert f"Provides-Extra: {extra}" in meta
    assert "sparkann = sparkann.cli:main" in entry_points


def test_sdist_has_what_building_needs(dists):
    with tarfile.open(dists["sdist"]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in ("setup.py", "pyproject.toml", "MANIFEST.in", "ann_core/_blas.pyx",
                   "ann_core/_network.pyx", "ann_core/_blas.pxd", "ann_core/_csrc.pxd",
                   "csrc/ann_kernels_impl.h", "csrc/ann_status.h"):
        assert needed in names, needed
    sources = {f"csrc/{f}" for f in os.listdir(os.path.join(ROOT, "csrc"))}
    assert sources <= names
    # Cython output is regenerated from the .pyx files, never shipped stale.
    assert not [n for n in names if n.startswith("ann_core/") and n.endswith(".c")]


@pytest.mark.skipif(not shutil.which("ldd"), reason="ldd is not installed")
def test_compiled_modules_link_only_libc(unpacked):
    for member in COMPILED:
        out = subprocess.run(["ldd", str(unpacked / member)], capture_output=True, text=True,
                             check=True).stdout
        libs = [line.split()[0] for line in out.splitlines() if line.strip()]
        others = [lib for lib in libs if not (lib.startswith(("linux-vdso", "libc.so"))
                                               or "ld-linux" in lib)]
        assert not others, f"{member} links {others}; BLAS must come from scipy at run time"


@pytest.mark.skipif(not shutil.which("objdump"), reason="objdump is not installed")
def test_compiled_modules_are_portable_x86_64(unpacked):
    """No AVX/AVX-512 registers outside the element-wise kernels' AVX2 and AVX-512 clones,
    which the loader picks only on CPUs that have them, each beside a baseline ``.default``:
    the wheel was not built with -march=native."""
    if os.uname().machine != "x86_64":
        pytest.skip("the instruction check is written for x86-64")
    clones = (".arch_x86_64_v3", ".arch_x86_64_v4")
    cloned, defaults = set(), set()
    for member in COMPILED:
        asm = subprocess.run(["objdump", "-d", str(unpacked / member)], capture_output=True,
                             text=True, check=True).stdout
        function, wide = "", []
        for line in asm.splitlines():
            if line.endswith(">:"):         # "0000000000012340 <name>:" starts a function
                function = line.split("<", 1)[1][:-2]
                base, _, version = function.partition(".")
                if function.endswith(clones):
                    cloned.add(base)
                elif version == "default":
                    defaults.add(base)
            elif ("%ymm" in line or "%zmm" in line) and not function.endswith(clones):
                wide.append(f"{function}: {line}")
        assert not wide, f"{member} uses AVX instructions, e.g. {wide[:3]}"
    assert cloned <= defaults, f"clones without a baseline version: {cloned - defaults}"
    assert "ann_act_forward_s" in cloned   # GCC >= 12 on x86-64 builds the clones


def test_single_machine_library_imports_without_pyspark(unpacked):
    """What ``pip install .`` gives (no extras) works: pyspark is never imported."""
    code = (f"import sys; sys.path.insert(0, {str(unpacked)!r}); sys.modules['pyspark'] = None\n"
            "import ann_core, sparkann\n"
            "import pkgutil, importlib\n"
            "for m in pkgutil.iter_modules(sparkann.__path__):\n"
            "    if m.name not in ('spark',): importlib.import_module('sparkann.' + m.name)\n"
            "net = ann_core.Network(3, [('dense', 2), ('loss', 'softmax_cross_entropy')])\n"
            "print(ann_core.__file__)\n")
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd=str(unpacked.parent),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(unpacked))
