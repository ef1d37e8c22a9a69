/* GPU MXFP4 quantizer and dequantizer.  Thread layout: one "part" = 8
 * consecutive values of one 32-value block, four lanes per block, so a warp
 * reads 512 contiguous bytes of bf16 and writes 128 contiguous bytes of
 * codes.  The arithmetic (scale rule, rounding) lives in mxfp4_device.cuh,
 * shared with the fused W4A4 GEMM so that both give the same bytes. */
#include <cuda_fp16.h>
#include <string.h>

#include "cuda/mxfp4_device.cuh"
#include "cuda/mxfp4_quant.cuh"

namespace {

constexpr int kThreads = 256;

struct quant_args {
  const char *src;
  int64_t rows, cols, ld; /* ld in elements */
  int64_t nb;             /* blocks per row */
  uint64_t parts;         /* rows * nb * 4 */
  uint8_t *packed;
  int64_t packed_ld;
  uint8_t *scales;
  int64_t scales_ld;
  int mode;
  int vec_load;  /* rows start 16-byte aligned */
  int vec_store; /* packed rows start 4-byte aligned */
  int div_ok;    /* units fit 32 bits: magic division */
  uint32_t div_magic, div_shift;
};

/* Which block (row, b) this lane's part belongs to: unit / nb through a
 * multiply-high by a precomputed magic number (the per-thread division
 * was a visible share of this memory-bound kernel's instructions). */
template <typename A>
__device__ __forceinline__ void locate(uint64_t p, const A &a, int64_t *row, int64_t *b) {
  const uint64_t unit = p >> 2;
  if (a.div_ok) {
    const uint32_t u = (uint32_t)unit;
    const uint32_t r = (uint32_t)(((uint64_t)__umulhi(u, a.div_magic) + u) >> a.div_shift);
    *row = r;
    *b = (int64_t)(u - r * (uint32_t)a.nb);
  } else {
    *row = (int64_t)(unit / (uint64_t)a.nb);
    *b = (int64_t)(unit - (uint64_t)(*row) * (uint64_t)a.nb);
  }
}

/* Magic numbers for n / d with 32-bit n: q = (umulhi(n, magic) + n) >> shift. */
void div_magic(uint64_t d, uint32_t *magic, uint32_t *shift) {
  uint32_t l = 0;
  while ((1ull << l) < d) l++;
  *shift = l;
  *magic = (uint32_t)((((1ull << l) - d) << 32) / d + 1);
}

__device__ __forceinline__ uint4 load16_stream(const void *p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ float half_bits_to_f32(uint32_t h) {
  return __half2float(__ushort_as_half((unsigned short)h));
}

/* Load 8 values starting at column col of row (zeros past cols). */
template <int DT>
__device__ __forceinline__ void load8(const quant_args &a, int64_t row, int64_t col,
                                      float (&v)[8]) {
  constexpr int esize = DT == TGEMM_F32 ? 4 : 2;
  const char *base = a.src + (row * a.ld + col) * esize;
  if (a.vec_load && col + 8 <= a.cols) {
    if (DT == TGEMM_F32) {
      uint4 q0 = load16_stream(base), q1 = load16_stream(base + 16);
      uint32_t w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
      for (int i = 0; i < 8; i++) v[i] = __uint_as_float(w[i]);
    } else {
      uint4 q = load16_stream(base);
      uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
      for (int i = 0; i < 4; i++) {
        if (DT == TGEMM_BF16) {
          v[2 * i] = __uint_as_float(w[i] << 16);
          v[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
        } else {
          v[2 * i] = half_bits_to_f32(w[i] & 0xFFFFu);
          v[2 * i + 1] = half_bits_to_f32(w[i] >> 16);
        }
      }
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < 8; i++) {
    float f = 0.0f;
    if (col + i < a.cols) {
      if (DT == TGEMM_F32) {
        f = reinterpret_cast<const float *>(base)[i];
      } else {
        uint32_t h = reinterpret_cast<const unsigned short *>(base)[i];
        f = DT == TGEMM_BF16 ? __uint_as_float(h << 16) : half_bits_to_f32(h);
      }
    }
    v[i] = f;
  }
}

template <int DT>
__global__ void __launch_bounds__(kThreads) quantize_kernel(quant_args a) {
  const uint64_t p = (uint64_t)blockIdx.x * kThreads + threadIdx.x;
  int64_t row = 0, b = 0;
  const bool active = p < a.parts;
  if (active) locate(p, a, &row, &b);
  const int part = (int)(p & 3);
  float v[8];
  if (active) {
    load8<DT>(a, row, b * 32 + part * 8, v);
  } else {
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = 0.0f;
  }
  uint32_t amax = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) amax = max(amax, tgemm_mx::abs_bits(v[i]));
  amax = tgemm_mx::quad_max(amax); /* whole quads are active or not */
  if (!active) return;
  uint32_t scale_byte;
  uint32_t word = tgemm_mx::quantize8(v, amax, a.mode, &scale_byte);
  uint8_t *dst = a.packed + row * a.packed_ld + b * 16 + part * 4;
  if (a.vec_store) {
    *reinterpret_cast<uint32_t *>(dst) = word;
  } else {
#pragma unroll
    for (int i = 0; i < 4; i++) dst[i] = (uint8_t)(word >> (8 * i));
  }
  if (part == 0) a.scales[row * a.scales_ld + b] = (uint8_t)scale_byte;
}

/* x̂ = dequantize(quantize(x)) as bf16 (exact), for W4A4 kernels that take
 * bf16 activations: the same lanes and rule as the quantizer. */
struct fake_args {
  quant_args q;
  uint16_t *dst;
  int64_t dst_ld;
  int vec_dst;
};

template <int DT>
__global__ void __launch_bounds__(kThreads) fake_quant_kernel(fake_args f) {
  const quant_args &a = f.q;
  const uint64_t p = (uint64_t)blockIdx.x * kThreads + threadIdx.x;
  int64_t row = 0, b = 0;
  const bool active = p < a.parts;
  if (active) locate(p, a, &row, &b);
  const int64_t col = b * 32 + (int64_t)(p & 3) * 8;
  float v[8];
  if (active) {
    load8<DT>(a, row, col, v);
  } else {
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = 0.0f;
  }
  uint32_t amax = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) amax = max(amax, tgemm_mx::abs_bits(v[i]));
  amax = tgemm_mx::quad_max(amax);
  if (!active) return;
  uint32_t out[4];
  tgemm_mx::fake_quant8_bf16(v, amax, a.mode, out);
  uint16_t *dst = f.dst + row * f.dst_ld + col;
  if (f.vec_dst && col + 8 <= a.cols) {
    *reinterpret_cast<uint4 *>(dst) = make_uint4(out[0], out[1], out[2], out[3]);
  } else {
#pragma unroll
    for (int i = 0; i < 8; i++)
      if (col + i < a.cols) dst[i] = (uint16_t)(out[i / 2] >> (16 * (i & 1)));
  }
}

struct dequant_args {
  const uint8_t *packed;
  int64_t packed_ld;
  const uint8_t *scales;
  int64_t scales_ld;
  int64_t rows, cols, nb;
  uint64_t parts;
  char *dst;
  int64_t ld;
  int vec_load, vec_store;
  int div_ok;
  uint32_t div_magic, div_shift;
};

template <int DT>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(dequant_args a) {
  const uint64_t p = (uint64_t)blockIdx.x * kThreads + threadIdx.x;
  if (p >= a.parts) return;
  int64_t row, b;
  locate(p, a, &row, &b);
  const int part = (int)(p & 3);
  const uint8_t *src = a.packed + row * a.packed_ld + b * 16 + part * 4;
  uint32_t word;
  if (a.vec_load) {
    word = __ldg(reinterpret_cast<const unsigned int *>(src));
  } else {
    word = (uint32_t)src[0] | ((uint32_t)src[1] << 8) | ((uint32_t)src[2] << 16) |
           ((uint32_t)src[3] << 24);
  }
  const float scale = tgemm_mx::e8m0_f32(a.scales[row * a.scales_ld + b]);
  uint32_t pairs[4];
  tgemm_mx::e2m1x8_to_bf16x2(word, pairs);
  float v[8];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    v[2 * i] = __uint_as_float(pairs[i] << 16) * scale;
    v[2 * i + 1] = __uint_as_float(pairs[i] & 0xFFFF0000u) * scale;
  }
  const int64_t col = b * 32 + part * 8;
  constexpr int esize = DT == TGEMM_F32 ? 4 : 2;
  char *dst = a.dst + (row * a.ld + col) * esize;
  uint32_t h[8];
  if (DT != TGEMM_F32) {
#pragma unroll
    for (int i = 0; i < 8; i++)
      h[i] = DT == TGEMM_BF16 ? tgemm_mx::f32_to_bf16_bits(v[i])
                              : (uint32_t)__half_as_ushort(__float2half_rn(v[i]));
  }
  if (a.vec_store && col + 8 <= a.cols) {
    if (DT == TGEMM_F32) {
      reinterpret_cast<float4 *>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
      reinterpret_cast<float4 *>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
      *reinterpret_cast<uint4 *>(dst) =
          make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16),
                     h[6] | (h[7] << 16));
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < 8; i++) {
    if (col + i >= a.cols) break;
    if (DT == TGEMM_F32)
      reinterpret_cast<float *>(dst)[i] = v[i];
    else
      reinterpret_cast<unsigned short *>(dst)[i] = (unsigned short)h[i];
  }
}

