/* AVX2 forms of the conversions in cpu_convert.c.  f32 -> bf16 rounds to
 * nearest even and keeps NaN a NaN, exactly like tgemm__f32_to_bf16. */
#include <immintrin.h>
#include <string.h>

#include "cpu/cpu_internal.h"

void tgemm__cpu_row_to_f32_avx2(const void *src, tgemm_dtype dtype, int64_t cols, float *dst) {
  int64_t j = 0;
  if (dtype == TGEMM_BF16) {
    const uint16_t *s = (const uint16_t *)src;
    for (; j + 8 <= cols; j += 8) {
      __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + j)));
      _mm256_storeu_ps(dst + j, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
  } else if (dtype == TGEMM_F16) {
    const uint16_t *s = (const uint16_t *)src;
    for (; j + 8 <= cols; j += 8)
      _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + j))));
  } else {
    memcpy(dst, src, (size_t)cols * sizeof(float));
    return;
  }
  for (; j < cols; j++) dst[j] = tgemm__load_f32(src, (int)dtype, j);
}

/* Eight f32 to bf16 bits in the low half of each 32-bit lane. */
static inline __m256i to_bf16_lanes(__m256 v) {
  __m256i u = _mm256_castps_si256(v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
  rounded = _mm256_srli_epi32(rounded, 16);
  __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

static inline __m256 load_bias8(const tgemm__cpu_out *o, int64_t n) {
  if (!o->bias) return _mm256_setzero_ps();
  if (o->bias_dtype == TGEMM_F32) return _mm256_loadu_ps((const float *)o->bias + n);
  const __m128i *p = (const __m128i *)((const uint16_t *)o->bias + n);
  if (o->bias_dtype == TGEMM_F16) return _mm256_cvtph_ps(_mm_loadu_si128(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p)), 16));
}

void tgemm__cpu_store_row_avx2(const tgemm__cpu_out *o, const float *c, int64_t m, int64_t n0,
                               int64_t n_cols) {
  int64_t j = 0;
  if (o->y_dtype == TGEMM_F32) {
    float *y = (float *)o->y + m * o->ldy + n0;
    for (; j + 8 <= n_cols; j += 8)
      _mm256_storeu_ps(y + j, _mm256_add_ps(_mm256_loadu_ps(c + j), load_bias8(o, n0 + j)));
  } else {
    uint16_t *y = (uint16_t *)o->y + m * o->ldy + n0;
    for (; j + 16 <= n_cols; j += 16) {
      __m256i a = to_bf16_lanes(_mm256_add_ps(_mm256_loadu_ps(c + j), load_bias8(o, n0 + j)));
      __m256i b = to_bf16_lanes(_mm256_add_ps(_mm256_loadu_ps(c + j + 8), load_bias8(o, n0 + j + 8)));
      /* packus works per 128-bit lane; put the quarters back in order */
      __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
      _mm256_storeu_si256((__m256i *)(y + j), packed);
    }
  }
  for (; j < n_cols; j++) tgemm__cpu_out_store(o, m, n0 + j, c[j]);
}
