"""No allocation per call.

After a first call with a given batch size (which may warm BLAS up), 1,000 further calls of
``loss_grad`` (and of ``forward`` into a given ``out``) must allocate nothing that stays:

- tracemalloc (Python objects and numpy buffers): net growth below 4 KiB, and the peak during
  the calls stays within 4 KiB of the start, so not even a temporary copy of a block
  (hundreds of KiB here) is made and freed;
- glibc's own count of bytes in use (``mallinfo2``, which also sees C ``malloc`` from the
  engine and BLAS): growth below 64 KiB;
- resident memory (``/proc/self/statm``): growth below 1 MiB.
"""
import ctypes
import ctypes.util
import gc
import os
import tracemalloc

import numpy as np
import pytest

from ann_core import Network
from ann_core._network import _set_pack_min_rows

CALLS = 1000
TRACEMALLOC_BOUND = 4 * 1024
MALLOC_BOUND = 64 * 1024
RSS_BOUND = 1024 * 1024


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


def _mallinfo2():
    """Function returning bytes allocated by malloc and in use, or None off glibc >= 2.33."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _Mallinfo2

    def in_use():
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd  # small blocks + mmapped blocks

    return in_use


def _resident_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def _measure(call):
    """Growth of each memory measure over CALLS calls of call(), after a warm-up call.

    tracemalloc and the C-level measures run separately: tracemalloc's own bookkeeping
    would show in malloc's count, and reading /proc would show in tracemalloc's peak.
    """
    call()
    gc.collect()
    gc.disable()  # a collection in the middle would only blur the figures
    malloc_in_use = _mallinfo2()
    try:
        tracemalloc.start()
        call()  # the first traced call may intern small objects
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(CALLS):
            call()
        end, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        rss_before = _resident_bytes()
        malloc_before = malloc_in_use() if malloc_in_use else None
        for _ in range(CALLS):
            call()
        malloc_after = malloc_in_use() if malloc_in_use else None
        rss_after = _resident_bytes()
    finally:
        tracemalloc.stop()
        gc.enable()
    return {"traced": end - start, "traced_peak": peak - start,
            "malloc": None if malloc_before is None else malloc_after - malloc_before,
            "rss": None if rss_before is None else rss_after - rss_before}


def _assert_no_growth(growth):
    assert growth["traced"] < TRACEMALLOC_BOUND, growth
    assert growth["traced_peak"] < TRACEMALLOC_BOUND, growth
    if growth["malloc"] is not None:
        assert growth["malloc"] < MALLOC_BOUND, growth
    if growth["rss"] is not None:
        assert growth["rss"] < RSS_BOUND, growth


LAYERS = [("dense", 64), ("activation", "sigmoid"), ("dense", 33), ("activation", "relu"),
          ("dense", 10)]


# bfloat16: float32 arrays, bfloat16 GEMMs (oneDNN's primitives made on the first call)
@pytest.mark.parametrize("net_dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("loss,dense", [("softmax_cross_entropy", False),
                                        ("sigmoid_cross_entropy", True),
                                        ("squared_error", True)])
def test_loss_grad_allocates_nothing_per_call(net_dtype, loss, dense):
    net = Network(50, LAYERS + [("loss", loss)], dtype=net_dtype, block_size=128)
    dtype = net.dtype
    rng = np.random.default_rng(0)
    n = 300  # three blocks, the last partial; one block of X is 25 KiB or more
    w = rng.normal(scale=0.2, size=net.n_weights).astype(dtype)
    X = rng.normal(size=(n, 50)).astype(dtype)
    y = (rng.uniform(size=(n, 10)).astype(dtype) if dense
         else rng.integers(0, 10, n).astype(np.int64))
    grad = np.zeros(net.n_weights, dtype)
    _assert_no_growth(_measure(lambda: net.loss_grad(w, X, y, grad, zero=True)))


# (named and parametrized like the bfloat16 cases above, which scripts/asan.sh leaves out)
@pytest.mark.parametrize("net_dtype", ["bfloat16"])
def test_packed_weights_call_allocates_nothing_per_call(net_dtype):
    """bfloat16 weights packed into oneDNN's layout at every call (from the first row on
    here): the packing's primitives are made on the first call, its buffers are the
    workspace's."""
    previous = _set_pack_min_rows(1)
    try:
        test_loss_grad_allocates_nothing_per_call(net_dtype, "softmax_cross_entropy", False)
        test_forward_into_out_allocates_nothing_per_call(net_dtype)
    finally:
        _set_pack_min_rows(previous)


@pytest.mark.parametrize("net_dtype", ["float32", "float64", "bfloat16"])
def test_forward_into_out_allocates_nothing_per_call(net_dtype):
    net = Network(50, LAYERS + [("loss", "softmax_cross_entropy")], dtype=net_dtype,
                  block_size=128)
    dtype = net.dtype
    rng = np.random.default_rng(1)
    w = rng.normal(scale=0.2, size=net.n_weights).astype(dtype)
    X = rng.normal(size=(300, 50)).astype(dtype)
    out = np.empty((300, 10), dtype)
    _assert_no_growth(_measure(lambda: net.forward(w, X, out=out)))


def test_workspace_is_laid_out_once():
    """The workspace depends on the topology and block size, not on the batch."""
    net = Network(50, LAYERS + [("loss", "squared_error")], dtype="float32", block_size=128)
    size = net.workspace_bytes
    # activations of three stages, two deltas and the loss buffer, for 128 rows
    assert size >= 128 * 4 * (64 + 33 + 10 + 2 * 64 + 10)
    rng = np.random.default_rng(2)
    w = rng.normal(size=net.n_weights).astype(np.float32)
    grad = np.zeros(net.n_weights, np.float32)
    for n in (1, 127, 128, 129, 5000):
        X = rng.normal(size=(n, 50)).astype(np.float32)
        net.loss_grad(w, X, rng.normal(size=(n, 10)).astype(np.float32), grad)
        assert net.workspace_bytes == size