bool aligned(const void *p, int64_t ld_bytes, int64_t align) {
  return ((uintptr_t)p % (uint64_t)align) == 0 && ld_bytes % align == 0;
}

}  // namespace

extern "C" cudaError_t tgemm__mxfp4_quantize_cuda(const void *src, tgemm_dtype dtype,
                                                  int64_t rows, int64_t cols, int64_t ld,
                                                  uint8_t *packed, int64_t packed_ld,
                                                  uint8_t *scales, int64_t scales_ld,
                                                  tgemm_scale_mode mode, cudaStream_t stream) {
  if (rows < 0 || cols < 0) return cudaErrorInvalidValue;
  if (mode != TGEMM_SCALE_EVEN && mode != TGEMM_SCALE_FLOOR && mode != TGEMM_SCALE_RCEIL)
    return cudaErrorInvalidValue;
  if (dtype != TGEMM_F32 && dtype != TGEMM_F16 && dtype != TGEMM_BF16)
    return cudaErrorInvalidValue;
  if (rows == 0 || cols == 0) return cudaSuccess;
  quant_args a;
  a.nb = (cols + 31) / 32;
  if (!src || !packed || !scales || ld < cols || packed_ld < a.nb * 16 || scales_ld < a.nb)
    return cudaErrorInvalidValue;
  const int64_t esize = dtype == TGEMM_F32 ? 4 : 2;
  a.src = static_cast<const char *>(src);
  a.rows = rows;
  a.cols = cols;
  a.ld = ld;
  a.parts = (uint64_t)rows * (uint64_t)a.nb * 4u;
  a.packed = packed;
  a.packed_ld = packed_ld;
  a.scales = scales;
  a.scales_ld = scales_ld;
  a.mode = (int)mode;
  a.vec_load = aligned(src, ld * esize, 16);
  a.vec_store = aligned(packed, packed_ld, 4);
  a.div_ok = (a.parts >> 2) <= 0xFFFFFFFFull && a.nb <= 0xFFFFFFFFll;
  div_magic((uint64_t)a.nb, &a.div_magic, &a.div_shift);
  const uint64_t blocks = (a.parts + kThreads - 1) / kThreads;
  if (blocks > 0x7FFFFFFFull) return cudaErrorInvalidValue;
  const dim3 grid((unsigned)blocks);
  switch (dtype) {
    case TGEMM_F32: quantize_kernel<TGEMM_F32><<<grid, kThreads, 0, stream>>>(a); break;
    case TGEMM_F16: quantize_kernel<TGEMM_F16><<<grid, kThreads, 0, stream>>>(a); break;
    default: quantize_kernel<TGEMM_BF16><<<grid, kThreads, 0, stream>>>(a); break;
  }
  return cudaGetLastError();
}

