/* The tensor-core MXFP4 GEMM (mma.sync m16n8k16, f32 accumulation) behind
 * the W4A16 route and both tensor-core W4A4 strategies, plus the W4A16
 * family dispatch.
 *
 * One CTA computes a BM x BN tile of y over a range of K (split-K), with a
 * cp.async pipeline of 64-wide K stages (two MX blocks).  Each stage:
 *   1. the weights (packed codes + scale bytes) are decoded once, by all
 *      threads, into a bf16 tile in shared memory (for f16 x: f16 codes,
 *      the scale applied later in f32);
 *   2. the activations become a bf16 tile too when they need it (W4A4);
 *   3. every warp runs mma.sync on 16-byte row reads of both tiles.
 * Lane (g, t) reads 16 bytes of its row at element 8t of each 32-wide
 * block, so the MMA's k order inside a block is permuted (mma h of the
 * block takes elements 8t+4h..8t+4h+3 of lane t) identically for A and B;
 * a dot product does not care about the order of its terms.
 *
 * A operand, by kind:
 *   A_BF16   x bf16 straight from the pipeline; weights decoded to bf16 and
 *            multiplied by their scale (exact, bf16 has f32's exponents).
 *   A_F16    x f16; codes decoded to f16 unscaled (f16 cannot hold every
 *            2^(s-127)), the scale applied in f32 after each block.
 *   A_Q_*    x bf16/f16/f32 quantized per 32-block by the CTA (the
 *            quantizer's exact rule, mxfp4_device.cuh) into a bf16 tile of
 *            the dequantized values ±e2m1·2^s, exact in bf16.
 *   A_MX     x already MXFP4 (W4A4 after a quantize launch), decoded to the
 *            same bf16 tile.
 * Every product is therefore the exact product of the dequantized
 * operands, summed in f32. */
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cuda/mxfp4_device.cuh"
#include "cuda/smem_limit.cuh"
#include "cuda/w4a16.cuh"

#if __has_include("cuda/w4a16_stream.cuh")
#include "cuda/w4a16_stream.cuh"
#define TGEMM__HAVE_W4A16_STREAM 1
#endif

namespace {

enum a_kind { A_BF16 = 0, A_F16 = 1, A_Q_BF16 = 2, A_Q_F16 = 3, A_Q_F32 = 4, A_MX = 5 };

constexpr int kBK = 64;   /* K per pipeline stage: two MX blocks */
constexpr int kWRow = 48; /* weight bytes per row and stage: 32 + 16 of padding, so that the
                             4-byte fragment reads of 8 rows hit 32 distinct banks */
constexpr int kSRow = 8;  /* scale bytes per row and stage: the two aligned words that hold
                             its two (possibly unaligned) scale bytes */

struct mma_params {
  const char *x; /* raw x (A_BF16..A_Q_F32) */
  int64_t ldx;   /* elements */
  const uint8_t *xq, *xs; /* A_MX: packed x and its scales */
  int64_t ldxq, ldxs;
  const uint8_t *wp, *ws;
  int64_t ldwp, ldws;
  const void *bias;
  int bias_dtype;
  void *y;
  int64_t ldy;
  int y_f32;
  float *partial; /* [splits][m][n] when splits > 1 */
  int m, n, k, nb;
  int tiles_m, tiles_n;
  int kt; /* 64-wide K stages */
  int splits;
  int mode; /* scale mode for A_Q_* */
  int x_fast, w_fast, ws_fast, xs_fast; /* alignment allows cp.async */
  int w_paired; /* wp in the paired nibble order (mxfp4_pair.cuh) */
  int y_vec2; /* two adjacent outputs can be stored at once */
  int cluster; /* split-K CTAs form a cluster and reduce through DSMEM */
};

/* Largest split-K factor reduced inside a cluster (the portable limit). */
constexpr int kMaxClusterSplits = 8;

template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, int AK>
struct tile_cfg {
  static constexpr int kThreads = WARPS_M * WARPS_N * 32;
  static constexpr int kWM = BM / WARPS_M, kWN = BN / WARPS_N;
  static constexpr int kMT = kWM / 16, kNT = kWN / 8;
  static constexpr int kXRow = AK == A_Q_F32 ? 256 : (AK == A_MX ? 32 : 128);
  static constexpr int kXBytes = BM * kXRow;
  static constexpr int kXSBytes = AK == A_MX ? BM * kSRow : 0;
  static constexpr int kWPBytes = BN * kWRow;
  static constexpr int kWSBytes = BN * kSRow;
  static constexpr int kXSOff = kXBytes;
  static constexpr int kWPOff = kXSOff + kXSBytes;
  static constexpr int kWSOff = kWPOff + kWPBytes;
  static constexpr int kStage = kWSOff + kWSBytes;
  static constexpr bool kHat = AK >= A_Q_BF16;
  static constexpr int kHatBytes = kHat ? BM * 128 : 0;
  static constexpr int kDecBytes = BN * 128; /* the stage's weights as bf16/f16 */
  static constexpr int kSmem = STAGES * kStage + kHatBytes + kDecBytes;
  static_assert(kWM % 16 == 0 && kWN % 8 == 0, "warp tile");
  /* The x prep pass: every lane of a warp takes part or none (quad
   * shuffles); the decode pass: every thread the same number of words. */
  static_assert((BM * 8) % kThreads == 0 || ((BM * 8) % 32 == 0 && kThreads % (BM * 8) == 0),
                "prep pass covers the tile evenly");
  static_assert((BN * 8) % kThreads == 0, "decode pass covers the tile evenly");
  static_assert(kStage % 16 == 0, "16-byte aligned stages");
};

/* ---- PTX wrappers ------------------------------------------------------ */

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

/* With a 256-byte L2 prefetch: a stage reads only 32 (weights) or 128 (x)
 * bytes of each row, and whole DRAM bursts serve the next stages from L2. */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int bytes) {
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
               "l"(src), "r"(bytes));
}

