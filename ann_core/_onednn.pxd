# cython: language_level=3
"""oneDNN's bfloat16 matmul, for the engine's modules (see _onednn.pyx)."""
from libc.stdint cimport uint16_t

cdef int bf16_gemm(bint trans_a, bint trans_b, int m, int n, int k, const uint16_t *A, int lda,
                   const uint16_t *B, int ldb, bint accumulate, const float *bias, float *C,
                   int ldc) noexcept nogil
cdef bint bf16_loaded() noexcept nogil
cdef void local_threads(int threads) noexcept nogil
