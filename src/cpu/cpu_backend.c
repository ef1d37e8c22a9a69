/* The CPU backend: its vtable, state (threads, scratch, timer, cache
 * flush buffer), memory, and whole-matrix MXFP4 conversion.  Kernels live
 * in the other files of src/cpu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cpu_features.h"
#include "cpu/cpu_internal.h"
#include "mxfp4/mxfp4.h"

/* The flush buffer: twice the last-level cache, and at least 64 MiB in
 * case the size cannot be read. */
static size_t flush_bytes(void) {
  long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  size_t bytes = (size_t)64 << 20;
  if (l3 > 0 && 2 * (size_t)l3 > bytes) bytes = 2 * (size_t)l3;
  return bytes;
}

void *tgemm__cpu_aligned_alloc(size_t bytes) {
  void *p = NULL;
  size_t rounded = (bytes + 63) & ~(size_t)63;
  if (rounded < bytes) return NULL; /* overflow */
  if (rounded == 0) rounded = 64;
  if (posix_memalign(&p, 64, rounded) != 0) return NULL;
  return p;
}

void tgemm__cpu_aligned_free(void *ptr) { free(ptr); }

tgemm_status tgemm__cpu_scratch_acquire(tgemm_ctx *ctx, size_t bytes,
                                        tgemm__cpu_buffer *buf) {
  tgemm__cpu_state *st = (tgemm__cpu_state *)ctx->backend_state;
  buf->ptr = NULL;
  buf->owned = false;
  buf->from = NULL;
  if (bytes == 0) bytes = 64;
  if (st && pthread_mutex_trylock(&st->scratch.lock) == 0) {
    if (st->scratch.bytes < bytes) {
      tgemm__cpu_aligned_free(st->scratch.ptr);
      st->scratch.ptr = tgemm__cpu_aligned_alloc(bytes);
      st->scratch.bytes = st->scratch.ptr ? bytes : 0;
    }
    if (st->scratch.ptr) {
      buf->ptr = st->scratch.ptr;
      buf->from = &st->scratch;
      return TGEMM_OK;
    }
    pthread_mutex_unlock(&st->scratch.lock);
  } else {
    /* Another call on this context holds the scratch: use our own. */
    buf->ptr = tgemm__cpu_aligned_alloc(bytes);
    buf->owned = buf->ptr != NULL;
  }
  if (!buf->ptr)
    return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY,
                            "cpu backend: cannot allocate %zu bytes of scratch", bytes);
  return TGEMM_OK;
}

void tgemm__cpu_scratch_release(tgemm__cpu_buffer *buf) {
  if (buf->owned) tgemm__cpu_aligned_free(buf->ptr);
  else if (buf->from) pthread_mutex_unlock(&buf->from->lock);
  buf->ptr = NULL;
  buf->owned = false;
  buf->from = NULL;
}

/* ---------------------------------------------------------- lifecycle */

static tgemm_status cpu_init(tgemm_ctx *ctx, void **state) {
  *state = NULL;
  tgemm__cpu_state *st = calloc(1, sizeof *st);
  if (!st)
    return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "cpu backend init: out of memory");
  if (pthread_mutex_init(&st->scratch.lock, NULL) != 0) {
    free(st);
    return tgemm__set_error(ctx, TGEMM_BACKEND_ERROR, "cpu backend init: pthread_mutex_init failed");
  }
  int cores = tgemm__cpu_features()->n_cores;
  st->n_threads = ctx->options.n_threads > 0 ? ctx->options.n_threads : cores;
  if (st->n_threads < 1) st->n_threads = 1;
  /* Our parallel loops pass num_threads explicitly rather than touching
   * the OpenMP default; OpenBLAS is set to one thread per call (process
   * wide) because the BLAS route runs it inside those loops. */
  tgemm__cpu_blas_set_threads(st->n_threads);
  *state = st;
  return TGEMM_OK;
}

static void cpu_shutdown(tgemm_ctx *ctx, void *state) {
  tgemm__cpu_state *st = (tgemm__cpu_state *)state;
  if (!st) return;
  tgemm__cpu_aligned_free(st->scratch.ptr);
  pthread_mutex_destroy(&st->scratch.lock);
  tgemm__cpu_aligned_free(st->flush_buf);
  free(st);
}

static void cpu_device_key(tgemm_ctx *ctx, tgemm__device_key *key) {
  const struct tgemm__cpu_features *f = tgemm__cpu_features();
  memset(key, 0, sizeof *key);
  snprintf(key->device, sizeof key->device, "cpu:%.91s", f->model);
  snprintf(key->arch, sizeof key->arch, "%s", f->avx2 && f->fma ? "x86_64-avx2" : "x86_64");
  key->units = tgemm__cpu_threads(ctx);
  tgemm__cpu_blas_version(key->lib_version, sizeof key->lib_version);
}

/* ------------------------------------------------------------ memory */

static tgemm_status cpu_alloc(tgemm_ctx *ctx, size_t bytes, void **ptr) {
  *ptr = tgemm__cpu_aligned_alloc(bytes);
  if (!*ptr)
    return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "cpu alloc: cannot allocate %zu bytes", bytes);
  return TGEMM_OK;
}

static void cpu_free(tgemm_ctx *ctx, void *ptr) { tgemm__cpu_aligned_free(ptr); }

/* Host memory everywhere, so every copy kind is a plain copy; memmove also
 * tolerates overlap. */
static tgemm_status cpu_copy(tgemm_ctx *ctx, void *dst, const void *src, size_t bytes,
                             tgemm_copy_kind kind) {
  if (bytes) memmove(dst, src, bytes);
  return TGEMM_OK;
}

static tgemm_status cpu_synchronize(tgemm_ctx *ctx) { return TGEMM_OK; }

