/* Device-side MXFP4 pieces shared by the GPU quantizer (mxfp4_quant.cu) and
 * the MXFP4 GEMMs (w4a16_mma.cu, w4a4.cu): the E8M0 scale rule, the exact
 * E2M1 rounding, and E2M1 -> bf16/f16 decoding.  DESIGN.md §3 is the spec;
 * every function here must give the bytes of tgemm_mxfp4_quantize_row_ref.
 *
 * Build without --use_fast_math: the rounding below relies on IEEE adds
 * and on subnormals being kept. */
#ifndef TGEMM_CUDA_MXFP4_DEVICE_CUH
#define TGEMM_CUDA_MXFP4_DEVICE_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "tgemm.h"

namespace tgemm_mx {

/* The shared exponent s (already clamped to [-127, 127]) of a block whose
 * largest |v| has f32 bits amax_bits (finite, may be 0).  s + 127 is the
 * E8M0 byte.  Subnormal amax always lands on the clamp, so only the
 * exponent field matters. */
__device__ __forceinline__ int scale_exponent(uint32_t amax_bits, int mode) {
  int s;
  if (mode == TGEMM_SCALE_EVEN) {
    /* +0x200000 rounds the exponent up when the significand is >= 1.75;
     * a carry into 0xFF means exponent 128, i.e. s = 126. */
    s = (int)((amax_bits + 0x200000u) >> 23) - 129;
  } else {
    s = (int)(amax_bits >> 23) - 129;
    if (mode == TGEMM_SCALE_RCEIL) s += (amax_bits & 0x7FFFFFu) > 0x400000u;
  }
  return min(max(s, -127), 127);
}

/* 2^-s as a normal f32; s <= 126 for every finite amax (the largest is the
 * 'even' carry case), so -s is in [-126, 127]. */
__device__ __forceinline__ float pow2_neg(int s) {
  return __uint_as_float((uint32_t)(127 - s) << 23);
}

/* 2^s as f32, exact: s = -127 gives the subnormal 2^-127. */
__device__ __forceinline__ float pow2(int s) {
  return __uint_as_float(s > -127 ? (uint32_t)(s + 127) << 23 : 0x00400000u);
}

/* E2M1 magnitude code (0..7) of a = |v|·2^-s >= 0, rounded to nearest,
 * ties to even, saturating at 6.  One IEEE add does the rounding: adding
 * M = 2^(e+22) (e = max(floor(log2 a), 0)) leaves a's bits at the E2M1 step
 * of its binade (0.5 below 2, then 1, then 2), rounded to nearest even, and
 * the even step is exactly the even E2M1 code.  *value gets the rounded
 * magnitude when asked for. */
__device__ __forceinline__ uint32_t e2m1_round(float a, float *value) {
  a = fminf(a, 6.0f);
  uint32_t e = max(__float_as_uint(a) >> 23, 127u); /* biased, >= 127 */
  uint32_t m_bits = (e + 22u) << 23;
  float sum = __fadd_rn(a, __uint_as_float(m_bits));
  if (value) *value = __fsub_rn(sum, __uint_as_float(m_bits));
  /* k = steps above M; code = 2·(e-127) + k. */
  return __float_as_uint(sum) - m_bits + 2u * e - 254u;
}

/* f32 bits of the values of one 8-element group, for the block reduction:
 * |v| bits compare like |v| (NaN and Inf above every finite value). */
__device__ __forceinline__ uint32_t abs_bits(float v) {
  return __float_as_uint(v) & 0x7FFFFFFFu;
}

/* Largest of the quad (4 consecutive lanes = one 32-element block). */
__device__ __forceinline__ uint32_t quad_max(uint32_t v) {
  v = max(v, __shfl_xor_sync(0xFFFFFFFFu, v, 1));
  v = max(v, __shfl_xor_sync(0xFFFFFFFFu, v, 2));
  return v;
}

/* Quantize 8 values of a block whose quad-reduced amax bits are amax_bits:
 * returns the 8 codes as one 32-bit word (code i in nibble i, i.e. the
 * packed MXFP4 byte order) and the E8M0 byte in *scale_byte. */
__device__ __forceinline__ uint32_t quantize8(const float (&v)[8], uint32_t amax_bits, int mode,
                                              uint32_t *scale_byte) {
  if (amax_bits >= 0x7F800000u) { /* NaN or Inf in the block */
    *scale_byte = 0xFFu;
    return 0u;
  }
  int s = scale_exponent(amax_bits, mode);
  *scale_byte = (uint32_t)(s + 127);
  float inv = pow2_neg(s);
  uint32_t word = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    uint32_t code = e2m1_round(fabsf(v[i]) * inv, nullptr);
    code |= (__float_as_uint(v[i]) >> 28) & 8u; /* sign, zeros included */
    word |= code << (4 * i);
  }
  return word;
}

