/* The AVX2/FMA MXFP4 row quantizer: byte-identical to
 * tgemm_mxfp4_quantize_row_ref (tests/test_mxfp4_avx2.c checks it).
 *
 * Eight blocks (256 values) go through together: one pass finds the eight
 * block maxima with integer max on |v| bits and computes the eight scale
 * bytes in one vector; a second pass (from L1) encodes 8 values with one
 * FMA and a few integer ops, then packs codes, signs and nibbles with byte
 * shuffles.  Like all float code in the library it assumes the default
 * rounding mode (nearest even) and no flush-to-zero. */
#include <immintrin.h>
#include <string.h>

#include "mxfp4/mxfp4.h"

#define GROUP_BLOCKS 8
#define GROUP_VALUES (GROUP_BLOCKS * TGEMM__MX_BLOCK)

/* Scale byte of every mode as one formula on a = bits of amax (finite):
 *   byte = max(((a + bias) >> 23) - 2, 0)
 * floor: bias 0 (exponent of amax, minus 2).
 * even:  bias 0x200000 (the carry at significand >= 1.75; a carry into the
 *        all-ones exponent gives 255 - 2 = 253, i.e. s = 126).
 * rceil: bias 0x3fffff (carry exactly when the significand exceeds 1.5).
 * Subnormal amax gives 0 - 2 -> clamped to byte 0, as the reference does. */
static uint32_t scale_bias(tgemm_scale_mode mode) {
  switch (mode) {
    case TGEMM_SCALE_FLOOR: return 0;
    case TGEMM_SCALE_RCEIL: return 0x3fffffu;
    case TGEMM_SCALE_EVEN:
    default: return 0x200000u;
  }
}

/* Per-block constants of the encoder, derived from the scale byte. */
typedef struct block_consts {
  __m256 mult;      /* 2^-s */
  __m256i floor;    /* binade of y = 1 (k = 0), in v's exponent: byte << 23 */
  __m256i offset;   /* ((149 - byte) << 23) - 2 * byte, see below */
} block_consts;

/* The E2M1 magnitude code of y = |v| / 2^s (0 <= y < 8: s >= floor(log2
 * amax) - 2 in every mode; a code of 8 is clamped by the caller).
 *
 * Adding a "magic" number M whose ulp is the E2M1 step at y's binade (0.5
 * below 2, then 1, then 2) rounds y onto the grid, ties to even, and leaves
 * the step count in the low mantissa bits.  M = 2^(22+k) + 2k ulps for
 * binade k = clamp(floor(log2 y), 0, 2): the 2k extra ulps are even, so tie
 * parity is unchanged, and they add the codes below the binade, so the low
 * 4 bits of y + M are the code.  With b = the bits of 2^k,
 * M = b + (22 << 23) - 254 + (b >> 22).
 *
 * b is found from v's exponent bits shifted by s: max(exp(v), byte << 23)
 * is b + (s << 23) (f32 subnormal v lands on k = 0, right since y < 2
 * there), which folds s into the per-block offset.  y is never formed: one
 * FMA computes |v| * 2^-s + M with a single rounding, equal to the
 * reference's exact product then sum (a product below 2^-126 rounds to M
 * either way). */
static inline __m256i encode_magnitude(__m256 v, const block_consts *c) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i exp_mask = _mm256_set1_epi32(0x7f800000);
  __m256i binade = _mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(v), exp_mask), c->floor);
  __m256i magic = _mm256_add_epi32(_mm256_add_epi32(binade, c->offset),
                                   _mm256_srli_epi32(binade, 22));
  __m256 rounded = _mm256_fmadd_ps(_mm256_and_ps(v, abs_mask), c->mult,
                                   _mm256_castsi256_ps(magic));
  return _mm256_and_si256(_mm256_castps_si256(rounded), _mm256_set1_epi32(0xf));
}

