/* AVX2 kernels of the MXFP4 routes.  Codes are decoded with one pshufb on
 * the nibbles (low nibble = even element, high = odd), so within a block
 * the even elements come first; x is laid out the same way.
 * - W4A16: codes -> int8 (2·value) -> f32, times half the block scale, FMA
 *   against f32 x.  A tile is R weight rows by MT x rows.
 * - W4A4: |w| (unsigned) times x with w's sign (maddubs), pairs summed
 *   (madd) into exact int32, converted, times sx·sw, accumulated in f32.
 * Called only after run-time detection of AVX2, FMA and F16C. */
#include <immintrin.h>
#include <string.h>

#include "cpu/cpu_internal.h"
#include "mxfp4/mxfp4.h"

#define BLOCK TGEMM__MX_BLOCK
#define ALWAYS_INLINE inline __attribute__((always_inline))

static ALWAYS_INLINE __m128i lut128(void) {
  return _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
}

static ALWAYS_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* The 32 codes of a block as int8 (2·value): [even elements | odd ones].
 * The 16 packed bytes go to both halves; the high half is shifted by 4. */
static ALWAYS_INLINE __m256i decode_block(const uint8_t *packed) {
  __m256i p = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)packed));
  __m256i nib = _mm256_and_si256(_mm256_srlv_epi64(p, _mm256_setr_epi64x(0, 0, 4, 4)),
                                 _mm256_set1_epi8(0x0F));
  return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(lut128()), nib);
}

/* ------------------------------------------------------------ helpers */

void tgemm__cpu_w4a16_x_row_avx2(const void *src, tgemm_dtype dtype, int64_t k,
                                 int64_t n_blocks, float *dst) {
  int64_t full = k / BLOCK, b = 0;
  if (dtype == TGEMM_BF16) {
    const uint16_t *s = (const uint16_t *)src;
    const __m256i odd_mask = _mm256_set1_epi32((int)0xFFFF0000u);
    for (; b < full; b++) {
      __m256i v0 = _mm256_loadu_si256((const __m256i *)(s + b * BLOCK));
      __m256i v1 = _mm256_loadu_si256((const __m256i *)(s + b * BLOCK + 16));
      float *d = dst + b * BLOCK;
      _mm256_storeu_ps(d, _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)));
      _mm256_storeu_ps(d + 8, _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)));
      _mm256_storeu_ps(d + 16, _mm256_castsi256_ps(_mm256_and_si256(v0, odd_mask)));
      _mm256_storeu_ps(d + 24, _mm256_castsi256_ps(_mm256_and_si256(v1, odd_mask)));
    }
  }
  for (; b < n_blocks; b++) {
    float *d = dst + b * BLOCK;
    for (int e = 0; e < BLOCK; e++) {
      int64_t j = b * BLOCK + e;
      float v = j < k ? tgemm__load_f32(src, (int)dtype, j) : 0.0f;
      d[(e & 1) ? BLOCK / 2 + e / 2 : e / 2] = v;
    }
  }
}

void tgemm__cpu_mx_codes_row_avx2(const uint8_t *packed, int64_t n_blocks, int8_t *dst) {
  for (int64_t b = 0; b < n_blocks; b++)
    _mm256_storeu_si256((__m256i *)(dst + b * BLOCK), decode_block(packed + b * 16));
}

void tgemm__cpu_mx_row_to_f32_avx2(const uint8_t *packed, const uint8_t *scales, int64_t k,
                                   float *dst) {
  int64_t full = k / BLOCK, b = 0;
  for (; b < full; b++) {
    __m256i c = decode_block(packed + b * 16);
    /* back to natural order: interleave even and odd codes */
    __m128i even = _mm256_castsi256_si128(c), odd = _mm256_extracti128_si256(c, 1);
    __m128i n0 = _mm_unpacklo_epi8(even, odd), n1 = _mm_unpackhi_epi8(even, odd);
    __m256 s = _mm256_set1_ps(0.5f * tgemm__cpu_e8m0(scales[b]));
    float *d = dst + b * BLOCK;
    _mm256_storeu_ps(d, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(n0)), s));
    _mm256_storeu_ps(d + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                              _mm_unpackhi_epi64(n0, n0))), s));
    _mm256_storeu_ps(d + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(n1)), s));
    _mm256_storeu_ps(d + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                               _mm_unpackhi_epi64(n1, n1))), s));
  }
  if (b * BLOCK < k)
    tgemm__cpu_mx_row_to_f32(packed + b * 16, scales + b, k - b * BLOCK, dst + b * BLOCK);
}

/* -------------------------------------------------------------- W4A16 */

