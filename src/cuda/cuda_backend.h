/* What the CUDA backend exposes besides its vtable (tgemm__cuda_backend_get
 * in core/backend.h): introspection for the GPU tests. */
#ifndef TGEMM_CUDA_CUDA_BACKEND_H
#define TGEMM_CUDA_CUDA_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "core/internal.h"

/* cuBLASLt cache entries built so far on a CUDA context (0 otherwise). */
uint64_t tgemm__cuda_lt_cache_builds(const tgemm_ctx *ctx);
/* Library calls whose given algo did not fit and ran the heuristic's. */
uint64_t tgemm__cuda_lt_fallbacks(const tgemm_ctx *ctx);

#endif
