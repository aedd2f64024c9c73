# cython: language_level=3
"""Declarations of the C99 core (csrc/)."""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint64_t

cdef extern from "ann_status.h" nogil:
    enum:
        ANN_OK
        ANN_ERR_NOMEM
        ANN_ERR_ARG
        ANN_ERR_LABEL
        ANN_ERR_BACKEND
    const char *ann_strerror(int status)

cdef extern from "ann_arena.h" nogil:
    ctypedef struct ann_arena_t:
        unsigned char *base
        size_t capacity
        size_t used
    size_t ann_arena_aligned_size(size_t bytes)
    int ann_arena_init(ann_arena_t *arena, size_t capacity)
    int ann_arena_alloc(ann_arena_t *arena, size_t bytes, void **out)
    void ann_arena_reset(ann_arena_t *arena)
    void ann_arena_free(ann_arena_t *arena)

cdef extern from "ann_kernels.h" nogil:
    enum:
        ANN_ACT_COUNT
        ANN_LOSS_SOFTMAX_XENT
        ANN_LOSS_SIGMOID_XENT
        ANN_LOSS_SQUARED_ERROR
    ctypedef struct ann_activation_info:
        const char *name
        int takes_alpha
        int needs_input
    const ann_activation_info *ann_activation(int kind)
    int ann_bias_fill_s(size_t rows, size_t cols, const float *b, float *Y)
    int ann_bias_fill_d(size_t rows, size_t cols, const double *b, double *Y)
    int ann_bias_grad_s(size_t rows, size_t cols, const float *D, float *gb)
    int ann_bias_grad_d(size_t rows, size_t cols, const double *D, double *gb)
    int ann_act_forward_s(int kind, float alpha, size_t n, float *y)
    int ann_act_forward_d(int kind, double alpha, size_t n, double *y)
    int ann_act_backward_s(int kind, float alpha, size_t n, const float *z, const float *y,
                           float *delta)
    int ann_act_backward_d(int kind, double alpha, size_t n, const double *z, const double *y,
                           double *delta)
    int ann_loss_output_s(int kind, size_t rows, size_t cols, float *Z)
    int ann_loss_output_d(int kind, size_t rows, size_t cols, double *Z)
    int ann_loss_s(int kind, size_t rows, size_t cols, float *Z, const int64_t *labels,
                   const float *T, const float *W, float *delta, double *loss_sum)
    int ann_loss_d(int kind, size_t rows, size_t cols, double *Z, const int64_t *labels,
                   const double *T, const double *W, double *delta, double *loss_sum)
    int ann_all_finite_s(size_t n, const float *x, size_t *first_bad)
    int ann_all_finite_d(size_t n, const double *x, size_t *first_bad)
    int ann_dropout_forward_s(uint64_t key, uint64_t row0, size_t rows, size_t cols,
                              double rate, const float *X, float *Y, uint8_t *M)
    int ann_dropout_forward_d(uint64_t key, uint64_t row0, size_t rows, size_t cols,
                              double rate, const double *X, double *Y, uint8_t *M)
    int ann_dropout_backward_s(size_t n, double rate, const uint8_t *M, const float *d_out,
                               float *d_in)
    int ann_dropout_backward_d(size_t n, double rate, const uint8_t *M, const double *d_out,
                               double *d_in)
    unsigned long ann_fpu_enter()
    void ann_fpu_leave(unsigned long saved)

cdef extern from "ann_random.h" nogil:
    uint64_t ann_random_u64(uint64_t key, uint64_t counter)
    uint64_t ann_random_key(uint64_t seed, uint64_t iteration, uint64_t block, uint64_t stage)

cdef extern from "ann_optim.h" nogil:
    enum:
        ANN_STEP_SGD
        ANN_STEP_MOMENTUM
        ANN_STEP_NESTEROV
        ANN_STEP_ADAM
    ctypedef struct ann_step:
        int kind
        double grad_scale
        double rate
        double beta1
        double beta2
        double inv_bias2
        double eps
    int ann_step_s(const ann_step *s, float decay, size_t n, float *w, const float *g,
                   float *m, float *v, double *squares, int *nonfinite)
    int ann_step_d(const ann_step *s, double decay, size_t n, double *w, const double *g,
                   double *m, double *v, double *squares, int *nonfinite)

cdef extern from "ann_bf16.h" nogil:
    int ann_f32_to_bf16(size_t n, const float *src, uint16_t *dst)
    int ann_bf16_to_f32(size_t n, const uint16_t *src, float *dst)
    int ann_f32_to_bf16_2d(size_t rows, size_t cols, const float *src, size_t ld_src,
                           uint16_t *dst, size_t ld_dst)

cdef extern from "ann_dnnl.h" nogil:
    ctypedef struct ann_dnnl_api:
        pass
    int ann_dnnl_install(const ann_dnnl_api *api)
    int ann_dnnl_gemm_bf16(int trans_a, int trans_b, int m, int n, int k, const uint16_t *A,
                           int lda, const uint16_t *B, int ldb, int accumulate,
                           const float *bias, float *C, int ldc, const void *packed)
