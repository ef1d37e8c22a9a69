/* The AVX2 MXFP4 quantizer is byte-identical to the reference (random and
 * nasty inputs, every mode, many widths); tgemm__mxfp4_quantize_rows gives
 * the same bytes with and without the vector units, for f32/f16/bf16 and
 * strided views; dequantization returns code * scale exactly. */
#include <float.h>

#include "core/cpu_features.h"
#include "mxfp4/mxfp4.h"
#include "test_util.h"

static const tgemm_scale_mode all_modes[3] = {TGEMM_SCALE_FLOOR, TGEMM_SCALE_EVEN,
                                              TGEMM_SCALE_RCEIL};
static const char *mode_name(tgemm_scale_mode m) {
  return m == TGEMM_SCALE_FLOOR ? "floor" : m == TGEMM_SCALE_EVEN ? "even" : "rceil";
}

static uint8_t code_at(const uint8_t *packed, int64_t i) {
  return (uint8_t)(i % 2 ? packed[i / 2] >> 4 : packed[i / 2] & 0xF);
}

/* ------------------------------------------------------------- nasty inputs */


/* One block of 32 from one of several hostile distributions. */
static void random_block(float *v) {
  int e = -150 + (int)(test_rand_u64() % 280);
  switch (test_rand_u64() % 8) {
    case 0:
      for (int i = 0; i < 32; i++) v[i] = test_random_bits_float(0, 254);
      break;
    case 1:
      for (int i = 0; i < 32; i++) {
        int ee = e - (int)(test_rand_u64() % 8);
        v[i] = ldexpf((float)(1.0 + test_rand_unit()), ee < -149 ? -149 : ee > 127 ? 127 : ee);
        if (test_rand_u64() & 1) v[i] = -v[i];
      }
      break;
    case 2:
      if (e > 125) e = 125;
      for (int i = 0; i < 32; i++) v[i] = test_random_grid_float(e - (int)(test_rand_u64() % 3));
      break;
    case 3: {
      static const float sig[] = {0x1.7ffffep+0f, 1.5f, 0x1.800002p+0f, 0x1.bffffep+0f,
                                  1.75f, 0x1.c00002p+0f, 0x1.fffffep+0f, 1.0f};
      if (e > 127) e = 127;
      for (int i = 0; i < 32; i++) v[i] = test_random_grid_float(e - 1 - (int)(test_rand_u64() % 4));
      v[test_rand_u64() % 32] = ldexpf(sig[test_rand_u64() % 8], e) * ((test_rand_u64() & 1) ? -1.0f : 1.0f);
      break;
    }
    case 4:
      for (int i = 0; i < 32; i++) v[i] = test_random_bits_float(0, (int)(test_rand_u64() % 4));
      break;
    case 5:
      for (int i = 0; i < 32; i++) v[i] = test_random_bits_float(250, 254);
      v[0] = (test_rand_u64() & 1) ? FLT_MAX : 0x1.cp+127f;
      break;
    case 6:
      for (int i = 0; i < 32; i++) v[i] = (test_rand_u64() & 1) ? -0.0f : 0.0f;
      for (int k = (int)(test_rand_u64() % 3); k > 0; k--)
        v[test_rand_u64() % 32] = test_random_bits_float(0, 254);
      break;
    default:
      for (int i = 0; i < 32; i++) v[i] = test_rand_normal();
      break;
  }
  if (test_rand_u64() % 40 == 0) {
    static const float specials[3] = {NAN, INFINITY, -INFINITY};
    v[test_rand_u64() % 32] = specials[test_rand_u64() % 3];
  }
}

/* ------------------------------------------------------------ comparisons */

/* Quantize n values with both quantizers into guarded buffers and compare
 * every byte, and check nothing past the row was written. */
