/* The end of the decode kernels (skinny_bf16.cu, w4a16_stream.cu): a
 * block's warps, and a cluster's blocks, sum their partial results in a
 * fixed order, then the bias, the rounding to y's dtype and the stores.
 * CUDA C++ only. */
#ifndef TGEMM_CUDA_DECODE_EPILOGUE_CUH
#define TGEMM_CUDA_DECODE_EPILOGUE_CUH

#include <cuda_runtime.h>
#include <stddef.h>

#include "cuda/cluster_exchange.cuh"
#include "cuda/cuda_args.h"

/* Timestamps inside an unsplit kernel's end: bench/device/phaseprobe.cu
 * defines them (through w4a16_stream.cu); in the library they are nothing. */
#ifndef TGEMM_DECODE_STAMP
#define TGEMM_DECODE_STAMP(i) ((void)0)
#endif

namespace tgemm_decode {

/* Where the finished sums go. */
struct epilogue {
  const void *bias; /* [n] or NULL */
  int bias_dtype;   /* tgemm_dtype */
  void *y;          /* [m, n] with row stride ldy */
  long long ldy;
  int y_f32;        /* 1: f32 y, 0: bf16 y */
  int m, n;
  int exchange_at;  /* split > 1: byte offset of the exchange area in dynamic shared memory */
};

__device__ __forceinline__ float load_bias(const void *bias, int dtype, int row) {
  if (dtype == TGEMM_F32) return static_cast<const float *>(bias)[row];
  unsigned short h = static_cast<const unsigned short *>(bias)[row];
  if (dtype == TGEMM_BF16) return __uint_as_float((unsigned)h << 16);
  float f;
  asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
  return f;
}

/* Element e of the fragment-ordered accumulator array (register r = e / 32
 * of lane e % 32) holds, for the m16n8 tile (r / 4) = tile * MT +
 * token_group: row g (+8 when r % 4 >= 2) and token 2c + (r % 2), with
 * g = lane / 4, c = lane % 4. */
template <int MT>
__device__ __forceinline__ void element_at(int row0, int e, int *row, int *token) {
  const int r = e >> 5, lane = e & 31;
  const int i = r & 3, tile_group = r >> 2;
  const int group = tile_group % MT, tile = tile_group / MT;
  *row = row0 + 16 * tile + (lane >> 2) + ((i & 2) ? 8 : 0);
  *token = 8 * group + 2 * (lane & 3) + (i & 1);
}

/* Does element e land in y (a real row and token)?  At M = 1 only one
 * element in eight does, so the reductions skip the rest. */
template <int MT>
__device__ __forceinline__ bool element_used(const epilogue &ep, int row0, int e) {
  int row, token;
  element_at<MT>(row0, e, &row, &token);
  return row < ep.n && token < ep.m;
}

/* bf16 bits of f, rounded to nearest even (NaN stays NaN). */
__device__ __forceinline__ unsigned bf16_bits(float f) {
  const unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

/* Writes one finished sum to y[token, row] (bias added here). */
__device__ __forceinline__ void store_at(const epilogue &ep, int row, int token, float sum) {
  if (ep.bias) sum += load_bias(ep.bias, ep.bias_dtype, row);
  long long at = (long long)token * ep.ldy + row;
  if (ep.y_f32)
    static_cast<float *>(ep.y)[at] = sum;
  else
    static_cast<unsigned short *>(ep.y)[at] = (unsigned short)bf16_bits(sum);
}

/* Writes one finished sum (element e, see element_at). */
template <int MT>
__device__ __forceinline__ void store_one(const epilogue &ep, int row0, int e, float sum) {
  int row, token;
  element_at<MT>(row0, e, &row, &token);
  if (row >= ep.n || token >= ep.m) return;
  store_at(ep, row, token, sum);
}

/* Writes 8 finished sums to y[token, row .. row+7] (bias added here): one
 * 16-byte store (two for f32 y) where the rows exist and y is aligned. */
__device__ __forceinline__ void store_eight(const epilogue &ep, int row, int token,
                                            const float (&sum)[8]) {
  const long long at = (long long)token * ep.ldy + row;
  const size_t bytes = ep.y_f32 ? 4 : 2;
  if (row + 8 > ep.n || (reinterpret_cast<size_t>(ep.y) + at * bytes) % 16 != 0) {
#pragma unroll
    for (int i = 0; i < 8; i++)
      if (row + i < ep.n) store_at(ep, row + i, token, sum[i]);
    return;
  }
  float v[8];
#pragma unroll
  for (int i = 0; i < 8; i++) v[i] = ep.bias ? sum[i] + load_bias(ep.bias, ep.bias_dtype, row + i) : sum[i];
  if (ep.y_f32) {
    float4 *y = reinterpret_cast<float4 *>(static_cast<float *>(ep.y) + at);
    y[0] = make_float4(v[0], v[1], v[2], v[3]);
    y[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    /* cvt.rn.bf16x2 rounds as bf16_bits does in one instruction a pair,
     * but makes every NaN the canonical one: sums with a NaN (rare) take
     * bf16_bits, which keeps the payload as the CPU reference does. */
    bool nan = false;
#pragma unroll
    for (int i = 0; i < 8; i++) nan |= v[i] != v[i];
    unsigned w[4];
#pragma unroll
    for (int i = 0; i < 4; i++)
      if (nan)
        w[i] = bf16_bits(v[2 * i]) | bf16_bits(v[2 * i + 1]) << 16;
      else
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(w[i]) : "f"(v[2 * i + 1]), "f"(v[2 * i]));
    *reinterpret_cast<uint4 *>(static_cast<unsigned short *>(ep.y) + at) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

/* Whether reduce_and_store sums a block's warps through a [token][row]
 * layout, 8 rows of one token a thread, and writes y 16 bytes at a time:
 * when the block has at least one such piece per two threads (tiles · MT
 * >= warps).  One output a thread cost ~30 instructions an output; at
 * M = 16 that was up to a third of a kernel with many rows a block (kv_b:
 * 2 us of 7).  With few outputs and many warps (q_a's 16 warps of one
 * tile), one output a thread keeps more threads busy and stays faster
 * (BENCHMARKS.md). */
__host__ __device__ constexpr bool reduce_by_rows(int warps, int tiles, int mt) {
  return tiles * mt >= warps;
}

/* Floats of shared memory reduce_and_store needs: with the row layout, a
 * token's 16·tiles rows are padded (partial_stride) so that the fragment-
 * ordered writes of a warp fall in distinct banks; the element layout of a
 * split kernel puts the block's partial, in the row layout, after the
 * warps' sums. */
__host__ __device__ constexpr size_t reduce_floats(int warps, int tiles, int mt, int split) {
  return reduce_by_rows(warps, tiles, mt)
             ? (size_t)warps * 8 * mt * partial_stride(tiles)
             : (size_t)warps * tiles * mt * 4 * 32 +
                   (split > 1 ? (size_t)8 * mt * partial_stride(tiles) : 0);
}

/* Dynamic shared memory of a decode kernel whose rings take `ring` bytes:
 * the rings, or the reduction buffer where larger, then for split > 1 the
 * exchange area, at exchange_offset. */
static inline size_t exchange_offset(size_t ring, int warps, int tiles, int mt, int split) {
  const size_t red = reduce_floats(warps, tiles, mt, split) * sizeof(float);
  return ((ring > red ? ring : red) + 15) / 16 * 16;
}
static inline size_t decode_smem_bytes(size_t ring, int warps, int tiles, int mt, int split) {
  const size_t at = exchange_offset(ring, warps, tiles, mt, split);
  return split > 1 ? at + exchange_bytes(tiles, mt) : at;
}

/* Kernel start: a split kernel's blocks set up their exchange (see
 * cluster_exchange.cuh) before any other work.  smem: the dynamic shared
 * memory. */
template <int T, int MT>
__device__ __forceinline__ void begin_split(void *smem, int split, const epilogue &ep) {
  if (split > 1) exchange_begin<T, MT>(static_cast<unsigned char *>(smem) + ep.exchange_at, split);
}

/* A split kernel's end: the block's partial `part` ([token][row], rows
 * padded to partial_stride) exchanged, and the block's own tokens summed
 * over the cluster and written to y. */
template <int WARPS, int T, int MT>
__device__ __forceinline__ void exchange_and_store(const float *part, unsigned char *area,
                                                   int split, int rank, int row0,
                                                   const epilogue &ep) {
  exchange_and_sum<WARPS, T, MT>(part, area, split, rank, row0, ep.m, ep.n,
                                 [&](int token, int row, const float(&s)[8]) {
                                   store_eight(ep, row0 + row, token, s);
                                 });
}

/* reduce_and_store through the [token][row] layout (reduce_by_rows). */
template <int WARPS, int R, int MT>
__device__ __forceinline__ void reduce_rows_and_store(const float (&acc)[R], float *red,
                                                      unsigned char *area, int split, int rank,
                                                      int row0, const epilogue &ep) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int T = R / (4 * MT);
  constexpr int ROWS = 16 * T, STRIDE = partial_stride(T), TOKENS = 8 * MT, PIECES = TOKENS * ROWS / 8;
#pragma unroll
  for (int r = 0; r < R; r++) {
    int row, token;
    element_at<MT>(0, r * 32 + lane, &row, &token);
    red[(warp * TOKENS + token) * STRIDE + row] = acc[r];
  }
  TGEMM_DECODE_STAMP(0);
  __syncthreads();
  TGEMM_DECODE_STAMP(1);
  /* The block's sum of 8 rows of one token, warp 0 first. */
  auto sum_warps = [&](float (&s)[8], int token, int row) {
#pragma unroll
    for (int w = 0; w < WARPS; w++) {
      const float *f = red + (w * TOKENS + token) * STRIDE + row;
      const float4 lo = reinterpret_cast<const float4 *>(f)[0], hi = reinterpret_cast<const float4 *>(f)[1];
      const float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
      for (int i = 0; i < 8; i++) s[i] = w == 0 ? v[i] : s[i] + v[i];
    }
  };
  /* body(token, row) for this thread's pieces that land in y. */
  auto for_pieces = [&](auto body) {
    for (int p = (int)threadIdx.x; p < PIECES; p += WARPS * 32) {
      const int token = p / (ROWS / 8), row = p % (ROWS / 8) * 8;
      if (token < ep.m && row0 + row < ep.n) body(token, row);
    }
  };
  if (split == 1) {
    for_pieces([&](int token, int row) {
      float s[8];
      sum_warps(s, token, row);
      store_eight(ep, row0 + row, token, s);
    });
    TGEMM_DECODE_STAMP(2);
    return;
  }
  for_pieces([&](int token, int row) { /* the block's partial, into warp 0's place */
    float s[8];
    sum_warps(s, token, row);
#pragma unroll
    for (int i = 0; i < 8; i++) red[token * STRIDE + row + i] = s[i];
  });
  exchange_and_store<WARPS, T, MT>(red, area, split, rank, row0, ep);
}

/* reduce_and_store one output a thread, in the fragment order. */
template <int WARPS, int R, int MT>
__device__ __forceinline__ void reduce_elements_and_store(const float (&acc)[R], float *red,
                                                          unsigned char *area, int split, int rank,
                                                          int row0, const epilogue &ep) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int E = R * 32, T = R / (4 * MT);
#pragma unroll
  for (int r = 0; r < R; r++)
    if (element_used<MT>(ep, row0, r * 32 + lane)) red[(warp * R + r) * 32 + lane] = acc[r];
  TGEMM_DECODE_STAMP(0);
  __syncthreads();
  TGEMM_DECODE_STAMP(1);
  /* The block's sum of element e, warp 0 first. */
  auto sum_warps = [&](int e) {
    float s = red[e];
#pragma unroll
    for (int w = 1; w < WARPS; w++) s += red[w * E + e];
    return s;
  };
  if (split == 1) {
    for (int e = threadIdx.x; e < E; e += WARPS * 32)
      if (element_used<MT>(ep, row0, e)) store_one<MT>(ep, row0, e, sum_warps(e));
    TGEMM_DECODE_STAMP(2);
    return;
  }
  float *part = red + WARPS * E; /* the block's partial in the row layout */
  for (int e = threadIdx.x; e < E; e += WARPS * 32) {
    if (!element_used<MT>(ep, row0, e)) continue;
    int row, token;
    element_at<MT>(0, e, &row, &token);
    part[token * partial_stride(T) + row] = sum_warps(e);
  }
  exchange_and_store<WARPS, T, MT>(part, area, split, rank, row0, ep);
}

/* Sums the R accumulators of every warp of the block, then (split > 1) of
 * every block of the cluster (cluster_exchange.cuh: the kernel called
 * begin_split at its start), and writes y.  smem: the dynamic shared
 * memory, whose first reduce_floats(WARPS, tiles, MT, split) floats are
 * free for the reduction and whose exchange area is at ep.exchange_at.
 * Elements that land
 * outside y are neither stored nor summed.  Fixed summation order, warp 0
 * first, then the cluster's blocks in rank order, the same in both
 * layouts: the result does not depend on timing or on the layout. */
template <int WARPS, int R, int MT>
__device__ __forceinline__ void reduce_and_store(const float (&acc)[R], void *smem, int split,
                                                 int rank, int row0, const epilogue &ep) {
  float *red = static_cast<float *>(smem);
  unsigned char *area = static_cast<unsigned char *>(smem) + ep.exchange_at;
  if constexpr (reduce_by_rows(WARPS, R / (4 * MT), MT))
    reduce_rows_and_store<WARPS, R, MT>(acc, red, area, split, rank, row0, ep);
  else
    reduce_elements_and_store<WARPS, R, MT>(acc, red, area, split, rank, row0, ep);
}

}  // namespace tgemm_decode

#endif
