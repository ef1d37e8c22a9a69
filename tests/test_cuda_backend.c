/* The CUDA backend as a whole:
 * - without a usable GPU (or without CUDA in the build), a forced CUDA
 *   context fails with a clear status and message, AUTO falls back to the
 *   CPU, and a CPU context still works;
 * - with a GPU: device key, memory round trips, timer and cache flush;
 *   every cuBLASLt candidate against a double reference for each input
 *   dtype x output dtype x bias dtype (including the staged combinations
 *   that cuBLASLt cannot write directly, and the chunked path with a small
 *   workspace); odd leading dimensions and misaligned pointers; the
 *   descriptor cache not rebuilding a seen shape; clear errors for host
 *   pointers and missing weight forms;
 * - graph timing (tgemm__time_kernel replaying calls from a CUDA graph) on
 *   every route: a whole number of rotations per replay, and the replayed
 *   calls write exactly what an eager call writes.
 * TGEMM_TEST_QUICK=1 leaves out the (printed) call-overhead timing.
 * Exit 77 when the GPU part could not run. */
#include "test_util.h"

#include "core/internal.h"

#ifdef TGEMM_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/cuda_backend.h"
#include "tune/preset.h"
#include "tune/timing.h"
#include "tune/workload.h"
#endif


/* A CPU context must work whatever happened to CUDA. */
static void check_cpu_still_works(void) {
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = TGEMM_BACKEND_CPU;
  o.tuned = 0;
  tgemm_ctx *ctx = NULL;
  CHECK_OK(tgemm_ctx_create(&o, &ctx));
  if (!ctx) return;
  float x[2 * 3], w[4 * 3], y[2 * 4];
  test_fill_normal(x, TGEMM_F32, 6, 1.0f);
  test_fill_normal(w, TGEMM_F32, 12, 1.0f);
  test_poison(y, TGEMM_F32, 8);
  tgemm_matrix xm = tgemm_matrix_dense(x, TGEMM_F32, 2, 3, TGEMM_HOST);
  tgemm_matrix wm = tgemm_matrix_dense(w, TGEMM_F32, 4, 3, TGEMM_HOST);
  tgemm_matrix ym = tgemm_matrix_dense(y, TGEMM_F32, 2, 4, TGEMM_HOST);
  tgemm_weight *weight = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, NULL, &weight));
  CHECK_OK(tgemm_linear(ctx, &xm, weight, NULL, &ym, NULL, NULL));
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++) {
      double ref = 0;
      for (int k = 0; k < 3; k++) ref += (double)x[i * 3 + k] * w[j * 3 + k];
      CHECK(fabs(y[i * 4 + j] - ref) <= 1e-5 * (1 + fabs(ref)), "cpu y[%d,%d] = %g, want %g", i,
            j, y[i * 4 + j], ref);
    }
  tgemm_weight_free(weight);
  tgemm_ctx_free(ctx);
}

/* Forced CUDA where it cannot work: a status, a message, no crash. */
static void check_no_device_path(void) {
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = TGEMM_BACKEND_CUDA;
  tgemm_ctx *ctx = NULL;
  tgemm_status st = tgemm_ctx_create(&o, &ctx);
  const char *msg = tgemm_ctx_create_error();
  printf("forced CUDA: %s: %s\n", tgemm_status_name(st), msg);
  CHECK(ctx == NULL, "a failed create must leave ctx NULL");
#ifdef TGEMM_HAVE_CUDA
  CHECK(st == TGEMM_NO_DEVICE, "forced CUDA without a GPU returned %s", tgemm_status_name(st));
  CHECK(strstr(msg, "cudaGetDeviceCount") || strstr(msg, "cublasLt") || strstr(msg, "CUDA"),
        "the message should name the failing call: \"%s\"", msg);
#else
  CHECK(st == TGEMM_UNSUPPORTED || st == TGEMM_NO_DEVICE,
        "forced CUDA in a build without CUDA returned %s", tgemm_status_name(st));
  CHECK(msg[0] != '\0', "forced CUDA failed without a message");
#endif
  if (ctx) tgemm_ctx_free(ctx);

  /* AUTO falls back to the CPU with a warning. */
  o.backend = TGEMM_BACKEND_AUTO;
  o.tuned = 0;
  st = tgemm_ctx_create(&o, &ctx);
  CHECK(st == TGEMM_OK, "AUTO without a GPU: %s (%s)", tgemm_status_name(st),
        tgemm_ctx_create_error());
  if (ctx) {
    CHECK(tgemm_ctx_backend(ctx) == TGEMM_BACKEND_CPU, "AUTO without a GPU chose %s",
          tgemm_ctx_backend_name(ctx));
    tgemm_ctx_free(ctx);
  }
  check_cpu_still_works();
}

