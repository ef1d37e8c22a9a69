/* The library route: OpenBLAS cblas_sgemm.  The weight is converted to f32
 * once, at prepare (weight->backend_data); x is converted per call into
 * scratch, and a bf16 y goes through an f32 block.  Large M is processed
 * in row chunks so that the scratch stays bounded.  Also the blocked W4A16
 * kernel, which dequantizes weight panels and hands them to sgemm. */
#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

/* Scratch per chunk of rows: at most this many bytes of converted x and
 * f32 output, but never fewer than MIN_CHUNK_ROWS rows. */
#define CHUNK_BYTES ((size_t)96 << 20)
#define MIN_CHUNK_ROWS 256
/* Weight rows dequantized per sgemm call by the blocked W4A16 kernel. */
#define W4A16_PANEL_ROWS 512
/* Below this many multiply-adds one thread is faster than two. */
#define PARALLEL_MIN_MACS (1 << 20)

/* OpenBLAS runs single-threaded inside our OpenMP threads (gemm_block). */
void tgemm__cpu_blas_set_threads(int n_threads) {
  (void)n_threads;
  openblas_set_num_threads(1);
}

void tgemm__cpu_blas_version(char *out, size_t size) {
  /* openblas_get_config(): "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY ..." */
  char version[32] = "";
  const char *config = openblas_get_config();
  if (config && sscanf(config, "OpenBLAS %31s", version) == 1) {
    snprintf(out, size, "openblas-%s", version);
    return;
  }
#ifdef OPENBLAS_VERSION
  if (sscanf(OPENBLAS_VERSION, " OpenBLAS %31s", version) == 1) {
    snprintf(out, size, "openblas-%s", version);
    return;
  }
#endif
  snprintf(out, size, "openblas-unknown");
}

/* ------------------------------------------------------- weight cache */

tgemm_status tgemm__cpu_weight_prepare(tgemm_ctx *ctx, struct tgemm_weight *weight) {
  weight->backend_data = NULL;
  if (!weight->has_dense) return TGEMM_OK;
  tgemm__cpu_weight *cw = calloc(1, sizeof *cw);
  if (!cw) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "cpu weight_prepare: out of memory");
  const tgemm_matrix *d = &weight->dense;
  if (d->dtype == TGEMM_F32) {
    cw->w_f32 = (const float *)d->data;
    cw->ld_f32 = d->ld;
  } else {
    int64_t values;
    if (!tgemm__mul_size(weight->n, weight->k, &values) ||
        (uint64_t)values > SIZE_MAX / sizeof(float)) {
      free(cw);
      return tgemm__set_error(ctx, TGEMM_OVERFLOW, "cpu weight_prepare: %lld x %lld overflows",
                              (long long)weight->n, (long long)weight->k);
    }
    cw->owned_f32 = tgemm__cpu_aligned_alloc((size_t)values * sizeof(float));
    if (!cw->owned_f32) {
      free(cw);
      return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY,
                              "cpu weight_prepare: cannot allocate the f32 copy of a %lld x %lld "
                              "weight (%.1f MiB)",
                              (long long)weight->n, (long long)weight->k,
                              (double)values * 4.0 / 1048576.0);
    }
    tgemm__cpu_to_f32(d->data, d->dtype, weight->n, weight->k, d->ld, cw->owned_f32, weight->k,
                      tgemm__cpu_threads(ctx));
    cw->w_f32 = cw->owned_f32;
    cw->ld_f32 = weight->k;
  }
  weight->backend_data = cw;
  return TGEMM_OK;
}

void tgemm__cpu_weight_release(tgemm_ctx *ctx, struct tgemm_weight *weight) {
  tgemm__cpu_weight *cw = (tgemm__cpu_weight *)weight->backend_data;
  if (!cw) return;
  tgemm__cpu_aligned_free(cw->owned_f32);
  free(cw);
  weight->backend_data = NULL;
}

