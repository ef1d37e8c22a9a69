/* Every GPU kernel variant against a double-precision reference on the
 * host: each candidate of each route (reference, library, skinny, w4a16,
 * w4a4) is called explicitly, on fresh random inputs, into NaN-poisoned
 * outputs, over M = 1..17 and a few hundred/thousand rows, N and K that are
 * not multiples of 8/16/32 (and a few tall decode shapes, N up to 6500), with
 * and without bias (y's dtype or f32), and both output dtypes.  MXFP4 routes
 * are compared with the exact product of the dequantized operands at the
 * dense tolerances (DESIGN.md §4); their
 * error against the unquantized product is printed, not tested.  The GPU
 * MXFP4 quantizer and dequantizer must match the CPU reference byte for
 * byte in all three scale modes.
 *
 * TGEMM_TEST_QUICK=1 runs a reduced shape set (for compute-sanitizer);
 * TGEMM_TEST_ROUTES=library,w4a4,quant (say) runs only those routes and
 * the quantizer checks, so that a kernel that faults cannot hide the
 * others behind a dead CUDA context.
 * Exit 77 when there is no usable GPU. */
#include "test_util.h"

#ifdef TGEMM_HAVE_CUDA

#include <cuda_runtime_api.h>

#include "core/internal.h"
#include "cuda/cuda_backend.h"
#include "cuda/mxfp4_pair.cuh"


typedef struct test_case {
  int64_t m, n, k;
  tgemm_dtype x_dtype, y_dtype;
  int bias;      /* 0 none, 1 y's dtype, 2 f32 */
  float w_sigma; /* W ~ N(0, w_sigma²) */
} test_case;

typedef struct route_stats {
  long runs;
  int shapes_with_kernels, shapes_without;
  double max_err[2];   /* [y bf16, y f32] against the route's exact reference */
  double max_qerr;     /* MXFP4 routes: against the unquantized product */
} route_stats;

static route_stats stats[TGEMM_ROUTE_COUNT];
static tgemm_ctx *ctxs[3]; /* one per scale mode: activations and weights use it */
static bool quick;         /* TGEMM_TEST_QUICK=1: fewer shapes and cuBLASLt algos */
static const char *only;   /* TGEMM_TEST_ROUTES, or NULL for all */

/* Is a part ("library", "quant", ...) selected by TGEMM_TEST_ROUTES? */
static bool selected(const char *part) {
  if (!only) return true;
  size_t len = strlen(part);
  for (const char *p = only; (p = strstr(p, part)) != NULL; p += len)
    if ((p == only || p[-1] == ',') && (p[len] == '\0' || p[len] == ','))
      return true;
  return false;
}

static double tolerance(tgemm_dtype y) { return y == TGEMM_BF16 ? 1e-2 : 1e-5; }

static void *upload(tgemm_ctx *ctx, const void *host, size_t bytes) {
  void *dev = NULL;
  CHECK_OK(tgemm_malloc(ctx, bytes, &dev));
  if (dev) CHECK_OK(tgemm_memcpy(ctx, dev, host, bytes, TGEMM_COPY_HOST_TO_DEVICE));
  return dev;
}

/* y = x·wᵀ + bias in double; x [m,k], w [n,k], bias [n] or NULL. */
static void ref_gemm(const double *x, const double *w, const double *bias, int64_t m, int64_t n,
                     int64_t k, double *out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double acc = 0;
      const double *xr = x + i * k, *wr = w + j * k;
      for (int64_t p = 0; p < k; p++) acc += xr[p] * wr[p];
      out[i * n + j] = acc + (bias ? bias[j] : 0.0);
    }
}

/* rows x cols of dtype (row stride ld) as doubles [rows, cols]. */
static double *to_double(const void *src, tgemm_dtype dtype, int64_t rows, int64_t cols,
                         int64_t ld) {
  double *out = malloc(sizeof(double) * (size_t)(rows * cols));
  size_t es = tgemm_dtype_size(dtype);
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++)
      out[i * cols + j] = tgemm__load_f32((const char *)src + (size_t)(i * ld) * es, dtype, j);
  return out;
}

/* Quantize then dequantize each row with the CPU reference; optionally keep
 * the packed bytes and scales. */