#ifdef TGEMM_HAVE_CUDA

static void *upload(tgemm_ctx *ctx, const void *host, size_t bytes) {
  void *dev = NULL;
  CHECK_OK(tgemm_malloc(ctx, bytes, &dev));
  if (dev) CHECK_OK(tgemm_memcpy(ctx, dev, host, bytes, TGEMM_COPY_HOST_TO_DEVICE));
  return dev;
}

static tgemm_ctx *cuda_ctx(size_t workspace_bytes) {
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = TGEMM_BACKEND_CUDA;
  o.tuned = 0;
  o.workspace_bytes = workspace_bytes;
  tgemm_ctx *ctx = NULL;
  tgemm_status st = tgemm_ctx_create(&o, &ctx);
  CHECK(st == TGEMM_OK, "tgemm_ctx_create(cuda): %s", tgemm_ctx_create_error());
  return ctx;
}

static void check_device_info(tgemm_ctx *ctx) {
  const tgemm__device_key *key = &ctx->device_key;
  printf("device: %s; key: \"%s\" %s %d units %s\n", tgemm_ctx_device_name(ctx), key->device,
         key->arch, key->units, key->lib_version);
  CHECK(strcmp(tgemm_ctx_backend_name(ctx), "cuda") == 0, "backend %s",
        tgemm_ctx_backend_name(ctx));
  CHECK(tgemm_ctx_location(ctx) == TGEMM_DEVICE, "CUDA memory must be device memory");
  CHECK(key->device[0] != '\0', "empty device name");
  CHECK(strncmp(key->arch, "sm_", 3) == 0 && strlen(key->arch) >= 5, "arch \"%s\"", key->arch);
  CHECK(key->units > 0, "SM count %d", key->units);
  CHECK(strncmp(key->lib_version, "cublasLt-", 9) == 0 && atol(key->lib_version + 9) > 0,
        "lib_version \"%s\"", key->lib_version);

  /* A device that does not exist is a clear error, not a crash. */
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = TGEMM_BACKEND_CUDA;
  o.device_index = 999;
  tgemm_ctx *bad = NULL;
  tgemm_status st = tgemm_ctx_create(&o, &bad);
  CHECK(st == TGEMM_NO_DEVICE && bad == NULL, "device 999: %s", tgemm_status_name(st));
  CHECK(strstr(tgemm_ctx_create_error(), "999") != NULL, "device 999 message: \"%s\"",
        tgemm_ctx_create_error());
}

static void check_memory_and_timer(tgemm_ctx *ctx) {
  const size_t bytes = 1000003;
  uint8_t *a = malloc(bytes), *b = malloc(bytes);
  for (size_t i = 0; i < bytes; i++) a[i] = (uint8_t)test_rand_u64();
  memset(b, 0, bytes);
  void *d1 = upload(ctx, a, bytes), *d2 = NULL;
  CHECK_OK(tgemm_malloc(ctx, bytes, &d2));
  CHECK_OK(tgemm_memcpy(ctx, d2, d1, bytes, TGEMM_COPY_DEVICE_TO_DEVICE));
  CHECK_OK(tgemm_memcpy(ctx, b, d2, bytes, TGEMM_COPY_DEVICE_TO_HOST));
  CHECK(memcmp(a, b, bytes) == 0, "host -> device -> device -> host round trip differs");

  double us = -1;
  for (int mode = TGEMM__FLUSH_NONE; mode <= TGEMM__FLUSH_DIRTY; mode++) {
    CHECK_OK(ctx->backend->timer_start(ctx));
    CHECK_OK(ctx->backend->flush_cache(ctx, (tgemm__flush_mode)mode));
    CHECK_OK(ctx->backend->timer_stop(ctx, &us));
    CHECK(us >= 0 && isfinite(us), "timer gave %g us for an L2 flush", us);
    printf("L2 flush %s: %.1f us\n", tgemm__flush_mode_name((tgemm__flush_mode)mode), us);
  }
  CHECK_OK(tgemm_synchronize(ctx));

  /* Stream switching: a caller's stream, then back to the context's. */
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess, "stream create");
  CHECK_OK(tgemm_ctx_set_stream(ctx, s));
  CHECK_OK(tgemm_memcpy(ctx, b, d1, bytes, TGEMM_COPY_DEVICE_TO_HOST));
  CHECK(memcmp(a, b, bytes) == 0, "copy on the caller's stream differs");
  CHECK_OK(tgemm_ctx_set_stream(ctx, NULL));
  cudaStreamDestroy(s);

  tgemm_free(ctx, d1);
  tgemm_free(ctx, d2);
  free(a);
  free(b);
}

