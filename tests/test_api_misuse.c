/* Property: every public entry point answers bad input (NULL pointers,
 * mismatched shapes, zero or negative dims, sizes that overflow, wrong
 * dtypes or memory, bad options) with a status and a message, never a
 * crash. */
#include "test_util.h"

static tgemm_ctx *cpu_ctx(void) {
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = TGEMM_BACKEND_CPU;
  o.tuned = 0;
  tgemm_ctx *ctx = NULL;
  CHECK_OK(tgemm_ctx_create(&o, &ctx));
  CHECK(ctx != NULL, "tgemm_ctx_create succeeded without a context");
  return ctx;
}

static void test_names(void) {
  CHECK(strcmp(tgemm_status_name(TGEMM_SHAPE_MISMATCH), "TGEMM_SHAPE_MISMATCH") == 0, "status name");
  CHECK(strcmp(tgemm_status_str((tgemm_status)-999), "unknown status") == 0, "unknown status string");
  CHECK(tgemm_version() == TGEMM_VERSION_HEX, "version");
  tgemm_route r;
  tgemm_dtype d;
  tgemm_scale_mode s;
  CHECK_STATUS(tgemm_route_parse("w4a16", &r), TGEMM_OK);
  CHECK(r == TGEMM_ROUTE_W4A16, "route parse");
  CHECK_STATUS(tgemm_route_parse("fast", &r), TGEMM_INVALID_ARGUMENT);
  CHECK_STATUS(tgemm_route_parse(NULL, &r), TGEMM_INVALID_ARGUMENT);
  CHECK_STATUS(tgemm_dtype_parse("bf16", NULL), TGEMM_NULL_POINTER);
  CHECK_STATUS(tgemm_dtype_parse("f64", &d), TGEMM_INVALID_ARGUMENT);
  CHECK_STATUS(tgemm_scale_mode_parse("rceil", &s), TGEMM_OK);
  CHECK(s == TGEMM_SCALE_RCEIL, "scale mode parse");
  CHECK(strcmp(tgemm_route_name((tgemm_route)77), "invalid-route") == 0, "bad route name");
}

static void test_ctx(void) {
  CHECK_STATUS(tgemm_ctx_create(NULL, NULL), TGEMM_NULL_POINTER);
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.error_budget = -1;
  tgemm_ctx *ctx = (tgemm_ctx *)&o; /* must be reset to NULL on failure */
  CHECK_STATUS(tgemm_ctx_create(&o, &ctx), TGEMM_INVALID_ARGUMENT);
  CHECK(ctx == NULL, "ctx not reset on failure");
  CHECK(strlen(tgemm_ctx_create_error()) > 0, "no create error message");
  tgemm_ctx_options_default(&o);
  o.backend = (tgemm_backend_kind)9;
  CHECK_STATUS(tgemm_ctx_create(&o, &ctx), TGEMM_INVALID_ARGUMENT);
  tgemm_ctx_free(NULL);
  CHECK(tgemm_ctx_last_error(NULL) != NULL, "last_error(NULL)");
  CHECK_STATUS(tgemm_synchronize(NULL), TGEMM_NULL_POINTER);
}

static void test_memory(tgemm_ctx *ctx) {
  void *p = (void *)1;
  CHECK_STATUS(tgemm_malloc(ctx, 0, &p), TGEMM_INVALID_ARGUMENT);
  CHECK_STATUS(tgemm_malloc(ctx, 16, NULL), TGEMM_NULL_POINTER);
  CHECK_STATUS(tgemm_malloc(NULL, 16, &p), TGEMM_NULL_POINTER);
  CHECK_STATUS(tgemm_malloc(ctx, (size_t)1 << 62, &p), TGEMM_OUT_OF_MEMORY);
  CHECK(strlen(tgemm_ctx_last_error(ctx)) > 0, "no message for a failed allocation");
  char a[4], b[4];
  CHECK_STATUS(tgemm_memcpy(ctx, NULL, b, 4, TGEMM_COPY_HOST_TO_DEVICE), TGEMM_NULL_POINTER);
  CHECK_STATUS(tgemm_memcpy(ctx, a, b, 4, (tgemm_copy_kind)7), TGEMM_INVALID_ARGUMENT);
  tgemm_free(ctx, NULL);
}

