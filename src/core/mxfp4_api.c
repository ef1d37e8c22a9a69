/* Public MXFP4 quantize/dequantize of whole matrices, on the context's
 * backend. */
#include "core/internal.h"

static tgemm_status check_pair(tgemm_ctx *ctx, const tgemm_matrix *dense, const tgemm_matrix *mx,
                               const char *call) {
  tgemm_status st;
  if ((st = tgemm__check_matrix(ctx, dense, "dense matrix")) != TGEMM_OK) return st;
  if ((st = tgemm__check_matrix(ctx, mx, "MXFP4 matrix")) != TGEMM_OK) return st;
  if (dense->dtype == TGEMM_MXFP4 || mx->dtype != TGEMM_MXFP4)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "%s: needs one dense (f32/f16/bf16) and one MXFP4 matrix",
                            call);
  if (dense->rows != mx->rows || dense->cols != mx->cols)
    return tgemm__set_error(ctx, TGEMM_SHAPE_MISMATCH, "%s: %lld x %lld vs %lld x %lld", call,
                            (long long)dense->rows, (long long)dense->cols, (long long)mx->rows,
                            (long long)mx->cols);
  return TGEMM_OK;
}

tgemm_status tgemm_mxfp4_quantize(tgemm_ctx *ctx, const tgemm_matrix *src, const tgemm_matrix *dst,
                                  tgemm_scale_mode mode) {
  if (!ctx) return TGEMM_NULL_POINTER;
  tgemm_status st = check_pair(ctx, src, dst, "tgemm_mxfp4_quantize");
  if (st != TGEMM_OK) return st;
  if ((unsigned)mode > TGEMM_SCALE_RCEIL)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tgemm_mxfp4_quantize: unknown scale mode %d", (int)mode);
  return ctx->backend->quantize(ctx, src, dst, mode);
}

tgemm_status tgemm_mxfp4_dequantize(tgemm_ctx *ctx, const tgemm_matrix *src, const tgemm_matrix *dst) {
  if (!ctx) return TGEMM_NULL_POINTER;
  tgemm_status st = check_pair(ctx, dst, src, "tgemm_mxfp4_dequantize");
  if (st != TGEMM_OK) return st;
  return ctx->backend->dequantize(ctx, src, dst);
}
