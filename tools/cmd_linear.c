/* tgemm linear: one linear layer on real data from .npy files.  Prints the
 * route taken, the time per call and the error against a double-precision
 * reference of the unquantized inputs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_util.h"
#include "commands.h"
#include "core/dtype_convert.h"
#include "core/internal.h"
#include "cpu/cpu_reference.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: tgemm linear --x X.npy --w W.npy [--bias B.npy] -o Y.npy [options]\n\n"
          "y = x * W^T + b with x [M,K], W [N,K], b [N] (float32 or float16 .npy).\n\n"
          "options:\n"
          "  --route R          auto (default), reference, skinny, library, w4a16, w4a4\n"
          "  --kernel NAME      a kernel within the route (see tgemm tune)\n"
          "  --dtype D          compute dtype of x and W: bf16 (default), f16, f32\n"
          "  --out-dtype D      bf16 or f32 (default f32; Y.npy is always float32)\n"
          "  --backend B        auto (default), cpu, cuda\n"
          "  --error-budget E   largest relative error an automatic route may have (default 0:\n"
          "                     no MXFP4 unless forced)\n"
          "  --scale-mode M     MXFP4 scale rule: even (default), floor, rceil\n"
          "  --reps N           timed repetitions (default 20)\n");
}

typedef struct {
  const char *x_path, *w_path, *bias_path, *out_path, *kernel;
  tgemm_route route;
  tgemm_dtype dtype, out_dtype;
  tgemm_backend_kind backend;
  double error_budget;
  tgemm_scale_mode scale_mode;
  int reps;
} linear_args;

static int parse(int argc, char **argv, linear_args *a) {
  *a = (linear_args){.route = TGEMM_ROUTE_AUTO, .dtype = TGEMM_BF16, .out_dtype = TGEMM_F32,
                     .backend = TGEMM_BACKEND_AUTO, .scale_mode = TGEMM_SCALE_EVEN, .reps = 20};
  for (int i = 1; i < argc; i++) {
    const char *v = NULL;
    const char *arg = argv[i];
    if (cli_is_help(arg)) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(arg, "--x") || !strcmp(arg, "--w") || !strcmp(arg, "--bias") || !strcmp(arg, "-o") ||
        !strcmp(arg, "--route") || !strcmp(arg, "--kernel") || !strcmp(arg, "--dtype") ||
        !strcmp(arg, "--out-dtype") || !strcmp(arg, "--backend") || !strcmp(arg, "--error-budget") ||
        !strcmp(arg, "--scale-mode") || !strcmp(arg, "--reps")) {
      if (!cli_take_value(argc, argv, &i, "linear", &v)) return 2;
    } else {
      fprintf(stderr, "tgemm linear: unknown argument '%s' (see --help)\n", arg);
      return 2;
    }
    bool ok = true;
    char *end = NULL;
    if (!strcmp(arg, "--x")) a->x_path = v;
    else if (!strcmp(arg, "--w")) a->w_path = v;
    else if (!strcmp(arg, "--bias")) a->bias_path = v;
    else if (!strcmp(arg, "-o")) a->out_path = v;
    else if (!strcmp(arg, "--kernel")) a->kernel = v;
    else if (!strcmp(arg, "--route")) ok = tgemm_route_parse(v, &a->route) == TGEMM_OK;
    else if (!strcmp(arg, "--dtype")) ok = tgemm_dtype_parse(v, &a->dtype) == TGEMM_OK && a->dtype != TGEMM_MXFP4;
    else if (!strcmp(arg, "--out-dtype"))
      ok = tgemm_dtype_parse(v, &a->out_dtype) == TGEMM_OK &&
           (a->out_dtype == TGEMM_BF16 || a->out_dtype == TGEMM_F32);
    else if (!strcmp(arg, "--backend")) ok = cli_parse_backend(v, &a->backend);
    else if (!strcmp(arg, "--scale-mode")) ok = tgemm_scale_mode_parse(v, &a->scale_mode) == TGEMM_OK;
    else if (!strcmp(arg, "--error-budget")) {
      a->error_budget = strtod(v, &end);
      ok = *end == '\0' && a->error_budget >= 0;
    } else if (!strcmp(arg, "--reps")) {
      a->reps = (int)strtol(v, &end, 10);
      ok = *end == '\0' && a->reps > 0 && a->reps <= 100000;
    }
    if (!ok) {
      fprintf(stderr, "tgemm linear: bad value '%s' for %s\n", v, arg);
      return 2;
    }
  }
  if (!a->x_path || !a->w_path || !a->out_path) {
    fprintf(stderr, "tgemm linear: --x, --w and -o are required (see --help)\n");
    return 2;
  }
  return -1;
}

static int read_input(const char *path, int ndim, tgemm__npy_array *out, const char *what) {
  char err[512];
  if (tgemm__npy_read(path, ndim, out, err, sizeof err) != TGEMM_OK) {
    fprintf(stderr, "tgemm linear: %s: %s\n", what, err);
    return 1;
  }
  if (out->dtype != TGEMM__NPY_F32 && out->dtype != TGEMM__NPY_F16) {
    fprintf(stderr, "tgemm linear: %s: %s must be float32 or float16\n", what, path);
    return 1;
  }
  int64_t bad = cli_first_nonfinite(out);
  if (bad >= 0) {
    fprintf(stderr, "tgemm linear: %s: %s holds a non-finite value at flat index %lld\n", what, path,
            (long long)bad);
    return 1;
  }
  return 0;
}

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ‖y − ref‖/‖ref‖ on up to 64 spread rows, against the double reference of
 * the dtype-rounded dense inputs (so MXFP4 routes show their quantization
 * error). */