typedef struct lt_problem {
  int64_t m, n, k;
  tgemm_dtype x_dtype, y_dtype;
  int bias; /* 0 none, 1 y's dtype, 2 f32 */
  int64_t ldx_pad;  /* extra elements per x row */
  int64_t x_offset; /* elements between the allocation and x (misalignment) */
} lt_problem;

/* Problems on which tgemm_linear reported a fallback (check_library). */
static int g_fallbacks_reported;

/* Run every library candidate (or the router's default, when
 * all_candidates is false) and compare with the double reference. */
static void check_library(tgemm_ctx *ctx, const lt_problem *p, bool all_candidates) {
  const int64_t m = p->m, n = p->n, k = p->k, ldx = k + p->ldx_pad;
  size_t xs = tgemm_dtype_size(p->x_dtype), ys = tgemm_dtype_size(p->y_dtype);
  tgemm_dtype bias_dtype = p->bias == 2 ? TGEMM_F32 : p->y_dtype;
  size_t x_elems = (size_t)(p->x_offset + m * ldx);
  void *x_host = malloc(x_elems * xs), *w_host = malloc((size_t)(n * k) * xs);
  void *b_host = malloc((size_t)n * 4);
  test_fill_normal(x_host, p->x_dtype, x_elems, 1.0f);
  test_fill_normal(w_host, p->x_dtype, (size_t)(n * k), 1.0f);
  test_fill_normal(b_host, bias_dtype, (size_t)n, 1.0f);

  double *ref = malloc(sizeof(double) * (size_t)(m * n));
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      const char *xr = (const char *)x_host + (size_t)(p->x_offset + i * ldx) * xs;
      const char *wr = (const char *)w_host + (size_t)(j * k) * xs;
      double acc = p->bias ? tgemm__load_f32(b_host, bias_dtype, j) : 0.0;
      for (int64_t q = 0; q < k; q++)
        acc += (double)tgemm__load_f32(xr, p->x_dtype, q) * tgemm__load_f32(wr, p->x_dtype, q);
      ref[i * n + j] = acc;
    }

  char *x_dev = upload(ctx, x_host, x_elems * xs);
  void *w_dev = upload(ctx, w_host, (size_t)(n * k) * xs);
  void *b_dev = p->bias ? upload(ctx, b_host, (size_t)n * tgemm_dtype_size(bias_dtype)) : NULL;
  void *y_dev = NULL;
  size_t y_bytes = (size_t)(m * n) * ys;
  CHECK_OK(tgemm_malloc(ctx, y_bytes, &y_dev));
  tgemm_matrix x = {x_dev + (size_t)p->x_offset * xs, NULL, p->x_dtype, TGEMM_DEVICE, m, k, ldx, 0};
  tgemm_matrix wm = tgemm_matrix_dense(w_dev, p->x_dtype, n, k, TGEMM_DEVICE);
  tgemm_matrix bias = tgemm_matrix_dense(b_dev, bias_dtype, 1, n, TGEMM_DEVICE);
  tgemm_matrix y = tgemm_matrix_dense(y_dev, p->y_dtype, m, n, TGEMM_DEVICE);
  tgemm_weight *weight = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, NULL, &weight));
  void *y_host = malloc(y_bytes), *y_poison = malloc(y_bytes);
  test_poison(y_poison, p->y_dtype, (size_t)(m * n));

  tgemm__shape shape = {m, n, k, p->x_dtype, p->y_dtype, p->bias != 0};
  tgemm__kernel cands[TGEMM__MAX_CANDIDATES];
  int count = 1;
  if (all_candidates) {
    count = ctx->backend->candidates(ctx, &shape, TGEMM_ROUTE_LIBRARY, cands, TGEMM__MAX_CANDIDATES);
    CHECK(count > 0, "no cuBLASLt candidates for M=%lld N=%lld K=%lld %s -> %s: %s",
          (long long)m, (long long)n, (long long)k, tgemm_dtype_name(p->x_dtype),
          tgemm_dtype_name(p->y_dtype), tgemm_ctx_last_error(ctx));
  }
  tgemm__kernel def;
  CHECK_OK(ctx->backend->default_kernel(ctx, &shape, TGEMM_ROUTE_LIBRARY, &def));
  uint64_t fallbacks = tgemm__cuda_lt_fallbacks(ctx);
  double max_err = 0;
  int substituted = -1; /* a candidate that did not fit these operands */
  for (int c = 0; c < count; c++) {
    CHECK_OK(tgemm_memcpy(ctx, y_dev, y_poison, y_bytes, TGEMM_COPY_HOST_TO_DEVICE));
    tgemm_status st;
    const char *name;
    if (all_candidates) {
      CHECK(cands[c].has_algo && strncmp(cands[c].name, "lt_a", 4) == 0, "candidate %s",
            cands[c].name);
      CHECK_OK(ctx->backend->validate_kernel(ctx, &shape, &cands[c]));
      tgemm__kernel ran;
      ran.name[0] = '\0';
      tgemm__operands ops = {&x, weight, p->bias ? &bias : NULL, &y, &ran};
      const uint64_t before = tgemm__cuda_lt_fallbacks(ctx);
      st = ctx->backend->run(ctx, &cands[c], &shape, &ops);
      name = cands[c].name;
      /* The run names the kernel that ran exactly when it was another. */
      const bool fell_back = tgemm__cuda_lt_fallbacks(ctx) != before;
      CHECK(fell_back == (ran.name[0] != '\0'), "%s: fell back %d, reported \"%s\"", name,
            fell_back, ran.name);
      /* (The heuristic may pick the same configuration for these operands:
       * the name can be the candidate's own.) */
      if (fell_back) {
        CHECK(strncmp(ran.name, "lt_a", 4) == 0, "%s fell back, reported \"%s\"", name, ran.name);
        if (substituted < 0) substituted = c;
      }
    } else {
      tgemm_linear_options lo;
      tgemm_linear_options_default(&lo);
      lo.route = TGEMM_ROUTE_LIBRARY;
      tgemm_linear_info info;
      st = tgemm_linear(ctx, &x, weight, p->bias ? &bias : NULL, &y, &lo, &info);
      name = "tgemm_linear(library)";
      if (st == TGEMM_OK)
        CHECK(strcmp(info.kernel, def.name) == 0, "linear ran %s, default is %s", info.kernel,
              def.name);
    }
    CHECK(st == TGEMM_OK, "%s: %s", name, tgemm_ctx_last_error(ctx));
    CHECK_OK(tgemm_memcpy(ctx, y_host, y_dev, y_bytes, TGEMM_COPY_DEVICE_TO_HOST));
    double err = test_rel_error(y_host, p->y_dtype, m, n, n, ref);
    if (!(err <= max_err)) max_err = err;
    double tol = p->y_dtype == TGEMM_BF16 ? 1e-2 : 1e-5;
    CHECK(err <= tol, "%s M=%lld N=%lld K=%lld x %s y %s bias %d ldx %lld offset %lld: rel error "
          "%.3g > %.0e",
          name, (long long)m, (long long)n, (long long)k, tgemm_dtype_name(p->x_dtype),
          tgemm_dtype_name(p->y_dtype), p->bias, (long long)ldx, (long long)p->x_offset, err, tol);
  }
  /* On contiguous operands every candidate runs as itself, except with an
   * f32 bias on bf16 x and y: candidates describe a bias of y's dtype
   * (fused by cuBLASLt), an f32 bias stages the output through f32, and
   * the staged problem runs the heuristic's algorithm (one warning). */
  bool bias_staged = p->bias == 2 && p->x_dtype == TGEMM_BF16 && p->y_dtype == TGEMM_BF16;
  if (p->ldx_pad == 0 && p->x_offset == 0 && !bias_staged)
    CHECK(tgemm__cuda_lt_fallbacks(ctx) == fallbacks,
          "%llu candidate run(s) fell back to the heuristic's algorithm (M=%lld N=%lld K=%lld, "
          "x %s, y %s, bias %d)",
          (unsigned long long)(tgemm__cuda_lt_fallbacks(ctx) - fallbacks), (long long)m,
          (long long)n, (long long)k, tgemm_dtype_name(p->x_dtype), tgemm_dtype_name(p->y_dtype),
          p->bias);
  /* tgemm_linear with such a kernel says what ran, and why. */
  if (substituted >= 0) {
    g_fallbacks_reported++;
    tgemm_linear_options lo;
    tgemm_linear_options_default(&lo);
    lo.route = TGEMM_ROUTE_LIBRARY;
    lo.kernel = cands[substituted].name;
    tgemm_linear_info info;
    CHECK_OK(tgemm_linear(ctx, &x, weight, p->bias ? &bias : NULL, &y, &lo, &info));
    CHECK(strcmp(info.reason, "fallback") == 0 && strncmp(info.kernel, "lt_a", 4) == 0,
          "linear with %s on operands it does not fit: reason \"%s\", kernel %s",
          cands[substituted].name, info.reason, info.kernel);
  }
  printf("library M=%-4lld N=%-4lld K=%-4lld x %-4s y %-4s bias %-4s ldx %-5lld off %lld: %2d "
         "kernel(s), max rel err %.3g (default %s)\n",
         (long long)m, (long long)n, (long long)k, tgemm_dtype_name(p->x_dtype),
         tgemm_dtype_name(p->y_dtype), p->bias == 0 ? "none" : p->bias == 1 ? "y" : "f32",
         (long long)ldx, (long long)p->x_offset, count, max_err, def.name);

  /* A seen shape builds nothing more. */
  uint64_t builds = tgemm__cuda_lt_cache_builds(ctx);
  for (int r = 0; r < 3; r++) {
    tgemm__operands ops = {&x, weight, p->bias ? &bias : NULL, &y, NULL};
    CHECK_OK(ctx->backend->run(ctx, &def, &shape, &ops));
  }
  CHECK(tgemm__cuda_lt_cache_builds(ctx) == builds, "cache rebuilt a seen shape (%llu -> %llu)",
        (unsigned long long)builds, (unsigned long long)tgemm__cuda_lt_cache_builds(ctx));
  CHECK_OK(tgemm_synchronize(ctx));

  tgemm_weight_free(weight);
  tgemm_free(ctx, x_dev);
  tgemm_free(ctx, w_dev);
  tgemm_free(ctx, b_dev);
  tgemm_free(ctx, y_dev);
  free(x_host);
  free(w_host);
  free(b_host);
  free(ref);
  free(y_host);
  free(y_poison);
}

