# cython: language_level=3
"""The GEMM table shared by the engine's modules (see _blas.pyx)."""

cdef void gemm_s(bint trans_a, bint trans_b, int m, int n, int k, float alpha,
                 const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc) noexcept nogil

cdef void gemm_d(bint trans_a, bint trans_b, int m, int n, int k, double alpha,
                 const double *A, int lda, const double *B, int ldb,
                 double beta, double *C, int ldc) noexcept nogil

cdef void prepare_threads() noexcept nogil

cdef int engine_threads() noexcept nogil
cdef bint can_split_rows() noexcept nogil
cdef int single_threaded_begin() noexcept nogil
cdef void single_threaded_end(int previous) noexcept nogil
cdef int thread_single_begin() noexcept nogil
cdef void thread_single_end(int previous) noexcept nogil