static int reference_error(const void *x_host, const void *w_host, const void *bias_host,
                           const float *y_host, const linear_args *a, int64_t m, int64_t n,
                           int64_t k, double *rel_err) {
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = TGEMM_BACKEND_CPU;
  o.tuned = 0;
  tgemm_ctx *cpu = NULL;
  if (tgemm_ctx_create(&o, &cpu) != TGEMM_OK) return 1;
  tgemm_matrix xm = tgemm_matrix_dense((void *)x_host, a->dtype, m, k, TGEMM_HOST);
  tgemm_matrix wm = tgemm_matrix_dense((void *)w_host, a->dtype, n, k, TGEMM_HOST);
  tgemm_matrix bm = tgemm_matrix_dense((void *)bias_host, TGEMM_F32, 1, n, TGEMM_HOST);
  tgemm_matrix ym = tgemm_matrix_dense(NULL, TGEMM_F32, m, n, TGEMM_HOST);
  tgemm_weight *w = NULL;
  double *ref = malloc((size_t)n * sizeof(double));
  int rc = 1;
  if (ref && tgemm_weight_create(cpu, &wm, NULL, &w) == TGEMM_OK) {
    tgemm__operands ops = {&xm, w, bias_host ? &bm : NULL, &ym, NULL};
    int64_t rows = m < 64 ? m : 64;
    double num = 0, den = 0;
    for (int64_t r = 0; r < rows; r++) {
      int64_t i = rows == m ? r : r * (m - 1) / (rows - 1);
      if (tgemm__cpu_reference_rows(&ops, TGEMM_ROUTE_REFERENCE, a->scale_mode, i, i + 1, ref) != TGEMM_OK) {
        num = NAN;
        break;
      }
      for (int64_t j = 0; j < n; j++) {
        double d = (double)y_host[i * n + j] - ref[j];
        num += d * d;
        den += ref[j] * ref[j];
      }
    }
    *rel_err = den > 0 ? sqrt(num / den) : sqrt(num);
    rc = isnan(num) ? 1 : 0;
  }
  tgemm_weight_free(w);
  free(ref);
  tgemm_ctx_free(cpu);
  return rc;
}

