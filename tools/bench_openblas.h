/* The CPU bench's outside yardstick: OpenBLAS cblas_sgemm called directly on
 * f32 operands, timed like every route. */
#ifndef TGEMM_TOOLS_BENCH_OPENBLAS_H
#define TGEMM_TOOLS_BENCH_OPENBLAS_H

#include "core/internal.h"

/* Median µs of y = x·Wᵀ by cblas_sgemm on random f32 data of the shape,
 * with OpenBLAS on the context's thread count, the cache flushed (`flush`)
 * before each timed call. */
tgemm_status bench_openblas_sgemm(tgemm_ctx *ctx, const tgemm__shape *shape, int max_reps,
                                  double max_seconds, tgemm__flush_mode flush, double *median_us);

#endif
