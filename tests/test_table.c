/* The tuned table: save/load round trip, merging keeps the fastest row per
 * key, each kind of malformed line reported with its line number and
 * skipped, rows of other devices skipped and counted, a foreign file never
 * overwritten, atomic saves (a reader never sees a torn file, even when the
 * writer is killed) and concurrent savers under the lock losing no rows. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/internal.h"
#include "route/table.h"
#include "test_util.h"

static char tmp_dir[] = "/tmp/tgemm_table_XXXXXX";

static const tgemm__device_key dev = {"NVIDIA H100 80GB HBM3", "sm_90", 132, "cublasLt-130100"};

static void path_in_tmp(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", tmp_dir, name);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CHECK(f != NULL, "open %s", path);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  size_t got = fread(buf, 1, (size_t)n, f);
  buf[got] = '\0';
  fclose(f);
  return buf;
}

/* A random but valid row. */
static tgemm__table_row random_row(const tgemm__device_key *d, int64_t m) {
  tgemm__table_row r;
  memset(&r, 0, sizeof r);
  r.device = *d;
  const tgemm_dtype dts[] = {TGEMM_BF16, TGEMM_F16, TGEMM_F32};
  r.shape.m = m;
  r.shape.n = 1 + (int64_t)(test_rand_u64() % 40000);
  r.shape.k = 1 + (int64_t)(test_rand_u64() % 20000);
  r.shape.dtype = dts[test_rand_u64() % 3];
  r.shape.out_dtype = test_rand_u64() % 2 ? TGEMM_BF16 : TGEMM_F32;
  r.shape.has_bias = test_rand_u64() % 2;
  r.kernel.route = (tgemm_route)(1 + test_rand_u64() % (TGEMM_ROUTE_COUNT - 1));
  snprintf(r.kernel.name, sizeof r.kernel.name, "kernel_%llu",
           (unsigned long long)(test_rand_u64() % 1000));
  for (int i = 0; i < TGEMM__KERNEL_PARAMS; i++)
    r.kernel.params[i] = (int32_t)(test_rand_u64() % 2000001) - 1000000;
  if (test_rand_u64() % 2) {
    r.kernel.has_algo = true;
    for (size_t i = 0; i < sizeof r.kernel.algo; i++) r.kernel.algo[i] = (uint8_t)test_rand_u64();
  }
  r.split_k = (int32_t)(test_rand_u64() % 16);
  r.us = 0.5 + 1000.0 * test_rand_unit();
  r.tflops = 800.0 * test_rand_unit();
  r.gbps = 3000.0 * test_rand_unit();
  r.error = test_rand_u64() % 4 ? 0.2 * test_rand_unit() : NAN;
  return r;
}

static bool close_rel(double a, double b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  return fabs(a - b) <= 1e-5 * fabs(b);
}

static bool rows_equal(const tgemm__table_row *a, const tgemm__table_row *b) {
  return tgemm__device_key_equal(&a->device, &b->device) && a->shape.m == b->shape.m &&
         a->shape.n == b->shape.n && a->shape.k == b->shape.k && a->shape.dtype == b->shape.dtype &&
         a->shape.out_dtype == b->shape.out_dtype && a->shape.has_bias == b->shape.has_bias &&
         a->kernel.route == b->kernel.route && !strcmp(a->kernel.name, b->kernel.name) &&
         !memcmp(a->kernel.params, b->kernel.params, sizeof a->kernel.params) &&
         a->kernel.has_algo == b->kernel.has_algo &&
         (!a->kernel.has_algo || !memcmp(a->kernel.algo, b->kernel.algo, sizeof a->kernel.algo)) &&
         a->split_k == b->split_k && close_rel(a->us, b->us) && close_rel(a->tflops, b->tflops) &&
         close_rel(a->gbps, b->gbps) && close_rel(a->error, b->error);
}

