/* tgemm: the linear layers of LLM inference, y = x·Wᵀ + b, routed per shape
 * to the fastest measured kernel.  C11, usable from C and C++.
 *
 * Conventions
 * - Every fallible call returns a tgemm_status; 0 is success, errors are
 *   negative.  tgemm_ctx_last_error(ctx) gives the details of the last error.
 * - x is [M, K], W is [N, K] (nn.Linear layout), y is [M, N], bias is [N].
 *   All matrices are row-major with a leading dimension (row stride).
 * - A context and the weights made on it are used by one thread at a time
 *   (its error message and stream are per context); use a context per
 *   thread for concurrent calls.
 * - A context owns one backend (CPU or CUDA).  Matrices passed to a context
 *   live in that backend's memory: host memory for CPU, device memory for
 *   CUDA.  tgemm_malloc/tgemm_memcpy move data for either.
 */
#ifndef TGEMM_H
#define TGEMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(TGEMM_BUILDING_SHARED)
#define TGEMM_API __declspec(dllexport)
#elif defined(__GNUC__)
#define TGEMM_API __attribute__((visibility("default")))
#else
#define TGEMM_API
#endif

#define TGEMM_VERSION_MAJOR 0
#define TGEMM_VERSION_MINOR 1
#define TGEMM_VERSION_PATCH 0
#define TGEMM_VERSION_HEX \
  ((TGEMM_VERSION_MAJOR << 16) | (TGEMM_VERSION_MINOR << 8) | TGEMM_VERSION_PATCH)

/* ------------------------------------------------------------------ status */

/* X(name, value, message): one map makes the enum and its strings. */
#define TGEMM_STATUS_MAP(X)                                                    \
  X(OK, 0, "success")                                                          \
  X(INVALID_ARGUMENT, -1, "invalid argument")                                  \
  X(NULL_POINTER, -2, "NULL pointer")                                          \
  X(SHAPE_MISMATCH, -3, "shapes do not match")                                 \
  X(OVERFLOW, -4, "size overflows")                                            \
  X(UNSUPPORTED, -5, "not supported by this backend or build")                 \
  X(OUT_OF_MEMORY, -6, "out of memory")                                        \
  X(NO_DEVICE, -7, "no usable GPU, driver or GPU library")                     \
  X(BACKEND_ERROR, -8, "backend library call failed")                          \
  X(IO_ERROR, -9, "I/O error")                                                 \
  X(FORMAT_ERROR, -10, "malformed file or data")                               \
  X(NOT_FOUND, -11, "not found")                                               \
  X(NUMERIC_ERROR, -12, "non-finite value where a finite one is required")     \
  X(INTERRUPTED, -13, "interrupted")

typedef enum tgemm_status {
#define TGEMM__STATUS_ENUM(name, value, msg) TGEMM_##name = value,
  TGEMM_STATUS_MAP(TGEMM__STATUS_ENUM)
#undef TGEMM__STATUS_ENUM
} tgemm_status;

/* "TGEMM_SHAPE_MISMATCH" and "shapes do not match"; never NULL. */
TGEMM_API const char *tgemm_status_name(tgemm_status status);
TGEMM_API const char *tgemm_status_str(tgemm_status status);

/* ----------------------------------------------------------------- version */

TGEMM_API unsigned tgemm_version(void); /* TGEMM_VERSION_HEX of the library */
TGEMM_API const char *tgemm_version_string(void);

/* ------------------------------------------------------------------- types */

typedef enum tgemm_dtype {
  TGEMM_F32 = 0,
  TGEMM_F16 = 1,
  TGEMM_BF16 = 2,
  TGEMM_MXFP4 = 3, /* packed E2M1 pairs + one E8M0 scale per 32 values */
} tgemm_dtype;

typedef enum tgemm_location {
  TGEMM_HOST = 0,
  TGEMM_DEVICE = 1,
} tgemm_location;

