/* Direct OpenBLAS sgemm timing for the CPU bench (see bench_openblas.h). */
#include "bench_openblas.h"

#include <cblas.h>
#include <stdlib.h>

#include "tune/timing.h"

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

tgemm_status bench_openblas_sgemm(tgemm_ctx *ctx, const tgemm__shape *shape, int max_reps,
                                  double max_seconds, tgemm__flush_mode flush, double *median_us) {
  size_t xs = (size_t)(shape->m * shape->k), ws = (size_t)(shape->n * shape->k),
         ys = (size_t)(shape->m * shape->n);
  float *x = malloc(xs * 4), *w = malloc(ws * 4), *y = malloc(ys * 4);
  double *samples = malloc((size_t)max_reps * sizeof(double));
  tgemm_status st = TGEMM_OK;
  if (!x || !w || !y || !samples) {
    st = tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "bench: no memory for the OpenBLAS operands");
    goto done;
  }
  /* Cheap deterministic values in [-1, 1): the speed of sgemm does not
   * depend on the distribution, only on finite non-zero data. */
  uint32_t state = 12345;
  for (size_t i = 0; i < xs; i++) x[i] = (float)((state = state * 1664525u + 1013904223u) >> 8) / 8388608.0f - 1.0f;
  for (size_t i = 0; i < ws; i++) w[i] = (float)((state = state * 1664525u + 1013904223u) >> 8) / 8388608.0f - 1.0f;
  /* The CPU backend runs OpenBLAS single-threaded inside its own OpenMP
   * threads; the yardstick is OpenBLAS as a user calls it, on all the
   * context's threads. */
  openblas_set_num_threads(ctx->device_key.units);
  int n_samples = 0;
  double start = tgemm__now_s();
  for (int r = -1; r < max_reps; r++) { /* r = -1 is the warm-up */
    if ((st = ctx->backend->flush_cache(ctx, flush)) != TGEMM_OK) goto done;
    double t0 = tgemm__now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)shape->m, (int)shape->n, (int)shape->k, 1.0f, x,
                (int)shape->k, w, (int)shape->k, 0.0f, y, (int)shape->n);
    double t1 = tgemm__now_s();
    if (r >= 0) samples[n_samples++] = (t1 - t0) * 1e6;
    if (r >= 0 && t1 - start > max_seconds) break;
  }
  openblas_set_num_threads(1);
  qsort(samples, (size_t)n_samples, sizeof(double), compare_double);
  *median_us = samples[n_samples / 2];
done:
  free(x), free(w), free(y), free(samples);
  return st;
}
