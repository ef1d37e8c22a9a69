/* The CUDA backend: device setup, memory, timing, and dispatch of each
 * route to its kernel family (skinny_bf16, w4a16, w4a4), the cuBLASLt
 * wrapper (library) or the GPU reference.  Only this file dispatches.
 *
 * All work of a context goes to one stream: the context's own
 * (non-blocking) stream, or the caller's from tgemm_ctx_set_stream.  run()
 * allocates nothing, never synchronizes and never reads device memory, so
 * tgemm_linear can be captured in a CUDA graph.  A context is not
 * thread-safe: the cuBLASLt cache is updated without locks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend.h"
#include "cuda/cublaslt_gemm.h"
#include "cuda/cublaslt_loader.h"
#include "cuda/cuda_args.h"
#include "cuda/cuda_check.h"
#include "cuda/l2_flush.cuh"
#include "cuda/mxfp4_pair.cuh"
#include "cuda/mxfp4_quant.cuh"
#include "cuda/reference_gemm.cuh"
#include "cuda/skinny_bf16.cuh"
#include "cuda/w4a16.cuh"
#include "cuda/w4a4.cuh"

/* Big enough for W4A4's quantized activations at M=8192, K=16384
 * (64 MiB packed + 4 MiB scales) next to cuBLASLt's share. */
#define DEFAULT_WORKSPACE ((size_t)128 << 20)
/* cuBLASLt's share of the workspace: NVIDIA suggests 32 MiB on Hopper. */
#define LT_WORKSPACE_MAX ((size_t)32 << 20)

typedef struct cuda_state {
  int device;
  char name[96];
  int cc_major, cc_minor;
  int sm_count;
  int l2_bytes;
  const tgemm__lt_api *lt;
  tgemm__lt_gemm *gemm;
  cudaStream_t own_stream;
  cudaStream_t stream; /* own_stream, or the caller's */
  cudaEvent_t ev_start, ev_stop;
  void *workspace; /* one allocation: [cuBLASLt workspace | scratch] */
  size_t workspace_bytes;
  size_t lt_workspace_bytes;
  void *flush_buf;
  size_t flush_bytes;
  unsigned flush_count;
} cuda_state;

/* What the backend keeps of a weight: whether its MXFP4 bytes are in the
 * paired nibble order. */
typedef struct cuda_weight {
  bool paired;
} cuda_weight;

typedef int (*family_candidates_fn)(const tgemm__shape *shape, int sm_count, tgemm__kernel *out,
                                    int cap);
typedef cudaError_t (*family_run_fn)(const tgemm__kernel *kernel,
                                     const tgemm__cuda_gemm_args *args);

typedef struct family {
  const char *name;
  family_candidates_fn candidates;
  family_run_fn run;
} family;

/* The kernel family of a route that has one (else all NULL). */
static family family_of(tgemm_route route) {
  family f = {NULL, NULL, NULL};
  switch (route) {
    case TGEMM_ROUTE_SKINNY:
      f = (family){"skinny_bf16", tgemm__skinny_bf16_candidates, tgemm__skinny_bf16_run};
      break;
    case TGEMM_ROUTE_W4A16:
      f = (family){"w4a16", tgemm__w4a16_candidates, tgemm__w4a16_run};
      break;
    case TGEMM_ROUTE_W4A4:
      f = (family){"w4a4", tgemm__w4a4_candidates, tgemm__w4a4_run};
      break;
    default: break;
  }
  return f;
}

static cuda_state *state_of(tgemm_ctx *ctx) { return (cuda_state *)ctx->backend_state; }

/* Make the context's device current for this thread (cheap when it is). */
static tgemm_status make_current(tgemm_ctx *ctx, cuda_state *st) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current == st->device) return TGEMM_OK;
  TGEMM__CUDA_TRY(ctx, cudaSetDevice(st->device), "cudaSetDevice", "device %d", st->device);
  return TGEMM_OK;
}

static bool is_dense_dtype(tgemm_dtype d) {
  return d == TGEMM_F32 || d == TGEMM_F16 || d == TGEMM_BF16;
}