extern "C" cudaError_t tgemm__mxfp4_dequantize_cuda(const uint8_t *packed, int64_t packed_ld,
                                                    const uint8_t *scales, int64_t scales_ld,
                                                    int64_t rows, int64_t cols, void *dst,
                                                    tgemm_dtype dtype, int64_t ld,
                                                    cudaStream_t stream) {
  if (rows < 0 || cols < 0) return cudaErrorInvalidValue;
  if (dtype != TGEMM_F32 && dtype != TGEMM_F16 && dtype != TGEMM_BF16)
    return cudaErrorInvalidValue;
  if (rows == 0 || cols == 0) return cudaSuccess;
  dequant_args a;
  a.nb = (cols + 31) / 32;
  if (!packed || !scales || !dst || ld < cols || packed_ld < a.nb * 16 || scales_ld < a.nb)
    return cudaErrorInvalidValue;
  const int64_t esize = dtype == TGEMM_F32 ? 4 : 2;
  a.packed = packed;
  a.packed_ld = packed_ld;
  a.scales = scales;
  a.scales_ld = scales_ld;
  a.rows = rows;
  a.cols = cols;
  a.parts = (uint64_t)rows * (uint64_t)a.nb * 4u;
  a.dst = static_cast<char *>(dst);
  a.ld = ld;
  a.vec_load = aligned(packed, packed_ld, 4);
  a.vec_store = aligned(dst, ld * esize, 16);
  a.div_ok = (a.parts >> 2) <= 0xFFFFFFFFull && a.nb <= 0xFFFFFFFFll;
  div_magic((uint64_t)a.nb, &a.div_magic, &a.div_shift);
  const uint64_t blocks = (a.parts + kThreads - 1) / kThreads;
  if (blocks > 0x7FFFFFFFull) return cudaErrorInvalidValue;
  const dim3 grid((unsigned)blocks);
  switch (dtype) {
    case TGEMM_F32: dequantize_kernel<TGEMM_F32><<<grid, kThreads, 0, stream>>>(a); break;
    case TGEMM_F16: dequantize_kernel<TGEMM_F16><<<grid, kThreads, 0, stream>>>(a); break;
    default: dequantize_kernel<TGEMM_BF16><<<grid, kThreads, 0, stream>>>(a); break;
  }
  return cudaGetLastError();
}

