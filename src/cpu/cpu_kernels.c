/* The CPU kernel registry: which routes run here, the kernel variants of
 * each (stable names), the built-in choice within a route, and run(). */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cpu/cpu_internal.h"

/* The skinny route's reach: up to 16 rows the weight is streamed once with
 * every activation row kept hot. */
#define SKINNY_MAX_M 16
/* The streaming W4A16 kernel decodes each weight block once per call and
 * reuses it for every x row; from about this M the blocked one (decoded
 * panels through sgemm) is as fast. */
#define W4A16_STREAM_MAX_M 32

/* Room for every variant of one route. */
#define MAX_VARIANTS 8

static const int skinny_rows[] = {1, 2, 4, 8};
static const int mx_rows[] = {1, 2, 4};

static bool dense_dtype(tgemm_dtype d) {
  return d == TGEMM_F32 || d == TGEMM_F16 || d == TGEMM_BF16;
}

static void set_kernel(tgemm__kernel *k, tgemm_route route, int family, int rows,
                       const char *name) {
  memset(k, 0, sizeof *k);
  k->route = route;
  k->params[0] = family;
  k->params[1] = rows;
  snprintf(k->name, sizeof k->name, "%s", name);
}

bool tgemm__cpu_supports(tgemm_ctx *ctx, const tgemm__shape *shape, tgemm_route route) {
  if (!shape || shape->m <= 0 || shape->n <= 0 || shape->k <= 0) return false;
  if (!dense_dtype(shape->dtype)) return false;
  if (shape->out_dtype != TGEMM_BF16 && shape->out_dtype != TGEMM_F32) return false;
  switch (route) {
    case TGEMM_ROUTE_REFERENCE: return true;
    case TGEMM_ROUTE_SKINNY: return shape->m <= SKINNY_MAX_M;
    /* OpenBLAS takes 32-bit sizes. */
    case TGEMM_ROUTE_LIBRARY:
      return shape->m <= INT_MAX && shape->n <= INT_MAX && shape->k <= INT_MAX;
    /* These also need the weight's MXFP4 form, which the shape cannot say;
     * run() reports TGEMM_UNSUPPORTED when it is missing. */
    case TGEMM_ROUTE_W4A16:
    case TGEMM_ROUTE_W4A4: return true;
    default: return false;
  }
}

/* Every variant of a route, whatever M: candidates() filters these by
 * shape, and run() resolves a kernel given only by name against them. */
static int all_kernels(tgemm_route route, tgemm_dtype dtype, tgemm__kernel *out, int cap) {
  tgemm__kernel list[MAX_VARIANTS];
  int n = 0;
  char name[TGEMM__KERNEL_NAME_MAX];
  switch (route) {
    case TGEMM_ROUTE_REFERENCE:
      set_kernel(&list[n++], route, TGEMM__CPU_K_REFERENCE, 0, "cpu_reference");
      break;
    case TGEMM_ROUTE_SKINNY:
      for (size_t i = 0; i < sizeof skinny_rows / sizeof skinny_rows[0]; i++) {
        snprintf(name, sizeof name, "cpu_skinny_%s_r%d", tgemm_dtype_name(dtype), skinny_rows[i]);
        set_kernel(&list[n++], route, TGEMM__CPU_K_SKINNY, skinny_rows[i], name);
      }
      break;
    case TGEMM_ROUTE_LIBRARY:
      /* No sbgemm: Debian's OpenBLAS 0.3.21 declares cblas_sbgemm in
       * cblas.h but does not export it (built without BUILD_BFLOAT16). */
      set_kernel(&list[n++], route, TGEMM__CPU_K_SGEMM, 0, "cpu_openblas_sgemm");
      break;
    case TGEMM_ROUTE_W4A16:
      for (size_t i = 0; i < sizeof mx_rows / sizeof mx_rows[0]; i++) {
        snprintf(name, sizeof name, "cpu_w4a16_stream_r%d", mx_rows[i]);
        set_kernel(&list[n++], route, TGEMM__CPU_K_W4A16_STREAM, mx_rows[i], name);
      }
      set_kernel(&list[n++], route, TGEMM__CPU_K_W4A16_BLOCKED, 0, "cpu_w4a16_blocked");
      break;
    case TGEMM_ROUTE_W4A4:
      for (size_t i = 0; i < sizeof mx_rows / sizeof mx_rows[0]; i++) {
        snprintf(name, sizeof name, "cpu_w4a4_r%d", mx_rows[i]);
        set_kernel(&list[n++], route, TGEMM__CPU_K_W4A4, mx_rows[i], name);
      }
      break;
    default: break;
  }
  int written = 0;
  for (int i = 0; i < n && written < cap; i++) out[written++] = list[i];
  return written;
}

