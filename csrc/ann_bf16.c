/* bfloat16 conversions (see ann_bf16.h), written as integer operations on the bits so that
 * the loops vectorise in every clone of ANN_VECTOR_CLONES (the AVX-512 clone runs 16 lanes)
 * and give the same bits on every CPU. */
#include <string.h>

#include "ann_bf16.h"
#include "ann_vector.h"

/* Round to nearest even: add 0x7FFF plus the lowest kept bit, then drop the low 16 bits. A
 * carry out of the mantissa moves into the exponent, which is the correctly rounded result
 * (up to infinity). NaN is kept a NaN by setting the quiet bit instead: rounding its bits
 * could carry the payload into the exponent and give infinity. */
static inline uint16_t ann_bf16_round(float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    uint32_t quiet = (bits >> 16) | 0x40u;
    int is_nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
    return (uint16_t)(is_nan ? quiet : rounded);
}

ANN_VECTOR_CLONES int ann_f32_to_bf16(size_t n, const float *src, uint16_t *dst)
{
    size_t i;
    if (n > 0 && (src == NULL || dst == NULL))
        return ANN_ERR_ARG;
    for (i = 0; i < n; i++)
        dst[i] = ann_bf16_round(src[i]);
    return ANN_OK;
}

ANN_VECTOR_CLONES int ann_bf16_to_f32(size_t n, const uint16_t *src, float *dst)
{
    size_t i;
    if (n > 0 && (src == NULL || dst == NULL))
        return ANN_ERR_ARG;
    for (i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &bits, sizeof bits);
    }
    return ANN_OK;
}

int ann_f32_to_bf16_2d(size_t rows, size_t cols, const float *src, size_t ld_src,
                       uint16_t *dst, size_t ld_dst)
{
    size_t r;
    int status = ANN_OK;
    if (cols > ld_src || cols > ld_dst)
        return ANN_ERR_ARG;
    for (r = 0; r < rows && status == ANN_OK; r++)
        status = ann_f32_to_bf16(cols, src + r * ld_src, dst + r * ld_dst);
    return status;
}