static int compare_row(const float *src, int64_t n, tgemm_scale_mode mode, const char *what) {
  int64_t n_blocks = (n + 31) / 32;
  size_t packed_bytes = (size_t)n_blocks * 16, guard = 32;
  uint8_t *ref_packed = malloc(packed_bytes), *ref_scales = malloc((size_t)n_blocks);
  uint8_t *packed = malloc(packed_bytes + guard), *scales = malloc((size_t)n_blocks + guard);
  memset(packed, 0xA5, packed_bytes + guard);
  memset(scales, 0xA5, (size_t)n_blocks + guard);
  tgemm_mxfp4_quantize_row_ref(src, n, ref_packed, ref_scales, mode);
  tgemm__mxfp4_quantize_row_avx2(src, n, packed, scales, mode);
  int ok = 1;
  for (int64_t b = 0; b < n_blocks && ok; b++) {
    if (scales[b] != ref_scales[b] || memcmp(packed + 16 * b, ref_packed + 16 * b, 16) != 0) {
      ok = 0;
      CHECK(0, "%s, %s, n=%lld: block %lld differs: scale %u vs reference %u", what,
            mode_name(mode), (long long)n, (long long)b, scales[b], ref_scales[b]);
      for (int64_t i = 32 * b; i < 32 * b + 32 && i < n; i++)
        if (code_at(packed, i) != code_at(ref_packed, i))
          fprintf(stderr, "  element %lld = %a: code %u, reference %u\n", (long long)i,
                  src[i], code_at(packed, i), code_at(ref_packed, i));
    }
  }
  for (size_t g = 0; g < guard; g++) {
    if (packed[packed_bytes + g] != 0xA5 || scales[n_blocks + g] != 0xA5) {
      ok = 0;
      CHECK(0, "%s, n=%lld: wrote past the end of the row", what, (long long)n);
      break;
    }
  }
  free(ref_packed);
  free(ref_scales);
  free(packed);
  free(scales);
  return ok;
}

static void check_random_normal_rows(void) {
  const int64_t widths[] = {7168, 7167, 8192 + 7, 1536, 512, 16384};
  for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
    int64_t n = widths[w];
    float *src = malloc((size_t)n * sizeof(float));
    float scale = ldexpf(1.0f, (int)(test_rand_u64() % 40) - 20);
    for (int64_t i = 0; i < n; i++) src[i] = test_rand_normal() * scale;
    for (int m = 0; m < 3; m++) compare_row(src, n, all_modes[m], "normal data");
    free(src);
  }
}

static void check_nasty_rows(void) {
  enum { N_BLOCKS = 60000 };
  float *src = malloc((size_t)N_BLOCKS * 32 * sizeof(float));
  for (int b = 0; b < N_BLOCKS; b++) random_block(src + 32 * b);
  for (int m = 0; m < 3; m++) {
    compare_row(src, (int64_t)N_BLOCKS * 32, all_modes[m], "nasty blocks");
    /* shifted by a few values: every group mixes different blocks */
    compare_row(src + 13, (int64_t)N_BLOCKS * 32 - 13 - 5, all_modes[m], "nasty, shifted");
  }
  free(src);
}

static void check_widths(void) {
  float src[700];
  for (int n = 1; n <= 700; n++) {
    for (int i = 0; i < n; i++) src[i] = test_rand_normal() * 10.0f;
    if (n >= 32 && n % 7 == 0) random_block(src + (n - 32) / 2);
    for (int m = 0; m < 3; m++) {
      if (!compare_row(src, n, all_modes[m], "width sweep")) return;
    }
  }
}

static void check_special_rows(void) {
  enum { N = 32 * 19 + 5 };
  float src[N];
  for (int m = 0; m < 3; m++) {
    for (int i = 0; i < N; i++) src[i] = NAN;
    compare_row(src, N, all_modes[m], "all NaN");
    for (int i = 0; i < N; i++) src[i] = (i % 2) ? -0.0f : 0.0f;
    compare_row(src, N, all_modes[m], "all zeros");
    for (int i = 0; i < N; i++) src[i] = test_rand_normal();
    for (int b = 0; b < N / 32; b += 2) src[32 * b + (b % 32)] = (b % 4) ? INFINITY : -INFINITY;
    compare_row(src, N, all_modes[m], "Inf in every other block");
    src[N - 1] = NAN; /* in the ragged tail */
    compare_row(src, N, all_modes[m], "NaN in tail");
    for (int i = 0; i < N; i++) src[i] = (i % 3) ? FLT_MAX : -FLT_MAX;
    compare_row(src, N, all_modes[m], "FLT_MAX");
    for (int i = 0; i < N; i++) src[i] = tgemm__bits_f32((uint32_t)(test_rand_u64() & 0x807fffffu));
    compare_row(src, N, all_modes[m], "subnormals");
  }
}

/* ---------------------------------------------------------- quantize_rows */

