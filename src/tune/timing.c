/* The timing core: the same method for the tuner and the bench, so that a
 * table's µs and a bench's µs mean the same thing. */
#include "tune/timing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tune/workload.h"

/* Groups of tiny runs stay below this many calls per interval. */
#define MAX_GROUP 4096
/* Samples taken whenever the budget allows them (see below). */
#define MIN_REPS 3
/* A graph's replay pays one launch (a few µs): under 1% of an interval
 * this long. */
#define GRAPH_MIN_INTERVAL_US 1000.0

double tgemm__now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void tgemm__timing_options_default(tgemm__timing_options *opt) {
  opt->warmup = 3;
  opt->max_reps = 100;
  opt->max_seconds = 1.0;
  opt->flush = TGEMM__FLUSH_CLEAN;
  opt->min_interval_us = 100.0;
  opt->graph = false;
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* One timed interval: `calls` runs rotating through the sets, or one
 * replay of `graph`, which holds them. */
static tgemm_status timed_runs(tgemm_ctx *ctx, const tgemm__kernel *kernel, const tgemm__shape *shape,
                               const tgemm__operands *sets, int n_sets, int *next_set, int calls,
                               void *graph, double *us) {
  const tgemm__backend *be = ctx->backend;
  tgemm_status st = be->timer_start(ctx);
  if (graph && st == TGEMM_OK) st = be->graph_launch(ctx, graph);
  for (int c = 0; !graph && c < calls && st == TGEMM_OK; c++) {
    st = be->run(ctx, kernel, shape, &sets[*next_set]);
    *next_set = (*next_set + 1) % n_sets;
  }
  double elapsed = NAN;
  tgemm_status stop = be->timer_stop(ctx, &elapsed); /* always pairs with start */
  if (st == TGEMM_OK) st = stop;
  *us = elapsed;
  return st;
}

/* Record `calls` runs, set i % n_sets for run i, into a graph. */
static tgemm_status record_graph(tgemm_ctx *ctx, const tgemm__kernel *kernel, const tgemm__shape *shape,
                                 const tgemm__operands *sets, int n_sets, int calls, void **graph) {
  const tgemm__backend *be = ctx->backend;
  *graph = NULL;
  tgemm_status st = be->graph_begin(ctx);
  if (st != TGEMM_OK) return st;
  for (int c = 0; c < calls && st == TGEMM_OK; c++) st = be->run(ctx, kernel, shape, &sets[c % n_sets]);
  tgemm_status end = be->graph_end(ctx, graph); /* always ends the recording */
  if (st == TGEMM_OK) st = end;
  if (st != TGEMM_OK && *graph) {
    be->graph_free(ctx, *graph);
    *graph = NULL;
  }
  return st;
}

tgemm_status tgemm__time_kernel(tgemm_ctx *ctx, const tgemm__kernel *kernel, const tgemm__shape *shape,
                                const tgemm__operands *sets, int n_sets,
                                const tgemm__timing_options *opt_in, tgemm__timing *out) {
  if (out) {
    out->median_us = out->min_us = out->max_us = out->mean_us = NAN;
    out->reps = out->calls = 0;
    out->wall_s = NAN;
  }
  if (!ctx || !kernel || !shape || !sets || !out)
    return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm__time_kernel: NULL argument");
  if (n_sets < 1)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tgemm__time_kernel: %d operand sets", n_sets);
  tgemm__timing_options opt;
  if (opt_in) opt = *opt_in;
  else tgemm__timing_options_default(&opt);
  if (opt.max_reps < 1) opt.max_reps = 1;
  if (opt.max_reps > 1000000) opt.max_reps = 1000000; /* bounds the sample buffer */
  if (!(opt.max_seconds > 0)) opt.max_seconds = 1e-3;
  const tgemm__backend *be = ctx->backend;
  bool flush = opt.flush != TGEMM__FLUSH_NONE && be->flush_cache;
  if (opt.graph && !(be->graph_begin && be->graph_end && be->graph_launch && be->graph_free))
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED, "graph timing: the %s backend has no graphs", be->name);
  if (opt.graph && opt.flush != TGEMM__FLUSH_NONE)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "graph timing replays calls back to back: it takes flush none, not %s",
                            tgemm__flush_mode_name(opt.flush));

  double *samples = malloc((size_t)opt.max_reps * sizeof *samples);
  if (!samples) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tgemm__time_kernel: out of memory");
  double t0 = tgemm__now_s();
  int next_set = 0;
  void *graph = NULL;
  tgemm_status st = TGEMM_OK;

  /* Warm-up: at least one run (lazy set-up, page faults, clocks), more
   * while they take at most a quarter of the budget. */
  double est_us = NAN;
  for (int i = 0; i < (opt.warmup > 1 ? opt.warmup : 1); i++) {
    double before = tgemm__now_s();
    if (i > 0 && before - t0 + (before - t0) / i > 0.25 * opt.max_seconds) break;
    if ((st = timed_runs(ctx, kernel, shape, sets, n_sets, &next_set, 1, NULL, &est_us)) != TGEMM_OK) goto done;
  }

  /* Without flushes, time groups of calls when one call is short: on a host
   * clock the clock's own cost, on a GPU the launch gap after each
   * synchronizing timer_stop, would otherwise be part of the sample.  (A
   * flush before each run keeps the GPU busy while the run is queued, so
   * there is no gap to hide.) */
  int group = 1;
  double interval_us = opt.graph && opt.min_interval_us < GRAPH_MIN_INTERVAL_US ? GRAPH_MIN_INTERVAL_US
                                                                                 : opt.min_interval_us;
  if (!flush && isfinite(est_us) && est_us < interval_us) {
    double g = ceil(interval_us / (est_us > 0.01 ? est_us : 0.01));
    group = g > MAX_GROUP ? MAX_GROUP : (int)g;
  }
  if (opt.graph) {
    /* Every replay starts again at set 0: a whole number of rotations
     * keeps each weight's reuse distance n_sets runs, as without a graph. */
    group = (group + n_sets - 1) / n_sets * n_sets;
    if ((st = record_graph(ctx, kernel, shape, sets, n_sets, group, &graph)) != TGEMM_OK) goto done;
    double unused;
    if ((st = timed_runs(ctx, kernel, shape, sets, n_sets, &next_set, group, graph, &unused)) != TGEMM_OK)
      goto done; /* the first replay uploads the graph */
  }

  /* A sample that a stall (preemption, a page fault storm) made long must
   * not end the timing alone: while the warm-up says MIN_REPS samples fit
   * the budget, take them, up to a hard limit of 4x the budget. */
  double planned_s = isfinite(est_us) ? est_us * group * 1e-6 : INFINITY;
  int reps = 0, calls = 0;
  double last_iter_s = 0;
  while (reps < opt.max_reps) {
    double start = tgemm__now_s();
    bool owed = reps < MIN_REPS && planned_s * MIN_REPS <= opt.max_seconds &&
                start - t0 < 4 * opt.max_seconds;
    if (reps > 0 && !owed && start - t0 + last_iter_s > opt.max_seconds) break;
    if (flush && (st = be->flush_cache(ctx, opt.flush)) != TGEMM_OK) goto done;
    double us;
    if ((st = timed_runs(ctx, kernel, shape, sets, n_sets, &next_set, group, graph, &us)) != TGEMM_OK) goto done;
    samples[reps++] = us / group;
    calls += group;
    last_iter_s = tgemm__now_s() - start;
  }

  qsort(samples, (size_t)reps, sizeof *samples, compare_double);
  double sum = 0;
  for (int i = 0; i < reps; i++) sum += samples[i];
  out->median_us = reps % 2 ? samples[reps / 2] : 0.5 * (samples[reps / 2 - 1] + samples[reps / 2]);
  out->min_us = samples[0];
  out->max_us = samples[reps - 1];
  out->mean_us = sum / reps;
  out->reps = reps;
  out->calls = calls;
  out->wall_s = tgemm__now_s() - t0;
