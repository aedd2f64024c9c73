"""Set and report the number of BLAS threads the engine computes with.

The engine uses that many threads of its own when it splits a call's rows (each then runs
one-thread BLAS; see ``ann_core.Network``), and that many BLAS threads otherwise.

Only one BLAS thread pool may be busy at a time: two pools sharing the cores slow GEMM by
an order of magnitude. So when MKL is the backend, scipy's OpenBLAS is held to one thread.
"""
import os

from threadpoolctl import ThreadpoolController

from ann_core._blas import backend, threads_changed

_controller = None


def _pools():
    global _controller
    # Re-scan when MKL was loaded after the first look.
    if _controller is None or (backend()["name"] == "mkl"
                               and not _controller.select(internal_api="mkl").lib_controllers):
        _controller = ThreadpoolController()
    return _controller


def blas_threads():
    """The backend in use and its thread count: ``{"backend", "library", "threads"}``."""
    state = backend()
    if state["name"] == "mkl":
        pools = _pools().select(internal_api="mkl").info()
    else:
        # scipy may carry its own OpenBLAS beside numpy's: the engine uses scipy's.
        pools = _pools().select(internal_api="openblas").info()
        pools = [p for p in pools if "scipy" in p["filepath"] and "numpy" not in p["filepath"]] or pools
    return {"backend": state["name"],
            "library": state["library"] or (pools[0]["filepath"] if pools else None),
            "threads": pools[0]["num_threads"] if pools else 1}


def machine_threads():
    """The number of CPUs of this machine: more BLAS threads than that only compete."""
    return os.cpu_count() or 1


def set_blas_threads(n):
    """Compute with ``n`` BLAS threads from now on; returns the previous count.

    A count above the machine's CPUs (``machine_threads()``) is clamped to it: more threads
    than CPUs only slow GEMM down, and BLAS libraries crash on counts in the tens of
    thousands. With the MKL backend, OpenBLAS is set to one thread so the two pools never
    compete.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"the number of BLAS threads must be >= 1, received {n}")
    n = min(n, machine_threads())
    previous = blas_threads()["threads"]
    pools = _pools()
    if backend()["name"] == "mkl":
        pools.select(internal_api="mkl").limit(limits=n)
        pools.select(internal_api="openblas").limit(limits=1)
    else:
        pools.select(internal_api="openblas").limit(limits=n)  # numpy's too, if separate
    threads_changed(n)
    return previous