static void fill_row_dtype(void *row, tgemm_dtype dtype, int64_t n, float *as_f32) {
  for (int64_t i = 0; i < n; i++) {
    float v = test_rand_normal() * 4.0f;
    uint64_t r = test_rand_u64() % 4000;
    if (r < 8) v = (r & 1) ? -0.0f : 0.0f;
    else if (r < 16) v *= 1e-6f; /* f16 subnormal */
    else if (r < 48) v *= 1e-3f; /* a block of mixed magnitudes */
    else if (r == 48) v = NAN;
    else if (r == 49) v = -INFINITY;
    if (dtype == TGEMM_F32) ((float *)row)[i] = v;
    else if (dtype == TGEMM_F16) ((uint16_t *)row)[i] = tgemm__f32_to_f16(v);
    else ((uint16_t *)row)[i] = tgemm__f32_to_bf16(v);
    as_f32[i] = tgemm__load_f32(row, dtype, i);
  }
}

static void check_quantize_rows(void) {
  const tgemm_dtype dtypes[3] = {TGEMM_F32, TGEMM_F16, TGEMM_BF16};
  const struct {
    int64_t rows, cols;
  } shapes[] = {{1, 1}, {3, 33}, {17, 100}, {40, 7167}, {5, 4097}, {64, 2048}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    int64_t rows = shapes[s].rows, cols = shapes[s].cols, ld = cols + 3;
    int64_t pcols = tgemm_mxfp4_packed_cols(cols), scols = tgemm_mxfp4_scale_cols(cols);
    int64_t packed_ld = pcols + 5, scales_ld = scols + 2;
    for (int d = 0; d < 3; d++) {
      tgemm_dtype dtype = dtypes[d];
      size_t elem = tgemm_dtype_size(dtype);
      char *src = malloc((size_t)(rows * ld) * elem);
      float *as_f32 = malloc((size_t)(rows * cols) * sizeof(float));
      for (int64_t r = 0; r < rows; r++)
        fill_row_dtype(src + (size_t)(r * ld) * elem, dtype, cols, as_f32 + r * cols);
      size_t pbytes = (size_t)(rows * packed_ld), sbytes = (size_t)(rows * scales_ld);
      uint8_t *packed[2], *scales[2];
      uint8_t *want_packed = malloc((size_t)pcols), *want_scales = malloc((size_t)scols);
      tgemm_scale_mode mode = all_modes[(s + (size_t)d) % 3];
      for (int scalar = 0; scalar < 2; scalar++) {
        packed[scalar] = malloc(pbytes);
        scales[scalar] = malloc(sbytes);
        memset(packed[scalar], 0x5A, pbytes);
        memset(scales[scalar], 0x5A, sbytes);
        tgemm__cpu_features_force_scalar(scalar == 1);
        tgemm__mxfp4_quantize_rows(src, dtype, rows, cols, ld, packed[scalar], packed_ld,
                                   scales[scalar], scales_ld, mode);
      }
      tgemm__cpu_features_force_scalar(false);
      CHECK(memcmp(packed[0], packed[1], pbytes) == 0 && memcmp(scales[0], scales[1], sbytes) == 0,
            "quantize_rows %lldx%lld dtype %d %s: vector and scalar bytes differ",
            (long long)rows, (long long)cols, (int)dtype, mode_name(mode));
      for (int64_t r = 0; r < rows; r++) {
        tgemm_mxfp4_quantize_row_ref(as_f32 + r * cols, cols, want_packed, want_scales, mode);
        int ok = memcmp(packed[0] + r * packed_ld, want_packed, (size_t)pcols) == 0 &&
                 memcmp(scales[0] + r * scales_ld, want_scales, (size_t)scols) == 0;
        /* the gaps between rows stay untouched */
        for (int64_t g = pcols; g < packed_ld; g++) ok &= packed[0][r * packed_ld + g] == 0x5A;
        for (int64_t g = scols; g < scales_ld; g++) ok &= scales[0][r * scales_ld + g] == 0x5A;
        if (!ok) {
          CHECK(ok, "quantize_rows %lldx%lld dtype %d %s: row %lld differs from the reference",
                (long long)rows, (long long)cols, (int)dtype, mode_name(mode), (long long)r);
          break;
        }
      }
      for (int scalar = 0; scalar < 2; scalar++) {
        free(packed[scalar]);
        free(scales[scalar]);
      }
      free(want_packed);
      free(want_scales);
      free(src);
      free(as_f32);
    }
  }
}

/* --------------------------------------------------------------- dequantize */

