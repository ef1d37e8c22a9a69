/* The tuned table in memory: an array of rows with two open-addressing
 * indexes, (device, shape) -> the row of each route, and (device, N, K,
 * dtypes) for misses in one probe.  The CSV form is table_csv.c, the files
 * table_file.c. */
#include "route/table.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route/table_internal.h"

/* Rows of one (device, shape) across routes: one probe answers a lookup
 * for every route. */
typedef struct row_group {
  tgemm__shape shape;
  uint64_t dev_hash;
  int32_t row[TGEMM_ROUTE_COUNT]; /* row index per route, -1 = none */
} row_group;

/* (device, N, K, dtypes, bias) of the groups: most calls that miss the
 * table miss here, in one probe, whatever M. */
typedef struct layer_key {
  uint64_t dev_hash;
  int64_t n, k;
  int32_t dtypes; /* dtype | out_dtype << 8 | bias << 16, -1 = empty slot */
} layer_key;

struct tgemm__table {
  tgemm__table_row *rows;
  uint8_t *check; /* tgemm__table_row_check_* memo, one per row */
  int64_t n_rows, cap;
  row_group *groups;
  int64_t n_groups, groups_cap;
  uint32_t *slots; /* group index + 1; 0 = empty */
  int64_t n_slots; /* power of two, at least twice n_groups */
  layer_key *layers;
  int64_t n_layers, n_layer_slots; /* power of two, at least twice n_layers */
  bool has_filter; /* every row is the filter's device */
  tgemm__device_key filter;
  uint64_t filter_hash;
};

/* ------------------------------------------------------------- hashing */

static uint64_t fnv_bytes(uint64_t h, const char *s, size_t cap) {
  for (size_t i = 0; i < cap && s[i]; i++) {
    h ^= (uint8_t)s[i];
    h *= 1099511628211ull;
  }
  h ^= 0xff; /* field separator, so "ab"+"c" != "a"+"bc" */
  return h * 1099511628211ull;
}

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 29);
}

static uint64_t device_hash(const tgemm__device_key *d) {
  uint64_t h = 14695981039346656037ull;
  h = fnv_bytes(h, d->device, sizeof d->device);
  h = fnv_bytes(h, d->arch, sizeof d->arch);
  h = fnv_bytes(h, d->lib_version, sizeof d->lib_version);
  return mix(h, (uint64_t)(uint32_t)d->units);
}

static int32_t dtypes_of(const tgemm__shape *s) {
  return (int32_t)s->dtype | ((int32_t)s->out_dtype << 8) | ((int32_t)(s->has_bias ? 1 : 0) << 16);
}

static uint64_t layer_hash(uint64_t dev_hash, const tgemm__shape *s) {
  return mix(mix(mix(dev_hash, (uint64_t)s->n), (uint64_t)s->k), (uint64_t)dtypes_of(s));
}

static uint64_t group_hash(uint64_t dev_hash, const tgemm__shape *s) {
  return mix(layer_hash(dev_hash, s), (uint64_t)s->m);
}

bool tgemm__device_key_equal(const tgemm__device_key *a, const tgemm__device_key *b) {
  return a->units == b->units && strncmp(a->device, b->device, sizeof a->device) == 0 &&
         strncmp(a->arch, b->arch, sizeof a->arch) == 0 &&
         strncmp(a->lib_version, b->lib_version, sizeof a->lib_version) == 0;
}

static bool shape_equal(const tgemm__shape *a, const tgemm__shape *b) {
  return a->m == b->m && a->n == b->n && a->k == b->k && a->dtype == b->dtype &&
         a->out_dtype == b->out_dtype && a->has_bias == b->has_bias;
}

static const tgemm__device_key *group_device(const struct tgemm__table *t, const row_group *g) {
  for (int r = 0; r < TGEMM_ROUTE_COUNT; r++)
    if (g->row[r] >= 0) return &t->rows[g->row[r]].device;
  return NULL;
}

/* Slot of the group for (dev, shape), or the empty slot where it would go.
 * In a filtered table every row is the filter's device, so the device is
 * compared only in unfiltered ones. */
