/* Workloads: random operands in backend memory, rotating weight copies, and
 * the error of one run against the double reference (src/cpu/cpu_reference.h)
 * computed on host copies of the checked rows. */
#include "tune/workload.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dtype_convert.h"
#include "cpu/cpu_reference.h"
#include "mxfp4/mxfp4.h"

/* Rows compared against the reference when M is larger than this. */
#define CHECK_ALL_ROWS_UP_TO 64
#define CHECK_SPREAD_ROWS 32
/* Enough for the smallest preset weight's MXFP4 form (kv_b TP8, 1.1 MB)
 * to span twice the H100's L2. */
#define MAX_WEIGHT_COPIES 128
/* Last-level cache assumed for a GPU (H100/H200 L2 is 50 MB). */
#define DEVICE_CACHE_BYTES ((int64_t)50 << 20)
/* Memory all weight copies may take together, beyond the first. */
#define DEVICE_COPIES_BUDGET ((int64_t)4 << 30)
#define HOST_COPIES_BUDGET ((int64_t)512 << 20)
/* Host staging buffer for poisoning y in pieces. */
#define POISON_CHUNK_BYTES ((size_t)4 << 20)

struct tgemm__workload {
  tgemm_ctx *ctx;
  tgemm__shape shape;
  int n_sets;
  bool has_mxfp4;
  tgemm_scale_mode mode;

  /* backend memory */
  void *dx, *dbias, *dy;
  void **dw;
  tgemm_matrix x, bias, y;
  tgemm_matrix *w_mats;
  tgemm_weight **weights;
  tgemm__operands *sets;

  /* host side of the error check: the checked rows of x, all of W and bias */
  int n_check;
  int64_t *check_rows;
  void *hx_rows; /* [n_check, K] */
  void *hw;      /* [N, K] */
  void *hbias;   /* [N] */
  uint8_t *hw_packed, *hw_scales; /* the host MXFP4 form, made on first need */
  double *ref[TGEMM_ROUTE_COUNT]; /* [n_check, N] per reference route, cached */
  void *hy_rows;                  /* [n_check, N] in out_dtype */
};

/* ------------------------------------------------------------ random */

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double unit(uint64_t *s) { return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0); }

/* Values per independently seeded chunk: the fill is the same whatever
 * the thread count. */
#define FILL_CHUNK 65536

/* n values of N(0,1) (Box-Muller, both outputs used) stored as dtype, in
 * parallel; stream `stream` of `seed`. */
static void fill_normal(void *dst, tgemm_dtype dtype, int64_t n, uint64_t seed, uint64_t stream) {
  int64_t n_chunks = (n + FILL_CHUNK - 1) / FILL_CHUNK;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n_chunks; c++) {
    uint64_t rng = seed ^ (stream * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)c * 0xd1b54a32d192ed03ull);
    int64_t end = (c + 1) * FILL_CHUNK < n ? (c + 1) * FILL_CHUNK : n;
    for (int64_t i = c * FILL_CHUNK; i < end; i += 2) {
      double u1 = unit(&rng), u2 = unit(&rng);
      if (u1 < 1e-300) u1 = 1e-300;
      double r = sqrt(-2.0 * log(u1));
      float v[2] = {(float)(r * cos(6.283185307179586 * u2)), (float)(r * sin(6.283185307179586 * u2))};
      for (int j = 0; j < 2 && i + j < end; j++) {
        if (dtype == TGEMM_F32) ((float *)dst)[i + j] = v[j];
        else if (dtype == TGEMM_F16) ((uint16_t *)dst)[i + j] = tgemm__f32_to_f16(v[j]);
        else ((uint16_t *)dst)[i + j] = tgemm__f32_to_bf16(v[j]);
      }
    }
  }
}

/* --------------------------------------------------------- life cycle */

static int64_t cache_bytes(const tgemm_ctx *ctx) {
  if (ctx->backend->location == TGEMM_DEVICE) return DEVICE_CACHE_BYTES;
  long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 <= 0) l3 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return l3 > 0 ? (int64_t)l3 : (int64_t)32 << 20;
}

static int64_t clamp_bytes(double b) { return b > 9e18 ? INT64_MAX : (int64_t)b; }

static double dense_weight_bytes(const tgemm__shape *s) {
  return (double)s->n * (double)s->k * (double)tgemm_dtype_size(s->dtype);
}