static void test_round_trip(void) {
  char path[256];
  path_in_tmp(path, sizeof path, "round.csv");
  /* device names with a comma and quotes must survive CSV quoting */
  tgemm__device_key odd = {"cpu:Vendor \"X\", 8-core", "x86_64-avx2", 8, "openblas-0.3.21"};
  struct tgemm__table *t = tgemm__table_new(&odd);
  enum { N_ROWS = 300 };
  static tgemm__table_row rows[N_ROWS];
  for (int i = 0; i < N_ROWS; i++) {
    rows[i] = random_row(&odd, 1 + i); /* distinct M: distinct keys */
    CHECK_OK(tgemm__table_insert(NULL, t, &rows[i], TGEMM__TABLE_KEEP_FASTEST));
  }
  CHECK(tgemm__table_size(t) == N_ROWS, "size %lld", (long long)tgemm__table_size(t));
  CHECK_OK(tgemm__table_save(NULL, t, path));
  tgemm__table_free(t);

  t = tgemm__table_new(&odd);
  tgemm__table_stats st;
  CHECK_OK(tgemm__table_load(NULL, t, path, &st));
  CHECK(st.n_rows == N_ROWS && st.n_malformed == 0 && st.n_foreign == 0,
        "reloaded %lld rows, %lld malformed (%s), %lld foreign", (long long)st.n_rows,
        (long long)st.n_malformed, st.first_bad, (long long)st.n_foreign);
  int mismatches = 0;
  for (int i = 0; i < N_ROWS; i++) {
    const tgemm__table_row *got = tgemm__table_lookup(t, &rows[i].shape, rows[i].kernel.route);
    if (!got || !rows_equal(got, &rows[i])) mismatches++;
  }
  CHECK(mismatches == 0, "%d of %d rows differ after the round trip", mismatches, N_ROWS);
  /* lookups for keys that are not there */
  tgemm__shape missing = rows[0].shape;
  missing.k += 1;
  CHECK(tgemm__table_lookup(t, &missing, rows[0].kernel.route) == NULL, "another K is a miss");
  missing = rows[0].shape;
  missing.has_bias = !missing.has_bias;
  CHECK(tgemm__table_lookup(t, &missing, rows[0].kernel.route) == NULL, "bias is part of the key");
  tgemm_route other = rows[0].kernel.route == TGEMM_ROUTE_SKINNY ? TGEMM_ROUTE_LIBRARY : TGEMM_ROUTE_SKINNY;
  CHECK(tgemm__table_lookup(t, &rows[0].shape, other) == NULL, "the route is part of the key");
  CHECK(tgemm__table_find(t, &dev, &rows[0].shape, rows[0].kernel.route) == NULL,
        "another device is a miss");
  tgemm__table_free(t);

  /* a file that does not exist yet, a header-only file, an empty file */
  char empty[256];
  path_in_tmp(empty, sizeof empty, "empty.csv");
  t = tgemm__table_new(&dev);
  CHECK_OK(tgemm__table_save(NULL, t, empty));
  char *text = read_text(empty);
  CHECK(text && !strncmp(text, tgemm__table_header(), strlen(tgemm__table_header())),
        "an empty table is a header: %s", text ? text : "(none)");
  free(text);
  write_text(empty, "");
  CHECK_OK(tgemm__table_load(NULL, t, empty, &st));
  CHECK(st.n_rows == 0 && st.n_malformed == 0, "an empty file is an empty table");
  tgemm__table_free(t);

  /* rows that could not be written back are refused at insert */
  t = tgemm__table_new(NULL);
  tgemm__table_row bad = random_row(&dev, 5);
  snprintf(bad.device.device, sizeof bad.device.device, "two\nlines");
  CHECK_STATUS(tgemm__table_insert(NULL, t, &bad, TGEMM__TABLE_REPLACE), TGEMM_INVALID_ARGUMENT);
  bad = random_row(&dev, 5);
  bad.us = -1;
  CHECK_STATUS(tgemm__table_insert(NULL, t, &bad, TGEMM__TABLE_REPLACE), TGEMM_INVALID_ARGUMENT);
  bad = random_row(&dev, 5);
  bad.kernel.route = TGEMM_ROUTE_AUTO;
  CHECK_STATUS(tgemm__table_insert(NULL, t, &bad, TGEMM__TABLE_REPLACE), TGEMM_INVALID_ARGUMENT);
  CHECK(tgemm__table_size(t) == 0, "nothing stored");
  tgemm__table_free(t);

  /* a device's table takes only that device's rows */
  t = tgemm__table_new(&dev);
  tgemm__table_row foreign = random_row(&odd, 5);
  CHECK_STATUS(tgemm__table_insert(NULL, t, &foreign, TGEMM__TABLE_REPLACE), TGEMM_INVALID_ARGUMENT);
  /* every route of one shape comes back from one lookup */
  tgemm__table_row per_route[TGEMM_ROUTE_COUNT];
  for (int r = TGEMM_ROUTE_REFERENCE; r < TGEMM_ROUTE_COUNT; r++) {
    per_route[r] = random_row(&dev, 77);
    per_route[r].shape = per_route[TGEMM_ROUTE_REFERENCE].shape;
    per_route[r].kernel.route = (tgemm_route)r;
    if (r != TGEMM_ROUTE_W4A16) CHECK_OK(tgemm__table_insert(NULL, t, &per_route[r], TGEMM__TABLE_REPLACE));
  }
  const tgemm__table_row *found[TGEMM_ROUTE_COUNT];
  int n_found = tgemm__table_lookup_routes(t, &per_route[TGEMM_ROUTE_REFERENCE].shape, found);
  CHECK(n_found == TGEMM_ROUTE_COUNT - 2, "routes found: %d", n_found);
  for (int r = TGEMM_ROUTE_REFERENCE; r < TGEMM_ROUTE_COUNT; r++)
    CHECK(r == TGEMM_ROUTE_W4A16 ? found[r] == NULL : found[r] && (int)found[r]->kernel.route == r,
          "route %d in its place", r);
  tgemm__shape other_m = per_route[TGEMM_ROUTE_REFERENCE].shape;
  other_m.m = 78;
  CHECK(tgemm__table_lookup_routes(t, &other_m, found) == 0 && found[TGEMM_ROUTE_SKINNY] == NULL,
        "another M finds nothing");
  tgemm__table_free(t);
}