/* ----------------------------------------------------------- GEMM core */

static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* One thread's share of a block: y rows [m0, m1), columns [n0, n0 + nc)
 * = x · Wpᵀ + bias, where Wp is f32 [nc, k] (row stride ldw).  a/lda is
 * x's rows from m0 as f32.  c is f32 scratch [rows, ldc] when y is not f32
 * (NULL: sgemm writes y in place, on top of the bias with beta = 1). */
static void gemm_part(const tgemm__operands *ops, const tgemm__cpu_out *out, int64_t m0,
                      int64_t m1, int64_t n0, int64_t nc, const float *wp, int64_t ldw,
                      const float *a, int64_t lda, float *c, int64_t ldc) {
  const tgemm_matrix *y = ops->y;
  int64_t k = ops->x->cols, rows = m1 - m0;
  if (rows <= 0 || nc <= 0) return;
  if (c) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nc, (int)k, 1.0f, a,
                (int)lda, wp, (int)ldw, 0.0f, c, (int)ldc);
    tgemm__cpu_store_block(out, c, ldc, m0, m1, n0, nc, 1);
    return;
  }
  float *cy = (float *)y->data + m0 * y->ld + n0;
  float beta = 0.0f;
  if (out->bias) {
    for (int64_t i = 0; i < rows; i++)
      for (int64_t j = 0; j < nc; j++)
        cy[i * y->ld + j] = tgemm__load_f32(out->bias, (int)out->bias_dtype, n0 + j);
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nc, (int)k, 1.0f, a,
              (int)lda, wp, (int)ldw, beta, cy, (int)y->ld);
}

/* A block of y (see gemm_part) split over threads, each running a
 * single-threaded sgemm: by columns (weight rows) when there are enough,
 * else by rows.  OpenBLAS itself is kept at one thread so that the only
 * thread pool in play is OpenMP's: two pools that each busy-wait after
 * their work fight over the cores. */
static void gemm_block(const tgemm__operands *ops, const tgemm__cpu_out *out, int64_t m0,
                       int64_t m1, int64_t n0, int64_t nc, const float *wp, int64_t ldw,
                       const float *x_f32, float *c, int n_threads) {
  const tgemm_matrix *x = ops->x;
  int64_t rows = m1 - m0;
  const float *a = x_f32 ? x_f32 : (const float *)x->data + m0 * x->ld;
  int64_t lda = x_f32 ? ops->x->cols : x->ld;
  bool by_cols = nc >= 64 * (int64_t)n_threads;
  bool by_rows = !by_cols && rows >= 16 * (int64_t)n_threads;
  int64_t work = rows * nc * ops->x->cols;
  if ((!by_cols && !by_rows) || work < PARALLEL_MIN_MACS) n_threads = 1;
  if (n_threads == 1) {
    gemm_part(ops, out, m0, m1, n0, nc, wp, ldw, a, lda, c, nc);
    return;
  }
#pragma omp parallel num_threads(n_threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    if (by_cols) {
      /* slices of whole 16-column groups keep the BLAS kernels on their
       * fast path */
      int64_t groups = (nc + 15) / 16;
      int64_t j0 = groups * t / nt * 16, j1 = groups * (t + 1) / nt * 16;
      if (j1 > nc) j1 = nc;
      gemm_part(ops, out, m0, m1, n0 + j0, j1 - j0, wp + j0 * ldw, ldw, a, lda,
                c ? c + j0 : NULL, nc);
    } else {
      int64_t i0 = rows * t / nt, i1 = rows * (t + 1) / nt;
      gemm_part(ops, out, m0 + i0, m0 + i1, n0, nc, wp, ldw, a + i0 * lda, lda,
                c ? c + i0 * nc : NULL, nc);
    }
  }
}

