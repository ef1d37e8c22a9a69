/* The paired nibble order on the GPU (mxfp4_pair.cuh). */
#include "cuda/mxfp4_pair.cuh"

namespace {

__global__ void pair_words(const uint32_t *src, uint32_t *dst, long long rows, long long words,
                           long long ld_words) {
  const long long total = rows * words;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    const long long at = i / words * ld_words + i % words;
    dst[at] = tgemm__mxfp4_pair_word(src[at]);
  }
}

}  // namespace

extern "C" cudaError_t tgemm__mxfp4_pair_cuda(const uint8_t *src, uint8_t *dst, int64_t rows,
                                              int64_t row_bytes, int64_t ld, cudaStream_t stream) {
  if (!src || !dst || rows < 0 || row_bytes < 0 || row_bytes % 4 || ld % 4 || ld < row_bytes ||
      (uintptr_t)src % 4 || (uintptr_t)dst % 4)
    return cudaErrorInvalidValue;
  const long long words = row_bytes / 4, total = rows * words;
  if (total == 0) return cudaSuccess;
  const long long blocks = (total + 255) / 256;
  pair_words<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, stream>>>(
      reinterpret_cast<const uint32_t *>(src), reinterpret_cast<uint32_t *>(dst), rows, words,
      ld / 4);
  return cudaGetLastError();
}
