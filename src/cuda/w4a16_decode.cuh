/* Device pieces of the streaming W4A16 kernel (w4a16_stream.cu): exact
 * E2M1 -> bf16 decoding in registers and the tensor-core step over each
 * lane's MXFP4 block.
 *
 * Lane (g, c) of a warp holds one MXFP4 block (16 bytes, 32 k, one scale)
 * of rows g and g+8 of each 16-row tile.  A 32-bit word of the block holds
 * k 8w..8w+7, element 2i in the low nibble of byte i.  Nibbles j and j+4
 * sit 16 bits apart, so they are decoded together into one bf16 pair:
 * magnitude bits (e1 e0 m) land on bf16 bits 8..6, which is the E2M1 value
 * times 2^-126 (code 1, 0.5, becomes the bf16 subnormal 2^-127), and the
 * sign bit lands on bit 15.  Multiplying by 2^(s-1) (exact: both factors
 * are powers of two times at most 2 significant bits) gives
 * value · 2^(s-127); scales above 128 need 2^(s-1) > bf16 max and take a
 * second multiply (as does 0xFF, which gives NaN).  In the standard
 * nibble order the MMA sees k in the order (8w+j, 8w+j+4), so x's 16-byte
 * loads are regrouped with byte permutes to match; in the paired order
 * (mxfp4_pair.cuh) the pairs are (8w+2j, 8w+2j+1), as x lies in memory. */
#ifndef TGEMM_CUDA_W4A16_DECODE_CUH
#define TGEMM_CUDA_W4A16_DECODE_CUH

#include "cuda/mxfp4_device.cuh"
#include "cuda/decode_common.cuh"

namespace tgemm_w4 {

/* Nibbles j and j+4 of q as a bf16 pair, each E2M1 value times 2^-126,
 * for j = 0 (J1 = false) or 1 (J1 = true); j = 2, 3 are j = 0, 1 of q >> 8.
 * The mask leaves nibble j at bits 4j..4j+3 and 16 bits up; one multiply
 * makes two copies of each, 6 and 12 bits up for j = 0 (2 and 8 for j = 1),
 * which cannot carry into each other, and the last mask keeps the copied
 * magnitude (bits 8..6) of the first and the sign (bit 15) of the second.
 * Integer multiplies run on the FMA pipe: the decode needs 2 logic ops a
 * pair, and the logic pipe (half rate) is what limits this kernel. */
template <bool J1>
__device__ __forceinline__ unsigned e2m1_pair(unsigned q) {
  const unsigned p = q & (J1 ? 0x00F000F0u : 0x000F000Fu);
  return (p * (J1 ? 0x104u : 0x1040u)) & 0x81C081C0u;
}

/* Multiplier for scale bytes s <= 128: 2^(s-1) as a bf16 pair (s = 0 gives
 * 2^-1, whose product with the 2^-126-scaled code is 2^-127 times it). */
__device__ __forceinline__ unsigned scale_mult_small(unsigned s) {
  return (s * 128u + 126u * 128u) * 0x10001u;
}

/* For the rare s > 128: a first multiplier 2^(min(s,128)-1) (NaN for
 * s = 0xFF) ... */
__device__ __forceinline__ unsigned scale_mult1(unsigned s) {
  if (s == 255u) return 0x7FC07FC0u;
  return scale_mult_small(min(s, 128u));
}

/* ... and a second one, 2^(s-128) for 128 < s < 255, else 1. */
__device__ __forceinline__ unsigned scale_mult2(unsigned s) {
  if (s <= 128u || s == 255u) return 0x3F803F80u;
  const unsigned bits = (s - 1u) << 7;
  return bits | bits << 16;
}

/* Does scale byte s need the two-multiplier path? */
__device__ __forceinline__ bool scale_is_big(unsigned s) { return s > 128u; }

/* (x[j], x[j+4]) pairs of 8 bf16, to match e2m1_pair<j>. */
__device__ __forceinline__ void regroup_x(uint4 v, unsigned (&p)[4]) {
  p[0] = __byte_perm(v.x, v.z, 0x5410);
  p[1] = __byte_perm(v.x, v.z, 0x7632);
  p[2] = __byte_perm(v.y, v.w, 0x5410);
  p[3] = __byte_perm(v.y, v.w, 0x7632);
}

/* x of one MXFP4 block for the lane: 32 k starting at p, of which `avail`
 * exist (zero past them); vec: 16-byte loads are allowed. */
template <int MT>
__device__ __forceinline__ void load_x_block(uint4 (&xv)[MT][4],
                                             const unsigned short *const (&xp)[MT], long long offset,
                                             long long avail, bool vec) {
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int w = 0; w < 4; w++) {
      const unsigned short *p = xp[mt] + offset + 8 * w;
      xv[mt][w] = (vec && avail >= 32) ? __ldg(reinterpret_cast<const uint4 *>(p))
                                       : tgemm_decode::load8_scalar(p, avail - 8 * w);
    }
}