static tgemm_status check_blas_sizes(tgemm_ctx *ctx, const tgemm__operands *ops, const char *what) {
  const tgemm_matrix *x = ops->x, *y = ops->y;
  if (!fits_int(x->rows) || !fits_int(y->cols) || !fits_int(x->cols) || !fits_int(x->ld) ||
      !fits_int(y->ld))
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "%s: OpenBLAS takes 32-bit sizes (M=%lld N=%lld K=%lld)", what,
                            (long long)x->rows, (long long)y->cols, (long long)x->cols);
  return TGEMM_OK;
}

/* Rows per chunk given the f32 values needed per row. */
static int64_t max_chunk_rows_override;

void tgemm__cpu_blas_set_max_chunk_rows(int64_t rows) {
  __atomic_store_n(&max_chunk_rows_override, rows, __ATOMIC_RELAXED);
}

static int64_t chunk_rows(int64_t m, int64_t floats_per_row) {
  int64_t forced = __atomic_load_n(&max_chunk_rows_override, __ATOMIC_RELAXED);
  if (forced > 0) return forced < m ? forced : m;
  if (floats_per_row == 0) return m;
  int64_t rows = (int64_t)(CHUNK_BYTES / sizeof(float)) / floats_per_row;
  if (rows < MIN_CHUNK_ROWS) rows = MIN_CHUNK_ROWS;
  return rows < m ? rows : m;
}

tgemm_status tgemm__cpu_run_sgemm(tgemm_ctx *ctx, const tgemm__operands *ops) {
  const tgemm_matrix *x = ops->x, *y = ops->y;
  const tgemm__cpu_weight *cw = (const tgemm__cpu_weight *)ops->w->backend_data;
  tgemm_status st = check_blas_sizes(ctx, ops, "cpu_openblas_sgemm");
  if (st != TGEMM_OK) return st;
  if (!cw || !cw->w_f32 || !fits_int(cw->ld_f32))
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "cpu_openblas_sgemm: the weight has no f32 form (not prepared by the "
                            "cpu backend?)");
  int64_t m = x->rows, n = y->cols, k = x->cols;
  bool convert_x = x->dtype != TGEMM_F32, temp_y = y->dtype != TGEMM_F32;
  int64_t per_row = (convert_x ? k : 0) + (temp_y ? n : 0);
  int64_t rows = chunk_rows(m, per_row);
  int threads = tgemm__cpu_threads(ctx);

  tgemm__cpu_buffer buf = {0};
  if (per_row) {
    st = tgemm__cpu_scratch_acquire(ctx, (size_t)rows * (size_t)per_row * sizeof(float), &buf);
    if (st != TGEMM_OK) return st;
  }
  float *x_f32 = convert_x ? (float *)buf.ptr : NULL;
  float *c = temp_y ? (float *)buf.ptr + (convert_x ? rows * k : 0) : NULL;
  tgemm__cpu_out out = tgemm__cpu_out_make(ops);
  size_t xsz = tgemm_dtype_size(x->dtype);
  for (int64_t m0 = 0; m0 < m; m0 += rows) {
    int64_t m1 = m0 + rows < m ? m0 + rows : m;
    if (convert_x)
      tgemm__cpu_to_f32((const char *)x->data + (size_t)(m0 * x->ld) * xsz, x->dtype, m1 - m0, k,
                        x->ld, x_f32, k, threads);
    gemm_block(ops, &out, m0, m1, 0, n, cw->w_f32, cw->ld_f32, x_f32, c, threads);
  }
  if (per_row) tgemm__cpu_scratch_release(&buf);
  return TGEMM_OK;
}

/* W4A16 for larger M: each thread dequantizes panels of its own weight
 * rows (W4A16_PANEL_ROWS at a time) into f32 and multiplies them with a
 * single-threaded sgemm.  The decode is paid once per call and amortized
 * over M; threads share nothing, so one parallel region serves a whole
 * chunk of rows (a barrier per panel costs a time slice on a busy
 * machine).  With too few weight rows to split, threads split x's rows
 * and each decodes every panel. */
