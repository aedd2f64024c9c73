/* Type-generic bodies of the element-wise kernels. Included by ann_kernels.c with
 * R (float or double), X (s or d), EXP, LOG1P, EXPM1, LOG and TINY defined. */
#ifndef ANN_CAT
#define ANN_CAT2(a, b) a##_##b
#define ANN_CAT(a, b) ANN_CAT2(a, b)
#endif
#define FN(name) ANN_CAT(name, X)

/* Magnitudes below the smallest normal number become zero (denormals are slow). */
static inline R FN(flush)(R v)
{
    return (v < TINY && v > -TINY) ? (R)0 : v;
}

static inline R FN(absval)(R v)
{
    return v < 0 ? -v : v;
}

/* 1 / (1 + exp(-v)), computed from exp(-|v|) so that it never overflows. */
static inline R FN(sigmoid)(R v)
{
    R e = EXP(-FN(absval)(v));
    R s = (R)1 / ((R)1 + e);
    return v >= 0 ? s : e * s;
}

/* tanh(v): an odd series near zero (no cancellation), 1 - 2 / (exp(2|v|) + 1) elsewhere. */
static inline R FN(tanh)(R v)
{
    R a = FN(absval)(v), a2 = a * a;
    R series = (R)-929569.0 / (R)638512875.0;
    R far, t;
    series = series * a2 + (R)21844.0 / (R)6081075.0;
    series = series * a2 - (R)1382.0 / (R)155925.0;
    series = series * a2 + (R)62.0 / (R)2835.0;
    series = series * a2 - (R)17.0 / (R)315.0;
    series = series * a2 + (R)2.0 / (R)15.0;
    series = series * a2 - (R)1.0 / (R)3.0;
    series = a + a * a2 * series;
    far = (R)1 - (R)2 / (EXP((R)2 * a) + (R)1);
    t = a < (R)0.0625 ? series : far;
    t = (v != v) ? v : t;
    return v < 0 ? -t : t;
}

/* GELU, tanh approximation: 0.5 z (1 + tanh(u)) = z sigmoid(v), u = sqrt(2/pi) (z + 0.044715
 * z^3), v = 2u. Computed in double for both dtypes: the relative error of exp(v) is |v| times
 * that of v, so v needs double precision. With h = exp(-|v|/2), z sigmoid(v) is z / (1 + h^2)
 * for v >= 0 and (z h) h / (1 + h^2) below: z e^v stays normal where e^v alone would not. */
static inline double FN(gelu_v)(double z)
{
    return 1.5957691216057308 * (z + 0.044715 * (z * z * z));
}

static inline R FN(gelu)(R x)
{
    double z = x, v = FN(gelu_v)(z);
    double h = ann_exp_d(-0.5 * (v < 0 ? -v : v)), e = h * h;
    return (R)(v >= 0 ? z / (1.0 + e) : ((z * h) * h) / (1.0 + e));
}

/* d gelu / dz = s + z s (1 - s) dv/dz with s = sigmoid(v); s (1 - s) = e / (1 + e)^2 with
 * e = exp(-|v|), which is 0 wherever z^2 could overflow. */
static inline R FN(gelu_derivative)(R x)
{
    double z = x, v = FN(gelu_v)(z);
    double e = ann_exp_d(v < 0 ? v : -v), q = 1.0 / (1.0 + e);
    double s = v >= 0 ? q : e * q;
    double dv = 1.5957691216057308 * (1.0 + 3.0 * 0.044715 * (z * z));
    return (R)(s + (e > 0 ? z * (e * q * q) * dv : 0.0));
}

/* log(1 + exp(v)) without overflow. */
static inline R FN(softplus)(R v)
{
    return (v > 0 ? v : (R)0) + LOG1P(EXP(-FN(absval)(v)));
}

int FN(ann_bias_fill)(size_t rows, size_t cols, const R *b, R *Y)
{
    size_t i;
    if (b == NULL || Y == NULL)
        return ANN_ERR_ARG;
    for (i = 0; i < rows; i++)
        memcpy(Y + i * cols, b, cols * sizeof(R));
    return ANN_OK;
}

