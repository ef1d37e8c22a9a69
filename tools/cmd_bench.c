/* tgemm bench: the main job.  For every layer of a preset and every token
 * count M, it times each route against the library default (cuBLASLt's or
 * OpenBLAS's own choice) in the same run, with cold weights, and prints
 * µs, the speedup over the default, the fraction of the bandwidth/compute
 * floor reached, and the error against the double reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_openblas.h"
#include "cli_util.h"
#include "commands.h"
#include "core/internal.h"
#include "route/router.h"
#include "tune/preset.h"
#include "tune/timing.h"
#include "tune/workload.h"

#define MAX_MS 32
#define MAX_ROWS 4096

typedef struct {
  tgemm_backend_kind backend;
  const char *preset;
  bool tp1, tp8;
  int64_t ms[MAX_MS];
  int n_ms;
  bool route_on[TGEMM_ROUTE_COUNT];
  bool auto_on;
  const char *layer_filter;
  bool bias;
  tgemm_dtype out_dtype;
  double max_seconds;
  int max_reps;
  tgemm__flush_mode flush;
  bool flush_given;
  bool graph; /* replay calls back to back from a CUDA graph */
  double error_budget;
  const char *csv_path;
  bool routes_given, ms_given;
} bench_args;

/* One printed result, kept for the summary. */
typedef struct {
  char layer[40];
  int64_t n, k, m;
  tgemm_route route;
  bool is_auto, is_default, is_openblas;
  char kernel[TGEMM__KERNEL_NAME_MAX];
  double us, speedup, floor_frac, err;
} bench_row;

static void usage(FILE *f) {
  fprintf(f,
          "usage: tgemm bench [options]\n\n"
          "Times every route on the DeepSeek-V3 attention projections against the library\n"
          "default (cuBLASLt's heuristic on a GPU, OpenBLAS sgemm on a CPU) in one run, weights\n"
          "cold (cache flushed before every timed call, rotating weight copies).\n\n"
          "options:\n"
          "  --backend B        auto (default: the GPU when usable), cpu, cuda\n"
          "  --preset NAME      deepseek-v3 (default)\n"
          "  --tp LIST          1, 8 or 1,8 (default 1,8; replicated layers once)\n"
          "  --m LIST           token counts (GPU default 1,2,4,...,8192; CPU default 1,4,16,256)\n"
          "  --routes LIST      of skinny, library, w4a16, w4a4, reference, auto\n"
          "                     (GPU default: all but reference; CPU: all but reference, MXFP4 at M<=16)\n"
          "  --layers LIST      only these layers (names as printed, comma-separated)\n"
          "  --bias             add a bias\n"
          "  --out-dtype D      bf16 (default) or f32\n"
          "  --error-budget E   the budget the 'auto' row routes with (default 0: no MXFP4)\n"
          "  --flush MODE       clean (default: read a buffer twice the cache before each call),\n"
          "                     dirty (write it, as a memset does: the timed call then also\n"
          "                     writes those lines back) or none (back to back on rotating\n"
          "                     weight copies that together exceed twice the cache)\n"
          "  --graph            time calls back to back replayed from a CUDA graph, as a served\n"
          "                     model's decode graph runs them (implies --flush none; GPU only)\n"
          "  --max-seconds S    time budget per kernel (default 0.3 GPU, 1 CPU)\n"
          "  --reps N           timed calls per kernel at most (default 100 GPU, 20 CPU)\n"
          "  --csv FILE         also write every row as CSV\n"
          "columns: us = median µs per call; x_default = default µs / route µs; floor = floor µs /\n"
          "route µs, where floor = max(bytes / copy bandwidth, flops / GEMM rate), both measured\n"
          "at start; err = ‖y-ref‖/‖ref‖ against the double reference of the unquantized inputs.\n");
}

static bool parse_routes(const char *text, bench_args *a) {
  memset(a->route_on, 0, sizeof a->route_on);
  a->auto_on = false;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", text);
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    tgemm_route r;
    if (tgemm_route_parse(tok, &r) != TGEMM_OK) return false;
    if (r == TGEMM_ROUTE_AUTO) a->auto_on = true;
    else a->route_on[r] = true;
  }
  return true;
}