static double mxfp4_weight_bytes(const tgemm__shape *s) {
  return (double)s->n * (double)(tgemm_mxfp4_packed_cols(s->k) + tgemm_mxfp4_scale_cols(s->k));
}

int tgemm__workload_auto_copies(tgemm_ctx *ctx, const tgemm__shape *shape, bool want_mxfp4) {
  /* A timed route reads one form of the weight: the smallest form must
   * rotate through more than the cache, while memory holds every form. */
  int64_t per_copy = clamp_bytes(dense_weight_bytes(shape) + (want_mxfp4 ? mxfp4_weight_bytes(shape) : 0.0));
  int64_t per_read = clamp_bytes(want_mxfp4 ? mxfp4_weight_bytes(shape) : dense_weight_bytes(shape));
  if (per_copy <= 0 || per_read <= 0) return 1;
  int64_t want = (2 * cache_bytes(ctx) + per_read - 1) / per_read + 1;
  int64_t budget = ctx->backend->location == TGEMM_DEVICE ? DEVICE_COPIES_BUDGET : HOST_COPIES_BUDGET;
  int64_t fit = 1 + budget / per_copy;
  int64_t n = want < fit ? want : fit;
  if (n > MAX_WEIGHT_COPIES) n = MAX_WEIGHT_COPIES;
  return n < 1 ? 1 : (int)n;
}

void tgemm__workload_free(tgemm__workload *wl) {
  if (!wl) return;
  tgemm_ctx *ctx = wl->ctx;
  if (wl->weights)
    for (int i = 0; i < wl->n_sets; i++) tgemm_weight_free(wl->weights[i]);
  if (wl->dw)
    for (int i = 0; i < wl->n_sets; i++) tgemm_free(ctx, wl->dw[i]);
  tgemm_free(ctx, wl->dx);
  tgemm_free(ctx, wl->dbias);
  tgemm_free(ctx, wl->dy);
  free(wl->dw);
  free(wl->w_mats);
  free(wl->weights);
  free(wl->sets);
  free(wl->check_rows);
  free(wl->hx_rows);
  free(wl->hw);
  free(wl->hbias);
  free(wl->hw_packed);
  free(wl->hw_scales);
  for (int r = 0; r < TGEMM_ROUTE_COUNT; r++) free(wl->ref[r]);
  free(wl->hy_rows);
  free(wl);
}

static bool bytes_of(int64_t rows, int64_t cols, tgemm_dtype dtype, size_t *out) {
  int64_t elems, b;
  if (!tgemm__mul_size(rows, cols, &elems) ||
      !tgemm__mul_size(elems, (int64_t)tgemm_dtype_size(dtype), &b))
    return false;
  *out = (size_t)b;
  return true;
}

static tgemm_status alloc_upload(tgemm_ctx *ctx, const void *host, size_t bytes, void **dev) {
  tgemm_status st = tgemm_malloc(ctx, bytes, dev);
  if (st != TGEMM_OK) return st;
  if (host) st = tgemm_memcpy(ctx, *dev, host, bytes, TGEMM_COPY_HOST_TO_DEVICE);
  return st;
}

tgemm_status tgemm__workload_poison_y(tgemm_ctx *ctx, tgemm__workload *wl) {
  size_t esize = tgemm_dtype_size(wl->shape.out_dtype), total;
  if (!bytes_of(wl->shape.m, wl->shape.n, wl->shape.out_dtype, &total)) return TGEMM_OVERFLOW;
  size_t chunk = total < POISON_CHUNK_BYTES ? total : POISON_CHUNK_BYTES;
  chunk -= chunk % esize;
  void *nan_buf = malloc(chunk);
  if (!nan_buf) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "workload: out of memory poisoning y");
  size_t n_elems = chunk / esize;
  for (size_t i = 0; i < n_elems; i++) {
    if (wl->shape.out_dtype == TGEMM_F32) ((float *)nan_buf)[i] = NAN;
    else ((uint16_t *)nan_buf)[i] = 0x7fc1; /* NaN in bf16 and in f16 */
  }
  tgemm_status st = TGEMM_OK;
  for (size_t off = 0; off < total && st == TGEMM_OK; off += chunk) {
    size_t len = total - off < chunk ? total - off : chunk;
    st = tgemm_memcpy(ctx, (char *)wl->dy + off, nan_buf, len, TGEMM_COPY_HOST_TO_DEVICE);
  }
  free(nan_buf);
  if (st == TGEMM_OK) st = tgemm_synchronize(ctx);
  return st;
}

