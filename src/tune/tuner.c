/* The tuner loop: shapes x routes x candidates -> error check -> time ->
 * the fastest per (shape, route) into the table, saved after each shape. */
#include "tune/tuner.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "route/table.h"
#include "tune/workload.h"


static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) {
  if (stop_flag) { /* a second signal: stop now (the table on disk stays whole) */
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  stop_flag = sig;
}

volatile sig_atomic_t *tgemm__tune_install_signal_handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  return &stop_flag;
}

static const tgemm_route default_routes[] = {TGEMM_ROUTE_SKINNY, TGEMM_ROUTE_LIBRARY,
                                             TGEMM_ROUTE_W4A16, TGEMM_ROUTE_W4A4};

void tgemm__tune_options_default(tgemm__tune_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->routes = default_routes;
  opt->n_routes = (int)(sizeof default_routes / sizeof default_routes[0]);
  tgemm__timing_options_default(&opt->timing);
  opt->seed = 20261123;
}

static bool stopping(const tgemm__tune_options *opt) { return opt->stop && *opt->stop; }

/* Why a kernel's measured error disqualifies it, or NULL.  Dense routes and
 * the exact MXFP4 comparison (against the dequantized operands) must meet
 * the rounding bound; the MXFP4 quantization error itself is data for the
 * router's budget, not a reason to reject. */
static const char *error_problem(tgemm_route route, double vs_dense, double vs_exact) {
  if (!isfinite(vs_dense) || !isfinite(vs_exact)) return "non-finite output";
  bool mx = route == TGEMM_ROUTE_W4A16 || route == TGEMM_ROUTE_W4A4;
  if ((mx ? vs_exact : vs_dense) > TGEMM__TUNE_DENSE_MAX_ERROR) return "error over the bound";
  return NULL;
}

/* The split-K a kernel reports: a cuBLASLt kernel (one carrying a raw
 * algo) keeps it in params[3] (src/cuda/cublaslt_gemm.c); others say
 * nothing (0). */
static int32_t split_k_of(const tgemm__kernel *k) {
  return k->has_algo && k->params[3] > 0 ? k->params[3] : 0;
}

typedef struct route_result {
  bool have;
  tgemm__table_row row;
} route_result;

bool tgemm__tune_is_win(double candidate_us, double default_us) {
  return candidate_us < default_us * (1.0 - TGEMM__TUNE_WIN_MARGIN);
}

static void fill_result(const tgemm_ctx *ctx, const tgemm__shape *s, tgemm_route route,
                        const tgemm__kernel *kernel, double us, double error, route_result *out) {
  tgemm__table_row *r = &out->row;
  memset(out, 0, sizeof *out);
  r->device = ctx->device_key;
  r->shape = *s;
  r->kernel = *kernel;
  r->split_k = split_k_of(kernel);
  r->us = us;
  r->tflops = tgemm__shape_flops(s) / (us * 1e6);
  r->gbps = tgemm__shape_bytes(s, tgemm__route_weight_dtype(s, route)) / (us * 1e3);
  r->error = error;
  out->have = true;
}

/* Every candidate of one route on one workload; the fastest into *best,
 * unless it is within the margin of the route's built-in choice. */
