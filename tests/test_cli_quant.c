/* `tgemm quant` / `tgemm dequant` end to end: the CLI (TGEMM_CLI) runs on
 * generated f32, f16 and raw bf16 inputs of odd widths in every scale mode,
 * and its output bytes must equal tgemm_mxfp4_quantize_row_ref's (and a few
 * hand-computed blocks, so the reference itself is pinned).  Bad usage must
 * exit 2 and bad data 1, each with a one-line message. */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_runner.h"
#include "io/npy.h"
#include "test_util.h"

static int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

/* ------------------------------------------------------------ generators */

/* One block of 32 f32 values in one of several flavours, chosen to hit
 * every branch of DESIGN.md §3: ordinary data, exact rounding ties,
 * arbitrary bit patterns (NaN, Inf, subnormals), tiny and huge scales,
 * signed zeros, and a stray non-finite value in ordinary data. */
static void gen_block(float *v, int n) {
  int flavour = (int)(test_rand_u64() % 8);
  int e = (int)(test_rand_u64() % 41) - 20;
  for (int i = 0; i < n; i++) {
    uint64_t r = test_rand_u64();
    switch (flavour) {
      case 0: v[i] = ldexpf(test_rand_normal(), e); break;
      case 1: /* multiples of 1/4: lands on E2M1 midpoints */
        v[i] = ldexpf((float)((int)(r % 49) - 24) * 0.25f, e % 4);
        break;
      case 2: v[i] = tgemm__bits_f32((uint32_t)(r >> 32)); break;
      case 3: v[i] = ldexpf(test_rand_normal(), -135 - (int)(r % 14)); break;
      case 4: v[i] = (r & 7) == 0 ? ((r & 8) ? -FLT_MAX : FLT_MAX)
                                  : ldexpf(test_rand_normal(), 126);
        break;
      case 5: v[i] = (r & 1) ? -0.0f : 0.0f; break;
      case 6: v[i] = ldexpf(1.0f + (float)(r % 8) / 8.0f, e); break;
      default:
        v[i] = test_rand_normal();
        if (i == 0 && (r & 1)) v[(r >> 8) % (uint64_t)n] = (r & 2) ? NAN : -INFINITY;
        break;
    }
  }
}

/* A rows x cols f32 matrix made of blocks along each row. */
static float *gen_matrix(int64_t rows, int64_t cols) {
  float *m = malloc((size_t)(rows * cols) * sizeof(float));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c += 32)
      gen_block(m + r * cols + c, (int)(cols - c < 32 ? cols - c : 32));
  return m;
}

/* ------------------------------------------------------------ checking */

typedef enum { IN_F32, IN_F16, IN_BF16_RAW, IN_BF16_NPY } input_kind;
static const char *const input_names[] = {"f32", "f16", "bf16-raw", "bf16-u2"};

/* Write the input file; return the exact f32 values the quantizer sees. */
static float *make_input(input_kind kind, int64_t rows, int64_t cols,
                         const char *path) {
  float *m = gen_matrix(rows, cols);
  size_t count = (size_t)(rows * cols);
  int64_t shape[2] = {rows, cols};
  char err[512];
  if (kind == IN_F32) {
    CHECK_OK(tgemm__npy_write(path, TGEMM__NPY_F32, 2, shape, m, err, sizeof err));
    return m;
  }
  uint16_t *h = malloc(count * 2);
  for (size_t i = 0; i < count; i++) {
    /* a few raw 16-bit patterns too, so every f16/bf16 encoding shows up */
    uint64_t r = test_rand_u64();
    if (r % 16 == 0) h[i] = (uint16_t)(r >> 16);
    else h[i] = kind == IN_F16 ? tgemm__f32_to_f16(m[i]) : tgemm__f32_to_bf16(m[i]);
    m[i] = kind == IN_F16 ? tgemm__f16_to_f32(h[i]) : tgemm__bf16_to_f32(h[i]);
  }
  if (kind == IN_F16) {
    CHECK_OK(tgemm__npy_write(path, TGEMM__NPY_F16, 2, shape, h, err, sizeof err));
  } else if (kind == IN_BF16_NPY) {
    CHECK_OK(tgemm__npy_write(path, TGEMM__NPY_U16, 2, shape, h, err, sizeof err));
  } else {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(h, 2, count, f) == count, "write %s", path);
    if (f) fclose(f);
  }
  free(h);
  return m;
}

