/* One step of a mini-batch optimizer over a contiguous slice of the flat weight vector, in one
 * pass: the mean gradient with its L2 term, the moment updates and the weight update, plus
 * what the batch loss needs from the weights before the update.
 *
 * With d = grad_scale * g + decay * w (in the weights' type):
 *   SGD:       w -= rate * d
 *   momentum:  m = beta1 * m + d;  w -= rate * m
 *   Nesterov:  m = beta1 * m + d;  w -= rate * (d + beta1 * m)
 *   Adam:      m = beta1 * m + (1 - beta1) * d;  v = beta2 * v + (1 - beta2) * d^2;
 *              w -= rate * m / (sqrt(v * inv_bias2) + eps)
 * where Adam's rate already holds its first bias correction, lr / (1 - beta1^t), and
 * inv_bias2 = 1 / (1 - beta2^t).
 */
#ifndef ANN_OPTIM_H
#define ANN_OPTIM_H

#include <stddef.h>

#include "ann_status.h"

enum ann_step_kind {
    ANN_STEP_SGD = 0,
    ANN_STEP_MOMENTUM = 1,
    ANN_STEP_NESTEROV = 2,
    ANN_STEP_ADAM = 3,
    ANN_STEP_COUNT = 4
};

/* The coefficients of one step, the same for every slice it covers. */
typedef struct ann_step {
    int kind;           /* an ann_step_kind */
    double grad_scale;  /* multiplies the gradient (1 / rows of a summed batch gradient) */
    double rate;        /* the learning rate of this step (Adam: over 1 - beta1^t) */
    double beta1;       /* momentum (SGD) or Adam's first-moment decay */
    double beta2;       /* Adam's second-moment decay */
    double inv_bias2;   /* Adam: 1 / (1 - beta2^t) */
    double eps;         /* Adam */
} ann_step;

/* One step over w[0, n) with the L2 coefficient `decay`. m is the velocity (momentum,
 * Nesterov) or the first moment (Adam), v the second moment (Adam); the others may be NULL.
 * When squares is not NULL, *squares += sum(w^2) over the slice before the update, summed in
 * double; *nonfinite |= 1 when an updated weight is infinite or NaN. */
#define ANN_DECLARE_STEP(R, X)                                                             \
    int ann_step_##X(const ann_step *s, R decay, size_t n, R *w, const R *g, R *m, R *v,  \
                     double *squares, int *nonfinite);

ANN_DECLARE_STEP(float, s)
ANN_DECLARE_STEP(double, d)

#endif
