/* `tgemm quant` / `tgemm dequant`: quantize a dense matrix file to the two
 * MXFP4 arrays of DESIGN.md §3 (packed E2M1 pairs and E8M0 scales), and
 * back to f32.  Both go through the public API on a CPU context, so the
 * bytes are those of the library's quantizer. */
#include "commands_quant.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/npy.h"
#include "tgemm.h"

#define EXIT_DATA 1
#define EXIT_USAGE 2

static const char quant_usage[] =
    "usage: tgemm quant IN.npy [--scale-mode floor|even|rceil] -o PREFIX\n"
    "       tgemm quant IN.bf16 --shape ROWS,COLS [--scale-mode ...] -o PREFIX\n"
    "\n"
    "Quantize a 2-D matrix to MXFP4 (OCP MX v1.0, DESIGN.md section 3), one\n"
    "E8M0 scale per 32 consecutive values of a row.\n"
    "\n"
    "  IN.npy             float32 ('<f4') or float16 ('<f2') .npy, C order;\n"
    "                     uint16 ('<u2') is taken as bf16 bit patterns\n"
    "  --shape R,C        IN is a raw little-endian bf16 file of R*C values\n"
    "  --scale-mode MODE  shared-exponent rule: even (default, AITER/Quark),\n"
    "                     floor (OCP), rceil\n"
    "  -o, --output PFX   writes PFX.fp4.npy    uint8 [R, ceil(C/32)*16]\n"
    "                     (element 2j in the low nibble of byte j) and\n"
    "                     PFX.scales.npy uint8 [R, ceil(C/32)]\n"
    "\n"
    "Blocks holding NaN or Inf get scale byte 0xFF (a warning counts them).\n"
    "Exit status: 0 ok, 1 bad input data, 2 bad usage.\n";

static const char dequant_usage[] =
    "usage: tgemm dequant PREFIX [--cols C] [-o OUT.npy]\n"
    "       tgemm dequant --fp4 A.fp4.npy --scales A.scales.npy [--cols C] "
    "-o OUT.npy\n"
    "\n"
    "Dequantize MXFP4 arrays (as written by `tgemm quant`) to a float32 .npy.\n"
    "\n"
    "  PREFIX             reads PREFIX.fp4.npy and PREFIX.scales.npy; the\n"
    "                     output defaults to PREFIX.dequant.npy\n"
    "  --fp4, --scales    the two arrays by path (then -o is required)\n"
    "  --cols C           the original column count; the packed width only\n"
    "                     says ceil(C/32), so without --cols the output has\n"
    "                     the padded width ceil(C/32)*32\n"
    "  -o, --output OUT   the float32 [R, C] .npy to write\n"
    "\n"
    "Blocks with scale byte 0xFF dequantize to NaN.\n"
    "Exit status: 0 ok, 1 bad input data, 2 bad usage.\n";

static int usage_error(const char *cmd, const char *fmt, const char *arg) {
  fprintf(stderr, "tgemm %s: ", cmd);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (see 'tgemm %s --help')\n", cmd);
  return EXIT_USAGE;
}

/* "--name VALUE" or "--name=VALUE" at argv[*i]; advances *i past it.
 * Returns 1 when it matched, 0 when it did not, -1 when VALUE is missing. */
static int take_option(int argc, char **argv, int *i, const char *short_name,
                       const char *long_name, const char **value) {
  const char *a = argv[*i];
  size_t n = strlen(long_name);
  if (strncmp(a, long_name, n) == 0 && a[n] == '=') {
    *value = a + n + 1;
    return 1;
  }
  if (strcmp(a, long_name) != 0 && !(short_name && strcmp(a, short_name) == 0))
    return 0;
  if (*i + 1 >= argc) return -1;
  *value = argv[++*i];
  return 1;
}

/* A positive decimal integer filling the whole string. */
static bool parse_positive(const char *s, int64_t *out) {
  if (!s || *s < '0' || *s > '9') return false;
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || v <= 0) return false;
  *out = v;
  return *end == '\0';
}

/* "R,C" (or "RxC") into two positive integers. */
static bool parse_shape(const char *s, int64_t *rows, int64_t *cols) {
  const char *sep = strpbrk(s, ",x");
  if (!sep) return false;
  char first[32];
  size_t n = (size_t)(sep - s);
  if (n == 0 || n >= sizeof first) return false;
  memcpy(first, s, n);
  first[n] = '\0';
  return parse_positive(first, rows) && parse_positive(sep + 1, cols);
}

static char *join(const char *prefix, const char *suffix) {
  size_t a = strlen(prefix), b = strlen(suffix);
  char *s = malloc(a + b + 1);
  if (!s) return NULL;
  memcpy(s, prefix, a);
  memcpy(s + a, suffix, b + 1);
  return s;
}