ANN_VECTOR_CLONES int FN(ann_bias_grad)(size_t rows, size_t cols, const R *D, R *gb)
{
    size_t i, j;
    if (D == NULL || gb == NULL)
        return ANN_ERR_ARG;
    for (i = 0; i < rows; i++) {
        const R *d = D + i * cols;
        for (j = 0; j < cols; j++)
            gb[j] += d[j];
    }
    return ANN_OK;
}

ANN_VECTOR_CLONES int FN(ann_act_forward)(int kind, R alpha, size_t n, R *y)
{
    size_t i;
    if (y == NULL && n > 0)
        return ANN_ERR_ARG;
    switch (kind) {
    case ANN_ACT_IDENTITY:
        break;
    case ANN_ACT_SIGMOID:
        for (i = 0; i < n; i++)
            y[i] = FN(flush)(FN(sigmoid)(y[i]));
        break;
    case ANN_ACT_TANH:
        for (i = 0; i < n; i++)
            y[i] = FN(flush)(FN(tanh)(y[i]));
        break;
    case ANN_ACT_RELU:
        /* NaN < 0 is false, so NaN propagates instead of turning into 0. */
        for (i = 0; i < n; i++)
            y[i] = y[i] < 0 ? (R)0 : y[i];
        break;
    case ANN_ACT_LEAKY_RELU:
        for (i = 0; i < n; i++)
            y[i] = FN(flush)(y[i] < 0 ? alpha * y[i] : y[i]);
        break;
    case ANN_ACT_SOFTPLUS:
        for (i = 0; i < n; i++)
            y[i] = FN(flush)(FN(softplus)(y[i]));
        break;
    case ANN_ACT_ELU: /* y = x for x > 0, exp(x) - 1 otherwise (NaN propagates) */
        for (i = 0; i < n; i++)
            y[i] = FN(flush)(y[i] > 0 ? y[i] : EXPM1(y[i]));
        break;
    case ANN_ACT_GELU:
        for (i = 0; i < n; i++)
            y[i] = FN(flush)(FN(gelu)(y[i]));
        break;
    default:
        return ANN_ERR_ARG;
    }
    return ANN_OK;
}

ANN_VECTOR_CLONES int FN(ann_act_backward)(int kind, R alpha, size_t n, const R *z,
                                           const R *y, R *delta)
{
    size_t i;
    const ann_activation_info *info = ann_activation(kind);
    if (info == NULL)
        return ANN_ERR_ARG;
    if ((y == NULL || delta == NULL || (info->needs_input && z == NULL)) && n > 0)
        return ANN_ERR_ARG;
    (void)z;
    switch (kind) {
    case ANN_ACT_IDENTITY:
        return ANN_OK;
    case ANN_ACT_SIGMOID: /* f' = y (1 - y) */
        for (i = 0; i < n; i++)
            delta[i] *= y[i] * ((R)1 - y[i]);
        break;
    case ANN_ACT_TANH: /* f' = 1 - y^2 */
        for (i = 0; i < n; i++)
            delta[i] *= (R)1 - y[i] * y[i];
        break;
    case ANN_ACT_RELU: /* f' = [y > 0] */
        for (i = 0; i < n; i++)
            delta[i] = y[i] > 0 ? delta[i] : (R)0;
        break;
    case ANN_ACT_LEAKY_RELU: /* f' = 1 where y > 0, alpha elsewhere */
        for (i = 0; i < n; i++)
            delta[i] = y[i] > 0 ? delta[i] : alpha * delta[i];
        break;
    case ANN_ACT_SOFTPLUS: /* f' = sigmoid(z) = 1 - exp(-y) */
        for (i = 0; i < n; i++)
            delta[i] *= -EXPM1(-y[i]);
        break;
    case ANN_ACT_ELU: /* f' = 1 where y > 0, exp(z) = y + 1 elsewhere */
        for (i = 0; i < n; i++)
            delta[i] *= y[i] > 0 ? (R)1 : y[i] + (R)1;
        break;
    case ANN_ACT_GELU: /* f'(z) from the input z (the output does not determine it) */
        for (i = 0; i < n; i++)
            delta[i] *= FN(gelu_derivative)(z[i]);
        break;
    default:
        return ANN_ERR_ARG;
    }
    for (i = 0; i < n; i++)
        delta[i] = FN(flush)(delta[i]);
    return ANN_OK;
}