/* Bias and store of a tile, out of line to keep the kernels small. */
static __attribute__((noinline)) void store_tile(const tgemm__cpu_mx_args *a, int64_t n0,
                                                 int64_t m0, int mt, int rows, const float *sums,
                                                 float factor) {
  for (int i = 0; i < mt; i++)
    for (int r = 0; r < rows; r++)
      tgemm__cpu_out_store(&a->out, m0 + i, n0 + r, sums[i * rows + r] * factor);
}

/* W4A16 for M <= 2, decoding straight into registers.  Each block's dot
 * product is formed unscaled and then scaled by one FMA into the running
 * sum, which leaves one dependent FMA per block on the accumulator. */
static ALWAYS_INLINE void w4a16_tile(const tgemm__cpu_mx_args *a, int64_t n0, int64_t m0,
                                     const int MT, const int R) {
  const int64_t kq = a->n_blocks * BLOCK;
  const float *x = a->xf + m0 * kq;
  const uint8_t *wp[4], *ws[4];
  __m256 acc[8][4];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++) {
    wp[r] = a->w_packed + (n0 + r) * a->ldw_packed;
    ws[r] = a->w_scales + (n0 + r) * a->ldw_scales;
  }
#pragma GCC unroll 8
  for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[i][r] = _mm256_setzero_ps();
  const __m128i lut = lut128(), low4 = _mm_set1_epi8(0x0F);

  for (int64_t b = 0; b < a->n_blocks; b++) {
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      __m128i p = _mm_loadu_si128((const __m128i *)(wp[r] + b * 16));
      __m128i ev = _mm_shuffle_epi8(lut, _mm_and_si128(p, low4));
      __m128i od = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(p, 4), low4));
      __m256 s = _mm256_set1_ps(0.5f * tgemm__cpu_e8m0(ws[r][b]));
      __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(ev));
      __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(ev, ev)));
      __m256 w2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(od));
      __m256 w3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(od, od)));
#pragma GCC unroll 8
      for (int i = 0; i < MT; i++) {
        const float *xr = x + i * kq + b * BLOCK;
        __m256 t = _mm256_mul_ps(w0, _mm256_load_ps(xr));
        t = _mm256_fmadd_ps(w1, _mm256_load_ps(xr + 8), t);
        t = _mm256_fmadd_ps(w2, _mm256_load_ps(xr + 16), t);
        t = _mm256_fmadd_ps(w3, _mm256_load_ps(xr + 24), t);
        acc[i][r] = _mm256_fmadd_ps(t, s, acc[i][r]);
      }
    }
  }
  float sums[8 * 4];
#pragma GCC unroll 8
  for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) sums[i * R + r] = hsum(acc[i][r]);
  store_tile(a, n0, m0, MT, R, sums, 1.0f);
}

/* W4A16 for M > 2: per group of R weight rows, a chunk of K is decoded
 * once into f32 (L1-resident), then multiplied against every x row with
 * the dense f32 tile below; partial sums are kept per chunk.  Decoding
 * directly into registers (w4a16_tile) would redo it for every tile of x
 * rows, or keep too many vectors live. */
#define W4A16_KC 512      /* K values per chunk (16 blocks) */
#define W4A16_M_BLOCK 64  /* x rows whose partial sums live on the stack */

static ALWAYS_INLINE void decode_f32_blocks(const uint8_t *wp, const uint8_t *ws, int64_t b0,
                                            int64_t b1, float *dst) {
  const __m128i lut = lut128(), low4 = _mm_set1_epi8(0x0F);
  for (int64_t b = b0; b < b1; b++) {
    __m128i p = _mm_loadu_si128((const __m128i *)(wp + b * 16));
    __m128i ev = _mm_shuffle_epi8(lut, _mm_and_si128(p, low4));
    __m128i od = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(p, 4), low4));
    __m256 s = _mm256_set1_ps(0.5f * tgemm__cpu_e8m0(ws[b]));
    float *d = dst + (b - b0) * BLOCK;
    _mm256_store_ps(d, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(ev)), s));
    _mm256_store_ps(d + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                             _mm_unpackhi_epi64(ev, ev))), s));
    _mm256_store_ps(d + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(od)), s));
    _mm256_store_ps(d + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                              _mm_unpackhi_epi64(od, od))), s));
  }
}

/* MT x rows (stride ldx) against R decoded rows (stride W4A16_KC) over kc
 * values (a multiple of 32); adds to sums[i * R + r]. */