/* A CPU context for host matrices: no tuned table, no untuned log. */
static tgemm_ctx *cpu_ctx(const char *cmd) {
  tgemm_ctx_options opt;
  tgemm_ctx_options_default(&opt);
  opt.backend = TGEMM_BACKEND_CPU;
  opt.tuned = 0;
  tgemm_ctx *ctx = NULL;
  tgemm_status st = tgemm_ctx_create(&opt, &ctx);
  if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm %s: cannot create a CPU context: %s: %s\n", cmd,
            tgemm_status_name(st), tgemm_ctx_create_error());
    tgemm_ctx_free(ctx);
    return NULL;
  }
  return ctx;
}

static int64_t count_nan_scales(const uint8_t *scales, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; i++) c += scales[i] == 0xFF;
  return c;
}

/* ----------------------------------------------------------------- quant */

int tgemm__cmd_quant(int argc, char **argv) {
  const char *cmd = "quant";
  const char *in_path = NULL, *prefix = NULL, *mode_text = "even";
  const char *shape_text = NULL;
  for (int i = 1; i < argc; i++) {
    const char *v = NULL;
    int r;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(quant_usage, stdout);
      return 0;
    } else if ((r = take_option(argc, argv, &i, "-o", "--output", &v)) != 0) {
      if (r < 0) return usage_error(cmd, "%s needs a value", argv[i]);
      prefix = v;
    } else if ((r = take_option(argc, argv, &i, NULL, "--scale-mode", &v)) != 0) {
      if (r < 0) return usage_error(cmd, "%s needs a value", argv[i]);
      mode_text = v;
    } else if ((r = take_option(argc, argv, &i, NULL, "--shape", &v)) != 0) {
      if (r < 0) return usage_error(cmd, "%s needs a value", argv[i]);
      shape_text = v;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return usage_error(cmd, "unknown option '%s'", argv[i]);
    } else if (in_path) {
      return usage_error(cmd, "unexpected extra argument '%s'", argv[i]);
    } else {
      in_path = argv[i];
    }
  }
  if (!in_path) return usage_error(cmd, "%s", "missing the input file");
  if (!prefix || !*prefix)
    return usage_error(cmd, "%s", "missing -o PREFIX (the output prefix)");
  tgemm_scale_mode mode;
  if (tgemm_scale_mode_parse(mode_text, &mode) != TGEMM_OK ||
      (strcmp(mode_text, "even") != 0 && strcmp(mode_text, "floor") != 0 &&
       strcmp(mode_text, "rceil") != 0))
    return usage_error(cmd, "unknown --scale-mode '%s' (floor, even or rceil)",
                       mode_text);
  int64_t raw_rows = 0, raw_cols = 0;
  if (shape_text && !parse_shape(shape_text, &raw_rows, &raw_cols))
    return usage_error(cmd, "--shape '%s' is not ROWS,COLS of positive integers",
                       shape_text);

  char err[512];
  tgemm__npy_array in;
  tgemm_status st;
  tgemm_dtype dtype;
  if (shape_text) {
    st = tgemm__raw_read(in_path, TGEMM__NPY_U16, raw_rows, raw_cols, &in, err,
                         sizeof err);
    dtype = TGEMM_BF16;
  } else {
    st = tgemm__npy_read(in_path, 2, &in, err, sizeof err);
    dtype = in.dtype == TGEMM__NPY_F32 ? TGEMM_F32
            : in.dtype == TGEMM__NPY_F16 ? TGEMM_F16
                                         : TGEMM_BF16;
    if (st == TGEMM_OK && in.dtype == TGEMM__NPY_U8) {
      snprintf(err, sizeof err, "%s: dtype '|u1' is not a matrix to quantize "
               "(need '<f4', '<f2', or '<u2' holding bf16 bits)", in_path);
      st = TGEMM_UNSUPPORTED;
    }
  }
  if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm quant: %s\n", err);
    tgemm__npy_free(&in);
    return EXIT_DATA;
  }
  int64_t rows = in.shape[0], cols = in.shape[1];
  if (rows == 0 || cols == 0) {
    fprintf(stderr, "tgemm quant: %s: the matrix [%lld, %lld] is empty\n",
            in_path, (long long)rows, (long long)cols);
    tgemm__npy_free(&in);
    return EXIT_DATA;
  }

  int rc = EXIT_DATA;
  char *fp4_path = join(prefix, ".fp4.npy");
  char *scales_path = join(prefix, ".scales.npy");
  int64_t packed_cols = tgemm_mxfp4_packed_cols(cols);
  int64_t scale_cols = tgemm_mxfp4_scale_cols(cols);
  /* rows*cols elements fit in memory already, and packed_cols <= cols+16 */
  uint8_t *packed = malloc((size_t)(rows * packed_cols));
  uint8_t *scales = malloc((size_t)(rows * scale_cols));
  tgemm_ctx *ctx = NULL;
  if (!fp4_path || !scales_path || !packed || !scales) {
    fprintf(stderr, "tgemm quant: out of memory for [%lld, %lld]\n",
            (long long)rows, (long long)cols);
    goto done;
  }
  if (!(ctx = cpu_ctx(cmd))) goto done;
  tgemm_matrix src = tgemm_matrix_dense(in.data, dtype, rows, cols, TGEMM_HOST);
  tgemm_matrix dst = tgemm_matrix_mxfp4(packed, scales, rows, cols, TGEMM_HOST);
  st = tgemm_mxfp4_quantize(ctx, &src, &dst, mode);
  if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm quant: %s: quantization failed: %s: %s\n", in_path,
            tgemm_status_name(st), tgemm_ctx_last_error(ctx));
    goto done;
  }
  int64_t n_blocks = rows * scale_cols;
  int64_t n_nan = count_nan_scales(scales, n_blocks);
  if (n_nan)
    fprintf(stderr, "tgemm quant: warning: %s: %lld of %lld blocks hold NaN or "
            "Inf; their scale byte is 0xFF and they dequantize to NaN\n",
            in_path, (long long)n_nan, (long long)n_blocks);
  int64_t packed_shape[2] = {rows, packed_cols};
  int64_t scales_shape[2] = {rows, scale_cols};
  st = tgemm__npy_write(fp4_path, TGEMM__NPY_U8, 2, packed_shape, packed, err,
                        sizeof err);
  if (st == TGEMM_OK)
    st = tgemm__npy_write(scales_path, TGEMM__NPY_U8, 2, scales_shape, scales,
                          err, sizeof err);
  if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm quant: %s\n", err);
    goto done;
  }
  printf("%s [%lld, %lld] %s -> %s [%lld, %lld] + %s [%lld, %lld] "
         "(scale mode %s)\n", in_path, (long long)rows, (long long)cols,
         tgemm_dtype_name(dtype), fp4_path, (long long)rows,
         (long long)packed_cols, scales_path, (long long)rows,
         (long long)scale_cols, mode_text);
  rc = 0;
