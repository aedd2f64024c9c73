# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The network engine: forward pass, loss and gradient of a feed-forward network.

A ``Network`` holds no weights. It is a compiled topology plus a workspace (one arena with the
activations and deltas of one block of rows), laid out once for a block size and a dtype.
Every call takes the flat weight vector; ``loss_grad`` adds into a flat gradient vector.
Batches of any length are processed ``block_size`` rows at a time through the workspace, so a
call allocates nothing.

With more than one BLAS thread, a call splits its rows among that many engine threads, each
with its own workspace (and gradient) and BLAS held to one thread: measured on two cores, a
gradient is 15-20% faster than one thread of rows driving a two-thread GEMM, because no GEMM
waits on a thread barrier and the element-wise kernels run on both cores.
"""
import operator
import os
import _thread
import threading

import numpy as np

cimport cython

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS, PyBUF_WRITABLE
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset
from libc.math cimport isfinite

from ann_core._blas cimport (blas_gemm, prepare_threads, engine_threads, can_split_rows,
                             openblas_one_thread_begin, openblas_threads_restore,
                             mkl_local_threads_begin, mkl_local_threads_end)
from ann_core._onednn cimport bf16_gemm, bf16_pack, bf16_packed_size, local_threads
from ann_core._csrc cimport *

# Name -> kind of every native activation, from the kernels' own table (csrc/ann_kernels.h).
ACTIVATIONS = {ann_activation(k).name.decode(): k for k in range(ANN_ACT_COUNT)}
LOSSES = {"softmax_cross_entropy": ANN_LOSS_SOFTMAX_XENT,
          "sigmoid_cross_entropy": ANN_LOSS_SIGMOID_XENT,
          "squared_error": ANN_LOSS_SQUARED_ERROR}
DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
# Mixed precision: weights, gradients, data, losses and element-wise kernels in float32, the
# GEMMs' operands rounded to bfloat16 (products accumulated in float32).
BFLOAT16 = "bfloat16"


cdef enum stage_kind:
    # What computes a stage's output from its input; its row in STAGE_KINDS.
    STAGE_DENSE     # y = x @ W + b
    STAGE_PYTHON    # a layer written in Python (sparkann.layers)
    STAGE_DROPOUT   # y = x * mask / (1 - rate) in training, y = x in inference
    STAGE_KIND_COUNT


cdef struct stage_t:
    int kind          # a stage_kind
    int n_in
    int n_out
    Py_ssize_t w_off   # offset of the stage's parameters in the flat vector
    Py_ssize_t n_params
    int act            # native activation applied in place to the output, -1 for none
    double alpha       # the activation's parameter (leaky_relu's slope)
    bint keeps_input   # the activation's backward needs its input: the workspace keeps it
    PyObject *py_layer  # STAGE_PYTHON: the layer (the Network's py_layers keeps it alive)
    int index          # position among the stages: a stochastic stage's stream
    double rate        # STAGE_DROPOUT: probability of dropping a unit


cdef struct packed_t:
    # A bfloat16 dense stage's rounded W in the layout oneDNN's forward product reads it in
    # (the products then skip reordering W, block after block): a buffer of the workspace,
    # packed once per call of enough rows.
    void *data
    size_t size        # bytes of the buffer (0: none)
    bint ready         # packed for the present call


cdef struct stage_ctx_t:
    # What a stage computes with besides its data: the call's mode and random stream.
    bint dbl
    bint training      # loss_grad, or forward given a key (True); forward (False)
    # the call's (seed, iteration, block) hashed: stage s draws from
    # ann_random_u64(seed, s.index), which is ann_random_key(seed, iteration, block, s.index)
    uint64_t seed
    Py_ssize_t row0    # the call's index of the block's first row
    char **masks       # per stage: the workspace's dropout mask, or NULL
    # bfloat16 GEMMs (else float/double BLAS): the workspace's bfloat16 buffers
    bint bf16
    uint16_t **xb      # per dense stage: its input of the block, rounded (kept for backward)
    const uint16_t *wb  # the call's weights rounded (dense W only), indexed like the weights
    uint16_t *db       # a delta of the block, rounded
    const packed_t *packed  # per stage: its W in oneDNN's layout for this call
    # set by the block loops when the previous pass already wrote them (fused with the
    # activation): the dense stage's xb (forward) or db and bias gradient (backward)
    bint input_rounded
    bint delta_rounded


# out[m, n_out] from x[m, n_in] and the parameters w (the stage's own, at s.w_off).
ctypedef int (*stage_forward_fn)(const stage_t *s, const stage_ctx_t *ctx, const char *w,
                                 const char *x, int m, char *out) except -1 nogil
# Add the parameters' gradient into grad and, unless d_in is NULL, write d loss / d x.
ctypedef int (*stage_backward_fn)(const stage_t *s, const stage_ctx_t *ctx, const char *w,
                                  const char *x, const char *out, int m, const char *d_out,
                                  char *d_in, char *grad) except -1 nogil

cdef struct stage_kind_t:
    const char *name           # the topology's spelling: (name, argument)
    bint calls_python          # computes under the GIL: such calls stay on one thread
    stage_forward_fn forward
    stage_backward_fn backward


cdef inline size_t _isz(bint dbl) noexcept nogil:
    return sizeof(double) if dbl else sizeof(float)


cdef int _dense_forward(const stage_t *s, const stage_ctx_t *ctx, const char *w, const char *x,
                        int m, char *out) except -1 nogil:
    cdef size_t isz = _isz(ctx.dbl)
    cdef const char *b = w + (s.w_off + <Py_ssize_t>s.n_in * s.n_out) * isz
    cdef int status
    cdef uint16_t *xb
    if ctx.bf16:   # out = bf16(x) @ bf16(W) + b; bf16(x) is kept for the gradient of W
        xb = ctx.xb[s.index]
        if not ctx.input_rounded:
            status = ann_f32_to_bf16(<size_t>m * s.n_in, <const float *>x, xb)
            if status != ANN_OK:
                return status
        return bf16_gemm(False, False, m, s.n_out, s.n_in, xb, s.n_in, ctx.wb + s.w_off,
                         s.n_out, False, <const float *>b, <float *>out, s.n_out,
                         ctx.packed[s.index].data if ctx.packed[s.index].ready else NULL)
    if ctx.dbl:
        status = ann_bias_fill_d(m, s.n_out, <const double *>b, <double *>out)
    else:
        status = ann_bias_fill_s(m, s.n_out, <const float *>b, <float *>out)
    blas_gemm(ctx.dbl, False, False, m, s.n_out, s.n_in, 1.0, x, s.n_in, w + s.w_off * isz,
              s.n_out, 1.0, out, s.n_out)
    return status


cdef int _dense_backward(const stage_t *s, const stage_ctx_t *ctx, const char *w, const char *x,
                         const char *out, int m, const char *d_out, char *d_in,
                         char *grad) except -1 nogil:
    # gW += x.T @ d_out;  gb += d_out.sum(0);  d_in = d_out @ W.T
    cdef size_t isz = _isz(ctx.dbl)
    cdef char *gb = grad + (s.w_off + <Py_ssize_t>s.n_in * s.n_out) * isz
    cdef int status
    if ctx.bf16:
        return _dense_backward_bf16(s, ctx, m, <const float *>d_out, <float *>d_in,
                                    <float *>grad)
    blas_gemm(ctx.dbl, True, False, s.n_in, s.n_out, m, 1.0, x, s.n_in, d_out, s.n_out, 1.0,
              grad + s.w_off * isz, s.n_out)
    if ctx.dbl:
        status = ann_bias_grad_d(m, s.n_out, <const double *>d_out, <double *>gb)
    else:
        status = ann_bias_grad_s(m, s.n_out, <const float *>d_out, <float *>gb)
    if d_in != NULL:
        blas_gemm(ctx.dbl, False, True, m, s.n_in, s.n_out, 1.0, d_out, s.n_out,
                  w + s.w_off * isz, s.n_out, 0.0, d_in, s.n_in)
    return status


cdef int _dense_backward_bf16(const stage_t *s, const stage_ctx_t *ctx, int m,
                              const float *d_out, float *d_in, float *grad) except -1 nogil:
    # The same three products with bfloat16 operands: d_out is rounded once for both GEMMs,
    # the forward pass kept bf16(x); gW accumulates in float32 (oneDNN's sum post-op).
    cdef int status = ANN_OK
    if not ctx.delta_rounded:
        status = ann_f32_to_bf16(<size_t>m * s.n_out, d_out, ctx.db)
        if status == ANN_OK:
            status = ann_bias_grad_s(m, s.n_out, d_out,
                                     grad + s.w_off + <Py_ssize_t>s.n_in * s.n_out)
    if status == ANN_OK:
        status = bf16_gemm(True, False, s.n_in, s.n_out, m, ctx.xb[s.index], s.n_in, ctx.db,
                           s.n_out, True, NULL, grad + s.w_off, s.n_out, NULL)
    if status == ANN_OK and d_in != NULL:
        status = bf16_gemm(False, True, m, s.n_in, s.n_out, ctx.db, s.n_out, ctx.wb + s.w_off,
                           s.n_out, False, NULL, d_in, s.n_in, NULL)
    return status


# The element-wise passes of a bfloat16 dense stage run over slices of this many values, each
# pass reading the slice the previous one left in cache (instead of the whole block from
# memory): the activation with the rounding of its output for the next GEMM (forward), the
# activation's backward with the rounding of the delta and the bias gradient (backward).
DEF FUSED_SLICE = 16384


cdef int _act_forward_rounded(const stage_t *s, size_t n, float *out,
                              uint16_t *rounded) noexcept nogil:
    """The activation of s in place on out[:n], and out rounded to bfloat16 into rounded."""
    cdef size_t at = 0, step
    cdef int status = ANN_OK
    while at < n and status == ANN_OK:
        step = min(<size_t>FUSED_SLICE, n - at)
        status = ann_act_forward_s(s.act, <float>s.alpha, step, out + at)
        if status == ANN_OK:
            status = ann_f32_to_bf16(step, out + at, rounded + at)
        at += step
    return status


cdef int _act_backward_rounded(const stage_t *s, int m, const float *z, const float *y,
                               float *delta, uint16_t *rounded, float *gb) noexcept nogil:
    """The activation's backward of s in place on delta (m, s.n_out), delta rounded to
    bfloat16 into rounded and its column sums added to gb, a slice of rows at a time."""
    cdef size_t cols = s.n_out, at, n
    cdef int r0 = 0, rows = max(1, FUSED_SLICE // s.n_out)
    cdef int status = ANN_OK
    while r0 < m and status == ANN_OK:
        rows = min(rows, m - r0)
        at = <size_t>r0 * cols
        n = <size_t>rows * cols
        status = ann_act_backward_s(s.act, <float>s.alpha, n, z + at if z != NULL else NULL,
                                    y + at, delta + at)
        if status == ANN_OK:
            status = ann_f32_to_bf16(n, delta + at, rounded + at)
        if status == ANN_OK:
            status = ann_bias_grad_s(rows, cols, delta + at, gb)
        r0 += rows
    return status


cdef object _view(bint dbl, const char *p, int rows, int cols):
    if dbl:
        return np.asarray(<double[:rows, :cols]> <double *>p)
    return np.asarray(<float[:rows, :cols]> <float *>p)


cdef object _stage_params(bint dbl, const char *w, const stage_t *s):
    if s.n_params == 0:
        return np.empty(0, np.float64 if dbl else np.float32)
    if dbl:
        return np.asarray(<double[:s.n_params]> (<double *>w + s.w_off))
    return np.asarray(<float[:s.n_params]> (<float *>w + s.w_off))


cdef int _python_forward(const stage_t *s, const stage_ctx_t *ctx, const char *w,
                         const char *x, int m, char *out) except -1 nogil:
    with gil:
        (<object>s.py_layer).forward(_stage_params(ctx.dbl, w, s),
                                     _view(ctx.dbl, x, m, s.n_in),
                                     _view(ctx.dbl, out, m, s.n_out))
    return ANN_OK


cdef int _python_backward(const stage_t *s, const stage_ctx_t *ctx, const char *w,
                          const char *x, const char *out, int m, const char *d_out,
                          char *d_in, char *grad) except -1 nogil:
    with gil:
        (<object>s.py_layer).backward(
            _stage_params(ctx.dbl, w, s), _view(ctx.dbl, x, m, s.n_in),
            _view(ctx.dbl, out, m, s.n_out), _view(ctx.dbl, d_out, m, s.n_out),
            _view(ctx.dbl, d_in, m, s.n_in) if d_in != NULL else None,
            _stage_params(ctx.dbl, grad, s))
    return ANN_OK


cdef int _dropout_forward(const stage_t *s, const stage_ctx_t *ctx, const char *w,
                          const char *x, int m, char *out) except -1 nogil:
    # Inference is the identity; training draws the stage's mask for these rows and keeps
    # it (a byte per element) for the backward pass, where the backward pass reaches the
    # stage. Drawing it again would cost a hash per two elements on top of the same reads
    # and writes of the data, which bound the time: one byte per element is cheaper.
    cdef size_t n = <size_t>m * s.n_out
    cdef uint64_t key = ann_random_u64(ctx.seed, <uint64_t>s.index)
    if not ctx.training:
        memcpy(out, x, n * _isz(ctx.dbl))
        return ANN_OK
    if ctx.dbl:
        return ann_dropout_forward_d(key, ctx.row0, m, s.n_out, s.rate, <const double *>x,
                                     <double *>out, <uint8_t *>ctx.masks[s.index])
    return ann_dropout_forward_s(key, ctx.row0, m, s.n_out, s.rate, <const float *>x,
                                 <float *>out, <uint8_t *>ctx.masks[s.index])


cdef int _dropout_backward(const stage_t *s, const stage_ctx_t *ctx, const char *w,
                           const char *x, const char *out, int m, const char *d_out,
                           char *d_in, char *grad) except -1 nogil:
    cdef size_t n = <size_t>m * s.n_out
    if d_in == NULL:
        return ANN_OK
    if ctx.dbl:
        return ann_dropout_backward_d(n, s.rate, <const uint8_t *>ctx.masks[s.index],
                                      <const double *>d_out, <double *>d_in)
    return ann_dropout_backward_s(n, s.rate, <const uint8_t *>ctx.masks[s.index],
                                  <const float *>d_out, <float *>d_in)


# One row per stage kind: adding a native layer is its kernels (csrc/), its two functions
# above, a row here and its shape rule in _stage_shape.
cdef stage_kind_t STAGE_KINDS[<int>STAGE_KIND_COUNT]
STAGE_KINDS[<int>STAGE_DENSE] = stage_kind_t(b"dense", False, _dense_forward, _dense_backward)
STAGE_KINDS[<int>STAGE_PYTHON] = stage_kind_t(b"python", True, _python_forward,
                                              _python_backward)
STAGE_KINDS[<int>STAGE_DROPOUT] = stage_kind_t(b"dropout", False, _dropout_forward,
                                               _dropout_backward)
_STAGE_KIND_NAMES = {STAGE_KINDS[k].name.decode(): k for k in range(<int>STAGE_KIND_COUNT)}


def _stage_shape(int kind, int position, int index, int n_in, value):
    """(n_out, n_params, layout entries) of a stage of ``kind`` with argument ``value``."""
    if kind == STAGE_DENSE:
        n_out = _size(value, f"layer {position}: dense size")
        return n_out, n_in * n_out + n_out, [(f"dense{index}.W", 0, (n_in, int(n_out))),
                                             (f"dense{index}.b", n_in * n_out, (int(n_out),))]
    if kind == STAGE_DROPOUT:
        number = (int, float, np.integer, np.floating)
        if (isinstance(value, (bool, np.bool_)) or not isinstance(value, number)
                or not 0.0 <= value < 1.0):
            raise ValueError(f"layer {position}: dropout rate must be a number in [0, 1), "
                             f"received {value!r}")
        return n_in, 0, []
    missing = [a for a in ("n_out", "n_params", "forward", "backward") if not hasattr(value, a)]
    if missing:
        raise ValueError(f"layer {position}: a Python layer needs n_out, n_params, "
                         f"forward and backward; {value!r} lacks {', '.join(missing)}")
    n_out = _size(value.n_out, f"layer {position}: Python layer n_out")
    n_params = value.n_params
    if (isinstance(n_params, bool) or not isinstance(n_params, (int, np.integer))
            or n_params < 0):
        raise ValueError(f"layer {position}: Python layer n_params must be a "
                         f"non-negative integer, received {n_params!r}")
    return n_out, n_params, [(f"python{index}.params", 0, (n_params,))]


cdef struct workspace_t:
    # The buffers of one share of a call, in one arena: block_size rows of each stage's
    # output (after its activation), two deltas and the loss kernel's scratch. A share
    # whose gradient is not the caller's adds into a private one (grad_arena, made on
    # first need).
    ann_arena_t arena
    ann_arena_t grad_arena
    char **outs
    char **ins         # per stage: its activation's input when the backward needs it, or NULL
    # per stage: a dropout stage's mask of the block (a byte per element) where the backward
    # pass reaches it, else NULL
    char **masks
    char *delta_a
    char *delta_b
    char *loss_buf
    char *grad
    # bfloat16 networks: per dense stage its rounded input, the rounded weights, a rounded delta
    uint16_t **xb
    uint16_t *wb
    uint16_t *db
    packed_t *packed   # per stage (a bfloat16 dense stage's buffers, else none)


# A share of a bfloat16 call with fewer rows than this does not pack its weights for oneDNN:
# packing costs about as much as rounding them, and the forward products of 1024 rows of
# C's layers (one thread, in isolation) ran 9-33% faster packed: it pays from a few hundred
# rows up.
DEF PACK_MIN_ROWS = 1024
cdef Py_ssize_t _pack_min_rows = PACK_MIN_ROWS


def _set_pack_min_rows(Py_ssize_t rows):
    """Pack bfloat16 weights from shares of this many rows on (tests and measurements: 1
    always packs, a huge number never); returns the previous setting."""
    global _pack_min_rows
    previous = _pack_min_rows
    _pack_min_rows = rows
    return previous


# The most engine threads one call is split among.
DEF MAX_ENGINE_THREADS = 64
# Fewer rows than this per engine thread are not worth a thread.
DEF MIN_ROWS_PER_THREAD = 32
# Each engine thread packs every weight matrix it multiplies by, so once the weights outgrow
# the cache a thread needs more rows to pay for that traffic; below that many rows per
# thread, BLAS's own threads (which split the weights, not the rows) are faster. Measured
# here: 784-2500-2000-1500-1000-500-10 at 128 rows, 77 ms split in two, 68 ms whole.
DEF LARGE_WEIGHT_BYTES = 2 << 20
DEF MIN_ROWS_PER_THREAD_LARGE = 128


cdef struct call_t:
    # Everything one call computes with, passed by pointer to every share: a Network holds
    # no per-call state, so any number of threads may call it at once.
    const char *w
    const char *x
    const int64_t *labels    # class indices, or NULL
    const char *targets      # dense targets, or NULL
    const char *row_weights  # per-row weights of the loss (the network's dtype), or NULL
    char *grad               # the caller's gradient (share 0 adds into it)
    char *out                # forward: the caller's output
    bint forward, raw
    bint training            # stochastic stages draw (loss_grad, or forward with a key)
    uint64_t seed            # the key's (seed, iteration, block), hashed (see stage_ctx_t)
    int blas_threads         # the engine's thread count when the call started
    int threads              # shares the rows are split into
    Py_ssize_t bounds[MAX_ENGINE_THREADS + 1]
    workspace_t *ws[MAX_ENGINE_THREADS]
    double loss[MAX_ENGINE_THREADS]
    int status[MAX_ENGINE_THREADS]


cdef class _Workspace:
    """Owner of one workspace_t; a Network keeps the idle ones for the next calls."""
    cdef workspace_t ws

    def __dealloc__(self):
        ann_arena_free(&self.ws.arena)
        ann_arena_free(&self.ws.grad_arena)
        PyMem_Free(self.ws.outs)
        PyMem_Free(self.ws.ins)
        PyMem_Free(self.ws.masks)
        PyMem_Free(self.ws.xb)
        PyMem_Free(self.ws.packed)


cdef class _Call:
    """The state of one call and the workspaces of its shares. A Network keeps the idle
    ones for its next calls, so a call allocates nothing, and concurrent calls each hold
    their own."""
    cdef call_t c
    cdef Network net
    cdef list held   # _Workspace of each share, kept between calls

    def share(self, int k):
        """Compute share k of the call (run by engine thread k)."""
        self.net._compute_share(&self.c, k)


class _EngineThread:
    """A thread that computes one share of each call handed to it.

    Handing over and waiting use two plain locks, so a call allocates nothing.
    """

    def __init__(self):
        self.go = _thread.allocate_lock()
        self.go.acquire()
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.call = None
        self.share = 0
        self.error = None
        threading.Thread(target=self._serve, name="sparkann-engine", daemon=True).start()

    def _serve(self):
        while True:
            self.go.acquire()
            try:
                self.call.share(self.share)
            except BaseException as error:  # noqa: BLE001 - handed to the calling thread
                self.error = error
            self.done.release()


class _EngineThreads:
    """The process's extra engine threads and its BLAS thread pool, held by one call at a time.

    A call that computes with more than one thread (split rows, or BLAS's own threads)
    holds them with ``with _engine_threads.hold(extra) as helpers:`` and a second such call
    waits, so the thread count BLAS runs with, and hence every result, is that of the call
    alone. The lock is reentrant: a Python layer may call a network. Threads do not
    survive a fork: a new process starts its own.
    """

    def __init__(self):
        self.lock = _thread.RLock()
        self.pid = None
        self.threads = []
        self.extra = 0

    def hold(self, int extra):
        self.lock.acquire()   # releases the GIL while it waits
        if self.pid != os.getpid():
            self.pid, self.threads = os.getpid(), []
        try:
            while len(self.threads) < extra:
                self.threads.append(_EngineThread())
        except BaseException:
            self.lock.release()
            raise
        self.extra = extra
        return self

    def __enter__(self):
        return self.threads

    def __exit__(self, *exc):
        self.lock.release()
        return False


_engine_threads = _EngineThreads()


def _raise_helper_errors(helpers, int count):
    """Raise the first error of the engine threads' shares, with the others as notes."""
    errors = None
    for k in range(count):
        helper = helpers[k]
        if helper.error is not None:
            errors = errors or []
            errors.append(helper.error)
        helper.call = helper.error = None
    if errors:
        for other in errors[1:]:
            errors[0].add_note(f"another engine thread failed too: {other!r}")
        raise errors[0]


cdef inline int _all_finite(bint dbl, size_t n, const char *x, size_t *bad) noexcept nogil:
    if dbl:
        return ann_all_finite_d(n, <const double *>x, bad)
    return ann_all_finite_s(n, <const float *>x, bad)


cdef char *_data(object array, bint writable) except NULL:
    """Pointer to the data of a C-contiguous buffer; the caller keeps `array` alive."""
    cdef Py_buffer view
    PyObject_GetBuffer(array, &view, PyBUF_C_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0))
    cdef char *p = <char *>view.buf
    PyBuffer_Release(&view)
    if p == NULL:
        raise ValueError("array has no data pointer")
    return p


