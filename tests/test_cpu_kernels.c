/* Property: every dense CPU kernel variant (skinny r1/r2/r4/r8, OpenBLAS
 * sgemm, reference), called explicitly through the backend's candidates()
 * and run(), matches the double reference within DESIGN.md §4 tolerances
 * for odd shapes, every x dtype, every output dtype, with and without bias
 * and with padded leading dimensions; writes every output element and
 * nothing else; and does so on the AVX2 path and the scalar fallback.
 * Also: kernel naming/resolution, defaults, device key, memory, timer. */
#include <math.h>

#include "core/cpu_features.h"
#include "core/internal.h"
#include "cpu/cpu_internal.h"
#include "cpu/cpu_reference.h"
#include "tune/timing.h"
#include "test_util.h"

#define MAX_KERNELS 16

typedef struct {
  tgemm_dtype dtype; /* x and W */
  int64_t m, n, k;
  tgemm_dtype out;
  int bias; /* 0 none, 1 like y, 2 f32 */
  int pad;  /* extra leading-dimension elements */
} case_t;

static size_t esz(tgemm_dtype d) { return tgemm_dtype_size(d); }


/* Naive double dot of one output element, independent of the library's
 * reference, to check the reference itself on a few elements. */
static double naive(const void *x, int64_t ldx, const void *w, int64_t ldw, tgemm_dtype dt,
                    int64_t k, int64_t i, int64_t j) {
  double s = 0;
  for (int64_t e = 0; e < k; e++)
    s += (double)tgemm__load_f32((const char *)x + (size_t)(i * ldx) * esz(dt), (int)dt, e) *
         (double)tgemm__load_f32((const char *)w + (size_t)(j * ldw) * esz(dt), (int)dt, e);
  return s;
}


static double tolerance(const case_t *c) { return c->out == TGEMM_BF16 ? 1e-2 : 1e-5; }

