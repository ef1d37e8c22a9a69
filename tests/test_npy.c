/* The .npy reader and writer: round trips of every dtype and rank, files
 * written by hand in every supported format version, and every malformed
 * file we can think of (each must fail with the right status and a message,
 * never crash or read out of bounds), plus a mutation fuzz of the header. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/npy.h"
#include "test_util.h"


static void write_bytes(const char *path, const void *bytes, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "cannot create %s: %s\n", path, strerror(errno));
    exit(1);
  }
  if (len && fwrite(bytes, 1, len, f) != len) exit(1);
  fclose(f);
}

/* A .npy image with the given version and header text (used verbatim,
 * header_len = its length) followed by data_len bytes of data. */
static size_t build_npy(uint8_t *buf, size_t cap, int major, int minor,
                        const char *header, const void *data, size_t data_len) {
  size_t hl = strlen(header);
  size_t prefix = major == 1 ? 10 : 12;
  if (prefix + hl + data_len > cap) {
    fprintf(stderr, "build_npy: buffer too small\n");
    exit(1);
  }
  memcpy(buf, "\x93NUMPY", 6);
  buf[6] = (uint8_t)major;
  buf[7] = (uint8_t)minor;
  buf[8] = (uint8_t)(hl & 0xff);
  buf[9] = (uint8_t)(hl >> 8);
  if (prefix == 12) {
    buf[10] = (uint8_t)(hl >> 16);
    buf[11] = (uint8_t)(hl >> 24);
  }
  memcpy(buf + prefix, header, hl);
  if (data_len) memcpy(buf + prefix + hl, data, data_len);
  return prefix + hl + data_len;
}

static uint8_t big_buf[1 << 16];
static uint8_t data_buf[4096];

/* Write a hand-built file and read it back with want_ndim, expecting
 * `expected`; on failure the message must be non-empty and *out zeroed. */
static void expect_file(const char *label, int major, int minor,
                        const char *header, size_t data_len, int want_ndim,
                        tgemm_status expected) {
  size_t n = build_npy(big_buf, sizeof big_buf, major, minor, header, data_buf,
                       data_len);
  const char *path = test_tmp_path("case.npy");
  write_bytes(path, big_buf, n);
  tgemm__npy_array a;
  char err[512] = "";
  tgemm_status st = tgemm__npy_read(path, want_ndim, &a, err, sizeof err);
  CHECK(st == expected, "%s: got %s (%s), expected %s", label,
        tgemm_status_name(st), err, tgemm_status_name(expected));
  if (st != TGEMM_OK) {
    CHECK(err[0] != '\0', "%s: empty error message", label);
    CHECK(a.data == NULL && a.ndim == 0, "%s: out not zeroed", label);
    CHECK(strchr(err, '\n') == NULL, "%s: message is not one line", label);
  }
  /* The in-memory parser must agree with the file reader. */
  tgemm__npy_array b;
  char err2[512] = "";
  tgemm_status st2 = tgemm__npy_parse(label, big_buf, n, want_ndim, &b, err2,
                                      sizeof err2);
  CHECK(st2 == st, "%s: parse gave %s, read gave %s", label,
        tgemm_status_name(st2), tgemm_status_name(st));
  if (st == TGEMM_OK && st2 == TGEMM_OK) {
    CHECK(a.nbytes == data_len && b.nbytes == data_len &&
              memcmp(a.data, data_buf, data_len) == 0 &&
              memcmp(b.data, data_buf, data_len) == 0,
          "%s: data differs", label);
  }
  tgemm__npy_free(&a);
  tgemm__npy_free(&b);
}

static void expect_bytes(const char *label, const uint8_t *bytes, size_t n,
                         tgemm_status expected) {
  const char *path = test_tmp_path("bytes.npy");
  write_bytes(path, bytes, n);
  tgemm__npy_array a;
  char err[512] = "";
  tgemm_status st = tgemm__npy_read(path, 0, &a, err, sizeof err);
  CHECK(st == expected, "%s: got %s (%s), expected %s", label,
        tgemm_status_name(st), err, tgemm_status_name(expected));
  if (st != TGEMM_OK) CHECK(err[0] != '\0', "%s: empty error message", label);
  tgemm__npy_free(&a);
}

/* ---------------------------------------------------------------- tests */

