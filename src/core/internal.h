/* Library-private state shared by every part of tgemm.  Internal names that
 * are not static carry the tgemm__ prefix. */
#ifndef TGEMM_CORE_INTERNAL_H
#define TGEMM_CORE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/backend.h"
#include "tgemm.h"

struct tgemm__table;       /* src/route/table.h */
struct tgemm__route_cache; /* src/route/route_cache.h */

#define TGEMM__ERROR_MAX 512

struct tgemm_ctx {
  tgemm_ctx_options options; /* resolved: env applied, strings copied */
  char *config_paths;        /* owned copy, NULL when none */
  char *untuned_log;         /* owned copy, NULL when none */
  bool tuned;                /* TGEMM_TUNED after resolution */
  const tgemm__backend *backend;
  void *backend_state;
  tgemm__device_key device_key;
  char device_name[160];
  struct tgemm__table *table; /* NULL when tuned routing is off or empty */
  struct tgemm__route_cache *route_cache; /* the router's decisions so far */
  char last_error[TGEMM__ERROR_MAX];
};

struct tgemm_weight {
  tgemm_ctx *ctx;
  int64_t n, k;
  bool has_dense;
  tgemm_matrix dense; /* borrowed from the caller */
  bool has_mxfp4;
  tgemm_matrix mxfp4; /* owned unless borrowed_mxfp4 */
  bool owns_mxfp4;
  tgemm_scale_mode scale_mode;
  void *backend_data; /* the backend's own cache (f32 copy, ...) */
};

/* Record an error on ctx (ctx may be NULL) and return status. */
tgemm_status tgemm__set_error(tgemm_ctx *ctx, tgemm_status status,
                              const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tgemm__clear_error(tgemm_ctx *ctx);

/* One warning per distinct key per process, to stderr. */
void tgemm__warn_once(const char *key, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Overflow-checked size arithmetic: false on overflow or negative input. */
bool tgemm__mul_size(int64_t a, int64_t b, int64_t *out);

/* Bytes spanned by a valid matrix view (last row ends at cols). */
bool tgemm__matrix_bytes(const tgemm_matrix *m, int64_t *bytes);

/* Check a descriptor: non-NULL data, positive dims, ld >= cols, known dtype,
 * no overflow.  `what` names it in the error ("x", "weight", ...). */
tgemm_status tgemm__check_matrix(tgemm_ctx *ctx, const tgemm_matrix *m,
                                 const char *what);

#endif
