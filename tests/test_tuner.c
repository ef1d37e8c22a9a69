/* The tuner and its timing core on the CPU backend: an interrupted tuner
 * (SIGINT mid-run, in-process and through the CLI) leaves a valid table;
 * tiny shapes tuned into a temp table are routed through it ("table") by
 * tgemm_linear afterwards, honouring the error budget; preset data, floors,
 * the timing budget and the workload's error measure. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/internal.h"
#include "route/table.h"
#include "test_util.h"
#include "tune/preset.h"
#include "tune/timing.h"
#include "tune/tuner.h"
#include "tune/workload.h"

static char tmp_dir[] = "/tmp/tgemm_tuner_XXXXXX";

static tgemm_ctx *cpu_ctx(int tuned, const char *config) {
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = TGEMM_BACKEND_CPU;
  o.tuned = tuned;
  o.config_paths = config;
  o.untuned_log = "";
  tgemm_ctx *ctx = NULL;
  tgemm_status st = tgemm_ctx_create(&o, &ctx);
  CHECK(st == TGEMM_OK, "ctx create: %s %s", tgemm_status_name(st), tgemm_ctx_create_error());
  return ctx;
}

/* Rows in a table file that parse (-1 when the file is torn or missing). */
static int64_t valid_rows(const char *path, int64_t *malformed) {
  if (malformed) *malformed = 0;
  if (access(path, F_OK) != 0) return -1;
  struct tgemm__table *t = tgemm__table_new(NULL);
  tgemm__table_stats st;
  tgemm_status s = tgemm__table_load(NULL, t, path, &st);
  tgemm__table_free(t);
  if (malformed) *malformed = st.n_malformed;
  if (s != TGEMM_OK || st.n_missing_files) return -1;
  return st.n_malformed ? -1 : st.n_rows;
}

static void fast_timing(tgemm__tune_options *opt) {
  opt->timing.max_seconds = 0.02;
  opt->timing.max_reps = 5;
  opt->timing.warmup = 1;
  opt->timing.flush = TGEMM__FLUSH_NONE;
  opt->n_weight_copies = 1;
}

/* Wait until the table at path has at least one row (or timeout). */
static bool wait_for_rows(const char *path, double timeout_s) {
  for (double waited = 0; waited < timeout_s; waited += 0.02) {
    if (valid_rows(path, NULL) >= 1) return true;
    usleep(20000);
  }
  return false;
}

/* A tuner child, interrupted with SIGINT after its first saved shape. */
static void test_interrupt_in_process(void) {
  char path[256];
  snprintf(path, sizeof path, "%s/interrupted.csv", tmp_dir);
  enum { N_SHAPES = 300 };
  fflush(NULL);
  pid_t child = fork();
  if (child == 0) {
    static tgemm__shape shapes[N_SHAPES];
    for (int i = 0; i < N_SHAPES; i++)
      shapes[i] = (tgemm__shape){1 + i % 8, 40 + i, 64 + 3 * (i % 5), TGEMM_BF16, TGEMM_BF16, false};
    tgemm_ctx *ctx = cpu_ctx(0, NULL);
    if (!ctx) _exit(3);
    tgemm__tune_options opt;
    tgemm__tune_options_default(&opt);
    fast_timing(&opt);
    /* every kernel spends its whole 10 ms budget: the run lasts far longer
     * than the parent needs to notice the first shape, on any machine */
    opt.timing.max_reps = 100000;
    opt.timing.max_seconds = 0.01;
    opt.shapes = shapes;
    opt.n_shapes = N_SHAPES;
    opt.out_path = path;
    opt.stop = tgemm__tune_install_signal_handlers();
    tgemm_status st = tgemm__tune(ctx, &opt, NULL);
    int code = st == TGEMM_INTERRUPTED ? 128 + (int)*opt.stop : st == TGEMM_OK ? 0 : 1;
    tgemm_ctx_free(ctx);
    _exit(code);
  }
  bool started = wait_for_rows(path, 30.0);
  CHECK(started, "the tuner child saved no shape within 30 s");
  kill(child, SIGINT);
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 130,
        "an interrupted tuner exits 130 after saving, got %s %d", WIFEXITED(status) ? "exit" : "signal",
        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  int64_t malformed;
  int64_t rows = valid_rows(path, &malformed);
  CHECK(rows >= 1 && rows < N_SHAPES * 4, "the table on disk is valid and partial: %lld rows, %lld malformed",
        (long long)rows, (long long)malformed);
  /* a clean stop leaves no temp files behind */
  DIR *d = opendir(tmp_dir);
  int temps = 0;
  for (struct dirent *e; d && (e = readdir(d));) temps += strstr(e->d_name, ".tmp.") != NULL;
  if (d) closedir(d);
  CHECK(temps == 0, "%d temp files left", temps);
}

