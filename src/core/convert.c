/* Exported scalar conversions (the inline versions live in dtype_convert.h). */
#include "core/dtype_convert.h"
#include "tgemm.h"

float tgemm_bf16_to_f32(uint16_t v) { return tgemm__bf16_to_f32(v); }
uint16_t tgemm_f32_to_bf16(float v) { return tgemm__f32_to_bf16(v); }
float tgemm_f16_to_f32(uint16_t v) { return tgemm__f16_to_f32(v); }
uint16_t tgemm_f32_to_f16(float v) { return tgemm__f32_to_f16(v); }
