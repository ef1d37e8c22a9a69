/* The skinny route (decode, M <= 16): each weight row is read from memory
 * exactly once per call and multiplied against every activation row, which
 * stay in cache as f32.  Threads split the weight rows.  The AVX2 kernel is
 * in cpu_skinny_avx2.c; this file holds the driver and the scalar
 * fallback. */
#include <omp.h>
#include <string.h>

#include "core/cpu_features.h"
#include "cpu/cpu_internal.h"

/* Below this many multiply-adds one thread is faster than waking two. */
#define PARALLEL_MIN_MACS (1 << 17)

static bool use_avx2(void) {
  const struct tgemm__cpu_features *f = tgemm__cpu_features();
  return f->avx2 && f->fma && f->f16c;
}

/* Natural order, zero beyond k. */
static void convert_x_scalar(const tgemm_matrix *x, int64_t kpad, float *xf) {
  size_t esz = tgemm_dtype_size(x->dtype);
  for (int64_t i = 0; i < x->rows; i++) {
    const char *row = (const char *)x->data + (size_t)(i * x->ld) * esz;
    float *dst = xf + i * kpad;
    for (int64_t j = 0; j < x->cols; j++) dst[j] = tgemm__load_f32(row, (int)x->dtype, j);
    for (int64_t j = x->cols; j < kpad; j++) dst[j] = 0.0f;
  }
}

static float dot_scalar(const void *wrow, tgemm_dtype dtype, const float *x, int64_t k) {
  float s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  if (dtype == TGEMM_F32) {
    const float *w = (const float *)wrow;
    for (; i + 4 <= k; i += 4)
      for (int u = 0; u < 4; u++) s[u] += w[i + u] * x[i + u];
    for (; i < k; i++) s[0] += w[i] * x[i];
  } else if (dtype == TGEMM_F16) {
    const uint16_t *w = (const uint16_t *)wrow;
    for (; i + 4 <= k; i += 4)
      for (int u = 0; u < 4; u++) s[u] += tgemm__f16_to_f32(w[i + u]) * x[i + u];
    for (; i < k; i++) s[0] += tgemm__f16_to_f32(w[i]) * x[i];
  } else {
    const uint16_t *w = (const uint16_t *)wrow;
    for (; i + 4 <= k; i += 4)
      for (int u = 0; u < 4; u++) s[u] += tgemm__bf16_to_f32(w[i + u]) * x[i + u];
    for (; i < k; i++) s[0] += tgemm__bf16_to_f32(w[i]) * x[i];
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

static void rows_scalar(const tgemm__cpu_skinny_args *a, int64_t n0, int64_t n1) {
  size_t esz = tgemm_dtype_size(a->w_dtype);
  for (int64_t j = n0; j < n1; j++) {
    const void *wrow = (const char *)a->w + (size_t)(j * a->ldw) * esz;
    for (int64_t i = 0; i < a->m; i++)
      tgemm__cpu_out_store(&a->out, i, j, dot_scalar(wrow, a->w_dtype, a->xf + i * a->kpad, a->k));
  }
}

tgemm_status tgemm__cpu_run_skinny(tgemm_ctx *ctx, int rows_per_step, const tgemm__operands *ops) {
  const tgemm_matrix *x = ops->x;
  const struct tgemm_weight *w = ops->w;
  int64_t m = x->rows, n = w->n, k = w->k;
  int64_t kpad = (k + TGEMM__CPU_DENSE_STEP - 1) / TGEMM__CPU_DENSE_STEP * TGEMM__CPU_DENSE_STEP;
  bool vec = use_avx2();

  tgemm__cpu_buffer buf;
  tgemm_status st = tgemm__cpu_scratch_acquire(ctx, (size_t)m * (size_t)kpad * sizeof(float), &buf);
  if (st != TGEMM_OK) return st;
  float *xf = (float *)buf.ptr;
  if (vec) tgemm__cpu_skinny_convert_x_avx2(x, w->dense.dtype, kpad, xf);
  else convert_x_scalar(x, kpad, xf);

  tgemm__cpu_skinny_args a;
  a.m = m;
  a.k = k;
  a.kpad = kpad;
  a.xf = xf;
  a.w = w->dense.data;
  a.w_dtype = w->dense.dtype;
  a.ldw = w->dense.ld;
  a.rows_per_step = rows_per_step;
  a.out = tgemm__cpu_out_make(ops);

  int64_t groups = n / rows_per_step;
  int threads = tgemm__cpu_threads(ctx);
  if (m * n * k < PARALLEL_MIN_MACS || groups < threads) threads = 1;
#pragma omp parallel num_threads(threads)
  {
    /* Contiguous, equal slices of whole row groups; the last thread also
     * takes the rows past the last full group. */
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t n0 = groups * t / nt * rows_per_step;
    int64_t n1 = t == nt - 1 ? n : groups * (t + 1) / nt * rows_per_step;
    if (vec) tgemm__cpu_skinny_rows_avx2(&a, n0, n1);
    else rows_scalar(&a, n0, n1);
  }
  tgemm__cpu_scratch_release(&buf);
  return TGEMM_OK;
}
