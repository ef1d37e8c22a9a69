/* Property: tgemm_linear through the public API on the CPU runs every
 * route it is asked for, reports the route it took, routes automatically
 * (skinny for small M, the library GEMM above, MXFP4 never without a
 * budget) and matches the double reference within DESIGN.md §4 tolerances,
 * with the output fully written. */
#include "cpu/cpu_reference.h"
#include "test_util.h"

typedef struct {
  int64_t m, n, k;
  tgemm_dtype out;
  bool bias;
} case_t;

static void run_case(tgemm_ctx *ctx, const case_t *c) {
  size_t xs = (size_t)(c->m * c->k), ws = (size_t)(c->n * c->k), ys = (size_t)(c->m * c->n);
  uint16_t *x = malloc(xs * 2), *w = malloc(ws * 2);
  float *bias = malloc((size_t)c->n * 4);
  void *y = malloc(ys * 4);
  double *ref = malloc(ys * sizeof(double)), *ref_mx = malloc(ys * sizeof(double));
  test_fill_normal(x, TGEMM_BF16, xs, 1.0f);
  test_fill_normal(w, TGEMM_BF16, ws, 1.0f);
  test_fill_normal(bias, TGEMM_F32, (size_t)c->n, 1.0f);
  tgemm_matrix xm = tgemm_matrix_dense(x, TGEMM_BF16, c->m, c->k, TGEMM_HOST);
  tgemm_matrix wm = tgemm_matrix_dense(w, TGEMM_BF16, c->n, c->k, TGEMM_HOST);
  tgemm_matrix bm = tgemm_matrix_dense(bias, TGEMM_F32, 1, c->n, TGEMM_HOST);
  tgemm_matrix ym = tgemm_matrix_dense(y, c->out, c->m, c->n, TGEMM_HOST);
  tgemm_weight_options wo = {TGEMM_WEIGHT_MXFP4, TGEMM_SCALE_EVEN};
  tgemm_weight *wt = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, &wo, &wt));
  if (!wt) goto out;
  CHECK(tgemm_weight_has_mxfp4(wt), "no MXFP4 form");
  const tgemm_matrix *bp = c->bias ? &bm : NULL;
  tgemm__operands ops = {&xm, wt, bp, &ym, NULL};
  CHECK_OK(tgemm__cpu_reference_rows(&ops, TGEMM_ROUTE_REFERENCE, TGEMM_SCALE_EVEN, 0, c->m, ref));
  double tol = c->out == TGEMM_BF16 ? 1e-2 : 1e-5;

  for (int r = TGEMM_ROUTE_AUTO; r < TGEMM_ROUTE_COUNT; r++) {
    if (r == TGEMM_ROUTE_SKINNY && c->m > 16) continue;
    tgemm_linear_options lo;
    tgemm_linear_options_default(&lo);
    lo.route = (tgemm_route)r;
    tgemm_linear_info info;
    test_poison(y, c->out, ys);
    tgemm_status st = tgemm_linear(ctx, &xm, wt, bp, &ym, &lo, &info);
    CHECK(st == TGEMM_OK, "route %s M=%lld: %s", tgemm_route_name(lo.route), (long long)c->m,
          tgemm_ctx_last_error(ctx));
    if (st != TGEMM_OK) continue;
    if (r != TGEMM_ROUTE_AUTO)
      CHECK(info.route == (tgemm_route)r && !strcmp(info.reason, "forced"), "asked %s got %s (%s)",
            tgemm_route_name(lo.route), tgemm_route_name(info.route), info.reason);
    else
      CHECK(info.route == (c->m <= 16 ? TGEMM_ROUTE_SKINNY : TGEMM_ROUTE_LIBRARY), "auto took %s at M=%lld",
            tgemm_route_name(info.route), (long long)c->m);
    bool mx = r == TGEMM_ROUTE_W4A16 || r == TGEMM_ROUTE_W4A4;
    const double *truth = ref;
    if (mx) {
      CHECK_OK(tgemm__cpu_reference_rows(&ops, (tgemm_route)r, TGEMM_SCALE_EVEN, 0, c->m, ref_mx));
      truth = ref_mx;
    }
    double err = test_rel_error(y, c->out, c->m, c->n, c->n, truth);
    CHECK(err <= tol, "route %s (%s) M=%lld N=%lld K=%lld out=%s bias=%d: rel err %.3e > %.0e",
          tgemm_route_name(info.route), info.kernel, (long long)c->m, (long long)c->n, (long long)c->k,
          tgemm_dtype_name(c->out), c->bias, err, tol);
    if (mx && c->k >= 64 && c->n >= 32) {
      /* against the unquantized reference: the quantization error itself
       * (only meaningful with enough values to average over) */
      double qerr = test_rel_error(y, c->out, c->m, c->n, c->n, ref);
      CHECK(qerr > 0.02 && qerr < 0.4, "route %s quantization error %.3f outside any sane band",
            tgemm_route_name(info.route), qerr);
    }
  }

  /* With an error budget but no table there are no measurements, so the
   * automatic route still stays dense. */
  tgemm_linear_options lo;
  tgemm_linear_options_default(&lo);
  lo.error_budget = 0.5;
  tgemm_linear_info info;
  CHECK_OK(tgemm_linear(ctx, &xm, wt, bp, &ym, &lo, &info));
  CHECK(info.route != TGEMM_ROUTE_W4A16 && info.route != TGEMM_ROUTE_W4A4, "unmeasured MXFP4 chosen");
out:
  tgemm_weight_free(wt);
  free(x), free(w), free(bias), free(y), free(ref), free(ref_mx);
}

int main(void) {
  test_seed("test_linear_routes");
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = TGEMM_BACKEND_CPU;
  o.tuned = 0;
  tgemm_ctx *ctx = NULL;
  CHECK_OK(tgemm_ctx_create(&o, &ctx));
  CHECK(ctx != NULL, "tgemm_ctx_create succeeded without a context");
  if (!ctx) return test_finish("test_linear_routes");
  const case_t cases[] = {
      {1, 33, 64, TGEMM_BF16, false}, {3, 70, 100, TGEMM_F32, true},  {16, 129, 257, TGEMM_BF16, true},
      {17, 31, 95, TGEMM_F32, false}, {64, 200, 96, TGEMM_BF16, true}, {5, 1, 1, TGEMM_F32, true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(ctx, &cases[i]);
  tgemm_ctx_free(ctx);
  return test_finish("test_linear_routes");
}