/* ------------------------------------------------------------- timing */

static tgemm_status cpu_timer_start(tgemm_ctx *ctx) {
  tgemm__cpu_state *st = (tgemm__cpu_state *)ctx->backend_state;
  clock_gettime(CLOCK_MONOTONIC, &st->timer_start);
  st->timer_running = true;
  return TGEMM_OK;
}

static tgemm_status cpu_timer_stop(tgemm_ctx *ctx, double *elapsed_us) {
  tgemm__cpu_state *st = (tgemm__cpu_state *)ctx->backend_state;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (!st->timer_running)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "cpu timer_stop: timer_start was not called");
  st->timer_running = false;
  *elapsed_us = (double)(now.tv_sec - st->timer_start.tv_sec) * 1e6 +
                (double)(now.tv_nsec - st->timer_start.tv_nsec) * 1e-3;
  return TGEMM_OK;
}

/* Stream over a buffer larger than the caches, so that what the next run
 * touches comes from memory: reading it leaves clean lines, adding to it
 * dirty ones (see tgemm__flush_mode). */
static tgemm_status cpu_flush_cache(tgemm_ctx *ctx, tgemm__flush_mode mode) {
  tgemm__cpu_state *st = (tgemm__cpu_state *)ctx->backend_state;
  if (mode == TGEMM__FLUSH_NONE) return TGEMM_OK;
  if (!st->flush_buf) {
    size_t bytes = flush_bytes();
    st->flush_buf = tgemm__cpu_aligned_alloc(bytes);
    if (!st->flush_buf)
      return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY,
                              "cpu flush_cache: cannot allocate %zu bytes", bytes);
    st->flush_bytes = bytes;
    memset(st->flush_buf, 0, st->flush_bytes);
  }
  uint64_t *p = (uint64_t *)st->flush_buf;
  int64_t words = (int64_t)(st->flush_bytes / sizeof *p);
  if (mode == TGEMM__FLUSH_DIRTY) {
#pragma omp parallel for num_threads(st->n_threads) schedule(static)
    for (int64_t i = 0; i < words; i++) p[i] += 1;
    return TGEMM_OK;
  }
  uint64_t acc = 0;
#pragma omp parallel for num_threads(st->n_threads) schedule(static) reduction(^ : acc)
  for (int64_t i = 0; i < words; i++) acc ^= p[i];
  st->flush_sink = acc; /* keeps the reads */
  return TGEMM_OK;
}

/* -------------------------------------------------------------- MXFP4 */

static bool dense_dtype(tgemm_dtype d) {
  return d == TGEMM_F32 || d == TGEMM_F16 || d == TGEMM_BF16;
}

static tgemm_status cpu_quantize(tgemm_ctx *ctx, const tgemm_matrix *src,
                                 const tgemm_matrix *dst, tgemm_scale_mode mode) {
  if (!dense_dtype(src->dtype) || dst->dtype != TGEMM_MXFP4 || !dst->scales)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "cpu quantize: needs a dense source and an MXFP4 destination "
                            "with scales (got %s -> %s)",
                            tgemm_dtype_name(src->dtype), tgemm_dtype_name(dst->dtype));
  if (src->rows != dst->rows || src->cols != dst->cols)
    return tgemm__set_error(ctx, TGEMM_SHAPE_MISMATCH, "cpu quantize: %lld x %lld vs %lld x %lld",
                            (long long)src->rows, (long long)src->cols, (long long)dst->rows,
                            (long long)dst->cols);
  tgemm__mxfp4_quantize_rows(src->data, src->dtype, src->rows, src->cols, src->ld,
                             (uint8_t *)dst->data, dst->ld, (uint8_t *)dst->scales,
                             dst->scales_ld, mode);
  return TGEMM_OK;
}

static tgemm_status cpu_dequantize(tgemm_ctx *ctx, const tgemm_matrix *src,
                                   const tgemm_matrix *dst) {
  if (src->dtype != TGEMM_MXFP4 || !src->scales || !dense_dtype(dst->dtype))
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "cpu dequantize: needs an MXFP4 source with scales and a dense "
                            "destination (got %s -> %s)",
                            tgemm_dtype_name(src->dtype), tgemm_dtype_name(dst->dtype));
  if (src->rows != dst->rows || src->cols != dst->cols)
    return tgemm__set_error(ctx, TGEMM_SHAPE_MISMATCH, "cpu dequantize: %lld x %lld vs %lld x %lld",
                            (long long)src->rows, (long long)src->cols, (long long)dst->rows,
                            (long long)dst->cols);
  tgemm__mxfp4_dequantize_rows((const uint8_t *)src->data, src->ld,
                               (const uint8_t *)src->scales, src->scales_ld, src->rows,
                               src->cols, dst->data, dst->dtype, dst->ld);
  return TGEMM_OK;
}

const tgemm__backend tgemm__cpu_backend = {
    .name = "cpu",
    .kind = TGEMM_BACKEND_CPU,
    .location = TGEMM_HOST,
    .init = cpu_init,
    .shutdown = cpu_shutdown,
    .device_key = cpu_device_key,
    .supports = tgemm__cpu_supports,
    .candidates = tgemm__cpu_candidates,
    .default_kernel = tgemm__cpu_default_kernel,
    .validate_kernel = NULL,
    .run = tgemm__cpu_run,
    .weight_prepare = tgemm__cpu_weight_prepare,
    .weight_release = tgemm__cpu_weight_release,
    .quantize = cpu_quantize,
    .dequantize = cpu_dequantize,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .set_stream = NULL,
    .timer_start = cpu_timer_start,
    .timer_stop = cpu_timer_stop,
    .flush_cache = cpu_flush_cache,
};