static int64_t probe_group(const struct tgemm__table *t, uint64_t dev_hash, const tgemm__device_key *dev,
                           const tgemm__shape *shape) {
  int64_t mask = t->n_slots - 1;
  for (int64_t i = (int64_t)(group_hash(dev_hash, shape) & (uint64_t)mask);; i = (i + 1) & mask) {
    uint32_t s = t->slots[i];
    if (s == 0) return i;
    const row_group *g = &t->groups[s - 1];
    if (g->dev_hash == dev_hash && shape_equal(&g->shape, shape) &&
        (t->has_filter || tgemm__device_key_equal(group_device(t, g), dev)))
      return i;
  }
}

static int64_t probe_layer(const layer_key *layers, int64_t n_slots, uint64_t dev_hash,
                           const tgemm__shape *s) {
  int64_t mask = n_slots - 1;
  int32_t dtypes = dtypes_of(s);
  for (int64_t i = (int64_t)(layer_hash(dev_hash, s) & (uint64_t)mask);; i = (i + 1) & mask) {
    const layer_key *l = &layers[i];
    if (l->dtypes < 0 || (l->dev_hash == dev_hash && l->n == s->n && l->k == s->k && l->dtypes == dtypes))
      return i;
  }
}

static bool rehash_groups(struct tgemm__table *t, int64_t n_slots) {
  uint32_t *slots = calloc((size_t)n_slots, sizeof *slots);
  if (!slots) return false;
  free(t->slots);
  t->slots = slots;
  t->n_slots = n_slots;
  for (int64_t g = 0; g < t->n_groups; g++) {
    const row_group *grp = &t->groups[g];
    t->slots[probe_group(t, grp->dev_hash, group_device(t, grp), &grp->shape)] = (uint32_t)(g + 1);
  }
  return true;
}

static bool rehash_layers(struct tgemm__table *t, int64_t n_slots) {
  layer_key *layers = malloc((size_t)n_slots * sizeof *layers);
  if (!layers) return false;
  for (int64_t i = 0; i < n_slots; i++) layers[i].dtypes = -1;
  for (int64_t i = 0; i < t->n_layer_slots; i++) {
    const layer_key *l = &t->layers[i];
    if (l->dtypes < 0) continue;
    tgemm__shape s = {0, l->n, l->k, (tgemm_dtype)(l->dtypes & 0xff), (tgemm_dtype)((l->dtypes >> 8) & 0xff),
                      (l->dtypes >> 16) != 0};
    layers[probe_layer(layers, n_slots, l->dev_hash, &s)] = *l;
  }
  free(t->layers);
  t->layers = layers;
  t->n_layer_slots = n_slots;
  return true;
}

/* ----------------------------------------------------------- basic API */

struct tgemm__table *tgemm__table_new(const tgemm__device_key *device) {
  struct tgemm__table *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  if (device) {
    t->has_filter = true;
    t->filter = *device;
    t->filter_hash = device_hash(device);
  }
  if (!rehash_groups(t, 64) || !rehash_layers(t, 32)) {
    tgemm__table_free(t);
    return NULL;
  }
  return t;
}

void tgemm__table_free(struct tgemm__table *t) {
  if (!t) return;
  free(t->rows);
  free(t->check);
  free(t->groups);
  free(t->slots);
  free(t->layers);
  free(t);
}

int64_t tgemm__table_size(const struct tgemm__table *t) { return t ? t->n_rows : 0; }

const tgemm__table_row *tgemm__table_row_at(const struct tgemm__table *t, int64_t i) {
  return t && i >= 0 && i < t->n_rows ? &t->rows[i] : NULL;
}

static const row_group *find_group(const struct tgemm__table *t, uint64_t dev_hash,
                                   const tgemm__device_key *dev, const tgemm__shape *shape) {
  if (t->n_rows == 0) return NULL;
  if (t->layers[probe_layer(t->layers, t->n_layer_slots, dev_hash, shape)].dtypes < 0) return NULL;
  uint32_t s = t->slots[probe_group(t, dev_hash, dev, shape)];
  return s ? &t->groups[s - 1] : NULL;
}

