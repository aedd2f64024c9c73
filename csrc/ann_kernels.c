/* Element-wise kernels. The type-generic bodies live in ann_kernels_impl.h and are
 * compiled twice, once for float and once for double. */
#include <math.h>
#include <float.h>
#include <string.h>
#include <stdint.h>

#include "ann_kernels.h"
#include "ann_random.h"
#include "ann_vector.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

/* The range reduction of both exps: x clamped to [lo, hi], n = round(x / ln 2) by adding and
 * subtracting 1.5 * 2^(mantissa bits) (round to nearest, no libm call), and r = x - n ln 2
 * with ln 2 split in a short high part and a low part (Cody-Waite), so that r is exact. */
#define ANN_EXP_REDUCE(x, hi, lo, log2e, shifter, ln2_hi, ln2_lo, n, r) \
    do {                                                                 \
        x = x > (hi) ? (hi) : x;                                         \
        x = x < (lo) ? (lo) : x;                                         \
        n = (x * (log2e) + (shifter)) - (shifter);                       \
        r = x - n * (ln2_hi) - n * (ln2_lo);                             \
    } while (0)

/* exp(x) for float: Cody-Waite range reduction and the Cephes polynomial (about 1 ulp).
 * Written without calls or branches so that the compiler vectorises the loops that use it;
 * NaN propagates, and inputs are clamped to the range where the result is finite. The low
 * clamp lies past the smallest normal result, so exp of a very negative number is 0 (flushed)
 * rather than a floor near FLT_MIN; it stops where the exponent field is still >= 0. */
static inline float ann_exp_s(float x)
{
    float n, r, p, scale;
    int32_t bits;
    ANN_EXP_REDUCE(x, 88.3762626647949f, -88.0f, 1.44269504088896341f, 12582912.0f,
                   0.693359375f, -2.12194440e-4f, n, r);
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    bits = ((int32_t)n + 127) << 23;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* exp(x) for double: the same reduction, Taylor series to degree 13 on |r| <= ln(2)/2
 * (truncation below 2e-16 relative), and the same clamps (below about -708.4 the result is
 * 0, not a floor near DBL_MIN). */
static inline double ann_exp_d(double x)
{
    double n, r, p, scale;
    int64_t bits;
    ANN_EXP_REDUCE(x, 709.0, -709.0, 1.4426950408889634074, 6755399441055744.0,
                   6.93145751953125e-1, 1.42860682030941723212e-6, n, r);
    p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    bits = (int64_t)((int32_t)n + 1023) << 52; /* via int32: vectorises on SSE2 */
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* splitmix64's finaliser of key and counter: the body of ann_random_u64, inline so that the
 * dropout loops vectorise. */
static inline uint64_t ann_mix64(uint64_t key, uint64_t counter)
{
    uint64_t z = key * 0xD1B54A32D192ED03ull + (counter + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint32_t ann_dropout_threshold(double rate)
{
    return (uint32_t)(rate * 4294967296.0);
}

uint32_t ann_dropout_row_seed(uint64_t key, uint64_t row)
{
    uint64_t z = ann_mix64(key, row);
    return (uint32_t)(z ^ (z >> 32));
}

/* The 32 random bits of unit j: a Weyl step from the row's seed, then a 32-bit finaliser
 * (two multiplications; "lowbias32" of Wellons' hash-prospector). */
static inline uint32_t ann_dropout_bits(uint32_t seed, uint32_t j)
{
    uint32_t v = seed + j * 0x9E3779B9u;
    v ^= v >> 16;
    v *= 0x7FEB352Du;
    v ^= v >> 15;
    v *= 0x846CA68Bu;
    return v ^ (v >> 16);
}

#define R float
#define X s
#define EXP ann_exp_s
#define LOG1P log1pf
#define EXPM1 expm1f
#define LOG logf
#define TINY FLT_MIN
#include "ann_kernels_impl.h"
#undef R
#undef X
#undef EXP
#undef LOG1P
#undef EXPM1
#undef LOG
#undef TINY

#define R double
#define X d
#define EXP ann_exp_d
#define LOG1P log1p
#define EXPM1 expm1
#define LOG log
#define TINY DBL_MIN
#include "ann_kernels_impl.h"

#define ANN_ACT_ROW(kind, name, takes_alpha, needs_input) {name, takes_alpha, needs_input},
static const ann_activation_info ann_activation_table[ANN_ACT_COUNT] = {
    ANN_ACTIVATIONS(ANN_ACT_ROW)
};
#undef ANN_ACT_ROW

const ann_activation_info *ann_activation(int kind)
{
    return kind >= 0 && kind < ANN_ACT_COUNT ? &ann_activation_table[kind] : NULL;
}

uint64_t ann_random_u64(uint64_t key, uint64_t counter)
{
    return ann_mix64(key, counter);
}

uint64_t ann_random_key(uint64_t seed, uint64_t iteration, uint64_t block, uint64_t stage)
{
    return ann_mix64(ann_mix64(ann_mix64(seed, iteration), block), stage);
}

double ann_random_unit(uint64_t key, uint64_t counter)
{
    return (double)(ann_random_u64(key, counter) >> 11) * (1.0 / 9007199254740992.0);
}

unsigned long ann_fpu_enter(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    return saved;
#elif defined(__aarch64__)
    unsigned long saved;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved | (1ul << 24)));
    return saved;
#else
    return 0;
#endif
}

void ann_fpu_leave(unsigned long saved)
{
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr((unsigned int)saved);
#elif defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved));
#else
    (void)saved;
#endif
}
