/* Whole-matrix MXFP4 quantize/dequantize on the CPU: dtype conversion,
 * choice of row quantizer (AVX2 or reference) and OpenMP over rows. */
#include <math.h>
#include <stdbool.h>

#include "core/cpu_features.h"
#include "core/dtype_convert.h"
#include "mxfp4/mxfp4.h"

/* Below this many values the threads cost more than they save. */
#define PARALLEL_MIN_VALUES (1 << 16)
/* 16-bit rows are widened to f32 in chunks of this many values (a
 * multiple of the block size, so chunks start on block boundaries). */
#define WIDEN_CHUNK 2048

typedef void (*row_quantizer)(const float *src, int64_t n, uint8_t *packed,
                              uint8_t *scales, tgemm_scale_mode mode);

static row_quantizer pick_row_quantizer(void) {
  const struct tgemm__cpu_features *cpu = tgemm__cpu_features();
  if (cpu->avx2 && cpu->fma) return tgemm__mxfp4_quantize_row_avx2;
  return tgemm_mxfp4_quantize_row_ref;
}

/* f16 and bf16 widen to f32 exactly, so the bytes equal those of the f32
 * row holding the same values. */
static void widen(const uint16_t *src, tgemm_dtype dtype, int64_t n, float *dst,
                  bool f16c) {
  if (dtype == TGEMM_BF16) {
    for (int64_t i = 0; i < n; i++) dst[i] = tgemm__bf16_to_f32(src[i]);
  } else if (f16c) {
    tgemm__mxfp4_widen_f16_avx2(src, n, dst);
  } else {
    for (int64_t i = 0; i < n; i++) dst[i] = tgemm__f16_to_f32(src[i]);
  }
}

static void quantize_row(row_quantizer quantize, bool f16c, const void *src,
                         tgemm_dtype dtype, int64_t cols, uint8_t *packed,
                         uint8_t *scales, tgemm_scale_mode mode) {
  if (dtype == TGEMM_F32) {
    quantize((const float *)src, cols, packed, scales, mode);
    return;
  }
  float chunk[WIDEN_CHUNK];
  for (int64_t c = 0; c < cols; c += WIDEN_CHUNK) {
    int64_t n = cols - c < WIDEN_CHUNK ? cols - c : WIDEN_CHUNK;
    widen((const uint16_t *)src + c, dtype, n, chunk, f16c);
    quantize(chunk, n, packed + c / 2, scales + c / TGEMM__MX_BLOCK, mode);
  }
}

void tgemm__mxfp4_quantize_rows(const void *src, tgemm_dtype dtype, int64_t rows,
                                int64_t cols, int64_t ld, uint8_t *packed,
                                int64_t packed_ld, uint8_t *scales, int64_t scales_ld,
                                tgemm_scale_mode mode) {
  row_quantizer quantize = pick_row_quantizer();
  const struct tgemm__cpu_features *cpu = tgemm__cpu_features();
  bool f16c = cpu->avx2 && cpu->f16c;
  size_t elem = tgemm_dtype_size(dtype);
  int parallel = rows > 1 && rows * cols >= PARALLEL_MIN_VALUES;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; r++)
    quantize_row(quantize, f16c, (const char *)src + (size_t)(r * ld) * elem, dtype, cols,
                 packed + r * packed_ld, scales + r * scales_ld, mode);
}

static void dequantize_row(const uint8_t *packed, const uint8_t *scales, int64_t cols,
                           void *dst, tgemm_dtype dtype) {
  for (int64_t b = 0; b * TGEMM__MX_BLOCK < cols; b++) {
    /* NaN for byte 0xFF, and NaN * anything is NaN */
    float scale = tgemm__e8m0_to_f32(scales[b]);
    int64_t end = (b + 1) * TGEMM__MX_BLOCK < cols ? (b + 1) * TGEMM__MX_BLOCK : cols;
    for (int64_t i = b * TGEMM__MX_BLOCK; i < end; i++) {
      uint8_t byte = packed[i / 2];
      uint8_t code = (i & 1) ? (uint8_t)(byte >> 4) : (uint8_t)(byte & 0xfu);
      float v = tgemm__e2m1_value[code] * scale;
      if (dtype == TGEMM_F32) ((float *)dst)[i] = v;
      else if (dtype == TGEMM_F16) ((uint16_t *)dst)[i] = tgemm__f32_to_f16(v);
      else ((uint16_t *)dst)[i] = tgemm__f32_to_bf16(v);
    }
  }
}

void tgemm__mxfp4_dequantize_rows(const uint8_t *packed, int64_t packed_ld,
                                  const uint8_t *scales, int64_t scales_ld, int64_t rows,
                                  int64_t cols, void *dst, tgemm_dtype dtype, int64_t ld) {
  size_t elem = tgemm_dtype_size(dtype);
  int parallel = rows > 1 && rows * cols >= PARALLEL_MIN_VALUES;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; r++)
    dequantize_row(packed + r * packed_ld, scales + r * scales_ld, cols,
                   (char *)dst + (size_t)(r * ld) * elem, dtype);
}