/* ------------------------------------------------------------ lifecycle */

static void cuda_shutdown(tgemm_ctx *ctx, void *state) {
  cuda_state *st = (cuda_state *)state;
  if (!st) return;
  cudaSetDevice(st->device);
  if (st->own_stream) cudaStreamSynchronize(st->own_stream);
  if (st->stream && st->stream != st->own_stream) cudaStreamSynchronize(st->stream);
  tgemm__lt_gemm_destroy(st->gemm);
  if (st->flush_buf) cudaFree(st->flush_buf);
  if (st->workspace) cudaFree(st->workspace);
  if (st->ev_start) cudaEventDestroy(st->ev_start);
  if (st->ev_stop) cudaEventDestroy(st->ev_stop);
  if (st->own_stream) cudaStreamDestroy(st->own_stream);
  free(st);
}

static tgemm_status init_device(tgemm_ctx *ctx, cuda_state *st) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess)
    return tgemm__set_error(ctx, TGEMM_NO_DEVICE,
                            "no CUDA device: cudaGetDeviceCount returned %s (%s)",
                            cudaGetErrorName(err), cudaGetErrorString(err));
  if (count < 1)
    return tgemm__set_error(ctx, TGEMM_NO_DEVICE, "no CUDA device: cudaGetDeviceCount found 0");
  st->device = ctx->options.device_index;
  if (st->device < 0 || st->device >= count)
    return tgemm__set_error(ctx, TGEMM_NO_DEVICE,
                            "CUDA device %d does not exist: cudaGetDeviceCount found %d",
                            st->device, count);
  err = cudaSetDevice(st->device);
  if (err != cudaSuccess)
    return tgemm__set_error(ctx, TGEMM_NO_DEVICE, "cudaSetDevice(%d): %s (%s)", st->device,
                            cudaGetErrorName(err), cudaGetErrorString(err));
  struct cudaDeviceProp prop;
  err = cudaGetDeviceProperties(&prop, st->device);
  if (err != cudaSuccess)
    return tgemm__set_error(ctx, TGEMM_NO_DEVICE, "cudaGetDeviceProperties(%d): %s (%s)",
                            st->device, cudaGetErrorName(err), cudaGetErrorString(err));
  snprintf(st->name, sizeof st->name, "%.*s", (int)sizeof st->name - 1, prop.name);
  st->cc_major = prop.major;
  st->cc_minor = prop.minor;
  st->sm_count = prop.multiProcessorCount;
  st->l2_bytes = prop.l2CacheSize;
  return TGEMM_OK;
}

static tgemm_status init_resources(tgemm_ctx *ctx, cuda_state *st) {
  TGEMM__CUDA_TRY(ctx, cudaStreamCreateWithFlags(&st->own_stream, cudaStreamNonBlocking),
                  "cudaStreamCreateWithFlags", "device %d", st->device);
  st->stream = st->own_stream;
  TGEMM__CUDA_TRY(ctx, cudaEventCreate(&st->ev_start), "cudaEventCreate", "timer start");
  TGEMM__CUDA_TRY(ctx, cudaEventCreate(&st->ev_stop), "cudaEventCreate", "timer stop");

  /* One workspace, allocated now so that no call allocates later. */
  size_t bytes = ctx->options.workspace_bytes ? ctx->options.workspace_bytes : DEFAULT_WORKSPACE;
  bytes = (bytes + 511) & ~(size_t)511;
  st->workspace_bytes = bytes;
  st->lt_workspace_bytes = bytes / 2 < LT_WORKSPACE_MAX ? (bytes / 2) & ~(size_t)255
                                                        : LT_WORKSPACE_MAX;
  TGEMM__CUDA_TRY(ctx, cudaMalloc(&st->workspace, bytes), "cudaMalloc", "workspace of %zu bytes",
                  bytes);

  /* Twice the L2, read or written once per flush, evicts whatever a kernel
   * left. */
  st->flush_bytes = st->l2_bytes > 0 ? 2 * (size_t)st->l2_bytes : (size_t)64 << 20;
  TGEMM__CUDA_TRY(ctx, cudaMalloc(&st->flush_buf, st->flush_bytes), "cudaMalloc",
                  "L2 flush buffer of %zu bytes", st->flush_bytes);

  char *scratch = (char *)st->workspace + st->lt_workspace_bytes;
  return tgemm__lt_gemm_create(ctx, st->lt, st->workspace, st->lt_workspace_bytes, scratch,
                               st->workspace_bytes - st->lt_workspace_bytes, &st->gemm);
}