static void test_merge(void) {
  char path[256];
  path_in_tmp(path, sizeof path, "merge.csv");
  tgemm__table_row a = random_row(&dev, 16), b = random_row(&dev, 32);
  a.us = 10.0;
  struct tgemm__table *t1 = tgemm__table_new(&dev);
  CHECK_OK(tgemm__table_insert(NULL, t1, &a, TGEMM__TABLE_KEEP_FASTEST));
  CHECK_OK(tgemm__table_save(NULL, t1, path));

  /* in memory: KEEP_FASTEST keeps the faster, REPLACE always replaces */
  tgemm__table_row slower = a;
  slower.us = 20.0;
  snprintf(slower.kernel.name, sizeof slower.kernel.name, "slower");
  CHECK_OK(tgemm__table_insert(NULL, t1, &slower, TGEMM__TABLE_KEEP_FASTEST));
  CHECK(tgemm__table_lookup(t1, &a.shape, a.kernel.route)->us == 10.0, "keep fastest in memory");
  CHECK_OK(tgemm__table_insert(NULL, t1, &slower, TGEMM__TABLE_REPLACE));
  CHECK(tgemm__table_lookup(t1, &a.shape, a.kernel.route)->us == 20.0, "replace in memory");
  CHECK(tgemm__table_size(t1) == 1, "one key, one row");

  /* on disk: a slower row for the same key does not displace the faster */
  CHECK_OK(tgemm__table_save(NULL, t1, path));
  tgemm__table_row faster = a;
  faster.us = 4.0;
  snprintf(faster.kernel.name, sizeof faster.kernel.name, "faster");
  struct tgemm__table *t2 = tgemm__table_new(&dev);
  CHECK_OK(tgemm__table_insert(NULL, t2, &faster, TGEMM__TABLE_KEEP_FASTEST));
  CHECK_OK(tgemm__table_insert(NULL, t2, &b, TGEMM__TABLE_KEEP_FASTEST));
  CHECK_OK(tgemm__table_save(NULL, t2, path));

  struct tgemm__table *back = tgemm__table_new(&dev);
  tgemm__table_stats st;
  CHECK_OK(tgemm__table_load(NULL, back, path, &st));
  const tgemm__table_row *ra = tgemm__table_lookup(back, &a.shape, a.kernel.route);
  CHECK(st.n_rows == 2, "two keys on disk, got %lld", (long long)st.n_rows);
  CHECK(ra && ra->us == 4.0 && !strcmp(ra->kernel.name, "faster"), "the fastest row won: %s %g",
        ra ? ra->kernel.name : "-", ra ? ra->us : -1.0);
  CHECK(tgemm__table_lookup(back, &b.shape, b.kernel.route) != NULL, "the other key is kept");
  tgemm__table_free(back);
  /* and saving the slower one again changes nothing */
  CHECK_OK(tgemm__table_save(NULL, t1, path));
  back = tgemm__table_new(&dev);
  CHECK_OK(tgemm__table_load(NULL, back, path, &st));
  ra = tgemm__table_lookup(back, &a.shape, a.kernel.route);
  CHECK(ra && ra->us == 4.0, "a slower re-save does not win: %g", ra ? ra->us : -1.0);
  tgemm__table_free(back);

  /* the same key in two files of a TGEMM_CONFIG list: the faster wins */
  char path2[256], list[600];
  path_in_tmp(path2, sizeof path2, "merge2.csv");
  tgemm__table_row fastest = a;
  fastest.us = 1.5;
  struct tgemm__table *t3 = tgemm__table_new(&dev);
  CHECK_OK(tgemm__table_insert(NULL, t3, &fastest, TGEMM__TABLE_KEEP_FASTEST));
  CHECK_OK(tgemm__table_save(NULL, t3, path2));
  snprintf(list, sizeof list, "%s:%s", path, path2);
  back = tgemm__table_new(&dev);
  CHECK_OK(tgemm__table_load(NULL, back, list, &st));
  ra = tgemm__table_lookup(back, &a.shape, a.kernel.route);
  CHECK(ra && ra->us == 1.5 && st.n_rows == 2, "two files merged: %g, %lld rows", ra ? ra->us : -1.0,
        (long long)st.n_rows);
  tgemm__table_free(back);
  tgemm__table_free(t1);
  tgemm__table_free(t2);
  tgemm__table_free(t3);
}