/* Row-wise softmax in place; returns nothing, stores the row maximum and log-sum in m, ls. */
static inline void FN(softmax_row)(size_t cols, R *z, R *m_out, R *ls_out)
{
    size_t j;
    R m = z[0], s = 0, inv;
    for (j = 1; j < cols; j++)
        m = z[j] > m ? z[j] : m;
    for (j = 0; j < cols; j++) {
        z[j] = EXP(z[j] - m);
        s += z[j];
    }
    inv = (R)1 / s;
    for (j = 0; j < cols; j++)
        z[j] = FN(flush)(z[j] * inv);
    *m_out = m;
    *ls_out = LOG(s);
}

ANN_VECTOR_CLONES int FN(ann_loss_output)(int kind, size_t rows, size_t cols, R *Z)
{
    size_t i, n = rows * cols;
    R m, ls;
    if (Z == NULL && n > 0)
        return ANN_ERR_ARG;
    switch (kind) {
    case ANN_LOSS_SOFTMAX_XENT:
        if (cols == 0)
            return ANN_ERR_ARG;
        for (i = 0; i < rows; i++)
            FN(softmax_row)(cols, Z + i * cols, &m, &ls);
        return ANN_OK;
    case ANN_LOSS_SIGMOID_XENT:
        for (i = 0; i < n; i++)
            Z[i] = FN(flush)(FN(sigmoid)(Z[i]));
        return ANN_OK;
    case ANN_LOSS_SQUARED_ERROR:
        return ANN_OK;
    default:
        return ANN_ERR_ARG;
    }
}

ANN_VECTOR_CLONES int FN(ann_loss)(int kind, size_t rows, size_t cols, R *Z,
                                   const int64_t *labels, const R *T, const R *W, R *delta,
                                   double *loss_sum)
{
    size_t i, j;
    double total = 0, row = 0;
    if ((Z == NULL && rows * cols > 0) || loss_sum == NULL || cols == 0 ||
        (labels == NULL) == (T == NULL))
        return ANN_ERR_ARG;
    if (labels != NULL)
        for (i = 0; i < rows; i++)
            if (labels[i] < 0 || (uint64_t)labels[i] >= cols)
                return ANN_ERR_LABEL;

    for (i = 0; i < rows; i++) {
        R *z = Z + i * cols;
        R *d = delta != NULL ? delta + i * cols : NULL;
        const R *t = T != NULL ? T + i * cols : NULL;
        size_t label = labels != NULL ? (size_t)labels[i] : 0;
        switch (kind) {
        case ANN_LOSS_SOFTMAX_XENT: {
            /* loss = sum_j t_j (logsumexp(z) - z_j); delta = sum(t) softmax(z) - t.
             * The loss is summed as t_j (m - z_j) in double: with large logits, forming
             * m + log-sum first would lose the small difference to rounding. */
            R m = z[0], ls, tsum = 1;
            double gap;
            for (j = 1; j < cols; j++)
                m = z[j] > m ? z[j] : m;
            if (t != NULL) {
                tsum = 0;
                gap = 0;
                for (j = 0; j < cols; j++) {
                    tsum += t[j];
                    gap += (double)t[j] * (double)(m - z[j]);
                }
            } else {
                gap = (double)(m - z[label]);
            }
            FN(softmax_row)(cols, z, &m, &ls);
            row = gap + (double)tsum * (double)ls;
            if (d != NULL) {
                for (j = 0; j < cols; j++)
                    d[j] = t != NULL ? FN(flush)(tsum * z[j] - t[j]) : z[j];
                if (t == NULL)
                    d[label] -= 1;
            }
            break;
        }
        case ANN_LOSS_SIGMOID_XENT: {
            /* loss = sum_j max(z, 0) - z t + log(1 + exp(-|z|)); delta = sigmoid(z) - t */
            row = 0;
            for (j = 0; j < cols; j++) {
                R tj = t != NULL ? t[j] : (R)(j == label);
                R v = z[j];
                row += (double)((v > 0 ? v : (R)0) - v * tj + LOG1P(EXP(-FN(absval)(v))));
                z[j] = FN(flush)(FN(sigmoid)(v));
                if (d != NULL)
                    d[j] = FN(flush)(z[j] - tj);
            }
            break;
        }
        case ANN_LOSS_SQUARED_ERROR: {
            /* loss = 0.5 sum_j (z_j - t_j)^2; delta = z - t */
            row = 0;
            for (j = 0; j < cols; j++) {
                R tj = t != NULL ? t[j] : (R)(j == label);
                R diff = z[j] - tj;
                row += (double)diff * (double)diff;
                if (d != NULL)
                    d[j] = FN(flush)(diff);
            }
            row *= 0.5;
            break;
        }
        default:
            return ANN_ERR_ARG;
        }
        if (W != NULL) {
            /* a weighted row: its loss and its delta (hence its gradient) times W[i] */
            total += (double)W[i] * row;
            if (d != NULL)
                for (j = 0; j < cols; j++)
                    d[j] = FN(flush)(W[i] * d[j]);
        } else {
            total += row;
        }
    }
    *loss_sum += total;
    return ANN_OK;
}