__device__ __forceinline__ void cp_async4(void *dst, const void *src, int bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t *a, uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_f16(float (&d)[4], const uint32_t *a, uint32_t b0,
                                        uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* ---- global -> shared copies ------------------------------------------ */

/* 16 bytes, of which the first `bytes` come from src and the rest are
 * zero.  fast: src is 16-byte aligned (cp.async); else byte loads. */
__device__ __forceinline__ void copy16(uint8_t *dst, const void *src, int bytes, int fast) {
  /* A partial chunk (the end of a row) goes through byte loads even when
   * aligned: a 16-byte cp.async window could reach past the array. */
  if (fast && (bytes == 16 || bytes == 0)) {
    cp_async16(dst, src, bytes);
  } else {
    /* volatile: byte loads stay byte loads (no merged word read past the
     * end of the array) */
    const volatile uint8_t *s = static_cast<const volatile uint8_t *>(src);
    uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
    for (int i = 0; i < 16; i++) /* constant indices: w stays in registers */
      if (i < bytes) w[i >> 2] |= (uint32_t)s[i] << (8 * (i & 3));
    *reinterpret_cast<uint4 *>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

/* The scale bytes of blocks kb0, kb0+1 of `rows` rows of an E8M0 matrix,
 * as the two aligned 4-byte words that hold them (kSRow bytes per row); the
 * consumer finds block kb0 at byte ((row address + kb0) & 3).  Bytes past
 * the row's nb blocks and rows past `valid_rows` are zero.  fast: the
 * matrix pointer is 4-byte aligned, so the aligned-down word never starts
 * before it. */
__device__ __forceinline__ void load_scale_words(uint8_t *dst, const uint8_t *mat, int64_t ld,
                                                 int row0, int valid_rows, int rows, int kb0,
                                                 int nb, int fast, int tid, int nthreads) {
  for (int i = tid; i < rows * 2; i += nthreads) {
    const int r = i >> 1, wd = i & 1;
    uint8_t *d = dst + r * kSRow + wd * 4;
    const int gr = row0 + r;
    if (gr >= valid_rows) {
      if (fast)
        cp_async4(d, mat, 0);
      else
        *reinterpret_cast<uint32_t *>(d) = 0;
      continue;
    }
    const uint8_t *row = mat + (int64_t)gr * ld;
    /* Blocks kb0, kb0+1 need the second word only when kb0 is the last byte
     * of the first (its slot is never read otherwise). */
    if (wd == 1 && ((uintptr_t)(row + kb0) & 3) != 3) continue;
    const uint8_t *wa =
        reinterpret_cast<const uint8_t *>((uintptr_t)(row + kb0) & ~(uintptr_t)3) + 4 * wd;
    const int64_t left = (row + nb) - wa;
    const int bytes = (int)(left < 0 ? 0 : (left > 4 ? 4 : left));
    if (fast && (bytes == 4 || bytes == 0)) { /* a partial word: byte loads below */
      cp_async4(d, bytes ? static_cast<const void *>(wa) : static_cast<const void *>(mat), bytes);
    } else {
      const volatile uint8_t *vb = wa; /* byte loads only: never past the array */
      uint32_t v = 0;
      for (int j = 0; j < 4; j++)
        if (wa + j >= row && wa + j < row + nb) v |= (uint32_t)vb[j] << (8 * j);
      *reinterpret_cast<uint32_t *>(d) = v;
    }
  }
}

/* Where block kb0 + kb of the row starting at row_lo32 (low 32 bits of its
 * address) sits in its kSRow staged bytes. */
__device__ __forceinline__ int scale_slot(uint32_t row_lo32, int kb0, int kb) {
  return (int)((row_lo32 + (uint32_t)kb0) & 3u) + kb;
}

/* Grouped rasterization: 8 M-tiles at a time sweep N, so that the CTAs in
 * flight share both their x rows and their weight rows in L2. */
__device__ __forceinline__ void tile_coords(int id, int tiles_m, int tiles_n, int &tm, int &tn) {
  const int group_m = 8;
  const int per_group = group_m * tiles_n;
  const int group = id / per_group;
  const int first = group * group_m;
  const int size = min(tiles_m - first, group_m);
  const int local = id - group * per_group;
  tm = first + local % size;
  tn = local / size;
}

__device__ __forceinline__ float bias_at(const void *bias, int dtype, int n) {
  if (dtype == TGEMM_F32) return static_cast<const float *>(bias)[n];
  const unsigned short h = static_cast<const unsigned short *>(bias)[n];
  if (dtype == TGEMM_BF16) return __uint_as_float((uint32_t)h << 16);
  return __half2float(__ushort_as_half(h));
}

/* y[m, n], y[m, n+1] (the second only when n+1 < N) = v + bias. */
__device__ __forceinline__ void store_pair(const mma_params &p, int m, int n, float v0, float v1) {
  const bool two = n + 1 < p.n;
  if (p.bias) {
    v0 += bias_at(p.bias, p.bias_dtype, n);
    if (two) v1 += bias_at(p.bias, p.bias_dtype, n + 1);
  }
  const int64_t at = (int64_t)m * p.ldy + n;
  if (p.y_f32) {
    float *y = static_cast<float *>(p.y) + at;
    if (two && p.y_vec2) {
      *reinterpret_cast<float2 *>(y) = make_float2(v0, v1);
    } else {
      y[0] = v0;
      if (two) y[1] = v1;
    }
  } else {
    unsigned short *y = static_cast<unsigned short *>(p.y) + at;
    const uint32_t h0 = tgemm_mx::f32_to_bf16_bits(v0), h1 = tgemm_mx::f32_to_bf16_bits(v1);
    if (two && p.y_vec2) {
      *reinterpret_cast<uint32_t *>(y) = h0 | (h1 << 16);
    } else {
      y[0] = (unsigned short)h0;
      if (two) y[1] = (unsigned short)h1;
    }
  }
}

/* y[m, n] = v + bias. */
__device__ __forceinline__ void store_one(const mma_params &p, int m, int n, float v) {
  if (p.bias) v += bias_at(p.bias, p.bias_dtype, n);
  const int64_t at = (int64_t)m * p.ldy + n;
  if (p.y_f32)
    static_cast<float *>(p.y)[at] = v;
  else
    static_cast<unsigned short *>(p.y)[at] = (unsigned short)tgemm_mx::f32_to_bf16_bits(v);
}

/* ---- the kernel -------------------------------------------------------- */

template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, int AK>
__global__ void __launch_bounds__(WARPS_M *WARPS_N * 32,
                                  (WARPS_M * WARPS_N == 8 && BN <= 128 && AK != A_F16) ? 2 : 1)
    mx_mma_kernel(const mma_params p) {
  using C = tile_cfg<BM, BN, WARPS_M, WARPS_N, STAGES, AK>;
  constexpr int NT = C::kThreads, MT = C::kMT, NTL = C::kNT;
  constexpr bool POST = AK == A_F16;
  constexpr int XESIZE = AK == A_Q_F32 ? 4 : 2;

  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t *const hat = smem + STAGES * C::kStage;
  uint8_t *const wdec = hat + C::kHatBytes;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int warp_m = warp / WARPS_N, warp_n = warp % WARPS_N;

  int tm, tn;
  tile_coords(blockIdx.x, p.tiles_m, p.tiles_n, tm, tn);
  const int m0 = tm * BM, n0 = tn * BN;
  const int split = blockIdx.y;
  const int kt_begin = (int)((int64_t)split * p.kt / p.splits);
  const int kt_end = (int)((int64_t)(split + 1) * p.kt / p.splits);
  const int nkt = kt_end - kt_begin;

  auto load_stage = [&](int slot, int kt) {
    uint8_t *base = smem + slot * C::kStage;
    const int k0 = kt * kBK, kb0 = kt * 2;
    if constexpr (AK == A_MX) {
      for (int i = tid; i < BM * 2; i += NT) {
        const int r = i >> 1, c = i & 1, gm = m0 + r, gkb = kb0 + c;
        const bool ok = gm < p.m && gkb < p.nb;
        copy16(base + r * 32 + c * 16, ok ? p.xq + (int64_t)gm * p.ldxq + gkb * 16 : p.xq,
               ok ? 16 : 0, p.x_fast);
      }
      load_scale_words(base + C::kXSOff, p.xs, p.ldxs, m0, p.m, BM, kb0, p.nb, p.xs_fast, tid,
                       NT);
    } else {
      constexpr int XCH = C::kXRow / 16, EPC = 16 / XESIZE;
      for (int i = tid; i < BM * XCH; i += NT) {
        const int r = i / XCH, c = i % XCH, gm = m0 + r, gk = k0 + c * EPC;
        int bytes = 0;
        const char *src = p.x;
        if (gm < p.m && gk < p.k) {
          bytes = min(16, (p.k - gk) * XESIZE);
          src = p.x + ((int64_t)gm * p.ldx + gk) * XESIZE;
        }
        const int sc = AK == A_Q_F32 ? c : (c ^ ((r & 1) << 2));
        copy16(base + r * C::kXRow + sc * 16, src, bytes, p.x_fast);
      }
    }
    for (int i = tid; i < BN * 2; i += NT) {
      const int r = i >> 1, c = i & 1, gn = n0 + r, gkb = kb0 + c;
      const bool ok = gn < p.n && gkb < p.nb;
      copy16(base + C::kWPOff + r * kWRow + c * 16,
             ok ? p.wp + (int64_t)gn * p.ldwp + gkb * 16 : p.wp, ok ? 16 : 0, p.w_fast);
    }
    load_scale_words(base + C::kWSOff, p.ws, p.ldws, n0, p.n, BN, kb0, p.nb, p.ws_fast, tid, NT);
  };

  /* Low address bits of the weight-scale rows this lane reads. */
  uint32_t wsc_lo[NTL][2];
#pragma unroll
  for (int ni = 0; ni < NTL; ni++) {
    const int rn = warp_n * C::kWN + ni * 8;
    wsc_lo[ni][0] = (uint32_t)(uintptr_t)p.ws + (uint32_t)(n0 + rn + 2 * t) * (uint32_t)p.ldws;
    wsc_lo[ni][1] = wsc_lo[ni][0] + (uint32_t)p.ldws;
  }

  float acc[MT][NTL][4];
#pragma unroll
  for (int mi = 0; mi < MT; mi++)
#pragma unroll
    for (int ni = 0; ni < NTL; ni++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[mi][ni][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < nkt) load_stage(s, kt_begin + s);
    cp_async_commit();
  }

  for (int it = 0; it < nkt; it++) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int next = it + STAGES - 1;
      if (next < nkt) load_stage(next % STAGES, kt_begin + next);
      cp_async_commit();
    }
    const int slot = it % STAGES;
    const uint8_t *stage = smem + slot * C::kStage;
    const int kb0 = (kt_begin + it) * 2;

    if constexpr (C::kHat) {
      /* The activations of this stage as exact bf16 dequantized values. */
#pragma unroll
      for (int gi = tid; gi < BM * 8; gi += NT) {
        const int r = gi >> 3, j = gi & 7;
        uint32_t out[4];
        if constexpr (AK == A_MX) {
          const uint32_t w = *reinterpret_cast<const uint32_t *>(stage + r * 32 + j * 4);
          const uint32_t row_lo = (uint32_t)(uintptr_t)p.xs + (uint32_t)(m0 + r) * (uint32_t)p.ldxs;
          const uint32_t byte = stage[C::kXSOff + r * kSRow + scale_slot(row_lo, kb0, j >> 2)];
          tgemm_mx::e2m1x8_to_bf16x2(w, out);
          const uint32_t sc = tgemm_mx::e8m0_bf16x2(byte);
#pragma unroll
          for (int q = 0; q < 4; q++) out[q] = tgemm_mx::bf16x2_mul(out[q], sc);
        } else {
          float v[8];
          if constexpr (AK == A_Q_F32) {
            const uint4 q0 = *reinterpret_cast<const uint4 *>(stage + r * 256 + j * 32);
            const uint4 q1 = *reinterpret_cast<const uint4 *>(stage + r * 256 + j * 32 + 16);
            const uint32_t w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
            for (int e = 0; e < 8; e++) v[e] = __uint_as_float(w[e]);
          } else {
            const uint4 q =
                *reinterpret_cast<const uint4 *>(stage + r * 128 + ((j ^ ((r & 1) << 2)) * 16));
            const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
              if constexpr (AK == A_Q_BF16) {
                v[2 * e] = __uint_as_float(w[e] << 16);
                v[2 * e + 1] = __uint_as_float(w[e] & 0xFFFF0000u);
              } else {
                v[2 * e] = __half2float(__ushort_as_half((unsigned short)(w[e] & 0xFFFFu)));
                v[2 * e + 1] = __half2float(__ushort_as_half((unsigned short)(w[e] >> 16)));
              }
            }
          }
          uint32_t amax = 0;
#pragma unroll
          for (int e = 0; e < 8; e++) amax = max(amax, tgemm_mx::abs_bits(v[e]));
          amax = tgemm_mx::quad_max(amax);
          tgemm_mx::fake_quant8_bf16(v, amax, p.mode, out);
        }
        *reinterpret_cast<uint4 *>(hat + r * 128 + ((j ^ ((r & 1) << 2)) * 16)) =
            make_uint4(out[0], out[1], out[2], out[3]);
      }
    }

    /* The stage's weights decoded once for all warps: 8 codes per lane
     * (one packed word) to bf16 times the block scale (exact), or to f16
     * codes when the scale waits for f32 (POST).  Same swizzled layout as
     * the x tile, so both operands load as 16-byte rows. */
#pragma unroll
    for (int wi = tid; wi < BN * 8; wi += NT) {
      const int r = wi >> 3, j = wi & 7;
      const uint32_t w = *reinterpret_cast<const uint32_t *>(stage + C::kWPOff + r * kWRow + j * 4);
      uint32_t out[4];
      if constexpr (!POST) {
        const uint32_t row_lo = (uint32_t)(uintptr_t)p.ws + (uint32_t)(n0 + r) * (uint32_t)p.ldws;
        const uint32_t byte = stage[C::kWSOff + r * kSRow + scale_slot(row_lo, kb0, j >> 2)];
        if (p.w_paired)
          tgemm_mx::e2m1x8_paired_to_bf16x2(w, out);
        else
          tgemm_mx::e2m1x8_to_bf16x2(w, out);
        const uint32_t sc = tgemm_mx::e8m0_bf16x2(byte);
#pragma unroll
        for (int q = 0; q < 4; q++) out[q] = tgemm_mx::bf16x2_mul(out[q], sc);
      } else if (p.w_paired) {
        tgemm_mx::e2m1x8_paired_to_f16x2(w, out);
      } else {
        tgemm_mx::e2m1x8_to_f16x2(w, out);
      }
      *reinterpret_cast<uint4 *>(wdec + r * 128 + ((j ^ ((r & 1) << 2)) * 16)) =
          make_uint4(out[0], out[1], out[2], out[3]);
    }
    __syncthreads();

    const uint8_t *xa = C::kHat ? hat : stage;
    const uint8_t *wsc = stage + C::kWSOff;
#pragma unroll
    for (int kb = 0; kb < 2; kb++) {
      uint32_t a[MT][8], b[NTL][4];
#pragma unroll
      for (int mi = 0; mi < MT; mi++) {
        const int r0 = warp_m * C::kWM + mi * 16 + g;
        const int chunk = (kb * 4 + t) ^ ((r0 & 1) << 2);
        const uint4 q0 = *reinterpret_cast<const uint4 *>(xa + r0 * 128 + chunk * 16);
        const uint4 q1 = *reinterpret_cast<const uint4 *>(xa + (r0 + 8) * 128 + chunk * 16);
        a[mi][0] = q0.x;
        a[mi][1] = q1.x;
        a[mi][2] = q0.y;
        a[mi][3] = q1.y;
        a[mi][4] = q0.z;
        a[mi][5] = q1.z;
        a[mi][6] = q0.w;
        a[mi][7] = q1.w;
      }
#pragma unroll
      for (int ni = 0; ni < NTL; ni++) {
        const int rn = warp_n * C::kWN + ni * 8 + g;
        const int chunk = (kb * 4 + t) ^ ((rn & 1) << 2);
        const uint4 q = *reinterpret_cast<const uint4 *>(wdec + rn * 128 + chunk * 16);
        b[ni][0] = q.x;
        b[ni][1] = q.y;
        b[ni][2] = q.z;
        b[ni][3] = q.w;
      }
      if constexpr (!POST) {
        /* consecutive MMAs never depend on each other */
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
          for (int ni = 0; ni < NTL; ni++)
#pragma unroll
            for (int mi = 0; mi < MT; mi++)
              mma_bf16(acc[mi][ni], &a[mi][4 * h], b[ni][2 * h], b[ni][2 * h + 1]);
      } else {
#pragma unroll
        for (int ni = 0; ni < NTL; ni++) {
          const int rc = warp_n * C::kWN + ni * 8 + 2 * t;
          const float s0 = tgemm_mx::e8m0_f32(wsc[rc * kSRow + scale_slot(wsc_lo[ni][0], kb0, kb)]);
          const float s1 =
              tgemm_mx::e8m0_f32(wsc[(rc + 1) * kSRow + scale_slot(wsc_lo[ni][1], kb0, kb)]);
#pragma unroll
          for (int mi = 0; mi < MT; mi++) {
            float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            mma_f16(part, &a[mi][0], b[ni][0], b[ni][1]);
            mma_f16(part, &a[mi][4], b[ni][2], b[ni][3]);
            acc[mi][ni][0] = fmaf(part[0], s0, acc[mi][ni][0]);
            acc[mi][ni][1] = fmaf(part[1], s1, acc[mi][ni][1]);
            acc[mi][ni][2] = fmaf(part[2], s0, acc[mi][ni][2]);
            acc[mi][ni][3] = fmaf(part[3], s1, acc[mi][ni][3]);
          }
        }
      }
    }
  }
  cp_async_wait<0>();

  if constexpr (C::kSmem >= BM * BN * 4) {
    if (p.splits > 1 && p.cluster) {
      /* Split-K inside a cluster: every CTA parks its partial tile in its
       * own shared memory (the pipeline buffers are free now), then CTA r
       * sums slice r of the tile over all CTAs in rank order (deterministic)
       * and writes y.  One launch, no workspace. */
      constexpr int E = MT * NTL * 4;
      float *red = reinterpret_cast<float *>(smem);
      __syncthreads();
#pragma unroll
      for (int mi = 0; mi < MT; mi++)
#pragma unroll
        for (int ni = 0; ni < NTL; ni++)
#pragma unroll
          for (int r = 0; r < 4; r++) red[((mi * NTL + ni) * 4 + r) * NT + tid] = acc[mi][ni][r];
      cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
      cluster.sync();
      const int ranks = p.splits, rank = (int)cluster.block_rank();
      const int total = E * NT, per = (total + ranks - 1) / ranks;
      const int hi = min(total, (rank + 1) * per);
      for (int idx = rank * per + tid; idx < hi; idx += NT) {
        float sum = 0.0f;
        for (int q = 0; q < ranks; q++) sum += cluster.map_shared_rank(red, q)[idx];
        const int th = idx % NT, e = idx / NT;
        const int r = e & 3, tile = e >> 2, ni = tile % NTL, mi = tile / NTL;
        const int ln = th & 31, wp_ = th >> 5;
        const int m = m0 + (wp_ / WARPS_N) * C::kWM + mi * 16 + (ln >> 2) + (r >> 1) * 8;
        const int n = n0 + (wp_ % WARPS_N) * C::kWN + ni * 8 + 2 * (ln & 3) + (r & 1);
        if (m < p.m && n < p.n) store_one(p, m, n, sum);
      }
      cluster.sync(); /* keep this CTA's shared memory alive for the others */
      return;
    }
  }

#pragma unroll
  for (int mi = 0; mi < MT; mi++) {
#pragma unroll
    for (int ni = 0; ni < NTL; ni++) {
      const int n = n0 + warp_n * C::kWN + ni * 8 + 2 * t;
      if (n >= p.n) continue;
#pragma unroll
      for (int hr = 0; hr < 2; hr++) {
        const int m = m0 + warp_m * C::kWM + mi * 16 + g + hr * 8;
        if (m >= p.m) continue;
        const float v0 = acc[mi][ni][2 * hr], v1 = acc[mi][ni][2 * hr + 1];
        if (p.splits > 1) {
          float *dst = p.partial + ((int64_t)split * p.m + m) * p.n + n;
          dst[0] = v0;
          if (n + 1 < p.n) dst[1] = v1;
        } else {
          store_pair(p, m, n, v0, v1);
        }
      }
    }
  }
}

/* y = sum over splits of the partials (in split order) + bias. */
__global__ void __launch_bounds__(256) splitk_reduce_kernel(const mma_params p) {
  const int64_t total = (int64_t)p.m * p.n;
  for (int64_t i = (int64_t)blockIdx.x * 256 + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * 256) {
    float s = p.partial[i];
    for (int z = 1; z < p.splits; z++) s += p.partial[z * total + i];
    const int m = (int)(i / p.n), n = (int)(i - (int64_t)m * p.n);
    if (p.bias) s += bias_at(p.bias, p.bias_dtype, n);
    const int64_t at = (int64_t)m * p.ldy + n;
    if (p.y_f32)
      static_cast<float *>(p.y)[at] = s;
    else
      static_cast<unsigned short *>(p.y)[at] = (unsigned short)tgemm_mx::f32_to_bf16_bits(s);
  }
}

/* ---- host side --------------------------------------------------------- */

typedef cudaError_t (*launch_fn)(const mma_params &p, cudaStream_t stream);

template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, int AK>
cudaError_t launch_tile(const mma_params &p, cudaStream_t stream) {
  using C = tile_cfg<BM, BN, WARPS_M, WARPS_N, STAGES, AK>;
  auto kernel = mx_mma_kernel<BM, BN, WARPS_M, WARPS_N, STAGES, AK>;
  cudaError_t err = tgemm__ensure_smem_limit(reinterpret_cast<const void *>(kernel), C::kSmem);
  if (err != cudaSuccess) return err;
  const dim3 grid((unsigned)(p.tiles_m * p.tiles_n), (unsigned)p.splits);
  if (p.cluster) {
    if (C::kSmem < BM * BN * 4) return cudaErrorInvalidValue;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(C::kThreads);
    cfg.dynamicSmemBytes = C::kSmem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = (unsigned)p.splits;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kernel, p);
  }
  kernel<<<grid, C::kThreads, C::kSmem, stream>>>(p);
  return cudaGetLastError();
}

