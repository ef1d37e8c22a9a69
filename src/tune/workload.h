/* One problem instance for the tuner and the bench: random N(0,1) operands
 * in the backend's memory, with host copies for error checks, and several
 * copies of the weight so that timed runs read it cold. */
#ifndef TGEMM_TUNE_WORKLOAD_H
#define TGEMM_TUNE_WORKLOAD_H

#include <stdbool.h>

#include "core/internal.h"

typedef struct tgemm__workload tgemm__workload;

/* Weight copies whose smallest form (MXFP4 when want_mxfp4) together
 * exceeds ~2x the last-level cache (GPU L2 or CPU LLC), capped by a memory
 * budget for all forms; at least 1. */
int tgemm__workload_auto_copies(tgemm_ctx *ctx, const tgemm__shape *shape, bool want_mxfp4);

/* Make x [M,K] and W [N,K] in shape->dtype, bias [N] (when
 * shape->has_bias) and y [M,N] in shape->out_dtype, all N(0,1) from seed;
 * y is NaN-poisoned.  n_weight_copies <= 0 picks
 * tgemm__workload_auto_copies.  want_mxfp4 also prepares each weight's
 * MXFP4 form (ctx->options.scale_mode). */
tgemm_status tgemm__workload_create(tgemm_ctx *ctx, const tgemm__shape *shape,
                                    int n_weight_copies, uint64_t seed,
                                    bool want_mxfp4, tgemm__workload **out);
void tgemm__workload_free(tgemm__workload *wl);

int tgemm__workload_n_sets(const tgemm__workload *wl);
/* Operand set i (0 <= i < n_sets): the shared x, bias and y, weight copy i. */
const tgemm__operands *tgemm__workload_operands(const tgemm__workload *wl, int i);
/* All sets as an array, for tgemm__time_kernel. */
const tgemm__operands *tgemm__workload_sets(const tgemm__workload *wl);
const tgemm__shape *tgemm__workload_shape(const tgemm__workload *wl);
bool tgemm__workload_has_mxfp4(const tgemm__workload *wl);

/* Fill y with NaN again (before a run whose output is checked). */
tgemm_status tgemm__workload_poison_y(tgemm_ctx *ctx, tgemm__workload *wl);

/* Run kernel once on set 0, copy y back, and give ‖y−ref‖/‖ref‖ over the
 * checked rows (all rows when M <= 64, else 32 spread rows), against the
 * double reference of the UNQUANTIZED operands (for MXFP4 routes this is
 * the quantization error).  A y element left unwritten or non-finite gives
 * INFINITY.  Errors only for a failed run or copy. */
tgemm_status tgemm__workload_error(tgemm_ctx *ctx, tgemm__workload *wl,
                                   const tgemm__kernel *kernel, double *rel_err);

/* The same run, compared two ways: *vs_dense as above, and *vs_exact
 * against the double reference of the route's own arithmetic (for
 * W4A16/W4A4: the dequantized MXFP4 weight, and for W4A4 the quantized
 * activations), which must meet dense-route tolerances.  For dense routes
 * the two are equal.  Either pointer may be NULL. */
tgemm_status tgemm__workload_error2(tgemm_ctx *ctx, tgemm__workload *wl,
                                    const tgemm__kernel *kernel, double *vs_dense,
                                    double *vs_exact);

#endif