static tgemm_status cuda_init(tgemm_ctx *ctx, void **state) {
  *state = NULL;
  cuda_state *st = calloc(1, sizeof *st);
  if (!st) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "cuda backend: out of host memory");
  tgemm_status status = init_device(ctx, st);
  if (status == TGEMM_OK) {
    char why[384];
    st->lt = tgemm__lt_load(why, sizeof why);
    if (!st->lt) status = tgemm__set_error(ctx, TGEMM_NO_DEVICE, "%s", why);
  }
  if (status == TGEMM_OK) status = init_resources(ctx, st);
  if (status != TGEMM_OK) {
    if (st->device >= 0 && st->name[0]) cuda_shutdown(ctx, st);
    else free(st);
    return status;
  }
  *state = st;
  return TGEMM_OK;
}

static void cuda_device_key(tgemm_ctx *ctx, tgemm__device_key *key) {
  cuda_state *st = state_of(ctx);
  memset(key, 0, sizeof *key);
  snprintf(key->device, sizeof key->device, "%s", st->name);
  snprintf(key->arch, sizeof key->arch, "sm_%d%d", st->cc_major, st->cc_minor);
  key->units = st->sm_count;
  snprintf(key->lib_version, sizeof key->lib_version, "cublasLt-%zu", st->lt->version);
}

/* ------------------------------------------------------------- routing */

static int family_candidates(cuda_state *st, tgemm_route route, const tgemm__shape *shape,
                             tgemm__kernel *out, int cap) {
  family f = family_of(route);
  if (!f.candidates || cap <= 0) return 0;
  int n = f.candidates(shape, st->sm_count, out, cap);
  if (n < 0) return 0;
  if (n > cap) n = cap;
  for (int i = 0; i < n; i++) out[i].route = route;
  return n;
}

static bool cuda_supports(tgemm_ctx *ctx, const tgemm__shape *shape, tgemm_route route) {
  if (!is_dense_dtype(shape->dtype) || shape->m < 1 || shape->n < 1 || shape->k < 1 ||
      (shape->out_dtype != TGEMM_BF16 && shape->out_dtype != TGEMM_F32))
    return false;
  tgemm__kernel kernels[TGEMM__MAX_CANDIDATES];
  switch (route) {
    case TGEMM_ROUTE_REFERENCE:
    case TGEMM_ROUTE_LIBRARY: return true;
    case TGEMM_ROUTE_SKINNY:
      if (shape->m > 16) return false;
      /* fallthrough */
    case TGEMM_ROUTE_W4A16:
    case TGEMM_ROUTE_W4A4:
      return family_candidates(state_of(ctx), route, shape, kernels, TGEMM__MAX_CANDIDATES) > 0;
    default: return false;
  }
}

static void reference_kernel(tgemm__kernel *k) {
  memset(k, 0, sizeof *k);
  k->route = TGEMM_ROUTE_REFERENCE;
  snprintf(k->name, sizeof k->name, "cuda_reference");
}

static int cuda_candidates(tgemm_ctx *ctx, const tgemm__shape *shape, tgemm_route route,
                           tgemm__kernel *out, int cap) {
  cuda_state *st = state_of(ctx);
  if (!out || cap <= 0 || !cuda_supports(ctx, shape, route)) return 0;
  switch (route) {
    case TGEMM_ROUTE_REFERENCE: reference_kernel(&out[0]); return 1;
    case TGEMM_ROUTE_LIBRARY:
      if (make_current(ctx, st) != TGEMM_OK) return TGEMM_BACKEND_ERROR;
      return tgemm__lt_gemm_candidates(ctx, st->gemm, shape, out, cap);
    default: return family_candidates(st, route, shape, out, cap);
  }
}