tgemm_status tgemm__workload_create(tgemm_ctx *ctx, const tgemm__shape *shape, int n_copies,
                                    uint64_t seed, bool want_mxfp4, tgemm__workload **out) {
  if (!ctx || !shape || !out) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "workload: NULL argument");
  *out = NULL;
  const tgemm__shape *s = shape;
  if (s->m < 1 || s->n < 1 || s->k < 1 || tgemm_dtype_size(s->dtype) == 0 ||
      (s->out_dtype != TGEMM_BF16 && s->out_dtype != TGEMM_F32))
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "workload: bad shape M=%lld N=%lld K=%lld (x %s, y %s)", (long long)s->m,
                            (long long)s->n, (long long)s->k, tgemm_dtype_name(s->dtype),
                            tgemm_dtype_name(s->out_dtype));
  size_t x_bytes, w_bytes, y_bytes, b_bytes;
  if (!bytes_of(s->m, s->k, s->dtype, &x_bytes) || !bytes_of(s->n, s->k, s->dtype, &w_bytes) ||
      !bytes_of(s->m, s->n, s->out_dtype, &y_bytes) || !bytes_of(1, s->n, s->out_dtype, &b_bytes))
    return tgemm__set_error(ctx, TGEMM_OVERFLOW, "workload: M=%lld N=%lld K=%lld overflows",
                            (long long)s->m, (long long)s->n, (long long)s->k);
  if (n_copies <= 0) n_copies = tgemm__workload_auto_copies(ctx, s, want_mxfp4);

  tgemm__workload *wl = calloc(1, sizeof *wl);
  if (!wl) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "workload: out of memory");
  wl->ctx = ctx;
  wl->shape = *s;
  wl->mode = ctx->options.scale_mode;
  wl->has_mxfp4 = want_mxfp4;
  wl->n_check = s->m <= CHECK_ALL_ROWS_UP_TO ? (int)s->m : CHECK_SPREAD_ROWS;
  tgemm_status st = TGEMM_OK;
#define FAIL_OOM()                                                                     \
  do {                                                                                 \
    st = tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY,                                    \
                          "workload: out of host memory for M=%lld N=%lld K=%lld",     \
                          (long long)s->m, (long long)s->n, (long long)s->k);          \
    goto done;                                                                         \
  } while (0)

  /* x is made on the host in full once (to upload it), then only the
   * checked rows are kept. */
  void *hx = malloc(x_bytes);
  wl->hw = malloc(w_bytes);
  wl->check_rows = malloc((size_t)wl->n_check * sizeof *wl->check_rows);
  size_t x_row = (size_t)s->k * tgemm_dtype_size(s->dtype);
  wl->hx_rows = malloc((size_t)wl->n_check * x_row);
  if (!hx || !wl->hw || !wl->check_rows || !wl->hx_rows) {
    free(hx);
    FAIL_OOM();
  }
  fill_normal(hx, s->dtype, s->m * s->k, seed, 1);
  fill_normal(wl->hw, s->dtype, s->n * s->k, seed, 2);
  for (int i = 0; i < wl->n_check; i++) {
    wl->check_rows[i] = wl->n_check == s->m ? i : (int64_t)i * (s->m - 1) / (CHECK_SPREAD_ROWS - 1);
    memcpy((char *)wl->hx_rows + (size_t)i * x_row, (char *)hx + (size_t)wl->check_rows[i] * x_row, x_row);
  }
  st = alloc_upload(ctx, hx, x_bytes, &wl->dx);
  free(hx);
  if (st != TGEMM_OK) goto done;
  wl->x = tgemm_matrix_dense(wl->dx, s->dtype, s->m, s->k, ctx->backend->location);

  if (s->has_bias) {
    wl->hbias = malloc(b_bytes);
    if (!wl->hbias) FAIL_OOM();
    fill_normal(wl->hbias, s->out_dtype, s->n, seed, 3);
    if ((st = alloc_upload(ctx, wl->hbias, b_bytes, &wl->dbias)) != TGEMM_OK) goto done;
    wl->bias = tgemm_matrix_dense(wl->dbias, s->out_dtype, 1, s->n, ctx->backend->location);
  }
  if ((st = alloc_upload(ctx, NULL, y_bytes, &wl->dy)) != TGEMM_OK) goto done;
  wl->y = tgemm_matrix_dense(wl->dy, s->out_dtype, s->m, s->n, ctx->backend->location);
  if ((st = tgemm__workload_poison_y(ctx, wl)) != TGEMM_OK) goto done;

  wl->dw = calloc((size_t)n_copies, sizeof *wl->dw);
  wl->w_mats = calloc((size_t)n_copies, sizeof *wl->w_mats);
  wl->weights = calloc((size_t)n_copies, sizeof *wl->weights);
  wl->sets = calloc((size_t)n_copies, sizeof *wl->sets);
  if (!wl->dw || !wl->w_mats || !wl->weights || !wl->sets) FAIL_OOM();
  tgemm_weight_options wopts = {want_mxfp4 ? TGEMM_WEIGHT_MXFP4 : 0u, wl->mode};
  for (int i = 0; i < n_copies; i++) {
    wl->n_sets = i + 1; /* what free must release */
    if ((st = alloc_upload(ctx, wl->hw, w_bytes, &wl->dw[i])) != TGEMM_OK) goto done;
    wl->w_mats[i] = tgemm_matrix_dense(wl->dw[i], s->dtype, s->n, s->k, ctx->backend->location);
    if ((st = tgemm_weight_create(ctx, &wl->w_mats[i], &wopts, &wl->weights[i])) != TGEMM_OK) goto done;
    wl->sets[i].x = &wl->x;
    wl->sets[i].w = wl->weights[i];
    wl->sets[i].bias = s->has_bias ? &wl->bias : NULL;
    wl->sets[i].y = &wl->y;
  }
  if ((st = tgemm_synchronize(ctx)) != TGEMM_OK) goto done;
