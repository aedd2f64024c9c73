# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""BLAS backends behind one table of function pointers.

The default backend is scipy's OpenBLAS through ``scipy.linalg.cython_blas``. Intel MKL
(``pip install mkl``) is loaded at run time with ``dlopen`` when present or asked for. A GPU
BLAS would be one more way to fill the same table.
"""
import glob
import os
import sys
import warnings

from posix.dlfcn cimport dlopen, dlsym, dlclose, dlerror, RTLD_NOW, RTLD_LOCAL, RTLD_GLOBAL

cdef extern from "<dlfcn.h>" nogil:
    int RTLD_NOLOAD
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

ctypedef void (*shutdown_fn)() noexcept nogil
ctypedef int (*pause_fn)(int kind) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil
ctypedef void (*set_threads_fn)(int n) noexcept nogil
ctypedef int (*set_local_fn)(int n) noexcept nogil

cdef gemm_table _table = gemm_table(_scipy_sgemm, _scipy_dgemm)
cdef void *_mkl_handle = NULL
cdef bint _using_mkl = False
cdef bint _pool_flushes = False  # the BLAS worker threads were started by a flushing thread
cdef shutdown_fn _openblas_shutdown = NULL
cdef get_threads_fn _openblas_get_threads = NULL
cdef set_threads_fn _openblas_set_threads = NULL
cdef get_threads_fn _mkl_get_threads = NULL
cdef set_local_fn _mkl_set_local = NULL
# The count set_blas_threads gave MKL (0: none). MKL's own count is per thread under GNU
# OpenMP (a thread started by Python has OMP_NUM_THREADS's), so the engine keeps this one.
cdef int _mkl_threads = 0


def _find_openblas_functions():
    """scipy's OpenBLAS exports blas_thread_shutdown_ (its fork handler) and its thread count
    functions: find them through the module that links it, so that numpy's separate OpenBLAS
    is never touched."""
    global _openblas_shutdown, _openblas_get_threads, _openblas_set_threads
    import scipy.linalg.cython_blas as cython_blas
    cdef bytes raw = os.fsencode(cython_blas.__file__)
    cdef void *handle = dlopen(raw, RTLD_NOW | RTLD_NOLOAD)
    if handle == NULL:
        return
    _openblas_shutdown = <shutdown_fn>dlsym(handle, b"blas_thread_shutdown_")
    for prefix in (b"scipy_openblas", b"openblas"):
        _openblas_get_threads = <get_threads_fn>dlsym(handle, prefix + b"_get_num_threads")
        _openblas_set_threads = <set_threads_fn>dlsym(handle, prefix + b"_set_num_threads")
        if _openblas_get_threads != NULL and _openblas_set_threads != NULL:
            break
    dlclose(handle)


_find_openblas_functions()


cdef int engine_threads() noexcept nogil:
    """The thread count the engine may use: the BLAS backend's current setting."""
    if _using_mkl and _mkl_threads > 0:
        return _mkl_threads
    if _using_mkl and _mkl_get_threads != NULL:
        return _mkl_get_threads()
    if not _using_mkl and _openblas_get_threads != NULL:
        return _openblas_get_threads()
    return 1


cdef bint can_split_rows() noexcept nogil:
    """Whether BLAS can be held to one thread per engine thread (see openblas_one_thread_*
    and mkl_local_threads_*)."""
    if _using_mkl:
        return _mkl_set_local != NULL
    return _openblas_set_threads != NULL and _openblas_get_threads != NULL


cdef int openblas_one_thread_begin() noexcept nogil:
    """Before the engine splits rows over its own threads: every BLAS call of theirs must run
    on one thread. OpenBLAS has one global count, set to 1 here and given back by
    openblas_threads_restore; MKL's is set per thread (mkl_local_threads_begin)."""
    cdef int previous = 0
    if not _using_mkl and _openblas_get_threads != NULL:
        previous = _openblas_get_threads()
        _openblas_set_threads(1)
    return previous


cdef void openblas_threads_restore(int previous) noexcept nogil:
    if not _using_mkl and _openblas_set_threads != NULL and previous > 0:
        _openblas_set_threads(previous)


cdef int mkl_local_threads_begin(int threads) noexcept nogil:
    """MKL computes with ``threads`` threads in the GEMMs of the calling thread; returns
    what to give mkl_local_threads_end. No-op with OpenBLAS."""
    if _using_mkl and _mkl_set_local != NULL:
        return _mkl_set_local(threads)
    return 0


cdef void mkl_local_threads_end(int previous) noexcept nogil:
    if _using_mkl and _mkl_set_local != NULL:
        _mkl_set_local(previous)


cdef void prepare_threads() noexcept nogil:
    """Make the BLAS worker threads compute with flush-to-zero and denormals-are-zero.

    Called by the engine after it has set both in the calling thread. Threads inherit the
    floating-point environment of the thread that creates them, so the first time (and after
    a change of backend or thread count) the pool is stopped, and the next GEMM starts new
    workers from this thread: OpenBLAS through its fork handler blas_thread_shutdown_, MKL's
    GNU OpenMP pool through omp_pause_resource_all. Those workers keep flushing afterwards.
    """
    global _pool_flushes
    cdef void *gomp
    cdef pause_fn pause
    if _pool_flushes:
        return
    _pool_flushes = True
    if _using_mkl:
        gomp = dlopen(b"libgomp.so.1", RTLD_NOW | RTLD_NOLOAD)  # loaded once MKL has run
        if gomp != NULL:
            pause = <pause_fn>dlsym(gomp, b"omp_pause_resource_all")
            if pause != NULL:
                pause(2)  # omp_pause_hard: the pool's threads exit
            dlclose(gomp)
    elif _openblas_shutdown != NULL:
        _openblas_shutdown()