/* Mistakes get a status and a message, and the context stays usable. */
static void check_errors(tgemm_ctx *ctx) {
  const int64_t m = 3, n = 5, k = 40;
  uint16_t x_host[3 * 40], w_host[5 * 40], y_host[3 * 5];
  test_fill_normal(x_host, TGEMM_BF16, sizeof x_host / 2, 1.0f);
  test_fill_normal(w_host, TGEMM_BF16, sizeof w_host / 2, 1.0f);
  void *x_dev = upload(ctx, x_host, sizeof x_host), *w_dev = upload(ctx, w_host, sizeof w_host);
  void *y_dev = NULL;
  CHECK_OK(tgemm_malloc(ctx, sizeof y_host, &y_dev));
  tgemm_matrix wm = tgemm_matrix_dense(w_dev, TGEMM_BF16, n, k, TGEMM_DEVICE);
  tgemm_matrix y = tgemm_matrix_dense(y_dev, TGEMM_BF16, m, n, TGEMM_DEVICE);
  tgemm_weight *weight = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, NULL, &weight));

  tgemm_matrix x_on_host = tgemm_matrix_dense(x_host, TGEMM_BF16, m, k, TGEMM_HOST);
  tgemm_status st = tgemm_linear(ctx, &x_on_host, weight, NULL, &y, NULL, NULL);
  CHECK(st != TGEMM_OK && strstr(tgemm_ctx_last_error(ctx), "host"),
        "x in host memory: %s \"%s\"", tgemm_status_name(st), tgemm_ctx_last_error(ctx));

  tgemm_matrix x = tgemm_matrix_dense(x_dev, TGEMM_BF16, m, k, TGEMM_DEVICE);
  tgemm_linear_options lo;
  tgemm_linear_options_default(&lo);
  lo.route = TGEMM_ROUTE_W4A16;
  st = tgemm_linear(ctx, &x, weight, NULL, &y, &lo, NULL);
  CHECK(st == TGEMM_UNSUPPORTED && tgemm_ctx_last_error(ctx)[0],
        "W4A16 on a dense-only weight: %s \"%s\"", tgemm_status_name(st),
        tgemm_ctx_last_error(ctx));
  printf("W4A16 on a dense-only weight: %s\n", tgemm_ctx_last_error(ctx));

  /* Direct run of an MXFP4 route on a dense-only weight. */
  tgemm__kernel k4 = {0};
  k4.route = TGEMM_ROUTE_W4A4;
  snprintf(k4.name, sizeof k4.name, "w4a4_none");
  tgemm__shape shape = {m, n, k, TGEMM_BF16, TGEMM_BF16, false};
  tgemm__operands ops = {&x, weight, NULL, &y, NULL};
  st = ctx->backend->run(ctx, &k4, &shape, &ops);
  CHECK(st == TGEMM_UNSUPPORTED && strstr(tgemm_ctx_last_error(ctx), "MXFP4"),
        "w4a4 run on a dense-only weight: %s \"%s\"", tgemm_status_name(st),
        tgemm_ctx_last_error(ctx));

  /* Still usable afterwards. */
  CHECK_OK(tgemm_linear(ctx, &x, weight, NULL, &y, NULL, NULL));
  CHECK_OK(tgemm_memcpy(ctx, y_host, y_dev, sizeof y_host, TGEMM_COPY_DEVICE_TO_HOST));
  for (int i = 0; i < 15; i++) CHECK(isfinite(tgemm_bf16_to_f32(y_host[i])), "y[%d] not finite", i);
  tgemm_weight_free(weight);
  tgemm_free(ctx, x_dev);
  tgemm_free(ctx, w_dev);
  tgemm_free(ctx, y_dev);
}

