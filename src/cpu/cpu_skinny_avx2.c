/* AVX2 + FMA kernel of the skinny route.  A tile is R weight rows by MT
 * activation rows with MT * R <= 8 accumulators; K advances 16 values per
 * step.  bf16 weights are widened without shuffles: in each 32-bit lane
 * of a 16-value load, a shift by 16 gives the even element and a mask the
 * odd one, so x is stored with each step's even elements first
 * (tgemm__cpu_skinny_convert_x_avx2).  Called only after run-time
 * detection of AVX2, FMA and F16C. */
#include <immintrin.h>
#include <string.h>

#include "cpu/cpu_internal.h"

#define STEP TGEMM__CPU_DENSE_STEP
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* ------------------------------------------------------- x conversion */

void tgemm__cpu_skinny_convert_x_avx2(const tgemm_matrix *x, tgemm_dtype w_dtype,
                                      int64_t kpad, float *xf) {
  size_t esz = tgemm_dtype_size(x->dtype);
  int64_t k = x->cols, kmain = k / STEP * STEP;
  bool split = w_dtype == TGEMM_BF16;
  const __m256i odd_mask = _mm256_set1_epi32((int)0xFFFF0000u);
  for (int64_t i = 0; i < x->rows; i++) {
    const char *row = (const char *)x->data + (size_t)(i * x->ld) * esz;
    float *dst = xf + i * kpad;
    int64_t j = 0;
    if (split && x->dtype == TGEMM_BF16) {
      for (; j < kmain; j += STEP) {
        __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + j));
        _mm256_storeu_ps(dst + j, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        _mm256_storeu_ps(dst + j + 8, _mm256_castsi256_ps(_mm256_and_si256(v, odd_mask)));
      }
    } else if (!split && x->dtype == TGEMM_F16) {
      for (; j < kmain; j += 8)
        _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(
                                      (const __m128i *)((const uint16_t *)row + j))));
    } else if (!split && x->dtype == TGEMM_F32) {
      memcpy(dst, row, (size_t)kmain * sizeof(float));
      j = kmain;
    }
    /* What is left (the tail, or an x dtype unlike the weight's). */
    for (; j < kpad; j++) {
      float v = j < k ? tgemm__load_f32(row, (int)x->dtype, j) : 0.0f;
      int64_t pos = j;
      if (split) {
        int64_t base = j / STEP * STEP, lane = j - base;
        pos = base + ((lane & 1) ? STEP / 2 + lane / 2 : lane / 2);
      }
      dst[pos] = v;
    }
  }
}

/* ------------------------------------------------------------ kernels */

/* Two 8-wide f32 vectors from 16 weights at w + k: (even, odd) elements
 * for bf16, (first 8, last 8) otherwise. */
static ALWAYS_INLINE void load_w16(const void *w, int64_t k, int dtype, __m256 *lo, __m256 *hi) {
  if (dtype == TGEMM_BF16) {
    __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k));
    *lo = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    *hi = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000u)));
  } else if (dtype == TGEMM_F16) {
    const uint16_t *p = (const uint16_t *)w + k;
    *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    *hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
  } else {
    const float *p = (const float *)w + k;
    *lo = _mm256_loadu_ps(p);
    *hi = _mm256_loadu_ps(p + 8);
  }
}

/* Where x value k sits in xf (see tgemm__cpu_skinny_convert_x_avx2). */
static ALWAYS_INLINE int64_t x_pos(int64_t k, int dtype) {
  if (dtype != TGEMM_BF16) return k;
  int64_t base = k / STEP * STEP, lane = k - base;
  return base + ((lane & 1) ? STEP / 2 + lane / 2 : lane / 2);
}

static ALWAYS_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* The end of a tile, out of line to keep the kernels small: the last
 * partial step of K in scalar code (never reading past a row), then the
 * bias and the store. */
