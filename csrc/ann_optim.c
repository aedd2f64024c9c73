/* Fused optimizer steps; the type-generic body lives in ann_optim_impl.h, compiled once for
 * float and once for double. */
#include <math.h>
#include <stddef.h>

#include "ann_optim.h"
#include "ann_vector.h"

#define R float
#define X s
#define SQRT sqrtf
#include "ann_optim_impl.h"
#undef R
#undef X
#undef SQRT

#define R double
#define X d
#define SQRT sqrt
#include "ann_optim_impl.h"