/* Shared-exponent rule of the MXFP4 quantizer (DESIGN.md §3). */
typedef enum tgemm_scale_mode {
  TGEMM_SCALE_EVEN = 0, /* default: AITER/Quark dynamic_mxfp4_quant */
  TGEMM_SCALE_FLOOR = 1, /* OCP MX v1.0 */
  TGEMM_SCALE_RCEIL = 2,
} tgemm_scale_mode;

typedef enum tgemm_route {
  TGEMM_ROUTE_AUTO = 0, /* router decides */
  TGEMM_ROUTE_REFERENCE = 1, /* plain loops, always available */
  TGEMM_ROUTE_SKINNY = 2, /* decode kernel for small M */
  TGEMM_ROUTE_LIBRARY = 3, /* BLAS / cuBLASLt */
  TGEMM_ROUTE_W4A16 = 4, /* MXFP4 weights x 16-bit activations */
  TGEMM_ROUTE_W4A4 = 5, /* MXFP4 weights x activations quantized per call */
  TGEMM_ROUTE_COUNT
} tgemm_route;

typedef enum tgemm_backend_kind {
  TGEMM_BACKEND_AUTO = 0, /* CUDA when usable, else CPU with one warning */
  TGEMM_BACKEND_CPU = 1,
  TGEMM_BACKEND_CUDA = 2,
} tgemm_backend_kind;

TGEMM_API const char *tgemm_dtype_name(tgemm_dtype dtype);
TGEMM_API const char *tgemm_route_name(tgemm_route route);
TGEMM_API const char *tgemm_scale_mode_name(tgemm_scale_mode mode);
/* Parse "bf16", "w4a16", "even", ...; TGEMM_INVALID_ARGUMENT if unknown. */
TGEMM_API tgemm_status tgemm_dtype_parse(const char *text, tgemm_dtype *out);
TGEMM_API tgemm_status tgemm_route_parse(const char *text, tgemm_route *out);
TGEMM_API tgemm_status tgemm_scale_mode_parse(const char *text,
                                              tgemm_scale_mode *out);
/* Bytes of one element, 0 for MXFP4. */
TGEMM_API size_t tgemm_dtype_size(tgemm_dtype dtype);

/* ------------------------------------------------------------------ matrix */

/* A row-major matrix view.  Dense: ld is in elements (>= cols).
 * MXFP4: data holds packed bytes [rows, ceil(cols/32)*16] with ld in bytes,
 * scales holds E8M0 bytes [rows, ceil(cols/32)] with scales_ld in bytes. */
typedef struct tgemm_matrix {
  void *data;
  void *scales; /* MXFP4 only, else NULL */
  tgemm_dtype dtype;
  tgemm_location location;
  int64_t rows;
  int64_t cols;
  int64_t ld;
  int64_t scales_ld; /* MXFP4 only */
} tgemm_matrix;

/* Contiguous views (ld = cols, or the packed row width for MXFP4). */
TGEMM_API tgemm_matrix tgemm_matrix_dense(void *data, tgemm_dtype dtype,
                                          int64_t rows, int64_t cols,
                                          tgemm_location location);
TGEMM_API tgemm_matrix tgemm_matrix_mxfp4(void *packed, void *scales,
                                          int64_t rows, int64_t cols,
                                          tgemm_location location);
/* ceil(cols/32)*16 and ceil(cols/32). */
TGEMM_API int64_t tgemm_mxfp4_packed_cols(int64_t cols);
TGEMM_API int64_t tgemm_mxfp4_scale_cols(int64_t cols);

/* ----------------------------------------------------------------- context */

typedef struct tgemm_ctx tgemm_ctx;

