/* cuBLASLt, opened at run time with dlopen so that the library builds and
 * runs (on the CPU backend) where cuBLASLt is missing.  <cublasLt.h> gives
 * the types only; every call goes through this table. */
#ifndef TGEMM_CUDA_CUBLASLT_LOADER_H
#define TGEMM_CUDA_CUBLASLT_LOADER_H

#include <cublasLt.h>
#include <stddef.h>

/* One pointer per cuBLASLt function we call; each has the exact type of the
 * header's declaration. */
typedef struct tgemm__lt_api {
  __typeof__(cublasLtCreate) *create;
  __typeof__(cublasLtDestroy) *destroy;
  __typeof__(cublasLtGetVersion) *get_version;
  __typeof__(cublasLtGetStatusName) *get_status_name;
  __typeof__(cublasLtMatmulDescCreate) *desc_create;
  __typeof__(cublasLtMatmulDescDestroy) *desc_destroy;
  __typeof__(cublasLtMatmulDescSetAttribute) *desc_set;
  __typeof__(cublasLtMatrixLayoutCreate) *layout_create;
  __typeof__(cublasLtMatrixLayoutDestroy) *layout_destroy;
  __typeof__(cublasLtMatmulPreferenceCreate) *pref_create;
  __typeof__(cublasLtMatmulPreferenceDestroy) *pref_destroy;
  __typeof__(cublasLtMatmulPreferenceSetAttribute) *pref_set;
  __typeof__(cublasLtMatmulAlgoGetHeuristic) *heuristic;
  __typeof__(cublasLtMatmulAlgoCheck) *algo_check;
  __typeof__(cublasLtMatmulAlgoConfigSetAttribute) *algo_config_set;
  __typeof__(cublasLtMatmulAlgoConfigGetAttribute) *algo_config_get;
  __typeof__(cublasLtMatmulAlgoCapGetAttribute) *algo_cap_get;
  __typeof__(cublasLtMatmul) *matmul;
  size_t version; /* cublasLtGetVersion(), e.g. 130100 */
} tgemm__lt_api;

/* Open cuBLASLt once per process ("libcublasLt.so.13", then
 * "libcublasLt.so") and resolve every symbol.  Returns NULL when that
 * fails, with the reason in `why` ("libcublasLt.so.13 not found: ...").
 * The library stays loaded for the life of the process: CUDA graphs may
 * hold its kernels after a context is freed.  Thread-safe. */
const tgemm__lt_api *tgemm__lt_load(char *why, size_t why_len);

/* "CUBLAS_STATUS_NOT_SUPPORTED"; works before the library is loaded. */
const char *tgemm__lt_status_name(cublasStatus_t status);

#endif
