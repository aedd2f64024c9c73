"""Run `caffe time` and read its figures; time the sgemm of the BLAS that Caffe loads.

An OpenBLAS older than the CPU may not recognise it and fall back to its slowest kernels
(Debian 12's 0.3.21 takes a 2023 Xeon for a "Prescott"), which would time that fallback
rather than Caffe: `best_coretype` finds the OPENBLAS_CORETYPE with the fastest sgemm.

Used by bench/bench_core.py --caffe; needs a Caffe built by build_caffe.sh (or any BVLC
Caffe binary).
"""
import ctypes
import os
import pathlib
import re
import subprocess
import sys
import time

_LAYER_LINE = re.compile(r"\]\s*(\S+)\s+(forward|backward): ([-+0-9.eE]+) ms\.")
_TOTAL_LINE = re.compile(r"Average Forward-Backward: ([-+0-9.eE]+) ms\.")


def find_caffe(path):
    """The `caffe` binary at `path`: the binary itself, a build directory or a source tree."""
    path = pathlib.Path(path).expanduser()
    for candidate in (path, path / "tools" / "caffe", path / "build" / "tools" / "caffe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.resolve()
    raise FileNotFoundError(
        f"--caffe {path}: no executable `caffe` there (tried the path itself, tools/caffe and "
        "build/tools/caffe); build one with bench/caffe/build_caffe.sh CAFFE_SOURCE_DIR BUILD_DIR")


def caffe_time(binary, prototxt, iterations, threads, coretype=None):
    """`caffe time` on `prototxt` (CPU) with `threads` OpenBLAS threads (of `coretype`).

    Returns (milliseconds per forward+backward, {layer name: (forward ms, backward ms)}).
    Caffe times the whole run in whole milliseconds (the layers in microseconds): give it
    enough iterations that a millisecond does not matter.
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               GLOG_logtostderr="1")  # glog would otherwise leave log files in the temp folder
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    proc = subprocess.run([str(binary), "time", f"-model={prototxt}", f"-iterations={iterations}"],
                          env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    total = _TOTAL_LINE.search(log)
    if proc.returncode != 0 or total is None:
        tail = "\n".join(log.splitlines()[-15:])
        raise RuntimeError(f"`{binary} time -model={prototxt}` failed (exit {proc.returncode}):"
                           f"\n{tail}")
    layers = {}
    for name, direction, ms in _LAYER_LINE.findall(log):
        fwd, bwd = layers.get(name, (0.0, 0.0))
        layers[name] = (float(ms), bwd) if direction == "forward" else (fwd, float(ms))
    return float(total.group(1)), layers


def blas_library(binary):
    """The BLAS shared library the dynamic loader gives `binary` (via ldd), or None."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    for wanted in ("libopenblas", "libblas.so", "libmkl_rt", "libcblas"):
        for line in out.splitlines():
            if wanted in line and "=>" in line:
                path = line.split("=>")[1].split("(")[0].strip()
                if path and path != "not":
                    return os.path.realpath(path)
    return None


def sgemm_rate(library, threads, n=2048, repeats=3):
    """GFLOP/s of cblas_sgemm in `library` on n x n x n with `threads` threads (best of repeats)."""
    lib = ctypes.CDLL(library, mode=os.RTLD_LOCAL)
    for setter in ("openblas_set_num_threads", "MKL_Set_Num_Threads"):
        if hasattr(lib, setter):
            getattr(lib, setter)(ctypes.c_int(threads))
            break
    import numpy as np
    rng = np.random.default_rng(0)
    A, B = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    C = np.empty((n, n), np.float32)
    ptr = ctypes.POINTER(ctypes.c_float)
    args = (101, 111, 111, n, n, n, ctypes.c_float(1.0), A.ctypes.data_as(ptr), n,
            B.ctypes.data_as(ptr), n, ctypes.c_float(0.0), C.ctypes.data_as(ptr), n)
    lib.cblas_sgemm(*args)  # warm up: thread start, buffers
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        lib.cblas_sgemm(*args)
        best = min(best, time.perf_counter() - start)
    if not np.allclose(C[:2, :2], A[:2] @ B[:, :2], rtol=1e-3):
        raise RuntimeError(f"cblas_sgemm of {library} returned wrong numbers")
    return 2 * n ** 3 / best / 1e9


# OpenBLAS x86-64 core types worth trying, with the CPU flags each needs (newest first)
_CORETYPES = [("Cooperlake", {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"}),
              ("SkylakeX", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}),
              ("Haswell", {"avx2", "fma"})]


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _rate_in_subprocess(library, threads, coretype, repeats):
    """(core name OpenBLAS reports, sgemm GFLOP/s) with OPENBLAS_CORETYPE=coretype (None: its own
    choice)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    code = ("import ctypes, sys; sys.path.insert(0, sys.argv[1]); "
            "from caffe_time import sgemm_rate; "
            "lib = ctypes.CDLL(sys.argv[2]); f = getattr(lib, 'openblas_get_corename', None); "
            "f and setattr(f, 'restype', ctypes.c_char_p); "
            "print((f().decode() if f else '?'), sgemm_rate(sys.argv[2], int(sys.argv[3]), "
            "repeats=int(sys.argv[4])))")
    out = subprocess.run([sys.executable, "-c", code, str(pathlib.Path(__file__).parent), library,
                          str(threads), str(repeats)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return None, 0.0
    name, rate = out.stdout.split()[-2:]
    return name, float(rate)


def best_coretype(library, threads, repeats=3):
    """(OPENBLAS_CORETYPE giving `library` its fastest sgemm or None for its own choice, rates).

    `rates` maps each core type tried ("default" for the library's own choice, labelled with
    the core it picked) to its sgemm GFLOP/s on 2048^3. Only OpenBLAS has core types; for any
    other library, or when the environment already sets OPENBLAS_CORETYPE, nothing is tried.
    """
    if "openblas" not in os.path.basename(library) and "blas.so" not in os.path.basename(library):
        return None, {}
    if os.environ.get("OPENBLAS_CORETYPE"):
        forced = os.environ["OPENBLAS_CORETYPE"]
        return forced, {forced: _rate_in_subprocess(library, threads, forced, repeats)[1]}
    name, rate = _rate_in_subprocess(library, threads, None, repeats)
    rates = {f"default ({name})": rate}
    best, best_rate = None, rate
    flags = _cpu_flags()
    for coretype, needs in _CORETYPES:
        if needs <= flags:
            rates[coretype] = _rate_in_subprocess(library, threads, coretype, repeats)[1]
            if rates[coretype] > 1.05 * best_rate:
                best, best_rate = coretype, rates[coretype]
    return best, rates