static ALWAYS_INLINE void f32_tile(const float *x, int64_t ldx, const float *wbuf, int64_t kc,
                                   const int MT, const int R, float *sums) {
  const bool dual = MT * R <= 4;
  const bool x_in_regs = MT * R * (dual ? 2 : 1) + 2 * R + 2 <= 16;
  __m256 acc[8][4], acc2[8][4];
#pragma GCC unroll 8
  for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[i][r] = acc2[i][r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k += 16) {
    if (x_in_regs) {
      __m256 wl[4], wh[4];
#pragma GCC unroll 4
      for (int r = 0; r < R; r++) {
        wl[r] = _mm256_load_ps(wbuf + r * W4A16_KC + k);
        wh[r] = _mm256_load_ps(wbuf + r * W4A16_KC + k + 8);
      }
#pragma GCC unroll 8
      for (int i = 0; i < MT; i++) {
        __m256 xl = _mm256_load_ps(x + i * ldx + k), xh = _mm256_load_ps(x + i * ldx + k + 8);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
          acc[i][r] = _mm256_fmadd_ps(wl[r], xl, acc[i][r]);
          if (dual) acc2[i][r] = _mm256_fmadd_ps(wh[r], xh, acc2[i][r]);
          else acc[i][r] = _mm256_fmadd_ps(wh[r], xh, acc[i][r]);
        }
      }
    } else {
#pragma GCC unroll 4
      for (int r = 0; r < R; r++) {
        __m256 wl = _mm256_load_ps(wbuf + r * W4A16_KC + k);
        __m256 wh = _mm256_load_ps(wbuf + r * W4A16_KC + k + 8);
#pragma GCC unroll 8
        for (int i = 0; i < MT; i++) {
          acc[i][r] = _mm256_fmadd_ps(wl, _mm256_load_ps(x + i * ldx + k), acc[i][r]);
          if (dual) acc2[i][r] = _mm256_fmadd_ps(wh, _mm256_load_ps(x + i * ldx + k + 8), acc2[i][r]);
          else acc[i][r] = _mm256_fmadd_ps(wh, _mm256_load_ps(x + i * ldx + k + 8), acc[i][r]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) sums[i * R + r] += hsum(_mm256_add_ps(acc[i][r], acc2[i][r]));
}

static ALWAYS_INLINE void w4a16_group_chunked(const tgemm__cpu_mx_args *a, int64_t n0,
                                              const int R) {
  _Alignas(32) float wbuf[4 * W4A16_KC];
  float sums[W4A16_M_BLOCK * 4];
  const int64_t nb = a->n_blocks, kq = nb * BLOCK, chunk_blocks = W4A16_KC / BLOCK;
  const int mt_max = 8 / R;
  for (int64_t mb = 0; mb < a->m; mb += W4A16_M_BLOCK) {
    int64_t mc = a->m - mb < W4A16_M_BLOCK ? a->m - mb : W4A16_M_BLOCK;
    memset(sums, 0, sizeof sums);
    for (int64_t b0 = 0; b0 < nb; b0 += chunk_blocks) {
      int64_t b1 = b0 + chunk_blocks < nb ? b0 + chunk_blocks : nb, kc = (b1 - b0) * BLOCK;
#pragma GCC unroll 4
      for (int r = 0; r < R; r++)
        decode_f32_blocks(a->w_packed + (n0 + r) * a->ldw_packed,
                          a->w_scales + (n0 + r) * a->ldw_scales, b0, b1, wbuf + r * W4A16_KC);
      const float *x = a->xf + mb * kq + b0 * BLOCK;
      int64_t m0 = 0;
      for (; m0 + mt_max <= mc; m0 += mt_max)
        f32_tile(x + m0 * kq, kq, wbuf, kc, mt_max, R, sums + m0 * R);
      if (mt_max > 4 && m0 + 4 <= mc) {
        f32_tile(x + m0 * kq, kq, wbuf, kc, 4, R, sums + m0 * R);
        m0 += 4;
      }
      if (mt_max > 2 && m0 + 2 <= mc) {
        f32_tile(x + m0 * kq, kq, wbuf, kc, 2, R, sums + m0 * R);
        m0 += 2;
      }
      if (mt_max > 1 && m0 < mc) f32_tile(x + m0 * kq, kq, wbuf, kc, 1, R, sums + m0 * R);
    }
    store_tile(a, n0, mb, (int)mc, R, sums, 1.0f);
  }
}

/* -------------------------------------------------------------- W4A4 */

static ALWAYS_INLINE void w4a4_tile(const tgemm__cpu_mx_args *a, int64_t n0, int64_t m0,
                                    const int MT, const int R) {
  const int64_t nb = a->n_blocks, kq = nb * BLOCK;
  const int8_t *xq = a->xq + m0 * kq;
  const float *xs = a->xs + m0 * nb;
  const uint8_t *wp[4], *ws[4];
  __m256 acc[8][4];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++) {
    wp[r] = a->w_packed + (n0 + r) * a->ldw_packed;
    ws[r] = a->w_scales + (n0 + r) * a->ldw_scales;
  }
#pragma GCC unroll 8
  for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[i][r] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);

  for (int64_t b = 0; b < nb; b++) {
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      __m256i wv = decode_block(wp[r] + b * 16);
      __m256i wabs = _mm256_abs_epi8(wv);
      __m256 wsc = _mm256_set1_ps(tgemm__cpu_e8m0(ws[r][b]));
#pragma GCC unroll 8
      for (int i = 0; i < MT; i++) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + i * kq + b * BLOCK));
        /* |w| * (x with w's sign): at most 2 * 12 * 12 per int16 pair */
        __m256i p16 = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(xv, wv));
        __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
        __m256 sc = _mm256_mul_ps(_mm256_broadcast_ss(xs + i * nb + b), wsc);
        acc[i][r] = _mm256_fmadd_ps(dot, sc, acc[i][r]);
      }
    }
  }
  float sums[8 * 4];