static tgemm_status no_kernel(tgemm_ctx *ctx, const tgemm__shape *s, tgemm_route route) {
  return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                          "cuda backend: no %s kernel for M=%lld N=%lld K=%lld (x %s, y %s%s)",
                          tgemm_route_name(route), (long long)s->m, (long long)s->n,
                          (long long)s->k, tgemm_dtype_name(s->dtype),
                          tgemm_dtype_name(s->out_dtype), s->has_bias ? ", bias" : "");
}

static tgemm_status cuda_default_kernel(tgemm_ctx *ctx, const tgemm__shape *shape,
                                        tgemm_route route, tgemm__kernel *out) {
  cuda_state *st = state_of(ctx);
  if (!cuda_supports(ctx, shape, route)) return no_kernel(ctx, shape, route);
  switch (route) {
    case TGEMM_ROUTE_REFERENCE: reference_kernel(out); return TGEMM_OK;
    case TGEMM_ROUTE_LIBRARY: {
      tgemm_status status = make_current(ctx, st);
      if (status != TGEMM_OK) return status;
      return tgemm__lt_gemm_default(ctx, st->gemm, shape, out);
    }
    default: {
      tgemm__kernel kernels[TGEMM__MAX_CANDIDATES];
      if (family_candidates(st, route, shape, kernels, TGEMM__MAX_CANDIDATES) < 1)
        return no_kernel(ctx, shape, route);
      *out = kernels[0]; /* each family lists its own default first */
      return TGEMM_OK;
    }
  }
}

static tgemm_status cuda_validate_kernel(tgemm_ctx *ctx, const tgemm__shape *shape,
                                         const tgemm__kernel *kernel) {
  cuda_state *st = state_of(ctx);
  if (!cuda_supports(ctx, shape, kernel->route)) return no_kernel(ctx, shape, kernel->route);
  if (kernel->route == TGEMM_ROUTE_LIBRARY) {
    tgemm_status status = make_current(ctx, st);
    if (status != TGEMM_OK) return status;
    return tgemm__lt_gemm_validate(ctx, st->gemm, shape, kernel);
  }
  tgemm__kernel kernels[TGEMM__MAX_CANDIDATES];
  int n = cuda_candidates(ctx, shape, kernel->route, kernels, TGEMM__MAX_CANDIDATES);
  for (int i = 0; i < n; i++)
    if (strcmp(kernels[i].name, kernel->name) == 0) return TGEMM_OK;
  return tgemm__set_error(ctx, TGEMM_NOT_FOUND,
                          "cuda backend: no kernel named \"%s\" in route %s for M=%lld N=%lld "
                          "K=%lld",
                          kernel->name, tgemm_route_name(kernel->route), (long long)shape->m,
                          (long long)shape->n, (long long)shape->k);
}

/* ----------------------------------------------------------------- run */

static tgemm_status need_device(tgemm_ctx *ctx, const tgemm_matrix *m, const char *what) {
  if (m->location == TGEMM_DEVICE) return TGEMM_OK;
  return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                          "cuda backend: %s is in host memory; pass device memory (tgemm_malloc)",
                          what);
}