typedef struct tgemm_ctx_options {
  tgemm_backend_kind backend;
  int device_index; /* CUDA device ordinal */
  int n_threads; /* CPU threads; 0 = all cores */
  /* Tuned routing: -1 = from TGEMM_TUNED (default on), 0 = off, 1 = on. */
  int tuned;
  /* ':'-separated table paths; NULL = from TGEMM_CONFIG. */
  const char *config_paths;
  /* File that records shapes missing from the table; NULL = from
   * TGEMM_LOG_UNTUNED (unset = no log). */
  const char *untuned_log;
  /* Largest relative error (‖y-ref‖/‖ref‖) an automatically chosen route may
   * have.  MXFP4 routes are candidates only when their measured error fits;
   * 0 (default) keeps them out of automatic routing. */
  double error_budget;
  /* MXFP4 scale rule of weights made without options; W4A4 quantizes a
   * call's activations with its weight's rule. */
  tgemm_scale_mode scale_mode;
  /* Bytes of device scratch allocated once at creation (0 = default). */
  size_t workspace_bytes;
} tgemm_ctx_options;

TGEMM_API void tgemm_ctx_options_default(tgemm_ctx_options *options);
/* options may be NULL (defaults).  On failure *ctx is NULL; when it is not
 * NULL on a failed create, the error details are also printed by the caller
 * through tgemm_ctx_create_error(). */
TGEMM_API tgemm_status tgemm_ctx_create(const tgemm_ctx_options *options,
                                        tgemm_ctx **ctx);
/* Details of the last failed tgemm_ctx_create on this thread. */
TGEMM_API const char *tgemm_ctx_create_error(void);
TGEMM_API void tgemm_ctx_free(tgemm_ctx *ctx);
/* The message of the most recent failed call on ctx ("" before any); a
 * successful call leaves it as it was.  Never NULL. */
TGEMM_API const char *tgemm_ctx_last_error(const tgemm_ctx *ctx);
TGEMM_API tgemm_backend_kind tgemm_ctx_backend(const tgemm_ctx *ctx);
TGEMM_API const char *tgemm_ctx_backend_name(const tgemm_ctx *ctx);
/* A device description, e.g. "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)". */
TGEMM_API const char *tgemm_ctx_device_name(const tgemm_ctx *ctx);
/* CUDA: a cudaStream_t; all work of the context goes there. */
TGEMM_API tgemm_status tgemm_ctx_set_stream(tgemm_ctx *ctx, void *stream);

/* Memory of the context's backend (host memory for CPU). */
typedef enum tgemm_copy_kind {
  TGEMM_COPY_HOST_TO_DEVICE = 0,
  TGEMM_COPY_DEVICE_TO_HOST = 1,
  TGEMM_COPY_DEVICE_TO_DEVICE = 2,
} tgemm_copy_kind;
TGEMM_API tgemm_status tgemm_malloc(tgemm_ctx *ctx, size_t bytes, void **ptr);
TGEMM_API void tgemm_free(tgemm_ctx *ctx, void *ptr);
TGEMM_API tgemm_status tgemm_memcpy(tgemm_ctx *ctx, void *dst,
                                    const void *src, size_t bytes,
                                    tgemm_copy_kind kind);
TGEMM_API tgemm_status tgemm_synchronize(tgemm_ctx *ctx);
/* The location of memory from tgemm_malloc: TGEMM_DEVICE on CUDA. */
TGEMM_API tgemm_location tgemm_ctx_location(const tgemm_ctx *ctx);

/* ----------------------------------------------------------------- weights */

typedef struct tgemm_weight tgemm_weight;

enum {
  /* Also hold the MXFP4 form (quantized once, here), for W4A16/W4A4. */
  TGEMM_WEIGHT_MXFP4 = 1u << 0,
};

typedef struct tgemm_weight_options {
  unsigned flags;
  tgemm_scale_mode scale_mode;
} tgemm_weight_options;

/* A weight prepared once at load.  w is dense (bf16/f16/f32) or MXFP4.
 * Dense data is borrowed, not copied: it must outlive the handle, and so
 * must an MXFP4 w.  Derived forms (MXFP4, backend caches) are owned by the
 * handle.  options may be NULL (dense only).  Speed on the GPU: the fast
 * MXFP4 decode kernels need 16-byte aligned packed rows (data and ld) and
 * 4-byte aligned scale rows (scales and scales_ld), with x in 16-byte
 * aligned rows; otherwise slower element-load kernels are used.  The MXFP4
 * form made here always qualifies (its scale rows are padded to 16 bytes). */