#pragma GCC unroll 8
  for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) sums[i * R + r] = hsum(acc[i][r]);
  /* codes are 2·value on both sides */
  store_tile(a, n0, m0, MT, R, sums, 0.25f);
}

/* ------------------------------------------------------ tiling, shared */

/* kind 0 = W4A16, 1 = W4A4.  Tiles of 8/R x rows, then what is left in
 * tiles of 4, 2 and 1 (fewer instantiations, less code). */
static ALWAYS_INLINE void mx_tile(const tgemm__cpu_mx_args *a, int64_t n0, int64_t m0,
                                  const int MT, const int R, const int kind) {
  if (kind == 0) w4a16_tile(a, n0, m0, MT, R);
  else w4a4_tile(a, n0, m0, MT, R);
}

static ALWAYS_INLINE void mx_group(const tgemm__cpu_mx_args *a, int64_t n0, const int R,
                                   const int kind) {
  if (kind == 0 && a->m > 2) {
    w4a16_group_chunked(a, n0, R);
    return;
  }
  /* (W4A16 gets here with at most 2 x rows) */
  const int mt_max = kind == 0 ? (R < 2 ? 2 : 8 / R < 2 ? 8 / R : 2) : 8 / R;
  int64_t m0 = 0;
  for (; m0 + mt_max <= a->m; m0 += mt_max) mx_tile(a, n0, m0, mt_max, R, kind);
  if (mt_max > 4 && m0 + 4 <= a->m) {
    mx_tile(a, n0, m0, 4, R, kind);
    m0 += 4;
  }
  if (mt_max > 2 && m0 + 2 <= a->m) {
    mx_tile(a, n0, m0, 2, R, kind);
    m0 += 2;
  }
  if (mt_max > 1 && m0 < a->m) mx_tile(a, n0, m0, 1, R, kind);
}

static void w4a16_r1(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1) {
  for (; n0 < n1; n0++) mx_group(a, n0, 1, 0);
}
static void w4a16_r2(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1) {
  for (; n0 + 2 <= n1; n0 += 2) mx_group(a, n0, 2, 0);
  w4a16_r1(a, n0, n1);
}
static void w4a16_r4(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1) {
  for (; n0 + 4 <= n1; n0 += 4) mx_group(a, n0, 4, 0);
  w4a16_r1(a, n0, n1);
}
static void w4a4_r1(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1) {
  for (; n0 < n1; n0++) mx_group(a, n0, 1, 1);
}
static void w4a4_r2(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1) {
  for (; n0 + 2 <= n1; n0 += 2) mx_group(a, n0, 2, 1);
  w4a4_r1(a, n0, n1);
}
static void w4a4_r4(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1) {
  for (; n0 + 4 <= n1; n0 += 4) mx_group(a, n0, 4, 1);
  w4a4_r1(a, n0, n1);
}

void tgemm__cpu_w4a16_rows_avx2(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1) {
  if (a->rows_per_step >= 4) w4a16_r4(a, n0, n1);
  else if (a->rows_per_step >= 2) w4a16_r2(a, n0, n1);
  else w4a16_r1(a, n0, n1);
}

void tgemm__cpu_w4a4_rows_avx2(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1) {
  if (a->rows_per_step >= 4) w4a4_r4(a, n0, n1);
  else if (a->rows_per_step >= 2) w4a4_r2(a, n0, n1);
  else w4a4_r1(a, n0, n1);
}