static double *mx_roundtrip(const double *v, int64_t rows, int64_t cols, tgemm_scale_mode mode,
                            uint8_t *packed_out, uint8_t *scales_out) {
  int64_t pc = tgemm_mxfp4_packed_cols(cols), sc = tgemm_mxfp4_scale_cols(cols);
  double *out = malloc(sizeof(double) * (size_t)(rows * cols));
  float *row = malloc(sizeof(float) * (size_t)cols);
  float *deq = malloc(sizeof(float) * (size_t)cols);
  uint8_t *packed = malloc((size_t)pc), *scales = malloc((size_t)sc);
  for (int64_t i = 0; i < rows; i++) {
    for (int64_t j = 0; j < cols; j++) row[j] = (float)v[i * cols + j]; /* exact */
    tgemm_mxfp4_quantize_row_ref(row, cols, packed, scales, mode);
    tgemm_mxfp4_dequantize_row_ref(packed, scales, cols, deq);
    for (int64_t j = 0; j < cols; j++) out[i * cols + j] = deq[j];
    if (packed_out) memcpy(packed_out + i * pc, packed, (size_t)pc);
    if (scales_out) memcpy(scales_out + i * sc, scales, (size_t)sc);
  }
  free(row);
  free(deq);
  free(packed);
  free(scales);
  return out;
}

static const char *bias_name(int bias) { return bias == 0 ? "none" : bias == 1 ? "y" : "f32"; }

/* Run every candidate of one route; compare with ref (and qref = the
 * unquantized product, for the MXFP4 routes' printed error). */
static void run_route(tgemm_ctx *ctx, tgemm_route route, const test_case *tc,
                      const tgemm__operands *ops, const double *ref, const double *qref,
                      void *y_poison_host, size_t y_bytes, void *y_host) {
  tgemm__shape shape = {tc->m, tc->n, tc->k, tc->x_dtype, tc->y_dtype, tc->bias != 0};
  tgemm__kernel cands[TGEMM__MAX_CANDIDATES];
  int n = ctx->backend->candidates(ctx, &shape, route, cands, TGEMM__MAX_CANDIDATES);
  CHECK(n >= 0, "candidates(%s) failed: %s", tgemm_route_name(route), tgemm_ctx_last_error(ctx));
  route_stats *rs = &stats[route];
  if (!selected(tgemm_route_name(route))) return;
  if (quick && route == TGEMM_ROUTE_LIBRARY && n > 8) n = 8; /* NVIDIA's own kernels */
  if (n <= 0) {
    rs->shapes_without++;
    return;
  }
  rs->shapes_with_kernels++;
  uint64_t fallbacks = tgemm__cuda_lt_fallbacks(ctx);
  for (int c = 0; c < n; c++) {
    CHECK(cands[c].route == route, "kernel %s has route %d", cands[c].name, (int)cands[c].route);
    CHECK_OK(tgemm_memcpy(ctx, ops->y->data, y_poison_host, y_bytes, TGEMM_COPY_HOST_TO_DEVICE));
    tgemm_status st = ctx->backend->run(ctx, &cands[c], &shape, ops);
    CHECK(st == TGEMM_OK, "%s M=%lld N=%lld K=%lld: %s", cands[c].name, (long long)tc->m,
          (long long)tc->n, (long long)tc->k, tgemm_ctx_last_error(ctx));
    if (st != TGEMM_OK) continue;
    tgemm_status cs = tgemm_memcpy(ctx, y_host, ops->y->data, y_bytes, TGEMM_COPY_DEVICE_TO_HOST);
    CHECK(cs == TGEMM_OK, "after %s: %s", cands[c].name, tgemm_ctx_last_error(ctx));
    if (cs != TGEMM_OK) {
      test_failures++;
      fprintf(stderr, "a CUDA error left the device unusable; stopping\n");
      exit(test_finish("test_cuda_kernels"));
    }
    rs->runs++;
    double err = test_rel_error(y_host, tc->y_dtype, tc->m, tc->n, tc->n, ref);
    int slot = tc->y_dtype == TGEMM_F32;
    if (err > rs->max_err[slot] || isnan(err)) rs->max_err[slot] = err;
    CHECK(err <= tolerance(tc->y_dtype),
          "%s (%s) M=%lld N=%lld K=%lld x %s y %s bias %s: rel error %.3g > %.0e", cands[c].name,
          tgemm_route_name(route), (long long)tc->m, (long long)tc->n, (long long)tc->k,
          tgemm_dtype_name(tc->x_dtype), tgemm_dtype_name(tc->y_dtype), bias_name(tc->bias), err,
          tolerance(tc->y_dtype));
    if (qref) {
      double qerr = test_rel_error(y_host, tc->y_dtype, tc->m, tc->n, tc->n, qref);
      if (qerr > rs->max_qerr) rs->max_qerr = qerr;
      /* Again, bit for bit: the MXFP4 decode kernels sum in a fixed order,
       * split ones included, so no run may depend on timing or on state a
       * previous run left. */
      void *again = malloc(y_bytes);
      CHECK_OK(tgemm_memcpy(ctx, ops->y->data, y_poison_host, y_bytes, TGEMM_COPY_HOST_TO_DEVICE));
      CHECK_OK(ctx->backend->run(ctx, &cands[c], &shape, ops));
      CHECK_OK(tgemm_memcpy(ctx, again, ops->y->data, y_bytes, TGEMM_COPY_DEVICE_TO_HOST));
      CHECK(memcmp(again, y_host, y_bytes) == 0, "%s M=%lld N=%lld K=%lld: a second run differs",
            cands[c].name, (long long)tc->m, (long long)tc->n, (long long)tc->k);
      free(again);
    }
  }
  /* Each cuBLASLt candidate ran as itself, not as the heuristic's choice,
   * except with an f32 bias on bf16 x and y: candidates describe a bias of
   * y's dtype, and an f32 one stages the output (see cublaslt_gemm.h). */
  bool bias_staged = tc->bias == 2 && tc->x_dtype == TGEMM_BF16 && tc->y_dtype == TGEMM_BF16;
  if (route == TGEMM_ROUTE_LIBRARY && !bias_staged)
    CHECK(tgemm__cuda_lt_fallbacks(ctx) == fallbacks,
          "%llu cuBLASLt candidate run(s) fell back to the heuristic's algorithm (M=%lld N=%lld "
          "K=%lld)",
          (unsigned long long)(tgemm__cuda_lt_fallbacks(ctx) - fallbacks), (long long)tc->m,
          (long long)tc->n, (long long)tc->k);
}