/* Whether the tile can reduce split-K in a cluster (its shared memory holds
 * a whole f32 tile). */
template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, int AK>
bool tile_can_cluster() {
  return tile_cfg<BM, BN, WARPS_M, WARPS_N, STAGES, AK>::kSmem >= BM * BN * 4;
}

struct tile_shape {
  int bm, bn;
  const char *name; /* in kernel names: unique per tile */
};
/* Tunables: they change speed only, never results beyond f32 rounding. */
const tile_shape kTiles[TGEMM__MX_TILE_COUNT] = {
    {16, 128, "16x128"},   {32, 128, "32x128"},   {64, 128, "64x128"},
    {128, 128, "128x128"}, {128, 256, "128x256"}, {64, 128, "64x128w8"}};

template <int AK>
launch_fn pick_launch(int tile) {
  switch (tile) {
    case 0: return launch_tile<16, 128, 1, 8, 6, AK>;
    case 1: return launch_tile<32, 128, 1, 8, 6, AK>;
    case 2: return launch_tile<64, 128, 1, 4, 4, AK>;
    case 3: return launch_tile<128, 128, 2, 4, 4, AK>;
    case 4: return launch_tile<128, 256, 2, 4, 3, AK>;
    case 5: return launch_tile<64, 128, 2, 4, 4, AK>; /* 8 warps of 32x32 */
    default: return nullptr;
  }
}

