/* `tgemm linear`, `tgemm info` and `tgemm bench` end to end: linear on
 * generated .npy files through every route writes a Y.npy that matches the
 * double reference (MXFP4 routes within their quantization error), reports
 * the route it took, and answers bad input with exit 1 or 2 and one clear
 * line; info and a tiny bench run and print what they promise. */
#include <math.h>
#include <stdbool.h>

#include "cli_runner.h"
#include "io/npy.h"
#include "test_util.h"

enum { M = 3, N = 70, K = 200 };

static void write_f32(const char *path, int ndim, const int64_t *shape, const float *data) {
  char err[256];
  if (tgemm__npy_write(path, TGEMM__NPY_F32, ndim, shape, data, err, sizeof err) != TGEMM_OK) {
    fprintf(stderr, "cannot write %s: %s\n", path, err);
    exit(1);
  }
}

/* y = x·Wᵀ + b in double, on the bf16-rounded inputs the CLI computes with. */
static void reference(const float *x, const float *w, const float *b, double *y) {
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double acc = b[j];
      for (int t = 0; t < K; t++)
        acc += (double)tgemm__bf16_to_f32(tgemm__f32_to_bf16(x[i * K + t])) *
               (double)tgemm__bf16_to_f32(tgemm__f32_to_bf16(w[j * K + t]));
      y[i * N + j] = acc;
    }
}

static void check_linear_routes(const double *ref) {
  static const char *routes[] = {"auto", "reference", "skinny", "library", "w4a16", "w4a4"};
  for (size_t r = 0; r < sizeof routes / sizeof routes[0]; r++) {
    const char *args[] = {"linear", "--x", test_tmp_path("x.npy"), "--w", test_tmp_path("w.npy"), "--bias", test_tmp_path("b.npy"),
                          "--route", routes[r], "--out-dtype", "f32", "--reps", "2", "-o", test_tmp_path("y.npy"),
                          "--backend", "cpu", NULL};
    int rc = run_cli(args);
    CHECK(rc == 0, "linear --route %s exited %d: %s", routes[r], rc, err_text);
    if (rc != 0) continue;
    CHECK(strstr(out_text, "route ") && strstr(out_text, "error "), "linear output lacks route/error: %s", out_text);
    if (strcmp(routes[r], "auto") != 0) {
      char want[64];
      snprintf(want, sizeof want, "route     %s (", routes[r]);
      CHECK(strstr(out_text, want) != NULL, "route %s not reported: %s", routes[r], out_text);
    }
    tgemm__npy_array y = {0};
    char err[256];
    CHECK_OK(tgemm__npy_read(test_tmp_path("y.npy"), 2, &y, err, sizeof err));
    if (!y.data) continue;
    CHECK(y.shape[0] == M && y.shape[1] == N && y.dtype == TGEMM__NPY_F32, "Y.npy shape %lldx%lld",
          (long long)y.shape[0], (long long)y.shape[1]);
    double e = test_rel_error(y.data, TGEMM_F32, M, N, N, ref);
    bool mx = !strcmp(routes[r], "w4a16") || !strcmp(routes[r], "w4a4");
    if (mx) CHECK(e > 0.02 && e < 0.4, "route %s quantization error %.3g out of any sane band", routes[r], e);
    else CHECK(e <= 1e-5, "route %s error %.3g > 1e-5", routes[r], e);
    tgemm__npy_free(&y);
  }
}