tgemm_status tgemm__cpu_run_w4a16_blocked(tgemm_ctx *ctx, const tgemm__operands *ops) {
  const tgemm_matrix *x = ops->x, *y = ops->y;
  const tgemm_matrix *wq = &ops->w->mxfp4;
  tgemm_status st = check_blas_sizes(ctx, ops, "cpu_w4a16_blocked");
  if (st != TGEMM_OK) return st;
  int64_t m = x->rows, n = y->cols, k = x->cols;
  int64_t panel = n < W4A16_PANEL_ROWS ? n : W4A16_PANEL_ROWS;
  int threads = tgemm__cpu_threads(ctx);
  bool by_cols = n >= 64 * (int64_t)threads;
  if ((!by_cols && m < 16 * (int64_t)threads) || m * n * k < PARALLEL_MIN_MACS) threads = 1;
  bool convert_x = x->dtype != TGEMM_F32, temp_y = y->dtype != TGEMM_F32;
  /* x stays converted across panels; if that is too big, rows are chunked
   * and the weight decoded once per chunk. */
  int64_t rows = chunk_rows(m, (convert_x ? k : 0) + (temp_y ? panel : 0));
  /* per thread: a panel of f32 weights, and its f32 output block */
  size_t per_thread = (size_t)panel * (size_t)k + (temp_y ? (size_t)rows * (size_t)panel : 0);
  size_t bytes = ((convert_x ? (size_t)rows * (size_t)k : 0) + (size_t)threads * per_thread) *
                 sizeof(float);
  tgemm__cpu_buffer buf;
  st = tgemm__cpu_scratch_acquire(ctx, bytes, &buf);
  if (st != TGEMM_OK) return st;
  float *x_f32 = convert_x ? (float *)buf.ptr : NULL;
  float *thread_mem = (float *)buf.ptr + (convert_x ? rows * k : 0);
  tgemm__cpu_out out = tgemm__cpu_out_make(ops);
  size_t xsz = tgemm_dtype_size(x->dtype);
  for (int64_t m0 = 0; m0 < m; m0 += rows) {
    int64_t m1 = m0 + rows < m ? m0 + rows : m;
    if (convert_x)
      tgemm__cpu_to_f32((const char *)x->data + (size_t)(m0 * x->ld) * xsz, x->dtype, m1 - m0, k,
                        x->ld, x_f32, k, threads);
    const float *a = x_f32 ? x_f32 : (const float *)x->data + m0 * x->ld;
    int64_t lda = x_f32 ? k : x->ld;
#pragma omp parallel num_threads(threads)
    {
      int t = omp_get_thread_num(), nt = omp_get_num_threads();
      float *wp = thread_mem + (size_t)t * per_thread;
      float *c = temp_y ? wp + (size_t)panel * (size_t)k : NULL;
      int64_t j0 = 0, j1 = n, i0 = m0, i1 = m1;
      if (nt > 1 && by_cols) {
        int64_t groups = (n + 15) / 16;
        j0 = groups * t / nt * 16;
        j1 = groups * (t + 1) / nt * 16;
        if (j1 > n) j1 = n;
      } else if (nt > 1) {
        i0 = m0 + (m1 - m0) * t / nt;
        i1 = m0 + (m1 - m0) * (t + 1) / nt;
      }
      for (int64_t n0 = j0; n0 < j1 && i0 < i1; n0 += panel) {
        int64_t nc = n0 + panel < j1 ? panel : j1 - n0;
        tgemm__cpu_mx_rows_to_f32(wq, n0, nc, wp, k, 1);
        gemm_part(ops, &out, i0, i1, n0, nc, wp, k, a + (i0 - m0) * lda, lda, c, nc);
      }
    }
  }
  tgemm__cpu_scratch_release(&buf);
  return TGEMM_OK;
}