/* Run f with stderr captured into a buffer. */
static char *capture_stderr(void (*f)(void *), void *arg) {
  char path[256];
  path_in_tmp(path, sizeof path, "stderr.txt");
  fflush(stderr);
  int saved = dup(2);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fd, 2);
  close(fd);
  f(arg);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  return read_text(path);
}

typedef struct load_job {
  struct tgemm__table *table;
  const char *text;
  tgemm__table_stats stats;
  tgemm_status status;
} load_job;

static void run_load(void *p) {
  load_job *j = p;
  j->status = tgemm__table_load_text(NULL, j->table, j->text, "bad.csv", &j->stats);
}

static void test_malformed(void) {
  tgemm__table_row good = random_row(&dev, 7), good2 = random_row(&dev, 9);
  char line[1024], line2[1024];
  CHECK(tgemm__table_format_row(&good, line, sizeof line), "format");
  CHECK(tgemm__table_format_row(&good2, line2, sizeof line2), "format");
  const char *dv = "1,NVIDIA H100 80GB HBM3,sm_90,132,cublasLt-130100";
  const char *tail = "skinny,k,0;0;0;0;0;0;0;0,,0,1.5,1,1,0.001";
  char text[16384];
  /* each bad line: (line number, why) */
  struct {
    const char *fmt;
    const char *why;
  } bad[] = {
      {"%s,16,64,128,0,bf16,bf16,skinny,k", "columns"},                          /* too few */
      {"%s,16,64,128,0,bf16,bf16,%s,extra", "columns"},                          /* too many */
      {"%s,abc,64,128,0,bf16,bf16,%s", "bad m"},                                 /* not a number */
      {"%s,16,-64,128,0,bf16,bf16,%s", "bad n"},                                 /* negative */
      {"%s,16,64,128,2,bf16,bf16,%s", "bias"},                                   /* bias 2 */
      {"%s,16,64,128,0,bf17,bf16,%s", "dtype"},                                  /* unknown dtype */
      {"%s,16,64,128,0,bf16,bf16,w9a9,k,0;0;0;0;0;0;0;0,,0,1.5,1,1,0.001", "route"},
      {"%s,16,64,128,0,bf16,bf16,auto,k,0;0;0;0;0;0;0;0,,0,1.5,1,1,0.001", "route"},
      {"%s,16,64,128,0,bf16,bf16,skinny,k,0;0;0;0;0;0;0;0,zz,0,1.5,1,1,0.001", "algo"},
      {"%s,16,64,128,0,bf16,bf16,skinny,k,0;0;0;0;0;0;0;0,"
       "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
       "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg,0,1.5,1,1,0.001",
       "hex"},
      {"%s,16,64,128,0,bf16,bf16,skinny,k,0;0;0,,0,1.5,1,1,0.001", "params"},
      {"%s,16,64,128,0,bf16,bf16,skinny,k,0;0;0;0;0;0;0;0,,0,1.5x,1,1,0.001", "bad us"},
      {"%s,16,64,128,0,bf16,bf16,skinny,k,0;0;0;0;0;0;0;0,,0,-3,1,1,0.001", "us"},
      {"%s,16,64,128,0,bf16,bf16,skinny,,0;0;0;0;0;0;0;0,,0,1.5,1,1,0.001", "kernel"},
      {"%s,16,64,128,0,bf16,bf16,skinny,\"k,0;0;0;0;0;0;0;0,,0,1.5,1,1,0.001", "quote"},
  };
  int n_bad = (int)(sizeof bad / sizeof bad[0]);
  int lines[64];
  size_t used = (size_t)snprintf(text, sizeof text, "# a comment line\n%s\n%s\n", tgemm__table_header(), line);
  int line_no = 3;
  for (int i = 0; i < n_bad; i++) {
    used += (size_t)snprintf(text + used, sizeof text - used, bad[i].fmt, dv, tail);
    text[used++] = '\n';
    lines[i] = ++line_no;
  }
  /* schema 2 */
  used += (size_t)snprintf(text + used, sizeof text - used, "2%s\n", line + 1);
  lines[n_bad++] = ++line_no;
  /* a blank line, then a good row after all the bad ones, with CRLF */
  used += (size_t)snprintf(text + used, sizeof text - used, "\n%s\r\n", line2);
  line_no += 2;
  text[used] = '\0';

  load_job job = {tgemm__table_new(&dev), text, {0}, TGEMM_OK};
  char *err = capture_stderr(run_load, &job);
  CHECK_OK(job.status);
  CHECK(job.stats.n_malformed == n_bad, "%lld malformed lines, expected %d", (long long)job.stats.n_malformed,
        n_bad);
  CHECK(job.stats.n_rows == 2, "both good rows kept (before and after the bad ones): %lld",
        (long long)job.stats.n_rows);
  CHECK(job.stats.first_bad_line == lines[0], "first bad line %lld, expected %d",
        (long long)job.stats.first_bad_line, lines[0]);
  CHECK(tgemm__table_lookup(job.table, &good2.shape, good2.kernel.route) != NULL, "the CRLF row loaded");
  /* the first 10 are printed with file:line, the rest summarized */
  for (int i = 0; i < n_bad && i < 10; i++) {
    char want[64];
    snprintf(want, sizeof want, "bad.csv:%d:", lines[i]);
    CHECK(err && strstr(err, want), "stderr names %s (%s)", want, bad[i].why);
  }
  CHECK(err && strstr(err, "more malformed lines"), "the rest are counted: %s", err ? err : "");
  free(err);
  tgemm__table_free(job.table);

  /* each reason, one at a time, with its line number in stats */
  for (int i = 0; i < n_bad - 1; i++) {
    char one[2048];
    int len = snprintf(one, sizeof one, "%s\n", tgemm__table_header());
    snprintf(one + len, sizeof one - (size_t)len, bad[i].fmt, dv, tail);
    load_job j1 = {tgemm__table_new(&dev), one, {0}, TGEMM_OK};
    char *e1 = capture_stderr(run_load, &j1);
    CHECK(j1.stats.n_malformed == 1 && j1.stats.first_bad_line == 2 && j1.stats.n_rows == 0,
          "bad line %d (%s): %lld malformed at line %lld", i, bad[i].why, (long long)j1.stats.n_malformed,
          (long long)j1.stats.first_bad_line);
    CHECK(strstr(j1.stats.first_bad, "bad.csv:2:") != NULL, "message: %s", j1.stats.first_bad);
    free(e1);
    tgemm__table_free(j1.table);
  }

  /* a file with a foreign header: skipped whole, and never overwritten */
  char path[256];
  path_in_tmp(path, sizeof path, "foreign_header.csv");
  const char *foreign = "name,value\nfoo,1\n";
  write_text(path, foreign);
  struct tgemm__table *t = tgemm__table_new(&dev);
  tgemm__table_stats st;
  CHECK_OK(tgemm__table_load(NULL, t, path, &st));
  CHECK(st.n_malformed == 1 && st.n_rows == 0 && st.first_bad_line == 1, "foreign header reported");
  CHECK_OK(tgemm__table_insert(NULL, t, &good, TGEMM__TABLE_KEEP_FASTEST));
  CHECK_STATUS(tgemm__table_save(NULL, t, path), TGEMM_FORMAT_ERROR);
  char *after = read_text(path);
  CHECK(after && !strcmp(after, foreign), "a foreign file is left alone");
  free(after);
  tgemm__table_free(t);

  /* binary junk never crashes */
  char junk[4096];
  for (size_t i = 0; i < sizeof junk - 1; i++) junk[i] = (char)(1 + test_rand_u64() % 255);
  junk[sizeof junk - 1] = '\0';
  used = (size_t)snprintf(text, sizeof text, "%s\n", tgemm__table_header());
  memcpy(text + used, junk, sizeof junk);
  load_job j2 = {tgemm__table_new(&dev), text, {0}, TGEMM_OK};
  char *e2 = capture_stderr(run_load, &j2);
  CHECK_OK(j2.status);
  CHECK(j2.stats.n_rows == 0 && j2.stats.n_malformed >= 1, "junk: %lld rows", (long long)j2.stats.n_rows);
  free(e2);
  tgemm__table_free(j2.table);
}