/* Quantize-then-dequantize 8 values (the W4A4 activations as the GEMM sees
 * them): bf16 bits of ±e2m1·2^s, which bf16 holds exactly (its exponent
 * range is f32's, subnormals included).  Pairs (2p, 2p+1) go to out[p]. */
__device__ __forceinline__ void fake_quant8_bf16(const float (&v)[8], uint32_t amax_bits, int mode,
                                                 uint32_t (&out)[4]) {
  if (amax_bits >= 0x7F800000u) {
#pragma unroll
    for (int p = 0; p < 4; p++) out[p] = 0x7FC07FC0u; /* scale byte 0xFF: NaN */
    return;
  }
  int s = scale_exponent(amax_bits, mode);
  float inv = pow2_neg(s), up = pow2(s);
  uint32_t h[8];
#pragma unroll
  for (int i = 0; i < 8; i++) {
    float r;
    e2m1_round(fabsf(v[i]) * inv, &r);
    /* r·2^s is exact in f32, so its top 16 bits are the exact bf16. */
    uint32_t bits = __float_as_uint(r * up) | (__float_as_uint(v[i]) & 0x80000000u);
    h[i] = bits >> 16;
  }
#pragma unroll
  for (int p = 0; p < 4; p++) out[p] = h[2 * p] | (h[2 * p + 1] << 16);
}

/* ---- decoding ---------------------------------------------------------- */

/* Byte lookups of the magnitudes of the 8 E2M1 codes of w: byte i of [0]
 * for nibble i, of [1] for nibble i + 4; hi/lo: the high and low bytes of
 * the bf16 of 0, .5, 1, 1.5, 2, 3, 4, 6 (f16: the high byte, the low one
 * is zero). */
__device__ __forceinline__ void bf16_magnitude_bytes(uint32_t w, uint32_t (&hi)[2],
                                                     uint32_t (&lo)[2]) {
  const uint32_t hi_a = 0x3F3F3F00u, hi_b = 0x40404040u;
  const uint32_t lo_a = 0xC0800000u, lo_b = 0xC0804000u;
  const uint32_t mag = w & 0x77777777u;
  hi[0] = __byte_perm(hi_a, hi_b, mag), lo[0] = __byte_perm(lo_a, lo_b, mag);
  hi[1] = __byte_perm(hi_a, hi_b, mag >> 16), lo[1] = __byte_perm(lo_a, lo_b, mag >> 16);
}
__device__ __forceinline__ void f16_magnitude_bytes(uint32_t w, uint32_t (&hi)[2]) {
  const uint32_t hi_a = 0x3E3C3800u, hi_b = 0x46444240u;
  const uint32_t mag = w & 0x77777777u;
  hi[0] = __byte_perm(hi_a, hi_b, mag), hi[1] = __byte_perm(hi_a, hi_b, mag >> 16);
}

/* Bit 15 of out[p] = the sign of element 2p, bit 31 = of element 2p+1, for
 * the standard nibble order (element i in nibble i). */
__device__ __forceinline__ void or_signs(uint32_t w, uint32_t (&out)[4]) {
  /* Byte j of s_even has bit 7 = sign of element 2j; of s_odd, of 2j+1. */
  const uint32_t s_even = (w << 4) & 0x80808080u, s_odd = w & 0x80808080u;
  out[0] |= __byte_perm(s_even, s_odd, 0x4400) & 0x80008000u;
  out[1] |= __byte_perm(s_even, s_odd, 0x5511) & 0x80008000u;
  out[2] |= __byte_perm(s_even, s_odd, 0x6622) & 0x80008000u;
  out[3] |= __byte_perm(s_even, s_odd, 0x7733) & 0x80008000u;
}

/* The same for the paired order (mxfp4_pair.cuh: element 2p in nibble p,
 * 2p+1 in nibble p+4): their signs sit 4p+3 and 4p+19 bits up, so one shift
 * puts both on bits 15 and 31. */
