# Included by _network.pyx: the fused optimizer step (csrc/ann_optim.h) for sparkann.optim.

#: The optimizers csrc/ann_optim.h computes, and the moment vectors each keeps.
STEP_KINDS = {"sgd": (ANN_STEP_SGD, 0), "momentum": (ANN_STEP_MOMENTUM, 1),
              "nesterov": (ANN_STEP_NESTEROV, 1), "adam": (ANN_STEP_ADAM, 2)}


def _step_vector(a, name, dtype, Py_ssize_t n, bint writable):
    if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.ndim == 1 and a.shape[0] == n
            and a.flags.c_contiguous and (a.flags.writeable or not writable)):
        raise ValueError(f"{name} must be a {'writable ' if writable else ''}C-contiguous 1-D "
                         f"{dtype} array of {n} values, received {_describe(a)}")


def _step_runs(runs, Py_ssize_t n):
    """The (start, stop) rows of ``runs`` as a C-contiguous int64 (k, 2) array, checked to be
    ascending, disjoint and inside [0, n]."""
    cdef const int64_t[:, ::1] r
    cdef Py_ssize_t i
    cdef int64_t last = 0
    runs = np.ascontiguousarray(runs, dtype=np.int64)
    if runs.ndim != 2 or runs.shape[1] != 2:
        raise ValueError(f"runs must be (start, stop) pairs, received shape {runs.shape}")
    r = runs
    for i in range(r.shape[0]):
        if not last <= r[i, 0] <= r[i, 1] <= n:
            raise ValueError(f"runs[{i}] = ({r[i, 0]}, {r[i, 1]}) is not an ascending slice of "
                             f"[{last}, {n}] after the previous run")
        last = r[i, 1]
    return runs


def optimizer_step(kind, w, g, m=None, v=None, *, double grad_scale=1.0, double rate,
                   double beta1=0.0, double beta2=0.0, double inv_bias2=1.0, double eps=0.0,
                   double decay=0.0, double run_decay=0.0, runs=None, bint squares=False):
    """One optimizer step over the flat vector ``w`` (updated in place), in one pass.

    The gradient is ``grad_scale * g + decay * w``, plus ``run_decay * w`` on the slices
    ``w[start:stop]`` of ``runs`` (every ``(start, stop)`` row; all of ``w`` without runs);
    ``kind`` ("sgd", "momentum", "nesterov", "adam") and the coefficients are those of
    csrc/ann_optim.h (Adam's ``rate`` includes ``1 / (1 - beta1^t)``, ``inv_bias2`` is
    ``1 / (1 - beta2^t)``). ``m`` is the velocity or first moment, ``v`` Adam's second
    moment, both updated in place. ``w``, ``g``, ``m``, ``v``: C-contiguous 1-D arrays of one
    dtype, float32 or float64. Computes with denormals flushed to zero.

    Returns
    -------
    (squares, finite): the sum of ``w**2`` over the runs before the update (float, summed in
    float64; None unless ``squares``), and whether every updated weight is finite.
    """
    if kind not in STEP_KINDS:
        raise ValueError(f"kind must be one of {sorted(STEP_KINDS)}, received {kind!r}")
    cdef ann_step s
    cdef int n_moments
    s.kind, n_moments = STEP_KINDS[kind]
    if not isinstance(w, np.ndarray) or w.dtype not in (np.float32, np.float64):
        raise ValueError(f"w must be a float32 or float64 array, received {_describe(w)}")
    cdef Py_ssize_t n = w.size
    cdef bint dbl = w.dtype == np.float64
    _step_vector(w, "w", w.dtype, n, True)
    _step_vector(g, "g", w.dtype, n, False)
    if n_moments >= 1:
        _step_vector(m, "m", w.dtype, n, True)
    if n_moments >= 2:
        _step_vector(v, "v", w.dtype, n, True)
    cdef const int64_t[:, ::1] r
    cdef bint whole = runs is None
    cdef Py_ssize_t k = 1
    if not whole:
        runs = _step_runs(runs, n)
        r = runs
        k = r.shape[0]
    s.grad_scale, s.rate, s.beta1, s.beta2 = grad_scale, rate, beta1, beta2
    s.inv_bias2, s.eps = inv_bias2, eps
    cdef size_t isz = _isz(dbl)
    cdef char *pw = _data(w, True) if n else NULL
    cdef const char *pg = _data(g, False) if n else NULL
    cdef char *pm = _data(m, True) if n and n_moments >= 1 else NULL
    cdef char *pv = _data(v, True) if n and n_moments >= 2 else NULL
    cdef const char *ptrs[4]
    ptrs[0], ptrs[1], ptrs[2], ptrs[3] = pw, pg, pm, pv
    cdef int a, b
    for a in range(4):
        for b in range(a + 1, 4):
            if ptrs[a] != NULL and ptrs[b] != NULL and ptrs[a] < ptrs[b] + n * isz \
                    and ptrs[b] < ptrs[a] + n * isz:
                raise ValueError(f"{'wgmv'[a]} and {'wgmv'[b]} share memory: the step needs "
                                 "separate arrays")
    cdef double total = 0.0
    cdef int bad = 0, status = ANN_OK
    cdef Py_ssize_t i, start, stop, pos = 0
    cdef unsigned long fpu
    with nogil:
        fpu = ann_fpu_enter()
        for i in range(k):  # the slice before each run (decay only), then the run
            if whole:
                start, stop = 0, n
            else:
                start, stop = r[i, 0], r[i, 1]
            if status == ANN_OK and start > pos:
                status = _step_slice(&s, dbl, decay, pos, start - pos, pw, pg, pm, pv, isz,
                                     NULL, &bad)
            if status == ANN_OK and stop > start:
                status = _step_slice(&s, dbl, decay + run_decay, start, stop - start, pw, pg,
                                     pm, pv, isz, &total if squares else NULL, &bad)
            pos = stop
        if status == ANN_OK and n > pos:  # after the last run
            status = _step_slice(&s, dbl, decay, pos, n - pos, pw, pg, pm, pv, isz, NULL, &bad)
        ann_fpu_leave(fpu)
    if status != ANN_OK:
        raise ValueError(f"native optimizer step failed: {ann_strerror(status).decode()}")
    return (total if squares else None), not bad


cdef inline int _step_slice(const ann_step *s, bint dbl, double decay, Py_ssize_t start,
                            Py_ssize_t count, char *w, const char *g, char *m, char *v,
                            size_t isz, double *squares, int *bad) noexcept nogil:
    cdef size_t off = start * isz
    if dbl:
        return ann_step_d(s, decay, count, <double *>(w + off), <const double *>(g + off),
                          <double *>(m + off) if m != NULL else NULL,
                          <double *>(v + off) if v != NULL else NULL, squares, bad)
    return ann_step_s(s, <float>decay, count, <float *>(w + off), <const float *>(g + off),
                      <float *>(m + off) if m != NULL else NULL,
                      <float *>(v + off) if v != NULL else NULL, squares, bad)