/* The weight's MXFP4 bytes again, at leading dimensions (packed + 8,
 * scales + 3) and a scale pointer (+1) that the aligned kernels cannot
 * take: every W4A16 candidate must still give the exact product, the
 * streaming ones through their scalar-load fallback. */
static void check_w4a16_misaligned(tgemm_ctx *ctx, const test_case *tc, const tgemm__operands *ops,
                                   const uint8_t *packed, const uint8_t *scales, const double *ref,
                                   const double *qref, void *y_poison, size_t y_bytes,
                                   void *y_host) {
  const int64_t n = tc->n, pc = tgemm_mxfp4_packed_cols(tc->k), sc = tgemm_mxfp4_scale_cols(tc->k);
  const int64_t pld = pc + 8, sld = sc + 3;
  uint8_t *p_host = calloc((size_t)(n * pld), 1), *s_host = calloc((size_t)(n * sld + 1), 1);
  for (int64_t i = 0; i < n; i++) {
    memcpy(p_host + i * pld, packed + i * pc, (size_t)pc);
    memcpy(s_host + 1 + i * sld, scales + i * sc, (size_t)sc);
  }
  uint8_t *p_dev = upload(ctx, p_host, (size_t)(n * pld));
  uint8_t *s_dev = upload(ctx, s_host, (size_t)(n * sld + 1));
  struct tgemm_weight odd = *ops->w;
  odd.has_dense = false;
  odd.owns_mxfp4 = false;
  odd.backend_data = NULL; /* borrowed: the standard nibble order */
  odd.mxfp4.data = p_dev;
  odd.mxfp4.ld = pld;
  odd.mxfp4.scales = s_dev + 1;
  odd.mxfp4.scales_ld = sld;
  tgemm__operands odd_ops = *ops;
  odd_ops.w = &odd;
  printf("         the same weight at packed ld %lld, scales ld %lld, scales + 1 byte\n",
         (long long)pld, (long long)sld);
  run_route(ctx, TGEMM_ROUTE_W4A16, tc, &odd_ops, ref, qref, y_poison, y_bytes, y_host);
  tgemm_free(ctx, p_dev);
  tgemm_free(ctx, s_dev);
  free(p_host);
  free(s_host);
}

