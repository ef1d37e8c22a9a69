/* dlopen of cuBLASLt: resolved once per process, never closed. */
#include "cuda/cublaslt_loader.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_once_t lt_once = PTHREAD_ONCE_INIT;
static tgemm__lt_api lt_api;
static int lt_loaded;
static char lt_error[384];

/* One symbol's address; NULL (with lt_error set) when it is missing. */
static void *resolve(void *lib, const char *name) {
  dlerror();
  void *sym = dlsym(lib, name);
  if (!sym) {
    const char *why = dlerror();
    snprintf(lt_error, sizeof lt_error, "cuBLASLt has no symbol %s: %s", name,
             why ? why : "not found");
  }
  return sym;
}

static void lt_open(void) {
  static const char *const names[] = {"libcublasLt.so.13", "libcublasLt.so"};
  void *lib = NULL;
  char first_error[256] = "";
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++) {
    lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib && i == 0) {
      const char *why = dlerror();
      snprintf(first_error, sizeof first_error, "%s", why ? why : "unknown dlopen error");
    }
  }
  if (!lib) {
    snprintf(lt_error, sizeof lt_error,
             "libcublasLt.so.13 not found: %s (install the CUDA 13 cuBLAS runtime or add its "
             "directory to LD_LIBRARY_PATH)",
             first_error);
    return;
  }
  /* memcpy because ISO C has no conversion from void * to a function
   * pointer; POSIX guarantees that the representations agree. */
#define TGEMM__LT_SYM(field, symbol)                    \
  {                                                     \
    void *sym_ = resolve(lib, #symbol);                 \
    if (!sym_) return;                                  \
    memcpy(&lt_api.field, &sym_, sizeof sym_);          \
  }
  TGEMM__LT_SYM(create, cublasLtCreate)
  TGEMM__LT_SYM(destroy, cublasLtDestroy)
  TGEMM__LT_SYM(get_version, cublasLtGetVersion)
  TGEMM__LT_SYM(get_status_name, cublasLtGetStatusName)
  TGEMM__LT_SYM(desc_create, cublasLtMatmulDescCreate)
  TGEMM__LT_SYM(desc_destroy, cublasLtMatmulDescDestroy)
  TGEMM__LT_SYM(desc_set, cublasLtMatmulDescSetAttribute)
  TGEMM__LT_SYM(layout_create, cublasLtMatrixLayoutCreate)
  TGEMM__LT_SYM(layout_destroy, cublasLtMatrixLayoutDestroy)
  TGEMM__LT_SYM(pref_create, cublasLtMatmulPreferenceCreate)
  TGEMM__LT_SYM(pref_destroy, cublasLtMatmulPreferenceDestroy)
  TGEMM__LT_SYM(pref_set, cublasLtMatmulPreferenceSetAttribute)
  TGEMM__LT_SYM(heuristic, cublasLtMatmulAlgoGetHeuristic)
  TGEMM__LT_SYM(algo_check, cublasLtMatmulAlgoCheck)
  TGEMM__LT_SYM(algo_config_set, cublasLtMatmulAlgoConfigSetAttribute)
  TGEMM__LT_SYM(algo_config_get, cublasLtMatmulAlgoConfigGetAttribute)
  TGEMM__LT_SYM(algo_cap_get, cublasLtMatmulAlgoCapGetAttribute)
  TGEMM__LT_SYM(matmul, cublasLtMatmul)
#undef TGEMM__LT_SYM
  lt_api.version = lt_api.get_version();
  lt_loaded = 1;
}

const tgemm__lt_api *tgemm__lt_load(char *why, size_t why_len) {
  pthread_once(&lt_once, lt_open);
  if (lt_loaded) return &lt_api;
  if (why && why_len) snprintf(why, why_len, "%s", lt_error);
  return NULL;
}

const char *tgemm__lt_status_name(cublasStatus_t status) {
  if (lt_loaded && lt_api.get_status_name) {
    const char *name = lt_api.get_status_name(status);
    if (name) return name;
  }
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}