static int parse(int argc, char **argv, bench_args *a) {
  *a = (bench_args){.backend = TGEMM_BACKEND_AUTO, .preset = "deepseek-v3", .tp1 = true, .tp8 = true,
                    .out_dtype = TGEMM_BF16, .max_seconds = -1, .max_reps = -1,
                    .flush = TGEMM__FLUSH_CLEAN};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *v = NULL;
    if (cli_is_help(arg)) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(arg, "--bias")) {
      a->bias = true;
      continue;
    }
    if (!strcmp(arg, "--graph")) {
      a->graph = true;
      continue;
    }
    if (strncmp(arg, "--", 2) != 0) {
      fprintf(stderr, "tgemm bench: unexpected argument '%s' (see --help)\n", arg);
      return 2;
    }
    if (!cli_take_value(argc, argv, &i, "bench", &v)) return 2;
    bool ok = true;
    char *end = NULL;
    if (!strcmp(arg, "--backend")) ok = cli_parse_backend(v, &a->backend);
    else if (!strcmp(arg, "--preset")) a->preset = v;
    else if (!strcmp(arg, "--tp")) {
      int64_t tps[2];
      int n = cli_parse_int_list(v, tps, 2);
      a->tp1 = a->tp8 = false;
      for (int j = 0; j < n; j++) {
        if (tps[j] == 1) a->tp1 = true;
        else if (tps[j] == 8) a->tp8 = true;
        else ok = false;
      }
      ok = ok && n > 0;
    } else if (!strcmp(arg, "--m")) {
      a->n_ms = cli_parse_int_list(v, a->ms, MAX_MS);
      ok = a->n_ms > 0;
      a->ms_given = true;
    } else if (!strcmp(arg, "--routes")) {
      ok = parse_routes(v, a);
      a->routes_given = true;
    } else if (!strcmp(arg, "--layers")) a->layer_filter = v;
    else if (!strcmp(arg, "--out-dtype"))
      ok = tgemm_dtype_parse(v, &a->out_dtype) == TGEMM_OK && (a->out_dtype == TGEMM_BF16 || a->out_dtype == TGEMM_F32);
    else if (!strcmp(arg, "--error-budget")) {
      a->error_budget = strtod(v, &end);
      ok = *end == '\0' && a->error_budget >= 0;
    } else if (!strcmp(arg, "--max-seconds")) {
      a->max_seconds = strtod(v, &end);
      ok = *end == '\0' && a->max_seconds > 0;
    } else if (!strcmp(arg, "--reps")) {
      a->max_reps = (int)strtol(v, &end, 10);
      ok = *end == '\0' && a->max_reps > 0 && a->max_reps <= 100000;
    } else if (!strcmp(arg, "--flush")) {
      ok = tgemm__flush_mode_parse(v, &a->flush);
      a->flush_given = true;
    } else if (!strcmp(arg, "--csv")) a->csv_path = v;
    else {
      fprintf(stderr, "tgemm bench: unknown option '%s' (see --help)\n", arg);
      return 2;
    }
    if (!ok) {
      fprintf(stderr, "tgemm bench: bad value '%s' for %s\n", v, arg);
      return 2;
    }
  }
  if (a->graph && a->flush_given && a->flush != TGEMM__FLUSH_NONE) {
    fprintf(stderr, "tgemm bench: --graph replays calls back to back; it cannot flush the cache "
                    "between them (--flush %s)\n", tgemm__flush_mode_name(a->flush));
    return 2;
  }
  if (a->graph) a->flush = TGEMM__FLUSH_NONE;
  return -1;
}

/* Defaults that depend on the backend: a CPU run must finish in about three
 * minutes on two cores. */
static void apply_backend_defaults(bench_args *a, bool gpu) {
  if (!a->ms_given) {
    if (gpu) {
      const int64_t *ms;
      a->n_ms = tgemm__preset_m_list(&ms);
      memcpy(a->ms, ms, (size_t)a->n_ms * sizeof *ms);
    } else {
      static const int64_t cpu_ms[] = {1, 4, 16, 256};
      a->n_ms = 4;
      memcpy(a->ms, cpu_ms, sizeof cpu_ms);
    }
  }
  if (!a->routes_given) {
    a->route_on[TGEMM_ROUTE_SKINNY] = a->route_on[TGEMM_ROUTE_LIBRARY] = true;
    a->route_on[TGEMM_ROUTE_W4A16] = a->route_on[TGEMM_ROUTE_W4A4] = true;
    a->auto_on = true;
  }
  if (a->max_seconds < 0) a->max_seconds = gpu ? 0.3 : 1.0;
  if (a->max_reps < 0) a->max_reps = gpu ? 100 : 20;
}

static bool layer_selected(const bench_args *a, const char *name) {
  if (!a->layer_filter) return true;
  size_t len = strlen(name);
  for (const char *p = a->layer_filter; (p = strstr(p, name)) != NULL; p += len) {
    bool starts = p == a->layer_filter || p[-1] == ',';
    bool ends = p[len] == '\0' || p[len] == ',';
    if (starts && ends) return true;
  }
  return false;
}