def _describe(a):
    if not isinstance(a, np.ndarray):
        return f"{type(a).__name__}"
    order = "C-contiguous" if a.flags.c_contiguous else "non-contiguous"
    return f"{a.dtype} array of shape {a.shape} ({order})"


def _size(value, what):
    """A positive integer that fits a C int (BLAS dimensions are ints), else ValueError."""
    size = None
    if not isinstance(value, (bool, np.bool_)):  # True is an int to Python, not a size
        try:
            size = operator.index(value)
        except TypeError:
            pass
    if size is None or not 0 < size < 2**31:
        raise ValueError(f"{what} must be a positive integer below 2**31, received {value!r}")
    return size


def _check_spec(position, spec, last):
    """Shape of one topology entry, checked before anything is laid out from it."""
    if not isinstance(spec, tuple) or not spec:
        raise ValueError(f"layer {position}: expected a non-empty tuple such as ('dense', 10), "
                         f"received {spec!r}")
    kind = spec[0]
    if kind == "loss" and not last:
        raise ValueError(f"layer {position}: the loss must be the last layer, received {spec!r} "
                         "before the end")
    if last:
        if kind != "loss":
            raise ValueError(f"layers must end with ('loss', name); received {spec!r}")
    elif kind != "activation" and kind not in _STAGE_KIND_NAMES:
        kinds = ", ".join(repr(k) for k in [*_STAGE_KIND_NAMES, "activation"])
        raise ValueError(f"layer {position}: unknown kind {kind!r}; expected one of {kinds} "
                         "or a final 'loss'")
    if kind != "activation" and len(spec) != 2:
        raise ValueError(f"layer {position}: expected ({kind!r}, value), received {spec!r}")
    if kind == "activation" and len(spec) not in (2, 3):
        raise ValueError(f"layer {position}: expected ('activation', name) or "
                         f"('activation', 'leaky_relu', slope), received {spec!r}")