static void check_dequantize(void) {
  const int64_t rows = 9, cols = 1000, ld = cols + 1;
  int64_t pcols = tgemm_mxfp4_packed_cols(cols), scols = tgemm_mxfp4_scale_cols(cols);
  float *x = malloc((size_t)(rows * cols) * sizeof(float));
  for (int64_t i = 0; i < rows * cols; i++) x[i] = test_rand_normal() * 100.0f;
  x[5] = NAN;            /* row 0, block 0 becomes a NaN block */
  x[cols + 40] = -INFINITY;
  for (int i = 64; i < 96; i++) x[i] = 0x1p-131f * (float)(i - 80); /* subnormal block, codes up to 1.0 */
  uint8_t *packed = malloc((size_t)(rows * pcols)), *scales = malloc((size_t)(rows * scols));
  const tgemm_dtype dtypes[3] = {TGEMM_F32, TGEMM_F16, TGEMM_BF16};
  for (int m = 0; m < 3; m++) {
    tgemm__mxfp4_quantize_rows(x, TGEMM_F32, rows, cols, cols, packed, pcols, scales, scols,
                               all_modes[m]);
    for (int d = 0; d < 3; d++) {
      tgemm_dtype dtype = dtypes[d];
      size_t elem = tgemm_dtype_size(dtype);
      char *y = malloc((size_t)(rows * ld) * elem);
      test_poison(y, dtype, (size_t)(rows * ld));
      tgemm__mxfp4_dequantize_rows(packed, pcols, scales, scols, rows, cols, y, dtype, ld);
      float *row_ref = malloc((size_t)cols * sizeof(float));
      int bad = 0;
      for (int64_t r = 0; r < rows && !bad; r++) {
        tgemm_mxfp4_dequantize_row_ref(packed + r * pcols, scales + r * scols, cols, row_ref);
        for (int64_t i = 0; i < cols && !bad; i++) {
          uint8_t byte = scales[r * scols + i / 32];
          uint8_t code = code_at(packed + r * pcols, i);
          float want = tgemm__e2m1_value[code] * tgemm__e8m0_to_f32(byte);
          /* independent: code value times 2^(byte-127) in double */
          double exact = byte == 0xFF ? NAN : (double)tgemm__e2m1_value[code] * ldexp(1.0, byte - 127);
          float got = tgemm__load_f32(y + (size_t)(r * ld) * elem, dtype, i);
          float want_d = dtype == TGEMM_F32 ? want
                         : dtype == TGEMM_F16 ? tgemm__f16_to_f32(tgemm__f32_to_f16(want))
                                              : tgemm__bf16_to_f32(tgemm__f32_to_bf16(want));
          int same = byte == 0xFF ? (isnan(got) && isnan(row_ref[i]))
                                  : (memcmp(&got, &want_d, 4) == 0 &&
                                     memcmp(&row_ref[i], &want, 4) == 0 && (double)want == exact);
          if (!same) {
            bad = 1;
            CHECK(same, "%s dtype %d: dequant (%lld,%lld) = %a, want %a (row_ref %a)",
                  mode_name(all_modes[m]), (int)dtype, (long long)r, (long long)i, got, want_d,
                  row_ref[i]);
          }
          /* rceil never clips, so the error is at most one grid step / 2
           * of the top binade: |x - q| <= 2^s. */
          if (all_modes[m] == TGEMM_SCALE_RCEIL && dtype == TGEMM_F32 && byte != 0xFF) {
            double err = fabs((double)x[r * cols + i] - (double)want);
            CHECK(err <= ldexp(1.0, byte - 127), "rceil error %g too large at (%lld,%lld)", err,
                  (long long)r, (long long)i);
          }
        }
        /* poisoned gap between rows stays poisoned: only cols written */
        if (ld > cols) {
          float gap = tgemm__load_f32(y + (size_t)(r * ld) * elem, dtype, cols);
          CHECK(isnan(gap), "dequantize wrote past cols in row %lld", (long long)r);
        }
      }
      free(row_ref);
      free(y);
    }
  }
  CHECK(scales[0] == 0xFF && scales[scols + 1] == 0xFF, "NaN/Inf blocks must get scale 0xFF");
  CHECK(scales[2] == 0, "subnormal block gets scale 0, got %u", scales[2]);
  free(x);
  free(packed);
  free(scales);
}

int main(void) {
  test_seed("test_mxfp4_avx2");
  /* The scalar paths of quantize_rows and dequantization run everywhere. */
  check_dequantize();
  if (!(tgemm__cpu_features()->avx2 && tgemm__cpu_features()->fma)) {
    printf("test_mxfp4_avx2: skipped, this CPU lacks AVX2/FMA\n");
    test_finish("test_mxfp4_avx2");
    return test_failures ? 1 : TEST_SKIP;
  }
  check_special_rows();
  check_widths();
  check_random_normal_rows();
  check_nasty_rows();
  check_quantize_rows();
  return test_finish("test_mxfp4_avx2");
}
