/* Type-generic body of the fused optimizer step. Included by ann_optim.c with R (float or
 * double), X (s or d) and SQRT defined. */
#ifndef ANN_CAT
#define ANN_CAT2(a, b) a##_##b
#define ANN_CAT(a, b) ANN_CAT2(a, b)
#endif
#define FN(name) ANN_CAT(name, X)

/* Weights are updated a chunk at a time: the chunk's sum of squares reads it into the L1
 * cache, and the update loop, which then has no floating-point reduction, vectorises. */
#ifndef ANN_STEP_CHUNK
#define ANN_STEP_CHUNK 2048
#endif

/* sum(w^2) in double, in 16 running sums (one per lane of the widest vector) so that the
 * loop vectorises without reassociating anything the compiler is not told to. */
static inline double FN(step_squares)(size_t n, const R *restrict w)
{
    double acc[16] = {0}, total = 0;
    size_t i, j, whole = n - n % 16;
    for (i = 0; i < whole; i += 16)
        for (j = 0; j < 16; j++)
            acc[j] += (double)w[i + j] * (double)w[i + j];
    for (i = whole; i < n; i++)
        acc[i - whole] += (double)w[i] * (double)w[i];
    for (j = 0; j < 16; j++)
        total += acc[j];
    return total;
}

ANN_VECTOR_CLONES int FN(ann_step)(const ann_step *s, R decay, size_t n, R *restrict w,
                                   const R *restrict g, R *restrict m, R *restrict v,
                                   double *squares, int *nonfinite)
{
    size_t start, i;
    int bad = 0;
    R gs, rate, b1, c1, b2, c2, ib2, eps;
    if (s == NULL || nonfinite == NULL || s->kind < 0 || s->kind >= ANN_STEP_COUNT)
        return ANN_ERR_ARG;
    if (n > 0 && (w == NULL || g == NULL || (s->kind != ANN_STEP_SGD && m == NULL) ||
                  (s->kind == ANN_STEP_ADAM && v == NULL)))
        return ANN_ERR_ARG;
    gs = (R)s->grad_scale;
    rate = (R)s->rate;
    b1 = (R)s->beta1;
    c1 = (R)(1.0 - s->beta1);
    b2 = (R)s->beta2;
    c2 = (R)(1.0 - s->beta2);
    ib2 = (R)s->inv_bias2;
    eps = (R)s->eps;
    for (start = 0; start < n; start += ANN_STEP_CHUNK) {
        size_t len = n - start < ANN_STEP_CHUNK ? n - start : ANN_STEP_CHUNK;
        R *restrict wc = w + start, *restrict mc = m ? m + start : NULL;
        R *restrict vc = v ? v + start : NULL;
        const R *restrict gc = g + start;
        if (squares != NULL)
            *squares += FN(step_squares)(len, wc);
        switch (s->kind) {
        case ANN_STEP_SGD:
            for (i = 0; i < len; i++) {
                R d = gc[i] * gs + decay * wc[i];
                wc[i] -= rate * d;
                bad |= (wc[i] - wc[i]) != (R)0;
            }
            break;
        case ANN_STEP_MOMENTUM:
        case ANN_STEP_NESTEROV: {
            /* Nesterov steps along the gradient plus the velocity it looks ahead to */
            const int ahead = s->kind == ANN_STEP_NESTEROV;
            for (i = 0; i < len; i++) {
                R d = gc[i] * gs + decay * wc[i];
                mc[i] = b1 * mc[i] + d;
                wc[i] -= rate * (ahead ? d + b1 * mc[i] : mc[i]);
                bad |= (wc[i] - wc[i]) != (R)0;
            }
            break;
        }
        default: /* ANN_STEP_ADAM */
            for (i = 0; i < len; i++) {
                R d = gc[i] * gs + decay * wc[i];
                R mi = b1 * mc[i] + c1 * d;
                R vi = b2 * vc[i] + c2 * (d * d);
                mc[i] = mi;
                vc[i] = vi;
                wc[i] -= rate * mi / (SQRT(vi * ib2) + eps);
                bad |= (wc[i] - wc[i]) != (R)0;
            }
            break;
        }
    }
    *nonfinite |= bad;
    return ANN_OK;
}

#undef FN