/* Variants worth timing for this shape. */
static bool worth_trying(const tgemm__kernel *k, const tgemm__shape *shape) {
  switch (k->params[0]) {
    case TGEMM__CPU_K_W4A16_STREAM: return shape->m <= W4A16_STREAM_MAX_M;
    default: return true;
  }
}

int tgemm__cpu_candidates(tgemm_ctx *ctx, const tgemm__shape *shape, tgemm_route route,
                          tgemm__kernel *out, int cap) {
  if (!shape || (!out && cap > 0) || cap < 0) return TGEMM_INVALID_ARGUMENT;
  if (!tgemm__cpu_supports(ctx, shape, route)) return 0;
  tgemm__kernel all[MAX_VARIANTS];
  int n = all_kernels(route, shape->dtype, all, MAX_VARIANTS), written = 0;
  for (int i = 0; i < n && written < cap; i++)
    if (worth_trying(&all[i], shape)) out[written++] = all[i];
  return written;
}

/* Rows of W per step within a route, by M.  From CPU-time measurements on
 * a 2-core Zen 3 (DeepSeek-V3 projection shapes); parameters change speed
 * only, and the tuner measures them all. */
static int skinny_default_rows(int64_t m) { return m == 1 ? 8 : 4; }
static int w4a16_default_rows(int64_t m) { return m <= 2 ? 1 : 4; }
static int w4a4_default_rows(int64_t m) { return m == 1 ? 4 : 1; }

static tgemm_status pick(tgemm_ctx *ctx, const tgemm__shape *shape, tgemm_route route,
                         int family, int rows, tgemm__kernel *out) {
  tgemm__kernel all[MAX_VARIANTS];
  int n = all_kernels(route, shape->dtype, all, MAX_VARIANTS);
  for (int i = 0; i < n; i++)
    if (all[i].params[0] == family && all[i].params[1] == rows) {
      *out = all[i];
      return TGEMM_OK;
    }
  return tgemm__set_error(ctx, TGEMM_UNSUPPORTED, "cpu default_kernel: no kernel for route %s",
                          tgemm_route_name(route));
}

tgemm_status tgemm__cpu_default_kernel(tgemm_ctx *ctx, const tgemm__shape *shape,
                                       tgemm_route route, tgemm__kernel *out) {
  if (!shape || !out)
    return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "cpu default_kernel: NULL argument");
  if (!tgemm__cpu_supports(ctx, shape, route))
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "cpu backend: route %s does not support M=%lld N=%lld K=%lld %s->%s",
                            tgemm_route_name(route), (long long)shape->m, (long long)shape->n,
                            (long long)shape->k, tgemm_dtype_name(shape->dtype),
                            tgemm_dtype_name(shape->out_dtype));
  switch (route) {
    case TGEMM_ROUTE_REFERENCE: return pick(ctx, shape, route, TGEMM__CPU_K_REFERENCE, 0, out);
    case TGEMM_ROUTE_SKINNY:
      return pick(ctx, shape, route, TGEMM__CPU_K_SKINNY, skinny_default_rows(shape->m), out);
    case TGEMM_ROUTE_LIBRARY: return pick(ctx, shape, route, TGEMM__CPU_K_SGEMM, 0, out);
    case TGEMM_ROUTE_W4A16:
      if (shape->m <= W4A16_STREAM_MAX_M)
        return pick(ctx, shape, route, TGEMM__CPU_K_W4A16_STREAM, w4a16_default_rows(shape->m),
                    out);
      return pick(ctx, shape, route, TGEMM__CPU_K_W4A16_BLOCKED, 0, out);
    case TGEMM_ROUTE_W4A4:
      return pick(ctx, shape, route, TGEMM__CPU_K_W4A4, w4a4_default_rows(shape->m), out);
    default:
      return tgemm__set_error(ctx, TGEMM_UNSUPPORTED, "cpu default_kernel: route %s",
                              tgemm_route_name(route));
  }
}

static bool in_list(int32_t v, const int *list, size_t count) {
  for (size_t i = 0; i < count; i++)
    if (list[i] == v) return true;
  return false;
}

/* Are a kernel's parameters those of one of our variants?  Checked without
 * building names: this runs on every call. */
