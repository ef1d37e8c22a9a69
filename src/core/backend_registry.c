/* Which backends this build has.  The CUDA backend (src/cuda) defines
 * tgemm__cuda_backend_get when built; without it, there is none. */
#include "core/backend.h"

#ifndef TGEMM_HAVE_CUDA
const tgemm__backend *tgemm__cuda_backend_get(void) { return NULL; }
#endif
