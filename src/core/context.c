/* The context: options (with the three environment variables resolved),
 * backend choice with its fallback, the tuned table, and memory helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "route/route_cache.h"
#include "route/table.h"

static _Thread_local char create_error[TGEMM__ERROR_MAX];

const char *tgemm_ctx_create_error(void) { return create_error; }

void tgemm_ctx_options_default(tgemm_ctx_options *options) {
  if (!options) return;
  memset(options, 0, sizeof *options);
  options->backend = TGEMM_BACKEND_AUTO;
  options->tuned = -1;
  options->scale_mode = TGEMM_SCALE_EVEN;
}

static char *dup_or_null(const char *s) {
  return (s && *s) ? strdup(s) : NULL;
}

/* TGEMM_TUNED: "0" turns tuned routing off, "1" (or unset) on. */
static bool tuned_from_env(void) {
  const char *v = getenv("TGEMM_TUNED");
  if (!v || !*v || strcmp(v, "1") == 0) return true;
  if (strcmp(v, "0") == 0) return false;
  tgemm__warn_once("TGEMM_TUNED", "TGEMM_TUNED=%s is neither 0 nor 1; tuned routing stays on", v);
  return true;
}

static tgemm_status check_options(const tgemm_ctx_options *o) {
  if ((unsigned)o->backend > TGEMM_BACKEND_CUDA) return TGEMM_INVALID_ARGUMENT;
  if ((unsigned)o->scale_mode > TGEMM_SCALE_RCEIL) return TGEMM_INVALID_ARGUMENT;
  if (o->n_threads < 0 || o->device_index < 0) return TGEMM_INVALID_ARGUMENT;
  if (!(o->error_budget >= 0)) return TGEMM_INVALID_ARGUMENT; /* NaN too */
  if (o->tuned < -1 || o->tuned > 1) return TGEMM_INVALID_ARGUMENT;
  return TGEMM_OK;
}

static tgemm_status start_backend(tgemm_ctx *ctx, const tgemm__backend *backend) {
  ctx->backend = backend;
  tgemm_status st = backend->init(ctx, &ctx->backend_state);
  if (st != TGEMM_OK) {
    ctx->backend = NULL;
    ctx->backend_state = NULL;
  }
  return st;
}

/* CUDA when asked or when AUTO finds it usable; AUTO falls back to the CPU
 * with one warning rather than failing. */
static tgemm_status choose_backend(tgemm_ctx *ctx) {
  const tgemm__backend *cuda = tgemm__cuda_backend_get();
  switch (ctx->options.backend) {
    case TGEMM_BACKEND_CPU:
      return start_backend(ctx, &tgemm__cpu_backend);
    case TGEMM_BACKEND_CUDA:
      if (!cuda)
        return tgemm__set_error(ctx, TGEMM_UNSUPPORTED,
                                "the CUDA backend was not built (configure with -DTGEMM_CUDA=ON)");
      return start_backend(ctx, cuda);
    case TGEMM_BACKEND_AUTO:
    default:
      if (cuda) {
        if (start_backend(ctx, cuda) == TGEMM_OK) return TGEMM_OK;
        tgemm__warn_once("cuda-fallback", "CUDA backend unavailable (%s); using the CPU backend",
                         ctx->last_error);
        tgemm__clear_error(ctx);
      }
      return start_backend(ctx, &tgemm__cpu_backend);
  }
}

