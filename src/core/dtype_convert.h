/* Inline scalar conversions between f32 and the 16-bit float formats, for
 * kernels.  The exported tgemm_*_to_* functions wrap these. */
#ifndef TGEMM_CORE_DTYPE_CONVERT_H
#define TGEMM_CORE_DTYPE_CONVERT_H

#include <stdint.h>
#include <string.h>

static inline uint32_t tgemm__f32_bits(float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}

static inline float tgemm__bits_f32(uint32_t u) {
  float v;
  memcpy(&v, &u, 4);
  return v;
}

static inline float tgemm__bf16_to_f32(uint16_t v) {
  return tgemm__bits_f32((uint32_t)v << 16);
}

/* Round to nearest even; NaN stays a (quiet) NaN. */
static inline uint16_t tgemm__f32_to_bf16(float v) {
  uint32_t u = tgemm__f32_bits(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float tgemm__f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return tgemm__bits_f32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    /* zero or subnormal: man * 2^-24, exact in f32 */
    float f = (float)man * 5.9604644775390625e-8f;
    return sign ? -f : f;
  }
  return tgemm__bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t tgemm__f32_to_f16(float v) {
  uint32_t u = tgemm__f32_bits(v);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to Inf */
  if (a < 0x38800000u) {
    /* subnormal or zero in f16: round a * 2^24 to an integer, ties even */
    float f = tgemm__bits_f32(a) * 16777216.0f; /* exact */
    uint32_t q = (uint32_t)f;
    float rem = f - (float)q;
    if (rem > 0.5f || (rem == 0.5f && (q & 1u))) q++;
    return (uint16_t)(sign | q);
  }
  uint32_t exp = (a >> 23) - 112u;
  uint32_t man = a & 0x7fffffu;
  uint32_t h = (exp << 10) | (man >> 13);
  uint32_t rest = man & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
  return (uint16_t)(sign | h);
}

/* Load element i of a dense row of the given dtype as f32. */
static inline float tgemm__load_f32(const void *row, int dtype, int64_t i) {
  switch (dtype) {
    case 0: return ((const float *)row)[i];                      /* F32 */
    case 1: return tgemm__f16_to_f32(((const uint16_t *)row)[i]); /* F16 */
    default: return tgemm__bf16_to_f32(((const uint16_t *)row)[i]);
  }
}

#endif