/* Graph timing on each route's built-in kernel: the timing runs, each
 * replay covers the weight copies a whole number of times, and y after
 * the last replay is bit-identical to y after one eager call (both wrote
 * the same product; every route is deterministic, test_cuda_graph). */
static void check_graph_timing(tgemm_ctx *ctx) {
  /* Back to back, the smallest form a route reads (MXFP4 on kv_b TP8,
   * 1.1 MB) must rotate through twice the 50 MB L2 to come from memory. */
  const tgemm__shape kv_b_tp8 = {1, 4096, 512, TGEMM_BF16, TGEMM_BF16, false};
  double mx_bytes = 4096.0 * (double)(tgemm_mxfp4_packed_cols(512) + tgemm_mxfp4_scale_cols(512));
  int copies = tgemm__workload_auto_copies(ctx, &kv_b_tp8, true);
  CHECK(copies * mx_bytes >= 2.0 * (50 << 20), "%d copies of %.0f MXFP4 bytes do not span twice the L2", copies,
        mx_bytes);

  const tgemm__shape shape = {4, 1000, 544, TGEMM_BF16, TGEMM_BF16, true};
  tgemm__workload *wl = NULL;
  CHECK_OK(tgemm__workload_create(ctx, &shape, 3, 99, true, &wl));
  if (!wl) return;
  const tgemm__operands *set0 = tgemm__workload_operands(wl, 0);
  size_t y_bytes = (size_t)(shape.m * shape.n) * 2;
  uint16_t *replayed = malloc(y_bytes), *eager = malloc(y_bytes);
  tgemm__timing_options opt;
  tgemm__timing_options_default(&opt);
  opt.max_seconds = 0.05;
  opt.flush = TGEMM__FLUSH_NONE;
  opt.graph = true;
  static const tgemm_route routes[] = {TGEMM_ROUTE_LIBRARY, TGEMM_ROUTE_SKINNY, TGEMM_ROUTE_W4A16,
                                       TGEMM_ROUTE_W4A4, TGEMM_ROUTE_REFERENCE};
  for (size_t r = 0; r < sizeof routes / sizeof *routes; r++) {
    tgemm__kernel k;
    CHECK_OK(ctx->backend->default_kernel(ctx, &shape, routes[r], &k));
    CHECK_OK(tgemm__workload_poison_y(ctx, wl));
    tgemm__timing t;
    CHECK_OK(tgemm__time_kernel(ctx, &k, &shape, tgemm__workload_sets(wl), 3, &opt, &t));
    CHECK(t.reps >= 1 && t.median_us > 0 && isfinite(t.max_us), "%s: graph timing median %g us, %d reps",
          k.name, t.median_us, t.reps);
    CHECK(t.calls % (3 * t.reps) == 0, "%s: %d calls in %d replays: not whole rotations of 3 copies", k.name,
          t.calls, t.reps);
    CHECK_OK(tgemm_memcpy(ctx, replayed, set0->y->data, y_bytes, TGEMM_COPY_DEVICE_TO_HOST));
    double vs_dense = NAN, vs_exact = NAN;
    CHECK_OK(tgemm__workload_error2(ctx, wl, &k, &vs_dense, &vs_exact));
    CHECK(vs_exact < 1e-2, "%s: eager error %g", k.name, vs_exact);
    CHECK_OK(tgemm_memcpy(ctx, eager, set0->y->data, y_bytes, TGEMM_COPY_DEVICE_TO_HOST));
    CHECK(memcmp(replayed, eager, y_bytes) == 0, "%s: y after graph replays differs from an eager call",
          k.name);
    printf("graph timing %-7s %-40s %8.2f us/call, %d calls in %d replays\n", tgemm_route_name(routes[r]),
           k.name, t.median_us, t.calls, t.reps);
  }
  /* A graph cannot hold a flush between calls. */
  tgemm__kernel k;
  CHECK_OK(ctx->backend->default_kernel(ctx, &shape, TGEMM_ROUTE_LIBRARY, &k));
  opt.flush = TGEMM__FLUSH_CLEAN;
  tgemm__timing t;
  CHECK_STATUS(tgemm__time_kernel(ctx, &k, &shape, tgemm__workload_sets(wl), 3, &opt, &t),
               TGEMM_INVALID_ARGUMENT);
  CHECK(strstr(tgemm_ctx_last_error(ctx), "flush none") != NULL, "message: %s", tgemm_ctx_last_error(ctx));
  free(replayed);
  free(eager);
  tgemm__workload_free(wl);
}