tgemm_status tgemm_ctx_create(const tgemm_ctx_options *options, tgemm_ctx **out) {
  create_error[0] = '\0';
  if (!out) {
    snprintf(create_error, sizeof create_error, "tgemm_ctx_create: ctx output pointer is NULL");
    return TGEMM_NULL_POINTER;
  }
  *out = NULL;
  tgemm_ctx_options defaults;
  tgemm_ctx_options_default(&defaults);
  if (!options) options = &defaults;
  if (check_options(options) != TGEMM_OK) {
    snprintf(create_error, sizeof create_error,
             "tgemm_ctx_create: invalid options (backend %d, scale mode %d, threads %d, "
             "device %d, error budget %g, tuned %d)",
             (int)options->backend, (int)options->scale_mode, options->n_threads,
             options->device_index, options->error_budget, options->tuned);
    return TGEMM_INVALID_ARGUMENT;
  }
  tgemm_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    snprintf(create_error, sizeof create_error, "tgemm_ctx_create: out of memory");
    return TGEMM_OUT_OF_MEMORY;
  }
  ctx->options = *options;
  ctx->tuned = options->tuned < 0 ? tuned_from_env() : options->tuned == 1;
  ctx->config_paths = dup_or_null(options->config_paths ? options->config_paths
                                                        : getenv("TGEMM_CONFIG"));
  ctx->untuned_log = dup_or_null(options->untuned_log ? options->untuned_log
                                                      : getenv("TGEMM_LOG_UNTUNED"));
  ctx->options.config_paths = ctx->config_paths;
  ctx->options.untuned_log = ctx->untuned_log;

  tgemm_status st = choose_backend(ctx);
  if (st == TGEMM_OK) {
    ctx->backend->device_key(ctx, &ctx->device_key);
    snprintf(ctx->device_name, sizeof ctx->device_name, "%s (%s, %d %s)",
             ctx->device_key.device, ctx->device_key.arch, ctx->device_key.units,
             ctx->backend->kind == TGEMM_BACKEND_CUDA ? "SMs" : "threads");
    st = tgemm__table_create_for_ctx(ctx);
  }
  if (st == TGEMM_OK && !(ctx->route_cache = tgemm__route_cache_new()))
    st = tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tgemm_ctx_create: out of memory");
  if (st != TGEMM_OK) {
    snprintf(create_error, sizeof create_error, "%s", ctx->last_error);
    tgemm_ctx_free(ctx);
    return st;
  }
  *out = ctx;
  return TGEMM_OK;
}

void tgemm_ctx_free(tgemm_ctx *ctx) {
  if (!ctx) return;
  tgemm__route_cache_free(ctx->route_cache);
  if (ctx->table) tgemm__table_free(ctx->table);
  if (ctx->backend) ctx->backend->shutdown(ctx, ctx->backend_state);
  free(ctx->config_paths);
  free(ctx->untuned_log);
  free(ctx);
}

tgemm_backend_kind tgemm_ctx_backend(const tgemm_ctx *ctx) {
  return ctx && ctx->backend ? ctx->backend->kind : TGEMM_BACKEND_AUTO;
}

const char *tgemm_ctx_backend_name(const tgemm_ctx *ctx) {
  return ctx && ctx->backend ? ctx->backend->name : "none";
}

const char *tgemm_ctx_device_name(const tgemm_ctx *ctx) {
  return ctx ? ctx->device_name : "";
}

tgemm_location tgemm_ctx_location(const tgemm_ctx *ctx) {
  return ctx && ctx->backend ? ctx->backend->location : TGEMM_HOST;
}

tgemm_status tgemm_ctx_set_stream(tgemm_ctx *ctx, void *stream) {
  if (!ctx) return TGEMM_NULL_POINTER;
  if (!ctx->backend->set_stream)
    return tgemm__set_error(ctx, TGEMM_UNSUPPORTED, "tgemm_ctx_set_stream: the %s backend has no streams",
                            ctx->backend->name);
  return ctx->backend->set_stream(ctx, stream);
}

tgemm_status tgemm_malloc(tgemm_ctx *ctx, size_t bytes, void **ptr) {
  if (!ctx || !ptr) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm_malloc: NULL argument");
  *ptr = NULL;
  if (bytes == 0) return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tgemm_malloc: 0 bytes");
  return ctx->backend->alloc(ctx, bytes, ptr);
}

void tgemm_free(tgemm_ctx *ctx, void *ptr) {
  if (ctx && ptr) ctx->backend->free(ctx, ptr);
}

tgemm_status tgemm_memcpy(tgemm_ctx *ctx, void *dst, const void *src, size_t bytes,
                          tgemm_copy_kind kind) {
  if (!ctx) return TGEMM_NULL_POINTER;
  if (!dst || !src) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm_memcpy: NULL pointer");
  if ((unsigned)kind > TGEMM_COPY_DEVICE_TO_DEVICE)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT, "tgemm_memcpy: unknown copy kind %d", (int)kind);
  if (bytes == 0) return TGEMM_OK;
  return ctx->backend->copy(ctx, dst, src, bytes, kind);
}

tgemm_status tgemm_synchronize(tgemm_ctx *ctx) {
  if (!ctx) return TGEMM_NULL_POINTER;
  return ctx->backend->synchronize(ctx);
}