static void test_foreign_rows(void) {
  tgemm__device_key other_units = dev, other_lib = dev, other_name = dev;
  other_units.units = 114;
  snprintf(other_lib.lib_version, sizeof other_lib.lib_version, "cublasLt-120400");
  snprintf(other_name.device, sizeof other_name.device, "NVIDIA H200");
  struct tgemm__table *all = tgemm__table_new(NULL);
  tgemm__table_row mine = random_row(&dev, 1);
  tgemm__table_row theirs[3] = {random_row(&other_units, 1), random_row(&other_lib, 1),
                                random_row(&other_name, 1)};
  theirs[0].shape = theirs[1].shape = theirs[2].shape = mine.shape;
  theirs[0].kernel.route = theirs[1].kernel.route = theirs[2].kernel.route = mine.kernel.route;
  CHECK_OK(tgemm__table_insert(NULL, all, &mine, TGEMM__TABLE_KEEP_FASTEST));
  for (int i = 0; i < 3; i++) CHECK_OK(tgemm__table_insert(NULL, all, &theirs[i], TGEMM__TABLE_KEEP_FASTEST));
  CHECK(tgemm__table_size(all) == 4, "an unfiltered table keeps every device: %lld",
        (long long)tgemm__table_size(all));
  char path[256], missing[256], list[600];
  path_in_tmp(path, sizeof path, "devices.csv");
  path_in_tmp(missing, sizeof missing, "does_not_exist.csv");
  CHECK_OK(tgemm__table_save(NULL, all, path));
  tgemm__table_free(all);

  snprintf(list, sizeof list, "%s::%s", missing, path);
  struct tgemm__table *t = tgemm__table_new(&dev);
  tgemm__table_stats st;
  CHECK_OK(tgemm__table_load(NULL, t, list, &st));
  CHECK(st.n_rows == 1 && st.n_foreign == 3 && st.n_missing_files == 1 && st.n_malformed == 0,
        "rows %lld, foreign %lld, missing files %lld", (long long)st.n_rows, (long long)st.n_foreign,
        (long long)st.n_missing_files);
  const tgemm__table_row *got = tgemm__table_lookup(t, &mine.shape, mine.kernel.route);
  CHECK(got && tgemm__device_key_equal(&got->device, &dev) && close_rel(got->us, mine.us), "this device's row");

  /* saving this device's table keeps the other devices' rows on disk */
  tgemm__table_row newer = random_row(&dev, 2);
  CHECK_OK(tgemm__table_insert(NULL, t, &newer, TGEMM__TABLE_KEEP_FASTEST));
  CHECK_OK(tgemm__table_save(NULL, t, path));
  struct tgemm__table *back = tgemm__table_new(NULL);
  CHECK_OK(tgemm__table_load(NULL, back, path, &st));
  CHECK(st.n_rows == 5, "other devices' rows survive a save: %lld", (long long)st.n_rows);
  tgemm__table_free(back);
  tgemm__table_free(t);
}

