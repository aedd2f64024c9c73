"""The element-wise kernels compiled for AVX-512 (x86-64-v4), AVX2 (v3) and baseline x86-64
give bitwise the same results, for every activation of the kernels' table, every optimizer
step, both dtypes and the bfloat16 conversion.

The wheel holds all three (GCC target clones, picked by the CPU at load time), so a user's
results must not depend on the machine. Each variant is built here on its own with the
build's flags and compared on the variants this CPU runs.
"""
import ctypes
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

import reference as ref

import ann_core

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = {"x86-64-v4": "avx512f", "x86-64-v3": "avx2", "x86-64": None}
FLAGS = ["-O3", "-g0", "-fno-trapping-math", "-fno-math-errno", "-std=c99", "-fPIC", "-shared",
         "-DANN_NO_VECTOR_CLONES"]

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64" or shutil.which("gcc") is None,
                                reason="needs x86-64 and gcc")


def _cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kernels")
    flags, libs = _cpu_flags(), {}
    for arch, needs in VARIANTS.items():
        if needs is not None and needs not in flags:
            continue
        lib = folder / f"kernels-{arch}.so"
        subprocess.run(["gcc", f"-march={arch}", *FLAGS, "-Icsrc", "csrc/ann_kernels.c",
                        "csrc/ann_arena.c", "csrc/ann_optim.c", "csrc/ann_bf16.c", "-lm", "-o",
                        str(lib)],
                       cwd=ROOT, check=True)
        libs[arch] = ctypes.CDLL(str(lib))
    if len(libs) < 2:
        pytest.skip("this CPU runs only the baseline variant")
    return libs


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _run(lib, dtype, kind, alpha, z, delta):
    """Forward in place, then backward, with one variant; returns (y, delta * f'(z))."""
    x = "d" if dtype == "float64" else "s"
    real = ctypes.c_double if dtype == "float64" else ctypes.c_float
    y, d = z.copy(), delta.copy()
    fwd, bwd = getattr(lib, f"ann_act_forward_{x}"), getattr(lib, f"ann_act_backward_{x}")
    fwd.argtypes = [ctypes.c_int, real, ctypes.c_size_t, ctypes.c_void_p]
    bwd.argtypes = [ctypes.c_int, real, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                    ctypes.c_void_p]
    assert fwd(kind, alpha, y.size, _ptr(y)) == 0
    assert bwd(kind, alpha, y.size, _ptr(z), _ptr(y), _ptr(d)) == 0
    return y, d


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(ann_core.ACTIVATIONS))
def test_activation_variants_agree_bitwise(variants, name, dtype):
    rng = np.random.default_rng(0)
    sweep = np.concatenate([-np.logspace(-12, np.log10(800), 3001), [0.0, -0.0],
                            np.logspace(-12, np.log10(800), 3001),
                            rng.normal(scale=3.0, size=4093)])
    z = sweep.astype(dtype)
    delta = rng.normal(size=z.size).astype(dtype)
    results = {arch: _run(lib, dtype, ann_core.ACTIVATIONS[name], 0.01, z, delta)
               for arch, lib in variants.items()}
    base_y, base_d = results["x86-64"]
    for arch, (y, d) in results.items():
        assert y.tobytes() == base_y.tobytes(), f"{name} forward differs: {arch} vs x86-64"
        assert d.tobytes() == base_d.tobytes(), f"{name} backward differs: {arch} vs x86-64"