typedef struct {
  tgemm_ctx *ctx;
  const bench_args *args;
  double bandwidth_gbs, tflops;
  bool gpu;
  FILE *csv;
  bench_row *rows;
  int n_rows;
  int n_failed; /* routes that could not run at some point */
} bench_state;

static void emit(bench_state *s, const bench_row *r) {
  printf("%-22s %6lld %6lld %5lld  %-9s %-34s %10.2f %9.2f %6.2f %9.2e\n", r->layer, (long long)r->n,
         (long long)r->k, (long long)r->m, r->is_openblas ? "openblas" : r->is_auto ? "auto" : tgemm_route_name(r->route),
         r->kernel, r->us, r->speedup, r->floor_frac, r->err);
  fflush(stdout);
  if (s->csv)
    fprintf(s->csv, "%s,%lld,%lld,%lld,%s,%s,%s,%.3f,%.4f,%.4f,%.4e\n", r->layer, (long long)r->n, (long long)r->k,
            (long long)r->m, r->is_openblas ? "openblas" : r->is_auto ? "auto" : tgemm_route_name(r->route),
            r->is_default ? "yes" : "no", r->kernel, r->us, r->speedup, r->floor_frac, r->err);
  if (s->n_rows < MAX_ROWS) s->rows[s->n_rows++] = *r;
}

/* Time one kernel on the workload and measure its error. */
static tgemm_status measure(bench_state *s, tgemm__workload *wl, const tgemm__kernel *kernel, double *us,
                            double *err) {
  tgemm__timing_options topt;
  tgemm__timing_options_default(&topt);
  topt.max_reps = s->args->max_reps;
  topt.max_seconds = s->args->max_seconds;
  topt.flush = s->args->flush;
  topt.graph = s->args->graph;
  tgemm__timing t;
  tgemm_status st = tgemm__workload_error(s->ctx, wl, kernel, err);
  if (st == TGEMM_OK)
    st = tgemm__time_kernel(s->ctx, kernel, tgemm__workload_shape(wl), tgemm__workload_sets(wl),
                            tgemm__workload_n_sets(wl), &topt, &t);
  if (st == TGEMM_OK) *us = t.median_us;
  return st;
}

static void fill_row(bench_state *s, bench_row *r, const char *layer, const tgemm__shape *shape,
                     tgemm_route route, const char *kernel, double us, double default_us, double err) {
  memset(r, 0, sizeof *r);
  snprintf(r->layer, sizeof r->layer, "%s", layer);
  r->n = shape->n, r->k = shape->k, r->m = shape->m;
  r->route = route;
  snprintf(r->kernel, sizeof r->kernel, "%s", kernel);
  r->us = us;
  r->speedup = default_us / us;
  r->floor_frac = tgemm__floor_us(shape, tgemm__route_weight_dtype(shape, route), s->bandwidth_gbs, s->tflops) / us;
  r->err = err;
}

