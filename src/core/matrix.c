/* Matrix views: constructors, size arithmetic, and the one validation that
 * every public entry point applies. */
#include <stdio.h>

#include "core/internal.h"

int64_t tgemm_mxfp4_scale_cols(int64_t cols) { return cols > 0 ? (cols + 31) / 32 : 0; }
int64_t tgemm_mxfp4_packed_cols(int64_t cols) { return tgemm_mxfp4_scale_cols(cols) * 16; }

tgemm_matrix tgemm_matrix_dense(void *data, tgemm_dtype dtype, int64_t rows,
                                int64_t cols, tgemm_location location) {
  tgemm_matrix m = {data, NULL, dtype, location, rows, cols, cols, 0};
  return m;
}

tgemm_matrix tgemm_matrix_mxfp4(void *packed, void *scales, int64_t rows,
                                int64_t cols, tgemm_location location) {
  tgemm_matrix m = {packed,
                    scales,
                    TGEMM_MXFP4,
                    location,
                    rows,
                    cols,
                    tgemm_mxfp4_packed_cols(cols),
                    tgemm_mxfp4_scale_cols(cols)};
  return m;
}

bool tgemm__mul_size(int64_t a, int64_t b, int64_t *out) {
  if (a < 0 || b < 0) return false;
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return false;
  *out = r;
  return true;
}

/* Bytes from the first element to one past the last: (rows-1)*ld + width. */
static bool span_bytes(int64_t rows, int64_t ld, int64_t width, int64_t elem,
                       int64_t *bytes) {
  int64_t a, b;
  if (!tgemm__mul_size(rows - 1, ld, &a) || __builtin_add_overflow(a, width, &b) ||
      !tgemm__mul_size(b, elem, bytes))
    return false;
  return true;
}

bool tgemm__matrix_bytes(const tgemm_matrix *m, int64_t *bytes) {
  if (m->dtype == TGEMM_MXFP4)
    return span_bytes(m->rows, m->ld, tgemm_mxfp4_packed_cols(m->cols), 1, bytes);
  return span_bytes(m->rows, m->ld, m->cols, (int64_t)tgemm_dtype_size(m->dtype),
                    bytes);
}

/* Largest byte span we accept for one matrix: far beyond any real memory,
 * small enough that index arithmetic in int64 cannot overflow. */
#define MAX_MATRIX_BYTES ((int64_t)1 << 50)

tgemm_status tgemm__check_matrix(tgemm_ctx *ctx, const tgemm_matrix *m,
                                 const char *what) {
  if (!m) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "%s: descriptor is NULL", what);
  if ((unsigned)m->dtype > (unsigned)TGEMM_MXFP4)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "%s: unknown dtype %d",
                            what, (int)m->dtype);
  if (!m->data)
    return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "%s: data pointer is NULL", what);
  if (m->rows <= 0 || m->cols <= 0)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "%s: dimensions must be positive, got %lld x %lld", what,
                            (long long)m->rows, (long long)m->cols);
  int64_t width = m->dtype == TGEMM_MXFP4 ? tgemm_mxfp4_packed_cols(m->cols) : m->cols;
  if (m->ld < width)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "%s: leading dimension %lld is smaller than the row width %lld",
                            what, (long long)m->ld, (long long)width);
  if (m->dtype == TGEMM_MXFP4) {
    if (!m->scales)
      return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "%s: MXFP4 scales pointer is NULL",
                              what);
    if (m->scales_ld < tgemm_mxfp4_scale_cols(m->cols))
      return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                              "%s: scales leading dimension %lld is smaller than %lld", what,
                              (long long)m->scales_ld,
                              (long long)tgemm_mxfp4_scale_cols(m->cols));
  }
  int64_t bytes;
  if (!tgemm__matrix_bytes(m, &bytes) || bytes > MAX_MATRIX_BYTES)
    return tgemm__set_error(ctx, TGEMM_OVERFLOW,
                            "%s: %lld x %lld (ld %lld) %s spans too many bytes", what,
                            (long long)m->rows, (long long)m->cols, (long long)m->ld,
                            tgemm_dtype_name(m->dtype));
  if (ctx && ctx->backend && m->location != ctx->backend->location)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "%s: lives in %s memory but the %s backend needs %s memory", what,
                            m->location == TGEMM_HOST ? "host" : "device",
                            ctx->backend->name,
                            ctx->backend->location == TGEMM_HOST ? "host" : "device");
  return TGEMM_OK;
}