#undef FAIL_OOM
done:
  if (st != TGEMM_OK) {
    tgemm__workload_free(wl);
    return st;
  }
  *out = wl;
  return TGEMM_OK;
}

int tgemm__workload_n_sets(const tgemm__workload *wl) { return wl->n_sets; }
const tgemm__operands *tgemm__workload_sets(const tgemm__workload *wl) { return wl->sets; }
const tgemm__shape *tgemm__workload_shape(const tgemm__workload *wl) { return &wl->shape; }
bool tgemm__workload_has_mxfp4(const tgemm__workload *wl) { return wl->has_mxfp4; }

const tgemm__operands *tgemm__workload_operands(const tgemm__workload *wl, int i) {
  return i >= 0 && i < wl->n_sets ? &wl->sets[i] : NULL;
}

/* ------------------------------------------------------------- errors */

/* The double reference of the checked rows for one reference route
 * (REFERENCE = the unquantized operands), computed once per workload. */
static tgemm_status reference(tgemm_ctx *ctx, tgemm__workload *wl, tgemm_route route,
                              const double **out) {
  if (wl->ref[route]) {
    *out = wl->ref[route];
    return TGEMM_OK;
  }
  const tgemm__shape *s = &wl->shape;
  bool mx = route == TGEMM_ROUTE_W4A16 || route == TGEMM_ROUTE_W4A4;
  if (mx && !wl->hw_packed) {
    int64_t pc = tgemm_mxfp4_packed_cols(s->k), sc = tgemm_mxfp4_scale_cols(s->k);
    wl->hw_packed = malloc((size_t)(s->n * pc));
    wl->hw_scales = malloc((size_t)(s->n * sc));
    if (!wl->hw_packed || !wl->hw_scales)
      return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "workload: out of memory for the host MXFP4 weight");
    /* the same quantizer rule as the weight's own (DESIGN.md §3: identical bytes) */
    tgemm__mxfp4_quantize_rows(wl->hw, s->dtype, s->n, s->k, s->k, wl->hw_packed, pc, wl->hw_scales,
                               sc, wl->mode);
  }
  double *ref = malloc((size_t)wl->n_check * (size_t)s->n * sizeof *ref);
  if (!ref) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "workload: out of memory for the reference");

  tgemm_matrix hx = tgemm_matrix_dense(wl->hx_rows, s->dtype, wl->n_check, s->k, TGEMM_HOST);
  tgemm_matrix hbias = tgemm_matrix_dense(wl->hbias, s->out_dtype, 1, s->n, TGEMM_HOST);
  struct tgemm_weight hw;
  memset(&hw, 0, sizeof hw);
  hw.ctx = ctx;
  hw.n = s->n;
  hw.k = s->k;
  hw.has_dense = true;
  hw.dense = tgemm_matrix_dense(wl->hw, s->dtype, s->n, s->k, TGEMM_HOST);
  hw.scale_mode = wl->mode;
  if (wl->hw_packed) {
    hw.has_mxfp4 = true;
    hw.mxfp4 = tgemm_matrix_mxfp4(wl->hw_packed, wl->hw_scales, s->n, s->k, TGEMM_HOST);
  }
  tgemm__operands ops = {&hx, &hw, s->has_bias ? &hbias : NULL, NULL, NULL};
  tgemm_status st = tgemm__cpu_reference_rows(&ops, route, wl->mode, 0, wl->n_check, ref);
  if (st != TGEMM_OK) {
    free(ref);
    return tgemm__set_error(ctx, st, "workload: the %s reference failed (%s) for M=%lld N=%lld K=%lld",
                            tgemm_route_name(route), tgemm_status_str(st), (long long)s->m,
                            (long long)s->n, (long long)s->k);
  }
  wl->ref[route] = ref;
  *out = ref;
  return TGEMM_OK;
}