/* Host cost of one library call on a cached shape (router + cache lookup
 * + cublasLtMatmul enqueue), and its GPU time.  Printed, not tested. */
static void report_call_overhead(tgemm_ctx *ctx) {
  const int64_t m = 1, n = 2112, k = 7168;
  const int calls = 200; /* fewer than the launch queue holds: enqueue never blocks */
  size_t xb = (size_t)(m * k) * 2, wb = (size_t)(n * k) * 2, yb = (size_t)(m * n) * 2;
  void *x_host = malloc(xb), *w_host = malloc(wb);
  test_fill_normal(x_host, TGEMM_BF16, (size_t)(m * k), 1.0f);
  test_fill_normal(w_host, TGEMM_BF16, (size_t)(n * k), 1.0f);
  void *x_dev = upload(ctx, x_host, xb), *w_dev = upload(ctx, w_host, wb), *y_dev = NULL;
  CHECK_OK(tgemm_malloc(ctx, yb, &y_dev));
  tgemm_matrix x = tgemm_matrix_dense(x_dev, TGEMM_BF16, m, k, TGEMM_DEVICE);
  tgemm_matrix wm = tgemm_matrix_dense(w_dev, TGEMM_BF16, n, k, TGEMM_DEVICE);
  tgemm_matrix y = tgemm_matrix_dense(y_dev, TGEMM_BF16, m, n, TGEMM_DEVICE);
  tgemm_weight *weight = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, NULL, &weight));
  tgemm_linear_options lo;
  tgemm_linear_options_default(&lo);
  lo.route = TGEMM_ROUTE_LIBRARY;
  CHECK_OK(tgemm_linear(ctx, &x, weight, NULL, &y, &lo, NULL)); /* builds the cache entry */
  CHECK_OK(tgemm_synchronize(ctx));
  struct timespec t0, t1;
  double gpu_us = 0;
  CHECK_OK(ctx->backend->timer_start(ctx));
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < calls; i++) CHECK_OK(tgemm_linear(ctx, &x, weight, NULL, &y, &lo, NULL));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  CHECK_OK(ctx->backend->timer_stop(ctx, &gpu_us));
  double host_us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3);
  printf("library M=1 N=2112 K=7168, %d back-to-back calls: host %.2f us/call to enqueue "
         "(router + cache lookup + cublasLtMatmul), GPU %.2f us/call (L2-warm weights)\n",
         calls, host_us / calls, gpu_us / calls);
  tgemm_weight_free(weight);
  tgemm_free(ctx, x_dev);
  tgemm_free(ctx, w_dev);
  tgemm_free(ctx, y_dev);
  free(x_host);
  free(w_host);
}