static tgemm_status cuda_run(tgemm_ctx *ctx, const tgemm__kernel *kernel,
                             const tgemm__shape *shape, const tgemm__operands *ops) {
  cuda_state *st = state_of(ctx);
  const struct tgemm_weight *w = ops->w;
  if (!kernel || !w)
    return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "cuda backend: run without kernel or weight");
  tgemm_status status;
  if ((status = need_device(ctx, ops->x, "x")) != TGEMM_OK ||
      (status = need_device(ctx, ops->y, "y")) != TGEMM_OK ||
      (ops->bias && (status = need_device(ctx, ops->bias, "bias")) != TGEMM_OK) ||
      (w->has_dense && (status = need_device(ctx, &w->dense, "the dense weight")) != TGEMM_OK) ||
      (w->has_mxfp4 && (status = need_device(ctx, &w->mxfp4, "the MXFP4 weight")) != TGEMM_OK))
    return status;
  if ((status = make_current(ctx, st)) != TGEMM_OK) return status;

  tgemm__cuda_gemm_args a;
  memset(&a, 0, sizeof a);
  a.m = shape->m;
  a.n = shape->n;
  a.k = shape->k;
  a.x = ops->x->data;
  a.ldx = ops->x->ld;
  a.x_dtype = ops->x->dtype;
  if (ops->bias) {
    a.bias = ops->bias->data;
    a.bias_dtype = ops->bias->dtype;
  }
  a.y = ops->y->data;
  a.ldy = ops->y->ld;
  a.y_dtype = ops->y->dtype;
  a.workspace = st->workspace;
  a.workspace_bytes = st->workspace_bytes;
  a.scale_mode = ops->w->scale_mode; /* activations follow the weight's rule, as on the CPU */
  a.sm_count = st->sm_count;
  a.stream = st->stream;

  /* Each route sees only the weight form it is meant to read. */
  bool dense_route = kernel->route == TGEMM_ROUTE_SKINNY ||
                     kernel->route == TGEMM_ROUTE_LIBRARY ||
                     (kernel->route == TGEMM_ROUTE_REFERENCE && w->has_dense);
  if (dense_route) {
    if (!w->has_dense)
      return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                              "cuda backend: route %s needs the dense form of the weight",
                              tgemm_route_name(kernel->route));
    a.w = w->dense.data;
    a.ldw = w->dense.ld;
    a.w_dtype = w->dense.dtype;
  } else {
    if (!w->has_mxfp4)
      return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                              "cuda backend: route %s needs the MXFP4 form of the weight (create "
                              "it with TGEMM_WEIGHT_MXFP4)",
                              tgemm_route_name(kernel->route));
    a.w_packed = (const uint8_t *)w->mxfp4.data;
    a.ldw_packed = w->mxfp4.ld;
    a.w_scales = (const uint8_t *)w->mxfp4.scales;
    a.ldw_scales = w->mxfp4.scales_ld;
    a.w_dtype = TGEMM_MXFP4;
    a.w_paired = w->backend_data && ((const cuda_weight *)w->backend_data)->paired;
  }

  cudaError_t err;
  switch (kernel->route) {
    case TGEMM_ROUTE_LIBRARY: return tgemm__lt_gemm_run(ctx, st->gemm, kernel, &a, ops->ran);
    case TGEMM_ROUTE_REFERENCE: err = tgemm__reference_gemm_cuda(&a); break;
    case TGEMM_ROUTE_SKINNY:
    case TGEMM_ROUTE_W4A16:
    case TGEMM_ROUTE_W4A4: {
      family f = family_of(kernel->route);
      if (!f.run) return no_kernel(ctx, shape, kernel->route);
      err = f.run(kernel, &a);
      break;
    }
    default:
      return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "cuda backend: cannot run route %s",
                              tgemm_route_name(kernel->route));
  }
  if (err != cudaSuccess)
    return tgemm__cuda_fail(ctx, err, kernel->name, "M=%lld N=%lld K=%lld, x %s, y %s%s",
                            (long long)a.m, (long long)a.n, (long long)a.k,
                            tgemm_dtype_name(a.x_dtype), tgemm_dtype_name(a.y_dtype),
                            a.bias ? ", bias" : "");
  return TGEMM_OK;
}

/* -------------------------------------------------------------- weights */

/* An MXFP4 form the library owns (quantized here at load) is rewritten in
 * place to the paired nibble order (mxfp4_pair.cuh), which the W4A16
 * stream kernels read without regrouping x, about 7% of their time at
 * M = 16 (BENCHMARKS.md); the other MXFP4 kernels read either order.  A
 * borrowed MXFP4 weight is the caller's and stays as it is. */