int tgemm__table_lookup_routes(const struct tgemm__table *t, const tgemm__shape *shape,
                               const tgemm__table_row *out[TGEMM_ROUTE_COUNT]) {
  for (int r = 0; r < TGEMM_ROUTE_COUNT; r++) out[r] = NULL;
  if (!t || !t->has_filter || !shape) return 0;
  const row_group *g = find_group(t, t->filter_hash, &t->filter, shape);
  int found = 0;
  for (int r = 0; g && r < TGEMM_ROUTE_COUNT; r++)
    if (g->row[r] >= 0) {
      out[r] = &t->rows[g->row[r]];
      found++;
    }
  return found;
}

const tgemm__table_row *tgemm__table_find(const struct tgemm__table *t,
                                          const tgemm__device_key *device,
                                          const tgemm__shape *shape, tgemm_route route) {
  if (!t || !device || !shape || (unsigned)route >= TGEMM_ROUTE_COUNT) return NULL;
  uint64_t dh = device_hash(device);
  if (t->has_filter && (dh != t->filter_hash || !tgemm__device_key_equal(device, &t->filter)))
    return NULL;
  const row_group *g = find_group(t, dh, device, shape);
  return g && g->row[route] >= 0 ? &t->rows[g->row[route]] : NULL;
}

const tgemm__table_row *tgemm__table_lookup(const struct tgemm__table *t,
                                            const tgemm__shape *shape, tgemm_route route) {
  if (!t || !t->has_filter || !shape || (unsigned)route >= TGEMM_ROUTE_COUNT) return NULL;
  const row_group *g = find_group(t, t->filter_hash, &t->filter, shape);
  return g && g->row[route] >= 0 ? &t->rows[g->row[route]] : NULL;
}

int tgemm__table_row_check_get(const struct tgemm__table *t, const tgemm__table_row *row) {
  int64_t i = row - t->rows;
  if (i < 0 || i >= t->n_rows) return 0;
  return __atomic_load_n(&t->check[i], __ATOMIC_RELAXED);
}