static void test_weight(tgemm_ctx *ctx) {
  uint16_t data[6 * 40];
  test_fill_normal(data, TGEMM_BF16, 6 * 40, 1.0f);
  tgemm_weight *w = (tgemm_weight *)data;
  tgemm_matrix m = tgemm_matrix_dense(data, TGEMM_BF16, 6, 40, TGEMM_HOST);
  CHECK_STATUS(tgemm_weight_create(ctx, NULL, NULL, &w), TGEMM_NULL_POINTER);
  CHECK(w == NULL, "weight not reset");
  CHECK_STATUS(tgemm_weight_create(ctx, &m, NULL, NULL), TGEMM_NULL_POINTER);
  CHECK_STATUS(tgemm_weight_create(NULL, &m, NULL, &w), TGEMM_NULL_POINTER);
  tgemm_matrix bad = m;
  bad.data = NULL;
  CHECK_STATUS(tgemm_weight_create(ctx, &bad, NULL, &w), TGEMM_NULL_POINTER);
  CHECK(strstr(tgemm_ctx_last_error(ctx), "NULL") != NULL, "message: %s", tgemm_ctx_last_error(ctx));
  bad = m;
  bad.rows = 0;
  CHECK_STATUS(tgemm_weight_create(ctx, &bad, NULL, &w), TGEMM_INVALID_ARGUMENT);
  bad = m;
  bad.cols = -3;
  CHECK_STATUS(tgemm_weight_create(ctx, &bad, NULL, &w), TGEMM_INVALID_ARGUMENT);
  bad = m;
  bad.ld = 39;
  CHECK_STATUS(tgemm_weight_create(ctx, &bad, NULL, &w), TGEMM_INVALID_ARGUMENT);
  bad = m;
  bad.rows = INT64_MAX / 2;
  bad.ld = 1 << 20;
  CHECK_STATUS(tgemm_weight_create(ctx, &bad, NULL, &w), TGEMM_OVERFLOW);
  bad = m;
  bad.dtype = (tgemm_dtype)42;
  CHECK_STATUS(tgemm_weight_create(ctx, &bad, NULL, &w), TGEMM_INVALID_ARGUMENT);
  bad = m;
  bad.location = TGEMM_DEVICE;
  CHECK_STATUS(tgemm_weight_create(ctx, &bad, NULL, &w), TGEMM_INVALID_ARGUMENT);
  tgemm_weight_options wo = {0x80, TGEMM_SCALE_EVEN};
  CHECK_STATUS(tgemm_weight_create(ctx, &m, &wo, &w), TGEMM_INVALID_ARGUMENT);
  tgemm_matrix mx = tgemm_matrix_mxfp4(data, NULL, 6, 40, TGEMM_HOST);
  CHECK_STATUS(tgemm_weight_create(ctx, &mx, NULL, &w), TGEMM_NULL_POINTER);
  CHECK(w == NULL, "weight set on failure");
  tgemm_weight_free(NULL);
}

