/* The library route through cuBLASLt (see cublaslt_gemm.h). */
#include "cuda/cublaslt_gemm.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_check.h"
#include "cuda/cuda_convert.cuh"

#define LT_SLOTS 64      /* cached problems; a tuner sweep evicts the oldest */
#define LT_PROBE 8       /* slots looked at per lookup */
#define LT_HEURISTIC 32  /* algorithms asked of the heuristic by candidates() */
#define LT_SPLIT_BASES 8 /* heuristic results that get split-K variants */
#define LT_MAX_ALIGN 256u

/* What cuBLASLt sees of one call.  Zero-filled before use so that memcmp and
 * hashing see no padding garbage. */
typedef struct lt_key {
  int64_t m, n, k;
  int64_t ldx, ldw, ldd;
  int32_t ab_dtype;   /* x and W */
  int32_t d_dtype;    /* what cuBLASLt writes: y's dtype, or f32 when staged */
  int32_t bias_dtype; /* fused bias, -1 when none */
  uint32_t align_x, align_w, align_d, align_bias;
} lt_key;

typedef struct lt_entry {
  bool used;
  lt_key key;
  uint64_t last_use;
  /* The contiguous form that candidates() describes: its algorithms come
   * from the heuristic for exactly these operands. */
  bool standard;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t a, b, d;
  cublasLtMatmulPreference_t pref;
  bool has_top; /* the heuristic's first choice for exactly these operands */
  cublasLtMatmulAlgo_t top;
  cublasStatus_t top_status;
  /* The last caller-given algo checked against this entry, and the
   * verdict, so that a tuned kernel is checked once, not per call. */
  bool has_checked, checked_ok;
  cublasLtMatmulAlgo_t checked;
} lt_entry;

struct tgemm__lt_gemm {
  const tgemm__lt_api *api;
  cublasLtHandle_t handle;
  void *workspace;
  size_t workspace_bytes;
  void *scratch;
  size_t scratch_bytes;
  uint64_t clock;
  uint64_t builds;
  uint64_t fallbacks;
  lt_entry slots[LT_SLOTS];
};

/* ------------------------------------------------------------- helpers */

static cudaDataType_t cuda_type(int32_t dtype) {
  switch (dtype) {
    case TGEMM_F32: return CUDA_R_32F;
    case TGEMM_F16: return CUDA_R_16F;
    default: return CUDA_R_16BF;
  }
}

static int64_t dtype_bytes(int32_t dtype) { return dtype == TGEMM_F32 ? 4 : 2; }

/* The alignment cuBLASLt can count on for a buffer and its row stride:
 * the lowest set bit of both, capped at 256 (cuBLASLt's own default). */
static uint32_t align_of(const void *ptr, int64_t ld_bytes) {
  uintptr_t v = (uintptr_t)ptr | (uintptr_t)ld_bytes | LT_MAX_ALIGN;
  return (uint32_t)(v & (~v + 1));
}

static tgemm_status lt_status_of(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH: return TGEMM_UNSUPPORTED;
    case CUBLAS_STATUS_ALLOC_FAILED: return TGEMM_OUT_OF_MEMORY;
    default: return TGEMM_BACKEND_ERROR;
  }
}

/* "call: CUBLAS_STATUS_X (M=.. N=.. K=.., bf16 -> bf16, bias, extra)" */
static tgemm_status lt_fail(tgemm_ctx *ctx, cublasStatus_t s, const char *call,
                            const lt_key *key, const char *extra) {
  return tgemm__set_error(ctx, lt_status_of(s), "%s: %s (M=%lld N=%lld K=%lld, %s -> %s%s%s%s)",
                          call, tgemm__lt_status_name(s), (long long)key->m, (long long)key->n,
                          (long long)key->k, tgemm_dtype_name((tgemm_dtype)key->ab_dtype),
                          tgemm_dtype_name((tgemm_dtype)key->d_dtype),
                          key->bias_dtype >= 0 ? ", bias" : "", extra ? ", " : "",
                          extra ? extra : "");
}