static void test_round_trips(void) {
  const struct {
    tgemm__npy_dtype dtype;
    int ndim;
    int64_t shape[3];
  } cases[] = {
      {TGEMM__NPY_F32, 2, {7, 33}},  {TGEMM__NPY_F32, 2, {1, 1}},
      {TGEMM__NPY_U8, 2, {5, 48}},   {TGEMM__NPY_F16, 1, {29}},
      {TGEMM__NPY_U16, 3, {2, 3, 5}}, {TGEMM__NPY_F32, 0, {0}},
      {TGEMM__NPY_U8, 2, {0, 17}},   {TGEMM__NPY_F32, 2, {3, 4097}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    size_t elem = tgemm__npy_dtype_size(cases[c].dtype);
    size_t count = 1;
    for (int i = 0; i < cases[c].ndim; i++) count *= (size_t)cases[c].shape[i];
    uint8_t *src = malloc(count * elem + 1);
    for (size_t i = 0; i < count * elem; i++) src[i] = (uint8_t)test_rand_u64();
    const char *path = test_tmp_path("round.npy");
    char err[512] = "";
    CHECK_OK(tgemm__npy_write(path, cases[c].dtype, cases[c].ndim,
                              cases[c].shape, src, err, sizeof err));
    /* Header: version 1.0, data 64-byte aligned, ends in '\n'. */
    FILE *f = fopen(path, "rb");
    uint8_t head[256];
    size_t got = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) fclose(f);
    CHECK(got >= 64 && head[6] == 1 && head[7] == 0, "case %zu: preamble", c);
    size_t hl = (size_t)head[8] | (size_t)head[9] << 8;
    CHECK((10 + hl) % 64 == 0, "case %zu: header_len %zu not aligned", c, hl);
    CHECK(10 + hl <= got && head[10 + hl - 1] == '\n', "case %zu: no newline",
          c);

    tgemm__npy_array a;
    CHECK_OK(tgemm__npy_read(path, cases[c].ndim ? cases[c].ndim : 0, &a, err,
                             sizeof err));
    CHECK(a.dtype == cases[c].dtype && a.ndim == cases[c].ndim &&
              a.count == (int64_t)count && a.nbytes == count * elem &&
              a.data != NULL,
          "case %zu: metadata (%s)", c, err);
    for (int i = 0; i < a.ndim && i < cases[c].ndim; i++)
      CHECK(a.shape[i] == cases[c].shape[i], "case %zu: dim %d", c, i);
    if (a.data && a.nbytes == count * elem)
      CHECK(memcmp(a.data, src, count * elem) == 0, "case %zu: data", c);
    tgemm__npy_free(&a);
    CHECK(a.data == NULL, "free must zero");
    free(src);
  }
  /* A 2-D file asked for as 1-D fails, as 0-D too; any-rank reads it. */
  int64_t shape[2] = {2, 3};
  float v[6] = {1, 2, 3, 4, 5, 6};
  const char *path = test_tmp_path("rank.npy");
  CHECK_OK(tgemm__npy_write(path, TGEMM__NPY_F32, 2, shape, v, NULL, 0));
  tgemm__npy_array a;
  CHECK_STATUS(tgemm__npy_read(path, 1, &a, NULL, 0), TGEMM_SHAPE_MISMATCH);
  CHECK_STATUS(tgemm__npy_read(path, 3, &a, NULL, 0), TGEMM_SHAPE_MISMATCH);
  CHECK_OK(tgemm__npy_read(path, 0, &a, NULL, 0));
  tgemm__npy_free(&a);
  /* Overwrite in place: the new content wins, and no temp file is left. */
  float w[6] = {-1, -2, -3, -4, -5, -6};
  CHECK_OK(tgemm__npy_write(path, TGEMM__NPY_F32, 2, shape, w, NULL, 0));
  CHECK_OK(tgemm__npy_read(path, 2, &a, NULL, 0));
  CHECK(a.data && memcmp(a.data, w, sizeof w) == 0, "overwrite");
  tgemm__npy_free(&a);
  DIR *d = opendir(test_tmp_dir());
  struct dirent *e;
  while (d && (e = readdir(d)))
    CHECK(strstr(e->d_name, ".tmp.") == NULL, "temp file left: %s", e->d_name);
  if (d) closedir(d);
  /* Writer argument errors. */
  char err[256];
  CHECK_STATUS(tgemm__npy_write(test_tmp_path("nodir/x.npy"), TGEMM__NPY_F32, 2,
                                shape, v, err, sizeof err),
               TGEMM_IO_ERROR);
  int64_t neg[2] = {2, -3};
  CHECK_STATUS(tgemm__npy_write(path, TGEMM__NPY_F32, 2, neg, v, err, sizeof err),
               TGEMM_INVALID_ARGUMENT);
  int64_t huge[2] = {INT64_MAX / 2, 5};
  CHECK_STATUS(tgemm__npy_write(path, TGEMM__NPY_F32, 2, huge, v, err, sizeof err),
               TGEMM_OVERFLOW);
  CHECK_STATUS(tgemm__npy_write(path, TGEMM__NPY_F32, 9, shape, v, err, sizeof err),
               TGEMM_INVALID_ARGUMENT);
  CHECK_STATUS(tgemm__npy_write(path, TGEMM__NPY_F32, 2, shape, NULL, err, sizeof err),
               TGEMM_NULL_POINTER);
}

