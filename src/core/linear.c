/* tgemm_linear: validate once at the boundary, route, run. */
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "route/route_cache.h"

void tgemm_linear_options_default(tgemm_linear_options *options) {
  if (!options) return;
  options->route = TGEMM_ROUTE_AUTO;
  options->kernel = NULL;
  options->error_budget = -1.0;
}

static bool is_dense(tgemm_dtype d) { return d == TGEMM_F32 || d == TGEMM_F16 || d == TGEMM_BF16; }

/* All shape and dtype rules of a linear call; kernels assume they hold. */
static tgemm_status check_linear(tgemm_ctx *ctx, const tgemm_matrix *x, const tgemm_weight *w,
                                 const tgemm_matrix *bias, const tgemm_matrix *y,
                                 const tgemm_linear_options *options) {
  tgemm_status st;
  if (!w) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm_linear: weight is NULL");
  if (w->ctx != ctx)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "tgemm_linear: the weight was prepared on another context");
  if ((st = tgemm__check_matrix(ctx, x, "x")) != TGEMM_OK) return st;
  if ((st = tgemm__check_matrix(ctx, y, "y")) != TGEMM_OK) return st;
  if (!is_dense(x->dtype))
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tgemm_linear: x must be f32, f16 or bf16, not %s",
                            tgemm_dtype_name(x->dtype));
  if (w->has_dense && x->dtype != w->dense.dtype)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "tgemm_linear: x is %s but the weight is %s", tgemm_dtype_name(x->dtype),
                            tgemm_dtype_name(w->dense.dtype));
  if (y->dtype != TGEMM_BF16 && y->dtype != TGEMM_F32)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tgemm_linear: y must be bf16 or f32, not %s",
                            tgemm_dtype_name(y->dtype));
  if (x->cols != w->k || y->rows != x->rows || y->cols != w->n)
    return tgemm__set_error(ctx, TGEMM_SHAPE_MISMATCH,
                            "tgemm_linear: x is %lld x %lld, weight is %lld x %lld (N x K), y is %lld x %lld; "
                            "need x M x K, y M x N",
                            (long long)x->rows, (long long)x->cols, (long long)w->n, (long long)w->k,
                            (long long)y->rows, (long long)y->cols);
  if (bias) {
    if ((st = tgemm__check_matrix(ctx, bias, "bias")) != TGEMM_OK) return st;
    bool vector = (bias->rows == 1 && bias->cols == w->n) || (bias->cols == 1 && bias->rows == w->n &&
                                                              bias->ld == 1);
    if (!vector)
      return tgemm__set_error(ctx, TGEMM_SHAPE_MISMATCH,
                              "tgemm_linear: bias is %lld x %lld, need a contiguous vector of N=%lld",
                              (long long)bias->rows, (long long)bias->cols, (long long)w->n);
    if (bias->dtype != y->dtype && bias->dtype != TGEMM_F32)
      return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                              "tgemm_linear: bias must be %s (like y) or f32, not %s",
                              tgemm_dtype_name(y->dtype), tgemm_dtype_name(bias->dtype));
  }
  if (options) {
    if ((unsigned)options->route >= TGEMM_ROUTE_COUNT)
      return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tgemm_linear: unknown route %d",
                              (int)options->route);
    if (options->error_budget != options->error_budget)
      return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tgemm_linear: error budget is NaN");
  }
  return TGEMM_OK;
}

tgemm_status tgemm_linear(tgemm_ctx *ctx, const tgemm_matrix *x, const tgemm_weight *w,
                          const tgemm_matrix *bias, const tgemm_matrix *y,
                          const tgemm_linear_options *options, tgemm_linear_info *info) {
  if (!ctx) return TGEMM_NULL_POINTER;
  tgemm_status st = check_linear(ctx, x, w, bias, y, options);
  if (st != TGEMM_OK) return st;
  tgemm_linear_options defaults;
  tgemm_linear_options_default(&defaults);
  if (!options) options = &defaults;

  tgemm__shape shape = {x->rows, w->n, w->k, x->dtype, y->dtype, bias != NULL};
  tgemm__kernel kernel;
  const char *reason = "default";
  st = tgemm__route_select_cached(ctx, &shape, w, options, &kernel, &reason);
  if (st != TGEMM_OK) return st;
  tgemm__kernel ran;
  ran.name[0] = '\0';
  tgemm__operands ops = {x, w, bias, y, &ran};
  st = ctx->backend->run(ctx, &kernel, &shape, &ops);
  if (st != TGEMM_OK) return st;
  if (info) {
    const bool substituted = ran.name[0] != '\0';
    info->route = kernel.route;
    snprintf(info->kernel, sizeof info->kernel, "%s", substituted ? ran.name : kernel.name);
    snprintf(info->reason, sizeof info->reason, "%s", substituted ? "fallback" : reason);
  }
  return TGEMM_OK;
}