extern "C" cudaError_t tgemm__mxfp4_fake_quant_bf16_cuda(const void *src, tgemm_dtype dtype,
                                                        int64_t rows, int64_t cols, int64_t ld,
                                                        uint16_t *dst, int64_t dst_ld,
                                                        tgemm_scale_mode mode,
                                                        cudaStream_t stream) {
  if (rows < 0 || cols < 0) return cudaErrorInvalidValue;
  if (mode != TGEMM_SCALE_EVEN && mode != TGEMM_SCALE_FLOOR && mode != TGEMM_SCALE_RCEIL)
    return cudaErrorInvalidValue;
  if (dtype != TGEMM_F32 && dtype != TGEMM_F16 && dtype != TGEMM_BF16)
    return cudaErrorInvalidValue;
  if (rows == 0 || cols == 0) return cudaSuccess;
  if (!src || !dst || ld < cols || dst_ld < cols) return cudaErrorInvalidValue;
  fake_args f;
  memset(&f, 0, sizeof f);
  quant_args &a = f.q;
  a.nb = (cols + 31) / 32;
  const int64_t esize = dtype == TGEMM_F32 ? 4 : 2;
  a.src = static_cast<const char *>(src);
  a.rows = rows;
  a.cols = cols;
  a.ld = ld;
  a.parts = (uint64_t)rows * (uint64_t)a.nb * 4u;
  a.mode = (int)mode;
  a.vec_load = aligned(src, ld * esize, 16);
  a.div_ok = (a.parts >> 2) <= 0xFFFFFFFFull && a.nb <= 0xFFFFFFFFll;
  div_magic((uint64_t)a.nb, &a.div_magic, &a.div_shift);
  f.dst = dst;
  f.dst_ld = dst_ld;
  f.vec_dst = aligned(dst, dst_ld * 2, 16);
  const uint64_t blocks = (a.parts + kThreads - 1) / kThreads;
  if (blocks > 0x7FFFFFFFull) return cudaErrorInvalidValue;
  const dim3 grid((unsigned)blocks);
  switch (dtype) {
    case TGEMM_F32: fake_quant_kernel<TGEMM_F32><<<grid, kThreads, 0, stream>>>(f); break;
    case TGEMM_F16: fake_quant_kernel<TGEMM_F16><<<grid, kThreads, 0, stream>>>(f); break;
    default: fake_quant_kernel<TGEMM_BF16><<<grid, kThreads, 0, stream>>>(f); break;
  }
  return cudaGetLastError();
}