done:
  tgemm_ctx_free(ctx);
  free(packed);
  free(scales);
  free(fp4_path);
  free(scales_path);
  tgemm__npy_free(&in);
  return rc;
}

/* --------------------------------------------------------------- dequant */

/* A 2-D uint8 .npy, or a message and false. */
static bool read_u8_matrix(const char *path, tgemm__npy_array *out) {
  char err[512];
  tgemm_status st = tgemm__npy_read(path, 2, out, err, sizeof err);
  if (st == TGEMM_OK && out->dtype != TGEMM__NPY_U8) {
    snprintf(err, sizeof err, "%s: dtype '%s', expected uint8 ('|u1')", path,
             tgemm__npy_dtype_descr(out->dtype));
    st = TGEMM_FORMAT_ERROR;
  }
  if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm dequant: %s\n", err);
    tgemm__npy_free(out);
    return false;
  }
  return true;
}

int tgemm__cmd_dequant(int argc, char **argv) {
  const char *cmd = "dequant";
  const char *prefix = NULL, *fp4_arg = NULL, *scales_arg = NULL;
  const char *out_arg = NULL, *cols_text = NULL;
  for (int i = 1; i < argc; i++) {
    const char *v = NULL;
    int r;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(dequant_usage, stdout);
      return 0;
    } else if ((r = take_option(argc, argv, &i, "-o", "--output", &v)) != 0) {
      if (r < 0) return usage_error(cmd, "%s needs a value", argv[i]);
      out_arg = v;
    } else if ((r = take_option(argc, argv, &i, NULL, "--fp4", &v)) != 0) {
      if (r < 0) return usage_error(cmd, "%s needs a value", argv[i]);
      fp4_arg = v;
    } else if ((r = take_option(argc, argv, &i, NULL, "--scales", &v)) != 0) {
      if (r < 0) return usage_error(cmd, "%s needs a value", argv[i]);
      scales_arg = v;
    } else if ((r = take_option(argc, argv, &i, NULL, "--cols", &v)) != 0) {
      if (r < 0) return usage_error(cmd, "%s needs a value", argv[i]);
      cols_text = v;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return usage_error(cmd, "unknown option '%s'", argv[i]);
    } else if (prefix) {
      return usage_error(cmd, "unexpected extra argument '%s'", argv[i]);
    } else {
      prefix = argv[i];
    }
  }
  if (prefix && (fp4_arg || scales_arg))
    return usage_error(cmd, "%s", "give either PREFIX or --fp4 and --scales, not both");
  if (!prefix && (!fp4_arg || !scales_arg))
    return usage_error(cmd, "%s", "missing PREFIX (or both --fp4 and --scales)");
  if (!prefix && (!out_arg || !*out_arg))
    return usage_error(cmd, "%s", "with --fp4/--scales, -o OUT.npy is required");
  if (out_arg && !*out_arg) return usage_error(cmd, "%s", "-o needs a file name");
  int64_t cols = 0;
  if (cols_text && !parse_positive(cols_text, &cols))
    return usage_error(cmd, "--cols '%s' is not a positive integer", cols_text);

  int rc = EXIT_DATA;
  char *fp4_path = prefix ? join(prefix, ".fp4.npy") : NULL;
  char *scales_path = prefix ? join(prefix, ".scales.npy") : NULL;
  char *out_path = prefix && !out_arg ? join(prefix, ".dequant.npy") : NULL;
  tgemm__npy_array fp4 = {0}, sc = {0};
  float *y = NULL;
  tgemm_ctx *ctx = NULL;
  if (prefix && (!fp4_path || !scales_path || (!out_arg && !out_path))) {
    fprintf(stderr, "tgemm dequant: out of memory\n");
    goto done;
  }
  const char *fp4_name = prefix ? fp4_path : fp4_arg;
  const char *scales_name = prefix ? scales_path : scales_arg;
  const char *out_name = out_arg ? out_arg : out_path;
  if (!read_u8_matrix(fp4_name, &fp4) || !read_u8_matrix(scales_name, &sc))
    goto done;

  int64_t rows = fp4.shape[0], packed_cols = fp4.shape[1];
  int64_t scale_cols = sc.shape[1];
  if (sc.shape[0] != rows || packed_cols != scale_cols * 16 || rows == 0 ||
      scale_cols == 0) {
    fprintf(stderr, "tgemm dequant: %s [%lld, %lld] and %s [%lld, %lld] do "
            "not fit: need [R, 16*S] and [R, S] with R, S > 0\n", fp4_name,
            (long long)rows, (long long)packed_cols, scales_name,
            (long long)sc.shape[0], (long long)scale_cols);
    goto done;
  }
  if (!cols_text) cols = scale_cols * 32;
  if (cols > scale_cols * 32 || cols <= (scale_cols - 1) * 32) {
    fprintf(stderr, "tgemm dequant: --cols %lld does not fit %lld scale "
            "column(s): need %lld..%lld\n", (long long)cols,
            (long long)scale_cols, (long long)((scale_cols - 1) * 32 + 1),
            (long long)(scale_cols * 32));
    goto done;
  }
  /* rows * cols <= 2 * the bytes of the fp4 file, which is in memory */
  y = malloc((size_t)(rows * cols) * sizeof(float));
  if (!y) {
    fprintf(stderr, "tgemm dequant: out of memory for [%lld, %lld] f32\n",
            (long long)rows, (long long)cols);
    goto done;
  }
  if (!(ctx = cpu_ctx(cmd))) goto done;
  tgemm_matrix src = tgemm_matrix_mxfp4(fp4.data, sc.data, rows, cols, TGEMM_HOST);
  tgemm_matrix dst = tgemm_matrix_dense(y, TGEMM_F32, rows, cols, TGEMM_HOST);
  tgemm_status st = tgemm_mxfp4_dequantize(ctx, &src, &dst);
  if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm dequant: dequantization failed: %s: %s\n",
            tgemm_status_name(st), tgemm_ctx_last_error(ctx));
    goto done;
  }
  int64_t n_nan = count_nan_scales(sc.data, rows * scale_cols);
  if (n_nan)
    fprintf(stderr, "tgemm dequant: warning: %lld of %lld blocks have scale "
            "0xFF and dequantize to NaN\n", (long long)n_nan,
            (long long)(rows * scale_cols));
  char err[512];
  int64_t shape[2] = {rows, cols};
  st = tgemm__npy_write(out_name, TGEMM__NPY_F32, 2, shape, y, err, sizeof err);
  if (st != TGEMM_OK) {
    fprintf(stderr, "tgemm dequant: %s\n", err);
    goto done;
  }
  printf("%s + %s -> %s [%lld, %lld] float32\n", fp4_name, scales_name,
         out_name, (long long)rows, (long long)cols);
  rc = 0;
done:
  tgemm_ctx_free(ctx);
  free(y);
  tgemm__npy_free(&fp4);
  tgemm__npy_free(&sc);
  free(fp4_path);
  free(scales_path);
  free(out_path);
  return rc;
}
