# cython: language_level=3
"""oneDNN's bfloat16 matmul, for the engine's modules (see _onednn.pyx)."""
from libc.stdint cimport uint16_t

cdef int bf16_gemm(bint trans_a, bint trans_b, int m, int n, int k, const uint16_t *A, int lda,
                   const uint16_t *B, int ldb, bint accumulate, const float *bias, float *C,
                   int ldc, const void *packed) noexcept nogil
cdef size_t bf16_packed_size(bint trans_b, int n, int k, int ldb, bint has_bias) noexcept nogil
cdef int bf16_pack(bint trans_b, int n, int k, const uint16_t *B, int ldb, bint has_bias,
                   void *packed, size_t capacity) noexcept nogil
cdef bint bf16_loaded() noexcept nogil
cdef void local_threads(int threads) noexcept nogil