/* -------------------------------------------------- atomicity and locking */

static struct tgemm__table *numbered_table(int n_rows, double us) {
  struct tgemm__table *t = tgemm__table_new(&dev);
  for (int i = 0; i < n_rows; i++) {
    tgemm__table_row r = random_row(&dev, 1 + i);
    /* fixed keys, so that every save rewrites the same rows */
    r.shape = (tgemm__shape){1 + i, 64, 128, TGEMM_BF16, TGEMM_BF16, false};
    r.kernel.route = TGEMM_ROUTE_LIBRARY;
    r.us = us;
    tgemm__table_insert(NULL, t, &r, TGEMM__TABLE_REPLACE);
  }
  return t;
}

/* A child saves two different big tables in turn (REPLACE-style: each is
 * faster than the last), while the parent parses the file over and over;
 * then the child is killed mid-loop.  Every read must parse cleanly. */
static void test_atomic_save(void) {
  char path[256];
  path_in_tmp(path, sizeof path, "atomic.csv");
  enum { ROWS = 3000 };
  struct tgemm__table *first = numbered_table(ROWS, 1000.0);
  CHECK_OK(tgemm__table_save(NULL, first, path));
  tgemm__table_free(first);

  fflush(NULL);
  pid_t child = fork();
  if (child == 0) {
    for (int i = 0;; i++) {
      /* ever faster rows, so that each save really rewrites the file */
      struct tgemm__table *t = numbered_table(ROWS, 999.0 - i * 1e-3);
      tgemm__table_save(NULL, t, path);
      tgemm__table_free(t);
    }
  }
  int reads = 0, torn = 0;
  for (int i = 0; i < 60; i++) {
    char *text = read_text(path);
    if (!text) {
      torn++;
      continue;
    }
    struct tgemm__table *t = tgemm__table_new(&dev);
    tgemm__table_stats st;
    tgemm_status s = tgemm__table_load_text(NULL, t, text, "atomic.csv", &st);
    if (s != TGEMM_OK || st.n_malformed != 0 || st.n_rows != ROWS) {
      torn++;
      if (torn < 3)
        fprintf(stderr, "torn read %d: %lld rows, %lld malformed (%s)\n", i, (long long)st.n_rows,
                (long long)st.n_malformed, st.first_bad);
    }
    reads++;
    tgemm__table_free(t);
    free(text);
    usleep(5000 + (useconds_t)(test_rand_u64() % 20000));
  }
  kill(child, SIGKILL); /* very likely mid-save: the file must still be whole */
  int status;
  waitpid(child, &status, 0);
  CHECK(torn == 0, "%d of %d reads saw a torn table", torn, reads);
  struct tgemm__table *t = tgemm__table_new(&dev);
  tgemm__table_stats st;
  CHECK_OK(tgemm__table_load(NULL, t, path, &st));
  CHECK(st.n_malformed == 0 && st.n_rows == ROWS, "after the kill: %lld rows, %lld malformed",
        (long long)st.n_rows, (long long)st.n_malformed);
  tgemm__table_free(t);
}