static void test_hand_written_valid(void) {
  for (size_t i = 0; i < sizeof data_buf; i++) data_buf[i] = (uint8_t)test_rand_u64();
  const char *h24 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  expect_file("v1.0 no padding", 1, 0, h24, 24, 2, TGEMM_OK);
  expect_file("v2.0", 2, 0, h24, 24, 2, TGEMM_OK);
  expect_file("v3.0", 3, 0, h24, 24, 2, TGEMM_OK);
  expect_file("padded", 1, 0,
              "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
              "                \n", 24, 2, TGEMM_OK);
  expect_file("key order, double quotes, no trailing comma", 1, 0,
              "{\"shape\": (2,3), \"fortran_order\": False, \"descr\": \"<f4\"}\n",
              24, 2, TGEMM_OK);
  expect_file("python2 longs", 1, 0,
              "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }\n",
              24, 2, TGEMM_OK);
  expect_file("f16 1-D", 1, 0,
              "{'descr': '<f2', 'fortran_order': False, 'shape': (5,), }\n", 10,
              1, TGEMM_OK);
  expect_file("u1 little", 1, 0,
              "{'descr': '<u1', 'fortran_order': False, 'shape': (3, 1), }\n", 3,
              2, TGEMM_OK);
  expect_file("u2 0-D", 1, 0,
              "{'descr': '<u2', 'fortran_order': False, 'shape': (), }\n", 2, 0,
              TGEMM_OK);
  expect_file("empty array", 1, 0,
              "{'descr': '|u1', 'fortran_order': False, 'shape': (0, 4), }\n", 0,
              2, TGEMM_OK);
  /* A v2.0 header longer than 64 KiB (only v2/v3 can say so). */
  static char long_header[70000];
  int n = snprintf(long_header, sizeof long_header,
                   "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }");
  memset(long_header + n, ' ', 69000 - (size_t)n);
  long_header[69000] = '\n';
  long_header[69001] = '\0';
  uint8_t *buf = malloc(80000);
  size_t len = build_npy(buf, 80000, 2, 0, long_header, data_buf, 8);
  tgemm__npy_array a;
  char err[512] = "";
  const char *path = test_tmp_path("long.npy");
  write_bytes(path, buf, len);
  CHECK_OK(tgemm__npy_read(path, 2, &a, err, sizeof err));
  CHECK(a.data && memcmp(a.data, data_buf, 8) == 0, "v2 long header data (%s)", err);
  tgemm__npy_free(&a);
  free(buf);
}