static __attribute__((noinline)) void finish_tile(const tgemm__cpu_skinny_args *a, int64_t n0,
                                                  int64_t m0, int mt, int rows, float *sums) {
  const int64_t kmain = a->k / STEP * STEP;
  const size_t esz = tgemm_dtype_size(a->w_dtype);
  for (int i = 0; i < mt; i++)
    for (int r = 0; r < rows; r++) {
      const char *w = (const char *)a->w + (size_t)((n0 + r) * a->ldw) * esz;
      const float *x = a->xf + (m0 + i) * a->kpad;
      float sum = sums[i * rows + r];
      for (int64_t k = kmain; k < a->k; k++)
        sum += tgemm__load_f32(w, (int)a->w_dtype, k) * x[x_pos(k, (int)a->w_dtype)];
      tgemm__cpu_out_store(&a->out, m0 + i, n0 + r, sum);
    }
}

/* MT activation rows from m0 against R weight rows from n0.  With few
 * accumulators, even and odd halves get their own, so that enough
 * independent FMA chains are in flight. */
static ALWAYS_INLINE void tile(const tgemm__cpu_skinny_args *a, int64_t n0, int64_t m0,
                               const int MT, const int R, const int dtype) {
  const size_t esz = dtype == TGEMM_F32 ? 4 : 2;
  const bool dual = MT * R <= 4;
  const int64_t kpad = a->kpad, kmain = a->k / STEP * STEP;
  const float *x = a->xf + m0 * kpad;
  const char *w[8];
  __m256 acc[8][8], acc2[8][8];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) w[r] = (const char *)a->w + (size_t)((n0 + r) * a->ldw) * esz;
#pragma GCC unroll 8
  for (int i = 0; i < MT; i++)
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc[i][r] = acc2[i][r] = _mm256_setzero_ps();

  /* With registers to spare, each weight and x vector is loaded once per
   * step; otherwise (16 ymm registers) x is re-read from L1 for each
   * weight row, which costs less than spilling accumulators. */
  const bool x_in_regs = MT * R * (dual ? 2 : 1) + 2 * R + 2 <= 16;
  for (int64_t k = 0; k < kmain; k += STEP) {
    if (x_in_regs) {
      __m256 wl[8], wh[8];
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) load_w16(w[r], k, dtype, &wl[r], &wh[r]);
#pragma GCC unroll 8
      for (int i = 0; i < MT; i++) {
        const float *xr = x + i * kpad + k;
        __m256 xl = _mm256_load_ps(xr), xh = _mm256_load_ps(xr + 8);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
          acc[i][r] = _mm256_fmadd_ps(wl[r], xl, acc[i][r]);
          if (dual) acc2[i][r] = _mm256_fmadd_ps(wh[r], xh, acc2[i][r]);
          else acc[i][r] = _mm256_fmadd_ps(wh[r], xh, acc[i][r]);
        }
      }
    } else {
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        __m256 wl, wh;
        load_w16(w[r], k, dtype, &wl, &wh);
#pragma GCC unroll 8
        for (int i = 0; i < MT; i++) {
          const float *xr = x + i * kpad + k;
          acc[i][r] = _mm256_fmadd_ps(wl, _mm256_load_ps(xr), acc[i][r]);
          if (dual) acc2[i][r] = _mm256_fmadd_ps(wh, _mm256_load_ps(xr + 8), acc2[i][r]);
          else acc[i][r] = _mm256_fmadd_ps(wh, _mm256_load_ps(xr + 8), acc[i][r]);
        }
      }
    }
  }
  float sums[8 * 8];
#pragma GCC unroll 8
  for (int i = 0; i < MT; i++)
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) sums[i * R + r] = hsum(_mm256_add_ps(acc[i][r], acc2[i][r]));
  finish_tile(a, n0, m0, MT, R, sums);
}

/* All activation rows against R weight rows: tiles of 8/R rows, then what
 * is left in tiles of 4, 2 and 1 (fewer instantiations, less code). */