static tgemm_status cuda_weight_prepare(tgemm_ctx *ctx, struct tgemm_weight *weight) {
  if (!weight->has_mxfp4 || !weight->owns_mxfp4) return TGEMM_OK;
  cuda_weight *cw = calloc(1, sizeof *cw);
  if (!cw) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "cuda weight_prepare: out of memory");
  cuda_state *st = state_of(ctx);
  tgemm_status status = make_current(ctx, st);
  if (status != TGEMM_OK) {
    free(cw);
    return status;
  }
  const tgemm_matrix *q = &weight->mxfp4;
  const int64_t row_bytes = tgemm_mxfp4_packed_cols(q->cols);
  cudaError_t err = tgemm__mxfp4_pair_cuda((const uint8_t *)q->data, (uint8_t *)q->data, q->rows,
                                           row_bytes, q->ld, st->stream);
  if (err != cudaSuccess) {
    free(cw);
    return tgemm__cuda_fail(ctx, err, "tgemm__mxfp4_pair_cuda", "%lld x %lld MXFP4 weight",
                            (long long)q->rows, (long long)q->cols);
  }
  cw->paired = true;
  weight->backend_data = cw;
  return TGEMM_OK;
}

static void cuda_weight_release(tgemm_ctx *ctx, struct tgemm_weight *weight) {
  (void)ctx;
  free(weight->backend_data);
  weight->backend_data = NULL;
}

static tgemm_status cuda_quantize(tgemm_ctx *ctx, const tgemm_matrix *src,
                                  const tgemm_matrix *dst, tgemm_scale_mode mode) {
  tgemm_status status;
  if ((status = need_device(ctx, src, "the matrix to quantize")) != TGEMM_OK ||
      (status = need_device(ctx, dst, "the MXFP4 output")) != TGEMM_OK)
    return status;
  cuda_state *st = state_of(ctx);
  if ((status = make_current(ctx, st)) != TGEMM_OK) return status;
  cudaError_t err = tgemm__mxfp4_quantize_cuda(
      src->data, src->dtype, src->rows, src->cols, src->ld, (uint8_t *)dst->data, dst->ld,
      (uint8_t *)dst->scales, dst->scales_ld, mode, st->stream);
  if (err != cudaSuccess)
    return tgemm__cuda_fail(ctx, err, "tgemm__mxfp4_quantize_cuda", "%lld x %lld %s, mode %s",
                            (long long)src->rows, (long long)src->cols,
                            tgemm_dtype_name(src->dtype), tgemm_scale_mode_name(mode));
  return TGEMM_OK;
}

static tgemm_status cuda_dequantize(tgemm_ctx *ctx, const tgemm_matrix *src,
                                    const tgemm_matrix *dst) {
  tgemm_status status;
  if ((status = need_device(ctx, src, "the MXFP4 matrix")) != TGEMM_OK ||
      (status = need_device(ctx, dst, "the dequantized output")) != TGEMM_OK)
    return status;
  cuda_state *st = state_of(ctx);
  if ((status = make_current(ctx, st)) != TGEMM_OK) return status;
  cudaError_t err = tgemm__mxfp4_dequantize_cuda(
      (const uint8_t *)src->data, src->ld, (const uint8_t *)src->scales, src->scales_ld,
      src->rows, src->cols, dst->data, dst->dtype, dst->ld, st->stream);
  if (err != cudaSuccess)
    return tgemm__cuda_fail(ctx, err, "tgemm__mxfp4_dequantize_cuda", "%lld x %lld to %s",
                            (long long)src->rows, (long long)src->cols,
                            tgemm_dtype_name(dst->dtype));
  return TGEMM_OK;
}

/* --------------------------------------------------------------- memory */

static tgemm_status cuda_alloc(tgemm_ctx *ctx, size_t bytes, void **ptr) {
  cuda_state *st = state_of(ctx);
  tgemm_status status = make_current(ctx, st);
  if (status != TGEMM_OK) return status;
  TGEMM__CUDA_TRY(ctx, cudaMalloc(ptr, bytes), "cudaMalloc", "%zu bytes", bytes);
  return TGEMM_OK;
}

