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

/* The native activations, one row each: X(ENUM, "name", takes_alpha, needs_input).
 * takes_alpha: the topology may give the activation a parameter (alpha, default 0.01).
 * needs_input: its derivative is not a function of its output, so the engine keeps the
 * pre-activation for the backward pass. Adding an activation is one row here and its two
 * cases in ann_kernels_impl.h. */
#define ANN_ACTIVATIONS(X)                        \
    X(ANN_ACT_IDENTITY, "identity", 0, 0)         \
    X(ANN_ACT_SIGMOID, "sigmoid", 0, 0)           \
    X(ANN_ACT_TANH, "tanh", 0, 0)                 \
    X(ANN_ACT_RELU, "relu", 0, 0)                 \
    X(ANN_ACT_LEAKY_RELU, "leaky_relu", 1, 0)     \
    X(ANN_ACT_SOFTPLUS, "softplus", 0, 0)        \
    X(ANN_ACT_ELU, "elu", 0, 0)                   \
    X(ANN_ACT_GELU, "gelu", 0, 1)

#define ANN_ACT_ENUM(kind, name, takes_alpha, needs_input) kind,
enum ann_activation { ANN_ACTIVATIONS(ANN_ACT_ENUM) ANN_ACT_COUNT };
#undef ANN_ACT_ENUM

typedef struct ann_activation_info {
    const char *name;
    int takes_alpha;
    int needs_input;
} ann_activation_info;

/* Row `kind` of the table, or NULL outside [0, ANN_ACT_COUNT). */
const ann_activation_info *ann_activation(int kind);

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
    /* delta *= f'(z), from the output y = f(z) and, for activations that need it, the     \
     * pre-activation z (else z may be NULL) */                                            \
    int ann_act_backward_##X(int kind, R alpha, size_t n, const R *z, const R *y,          \
                             R *delta);                                                    \
    /* Z = output transform of the loss (softmax, sigmoid or identity) in place */         \
    int ann_loss_output_##X(int kind, size_t rows, size_t cols, R *Z);                     \
    /* Z -> outputs in place; *loss_sum += loss; delta = outputs - targets.                \
     * Targets are class indices (labels) or a dense (rows, cols) matrix T; exactly        \
     * one of the two is non-NULL. W: per-row weights (rows,) multiplying each row's       \
     * loss and delta, or NULL for weight 1. delta may be NULL (loss only). */             \
    int ann_loss_##X(int kind, size_t rows, size_t cols, R *Z, const int64_t *labels,      \
                     const R *T, const R *W, R *delta, double *loss_sum);                  \
    /* 1 when every x[i] is finite; else 0 and *first_bad = the first offending index */   \
    int ann_all_finite_##X(size_t n, const R *x, size_t *first_bad);                       \
    /* Inverted dropout of rows row0 .. row0 + rows - 1 (see the stream below): Y = X * m,  \
     * m = 0 for a dropped unit, 1 / (1 - rate) for a kept one; rate in [0, 1).           \
     * M (rows, cols) receives 1 for a kept unit, 0 for a dropped one (NULL: not kept). */\
    int ann_dropout_forward_##X(uint64_t key, uint64_t row0, size_t rows, size_t cols,     \
                                double rate, const R *X_, R *Y, uint8_t *M);               \
    /* d_in = d_out * m, m from the forward pass's M */                                   \
    int ann_dropout_backward_##X(size_t n, double rate, const uint8_t *M, const R *d_out,  \
                                 R *d_in);

/* Dropout's random numbers: row r (of a call's rows) has the 32-bit seed
 * ann_dropout_row_seed(key, r) (ann_random_u64(key, r), its halves xor-ed); unit j of the row
 * draws 32 bits from the seed and j (ann_dropout_bits in ann_kernels.c) and is kept when
 * they are >= ann_dropout_threshold(rate) = floor(rate * 2^32), so with probability
 * 1 - rate (to 2^-32). The numbers of a row do not depend on the block or thread that
 * computes it. */
uint32_t ann_dropout_threshold(double rate);
uint32_t ann_dropout_row_seed(uint64_t key, uint64_t row);

ANN_DECLARE_KERNELS(float, s)
ANN_DECLARE_KERNELS(double, d)

/* Set flush-to-zero and denormals-are-zero for the calling thread; returns the previous
 * floating-point control state, to be given back to ann_fpu_leave. No-op off x86/arm64. */
unsigned long ann_fpu_enter(void);
void ann_fpu_leave(unsigned long saved);

#endif