static ALWAYS_INLINE void row_group(const tgemm__cpu_skinny_args *a, int64_t n0, const int R,
                                    const int dtype) {
  const int mt_max = 8 / R;
  int64_t m0 = 0;
  for (; m0 + mt_max <= a->m; m0 += mt_max) tile(a, n0, m0, mt_max, R, dtype);
  if (mt_max > 4 && m0 + 4 <= a->m) {
    tile(a, n0, m0, 4, R, dtype);
    m0 += 4;
  }
  if (mt_max > 2 && m0 + 2 <= a->m) {
    tile(a, n0, m0, 2, R, dtype);
    m0 += 2;
  }
  if (mt_max > 1 && m0 < a->m) tile(a, n0, m0, 1, R, dtype);
}

/* Rows [n0, n1) in groups of R; (n1 - n0) is a multiple of R. */
static ALWAYS_INLINE void row_range(const tgemm__cpu_skinny_args *a, int64_t n0, int64_t n1,
                                    const int R, const int dtype) {
  for (; n0 < n1; n0 += R) row_group(a, n0, R, dtype);
}

/* One instantiation per (dtype, R); rows past the last full group of R go
 * through the R = 1 one. */
#define TGEMM__SKINNY_R1(dt_name, dt)                                                \
  static void rows_##dt_name##_r1(const tgemm__cpu_skinny_args *a, int64_t n0,     \
                                  int64_t n1) {                                    \
    row_range(a, n0, n1, 1, dt);                                                   \
  }
#define TGEMM__SKINNY_FN(dt_name, dt, R)                                             \
  static void rows_##dt_name##_r##R(const tgemm__cpu_skinny_args *a, int64_t n0,  \
                                     int64_t n1) {                                \
    int64_t full = n0 + (n1 - n0) / R * R;                                        \
    row_range(a, n0, full, R, dt);                                                \
    if (full < n1) rows_##dt_name##_r1(a, full, n1);                              \
  }
TGEMM__SKINNY_R1(bf16, TGEMM_BF16)
TGEMM__SKINNY_FN(bf16, TGEMM_BF16, 2)
TGEMM__SKINNY_FN(bf16, TGEMM_BF16, 4)
TGEMM__SKINNY_FN(bf16, TGEMM_BF16, 8)
TGEMM__SKINNY_R1(f16, TGEMM_F16)
TGEMM__SKINNY_FN(f16, TGEMM_F16, 2)
TGEMM__SKINNY_FN(f16, TGEMM_F16, 4)
TGEMM__SKINNY_FN(f16, TGEMM_F16, 8)
TGEMM__SKINNY_R1(f32, TGEMM_F32)
TGEMM__SKINNY_FN(f32, TGEMM_F32, 2)
TGEMM__SKINNY_FN(f32, TGEMM_F32, 4)
TGEMM__SKINNY_FN(f32, TGEMM_F32, 8)
#undef TGEMM__SKINNY_R1
#undef TGEMM__SKINNY_FN

typedef void (*rows_fn)(const tgemm__cpu_skinny_args *, int64_t, int64_t);

void tgemm__cpu_skinny_rows_avx2(const tgemm__cpu_skinny_args *a, int64_t n0, int64_t n1) {
  static const rows_fn table[3][4] = {
      {rows_f32_r1, rows_f32_r2, rows_f32_r4, rows_f32_r8},
      {rows_f16_r1, rows_f16_r2, rows_f16_r4, rows_f16_r8},
      {rows_bf16_r1, rows_bf16_r2, rows_bf16_r4, rows_bf16_r8},
  };
  int d = a->w_dtype == TGEMM_F32 ? 0 : a->w_dtype == TGEMM_F16 ? 1 : 2;
  int r = a->rows_per_step >= 8 ? 3 : a->rows_per_step >= 4 ? 2 : a->rows_per_step >= 2 ? 1 : 0;
  table[d][r](a, n0, n1);
}
