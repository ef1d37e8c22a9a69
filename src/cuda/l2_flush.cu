/* The read-only L2 flush (see l2_flush.cuh). */
#include "cuda/l2_flush.cuh"

namespace {

__global__ void read_flush_kernel(uint4 *buf, size_t words) {
  unsigned acc = 0;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < words;
       i += (size_t)gridDim.x * blockDim.x) {
    uint4 v = buf[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  /* Data-dependent, so the loads stay; practically never true. */
  if (acc == 0x9e3779b9u) buf[0].x = acc;
}

}  // namespace

extern "C" cudaError_t tgemm__cuda_l2_flush_read(void *buf, size_t bytes, int blocks,
                                                 cudaStream_t stream) {
  read_flush_kernel<<<blocks > 0 ? blocks : 1, 256, 0, stream>>>(static_cast<uint4 *>(buf), bytes / 16);
  return cudaGetLastError();
}