/* Read a 2-D uint8 .npy of the expected shape, or NULL (with a failure). */
static uint8_t *read_u8(const char *path, int64_t rows, int64_t cols,
                        tgemm__npy_array *a) {
  char err[512] = "";
  tgemm_status st = tgemm__npy_read(path, 2, a, err, sizeof err);
  CHECK(st == TGEMM_OK, "read %s: %s", path, err);
  if (st != TGEMM_OK) return NULL;
  CHECK(a->dtype == TGEMM__NPY_U8 && a->shape[0] == rows && a->shape[1] == cols,
        "%s: dtype %s shape [%lld, %lld], expected |u1 [%lld, %lld]", path,
        tgemm__npy_dtype_descr(a->dtype), (long long)a->shape[0],
        (long long)a->shape[1], (long long)rows, (long long)cols);
  if (a->dtype != TGEMM__NPY_U8 || a->shape[0] != rows || a->shape[1] != cols)
    return NULL;
  return a->data;
}

static bool same_f32(float a, float b) {
  return (isnan(a) && isnan(b)) || tgemm__f32_bits(a) == tgemm__f32_bits(b);
}

static void check_case(input_kind kind, int64_t rows, int64_t cols,
                       const char *mode_name, tgemm_scale_mode mode) {
  char label[128];
  snprintf(label, sizeof label, "%s [%lld, %lld] %s", input_names[kind],
           (long long)rows, (long long)cols, mode_name);
  const char *in = test_tmp_path(kind == IN_BF16_RAW ? "in.bf16" : "in.npy");
  const char *prefix = test_tmp_path("q");
  float *m = make_input(kind, rows, cols, in);
  char shape_arg[64];
  snprintf(shape_arg, sizeof shape_arg, "%lld,%lld", (long long)rows, (long long)cols);
  const char *args_plain[] = {"quant", in, "--scale-mode", mode_name, "-o", prefix, NULL};
  const char *args_raw[] = {"quant", in, "--shape", shape_arg, "--scale-mode",
                            mode_name, "-o", prefix, NULL};
  const char *args_default[] = {"quant", in, "-o", prefix, NULL};
  const char *const *args = kind == IN_BF16_RAW ? args_raw
                            : mode == TGEMM_SCALE_EVEN && (test_rand_u64() & 1)
                                ? args_default /* the default is even */
                                : args_plain;
  int rc = run_cli(args);
  CHECK(rc == 0, "%s: quant exit %d: %s", label, rc, err_text);

  int64_t pc = tgemm_mxfp4_packed_cols(cols), sc = tgemm_mxfp4_scale_cols(cols);
  uint8_t *ref_packed = malloc((size_t)(rows * pc));
  uint8_t *ref_scales = malloc((size_t)(rows * sc));
  for (int64_t r = 0; r < rows; r++)
    tgemm_mxfp4_quantize_row_ref(m + r * cols, cols, ref_packed + r * pc,
                                 ref_scales + r * sc, mode);
  int64_t n_nan = 0;
  for (int64_t i = 0; i < rows * sc; i++) n_nan += ref_scales[i] == 0xFF;
  if (rc == 0) {
    /* the warning counts the non-finite blocks exactly */
    char expect[96];
    snprintf(expect, sizeof expect, "%lld of %lld blocks", (long long)n_nan,
             (long long)(rows * sc));
    if (n_nan) CHECK(strstr(err_text, expect) != NULL, "%s: warning should say '%s': %s",
                     label, expect, err_text);
    else CHECK(err_text[0] == '\0', "%s: unexpected stderr: %s", label, err_text);
  }
  tgemm__npy_array pa = {0}, sa = {0};
  const uint8_t *packed = rc == 0 ? read_u8(test_tmp_path("q.fp4.npy"), rows, pc, &pa) : NULL;
  const uint8_t *scales = rc == 0 ? read_u8(test_tmp_path("q.scales.npy"), rows, sc, &sa) : NULL;
  if (packed && scales) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < rows * pc; i++)
      if (packed[i] != ref_packed[i] && bad++ == 0) first = i;
    CHECK(bad == 0, "%s: %lld packed bytes differ, first at row %lld byte %lld "
          "(got 0x%02x, ref 0x%02x)", label, (long long)bad,
          (long long)(first / pc), (long long)(first % pc),
          first >= 0 ? packed[first] : 0, first >= 0 ? ref_packed[first] : 0);
    bad = 0;
    first = -1;
    for (int64_t i = 0; i < rows * sc; i++)
      if (scales[i] != ref_scales[i] && bad++ == 0) first = i;
    CHECK(bad == 0, "%s: %lld scale bytes differ, first at row %lld block %lld "
          "(got 0x%02x, ref 0x%02x)", label, (long long)bad,
          (long long)(first / sc), (long long)(first % sc),
          first >= 0 ? scales[first] : 0, first >= 0 ? ref_scales[first] : 0);
  }

  /* dequant back, in both spellings, against the reference dequantizer */
  if (packed && scales) {
    float *ref_y = malloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t r = 0; r < rows; r++)
      tgemm_mxfp4_dequantize_row_ref(ref_packed + r * pc, ref_scales + r * sc,
                                     cols, ref_y + r * cols);
    char cols_arg[32];
    snprintf(cols_arg, sizeof cols_arg, "%lld", (long long)cols);
    const char *out = test_tmp_path("y.npy");
    const char *d1[] = {"dequant", prefix, "--cols", cols_arg, "-o", out, NULL};
    const char *d2[] = {"dequant", "--fp4", test_tmp_path("q.fp4.npy"), "--scales",
                        test_tmp_path("q.scales.npy"), "--cols", cols_arg, "-o", out, NULL};
    /* both spellings, but only the PREFIX one every time: each spawn costs
     * ~0.1 s under the sanitizers */
    const char *const *variants[] = {d1, d2};
    int n_variants = (test_rand_u64() % 3 == 0) ? 2 : 1;
    for (int v = 0; v < n_variants; v++) {
      unlink(out);
      rc = run_cli(variants[v]);
      CHECK(rc == 0, "%s: dequant form %d exit %d: %s", label, v, rc, err_text);
      tgemm__npy_array ya;
      char err[512] = "";
      if (rc != 0) continue;
      tgemm_status st = tgemm__npy_read(out, 2, &ya, err, sizeof err);
      CHECK(st == TGEMM_OK && ya.dtype == TGEMM__NPY_F32 && ya.shape[0] == rows &&
                ya.shape[1] == cols,
            "%s: dequant output: %s", label, err);
      if (st == TGEMM_OK && ya.dtype == TGEMM__NPY_F32 && ya.count == rows * cols) {
        const float *y = ya.data;
        int64_t bad = 0;
        for (int64_t i = 0; i < rows * cols; i++) bad += !same_f32(y[i], ref_y[i]);
        CHECK(bad == 0, "%s: %lld dequantized values differ", label, (long long)bad);
      }
      tgemm__npy_free(&ya);
    }
    free(ref_y);
  }
  tgemm__npy_free(&pa);
  tgemm__npy_free(&sa);
  free(ref_packed);
  free(ref_scales);
  free(m);
}

