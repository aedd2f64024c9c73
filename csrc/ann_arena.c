#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#include "ann_arena.h"
#include "ann_status.h"

const char *ann_strerror(int status)
{
    switch (status) {
    case ANN_OK: return "ok";
    case ANN_ERR_NOMEM: return "out of memory";
    case ANN_ERR_ARG: return "invalid argument";
    case ANN_ERR_LABEL: return "class index out of range";
    case ANN_ERR_BACKEND: return "the GEMM backend (oneDNN) failed";
    default: return "unknown status";
    }
}

size_t ann_arena_aligned_size(size_t bytes)
{
    return (bytes + ANN_ARENA_ALIGN - 1) / ANN_ARENA_ALIGN * ANN_ARENA_ALIGN;
}

int ann_arena_init(ann_arena_t *arena, size_t capacity)
{
    void *block = NULL;
    if (arena == NULL)
        return ANN_ERR_ARG;
    arena->base = NULL;
    arena->capacity = 0;
    arena->used = 0;
    capacity = ann_arena_aligned_size(capacity > 0 ? capacity : 1);
    if (posix_memalign(&block, ANN_ARENA_ALIGN, capacity) != 0)
        return ANN_ERR_NOMEM;
    arena->base = block;
    /* Touch every page now so that the first training step does not pay for page faults. */
    memset(arena->base, 0, capacity);
    arena->capacity = capacity;
    return ANN_OK;
}

int ann_arena_alloc(ann_arena_t *arena, size_t bytes, void **out)
{
    size_t size = ann_arena_aligned_size(bytes);
    if (arena == NULL || out == NULL || arena->base == NULL)
        return ANN_ERR_ARG;
    if (size > arena->capacity - arena->used)
        return ANN_ERR_NOMEM;
    *out = arena->base + arena->used;
    arena->used += size;
    return ANN_OK;
}

void ann_arena_reset(ann_arena_t *arena)
{
    if (arena != NULL)
        arena->used = 0;
}

void ann_arena_free(ann_arena_t *arena)
{
    if (arena == NULL)
        return;
    free(arena->base);
    arena->base = NULL;
    arena->capacity = 0;
    arena->used = 0;
}
