/* The double-precision reference of every route: the truth that each CPU
 * and GPU kernel is tested against, and the bench's error measure. */
#ifndef TGEMM_CPU_CPU_REFERENCE_H
#define TGEMM_CPU_CPU_REFERENCE_H

#include <stdint.h>

#include "core/backend.h"

/* Rows [row_begin, row_end) of y = x·Wᵀ + bias, accumulated in double, into
 * out [row_end - row_begin, N] (contiguous).  Operands in host memory.
 * - dense routes (REFERENCE, SKINNY, LIBRARY, AUTO): the dense weight, or
 *   for an MXFP4-only weight its dequantized values (as W4A16);
 * - W4A16: the dequantized MXFP4 weight times x;
 * - W4A4: the same, with each x row quantized to MXFP4 by the reference
 *   quantizer (tgemm_mxfp4_quantize_row_ref) in `mode` and dequantized: the
 *   exact product of the dequantized operands.
 * Returns TGEMM_UNSUPPORTED when the weight lacks the form the route reads,
 * TGEMM_OUT_OF_MEMORY when the row buffers cannot be allocated. */
tgemm_status tgemm__cpu_reference_rows(const tgemm__operands *ops, tgemm_route route,
                                       tgemm_scale_mode mode, int64_t row_begin,
                                       int64_t row_end, double *out);

#endif