/* Blocks whose bytes were worked out by hand from DESIGN.md §3, so that a
 * wrong reference cannot agree with a wrong CLI. */
static void check_hand_computed(void) {
  enum { COLS = 6 * 32 };
  float m[COLS];
  for (int i = 0; i < 32; i++) m[i] = 1.0f;       /* s=-2: 4.0 -> code 6 */
  for (int i = 32; i < 64; i++) m[i] = 1.75f;     /* see below */
  for (int i = 64; i < 96; i++) m[i] = -0.0f;     /* scale 0, codes -0 */
  for (int i = 96; i < 128; i++) m[i] = i == 100 ? NAN : 1.0f; /* 0xFF */
  for (int i = 128; i < 160; i++) m[i] = (i & 1) ? -6.0f : 0.25f;
  for (int i = 160; i < 192; i++) m[i] = FLT_MAX; /* the top of the range */
  const char *in = test_tmp_path("hand.npy");
  int64_t shape[2] = {1, COLS};
  CHECK_OK(tgemm__npy_write(in, TGEMM__NPY_F32, 2, shape, m, NULL, 0));
  /* 1.75: floor keeps s=-2 and clips 7 -> 6 (code 7); even and rceil take
   * s=-1 and round the 3.5 tie to 4 (code 6, even).  Fifth block: amax 6,
   * s=0 in every mode; 0.25 -> tie between 0 and 0.5 -> 0 (code 0).
   * FLT_MAX (just under 2^128): floor s=125 and clips ~8 to 6; even carries
   * into the all-ones exponent, so s=126; rceil: 6*2^126 >= FLT_MAX > 6*2^125,
   * s=126; FLT_MAX/2^126 just under 4 rounds to 4 (code 6). */
  const struct {
    const char *mode;
    uint8_t scales[6];
    uint8_t packed[6];
  } expect[] = {
      {"floor", {125, 125, 0, 0xFF, 127, 252}, {0x66, 0x77, 0x88, 0x00, 0xF0, 0x77}},
      {"even", {125, 126, 0, 0xFF, 127, 253}, {0x66, 0x66, 0x88, 0x00, 0xF0, 0x66}},
      {"rceil", {125, 126, 0, 0xFF, 127, 253}, {0x66, 0x66, 0x88, 0x00, 0xF0, 0x66}},
  };
  for (size_t k = 0; k < 3; k++) {
    const char *args[] = {"quant", in, "--scale-mode", expect[k].mode, "-o",
                          test_tmp_path("hand"), NULL};
    int rc = run_cli(args);
    CHECK(rc == 0, "hand %s: exit %d: %s", expect[k].mode, rc, err_text);
    CHECK(strstr(err_text, "1 of 6 blocks") != NULL, "hand: NaN warning: %s", err_text);
    tgemm__npy_array pa = {0}, sa = {0};
    const uint8_t *p = read_u8(test_tmp_path("hand.fp4.npy"), 1, 6 * 16, &pa);
    const uint8_t *s = read_u8(test_tmp_path("hand.scales.npy"), 1, 6, &sa);
    for (int b = 0; p && s && b < 6; b++) {
      CHECK(s[b] == expect[k].scales[b], "hand %s block %d: scale 0x%02x, expected 0x%02x",
            expect[k].mode, b, s[b], expect[k].scales[b]);
      for (int j = 0; j < 16; j++)
        CHECK(p[b * 16 + j] == expect[k].packed[b],
              "hand %s block %d byte %d: 0x%02x, expected 0x%02x", expect[k].mode, b,
              j, p[b * 16 + j], expect[k].packed[b]);
    }
    tgemm__npy_free(&pa);
    tgemm__npy_free(&sa);
  }
}

