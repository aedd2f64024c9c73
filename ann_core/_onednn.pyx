# cython: language_level=3, boundscheck=False, wraparound=False
"""oneDNN, loaded at run time, for the bfloat16 GEMMs of ``dtype="bfloat16"`` networks.

``pip install sparkann[bf16]`` installs oneDNN's CPU build on GNU OpenMP
(``onednn-cpu-gomp``: the thread runtime MKL runs on here too, so one pool serves both);
``SPARKANN_ONEDNN_LIBRARY`` names another ``libdnnl.so.3``. Nothing is loaded until a
bfloat16 network or ``ann_core.capabilities()`` asks, so importing the engine stays cheap.
(The ``onednn`` wheel is a SYCL build: its CPU engine needs an OpenCL CPU device, and
without one it fails to load here, which leaves bfloat16 networks in float32.)

oneDNN computes with as many OpenMP threads as the calling thread's OpenMP setting allows:
the engine sets that to its own count (``ann_core.set_blas_threads``) before each call.
"""
import glob
import os
import re
import sys

from ann_core._blas import GOMP_SPINCOUNT, _load_gomp

from libc.stdint cimport uint16_t
from posix.dlfcn cimport dlopen, dlsym, dlerror, RTLD_NOW, RTLD_LOCAL, RTLD_GLOBAL

cdef extern from "<dlfcn.h>" nogil:
    int RTLD_NOLOAD

cdef extern from "ann_dnnl.h" nogil:
    ctypedef struct ann_dnnl_api:
        void *engine_create
        void *stream_create
        void *memory_desc_create_with_strides
        void *memory_desc_destroy
        void *primitive_attr_create
        void *primitive_attr_destroy
        void *primitive_attr_set_post_ops
        void *post_ops_create
        void *post_ops_destroy
        void *post_ops_append_sum
        void *matmul_primitive_desc_create
        void *primitive_desc_destroy
        void *primitive_create
        void *memory_create
        void *memory_set_data_handle
        void *primitive_execute
        void *stream_wait
        void *memory_desc_create_with_tag
        void *memory_desc_clone
        void *memory_desc_get_size
        void *primitive_desc_query_md
        void *reorder_primitive_desc_create
    int ann_dnnl_install(const ann_dnnl_api *api)
    void ann_dnnl_set_threads(int threads)
    int ann_dnnl_gemm_bf16(int trans_a, int trans_b, int m, int n, int k, const uint16_t *A,
                           int lda, const uint16_t *B, int ldb, int accumulate,
                           const float *bias, float *C, int ldc, const void *packed)
    size_t ann_dnnl_packed_size(int trans_b, int n, int k, int ldb, int has_bias)
    int ann_dnnl_pack_b(int trans_b, int n, int k, const uint16_t *B, int ldb, int has_bias,
                        void *packed, size_t capacity)

ctypedef void (*omp_set_fn)(int n) noexcept nogil
ctypedef int (*isa_fn)() noexcept nogil

# The (ISA bits of) dnnl_cpu_isa_avx512_core_bf16: oneDNN runs bfloat16 dot products natively
# from this ISA up (AVX512_BF16, and AMX above it).
DEF DNNL_ISA_AVX512_CORE_BF16 = 0xe7
DEF DNNL_ISA_AVX512_CORE_AMX = 0xfef

cdef bint _loaded = False
cdef omp_set_fn _omp_set_num_threads = NULL
_state = {"tried": False, "library": None, "isa": None, "error": None}

_ISA_NAMES = {0xe7: "avx512_core_bf16", 0x1ef: "avx10_1_512", 0xfef: "avx512_core_amx",
              0x1fef: "avx512_core_amx_fp16"}


cdef int bf16_gemm(bint trans_a, bint trans_b, int m, int n, int k, const uint16_t *A, int lda,
                   const uint16_t *B, int ldb, bint accumulate, const float *bias, float *C,
                   int ldc, const void *packed) noexcept nogil:
    return ann_dnnl_gemm_bf16(trans_a, trans_b, m, n, k, A, lda, B, ldb, accumulate, bias, C,
                              ldc, packed)


cdef size_t bf16_packed_size(bint trans_b, int n, int k, int ldb, bint has_bias) noexcept nogil:
    return ann_dnnl_packed_size(trans_b, n, k, ldb, has_bias) if _loaded else 0


cdef int bf16_pack(bint trans_b, int n, int k, const uint16_t *B, int ldb, bint has_bias,
                   void *packed, size_t capacity) noexcept nogil:
    return ann_dnnl_pack_b(trans_b, n, k, B, ldb, has_bias, packed, capacity)


cdef bint bf16_loaded() noexcept nogil:
    return _loaded


cdef void local_threads(int threads) noexcept nogil:
    """oneDNN's calls from the calling thread compute with at most ``threads`` threads
    (GNU OpenMP's count is a setting of each thread)."""
    if _omp_set_num_threads != NULL and threads >= 1:
        _omp_set_num_threads(threads)
        ann_dnnl_set_threads(threads)


