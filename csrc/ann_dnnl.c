/* oneDNN matmul for bfloat16 GEMMs (see ann_dnnl.h). */
#include <stdlib.h>
#include <string.h>

#include "ann_dnnl.h"

/* What identifies a primitive: everything its descriptors are made from, and the thread
 * count it was made for (oneDNN splits the work for the count set at creation). */
typedef struct {
    int trans_a, trans_b, m, n, k, lda, ldb, ldc, accumulate, has_bias, threads;
    int packed; /* B in oneDNN's layout (ann_dnnl_pack_b) */
} gemm_key;

typedef struct {
    gemm_key key;
    ann_dnnl_handle primitive; /* NULL: oneDNN takes no packed B for this shape */
    ann_dnnl_handle src, weights, dst, bias; /* memory objects; data set at each call */
} gemm_entry;

/* op(B) of the products of a (trans_b, n, k, ldb, bias or not) at a thread count: the
 * layout oneDNN's matmul chose for it, and the reorder that writes B in it. */
typedef struct {
    int trans_b, n, k, ldb, has_bias, threads;
} pack_key;

typedef struct {
    pack_key key;
    ann_dnnl_handle md; /* NULL: none (the products read B as stored) */
    size_t size;
    ann_dnnl_handle reorder, from, to; /* memory objects; data set at each call */
} pack_entry;

/* One calling thread's stream and primitives. Engine threads live as long as the process,
 * so this is made once per thread and kept. */
typedef struct {
    ann_dnnl_handle stream;
    gemm_entry *entries;
    size_t count, capacity;
    pack_entry *packs;
    size_t pack_count, pack_capacity;
} thread_cache;

/* The packed layout is chosen for products of this many rows (measured: the same for 1 to
 * 1024 rows); a product of other rows that oneDNN runs with another layout reads B as stored. */
#define PACK_ROWS 1024

static ann_dnnl_api api;
static int installed = 0;
static ann_dnnl_handle engine = NULL;
static __thread thread_cache *cache = NULL;
static __thread int thread_count = 1;

void ann_dnnl_set_threads(int threads)
{
    thread_count = threads;
}

int ann_dnnl_install(const ann_dnnl_api *functions)
{
    installed = 0;
    if (functions == NULL)
        return ANN_OK;
    api = *functions;
    if (engine == NULL && api.engine_create(&engine, ANN_DNNL_CPU, 0) != ANN_DNNL_SUCCESS)
        return ANN_ERR_BACKEND;
    installed = 1;
    return ANN_OK;
}

/* The descriptor of a (rows, cols) matrix stored row-major with row stride ld, or of its
 * transpose when trans (then it is stored (cols, rows)). */
static int matrix_desc(ann_dnnl_handle *md, int rows, int cols, int ld, int trans, int type)
{
    ann_dnnl_dims dims = {rows, cols}, strides = {ld, 1};
    if (trans) {
        strides[0] = 1;
        strides[1] = ld;
    }
    return api.memory_desc_create_with_strides(md, 2, dims, type, strides);
}

/* packed_md: the layout of a packed B (key->packed), else NULL. */
static int make_entry(const gemm_key *key, ann_dnnl_handle packed_md, gemm_entry *e)
{
    ann_dnnl_handle a = NULL, b = NULL, c = NULL, bias = NULL, attr = NULL, ops = NULL;
    ann_dnnl_handle pd = NULL;
    int ok = 1;
    memset(e, 0, sizeof *e);
    e->key = *key;
    ok = ok && matrix_desc(&a, key->m, key->k, key->lda, key->trans_a, ANN_DNNL_BF16) == 0;
    if (packed_md != NULL)
        ok = ok && api.memory_desc_clone(&b, packed_md) == 0;
    else
        ok = ok && matrix_desc(&b, key->k, key->n, key->ldb, key->trans_b, ANN_DNNL_BF16) == 0;
    ok = ok && matrix_desc(&c, key->m, key->n, key->ldc, 0, ANN_DNNL_F32) == 0;
    if (ok && key->has_bias)
        ok = matrix_desc(&bias, 1, key->n, key->n, 0, ANN_DNNL_F32) == 0;
    ok = ok && api.primitive_attr_create(&attr) == 0;
    if (ok && key->accumulate) /* C += : the sum post-op reads C before writing it */
        ok = api.post_ops_create(&ops) == 0 && api.post_ops_append_sum(ops, 1.0f, 0,
                                                                       ANN_DNNL_UNDEF) == 0
             && api.primitive_attr_set_post_ops(attr, ops) == 0;
    ok = ok && api.matmul_primitive_desc_create(&pd, engine, a, b, bias, c, attr) == 0;
    ok = ok && api.primitive_create(&e->primitive, pd) == 0;
    ok = ok && api.memory_create(&e->src, a, engine, NULL) == 0;
    ok = ok && api.memory_create(&e->weights, b, engine, NULL) == 0;
    ok = ok && api.memory_create(&e->dst, c, engine, NULL) == 0;
    if (ok && key->has_bias)
        ok = api.memory_create(&e->bias, bias, engine, NULL) == 0;
    /* On failure the few objects made stay allocated: it happens once, then the call
     * reports ANN_ERR_BACKEND and the backend is not used again for that shape (a packed
     * B's entry is kept without its primitive: that shape reads B as stored). */
    if (!ok)
        e->primitive = NULL;
    if (pd != NULL)
        api.primitive_desc_destroy(pd);
    if (ops != NULL)
        api.post_ops_destroy(ops);
    if (attr != NULL)
        api.primitive_attr_destroy(attr);
    ann_dnnl_handle descs[] = {a, b, c, bias};
    for (size_t i = 0; i < sizeof descs / sizeof *descs; i++)
        if (descs[i] != NULL)
            api.memory_desc_destroy(descs[i]);
    return ok ? ANN_OK : ANN_ERR_BACKEND;
}

