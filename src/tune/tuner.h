/* The tuner: for each shape, every candidate kernel of every route is
 * checked for error, timed, and the fastest per (shape, route) goes into
 * the tuned table, saved after each shape so that an interrupted run
 * leaves a valid table. */
#ifndef TGEMM_TUNE_TUNER_H
#define TGEMM_TUNE_TUNER_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/internal.h"
#include "tune/timing.h"

/* A dense-route kernel whose error exceeds this is a bug, not a choice. */
#define TGEMM__TUNE_DENSE_MAX_ERROR 1e-2
/* A candidate replaces its route's built-in choice in the table only when
 * it is faster by more than this fraction: on the H100 the same kernel
 * measured up to ~5% apart between the tuner and a later bench run
 * (docs/BENCHMARKS.md), and a table must not encode noise as a win. */
#define TGEMM__TUNE_WIN_MARGIN 0.03
/* Whether a candidate's median beats the built-in choice's by the margin. */
bool tgemm__tune_is_win(double candidate_us, double default_us);

typedef struct tgemm__tune_options {
  const tgemm__shape *shapes;
  int n_shapes;
  const tgemm_route *routes; /* routes to try, in order */
  int n_routes;
  const char *out_path;      /* table written after every shape */
  tgemm__timing_options timing;
  int n_weight_copies;       /* <= 0: enough to exceed the cache */
  uint64_t seed;
  FILE *log;                 /* progress lines; NULL = quiet */
  /* Measured ceilings (tgemm__measure_ceilings); when > 0 the log gives
   * each time as a fraction of its floor.  0 = not measured. */
  double bandwidth_gbs, tflops;
  bool verbose;              /* a line per kernel, not only per shape */
  /* Polled between kernels: when it becomes non-zero the tuner saves what
   * it has and returns TGEMM_INTERRUPTED.  NULL = never. */
  volatile sig_atomic_t *stop;
} tgemm__tune_options;

typedef struct tgemm__tune_summary {
  int shapes_done;
  int kernels_timed;
  int kernels_rejected; /* failed to run, or error over the bound */
  int rows_written;
} tgemm__tune_summary;

/* Defaults: all four routes (skinny, library, w4a16, w4a4), timing
 * defaults, automatic copies, a fixed seed, no log. */
void tgemm__tune_options_default(tgemm__tune_options *opt);

tgemm_status tgemm__tune(tgemm_ctx *ctx, const tgemm__tune_options *opt,
                         tgemm__tune_summary *summary);

/* SIGINT/SIGTERM set *tgemm__tune_stop_flag() (SA_RESTART) instead of
 * killing the process; returns the flag for tgemm__tune_options.stop.  The
 * flag holds the signal number. */
volatile sig_atomic_t *tgemm__tune_install_signal_handlers(void);

#endif
