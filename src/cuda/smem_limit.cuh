/* Raising a kernel's dynamic shared-memory limit above 48 KB.  The driver
 * call costs host time, so it is made only when a kernel needs more than
 * it was last given on this device, not on every launch.  It is not a
 * stream operation, so it is legal during graph capture. */
#ifndef TGEMM_CUDA_SMEM_LIMIT_CUH
#define TGEMM_CUDA_SMEM_LIMIT_CUH

#include <cuda_runtime.h>

#include <mutex>

static inline cudaError_t tgemm__ensure_smem_limit(const void *kernel, size_t smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  struct entry {
    const void *kernel;
    int device;
    size_t bytes;
  };
  enum { CAPACITY = 512 };
  static entry entries[CAPACITY];
  static int count;
  static std::mutex lock;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  std::lock_guard<std::mutex> guard(lock);
  entry *found = nullptr;
  for (int i = 0; i < count && !found; i++)
    if (entries[i].kernel == kernel && entries[i].device == device) found = &entries[i];
  if (found && found->bytes >= smem) return cudaSuccess;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess) return err;
  if (found) found->bytes = smem;
  else if (count < CAPACITY) entries[count++] = entry{kernel, device, smem};
  return cudaSuccess;
}

#endif
