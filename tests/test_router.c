/* The router: each predicate, the M padding rule, the order forced -> table
 * -> default -> reference, error-budget gating, rows of another device, the
 * once-per-row kernel validation and the untuned log.  A fake backend (stub
 * functions, no kernels) stands in for CPU/CUDA. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "route/router.h"
#include "route/table.h"
#include "route/untuned_log.h"
#include "test_util.h"

/* ------------------------------------------------------ the fake backend */

static bool fake_library_on = true;
static bool fake_w4a4_on = true;
static int fake_validate_calls = 0;

static bool fake_supports(tgemm_ctx *ctx, const tgemm__shape *s, tgemm_route route) {
  switch (route) {
    case TGEMM_ROUTE_REFERENCE: return true;
    case TGEMM_ROUTE_SKINNY: return s->m <= 16;
    case TGEMM_ROUTE_LIBRARY: return fake_library_on;
    case TGEMM_ROUTE_W4A16: return true;
    case TGEMM_ROUTE_W4A4: return fake_w4a4_on;
    default: return false;
  }
}

static const char *const fake_names[TGEMM_ROUTE_COUNT][3] = {
    {NULL},
    {"fake_ref", NULL},
    {"fake_skinny_r1", "fake_skinny_r2", NULL},
    {"fake_lib_a", "fake_lib_b", "bad_algo"},
    {"fake_w4a16", NULL},
    {"fake_w4a4", NULL},
};

static int fake_candidates(tgemm_ctx *ctx, const tgemm__shape *s, tgemm_route route,
                           tgemm__kernel *out, int cap) {
  if (!fake_supports(ctx, s, route)) return 0;
  int n = 0;
  for (int i = 0; i < 3 && fake_names[route][i] && n < cap; i++, n++) {
    memset(&out[n], 0, sizeof out[n]);
    out[n].route = route;
    snprintf(out[n].name, sizeof out[n].name, "%s", fake_names[route][i]);
    out[n].params[0] = 100 * (int)route + i;
  }
  return n;
}

static tgemm_status fake_default(tgemm_ctx *ctx, const tgemm__shape *s, tgemm_route route,
                                 tgemm__kernel *out) {
  tgemm__kernel k[3];
  if (fake_candidates(ctx, s, route, k, 3) < 1)
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED, "fake: no %s kernel", tgemm_route_name(route));
  *out = k[0];
  return TGEMM_OK;
}

static tgemm_status fake_validate(tgemm_ctx *ctx, const tgemm__shape *s, const tgemm__kernel *k) {
  fake_validate_calls++;
  if (strncmp(k->name, "bad", 3) == 0)
    return tgemm__set_error(ctx, TGEMM_BACKEND_ERROR, "fake: algo check failed for %s", k->name);
  return TGEMM_OK;
}

static tgemm__backend fake_backend = {
    .name = "fake",
    .kind = TGEMM_BACKEND_CPU,
    .location = TGEMM_HOST,
    .supports = fake_supports,
    .candidates = fake_candidates,
    .default_kernel = fake_default,
    .validate_kernel = NULL,
};

static const tgemm__device_key dev_a = {"Fake GPU, rev \"A\"", "fake_90", 132, "fakeblas-1.0"};
static const tgemm__device_key dev_b = {"Fake GPU, rev \"A\"", "fake_90", 132, "fakeblas-2.0"};

static tgemm__table_row make_row(const tgemm__device_key *dev, int64_t m, int64_t n, int64_t k,
                                 tgemm_route route, const char *kernel, double us, double error) {
  tgemm__table_row r;
  memset(&r, 0, sizeof r);
  r.device = *dev;
  r.shape = (tgemm__shape){m, n, k, TGEMM_BF16, TGEMM_BF16, false};
  r.kernel.route = route;
  snprintf(r.kernel.name, sizeof r.kernel.name, "%s", kernel);
  r.kernel.params[0] = 7;
  r.us = us;
  r.tflops = 1.0;
  r.gbps = 2.0;
  r.error = error;
  return r;
}

static tgemm__shape shape_of(int64_t m, int64_t n, int64_t k) {
  return (tgemm__shape){m, n, k, TGEMM_BF16, TGEMM_BF16, false};
}