/* ------------------------------------------------------------ bad input */

static void expect_exit(int want, const char *what, const char *const *args) {
  int rc = run_cli(args);
  CHECK(rc == want, "%s: exit %d, expected %d (stderr: %s)", what, rc, want, err_text);
  if (want != 0) {
    CHECK(err_text[0] != '\0', "%s: no message on stderr", what);
    CHECK(count_lines(err_text) == 1, "%s: message should be one line: %s", what,
          err_text);
    CHECK(strncmp(err_text, "tgemm ", 6) == 0, "%s: message should name the command: %s",
          what, err_text);
  }
}

static void write_text_npy(const char *path, const char *header, size_t data_len) {
  uint8_t buf[512] = {0};
  size_t hl = strlen(header);
  memcpy(buf, "\x93NUMPY\x01\x00", 8);
  buf[8] = (uint8_t)hl;
  buf[9] = 0;
  memcpy(buf + 10, header, hl);
  FILE *f = fopen(path, "wb");
  if (f) {
    fwrite(buf, 1, 10 + hl + data_len, f);
    fclose(f);
  }
}

static void check_errors(void) {
  const char *good = test_tmp_path("good.npy");
  float v[2 * 40];
  for (int i = 0; i < 80; i++) v[i] = test_rand_normal();
  int64_t shape[2] = {2, 40};
  CHECK_OK(tgemm__npy_write(good, TGEMM__NPY_F32, 2, shape, v, NULL, 0));
  const char *p = test_tmp_path("e");

  /* --help: exit 0, usage on stdout */
  const char *h1[] = {"quant", "--help", NULL};
  CHECK(run_cli(h1) == 0 && strstr(out_text, "usage: tgemm quant"), "quant --help");
  const char *h2[] = {"dequant", "-h", NULL};
  CHECK(run_cli(h2) == 0 && strstr(out_text, "usage: tgemm dequant"), "dequant -h");

  /* usage errors: 2 */
  const char *u1[] = {"quant", NULL};
  expect_exit(2, "quant without arguments", u1);
  const char *u2[] = {"quant", good, NULL};
  expect_exit(2, "quant without -o", u2);
  const char *u3[] = {"quant", good, "-o", p, "--scale-mode", "nearest", NULL};
  expect_exit(2, "bad scale mode", u3);
  const char *u4[] = {"quant", good, "-o", p, "--frobnicate", NULL};
  expect_exit(2, "unknown option", u4);
  const char *u5[] = {"quant", good, "-o", NULL};
  expect_exit(2, "-o without value", u5);
  const char *u6[] = {"quant", good, "--shape", "3", "-o", p, NULL};
  expect_exit(2, "--shape without comma", u6);
  const char *u7[] = {"quant", good, "--shape", "3,0", "-o", p, NULL};
  expect_exit(2, "--shape with zero", u7);
  const char *u8[] = {"quant", good, "--shape", "3,4x", "-o", p, NULL};
  expect_exit(2, "--shape with junk", u8);
  const char *u9[] = {"quant", good, good, "-o", p, NULL};
  expect_exit(2, "two inputs", u9);
  const char *u10[] = {"dequant", NULL};
  expect_exit(2, "dequant without arguments", u10);
  const char *u11[] = {"dequant", "--fp4", "a.npy", "-o", "y.npy", NULL};
  expect_exit(2, "dequant --fp4 without --scales", u11);
  const char *u12[] = {"dequant", p, "--cols", "-5", NULL};
  expect_exit(2, "dequant negative --cols", u12);
  const char *u13[] = {"dequant", p, "--fp4", "a.npy", "--scales", "b.npy", NULL};
  expect_exit(2, "dequant prefix and --fp4", u13);
  const char *u14[] = {"dequant", "--fp4", "a.npy", "--scales", "b.npy", NULL};
  expect_exit(2, "dequant --fp4 without -o", u14);

  /* data errors: 1 */
  const char *d1[] = {"quant", test_tmp_path("missing.npy"), "-o", p, NULL};
  expect_exit(1, "missing input", d1);
  const char *one_d = test_tmp_path("one_d.npy");
  int64_t n80 = 80;
  CHECK_OK(tgemm__npy_write(one_d, TGEMM__NPY_F32, 1, &n80, v, NULL, 0));
  const char *d2[] = {"quant", one_d, "-o", p, NULL};
  expect_exit(1, "1-D input", d2);
  const char *f8 = test_tmp_path("f8.npy");
  write_text_npy(f8, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }\n", 32);
  const char *d3[] = {"quant", f8, "-o", p, NULL};
  expect_exit(1, "f8 input", d3);
  const char *be = test_tmp_path("be.npy");
  write_text_npy(be, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }\n", 16);
  const char *d4[] = {"quant", be, "-o", p, NULL};
  expect_exit(1, "big-endian input", d4);
  const char *trunc = test_tmp_path("trunc.npy");
  write_text_npy(trunc, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n", 15);
  const char *d5[] = {"quant", trunc, "-o", p, NULL};
  expect_exit(1, "truncated input", d5);
  const char *u8npy = test_tmp_path("u8.npy");
  uint8_t bytes[80] = {1};
  CHECK_OK(tgemm__npy_write(u8npy, TGEMM__NPY_U8, 2, shape, bytes, NULL, 0));
  const char *d6[] = {"quant", u8npy, "-o", p, NULL};
  expect_exit(1, "uint8 input", d6);
  const char *d7[] = {"quant", good, "--shape", "3,7", "-o", p, NULL};
  expect_exit(1, "raw size mismatch", d7);
  const char *d8[] = {"quant", good, "-o", test_tmp_path("no/such/dir/x"), NULL};
  expect_exit(1, "unwritable output", d8);
  int64_t empty_shape[2] = {0, 5};
  const char *empty = test_tmp_path("empty.npy");
  CHECK_OK(tgemm__npy_write(empty, TGEMM__NPY_F32, 2, empty_shape, v, NULL, 0));
  const char *d9[] = {"quant", empty, "-o", p, NULL};
  expect_exit(1, "empty matrix", d9);

  /* dequant: quantize the good file, then feed it wrong things */
  const char *q[] = {"quant", good, "-o", p, NULL};
  CHECK(run_cli(q) == 0, "quant good: %s", err_text);
  const char *d10[] = {"dequant", p, "--cols", "65", NULL};
  expect_exit(1, "--cols beyond the blocks", d10);
  const char *d11[] = {"dequant", p, "--cols", "32", NULL};
  expect_exit(1, "--cols below the blocks", d11);
  const char *d12[] = {"dequant", "--fp4", test_tmp_path("e.scales.npy"), "--scales",
                       test_tmp_path("e.scales.npy"), "-o", test_tmp_path("y.npy"), NULL};
  expect_exit(1, "fp4/scales widths do not fit", d12);
  const char *d13[] = {"dequant", "--fp4", good, "--scales", test_tmp_path("e.scales.npy"),
                       "-o", test_tmp_path("y.npy"), NULL};
  expect_exit(1, "f32 file as fp4", d13);
  const char *d14[] = {"dequant", test_tmp_path("nothing"), NULL};
  expect_exit(1, "missing prefix files", d14);
  /* Without --cols the padded width comes back, named PREFIX.dequant.npy. */
  const char *d15[] = {"dequant", p, NULL};
  CHECK(run_cli(d15) == 0, "dequant default: %s", err_text);
  tgemm__npy_array ya;
  CHECK_OK(tgemm__npy_read(test_tmp_path("e.dequant.npy"), 2, &ya, NULL, 0));
  CHECK(ya.shape[0] == 2 && ya.shape[1] == 64, "padded width [%lld, %lld]",
        (long long)ya.shape[0], (long long)ya.shape[1]);
  tgemm__npy_free(&ya);
}

int main(void) {
  cli = getenv("TGEMM_CLI");
  if (!cli || !*cli) {
    printf("test_cli_quant: TGEMM_CLI is not set, skipping\n");
    return TEST_SKIP;
  }
  if (access(cli, X_OK) != 0) {
    fprintf(stderr, "test_cli_quant: %s is not executable\n", cli);
    return 1;
  }
  test_seed("test_cli_quant");
  if (test_make_tmp_dir("tgemm_cliq")) return 1;

  check_hand_computed();
  const struct {
    int64_t rows, cols;
  } shapes[] = {{3, 33}, {2, 7167}, {17, 32}, {5, 1}, {1, 100}};
  const struct {
    const char *name;
    tgemm_scale_mode mode;
  } modes[] = {{"floor", TGEMM_SCALE_FLOOR}, {"even", TGEMM_SCALE_EVEN},
               {"rceil", TGEMM_SCALE_RCEIL}};
  for (int kind = 0; kind < 4; kind++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (size_t md = 0; md < 3; md++)
        check_case((input_kind)kind, shapes[s].rows, shapes[s].cols, modes[md].name,
                   modes[md].mode);
  check_errors();

  test_remove_dir(test_tmp_dir());
  return test_finish("test_cli_quant");
}
