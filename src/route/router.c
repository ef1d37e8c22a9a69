/* The router: pure should_use_* predicates, strung together by
 * tgemm__route_select into forced -> table -> default -> reference. */
#include "route/router.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "route/table.h"
#include "route/untuned_log.h"

/* Enough for every backend's candidate list of one route. */

/* ---------------------------------------------------------- predicates */

int64_t tgemm__route_padded_m(int64_t m) {
  int64_t step = m <= 256 ? 16 : m <= 1024 ? 32 : m <= 4096 ? 64 : 128;
  if (m < 1) return step;
  if (m > INT64_MAX - step) return m;
  return (m + step - 1) / step * step;
}

int64_t tgemm__route_pow2_m(int64_t m) {
  if (m <= 1) return 1;
  int64_t p = 1;
  while (p < m) {
    if (p > INT64_MAX / 2) return m;
    p *= 2;
  }
  return p;
}

int tgemm__route_table_ms(int64_t m, int64_t out[3]) {
  int n = 0;
  int64_t tries[3] = {m, tgemm__route_padded_m(m), tgemm__route_pow2_m(m)};
  for (int i = 0; i < 3; i++) {
    bool seen = false;
    for (int j = 0; j < n; j++) seen |= out[j] == tries[i];
    if (!seen) out[n++] = tries[i];
  }
  return n;
}

double tgemm__route_error_budget(const tgemm_ctx *ctx, const tgemm_linear_options *opts) {
  if (opts && opts->error_budget >= 0) return opts->error_budget;
  return ctx->options.error_budget;
}

bool tgemm__route_is_mxfp4(tgemm_route route) {
  return route == TGEMM_ROUTE_W4A16 || route == TGEMM_ROUTE_W4A4;
}

bool tgemm__route_weight_ok(const struct tgemm_weight *w, tgemm_route route) {
  if (!w) return false;
  switch (route) {
    case TGEMM_ROUTE_SKINNY:
    case TGEMM_ROUTE_LIBRARY: return w->has_dense;
    case TGEMM_ROUTE_W4A16:
    case TGEMM_ROUTE_W4A4: return w->has_mxfp4;
    case TGEMM_ROUTE_REFERENCE: return w->has_dense || w->has_mxfp4;
    default: return false;
  }
}

bool tgemm__route_error_ok(tgemm_route route, double error, double budget,
                           const struct tgemm_weight *w) {
  if (!tgemm__route_is_mxfp4(route)) return true;
  if (route == TGEMM_ROUTE_W4A16 && w && !w->has_dense) return true;
  return isfinite(error) && error <= budget;
}

bool tgemm__should_use_forced(const tgemm_linear_options *opts) {
  return opts && opts->route != TGEMM_ROUTE_AUTO;
}

bool tgemm__should_use_table(const tgemm_ctx *ctx) { return ctx->tuned && ctx->table != NULL; }

bool tgemm__should_use_row(tgemm_ctx *ctx, const tgemm__shape *shape, const struct tgemm_weight *w,
                           const struct tgemm__table_row *row, double budget) {
  tgemm_route route = row->kernel.route;
  return tgemm__route_weight_ok(w, route) &&
         tgemm__route_error_ok(route, row->error, budget, w) &&
         ctx->backend->supports(ctx, shape, route);
}

bool tgemm__should_use_skinny(tgemm_ctx *ctx, const tgemm__shape *shape,
                              const struct tgemm_weight *w) {
  return tgemm__route_weight_ok(w, TGEMM_ROUTE_SKINNY) &&
         ctx->backend->supports(ctx, shape, TGEMM_ROUTE_SKINNY);
}

bool tgemm__should_use_library(tgemm_ctx *ctx, const tgemm__shape *shape,
                               const struct tgemm_weight *w) {
  return tgemm__route_weight_ok(w, TGEMM_ROUTE_LIBRARY) &&
         ctx->backend->supports(ctx, shape, TGEMM_ROUTE_LIBRARY);
}

