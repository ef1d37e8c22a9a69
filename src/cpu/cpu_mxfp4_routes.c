/* The MXFP4 routes on the CPU.
 * - W4A16 (streaming): the MXFP4 weight is decoded block by block, once per
 *   call, and multiplied against every x row kept in cache as f32.
 * - W4A4: x is quantized per call with the weight's scale mode; then each
 *   32-value block is an exact integer dot product of the codes (2·value is
 *   an integer in [-12, 12]) scaled by 2^(sx+sw).
 * Threads split the weight rows.  The AVX2 kernels are in
 * cpu_mxfp4_avx2.c; this file holds the drivers and scalar fallbacks. */
#include <omp.h>
#include <string.h>

#include "core/cpu_features.h"
#include "cpu/cpu_internal.h"
#include "mxfp4/mxfp4.h"

#define BLOCK TGEMM__MX_BLOCK
#define PARALLEL_MIN_MACS (1 << 17)

const int8_t tgemm__cpu_e2m1_x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static bool use_avx2(void) {
  const struct tgemm__cpu_features *f = tgemm__cpu_features();
  return f->avx2 && f->fma && f->f16c;
}

/* Position of element j of a block in the even-then-odd layout. */
static inline int64_t split_pos(int64_t j) {
  int64_t base = j / BLOCK * BLOCK, lane = j - base;
  return base + ((lane & 1) ? BLOCK / 2 + lane / 2 : lane / 2);
}

void tgemm__cpu_mx_row_to_f32(const uint8_t *packed, const uint8_t *scales, int64_t k,
                              float *dst) {
  for (int64_t j = 0; j < k; j++) {
    uint8_t byte = packed[j / 2];
    uint8_t code = (j & 1) ? (uint8_t)(byte >> 4) : (uint8_t)(byte & 15);
    dst[j] = (float)tgemm__cpu_e2m1_x2[code] * 0.5f * tgemm__cpu_e8m0(scales[j / BLOCK]);
  }
}

void tgemm__cpu_mx_rows_to_f32(const tgemm_matrix *wq, int64_t r0, int64_t rows, float *dst,
                               int64_t ldd, int n_threads) {
  bool vec = use_avx2();
  int64_t k = wq->cols;
  int use = rows * k >= PARALLEL_MIN_MACS ? n_threads : 1;
#pragma omp parallel for num_threads(use) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t *p = (const uint8_t *)wq->data + (r0 + r) * wq->ld;
    const uint8_t *s = (const uint8_t *)wq->scales + (r0 + r) * wq->scales_ld;
    if (vec) tgemm__cpu_mx_row_to_f32_avx2(p, s, k, dst + r * ldd);
    else tgemm__cpu_mx_row_to_f32(p, s, k, dst + r * ldd);
  }
}

/* ------------------------------------------------------------- scalar */

static void w4a16_rows_scalar(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1) {
  int64_t kq = a->n_blocks * BLOCK;
  for (int64_t j = n0; j < n1; j++) {
    const uint8_t *wp = a->w_packed + j * a->ldw_packed;
    const uint8_t *ws = a->w_scales + j * a->ldw_scales;
    for (int64_t i = 0; i < a->m; i++) {
      const float *x = a->xf + i * kq;
      float acc = 0.0f;
      for (int64_t b = 0; b < a->n_blocks; b++) {
        float part = 0.0f;
        for (int e = 0; e < BLOCK / 2; e++) {
          uint8_t byte = wp[b * 16 + e];
          part += (float)tgemm__cpu_e2m1_x2[byte & 15] * x[b * BLOCK + e];
          part += (float)tgemm__cpu_e2m1_x2[byte >> 4] * x[b * BLOCK + BLOCK / 2 + e];
        }
        acc += part * (0.5f * tgemm__cpu_e8m0(ws[b]));
      }
      tgemm__cpu_out_store(&a->out, i, j, acc);
    }
  }
}

static void w4a4_rows_scalar(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1) {
  int64_t kq = a->n_blocks * BLOCK;
  for (int64_t j = n0; j < n1; j++) {
    const uint8_t *wp = a->w_packed + j * a->ldw_packed;
    const uint8_t *ws = a->w_scales + j * a->ldw_scales;
    for (int64_t i = 0; i < a->m; i++) {
      const int8_t *xq = a->xq + i * kq;
      const float *xs = a->xs + i * a->n_blocks;
      float acc = 0.0f;
      for (int64_t b = 0; b < a->n_blocks; b++) {
        int32_t dot = 0; /* exact: |sum| <= 32 * 144 */
        for (int e = 0; e < BLOCK / 2; e++) {
          uint8_t byte = wp[b * 16 + e];
          dot += tgemm__cpu_e2m1_x2[byte & 15] * xq[b * BLOCK + e];
          dot += tgemm__cpu_e2m1_x2[byte >> 4] * xq[b * BLOCK + BLOCK / 2 + e];
        }
        acc += (float)dot * (xs[b] * tgemm__cpu_e8m0(ws[b]));
      }
      /* codes are 2·value on both sides */
      tgemm__cpu_out_store(&a->out, i, j, acc * 0.25f);
    }
  }
}

/* ------------------------------------------------------------ drivers */

