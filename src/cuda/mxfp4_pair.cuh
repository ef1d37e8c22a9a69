/* The paired nibble order of MXFP4 weights, which the W4A16 stream kernel
 * reads without regrouping x.
 *
 * In the standard order a 32-bit word of packed E2M1 codes holds k
 * 8w..8w+7 with element e in nibble e (element 2i in the low nibble of
 * byte i).  The stream kernel decodes nibbles j and j+4 of a word into one
 * bf16 pair, so with the standard order its pairs are elements (j, j+4) and
 * every x load needs four byte permutes to match (w4a16_decode.cuh).  In
 * the paired order nibble j holds element 2j and nibble j+4 element 2j+1
 * (the even elements in the low 16 bits, the odd ones in the high): the
 * decoded pairs are (2j, 2j+1), as x already lies in memory.  The CUDA
 * backend rewrites the MXFP4 form it quantized at load in place, with no
 * copy (cuda_backend.c); borrowed MXFP4 weights keep the standard order,
 * and scales are unchanged. */
#ifndef TGEMM_CUDA_MXFP4_PAIR_CUH
#define TGEMM_CUDA_MXFP4_PAIR_CUH

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One 32-bit word (little-endian bytes) from the standard order to the
 * paired one.  Host and device. */
static inline
#ifdef __CUDACC__
    __host__ __device__
#endif
    uint32_t
    tgemm__mxfp4_pair_word(uint32_t w) {
  uint32_t out = 0;
  for (int e = 0; e < 8; e++) {
    const uint32_t code = (w >> (4 * e)) & 0xFu;
    const int at = (e & 1) ? 4 + e / 2 : e / 2;
    out |= code << (4 * at);
  }
  return out;
}

/* Writes the paired order of `rows` packed rows of `row_bytes` bytes (a
 * multiple of 4) at src, row stride ld bytes, to dst with the same stride
 * (bytes between row_bytes and ld are not touched).  src and dst 4-byte
 * aligned, ld a multiple of 4; stream-ordered, no synchronization. */
cudaError_t tgemm__mxfp4_pair_cuda(const uint8_t *src, uint8_t *dst, int64_t rows,
                                   int64_t row_bytes, int64_t ld, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