done:
  if (graph) be->graph_free(ctx, graph);
  free(samples);
  if (st != TGEMM_OK && ctx->last_error[0] == '\0')
    tgemm__set_error(ctx, st, "timing kernel %s (M=%lld N=%lld K=%lld): %s", kernel->name,
                     (long long)shape->m, (long long)shape->n, (long long)shape->k, tgemm_status_str(st));
  return st;
}

static const char *const flush_names[] = {"none", "clean", "dirty"};

const char *tgemm__flush_mode_name(tgemm__flush_mode mode) {
  return (unsigned)mode < sizeof flush_names / sizeof *flush_names ? flush_names[mode] : "?";
}

bool tgemm__flush_mode_parse(const char *text, tgemm__flush_mode *out) {
  for (unsigned i = 0; text && i < sizeof flush_names / sizeof *flush_names; i++)
    if (!strcmp(text, flush_names[i])) {
      *out = (tgemm__flush_mode)i;
      return true;
    }
  return false;
}

/* --------------------------------------------------------------- floors */

tgemm_dtype tgemm__route_weight_dtype(const tgemm__shape *shape, tgemm_route route) {
  return route == TGEMM_ROUTE_W4A16 || route == TGEMM_ROUTE_W4A4 ? TGEMM_MXFP4 : shape->dtype;
}

double tgemm__shape_bytes(const tgemm__shape *s, tgemm_dtype weight_dtype) {
  double m = (double)s->m, n = (double)s->n, k = (double)s->k;
  double x = m * k * (double)tgemm_dtype_size(s->dtype);
  double w = weight_dtype == TGEMM_MXFP4
                 ? n * (double)(tgemm_mxfp4_packed_cols(s->k) + tgemm_mxfp4_scale_cols(s->k))
                 : n * k * (double)tgemm_dtype_size(weight_dtype);
  double y = m * n * (double)tgemm_dtype_size(s->out_dtype);
  double bias = s->has_bias ? n * (double)tgemm_dtype_size(s->out_dtype) : 0.0;
  return x + w + y + bias;
}