ANN_VECTOR_CLONES int FN(ann_all_finite)(size_t n, const R *x, size_t *first_bad)
{
    size_t i, start;
    const size_t chunk = 4096;
    for (start = 0; start < n; start += chunk) {
        size_t end = start + chunk < n ? start + chunk : n;
        int bad = 0;
        /* v - v is 0 for finite v and NaN for NaN or inf; the OR reduction vectorises. */
        for (i = start; i < end; i++)
            bad |= (x[i] - x[i]) != (R)0;
        if (bad) {
            for (i = start; i < end; i++)
                if ((x[i] - x[i]) != (R)0)
                    break;
            if (first_bad != NULL)
                *first_bad = i;
            return 0;
        }
    }
    return 1;
}

/* One 64-bit hash per row, then 32-bit arithmetic per unit (ann_dropout_bits), so the loop
 * over a row's units vectorises at full width. The mask is kept as one byte per unit. */
ANN_VECTOR_CLONES int FN(ann_dropout_forward)(uint64_t key, uint64_t row0, size_t rows,
                                              size_t cols, double rate, const R *X_, R *Y,
                                              uint8_t *M)
{
    size_t i, j;
    uint32_t threshold;
    R scale;
    if (!(rate >= 0.0 && rate < 1.0))
        return ANN_ERR_ARG;
    if ((X_ == NULL || Y == NULL) && rows * cols > 0)
        return ANN_ERR_ARG;
    threshold = ann_dropout_threshold(rate);
    scale = (R)(1.0 / (1.0 - rate));
    for (i = 0; i < rows; i++) {
        const R *x = X_ + i * cols;
        R *y = Y + i * cols;
        uint32_t seed = ann_dropout_row_seed(key, row0 + i);
        /* a multiplication, not a select: NaN stays NaN where it is dropped, as in PyTorch */
        if (M != NULL) {
            uint8_t *m = M + i * cols;
            for (j = 0; j < cols; j++) {
                uint8_t keep = ann_dropout_bits(seed, (uint32_t)j) >= threshold;
                m[j] = keep;
                y[j] = x[j] * (keep ? scale : (R)0);
            }
        } else {
            for (j = 0; j < cols; j++)
                y[j] = x[j] * (ann_dropout_bits(seed, (uint32_t)j) >= threshold ? scale : (R)0);
        }
    }
    return ANN_OK;
}

ANN_VECTOR_CLONES int FN(ann_dropout_backward)(size_t n, double rate, const uint8_t *M,
                                               const R *d_out, R *d_in)
{
    size_t i;
    R scale;
    if (!(rate >= 0.0 && rate < 1.0))
        return ANN_ERR_ARG;
    if ((M == NULL || d_out == NULL || d_in == NULL) && n > 0)
        return ANN_ERR_ARG;
    scale = (R)(1.0 / (1.0 - rate));
    for (i = 0; i < n; i++)
        d_in[i] = d_out[i] * (M[i] ? scale : (R)0);
    return ANN_OK;
}

#undef FN