bool tgemm__should_use_w4a16_only(tgemm_ctx *ctx, const tgemm__shape *shape,
                                  const struct tgemm_weight *w) {
  return w && !w->has_dense && w->has_mxfp4 &&
         ctx->backend->supports(ctx, shape, TGEMM_ROUTE_W4A16);
}

/* ------------------------------------------------------------- choosing */

static const char *weight_form_needed(tgemm_route route) {
  return tgemm__route_is_mxfp4(route) ? "MXFP4 (create it with TGEMM_WEIGHT_MXFP4)" : "dense";
}

static tgemm_status select_forced(tgemm_ctx *ctx, const tgemm__shape *s, const struct tgemm_weight *w,
                                  const tgemm_linear_options *opts, tgemm__kernel *out) {
  tgemm_route route = opts->route;
  if ((unsigned)route >= TGEMM_ROUTE_COUNT)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tgemm_linear: unknown route %d", (int)route);
  if (!tgemm__route_weight_ok(w, route))
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "tgemm_linear: route %s needs the %s form of the weight (N=%lld K=%lld)",
                            tgemm_route_name(route), weight_form_needed(route), (long long)s->n,
                            (long long)s->k);
  if (!ctx->backend->supports(ctx, s, route))
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "tgemm_linear: the %s backend does not support route %s for M=%lld N=%lld "
                            "K=%lld (x %s, y %s%s)",
                            ctx->backend->name, tgemm_route_name(route), (long long)s->m,
                            (long long)s->n, (long long)s->k, tgemm_dtype_name(s->dtype),
                            tgemm_dtype_name(s->out_dtype), s->has_bias ? ", bias" : "");
  if (!opts->kernel || !opts->kernel[0]) return ctx->backend->default_kernel(ctx, s, route, out);

  tgemm__kernel cands[TGEMM__MAX_CANDIDATES];
  int n = ctx->backend->candidates(ctx, s, route, cands, TGEMM__MAX_CANDIDATES);
  if (n < 0) return (tgemm_status)n;
  for (int i = 0; i < n; i++)
    if (strcmp(cands[i].name, opts->kernel) == 0) {
      *out = cands[i];
      return TGEMM_OK;
    }
  char names[256] = "";
  size_t used = 0;
  for (int i = 0; i < n && used + 1 < sizeof names; i++) {
    int wrote = snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", cands[i].name);
    if (wrote < 0) break;
    used += (size_t)wrote;
  }
  return tgemm__set_error(ctx, TGEMM_NOT_FOUND,
                          "tgemm_linear: no kernel named \"%s\" in route %s for M=%lld N=%lld K=%lld "
                          "(candidates: %s)",
                          opts->kernel, tgemm_route_name(route), (long long)s->m, (long long)s->n,
                          (long long)s->k, n ? names : "none");
}

/* Is a table row's kernel one the backend can run at the row's own shape?
 * Checked once per row (validate_kernel, e.g. cublasLtMatmulAlgoCheck, or a
 * candidate with that name), then remembered in the table. */
static bool row_kernel_valid(tgemm_ctx *ctx, const struct tgemm__table_row *row) {
  int state = tgemm__table_row_check_get(ctx->table, row);
  if (state) return state == 1;
  char saved_error[TGEMM__ERROR_MAX];
  memcpy(saved_error, ctx->last_error, sizeof saved_error);
  bool ok = false;
  if (ctx->backend->validate_kernel) {
    ok = ctx->backend->validate_kernel(ctx, &row->shape, &row->kernel) == TGEMM_OK;
  } else {
    tgemm__kernel cands[TGEMM__MAX_CANDIDATES];
    int n = ctx->backend->candidates(ctx, &row->shape, row->kernel.route, cands, TGEMM__MAX_CANDIDATES);
    for (int i = 0; i < n && !ok; i++) ok = strcmp(cands[i].name, row->kernel.name) == 0;
  }
  if (!ok)
    tgemm__warn_once("table-invalid-kernel",
                     "tuned table: kernel %s (route %s, M=%lld N=%lld K=%lld) is not usable on this "
                     "build or device; such rows fall back to the default rule (%s)",
                     row->kernel.name, tgemm_route_name(row->kernel.route),
                     (long long)row->shape.m, (long long)row->shape.n, (long long)row->shape.k,
                     ctx->last_error[0] ? ctx->last_error : "no such kernel");
  /* declining a row is not an error of this call */
  memcpy(ctx->last_error, saved_error, sizeof saved_error);
  tgemm__table_row_check_set(ctx->table, row, ok ? 1 : 2);
  return ok;
}

