/* The untuned log (TGEMM_LOG_UNTUNED): shapes that missed the tuned table,
 * appended once each so that they can be tuned later.  The router's only
 * side effect lives here. */
#ifndef TGEMM_ROUTE_UNTUNED_LOG_H
#define TGEMM_ROUTE_UNTUNED_LOG_H

#include "core/internal.h"

/* The CSV header of the log: the shape columns of the tuned table, then the
 * device key. */
#define TGEMM__UNTUNED_LOG_HEADER "m,n,k,bias,dtype,out_dtype,device,arch,units,lib_version"

/* Append the shape to ctx->untuned_log unless this process already did
 * (deduplicated in a bounded in-memory set).  Failures warn once and are
 * otherwise ignored: the log must never break a linear call. */
void tgemm__untuned_log_record(tgemm_ctx *ctx, const tgemm__shape *shape);

/* Forget which shapes were logged (tests). */
void tgemm__untuned_log_reset(void);

#endif