/* The same through `tgemm tune` (when the CLI was built). */
static void test_interrupt_cli(void) {
  const char *cli = getenv("TGEMM_CLI");
  if (!cli || access(cli, X_OK) != 0) {
    printf("test_tuner: TGEMM_CLI not set or not built; CLI interrupt check skipped\n");
    return;
  }
  char path[256];
  snprintf(path, sizeof path, "%s/cli.csv", tmp_dir);
  fflush(NULL);
  pid_t child = fork();
  if (child == 0) {
    if (!freopen("/dev/null", "w", stdout)) _exit(4);
    execl(cli, cli, "tune", "--backend", "cpu", "--shapes", "40,64", "--shapes", "57,96", "--shapes", "33,80",
          "--m", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20", "--max-seconds", "0.01", "--reps", "100000",
          "--no-flush", "--copies", "1", "-o", path, (char *)NULL);
    _exit(5);
  }
  bool started = wait_for_rows(path, 30.0);
  CHECK(started, "the CLI tuner saved no shape within 30 s");
  kill(child, SIGINT);
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 130, "tgemm tune interrupted exits 130, got %d",
        WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
  int64_t rows = valid_rows(path, NULL);
  CHECK(rows >= 1 && rows < 60 * 4, "the CLI's table is valid and partial: %lld rows", (long long)rows);

  /* --graph: no flush can sit between replayed calls (usage, 2), and the
   * CPU has no graphs (1); neither writes a table. */
  char cmd[1024], graph_path[256];
  snprintf(graph_path, sizeof graph_path, "%s/graph.csv", tmp_dir);
  snprintf(cmd, sizeof cmd, "'%s' tune --shapes 40,64,1 --graph --flush dirty -o '%s' >/dev/null 2>&1", cli,
           graph_path);
  int rc = system(cmd);
  CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "tune --graph --flush dirty: exit %d", WEXITSTATUS(rc));
  snprintf(cmd, sizeof cmd, "'%s' tune --backend cpu --shapes 40,64,1 --graph -o '%s' >/dev/null 2>&1", cli,
           graph_path);
  rc = system(cmd);
  CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "tune --graph on the CPU: exit %d", WEXITSTATUS(rc));
  CHECK(access(graph_path, F_OK) != 0, "a refused graph tune wrote %s", graph_path);
}

