/* bfloat16 <-> float conversions for the mixed-precision GEMMs.
 *
 * A bfloat16 is the upper half of a float's bits (8 exponent bits, 7 mantissa bits), stored
 * as uint16_t. float -> bfloat16 rounds to nearest, ties to even; NaN stays NaN (quiet);
 * infinities and overflow past the largest bfloat16 give infinity, as IEEE rounding does.
 * bfloat16 -> float is exact. Neither allocates; both return an ANN_* status.
 */
#ifndef ANN_BF16_H
#define ANN_BF16_H

#include <stddef.h>
#include <stdint.h>

#include "ann_status.h"

/* dst[i] = bf16(src[i]) for i < n */
int ann_f32_to_bf16(size_t n, const float *src, uint16_t *dst);
/* dst[i] = float(src[i]) for i < n */
int ann_bf16_to_f32(size_t n, const uint16_t *src, float *dst);
/* The (rows, cols) matrix src with row stride ld_src, converted into dst with row stride
 * ld_dst (a block of rows, or a weight matrix inside the flat vector). */
int ann_f32_to_bf16_2d(size_t rows, size_t cols, const float *src, size_t ld_src,
                       uint16_t *dst, size_t ld_dst);

#endif
