/* Per-kernel driver facts that cost host time to ask for, so they are
 * cached per device instead of asked on every launch: raising a kernel's
 * dynamic shared-memory limit above 48 KB, and how many of its blocks fit
 * on one SM.  Neither is a stream operation, so both are legal during
 * graph capture. */
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


/* Blocks of `threads` threads with `smem` bytes of dynamic shared memory
 * that one SM holds at once (for grids sized to stay resident); 0 and an
 * error when the driver cannot say.  Call after tgemm__ensure_smem_limit. */
static inline cudaError_t tgemm__resident_blocks(const void *kernel, int threads, size_t smem,
                                                 int *blocks) {
  struct entry {
    const void *kernel;
    int device, threads;
    size_t smem;
    int blocks;
  };
  enum { CAPACITY = 512 };
  static entry entries[CAPACITY];
  static int count;
  static std::mutex lock;
  *blocks = 0;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  std::lock_guard<std::mutex> guard(lock);
  for (int i = 0; i < count; i++)
    if (entries[i].kernel == kernel && entries[i].device == device &&
        entries[i].threads == threads && entries[i].smem == smem) {
      *blocks = entries[i].blocks;
      return cudaSuccess;
    }
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, kernel, threads, smem);
  if (err != cudaSuccess) return err;
  if (count < CAPACITY) entries[count++] = entry{kernel, device, threads, smem, *blocks};
  return cudaSuccess;
}

#endif
