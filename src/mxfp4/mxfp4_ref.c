/* The MXFP4 reference: E2M1 codes, the E8M0 scale rule and the scalar row
 * quantizer every other quantizer must match byte for byte (DESIGN.md §3).
 * Written for clarity, not speed. */
#include <math.h>
#include <string.h>

#include "core/dtype_convert.h"
#include "mxfp4/mxfp4.h"

const float tgemm__e2m1_value[16] = {
    0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f,
};

/* floor(log2(a)) for a finite a > 0, subnormals included. */
static int floor_log2(float a) {
  uint32_t u = tgemm__f32_bits(a) & 0x7fffffffu;
  uint32_t biased = u >> 23;
  if (biased) return (int)biased - 127;
  return (31 - __builtin_clz(u)) - 149; /* top set bit of the subnormal */
}

/* Whether a's significand (normalized to [1, 2)) is above 1.5. */
static int significand_above_1_5(float a) {
  uint32_t u = tgemm__f32_bits(a) & 0x7fffffffu;
  if (u >> 23) return (u & 0x7fffffu) > 0x400000u;
  int top = 31 - __builtin_clz(u);
  if (top == 0) return 0; /* 2^-149: significand 1 */
  uint32_t below_top = u - (1u << top);
  return below_top > (1u << (top - 1));
}

uint8_t tgemm__mxfp4_scale_byte(float amax, tgemm_scale_mode mode) {
  int s;
  switch (mode) {
    case TGEMM_SCALE_FLOOR:
      s = floor_log2(amax) - 2;
      break;
    case TGEMM_SCALE_RCEIL:
      /* 6·2^s = 1.5·2^(s+2): amax fits at s = e-2 unless its significand
       * exceeds 1.5. */
      s = floor_log2(amax) - 2 + significand_above_1_5(amax);
      break;
    case TGEMM_SCALE_EVEN:
    default: {
      uint32_t rounded = (tgemm__f32_bits(amax) & 0x7fffffffu) + 0x200000u;
      uint32_t biased = (rounded >> 23) & 0xffu;
      if (biased == 0) {
        s = -127; /* log2(0) = -inf: clamped below */
      } else if (biased == 0xffu) {
        s = 128 - 2; /* the carry reached the all-ones exponent */
      } else {
        s = (int)biased - 127 - 2;
      }
      break;
    }
  }
  if (s < -127) s = -127;
  if (s > 127) s = 127;
  return (uint8_t)(s + 127);
}

uint8_t tgemm__e2m1_encode(float scaled) {
  /* Midpoints between neighbouring magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6.
   * At an exact midpoint the even code (the upper one after 0.75, 1.75 and
   * 3.5, the lower one after 0.25, 1.25, 2.5 and 5) wins. */
  static const float midpoint[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  uint8_t sign = signbit(scaled) ? 8u : 0u;
  if (isnan(scaled)) return 0;
  float a = fabsf(scaled);
  if (a > 6.0f) a = 6.0f;
  /* The code is the number of midpoints a has passed (the midpoints
   * increase); a tie passes when the code above it is even. */
  int code = 0;
  for (int k = 0; k < 7; k++) {
    int upper_is_even = (k + 1) % 2 == 0;
    code += a > midpoint[k] || (a == midpoint[k] && upper_is_even);
  }
  return (uint8_t)(code | sign);
}

float tgemm__e8m0_to_f32(uint8_t byte) {
  if (byte == TGEMM__MX_NAN_SCALE) return NAN;
  if (byte == 0) return ldexpf(1.0f, -127); /* subnormal, exact */
  return tgemm__bits_f32((uint32_t)byte << 23);
}

/* v / 2^s exactly: s is in [-127, 127], so 2^-s is at worst subnormal
 * (s = 127) and ldexpf rounds only results far below 0.25. */
static float divide_by_pow2(float v, int s) {
  if (s <= 126) return v * tgemm__bits_f32((uint32_t)(127 - s) << 23);
  return ldexpf(v, -s);
}

static void quantize_block(const float *v, int count, uint8_t *packed,
                           uint8_t *scale, tgemm_scale_mode mode) {
  float block[TGEMM__MX_BLOCK];
  for (int i = 0; i < TGEMM__MX_BLOCK; i++) block[i] = i < count ? v[i] : 0.0f;

  float amax = 0.0f;
  for (int i = 0; i < TGEMM__MX_BLOCK; i++) {
    if (!isfinite(block[i])) {
      *scale = TGEMM__MX_NAN_SCALE;
      memset(packed, 0, TGEMM__MX_BLOCK / 2);
      return;
    }
    if (fabsf(block[i]) > amax) amax = fabsf(block[i]);
  }

  uint8_t codes[TGEMM__MX_BLOCK];
  if (amax == 0.0f) {
    *scale = 0;
    for (int i = 0; i < TGEMM__MX_BLOCK; i++) codes[i] = signbit(block[i]) ? 8u : 0u;
  } else {
    *scale = tgemm__mxfp4_scale_byte(amax, mode);
    int s = (int)*scale - 127;
    for (int i = 0; i < TGEMM__MX_BLOCK; i++)
      codes[i] = tgemm__e2m1_encode(divide_by_pow2(block[i], s));
  }
  for (int j = 0; j < TGEMM__MX_BLOCK / 2; j++)
    packed[j] = (uint8_t)(codes[2 * j] | (codes[2 * j + 1] << 4));
}

void tgemm_mxfp4_quantize_row_ref(const float *src, int64_t n, uint8_t *packed,
                                  uint8_t *scales, tgemm_scale_mode mode) {
  for (int64_t b = 0; b * TGEMM__MX_BLOCK < n; b++) {
    int64_t left = n - b * TGEMM__MX_BLOCK;
    int count = left < TGEMM__MX_BLOCK ? (int)left : TGEMM__MX_BLOCK;
    quantize_block(src + b * TGEMM__MX_BLOCK, count,
                   packed + b * (TGEMM__MX_BLOCK / 2), scales + b, mode);
  }
}

void tgemm_mxfp4_dequantize_row_ref(const uint8_t *packed, const uint8_t *scales,
                                    int64_t n, float *dst) {
  for (int64_t i = 0; i < n; i++) {
    uint8_t byte = packed[i / 2];
    uint8_t code = (i & 1) ? (uint8_t)(byte >> 4) : (uint8_t)(byte & 0xfu);
    dst[i] = tgemm__e2m1_value[code] * tgemm__e8m0_to_f32(scales[i / TGEMM__MX_BLOCK]);
  }
}