static bool params_known(const tgemm__kernel *k) {
  switch (k->params[0]) {
    case TGEMM__CPU_K_REFERENCE: return k->route == TGEMM_ROUTE_REFERENCE;
    case TGEMM__CPU_K_SGEMM: return k->route == TGEMM_ROUTE_LIBRARY;
    case TGEMM__CPU_K_W4A16_BLOCKED: return k->route == TGEMM_ROUTE_W4A16;
    case TGEMM__CPU_K_SKINNY:
      return k->route == TGEMM_ROUTE_SKINNY &&
             in_list(k->params[1], skinny_rows, sizeof skinny_rows / sizeof skinny_rows[0]);
    case TGEMM__CPU_K_W4A16_STREAM:
      return k->route == TGEMM_ROUTE_W4A16 && in_list(k->params[1], mx_rows, sizeof mx_rows / sizeof mx_rows[0]);
    case TGEMM__CPU_K_W4A4:
      return k->route == TGEMM_ROUTE_W4A4 && in_list(k->params[1], mx_rows, sizeof mx_rows / sizeof mx_rows[0]);
    default: return false;
  }
}

/* A kernel normally carries its parameters (from candidates(), the router
 * or a table row) and is used as is; one known only by name is looked up
 * among the variants. */
static tgemm_status resolve(tgemm_ctx *ctx, const tgemm__kernel *kernel, tgemm_dtype dtype,
                            tgemm__kernel *out) {
  if (kernel->params[0] != 0 && params_known(kernel)) {
    *out = *kernel;
    return TGEMM_OK;
  }
  tgemm__kernel all[MAX_VARIANTS];
  int n = all_kernels(kernel->route, dtype, all, MAX_VARIANTS);
  for (int i = 0; i < n && i < MAX_VARIANTS; i++) {
    bool same = kernel->params[0] != 0
                    ? all[i].params[0] == kernel->params[0] &&
                          all[i].params[1] == kernel->params[1]
                    : strcmp(all[i].name, kernel->name) == 0;
    if (same) {
      *out = all[i];
      return TGEMM_OK;
    }
  }
  return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                          "cpu run: unknown kernel \"%s\" (params %d,%d) for route %s",
                          kernel->name, (int)kernel->params[0], (int)kernel->params[1],
                          tgemm_route_name(kernel->route));
}

tgemm_status tgemm__cpu_run(tgemm_ctx *ctx, const tgemm__kernel *kernel,
                            const tgemm__shape *shape, const tgemm__operands *ops) {
  if (!kernel || !ops || !ops->x || !ops->w || !ops->y)
    return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "cpu run: NULL kernel or operand");
  const struct tgemm_weight *w = ops->w;
  tgemm__kernel k;
  tgemm_status st = resolve(ctx, kernel, ops->x->dtype, &k);
  if (st != TGEMM_OK) return st;
  bool needs_dense = k.params[0] == TGEMM__CPU_K_SKINNY || k.params[0] == TGEMM__CPU_K_SGEMM;
  bool needs_mxfp4 = k.params[0] == TGEMM__CPU_K_W4A16_STREAM ||
                     k.params[0] == TGEMM__CPU_K_W4A16_BLOCKED || k.params[0] == TGEMM__CPU_K_W4A4;
  if (needs_dense && !w->has_dense)
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "cpu run: kernel %s needs a dense weight; this one is MXFP4 only", k.name);
  if (needs_mxfp4 && !w->has_mxfp4)
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "cpu run: kernel %s needs the weight's MXFP4 form "
                            "(create it with TGEMM_WEIGHT_MXFP4)",
                            k.name);
  switch (k.params[0]) {
    case TGEMM__CPU_K_REFERENCE: return tgemm__cpu_run_reference(ctx, ops);
    case TGEMM__CPU_K_SKINNY: return tgemm__cpu_run_skinny(ctx, k.params[1], ops);
    case TGEMM__CPU_K_SGEMM: return tgemm__cpu_run_sgemm(ctx, ops);
    case TGEMM__CPU_K_W4A16_STREAM: return tgemm__cpu_run_w4a16_stream(ctx, k.params[1], ops);
    case TGEMM__CPU_K_W4A16_BLOCKED: return tgemm__cpu_run_w4a16_blocked(ctx, ops);
    case TGEMM__CPU_K_W4A4: return tgemm__cpu_run_w4a4(ctx, k.params[1], ops);
    default: break;
  }
  (void)shape;
  return tgemm__set_error(ctx, TGEMM_UNSUPPORTED, "cpu run: kernel %s has no implementation",
                          k.name);
}