class _Step(ctypes.Structure):  # csrc/ann_optim.h's ann_step
    _fields_ = [("kind", ctypes.c_int)] + [(name, ctypes.c_double) for name in (
        "grad_scale", "rate", "beta1", "beta2", "inv_bias2", "eps")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", sorted(ann_core.STEP_KINDS))
def test_optimizer_step_variants_agree_bitwise(variants, kind, dtype):
    rng = np.random.default_rng(1)
    n = 4099  # two chunks and a tail that is not a multiple of any vector width
    w0 = rng.normal(size=n).astype(dtype)
    grads = [rng.normal(size=n).astype(dtype) for _ in range(3)]
    step = _Step(ann_core.STEP_KINDS[kind][0], 1 / 200, 0.01 / (1 - 0.9 ** 3), 0.9, 0.999,
                 1 / (1 - 0.999 ** 3), 1e-8)
    real = ctypes.c_double if dtype == "float64" else ctypes.c_float
    results = {}
    for arch, lib in variants.items():
        fn = getattr(lib, f"ann_step_{'d' if dtype == 'float64' else 's'}")
        fn.argtypes = [ctypes.POINTER(_Step), real, ctypes.c_size_t] + [ctypes.c_void_p] * 6
        w, m, v = w0.copy(), np.full(n, 0.01, dtype), np.full(n, 0.02, dtype)
        squares, bad = ctypes.c_double(0.0), ctypes.c_int(0)
        for g in grads:
            assert fn(ctypes.byref(step), 1e-3, n, _ptr(w), _ptr(g), _ptr(m), _ptr(v),
                      ctypes.addressof(squares), ctypes.addressof(bad)) == 0
        results[arch] = (w.tobytes(), m.tobytes(), v.tobytes(), squares.value, bad.value)
    for arch, result in results.items():
        assert result == results["x86-64"], f"{kind} step differs: {arch} vs x86-64"
    assert results["x86-64"][4] == 0 and results["x86-64"][3] > 0


def test_random_stream_is_counter_based(variants):
    lib = variants["x86-64"]
    lib.ann_random_u64.restype = ctypes.c_uint64
    lib.ann_random_u64.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
    lib.ann_random_unit.restype = ctypes.c_double
    lib.ann_random_unit.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
    first = [lib.ann_random_u64(7, n) for n in range(1000)]
    assert first == [lib.ann_random_u64(7, n) for n in range(1000)]   # no hidden state
    assert len(set(first)) == 1000
    assert not set(first) & {lib.ann_random_u64(8, n) for n in range(1000)}
    units = np.array([lib.ann_random_unit(3, n) for n in range(20000)])
    assert units.min() >= 0.0 and units.max() < 1.0
    assert abs(units.mean() - 0.5) < 0.01 and abs(units.var() - 1 / 12) < 0.005


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cols", [1, 2, 7, 64, 129])
def test_dropout_variants_agree_bitwise(variants, dtype, cols):
    """The dropout kernels (mask drawn in the loop and kept as bytes, gradient through it)
    give the same bits in every variant, and the masks are those ann_random_u64 documents."""
    x = "d" if dtype == "float64" else "s"
    rng = np.random.default_rng(cols)
    rows, rate, key, row0 = 37, 0.3, 0x1234_5678_9ABC_DEF0, 1000
    X = rng.normal(size=(rows, cols)).astype(dtype)
    X[0, 0] = np.nan   # NaN propagates through a multiplication, dropped or kept
    d_out = rng.normal(size=(rows, cols)).astype(dtype)
    results = {}
    for arch, lib in variants.items():
        fwd = getattr(lib, f"ann_dropout_forward_{x}")
        bwd = getattr(lib, f"ann_dropout_backward_{x}")
        fwd.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_size_t,
                        ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        bwd.argtypes = [ctypes.c_size_t, ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p,
                        ctypes.c_void_p]
        Y, M, d_in = np.empty_like(X), np.empty(X.shape, np.uint8), np.empty_like(X)
        assert fwd(key, row0, rows, cols, rate, _ptr(X), _ptr(Y), _ptr(M)) == 0
        assert bwd(X.size, rate, _ptr(M), _ptr(d_out), _ptr(d_in)) == 0
        assert fwd(key, row0, rows, cols, 1.0, _ptr(X), _ptr(Y), _ptr(M)) != 0  # rate < 1
        results[arch] = (Y.tobytes(), M.tobytes(), d_in.tobytes())
    base = results["x86-64"]
    for arch, got in results.items():
        assert got == base, f"dropout differs: {arch} vs x86-64"
    M = np.frombuffer(base[1], np.uint8).reshape(rows, cols)
    Y = np.frombuffer(base[0], dtype).reshape(rows, cols)
    scale = np.asarray(1 / (1 - rate), dtype)
    np.testing.assert_array_equal(Y[1:], X[1:] * np.where(M[1:] == 1, scale, 0).astype(dtype))
    assert np.isnan(Y[0, 0])
    # the row seeds of the library, the units' bits as tests/reference.py computes them
    lib = variants["x86-64"]
    lib.ann_dropout_row_seed.restype = ctypes.c_uint32
    lib.ann_dropout_row_seed.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
    seeds = np.array([lib.ann_dropout_row_seed(key, row0 + r) for r in range(rows)], np.uint32)
    bits = ref._dropout_bits(seeds[:, None], np.arange(cols, dtype=np.uint32)[None, :])
    np.testing.assert_array_equal(M, bits >= np.uint32(int(rate * 2**32)))


def test_bfloat16_conversion_variants_agree_bitwise(variants):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(scale=10.0, size=5003),
                        rng.integers(0, 2**32, 4099, dtype=np.uint32).view(np.float32)])
    x = x.astype(np.float32)
    out = {}
    for arch, lib in variants.items():
        bits = np.empty(x.size, np.uint16)
        lib.ann_f32_to_bf16.argtypes = [ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
        assert lib.ann_f32_to_bf16(x.size, _ptr(x), _ptr(bits)) == 0
        out[arch] = bits
    first = next(iter(out.values()))
    for bits in out.values():
        np.testing.assert_array_equal(bits, first)