__device__ __forceinline__ void or_signs_paired(uint32_t w, uint32_t (&out)[4]) {
#pragma unroll
  for (int p = 0; p < 4; p++) out[p] |= (w << (12 - 4 * p)) & 0x80008000u;
}

/* 8 E2M1 codes (nibble i = element i) -> 4 bf16x2 words, out[p] holding
 * elements (2p, 2p+1).  Magnitudes through byte-permute lookups, signs
 * copied into bit 15 / 31.  Exact. */
__device__ __forceinline__ void e2m1x8_to_bf16x2(uint32_t w, uint32_t (&out)[4]) {
  uint32_t h[2], l[2];
  bf16_magnitude_bytes(w, h, l);
  out[0] = __byte_perm(l[0], h[0], 0x5140);
  out[1] = __byte_perm(l[0], h[0], 0x7362);
  out[2] = __byte_perm(l[1], h[1], 0x5140);
  out[3] = __byte_perm(l[1], h[1], 0x7362);
  or_signs(w, out);
}

/* The same into f16x2 (E2M1 values have a zero low byte in f16). */
__device__ __forceinline__ void e2m1x8_to_f16x2(uint32_t w, uint32_t (&out)[4]) {
  uint32_t h[2];
  f16_magnitude_bytes(w, h);
  out[0] = __byte_perm(h[0], 0u, 0x1404);
  out[1] = __byte_perm(h[0], 0u, 0x3424);
  out[2] = __byte_perm(h[1], 0u, 0x1404);
  out[3] = __byte_perm(h[1], 0u, 0x3424);
  or_signs(w, out);
}

/* The two decoders above for a word in the paired nibble order.  The
 * lookups give the even elements' bytes ([0]) and the odd ones' ([1]) in
 * separate words, which two more permutes interleave. */
__device__ __forceinline__ void e2m1x8_paired_to_bf16x2(uint32_t w, uint32_t (&out)[4]) {
  uint32_t h[2], l[2];
  bf16_magnitude_bytes(w, h, l);
  const uint32_t l01 = __byte_perm(l[0], l[1], 0x5140), l23 = __byte_perm(l[0], l[1], 0x7362);
  const uint32_t h01 = __byte_perm(h[0], h[1], 0x5140), h23 = __byte_perm(h[0], h[1], 0x7362);
  out[0] = __byte_perm(l01, h01, 0x5140);
  out[1] = __byte_perm(l01, h01, 0x7362);
  out[2] = __byte_perm(l23, h23, 0x5140);
  out[3] = __byte_perm(l23, h23, 0x7362);
  or_signs_paired(w, out);
}

__device__ __forceinline__ void e2m1x8_paired_to_f16x2(uint32_t w, uint32_t (&out)[4]) {
  uint32_t h[2];
  f16_magnitude_bytes(w, h);
  const uint32_t h01 = __byte_perm(h[0], h[1], 0x5140), h23 = __byte_perm(h[0], h[1], 0x7362);
  out[0] = __byte_perm(h01, 0u, 0x1404);
  out[1] = __byte_perm(h01, 0u, 0x3424);
  out[2] = __byte_perm(h23, 0u, 0x1404);
  out[3] = __byte_perm(h23, 0u, 0x3424);
  or_signs_paired(w, out);
}

/* An E8M0 byte as a bf16x2 pair of 2^(byte-127) (byte 0: the subnormal
 * 2^-127; 0xFF: NaN). */
__device__ __forceinline__ uint32_t e8m0_bf16x2(uint32_t byte) {
  uint32_t h = byte << 7;
  h = byte == 0u ? 0x0040u : h;
  h = byte == 0xFFu ? 0x7FC0u : h;
  return h | (h << 16);
}

/* An E8M0 byte as f32 2^(byte-127), exact; 0xFF is NaN. */
__device__ __forceinline__ float e8m0_f32(uint32_t byte) {
  uint32_t b = byte << 23;
  b = byte == 0u ? 0x00400000u : b;
  b = byte == 0xFFu ? 0x7FC00000u : b;
  return __uint_as_float(b);
}

/* Exact bf16x2 product (used to apply a power-of-two scale to decoded
 * E2M1 values; subnormal results are kept). */
__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

/* bf16 bits of f32 v, round to nearest even (NaN stays NaN). */
__device__ __forceinline__ uint32_t f32_to_bf16_bits(float v) {
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return ((u >> 16) | 0x40u) & 0xFFFFu;
  return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

}  // namespace tgemm_mx

#endif
