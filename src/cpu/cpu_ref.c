/* Reference kernels: plain loops accumulating in double, for every route.
 * Written to be obviously right, not fast.  MXFP4 values are decoded here
 * from the spec (DESIGN.md §3) rather than with the library's dequantizer,
 * so that the reference does not share code with what it checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"
#include "cpu/cpu_reference.h"
#include "mxfp4/mxfp4.h"

/* Rows per chunk: bounds the double copy of x. */
#define REF_CHUNK_ROWS 64
/* Below this many multiply-adds one thread is faster than several. */
#define REF_PARALLEL_MIN_MACS (1 << 20)

static const double e2m1_value[16] = {0.0,  0.5,  1.0,  1.5,  2.0,  3.0,  4.0,  6.0,
                                      -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0};

/* One MXFP4 row of k values into double. */
static void decode_mxfp4_row(const uint8_t *packed, const uint8_t *scales, int64_t k,
                             double *dst) {
  for (int64_t i = 0; i < k; i++) {
    uint8_t byte = scales[i / 32];
    double scale = byte == 0xFF ? NAN : ldexp(1.0, (int)byte - 127);
    uint8_t code = (i & 1) ? (uint8_t)(packed[i / 2] >> 4) : (uint8_t)(packed[i / 2] & 15);
    dst[i] = e2m1_value[code] * scale;
  }
}

static void decode_dense_row(const tgemm_matrix *m, int64_t row, double *dst) {
  const char *p = (const char *)m->data + (size_t)(row * m->ld) * tgemm_dtype_size(m->dtype);
  for (int64_t i = 0; i < m->cols; i++) dst[i] = tgemm__load_f32(p, (int)m->dtype, i);
}

static double dot(const double *a, const double *b, int64_t k) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= k; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < k; i++) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

/* x rows [r0, r1) as double, quantized to MXFP4 first for W4A4. */
static tgemm_status load_x_rows(const tgemm_matrix *x, bool quantize, tgemm_scale_mode mode,
                                int64_t r0, int64_t r1, double *dst) {
  int64_t k = x->cols;
  if (!quantize) {
    for (int64_t r = r0; r < r1; r++) decode_dense_row(x, r, dst + (r - r0) * k);
    return TGEMM_OK;
  }
  int64_t nb = (k + 31) / 32;
  float *xf = malloc((size_t)k * sizeof *xf);
  uint8_t *packed = malloc((size_t)nb * 16), *scales = malloc((size_t)nb);
  tgemm_status st = xf && packed && scales ? TGEMM_OK : TGEMM_OUT_OF_MEMORY;
  for (int64_t r = r0; r < r1 && st == TGEMM_OK; r++) {
    const char *p = (const char *)x->data + (size_t)(r * x->ld) * tgemm_dtype_size(x->dtype);
    for (int64_t i = 0; i < k; i++) xf[i] = tgemm__load_f32(p, (int)x->dtype, i);
    tgemm_mxfp4_quantize_row_ref(xf, k, packed, scales, mode);
    decode_mxfp4_row(packed, scales, k, dst + (r - r0) * k);
  }
  free(xf);
  free(packed);
  free(scales);
  return st;
}

tgemm_status tgemm__cpu_reference_rows(const tgemm__operands *ops, tgemm_route route,
                                       tgemm_scale_mode mode, int64_t row_begin,
                                       int64_t row_end, double *out) {
  const struct tgemm_weight *w = ops->w;
  const tgemm_matrix *x = ops->x;
  bool mx_route = route == TGEMM_ROUTE_W4A16 || route == TGEMM_ROUTE_W4A4;
  bool use_mxfp4 = mx_route || !w->has_dense;
  if (use_mxfp4 && !w->has_mxfp4) return TGEMM_UNSUPPORTED;
  if (row_begin < 0 || row_end > x->rows || row_begin > row_end) return TGEMM_INVALID_ARGUMENT;
  int64_t n = w->n, k = w->k, rows = row_end - row_begin;
  if (rows == 0) return TGEMM_OK;

  double *xd = malloc((size_t)rows * (size_t)k * sizeof *xd);
  if (!xd) return TGEMM_OUT_OF_MEMORY;
  tgemm_status st = load_x_rows(x, route == TGEMM_ROUTE_W4A4, mode, row_begin, row_end, xd);
  if (st != TGEMM_OK) {
    free(xd);
    return st;
  }
  int failed = 0;
  int parallel = rows * n * k >= REF_PARALLEL_MIN_MACS;
#pragma omp parallel if (parallel)
  {
    double *wd = malloc((size_t)k * sizeof *wd);
    if (!wd) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t j = 0; j < n; j++) {
      if (!wd) continue;
      if (use_mxfp4)
        decode_mxfp4_row((const uint8_t *)w->mxfp4.data + j * w->mxfp4.ld,
                         (const uint8_t *)w->mxfp4.scales + j * w->mxfp4.scales_ld, k, wd);
      else
        decode_dense_row(&w->dense, j, wd);
      double b = ops->bias ? tgemm__load_f32(ops->bias->data, (int)ops->bias->dtype, j) : 0.0;
      for (int64_t i = 0; i < rows; i++) out[i * n + j] = dot(xd + i * k, wd, k) + b;
    }
    free(wd);
  }
  free(xd);
  return failed ? TGEMM_OUT_OF_MEMORY : TGEMM_OK;
}

/* The REFERENCE route: the dense reference (W4A16's for an MXFP4-only
 * weight), rounded once from double into y. */
tgemm_status tgemm__cpu_run_reference(tgemm_ctx *ctx, const tgemm__operands *ops) {
  int64_t m = ops->x->rows, n = ops->w->n;
  double *chunk = malloc((size_t)REF_CHUNK_ROWS * (size_t)n * sizeof *chunk);
  if (!chunk)
    return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "cpu reference: cannot allocate %lld x %lld doubles",
                            (long long)REF_CHUNK_ROWS, (long long)n);
  const tgemm_matrix *y = ops->y;
  for (int64_t r0 = 0; r0 < m; r0 += REF_CHUNK_ROWS) {
    int64_t r1 = r0 + REF_CHUNK_ROWS < m ? r0 + REF_CHUNK_ROWS : m;
    tgemm_status st = tgemm__cpu_reference_rows(ops, TGEMM_ROUTE_REFERENCE, TGEMM_SCALE_EVEN,
                                                r0, r1, chunk);
    if (st != TGEMM_OK) {
      free(chunk);
      return tgemm__set_error(ctx, st, "cpu reference: %s (M=%lld N=%lld K=%lld)",
                              tgemm_status_str(st), (long long)m, (long long)n,
                              (long long)ops->w->k);
    }
    for (int64_t i = r0; i < r1; i++)
      for (int64_t j = 0; j < n; j++) {
        float v = (float)chunk[(i - r0) * n + j];
        if (y->dtype == TGEMM_F32) ((float *)y->data)[i * y->ld + j] = v;
        else ((uint16_t *)y->data)[i * y->ld + j] = tgemm__f32_to_bf16(v);
      }
  }
  free(chunk);
  return TGEMM_OK;
}