static void test_linear(tgemm_ctx *ctx) {
  enum { M = 3, N = 6, K = 40 };
  uint16_t wdata[N * K], xdata[M * K];
  float y[M * N], bias[N];
  test_fill_normal(wdata, TGEMM_BF16, N * K, 1.0f);
  test_fill_normal(xdata, TGEMM_BF16, M * K, 1.0f);
  test_fill_normal(bias, TGEMM_F32, N, 1.0f);
  tgemm_matrix wm = tgemm_matrix_dense(wdata, TGEMM_BF16, N, K, TGEMM_HOST);
  tgemm_weight *w = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, NULL, &w));
  if (!w) return;
  tgemm_matrix x = tgemm_matrix_dense(xdata, TGEMM_BF16, M, K, TGEMM_HOST);
  tgemm_matrix ym = tgemm_matrix_dense(y, TGEMM_F32, M, N, TGEMM_HOST);
  tgemm_matrix b = tgemm_matrix_dense(bias, TGEMM_F32, 1, N, TGEMM_HOST);

  CHECK_STATUS(tgemm_linear(NULL, &x, w, NULL, &ym, NULL, NULL), TGEMM_NULL_POINTER);
  CHECK_STATUS(tgemm_linear(ctx, NULL, w, NULL, &ym, NULL, NULL), TGEMM_NULL_POINTER);
  CHECK_STATUS(tgemm_linear(ctx, &x, NULL, NULL, &ym, NULL, NULL), TGEMM_NULL_POINTER);
  CHECK_STATUS(tgemm_linear(ctx, &x, w, NULL, NULL, NULL, NULL), TGEMM_NULL_POINTER);

  tgemm_matrix bad = x;
  bad.cols = K - 1;
  CHECK_STATUS(tgemm_linear(ctx, &bad, w, NULL, &ym, NULL, NULL), TGEMM_SHAPE_MISMATCH);
  CHECK(strstr(tgemm_ctx_last_error(ctx), "x is 3 x 39") != NULL, "message: %s", tgemm_ctx_last_error(ctx));
  bad = ym;
  bad.rows = M + 1;
  CHECK_STATUS(tgemm_linear(ctx, &x, w, NULL, &bad, NULL, NULL), TGEMM_SHAPE_MISMATCH);
  bad = ym;
  bad.dtype = TGEMM_F16;
  CHECK_STATUS(tgemm_linear(ctx, &x, w, NULL, &bad, NULL, NULL), TGEMM_INVALID_ARGUMENT);
  bad = x;
  bad.dtype = TGEMM_F32;
  CHECK_STATUS(tgemm_linear(ctx, &bad, w, NULL, &ym, NULL, NULL), TGEMM_INVALID_ARGUMENT);
  bad = x;
  bad.rows = 0;
  CHECK_STATUS(tgemm_linear(ctx, &bad, w, NULL, &ym, NULL, NULL), TGEMM_INVALID_ARGUMENT);
  bad = x;
  bad.rows = INT64_MAX;
  CHECK_STATUS(tgemm_linear(ctx, &bad, w, NULL, &ym, NULL, NULL), TGEMM_OVERFLOW);
  bad = b;
  bad.cols = N - 1;
  CHECK_STATUS(tgemm_linear(ctx, &x, w, &bad, &ym, NULL, NULL), TGEMM_SHAPE_MISMATCH);
  bad = b;
  bad.dtype = TGEMM_F16;
  CHECK_STATUS(tgemm_linear(ctx, &x, w, &bad, &ym, NULL, NULL), TGEMM_INVALID_ARGUMENT);

  tgemm_linear_options lo;
  tgemm_linear_options_default(&lo);
  lo.route = (tgemm_route)99;
  CHECK_STATUS(tgemm_linear(ctx, &x, w, NULL, &ym, &lo, NULL), TGEMM_INVALID_ARGUMENT);
  lo.route = TGEMM_ROUTE_W4A16; /* the weight has no MXFP4 form */
  tgemm_status st = tgemm_linear(ctx, &x, w, NULL, &ym, &lo, NULL);
  CHECK(st != TGEMM_OK, "forced W4A16 on a dense-only weight succeeded");
  lo.route = TGEMM_ROUTE_SKINNY;
  lo.kernel = "no_such_kernel";
  st = tgemm_linear(ctx, &x, w, NULL, &ym, &lo, NULL);
  CHECK(st != TGEMM_OK, "unknown kernel name accepted");

  /* A weight from another context is refused. */
  tgemm_ctx *other = cpu_ctx();
  if (other) {
    tgemm_status s2 = tgemm_linear(other, &x, w, NULL, &ym, NULL, NULL);
    CHECK(s2 == TGEMM_INVALID_ARGUMENT, "foreign weight: %s", tgemm_status_name(s2));
    tgemm_ctx_free(other);
  }

  /* And the good call works and writes every element. */
  test_poison(y, TGEMM_F32, M * N);
  tgemm_linear_info info;
  CHECK_OK(tgemm_linear(ctx, &x, w, &b, &ym, NULL, &info));
  for (int i = 0; i < M * N; i++) CHECK(isfinite(y[i]), "y[%d] not written", i);
  tgemm_weight_free(w);
}

static void test_quantize_api(tgemm_ctx *ctx) {
  float src[2 * 33];
  uint8_t packed[2 * 32], scales[2 * 2];
  test_fill_normal(src, TGEMM_F32, 66, 1.0f);
  tgemm_matrix s = tgemm_matrix_dense(src, TGEMM_F32, 2, 33, TGEMM_HOST);
  tgemm_matrix q = tgemm_matrix_mxfp4(packed, scales, 2, 33, TGEMM_HOST);
  CHECK_OK(tgemm_mxfp4_quantize(ctx, &s, &q, TGEMM_SCALE_EVEN));
  CHECK_STATUS(tgemm_mxfp4_quantize(ctx, &s, &q, (tgemm_scale_mode)5), TGEMM_INVALID_ARGUMENT);
  CHECK_STATUS(tgemm_mxfp4_quantize(ctx, &s, &s, TGEMM_SCALE_EVEN), TGEMM_INVALID_ARGUMENT);
  tgemm_matrix q2 = tgemm_matrix_mxfp4(packed, scales, 2, 32, TGEMM_HOST);
  CHECK_STATUS(tgemm_mxfp4_quantize(ctx, &s, &q2, TGEMM_SCALE_EVEN), TGEMM_SHAPE_MISMATCH);
  CHECK_STATUS(tgemm_mxfp4_quantize(NULL, &s, &q, TGEMM_SCALE_EVEN), TGEMM_NULL_POINTER);
  CHECK_STATUS(tgemm_mxfp4_dequantize(ctx, &q, NULL), TGEMM_NULL_POINTER);
  CHECK_OK(tgemm_mxfp4_dequantize(ctx, &q, &s));
}

int main(void) {
  test_seed("test_api_misuse");
  test_names();
  test_ctx();
  tgemm_ctx *ctx = cpu_ctx();
  if (ctx) {
    test_memory(ctx);
    test_weight(ctx);
    test_linear(ctx);
    test_quantize_api(ctx);
    tgemm_ctx_free(ctx);
  }
  return test_finish("test_api_misuse");
}