static void test_presets(void) {
  tgemm__layer_shape l[TGEMM__PRESET_MAX_LAYERS];
  int n = tgemm__preset_layers("deepseek-v3", 1, l);
  const tgemm__layer_shape want1[] = {{"fused_qkv_a_proj", 2112, 7168}, {"q_a_proj", 1536, 7168},
                                      {"kv_a_proj_with_mqa", 576, 7168}, {"q_b_proj", 24576, 1536},
                                      {"kv_b_proj", 32768, 512},         {"o_proj", 7168, 16384}};
  CHECK(n == 6, "6 layers, got %d", n);
  for (int i = 0; i < n && i < 6; i++)
    CHECK(!strcmp(l[i].layer, want1[i].layer) && l[i].n == want1[i].n && l[i].k == want1[i].k,
          "tp1 layer %d: %s %lldx%lld", i, l[i].layer, (long long)l[i].n, (long long)l[i].k);
  n = tgemm__preset_layers("deepseek-v3", 8, l);
  const int64_t want8[][2] = {{2112, 7168}, {1536, 7168}, {576, 7168}, {3072, 1536}, {4096, 512}, {7168, 2048}};
  CHECK(n == 6, "6 layers at tp 8");
  for (int i = 0; i < n && i < 6; i++)
    CHECK(l[i].n == want8[i][0] && l[i].k == want8[i][1], "tp8 layer %s: %lldx%lld", l[i].layer,
          (long long)l[i].n, (long long)l[i].k);
  CHECK(tgemm__preset_layers("llama-9000", 1, l) == -1, "unknown preset");
  CHECK(tgemm__preset_layers("deepseek-v3", 3, l) == -2, "tp 3 does not split 32768");
  CHECK(tgemm__preset_layers("deepseek-v3", 0, l) == -2, "tp 0");
  const int64_t *ms;
  int n_ms = tgemm__preset_m_list(&ms);
  CHECK(n_ms == 14 && ms[0] == 1 && ms[13] == 8192, "M list 1..8192: %d", n_ms);
  for (int i = 1; i < n_ms; i++) CHECK(ms[i] == 2 * ms[i - 1], "M list doubles");
}

static void test_floors(void) {
  tgemm__shape s = {1, 2112, 7168, TGEMM_BF16, TGEMM_BF16, false};
  double bytes = 2.0 * 7168 + 2112.0 * 7168 * 2 + 2.0 * 2112;
  CHECK(tgemm__shape_bytes(&s, TGEMM_BF16) == bytes, "dense bytes %.0f", tgemm__shape_bytes(&s, TGEMM_BF16));
  double mx_bytes = 2.0 * 7168 + 2112.0 * (224 * 16 + 224) + 2.0 * 2112;
  CHECK(tgemm__shape_bytes(&s, TGEMM_MXFP4) == mx_bytes, "MXFP4 bytes %.0f",
        tgemm__shape_bytes(&s, TGEMM_MXFP4));
  CHECK(tgemm__route_weight_dtype(&s, TGEMM_ROUTE_W4A4) == TGEMM_MXFP4 &&
            tgemm__route_weight_dtype(&s, TGEMM_ROUTE_SKINNY) == TGEMM_BF16,
        "route weight forms");
  double f = tgemm__floor_us(&s, TGEMM_BF16, 2970.0, 784.0);
  CHECK(fabs(f - bytes / 2.97e6) < 1e-9, "decode floor is the memory one: %.4f us", f);
  s.has_bias = true;
  CHECK(tgemm__shape_bytes(&s, TGEMM_BF16) == bytes + 2.0 * 2112, "bias bytes");
  tgemm__shape big = {8192, 8192, 8192, TGEMM_BF16, TGEMM_F32, false};
  f = tgemm__floor_us(&big, TGEMM_BF16, 2970.0, 784.0);
  CHECK(fabs(f - 2.0 * 8192.0 * 8192 * 8192 / 784e6) < 1e-6, "prefill floor is the math one: %.1f us", f);
  CHECK(tgemm__shape_flops(&big) == 2.0 * 8192.0 * 8192 * 8192, "flops");
}