static void run_case(const test_case *tc, int index) {
  tgemm_scale_mode mode = (tgemm_scale_mode)(index % 3);
  tgemm_ctx *ctx = ctxs[mode];
  const int64_t m = tc->m, n = tc->n, k = tc->k;
  size_t xs = tgemm_dtype_size(tc->x_dtype), ys = tgemm_dtype_size(tc->y_dtype);
  tgemm_dtype bias_dtype = tc->bias == 2 ? TGEMM_F32 : tc->y_dtype;

  void *x_host = malloc((size_t)(m * k) * xs), *w_host = malloc((size_t)(n * k) * xs);
  void *b_host = malloc((size_t)n * 4);
  test_fill_normal(x_host, tc->x_dtype, (size_t)(m * k), 1.0f);
  test_fill_normal(w_host, tc->x_dtype, (size_t)(n * k), tc->w_sigma);
  test_fill_normal(b_host, bias_dtype, (size_t)n, 1.0f);

  void *x_dev = upload(ctx, x_host, (size_t)(m * k) * xs);
  void *w_dev = upload(ctx, w_host, (size_t)(n * k) * xs);
  void *b_dev = tc->bias ? upload(ctx, b_host, (size_t)n * tgemm_dtype_size(bias_dtype)) : NULL;
  void *y_dev = NULL;
  size_t y_bytes = (size_t)(m * n) * ys;
  CHECK_OK(tgemm_malloc(ctx, y_bytes, &y_dev));

  tgemm_matrix x = tgemm_matrix_dense(x_dev, tc->x_dtype, m, k, TGEMM_DEVICE);
  tgemm_matrix wm = tgemm_matrix_dense(w_dev, tc->x_dtype, n, k, TGEMM_DEVICE);
  tgemm_matrix bias = tgemm_matrix_dense(b_dev, bias_dtype, 1, n, TGEMM_DEVICE);
  tgemm_matrix y = tgemm_matrix_dense(y_dev, tc->y_dtype, m, n, TGEMM_DEVICE);
  tgemm_weight_options wopt = {TGEMM_WEIGHT_MXFP4, mode};
  tgemm_weight *weight = NULL;
  tgemm_status wst = tgemm_weight_create(ctx, &wm, &wopt, &weight);
  CHECK(wst == TGEMM_OK, "tgemm_weight_create: %s", tgemm_ctx_last_error(ctx));
  if (wst != TGEMM_OK) exit(test_finish("test_cuda_kernels"));

  double *xd = to_double(x_host, tc->x_dtype, m, k, k);
  double *wd = to_double(w_host, tc->x_dtype, n, k, k);
  double *bd = tc->bias ? to_double(b_host, bias_dtype, 1, n, n) : NULL;
  double *ref = malloc(sizeof(double) * (size_t)(m * n));
  ref_gemm(xd, wd, bd, m, n, k, ref);

  void *y_host = malloc(y_bytes), *y_poison = malloc(y_bytes);
  test_poison(y_poison, tc->y_dtype, (size_t)(m * n));
  tgemm__operands ops = {&x, weight, tc->bias ? &bias : NULL, &y, NULL};

  printf("case %2d: M=%-4lld N=%-4lld K=%-4lld x %-4s y %-4s bias %-4s mode %s%s\n", index,
         (long long)m, (long long)n, (long long)k, tgemm_dtype_name(tc->x_dtype),
         tgemm_dtype_name(tc->y_dtype), bias_name(tc->bias), tgemm_scale_mode_name(mode),
         tc->w_sigma != 1.0f ? " (W scaled)" : "");
  fflush(stdout);
  run_route(ctx, TGEMM_ROUTE_REFERENCE, tc, &ops, ref, NULL, y_poison, y_bytes, y_host);
  run_route(ctx, TGEMM_ROUTE_LIBRARY, tc, &ops, ref, NULL, y_poison, y_bytes, y_host);
  run_route(ctx, TGEMM_ROUTE_SKINNY, tc, &ops, ref, NULL, y_poison, y_bytes, y_host);

  CHECK(weight->has_mxfp4, "the weight has no MXFP4 form");
  if (weight->has_mxfp4) {
    /* The weight's GPU-quantized bytes must be the CPU reference's, in the
     * paired nibble order the backend keeps owned weights in. */
    int64_t pc = tgemm_mxfp4_packed_cols(k), sc = tgemm_mxfp4_scale_cols(k);
    uint8_t *packed_ref = malloc((size_t)(n * pc)), *scales_ref = malloc((size_t)(n * sc));
    /* Owned scale rows are padded to 16 bytes (see weight.c); compare the used bytes. */
    const int64_t sld = (sc + 15) / 16 * 16;
    uint8_t *packed_gpu = malloc((size_t)(n * pc)), *scales_gpu = malloc((size_t)(n * sld));
    double *wq = mx_roundtrip(wd, n, k, mode, packed_ref, scales_ref);
    CHECK(weight->mxfp4.ld == pc && weight->mxfp4.scales_ld == sld,
          "MXFP4 weight strides %lld, %lld (want %lld, %lld)", (long long)weight->mxfp4.ld,
          (long long)weight->mxfp4.scales_ld, (long long)pc, (long long)sld);
    CHECK_OK(tgemm_memcpy(ctx, packed_gpu, weight->mxfp4.data, (size_t)(n * pc),
                          TGEMM_COPY_DEVICE_TO_HOST));
    CHECK_OK(tgemm_memcpy(ctx, scales_gpu, weight->mxfp4.scales, (size_t)(n * sld),
                          TGEMM_COPY_DEVICE_TO_HOST));
    uint8_t *paired_ref = malloc((size_t)(n * pc));
    for (int64_t i = 0; i < n * pc; i += 4) {
      uint32_t word;
      memcpy(&word, packed_ref + i, 4);
      word = tgemm__mxfp4_pair_word(word);
      memcpy(paired_ref + i, &word, 4);
    }
    CHECK(memcmp(packed_gpu, paired_ref, (size_t)(n * pc)) == 0,
          "weight MXFP4 codes differ from the CPU reference, paired (N=%lld K=%lld mode %s)",
          (long long)n, (long long)k, tgemm_scale_mode_name(mode));
    int64_t bad_row = -1;
    for (int64_t i = 0; i < n && bad_row < 0; i++)
      if (memcmp(scales_gpu + i * sld, scales_ref + i * sc, (size_t)sc) != 0) bad_row = i;
    CHECK(bad_row < 0,
          "weight MXFP4 scales differ from the CPU reference in row %lld (N=%lld K=%lld mode %s)",
          (long long)bad_row, (long long)n, (long long)k, tgemm_scale_mode_name(mode));

    double *ref16 = malloc(sizeof(double) * (size_t)(m * n));
    ref_gemm(xd, wq, bd, m, n, k, ref16);
    run_route(ctx, TGEMM_ROUTE_W4A16, tc, &ops, ref16, ref, y_poison, y_bytes, y_host);
    if (m <= 16 && sc % 4 == 0) check_w4a16_misaligned(ctx, tc, &ops, packed_ref, scales_ref,
                                                         ref16, ref, y_poison, y_bytes, y_host);

    /* The same codes lent in the standard order (a borrowed MXFP4 weight):
     * every MXFP4 kernel reads both orders. */
    uint8_t *std_dev = upload(ctx, packed_ref, (size_t)(n * pc));
    struct tgemm_weight lent = *weight;
    lent.has_dense = false;
    lent.owns_mxfp4 = false;
    lent.backend_data = NULL;
    lent.mxfp4.data = std_dev;
    tgemm__operands lent_ops = ops;
    lent_ops.w = &lent;
    printf("         the same codes lent in the standard nibble order\n");
    run_route(ctx, TGEMM_ROUTE_W4A16, tc, &lent_ops, ref16, ref, y_poison, y_bytes, y_host);

    /* The reference route on a weight given only in MXFP4. */
    struct tgemm_weight mx_only = *weight;
    mx_only.has_dense = false;
    mx_only.owns_mxfp4 = false;
    tgemm__operands mx_ops = ops;
    mx_ops.w = &mx_only;
    run_route(ctx, TGEMM_ROUTE_REFERENCE, tc, &mx_ops, ref16, NULL, y_poison, y_bytes, y_host);

    double *xq = mx_roundtrip(xd, m, k, mode, NULL, NULL);
    double *ref4 = malloc(sizeof(double) * (size_t)(m * n));
    ref_gemm(xq, wq, bd, m, n, k, ref4);
    run_route(ctx, TGEMM_ROUTE_W4A4, tc, &ops, ref4, ref, y_poison, y_bytes, y_host);
    run_route(ctx, TGEMM_ROUTE_W4A4, tc, &lent_ops, ref4, ref, y_poison, y_bytes, y_host);
    run_route(ctx, TGEMM_ROUTE_REFERENCE, tc, &lent_ops, ref16, NULL, y_poison, y_bytes, y_host);
    tgemm_free(ctx, std_dev);
    free(paired_ref);
    free(xq);
    free(ref4);
    free(ref16);
    free(wq);
    free(packed_ref);
    free(scales_ref);
    free(packed_gpu);
    free(scales_gpu);
  }

  tgemm_weight_free(weight);
  tgemm_free(ctx, x_dev);
  tgemm_free(ctx, w_dev);
  tgemm_free(ctx, b_dev);
  tgemm_free(ctx, y_dev);
  free(x_host);
  free(w_host);
  free(b_host);
  free(y_host);
  free(y_poison);
  free(xd);
  free(wd);
  free(bd);
  free(ref);
}