static void tune_route(tgemm_ctx *ctx, const tgemm__tune_options *opt, tgemm__workload *wl,
                       tgemm_route route, route_result *best, tgemm__tune_summary *sum) {
  const tgemm__shape *s = tgemm__workload_shape(wl);
  tgemm__kernel def;
  const bool have_default = ctx->backend->default_kernel(ctx, s, route, &def) == TGEMM_OK;
  route_result default_result = {0};
  tgemm__kernel cands[TGEMM__MAX_CANDIDATES];
  int n = ctx->backend->candidates(ctx, s, route, cands, TGEMM__MAX_CANDIDATES);
  if (n < 0) {
    if (opt->log) fprintf(opt->log, "  %s: no candidates (%s)\n", tgemm_route_name(route), ctx->last_error);
    return;
  }
  for (int i = 0; i < n && !stopping(opt); i++) {
    const tgemm__kernel *kernel = &cands[i];
    double vs_dense = NAN, vs_exact = NAN;
    tgemm__clear_error(ctx);
    tgemm_status st = tgemm__workload_error2(ctx, wl, kernel, &vs_dense, &vs_exact);
    const char *problem = st != TGEMM_OK ? ctx->last_error : error_problem(route, vs_dense, vs_exact);
    if (st == TGEMM_OK && problem) {
      /* a kernel that gets a dense-exact answer wrong is a bug: say so loudly */
      fprintf(opt->log ? opt->log : stderr,
              "  REJECTED %s/%s at M=%lld N=%lld K=%lld: %s (error %.3g vs dense, %.3g vs exact)\n",
              tgemm_route_name(route), kernel->name, (long long)s->m, (long long)s->n, (long long)s->k,
              problem, vs_dense, vs_exact);
      sum->kernels_rejected++;
      continue;
    }
    if (st != TGEMM_OK) {
      fprintf(opt->log ? opt->log : stderr, "  REJECTED %s/%s at M=%lld N=%lld K=%lld: run failed: %s\n",
              tgemm_route_name(route), kernel->name, (long long)s->m, (long long)s->n, (long long)s->k,
              problem[0] ? problem : tgemm_status_str(st));
      sum->kernels_rejected++;
      continue;
    }
    tgemm__timing t;
    st = tgemm__time_kernel(ctx, kernel, s, tgemm__workload_sets(wl), tgemm__workload_n_sets(wl),
                            &opt->timing, &t);
    if (st != TGEMM_OK || !(t.median_us > 0)) {
      fprintf(opt->log ? opt->log : stderr, "  REJECTED %s/%s: timing failed: %s\n", tgemm_route_name(route),
              kernel->name, ctx->last_error[0] ? ctx->last_error : tgemm_status_str(st));
      sum->kernels_rejected++;
      continue;
    }
    sum->kernels_timed++;
    if (opt->log && opt->verbose)
      fprintf(opt->log, "    %-8s %-28s %10.2f us (min %.2f, %d reps)  error %.3g\n",
              tgemm_route_name(route), kernel->name, t.median_us, t.min_us, t.reps, vs_dense);
    route_result here;
    fill_result(ctx, s, route, kernel, t.median_us, vs_dense, &here);
    if (have_default && !strcmp(kernel->name, def.name)) default_result = here;
    if (!best->have || t.median_us < best->row.us) *best = here;
  }
  /* A row must be a measured win, not run-to-run noise: the route's
   * built-in choice stays unless a candidate beats it by the margin. */
  if (default_result.have && best->have && !tgemm__tune_is_win(best->row.us, default_result.row.us))
    *best = default_result;
}

static void log_shape(const tgemm__tune_options *opt, int index, const tgemm__shape *s,
                      const route_result *results) {
  FILE *log = opt->log;
  const tgemm_route *routes = opt->routes;
  int n_routes = opt->n_routes, count = opt->n_shapes;
  if (!log) return;
  fprintf(log, "[%d/%d] M=%lld N=%lld K=%lld %s->%s%s:", index + 1, count, (long long)s->m,
          (long long)s->n, (long long)s->k, tgemm_dtype_name(s->dtype), tgemm_dtype_name(s->out_dtype),
          s->has_bias ? " +bias" : "");
  const route_result *best = NULL, *fastest = NULL;
  for (int r = 0; r < n_routes; r++) {
    const route_result *rr = &results[r];
    if (!rr->have) {
      fprintf(log, "  %s -", tgemm_route_name(routes[r]));
      continue;
    }
    fprintf(log, "  %s %.2fus", tgemm_route_name(routes[r]), rr->row.us);
    if (opt->bandwidth_gbs > 0 && opt->tflops > 0) /* the fraction of the floor reached */
      fprintf(log, " [%.2f]",
              tgemm__floor_us(s, tgemm__route_weight_dtype(s, routes[r]), opt->bandwidth_gbs, opt->tflops) /
                  rr->row.us);
    if (routes[r] == TGEMM_ROUTE_W4A16 || routes[r] == TGEMM_ROUTE_W4A4)
      fprintf(log, " (err %.3g)", rr->row.error);
    bool mx = routes[r] == TGEMM_ROUTE_W4A16 || routes[r] == TGEMM_ROUTE_W4A4;
    if (!mx && (!best || rr->row.us < best->row.us)) best = rr;
    if (!fastest || rr->row.us < fastest->row.us) fastest = rr;
  }
  if (best) fprintf(log, "  -> %s/%s", tgemm_route_name(best->row.kernel.route), best->row.kernel.name);
  if (fastest && fastest != best)
    fprintf(log, " (fastest: %s/%s, error %.3g)", tgemm_route_name(fastest->row.kernel.route),
            fastest->row.kernel.name, fastest->row.error);
  fprintf(log, "\n");
  fflush(log);
}