/* Room for one more item in a growing array of a thread's cache; 0 on failure. */
static int reserve(void **items, size_t *capacity, size_t count, size_t item_size)
{
    void *grown;
    size_t more;
    if (count < *capacity)
        return 1;
    more = *capacity ? 2 * *capacity : 16;
    grown = realloc(*items, more * item_size);
    if (grown == NULL)
        return 0;
    *items = grown;
    *capacity = more;
    return 1;
}

/* The calling thread's cache, made on its first call; NULL on failure. */
static thread_cache *this_thread(void)
{
    if (cache == NULL) {
        cache = calloc(1, sizeof *cache);
        if (cache == NULL)
            return NULL;
        if (api.stream_create(&cache->stream, engine, ANN_DNNL_IN_ORDER) != 0) {
            free(cache);
            cache = NULL;
            return NULL;
        }
    }
    return cache;
}

/* The (trans_b, n, k, ldb, bias) layout of the products on this thread's thread count. */
static int make_pack(const pack_key *key, pack_entry *p)
{
    ann_dnnl_handle a = NULL, b = NULL, any = NULL, c = NULL, bias = NULL, pd = NULL, rpd = NULL;
    ann_dnnl_handle chosen;
    ann_dnnl_dims dims = {key->k, key->n};
    int ok = 1;
    memset(p, 0, sizeof *p);
    p->key = *key;
    ok = ok && matrix_desc(&a, PACK_ROWS, key->k, key->k, 0, ANN_DNNL_BF16) == 0;
    ok = ok && matrix_desc(&b, key->k, key->n, key->ldb, key->trans_b, ANN_DNNL_BF16) == 0;
    ok = ok && api.memory_desc_create_with_tag(&any, 2, dims, ANN_DNNL_BF16,
                                               ANN_DNNL_FORMAT_ANY) == 0;
    ok = ok && matrix_desc(&c, PACK_ROWS, key->n, key->n, 0, ANN_DNNL_F32) == 0;
    if (ok && key->has_bias)
        ok = matrix_desc(&bias, 1, key->n, key->n, 0, ANN_DNNL_F32) == 0;
    ok = ok && api.matmul_primitive_desc_create(&pd, engine, a, any, bias, c, NULL) == 0;
    chosen = ok ? api.primitive_desc_query_md(pd, ANN_DNNL_QUERY_WEIGHTS_MD, 0) : NULL;
    ok = ok && chosen != NULL && api.memory_desc_clone(&p->md, chosen) == 0;
    ok = ok && api.reorder_primitive_desc_create(&rpd, b, engine, p->md, engine, NULL) == 0;
    ok = ok && api.primitive_create(&p->reorder, rpd) == 0;
    ok = ok && api.memory_create(&p->from, b, engine, NULL) == 0;
    ok = ok && api.memory_create(&p->to, p->md, engine, NULL) == 0;
    if (ok)
        p->size = api.memory_desc_get_size(p->md);
    else /* kept, so the shape is not tried again: its products read B as stored */
        p->md = NULL;
    if (rpd != NULL)
        api.primitive_desc_destroy(rpd);
    if (pd != NULL)
        api.primitive_desc_destroy(pd);
    ann_dnnl_handle descs[] = {a, b, any, c, bias};
    for (size_t i = 0; i < sizeof descs / sizeof *descs; i++)
        if (descs[i] != NULL)
            api.memory_desc_destroy(descs[i]);
    return ok ? ANN_OK : ANN_ERR_BACKEND;
}

static pack_entry *find_pack(int trans_b, int n, int k, int ldb, int has_bias)
{
    pack_key key;
    size_t i;
    thread_cache *t = this_thread();
    if (t == NULL)
        return NULL;
    memset(&key, 0, sizeof key); /* compared with memcmp */
    key.trans_b = trans_b != 0;
    key.n = n;
    key.k = k;
    key.ldb = ldb;
    key.has_bias = has_bias != 0;
    key.threads = thread_count;
    for (i = 0; i < t->pack_count; i++)
        if (memcmp(&t->packs[i].key, &key, sizeof key) == 0)
            return &t->packs[i];
    if (!reserve((void **)&t->packs, &t->pack_capacity, t->pack_count, sizeof *t->packs))
        return NULL;
    make_pack(&key, &t->packs[t->pack_count]);
    return &t->packs[t->pack_count++];
}