static void run_case(tgemm_ctx *ctx, const case_t *c, bool quick) {
  const tgemm__backend *be = &tgemm__cpu_backend;
  int64_t ldx = c->k + c->pad, ldw = c->k + 2 * c->pad, ldy = c->n + c->pad;
  size_t xn = (size_t)(c->m * ldx), wn = (size_t)(c->n * ldw), yn = (size_t)(c->m * ldy);
  void *x = malloc(xn * esz(c->dtype)), *w = malloc(wn * esz(c->dtype));
  void *y = malloc(yn * esz(c->out));
  tgemm_dtype bias_dt = c->bias == 2 ? TGEMM_F32 : c->out;
  void *bias = malloc((size_t)c->n * esz(bias_dt));
  double *ref = malloc((size_t)(c->m * c->n) * sizeof(double));
  test_fill_normal(x, c->dtype, xn, 1.0f);
  test_fill_normal(w, c->dtype, wn, 1.0f);
  test_fill_normal(bias, bias_dt, (size_t)c->n, 1.0f);

  tgemm_matrix xm = {x, NULL, c->dtype, TGEMM_HOST, c->m, c->k, ldx, 0};
  tgemm_matrix wm = {w, NULL, c->dtype, TGEMM_HOST, c->n, c->k, ldw, 0};
  tgemm_matrix ym = {y, NULL, c->out, TGEMM_HOST, c->m, c->n, ldy, 0};
  tgemm_matrix bm = tgemm_matrix_dense(bias, bias_dt, 1, c->n, TGEMM_HOST);
  tgemm_weight *wt = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, NULL, &wt));
  if (!wt) goto out;
  tgemm__operands ops = {&xm, wt, c->bias ? &bm : NULL, &ym, NULL};
  tgemm__shape shape = {c->m, c->n, c->k, c->dtype, c->out, c->bias != 0};
  double x_ss = test_sum_squares(x, c->dtype, c->m, c->k, ldx);
  double w_ss = test_sum_squares(w, c->dtype, c->n, c->k, ldw);
  double bias_ss = c->bias ? test_sum_squares(bias, bias_dt, 1, c->n, c->n) : 0.0;
  CHECK_OK(tgemm__cpu_reference_rows(&ops, TGEMM_ROUTE_REFERENCE, TGEMM_SCALE_EVEN, 0, c->m, ref));
  for (int s = 0; s < 4; s++) {
    int64_t i = (int64_t)(test_rand_u64() % (uint64_t)c->m);
    int64_t j = (int64_t)(test_rand_u64() % (uint64_t)c->n);
    double b = c->bias ? tgemm__load_f32(bias, (int)bias_dt, j) : 0.0;
    double want = naive(x, ldx, w, ldw, c->dtype, c->k, i, j) + b;
    CHECK(fabs(ref[i * c->n + j] - want) <= 1e-9 * (1 + fabs(want)),
          "reference (%lld,%lld) = %.17g, naive %.17g", (long long)i, (long long)j,
          ref[i * c->n + j], want);
  }

  /* Every kernel of every dense route; the skinny ones also beyond the
   * M they are offered for (run() accepts any M). */
  tgemm_route routes[] = {TGEMM_ROUTE_SKINNY, TGEMM_ROUTE_LIBRARY, TGEMM_ROUTE_REFERENCE};
  for (size_t r = 0; r < sizeof routes / sizeof routes[0]; r++) {
    if (quick && routes[r] == TGEMM_ROUTE_REFERENCE) continue;
    tgemm__kernel ks[MAX_KERNELS];
    tgemm__shape cand_shape = shape;
    if (routes[r] == TGEMM_ROUTE_SKINNY && cand_shape.m > 16) cand_shape.m = 16;
    int nk = be->candidates(ctx, &cand_shape, routes[r], ks, MAX_KERNELS);
    int expect = routes[r] == TGEMM_ROUTE_SKINNY ? 4 : 1;
    CHECK(nk == expect, "route %s: %d candidates, expected %d", tgemm_route_name(routes[r]), nk,
          expect);
    for (int i = 0; i < nk; i++) {
      test_poison(y, c->out, yn);
      tgemm_status st = be->run(ctx, &ks[i], &shape, &ops);
      char what[256];
      snprintf(what, sizeof what, "%s %s M=%lld N=%lld K=%lld out=%s bias=%d pad=%d%s",
               ks[i].name, tgemm_dtype_name(c->dtype), (long long)c->m, (long long)c->n,
               (long long)c->k, tgemm_dtype_name(c->out), c->bias, c->pad,
               tgemm__cpu_features()->avx2 ? "" : " (scalar)");
      CHECK(st == TGEMM_OK, "%s: %s: %s", what, tgemm_status_name(st), tgemm_ctx_last_error(ctx));
      if (st != TGEMM_OK) continue;
      test_check_written(y, c->out, c->m, c->n, ldy, what);
      double err = test_scaled_error(y, c->out, c->m, c->n, ldy, ref, x_ss, w_ss, bias_ss, c->k);
      CHECK(err <= tolerance(c), "%s: rel err %.3e > %.0e", what, err, tolerance(c));
    }
  }
  tgemm_weight_free(wt);
out:
  free(x);
  free(w);
  free(y);
  free(bias);
  free(ref);
}

static case_t random_case(tgemm_dtype dt, int64_t m, int64_t n, int64_t k) {
  case_t c = {dt, m, n, k, TGEMM_BF16, 0, 0};
  c.out = (test_rand_u64() & 1) ? TGEMM_F32 : TGEMM_BF16;
  c.bias = (int)(test_rand_u64() % 3);
  c.pad = (int)(test_rand_u64() % 3) * 3; /* 0, 3 or 6 */
  return c;
}