/* No candidate list of a preset decode shape reaches the cap: a list cut
 * short would hide kernels from the tuner, and a table naming one of them
 * would no longer resolve. */
static void check_candidate_lists_complete(tgemm_ctx *ctx) {
  for (int tp = 1; tp <= 8; tp += 7) {
    tgemm__layer_shape layers[TGEMM__PRESET_MAX_LAYERS];
    const int count = tgemm__preset_layers("deepseek-v3", tp, layers);
    CHECK(count > 0, "preset deepseek-v3 tp=%d: %d", tp, count);
    for (int i = 0; i < count; i++)
      for (int64_t m = 1; m <= 16; m *= 16)
        for (int r = TGEMM_ROUTE_SKINNY; r < TGEMM_ROUTE_COUNT; r++) {
          tgemm__shape s = {m, layers[i].n, layers[i].k, TGEMM_BF16, TGEMM_BF16, false};
          tgemm__kernel cands[TGEMM__MAX_CANDIDATES];
          const int n = ctx->backend->candidates(ctx, &s, (tgemm_route)r, cands, TGEMM__MAX_CANDIDATES);
          CHECK(n >= 0 && n < TGEMM__MAX_CANDIDATES,
                "%s M=%lld N=%lld K=%lld: %d %s candidates (cap %d)", layers[i].layer, (long long)m,
                (long long)s.n, (long long)s.k, n, tgemm_route_name((tgemm_route)r),
                TGEMM__MAX_CANDIDATES);
        }
  }
}

