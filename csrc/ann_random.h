/* Counter-based random numbers for stochastic stages (dropout and the like).
 *
 * Number `counter` of stream `key` is a hash of the pair (splitmix64's finaliser), so an
 * engine thread computes any part of a stream without state or locks: a stage draws for
 * row r and unit j at counter r * width + j, and its result does not depend on how a call's
 * rows are split among threads.
 */
#ifndef ANN_RANDOM_H
#define ANN_RANDOM_H

#include <stdint.h>

/* 64 random bits: number `counter` of stream `key`. */
uint64_t ann_random_u64(uint64_t key, uint64_t counter);

/* The stream of one stochastic stage in one call: keyed by the training seed, the
 * iteration (step or round), the block of rows and the stage's position in the network. */
uint64_t ann_random_key(uint64_t seed, uint64_t iteration, uint64_t block, uint64_t stage);

/* A double uniform in [0, 1) (53 random bits) from the same stream. */
double ann_random_unit(uint64_t key, uint64_t counter);

#endif