static void sweep(tgemm_ctx *ctx, tgemm_dtype dt, const int64_t *ms, int n_ms, bool quick) {
  static const int64_t ns[] = {1, 7, 33, 257};
  static const int64_t ks[] = {1, 5, 31, 33, 130, 1000};
  for (int a = 0; a < n_ms; a++)
    for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
      for (size_t d = 0; d < sizeof ks / sizeof ks[0]; d++) {
        case_t c = random_case(dt, ms[a], ns[b], ks[d]);
        run_case(ctx, &c, quick);
      }
}

/* All output/bias combinations on one shape per dtype, so none is left to
 * chance. */
static void all_epilogues(tgemm_ctx *ctx) {
  tgemm_dtype dts[] = {TGEMM_BF16, TGEMM_F16, TGEMM_F32};
  for (int d = 0; d < 3; d++)
    for (int o = 0; o < 2; o++)
      for (int b = 0; b < 3; b++) {
        case_t c = {dts[d], 5, 45, 77, o ? TGEMM_F32 : TGEMM_BF16, b, 5};
        run_case(ctx, &c, false);
        c.m = 40;
        run_case(ctx, &c, true);
      }
}

static void check_registry(tgemm_ctx *ctx) {
  const tgemm__backend *be = &tgemm__cpu_backend;
  tgemm__shape s = {4, 64, 64, TGEMM_BF16, TGEMM_BF16, false};
  tgemm__kernel k;
  CHECK(be->supports(ctx, &s, TGEMM_ROUTE_SKINNY), "skinny at M=4");
  CHECK(be->supports(ctx, &s, TGEMM_ROUTE_REFERENCE), "reference");
  CHECK(be->supports(ctx, &s, TGEMM_ROUTE_LIBRARY), "library");
  CHECK(!be->supports(ctx, &s, TGEMM_ROUTE_AUTO), "AUTO is not a route to run");
  s.m = 17;
  CHECK(!be->supports(ctx, &s, TGEMM_ROUTE_SKINNY), "skinny at M=17");
  CHECK(be->default_kernel(ctx, &s, TGEMM_ROUTE_SKINNY, &k) == TGEMM_UNSUPPORTED,
        "default skinny kernel at M=17");
  CHECK_OK(be->default_kernel(ctx, &s, TGEMM_ROUTE_LIBRARY, &k));
  CHECK(!strcmp(k.name, "cpu_openblas_sgemm"), "library default is %s", k.name);
  for (int64_t m = 1; m <= 16; m++) {
    s.m = m;
    CHECK_OK(be->default_kernel(ctx, &s, TGEMM_ROUTE_SKINNY, &k));
    CHECK(!strncmp(k.name, "cpu_skinny_bf16_r", 17) && k.route == TGEMM_ROUTE_SKINNY,
          "skinny default at M=%lld is %s", (long long)m, k.name);
  }
  s.m = 0;
  CHECK(!be->supports(ctx, &s, TGEMM_ROUTE_REFERENCE), "M=0");
  s.m = 3;
  s.out_dtype = TGEMM_F16;
  CHECK(!be->supports(ctx, &s, TGEMM_ROUTE_REFERENCE), "f16 output");

  /* A kernel known only by name (as a table may give it) resolves; an
   * unknown one is a clear error, not a crash. */
  int64_t m = 3, n = 9, kk = 40;
  uint16_t x[3 * 40], w[9 * 40];
  float y[3 * 9], y2[3 * 9];
  test_fill_normal(x, TGEMM_BF16, 3 * 40, 1.0f);
  test_fill_normal(w, TGEMM_BF16, 9 * 40, 1.0f);
  tgemm_matrix xm = tgemm_matrix_dense(x, TGEMM_BF16, m, kk, TGEMM_HOST);
  tgemm_matrix wm = tgemm_matrix_dense(w, TGEMM_BF16, n, kk, TGEMM_HOST);
  tgemm_matrix ym = tgemm_matrix_dense(y, TGEMM_F32, m, n, TGEMM_HOST);
  tgemm_matrix ym2 = tgemm_matrix_dense(y2, TGEMM_F32, m, n, TGEMM_HOST);
  tgemm_weight *wt = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, NULL, &wt));
  if (!wt) return;
  tgemm__shape sh = {m, n, kk, TGEMM_BF16, TGEMM_F32, false};
  tgemm__operands ops = {&xm, wt, NULL, &ym, NULL}, ops2 = {&xm, wt, NULL, &ym2, NULL};
  tgemm__kernel by_name;
  memset(&by_name, 0, sizeof by_name);
  by_name.route = TGEMM_ROUTE_SKINNY;
  snprintf(by_name.name, sizeof by_name.name, "cpu_skinny_bf16_r2");
  CHECK_OK(be->run(ctx, &by_name, &sh, &ops));
  CHECK_OK(be->default_kernel(ctx, &sh, TGEMM_ROUTE_SKINNY, &k));
  CHECK_OK(be->run(ctx, &k, &sh, &ops2));
  snprintf(by_name.name, sizeof by_name.name, "cpu_skinny_bf16_r3");
  CHECK_STATUS(be->run(ctx, &by_name, &sh, &ops), TGEMM_UNSUPPORTED);
  CHECK(strstr(tgemm_ctx_last_error(ctx), "cpu_skinny_bf16_r3") != NULL, "error names the kernel: %s",
        tgemm_ctx_last_error(ctx));
  /* The MXFP4 routes need the MXFP4 form: a clear error without it. */
  CHECK_OK(be->default_kernel(ctx, &sh, TGEMM_ROUTE_W4A16, &k));
  CHECK_STATUS(be->run(ctx, &k, &sh, &ops), TGEMM_UNSUPPORTED);
  tgemm_weight_free(wt);
}

