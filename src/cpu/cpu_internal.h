/* Private to src/cpu: the backend state, the per-weight cache, scratch
 * memory, the output epilogue and the kernel entry points that the route
 * drivers (cpu_skinny.c, cpu_mxfp4_routes.c, cpu_blas.c) share with their
 * AVX2 halves (*_avx2.c, compiled with -mavx2 -mfma -mf16c). */
#ifndef TGEMM_CPU_CPU_INTERNAL_H
#define TGEMM_CPU_CPU_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/backend.h"
#include "core/dtype_convert.h"
#include "core/internal.h"

/* Memory for the per-call buffers (converted x, f32 output tiles, quantized
 * activations).  Kept in the backend state and reused so that a call does
 * not allocate; a second thread calling on the same context at the same
 * time gets a private buffer instead of waiting. */
typedef struct tgemm__cpu_scratch {
  pthread_mutex_t lock;
  void *ptr;
  size_t bytes;
} tgemm__cpu_scratch;

typedef struct tgemm__cpu_state {
  int n_threads;
  tgemm__cpu_scratch scratch;
  struct timespec timer_start;
  bool timer_running;
  /* Streamed over by flush_cache; 2x the last-level cache of big parts. */
  unsigned char *flush_buf;
  size_t flush_bytes;
  volatile uint64_t flush_sink; /* the read flush's result, so it is not elided */
} tgemm__cpu_state;

/* A buffer from the scratch: `owned` means it was malloc'ed for this call. */
typedef struct tgemm__cpu_buffer {
  void *ptr;
  bool owned;
  tgemm__cpu_scratch *from;
} tgemm__cpu_buffer;

tgemm_status tgemm__cpu_scratch_acquire(tgemm_ctx *ctx, size_t bytes,
                                        tgemm__cpu_buffer *buf);
void tgemm__cpu_scratch_release(tgemm__cpu_buffer *buf);

/* 64-byte aligned host memory (the backend's alloc). */
void *tgemm__cpu_aligned_alloc(size_t bytes);
void tgemm__cpu_aligned_free(void *ptr);

/* The weight's CPU cache (weight->backend_data): an f32 copy of a bf16/f16
 * dense weight for the BLAS route, made once at prepare. */
typedef struct tgemm__cpu_weight {
  const float *w_f32; /* [n, ld_f32]; the caller's data when it is f32 */
  int64_t ld_f32;
  float *owned_f32; /* non-NULL when converted here */
} tgemm__cpu_weight;

static inline int tgemm__cpu_threads(const tgemm_ctx *ctx) {
  const tgemm__cpu_state *st = (const tgemm__cpu_state *)ctx->backend_state;
  return st && st->n_threads > 0 ? st->n_threads : 1;
}

/* Activation quantization (W4A4) follows the weight's scale mode, which
 * tgemm_weight_create sets from the context's unless told otherwise. */
static inline tgemm_scale_mode tgemm__cpu_act_mode(const struct tgemm_weight *w) {
  return w->scale_mode;
}

/* ------------------------------------------------------------ epilogue */

/* Where results go: y (bf16 or f32) with its leading dimension, plus the
 * optional bias (bf16, f16 or f32, contiguous [n]). */
typedef struct tgemm__cpu_out {
  void *y;
  tgemm_dtype y_dtype;
  int64_t ldy;
  const void *bias; /* NULL when absent */
  tgemm_dtype bias_dtype;
} tgemm__cpu_out;

static inline tgemm__cpu_out tgemm__cpu_out_make(const tgemm__operands *ops) {
  tgemm__cpu_out o;
  o.y = ops->y->data;
  o.y_dtype = ops->y->dtype;
  o.ldy = ops->y->ld;
  o.bias = ops->bias ? ops->bias->data : NULL;
  o.bias_dtype = ops->bias ? ops->bias->dtype : TGEMM_F32;
  return o;
}

static inline void tgemm__cpu_out_store(const tgemm__cpu_out *o, int64_t m,
                                        int64_t n, float v) {
  if (o->bias) v += tgemm__load_f32(o->bias, (int)o->bias_dtype, n);
  if (o->y_dtype == TGEMM_F32)
    ((float *)o->y)[m * o->ldy + n] = v;
  else
    ((uint16_t *)o->y)[m * o->ldy + n] = tgemm__f32_to_bf16(v);
}