/* Several processes each add their own rows one save at a time; with the
 * lock and the merge, none is lost. */
static void test_concurrent_savers(void) {
  char path[256];
  path_in_tmp(path, sizeof path, "concurrent.csv");
  enum { WRITERS = 4, ROWS_EACH = 20 };
  fflush(NULL);
  pid_t kids[WRITERS];
  for (int w = 0; w < WRITERS; w++) {
    kids[w] = fork();
    if (kids[w] == 0) {
      test_rng_state ^= (uint64_t)(w + 1) * 0x9e3779b97f4a7c15ull;
      struct tgemm__table *t = tgemm__table_new(&dev);
      int failures = 0;
      for (int i = 0; i < ROWS_EACH; i++) {
        tgemm__table_row r = random_row(&dev, 10000 * (w + 1) + i); /* keys unique to this writer */
        tgemm__table_insert(NULL, t, &r, TGEMM__TABLE_REPLACE);
        failures += tgemm__table_save(NULL, t, path) != TGEMM_OK;
      }
      tgemm__table_free(t);
      _exit(failures ? 1 : 0);
    }
  }
  int failed = 0;
  for (int w = 0; w < WRITERS; w++) {
    int status;
    waitpid(kids[w], &status, 0);
    failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  CHECK(failed == 0, "%d writers failed to save", failed);
  struct tgemm__table *t = tgemm__table_new(&dev);
  tgemm__table_stats st;
  CHECK_OK(tgemm__table_load(NULL, t, path, &st));
  CHECK(st.n_rows == WRITERS * ROWS_EACH && st.n_malformed == 0, "%lld of %d rows survived",
        (long long)st.n_rows, WRITERS * ROWS_EACH);
  tgemm__table_free(t);
}


int main(void) {
  test_seed("test_table");
  if (!mkdtemp(tmp_dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_round_trip();
  test_merge();
  test_malformed();
  test_foreign_rows();
  test_atomic_save();
  test_concurrent_savers();
  test_remove_dir(tmp_dir);
  return test_finish("test_table");
}
