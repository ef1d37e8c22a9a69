/* GPU reference GEMM (see reference_gemm.cuh). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/reference_gemm.cuh"

namespace {

__device__ const float kE2m1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

__device__ __forceinline__ double load_dense(const void *p, int dtype, int64_t i) {
  if (dtype == TGEMM_F32) return static_cast<const float *>(p)[i];
  if (dtype == TGEMM_F16) return __half2float(static_cast<const __half *>(p)[i]);
  return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
}

/* Element k of MXFP4 row `row`: in the standard order its code is nibble
 * k % 8 of 32-bit word k / 8 (the low nibble of byte k / 2 for even k); in
 * the paired order (mxfp4_pair.cuh) nibble k % 8 / 2, + 4 for odd k. */
__device__ __forceinline__ double load_mxfp4(const uint8_t *packed, const uint8_t *scales,
                                             int64_t k, bool paired) {
  uint8_t scale = scales[k / 32];
  if (scale == 0xFF) return __longlong_as_double(0x7ff8000000000000ll);
  const int e = (int)(k % 8), nibble = paired ? (e & 1) * 4 + e / 2 : e;
  uint8_t byte = packed[k / 8 * 4 + nibble / 2];
  int code = (nibble & 1) ? (byte >> 4) : (byte & 15);
  return ldexp((double)kE2m1[code], (int)scale - 127);
}

__global__ void reference_kernel(tgemm__cuda_gemm_args a) {
  for (int64_t i = (int64_t)blockIdx.y * blockDim.y + threadIdx.y; i < a.m;
       i += (int64_t)gridDim.y * blockDim.y) {
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < a.n;
         j += (int64_t)gridDim.x * blockDim.x) {
      const char *x_row = static_cast<const char *>(a.x) +
                          (size_t)(i * a.ldx) * (a.x_dtype == TGEMM_F32 ? 4 : 2);
      double acc = 0.0;
      if (a.w) {
        const char *w_row = static_cast<const char *>(a.w) +
                            (size_t)(j * a.ldw) * (a.w_dtype == TGEMM_F32 ? 4 : 2);
        for (int64_t k = 0; k < a.k; k++)
          acc += load_dense(x_row, a.x_dtype, k) * load_dense(w_row, a.w_dtype, k);
      } else {
        const uint8_t *packed = a.w_packed + j * a.ldw_packed;
        const uint8_t *scales = a.w_scales + j * a.ldw_scales;
        for (int64_t k = 0; k < a.k; k++)
          acc += load_dense(x_row, a.x_dtype, k) * load_mxfp4(packed, scales, k, a.w_paired != 0);
      }
      if (a.bias) acc += load_dense(a.bias, a.bias_dtype, j);
      if (a.y_dtype == TGEMM_F32)
        static_cast<float *>(a.y)[i * a.ldy + j] = (float)acc;
      else
        static_cast<__nv_bfloat16 *>(a.y)[i * a.ldy + j] = __double2bfloat16(acc);
    }
  }
}

}  // namespace

extern "C" cudaError_t tgemm__reference_gemm_cuda(const tgemm__cuda_gemm_args *args) {
  if (args->m <= 0 || args->n <= 0) return cudaSuccess;
  dim3 block(32, 8);
  int64_t gx = (args->n + block.x - 1) / block.x, gy = (args->m + block.y - 1) / block.y;
  dim3 grid((unsigned)(gx < 65535 ? gx : 65535), (unsigned)(gy < 65535 ? gy : 65535));
  reference_kernel<<<grid, block, 0, args->stream>>>(*args);
  return cudaGetLastError();
}
