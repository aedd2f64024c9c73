/* Vector-width clones of the element-wise loops, shared by every csrc file that has them. */
#ifndef ANN_VECTOR_H
#define ANN_VECTOR_H

/* Loops marked ANN_VECTOR_CLONES are compiled three times, for AVX-512 (x86-64-v4), AVX2 (v3) and baseline
 * x86-64, and the loader picks the widest one the CPU runs (GCC function multiversioning):
 * the build stays portable and the sigmoid of a large layer runs up to 4x wider than SSE2.
 * FMA contraction is off (-std=c99), so every version computes bitwise the same results. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 \
    && !defined(ANN_NO_VECTOR_CLONES)
#define ANN_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ANN_VECTOR_CLONES
#endif

#endif