static void test_timing_and_workload(void) {
  tgemm_ctx *ctx = cpu_ctx(0, NULL);
  if (!ctx) return;
  tgemm__shape s = {4, 257, 200, TGEMM_BF16, TGEMM_BF16, true};
  tgemm__workload *wl = NULL;
  CHECK_OK(tgemm__workload_create(ctx, &s, 3, 42, true, &wl));
  if (!wl) {
    tgemm_ctx_free(ctx);
    return;
  }
  CHECK(tgemm__workload_n_sets(wl) == 3, "3 weight copies");
  CHECK(tgemm__workload_operands(wl, 0)->w != tgemm__workload_operands(wl, 2)->w, "distinct copies");
  CHECK(tgemm__workload_operands(wl, 3) == NULL, "out of range");
  CHECK(tgemm__workload_auto_copies(ctx, &s, false) >= 2, "a small weight needs copies to go cold");
  tgemm__shape huge = {1, 32768, 16384, TGEMM_BF16, TGEMM_BF16, false};
  CHECK(tgemm__workload_auto_copies(ctx, &huge, false) <= 1 + (512 << 20) / (32768 * 16384 * 2),
        "copies are capped by memory");

  /* error measure: dense kernels near bf16 rounding, MXFP4 two ways */
  tgemm__kernel k;
  double vs_dense, vs_exact;
  CHECK_OK(ctx->backend->default_kernel(ctx, &s, TGEMM_ROUTE_REFERENCE, &k));
  CHECK_OK(tgemm__workload_error2(ctx, wl, &k, &vs_dense, &vs_exact));
  CHECK(vs_dense > 0 && vs_dense < 5e-3 && vs_dense == vs_exact, "reference: %.3g / %.3g", vs_dense, vs_exact);
  CHECK_OK(ctx->backend->default_kernel(ctx, &s, TGEMM_ROUTE_W4A16, &k));
  CHECK_OK(tgemm__workload_error2(ctx, wl, &k, &vs_dense, &vs_exact));
  CHECK(vs_exact < 1e-2 && vs_dense > 0.03 && vs_dense < 0.3, "w4a16: exact %.3g, quantization %.3g", vs_exact,
        vs_dense);
  double e1;
  CHECK_OK(tgemm__workload_error(ctx, wl, &k, &e1));
  CHECK(e1 == vs_dense, "workload_error is the unquantized comparison");
  printf("test_tuner: w4a16 error %.4f vs unquantized, %.2e vs dequantized\n", vs_dense, vs_exact);

  /* timing: sane statistics, NaN on failure */
  CHECK_OK(ctx->backend->default_kernel(ctx, &s, TGEMM_ROUTE_SKINNY, &k));
  tgemm__timing_options opt;
  tgemm__timing_options_default(&opt);
  opt.max_seconds = 0.1;
  opt.flush = TGEMM__FLUSH_NONE;
  tgemm__timing t;
  CHECK_OK(tgemm__time_kernel(ctx, &k, &s, tgemm__workload_sets(wl), 3, &opt, &t));
  CHECK(t.reps >= 1 && t.min_us > 0 && t.min_us <= t.median_us && t.median_us <= t.max_us && isfinite(t.max_us),
        "stats: min %.3g median %.3g max %.3g reps %d", t.min_us, t.median_us, t.max_us, t.reps);
  CHECK(t.calls >= t.reps, "groups of calls");
  CHECK(t.wall_s < 3.0, "budget 0.1 s, took %.3f s", t.wall_s);
  opt.flush = TGEMM__FLUSH_CLEAN;
  CHECK_OK(tgemm__time_kernel(ctx, &k, &s, tgemm__workload_sets(wl), 3, &opt, &t));
  CHECK(t.calls == t.reps && t.reps >= 1, "with flushes, one call per sample: %d/%d", t.calls, t.reps);
  opt.flush = TGEMM__FLUSH_DIRTY;
  CHECK_OK(tgemm__time_kernel(ctx, &k, &s, tgemm__workload_sets(wl), 3, &opt, &t));
  CHECK(t.calls == t.reps && t.reps >= 1, "with dirty flushes, one call per sample: %d/%d", t.calls, t.reps);
  CHECK_STATUS(tgemm__time_kernel(ctx, &k, &s, tgemm__workload_sets(wl), 0, &opt, &t), TGEMM_INVALID_ARGUMENT);
  /* graph timing needs a backend with graphs (the CPU has none) */
  opt.flush = TGEMM__FLUSH_NONE;
  opt.graph = true;
  CHECK_STATUS(tgemm__time_kernel(ctx, &k, &s, tgemm__workload_sets(wl), 3, &opt, &t), TGEMM_UNSUPPORTED);
  CHECK(strstr(tgemm_ctx_last_error(ctx), "no graphs") != NULL, "message: %s", tgemm_ctx_last_error(ctx));
  opt.graph = false;
  /* the table keeps a route's built-in choice unless a candidate wins by the margin */
  CHECK(tgemm__tune_is_win(90.0, 100.0) && !tgemm__tune_is_win(98.0, 100.0) && !tgemm__tune_is_win(100.0, 100.0) &&
            !tgemm__tune_is_win(101.0, 100.0) && !tgemm__tune_is_win(NAN, 100.0),
        "win margin %.2f", TGEMM__TUNE_WIN_MARGIN);
  /* flush mode names round-trip; others are refused */
  for (int mode = TGEMM__FLUSH_NONE; mode <= TGEMM__FLUSH_DIRTY; mode++) {
    tgemm__flush_mode back = TGEMM__FLUSH_NONE;
    CHECK(tgemm__flush_mode_parse(tgemm__flush_mode_name((tgemm__flush_mode)mode), &back) && back == (tgemm__flush_mode)mode,
          "flush mode %d round trip", mode);
  }
  tgemm__flush_mode unused;
  CHECK(!tgemm__flush_mode_parse("memset", &unused) && !tgemm__flush_mode_parse(NULL, &unused) &&
            !tgemm__flush_mode_parse("Clean", &unused),
        "unknown flush modes are refused");
  CHECK(isnan(t.median_us) && isnan(t.min_us) && t.reps == 0, "a failed timing leaves NaN");
  tgemm__workload_free(wl);

  /* the budget holds for a slow kernel: one warm-up and one timed run */
  tgemm__shape slow = {48, 512, 1024, TGEMM_BF16, TGEMM_F32, false};
  CHECK_OK(tgemm__workload_create(ctx, &slow, 1, 7, false, &wl));
  if (wl) {
    CHECK_OK(ctx->backend->default_kernel(ctx, &slow, TGEMM_ROUTE_REFERENCE, &k));
    opt.max_seconds = 0.001;
    opt.flush = TGEMM__FLUSH_NONE;
    CHECK_OK(tgemm__time_kernel(ctx, &k, &slow, tgemm__workload_sets(wl), 1, &opt, &t));
    CHECK(t.reps == 1 && t.median_us > 0, "over budget: exactly one timed run, got %d", t.reps);
    tgemm__workload_free(wl);
  }

  double gbs, tflops;
  CHECK_OK(tgemm__measure_ceilings(ctx, &gbs, &tflops));
  CHECK(gbs > 0.1 && gbs < 1e5 && tflops > 1e-4 && tflops < 1e4, "ceilings %.1f GB/s, %.3f TFLOP/s", gbs, tflops);
  printf("test_tuner: this machine: copy %.1f GB/s, GEMM %.1f GFLOP/s\n", gbs, tflops * 1e3);
  tgemm_ctx_free(ctx);
}