static uint64_t hash_key(const lt_key *key) {
  const unsigned char *p = (const unsigned char *)key;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < sizeof *key; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

/* Does a staged output (f32 scratch + store kernel) stand in for y? */
static bool needs_staging(tgemm_dtype x_dtype, tgemm_dtype y_dtype, bool has_bias,
                          tgemm_dtype bias_dtype) {
  if (y_dtype == TGEMM_BF16 && x_dtype != TGEMM_BF16) return true;
  return has_bias && bias_dtype != y_dtype;
}

/* Rows per cuBLASLt call when staged: all of them if they fit, else a
 * multiple of 128 (which keeps x's chunk starts as aligned as x), else
 * what fits.  0 when not even one row fits. */
static int64_t staged_rows(const tgemm__lt_gemm *g, int64_t m, int64_t n) {
  int64_t fit = (int64_t)(g->scratch_bytes / ((size_t)n * 4));
  if (fit >= m) return m;
  if (fit >= 128) return fit / 128 * 128;
  return fit;
}

/* The key of a shape's contiguous form (cudaMalloc'd buffers, ld = cols),
 * bias of y's dtype: what candidates(), the default and validation
 * describe, and what run() meets for such operands. */
static tgemm_status key_for_shape(tgemm_ctx *ctx, const tgemm__lt_gemm *g,
                                  const tgemm__shape *s, lt_key *key) {
  memset(key, 0, sizeof *key);
  bool staged = needs_staging(s->dtype, s->out_dtype, s->has_bias, s->out_dtype);
  key->m = s->m;
  key->n = s->n;
  key->k = s->k;
  key->ab_dtype = s->dtype;
  key->ldx = s->k;
  key->ldw = s->k;
  key->ldd = s->n;
  /* Buffers from cudaMalloc are 256-byte aligned; the row strides decide. */
  key->align_x = key->align_w = align_of(NULL, s->k * dtype_bytes(s->dtype));
  key->align_d = align_of(NULL, s->n * dtype_bytes(staged ? TGEMM_F32 : s->out_dtype));
  key->align_bias = LT_MAX_ALIGN;
  if (staged) {
    int64_t rows = staged_rows(g, s->m, s->n);
    if (rows < 1)
      return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                              "cuBLASLt route: one f32 row of N=%lld does not fit the %zu-byte "
                              "scratch (raise tgemm_ctx_options.workspace_bytes)",
                              (long long)s->n, g->scratch_bytes);
    key->m = rows;
    key->d_dtype = TGEMM_F32;
    key->bias_dtype = -1;
  } else {
    key->d_dtype = s->out_dtype;
    key->bias_dtype = s->has_bias ? (int32_t)s->out_dtype : -1;
  }
  return TGEMM_OK;
}

/* Is this the key_for_shape form of its problem? */
static bool key_is_standard(const lt_key *key) {
  int64_t ab = dtype_bytes(key->ab_dtype), d = dtype_bytes(key->d_dtype);
  return key->ldx == key->k && key->ldw == key->k && key->ldd == key->n &&
         key->align_x == align_of(NULL, key->k * ab) &&
         key->align_w == align_of(NULL, key->k * ab) &&
         key->align_d == align_of(NULL, key->n * d) && key->align_bias == LT_MAX_ALIGN;
}

static void entry_release(const tgemm__lt_api *api, lt_entry *e) {
  if (!e->used) return;
  if (e->pref) api->pref_destroy(e->pref);
  if (e->d) api->layout_destroy(e->d);
  if (e->b) api->layout_destroy(e->b);
  if (e->a) api->layout_destroy(e->a);
  if (e->desc) api->desc_destroy(e->desc);
  memset(e, 0, sizeof *e);
}