static void cuda_free(tgemm_ctx *ctx, void *ptr) {
  if (!ptr) return;
  make_current(ctx, state_of(ctx));
  cudaFree(ptr);
}

/* Stream-ordered; copies touching host memory wait, so that the host
 * buffer may be reused (or read) on return. */
static tgemm_status cuda_copy(tgemm_ctx *ctx, void *dst, const void *src, size_t bytes,
                              tgemm_copy_kind kind) {
  static const enum cudaMemcpyKind kinds[] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                                              cudaMemcpyDeviceToDevice};
  static const char *const names[] = {"host to device", "device to host", "device to device"};
  cuda_state *st = state_of(ctx);
  tgemm_status status = make_current(ctx, st);
  if (status != TGEMM_OK) return status;
  TGEMM__CUDA_TRY(ctx, cudaMemcpyAsync(dst, src, bytes, kinds[kind], st->stream),
                  "cudaMemcpyAsync", "%zu bytes %s", bytes, names[kind]);
  if (kind != TGEMM_COPY_DEVICE_TO_DEVICE)
    TGEMM__CUDA_TRY(ctx, cudaStreamSynchronize(st->stream), "cudaStreamSynchronize",
                    "after a %zu-byte copy %s", bytes, names[kind]);
  return TGEMM_OK;
}

static tgemm_status cuda_synchronize(tgemm_ctx *ctx) {
  cuda_state *st = state_of(ctx);
  TGEMM__CUDA_TRY(ctx, cudaStreamSynchronize(st->stream), "cudaStreamSynchronize",
                  "device %d", st->device);
  return TGEMM_OK;
}

static tgemm_status cuda_set_stream(tgemm_ctx *ctx, void *stream) {
  cuda_state *st = state_of(ctx);
  /* Work already queued (a weight's MXFP4 quantization, copies) must be
   * done before the new stream reads its results. */
  TGEMM__CUDA_TRY(ctx, cudaStreamSynchronize(st->stream), "cudaStreamSynchronize", "tgemm_ctx_set_stream");
  st->stream = stream ? (cudaStream_t)stream : st->own_stream;
  return TGEMM_OK;
}

/* --------------------------------------------------------------- timing */

static tgemm_status cuda_timer_start(tgemm_ctx *ctx) {
  cuda_state *st = state_of(ctx);
  TGEMM__CUDA_TRY(ctx, cudaEventRecord(st->ev_start, st->stream), "cudaEventRecord",
                  "timer start");
  return TGEMM_OK;
}

static tgemm_status cuda_timer_stop(tgemm_ctx *ctx, double *elapsed_us) {
  cuda_state *st = state_of(ctx);
  float ms = 0.0f;
  TGEMM__CUDA_TRY(ctx, cudaEventRecord(st->ev_stop, st->stream), "cudaEventRecord", "timer stop");
  TGEMM__CUDA_TRY(ctx, cudaEventSynchronize(st->ev_stop), "cudaEventSynchronize", "timer stop");
  TGEMM__CUDA_TRY(ctx, cudaEventElapsedTime(&ms, st->ev_start, st->ev_stop),
                  "cudaEventElapsedTime", "timer");
  *elapsed_us = (double)ms * 1000.0;
  return TGEMM_OK;
}

static tgemm_status cuda_flush_cache(tgemm_ctx *ctx, tgemm__flush_mode mode) {
  cuda_state *st = state_of(ctx);
  if (mode == TGEMM__FLUSH_NONE) return TGEMM_OK;
  if (mode == TGEMM__FLUSH_CLEAN) {
    /* Eight blocks of 256 threads per SM keep enough loads in flight. */
    TGEMM__CUDA_TRY(ctx, tgemm__cuda_l2_flush_read(st->flush_buf, st->flush_bytes, 8 * st->sm_count, st->stream),
                    "read_flush_kernel", "L2 flush of %zu bytes", st->flush_bytes);
    return TGEMM_OK;
  }
  st->flush_count++;
  TGEMM__CUDA_TRY(ctx,
                  cudaMemsetAsync(st->flush_buf, (int)(st->flush_count & 0xff), st->flush_bytes,
                                  st->stream),
                  "cudaMemsetAsync", "L2 flush of %zu bytes", st->flush_bytes);
  return TGEMM_OK;
}