/* Fastest row of a shape in the table, dense routes only or any route. */
static const tgemm__table_row *fastest(const struct tgemm__table *t, const tgemm__shape *s, bool any) {
  const tgemm__table_row *best = NULL;
  for (int r = TGEMM_ROUTE_REFERENCE; r < TGEMM_ROUTE_COUNT; r++) {
    if (!any && (r == TGEMM_ROUTE_W4A16 || r == TGEMM_ROUTE_W4A4)) continue;
    const tgemm__table_row *row = tgemm__table_lookup(t, s, (tgemm_route)r);
    if (row && (!best || row->us < best->us)) best = row;
  }
  return best;
}

/* Run one linear call on fresh data; check the output against a double
 * reference; return the info. */
static tgemm_linear_info linear_once(tgemm_ctx *ctx, const tgemm__shape *s, double budget) {
  tgemm_linear_info info;
  memset(&info, 0, sizeof info);
  size_t xs = (size_t)(s->m * s->k), ws = (size_t)(s->n * s->k), ys = (size_t)(s->m * s->n);
  uint16_t *x = malloc(xs * 2), *w = malloc(ws * 2);
  void *y = malloc(ys * 4), *bias = malloc((size_t)s->n * 4);
  double *ref = malloc(ys * sizeof *ref);
  test_fill_normal(x, TGEMM_BF16, xs, 1.0f);
  test_fill_normal(w, TGEMM_BF16, ws, 1.0f);
  test_fill_normal(bias, s->out_dtype, (size_t)s->n, 1.0f);
  test_poison(y, s->out_dtype, ys);
  for (int64_t i = 0; i < s->m; i++)
    for (int64_t j = 0; j < s->n; j++) {
      double acc = s->has_bias ? tgemm__load_f32(bias, s->out_dtype, j) : 0.0;
      for (int64_t q = 0; q < s->k; q++)
        acc += (double)tgemm__bf16_to_f32(x[i * s->k + q]) * tgemm__bf16_to_f32(w[j * s->k + q]);
      ref[i * s->n + j] = acc;
    }
  tgemm_matrix xm = tgemm_matrix_dense(x, TGEMM_BF16, s->m, s->k, TGEMM_HOST);
  tgemm_matrix wm = tgemm_matrix_dense(w, TGEMM_BF16, s->n, s->k, TGEMM_HOST);
  tgemm_matrix ym = tgemm_matrix_dense(y, s->out_dtype, s->m, s->n, TGEMM_HOST);
  tgemm_matrix bm = tgemm_matrix_dense(bias, s->out_dtype, 1, s->n, TGEMM_HOST);
  tgemm_weight_options wo = {TGEMM_WEIGHT_MXFP4, TGEMM_SCALE_EVEN};
  tgemm_weight *weight = NULL;
  CHECK_OK(tgemm_weight_create(ctx, &wm, &wo, &weight));
  tgemm_linear_options lo;
  tgemm_linear_options_default(&lo);
  lo.error_budget = budget;
  if (weight) {
    CHECK_OK(tgemm_linear(ctx, &xm, weight, s->has_bias ? &bm : NULL, &ym, &lo, &info));
    double err = test_rel_error(y, s->out_dtype, s->m, s->n, s->n, ref);
    double bound = tgemm__route_weight_dtype(s, info.route) == TGEMM_MXFP4 ? 0.5 : 1e-2;
    CHECK(err <= bound, "linear via %s/%s: error %.3g", tgemm_route_name(info.route), info.kernel, err);
    tgemm_weight_free(weight);
  }
  free(x);
  free(w);
  free(y);
  free(bias);
  free(ref);
  return info;
}

