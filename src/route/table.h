/* The tuned table (DESIGN.md §5): CSV rows of measured best kernels, keyed
 * by device and problem shape.  Load, look up, insert, and save atomically
 * under an advisory lock, merging with what is on disk.
 *
 * One row per (device key, M, N, K, bias, dtype, out_dtype, route): the
 * design's key plus the route, so that a shape keeps its best dense kernel
 * next to its best MXFP4 kernel, and the router can reject the MXFP4 row by
 * error budget at lookup time without losing the tuned dense choice. */
#ifndef TGEMM_ROUTE_TABLE_H
#define TGEMM_ROUTE_TABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/internal.h"

#define TGEMM__TABLE_SCHEMA 1

typedef struct tgemm__table_row {
  tgemm__device_key device;
  tgemm__shape shape;
  tgemm__kernel kernel; /* kernel.route is the row's route */
  int32_t split_k;      /* 0 = not reported by the backend */
  double us;            /* median time of one call */
  double tflops, gbps;  /* achieved at `us` */
  double error;         /* ‖y−ref‖/‖ref‖ vs the unquantized reference; NaN = not measured */
} tgemm__table_row;

typedef struct tgemm__table_stats {
  int64_t n_rows;          /* rows kept (after merging duplicates) */
  int64_t n_foreign;       /* rows of another device or library version, skipped */
  int64_t n_malformed;     /* lines reported and skipped */
  int64_t n_missing_files; /* paths that do not exist */
  int64_t first_bad_line;  /* line number of the first malformed line, 0 if none */
  char first_bad[320];     /* "path:line: why" of the first malformed line */
} tgemm__table_stats;

typedef enum tgemm__table_merge {
  TGEMM__TABLE_KEEP_FASTEST = 0, /* an existing faster row stays */
  TGEMM__TABLE_REPLACE = 1,      /* the new row always wins */
} tgemm__table_merge;

struct tgemm__table;

/* An empty table.  With a device key, rows of any other device, arch, unit
 * count or library version are skipped when loading (and counted); with
 * NULL, every row is kept (used for merging on save).  NULL on OOM. */
struct tgemm__table *tgemm__table_new(const tgemm__device_key *device);
void tgemm__table_free(struct tgemm__table *table);

/* Load one or more ':'-separated CSV files into table.  A missing file, a
 * malformed line or a bad header is reported on stderr (with file:line) and
 * skipped; foreign rows are counted with one warning.  Only allocation
 * failure is an error.  stats may be NULL. */
tgemm_status tgemm__table_load(tgemm_ctx *ctx, struct tgemm__table *table,
                               const char *paths, tgemm__table_stats *stats);

/* Parse CSV text as if it were a file named `name` (for tests and tools). */
tgemm_status tgemm__table_load_text(tgemm_ctx *ctx, struct tgemm__table *table,
                                    const char *text, const char *name,
                                    tgemm__table_stats *stats);

/* Row for the table's own device key (tgemm__table_new's), or NULL.  No
 * allocation; a hash lookup. */
const tgemm__table_row *tgemm__table_lookup(const struct tgemm__table *table,
                                            const tgemm__shape *shape,
                                            tgemm_route route);
/* Every route's row for the shape at once (out[route], NULL where none);
 * returns how many were found.  One hash probe: what the router uses. */
int tgemm__table_lookup_routes(const struct tgemm__table *table, const tgemm__shape *shape,
                               const tgemm__table_row *out[TGEMM_ROUTE_COUNT]);
/* Row for an explicit device key, or NULL. */
const tgemm__table_row *tgemm__table_find(const struct tgemm__table *table,
                                          const tgemm__device_key *device,
                                          const tgemm__shape *shape,
                                          tgemm_route route);

/* Add a row (validated like a parsed line: TGEMM_INVALID_ARGUMENT when it
 * could not be written back, or when the table is for another device).
 * Row pointers from lookups are invalidated. */
tgemm_status tgemm__table_insert(tgemm_ctx *ctx, struct tgemm__table *table,
                                 const tgemm__table_row *row,
                                 tgemm__table_merge merge);

int64_t tgemm__table_size(const struct tgemm__table *table);
const tgemm__table_row *tgemm__table_row_at(const struct tgemm__table *table,
                                            int64_t index);

/* Write table to path atomically: under an flock on "<path>.lock", read
 * whatever is on disk now, merge (fastest row per key wins), write a temp
 * file in the same folder, fsync, rename.  A file on disk with another
 * schema or a foreign header is not overwritten (TGEMM_FORMAT_ERROR). */
tgemm_status tgemm__table_save(tgemm_ctx *ctx, const struct tgemm__table *table,
                               const char *path);

/* Format one row as a CSV line (no newline) into buf; false if it does not
 * fit.  The header line is tgemm__table_header(). */
bool tgemm__table_format_row(const tgemm__table_row *row, char *buf, size_t cap);
const char *tgemm__table_header(void);

/* Equal device keys (strings and unit count). */
bool tgemm__device_key_equal(const tgemm__device_key *a,
                             const tgemm__device_key *b);

/* Once-per-row validation memo for the router: 0 = not checked yet,
 * 1 = usable, 2 = rejected.  Atomic: racing threads agree. */
int tgemm__table_row_check_get(const struct tgemm__table *table,
                               const tgemm__table_row *row);
void tgemm__table_row_check_set(const struct tgemm__table *table,
                                const tgemm__table_row *row, int state);

/* Called by tgemm_ctx_create: when ctx->tuned and ctx->config_paths, load
 * the table for ctx->device_key into ctx->table (NULL when no row applies). */
tgemm_status tgemm__table_create_for_ctx(tgemm_ctx *ctx);

#endif
