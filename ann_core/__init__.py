"""ann_core: the single-machine engine of sparkann (no Spark).

``Network`` computes forward passes, losses and gradients of feed-forward networks over one
flat weight vector, calling BLAS GEMM directly on a preallocated workspace.

The BLAS backend is chosen at import from ``SPARKANN_BLAS`` ("auto" by default: MKL when the
``mkl`` package is installed, else scipy's OpenBLAS; or "openblas", "mkl"). Networks of
dtype "bfloat16" multiply through oneDNN where the CPU has native bfloat16
(``capabilities()``).
"""
import os as _os

from ann_core import _archive

# From a zip or wheel on sys.path (spark-submit --py-files): load compiled modules from a cache.
_archive.use_extracted_modules(__spec__, __path__)

try:
    from ann_core._blas import backend, find_mkl, set_backend
    from ann_core._network import ACTIVATIONS, LOSSES, STEP_KINDS, Network, optimizer_step
except ModuleNotFoundError as _error:
    # Python started in a source checkout imports its ann_core/ folder, which holds only the
    # Cython sources until they are compiled in place: say how, in one line.
    _root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    if _error.name not in ("ann_core._blas", "ann_core._onednn", "ann_core._network") or \
            not _os.path.exists(_os.path.join(_root, "ann_core", "_blas.pyx")):
        raise
    raise ImportError(f"sparkann's native engine is not built in the source checkout {_root}: "
                      f"run `pip install -e .` there to compile it in place, or start Python "
                      f"outside that folder to use an installed sparkann") from None
from ann_core.threads import blas_threads, set_blas_threads  # noqa: E402  (after the check)
from ann_core.capabilities import capabilities  # noqa: E402

__all__ = ["ACTIVATIONS", "LOSSES", "STEP_KINDS", "Network", "backend", "blas_threads",
           "capabilities", "find_mkl", "optimizer_step", "set_backend", "set_blas_threads"]

set_backend(_os.environ.get("SPARKANN_BLAS", "auto"))