/* Route one call and return the kernel name ("" on error). */
static const char *route_call(tgemm_ctx *ctx, int64_t m, int64_t n, int64_t k,
                              const struct tgemm_weight *w, tgemm_route forced,
                              const char *kernel, double budget, const char **reason,
                              tgemm_status *status) {
  static tgemm__kernel out;
  tgemm_linear_options opts;
  tgemm_linear_options_default(&opts);
  opts.route = forced;
  opts.kernel = kernel;
  opts.error_budget = budget;
  tgemm__shape s = shape_of(m, n, k);
  memset(&out, 0, sizeof out);
  *reason = "?";
  tgemm_status st = tgemm__route_select(ctx, &s, w, &opts, &out, reason);
  if (status) *status = st;
  return st == TGEMM_OK ? out.name : "";
}

/* ------------------------------------------------------------- the tests */

static void test_padding(void) {
  const int64_t cases[][2] = {{1, 16},       {2, 16},      {16, 16},     {17, 32},
                              {255, 256},    {256, 256},   {257, 288},   {1000, 1024},
                              {1024, 1024},  {1025, 1088}, {4096, 4096}, {4097, 4224},
                              {5000, 5120},  {8192, 8192}, {8193, 8320}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    CHECK(tgemm__route_padded_m(cases[i][0]) == cases[i][1], "padded_m(%lld) = %lld, want %lld",
          (long long)cases[i][0], (long long)tgemm__route_padded_m(cases[i][0]), (long long)cases[i][1]);
  const int64_t pow2[][2] = {{1, 1}, {2, 2}, {3, 4}, {17, 32}, {257, 512}, {1025, 2048}, {5000, 8192},
                             {8192, 8192}};
  for (size_t i = 0; i < sizeof pow2 / sizeof pow2[0]; i++)
    CHECK(tgemm__route_pow2_m(pow2[i][0]) == pow2[i][1], "pow2_m(%lld) = %lld, want %lld",
          (long long)pow2[i][0], (long long)tgemm__route_pow2_m(pow2[i][0]), (long long)pow2[i][1]);
  CHECK(tgemm__route_pow2_m(INT64_MAX - 5) == INT64_MAX - 5, "pow2 of a huge M must not overflow");

  int64_t ms[3];
  int n = tgemm__route_table_ms(1, ms);
  CHECK(n == 2 && ms[0] == 1 && ms[1] == 16, "table Ms of 1: n=%d", n);
  n = tgemm__route_table_ms(17, ms);
  CHECK(n == 2 && ms[0] == 17 && ms[1] == 32, "table Ms of 17: n=%d", n);
  n = tgemm__route_table_ms(257, ms);
  CHECK(n == 3 && ms[0] == 257 && ms[1] == 288 && ms[2] == 512, "table Ms of 257: n=%d", n);
  n = tgemm__route_table_ms(16, ms);
  CHECK(n == 1 && ms[0] == 16, "table Ms of 16: n=%d", n);
  n = tgemm__route_table_ms(5000, ms);
  CHECK(n == 3 && ms[1] == 5120 && ms[2] == 8192, "table Ms of 5000: n=%d", n);
}

static void test_predicates(tgemm_ctx *ctx) {
  struct tgemm_weight dense = {0}, both = {0}, mx_only = {0};
  dense.has_dense = true;
  both.has_dense = both.has_mxfp4 = true;
  mx_only.has_mxfp4 = true;

  CHECK(tgemm__route_weight_ok(&dense, TGEMM_ROUTE_SKINNY), "dense weight, skinny");
  CHECK(tgemm__route_weight_ok(&dense, TGEMM_ROUTE_LIBRARY), "dense weight, library");
  CHECK(!tgemm__route_weight_ok(&dense, TGEMM_ROUTE_W4A16), "dense weight has no MXFP4 form");
  CHECK(!tgemm__route_weight_ok(&dense, TGEMM_ROUTE_W4A4), "dense weight has no MXFP4 form");
  CHECK(tgemm__route_weight_ok(&both, TGEMM_ROUTE_W4A4), "both forms, w4a4");
  CHECK(!tgemm__route_weight_ok(&mx_only, TGEMM_ROUTE_LIBRARY), "MXFP4-only weight, library");
  CHECK(tgemm__route_weight_ok(&mx_only, TGEMM_ROUTE_REFERENCE), "the reference takes any form");
  CHECK(!tgemm__route_weight_ok(&dense, TGEMM_ROUTE_AUTO), "AUTO is not a route to run");
  CHECK(!tgemm__route_weight_ok(NULL, TGEMM_ROUTE_REFERENCE), "no weight");

  CHECK(tgemm__route_is_mxfp4(TGEMM_ROUTE_W4A16) && tgemm__route_is_mxfp4(TGEMM_ROUTE_W4A4) &&
            !tgemm__route_is_mxfp4(TGEMM_ROUTE_LIBRARY),
        "is_mxfp4");
  /* dense routes ignore the budget; MXFP4 needs a finite error within it */
  CHECK(tgemm__route_error_ok(TGEMM_ROUTE_LIBRARY, 0.5, 0.0, &both), "dense route, any error");
  CHECK(tgemm__route_error_ok(TGEMM_ROUTE_LIBRARY, NAN, 0.0, &both), "dense route, no error");
  CHECK(!tgemm__route_error_ok(TGEMM_ROUTE_W4A16, 0.11, 0.0, &both), "budget 0 keeps MXFP4 out");
  CHECK(!tgemm__route_error_ok(TGEMM_ROUTE_W4A16, 0.11, 0.1, &both), "0.11 > 0.1");
  CHECK(tgemm__route_error_ok(TGEMM_ROUTE_W4A16, 0.11, 0.11, &both), "0.11 <= 0.11");
  CHECK(!tgemm__route_error_ok(TGEMM_ROUTE_W4A4, NAN, 1.0, &both), "unmeasured error never fits");
  CHECK(!tgemm__route_error_ok(TGEMM_ROUTE_W4A4, INFINITY, INFINITY, &both), "infinite error");
  CHECK(tgemm__route_error_ok(TGEMM_ROUTE_W4A16, 0.11, 0.0, &mx_only),
        "a weight quantized by its owner: W4A16 adds no error of ours");
  CHECK(!tgemm__route_error_ok(TGEMM_ROUTE_W4A4, 0.16, 0.0, &mx_only),
        "W4A4 still quantizes activations");

  tgemm_linear_options opts;
  tgemm_linear_options_default(&opts);
  CHECK(!tgemm__should_use_forced(&opts), "AUTO is not forced");
  CHECK(!tgemm__should_use_forced(NULL), "no options, not forced");
  opts.route = TGEMM_ROUTE_LIBRARY;
  CHECK(tgemm__should_use_forced(&opts), "a route is forced");

  ctx->options.error_budget = 0.25;
  opts.error_budget = -1;
  CHECK(tgemm__route_error_budget(ctx, &opts) == 0.25, "negative budget: the context's");
  opts.error_budget = 0.0;
  CHECK(tgemm__route_error_budget(ctx, &opts) == 0.0, "0 overrides the context");
  CHECK(tgemm__route_error_budget(ctx, NULL) == 0.25, "no options: the context's");
  ctx->options.error_budget = 0.0;

  bool tuned = ctx->tuned;
  struct tgemm__table *table = ctx->table;
  ctx->tuned = false;
  CHECK(!tgemm__should_use_table(ctx), "tuned off");
  ctx->tuned = true;
  ctx->table = NULL;
  CHECK(!tgemm__should_use_table(ctx), "no table");
  ctx->table = table;
  CHECK(tgemm__should_use_table(ctx) == (table != NULL), "tuned with a table");
  ctx->tuned = tuned;

  tgemm__shape s16 = shape_of(16, 64, 128), s17 = shape_of(17, 64, 128);
  CHECK(tgemm__should_use_skinny(ctx, &s16, &dense), "skinny at M=16");
  CHECK(!tgemm__should_use_skinny(ctx, &s17, &dense), "no skinny at M=17 (the backend says)");
  CHECK(!tgemm__should_use_skinny(ctx, &s16, &mx_only), "no skinny without a dense weight");
  CHECK(tgemm__should_use_library(ctx, &s17, &dense), "library");
  fake_library_on = false;
  CHECK(!tgemm__should_use_library(ctx, &s17, &dense), "library unsupported");
  fake_library_on = true;
  CHECK(tgemm__should_use_w4a16_only(ctx, &s17, &mx_only), "MXFP4-only weight -> w4a16");
  CHECK(!tgemm__should_use_w4a16_only(ctx, &s17, &both), "a dense form exists");

  tgemm__table_row row = make_row(&dev_a, 16, 64, 128, TGEMM_ROUTE_W4A4, "fake_w4a4", 1.0, 0.16);
  CHECK(!tgemm__should_use_row(ctx, &s16, &both, &row, 0.1), "row over budget");
  CHECK(tgemm__should_use_row(ctx, &s16, &both, &row, 0.2), "row within budget");
  CHECK(!tgemm__should_use_row(ctx, &s16, &dense, &row, 0.2), "row needs the MXFP4 form");
  fake_w4a4_on = false;
  CHECK(!tgemm__should_use_row(ctx, &s16, &both, &row, 0.2), "row route unsupported");
  fake_w4a4_on = true;
}

static void test_order(tgemm_ctx *ctx) {
  struct tgemm_weight dense = {0}, both = {0}, mx_only = {0};
  dense.has_dense = true;
  both.has_dense = both.has_mxfp4 = true;
  mx_only.has_mxfp4 = true;
  const char *reason;
  tgemm_status st;
  const char *name;

  /* table rows, loaded through the CSV reader like a real table */
  tgemm__table_row rows[] = {
      make_row(&dev_a, 16, 64, 128, TGEMM_ROUTE_SKINNY, "fake_skinny_r2", 5.0, 1e-3),
      make_row(&dev_a, 16, 64, 128, TGEMM_ROUTE_LIBRARY, "fake_lib_b", 9.0, 1e-3),
      make_row(&dev_a, 20, 64, 128, TGEMM_ROUTE_LIBRARY, "fake_lib_b", 9.0, 1e-3),
      make_row(&dev_a, 32, 64, 128, TGEMM_ROUTE_LIBRARY, "fake_lib_a", 9.0, 1e-3),
      make_row(&dev_a, 64, 64, 128, TGEMM_ROUTE_LIBRARY, "fake_lib_b", 11.0, 1e-3),
      /* budget gating at M=8: library 10 us, w4a16 3 us at 11%, w4a4 2 us at 16% */
      make_row(&dev_a, 8, 64, 128, TGEMM_ROUTE_LIBRARY, "fake_lib_b", 10.0, 1e-3),
      make_row(&dev_a, 8, 64, 128, TGEMM_ROUTE_W4A16, "fake_w4a16", 3.0, 0.11),
      make_row(&dev_a, 8, 64, 128, TGEMM_ROUTE_W4A4, "fake_w4a4", 2.0, 0.16),
      /* another library version: must be ignored */
      make_row(&dev_b, 128, 64, 128, TGEMM_ROUTE_LIBRARY, "fake_lib_b", 1.0, 1e-3),
      /* kernels that do not validate */
      make_row(&dev_a, 200, 64, 128, TGEMM_ROUTE_LIBRARY, "bad_algo", 1.0, 1e-3),
      make_row(&dev_a, 300, 64, 128, TGEMM_ROUTE_LIBRARY, "no_such_kernel", 1.0, 1e-3),
  };
  char text[8192];
  size_t used = (size_t)snprintf(text, sizeof text, "%s\n", tgemm__table_header());
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    CHECK(tgemm__table_format_row(&rows[i], text + used, sizeof text - used - 1), "format row %zu", i);
    used += strlen(text + used);
    text[used++] = '\n';
    text[used] = '\0';
  }
  struct tgemm__table *table = tgemm__table_new(&ctx->device_key);
  tgemm__table_stats stats;
  CHECK_OK(tgemm__table_load_text(ctx, table, text, "router-table", &stats));
  CHECK(stats.n_foreign == 1, "one foreign row counted, got %lld", (long long)stats.n_foreign);
  CHECK(stats.n_malformed == 0, "no malformed rows, got %lld (%s)", (long long)stats.n_malformed, stats.first_bad);
  CHECK(stats.n_rows == 10, "10 rows for this device, got %lld", (long long)stats.n_rows);
  ctx->table = table;
  ctx->tuned = true;

  /* 1. forced */
  name = route_call(ctx, 16, 64, 128, &dense, TGEMM_ROUTE_LIBRARY, NULL, -1, &reason, &st);
  CHECK(st == TGEMM_OK && !strcmp(reason, "forced") && !strcmp(name, "fake_lib_a"),
        "forced library: %s %s %s", tgemm_status_name(st), reason, name);
  name = route_call(ctx, 16, 64, 128, &dense, TGEMM_ROUTE_LIBRARY, "fake_lib_b", -1, &reason, &st);
  CHECK(st == TGEMM_OK && !strcmp(name, "fake_lib_b"), "forced by kernel name: %s", name);
  name = route_call(ctx, 16, 64, 128, &dense, TGEMM_ROUTE_LIBRARY, "nope", -1, &reason, &st);
  CHECK(st == TGEMM_NOT_FOUND, "unknown kernel name: %s", tgemm_status_name(st));
  CHECK(strstr(ctx->last_error, "nope") && strstr(ctx->last_error, "fake_lib_a"),
        "the error names the kernel and the candidates: %s", ctx->last_error);
  name = route_call(ctx, 16, 64, 128, &dense, TGEMM_ROUTE_W4A16, NULL, -1, &reason, &st);
  CHECK(st == TGEMM_UNSUPPORTED && strstr(ctx->last_error, "MXFP4"),
        "forced w4a16 on a dense-only weight: %s (%s)", tgemm_status_name(st), ctx->last_error);
  name = route_call(ctx, 17, 64, 128, &dense, TGEMM_ROUTE_SKINNY, NULL, -1, &reason, &st);
  CHECK(st == TGEMM_UNSUPPORTED && strstr(ctx->last_error, "skinny"),
        "forced skinny where the backend declines: %s", tgemm_status_name(st));
  name = route_call(ctx, 8, 64, 128, &both, TGEMM_ROUTE_W4A4, NULL, 0.0, &reason, &st);
  CHECK(st == TGEMM_OK && !strcmp(name, "fake_w4a4"), "forcing bypasses the error budget: %s", name);

  /* 2. table: exact, bucket, power of two; fastest usable route */
  name = route_call(ctx, 16, 64, 128, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "table") && !strcmp(name, "fake_skinny_r2"), "exact M=16, fastest: %s %s",
        reason, name);
  name = route_call(ctx, 3, 64, 128, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "table") && !strcmp(name, "fake_skinny_r2"), "M=3 via bucket 16: %s %s",
        reason, name);
  name = route_call(ctx, 20, 64, 128, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "table") && !strcmp(name, "fake_lib_b"), "exact M=20 before bucket 32: %s",
        name);
  name = route_call(ctx, 21, 64, 128, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "table") && !strcmp(name, "fake_lib_a"), "M=21 via bucket 32: %s", name);
  name = route_call(ctx, 33, 64, 128, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "table") && !strcmp(name, "fake_lib_b"), "M=33: bucket 48 misses, pow2 64: %s %s",
        reason, name);
  name = route_call(ctx, 16, 64, 129, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "default"), "another K misses: %s", reason);

  /* error budget */
  name = route_call(ctx, 8, 64, 128, &both, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "table") && !strcmp(name, "fake_lib_b"), "budget 0: library, got %s", name);
  name = route_call(ctx, 8, 64, 128, &both, TGEMM_ROUTE_AUTO, NULL, 0.12, &reason, &st);
  CHECK(!strcmp(name, "fake_w4a16"), "budget 0.12: w4a16, got %s", name);
  name = route_call(ctx, 8, 64, 128, &both, TGEMM_ROUTE_AUTO, NULL, 0.2, &reason, &st);
  CHECK(!strcmp(name, "fake_w4a4"), "budget 0.2: w4a4, got %s", name);
  ctx->options.error_budget = 0.2;
  name = route_call(ctx, 8, 64, 128, &both, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(name, "fake_w4a4"), "the context's budget 0.2: w4a4, got %s", name);
  name = route_call(ctx, 8, 64, 128, &both, TGEMM_ROUTE_AUTO, NULL, 0.05, &reason, &st);
  CHECK(!strcmp(name, "fake_lib_b"), "the call's budget 0.05 overrides: library, got %s", name);
  name = route_call(ctx, 8, 64, 128, &dense, TGEMM_ROUTE_AUTO, NULL, 0.2, &reason, &st);
  CHECK(!strcmp(name, "fake_lib_b"), "no MXFP4 form: library, got %s", name);
  ctx->options.error_budget = 0.0;

  /* a row of another library version is not used */
  name = route_call(ctx, 128, 64, 128, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "default") && !strcmp(name, "fake_lib_a"), "foreign row ignored: %s %s",
        reason, name);

  /* rows whose kernel does not validate fall back, checked once per row */
  fake_backend.validate_kernel = fake_validate;
  fake_validate_calls = 0;
  for (int rep = 0; rep < 3; rep++) {
    name = route_call(ctx, 200, 64, 128, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
    CHECK(st == TGEMM_OK && !strcmp(reason, "default") && !strcmp(name, "fake_lib_a"),
          "invalid algo falls back: %s %s", reason, name);
  }
  CHECK(fake_validate_calls == 1, "validated once, not per call: %d", fake_validate_calls);
  CHECK(ctx->last_error[0] == '\0' || !strstr(ctx->last_error, "algo check"),
        "a declined row leaves no error behind: %s", ctx->last_error);
  fake_backend.validate_kernel = NULL;
  name = route_call(ctx, 300, 64, 128, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "default"), "a kernel name the backend does not have falls back: %s", reason);

  /* tuned off: the table is not consulted */
  ctx->tuned = false;
  name = route_call(ctx, 16, 64, 128, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "default") && !strcmp(name, "fake_skinny_r1"), "tuned off: %s %s", reason, name);
  ctx->tuned = true;

  /* 3. default rule, 4. reference */
  name = route_call(ctx, 12, 64, 100, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "default") && !strcmp(name, "fake_skinny_r1"), "default skinny: %s", name);
  name = route_call(ctx, 40, 64, 100, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "default") && !strcmp(name, "fake_lib_a"), "default library: %s", name);
  name = route_call(ctx, 40, 64, 100, &mx_only, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(!strcmp(reason, "default") && !strcmp(name, "fake_w4a16"), "MXFP4-only default: %s", name);
  fake_library_on = false;
  name = route_call(ctx, 40, 64, 100, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, &st);
  CHECK(st == TGEMM_OK && !strcmp(reason, "reference") && !strcmp(name, "fake_ref"),
        "reference last: %s %s", reason, name);
  fake_library_on = true;

  ctx->table = NULL;
  tgemm__table_free(table);
}

