/* f32 -> bf16/f32 rows with a bias added in f32 (see cuda_convert.cuh). */
#include <cuda_bf16.h>

#include "cuda/cuda_convert.cuh"

namespace {

__device__ __forceinline__ float load_bias(const void *bias, int dtype, int64_t j) {
  if (!bias) return 0.0f;
  if (dtype == TGEMM_F32) return static_cast<const float *>(bias)[j];
  return __bfloat162float(static_cast<const __nv_bfloat16 *>(bias)[j]);
}

__global__ void store_rows_kernel(const float *src, int64_t ld_src, int64_t rows, int64_t cols,
                                  const void *bias, int bias_dtype, void *y, int y_dtype,
                                  int64_t ldy) {
  for (int64_t i = blockIdx.y; i < rows; i += gridDim.y) {
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < cols;
         j += (int64_t)gridDim.x * blockDim.x) {
      float v = src[i * ld_src + j] + load_bias(bias, bias_dtype, j);
      if (y_dtype == TGEMM_F32)
        static_cast<float *>(y)[i * ldy + j] = v;
      else
        static_cast<__nv_bfloat16 *>(y)[i * ldy + j] = __float2bfloat16_rn(v);
    }
  }
}

}  // namespace

extern "C" cudaError_t tgemm__cuda_store_f32_rows(const float *src, int64_t ld_src, int64_t rows,
                                                  int64_t cols, const void *bias,
                                                  tgemm_dtype bias_dtype, void *y,
                                                  tgemm_dtype y_dtype, int64_t ldy,
                                                  cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const int threads = 256;
  int64_t blocks_x = (cols + threads - 1) / threads;
  dim3 grid((unsigned)(blocks_x < 1024 ? blocks_x : 1024), (unsigned)(rows < 65535 ? rows : 65535));
  store_rows_kernel<<<grid, threads, 0, stream>>>(src, ld_src, rows, cols, bias, (int)bias_dtype, y,
                                                  (int)y_dtype, ldy);
  return cudaGetLastError();
}
