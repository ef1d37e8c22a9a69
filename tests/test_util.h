/* Shared helpers for the test programs: a printed seed, random fills, NaN
 * poisoning, relative errors and CHECK macros.  Header-only on purpose:
 * each test stays one self-contained executable. */
#ifndef TGEMM_TESTS_TEST_UTIL_H
#define TGEMM_TESTS_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype_convert.h"
#include "tgemm.h"

#define TEST_SKIP 77

static int test_failures = 0;

#define CHECK(cond, ...)                                               \
  do {                                                                 \
    if (!(cond)) {                                                     \
      test_failures++;                                                 \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
      fprintf(stderr, __VA_ARGS__);                                    \
      fprintf(stderr, "\n");                                           \
    }                                                                  \
  } while (0)

#define CHECK_STATUS(expr, expected)                                       \
  do {                                                                     \
    tgemm_status check_status_ = (expr);                                   \
    CHECK(check_status_ == (expected), "%s returned %s, expected %s", #expr, \
          tgemm_status_name(check_status_), tgemm_status_name(expected));  \
  } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, TGEMM_OK)

/* xorshift64*: fast, seedable, the same on every machine. */
static uint64_t test_rng_state = 88172645463325252ull;

static inline uint64_t test_rand_u64(void) {
  uint64_t x = test_rng_state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  test_rng_state = x;
  return x * 2685821657736338717ull;
}

/* Uniform in [0, 1). */
static inline double test_rand_unit(void) {
  return (double)(test_rand_u64() >> 11) * (1.0 / 9007199254740992.0);
}

/* Standard normal (Box-Muller). */
static inline float test_rand_normal(void) {
  double u1 = test_rand_unit(), u2 = test_rand_unit();
  if (u1 < 1e-300) u1 = 1e-300;
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Seed from TGEMM_TEST_SEED or the clock, and print it so a failure can be
 * replayed. */
static inline uint64_t test_seed(const char *test_name) {
  const char *env = getenv("TGEMM_TEST_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 0)
                      : ((uint64_t)time(NULL) * 2654435761u) ^ (uint64_t)clock();
  if (seed == 0) seed = 1;
  test_rng_state = seed;
  printf("%s: seed %llu (replay with TGEMM_TEST_SEED=%llu)\n", test_name,
         (unsigned long long)seed, (unsigned long long)seed);
  return seed;
}

/* Fill n values of dtype with N(0, 1) * scale. */
static inline void test_fill_normal(void *dst, tgemm_dtype dtype, size_t n,
                                    float scale) {
  for (size_t i = 0; i < n; i++) {
    float v = test_rand_normal() * scale;
    if (dtype == TGEMM_F32) ((float *)dst)[i] = v;
    else if (dtype == TGEMM_F16) ((uint16_t *)dst)[i] = tgemm__f32_to_f16(v);
    else ((uint16_t *)dst)[i] = tgemm__f32_to_bf16(v);
  }
}

/* Fill with NaN so that unwritten outputs show. */
static inline void test_poison(void *dst, tgemm_dtype dtype, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (dtype == TGEMM_F32) ((float *)dst)[i] = NAN;
    else ((uint16_t *)dst)[i] = 0x7fc1; /* NaN in bf16; also NaN in f16 */
  }
}

/* ‖y − ref‖_F / ‖ref‖_F over an [m, n] output with leading dimension ld;
 * returns INFINITY when any y element is not finite (unwritten or NaN). */
static inline double test_rel_error(const void *y, tgemm_dtype dtype,
                                    int64_t m, int64_t n, int64_t ld,
                                    const double *ref) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      const void *row = (const char *)y + (size_t)(i * ld) * tgemm_dtype_size(dtype);
      double v = tgemm__load_f32(row, dtype, j);
      if (!isfinite(v)) return INFINITY;
      double d = v - ref[i * n + j];
      num += d * d;
      den += ref[i * n + j] * ref[i * n + j];
    }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Sum of squares of a dense [rows, cols] matrix with leading dimension ld. */
static inline double test_sum_squares(const void *p, tgemm_dtype dt, int64_t rows, int64_t cols, int64_t ld) {
  double s = 0;
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) {
      double v = tgemm__load_f32((const char *)p + (size_t)(i * ld) * tgemm_dtype_size(dt), (int)dt, j);
      s += v * v;
    }
  return s;
}

