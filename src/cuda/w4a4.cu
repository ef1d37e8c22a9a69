/* The W4A4 family: activations quantized to MXFP4 per call, then the
 * tensor-core MXFP4 GEMM of w4a16_mma.cu.  Two strategies are candidates,
 * and the measurements pick:
 * - fused: the GEMM quantizes each x tile as it loads it (no extra launch,
 *   no round trip through memory, but every N-tile column of CTAs redoes
 *   the quantization of its rows);
 * - prequant: one quantize launch into the workspace, then a GEMM that
 *   reads the 4.25-bit activations (quantization done once). */
#include <stdint.h>
#include <string.h>

#include "cuda/mxfp4_quant.cuh"
#include "cuda/w4a16.cuh"
#include "cuda/w4a4.cuh"

#if __has_include("cuda/w4a16_stream.cuh")
#include "cuda/w4a16_stream.cuh"
#define TGEMM__W4A4_HAVE_STREAM 1
#endif

namespace {

const char kFused[] = "w4a4_fused_";
const char kPrequant[] = "w4a4_prequant_";
/* "w4a4_xq_" + a streaming W4A16 kernel's name without its "w4a16_". */
const char kXq[] = "w4a4_xq_";
const char kW4a16[] = "w4a16_";

bool shape_ok(const tgemm__shape *shape) {
  return shape->m >= 1 && shape->n >= 1 && shape->k >= 1 && shape->m <= INT32_MAX &&
         shape->n <= INT32_MAX && shape->k <= INT32_MAX &&
         (shape->dtype == TGEMM_BF16 || shape->dtype == TGEMM_F16 ||
          shape->dtype == TGEMM_F32) &&
         (shape->out_dtype == TGEMM_BF16 || shape->out_dtype == TGEMM_F32);
}

size_t align256(size_t v) { return (v + 255) & ~(size_t)255; }

/* x quantized chunk by chunk into the workspace, each chunk then multiplied. */
cudaError_t run_prequant(const tgemm__kernel *kernel, const tgemm__cuda_gemm_args *args) {
  const int tile = kernel->params[0];
  const int bm = tgemm__mx_tile_bm(tile);
  if (bm == 0 || !args->workspace || !args->x) return cudaErrorInvalidValue;
  const int64_t nb = (args->k + 31) / 32;
  const int64_t packed_ld = nb * 16, scales_ld = (nb + 15) / 16 * 16;
  const size_t per_row = (size_t)(packed_ld + scales_ld);

  uintptr_t base = ((uintptr_t)args->workspace + 255) & ~(uintptr_t)255;
  const size_t lost = base - (uintptr_t)args->workspace;
  if (args->workspace_bytes <= lost + 512) return cudaErrorInvalidValue;
  const size_t avail = args->workspace_bytes - lost - 512; /* two alignment pads */

  int64_t chunk = args->m;
  if ((size_t)chunk * per_row > avail) {
    chunk = (int64_t)(avail / per_row) / bm * bm;
    if (chunk < bm) return cudaErrorInvalidValue;
  }
  uint8_t *packed = reinterpret_cast<uint8_t *>(base);
  uint8_t *scales = packed + align256((size_t)chunk * (size_t)packed_ld);
  uint8_t *rest = scales + align256((size_t)chunk * (size_t)scales_ld);
  const size_t used = (size_t)(rest - reinterpret_cast<uint8_t *>(args->workspace));
  const size_t rest_bytes = args->workspace_bytes > used ? args->workspace_bytes - used : 0;

  const size_t xesize = args->x_dtype == TGEMM_F32 ? 4 : 2;
  for (int64_t m0 = 0; m0 < args->m; m0 += chunk) {
    const int64_t rows = args->m - m0 < chunk ? args->m - m0 : chunk;
    const char *x = static_cast<const char *>(args->x) + (size_t)m0 * (size_t)args->ldx * xesize;
    cudaError_t err =
        tgemm__mxfp4_quantize_cuda(x, args->x_dtype, rows, args->k, args->ldx, packed, packed_ld,
                                   scales, scales_ld, args->scale_mode, args->stream);
    if (err != cudaSuccess) return err;
    tgemm__cuda_gemm_args part = *args;
    part.m = rows;
    part.x = x;
    part.y = static_cast<char *>(args->y) +
             (size_t)m0 * (size_t)args->ldy * (args->y_dtype == TGEMM_F32 ? 4 : 2);
    const tgemm__mx_a_quant aq = {packed, packed_ld, scales, scales_ld};
    err = tgemm__mx_mma_launch(&part, TGEMM__MX_A_MXFP4, &aq, tile, kernel->params[1], rest,
                               rest_bytes);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

#ifdef TGEMM__W4A4_HAVE_STREAM
/* M <= 16: x̂ = dequantize(quantize(x)) into the workspace as bf16 (one
 * small launch; exact), then the streaming W4A16 decode kernel on x̂.  The
 * result is the exact product of the dequantized operands, as for every
 * W4A4 kernel.  Workspace: M * round_up(K, 8) * 2 bytes. */
cudaError_t run_xq(const tgemm__kernel *kernel, const tgemm__cuda_gemm_args *args) {
  if (!args->workspace || !args->x) return cudaErrorInvalidValue;
  tgemm__kernel inner = *kernel;
  inner.route = TGEMM_ROUTE_W4A16;
  memset(inner.name, 0, sizeof inner.name);
  const size_t tail = strlen(kernel->name) - (sizeof kXq - 1);
  if (tail + sizeof kW4a16 > sizeof inner.name) return cudaErrorInvalidValue;
  memcpy(inner.name, kW4a16, sizeof kW4a16 - 1);
  memcpy(inner.name + sizeof kW4a16 - 1, kernel->name + sizeof kXq - 1, tail);

  const int64_t ld = (args->k + 7) / 8 * 8; /* 16-byte rows for the vector loads */
  uintptr_t base = ((uintptr_t)args->workspace + 255) & ~(uintptr_t)255;
  const size_t need = (base - (uintptr_t)args->workspace) + (size_t)args->m * (size_t)ld * 2;
  if (need > args->workspace_bytes) return cudaErrorInvalidValue;
  uint16_t *xhat = reinterpret_cast<uint16_t *>(base);
  cudaError_t err =
      tgemm__mxfp4_fake_quant_bf16_cuda(args->x, args->x_dtype, args->m, args->k, args->ldx, xhat,
                                        ld, args->scale_mode, args->stream);
  if (err != cudaSuccess) return err;
  tgemm__cuda_gemm_args a = *args;
  a.x = xhat;
  a.ldx = ld;
  a.x_dtype = TGEMM_BF16;
  return tgemm__w4a16_stream_run(&inner, &a);
}

int xq_candidates(const tgemm__shape *shape, int sm_count, tgemm__kernel *out, int cap) {
  if (shape->m > 16 || cap <= 0) return 0;
  tgemm__shape sh = *shape;
  sh.dtype = TGEMM_BF16; /* the stream kernel sees x̂ in bf16 */
  tgemm__kernel inner[TGEMM__MAX_CANDIDATES];
  int n = tgemm__w4a16_stream_candidates(&sh, sm_count, inner, TGEMM__MAX_CANDIDATES);
  int count = 0;
  for (int i = 0; i < n && count < cap; i++) {
    if (strncmp(inner[i].name, kW4a16, sizeof kW4a16 - 1) != 0) continue;
    const char *rest = inner[i].name + sizeof kW4a16 - 1;
    if (strlen(rest) + sizeof kXq > sizeof out[count].name) continue;
    out[count] = inner[i];
    out[count].route = TGEMM_ROUTE_W4A4;
    memset(out[count].name, 0, sizeof out[count].name);
    memcpy(out[count].name, kXq, sizeof kXq - 1);
    memcpy(out[count].name + sizeof kXq - 1, rest, strlen(rest));
    count++;
  }
  return count;
}
#endif

}  // namespace

extern "C" int tgemm__w4a4_candidates(const tgemm__shape *shape, int sm_count,
                                      tgemm__kernel *out, int cap) {
  if (!shape || !out || cap <= 0 || !shape_ok(shape)) return 0;
  /* Measured (H100, DeepSeek-V3 shapes): at M <= 16 quantizing x to bf16
   * x̂ and streaming the weights wins; from M = 128 on the prequant GEMM
   * beat the fused one on every shape (the fused kernel redoes the
   * quantization for every N tile).  Without the streaming kernel, the
   * fused 16-row tile leads at M <= 16 (no second launch). */
  bool fused_first = false;
#ifndef TGEMM__W4A4_HAVE_STREAM
  fused_first = shape->m <= 16;
#endif
  int count = 0;
#ifdef TGEMM__W4A4_HAVE_STREAM
  /* M <= 16: quantized activations through the streaming decode kernel. */
  count += xq_candidates(shape, sm_count, out, cap);
#endif
  for (int pass = 0; pass < 2; pass++) {
    const bool fused = (pass == 0) == fused_first;
    count += tgemm__mx_mma_candidates(shape, sm_count, TGEMM_ROUTE_W4A4,
                                      fused ? kFused : kPrequant, out + count, cap - count);
  }
  return count;
}

extern "C" cudaError_t tgemm__w4a4_run(const tgemm__kernel *kernel,
                                       const tgemm__cuda_gemm_args *args) {
  if (!kernel || !args) return cudaErrorInvalidValue;
  if (strncmp(kernel->name, kFused, sizeof kFused - 1) == 0)
    return tgemm__mx_mma_launch(args, TGEMM__MX_A_QUANTIZE, NULL, kernel->params[0],
                                kernel->params[1], args->workspace, args->workspace_bytes);
  if (strncmp(kernel->name, kPrequant, sizeof kPrequant - 1) == 0)
    return run_prequant(kernel, args);
#ifdef TGEMM__W4A4_HAVE_STREAM
  if (strncmp(kernel->name, kXq, sizeof kXq - 1) == 0) return run_xq(kernel, args);
#endif
  return cudaErrorInvalidValue;
}
