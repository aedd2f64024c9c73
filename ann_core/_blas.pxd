# cython: language_level=3
"""The GEMM table shared by the engine's modules (see _blas.pyx)."""

cdef void blas_gemm(bint dbl, bint trans_a, bint trans_b, int m, int n, int k, double alpha,
                    const void *A, int lda, const void *B, int ldb, double beta, void *C,
                    int ldc) noexcept nogil

cdef void prepare_threads() noexcept nogil

cdef int engine_threads() noexcept nogil
cdef bint can_split_rows() noexcept nogil
cdef int openblas_one_thread_begin() noexcept nogil
cdef void openblas_threads_restore(int previous) noexcept nogil
cdef int mkl_local_threads_begin(int threads) noexcept nogil
cdef void mkl_local_threads_end(int previous) noexcept nogil
