/* The arena: one aligned block per workspace, bump allocation, reset between uses.
 *
 * The only allocation happens in ann_arena_init; ann_arena_alloc hands out
 * 64-byte aligned pieces of that block and never calls malloc.
 */
#ifndef ANN_ARENA_H
#define ANN_ARENA_H

#include <stddef.h>

#define ANN_ARENA_ALIGN 64

typedef struct ann_arena_t {
    unsigned char *base;
    size_t capacity;
    size_t used;
} ann_arena_t;

/* Bytes that a piece of `bytes` bytes occupies once aligned. */
size_t ann_arena_aligned_size(size_t bytes);

/* Allocate the block; on failure the arena is left empty and ANN_ERR_NOMEM returned. */
int ann_arena_init(ann_arena_t *arena, size_t capacity);

/* Take `bytes` bytes (aligned) from the block; ANN_ERR_NOMEM when it does not fit. */
int ann_arena_alloc(ann_arena_t *arena, size_t bytes, void **out);

/* Forget every piece handed out; the block stays allocated. */
void ann_arena_reset(ann_arena_t *arena);

/* Release the block. Safe to call twice. */
void ann_arena_free(ann_arena_t *arena);

#endif