tgemm_status tgemm__tune(tgemm_ctx *ctx, const tgemm__tune_options *opt, tgemm__tune_summary *summary) {
  tgemm__tune_summary local;
  if (!summary) summary = &local;
  memset(summary, 0, sizeof *summary);
  if (!ctx || !opt) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm__tune: NULL argument");
  if (!opt->out_path || !opt->out_path[0])
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tuner: no output table path");
  if (opt->n_shapes < 0 || (opt->n_shapes && !opt->shapes) || opt->n_routes < 1 || !opt->routes ||
      opt->n_routes > TGEMM_ROUTE_COUNT)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tuner: %d shapes, %d routes", opt->n_shapes,
                            opt->n_routes);
  bool want_mx = false;
  for (int r = 0; r < opt->n_routes; r++) {
    if (opt->routes[r] <= TGEMM_ROUTE_AUTO || opt->routes[r] >= TGEMM_ROUTE_COUNT)
      return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tuner: bad route %d", (int)opt->routes[r]);
    want_mx |= opt->routes[r] == TGEMM_ROUTE_W4A16 || opt->routes[r] == TGEMM_ROUTE_W4A4;
  }
  struct tgemm__table *table = tgemm__table_new(&ctx->device_key);
  if (!table) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuner: out of memory");

  tgemm_status result = TGEMM_OK;
  char first_error[TGEMM__ERROR_MAX] = "";
  bool interrupted = false;
  /* An empty run still leaves a valid (header-only) table. */
  tgemm_status st = tgemm__table_save(ctx, table, opt->out_path);
  if (st != TGEMM_OK) {
    tgemm__table_free(table);
    return st;
  }
  for (int i = 0; i < opt->n_shapes && !interrupted; i++) {
    const tgemm__shape *s = &opt->shapes[i];
    if (stopping(opt)) {
      interrupted = true;
      break;
    }
    bool shape_mx = want_mx && (ctx->backend->supports(ctx, s, TGEMM_ROUTE_W4A16) ||
                                ctx->backend->supports(ctx, s, TGEMM_ROUTE_W4A4));
    tgemm__workload *wl = NULL;
    st = tgemm__workload_create(ctx, s, opt->n_weight_copies, opt->seed + (uint64_t)i, shape_mx, &wl);
    if (st != TGEMM_OK) {
      fprintf(opt->log ? opt->log : stderr, "[%d/%d] M=%lld N=%lld K=%lld: skipped: %s\n", i + 1,
              opt->n_shapes, (long long)s->m, (long long)s->n, (long long)s->k, ctx->last_error);
      if (result == TGEMM_OK) {
        result = st;
        snprintf(first_error, sizeof first_error, "%s", ctx->last_error);
      }
      continue;
    }
    route_result results[TGEMM_ROUTE_COUNT];
    memset(results, 0, sizeof results);
    for (int r = 0; r < opt->n_routes && !stopping(opt); r++) {
      tgemm_route route = opt->routes[r];
      if (!ctx->backend->supports(ctx, s, route)) continue;
      if ((route == TGEMM_ROUTE_W4A16 || route == TGEMM_ROUTE_W4A4) && !shape_mx) continue;
      tune_route(ctx, opt, wl, route, &results[r], summary);
    }
    tgemm__workload_free(wl);
    interrupted = stopping(opt);
    /* Rows measured before an interruption are still real measurements. */
    for (int r = 0; r < opt->n_routes; r++) {
      if (!results[r].have) continue;
      st = tgemm__table_insert(ctx, table, &results[r].row, TGEMM__TABLE_REPLACE);
      if (st != TGEMM_OK) break;
      summary->rows_written++;
    }
    if (st == TGEMM_OK) st = tgemm__table_save(ctx, table, opt->out_path);
    if (st != TGEMM_OK) { /* cannot write the output: nothing further is useful */
      tgemm__table_free(table);
      return st;
    }
    if (!interrupted) summary->shapes_done++;
    log_shape(opt, i, s, results);
  }
  tgemm__table_free(table);
  if (interrupted)
    return tgemm__set_error(ctx, TGEMM_INTERRUPTED, "tuner: interrupted after %d of %d shapes; the table %s is valid",
                            summary->shapes_done, opt->n_shapes, opt->out_path);
  if (result != TGEMM_OK) tgemm__set_error(ctx, result, "%s", first_error);
  return result;
}
