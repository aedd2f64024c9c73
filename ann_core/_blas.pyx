# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""BLAS backends behind one table of function pointers.

The default backend is scipy's OpenBLAS through ``scipy.linalg.cython_blas``. Intel MKL
(``pip install mkl``) is loaded at run time with ``dlopen`` when present or asked for. A GPU
BLAS would be one more way to fill the same table.
"""
import glob
import os
import sys

from posix.dlfcn cimport dlopen, dlsym, dlerror, RTLD_NOW, RTLD_LOCAL
from scipy.linalg.cython_blas cimport sgemm as scipy_sgemm, dgemm as scipy_dgemm

ctypedef void (*sgemm_fn)(char *ta, char *tb, int *m, int *n, int *k, float *alpha,
                          float *a, int *lda, float *b, int *ldb, float *beta,
                          float *c, int *ldc) noexcept nogil
ctypedef void (*dgemm_fn)(char *ta, char *tb, int *m, int *n, int *k, double *alpha,
                          double *a, int *lda, double *b, int *ldb, double *beta,
                          double *c, int *ldc) noexcept nogil

cdef struct gemm_table:
    sgemm_fn sgemm
    dgemm_fn dgemm

cdef void _scipy_sgemm(char *ta, char *tb, int *m, int *n, int *k, float *alpha,
                       float *a, int *lda, float *b, int *ldb, float *beta,
                       float *c, int *ldc) noexcept nogil:
    scipy_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

cdef void _scipy_dgemm(char *ta, char *tb, int *m, int *n, int *k, double *alpha,
                       double *a, int *lda, double *b, int *ldb, double *beta,
                       double *c, int *ldc) noexcept nogil:
    scipy_dgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

cdef gemm_table _table = gemm_table(_scipy_sgemm, _scipy_dgemm)
cdef void *_mkl_handle = NULL
_state = {"name": "openblas", "library": None}


cdef void gemm_s(bint trans_a, bint trans_b, int m, int n, int k, float alpha,
                 const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C, row-major (BLAS computes C.T = op(B).T op(A).T)."""
    cdef char ta = b't' if trans_a else b'n'
    cdef char tb = b't' if trans_b else b'n'
    _table.sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *>B, &ldb, <float *>A, &lda,
                 &beta, C, &ldc)


cdef void gemm_d(bint trans_a, bint trans_b, int m, int n, int k, double alpha,
                 const double *A, int lda, const double *B, int ldb,
                 double beta, double *C, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C, row-major (BLAS computes C.T = op(B).T op(A).T)."""
    cdef char ta = b't' if trans_a else b'n'
    cdef char tb = b't' if trans_b else b'n'
    _table.dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>B, &ldb, <double *>A, &lda,
                 &beta, C, &ldc)


def find_mkl():
    """Path of MKL's single dynamic library (libmkl_rt), or None.

    ``SPARKANN_MKL_LIBRARY`` names the file explicitly; otherwise the ``lib`` folders of this
    Python's prefixes are searched, which is where ``pip install mkl`` puts it.
    """
    explicit = os.environ.get("SPARKANN_MKL_LIBRARY")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix)):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if found:
            return found[0]
    return None


def _load_mkl(path):
    global _mkl_handle
    cdef bytes raw = os.fsencode(path)
    cdef void *handle = dlopen(raw, RTLD_NOW | RTLD_LOCAL)
    if handle == NULL:
        raise OSError(f"cannot load MKL from {path}: {(<bytes>dlerror()).decode(errors='replace')}")
    cdef void *s = dlsym(handle, b"sgemm_")
    cdef void *d = dlsym(handle, b"dgemm_")
    if s == NULL or d == NULL:
        raise OSError(f"{path} does not export sgemm_/dgemm_: not an MKL runtime library")
    _mkl_handle = handle
    _table.sgemm = <sgemm_fn>s
    _table.dgemm = <dgemm_fn>d


def set_backend(name="auto"):
    """Choose the BLAS behind every GEMM of the engine.

    Parameters
    ----------
    name : {"auto", "openblas", "mkl"}
        ``"openblas"`` is scipy's OpenBLAS; ``"mkl"`` loads Intel MKL (an error if it is not
        installed); ``"auto"`` takes MKL when it is installed and OpenBLAS otherwise.

    Returns
    -------
    str
        The backend now in use.
    """
    if name not in ("auto", "openblas", "mkl"):
        raise ValueError(f"BLAS backend must be 'auto', 'openblas' or 'mkl', received {name!r}")
    if name == "openblas":
        _table.sgemm = _scipy_sgemm
        _table.dgemm = _scipy_dgemm
        _state.update(name="openblas", library=None)
        return "openblas"
    path = find_mkl()
    if path is None:
        if name == "mkl":
            raise ValueError("BLAS backend 'mkl' asked for, but no libmkl_rt was found: "
                             "install it with `pip install sparkann[mkl]` or set "
                             "SPARKANN_MKL_LIBRARY to its path")
        return set_backend("openblas")
    # GNU OpenMP threads in MKL sleep when idle, so they do not fight OpenBLAS's threads.
    os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
    _load_mkl(path)
    _state.update(name="mkl", library=path)
    return "mkl"


def backend():
    """Name and library file of the BLAS backend in use: ``{"name": ..., "library": ...}``."""
    return dict(_state)
