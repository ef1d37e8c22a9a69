/* Prepared weights: made once at load.  Dense data is borrowed; the MXFP4
 * form (dynamic quantization at load) and backend caches are owned. */
#include <stdlib.h>

#include "core/internal.h"

static void free_mxfp4(tgemm_weight *w) {
  if (!w->owns_mxfp4) return;
  w->ctx->backend->free(w->ctx, w->mxfp4.data);
  w->ctx->backend->free(w->ctx, w->mxfp4.scales);
  w->owns_mxfp4 = false;
}

/* Quantize the dense weight once into arrays owned by the handle.  Scale
 * rows are padded to 16 bytes: the GPU decode kernels copy scales 4 bytes
 * at a time and take a scalar fallback, about 3.5x slower, on rows whose
 * stride is not a multiple of 4 (any K with ceil(K/32) % 4 != 0, such as
 * K = 2880).  The padding is never read. */
static tgemm_status make_mxfp4(tgemm_ctx *ctx, tgemm_weight *w) {
  int64_t packed_bytes, scale_bytes;
  const int64_t scales_ld = (tgemm_mxfp4_scale_cols(w->k) + 15) / 16 * 16;
  if (!tgemm__mul_size(w->n, tgemm_mxfp4_packed_cols(w->k), &packed_bytes) ||
      !tgemm__mul_size(w->n, scales_ld, &scale_bytes))
    return tgemm__set_error(ctx, TGEMM_OVERFLOW, "tgemm_weight_create: MXFP4 size overflows");
  void *packed = NULL, *scales = NULL;
  tgemm_status st = ctx->backend->alloc(ctx, (size_t)packed_bytes, &packed);
  if (st == TGEMM_OK) st = ctx->backend->alloc(ctx, (size_t)scale_bytes, &scales);
  if (st != TGEMM_OK) {
    if (packed) ctx->backend->free(ctx, packed);
    return st;
  }
  w->mxfp4 = tgemm_matrix_mxfp4(packed, scales, w->n, w->k, ctx->backend->location);
  w->mxfp4.scales_ld = scales_ld;
  w->owns_mxfp4 = true;
  w->has_mxfp4 = true;
  return ctx->backend->quantize(ctx, &w->dense, &w->mxfp4, w->scale_mode);
}

tgemm_status tgemm_weight_create(tgemm_ctx *ctx, const tgemm_matrix *matrix,
                                 const tgemm_weight_options *options, tgemm_weight **out) {
  if (!ctx) return TGEMM_NULL_POINTER;
  if (!out) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm_weight_create: output pointer is NULL");
  *out = NULL;
  tgemm_status st = tgemm__check_matrix(ctx, matrix, "weight");
  if (st != TGEMM_OK) return st;
  tgemm_weight_options defaults = {0, ctx->options.scale_mode};
  if (!options) options = &defaults;
  if ((unsigned)options->scale_mode > TGEMM_SCALE_RCEIL || (options->flags & ~TGEMM_WEIGHT_MXFP4))
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "tgemm_weight_create: unknown flags 0x%x or scale mode %d",
                            options->flags, (int)options->scale_mode);

  tgemm_weight *w = calloc(1, sizeof *w);
  if (!w) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tgemm_weight_create: out of memory");
  w->ctx = ctx;
  w->n = matrix->rows;
  w->k = matrix->cols;
  w->scale_mode = options->scale_mode;
  if (matrix->dtype == TGEMM_MXFP4) {
    w->has_mxfp4 = true;
    w->mxfp4 = *matrix; /* borrowed, like dense data */
  } else {
    w->has_dense = true;
    w->dense = *matrix;
    if (options->flags & TGEMM_WEIGHT_MXFP4) st = make_mxfp4(ctx, w);
  }
  if (st == TGEMM_OK) st = ctx->backend->weight_prepare(ctx, w);
  if (st != TGEMM_OK) {
    free_mxfp4(w);
    free(w);
    return st;
  }
  *out = w;
  return TGEMM_OK;
}

void tgemm_weight_free(tgemm_weight *w) {
  if (!w) return;
  w->ctx->backend->weight_release(w->ctx, w);
  free_mxfp4(w);
  free(w);
}

int64_t tgemm_weight_rows(const tgemm_weight *w) { return w ? w->n : 0; }
int64_t tgemm_weight_cols(const tgemm_weight *w) { return w ? w->k : 0; }
int tgemm_weight_has_mxfp4(const tgemm_weight *w) { return w && w->has_mxfp4; }