static void check_linear_errors(void) {
  const char *mismatch[] = {"linear", "--x", test_tmp_path("x.npy"), "--w", test_tmp_path("wbad.npy"), "-o",
                            test_tmp_path("y.npy"), "--backend", "cpu", NULL};
  CHECK(run_cli(mismatch) == 1 && strstr(err_text, "shapes do not match"), "mismatch: %s", err_text);
  const char *nan_in[] = {"linear", "--x", test_tmp_path("xnan.npy"), "--w", test_tmp_path("w.npy"), "-o",
                          test_tmp_path("y.npy"), "--backend", "cpu", NULL};
  CHECK(run_cli(nan_in) == 1 && strstr(err_text, "non-finite"), "NaN input: %s", err_text);
  const char *missing[] = {"linear", "--x", test_tmp_path("nope.npy"), "--w", test_tmp_path("w.npy"), "-o",
                           test_tmp_path("y.npy"), NULL};
  CHECK(run_cli(missing) == 1 && strlen(err_text) > 0, "missing file: %s", err_text);
  const char *no_w[] = {"linear", "--x", test_tmp_path("x.npy"), "-o", test_tmp_path("y.npy"), NULL};
  CHECK(run_cli(no_w) == 2, "missing --w accepted");
  const char *bad_route[] = {"linear", "--x", test_tmp_path("x.npy"), "--w", test_tmp_path("w.npy"), "--route", "fast",
                             "-o", test_tmp_path("y.npy"), NULL};
  CHECK(run_cli(bad_route) == 2 && strstr(err_text, "fast"), "bad route: %s", err_text);
  const char *bad_kernel[] = {"linear", "--x", test_tmp_path("x.npy"), "--w", test_tmp_path("w.npy"), "--route", "skinny",
                              "--kernel", "nope", "-o", test_tmp_path("y.npy"), "--backend", "cpu", NULL};
  CHECK(run_cli(bad_kernel) == 1 && strstr(err_text, "nope"), "bad kernel: %s", err_text);
  const char *help[] = {"linear", "--help", NULL};
  CHECK(run_cli(help) == 0 && strstr(out_text, "usage"), "linear --help");
}

static void check_info_and_bench(void) {
  const char *info[] = {"info", NULL};
  CHECK(run_cli(info) == 0 && strstr(out_text, "cpu:") && strstr(out_text, "backends built"), "info: %s", out_text);
  const char *bench[] = {"bench", "--backend", "cpu", "--layers", "kv_a_proj_with_mqa", "--tp", "1", "--m", "1",
                         "--routes", "skinny,library,w4a16,auto", "--reps", "2", "--max-seconds", "0.05", NULL};
  int rc = run_cli(bench);
  CHECK(rc == 0, "bench exited %d: %s", rc, err_text);
  CHECK(strstr(out_text, "kv_a_proj_with_mqa") && strstr(out_text, "skinny") && strstr(out_text, "openblas") &&
            strstr(out_text, "summary"),
        "bench output incomplete:\n%s", out_text);
  const char *bad[] = {"bench", "--m", "0", NULL};
  CHECK(run_cli(bad) == 2, "bench --m 0 accepted");
  const char *graph_flush[] = {"bench", "--graph", "--flush", "clean", NULL};
  CHECK(run_cli(graph_flush) == 2 && strstr(err_text, "back to back"), "bench --graph --flush clean: %s", err_text);
  const char *graph_cpu[] = {"bench", "--backend", "cpu", "--graph", "--m", "1", NULL};
  CHECK(run_cli(graph_cpu) == 1 && strstr(err_text, "graphs"), "bench --graph on the CPU: %s", err_text);
  const char *unknown[] = {"frobnicate", NULL};
  CHECK(run_cli(unknown) == 2, "unknown command accepted");
}

int main(void) {
  test_seed("test_cli_linear");
  cli = getenv("TGEMM_CLI");
  if (!cli || !*cli) {
    printf("test_cli_linear: SKIP: TGEMM_CLI is not set (CTest sets it to the built tgemm)\n");
    return TEST_SKIP;
  }
  if (test_make_tmp_dir("tgemm_clil")) return 1;
  static float x[M * K], w[N * K], b[N], wbad[N * (K - 1)];
  static double ref[M * N];
  test_fill_normal(x, TGEMM_F32, M * K, 1.0f);
  test_fill_normal(w, TGEMM_F32, N * K, 1.0f);
  test_fill_normal(b, TGEMM_F32, N, 1.0f);
  test_fill_normal(wbad, TGEMM_F32, N * (K - 1), 1.0f);
  int64_t xs[2] = {M, K}, ws[2] = {N, K}, bs[1] = {N}, wbs[2] = {N, K - 1};
  write_f32(test_tmp_path("x.npy"), 2, xs, x);
  write_f32(test_tmp_path("w.npy"), 2, ws, w);
  write_f32(test_tmp_path("b.npy"), 1, bs, b);
  write_f32(test_tmp_path("wbad.npy"), 2, wbs, wbad);
  x[17] = NAN;
  write_f32(test_tmp_path("xnan.npy"), 2, xs, x);
  x[17] = 0.5f;
  reference(x, w, b, ref);
  /* x[17] changed after the files were written: restore the file's value */
  write_f32(test_tmp_path("x.npy"), 2, xs, x);

  check_linear_routes(ref);
  check_linear_errors();
  check_info_and_bench();

  test_remove_dir(test_tmp_dir());
  return test_finish("test_cli_linear");
}