/* Rows [m0, m1) of an f32 result c (row stride ldc; column j of c is
 * column n0 + j of y) plus bias into y.  Threads split the rows. */
void tgemm__cpu_store_block(const tgemm__cpu_out *o, const float *c,
                            int64_t ldc, int64_t m0, int64_t m1, int64_t n0,
                            int64_t n_cols, int n_threads);
/* The AVX2 form of one row of it (cpu_convert_avx2.c). */
void tgemm__cpu_store_row_avx2(const tgemm__cpu_out *o, const float *c, int64_t m,
                               int64_t n0, int64_t n_cols);

/* rows x cols of a dense dtype (row stride ld) into f32 (row stride ldd). */
void tgemm__cpu_to_f32(const void *src, tgemm_dtype dtype, int64_t rows, int64_t cols,
                       int64_t ld, float *dst, int64_t ldd, int n_threads);
void tgemm__cpu_row_to_f32_avx2(const void *src, tgemm_dtype dtype, int64_t cols,
                                float *dst);

/* ------------------------------------------------------------- kernels */

/* Kernel families: params[0] of a tgemm__kernel.  The numbers are stable
 * (tables store them); never reuse one. */
enum {
  TGEMM__CPU_K_REFERENCE = 1,
  TGEMM__CPU_K_SKINNY = 2,      /* params[1] = rows of W per step */
  TGEMM__CPU_K_SGEMM = 3,
  /* 4 is kept free for a cblas_sbgemm kernel (absent from Debian's build) */
  TGEMM__CPU_K_W4A16_STREAM = 5, /* params[1] = rows of W per step */
  TGEMM__CPU_K_W4A16_BLOCKED = 6,
  TGEMM__CPU_K_W4A4 = 7,         /* params[1] = rows of W per step */
};

/* K is processed in steps of 16 (dense) or 32 (MXFP4 blocks). */
#define TGEMM__CPU_DENSE_STEP 16

/* Dense skinny GEMM arguments: x already converted to f32 in the layout
 * the kernel expects (tgemm__cpu_skinny_convert_x_avx2, or natural order
 * for the scalar fallback), kpad values per row. */
typedef struct tgemm__cpu_skinny_args {
  int64_t m, k, kpad;
  const float *xf; /* [m, kpad], zero beyond k */
  const void *w;
  tgemm_dtype w_dtype;
  int64_t ldw;
  int rows_per_step; /* 1, 2, 4 or 8 */
  tgemm__cpu_out out;
} tgemm__cpu_skinny_args;

/* Convert x rows into xf for the AVX2 skinny kernel: for bf16 weights each
 * 16-wide step holds the even elements then the odd ones (the order in
 * which the kernel unpacks bf16 pairs); otherwise natural order. */
void tgemm__cpu_skinny_convert_x_avx2(const tgemm_matrix *x, tgemm_dtype w_dtype,
                                      int64_t kpad, float *xf);
/* Output rows [n0, n1) of W for all m. */
void tgemm__cpu_skinny_rows_avx2(const tgemm__cpu_skinny_args *a, int64_t n0,
                                 int64_t n1);

/* MXFP4 weight arguments shared by W4A16 and W4A4. */
typedef struct tgemm__cpu_mx_args {
  int64_t m, k, n_blocks;
  const uint8_t *w_packed; /* [n, ldw_packed] */
  int64_t ldw_packed;
  const uint8_t *w_scales; /* [n, ldw_scales] */
  int64_t ldw_scales;
  int rows_per_step;
  /* W4A16: x as f32, [m, n_blocks*32], per block even elements then odd
   * ones (the nibble order); zero beyond k. */
  const float *xf;
  /* W4A4: x codes as signed int8 (2 * E2M1 value), [m, n_blocks*32], the
   * same order, and the f32 value of each block scale, [m, n_blocks]. */
  const int8_t *xq;
  const float *xs;
  tgemm__cpu_out out;
} tgemm__cpu_mx_args;