TGEMM_API tgemm_status tgemm_weight_create(tgemm_ctx *ctx,
                                           const tgemm_matrix *w,
                                           const tgemm_weight_options *options,
                                           tgemm_weight **weight);
TGEMM_API void tgemm_weight_free(tgemm_weight *weight);
/* N, K and whether the MXFP4 form is present. */
TGEMM_API int64_t tgemm_weight_rows(const tgemm_weight *weight);
TGEMM_API int64_t tgemm_weight_cols(const tgemm_weight *weight);
TGEMM_API int tgemm_weight_has_mxfp4(const tgemm_weight *weight);

/* ------------------------------------------------------------------ linear */

typedef struct tgemm_linear_options {
  tgemm_route route; /* TGEMM_ROUTE_AUTO lets the router choose */
  const char *kernel; /* optional kernel name within the route */
  double error_budget; /* < 0: the context's */
} tgemm_linear_options;

typedef struct tgemm_linear_info {
  tgemm_route route;
  char kernel[64];
  /* How the route was chosen: "forced", "table", "default", "reference";
   * "fallback" when the chosen kernel (a tuned cuBLASLt algorithm) does not
   * fit these operands, e.g. their alignment, and `kernel` names the
   * library heuristic's choice that ran instead. */
  char reason[16];
} tgemm_linear_info;

TGEMM_API void tgemm_linear_options_default(tgemm_linear_options *options);

/* y[M,N] = x[M,K]·Wᵀ (+ bias[N]).  x: bf16/f16/f32 matching the weight's
 * dense dtype (any of them for an MXFP4-only weight); y: bf16 or f32;
 * bias (may be NULL): same dtype as y, or f32.  options and info may be
 * NULL.  On CUDA the call is asynchronous on the context's stream, allocates
 * nothing and never synchronizes (safe inside graph capture). */
TGEMM_API tgemm_status tgemm_linear(tgemm_ctx *ctx, const tgemm_matrix *x,
                                    const tgemm_weight *weight,
                                    const tgemm_matrix *bias,
                                    const tgemm_matrix *y,
                                    const tgemm_linear_options *options,
                                    tgemm_linear_info *info);

/* ------------------------------------------------------------------- MXFP4 */

/* Quantize a dense [rows, cols] matrix into an MXFP4 one of the same shape,
 * both in the context's memory. */
TGEMM_API tgemm_status tgemm_mxfp4_quantize(tgemm_ctx *ctx,
                                            const tgemm_matrix *src,
                                            const tgemm_matrix *dst,
                                            tgemm_scale_mode mode);
/* Dequantize MXFP4 into f32, f16 or bf16. */
TGEMM_API tgemm_status tgemm_mxfp4_dequantize(tgemm_ctx *ctx,
                                              const tgemm_matrix *src,
                                              const tgemm_matrix *dst);

/* Reference quantizer for one row of n f32 values (host memory): writes
 * ceil(n/32)*16 packed bytes and ceil(n/32) scale bytes.  The truth every
 * other quantizer is tested against. */
TGEMM_API void tgemm_mxfp4_quantize_row_ref(const float *src, int64_t n,
                                            uint8_t *packed, uint8_t *scales,
                                            tgemm_scale_mode mode);
TGEMM_API void tgemm_mxfp4_dequantize_row_ref(const uint8_t *packed,
                                              const uint8_t *scales, int64_t n,
                                              float *dst);

/* ----------------------------------------------------------- conversions */

TGEMM_API float tgemm_bf16_to_f32(uint16_t v);
TGEMM_API uint16_t tgemm_f32_to_bf16(float v); /* round to nearest even */
TGEMM_API float tgemm_f16_to_f32(uint16_t v);
TGEMM_API uint16_t tgemm_f32_to_f16(float v); /* round to nearest even */

#ifdef __cplusplus
}
#endif

#endif /* TGEMM_H */