/* Quantize one block of 32 values; writes 16 packed bytes. */
static inline void encode_block(const float *src, const block_consts *c, uint8_t *packed) {
  __m256 v[4];
  __m256i code[4];
  for (int k = 0; k < 4; k++) {
    v[k] = _mm256_loadu_ps(src + 8 * k);
    code[k] = encode_magnitude(v[k], c);
  }
  /* Codes and signs to bytes the same way; in-lane packing leaves each
   * 128-bit lane holding elements [0..3] of every vector, then [4..7]. */
  __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(code[0], code[1]),
                                     _mm256_packs_epi32(code[2], code[3]));
  bytes = _mm256_min_epu8(bytes, _mm256_set1_epi8(7)); /* saturate at 6 */
  /* signed saturation keeps each float's sign bit */
  __m256i signs = _mm256_packs_epi16(
      _mm256_packs_epi32(_mm256_castps_si256(v[0]), _mm256_castps_si256(v[1])),
      _mm256_packs_epi32(_mm256_castps_si256(v[2]), _mm256_castps_si256(v[3])));
  bytes = _mm256_blendv_epi8(bytes, _mm256_or_si256(bytes, _mm256_set1_epi8(8)), signs);
  /* Pairs (2j, 2j+1) are adjacent bytes: low + 16 * high. */
  __m256i pairs = _mm256_maddubs_epi16(bytes, _mm256_set1_epi16(0x1001));
  __m256i packed8 = _mm256_packus_epi16(pairs, pairs);
  /* Lane 0 holds 2-byte groups for elements [0..3] of each vector, lane 1
   * for [4..7]: interleave them back into element order. */
  __m128i out = _mm_unpacklo_epi16(_mm256_castsi256_si128(packed8),
                                   _mm256_extracti128_si256(packed8, 1));
  _mm_storeu_si128((__m128i *)packed, out);
}

/* Quantize 256 values: 8 scale bytes and 128 packed bytes. */
static inline void quantize_group(const float *src, uint8_t *packed, uint8_t *scales,
                                  __m256i bias) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  __m256i block_max[GROUP_BLOCKS];
  for (int b = 0; b < GROUP_BLOCKS; b++) {
    const float *p = src + b * TGEMM__MX_BLOCK;
    __m256i m0 = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)p), abs_mask);
    __m256i m1 = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + 8)), abs_mask);
    __m256i m2 = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + 16)), abs_mask);
    __m256i m3 = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + 24)), abs_mask);
    block_max[b] = _mm256_max_epi32(_mm256_max_epi32(m0, m1), _mm256_max_epi32(m2, m3));
  }
  /* Transpose-reduce: lane b of amax = max over block_max[b]. */
  __m256i r[4];
  for (int i = 0; i < 4; i++) {
    __m256i lo = _mm256_unpacklo_epi32(block_max[2 * i], block_max[2 * i + 1]);
    __m256i hi = _mm256_unpackhi_epi32(block_max[2 * i], block_max[2 * i + 1]);
    r[i] = _mm256_max_epi32(lo, hi);
  }
  __m256i q0 = _mm256_max_epi32(_mm256_unpacklo_epi64(r[0], r[1]), _mm256_unpackhi_epi64(r[0], r[1]));
  __m256i q1 = _mm256_max_epi32(_mm256_unpacklo_epi64(r[2], r[3]), _mm256_unpackhi_epi64(r[2], r[3]));
  __m256i amax = _mm256_max_epi32(_mm256_permute2x128_si256(q0, q1, 0x20),
                                  _mm256_permute2x128_si256(q0, q1, 0x31));

  /* NaN or Inf anywhere: |bits| >= 0x7f800000 */
  __m256i bad = _mm256_cmpgt_epi32(amax, _mm256_set1_epi32(0x7f7fffff));
  __m256i byte = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_add_epi32(amax, bias), 23),
                                  _mm256_set1_epi32(2));
  byte = _mm256_max_epi32(byte, _mm256_setzero_si256());
  /* 2^-s = 2^(127 - byte): exponent field 254 - byte, always normal here */
  __m256i mult = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(254), byte), 23);
  __m256i floor = _mm256_slli_epi32(byte, 23);
  __m256i offset = _mm256_sub_epi32(
      _mm256_slli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(149), byte), 23),
      _mm256_add_epi32(byte, byte));
  byte = _mm256_or_si256(byte, bad);

  /* 8 scale bytes: low byte of each dword */
  __m256i gathered = _mm256_shuffle_epi8(
      byte, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                             0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
  uint32_t lo4 = (uint32_t)_mm256_extract_epi32(gathered, 0);
  uint32_t hi4 = (uint32_t)_mm256_extract_epi32(gathered, 4);
  uint64_t all8 = (uint64_t)lo4 | ((uint64_t)hi4 << 32);
  memcpy(scales, &all8, 8);

  int32_t mult_b[GROUP_BLOCKS] __attribute__((aligned(32)));
  int32_t floor_b[GROUP_BLOCKS] __attribute__((aligned(32)));
  int32_t offset_b[GROUP_BLOCKS] __attribute__((aligned(32)));
  _mm256_store_si256((__m256i *)mult_b, mult);
  _mm256_store_si256((__m256i *)floor_b, floor);
  _mm256_store_si256((__m256i *)offset_b, offset);
  for (int b = 0; b < GROUP_BLOCKS; b++) {
    block_consts c = {_mm256_castsi256_ps(_mm256_set1_epi32(mult_b[b])),
                      _mm256_set1_epi32(floor_b[b]), _mm256_set1_epi32(offset_b[b])};
    encode_block(src + b * TGEMM__MX_BLOCK, &c, packed + b * (TGEMM__MX_BLOCK / 2));
  }

  /* Blocks with NaN/Inf: codes are 0 (rare, so fixed up afterwards). */
  unsigned bad_bits = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(bad));
  while (bad_bits) {
    int b = __builtin_ctz(bad_bits);
    memset(packed + b * (TGEMM__MX_BLOCK / 2), 0, TGEMM__MX_BLOCK / 2);
    bad_bits &= bad_bits - 1;
  }
}

