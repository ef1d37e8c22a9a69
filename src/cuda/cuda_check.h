/* Turning CUDA runtime failures into a tgemm_status plus a message that
 * names the call, the CUDA error and the problem, e.g.
 * "cudaMalloc: cudaErrorMemoryAllocation (out of memory) (workspace of
 * 134217728 bytes)".  For the C files of the CUDA backend. */
#ifndef TGEMM_CUDA_CUDA_CHECK_H
#define TGEMM_CUDA_CUDA_CHECK_H

#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdio.h>

#include "core/internal.h"

/* Which tgemm status a CUDA error stands for. */
static inline tgemm_status tgemm__cuda_status_of(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return TGEMM_OK;
    case cudaErrorMemoryAllocation: return TGEMM_OUT_OF_MEMORY;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorDevicesUnavailable: return TGEMM_NO_DEVICE;
    default: return TGEMM_BACKEND_ERROR;
  }
}

/* Record "<call>: <cudaErrorName> (<description>) (<what>)" on ctx and
 * return the matching status.  `what` is a printf format for the problem
 * (shape, sizes). */
static inline tgemm_status tgemm__cuda_fail(tgemm_ctx *ctx, cudaError_t err, const char *call,
                                            const char *what, ...)
    __attribute__((format(printf, 4, 5)));

static inline tgemm_status tgemm__cuda_fail(tgemm_ctx *ctx, cudaError_t err, const char *call,
                                            const char *what, ...) {
  char detail[256] = "";
  if (what) {
    va_list ap;
    va_start(ap, what);
    vsnprintf(detail, sizeof detail, what, ap);
    va_end(ap);
  }
  return tgemm__set_error(ctx, tgemm__cuda_status_of(err), "%s: %s (%s)%s%s%s", call,
                          cudaGetErrorName(err), cudaGetErrorString(err), detail[0] ? " (" : "",
                          detail, detail[0] ? ")" : "");
}

/* Evaluate a runtime call; on failure return from the enclosing function
 * with the error recorded.  `...` is the printf description of the problem. */
#define TGEMM__CUDA_TRY(ctx, call_expr, call_name, ...)                    \
  do {                                                                     \
    cudaError_t tgemm_cuda_err_ = (call_expr);                             \
    if (tgemm_cuda_err_ != cudaSuccess)                                    \
      return tgemm__cuda_fail((ctx), tgemm_cuda_err_, (call_name), __VA_ARGS__); \
  } while (0)

#endif
