/* Shared by the parts of the tuned table (table.c: memory, table_csv.c:
 * text, table_file.c: files).  Private to src/route. */
#ifndef TGEMM_ROUTE_TABLE_INTERNAL_H
#define TGEMM_ROUTE_TABLE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "route/table.h"

/* Why a row cannot be stored or written back, or NULL when it can. */
const char *tgemm__table_row_problem(const tgemm__table_row *row);

/* Insert a row already known to be valid and, in a device's table, of that
 * device; false on OOM. */
bool tgemm__table_insert_unchecked(struct tgemm__table *table, const tgemm__table_row *row,
                                   tgemm__table_merge merge);

/* The device a table is for, or NULL when it keeps every device. */
const tgemm__device_key *tgemm__table_filter(const struct tgemm__table *table);

/* State of one load call across its files. */
typedef struct tgemm__table_parse {
  tgemm__table_stats *stats;
  int64_t reported;  /* malformed lines printed so far */
  bool bad_header;   /* a file did not start with our header */
} tgemm__table_parse;

/* Parse a file's whole text (modified in place) into table. */
tgemm_status tgemm__table_parse_text(tgemm_ctx *ctx, struct tgemm__table *table, char *text,
                                     const char *name, tgemm__table_parse *ps);
/* Print how many malformed lines were not printed. */
void tgemm__table_parse_finish(tgemm__table_parse *ps, const char *what);

/* The whole file (header and rows in a stable order), malloc'ed; NULL on
 * OOM. */
char *tgemm__table_render(const struct tgemm__table *table, size_t *len);

#endif