static int count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  int n = 0, c;
  while ((c = fgetc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

static void test_untuned_log(tgemm_ctx *ctx) {
  char path[] = "/tmp/tgemm_untuned_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0, "mkstemp");
  if (fd < 0) return;
  close(fd);
  tgemm__untuned_log_reset();
  struct tgemm_weight dense = {0};
  dense.has_dense = true;
  const char *reason;
  ctx->untuned_log = path;
  ctx->tuned = true;
  ctx->table = NULL;
  for (int rep = 0; rep < 3; rep++) route_call(ctx, 5, 77, 99, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, NULL);
  CHECK(count_lines(path) == 2, "header + one line for a repeated shape, got %d", count_lines(path));
  route_call(ctx, 6, 77, 99, &dense, TGEMM_ROUTE_AUTO, NULL, -1, &reason, NULL);
  route_call(ctx, 6, 77, 99, &dense, TGEMM_ROUTE_LIBRARY, NULL, -1, &reason, NULL);
  route_call(ctx, 7, 77, 99, &dense, TGEMM_ROUTE_LIBRARY, NULL, -1, &reason, NULL);
  CHECK(count_lines(path) == 3, "a second shape adds one line; forced calls add none, got %d",
        count_lines(path));
  FILE *f = fopen(path, "r");
  char line[512] = "";
  if (f) {
    CHECK(fgets(line, sizeof line, f) && !strncmp(line, TGEMM__UNTUNED_LOG_HEADER, strlen(TGEMM__UNTUNED_LOG_HEADER)),
          "header: %s", line);
    const char *want = "5,77,99,0,bf16,bf16,\"Fake GPU, rev \"\"A\"\"\",fake_90,132,fakeblas-1.0\n";
    CHECK(fgets(line, sizeof line, f) && !strcmp(line, want), "first logged shape: %s", line);
    fclose(f);
  }
  ctx->untuned_log = NULL;
  unlink(path);
}

int main(void) {
  test_seed("test_router");
  tgemm_ctx *ctx = calloc(1, sizeof *ctx);
  ctx->backend = &fake_backend;
  ctx->device_key = dev_a;
  ctx->tuned = true;
  tgemm_ctx_options_default(&ctx->options);
  ctx->options.error_budget = 0.0;

  test_padding();
  test_predicates(ctx);
  test_order(ctx);
  test_untuned_log(ctx);
  free(ctx);
  return test_finish("test_router");
}