def _lib_dirs():
    return [os.path.join(p, "lib") for p in dict.fromkeys((sys.prefix, sys.base_prefix,
                                                           sys.exec_prefix))]


def find_onednn():
    """Path of oneDNN's library (libdnnl.so.3), or None: ``SPARKANN_ONEDNN_LIBRARY``, else the
    ``lib`` folders of this Python's prefixes, where ``pip install onednn`` puts it."""
    explicit = os.environ.get("SPARKANN_ONEDNN_LIBRARY")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for folder in _lib_dirs():
        found = sorted(glob.glob(os.path.join(folder, "libdnnl.so.3*")))
        if found:
            return found[0]
    return None


cdef void *_open(str path, int flags) except? NULL:
    return dlopen(os.fsencode(path), flags)


def _open_with_dependencies(path, flags=RTLD_NOW | RTLD_LOCAL, folders=None, seen=None):
    """dlopen path; a dependency the loader cannot find (the pip wheels set no run path) is
    loaded first, with its own, from the folder of path or of this Python's prefixes, and
    path is tried again."""
    folders = folders or [os.path.dirname(path)] + _lib_dirs()
    seen = set() if seen is None else seen
    while _open(path, flags) == NULL:
        message = (<bytes>dlerror()).decode(errors="replace")
        missing = re.match(r"(\S+\.so[.\d]*): cannot open shared object file", message)
        if missing is None or missing.group(1) in seen:
            raise OSError(message)
        seen.add(missing.group(1))
        found = [os.path.join(f, missing.group(1)) for f in folders
                 if os.path.exists(os.path.join(f, missing.group(1)))]
        if not found:
            raise OSError(f"{message} (not in {', '.join(dict.fromkeys(folders))} either)")
        _open_with_dependencies(found[0], RTLD_NOW | RTLD_GLOBAL, folders, seen)


_API_NAMES = ["engine_create", "stream_create", "memory_desc_create_with_strides",
              "memory_desc_destroy", "primitive_attr_create", "primitive_attr_destroy",
              "primitive_attr_set_post_ops", "post_ops_create", "post_ops_destroy",
              "post_ops_append_sum", "matmul_primitive_desc_create", "primitive_desc_destroy",
              "primitive_create", "memory_create", "memory_set_data_handle",
              "primitive_execute", "stream_wait", "memory_desc_create_with_tag",
              "memory_desc_clone", "memory_desc_get_size", "primitive_desc_query_md",
              "reorder_primitive_desc_create"]


def load():
    """Load oneDNN once; returns the state ``{"library", "isa", "error", ...}`` (``error`` None
    when the bfloat16 GEMMs are ready)."""
    global _loaded, _omp_set_num_threads
    if _state["tried"]:
        return dict(_state)
    _state["tried"] = True
    path = find_onednn()
    if path is None:
        _state["error"] = ("oneDNN is not installed (pip install sparkann[bf16], or set "
                           "SPARKANN_ONEDNN_LIBRARY)")
        return dict(_state)
    cdef ann_dnnl_api api
    cdef void **slots = <void **>&api
    cdef void *handle
    cdef void *gomp
    cdef isa_fn isa
    try:
        _load_gomp(os.environ.get("SPARKANN_GOMP_SPINCOUNT", GOMP_SPINCOUNT))
        _open_with_dependencies(path)
        handle = _open(path, RTLD_NOW | RTLD_NOLOAD)
        for i, name in enumerate(_API_NAMES):
            slots[i] = dlsym(handle, b"dnnl_" + name.encode())
            if slots[i] == NULL:
                raise OSError(f"{path} lacks dnnl_{name}: not oneDNN 3")
        isa = <isa_fn>dlsym(handle, b"dnnl_get_effective_cpu_isa")
        _state["isa"] = isa() if isa != NULL else None
        if ann_dnnl_install(&api) != 0:
            raise OSError("oneDNN could not create its CPU engine")
    except OSError as error:
        _state["error"] = f"cannot load oneDNN from {path}: {error}"
        return dict(_state)
    gomp = dlopen(b"libgomp.so.1", RTLD_NOW | RTLD_NOLOAD)
    if gomp != NULL:
        _omp_set_num_threads = <omp_set_fn>dlsym(gomp, b"omp_set_num_threads")
    _state["library"] = path
    _loaded = True
    return dict(_state)


def isa_name(isa):
    """oneDNN's name of an effective ISA value (dnnl_cpu_isa_t), or its hex value."""
    if isa is None:
        return None
    return _ISA_NAMES.get(isa, hex(isa))


def native_bf16(isa):
    """Whether oneDNN's effective ISA computes bfloat16 natively (AVX512_BF16 or AMX)."""
    return isa is not None and (isa & DNNL_ISA_AVX512_CORE_BF16) == DNNL_ISA_AVX512_CORE_BF16


def uses_amx(isa):
    return isa is not None and (isa & DNNL_ISA_AVX512_CORE_AMX) == DNNL_ISA_AVX512_CORE_AMX
