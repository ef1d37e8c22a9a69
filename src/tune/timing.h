/* The timing core shared by the tuner and the bench (DESIGN.md §6):
 * warm-up, many timed repetitions with the backend's timer (device events
 * on CUDA), cold weights (cache flush and/or rotating weight copies),
 * medians, a time budget; and the two floors every result is judged by. */
#ifndef TGEMM_TUNE_TIMING_H
#define TGEMM_TUNE_TIMING_H

#include <stdbool.h>

#include "core/internal.h"

typedef struct tgemm__timing_options {
  int warmup;         /* untimed runs first (at least 1 always runs) */
  int max_reps;       /* timed repetitions at most */
  double max_seconds; /* wall budget for this kernel, warm-up included;
                         at least one timed repetition always runs */
  tgemm__flush_mode flush; /* backend->flush_cache before every timed run */
  /* Without a flush: time groups of runs so that each timed interval is
   * at least this long (host clock cost, GPU launch gaps). */
  double min_interval_us;
  /* Replay each group from a graph (backend->graph_*), as a served model's
   * decode graph runs its layers: no host launch cost, no gaps between
   * calls.  Needs flush NONE; groups last at least GRAPH_MIN_INTERVAL_US
   * and rotate through every set a whole number of times. */
  bool graph;
} tgemm__timing_options;

/* warmup 3, max_reps 100, max_seconds 1, clean flush, min_interval_us 100,
 * no graph. */
void tgemm__timing_options_default(tgemm__timing_options *opt);

typedef struct tgemm__timing {
  double median_us, min_us, max_us, mean_us; /* per call */
  int reps;        /* timed samples (each one call, or one group) */
  int calls;       /* calls timed in all */
  double wall_s;   /* wall time spent, warm-up included */
} tgemm__timing;

/* Time `kernel` on `shape`, cycling through the n_sets operand sets (each
 * with its own weight copy, so that weights come cold from memory).  out is
 * poisoned (NaN) first and filled only on success. */
tgemm_status tgemm__time_kernel(tgemm_ctx *ctx, const tgemm__kernel *kernel,
                                const tgemm__shape *shape,
                                const tgemm__operands *sets, int n_sets,
                                const tgemm__timing_options *opt,
                                tgemm__timing *out);

/* Bytes a call must move at least: x, W in its form (dense dtype or MXFP4
 * packed + scales), y, and bias when present.  weight_dtype is TGEMM_MXFP4
 * for the W4A16/W4A4 routes, else the shape's dtype. */
double tgemm__shape_bytes(const tgemm__shape *shape, tgemm_dtype weight_dtype);
/* 2·M·N·K. */
double tgemm__shape_flops(const tgemm__shape *shape);
/* The weight form a route reads: TGEMM_MXFP4 for W4A16/W4A4, else dtype. */
tgemm_dtype tgemm__route_weight_dtype(const tgemm__shape *shape, tgemm_route route);

/* The lower bound on a call's time in µs: max(bytes / bandwidth,
 * flops / rate), with bandwidth in GB/s and rate in TFLOP/s. */
/* "none", "clean", "dirty"; and back (false on an unknown name). */
const char *tgemm__flush_mode_name(tgemm__flush_mode mode);
bool tgemm__flush_mode_parse(const char *text, tgemm__flush_mode *out);

double tgemm__floor_us(const tgemm__shape *shape, tgemm_dtype weight_dtype,
                       double bandwidth_gbs, double tflops);

/* Measure the device's ceilings once: copy bandwidth (bytes read + written
 * per second, a large device-to-device copy) and the large-GEMM rate (the
 * library route on a square bf16 problem: 8192³ on a GPU, smaller on a
 * CPU).  Takes a second or two. */
tgemm_status tgemm__measure_ceilings(tgemm_ctx *ctx, double *bandwidth_gbs,
                                     double *tflops);

/* Wall clock in seconds (CLOCK_MONOTONIC). */
double tgemm__now_s(void);

#endif
