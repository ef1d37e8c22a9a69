/* The library route on CUDA: y = x·Wᵀ (+ bias) through cuBLASLt.
 *
 * Row-major x[M,K], W[N,K], y[M,N] are read by cuBLASLt as column-major
 * C[N,M] = op(A)·B with A = W (TRANSA = T, a K x N matrix with ld = ldw) and
 * B = x (K x M, ld = ldx); bias[N] runs along the rows of C, which is what
 * CUBLASLT_EPILOGUE_BIAS adds.  Accumulation is f32 (CUBLAS_COMPUTE_32F, no
 * TF32 for f32 inputs).
 *
 * cuBLASLt writes bf16 output only from bf16 inputs and takes a bias of
 * the output's dtype.  The other combinations the API allows (bf16 y from
 * f16/f32 x, bf16 y with an f32 bias) are "staged": cuBLASLt writes f32
 * into the backend's scratch, and tgemm__cuda_store_f32_rows adds the bias
 * and rounds once.  Rows are processed in chunks that fit the scratch.
 *
 * Descriptors, layouts, the heuristic preference and the heuristic's first
 * choice are cached per (M, N, K, dtypes, bias, leading dimensions, pointer
 * alignments) in a fixed-size table: a shape's first call builds them (host
 * work only, so also inside graph capture), later calls only look them up.
 * Not thread-safe: one context is used by one thread at a time. */
#ifndef TGEMM_CUDA_CUBLASLT_GEMM_H
#define TGEMM_CUDA_CUBLASLT_GEMM_H

#include <stdint.h>

#include "core/internal.h"
#include "cuda/cublaslt_loader.h"
#include "cuda/cuda_args.h"

typedef struct tgemm__lt_gemm tgemm__lt_gemm;

/* Create the cuBLASLt handle and the cache.  `workspace` is cuBLASLt's
 * (split-K partial sums and the like); `scratch` holds staged f32 output.
 * Both stay owned by the caller and must outlive the object. */
tgemm_status tgemm__lt_gemm_create(tgemm_ctx *ctx, const tgemm__lt_api *api, void *workspace,
                                   size_t workspace_bytes, void *scratch, size_t scratch_bytes,
                                   tgemm__lt_gemm **out);
void tgemm__lt_gemm_destroy(tgemm__lt_gemm *gemm);

/* The heuristic's algorithms (up to 32, best first) for contiguous
 * operands in cudaMalloc'd buffers with a bias of y's dtype, then split-K
 * variants (2, 4, 8; not 16, see the .c) of the first 8 where the
 * algorithm allows it and cublasLtMatmulAlgoCheck accepts them.  Each kernel is named
 * "lt_a<id>_t<tile>_s<stages>_k<splitk>" (plus _r<reduction>, _w<swizzle>,
 * _c<custom>, _i<inner shape>, _g<cluster> where not default), carries the
 * algo's config attributes in params and its raw 64 bytes in algo.
 * The shape carries no bias dtype, so a bias is taken to be y's: a call
 * with an f32 bias on bf16 x and y is staged (f32 output), which these
 * algorithms do not describe, and runs the heuristic's choice for the
 * staged problem instead (one warning).
 * Returns how many were written (<= cap) or a negative status. */
int tgemm__lt_gemm_candidates(tgemm_ctx *ctx, tgemm__lt_gemm *gemm, const tgemm__shape *shape,
                              tgemm__kernel *out, int cap);

/* The heuristic's first choice for the shape: the library default.  Its
 * name, params and algo bytes describe that choice; has_algo is false, so
 * that run() asks the heuristic again for the actual operands (leading
 * dimensions, alignment), exactly as a plain cuBLASLt caller would. */
tgemm_status tgemm__lt_gemm_default(tgemm_ctx *ctx, tgemm__lt_gemm *gemm,
                                    const tgemm__shape *shape, tgemm__kernel *out);

/* cublasLtMatmulAlgoCheck of a kernel's algo at the shape (contiguous
 * operands), and that its workspace fits.  A kernel without algo is the
 * heuristic's choice and always valid. */
tgemm_status tgemm__lt_gemm_validate(tgemm_ctx *ctx, tgemm__lt_gemm *gemm,
                                     const tgemm__shape *shape, const tgemm__kernel *kernel);

/* One call.  With kernel->has_algo that algorithm runs, after a check that
 * is remembered per cache entry; an algorithm that does not fit these
 * operands (other leading dimensions, weaker alignment, staged output)
 * falls back to the heuristic's choice with one warning, and then names it
 * in *ran (when ran is not NULL; untouched otherwise; a staged call in row
 * chunks names the last chunk that fell back).  Without it, the
 * heuristic's cached first choice runs.  No allocation, no
 * synchronization, no device reads. */
tgemm_status tgemm__lt_gemm_run(tgemm_ctx *ctx, tgemm__lt_gemm *gemm, const tgemm__kernel *kernel,
                                const tgemm__cuda_gemm_args *args, tgemm__kernel *ran);

/* How many cache entries were built so far (tests: a repeated shape must
 * not build again). */
uint64_t tgemm__lt_gemm_builds(const tgemm__lt_gemm *gemm);
/* How many calls with a caller-given algo ran the heuristic's instead
 * (tests: never for candidates on contiguous operands). */
uint64_t tgemm__lt_gemm_fallbacks(const tgemm__lt_gemm *gemm);

#endif
