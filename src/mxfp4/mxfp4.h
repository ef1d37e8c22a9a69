/* MXFP4 (OCP MX v1.0) inside the library: the E2M1 table, the scale rule,
 * and the row quantizers (reference, AVX2).  DESIGN.md §3 is the spec. */
#ifndef TGEMM_MXFP4_MXFP4_H
#define TGEMM_MXFP4_MXFP4_H

#include <stdint.h>

#include "tgemm.h"

#define TGEMM__MX_BLOCK 32
#define TGEMM__MX_NAN_SCALE 0xFF

/* Value of each 4-bit E2M1 code (bit 3 is the sign). */
extern const float tgemm__e2m1_value[16];

/* The E8M0 scale byte for a block whose largest |v| is amax (finite, > 0). */
uint8_t tgemm__mxfp4_scale_byte(float amax, tgemm_scale_mode mode);

/* The E2M1 code of v / 2^s (v already divided), clamped, ties to even. */
uint8_t tgemm__e2m1_encode(float scaled);

/* 2^(byte-127) as f32 (0xFF gives NaN); exact for every byte, including
 * those below f32's normal range. */
float tgemm__e8m0_to_f32(uint8_t byte);

/* Quantize `rows` rows of `cols` values of a dense dtype (f32, f16, bf16)
 * with the fastest quantizer this CPU has, in parallel over rows.  Output
 * must be byte-identical to tgemm_mxfp4_quantize_row_ref. */
void tgemm__mxfp4_quantize_rows(const void *src, tgemm_dtype dtype,
                                int64_t rows, int64_t cols, int64_t ld,
                                uint8_t *packed, int64_t packed_ld,
                                uint8_t *scales, int64_t scales_ld,
                                tgemm_scale_mode mode);

/* The AVX2 row quantizer (src/mxfp4/mxfp4_quant_avx2.c); call only when
 * tgemm__cpu_features()->avx2 && fma. */
void tgemm__mxfp4_quantize_row_avx2(const float *src, int64_t n,
                                    uint8_t *packed, uint8_t *scales,
                                    tgemm_scale_mode mode);

/* f16 -> f32 with F16C (src/mxfp4/mxfp4_quant_avx2.c); call only when
 * tgemm__cpu_features()->f16c. */
void tgemm__mxfp4_widen_f16_avx2(const uint16_t *src, int64_t n, float *dst);

/* Dequantize rows into f32, f16 or bf16. */
void tgemm__mxfp4_dequantize_rows(const uint8_t *packed, int64_t packed_ld,
                                  const uint8_t *scales, int64_t scales_ld,
                                  int64_t rows, int64_t cols, void *dst,
                                  tgemm_dtype dtype, int64_t ld);

#endif