static tgemm_status bench_point(bench_state *s, const char *layer, const tgemm__shape *shape) {
  tgemm_ctx *ctx = s->ctx;
  const bench_args *a = s->args;
  /* On a CPU the MXFP4 kernels are decode kernels: at large M they would
   * spend minutes, so the default route list keeps them to M <= 16. */
  bool mx_here = (a->route_on[TGEMM_ROUTE_W4A16] || a->route_on[TGEMM_ROUTE_W4A4] || a->auto_on) &&
                 (s->gpu || a->routes_given || shape->m <= 16);
  tgemm__workload *wl = NULL;
  tgemm_status st = tgemm__workload_create(ctx, shape, 0, 0x5eed + (uint64_t)shape->m * 7919 + (uint64_t)shape->n,
                                           mx_here, &wl);
  if (st != TGEMM_OK) return st;
  const struct tgemm_weight *w0 = tgemm__workload_operands(wl, 0)->w;

  bench_row row;
  tgemm__kernel def;
  double def_us = NAN, def_err = NAN;
  if ((st = ctx->backend->default_kernel(ctx, shape, TGEMM_ROUTE_LIBRARY, &def)) != TGEMM_OK ||
      (st = measure(s, wl, &def, &def_us, &def_err)) != TGEMM_OK)
    goto done;
  fill_row(s, &row, layer, shape, TGEMM_ROUTE_LIBRARY, def.name, def_us, def_us, def_err);
  row.is_default = true;
  emit(s, &row);

  if (!s->gpu && shape->dtype == TGEMM_BF16) {
    double blas_us;
    if ((st = bench_openblas_sgemm(ctx, shape, a->max_reps, a->max_seconds, a->flush, &blas_us)) != TGEMM_OK) goto done;
    fill_row(s, &row, layer, shape, TGEMM_ROUTE_LIBRARY, "cblas_sgemm f32 (direct)", blas_us, def_us, NAN);
    row.is_openblas = true;
    row.floor_frac = NAN; /* it moves f32, not the shape's dtype */
    emit(s, &row);
  }

  for (int r = TGEMM_ROUTE_REFERENCE; r < TGEMM_ROUTE_COUNT; r++) {
    if (!a->route_on[r] || r == TGEMM_ROUTE_LIBRARY) continue;
    bool mx = tgemm__route_is_mxfp4((tgemm_route)r);
    if (mx && !mx_here) continue;
    if (!ctx->backend->supports(ctx, shape, (tgemm_route)r) || !tgemm__route_weight_ok(w0, (tgemm_route)r)) continue;
    tgemm__kernel k;
    double us, err;
    if ((st = ctx->backend->default_kernel(ctx, shape, (tgemm_route)r, &k)) != TGEMM_OK ||
        (st = measure(s, wl, &k, &us, &err)) != TGEMM_OK) {
      /* One route failing must not hide the others: say so and go on. */
      printf("%-22s %6lld %6lld %5lld  %-9s skipped: %s (%s)\n", layer, (long long)shape->n, (long long)shape->k,
             (long long)shape->m, tgemm_route_name((tgemm_route)r), tgemm_ctx_last_error(ctx), tgemm_status_name(st));
      s->n_failed++;
      st = TGEMM_OK;
      continue;
    }
    fill_row(s, &row, layer, shape, (tgemm_route)r, k.name, us, def_us, err);
    emit(s, &row);
  }

  if (a->auto_on) {
    tgemm_linear_options lo;
    tgemm_linear_options_default(&lo);
    lo.error_budget = a->error_budget;
    tgemm__kernel k;
    const char *reason = NULL;
    double us, err;
    if ((st = tgemm__route_select(ctx, shape, w0, &lo, &k, &reason)) != TGEMM_OK ||
        (st = measure(s, wl, &k, &us, &err)) != TGEMM_OK)
      goto done;
    char label[TGEMM__KERNEL_NAME_MAX];
    snprintf(label, sizeof label, "%.40s (%s)", k.name, reason);
    fill_row(s, &row, layer, shape, k.route, label, us, def_us, err);
    row.is_auto = true;
    emit(s, &row);
  }
done:
  tgemm__workload_free(wl);
  return st;
}

static int compare_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

/* Per route: how many points, median floor fraction, median speedup, and
 * how many points were slower than the default. */
static void summarize(const bench_state *s) {
  printf("\nsummary (median over the points measured):\n");
  printf("  %-9s %6s %12s %12s %14s\n", "route", "points", "floor", "x_default", "slower_than_default");
  double *floor_v = malloc((size_t)s->n_rows * sizeof(double)), *speed_v = malloc((size_t)s->n_rows * sizeof(double));
  if (!floor_v || !speed_v) goto out;
  for (int pass = 0; pass < TGEMM_ROUTE_COUNT + 1; pass++) {
    /* pass 0..COUNT-1: routes (library = the default itself); COUNT: auto */
    int count = 0, slower = 0;
    for (int i = 0; i < s->n_rows; i++) {
      const bench_row *r = &s->rows[i];
      if (r->is_openblas) continue;
      bool match = pass == TGEMM_ROUTE_COUNT ? r->is_auto : (!r->is_auto && (int)r->route == pass);
      if (!match) continue;
      floor_v[count] = r->floor_frac;
      speed_v[count] = r->speedup;
      slower += r->speedup < 0.98; /* 2%: below the run-to-run spread */
      count++;
    }
    if (!count) continue;
    qsort(floor_v, (size_t)count, sizeof(double), compare_double);
    qsort(speed_v, (size_t)count, sizeof(double), compare_double);
    printf("  %-9s %6d %12.2f %12.2f %14d\n", pass == TGEMM_ROUTE_COUNT ? "auto" : tgemm_route_name((tgemm_route)pass),
           count, floor_v[count / 2], speed_v[count / 2], slower);
  }
out:
  free(floor_v), free(speed_v);
}