/* Descriptors for one key, and the heuristic's first choice for it. */
static tgemm_status entry_build(tgemm_ctx *ctx, tgemm__lt_gemm *g, lt_entry *e, const lt_key *key) {
  const tgemm__lt_api *api = g->api;
  memset(e, 0, sizeof *e);
  e->used = true;
  e->key = *key;
  e->standard = key_is_standard(key);
  cublasStatus_t s;
  const char *call = "cublasLtMatmulDescCreate";
  s = api->desc_create(&e->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  if (s == CUBLAS_STATUS_SUCCESS) {
    call = "cublasLtMatmulDescSetAttribute";
    int32_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    s = api->desc_set(e->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof trans_a);
    if (s == CUBLAS_STATUS_SUCCESS)
      s = api->desc_set(e->desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof trans_b);
    if (s == CUBLAS_STATUS_SUCCESS && key->bias_dtype >= 0) {
      uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      int32_t bias_type = cuda_type(key->bias_dtype);
      /* Never dereferenced by the heuristic; its value tells the alignment
       * that run() will supply. */
      const void *bias_hint = (const void *)(uintptr_t)key->align_bias;
      s = api->desc_set(e->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue);
      if (s == CUBLAS_STATUS_SUCCESS)
        s = api->desc_set(e->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                          sizeof bias_type);
      if (s == CUBLAS_STATUS_SUCCESS)
        s = api->desc_set(e->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_hint,
                          sizeof bias_hint);
    }
  }
  if (s == CUBLAS_STATUS_SUCCESS) {
    call = "cublasLtMatrixLayoutCreate";
    s = api->layout_create(&e->a, cuda_type(key->ab_dtype), (uint64_t)key->k, (uint64_t)key->n,
                           key->ldw);
    if (s == CUBLAS_STATUS_SUCCESS)
      s = api->layout_create(&e->b, cuda_type(key->ab_dtype), (uint64_t)key->k, (uint64_t)key->m,
                             key->ldx);
    if (s == CUBLAS_STATUS_SUCCESS)
      s = api->layout_create(&e->d, cuda_type(key->d_dtype), (uint64_t)key->n, (uint64_t)key->m,
                             key->ldd);
  }
  if (s == CUBLAS_STATUS_SUCCESS) {
    call = "cublasLtMatmulPreferenceCreate";
    s = api->pref_create(&e->pref);
  }
  if (s == CUBLAS_STATUS_SUCCESS) {
    call = "cublasLtMatmulPreferenceSetAttribute";
    uint64_t ws = g->workspace_bytes;
    s = api->pref_set(e->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (s == CUBLAS_STATUS_SUCCESS)
      s = api->pref_set(e->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key->align_w,
                        sizeof key->align_w);
    if (s == CUBLAS_STATUS_SUCCESS)
      s = api->pref_set(e->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key->align_x,
                        sizeof key->align_x);
    if (s == CUBLAS_STATUS_SUCCESS)
      s = api->pref_set(e->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key->align_d,
                        sizeof key->align_d);
    if (s == CUBLAS_STATUS_SUCCESS)
      s = api->pref_set(e->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key->align_d,
                        sizeof key->align_d);
  }
  if (s != CUBLAS_STATUS_SUCCESS) {
    entry_release(api, e);
    return lt_fail(ctx, s, call, key, NULL);
  }
  /* No algorithm is not an error yet: candidates() may still list none,
   * and run() reports it with the heuristic's status. */
  cublasLtMatmulHeuristicResult_t result;
  int returned = 0;
  memset(&result, 0, sizeof result);
  e->top_status = api->heuristic(g->handle, e->desc, e->a, e->b, e->d, e->d, e->pref, 1, &result,
                                 &returned);
  if (e->top_status == CUBLAS_STATUS_SUCCESS && returned > 0) {
    if (result.state == CUBLAS_STATUS_SUCCESS) {
      e->top = result.algo;
      e->has_top = true;
    } else {
      e->top_status = result.state;
    }
  } else if (e->top_status == CUBLAS_STATUS_SUCCESS) {
    e->top_status = CUBLAS_STATUS_NOT_SUPPORTED;
  }
  g->builds++;
  return TGEMM_OK;
}

/* The entry for a key: found, or built in a free or least recently used
 * slot of its probe window. */
static tgemm_status entry_get(tgemm_ctx *ctx, tgemm__lt_gemm *g, const lt_key *key,
                              lt_entry **out) {
  uint64_t h = hash_key(key);
  lt_entry *victim = NULL;
  for (int i = 0; i < LT_PROBE; i++) {
    lt_entry *e = &g->slots[(h + (uint64_t)i) % LT_SLOTS];
    if (e->used && memcmp(&e->key, key, sizeof *key) == 0) {
      e->last_use = ++g->clock;
      *out = e;
      return TGEMM_OK;
    }
    if (!victim || (victim->used && (!e->used || e->last_use < victim->last_use))) victim = e;
  }
  entry_release(g->api, victim);
  tgemm_status st = entry_build(ctx, g, victim, key);
  if (st != TGEMM_OK) return st;
  victim->last_use = ++g->clock;
  *out = victim;
  return TGEMM_OK;
}

/* ---------------------------------------------------------- algo names */

typedef struct algo_config {
  int32_t id, splitk;
  uint32_t tile, stages, reduction, swizzle, custom;
  uint16_t inner, cluster;
} algo_config;

static void algo_read(const tgemm__lt_api *api, const cublasLtMatmulAlgo_t *algo,
                      algo_config *c) {
  size_t written;
  memset(c, 0, sizeof *c);
  c->splitk = 1;
  api->algo_config_get(algo, CUBLASLT_ALGO_CONFIG_ID, &c->id, sizeof c->id, &written);
  api->algo_config_get(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &c->tile, sizeof c->tile, &written);
  api->algo_config_get(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &c->stages, sizeof c->stages,
                       &written);
  api->algo_config_get(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &c->splitk, sizeof c->splitk,
                       &written);
  api->algo_config_get(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &c->reduction,
                       sizeof c->reduction, &written);
  api->algo_config_get(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &c->swizzle, sizeof c->swizzle,
                       &written);
  api->algo_config_get(algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &c->custom, sizeof c->custom,
                       &written);
  api->algo_config_get(algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, &c->inner, sizeof c->inner,
                       &written);
  api->algo_config_get(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &c->cluster,
                       sizeof c->cluster, &written);
  if (c->splitk < 1) c->splitk = 1;
}

/* Fill a kernel from an algo: stable name, config in params, raw bytes. */
static void kernel_from_algo(const tgemm__lt_api *api, const cublasLtMatmulAlgo_t *algo,
                             bool has_algo, tgemm__kernel *k) {
  algo_config c;
  algo_read(api, algo, &c);
  memset(k, 0, sizeof *k);
  k->route = TGEMM_ROUTE_LIBRARY;
  int len = snprintf(k->name, sizeof k->name, "lt_a%d_t%u_s%u_k%d", (int)c.id, (unsigned)c.tile,
                     (unsigned)c.stages, (int)c.splitk);
  char extra[48] = "";
  int used = 0;
  if (c.splitk > 1)
    used += snprintf(extra + used, sizeof extra - (size_t)used, "_r%u", (unsigned)c.reduction);
  if (c.swizzle)
    used += snprintf(extra + used, sizeof extra - (size_t)used, "_w%u", (unsigned)c.swizzle);
  if (c.custom)
    used += snprintf(extra + used, sizeof extra - (size_t)used, "_c%u", (unsigned)c.custom);
  if (c.inner)
    used += snprintf(extra + used, sizeof extra - (size_t)used, "_i%u", (unsigned)c.inner);
  if (c.cluster)
    snprintf(extra + used, sizeof extra - (size_t)used, "_g%u", (unsigned)c.cluster);
  if (len > 0 && (size_t)len < sizeof k->name)
    snprintf(k->name + len, sizeof k->name - (size_t)len, "%s", extra);
  k->params[0] = c.id;
  k->params[1] = (int32_t)c.tile;
  k->params[2] = (int32_t)c.stages;
  k->params[3] = c.splitk;
  k->params[4] = (int32_t)c.reduction;
  k->params[5] = (int32_t)c.swizzle;
  k->params[6] = (int32_t)c.custom;
  k->params[7] = (int32_t)(((uint32_t)c.inner << 16) | c.cluster);
  memcpy(k->algo, algo, sizeof k->algo);
  k->has_algo = has_algo;
}

/* cublasLtMatmulAlgoCheck, plus our own limits: the workspace, and for
 * operands other than the standard form (odd leading dimensions, offset
 * pointers) the algo's minimum alignments.  The standard form's
 * algorithms come from the heuristic, which already matched them to the
 * alignments in the preference; their capability attributes can be
 * stricter than what the heuristic accepts (split-K writes D through a
 * reduction), so they are not second-guessed there. */
static cublasStatus_t algo_fits(tgemm__lt_gemm *g, const lt_entry *e,
                                const cublasLtMatmulAlgo_t *algo, size_t *workspace) {
  const tgemm__lt_api *api = g->api;
  cublasLtMatmulHeuristicResult_t result;
  memset(&result, 0, sizeof result);
  cublasStatus_t s = api->algo_check(g->handle, e->desc, e->a, e->b, e->d, e->d, algo, &result);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  if (workspace) *workspace = result.workspaceSize;
  if (result.workspaceSize > g->workspace_bytes) return CUBLAS_STATUS_INVALID_VALUE;
  if (e->standard) return CUBLAS_STATUS_SUCCESS;
  static const struct {
    cublasLtMatmulAlgoCapAttributes_t cap;
    size_t offset;
  } aligns[] = {
      {CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_A_BYTES, offsetof(lt_key, align_w)},
      {CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_B_BYTES, offsetof(lt_key, align_x)},
      {CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_C_BYTES, offsetof(lt_key, align_d)},
      {CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_D_BYTES, offsetof(lt_key, align_d)},
  };
  for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
    uint32_t need = 0, have;
    size_t written = 0;
    if (api->algo_cap_get(algo, aligns[i].cap, &need, sizeof need, &written) !=
        CUBLAS_STATUS_SUCCESS)
      continue; /* older cuBLASLt: AlgoCheck is all we have */
    memcpy(&have, (const char *)&e->key + aligns[i].offset, sizeof have);
    if (need > have) return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return CUBLAS_STATUS_SUCCESS;
}

/* ------------------------------------------------------------ lifecycle */

tgemm_status tgemm__lt_gemm_create(tgemm_ctx *ctx, const tgemm__lt_api *api, void *workspace,
                                   size_t workspace_bytes, void *scratch, size_t scratch_bytes,
                                   tgemm__lt_gemm **out) {
  *out = NULL;
  tgemm__lt_gemm *g = calloc(1, sizeof *g);
  if (!g) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "cuBLASLt route: out of host memory");
  g->api = api;
  g->workspace = workspace;
  g->workspace_bytes = workspace_bytes;
  g->scratch = scratch;
  g->scratch_bytes = scratch_bytes;
  cublasStatus_t s = api->create(&g->handle);
  if (s != CUBLAS_STATUS_SUCCESS) {
    free(g);
    return tgemm__set_error(ctx, TGEMM_NO_DEVICE, "cublasLtCreate: %s", tgemm__lt_status_name(s));
  }
  *out = g;
  return TGEMM_OK;
}

void tgemm__lt_gemm_destroy(tgemm__lt_gemm *g) {
  if (!g) return;
  for (int i = 0; i < LT_SLOTS; i++) entry_release(g->api, &g->slots[i]);
  g->api->destroy(g->handle);
  free(g);
}

uint64_t tgemm__lt_gemm_builds(const tgemm__lt_gemm *g) { return g ? g->builds : 0; }

uint64_t tgemm__lt_gemm_fallbacks(const tgemm__lt_gemm *g) { return g ? g->fallbacks : 0; }

/* ----------------------------------------------------------- the route */

/* Is a kernel name already in the list? */
static bool listed(const tgemm__kernel *out, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(out[i].name, name) == 0) return true;
  return false;
}