static gemm_entry *find_entry(const gemm_key *key)
{
    size_t i;
    pack_entry *p = NULL;
    thread_cache *t = this_thread();
    if (t == NULL)
        return NULL;
    for (i = 0; i < t->count; i++)
        if (memcmp(&t->entries[i].key, key, sizeof *key) == 0)
            return &t->entries[i];
    if (key->packed) {
        p = find_pack(key->trans_b, key->n, key->k, key->ldb, key->has_bias);
        if (p == NULL || p->md == NULL)
            return NULL;
    }
    if (!reserve((void **)&t->entries, &t->capacity, t->count, sizeof *t->entries))
        return NULL;
    /* a packed B that oneDNN does not take for this shape is remembered as such */
    if (make_entry(key, p != NULL ? p->md : NULL, &t->entries[t->count]) != ANN_OK
        && !key->packed)
        return NULL;
    return &t->entries[t->count++];
}

/* Run a primitive on the calling thread's stream and wait for it. */
static int execute(ann_dnnl_handle primitive, int nargs, const ann_dnnl_arg *args)
{
    if (api.primitive_execute(primitive, cache->stream, nargs, args) != 0
        || api.stream_wait(cache->stream) != 0)
        return ANN_ERR_BACKEND;
    return ANN_OK;
}

size_t ann_dnnl_packed_size(int trans_b, int n, int k, int ldb, int has_bias)
{
    pack_entry *p;
    if (!installed || n <= 0 || k <= 0)
        return 0;
    p = find_pack(trans_b, n, k, ldb, has_bias);
    return p != NULL && p->md != NULL ? p->size : 0;
}

int ann_dnnl_pack_b(int trans_b, int n, int k, const uint16_t *B, int ldb, int has_bias,
                    void *packed, size_t capacity)
{
    pack_entry *p;
    if (!installed || n <= 0 || k <= 0 || packed == NULL)
        return ANN_ERR_ARG;
    p = find_pack(trans_b, n, k, ldb, has_bias);
    if (p == NULL || p->md == NULL || p->size > capacity)
        return ANN_ERR_ARG;
    /* oneDNN takes non-const handles; the reorder only reads B. */
    if (api.memory_set_data_handle(p->from, (void *)B) != 0
        || api.memory_set_data_handle(p->to, packed) != 0)
        return ANN_ERR_BACKEND;
    ann_dnnl_arg args[2] = {{ANN_DNNL_ARG_FROM, p->from}, {ANN_DNNL_ARG_TO, p->to}};
    return execute(p->reorder, 2, args);
}

int ann_dnnl_gemm_bf16(int trans_a, int trans_b, int m, int n, int k, const uint16_t *A,
                       int lda, const uint16_t *B, int ldb, int accumulate, const float *bias,
                       float *C, int ldc, const void *packed)
{
    gemm_key key;
    gemm_entry *e = NULL;
    ann_dnnl_arg args[4];
    int nargs = 3;
    if (!installed || m <= 0 || n <= 0 || k <= 0 || (accumulate && bias != NULL))
        return ANN_ERR_ARG;
    memset(&key, 0, sizeof key); /* compared with memcmp */
    key.trans_a = trans_a != 0;
    key.trans_b = trans_b != 0;
    key.m = m;
    key.n = n;
    key.k = k;
    key.lda = lda;
    key.ldb = ldb;
    key.ldc = ldc;
    key.accumulate = accumulate != 0;
    key.has_bias = bias != NULL;
    key.threads = thread_count;
    if (packed != NULL) {
        key.packed = 1;
        e = find_entry(&key);
        if (e != NULL && e->primitive == NULL) /* not for this shape: B as stored */
            e = NULL;
        key.packed = 0;
    }
    if (e == NULL) {
        packed = NULL;
        e = find_entry(&key);
    }
    if (e == NULL)
        return ANN_ERR_BACKEND;
    /* oneDNN takes non-const handles; it only reads A, B and the bias. */
    if (api.memory_set_data_handle(e->src, (void *)A) != 0
        || api.memory_set_data_handle(e->weights,
                                      (void *)(packed != NULL ? packed : (const void *)B)) != 0
        || api.memory_set_data_handle(e->dst, C) != 0)
        return ANN_ERR_BACKEND;
    args[0].arg = ANN_DNNL_ARG_SRC;
    args[0].memory = e->src;
    args[1].arg = ANN_DNNL_ARG_WEIGHTS;
    args[1].memory = e->weights;
    args[2].arg = ANN_DNNL_ARG_DST;
    args[2].memory = e->dst;
    if (bias != NULL) {
        if (api.memory_set_data_handle(e->bias, (void *)bias) != 0)
            return ANN_ERR_BACKEND;
        args[3].arg = ANN_DNNL_ARG_BIAS;
        args[3].memory = e->bias;
        nargs = 4;
    }
    return execute(e->primitive, nargs, args);
}
