/* Whole-block conversions around the BLAS-based kernels: dense rows into
 * f32, and an f32 result plus bias into y.  AVX2 forms in
 * cpu_convert_avx2.c. */
#include <omp.h>

#include "core/cpu_features.h"
#include "cpu/cpu_internal.h"

/* Below this many values one thread does it faster than two. */
#define PARALLEL_MIN_VALUES (1 << 17)

static bool use_avx2(void) {
  const struct tgemm__cpu_features *f = tgemm__cpu_features();
  return f->avx2 && f->fma && f->f16c;
}

void tgemm__cpu_to_f32(const void *src, tgemm_dtype dtype, int64_t rows, int64_t cols,
                       int64_t ld, float *dst, int64_t ldd, int n_threads) {
  size_t esz = tgemm_dtype_size(dtype);
  bool vec = use_avx2();
  int use = rows * cols >= PARALLEL_MIN_VALUES ? n_threads : 1;
#pragma omp parallel for num_threads(use) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const char *row = (const char *)src + (size_t)(i * ld) * esz;
    float *out = dst + i * ldd;
    if (vec) {
      tgemm__cpu_row_to_f32_avx2(row, dtype, cols, out);
    } else {
      for (int64_t j = 0; j < cols; j++) out[j] = tgemm__load_f32(row, (int)dtype, j);
    }
  }
}

void tgemm__cpu_store_block(const tgemm__cpu_out *o, const float *c, int64_t ldc, int64_t m0,
                            int64_t m1, int64_t n0, int64_t n_cols, int n_threads) {
  bool vec = use_avx2();
  int use = (m1 - m0) * n_cols >= PARALLEL_MIN_VALUES ? n_threads : 1;
#pragma omp parallel for num_threads(use) schedule(static)
  for (int64_t i = m0; i < m1; i++) {
    const float *crow = c + (i - m0) * ldc;
    if (vec) {
      tgemm__cpu_store_row_avx2(o, crow, i, n0, n_cols);
    } else {
      for (int64_t j = 0; j < n_cols; j++) tgemm__cpu_out_store(o, i, n0 + j, crow[j]);
    }
  }
}