int tgemm__lt_gemm_candidates(tgemm_ctx *ctx, tgemm__lt_gemm *g, const tgemm__shape *shape,
                              tgemm__kernel *out, int cap) {
  if (cap <= 0 || !out) return 0;
  lt_key key;
  lt_entry *e;
  tgemm_status st = key_for_shape(ctx, g, shape, &key);
  if (st == TGEMM_OK) st = entry_get(ctx, g, &key, &e);
  if (st != TGEMM_OK) return st;

  const tgemm__lt_api *api = g->api;
  cublasLtMatmulHeuristicResult_t results[LT_HEURISTIC];
  int returned = 0;
  memset(results, 0, sizeof results);
  cublasStatus_t s = api->heuristic(g->handle, e->desc, e->a, e->b, e->d, e->d, e->pref,
                                    LT_HEURISTIC, results, &returned);
  if (s != CUBLAS_STATUS_SUCCESS) return 0; /* no algorithm: no candidates */

  int n = 0;
  tgemm__kernel k;
  for (int i = 0; i < returned && n < cap; i++) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS ||
        results[i].workspaceSize > g->workspace_bytes)
      continue;
    kernel_from_algo(api, &results[i].algo, true, &k);
    if (!listed(out, n, k.name)) out[n++] = k;
  }

  /* Split-K: more CTAs along K for shapes too small in M and N to fill
   * the SMs.  Partial sums in f32 (COMPUTE_TYPE) where the algo allows.
   * No split of 16: on the H100 (cuBLASLt 13.1) algo 66 with 16 splits
   * passes cublasLtMatmulAlgoCheck but drops an 8-element K tail at K =
   * 1032, 2056, 3080, 4104 and 7176 (relative error 0.03-0.09, found by
   * test_cuda_kernels at M=5 N=3000 K=2056); 2, 4 and 8 were exact at all
   * twelve K tried (tgemm tune -v, REJECTED lines). */
  static const int splits[] = {2, 4, 8};
  int bases = 0;
  for (int i = 0; i < returned && bases < LT_SPLIT_BASES && n < cap; i++) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    algo_config c;
    algo_read(api, &results[i].algo, &c);
    if (c.splitk != 1) continue;
    int32_t split_ok = 0;
    uint32_t mask = 0;
    size_t written;
    if (api->algo_cap_get(&results[i].algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &split_ok,
                          sizeof split_ok, &written) != CUBLAS_STATUS_SUCCESS || !split_ok)
      continue;
    api->algo_cap_get(&results[i].algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &mask,
                      sizeof mask, &written);
    uint32_t scheme = (mask & CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE)
                          ? CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE
                      : (mask & CUBLASLT_REDUCTION_SCHEME_INPLACE) ? CUBLASLT_REDUCTION_SCHEME_INPLACE
                      : (mask & CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE)
                          ? CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE
                          : 0;
    if (!scheme) continue;
    bases++;
    for (size_t j = 0; j < sizeof splits / sizeof splits[0] && n < cap; j++) {
      int32_t split = splits[j];
      if ((shape->k + split - 1) / split < 16) break; /* slices too thin to help */
      cublasLtMatmulAlgo_t algo = results[i].algo;
      if (api->algo_config_set(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split) !=
              CUBLAS_STATUS_SUCCESS ||
          api->algo_config_set(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                               sizeof scheme) != CUBLAS_STATUS_SUCCESS)
        continue;
      if (algo_fits(g, e, &algo, NULL) != CUBLAS_STATUS_SUCCESS) continue;
      kernel_from_algo(api, &algo, true, &k);
      if (!listed(out, n, k.name)) out[n++] = k;
    }
  }
  return n;
}

