/* W4A16: y[M,N] = x[M,K]·Ŵᵀ (+ bias) with Ŵ the MXFP4 weight, decoded
 * exactly on the fly; x bf16 or f16, f32 accumulation, bf16 or f32 y.
 *
 * Two kernel families answer for this route:
 * - "w4a16_stream_*" (w4a16_stream.cu): the streaming decode kernel for
 *   M <= 16, listed first for those M;
 * - "w4a16_mma_<tile>_s<splits>" (w4a16_mma.cu), tile "<BM>x<BN>" or
 *   "64x128w8" (8 warps): a tensor-core kernel
 *   (mma.sync m16n8k16, cp.async pipeline) for any M.  The weights are
 *   decoded in registers to bf16 and multiplied by their power-of-two scale
 *   (exact: every E2M1 value times 2^(s-127) is a bf16), so the product is
 *   the exact dequantized product up to f32 accumulation.  With f16 x the
 *   codes go to the MMA unscaled and the scale is applied in f32 after each
 *   32-wide K block.  Each CTA decodes its stage of weights once into
 *   shared memory for all its warps.  params[0] = tile index, params[1] =
 *   split-K factor.  Splits up to 8 run as one thread-block cluster and are
 *   summed through distributed shared memory in rank order (one launch,
 *   deterministic, no workspace); larger factors (only when asked for
 *   explicitly) write f32 partials to args->workspace ([splits][M][N]) and
 *   a second launch adds them in order; when the workspace is too small
 *   the factor is lowered until it fits.
 *
 * Requirements of the mma kernels for full speed: MXFP4 packed rows 16-byte
 * aligned (pointer and ldw_packed), scales pointer 4-byte aligned, x rows
 * 16-byte aligned.  Anything else still runs, through byte loads.
 *
 * Plain C interface (the backend's .c files include it). */
#ifndef TGEMM_CUDA_W4A16_CUH
#define TGEMM_CUDA_W4A16_CUH

#include "cuda/cuda_args.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Candidates for shape (x bf16/f16, y bf16/f32), the default first; 0 when
 * the shape does not qualify.  For M <= 16 the streaming kernels come first. */
int tgemm__w4a16_candidates(const tgemm__shape *shape, int sm_count, tgemm__kernel *out, int cap);

/* Runs one candidate (routed by name prefix) on args->stream.  Needs
 * args->w_packed / w_scales.  cudaErrorInvalidValue for an unknown kernel or
 * an unsupported shape/dtype, else the launch status.  Never allocates or
 * synchronizes. */
cudaError_t tgemm__w4a16_run(const tgemm__kernel *kernel, const tgemm__cuda_gemm_args *args);

/* ---- The tensor-core kernel, shared with W4A4 (w4a4.cu) ---------------- */

/* How the kernel gets its A operand (the activations). */
typedef enum tgemm__mx_a_mode {
  TGEMM__MX_A_DENSE = 0,    /* x bf16/f16 as given (W4A16) */
  TGEMM__MX_A_QUANTIZE = 1, /* x bf16/f16/f32 quantized per 32-block on load (W4A4, fused) */
  TGEMM__MX_A_MXFP4 = 2,    /* x already MXFP4 (W4A4 after a quantize launch) */
} tgemm__mx_a_mode;

/* Tile shapes, indexed by params[0]. */
#define TGEMM__MX_TILE_COUNT 6
int tgemm__mx_tile_bm(int tile);
int tgemm__mx_tile_bn(int tile);
/* "<BM>x<BN>" (plus "w8" for the 8-warp 64x128 tile), as in kernel names. */
const char *tgemm__mx_tile_name(int tile);

/* The split-K factor that fills the GPU for this tile and shape (1 when the
 * tiles alone fill it). */
int tgemm__mx_pick_splits(int tile, int64_t m, int64_t n, int64_t k, int sm_count);

/* The mma candidates for shape (any x dtype the caller accepts), named
 * "<prefix><tile>_s<splits>", for route; the default first. */
int tgemm__mx_mma_candidates(const tgemm__shape *shape, int sm_count, tgemm_route route,
                             const char *prefix, tgemm__kernel *out, int cap);

/* The activations as MXFP4 for TGEMM__MX_A_MXFP4 (ignored otherwise). */
typedef struct tgemm__mx_a_quant {
  const uint8_t *packed;
  int64_t packed_ld;
  const uint8_t *scales;
  int64_t scales_ld;
} tgemm__mx_a_quant;

/* Launches the tensor-core kernel for args (m, n, k, x, w_packed, bias, y,
 * scale_mode for QUANTIZE) with the tile and split factor given; split-K
 * partials go to [ws, ws + ws_bytes).  cudaErrorInvalidValue for what the
 * kernel cannot do (bad tile, dtype, sizes over INT_MAX). */
cudaError_t tgemm__mx_mma_launch(const tgemm__cuda_gemm_args *args, tgemm__mx_a_mode a_mode,
                                 const tgemm__mx_a_quant *aq, int tile, int splits, void *ws,
                                 size_t ws_bytes);

#ifdef __cplusplus
}
#endif

#endif
