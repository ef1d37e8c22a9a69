/* Error details live on the context; warnings go to stderr once each. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

tgemm_status tgemm__set_error(tgemm_ctx *ctx, tgemm_status status,
                              const char *fmt, ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
    va_end(ap);
  }
  return status;
}

void tgemm__clear_error(tgemm_ctx *ctx) {
  if (ctx) ctx->last_error[0] = '\0';
}

const char *tgemm_ctx_last_error(const tgemm_ctx *ctx) {
  return ctx ? ctx->last_error : "tgemm_ctx_last_error: ctx is NULL";
}

/* A small set of keys already warned about; beyond its capacity a warning
 * may repeat, which is harmless. */
#define WARN_KEYS 64
static char warned_keys[WARN_KEYS][64];
static int warned_count;
static pthread_mutex_t warn_lock = PTHREAD_MUTEX_INITIALIZER;

void tgemm__warn_once(const char *key, const char *fmt, ...) {
  pthread_mutex_lock(&warn_lock);
  for (int i = 0; i < warned_count; i++)
    if (strncmp(warned_keys[i], key, sizeof warned_keys[i] - 1) == 0) {
      pthread_mutex_unlock(&warn_lock);
      return;
    }
  if (warned_count < WARN_KEYS)
    snprintf(warned_keys[warned_count++], sizeof warned_keys[0], "%s", key);
  pthread_mutex_unlock(&warn_lock);
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "tgemm: warning: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}