tgemm_status tgemm__lt_gemm_default(tgemm_ctx *ctx, tgemm__lt_gemm *g, const tgemm__shape *shape,
                                    tgemm__kernel *out) {
  lt_key key;
  lt_entry *e;
  tgemm_status st = key_for_shape(ctx, g, shape, &key);
  if (st == TGEMM_OK) st = entry_get(ctx, g, &key, &e);
  if (st != TGEMM_OK) return st;
  if (!e->has_top)
    return lt_fail(ctx, e->top_status, "cublasLtMatmulAlgoGetHeuristic", &key, "no algorithm");
  kernel_from_algo(g->api, &e->top, false, out);
  return TGEMM_OK;
}

tgemm_status tgemm__lt_gemm_validate(tgemm_ctx *ctx, tgemm__lt_gemm *g, const tgemm__shape *shape,
                                     const tgemm__kernel *kernel) {
  if (!kernel->has_algo) return TGEMM_OK;
  lt_key key;
  lt_entry *e;
  tgemm_status st = key_for_shape(ctx, g, shape, &key);
  if (st == TGEMM_OK) st = entry_get(ctx, g, &key, &e);
  if (st != TGEMM_OK) return st;
  cublasLtMatmulAlgo_t algo;
  memcpy(&algo, kernel->algo, sizeof algo);
  size_t workspace = 0;
  cublasStatus_t s = algo_fits(g, e, &algo, &workspace);
  if (s != CUBLAS_STATUS_SUCCESS) {
    char extra[128];
    snprintf(extra, sizeof extra, "kernel %s, workspace %zu of %zu bytes", kernel->name, workspace,
             g->workspace_bytes);
    return lt_fail(ctx, s, "cublasLtMatmulAlgoCheck", &key, extra);
  }
  return TGEMM_OK;
}