double tgemm__shape_flops(const tgemm__shape *s) {
  return 2.0 * (double)s->m * (double)s->n * (double)s->k;
}

double tgemm__floor_us(const tgemm__shape *shape, tgemm_dtype weight_dtype, double bandwidth_gbs,
                       double tflops) {
  double mem_us = bandwidth_gbs > 0 ? tgemm__shape_bytes(shape, weight_dtype) / (bandwidth_gbs * 1e3) : 0;
  double math_us = tflops > 0 ? tgemm__shape_flops(shape) / (tflops * 1e6) : 0;
  return mem_us > math_us ? mem_us : math_us;
}

/* ------------------------------------------------------------- ceilings */

/* A device copy is one call; host memory needs every core streaming to
 * reach its bandwidth, as the CPU kernels do. */
static tgemm_status copy_all_threads(tgemm_ctx *ctx, void *dst, const void *src, size_t bytes) {
  const tgemm__backend *be = ctx->backend;
  if (be->location == TGEMM_DEVICE) return be->copy(ctx, dst, src, bytes, TGEMM_COPY_DEVICE_TO_DEVICE);
  enum { CHUNKS = 64 };
  size_t chunk = (bytes + CHUNKS - 1) / CHUNKS;
  tgemm_status st = TGEMM_OK;
#pragma omp parallel for schedule(static) num_threads(ctx->device_key.units > 0 ? ctx->device_key.units : 1)
  for (int c = 0; c < CHUNKS; c++) {
    size_t begin = (size_t)c * chunk, len = begin < bytes ? (bytes - begin < chunk ? bytes - begin : chunk) : 0;
    if (len && be->copy(ctx, (char *)dst + begin, (const char *)src + begin, len, TGEMM_COPY_DEVICE_TO_DEVICE) != TGEMM_OK)
      st = TGEMM_BACKEND_ERROR; /* the host copy cannot fail; kept for form */
  }
  return st;
}

static tgemm_status measure_copy(tgemm_ctx *ctx, double *gbs) {
  const tgemm__backend *be = ctx->backend;
  size_t bytes = be->location == TGEMM_DEVICE ? (size_t)1 << 30 : (size_t)128 << 20;
  void *src = NULL, *dst = NULL;
  tgemm_status st = tgemm_malloc(ctx, bytes, &src);
  if (st == TGEMM_OK) st = tgemm_malloc(ctx, bytes, &dst);
  double best_us = INFINITY;
  for (int rep = 0; rep < 8 && st == TGEMM_OK; rep++) {
    double us = NAN;
    st = be->timer_start(ctx);
    if (st == TGEMM_OK) st = copy_all_threads(ctx, dst, src, bytes);
    tgemm_status stop = be->timer_stop(ctx, &us);
    if (st == TGEMM_OK) st = stop;
    if (rep >= 2 && us < best_us) best_us = us; /* the first two touch the pages */
  }
  tgemm_free(ctx, src);
  tgemm_free(ctx, dst);
  if (st == TGEMM_OK) *gbs = 2.0 * (double)bytes / (best_us * 1e3); /* read + write */
  return st;
}

static tgemm_status measure_gemm(tgemm_ctx *ctx, double *tflops) {
  const tgemm__backend *be = ctx->backend;
  int64_t size = be->location == TGEMM_DEVICE ? 8192 : 2048;
  tgemm__shape s = {size, size, size, TGEMM_BF16, TGEMM_BF16, false};
  tgemm_route route = TGEMM_ROUTE_LIBRARY;
  if (!be->supports(ctx, &s, route)) {
    route = TGEMM_ROUTE_REFERENCE; /* slow: keep it small */
    s.m = s.n = s.k = 256;
  }
  tgemm__kernel kernel;
  tgemm_status st = be->default_kernel(ctx, &s, route, &kernel);
  if (st != TGEMM_OK) return st;
  tgemm__workload *wl;
  if ((st = tgemm__workload_create(ctx, &s, 1, 1234, false, &wl)) != TGEMM_OK) return st;
  tgemm__timing_options opt;
  tgemm__timing_options_default(&opt);
  opt.warmup = 2;
  opt.max_reps = 10;
  opt.max_seconds = 2.0;
  opt.flush = TGEMM__FLUSH_NONE; /* compute bound: the cache does not matter */
  tgemm__timing t;
  st = tgemm__time_kernel(ctx, &kernel, &s, tgemm__workload_sets(wl), 1, &opt, &t);
  tgemm__workload_free(wl);
  if (st == TGEMM_OK) *tflops = tgemm__shape_flops(&s) / (t.min_us * 1e6);
  return st;
}

tgemm_status tgemm__measure_ceilings(tgemm_ctx *ctx, double *bandwidth_gbs, double *tflops) {
  if (!ctx || !bandwidth_gbs || !tflops)
    return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm__measure_ceilings: NULL argument");
  *bandwidth_gbs = *tflops = NAN;
  tgemm_status st = measure_copy(ctx, bandwidth_gbs);
  if (st == TGEMM_OK) st = measure_gemm(ctx, tflops);
  return st;
}