/* DESIGN.md §4's ‖y − ref‖_F / ‖ref‖_F, except that the denominator is at
 * least half the size ‖ref‖_F typically has for these operands,
 * ‖x‖_F·‖W‖_F/√K (plus the bias): a single output whose K terms happen to
 * cancel to near zero would otherwise turn f32 rounding into a failure.
 * For the random data here ‖ref‖_F is about twice that floor, so the floor
 * only acts on such cancellations. */
static inline double test_scaled_error(const void *y, tgemm_dtype dt, int64_t m, int64_t n, int64_t ldy,
                           const double *ref, double x_ss, double w_ss, double bias_ss,
                           int64_t k) {
  double rel = test_rel_error(y, dt, m, n, ldy, ref);
  if (!isfinite(rel)) return rel;
  double ref_ss = 0;
  for (int64_t i = 0; i < m * n; i++) ref_ss += ref[i] * ref[i];
  double floor_norm = 0.5 * sqrt(x_ss * w_ss / (double)k + (double)m * bias_ss);
  double ref_norm = sqrt(ref_ss);
  return ref_norm >= floor_norm ? rel : rel * ref_norm / floor_norm;
}

/* Every element of y inside [m, n] is finite and every padding element is
 * still the poison (NaN). */
static inline void test_check_written(const void *y, tgemm_dtype dt, int64_t m, int64_t n, int64_t ld,
                          const char *what) {
  int64_t unwritten = 0, clobbered = 0;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < ld; j++) {
      float v = tgemm__load_f32((const char *)y + (size_t)(i * ld) * tgemm_dtype_size(dt), (int)dt, j);
      if (j < n && !isfinite(v)) unwritten++;
      if (j >= n && !isnan(v)) clobbered++;
    }
  CHECK(unwritten == 0 && clobbered == 0, "%s: %lld outputs unwritten, %lld padding values written",
        what, (long long)unwritten, (long long)clobbered);
}

/* A float with a random biased exponent in [min_biased, max_biased],
 * random mantissa and sign. */
static inline float test_random_bits_float(int min_biased, int max_biased) {
  uint32_t exp = (uint32_t)(min_biased + (int)(test_rand_u64() % (uint64_t)(max_biased - min_biased + 1)));
  uint32_t bits = (exp << 23) | (uint32_t)(test_rand_u64() & 0x7fffffu);
  if (test_rand_u64() & 1) bits |= 0x80000000u;
  return tgemm__bits_f32(bits);
}

/* E2M1 grid points, midpoints and their neighbours, times 2^e. */
static inline float test_random_grid_float(int e) {
  static const float grid[] = {0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f, 1.75f, 2.0f,
                               2.5f,  3.0f, 3.5f,  4.0f, 5.0f,  6.0f, 7.0f,  0.0f};
  float g = grid[test_rand_u64() % (sizeof grid / sizeof grid[0])];
  uint64_t r = test_rand_u64() % 4;
  if (r == 1) g = nextafterf(g, INFINITY);
  else if (r == 2) g = nextafterf(g, 0.0f);
  float v = ldexpf(g, e);
  return (test_rand_u64() & 1) ? -v : v;
}

/* Remove a test's temp folder and everything in it. */
static inline void test_remove_dir(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* The test's own temp folder, made by test_make_tmp_dir. */
static inline char *test_tmp_dir(void) {
  static char dir[512];
  return dir;
}

/* Makes "$TMPDIR/<prefix>_XXXXXX" (/tmp without TMPDIR); 0 on success. */
static inline int test_make_tmp_dir(const char *prefix) {
  const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(test_tmp_dir(), 512, "%s/%s_XXXXXX", base, prefix);
  if (mkdtemp(test_tmp_dir())) return 0;
  perror("mkdtemp");
  return -1;
}

/* A path in the temp folder; a ring of 64 buffers, enough for every path
 * one check holds at once. */
static inline const char *test_tmp_path(const char *name) {
  static char buf[64][600];
  static int which;
  char *p = buf[which++ & 63];
  snprintf(p, sizeof buf[0], "%s/%s", test_tmp_dir(), name);
  return p;
}

/* Exit code: 0 when every CHECK passed. */
static inline int test_finish(const char *test_name) {
  if (test_failures) {
    printf("%s: %d check(s) FAILED\n", test_name, test_failures);
    return 1;
  }
  printf("%s: all checks passed\n", test_name);
  return 0;
}

#endif
