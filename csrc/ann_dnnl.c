/* oneDNN matmul for bfloat16 GEMMs (see ann_dnnl.h). */
#include <stdlib.h>
#include <string.h>

#include "ann_dnnl.h"

/* What identifies a primitive: everything its descriptors are made from, and the thread
 * count it was made for (oneDNN splits the work for the count set at creation). */
typedef struct {
    int trans_a, trans_b, m, n, k, lda, ldb, ldc, accumulate, has_bias, threads;
} gemm_key;

typedef struct {
    gemm_key key;
    ann_dnnl_handle primitive;
    ann_dnnl_handle src, weights, dst, bias; /* memory objects; data set at each call */
} gemm_entry;

/* One calling thread's stream and primitives. Engine threads live as long as the process,
 * so this is made once per thread and kept. */
typedef struct {
    ann_dnnl_handle stream;
    gemm_entry *entries;
    size_t count, capacity;
} thread_cache;

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

static int make_entry(const gemm_key *key, gemm_entry *e)
{
    ann_dnnl_handle a = NULL, b = NULL, c = NULL, bias = NULL, attr = NULL, ops = NULL;
    ann_dnnl_handle pd = NULL;
    int ok = 1;
    memset(e, 0, sizeof *e);
    e->key = *key;
    ok = ok && matrix_desc(&a, key->m, key->k, key->lda, key->trans_a, ANN_DNNL_BF16) == 0;
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
     * reports ANN_ERR_BACKEND and the backend is not used again for that shape. */
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

static gemm_entry *find_entry(const gemm_key *key)
{
    size_t i;
    gemm_entry *grown;
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
    for (i = 0; i < cache->count; i++)
        if (memcmp(&cache->entries[i].key, key, sizeof *key) == 0)
            return &cache->entries[i];
    if (cache->count == cache->capacity) {
        size_t capacity = cache->capacity ? 2 * cache->capacity : 16;
        grown = realloc(cache->entries, capacity * sizeof *grown);
        if (grown == NULL)
            return NULL;
        cache->entries = grown;
        cache->capacity = capacity;
    }
    if (make_entry(key, &cache->entries[cache->count]) != ANN_OK)
        return NULL;
    return &cache->entries[cache->count++];
}

int ann_dnnl_gemm_bf16(int trans_a, int trans_b, int m, int n, int k, const uint16_t *A,
                       int lda, const uint16_t *B, int ldb, int accumulate, const float *bias,
                       float *C, int ldc)
{
    gemm_key key;
    gemm_entry *e;
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
    e = find_entry(&key);
    if (e == NULL)
        return ANN_ERR_BACKEND;
    /* oneDNN takes non-const handles; it only reads A, B and the bias. */
    if (api.memory_set_data_handle(e->src, (void *)A) != 0
        || api.memory_set_data_handle(e->weights, (void *)B) != 0
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
    if (api.primitive_execute(e->primitive, cache->stream, nargs, args) != 0
        || api.stream_wait(cache->stream) != 0)
        return ANN_ERR_BACKEND;
    return ANN_OK;
}