def threads_changed(int threads=0):
    """Say that the thread count changed (to ``threads``, 0 if unknown): BLAS threads may have
    been started outside the engine."""
    global _pool_flushes, _mkl_threads
    _pool_flushes = False
    _mkl_threads = threads if _using_mkl else 0


_state = {"name": "openblas", "library": None}


cdef void blas_gemm(bint dbl, bint trans_a, bint trans_b, int m, int n, int k, double alpha,
                    const void *A, int lda, const void *B, int ldb, double beta, void *C,
                    int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C, row-major (BLAS computes C.T = op(B).T op(A).T),
    in double when dbl, else in float."""
    cdef char ta = b't' if trans_a else b'n'
    cdef char tb = b't' if trans_b else b'n'
    cdef float alpha_s = <float>alpha, beta_s = <float>beta
    if dbl:
        _table.dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>B, &ldb, <double *>A, &lda,
                     &beta, <double *>C, &ldc)
    else:
        _table.sgemm(&tb, &ta, &n, &m, &k, &alpha_s, <float *>B, &ldb, <float *>A, &lda,
                     &beta_s, <float *>C, &ldc)


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


# Iterations an idle GNU OpenMP thread spins before it sleeps. libgomp's default (300,000)
# keeps workers spinning long after a GEMM; on a busy machine a spinning worker holds a core
# that another thread needs, and MKL's barriers then wait for descheduled threads.
GOMP_SPINCOUNT = "10000"


def _load_gomp(spincount):
    """Load GNU OpenMP for MKL with a short spin, unless the user configured OpenMP waiting.

    libgomp reads its settings once, when it is loaded, so the variable is set only around
    that load and does not reach other OpenMP runtimes (PyTorch's, say) loaded later.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = str(spincount)
    try:
        dlopen(b"libgomp.so.1", RTLD_NOW | RTLD_GLOBAL)  # kept loaded; no-op if already loaded
    finally:
        del os.environ["GOMP_SPINCOUNT"]


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
    global _mkl_get_threads, _mkl_set_local
    _mkl_handle = handle
    _table.sgemm = <sgemm_fn>s
    _table.dgemm = <dgemm_fn>d
    # The C interface (mkl_service.h maps mkl_* names to these; the lower-case symbols of
    # libmkl_rt are the Fortran ones, which take pointers).
    _mkl_get_threads = <get_threads_fn>dlsym(handle, b"MKL_Get_Max_Threads")
    _mkl_set_local = <set_local_fn>dlsym(handle, b"MKL_Set_Num_Threads_Local")


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
    global _using_mkl, _pool_flushes, _mkl_threads
    _pool_flushes = False
    _mkl_threads = 0
    if name == "openblas":
        _table.sgemm = _scipy_sgemm
        _table.dgemm = _scipy_dgemm
        _using_mkl = False
        _state.update(name="openblas", library=None)
        return "openblas"
    path = find_mkl()
    if path is None:
        if name == "mkl":
            raise ValueError("BLAS backend 'mkl' asked for, but no libmkl_rt was found: "
                             "install it with `pip install sparkann[mkl]` or set "
                             "SPARKANN_MKL_LIBRARY to its path")
        return set_backend("openblas")
    # GNU OpenMP threads spin only briefly before they sleep, so an idle MKL pool does not
    # take the cores from OpenBLAS's threads (Intel's OpenMP spins for 200 ms by default).
    os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
    try:
        _load_gomp(os.environ.get("SPARKANN_GOMP_SPINCOUNT", GOMP_SPINCOUNT))
        _load_mkl(path)
    except OSError as error:
        if name == "mkl":
            raise
        warnings.warn(f"MKL found but not usable, using OpenBLAS: {error}", RuntimeWarning)
        return set_backend("openblas")
    _using_mkl = True
    _state.update(name="mkl", library=path)
    return "mkl"


def backend():
    """Name and library file of the BLAS backend in use: ``{"name": ..., "library": ...}``."""
    return dict(_state)


def gemm(A, B, C, double beta=0.0):
    """C := A @ B + beta * C with the backend in use (float32 or float64, C-contiguous).

    For tests and for measuring the GEMM rate of the backend; the engine calls the table directly.
    """
    import numpy as np
    if not all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.ndim == 2
               for a in (A, B, C)):
        raise ValueError("gemm: A, B and C must be 2-D C-contiguous arrays")
    if not (A.dtype == B.dtype == C.dtype) or A.dtype not in (np.float32, np.float64):
        raise ValueError(f"gemm: expected one dtype, float32 or float64, received "
                         f"{A.dtype}, {B.dtype}, {C.dtype}")
    if A.shape[1] != B.shape[0] or C.shape != (A.shape[0], B.shape[1]) or not C.flags.writeable:
        raise ValueError(f"gemm: shapes {A.shape} @ {B.shape} -> {C.shape} do not match")
    cdef int m = A.shape[0], k = A.shape[1], n = B.shape[1]
    if m == 0 or n == 0:
        return C
    if k == 0:
        C *= beta
        return C
    cdef float[:, ::1] fa, fb, fc
    cdef double[:, ::1] da, db, dc
    if A.dtype == np.float32:
        fa, fb, fc = A, B, C
        with nogil:
            blas_gemm(False, False, False, m, n, k, 1.0, &fa[0, 0], k, &fb[0, 0], n, beta,
                      &fc[0, 0], n)
    else:
        da, db, dc = A, B, C
        with nogil:
            blas_gemm(True, False, False, m, n, k, 1.0, &da[0, 0], k, &db[0, 0], n, beta,
                      &dc[0, 0], n)
    return C