int tgemm__cmd_bench(int argc, char **argv) {
  bench_args a;
  int rc = parse(argc, argv, &a);
  if (rc >= 0) return rc;

  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = a.backend;
  tgemm_ctx *ctx = NULL;
  tgemm_status st = tgemm_ctx_create(&o, &ctx);
  if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm bench: %s (%s)\n", tgemm_ctx_create_error(), tgemm_status_name(st));
    return 1;
  }
  bench_state s = {.ctx = ctx, .args = &a, .gpu = tgemm_ctx_backend(ctx) == TGEMM_BACKEND_CUDA};
  apply_backend_defaults(&a, s.gpu);
  if (a.graph && !ctx->backend->graph_begin) {
    fprintf(stderr, "tgemm bench: --graph needs CUDA graphs; the %s backend has none\n", tgemm_ctx_backend_name(ctx));
    tgemm_ctx_free(ctx);
    return 1;
  }
  s.rows = calloc(MAX_ROWS, sizeof *s.rows);
  if (!s.rows) {
    fprintf(stderr, "tgemm bench: out of memory\n");
    tgemm_ctx_free(ctx);
    return 1;
  }
  if (a.csv_path && !(s.csv = fopen(a.csv_path, "w"))) {
    fprintf(stderr, "tgemm bench: cannot write %s\n", a.csv_path);
    free(s.rows);
    tgemm_ctx_free(ctx);
    return 1;
  }
  if (s.csv) fprintf(s.csv, "layer,n,k,m,route,is_default,kernel,us,x_default,floor,err\n");

  rc = 1;
  if ((st = tgemm__measure_ceilings(ctx, &s.bandwidth_gbs, &s.tflops)) != TGEMM_OK) goto ctx_error;
  printf("tgemm %s bench, preset %s, backend %s: %s\n", tgemm_version_string(), a.preset, tgemm_ctx_backend_name(ctx),
         tgemm_ctx_device_name(ctx));
  printf("measured ceilings: copy %.1f GB/s (read+write), library GEMM %.2f TFLOP/s\n", s.bandwidth_gbs, s.tflops);
  printf("tuned routing: %s; out %s%s; per kernel at most %d calls / %.2f s, cache flush %s%s\n\n",
         ctx->table ? "table loaded" : "no table", tgemm_dtype_name(a.out_dtype), a.bias ? ", bias" : "",
         a.max_reps, a.max_seconds, tgemm__flush_mode_name(a.flush),
         a.graph ? ", calls replayed back to back from a CUDA graph" : "");
  printf("%-22s %6s %6s %5s  %-9s %-34s %10s %9s %6s %9s\n", "layer", "N", "K", "M", "route", "kernel", "us",
         "x_default", "floor", "err");

  tgemm__layer_shape seen[2 * TGEMM__PRESET_MAX_LAYERS];
  int n_seen = 0;
  for (int tp = 1; tp <= 8; tp *= 8) {
    if ((tp == 1 && !a.tp1) || (tp == 8 && !a.tp8)) continue;
    tgemm__layer_shape layers[TGEMM__PRESET_MAX_LAYERS];
    int n_layers = tgemm__preset_layers(a.preset, tp, layers);
    if (n_layers < 0) {
      fprintf(stderr, "tgemm bench: unknown preset '%s'\n", a.preset);
      goto out;
    }
    for (int l = 0; l < n_layers; l++) {
      char name[40];
      snprintf(name, sizeof name, "%s%s", layers[l].layer, tp == 8 ? " TP8" : "");
      if (!layer_selected(&a, layers[l].layer) && !layer_selected(&a, name)) continue;
      bool dup = false;
      for (int j = 0; j < n_seen; j++) dup |= seen[j].n == layers[l].n && seen[j].k == layers[l].k;
      if (dup) continue; /* replicated at TP=8: same shape, measured once */
      seen[n_seen++] = layers[l];
      for (int mi = 0; mi < a.n_ms; mi++) {
        tgemm__shape shape = {a.ms[mi], layers[l].n, layers[l].k, TGEMM_BF16, a.out_dtype, a.bias};
        if ((st = bench_point(&s, name, &shape)) != TGEMM_OK) goto ctx_error;
      }
    }
  }
  summarize(&s);
  if (s.n_failed) printf("\n%d route measurement(s) failed and were skipped (see above)\n", s.n_failed);
  rc = s.n_failed ? 1 : 0;
  goto out;
ctx_error:
  fprintf(stderr, "tgemm bench: %s (%s)\n", tgemm_ctx_last_error(ctx), tgemm_status_name(st));
out:
  if (s.csv) fclose(s.csv);
  free(s.rows);
  tgemm_ctx_free(ctx);
  return rc;
}