/* The fastest usable row at the first M (exact, bucket, power of two)
 * that has one. */
static const tgemm__table_row *select_row(tgemm_ctx *ctx, const tgemm__shape *shape,
                                          const struct tgemm_weight *w, double budget) {
  int64_t ms[3];
  int n_ms = tgemm__route_table_ms(shape->m, ms);
  for (int i = 0; i < n_ms; i++) {
    tgemm__shape key = *shape;
    key.m = ms[i];
    const tgemm__table_row *rows[TGEMM_ROUTE_COUNT], *best = NULL;
    if (!tgemm__table_lookup_routes(ctx->table, &key, rows)) continue;
    for (int r = TGEMM_ROUTE_REFERENCE; r < TGEMM_ROUTE_COUNT; r++) {
      const tgemm__table_row *row = rows[r];
      if (!row || !tgemm__should_use_row(ctx, shape, w, row, budget)) continue;
      if (best && !(row->us < best->us)) continue;
      if (row_kernel_valid(ctx, row)) best = row;
    }
    if (best) return best;
  }
  return NULL;
}

/* Ask the backend for its kernel in a route; declining is not an error. */
static bool try_default(tgemm_ctx *ctx, const tgemm__shape *shape, tgemm_route route,
                        tgemm__kernel *out) {
  char saved_error[TGEMM__ERROR_MAX];
  memcpy(saved_error, ctx->last_error, sizeof saved_error);
  if (ctx->backend->default_kernel(ctx, shape, route, out) == TGEMM_OK) return true;
  memcpy(ctx->last_error, saved_error, sizeof saved_error);
  return false;
}

tgemm_status tgemm__route_select(tgemm_ctx *ctx, const tgemm__shape *shape,
                                 const struct tgemm_weight *w, const tgemm_linear_options *opts,
                                 tgemm__kernel *out, const char **reason) {
  const char *unused_reason;
  if (!reason) reason = &unused_reason;
  if (tgemm__should_use_forced(opts)) {
    *reason = "forced";
    return select_forced(ctx, shape, w, opts, out);
  }
  if (tgemm__should_use_table(ctx)) {
    const tgemm__table_row *row = select_row(ctx, shape, w, tgemm__route_error_budget(ctx, opts));
    if (row) {
      *out = row->kernel;
      *reason = "table";
      return TGEMM_OK;
    }
  }
  if (ctx->untuned_log) tgemm__untuned_log_record(ctx, shape);

  *reason = "default";
  if (tgemm__should_use_skinny(ctx, shape, w) && try_default(ctx, shape, TGEMM_ROUTE_SKINNY, out))
    return TGEMM_OK;
  if (tgemm__should_use_library(ctx, shape, w) && try_default(ctx, shape, TGEMM_ROUTE_LIBRARY, out))
    return TGEMM_OK;
  if (tgemm__should_use_w4a16_only(ctx, shape, w) && try_default(ctx, shape, TGEMM_ROUTE_W4A16, out))
    return TGEMM_OK;
  *reason = "reference";
  return ctx->backend->default_kernel(ctx, shape, TGEMM_ROUTE_REFERENCE, out);
}