def _call_key(key):
    """The hash of a key (seed, iteration, block) that a call's stochastic stages draw from."""
    if not isinstance(key, tuple) or len(key) != 3 or not all(
            isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))
            and 0 <= k < 2**64 for k in key):
        raise ValueError(f"key: expected (seed, iteration, block), three integers in "
                         f"[0, 2**64), received {key!r}")
    return ann_random_u64(ann_random_u64(<uint64_t>key[0], <uint64_t>key[1]), <uint64_t>key[2])


def _bf16_available():
    """Whether bfloat16 GEMMs run here; if not, warn once (the network computes in float32)."""
    from ann_core.capabilities import bf16_support, warn_bf16_fallback
    native, reason = bf16_support()
    if not native:
        warn_bf16_fallback(reason)
    return native


def _available_memory():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


cdef class Network:
    """A compiled feed-forward topology and its workspace.

    Parameters
    ----------
    n_in : int
        Number of input features.
    layers : list of tuple
        The stages from input to output, ending with the loss:
        ``("dense", n_out)``, ``("activation", name)`` or ``("activation", "leaky_relu", alpha)``
        (applied in place to the output of the stage before it), ``("python", layer)`` (an object
        with ``n_out``, ``n_params``, ``forward(params, x, out)`` and
        ``backward(params, x, out, d_out, d_in, grad)``, see ``sparkann.layers``),
        ``("dropout", rate)`` (inverted dropout: in training each unit is kept with
        probability 1 - rate and scaled by 1 / (1 - rate); the identity in inference), and
        last ``("loss", name)`` with name in ``LOSSES``.
    dtype : {"float32", "float64", "bfloat16"}
        "bfloat16" is mixed precision: weights, data, gradients, losses and the element-wise
        kernels are float32 (the arrays passed are float32, ``dtype`` says float32), and the
        GEMMs multiply operands rounded to bfloat16 (to nearest even) with float32
        accumulation, through oneDNN. Where the CPU lacks native bfloat16 or oneDNN is not
        installed (``ann_core.capabilities()``), it warns once and computes in float32;
        ``precision`` says which.
    block_size : int
        Rows computed at a time; the workspace holds one block.

    Weight layout: for each dense stage in order, ``W`` (n_in, n_out) row-major then ``b``
    (n_out,), which is the order of Spark MLlib's MultilayerPerceptronClassifier weights.

    Threads: with ``ann_core.set_blas_threads(t)``, t > 1, a call of at least 64 rows is split
    into up to t contiguous shares of rows, one per engine thread, each computing with
    one-thread BLAS in its own workspace; the gradients of the shares are then added. A
    network with Python layers, or a call of fewer rows, computes on the caller's thread with
    t BLAS threads. ``workspace_bytes`` is one thread's workspace; every further engine
    thread also holds one gradient, and ``last_threads`` says how many threads the last call
    used.

    Any number of threads may call one Network at once: each call computes in workspaces
    of its own (kept for later calls), and with t > 1 calls take turns on the engine's
    threads, so every result is bitwise that of the same call made alone.

    Random numbers: a network with dropout (``stochastic``) needs ``key=(seed, iteration,
    block)`` in ``loss_grad``. Unit j of row r of the call in stage s is kept or dropped by
    a counter-based generator of (seed, iteration, block, s, r, j) alone, so the same key
    and rows draw the same mask whatever the block size or thread split (a retried task, a
    resumed run), and another iteration or block draws another.
    """
    cdef readonly int n_in, n_out, block_size, n_stages
    cdef readonly Py_ssize_t n_weights
    cdef readonly object dtype
    # "bfloat16" when the GEMMs take bfloat16 operands, else the dtype's name
    cdef readonly str precision
    cdef readonly str loss
    cdef readonly size_t workspace_bytes
    cdef readonly bint has_python_layers
    cdef readonly bint stochastic    # has stages that draw random numbers in training (dropout)
    # the first stage with parameters (or in Python): the backward pass stops there
    cdef int first_grad_stage
    cdef readonly int last_threads   # engine threads the last call was split among
    cdef readonly int min_rows_per_thread
    cdef bint dbl
    cdef bint bf16
    cdef size_t isz
    cdef int loss_kind
    cdef stage_t *stages
    cdef list idle_calls          # call states (with their workspaces) no call holds now
    cdef list py_layers
    cdef list _layout

    def __cinit__(self):
        self.stages = NULL
        self.idle_calls = []

    def __init__(self, n_in, layers, dtype="float32", block_size=128):
        n_in = _size(n_in, "n_in")
        block_size = _size(block_size, "block_size")
        if isinstance(dtype, str) and dtype == BFLOAT16:
            name = "float32"
            self.bf16 = _bf16_available()
        else:
            try:
                name = np.dtype(dtype).name
            except TypeError:
                name = None
        if name not in DTYPES:
            raise ValueError(f"dtype must be 'float32', 'float64' or 'bfloat16', "
                             f"received {dtype!r}")
        self.dtype = DTYPES[name]
        self.precision = BFLOAT16 if self.bf16 else name
        self.dbl = self.dtype == np.float64
        self.isz = self.dtype.itemsize
        self.block_size = block_size
        self.n_in = n_in
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise ValueError(f"layers must be a list of tuples ending with ('loss', name), "
                             f"received {layers!r}")
        self._compile(list(layers))
        self._allocate()

    def __dealloc__(self):
        PyMem_Free(self.stages)

    @cython.wraparound(True)
    @cython.boundscheck(True)
    cdef _compile(self, list layers):
        if not layers:
            raise ValueError("layers must end with ('loss', name); received an empty list")
        # Every entry is checked first: the stages array is sized from this pass.
        for position, spec in enumerate(layers):
            _check_spec(position, spec, position == len(layers) - 1)
        loss = layers[-1][1]
        if not isinstance(loss, str) or loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, received {loss!r}")
        self.loss = loss
        self.loss_kind = LOSSES[loss]
        body = layers[:-1]
        n_stages = sum(1 for spec in body if spec[0] in _STAGE_KIND_NAMES)
        if n_stages == 0:
            raise ValueError("the network needs at least one ('dense', n_out) or "
                             "('python', layer) stage before the loss")
        self.stages = <stage_t *>PyMem_Malloc(n_stages * sizeof(stage_t))
        if self.stages == NULL:
            raise MemoryError()
        self.py_layers = []
        self._layout = []
        cdef int width = self.n_in, i = -1
        cdef Py_ssize_t offset = 0
        for position, spec in enumerate(body):
            if not isinstance(spec, tuple) or not spec:
                raise ValueError(f"layer {position}: expected a tuple such as ('dense', 10), "
                                 f"received {spec!r}")
            kind = spec[0]
            if kind == "activation":
                if i < 0 or self.stages[i].act >= 0:
                    raise ValueError(f"layer {position}: an activation must follow a dense or "
                                     "Python layer (use a Python layer for anything else)")
                self._set_activation(&self.stages[i], position, spec)
                continue
            i += 1
            self.stages[i].kind = _STAGE_KIND_NAMES[kind]
            self.stages[i].n_in = width
            self.stages[i].w_off = offset
            self.stages[i].act = -1
            self.stages[i].alpha = 0.0
            self.stages[i].keeps_input = False
            self.stages[i].index = i
            self.stages[i].rate = 0.0
            n_out, n_params, layout = _stage_shape(self.stages[i].kind, position, i, width,
                                                   spec[1])
            self.stages[i].n_out = n_out
            self.stages[i].n_params = n_params
            if self.stages[i].kind == STAGE_DROPOUT:
                self.stages[i].rate = spec[1]
            self._layout += [(name, offset + at, shape) for name, at, shape in layout]
            self.py_layers.append(spec[1] if STAGE_KINDS[self.stages[i].kind].calls_python
                                  else None)
            self.stages[i].py_layer = <PyObject *>self.py_layers[i]
            offset += self.stages[i].n_params
            width = self.stages[i].n_out
            self.n_stages = i + 1
        self.n_out = width
        self.n_weights = offset
        self.min_rows_per_thread = (MIN_ROWS_PER_THREAD_LARGE
                                    if offset * self.isz > LARGE_WEIGHT_BYTES
                                    else MIN_ROWS_PER_THREAD)
        self.has_python_layers = any(STAGE_KINDS[self.stages[k].kind].calls_python
                                     for k in range(self.n_stages))
        self.stochastic = any(self.stages[k].kind == STAGE_DROPOUT for k in range(self.n_stages))
        # Stages before the first one with parameters need no delta (input dropout, say).
        self.first_grad_stage = next((k for k in range(self.n_stages)
                                      if self.stages[k].n_params > 0
                                      or STAGE_KINDS[self.stages[k].kind].calls_python),
                                     self.n_stages - 1)
        if self.loss_kind == ANN_LOSS_SOFTMAX_XENT and self.n_out < 2:
            raise ValueError(f"softmax_cross_entropy needs at least 2 outputs, the network "
                             f"has {self.n_out}")

    cdef _set_activation(self, stage_t *s, int position, tuple spec):
        name = spec[1]
        if not isinstance(name, str) or name not in ACTIVATIONS:
            raise ValueError(f"layer {position}: activation must be one of "
                             f"{sorted(ACTIVATIONS)}, received {name!r}")
        cdef const ann_activation_info *info = ann_activation(ACTIVATIONS[name])
        if len(spec) > 2 and not info.takes_alpha:
            takers = [k for k, v in ACTIVATIONS.items() if ann_activation(v).takes_alpha]
            raise ValueError(f"layer {position}: only {' and '.join(takers)} "
                             f"take{'s' if len(takers) == 1 else ''} a parameter, "
                             f"received {spec!r}")
        alpha = spec[2] if len(spec) > 2 else 0.01
        if (not isinstance(alpha, (int, float, np.integer, np.floating))
                or not 0.0 <= alpha < 1.0):
            raise ValueError(f"layer {position}: {name} slope must be in [0, 1), "
                             f"received {alpha}")
        s.act = ACTIVATIONS[name]
        s.alpha = alpha
        s.keeps_input = info.needs_input

    cdef _allocate(self):
        cdef size_t rows = self.block_size
        # The size in Python integers first: in size_t it could wrap around.
        widths = [self.stages[i].n_out for i in range(self.n_stages)]
        need = rows * self.isz * (sum(widths) + 2 * max(widths) + self.n_out)
        if need < 2**62:
            need = self._workspace_size(False)  # exact, with the arena's alignment
        available = _available_memory()
        if need >= 2**62 or (available is not None and need > available):
            raise MemoryError(f"the workspace for block_size={self.block_size} needs "
                              f"{need / 2**20:.1f} MiB, but only "
                              f"{(available or 0) / 2**20:.1f} MiB of memory is available: "
                              "use a smaller block_size")
        self.workspace_bytes = need
        self.idle_calls.append(self._new_call())

    cdef bint _keeps_mask(self, int i):
        """A dropout stage that the backward pass reaches with a delta keeps its mask."""
        return self.stages[i].kind == STAGE_DROPOUT and i > self.first_grad_stage

    cdef size_t _workspace_size(self, bint with_grad):
        cdef size_t rows = self.block_size, total = 0, widest = 0
        cdef int i
        for i in range(self.n_stages):
            total += (1 + self.stages[i].keeps_input) * ann_arena_aligned_size(
                rows * self.stages[i].n_out * self.isz)
            if self._keeps_mask(i):
                total += ann_arena_aligned_size(rows * self.stages[i].n_out)
            widest = max(widest, <size_t>self.stages[i].n_out)
        total += 2 * ann_arena_aligned_size(rows * widest * self.isz)
        total += ann_arena_aligned_size(rows * self.n_out * self.isz)
        if self.bf16:
            for i in range(self.n_stages):
                if self.stages[i].kind == STAGE_DENSE:
                    total += ann_arena_aligned_size(rows * self.stages[i].n_in * 2)
                    total += ann_arena_aligned_size(self._packed_size(i))
            total += ann_arena_aligned_size(self.n_weights * 2)
            total += ann_arena_aligned_size(rows * widest * 2)
        if with_grad:
            total += ann_arena_aligned_size(self.n_weights * self.isz)
        return total

    cdef size_t _packed_size(self, int i):
        """Bytes of dense stage i's W in oneDNN's layout for its forward product (0: none).
        (Packing W for d_in = delta @ W.T too made C's gradient slower: oneDNN 3.2 reorders
        W.T with a generic kernel, three times slower than W.)"""
        cdef stage_t *s = &self.stages[i]
        return bf16_packed_size(False, s.n_out, s.n_in, s.n_out, True)

    cdef _Workspace _new_workspace(self):
        cdef _Workspace owner = _Workspace()
        cdef workspace_t *ws = &owner.ws
        cdef size_t rows = self.block_size, total = self._workspace_size(False), widest = 0
        cdef int i, status = ANN_OK
        ws.outs = <char **>PyMem_Malloc(self.n_stages * sizeof(char *))
        ws.ins = <char **>PyMem_Malloc(self.n_stages * sizeof(char *))
        ws.masks = <char **>PyMem_Malloc(self.n_stages * sizeof(char *))
        ws.xb = <uint16_t **>PyMem_Malloc(self.n_stages * sizeof(uint16_t *))
        ws.packed = <packed_t *>PyMem_Malloc(self.n_stages * sizeof(packed_t))
        if (ws.outs == NULL or ws.ins == NULL or ws.masks == NULL or ws.xb == NULL
                or ws.packed == NULL):
            raise MemoryError()
        if ann_arena_init(&ws.arena, total) != ANN_OK:
            raise MemoryError(f"cannot allocate the {total / 2**20:.1f} MiB workspace")
        for i in range(self.n_stages):
            status |= ann_arena_alloc(&ws.arena, rows * self.stages[i].n_out * self.isz,
                                      <void **>&ws.outs[i])
            ws.ins[i] = NULL
            if self.stages[i].keeps_input:
                status |= ann_arena_alloc(&ws.arena, rows * self.stages[i].n_out * self.isz,
                                          <void **>&ws.ins[i])
            ws.masks[i] = NULL
            if self._keeps_mask(i):
                status |= ann_arena_alloc(&ws.arena, rows * self.stages[i].n_out,
                                          <void **>&ws.masks[i])
            widest = max(widest, <size_t>self.stages[i].n_out)
        status |= ann_arena_alloc(&ws.arena, rows * widest * self.isz, <void **>&ws.delta_a)
        status |= ann_arena_alloc(&ws.arena, rows * widest * self.isz, <void **>&ws.delta_b)
        status |= ann_arena_alloc(&ws.arena, rows * self.n_out * self.isz,
                                  <void **>&ws.loss_buf)
        ws.wb = ws.db = NULL
        memset(ws.packed, 0, self.n_stages * sizeof(packed_t))
        for i in range(self.n_stages):
            ws.xb[i] = NULL
            if self.bf16 and self.stages[i].kind == STAGE_DENSE:
                status |= ann_arena_alloc(&ws.arena, rows * self.stages[i].n_in * 2,
                                          <void **>&ws.xb[i])
                ws.packed[i].size = self._packed_size(i)
                status |= ann_arena_alloc(&ws.arena, ws.packed[i].size, &ws.packed[i].data)
        if self.bf16:
            status |= ann_arena_alloc(&ws.arena, self.n_weights * 2, <void **>&ws.wb)
            status |= ann_arena_alloc(&ws.arena, rows * widest * 2, <void **>&ws.db)
        if status != ANN_OK:   # the arena was sized for exactly these pieces
            raise RuntimeError(f"workspace layout: {ann_strerror(status).decode()}")
        return owner

    cdef _Call _new_call(self):
        cdef _Call call = _Call()
        call.net = self
        call.held = [self._new_workspace()]
        return call

    cdef _give_private_grad(self, workspace_t *ws):
        if ws.grad != NULL:
            return
        cdef size_t size = self.n_weights * self.isz
        if (ann_arena_init(&ws.grad_arena, size) != ANN_OK
                or ann_arena_alloc(&ws.grad_arena, size, <void **>&ws.grad) != ANN_OK):
            raise MemoryError(f"cannot allocate a {size / 2**20:.1f} MiB gradient")

    cdef int _threads_for(self, _Call call, Py_ssize_t n, int blas_threads):
        """How many engine threads share a call over n rows (1: the caller's thread alone,
        with as many BLAS threads as the backend is set to)."""
        cdef Py_ssize_t min_rows = self.min_rows_per_thread
        if (self.has_python_layers or n < 2 * min_rows or blas_threads < 2
                or not can_split_rows()):
            return 1
        cdef int threads = min(blas_threads, MAX_ENGINE_THREADS, <int>(n // min_rows))
        cdef int have = len(call.held)
        available = _available_memory()
        if threads > have and available is not None:   # fewer when memory is short
            extra = self._workspace_size(True)
            threads = max(1, min(threads, have + int(available // (2 * extra))))
        return threads

    cdef _Call _take_call(self):
        """An idle call state, or a new one."""
        try:
            return self.idle_calls.pop()
        except IndexError:
            return self._new_call()

    cdef _prepare_workspaces(self, _Call call):
        """A workspace for every share of the call, and a private gradient for every
        loss_grad share but the first."""
        cdef call_t *c = &call.c
        cdef _Workspace owner
        cdef int k
        while len(call.held) < c.threads:
            call.held.append(self._new_workspace())
        for k in range(c.threads):
            owner = call.held[k]
            c.ws[k] = &owner.ws
            if k > 0 and not c.forward:
                self._give_private_grad(c.ws[k])

    @property
    def layout(self):
        """List of ``(name, offset, shape)``: where each parameter lives in the flat vector."""
        return list(self._layout)

    @property
    def sizes(self):
        """Widths from input to output, e.g. ``[784, 256, 10]``."""
        return [self.n_in] + [self.stages[i].n_out for i in range(self.n_stages)]

    def flops_per_example(self):
        """(nominal, actual) floating-point operations of one example's forward + backward.

        Nominal is 6 x weights; actual leaves out the gradient with respect to the input,
        which is never computed.
        """
        nominal = 6 * self.n_weights
        cdef stage_t *first = &self.stages[self.first_grad_stage]
        actual = nominal - 2 * (first.n_in * first.n_out if first.kind == STAGE_DENSE else 0)
        return nominal, actual

    # ---------------------------------------------------------------- validation (GIL held)

    cdef char *_check_vector(self, object a, str name, bint writable) except NULL:
        if (not isinstance(a, np.ndarray) or a.dtype != self.dtype or a.ndim != 1
                or a.shape[0] != self.n_weights or not a.flags.c_contiguous
                or (writable and not a.flags.writeable)):
            raise ValueError(f"{name}: expected a C-contiguous{' writable' if writable else ''} "
                             f"{self.dtype} array of shape ({self.n_weights},), received "
                             f"{_describe(a)}")
        return _data(a, writable)

    cdef char *_check_matrix(self, object a, str name, Py_ssize_t rows, int cols,
                             bint writable) except NULL:
        if (not isinstance(a, np.ndarray) or a.dtype != self.dtype or a.ndim != 2
                or a.shape[1] != cols or (rows >= 0 and a.shape[0] != rows)
                or not a.flags.c_contiguous or (writable and not a.flags.writeable)):
            expected = f"({rows if rows >= 0 else 'n'}, {cols})"
            raise ValueError(f"{name}: expected a C-contiguous{' writable' if writable else ''} "
                             f"{self.dtype} array of shape {expected}, received {_describe(a)}")
        return _data(a, writable)

    cdef _check_weights_finite(self, char *w):
        cdef size_t bad = 0
        if not _all_finite(self.dbl, self.n_weights, w, &bad):
            raise ValueError(f"weights: element {bad} ({self._weight_name(bad)}) is not finite")

    def _weight_name(self, size_t index):
        for name, offset, shape in reversed(self._layout):
            if index >= offset:
                where = ", ".join(str(int(k)) for k in np.unravel_index(index - offset, shape))
                return f"{name}[{where}]"
        return "?"

    cdef _check_matrix_finite(self, object a, str name):
        cdef size_t bad = 0
        cdef char *p = _data(a, False)
        if a.size and not _all_finite(self.dbl, a.size, p, &bad):
            row, col = divmod(bad, a.shape[1])
            raise ValueError(f"{name}: row {row}, column {col} is {a[row, col]}, "
                             "expected a finite number")

    # ------------------------------------------------------------------- compute (no GIL)

    cdef int _forward_block(self, workspace_t *ws, const stage_ctx_t *ctx, const char *w,
                            const char *x, int m) except -1 nogil:
        """Every stage's output for the m rows at x; returns a kernel's failing status or
        ANN_OK."""
        cdef int i, status = ANN_OK
        cdef stage_t *s
        cdef const char *prev = x
        cdef size_t n
        cdef stage_ctx_t local = ctx[0]   # input_rounded: the stage's input is in its xb
        local.input_rounded = False
        for i in range(self.n_stages):
            s = &self.stages[i]
            status = STAGE_KINDS[s.kind].forward(s, &local, w, prev, m, ws.outs[i])
            local.input_rounded = False
            if status == ANN_OK and s.act >= 0:
                n = <size_t>m * s.n_out
                if s.keeps_input:
                    memcpy(ws.ins[i], ws.outs[i], n * self.isz)
                if self._feeds_bf16_dense(i):
                    status = _act_forward_rounded(s, n, <float *>ws.outs[i],
                                                  ctx.xb[self.stages[i + 1].index])
                    local.input_rounded = True
                elif self.dbl:
                    status = ann_act_forward_d(s.act, s.alpha, n, <double *>ws.outs[i])
                else:
                    status = ann_act_forward_s(s.act, <float>s.alpha, n, <float *>ws.outs[i])
            if status != ANN_OK:
                return status
            prev = ws.outs[i]
        return ANN_OK

    cdef bint _feeds_bf16_dense(self, int i) noexcept nogil:
        """Whether stage i's output is the input of a bfloat16 dense stage."""
        return (self.bf16 and i + 1 < self.n_stages
                and self.stages[i + 1].kind == STAGE_DENSE)

    cdef int _backward_block(self, workspace_t *ws, const stage_ctx_t *ctx, const char *w,
                             const char *x, int m, char *grad) except -1 nogil:
        """Add the gradient of the block to grad; ws.delta_a holds d loss / d output.
        Returns a kernel's failing status or ANN_OK."""
        cdef int i, status = ANN_OK
        cdef stage_t *s
        cdef const char *prev
        cdef char *delta = ws.delta_a
        cdef char *delta_prev = ws.delta_b
        cdef char *swap
        cdef stage_ctx_t local = ctx[0]   # delta_rounded: the stage's db and bias grad are done
        for i in range(self.n_stages - 1, self.first_grad_stage - 1, -1):
            s = &self.stages[i]
            prev = x if i == 0 else ws.outs[i - 1]
            local.delta_rounded = False
            if s.act >= 0 and ctx.bf16 and s.kind == STAGE_DENSE:
                status = _act_backward_rounded(
                    s, m, <const float *>ws.ins[i], <const float *>ws.outs[i],
                    <float *>delta, ctx.db,
                    <float *>grad + s.w_off + <Py_ssize_t>s.n_in * s.n_out)
                local.delta_rounded = True
            elif s.act >= 0:
                if self.dbl:
                    status = ann_act_backward_d(s.act, s.alpha, <size_t>m * s.n_out,
                                                <const double *>ws.ins[i],
                                                <const double *>ws.outs[i], <double *>delta)
                else:
                    status = ann_act_backward_s(s.act, <float>s.alpha, <size_t>m * s.n_out,
                                                <const float *>ws.ins[i],
                                                <const float *>ws.outs[i], <float *>delta)
            # The first stage with parameters needs no delta: nothing before it learns, and
            # d loss / d data is never computed.
            if status == ANN_OK:
                status = STAGE_KINDS[s.kind].backward(
                    s, &local, w, prev, ws.outs[i], m, delta,
                    delta_prev if i > self.first_grad_stage else NULL, grad)
            if status != ANN_OK:
                return status
            swap = delta
            delta = delta_prev
            delta_prev = swap
        return ANN_OK

    cdef stage_ctx_t _stage_ctx(self, workspace_t *ws, bint training, uint64_t seed,
                                Py_ssize_t r0) noexcept nogil:
        return stage_ctx_t(self.dbl, training, seed, r0, ws.masks, self.bf16, ws.xb, ws.wb,
                           ws.db, ws.packed, False, False)

    cdef int _round_weights(self, workspace_t *ws, const char *w,
                            Py_ssize_t rows) noexcept nogil:
        """The dense stages' W rounded to bfloat16 into ws.wb, once per call and share, and
        for a share of PACK_MIN_ROWS rows or more (see _set_pack_min_rows) packed for the
        forward products where oneDNN has a layout for them."""
        cdef int i, status = ANN_OK
        cdef stage_t *s
        cdef packed_t *p
        cdef bint pack = rows >= _pack_min_rows
        for i in range(self.n_stages):
            s = &self.stages[i]
            if s.kind != STAGE_DENSE or status != ANN_OK:
                continue
            status = ann_f32_to_bf16(<size_t>s.n_in * s.n_out,
                                     <const float *>w + s.w_off, ws.wb + s.w_off)
            p = &ws.packed[i]
            # packing failed or not done: the products read ws.wb as stored
            p.ready = pack and p.size > 0 and status == ANN_OK and bf16_pack(
                False, s.n_out, s.n_in, ws.wb + s.w_off, s.n_out, True, p.data,
                p.size) == ANN_OK
        return status

    cdef int _loss_grad_rows(self, call_t *c, int k, char *grad) except -1 nogil:
        """Share k of a loss_grad call: its loss into c.loss[k], its gradient added into
        grad, the loss kernel's status into c.status[k]."""
        cdef workspace_t *ws = c.ws[k]
        cdef Py_ssize_t r0 = c.bounds[k], r1 = c.bounds[k + 1]
        cdef int m, n_out = self.n_out
        cdef size_t row_in = self.n_in * self.isz, row_out = n_out * self.isz
        cdef char *last = ws.outs[self.n_stages - 1]
        cdef stage_ctx_t ctx = self._stage_ctx(ws, True, c.seed, r0)
        c.loss[k] = 0.0
        c.status[k] = self._round_weights(ws, c.w, r1 - r0) if self.bf16 else ANN_OK
        while r0 < r1 and c.status[k] == ANN_OK:
            m = <int>min(<Py_ssize_t>self.block_size, r1 - r0)
            ctx.row0 = r0
            c.status[k] = self._forward_block(ws, &ctx, c.w, c.x + r0 * row_in, m)
            if c.status[k] != ANN_OK:
                break
            memcpy(ws.loss_buf, last, m * row_out)
            if self.dbl:
                c.status[k] = ann_loss_d(
                    self.loss_kind, m, n_out, <double *>ws.loss_buf,
                    c.labels + r0 if c.labels != NULL else NULL,
                    <const double *>(c.targets + r0 * row_out) if c.targets != NULL
                    else NULL,
                    <const double *>(c.row_weights + r0 * self.isz) if c.row_weights != NULL
                    else NULL, <double *>ws.delta_a, &c.loss[k])
            else:
                c.status[k] = ann_loss_s(
                    self.loss_kind, m, n_out, <float *>ws.loss_buf,
                    c.labels + r0 if c.labels != NULL else NULL,
                    <const float *>(c.targets + r0 * row_out) if c.targets != NULL
                    else NULL,
                    <const float *>(c.row_weights + r0 * self.isz) if c.row_weights != NULL
                    else NULL, <float *>ws.delta_a, &c.loss[k])
            if c.status[k] == ANN_OK:
                c.status[k] = self._backward_block(ws, &ctx, c.w, c.x + r0 * row_in, m, grad)
            r0 += m
        return 0

    cdef int _forward_rows(self, call_t *c, int k) except -1 nogil:
        """Share k of a forward call: its rows' outputs into c.out."""
        cdef workspace_t *ws = c.ws[k]
        cdef Py_ssize_t r0 = c.bounds[k], r1 = c.bounds[k + 1]
        cdef int m, n_out = self.n_out
        cdef size_t row_in = self.n_in * self.isz, row_out = n_out * self.isz
        cdef char *last = ws.outs[self.n_stages - 1]
        cdef char *o
        cdef stage_ctx_t ctx = self._stage_ctx(ws, c.training, c.seed, r0)
        c.status[k] = self._round_weights(ws, c.w, r1 - r0) if self.bf16 else ANN_OK
        while r0 < r1 and c.status[k] == ANN_OK:
            m = <int>min(<Py_ssize_t>self.block_size, r1 - r0)
            o = c.out + r0 * row_out
            ctx.row0 = r0
            c.status[k] = self._forward_block(ws, &ctx, c.w, c.x + r0 * row_in, m)
            if c.status[k] != ANN_OK:
                break
            memcpy(o, last, m * row_out)
            if not c.raw:
                if self.dbl:
                    c.status[k] = ann_loss_output_d(self.loss_kind, m, n_out, <double *>o)
                else:
                    c.status[k] = ann_loss_output_s(self.loss_kind, m, n_out, <float *>o)
            r0 += m
        return 0

    cdef int _compute_share(self, call_t *c, int k) except -1:
        """Share k of a call (rows c.bounds[k] to c.bounds[k + 1]), in workspace c.ws[k].

        Each engine thread flushes denormals itself; when the rows are split, BLAS computes
        on the calling thread only, else with the engine's thread count whichever thread
        calls (MKL's own count is per thread).
        """
        cdef unsigned long fpu
        cdef int saved = 0
        with nogil:
            fpu = ann_fpu_enter()
            saved = mkl_local_threads_begin(1 if c.threads > 1 else c.blas_threads)
            if self.bf16:   # oneDNN's OpenMP threads, like MKL's: one per share when split
                local_threads(1 if c.threads > 1 else c.blas_threads)
            if c.threads == 1 and c.blas_threads > 1:
                prepare_threads()
            try:
                if c.forward:
                    self._forward_rows(c, k)
                else:
                    if k > 0:
                        memset(c.ws[k].grad, 0, self.n_weights * self.isz)
                    self._loss_grad_rows(c, k, c.grad if k == 0 else c.ws[k].grad)
            finally:
                mkl_local_threads_end(saved)
                ann_fpu_leave(fpu)
        return 0

    cdef int _run(self, _Call call, Py_ssize_t n) except -1:
        """Compute a call over n rows: on the caller's thread alone when BLAS is set to one
        thread (any number of such calls at once, each in its own workspace), else holding
        the engine's threads, split among them when n is large enough."""
        cdef call_t *c = &call.c
        cdef int blas = engine_threads()
        c.blas_threads = blas
        if blas == 1:
            c.threads = 1
            self._run_shares(call, n, None)
        else:
            c.threads = self._threads_for(call, n, blas)
            with _engine_threads.hold(c.threads - 1) as helpers:
                self._run_shares(call, n, helpers)
        self.last_threads = c.threads
        return c.threads

    cdef int _run_shares(self, _Call call, Py_ssize_t n, list helpers) except -1:
        cdef call_t *c = &call.c
        cdef int k, saved = 0
        cdef Py_ssize_t share = (n + c.threads - 1) // c.threads
        for k in range(c.threads + 1):
            c.bounds[k] = min(k * share, n)
        self._prepare_workspaces(call)
        if c.threads == 1:
            self._compute_share(c, 0)
            return 0
        saved = openblas_one_thread_begin()
        try:
            for k in range(1, c.threads):
                helper = helpers[k - 1]
                helper.call, helper.share = call, k
                helper.go.release()
            try:
                self._compute_share(c, 0)
            finally:   # no share may still use the workspaces when this returns
                for k in range(1, c.threads):
                    helpers[k - 1].done.acquire()
            _raise_helper_errors(helpers, c.threads - 1)
        finally:
            openblas_threads_restore(saved)
        return 0

    # ----------------------------------------------------------------------- public calls

    def forward(self, weights, X, out=None, bint raw=False, key=None):
        """Outputs of the network for the rows of X.

        Parameters
        ----------
        weights : ndarray (n_weights,)
        X : ndarray (n, n_in), C-contiguous, of the network's dtype
        out : ndarray (n, n_out), optional; written and returned
        raw : bool
            If True, return the last stage's output before the loss's output function (the
            logits of a softmax or sigmoid output).
        key : (seed, iteration, block) or None
            None (inference): dropout is the identity. A key computes as in training, with
            the masks ``loss_grad`` draws for the same key and rows.

        Returns
        -------
        ndarray (n, n_out): probabilities (softmax / sigmoid losses) or values (squared error).
        """
        cdef char *w = self._check_vector(weights, "weights", False)
        cdef char *x = self._check_matrix(X, "X", -1, self.n_in, False)
        cdef Py_ssize_t n = X.shape[0]
        if out is None:
            out = np.empty((n, self.n_out), self.dtype)
        cdef char *o = self._check_matrix(out, "out", n, self.n_out, True)
        self._check_weights_finite(w)
        self._check_matrix_finite(X, "X")
        cdef _Call call = self._take_call()
        call.c.w, call.c.x, call.c.out, call.c.raw, call.c.forward = w, x, o, raw, True
        call.c.training = key is not None
        call.c.seed = _call_key(key) if key is not None else 0
        try:
            self._run(call, n)
            self._raise_status(&call.c)
        finally:
            self.idle_calls.append(call)
        return out

    def loss_grad(self, weights, X, y, grad, bint zero=False, key=None, sample_weight=None):
        """Loss summed over the rows of X, and its gradient added into ``grad``.

        Parameters
        ----------
        weights : ndarray (n_weights,)
        X : ndarray (n, n_in), C-contiguous, of the network's dtype
        y : ndarray
            int64 class indices of shape (n,) in [0, n_out), or targets of shape (n, n_out) of
            the network's dtype.
        grad : ndarray (n_weights,)
            The gradient of the summed loss is added to it (set ``zero=True`` to clear it
            first), so blocks and partitions sum for free.
        key : (seed, iteration, block), non-negative integers below 2**64
            Where a stochastic network (dropout) draws its masks: required when
            ``stochastic``, ignored otherwise. The same key and rows give the same masks.
        sample_weight : ndarray (n,) of the network's dtype, C-contiguous, optional
            Each row's weight: the loss kernel multiplies the row's loss and its output delta
            by it, so the sums are ``sum_i sample_weight[i] * loss_i`` and its gradient. The
            weights must be finite and non-negative (a row of weight 0 adds nothing).

        Returns
        -------
        (loss_sum, n_rows) : (float, int)
            ``n_rows`` counts the rows, not their weights.

        Raises
        ------
        ValueError
            Wrong shapes, dtypes or layouts, class indices out of range, non-finite weights
            (all checked before anything is added to ``grad``), or non-finite values in X or
            in the targets: those are found after the computation, from its result, so that
            no pass over the data is spent on them, and ``grad`` then holds unspecified values.
        FloatingPointError
            The loss or gradient is not finite although weights and data are (overflow), or
            ``grad`` already held non-finite values.
        """
        cdef char *w = self._check_vector(weights, "weights", False)
        cdef char *x = self._check_matrix(X, "X", -1, self.n_in, False)
        cdef Py_ssize_t n = X.shape[0]
        cdef char *g = self._check_vector(grad, "grad", True)
        cdef const int64_t *labels = NULL
        cdef char *T = NULL
        if self.stochastic and key is None:
            raise ValueError("key: this network has dropout, so loss_grad needs "
                             "key=(seed, iteration, block) to place its random masks")
        cdef uint64_t seed = _call_key(key) if key is not None else 0
        cdef const char *row_weights = NULL
        if sample_weight is not None:
            self._check_row_weights(sample_weight, n)
            if n > 0:
                row_weights = _data(sample_weight, False)
        if isinstance(y, np.ndarray) and y.ndim == 1:
            if y.dtype != np.int64 or y.shape[0] != n or not y.flags.c_contiguous:
                raise ValueError(f"y: expected C-contiguous int64 class indices of shape ({n},),"
                                 f" received {_describe(y)}")
            labels = <const int64_t *>_data(y, False)
        elif isinstance(y, np.ndarray) and y.ndim == 2:
            T = self._check_matrix(y, "y", n, self.n_out, False)
        else:
            raise ValueError(f"y: expected int64 class indices of shape ({n},) or {self.dtype} "
                             f"targets of shape ({n}, {self.n_out}), received {_describe(y)}")
        self._check_weights_finite(w)
        if labels != NULL:
            self._check_labels(y, labels, n)
        if zero:
            memset(g, 0, self.n_weights * self.isz)
        cdef _Call call = self._take_call()
        call.c.w, call.c.x, call.c.labels, call.c.targets = w, x, labels, T
        call.c.row_weights = row_weights
        call.c.grad, call.c.forward = g, False
        call.c.training, call.c.seed = True, seed
        cdef int k, threads
        cdef double loss = 0.0
        try:
            threads = self._run(call, n)
            for k in range(threads):
                loss += call.c.loss[k]
                if k > 0:
                    self._add_into(g, call.c.ws[k].grad)
            self._raise_status(&call.c)
        finally:
            self.idle_calls.append(call)
        cdef size_t bad = 0
        if not isfinite(loss) or not _all_finite(self.dbl, self.n_weights, g, &bad):
            self._diagnose_non_finite(X, y)
        return loss, n

    cdef _raise_status(self, call_t *c):
        cdef int k
        for k in range(c.threads):
            if c.status[k] != ANN_OK:
                raise ValueError(f"native kernel failed: {ann_strerror(c.status[k]).decode()}")

    cdef void _add_into(self, char *g, const char *other) noexcept nogil:
        cdef Py_ssize_t i
        if self.dbl:
            for i in range(self.n_weights):
                (<double *>g)[i] += (<const double *>other)[i]
        else:
            for i in range(self.n_weights):
                (<float *>g)[i] += (<const float *>other)[i]

    cdef _check_row_weights(self, object sw, Py_ssize_t n):
        """``sample_weight`` is (n,) of the network's dtype, C-contiguous, finite and
        non-negative (else ValueError naming the first bad row)."""
        if (not isinstance(sw, np.ndarray) or sw.ndim != 1 or sw.shape[0] != n
                or sw.dtype != self.dtype or not sw.flags.c_contiguous):
            raise ValueError(f"sample_weight: expected a C-contiguous {self.dtype} array of "
                             f"shape ({n},), received {_describe(sw)}")
        bad = np.flatnonzero(~(sw >= 0) | ~np.isfinite(sw))
        if bad.size:
            raise ValueError(f"sample_weight: row {int(bad[0])} is {float(sw[bad[0]])!r}; "
                             f"weights must be finite and non-negative")

    cdef _check_labels(self, object y, const int64_t *labels, Py_ssize_t n):
        cdef Py_ssize_t i, bad = -1
        cdef int64_t k = self.n_out
        with nogil:
            for i in range(n):
                if labels[i] < 0 or labels[i] >= k:
                    bad = i
                    break
        if bad >= 0:
            raise ValueError(f"y: row {bad} has class index {labels[bad]}, expected an integer "
                             f"in [0, {k})")

    def _diagnose_non_finite(self, X, y):
        self._check_matrix_finite(X, "X")
        if y.ndim == 2:
            self._check_matrix_finite(y, "y")
        raise FloatingPointError(
            "the loss or gradient is not finite although the weights and data are: the "
            "computation overflowed (training diverged: try a smaller learning rate), or grad "
            "already held non-finite values")
include "_optim.pxi"


def bfloat16_bits(x):
    """The bfloat16 bits (uint16) of a float32 array, rounded to nearest even by the engine's
    conversion kernel: what a bfloat16 network's GEMMs read. For tests and inspection."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(a.shape, np.uint16)
    cdef float[::1] src = a.reshape(-1)
    cdef uint16_t[::1] dst = out.reshape(-1)
    if src.shape[0]:
        with nogil:
            ann_f32_to_bf16(src.shape[0], &src[0], &dst[0])
    return out
