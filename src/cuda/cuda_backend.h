/* What the CUDA backend exposes besides its vtable (tgemm__cuda_backend_get
 * in core/backend.h): introspection for the GPU tests. */
#ifndef TGEMM_CUDA_CUDA_BACKEND_H
#define TGEMM_CUDA_CUDA_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "core/internal.h"

/* cuBLASLt cache entries built so far on a CUDA context (0 otherwise). */
uint64_t tgemm__cuda_lt_cache_builds(const tgemm_ctx *ctx);

/* Was the kernel family of a route (skinny_bf16, w4a16, w4a4) compiled
 * into this build?  Library and reference always are. */
bool tgemm__cuda_family_built(tgemm_route route);

/* Was the GPU MXFP4 quantizer (src/cuda/mxfp4_quant.cu) compiled in? */
bool tgemm__cuda_quantizer_built(void);

#endif
