/* The router (DESIGN.md §5): which kernel runs one linear call.
 *
 * Order: a forced route, else a tuned-table hit (exact M, then M padded to
 * its bucket, then M padded to the next power of two), else the built-in
 * default (skinny where the backend says it qualifies, else the library
 * GEMM), else the reference.  The should_use_* predicates have no side
 * effects; tgemm__route_select strings them together and ends in the
 * reference, which every backend runs. */
#ifndef TGEMM_ROUTE_ROUTER_H
#define TGEMM_ROUTE_ROUTER_H

#include <stdbool.h>

#include "core/internal.h"

struct tgemm__table_row;

/* M rounded up to its table bucket: a multiple of 16 when M <= 256, of 32
 * when <= 1024, of 64 when <= 4096, else of 128. */
int64_t tgemm__route_padded_m(int64_t m);
/* The smallest power of two >= M (M itself when too large to double). */
int64_t tgemm__route_pow2_m(int64_t m);
/* The M values the table is searched with, in order, without repeats;
 * returns how many (1 to 3). */
int tgemm__route_table_ms(int64_t m, int64_t out[3]);

/* The error budget for this call: options->error_budget when >= 0, else
 * the context's. */
double tgemm__route_error_budget(const tgemm_ctx *ctx, const tgemm_linear_options *opts);

/* Is the route an MXFP4 one (W4A16, W4A4)? */
bool tgemm__route_is_mxfp4(tgemm_route route);

/* Does the weight hold the form the route reads?  Skinny and library need
 * the dense form, W4A16/W4A4 the MXFP4 form, the reference either. */
bool tgemm__route_weight_ok(const struct tgemm_weight *w, tgemm_route route);

/* Does a measured error fit the budget?  Dense routes always do (their
 * error is rounding); an MXFP4 route only with a finite error <= budget.
 * W4A16 on a weight that is MXFP4 only (quantized by its owner) adds no
 * quantization of ours, so the budget does not apply to it. */
bool tgemm__route_error_ok(tgemm_route route, double error, double budget,
                           const struct tgemm_weight *w);

/* The caller forces a route. */
bool tgemm__should_use_forced(const tgemm_linear_options *opts);
/* Tuned routing is on and a table is loaded. */
bool tgemm__should_use_table(const tgemm_ctx *ctx);
/* A table row may serve this call: the backend supports its route for this
 * shape, the weight has the form, and its error fits the budget. */
bool tgemm__should_use_row(tgemm_ctx *ctx, const tgemm__shape *shape,
                           const struct tgemm_weight *w,
                           const struct tgemm__table_row *row, double budget);
/* Built-in rules, in order. */
bool tgemm__should_use_skinny(tgemm_ctx *ctx, const tgemm__shape *shape,
                              const struct tgemm_weight *w);
bool tgemm__should_use_library(tgemm_ctx *ctx, const tgemm__shape *shape,
                               const struct tgemm_weight *w);
/* A weight given only in MXFP4 has no dense route; W4A16 reads it as is. */
bool tgemm__should_use_w4a16_only(tgemm_ctx *ctx, const tgemm__shape *shape,
                                  const struct tgemm_weight *w);

/* Pick the kernel for one call.  *reason is "forced", "table", "default" or
 * "reference" (static strings).  No allocation and no I/O, except one
 * appended line in the untuned log (ctx->untuned_log) the first time a shape
 * misses the table.  Errors only for a forced route that cannot run. */
tgemm_status tgemm__route_select(tgemm_ctx *ctx, const tgemm__shape *shape,
                                 const struct tgemm_weight *w,
                                 const tgemm_linear_options *opts,
                                 tgemm__kernel *out, const char **reason);

#endif
