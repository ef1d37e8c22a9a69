/* A per-context memo of the router's decisions.  The decision depends only
 * on the shape, the caller's route and error budget, and which forms the
 * weight holds; the table and backend are fixed for a context's life.  So
 * each distinct call pays for the predicates, candidate lists and table
 * probes once, and every later call is one hash probe: nothing allocated,
 * nothing formatted, on the hot path of tgemm_linear. */
#ifndef TGEMM_ROUTE_ROUTE_CACHE_H
#define TGEMM_ROUTE_ROUTE_CACHE_H

#include "core/internal.h"

/* tgemm__route_select with the memo in front.  Calls that name a kernel
 * (opts->kernel) are not memoized. */
tgemm_status tgemm__route_select_cached(tgemm_ctx *ctx, const tgemm__shape *shape,
                                        const struct tgemm_weight *w,
                                        const tgemm_linear_options *opts,
                                        tgemm__kernel *out, const char **reason);

struct tgemm__route_cache *tgemm__route_cache_new(void);
void tgemm__route_cache_free(struct tgemm__route_cache *cache);

#endif