void tgemm__table_row_check_set(const struct tgemm__table *t, const tgemm__table_row *row,
                                int state) {
  int64_t i = row - t->rows;
  if (i < 0 || i >= t->n_rows) return;
  __atomic_store_n(&t->check[i], (uint8_t)state, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------ validity */

static bool has_line_break(const char *s, size_t cap) {
  for (size_t i = 0; i < cap && s[i]; i++)
    if (s[i] == '\n' || s[i] == '\r') return true;
  return false;
}

static bool nan_or_nonnegative(double v) { return isnan(v) || (isfinite(v) && v >= 0); }

const char *tgemm__table_row_problem(const tgemm__table_row *r) {
  const tgemm__device_key *d = &r->device;
  if (!memchr(d->device, 0, sizeof d->device) || !memchr(d->arch, 0, sizeof d->arch) ||
      !memchr(d->lib_version, 0, sizeof d->lib_version) ||
      !memchr(r->kernel.name, 0, sizeof r->kernel.name))
    return "a name is not terminated";
  if (!d->device[0]) return "empty device name";
  if (has_line_break(d->device, sizeof d->device) || has_line_break(d->arch, sizeof d->arch) ||
      has_line_break(d->lib_version, sizeof d->lib_version) ||
      has_line_break(r->kernel.name, sizeof r->kernel.name))
    return "a name contains a line break";
  if (d->units < 0) return "negative unit count";
  if (r->shape.m < 1 || r->shape.n < 1 || r->shape.k < 1) return "M, N and K must be positive";
  if ((unsigned)r->shape.dtype > TGEMM_BF16) return "dtype must be f32, f16 or bf16";
  if ((unsigned)r->shape.out_dtype > TGEMM_BF16) return "out_dtype must be f32, f16 or bf16";
  if (r->kernel.route <= TGEMM_ROUTE_AUTO || r->kernel.route >= TGEMM_ROUTE_COUNT)
    return "unknown route";
  if (!r->kernel.name[0]) return "empty kernel name";
  if (r->split_k < 0) return "negative split_k";
  if (!(isfinite(r->us) && r->us > 0)) return "us must be a positive finite number";
  if (!nan_or_nonnegative(r->tflops) || !nan_or_nonnegative(r->gbps))
    return "tflops and gbps must be >= 0 or nan";
  if (!nan_or_nonnegative(r->error)) return "error must be >= 0 or nan";
  return NULL;
}

static bool grow(struct tgemm__table *t) {
  int64_t cap = t->cap ? t->cap * 2 : 64;
  tgemm__table_row *rows = realloc(t->rows, (size_t)cap * sizeof *rows);
  if (!rows) return false;
  t->rows = rows;
  uint8_t *check = realloc(t->check, (size_t)cap);
  if (!check) return false;
  t->check = check;
  t->cap = cap;
  return true;
}

static bool ensure_group_room(struct tgemm__table *t) {
  if (t->n_groups == t->groups_cap) {
    int64_t cap = t->groups_cap ? t->groups_cap * 2 : 64;
    row_group *groups = realloc(t->groups, (size_t)cap * sizeof *groups);
    if (!groups) return false;
    t->groups = groups;
    t->groups_cap = cap;
  }
  if (t->n_groups + 1 > t->n_slots / 2 && !rehash_groups(t, t->n_slots * 2)) return false;
  if (t->n_layers + 1 > t->n_layer_slots / 2 && !rehash_layers(t, t->n_layer_slots * 2)) return false;
  return true;
}

bool tgemm__table_insert_unchecked(struct tgemm__table *t, const tgemm__table_row *row,
                       tgemm__table_merge merge) {
  uint64_t dh = t->has_filter ? t->filter_hash : device_hash(&row->device);
  tgemm_route route = row->kernel.route;
  int64_t slot = probe_group(t, dh, &row->device, &row->shape);
  if (t->slots[slot]) {
    row_group *g = &t->groups[t->slots[slot] - 1];
    int32_t i = g->row[route];
    if (i >= 0) {
      /* strictly faster wins, so a re-save of the same rows changes nothing */
      if (merge == TGEMM__TABLE_REPLACE || row->us < t->rows[i].us) {
        t->rows[i] = *row;
        t->check[i] = 0;
      }
      return true;
    }
  }
  if (t->n_rows == t->cap && !grow(t)) return false;
  if (!t->slots[slot]) {
    if (!ensure_group_room(t)) return false;
    slot = probe_group(t, dh, &row->device, &row->shape); /* the tables may have been rebuilt */
    row_group *g = &t->groups[t->n_groups];
    g->shape = row->shape;
    g->dev_hash = dh;
    for (int r = 0; r < TGEMM_ROUTE_COUNT; r++) g->row[r] = -1;
    t->slots[slot] = (uint32_t)++t->n_groups;
    int64_t l = probe_layer(t->layers, t->n_layer_slots, dh, &row->shape);
    if (t->layers[l].dtypes < 0) {
      t->layers[l] = (layer_key){dh, row->shape.n, row->shape.k, dtypes_of(&row->shape)};
      t->n_layers++;
    }
  }
  row_group *g = &t->groups[t->slots[slot] - 1];
  t->rows[t->n_rows] = *row;
  t->check[t->n_rows] = 0;
  g->row[route] = (int32_t)t->n_rows++;
  return true;
}

tgemm_status tgemm__table_insert(tgemm_ctx *ctx, struct tgemm__table *t,
                                 const tgemm__table_row *row, tgemm__table_merge merge) {
  if (!t || !row) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm__table_insert: NULL argument");
  const char *why = tgemm__table_row_problem(row);
  if (why)
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "tuned table: cannot store row for M=%lld N=%lld K=%lld route %d: %s",
                            (long long)row->shape.m, (long long)row->shape.n,
                            (long long)row->shape.k, (int)row->kernel.route, why);
  if (t->has_filter && !tgemm__device_key_equal(&row->device, &t->filter))
    return tgemm__set_error(ctx, TGEMM_INVALID_ARGUMENT,
                            "tuned table: a row of device %s (%s, %d units, %s) does not belong in the "
                            "table of %s (%s, %d units, %s)",
                            row->device.device, row->device.arch, row->device.units,
                            row->device.lib_version, t->filter.device, t->filter.arch, t->filter.units,
                            t->filter.lib_version);
  if (!tgemm__table_insert_unchecked(t, row, merge))
    return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table: out of memory inserting a row");
  return TGEMM_OK;
}

const tgemm__device_key *tgemm__table_filter(const struct tgemm__table *t) {
  return t && t->has_filter ? &t->filter : NULL;
}