static double rel_error(const tgemm__workload *wl, const double *ref) {
  int64_t n = wl->shape.n;
  double num = 0, den = 0;
  for (int64_t i = 0; i < (int64_t)wl->n_check * n; i++) {
    double v = tgemm__load_f32(wl->hy_rows, (int)wl->shape.out_dtype, i);
    if (!isfinite(v)) return INFINITY;
    double d = v - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

tgemm_status tgemm__workload_error2(tgemm_ctx *ctx, tgemm__workload *wl, const tgemm__kernel *kernel,
                                    double *vs_dense, double *vs_exact) {
  if (vs_dense) *vs_dense = NAN;
  if (vs_exact) *vs_exact = NAN;
  if (!ctx || !wl || !kernel) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "workload_error: NULL argument");
  const tgemm__shape *s = &wl->shape;
  tgemm_route route = kernel->route;
  bool mx = route == TGEMM_ROUTE_W4A16 || route == TGEMM_ROUTE_W4A4;
  if (mx && !wl->has_mxfp4)
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "workload_error: route %s needs a workload made with the MXFP4 weight form",
                            tgemm_route_name(route));
  tgemm_status st = tgemm__workload_poison_y(ctx, wl);
  if (st != TGEMM_OK) return st;
  tgemm__operands ops = wl->sets[0];
  tgemm__kernel ran;
  ran.name[0] = '\0';
  ops.ran = &ran;
  st = ctx->backend->run(ctx, kernel, s, &ops);
  if (st == TGEMM_OK) st = tgemm_synchronize(ctx);
  if (st != TGEMM_OK) return st;
  /* A candidate must run as itself, or its timing would be another's. */
  if (ran.name[0])
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                            "workload_error: %s does not fit the workload's operands; %s ran "
                            "instead",
                            kernel->name, ran.name);

  size_t row_bytes = (size_t)s->n * tgemm_dtype_size(s->out_dtype);
  if (!wl->hy_rows && !(wl->hy_rows = malloc((size_t)wl->n_check * row_bytes)))
    return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "workload_error: out of memory");
  for (int i = 0; i < wl->n_check && st == TGEMM_OK; i++)
    st = tgemm_memcpy(ctx, (char *)wl->hy_rows + (size_t)i * row_bytes,
                      (const char *)wl->dy + (size_t)wl->check_rows[i] * row_bytes, row_bytes,
                      TGEMM_COPY_DEVICE_TO_HOST);
  if (st == TGEMM_OK) st = tgemm_synchronize(ctx);
  if (st != TGEMM_OK) return st;

  const double *ref;
  if (vs_dense) {
    if ((st = reference(ctx, wl, TGEMM_ROUTE_REFERENCE, &ref)) != TGEMM_OK) return st;
    *vs_dense = rel_error(wl, ref);
  }
  if (vs_exact) {
    if ((st = reference(ctx, wl, mx ? route : TGEMM_ROUTE_REFERENCE, &ref)) != TGEMM_OK) return st;
    *vs_exact = rel_error(wl, ref);
  }
  return TGEMM_OK;
}

tgemm_status tgemm__workload_error(tgemm_ctx *ctx, tgemm__workload *wl, const tgemm__kernel *kernel,
                                   double *rel_err) {
  return tgemm__workload_error2(ctx, wl, kernel, rel_err, NULL);
}