static void check_services(tgemm_ctx *ctx) {
  const tgemm__backend *be = &tgemm__cpu_backend;
  tgemm__device_key key;
  be->device_key(ctx, &key);
  printf("device key: \"%s\" \"%s\" units=%d \"%s\"\n", key.device, key.arch, key.units,
         key.lib_version);
  CHECK(!strncmp(key.device, "cpu:", 4), "device %s", key.device);
  CHECK(!strncmp(key.lib_version, "openblas-0.", 11), "lib version %s", key.lib_version);
  CHECK(key.units >= 1, "units %d", key.units);
  CHECK(!strcmp(key.arch, tgemm__cpu_features()->avx2 ? "x86_64-avx2" : "x86_64"), "arch %s",
        key.arch);

  void *a = NULL, *b = NULL;
  CHECK_OK(be->alloc(ctx, 1000, &a));
  CHECK_OK(be->alloc(ctx, 1000, &b));
  if (a && b) {
    CHECK(((uintptr_t)a & 63) == 0, "alloc not 64-byte aligned");
    memset(a, 0x5a, 1000);
    for (int kind = 0; kind < 3; kind++) {
      memset(b, 0, 1000);
      CHECK_OK(be->copy(ctx, b, a, 1000, (tgemm_copy_kind)kind));
      CHECK(memcmp(a, b, 1000) == 0, "copy kind %d", kind);
    }
  }
  be->free(ctx, a);
  be->free(ctx, b);
  CHECK_OK(be->synchronize(ctx));
  double us = -1;
  CHECK_STATUS(be->timer_stop(ctx, &us), TGEMM_INVALID_ARGUMENT);
  for (int mode = TGEMM__FLUSH_NONE; mode <= TGEMM__FLUSH_DIRTY; mode++) {
    CHECK_OK(be->timer_start(ctx));
    CHECK_OK(be->flush_cache(ctx, (tgemm__flush_mode)mode));
    CHECK_OK(be->timer_stop(ctx, &us));
    printf("flush_cache %s: %.0f us\n", tgemm__flush_mode_name((tgemm__flush_mode)mode), us);
    CHECK(us > 0 && us < 5e6, "timer gave %f us", us);
  }
}