launch_fn pick_kind(int ak, int tile) {
  switch (ak) {
    case A_BF16: return pick_launch<A_BF16>(tile);
    case A_F16: return pick_launch<A_F16>(tile);
    case A_Q_BF16: return pick_launch<A_Q_BF16>(tile);
    case A_Q_F16: return pick_launch<A_Q_F16>(tile);
    case A_Q_F32: return pick_launch<A_Q_F32>(tile);
    case A_MX: return pick_launch<A_MX>(tile);
    default: return nullptr;
  }
}

template <int AK>
bool tile_clusters_t(int tile) {
  switch (tile) {
    case 0: return tile_can_cluster<16, 128, 1, 8, 6, AK>();
    case 1: return tile_can_cluster<32, 128, 1, 8, 6, AK>();
    case 2: return tile_can_cluster<64, 128, 1, 4, 4, AK>();
    case 3: return tile_can_cluster<128, 128, 2, 4, 4, AK>();
    case 4: return tile_can_cluster<128, 256, 2, 4, 3, AK>();
    case 5: return tile_can_cluster<64, 128, 2, 4, 4, AK>();
    default: return false;
  }
}

bool tile_clusters(int ak, int tile) {
  switch (ak) {
    case A_BF16: return tile_clusters_t<A_BF16>(tile);
    case A_F16: return tile_clusters_t<A_F16>(tile);
    case A_Q_BF16: return tile_clusters_t<A_Q_BF16>(tile);
    case A_Q_F16: return tile_clusters_t<A_Q_F16>(tile);
    case A_Q_F32: return tile_clusters_t<A_Q_F32>(tile);
    case A_MX: return tile_clusters_t<A_MX>(tile);
    default: return false;
  }
}