/* The algorithm for one call on entry e: the caller's when it fits these
 * operands (checked once per entry and algo), else the heuristic's, which
 * is then described in *ran (when not NULL). */
static tgemm_status pick_algo(tgemm_ctx *ctx, tgemm__lt_gemm *g, lt_entry *e,
                              const tgemm__kernel *kernel, const cublasLtMatmulAlgo_t **algo,
                              tgemm__kernel *ran) {
  if (kernel && kernel->has_algo) {
    if (!e->has_checked || memcmp(&e->checked, kernel->algo, sizeof e->checked) != 0) {
      memcpy(&e->checked, kernel->algo, sizeof e->checked);
      e->has_checked = true;
      e->checked_ok = algo_fits(g, e, &e->checked, NULL) == CUBLAS_STATUS_SUCCESS;
      if (!e->checked_ok)
        tgemm__warn_once("lt-algo-fallback",
                         "cuBLASLt kernel %s does not fit the operands of M=%lld N=%lld K=%lld "
                         "(leading dimensions, alignment or output staging differ from the "
                         "tuned ones); using the heuristic's choice",
                         kernel->name, (long long)e->key.m, (long long)e->key.n,
                         (long long)e->key.k);
    }
    if (e->checked_ok) {
      *algo = &e->checked;
      return TGEMM_OK;
    }
  }
  if (!e->has_top)
    return lt_fail(ctx, e->top_status, "cublasLtMatmulAlgoGetHeuristic", &e->key,
                   "no algorithm");
  if (kernel && kernel->has_algo) {
    g->fallbacks++;
    if (ran) kernel_from_algo(g->api, &e->top, false, ran);
  }
  *algo = &e->top;
  return TGEMM_OK;
}