void tgemm__mxfp4_quantize_row_avx2(const float *src, int64_t n, uint8_t *packed,
                                    uint8_t *scales, tgemm_scale_mode mode) {
  const __m256i bias = _mm256_set1_epi32((int)scale_bias(mode));
  int64_t i = 0;
  for (; i + GROUP_VALUES <= n; i += GROUP_VALUES)
    quantize_group(src + i, packed + i / 2, scales + i / TGEMM__MX_BLOCK, bias);
  if (i >= n) return;

  /* Ragged tail: zero-pad to a full group (padding encodes as +0 and never
   * raises amax), then keep only the blocks that exist. */
  int64_t left = n - i;
  int64_t tail_blocks = (left + TGEMM__MX_BLOCK - 1) / TGEMM__MX_BLOCK;
  float tail[GROUP_VALUES] __attribute__((aligned(32)));
  uint8_t tail_packed[GROUP_VALUES / 2];
  uint8_t tail_scales[GROUP_BLOCKS];
  memcpy(tail, src + i, (size_t)left * sizeof(float));
  memset(tail + left, 0, (size_t)(GROUP_VALUES - left) * sizeof(float));
  quantize_group(tail, tail_packed, tail_scales, bias);
  memcpy(packed + i / 2, tail_packed, (size_t)tail_blocks * (TGEMM__MX_BLOCK / 2));
  memcpy(scales + i / TGEMM__MX_BLOCK, tail_scales, (size_t)tail_blocks);
}

/* f16 -> f32 with F16C (exact, like tgemm__f16_to_f32), for the f16 input
 * of tgemm__mxfp4_quantize_rows; call only when the CPU has F16C. */
void tgemm__mxfp4_widen_f16_avx2(const uint16_t *src, int64_t n, float *dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
  if (i < n) {
    uint16_t tail[8] = {0};
    float wide[8];
    memcpy(tail, src + i, (size_t)(n - i) * sizeof(uint16_t));
    _mm256_storeu_ps(wide, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tail)));
    memcpy(dst + i, wide, (size_t)(n - i) * sizeof(float));
  }
}
