/* CK(call): the device harnesses' check of a CUDA runtime call; any error
 * is printed with its place and ends the program (exit status 2). */
#ifndef TGEMM_BENCH_CUDA_CHECK_CUH
#define TGEMM_BENCH_CUDA_CHECK_CUH

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(call)                                                                             \
  do {                                                                                       \
    cudaError_t err_ = (call);                                                               \
    if (err_ != cudaSuccess) {                                                               \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      exit(2);                                                                               \
    }                                                                                        \
  } while (0)

#endif