/* cublasLtMatmul on one entry; bias is the fused one or NULL. */
static tgemm_status matmul(tgemm_ctx *ctx, tgemm__lt_gemm *g, lt_entry *e,
                           const cublasLtMatmulAlgo_t *algo, const void *x, const void *w,
                           const void *bias, void *d, cudaStream_t stream) {
  const tgemm__lt_api *api = g->api;
  static const float one = 1.0f, zero = 0.0f;
  cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
  if (bias) s = api->desc_set(e->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
  if (s != CUBLAS_STATUS_SUCCESS)
    return lt_fail(ctx, s, "cublasLtMatmulDescSetAttribute(BIAS_POINTER)", &e->key, NULL);
  s = api->matmul(g->handle, e->desc, &one, w, e->a, x, e->b, &zero, d, e->d, d, e->d, algo,
                  g->workspace, g->workspace_bytes, stream);
  if (s != CUBLAS_STATUS_SUCCESS) {
    algo_config c;
    algo_read(api, algo, &c);
    char extra[64];
    snprintf(extra, sizeof extra, "algo %d, split-K %d", (int)c.id, (int)c.splitk);
    return lt_fail(ctx, s, "cublasLtMatmul", &e->key, extra);
  }
  return TGEMM_OK;
}

tgemm_status tgemm__lt_gemm_run(tgemm_ctx *ctx, tgemm__lt_gemm *g, const tgemm__kernel *kernel,
                                const tgemm__cuda_gemm_args *a, tgemm__kernel *ran) {
  if (a->w_dtype != a->x_dtype || !a->w)
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "cuBLASLt route: needs a dense weight of x's dtype (x %s, W %s)",
                            tgemm_dtype_name(a->x_dtype),
                            a->w ? tgemm_dtype_name(a->w_dtype) : "absent");
  const int64_t xb = dtype_bytes(a->x_dtype);
  lt_key key;
  memset(&key, 0, sizeof key);
  key.n = a->n;
  key.k = a->k;
  key.ldx = a->ldx;
  key.ldw = a->ldw;
  key.ab_dtype = a->x_dtype;
  key.align_w = align_of(a->w, a->ldw * xb);
  bool staged = needs_staging(a->x_dtype, a->y_dtype, a->bias != NULL, a->bias_dtype);
  lt_entry *e;
  const cublasLtMatmulAlgo_t *algo;
  tgemm_status st;

  if (!staged) {
    key.m = a->m;
    key.ldd = a->ldy;
    key.d_dtype = a->y_dtype;
    key.bias_dtype = a->bias ? (int32_t)a->bias_dtype : -1;
    key.align_x = align_of(a->x, a->ldx * xb);
    key.align_d = align_of(a->y, a->ldy * dtype_bytes(a->y_dtype));
    key.align_bias = a->bias ? align_of(a->bias, 0) : LT_MAX_ALIGN;
    if ((st = entry_get(ctx, g, &key, &e)) != TGEMM_OK) return st;
    if ((st = pick_algo(ctx, g, e, kernel, &algo, ran)) != TGEMM_OK) return st;
    return matmul(ctx, g, e, algo, a->x, a->w, a->bias, a->y, a->stream);
  }

  int64_t rows = staged_rows(g, a->m, a->n);
  if (rows < 1)
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "cuBLASLt route: one f32 row of N=%lld does not fit the %zu-byte "
                            "scratch (raise tgemm_ctx_options.workspace_bytes)",
                            (long long)a->n, g->scratch_bytes);
  key.ldd = a->n;
  key.d_dtype = TGEMM_F32;
  key.bias_dtype = -1;
  key.align_d = align_of(g->scratch, a->n * 4); /* the scratch is 256-byte aligned */
  key.align_bias = LT_MAX_ALIGN;
  for (int64_t m0 = 0; m0 < a->m; m0 += rows) {
    int64_t chunk = a->m - m0 < rows ? a->m - m0 : rows;
    const char *x = (const char *)a->x + (size_t)(m0 * a->ldx * xb);
    key.m = chunk;
    key.align_x = align_of(x, a->ldx * xb);
    if ((st = entry_get(ctx, g, &key, &e)) != TGEMM_OK) return st;
    if ((st = pick_algo(ctx, g, e, kernel, &algo, ran)) != TGEMM_OK) return st;
    if ((st = matmul(ctx, g, e, algo, x, a->w, NULL, g->scratch, a->stream)) != TGEMM_OK)
      return st;
    char *y = (char *)a->y + (size_t)(m0 * a->ldy * dtype_bytes(a->y_dtype));
    cudaError_t err = tgemm__cuda_store_f32_rows((const float *)g->scratch, a->n, chunk, a->n,
                                                 a->bias, a->bias_dtype, y, a->y_dtype, a->ldy,
                                                 a->stream);
    if (err != cudaSuccess)
      return tgemm__cuda_fail(ctx, err, "tgemm__cuda_store_f32_rows", "M=%lld N=%lld K=%lld",
                              (long long)a->m, (long long)a->n, (long long)a->k);
  }
  return TGEMM_OK;
}