static void fill_weight_args(tgemm__cpu_mx_args *a, const tgemm__operands *ops, int rows_per_step) {
  const tgemm_matrix *wq = &ops->w->mxfp4;
  a->m = ops->x->rows;
  a->k = ops->w->k;
  a->n_blocks = (a->k + BLOCK - 1) / BLOCK;
  a->w_packed = (const uint8_t *)wq->data;
  a->ldw_packed = wq->ld;
  a->w_scales = (const uint8_t *)wq->scales;
  a->ldw_scales = wq->scales_ld;
  a->rows_per_step = rows_per_step;
  a->xf = NULL;
  a->xq = NULL;
  a->xs = NULL;
  a->out = tgemm__cpu_out_make(ops);
}

typedef void (*mx_rows_fn)(const tgemm__cpu_mx_args *, int64_t, int64_t);

static void run_rows(tgemm_ctx *ctx, const tgemm__cpu_mx_args *a, int64_t n, mx_rows_fn fn) {
  int64_t groups = n / a->rows_per_step;
  int threads = tgemm__cpu_threads(ctx);
  if (a->m * n * a->k < PARALLEL_MIN_MACS || groups < threads) threads = 1;
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t n0 = groups * t / nt * a->rows_per_step;
    int64_t n1 = t == nt - 1 ? n : groups * (t + 1) / nt * a->rows_per_step;
    fn(a, n0, n1);
  }
}

tgemm_status tgemm__cpu_run_w4a16_stream(tgemm_ctx *ctx, int rows_per_step,
                                         const tgemm__operands *ops) {
  tgemm__cpu_mx_args a;
  fill_weight_args(&a, ops, rows_per_step);
  int64_t kq = a.n_blocks * BLOCK;
  tgemm__cpu_buffer buf;
  tgemm_status st = tgemm__cpu_scratch_acquire(ctx, (size_t)a.m * (size_t)kq * sizeof(float), &buf);
  if (st != TGEMM_OK) return st;
  float *xf = (float *)buf.ptr;
  const tgemm_matrix *x = ops->x;
  size_t xsz = tgemm_dtype_size(x->dtype);
  bool vec = use_avx2();
  for (int64_t i = 0; i < a.m; i++) {
    const char *row = (const char *)x->data + (size_t)(i * x->ld) * xsz;
    float *dst = xf + i * kq;
    if (vec) {
      tgemm__cpu_w4a16_x_row_avx2(row, x->dtype, a.k, a.n_blocks, dst);
    } else {
      for (int64_t j = 0; j < kq; j++)
        dst[split_pos(j)] = j < a.k ? tgemm__load_f32(row, (int)x->dtype, j) : 0.0f;
    }
  }
  a.xf = xf;
  run_rows(ctx, &a, ops->w->n, vec ? tgemm__cpu_w4a16_rows_avx2 : w4a16_rows_scalar);
  tgemm__cpu_scratch_release(&buf);
  return TGEMM_OK;
}

tgemm_status tgemm__cpu_run_w4a4(tgemm_ctx *ctx, int rows_per_step, const tgemm__operands *ops) {
  tgemm__cpu_mx_args a;
  fill_weight_args(&a, ops, rows_per_step);
  int64_t nb = a.n_blocks, kq = nb * BLOCK, m = a.m;
  /* packed x [m, nb*16] | scale bytes [m, nb] | codes [m, kq] | scales f32 [m, nb] */
  size_t packed_bytes = (size_t)m * (size_t)nb * 16, scale_bytes = (size_t)m * (size_t)nb;
  size_t codes_off = (packed_bytes + scale_bytes + 63) & ~(size_t)63;
  size_t scales_off = codes_off + (size_t)m * (size_t)kq;
  size_t total = scales_off + (size_t)m * (size_t)nb * sizeof(float);
  tgemm__cpu_buffer buf;
  tgemm_status st = tgemm__cpu_scratch_acquire(ctx, total, &buf);
  if (st != TGEMM_OK) return st;
  uint8_t *base = (uint8_t *)buf.ptr;
  uint8_t *xpacked = base, *xscale = base + packed_bytes;
  int8_t *xq = (int8_t *)(base + codes_off);
  float *xs = (float *)(base + scales_off);

  const tgemm_matrix *x = ops->x;
  tgemm__mxfp4_quantize_rows(x->data, x->dtype, m, a.k, x->ld, xpacked, nb * 16, xscale, nb,
                             tgemm__cpu_act_mode(ops->w));
  bool vec = use_avx2();
  for (int64_t i = 0; i < m; i++) {
    const uint8_t *p = xpacked + i * nb * 16;
    int8_t *codes = xq + i * kq;
    if (vec) {
      tgemm__cpu_mx_codes_row_avx2(p, nb, codes);
    } else {
      for (int64_t b = 0; b < nb; b++)
        for (int e = 0; e < BLOCK / 2; e++) {
          codes[b * BLOCK + e] = tgemm__cpu_e2m1_x2[p[b * 16 + e] & 15];
          codes[b * BLOCK + BLOCK / 2 + e] = tgemm__cpu_e2m1_x2[p[b * 16 + e] >> 4];
        }
    }
    for (int64_t b = 0; b < nb; b++) xs[i * nb + b] = tgemm__cpu_e8m0(xscale[i * nb + b]);
  }
  a.xq = xq;
  a.xs = xs;
  run_rows(ctx, &a, ops->w->n, vec ? tgemm__cpu_w4a4_rows_avx2 : w4a4_rows_scalar);
  tgemm__cpu_scratch_release(&buf);
  return TGEMM_OK;
}