static tgemm_ctx *make_ctx(int n_threads) {
  tgemm_ctx_options opts;
  tgemm_ctx_options_default(&opts);
  opts.backend = TGEMM_BACKEND_CPU;
  opts.tuned = 0;
  opts.n_threads = n_threads;
  tgemm_ctx *ctx = NULL;
  tgemm_status st = tgemm_ctx_create(&opts, &ctx);
  CHECK(st == TGEMM_OK, "tgemm_ctx_create(%d threads): %s", n_threads, tgemm_ctx_create_error());
  return ctx;
}

/* The BLAS route in row chunks (normally only for very large M). */
static void chunked_blas(tgemm_ctx *ctx) {
  tgemm_dtype dts[] = {TGEMM_BF16, TGEMM_F16, TGEMM_F32};
  tgemm__cpu_blas_set_max_chunk_rows(37);
  for (int d = 0; d < 3; d++) {
    case_t c = random_case(dts[d], 100, 70 + d, 130);
    run_case(ctx, &c, true);
  }
  tgemm__cpu_blas_set_max_chunk_rows(0);
}

/* Shapes big enough that the kernels split rows over threads. */
static void threaded_sweep(tgemm_ctx *ctx) {
  static const int64_t ms[] = {1, 4, 11, 16, 17, 150};
  static const int64_t ns[] = {257, 1031};
  for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
    for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++) {
      case_t c = random_case(TGEMM_BF16, ms[a], ns[b], 1000 + (int64_t)b * 29);
      run_case(ctx, &c, true);
    }
}

int main(void) {
  test_seed("test_cpu_kernels");
  /* One thread for the wide sweeps: OpenMP workers busy-wait between
   * parallel regions, which makes thousands of tiny calls slow on a loaded
   * machine; the threaded split gets its own sweeps below. */
  tgemm_ctx *ctx = make_ctx(1);
  if (!ctx) return test_finish("test_cpu_kernels");
  check_services(ctx);
  check_registry(ctx);

  static const int64_t all_ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 64, 300};
  static const int64_t some_ms[] = {1, 3, 8, 16, 17, 64};
  static const int64_t few_ms[] = {1, 2, 5, 16, 19};
  printf("bf16, every M\n");
  sweep(ctx, TGEMM_BF16, all_ms, (int)(sizeof all_ms / sizeof all_ms[0]), true);
  printf("f16 and f32\n");
  sweep(ctx, TGEMM_F16, some_ms, (int)(sizeof some_ms / sizeof some_ms[0]), true);
  sweep(ctx, TGEMM_F32, some_ms, (int)(sizeof some_ms / sizeof some_ms[0]), true);
  all_epilogues(ctx);
  chunked_blas(ctx);

  /* The scalar fallbacks, on the same properties. */
  printf("scalar fallback\n");
  tgemm__cpu_features_force_scalar(true);
  sweep(ctx, TGEMM_BF16, few_ms, (int)(sizeof few_ms / sizeof few_ms[0]), true);
  sweep(ctx, TGEMM_F16, few_ms, 2, true);
  sweep(ctx, TGEMM_F32, few_ms, 2, true);
  all_epilogues(ctx);
  tgemm__cpu_features_force_scalar(false);
  tgemm_ctx_free(ctx);

  /* Two threads, and more threads than cores: the split of rows must
   * still cover every row exactly once. */
  for (int threads = 2; threads <= 3; threads++) {
    ctx = make_ctx(threads);
    if (!ctx) continue;
    printf("%d threads\n", threads);
    threaded_sweep(ctx);
    chunked_blas(ctx);
    if (threads == 2) {
      tgemm__cpu_features_force_scalar(true);
      threaded_sweep(ctx);
      tgemm__cpu_features_force_scalar(false);
    }
    tgemm_ctx_free(ctx);
  }
  return test_finish("test_cpu_kernels");
}
