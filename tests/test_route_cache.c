/* Property: the router's per-context memo never changes a decision: the
 * same call routes the same way the second time, and calls that differ
 * only in the weight's forms or the forced route are told apart.  (The
 * error budget, also in the key, only matters with a table: test_tuner
 * routes with and without one.) */
#include "core/internal.h"
#include "test_util.h"

static tgemm_linear_info route_of(tgemm_ctx *ctx, tgemm_matrix *x, tgemm_weight *w, tgemm_matrix *y,
                                  tgemm_route route) {
  tgemm_linear_options lo;
  tgemm_linear_options_default(&lo);
  lo.route = route;
  tgemm_linear_info info;
  memset(&info, 0, sizeof info);
  CHECK_OK(tgemm_linear(ctx, x, w, NULL, y, &lo, &info));
  return info;
}

int main(void) {
  test_seed("test_route_cache");
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = TGEMM_BACKEND_CPU;
  o.tuned = 0;
  tgemm_ctx *ctx = NULL;
  CHECK_OK(tgemm_ctx_create(&o, &ctx));
  CHECK(ctx != NULL, "no context");
  if (!ctx) return test_finish("test_route_cache");

  enum { M = 3, N = 40, K = 96 };
  static uint16_t wd[N * K], xd[M * K];
  static uint8_t packed[N * 48], scales[N * 3];
  static float y[M * N];
  test_fill_normal(wd, TGEMM_BF16, N * K, 1.0f);
  test_fill_normal(xd, TGEMM_BF16, M * K, 1.0f);
  tgemm_matrix wm = tgemm_matrix_dense(wd, TGEMM_BF16, N, K, TGEMM_HOST);
  tgemm_matrix xm = tgemm_matrix_dense(xd, TGEMM_BF16, M, K, TGEMM_HOST);
  tgemm_matrix ym = tgemm_matrix_dense(y, TGEMM_F32, M, N, TGEMM_HOST);
  tgemm_matrix mx = tgemm_matrix_mxfp4(packed, scales, N, K, TGEMM_HOST);
  CHECK_OK(tgemm_mxfp4_quantize(ctx, &wm, &mx, TGEMM_SCALE_EVEN));

  tgemm_weight *dense = NULL, *mx_only = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, NULL, &dense));
  CHECK_OK(tgemm_weight_create(ctx, &mx, NULL, &mx_only));
  if (dense && mx_only) {
    for (int pass = 0; pass < 2; pass++) { /* pass 1 is served by the memo */
      tgemm_linear_info a = route_of(ctx, &xm, dense, &ym, TGEMM_ROUTE_AUTO);
      tgemm_linear_info b = route_of(ctx, &xm, mx_only, &ym, TGEMM_ROUTE_AUTO);
      tgemm_linear_info c = route_of(ctx, &xm, dense, &ym, TGEMM_ROUTE_LIBRARY);
      tgemm_linear_info d = route_of(ctx, &xm, dense, &ym, TGEMM_ROUTE_REFERENCE);
      CHECK(a.route == TGEMM_ROUTE_SKINNY && !strcmp(a.reason, "default"), "pass %d: dense auto took %s (%s)",
            pass, tgemm_route_name(a.route), a.reason);
      CHECK(b.route == TGEMM_ROUTE_W4A16, "pass %d: MXFP4-only auto took %s", pass, tgemm_route_name(b.route));
      CHECK(c.route == TGEMM_ROUTE_LIBRARY && !strcmp(c.reason, "forced"), "pass %d: forced library took %s",
            pass, tgemm_route_name(c.route));
      CHECK(d.route == TGEMM_ROUTE_REFERENCE, "pass %d: forced reference took %s", pass,
            tgemm_route_name(d.route));
    }
    /* A forced route that cannot run fails every time, with its message. */
    for (int pass = 0; pass < 2; pass++) {
      tgemm_linear_options lo;
      tgemm_linear_options_default(&lo);
      lo.route = TGEMM_ROUTE_W4A4;
      tgemm__clear_error(ctx); /* the message must come from this call */
      tgemm_status st = tgemm_linear(ctx, &xm, dense, NULL, &ym, &lo, NULL);
      CHECK(st != TGEMM_OK && strlen(tgemm_ctx_last_error(ctx)) > 0,
            "pass %d: forced W4A4 on a dense-only weight gave %s", pass, tgemm_status_name(st));
    }
  }
  tgemm_weight_free(dense);
  tgemm_weight_free(mx_only);
  tgemm_ctx_free(ctx);
  return test_finish("test_route_cache");
}