/* --------------------------------------------------------------- graphs */

static tgemm_status cuda_graph_begin(tgemm_ctx *ctx) {
  cuda_state *st = state_of(ctx);
  /* Thread-local: another thread's unrelated CUDA calls stay legal. */
  TGEMM__CUDA_TRY(ctx, cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal),
                  "cudaStreamBeginCapture", "graph of timed runs");
  return TGEMM_OK;
}

static tgemm_status cuda_graph_end(tgemm_ctx *ctx, void **graph) {
  cuda_state *st = state_of(ctx);
  *graph = NULL;
  cudaGraph_t g = NULL;
  cudaError_t e = cudaStreamEndCapture(st->stream, &g);
  if (e != cudaSuccess) {
    if (g) cudaGraphDestroy(g);
    (void)cudaGetLastError(); /* not sticky: later calls must not report it */
    return tgemm__cuda_fail(ctx, e, "cudaStreamEndCapture", "graph of timed runs");
  }
  cudaGraphExec_t exec = NULL;
  e = cudaGraphInstantiate(&exec, g, 0);
  cudaGraphDestroy(g);
  if (e != cudaSuccess) return tgemm__cuda_fail(ctx, e, "cudaGraphInstantiate", "graph of timed runs");
  *graph = exec;
  return TGEMM_OK;
}

static tgemm_status cuda_graph_launch(tgemm_ctx *ctx, void *graph) {
  cuda_state *st = state_of(ctx);
  TGEMM__CUDA_TRY(ctx, cudaGraphLaunch((cudaGraphExec_t)graph, st->stream), "cudaGraphLaunch",
                  "graph of timed runs");
  return TGEMM_OK;
}

static void cuda_graph_free(tgemm_ctx *ctx, void *graph) {
  (void)ctx;
  if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ---------------------------------------------------------------- table */

static const tgemm__backend cuda_backend = {
    .name = "cuda",
    .kind = TGEMM_BACKEND_CUDA,
    .location = TGEMM_DEVICE,
    .init = cuda_init,
    .shutdown = cuda_shutdown,
    .device_key = cuda_device_key,
    .supports = cuda_supports,
    .candidates = cuda_candidates,
    .default_kernel = cuda_default_kernel,
    .validate_kernel = cuda_validate_kernel,
    .run = cuda_run,
    .weight_prepare = cuda_weight_prepare,
    .weight_release = cuda_weight_release,
    .quantize = cuda_quantize,
    .dequantize = cuda_dequantize,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .copy = cuda_copy,
    .synchronize = cuda_synchronize,
    .set_stream = cuda_set_stream,
    .timer_start = cuda_timer_start,
    .timer_stop = cuda_timer_stop,
    .flush_cache = cuda_flush_cache,
    .graph_begin = cuda_graph_begin,
    .graph_end = cuda_graph_end,
    .graph_launch = cuda_graph_launch,
    .graph_free = cuda_graph_free,
};

const tgemm__backend *tgemm__cuda_backend_get(void) { return &cuda_backend; }

uint64_t tgemm__cuda_lt_cache_builds(const tgemm_ctx *ctx) {
  if (!ctx || ctx->backend != &cuda_backend || !ctx->backend_state) return 0;
  return tgemm__lt_gemm_builds(((const cuda_state *)ctx->backend_state)->gemm);
}

uint64_t tgemm__cuda_lt_fallbacks(const tgemm_ctx *ctx) {
  if (!ctx || ctx->backend != &cuda_backend || !ctx->backend_state) return 0;
  return tgemm__lt_gemm_fallbacks(((const cuda_state *)ctx->backend_state)->gemm);
}