/* ------------------------------------------------------- GPU quantizer */

/* Values that stress the scale rules: ordinary blocks at many exponents,
 * zeros with signs, NaN/Inf, E2M1 midpoints (ties), amax with significand
 * at the 1.75 and 1.5 boundaries, huge and tiny magnitudes. */
static float special_value(int kind, int j) {
  static const float mids[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  float sign = (test_rand_u64() & 1) ? -1.0f : 1.0f;
  switch (kind) {
    case 0: return test_rand_normal() * ldexpf(1.0f, (int)(test_rand_u64() % 41) - 20);
    case 1: return sign * 0.0f;
    case 2: return j == 5 ? NAN : test_rand_normal();
    case 3: return j == 9 ? sign * INFINITY : test_rand_normal();
    case 4: return sign * mids[test_rand_u64() % 7] * 4.0f; /* amax 6*4 fixes the scale */
    case 5: return j == 0 ? 1.75f * 1024.0f : j == 1 ? -1.7499999f * 1024.0f : test_rand_normal();
    case 6: return j == 0 ? 1.5f * 8.0f : j == 1 ? 1.5000001f * 8.0f : test_rand_normal();
    case 7: return sign * 3.0e38f * (float)test_rand_unit();
    case 8: return sign * 1.0e-39f * (float)(1 + test_rand_u64() % 1000); /* f32 subnormal */
    default: return test_rand_normal() * 1e-30f;
  }
}

static void check_quantizer(tgemm_ctx *ctx, tgemm_dtype dtype, tgemm_scale_mode mode) {
  const int64_t rows = 37, cols = 1537, ld = cols + 5;
  const int64_t pc = tgemm_mxfp4_packed_cols(cols), sc = tgemm_mxfp4_scale_cols(cols);
  size_t es = tgemm_dtype_size(dtype);
  void *src = malloc((size_t)(rows * ld) * es);
  float *row = malloc(sizeof(float) * (size_t)cols);
  for (int64_t i = 0; i < rows; i++) {
    int kind = 0;
    for (int64_t j = 0; j < ld; j++) {
      if (j % 32 == 0) kind = (int)(test_rand_u64() % 10);
      float v = special_value(kind, (int)(j % 32));
      char *p = (char *)src + (size_t)(i * ld + j) * es;
      if (dtype == TGEMM_F32) memcpy(p, &v, 4);
      else {
        uint16_t h = dtype == TGEMM_F16 ? tgemm__f32_to_f16(v) : tgemm__f32_to_bf16(v);
        memcpy(p, &h, 2);
      }
    }
  }
  void *src_dev = upload(ctx, src, (size_t)(rows * ld) * es);
  void *packed_dev = NULL, *scales_dev = NULL, *deq_dev = NULL;
  CHECK_OK(tgemm_malloc(ctx, (size_t)(rows * pc), &packed_dev));
  CHECK_OK(tgemm_malloc(ctx, (size_t)(rows * sc), &scales_dev));
  CHECK_OK(tgemm_malloc(ctx, (size_t)(rows * cols) * es, &deq_dev));
  tgemm_matrix dense = {src_dev, NULL, dtype, TGEMM_DEVICE, rows, cols, ld, 0};
  tgemm_matrix mx = tgemm_matrix_mxfp4(packed_dev, scales_dev, rows, cols, TGEMM_DEVICE);
  tgemm_matrix deq = tgemm_matrix_dense(deq_dev, dtype, rows, cols, TGEMM_DEVICE);
  tgemm_status st = tgemm_mxfp4_quantize(ctx, &dense, &mx, mode);
  CHECK(st == TGEMM_OK, "GPU quantize %s %s: %s", tgemm_dtype_name(dtype),
        tgemm_scale_mode_name(mode), tgemm_ctx_last_error(ctx));
  st = tgemm_mxfp4_dequantize(ctx, &mx, &deq);
  CHECK(st == TGEMM_OK, "GPU dequantize to %s: %s", tgemm_dtype_name(dtype),
        tgemm_ctx_last_error(ctx));

  uint8_t *packed = malloc((size_t)(rows * pc)), *scales = malloc((size_t)(rows * sc));
  void *deq_host = malloc((size_t)(rows * cols) * es);
  CHECK_OK(tgemm_memcpy(ctx, packed, packed_dev, (size_t)(rows * pc), TGEMM_COPY_DEVICE_TO_HOST));
  CHECK_OK(tgemm_memcpy(ctx, scales, scales_dev, (size_t)(rows * sc), TGEMM_COPY_DEVICE_TO_HOST));
  CHECK_OK(tgemm_memcpy(ctx, deq_host, deq_dev, (size_t)(rows * cols) * es,
                        TGEMM_COPY_DEVICE_TO_HOST));
  uint8_t *packed_ref = malloc((size_t)pc), *scales_ref = malloc((size_t)sc);
  float *deq_ref = malloc(sizeof(float) * (size_t)cols);
  int bad_rows = 0, bad_values = 0;
  for (int64_t i = 0; i < rows; i++) {
    for (int64_t j = 0; j < cols; j++)
      row[j] = tgemm__load_f32((const char *)src + (size_t)(i * ld) * es, dtype, j);
    tgemm_mxfp4_quantize_row_ref(row, cols, packed_ref, scales_ref, mode);
    if (memcmp(packed + i * pc, packed_ref, (size_t)pc) != 0 ||
        memcmp(scales + i * sc, scales_ref, (size_t)sc) != 0) {
      if (bad_rows++ < 3)
        for (int64_t b = 0; b < sc; b++)
          if (scales[i * sc + b] != scales_ref[b] ||
              memcmp(packed + i * pc + b * 16, packed_ref + b * 16, 16) != 0) {
            fprintf(stderr, "  row %lld block %lld: scale %u vs ref %u\n", (long long)i,
                    (long long)b, scales[i * sc + b], scales_ref[b]);
            break;
          }
    }
    tgemm_mxfp4_dequantize_row_ref(packed_ref, scales_ref, cols, deq_ref);
    for (int64_t j = 0; j < cols; j++) {
      const char *p = (const char *)deq_host + (size_t)(i * cols + j) * es;
      float got = tgemm__load_f32(p, dtype, 0), want = deq_ref[j];
      bool same;
      if (dtype == TGEMM_F32) same = memcmp(&got, &want, 4) == 0 || (isnan(got) && isnan(want));
      else {
        uint16_t g, w = dtype == TGEMM_F16 ? tgemm__f32_to_f16(want) : tgemm__f32_to_bf16(want);
        memcpy(&g, p, 2);
        same = g == w || (isnan(got) && isnan(want));
      }
      bad_values += !same;
    }
  }
  CHECK(bad_rows == 0, "GPU quantizer (%s, mode %s): %d of %lld rows differ from the CPU reference",
        tgemm_dtype_name(dtype), tgemm_scale_mode_name(mode), bad_rows, (long long)rows);
  CHECK(bad_values == 0, "GPU dequantizer (to %s): %d values differ from the CPU reference",
        tgemm_dtype_name(dtype), bad_values);
  tgemm_free(ctx, src_dev);
  tgemm_free(ctx, packed_dev);
  tgemm_free(ctx, scales_dev);
  tgemm_free(ctx, deq_dev);
  free(src);
  free(row);
  free(packed);
  free(scales);
  free(deq_host);
  free(packed_ref);
  free(scales_ref);
  free(deq_ref);
}

/* ---------------------------------------------------------------- main */

static int build_cases(test_case *cases, bool reduced) {
  static const int64_t ns[3] = {7, 129, 1000}, ks[3] = {33, 200, 1537};
  int count = 0;
  for (int64_t m = 1; m <= 17; m++) {
    if (reduced && m != 1 && m != 4 && m != 7 && m != 16 && m != 17) continue;
    int pair = (int)(m % 9); /* M = 1..17 meets all nine (N, K) pairs */
    test_case tc = {m, ns[pair % 3], ks[pair / 3], TGEMM_BF16, (m & 1) ? TGEMM_BF16 : TGEMM_F32,
                    (int)(m % 3), 1.0f};
    if (m == 5 || m == 11) tc.x_dtype = TGEMM_F16;
    if (m == 7 || m == 13) tc.x_dtype = TGEMM_F32;
    cases[count++] = tc;
  }
  const test_case big[] = {
      {300, 129, 200, TGEMM_F16, TGEMM_F32, 2, 1.0f},
      {300, 1000, 1537, TGEMM_BF16, TGEMM_BF16, 1, 1.0f},
      {2000, 1000, 200, TGEMM_BF16, TGEMM_F32, 0, 1.0f},
      {2000, 129, 1537, TGEMM_BF16, TGEMM_BF16, 2, 1.0f},
      {300, 7, 33, TGEMM_F32, TGEMM_BF16, 1, 1.0f},
  };
  for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
    if (!reduced || i == 0) cases[count++] = big[i];
  /* Tall decode shapes: many row tiles per SM, N not a multiple of 8, K
   * tails of 1, 8 and 4 elements; weights of 2^12 (MXFP4 scales above
   * 2^1, the decoders' second-multiply path) and of 2^-100.  The fourth
   * and fifth have K a multiple of 8 (16-byte rows: the vector and ring
   * kernels run) and long enough that every warp's cp.async ring wraps
   * several times before a K tail of 8 elements: N=576 also takes the
   * cluster splits.
   * The last three have ceil(K/32) a multiple of 4, so that the library's
   * own MXFP4 weights take the aligned W4A16 kernels (checked again on a
   * misaligned copy of the weight): K tails of 26 and 20 elements, N not a
   * multiple of a tile, M = 1, 9 and 16, scales above 2^1. */
  const test_case tall[] = {
      {3, 3300, 1537, TGEMM_BF16, TGEMM_BF16, 1, 4096.0f},
      {12, 6500, 200, TGEMM_BF16, TGEMM_F32, 2, 1.0f},
      {16, 2200, 4100, TGEMM_BF16, TGEMM_BF16, 0, 0x1p-100f},
      {13, 576, 7176, TGEMM_BF16, TGEMM_BF16, 2, 1.0f},
      {5, 3000, 2056, TGEMM_BF16, TGEMM_F32, 0, 1.0f},
      {1, 3001, 1530, TGEMM_BF16, TGEMM_BF16, 1, 1.0f},
      {16, 1000, 500, TGEMM_BF16, TGEMM_F32, 2, 4096.0f},
      {9, 2050, 1024, TGEMM_BF16, TGEMM_BF16, 0, 1.0f},
  };
  for (size_t i = 0; i < sizeof tall / sizeof tall[0]; i++)
    if (!reduced || i == 0 || i == 3 || i == 5 || i == 6) cases[count++] = tall[i];
  return count;
}

int main(void) {
  test_seed("test_cuda_kernels");
  int devices = 0;
  cudaError_t derr = cudaGetDeviceCount(&devices);
  if (derr != cudaSuccess || devices < 1) {
    printf("test_cuda_kernels: SKIP: no CUDA device: cudaGetDeviceCount returned %s (%d devices)\n",
           cudaGetErrorName(derr), devices);
    return TEST_SKIP;
  }
  for (int mode = 0; mode < 3; mode++) {
    tgemm_ctx_options o;
    tgemm_ctx_options_default(&o);
    o.backend = TGEMM_BACKEND_CUDA;
    o.scale_mode = (tgemm_scale_mode)mode;
    o.tuned = 0;
    tgemm_status st = tgemm_ctx_create(&o, &ctxs[mode]);
    /* a GPU was found above, so a context that cannot start (no cuBLASLt,
     * a broken driver) is a failure, not a skip; the CHECK below reports it */
    CHECK(st == TGEMM_OK, "tgemm_ctx_create(cuda): %s", tgemm_ctx_create_error());
    if (st != TGEMM_OK) return test_finish("test_cuda_kernels");
  }
  printf("device: %s\n", tgemm_ctx_device_name(ctxs[0]));

  const char *quick_env = getenv("TGEMM_TEST_QUICK");
  quick = quick_env && strcmp(quick_env, "1") == 0;
  only = getenv("TGEMM_TEST_ROUTES");
  if (only && !*only) only = NULL;
  test_case cases[40];
  int n_cases = build_cases(cases, quick);
  for (int i = 0; i < n_cases; i++) run_case(&cases[i], i);

  if (selected("quant")) {
    static const tgemm_dtype dtypes[] = {TGEMM_F32, TGEMM_BF16, TGEMM_F16};
    for (int mode = 0; mode < 3; mode++)
      for (int d = 0; d < 3; d++) check_quantizer(ctxs[mode], dtypes[d], (tgemm_scale_mode)mode);
    printf("GPU quantizer/dequantizer: 3 dtypes x 3 modes compared with the CPU reference\n");
  }

  printf("\n%-10s %8s %8s %8s %12s %12s %12s\n", "route", "runs", "shapes", "none",
         "max err bf16", "max err f32", "vs unquant.");
  for (int r = TGEMM_ROUTE_REFERENCE; r < TGEMM_ROUTE_COUNT; r++) {
    route_stats *rs = &stats[r];
    printf("%-10s %8ld %8d %8d %12.3g %12.3g %12.3g\n", tgemm_route_name((tgemm_route)r), rs->runs,
           rs->shapes_with_kernels, rs->shapes_without, rs->max_err[0], rs->max_err[1],
           rs->max_qerr);
    if (selected(tgemm_route_name((tgemm_route)r)))
      CHECK(rs->runs > 0, "route %s offered no kernel for any tested shape",
            tgemm_route_name((tgemm_route)r));
  }
  for (int mode = 0; mode < 3; mode++) tgemm_ctx_free(ctxs[mode]);
  return test_finish("test_cuda_kernels");
}

#else /* !TGEMM_HAVE_CUDA */

int main(void) {
  printf("test_cuda_kernels: SKIP: built without CUDA (configure with -DTGEMM_CUDA=ON)\n");
  return TEST_SKIP;
}

#endif
