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
cdef int openblas_one_thread_begin() noexcept nogil
cdef void openblas_threads_restore(int previous) noexcept nogil
cdef int mkl_local_threads_begin(int threads) noexcept nogil
cdef void mkl_local_threads_end(int previous) noexcept nogil
