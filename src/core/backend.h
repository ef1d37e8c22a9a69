/* The backend interface: a table of function pointers, one per backend
 * (src/cpu, src/cuda).  Private to the library. */
#ifndef TGEMM_CORE_BACKEND_H
#define TGEMM_CORE_BACKEND_H

#include <stdbool.h>
#include "tgemm.h"

struct tgemm_weight;

/* What the router and the table key on. */
typedef struct tgemm__shape {
  int64_t m, n, k;
  tgemm_dtype dtype;     /* x's dtype (bf16, f16, f32) */
  tgemm_dtype out_dtype; /* y's dtype (bf16, f32) */
  bool has_bias;
} tgemm__shape;

/* One kernel variant a backend can run: a stable name, plus parameters whose
 * meaning is the backend's own.  Parameters should not affect results beyond
 * rounding, only speed. */
#define TGEMM__KERNEL_NAME_MAX 64
#define TGEMM__KERNEL_PARAMS 8
/* The most candidates any backend lists for one route and shape (the W4A16
 * stream kernels list up to 4 splits and 2 triggers of each of their 32
 * shapes, after the built-in one: 257). */
#define TGEMM__MAX_CANDIDATES 320
typedef struct tgemm__kernel {
  tgemm_route route;
  char name[TGEMM__KERNEL_NAME_MAX];
  int32_t params[TGEMM__KERNEL_PARAMS];
  /* cuBLASLt: the raw cublasLtMatmulAlgo_t (64 bytes) when has_algo. */
  uint8_t algo[64];
  bool has_algo;
} tgemm__kernel;

/* The operands of one call, already validated by src/core/linear_check.c. */
typedef struct tgemm__operands {
  const tgemm_matrix *x;
  const struct tgemm_weight *w;
  const tgemm_matrix *bias; /* NULL when absent */
  const tgemm_matrix *y;
  /* Optional (may be NULL): where a backend that runs another kernel than
   * the one asked for names the kernel that ran; untouched otherwise.  The
   * CUDA backend does so when a tuned cuBLASLt algorithm does not fit these
   * operands (alignment, leading dimensions) and the heuristic's runs. */
  struct tgemm__kernel *ran;
} tgemm__operands;

/* The table's device key (DESIGN.md §5). */
typedef struct tgemm__device_key {
  char device[96];      /* "NVIDIA H100 80GB HBM3", "cpu:<model name>" */
  char arch[32];        /* "sm_90", "x86_64-avx2" */
  int units;            /* SMs, or CPU threads */
  char lib_version[32]; /* "cublasLt-130100", "openblas-0.3.21" */
} tgemm__device_key;

/* How a timing run empties the cache first (see flush_cache). */
typedef enum tgemm__flush_mode {
  TGEMM__FLUSH_NONE,  /* weights may stay cached between runs */
  TGEMM__FLUSH_CLEAN, /* read a large buffer: the default */
  TGEMM__FLUSH_DIRTY, /* write a large buffer (what a memset-based flush does) */
} tgemm__flush_mode;

typedef struct tgemm__backend {
  const char *name; /* "cpu", "cuda" */
  tgemm_backend_kind kind;
  tgemm_location location;

  /* Create the backend state for ctx; TGEMM_NO_DEVICE (with a message set
   * on ctx) when the device or library is missing. */
  tgemm_status (*init)(tgemm_ctx *ctx, void **state);
  void (*shutdown)(tgemm_ctx *ctx, void *state);
  void (*device_key)(tgemm_ctx *ctx, tgemm__device_key *key);

  /* Can this backend run `route` for `shape` at all? (pure) */
  bool (*supports)(tgemm_ctx *ctx, const tgemm__shape *shape,
                   tgemm_route route);
  /* Kernel variants for route and shape, for the tuner and tests; returns
   * how many were written (at most cap), or a negative status.  Callers
   * that want them all pass TGEMM__MAX_CANDIDATES. */
  int (*candidates)(tgemm_ctx *ctx, const tgemm__shape *shape,
                    tgemm_route route, tgemm__kernel *out, int cap);
  /* The backend's built-in choice within a route (the library's own
   * heuristic for TGEMM_ROUTE_LIBRARY). */
  tgemm_status (*default_kernel)(tgemm_ctx *ctx, const tgemm__shape *shape,
                                 tgemm_route route, tgemm__kernel *out);
  /* Make sure a table's kernel is usable (cublasLtMatmulAlgoCheck); NULL
   * means every candidate-named kernel is. (optional) */
  tgemm_status (*validate_kernel)(tgemm_ctx *ctx, const tgemm__shape *shape,
                                  const tgemm__kernel *kernel);
  tgemm_status (*run)(tgemm_ctx *ctx, const tgemm__kernel *kernel,
                      const tgemm__shape *shape, const tgemm__operands *ops);

  /* Build the backend's derived forms of a weight (MXFP4 arrays, caches),
   * and release them. */
  tgemm_status (*weight_prepare)(tgemm_ctx *ctx, struct tgemm_weight *weight);
  void (*weight_release)(tgemm_ctx *ctx, struct tgemm_weight *weight);

  tgemm_status (*quantize)(tgemm_ctx *ctx, const tgemm_matrix *src,
                           const tgemm_matrix *dst, tgemm_scale_mode mode);
  tgemm_status (*dequantize)(tgemm_ctx *ctx, const tgemm_matrix *src,
                             const tgemm_matrix *dst);

  tgemm_status (*alloc)(tgemm_ctx *ctx, size_t bytes, void **ptr);
  void (*free)(tgemm_ctx *ctx, void *ptr);
  tgemm_status (*copy)(tgemm_ctx *ctx, void *dst, const void *src,
                       size_t bytes, tgemm_copy_kind kind);
  tgemm_status (*synchronize)(tgemm_ctx *ctx);
  tgemm_status (*set_stream)(tgemm_ctx *ctx, void *stream); /* (optional) */

  /* Timing for the tuner and bench: device events on CUDA, a monotonic
   * clock on CPU.  timer_stop waits for the work and gives microseconds. */
  tgemm_status (*timer_start)(tgemm_ctx *ctx);
  tgemm_status (*timer_stop)(tgemm_ctx *ctx, double *elapsed_us);
  /* Evict the last-level cache, so that the next run reads from memory.
   * TGEMM__FLUSH_CLEAN leaves it holding clean lines of another buffer (by
   * reading one), TGEMM__FLUSH_DIRTY dirty ones (by writing one): those the
   * next run must write back to memory as it evicts them. */
  tgemm_status (*flush_cache)(tgemm_ctx *ctx, tgemm__flush_mode mode);
  /* Back-to-back replay, as a served model's decode graph runs its layers
   * (optional; NULL where the backend has none): the runs issued between
   * graph_begin and graph_end are recorded, not executed, into a graph
   * that graph_launch replays on the context's stream.  graph_end always
   * ends the recording, also when it fails. */
  tgemm_status (*graph_begin)(tgemm_ctx *ctx);
  tgemm_status (*graph_end)(tgemm_ctx *ctx, void **graph);
  tgemm_status (*graph_launch)(tgemm_ctx *ctx, void *graph);
  void (*graph_free)(tgemm_ctx *ctx, void *graph);
} tgemm__backend;

/* The built-in backends.  tgemm__cuda_backend is NULL when built without
 * CUDA (see src/core/backend_registry.c). */
extern const tgemm__backend tgemm__cpu_backend;
const tgemm__backend *tgemm__cuda_backend_get(void);

#endif