static void test_malformed_headers(void) {
  const char *ok_tail = "'fortran_order': False, 'shape': (2, 3), }\n";
  char h[512];
#define BAD_DESCR(descr, status)                                             \
  do {                                                                       \
    snprintf(h, sizeof h, "{'descr': '%s', %s", descr, ok_tail);             \
    expect_file("descr " descr, 1, 0, h, 24, 2, status);                     \
  } while (0)
  BAD_DESCR(">f4", TGEMM_UNSUPPORTED);
  BAD_DESCR(">f2", TGEMM_UNSUPPORTED);
  BAD_DESCR("<f8", TGEMM_UNSUPPORTED);
  BAD_DESCR("<i4", TGEMM_UNSUPPORTED);
  BAD_DESCR("|O", TGEMM_UNSUPPORTED);
  BAD_DESCR("|b1", TGEMM_UNSUPPORTED);
  BAD_DESCR("<c8", TGEMM_UNSUPPORTED);
  BAD_DESCR("=f4", TGEMM_UNSUPPORTED);
  BAD_DESCR("f4", TGEMM_UNSUPPORTED);
  BAD_DESCR("", TGEMM_UNSUPPORTED);
#undef BAD_DESCR
  const struct {
    const char *label;
    const char *header;
    size_t data_len;
    int want_ndim;
    tgemm_status status;
  } cases[] = {
      {"structured", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }\n",
       8, 0, TGEMM_UNSUPPORTED},
      {"fortran", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n",
       24, 2, TGEMM_UNSUPPORTED},
      {"0-D wanted 2", "{'descr': '<f4', 'fortran_order': False, 'shape': (), }\n",
       4, 2, TGEMM_SHAPE_MISMATCH},
      {"1-D wanted 2", "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }\n",
       24, 2, TGEMM_SHAPE_MISMATCH},
      {"3-D wanted 2", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }\n",
       24, 2, TGEMM_SHAPE_MISMATCH},
      {"9-D", "{'descr': '|u1', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }\n",
       1, 0, TGEMM_UNSUPPORTED},
      {"product overflow", "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n",
       24, 2, TGEMM_OVERFLOW},
      {"byte overflow", "{'descr': '<f4', 'fortran_order': False, 'shape': (2305843009213693952, 4), }\n",
       24, 2, TGEMM_OVERFLOW},
      {"dim over int64", "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 1), }\n",
       24, 2, TGEMM_OVERFLOW},
      {"shape larger than file", "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"truncated data", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
       23, 2, TGEMM_FORMAT_ERROR},
      {"trailing data", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
       25, 2, TGEMM_FORMAT_ERROR},
      {"negative dim", "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"float dim", "{'descr': '<f4', 'fortran_order': False, 'shape': (2.0, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"(5) is not a tuple", "{'descr': '<f4', 'fortran_order': False, 'shape': (6), }\n",
       24, 0, TGEMM_FORMAT_ERROR},
      {"list shape", "{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }\n",
       24, 0, TGEMM_FORMAT_ERROR},
      {"(,)", "{'descr': '<f4', 'fortran_order': False, 'shape': (,), }\n",
       4, 0, TGEMM_FORMAT_ERROR},
      {"(2,,3)", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,,3), }\n",
       24, 0, TGEMM_FORMAT_ERROR},
      {"(2 3)", "{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }\n",
       24, 0, TGEMM_FORMAT_ERROR},
      {"unclosed tuple", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3",
       24, 0, TGEMM_FORMAT_ERROR},
      {"false lowercase", "{'descr': '<f4', 'fortran_order': false, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"Falsey", "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"fortran 0", "{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"missing shape", "{'descr': '<f4', 'fortran_order': False}\n", 4, 0,
       TGEMM_FORMAT_ERROR},
      {"missing descr", "{'fortran_order': False, 'shape': (2, 3)}\n", 24, 0,
       TGEMM_FORMAT_ERROR},
      {"missing fortran", "{'descr': '<f4', 'shape': (2, 3)}\n", 24, 0,
       TGEMM_FORMAT_ERROR},
      {"duplicate key", "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"unknown key", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"empty header", "", 24, 2, TGEMM_FORMAT_ERROR},
      {"only spaces", "          \n", 24, 2, TGEMM_FORMAT_ERROR},
      {"{}", "{}\n", 24, 2, TGEMM_FORMAT_ERROR},
      {"open brace", "{", 24, 2, TGEMM_FORMAT_ERROR},
      {"no braces", "'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"junk after dict", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"two dicts", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }{}\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"unterminated string", "{'descr: '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"unterminated at end", "{'descr': '<f4", 24, 2, TGEMM_FORMAT_ERROR},
      {"unquoted descr", "{'descr': <f4, 'fortran_order': False, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"mixed quotes", "{'descr\": '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"escape", "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"unquoted key", "{descr: '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"missing colon", "{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"missing comma", "{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"double comma", "{'descr': '<f4',, 'fortran_order': False, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"long key", "{'descrdescrdescrdescrdescrdescrdescrdescr': '<f4'}\n", 24, 2,
       TGEMM_FORMAT_ERROR},
      {"long descr", "{'descr': '<f4444444444444444444444444444444444444444444444444', 'fortran_order': False, 'shape': (2, 3), }\n",
       24, 2, TGEMM_FORMAT_ERROR},
      {"latin1 byte", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\xe9\n",
       24, 2, TGEMM_FORMAT_ERROR},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    expect_file(cases[i].label, 1, 0, cases[i].header, cases[i].data_len,
                cases[i].want_ndim, cases[i].status);

  /* A NUL byte inside the header (strlen cannot carry it: patch it in). */
  const char *hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
  size_t n = build_npy(big_buf, sizeof big_buf, 1, 0, hdr, data_buf, 24);
  big_buf[10 + 5] = '\0';
  expect_bytes("NUL in header", big_buf, n, TGEMM_FORMAT_ERROR);
}

static void test_malformed_preamble(void) {
  const char *hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
  uint8_t good[256];
  size_t n = build_npy(good, sizeof good, 1, 0, hdr, data_buf, 24);
  uint8_t b[256];

  expect_bytes("empty file", good, 0, TGEMM_FORMAT_ERROR);
  /* Every truncation of a valid file fails cleanly. */
  for (size_t len = 1; len < n; len++) {
    char label[64];
    snprintf(label, sizeof label, "truncated to %zu of %zu", len, n);
    tgemm__npy_array a;
    char err[256] = "";
    tgemm_status st = tgemm__npy_parse(label, good, len, 0, &a, err, sizeof err);
    CHECK(st == TGEMM_FORMAT_ERROR, "%s: %s (%s)", label, tgemm_status_name(st), err);
    if (len % 16 == 1) expect_bytes(label, good, len, TGEMM_FORMAT_ERROR);
  }
  memcpy(b, good, n);
  b[0] = 0x92;
  expect_bytes("bad magic byte 0", b, n, TGEMM_FORMAT_ERROR);
  memcpy(b, good, n);
  memcpy(b + 1, "numpy", 5);
  expect_bytes("bad magic case", b, n, TGEMM_FORMAT_ERROR);
  expect_bytes("text file", (const uint8_t *)"hello, world\n", 13,
               TGEMM_FORMAT_ERROR);
  const int versions[][2] = {{0, 0}, {1, 1}, {4, 0}, {255, 0}, {2, 1}};
  for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
    memcpy(b, good, n);
    b[6] = (uint8_t)versions[i][0];
    b[7] = (uint8_t)versions[i][1];
    expect_bytes("unknown version", b, n, TGEMM_FORMAT_ERROR);
  }
  /* header_len past the end: v1 with 0xFFFF, v2 with 0xFFFFFFFF, and off by
   * one. */
  memcpy(b, good, n);
  b[8] = b[9] = 0xFF;
  expect_bytes("v1 header_len 65535", b, n, TGEMM_FORMAT_ERROR);
  size_t n2 = build_npy(b, sizeof b, 2, 0, hdr, data_buf, 0);
  b[8] = b[9] = b[10] = b[11] = 0xFF;
  expect_bytes("v2 header_len 4G", b, n2, TGEMM_FORMAT_ERROR);
  n2 = build_npy(b, sizeof b, 1, 0, hdr, data_buf, 0);
  b[8] = (uint8_t)(b[8] + 1);
  expect_bytes("header_len one past", b, n2, TGEMM_FORMAT_ERROR);
  /* A v2 file cut inside its 4-byte length. */
  n2 = build_npy(b, sizeof b, 2, 0, hdr, data_buf, 0);
  expect_bytes("v2 cut at 11", b, 11, TGEMM_FORMAT_ERROR);
  /* header_len 0: a dict-less file. */
  n2 = build_npy(b, sizeof b, 1, 0, "", data_buf, 0);
  expect_bytes("header_len 0", b, n2, TGEMM_FORMAT_ERROR);
}

static void test_file_errors(void) {
  tgemm__npy_array a;
  char err[256] = "";
  CHECK_STATUS(tgemm__npy_read(test_tmp_path("missing.npy"), 2, &a, err, sizeof err),
               TGEMM_IO_ERROR);
  CHECK(strstr(err, "missing.npy") != NULL, "message names the file: %s", err);
  CHECK_STATUS(tgemm__npy_read(test_tmp_dir(), 2, &a, err, sizeof err), TGEMM_IO_ERROR);
  CHECK_STATUS(tgemm__npy_read(NULL, 2, &a, err, sizeof err), TGEMM_NULL_POINTER);
  CHECK_STATUS(tgemm__npy_read(test_tmp_dir(), 2, NULL, err, sizeof err),
               TGEMM_NULL_POINTER);
  /* A tiny error buffer is truncated, not overrun. */
  char tiny[8];
  memset(tiny, 'x', sizeof tiny);
  CHECK_STATUS(tgemm__npy_read(test_tmp_path("missing.npy"), 2, &a, tiny, 5),
               TGEMM_IO_ERROR);
  CHECK(tiny[4] == '\0' && tiny[5] == 'x', "tiny buffer");
}

static void test_raw(void) {
  uint16_t bits[3 * 7];
  for (int i = 0; i < 21; i++) bits[i] = (uint16_t)test_rand_u64();
  const char *path = test_tmp_path("raw.bf16");
  write_bytes(path, bits, sizeof bits);
  tgemm__npy_array a;
  char err[256] = "";
  CHECK_OK(tgemm__raw_read(path, TGEMM__NPY_U16, 3, 7, &a, err, sizeof err));
  CHECK(a.ndim == 2 && a.shape[0] == 3 && a.shape[1] == 7 && a.data &&
            memcmp(a.data, bits, sizeof bits) == 0,
        "raw data (%s)", err);
  tgemm__npy_free(&a);
  CHECK_STATUS(tgemm__raw_read(path, TGEMM__NPY_U16, 3, 8, &a, err, sizeof err),
               TGEMM_SHAPE_MISMATCH);
  CHECK_STATUS(tgemm__raw_read(path, TGEMM__NPY_U16, 7, 2, &a, err, sizeof err),
               TGEMM_SHAPE_MISMATCH);
  CHECK_STATUS(tgemm__raw_read(path, TGEMM__NPY_U16, 0, 7, &a, err, sizeof err),
               TGEMM_INVALID_ARGUMENT);
  CHECK_STATUS(tgemm__raw_read(path, TGEMM__NPY_U16, INT64_MAX, 3, &a, err,
                               sizeof err),
               TGEMM_OVERFLOW);
  CHECK_STATUS(tgemm__raw_read(test_tmp_path("none.bf16"), TGEMM__NPY_U16, 3, 7, &a,
                               err, sizeof err),
               TGEMM_IO_ERROR);
  CHECK(a.data == NULL, "raw out zeroed on failure");
}

/* Random byte mutations of the first 96 bytes of a valid image, and random
 * lengths: every result is OK or an error, never a crash (ASan/UBSan builds
 * turn an out-of-bounds read into a failure). */
static void test_fuzz(void) {
  const char *hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
  uint8_t good[256], b[256];
  size_t n = build_npy(good, sizeof good, 1, 0, hdr, data_buf, 24);
  int n_ok = 0;
  for (int iter = 0; iter < 20000; iter++) {
    memcpy(b, good, n);
    int flips = 1 + (int)(test_rand_u64() % 4);
    for (int k = 0; k < flips; k++) {
      size_t at = (size_t)(test_rand_u64() % 96);
      uint64_t r = test_rand_u64();
      /* half random bytes, half characters that mean something here */
      static const char meaningful[] = "{}(),:' \"\n0123456789-LTF<>|";
      b[at] = (r & 1) ? (uint8_t)(r >> 8)
                      : (uint8_t)meaningful[(r >> 8) % (sizeof meaningful - 1)];
    }
    size_t len = (test_rand_u64() % 8 == 0) ? (size_t)(test_rand_u64() % (n + 1)) : n;
    /* copy into an exact-size heap buffer so ASan sees any overrun */
    uint8_t *exact = malloc(len ? len : 1);
    memcpy(exact, b, len);
    tgemm__npy_array a;
    char err[128];
    tgemm_status st = tgemm__npy_parse("fuzz", exact, len, 0, &a, err, sizeof err);
    if (st == TGEMM_OK) {
      n_ok++;
      CHECK(a.nbytes <= len, "fuzz: nbytes %zu > len %zu", a.nbytes, len);
    } else {
      CHECK(a.data == NULL, "fuzz: data set on failure");
    }
    tgemm__npy_free(&a);
    free(exact);
  }
  printf("fuzz: 20000 mutated images, %d still valid\n", n_ok);
}

int main(void) {
  test_seed("test_npy");
  if (test_make_tmp_dir("tgemm_npy")) return 1;
  test_round_trips();
  test_hand_written_valid();
  test_malformed_headers();
  test_malformed_preamble();
  test_file_errors();
  test_raw();
  test_fuzz();

  test_remove_dir(test_tmp_dir());
  return test_finish("test_npy");
}