static void test_tune_and_route(void) {
  char path[256];
  snprintf(path, sizeof path, "%s/tuned.csv", tmp_dir);
  const tgemm__shape shapes[] = {
      {1, 37, 70, TGEMM_BF16, TGEMM_BF16, false},
      {16, 33, 64, TGEMM_BF16, TGEMM_BF16, false},
      {20, 24, 96, TGEMM_BF16, TGEMM_BF16, false},
      {5, 40, 50, TGEMM_BF16, TGEMM_F32, true},
  };
  const int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
  tgemm_ctx *ctx = cpu_ctx(0, NULL);
  if (!ctx) return;
  tgemm__tune_options opt;
  tgemm__tune_options_default(&opt);
  fast_timing(&opt);
  opt.n_weight_copies = 2;
  opt.shapes = shapes;
  opt.n_shapes = n_shapes;
  opt.out_path = path;
  opt.log = stdout;
  opt.verbose = true;
  tgemm__tune_summary sum;
  CHECK_OK(tgemm__tune(ctx, &opt, &sum));
  /* skinny is not offered at M=20: 4 + 4 + 3 + 4 rows */
  CHECK(sum.shapes_done == n_shapes && sum.rows_written == 15, "%d shapes, %d rows", sum.shapes_done,
        sum.rows_written);
  CHECK(sum.kernels_rejected == 0, "%d CPU kernels were rejected: a wrong result is a bug", sum.kernels_rejected);
  tgemm__device_key key = ctx->device_key;
  tgemm_ctx_free(ctx);

  struct tgemm__table *t = tgemm__table_new(&key);
  tgemm__table_stats st;
  CHECK_OK(tgemm__table_load(NULL, t, path, &st));
  CHECK(st.n_rows == 15 && st.n_malformed == 0, "reloaded %lld rows", (long long)st.n_rows);
  for (int64_t i = 0; i < tgemm__table_size(t); i++) {
    const tgemm__table_row *r = tgemm__table_row_at(t, i);
    bool mx = r->kernel.route == TGEMM_ROUTE_W4A16 || r->kernel.route == TGEMM_ROUTE_W4A4;
    CHECK(mx ? r->error > 0.02 && r->error < 0.5 : r->error <= 1e-2, "row %s/%s M=%lld: error %.3g",
          tgemm_route_name(r->kernel.route), r->kernel.name, (long long)r->shape.m, r->error);
    CHECK(r->us > 0 && r->gbps > 0 && r->tflops > 0, "measured numbers");
  }

  /* a context that reads the table routes through it */
  tgemm_ctx *tuned = cpu_ctx(1, path);
  if (tuned) {
    for (int i = 0; i < n_shapes; i++) {
      const tgemm__table_row *want = fastest(t, &shapes[i], false);
      tgemm_linear_info info = linear_once(tuned, &shapes[i], 0.0);
      CHECK(!strcmp(info.reason, "table") && want && !strcmp(info.kernel, want->kernel.name),
            "shape %d: routed by %s to %s, table's fastest dense %s", i, info.reason, info.kernel,
            want ? want->kernel.name : "-");
      const tgemm__table_row *any = fastest(t, &shapes[i], true);
      info = linear_once(tuned, &shapes[i], 1.0);
      CHECK(!strcmp(info.reason, "table") && any && !strcmp(info.kernel, any->kernel.name),
            "shape %d, budget 1: %s, table's fastest %s", i, info.kernel, any ? any->kernel.name : "-");
    }
    /* M=9 finds the M=16 row through its bucket */
    tgemm__shape m9 = shapes[1], m16 = shapes[1];
    m9.m = 9;
    const tgemm__table_row *want = fastest(t, &m16, false);
    tgemm_linear_info info = linear_once(tuned, &m9, 0.0);
    CHECK(!strcmp(info.reason, "table") && want && !strcmp(info.kernel, want->kernel.name),
          "M=9 via the M=16 row: %s %s", info.reason, info.kernel);
    /* a shape the table lacks: the default rule */
    tgemm__shape other = {3, 29, 31, TGEMM_BF16, TGEMM_BF16, false};
    info = linear_once(tuned, &other, 0.0);
    CHECK(!strcmp(info.reason, "default"), "an untuned shape: %s", info.reason);
    tgemm_ctx_free(tuned);
  }
  /* and TGEMM_TUNED=0 (tuned = 0) ignores it */
  tgemm_ctx *off = cpu_ctx(0, path);
  if (off) {
    tgemm_linear_info info = linear_once(off, &shapes[0], 0.0);
    CHECK(!strcmp(info.reason, "default"), "tuned off: %s", info.reason);
    tgemm_ctx_free(off);
  }
  tgemm__table_free(t);
}


int main(void) {
  test_seed("test_tuner");
  if (!mkdtemp(tmp_dir)) {
    perror("mkdtemp");
    return 1;
  }
  /* fork first, before this process starts OpenMP threads */
  test_interrupt_in_process();
  test_interrupt_cli();
  test_presets();
  test_floors();
  test_timing_and_workload();
  test_tune_and_route();
  test_remove_dir(tmp_dir);
  return test_finish("test_tuner");
}