/* One block per lane and row: decode v (rows g and g+8 of T tiles) with
 * scale bytes s and multiply by x (MT token groups) into the fragment-
 * ordered accumulators, even words into acc and odd words into acc_odd
 * (two chains of dependent MMAs instead of one).  PAIRED: v is in the
 * paired nibble order (mxfp4_pair.cuh), whose pairs match x as loaded. */
template <int MT, int T, int R, bool PAIRED>
__device__ __forceinline__ void block_step(float (&acc)[R], float (&acc_odd)[R],
                                           const uint4 (&v)[T][2], const unsigned (&s)[T][2],
                                           const uint4 (&xv)[MT][4], bool big) {
  static_assert(R == T * MT * 4, "accumulator count");
  unsigned m1[T][2], m2[T][2];
#pragma unroll
  for (int t = 0; t < T; t++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      m1[t][h] = big ? scale_mult1(s[t][h]) : scale_mult_small(s[t][h]);
      m2[t][h] = big ? scale_mult2(s[t][h]) : 0u;
    }
#pragma unroll
  for (int w = 0; w < 4; w++) {
    unsigned px[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      if constexpr (PAIRED) {
        px[mt][0] = xv[mt][w].x, px[mt][1] = xv[mt][w].y;
        px[mt][2] = xv[mt][w].z, px[mt][3] = xv[mt][w].w;
      } else {
        regroup_x(xv[mt][w], px[mt]);
      }
    }
#pragma unroll
    for (int t = 0; t < T; t++) {
      const unsigned q0 = (&v[t][0].x)[w], q1 = (&v[t][1].x)[w];
      const unsigned q0h = q0 >> 8, q1h = q1 >> 8;
      unsigned r[4][2];
      r[0][0] = e2m1_pair<false>(q0), r[0][1] = e2m1_pair<false>(q1);
      r[1][0] = e2m1_pair<true>(q0), r[1][1] = e2m1_pair<true>(q1);
      r[2][0] = e2m1_pair<false>(q0h), r[2][1] = e2m1_pair<false>(q1h);
      r[3][0] = e2m1_pair<true>(q0h), r[3][1] = e2m1_pair<true>(q1h);
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          r[i][h] = tgemm_mx::bf16x2_mul(r[i][h], m1[t][h]);
          if (big) r[i][h] = tgemm_mx::bf16x2_mul(r[i][h], m2[t][h]);
        }
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        float(&d)[4] =
            *reinterpret_cast<float(*)[4]>(&((w & 1) ? acc_odd : acc)[(t * MT + mt) * 4]);
        tgemm_decode::mma_bf16(d, r[0][0], r[0][1], r[1][0], r[1][1], px[mt][0], px[mt][1]);
        tgemm_decode::mma_bf16(d, r[2][0], r[2][1], r[3][0], r[3][1], px[mt][2], px[mt][3]);
      }
    }
  }
}

}  // namespace tgemm_w4

#endif
