/* bfloat16 GEMMs through oneDNN's matmul primitive, with float32 accumulation.
 *
 * oneDNN is not linked: the Cython side loads libdnnl at run time and fills ann_dnnl_api
 * with the functions below (oneDNN's C API, version 3). Only the types this file needs are
 * declared here, as oneDNN's dnnl.h defines them; handles are opaque pointers.
 *
 * Primitives are made on first use of a (shape, layout) and kept, one set per calling
 * thread (a oneDNN stream and the memory objects that point at the data are not shared
 * between threads), so later calls of the same shape allocate nothing.
 *
 * A B operand that many products read (the weights, over the blocks of a call) can be packed
 * once into oneDNN's own layout for it: the products then skip reordering B themselves, which
 * its AMX kernels otherwise do on every call (oneDNN 3.2, the forward products of 1024 rows of
 * the 784-2500-2000-1500-1000-500 layers, one thread: 9-33% faster).
 */
#ifndef ANN_DNNL_H
#define ANN_DNNL_H

#include <stddef.h>
#include <stdint.h>

#include "ann_status.h"

typedef void *ann_dnnl_handle; /* dnnl_engine_t, dnnl_stream_t, dnnl_primitive_t, ... */
typedef int64_t ann_dnnl_dims[12]; /* dnnl_dims_t */
typedef struct {
    int arg;
    ann_dnnl_handle memory;
} ann_dnnl_arg; /* dnnl_exec_arg_t */

enum {
    ANN_DNNL_SUCCESS = 0,   /* dnnl_success */
    ANN_DNNL_UNDEF = 0,     /* dnnl_data_type_undef */
    ANN_DNNL_BF16 = 2,      /* dnnl_bf16 */
    ANN_DNNL_F32 = 3,       /* dnnl_f32 */
    ANN_DNNL_CPU = 1,       /* dnnl_cpu */
    ANN_DNNL_FORMAT_ANY = 1,      /* dnnl_format_tag_any */
    ANN_DNNL_QUERY_WEIGHTS_MD = 131, /* dnnl_query_weights_md */
    ANN_DNNL_IN_ORDER = 1,  /* dnnl_stream_in_order */
    ANN_DNNL_ARG_SRC = 1,
    ANN_DNNL_ARG_FROM = 1,
    ANN_DNNL_ARG_DST = 17,
    ANN_DNNL_ARG_TO = 17,
    ANN_DNNL_ARG_WEIGHTS = 33,
    ANN_DNNL_ARG_BIAS = 41
};

typedef struct ann_dnnl_api {
    int (*engine_create)(ann_dnnl_handle *engine, int kind, size_t index);
    int (*stream_create)(ann_dnnl_handle *stream, ann_dnnl_handle engine, unsigned flags);
    int (*memory_desc_create_with_strides)(ann_dnnl_handle *md, int ndims,
                                           const ann_dnnl_dims dims, int data_type,
                                           const ann_dnnl_dims strides);
    int (*memory_desc_destroy)(ann_dnnl_handle md);
    int (*primitive_attr_create)(ann_dnnl_handle *attr);
    int (*primitive_attr_destroy)(ann_dnnl_handle attr);
    int (*primitive_attr_set_post_ops)(ann_dnnl_handle attr, ann_dnnl_handle post_ops);
    int (*post_ops_create)(ann_dnnl_handle *post_ops);
    int (*post_ops_destroy)(ann_dnnl_handle post_ops);
    int (*post_ops_append_sum)(ann_dnnl_handle post_ops, float scale, int32_t zero_point,
                               int data_type);
    int (*matmul_primitive_desc_create)(ann_dnnl_handle *pd, ann_dnnl_handle engine,
                                        ann_dnnl_handle src_md, ann_dnnl_handle weights_md,
                                        ann_dnnl_handle bias_md, ann_dnnl_handle dst_md,
                                        ann_dnnl_handle attr);
    int (*primitive_desc_destroy)(ann_dnnl_handle pd);
    int (*primitive_create)(ann_dnnl_handle *primitive, ann_dnnl_handle pd);
    int (*memory_create)(ann_dnnl_handle *memory, ann_dnnl_handle md, ann_dnnl_handle engine,
                         void *handle);
    int (*memory_set_data_handle)(ann_dnnl_handle memory, void *handle);
    int (*primitive_execute)(ann_dnnl_handle primitive, ann_dnnl_handle stream, int nargs,
                             const ann_dnnl_arg *args);
    int (*stream_wait)(ann_dnnl_handle stream);
    int (*memory_desc_create_with_tag)(ann_dnnl_handle *md, int ndims, const ann_dnnl_dims dims,
                                       int data_type, int tag);
    int (*memory_desc_clone)(ann_dnnl_handle *md, ann_dnnl_handle existing);
    size_t (*memory_desc_get_size)(ann_dnnl_handle md);
    ann_dnnl_handle (*primitive_desc_query_md)(ann_dnnl_handle pd, int what, int index);
    int (*reorder_primitive_desc_create)(ann_dnnl_handle *pd, ann_dnnl_handle src_md,
                                         ann_dnnl_handle src_engine, ann_dnnl_handle dst_md,
                                         ann_dnnl_handle dst_engine, ann_dnnl_handle attr);
} ann_dnnl_api;

/* Use these functions from now on (NULL: none; every GEMM then fails with ANN_ERR_ARG).
 * Creates the CPU engine; returns ANN_OK or ANN_ERR_BACKEND. Call before any GEMM. */
int ann_dnnl_install(const ann_dnnl_api *api);

/* The calling thread's GEMMs run on `threads` OpenMP threads from now on (the caller sets
 * OpenMP's count too): primitives are made and kept per count. */
void ann_dnnl_set_threads(int threads);

/* C (m, n), float32, row-major with row stride ldc:
 *     C = op(A) @ op(B) + bias   (accumulate = 0; bias (n,) float32, or NULL)
 *     C += op(A) @ op(B)         (accumulate = 1; bias must be NULL)
 * A and B are bfloat16, row-major: op(A) is A (m, k) with row stride lda, or when trans_a
 * A.T with A stored (k, m); likewise op(B) is B (k, n) or, when trans_b, B.T with B stored
 * (n, k). The products accumulate in float32. packed: op(B) as ann_dnnl_pack_b wrote it
 * (same trans_b, n, k, ldb, bias or not, thread count), read instead of B where oneDNN takes
 * it for this m; or NULL. */
int ann_dnnl_gemm_bf16(int trans_a, int trans_b, int m, int n, int k, const uint16_t *A,
                       int lda, const uint16_t *B, int ldb, int accumulate, const float *bias,
                       float *C, int ldc, const void *packed);

/* Bytes of op(B) (as in ann_dnnl_gemm_bf16, not accumulating, with a bias or not) in the
 * layout oneDNN's products take it in on this thread's thread count; 0 where there is none. */
size_t ann_dnnl_packed_size(int trans_b, int n, int k, int ldb, int has_bias);

/* Write op(B) into packed (capacity bytes, 64-byte aligned) in that layout. ANN_OK, or
 * ANN_ERR_ARG where there is no such layout or it needs more than capacity bytes (then pass
 * packed = NULL to the products). */
int ann_dnnl_pack_b(int trans_b, int n, int k, const uint16_t *B, int ldb, int has_bias,
                    void *packed, size_t capacity);

#endif