void tgemm__cpu_w4a16_rows_avx2(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1);
void tgemm__cpu_w4a4_rows_avx2(const tgemm__cpu_mx_args *a, int64_t n0, int64_t n1);
/* One x row into the W4A16 layout: n_blocks*32 f32 values, each block's
 * even elements then its odd ones, zero beyond k. */
void tgemm__cpu_w4a16_x_row_avx2(const void *src, tgemm_dtype dtype, int64_t k,
                                 int64_t n_blocks, float *dst);
/* The codes of one MXFP4 row as int8 (2 * value), in the same layout. */
void tgemm__cpu_mx_codes_row_avx2(const uint8_t *packed, int64_t n_blocks, int8_t *dst);
/* One MXFP4 row of k values into f32, natural order (the blocked W4A16). */
void tgemm__cpu_mx_row_to_f32_avx2(const uint8_t *packed, const uint8_t *scales, int64_t k,
                                   float *dst);
void tgemm__cpu_mx_row_to_f32(const uint8_t *packed, const uint8_t *scales, int64_t k,
                              float *dst);
/* Rows [r0, r0 + rows) of an MXFP4 matrix into f32 [rows, ldd], threaded. */
void tgemm__cpu_mx_rows_to_f32(const tgemm_matrix *wq, int64_t r0, int64_t rows, float *dst,
                               int64_t ldd, int n_threads);

/* 2^(byte-127) as f32, exact for every byte (byte 0 is the subnormal
 * 2^-127), NaN for 0xFF. */
static inline float tgemm__cpu_e8m0(uint8_t byte) {
  if (byte == 0xFF) return tgemm__bits_f32(0x7fc00000u);
  return tgemm__bits_f32(byte ? (uint32_t)byte << 23 : 0x00400000u);
}

/* 2 * the E2M1 value of each code, an integer in [-12, 12]. */
extern const int8_t tgemm__cpu_e2m1_x2[16];

/* Route drivers; the kernel is already decoded and the operands checked. */
tgemm_status tgemm__cpu_run_reference(tgemm_ctx *ctx, const tgemm__operands *ops);
tgemm_status tgemm__cpu_run_skinny(tgemm_ctx *ctx, int rows_per_step,
                                   const tgemm__operands *ops);
tgemm_status tgemm__cpu_run_sgemm(tgemm_ctx *ctx, const tgemm__operands *ops);
tgemm_status tgemm__cpu_run_w4a16_stream(tgemm_ctx *ctx, int rows_per_step,
                                         const tgemm__operands *ops);
tgemm_status tgemm__cpu_run_w4a16_blocked(tgemm_ctx *ctx, const tgemm__operands *ops);
tgemm_status tgemm__cpu_run_w4a4(tgemm_ctx *ctx, int rows_per_step,
                                 const tgemm__operands *ops);

/* Kernel list (cpu_kernels.c). */
int tgemm__cpu_candidates(tgemm_ctx *ctx, const tgemm__shape *shape,
                          tgemm_route route, tgemm__kernel *out, int cap);
tgemm_status tgemm__cpu_default_kernel(tgemm_ctx *ctx, const tgemm__shape *shape,
                                       tgemm_route route, tgemm__kernel *out);
bool tgemm__cpu_supports(tgemm_ctx *ctx, const tgemm__shape *shape, tgemm_route route);
tgemm_status tgemm__cpu_run(tgemm_ctx *ctx, const tgemm__kernel *kernel,
                            const tgemm__shape *shape, const tgemm__operands *ops);

/* Set at init: OpenBLAS runs one thread per call (process wide), since
 * the BLAS route splits its work over OpenMP threads itself. */
void tgemm__cpu_blas_set_threads(int n_threads);
/* "openblas-0.3.21" from the loaded library. */
void tgemm__cpu_blas_version(char *out, size_t size);

/* Tests: cap the rows per chunk of the BLAS-based kernels (0 = the
 * default), so that chunking is exercised on small problems. */
void tgemm__cpu_blas_set_max_chunk_rows(int64_t rows);

/* Weight cache (cpu_blas.c): the f32 copy. */
tgemm_status tgemm__cpu_weight_prepare(tgemm_ctx *ctx, struct tgemm_weight *weight);
void tgemm__cpu_weight_release(tgemm_ctx *ctx, struct tgemm_weight *weight);

#endif
