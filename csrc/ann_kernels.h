/* Element-wise kernels of the network engine, for float (_s) and double (_d).
 *
 * Matrices are row-major (rows, cols) and contiguous. Every function returns an
 * ANN_* status code; none allocates memory. Values whose magnitude is below the
 * smallest normal number are flushed to zero on output, so that the GEMMs that
 * consume them never see denormals.
 */
#ifndef ANN_KERNELS_H
#define ANN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "ann_status.h"

enum ann_activation {
    ANN_ACT_IDENTITY = 0,
    ANN_ACT_SIGMOID = 1,
    ANN_ACT_TANH = 2,
    ANN_ACT_RELU = 3,
    ANN_ACT_LEAKY_RELU = 4,
    ANN_ACT_SOFTPLUS = 5,
    ANN_ACT_COUNT = 6
};

enum ann_loss {
    ANN_LOSS_SOFTMAX_XENT = 0,  /* softmax output, cross-entropy against a distribution */
    ANN_LOSS_SIGMOID_XENT = 1,  /* sigmoid per output, binary cross-entropy (multi-label) */
    ANN_LOSS_SQUARED_ERROR = 2, /* identity output, 0.5 * sum of squared differences */
    ANN_LOSS_COUNT = 3
};

#define ANN_DECLARE_KERNELS(R, X)                                                          \
    /* Y[i, :] = b */                                                                      \
    int ann_bias_fill_##X(size_t rows, size_t cols, const R *b, R *Y);                     \
    /* gb += D.sum(axis=0) */                                                              \
    int ann_bias_grad_##X(size_t rows, size_t cols, const R *D, R *gb);                    \
    /* y = f(y) in place */                                                                \
    int ann_act_forward_##X(int kind, R alpha, size_t n, R *y);                            \
    /* delta *= f'(z), with f'(z) written in terms of the output y = f(z) */               \
    int ann_act_backward_##X(int kind, R alpha, size_t n, const R *y, R *delta);           \
    /* Z = output transform of the loss (softmax, sigmoid or identity) in place */         \
    int ann_loss_output_##X(int kind, size_t rows, size_t cols, R *Z);                     \
    /* Z -> outputs in place; *loss_sum += loss; delta = outputs - targets.                \
     * Targets are class indices (labels) or a dense (rows, cols) matrix T; exactly        \
     * one of the two is non-NULL. delta may be NULL (loss only). */                       \
    int ann_loss_##X(int kind, size_t rows, size_t cols, R *Z, const int64_t *labels,      \
                     const R *T, R *delta, double *loss_sum);                              \
    /* 1 when every x[i] is finite; else 0 and *first_bad = the first offending index */   \
    int ann_all_finite_##X(size_t n, const R *x, size_t *first_bad);

ANN_DECLARE_KERNELS(float, s)
ANN_DECLARE_KERNELS(double, d)

/* Set flush-to-zero and denormals-are-zero for the calling thread; returns the previous
 * floating-point control state, to be given back to ann_fpu_leave. No-op off x86/arm64. */
unsigned long ann_fpu_enter(void);
void ann_fpu_leave(unsigned long saved);

#endif