bool aligned_to(const void *ptr, int64_t ld_bytes, unsigned align) {
  return (uintptr_t)ptr % align == 0 && ld_bytes % align == 0;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

extern "C" int tgemm__mx_tile_bm(int tile) {
  return tile >= 0 && tile < TGEMM__MX_TILE_COUNT ? kTiles[tile].bm : 0;
}

extern "C" int tgemm__mx_tile_bn(int tile) {
  return tile >= 0 && tile < TGEMM__MX_TILE_COUNT ? kTiles[tile].bn : 0;
}

extern "C" const char *tgemm__mx_tile_name(int tile) {
  return tile >= 0 && tile < TGEMM__MX_TILE_COUNT ? kTiles[tile].name : "";
}

extern "C" int tgemm__mx_pick_splits(int tile, int64_t m, int64_t n, int64_t k, int sm_count) {
  if (tile < 0 || tile >= TGEMM__MX_TILE_COUNT || m < 1 || n < 1 || k < 1) return 1;
  if (sm_count < 1) sm_count = 132;
  const int64_t tiles = ceil_div(m, kTiles[tile].bm) * ceil_div(n, kTiles[tile].bn);
  const int64_t kt = ceil_div(ceil_div(k, 32), 2);
  /* The time goes as the most CTAs any SM runs times the work of one:
   * minimise ceil(tiles*s / SMs) / s (a larger s only for a 5% gain), with at least
   * 4 stages per split and at most the cluster size, so that the splits are
   * reduced in one launch. */
  int64_t best = 1;
  double best_cost = (double)ceil_div(tiles, sm_count);
  for (int64_t s = 2; s <= kMaxClusterSplits && s * 4 <= kt; s++) {
    const double cost = (double)ceil_div(tiles * s, sm_count) / (double)s;
    if (cost < best_cost * 0.95) best = s, best_cost = cost; /* worth its reduction */
  }
  return (int)best;
}

extern "C" cudaError_t tgemm__mx_mma_launch(const tgemm__cuda_gemm_args *args,
                                            tgemm__mx_a_mode a_mode, const tgemm__mx_a_quant *aq,
                                            int tile, int splits, void *ws, size_t ws_bytes) {
  if (!args || tile < 0 || tile >= TGEMM__MX_TILE_COUNT) return cudaErrorInvalidValue;
  if (args->m < 1 || args->n < 1 || args->k < 1 || args->m > INT_MAX || args->n > INT_MAX ||
      args->k > INT_MAX)
    return cudaErrorInvalidValue;
  if (!args->w_packed || !args->w_scales || !args->y) return cudaErrorInvalidValue;
  if (args->y_dtype != TGEMM_BF16 && args->y_dtype != TGEMM_F32) return cudaErrorInvalidValue;
  if (args->bias && args->bias_dtype != TGEMM_F32 && args->bias_dtype != TGEMM_BF16 &&
      args->bias_dtype != TGEMM_F16)
    return cudaErrorInvalidValue;
  const int64_t nb = ceil_div(args->k, 32);
  if (args->ldw_packed < nb * 16 || args->ldw_scales < nb || args->ldy < args->n)
    return cudaErrorInvalidValue;

  int ak;
  int64_t xesize = 2;
  switch (a_mode) {
    case TGEMM__MX_A_DENSE:
      if (args->x_dtype == TGEMM_BF16)
        ak = A_BF16;
      else if (args->x_dtype == TGEMM_F16)
        ak = A_F16;
      else
        return cudaErrorInvalidValue;
      break;
    case TGEMM__MX_A_QUANTIZE:
      if (args->x_dtype == TGEMM_BF16)
        ak = A_Q_BF16;
      else if (args->x_dtype == TGEMM_F16)
        ak = A_Q_F16;
      else if (args->x_dtype == TGEMM_F32)
        ak = A_Q_F32, xesize = 4;
      else
        return cudaErrorInvalidValue;
      break;
    case TGEMM__MX_A_MXFP4:
      if (!aq || !aq->packed || !aq->scales || aq->packed_ld < nb * 16 || aq->scales_ld < nb)
        return cudaErrorInvalidValue;
      ak = A_MX;
      break;
    default: return cudaErrorInvalidValue;
  }
  if (ak != A_MX && (!args->x || args->ldx < args->k)) return cudaErrorInvalidValue;

  mma_params p;
  memset(&p, 0, sizeof p);
  p.x = static_cast<const char *>(args->x);
  p.ldx = args->ldx;
  if (ak == A_MX) {
    p.xq = aq->packed;
    p.ldxq = aq->packed_ld;
    p.xs = aq->scales;
    p.ldxs = aq->scales_ld;
    p.x_fast = aligned_to(aq->packed, aq->packed_ld, 16);
    p.xs_fast = (uintptr_t)aq->scales % 4 == 0;
  } else {
    p.x_fast = aligned_to(args->x, args->ldx * xesize, 16);
  }
  p.wp = args->w_packed;
  p.ldwp = args->ldw_packed;
  p.ws = args->w_scales;
  p.ldws = args->ldw_scales;
  p.w_fast = aligned_to(args->w_packed, args->ldw_packed, 16);
  p.w_paired = args->w_paired != 0;
  p.ws_fast = (uintptr_t)args->w_scales % 4 == 0;
  p.bias = args->bias;
  p.bias_dtype = (int)args->bias_dtype;
  p.y = args->y;
  p.ldy = args->ldy;
  p.y_f32 = args->y_dtype == TGEMM_F32;
  p.y_vec2 = aligned_to(args->y, args->ldy * (p.y_f32 ? 4 : 2), p.y_f32 ? 8 : 4);
  p.m = (int)args->m;
  p.n = (int)args->n;
  p.k = (int)args->k;
  p.nb = (int)nb;
  p.tiles_m = (int)ceil_div(args->m, kTiles[tile].bm);
  p.tiles_n = (int)ceil_div(args->n, kTiles[tile].bn);
  p.kt = (int)ceil_div(nb, 2);
  p.mode = (int)args->scale_mode;
  if ((int64_t)p.tiles_m * p.tiles_n > INT_MAX) return cudaErrorInvalidValue;

  /* Split-K needs [splits][m][n] f32 partials; fewer splits if they do not
   * fit (the result changes by f32 rounding only). */
  if (splits > p.kt) splits = p.kt;
  if (splits > 65535) splits = 65535;
  if (splits < 1) splits = 1;
  /* Up to kMaxClusterSplits splits reduce inside a cluster; more need
   * [splits][m][n] f32 partials in the workspace and a second launch (fewer
   * splits if they do not fit: the result changes by f32 rounding only). */
  p.cluster = splits > 1 && splits <= kMaxClusterSplits && tile_clusters(ak, tile);
  if (splits > 1 && !p.cluster) {
    const uint64_t per_split = (uint64_t)args->m * (uint64_t)args->n * sizeof(float);
    if ((uintptr_t)ws % 16 != 0) splits = 1;
    while (splits > 1 && (uint64_t)splits * per_split > ws_bytes) splits--;
  }
  p.splits = splits;
  p.partial = splits > 1 && !p.cluster ? static_cast<float *>(ws) : nullptr;

  launch_fn fn = pick_kind(ak, tile);
  if (!fn) return cudaErrorInvalidValue;
  cudaError_t err = fn(p, args->stream);
  if (err != cudaSuccess || splits == 1 || p.cluster) return err;
  const int64_t total = (int64_t)p.m * p.n;
  int64_t blocks = ceil_div(total, 256);
  if (blocks > 65535LL * 8) blocks = 65535LL * 8;
  splitk_reduce_kernel<<<(unsigned)blocks, 256, 0, args->stream>>>(p);
  return cudaGetLastError();
}

/* ---- the W4A16 family -------------------------------------------------- */

namespace {

const char kMmaPrefix[] = "w4a16_mma_";

void put_kernel(tgemm__kernel *k, tgemm_route route, const char *prefix, int tile, int splits) {
  memset(k, 0, sizeof *k);
  k->route = route;
  snprintf(k->name, sizeof k->name, "%s%s_s%d", prefix, kTiles[tile].name, splits);
  k->params[0] = tile;
  k->params[1] = splits;
}

/* The tile order for M, the measured default first (H100, DeepSeek-V3
 * shapes, bench/device/mxgpu.sh): at M = 128 the 8-warp 64x128 tile won on
 * three of four shapes, 128x128 on o_proj; from M = 1024 on 128x128 won
 * everywhere.  M <= 64 is extrapolated (not timed). */
int tiles_for_m(int64_t m, int *tiles) {
  if (m <= 16) {
    tiles[0] = 0, tiles[1] = 1;
    return 2;
  }
  if (m <= 32) {
    tiles[0] = 1, tiles[1] = 5, tiles[2] = 0;
    return 3;
  }
  if (m <= 256) {
    tiles[0] = 5, tiles[1] = 3, tiles[2] = 2;
    return 3;
  }
  tiles[0] = 3, tiles[1] = 4, tiles[2] = 5;
  return 3;
}

}  // namespace

/* Shared by W4A16 and W4A4: the mma candidates for shape under prefix. */
extern "C" int tgemm__mx_mma_candidates(const tgemm__shape *shape, int sm_count,
                                        tgemm_route route, const char *prefix,
                                        tgemm__kernel *out, int cap) {
  int tiles[4];
  const int nt = tiles_for_m(shape->m, tiles);
  int count = 0;
  for (int i = 0; i < nt && count < cap; i++) {
    /* f16 W4A16 keeps 128 accumulators plus per-block partials at 128x256:
     * it spills there, so it is not offered. */
    if (tiles[i] == 4 && route == TGEMM_ROUTE_W4A16 && shape->dtype == TGEMM_F16) continue;
    const int s = tgemm__mx_pick_splits(tiles[i], shape->m, shape->n, shape->k, sm_count);
    /* The split that balances the SMs (reduced inside a cluster), then no
     * split. */
    put_kernel(&out[count++], route, prefix, tiles[i], s);
    if (s > 1 && count < cap) put_kernel(&out[count++], route, prefix, tiles[i], 1);
  }
  return count;
}

static bool w4a16_shape_ok(const tgemm__shape *shape) {
  return shape->m >= 1 && shape->n >= 1 && shape->k >= 1 && shape->m <= INT_MAX &&
         shape->n <= INT_MAX && shape->k <= INT_MAX &&
         (shape->dtype == TGEMM_BF16 || shape->dtype == TGEMM_F16) &&
         (shape->out_dtype == TGEMM_BF16 || shape->out_dtype == TGEMM_F32);
}

extern "C" int tgemm__w4a16_candidates(const tgemm__shape *shape, int sm_count,
                                       tgemm__kernel *out, int cap) {
  if (!shape || !out || cap <= 0) return 0;
  int count = 0;
#ifdef TGEMM__HAVE_W4A16_STREAM
  if (shape->m <= 16) {
    const int n = tgemm__w4a16_stream_candidates(shape, sm_count, out, cap);
    if (n > 0) count = n;
  }
#endif
  if (!w4a16_shape_ok(shape)) return count;
  return count + tgemm__mx_mma_candidates(shape, sm_count, TGEMM_ROUTE_W4A16, kMmaPrefix,
                                          out + count, cap - count);
}

extern "C" cudaError_t tgemm__w4a16_run(const tgemm__kernel *kernel,
                                        const tgemm__cuda_gemm_args *args) {
  if (!kernel || !args) return cudaErrorInvalidValue;
#ifdef TGEMM__HAVE_W4A16_STREAM
  if (strncmp(kernel->name, "w4a16_stream_", 13) == 0)
    return tgemm__w4a16_stream_run(kernel, args);
#endif
  if (strncmp(kernel->name, kMmaPrefix, sizeof kMmaPrefix - 1) != 0) return cudaErrorInvalidValue;
  return tgemm__mx_mma_launch(args, TGEMM__MX_A_DENSE, NULL, kernel->params[0],
                              kernel->params[1], args->workspace, args->workspace_bytes);
}