int tgemm__cmd_linear(int argc, char **argv) {
  linear_args a;
  int rc = parse(argc, argv, &a);
  if (rc >= 0) return rc;

  tgemm__npy_array xa = {0}, wa = {0}, ba = {0};
  if (read_input(a.x_path, 2, &xa, "x") || read_input(a.w_path, 2, &wa, "w") ||
      (a.bias_path && read_input(a.bias_path, 0, &ba, "bias"))) {
    tgemm__npy_free(&xa), tgemm__npy_free(&wa), tgemm__npy_free(&ba);
    return 1;
  }
  int64_t m = xa.shape[0], k = xa.shape[1], n = wa.shape[0];
  if (wa.shape[1] != k || (a.bias_path && ba.count != n)) {
    char bias_text[48] = "";
    if (a.bias_path) snprintf(bias_text, sizeof bias_text, ", bias of %lld", (long long)ba.count);
    fprintf(stderr, "tgemm linear: shapes do not match: x %lldx%lld, W %lldx%lld%s (need W Nx%lld, bias of N)\n",
            (long long)m, (long long)k, (long long)wa.shape[0], (long long)wa.shape[1], bias_text, (long long)k);
    tgemm__npy_free(&xa), tgemm__npy_free(&wa), tgemm__npy_free(&ba);
    return 1;
  }

  int64_t mk, nk, mn;
  if (m < 1 || n < 1 || k < 1 || !tgemm__mul_size(m, k, &mk) || !tgemm__mul_size(n, k, &nk) ||
      !tgemm__mul_size(m, n, &mn) || mk > ((int64_t)1 << 40) || nk > ((int64_t)1 << 40) || mn > ((int64_t)1 << 40)) {
    fprintf(stderr, "tgemm linear: x %lldx%lld and W %lldx%lld: every dimension must be positive and the "
                    "sizes sane\n", (long long)m, (long long)k, (long long)n, (long long)k);
    tgemm__npy_free(&xa), tgemm__npy_free(&wa), tgemm__npy_free(&ba);
    return 1;
  }

  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = a.backend;
  o.error_budget = a.error_budget;
  o.scale_mode = a.scale_mode;
  tgemm_ctx *ctx = NULL;
  tgemm_status st = tgemm_ctx_create(&o, &ctx);
  if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm linear: %s (%s)\n", tgemm_ctx_create_error(), tgemm_status_name(st));
    tgemm__npy_free(&xa), tgemm__npy_free(&wa), tgemm__npy_free(&ba);
    return 1;
  }

  size_t esize = tgemm_dtype_size(a.dtype), osize = tgemm_dtype_size(a.out_dtype);
  void *x_host = cli_convert_host(&xa, a.dtype), *w_host = cli_convert_host(&wa, a.dtype);
  void *b_host = a.bias_path ? cli_convert_host(&ba, TGEMM_F32) : NULL;
  void *y_raw = malloc((size_t)(m * n) * osize);
  float *y_host = malloc((size_t)(m * n) * sizeof(float));
  void *x_dev = NULL, *w_dev = NULL, *b_dev = NULL, *y_dev = NULL;
  tgemm_weight *weight = NULL;
  tgemm_linear_info info = {0};
  double per_call_us = 0, rel_err = NAN;
  rc = 1;
  if (!x_host || !w_host || (a.bias_path && !b_host) || !y_raw || !y_host) {
    fprintf(stderr, "tgemm linear: out of host memory\n");
    goto done;
  }
  bool want_mx = a.route == TGEMM_ROUTE_W4A16 || a.route == TGEMM_ROUTE_W4A4 ||
                 (a.route == TGEMM_ROUTE_AUTO && a.error_budget > 0);
  tgemm_weight_options wo = {want_mx ? TGEMM_WEIGHT_MXFP4 : 0u, a.scale_mode};
  tgemm_location loc = tgemm_ctx_location(ctx);
  if ((st = cli_upload(ctx, x_host, (size_t)(m * k) * esize, &x_dev)) != TGEMM_OK ||
      (st = cli_upload(ctx, w_host, (size_t)(n * k) * esize, &w_dev)) != TGEMM_OK ||
      (b_host && (st = cli_upload(ctx, b_host, (size_t)n * 4, &b_dev)) != TGEMM_OK) ||
      (st = tgemm_malloc(ctx, (size_t)(m * n) * osize, &y_dev)) != TGEMM_OK)
    goto ctx_error;
  tgemm_matrix xm = tgemm_matrix_dense(x_dev, a.dtype, m, k, loc);
  tgemm_matrix wm = tgemm_matrix_dense(w_dev, a.dtype, n, k, loc);
  tgemm_matrix bm = tgemm_matrix_dense(b_dev, TGEMM_F32, 1, n, loc);
  tgemm_matrix ym = tgemm_matrix_dense(y_dev, a.out_dtype, m, n, loc);
  if ((st = tgemm_weight_create(ctx, &wm, &wo, &weight)) != TGEMM_OK) goto ctx_error;
  tgemm_linear_options lo;
  tgemm_linear_options_default(&lo);
  lo.route = a.route;
  lo.kernel = a.kernel;
  /* One untimed call first: warm-up, and the route it reports. */
  if ((st = tgemm_linear(ctx, &xm, weight, b_dev ? &bm : NULL, &ym, &lo, &info)) != TGEMM_OK ||
      (st = tgemm_synchronize(ctx)) != TGEMM_OK)
    goto ctx_error;
  double t0 = now_seconds();
  for (int r = 0; r < a.reps; r++)
    if ((st = tgemm_linear(ctx, &xm, weight, b_dev ? &bm : NULL, &ym, &lo, NULL)) != TGEMM_OK) goto ctx_error;
  if ((st = tgemm_synchronize(ctx)) != TGEMM_OK) goto ctx_error;
  per_call_us = (now_seconds() - t0) * 1e6 / a.reps;
  if ((st = tgemm_memcpy(ctx, y_raw, y_dev, (size_t)(m * n) * osize, TGEMM_COPY_DEVICE_TO_HOST)) != TGEMM_OK)
    goto ctx_error;
  for (int64_t i = 0; i < m * n; i++)
    y_host[i] = a.out_dtype == TGEMM_F32 ? ((float *)y_raw)[i] : tgemm__bf16_to_f32(((uint16_t *)y_raw)[i]);
  char err[512];
  int64_t shape[2] = {m, n};
  if (tgemm__npy_write(a.out_path, TGEMM__NPY_F32, 2, shape, y_host, err, sizeof err) != TGEMM_OK) {
    fprintf(stderr, "tgemm linear: %s\n", err);
    goto done;
  }
  if (reference_error(x_host, w_host, b_host, y_host, &a, m, n, k, &rel_err) != 0)
    fprintf(stderr, "tgemm linear: could not compute the reference error\n");
  printf("backend   %s: %s\n", tgemm_ctx_backend_name(ctx), tgemm_ctx_device_name(ctx));
  printf("shape     M=%lld N=%lld K=%lld, %s -> %s%s\n", (long long)m, (long long)n, (long long)k,
         tgemm_dtype_name(a.dtype), tgemm_dtype_name(a.out_dtype), b_dev ? ", bias" : "");
  printf("route     %s (kernel %s, chosen by %s)\n", tgemm_route_name(info.route), info.kernel, info.reason);
  printf("time      %.2f us per call (wall clock, mean of %d after one warm-up)\n", per_call_us, a.reps);
  printf("error     %.3e relative to the double reference of the unquantized inputs\n", rel_err);
  printf("wrote     %s\n", a.out_path);
  rc = 0;
  goto done;
ctx_error:
  fprintf(stderr, "tgemm linear: %s (%s)\n", tgemm_ctx_last_error(ctx), tgemm_status_name(st));
done:
  tgemm_weight_free(weight);
  tgemm_free(ctx, x_dev), tgemm_free(ctx, w_dev), tgemm_free(ctx, b_dev), tgemm_free(ctx, y_dev);
  free(x_host), free(w_host), free(b_host), free(y_raw), free(y_host);
  tgemm__npy_free(&xa), tgemm__npy_free(&wa), tgemm__npy_free(&ba);
  tgemm_ctx_free(ctx);
  return rc;
}
