/* The router's per-context memo (see route_cache.h). */
#include "route/route_cache.h"

#include <stdlib.h>
#include <string.h>

#include "route/router.h"

/* Power of two.  A full memo simply stops memoizing new keys. */
#define CACHE_SLOTS 512

typedef struct {
  tgemm__shape shape;
  tgemm_route forced;
  double budget;
  uint8_t weight_forms; /* bit 0: dense, bit 1: MXFP4 */
} route_key;

/* Slot states: a slot is claimed (compare-and-swap), written, then
 * published with release order, so a reader never sees half a slot. */
enum { SLOT_EMPTY = 0, SLOT_WRITING = 1, SLOT_READY = 2 };

typedef struct {
  int state;
  route_key key;
  tgemm__kernel kernel;
  const char *reason; /* static string from the router */
} route_slot;

struct tgemm__route_cache {
  route_slot slots[CACHE_SLOTS];
};

struct tgemm__route_cache *tgemm__route_cache_new(void) {
  return calloc(1, sizeof(struct tgemm__route_cache));
}

void tgemm__route_cache_free(struct tgemm__route_cache *cache) { free(cache); }

static bool key_equal(const route_key *a, const route_key *b) {
  return a->shape.m == b->shape.m && a->shape.n == b->shape.n && a->shape.k == b->shape.k &&
         a->shape.dtype == b->shape.dtype && a->shape.out_dtype == b->shape.out_dtype &&
         a->shape.has_bias == b->shape.has_bias && a->forced == b->forced && a->budget == b->budget &&
         a->weight_forms == b->weight_forms;
}

static uint64_t key_hash(const route_key *k) {
  uint64_t h = 1469598103934665603ull;
  uint64_t parts[] = {(uint64_t)k->shape.m, (uint64_t)k->shape.n, (uint64_t)k->shape.k,
                      (uint64_t)k->shape.dtype | (uint64_t)k->shape.out_dtype << 8 |
                          (uint64_t)k->shape.has_bias << 16 | (uint64_t)k->forced << 24 |
                          (uint64_t)k->weight_forms << 32};
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    h ^= parts[i];
    h *= 1099511628211ull;
    h ^= h >> 29;
  }
  uint64_t budget_bits;
  memcpy(&budget_bits, &k->budget, sizeof budget_bits);
  return (h ^ budget_bits) * 0x9e3779b97f4a7c15ull;
}

tgemm_status tgemm__route_select_cached(tgemm_ctx *ctx, const tgemm__shape *shape,
                                        const struct tgemm_weight *w,
                                        const tgemm_linear_options *opts, tgemm__kernel *out,
                                        const char **reason) {
  struct tgemm__route_cache *cache = ctx->route_cache;
  if (!cache || (opts && opts->kernel)) return tgemm__route_select(ctx, shape, w, opts, out, reason);
  route_key key;
  memset(&key, 0, sizeof key); /* padding too: keys are compared field by field anyway */
  key.shape = *shape;
  key.forced = opts ? opts->route : TGEMM_ROUTE_AUTO;
  key.budget = tgemm__route_error_budget(ctx, opts);
  key.weight_forms = (uint8_t)((w->has_dense ? 1 : 0) | (w->has_mxfp4 ? 2 : 0));

  uint64_t mask = CACHE_SLOTS - 1, i = key_hash(&key) & mask;
  for (int probes = 0; probes < CACHE_SLOTS; probes++, i = (i + 1) & mask) {
    route_slot *slot = &cache->slots[i];
    int state = __atomic_load_n(&slot->state, __ATOMIC_ACQUIRE);
    if (state == SLOT_READY && key_equal(&slot->key, &key)) {
      *out = slot->kernel;
      *reason = slot->reason;
      return TGEMM_OK;
    }
    if (state == SLOT_EMPTY) {
      tgemm_status st = tgemm__route_select(ctx, shape, w, opts, out, reason);
      int expected = SLOT_EMPTY;
      /* only successes are remembered: errors keep their message */
      if (st == TGEMM_OK && __atomic_compare_exchange_n(&slot->state, &expected, SLOT_WRITING, false,
                                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        slot->key = key;
        slot->kernel = *out;
        slot->reason = *reason;
        __atomic_store_n(&slot->state, SLOT_READY, __ATOMIC_RELEASE);
      }
      return st;
    }
  }
  return tgemm__route_select(ctx, shape, w, opts, out, reason); /* memo full */
}