static int run_gpu_part(void) {
  g_fallbacks_reported = 0;
  tgemm_ctx *ctx = cuda_ctx(0);
  if (!ctx) return test_finish("test_cuda_backend");
  check_device_info(ctx);
  check_memory_and_timer(ctx);

  /* Every dtype combination the API allows, with all candidates. */
  static const tgemm_dtype xs[] = {TGEMM_BF16, TGEMM_F16, TGEMM_F32};
  static const tgemm_dtype ys[] = {TGEMM_BF16, TGEMM_F32};
  for (int xi = 0; xi < 3; xi++)
    for (int yi = 0; yi < 2; yi++)
      for (int b = 0; b < 3; b++) {
        if (b == 2 && ys[yi] == TGEMM_F32) continue; /* f32 bias = y's dtype */
        lt_problem p = {37, 129, 200, xs[xi], ys[yi], b, 0, 0};
        check_library(ctx, &p, true);
      }
  /* Decode and larger shapes, odd sizes. */
  lt_problem shapes[] = {
      {1, 1000, 1537, TGEMM_BF16, TGEMM_BF16, 1, 0, 0},
      {16, 7, 33, TGEMM_BF16, TGEMM_F32, 0, 0, 0},
      {2000, 1000, 200, TGEMM_BF16, TGEMM_BF16, 2, 0, 0},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    check_library(ctx, &shapes[i], true);
  /* Odd leading dimension and a 2-byte-aligned x: the default must cope,
   * and so must a tuned algo (it runs, or falls back to the heuristic). */
  lt_problem odd[] = {
      {17, 129, 200, TGEMM_BF16, TGEMM_BF16, 1, 3, 1},
      {300, 129, 1537, TGEMM_F16, TGEMM_F32, 0, 1, 3},
      {33, 1000, 200, TGEMM_F32, TGEMM_BF16, 2, 5, 1},
  };
  for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
    check_library(ctx, &odd[i], false);
    check_library(ctx, &odd[i], true);
  }
  /* The staged f32-bias problems above fall back for every candidate. */
  CHECK(g_fallbacks_reported > 0, "no candidate fell back: the fallback report went untested");
  check_errors(ctx);
  check_candidate_lists_complete(ctx);
  check_graph_timing(ctx);
  const char *quick = getenv("TGEMM_TEST_QUICK"); /* e.g. under compute-sanitizer */
  if (!quick || strcmp(quick, "1") != 0) report_call_overhead(ctx);
  tgemm_ctx_free(ctx);

  /* A 1 MiB workspace: staged output goes through the scratch in row
   * chunks (1000 f32 columns: 128 rows per chunk). */
  tgemm_ctx *small = cuda_ctx((size_t)1 << 20);
  if (small) {
    lt_problem chunked[] = {
        {300, 1000, 200, TGEMM_F32, TGEMM_BF16, 1, 0, 0},
        {300, 1000, 200, TGEMM_BF16, TGEMM_BF16, 2, 0, 0},
        {257, 1000, 33, TGEMM_F16, TGEMM_BF16, 0, 3, 1},
    };
    for (size_t i = 0; i < sizeof chunked / sizeof chunked[0]; i++) {
      check_library(small, &chunked[i], false);
      check_library(small, &chunked[i], true);
    }
    tgemm_ctx_free(small);
  }
  return test_finish("test_cuda_backend");
}

#endif /* TGEMM_HAVE_CUDA */

int main(void) {
  test_seed("test_cuda_backend");
#ifdef TGEMM_HAVE_CUDA
  int devices = 0;
  cudaError_t err = cudaGetDeviceCount(&devices);
  if (err == cudaSuccess && devices > 0) return run_gpu_part();
  printf("no CUDA device: cudaGetDeviceCount returned %s (%d devices); checking the "
         "no-device path\n",
         cudaGetErrorName(err), devices);
#else
  printf("built without CUDA; checking that a forced CUDA context fails cleanly\n");
#endif
  check_no_device_path();
  if (test_failures) return test_finish("test_cuda_backend");
  printf("test_cuda_backend: SKIP: no-device path checked; the GPU checks need a GPU\n");
  return TEST_SKIP;
}
