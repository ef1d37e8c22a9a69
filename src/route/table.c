/* The tuned table: an array of rows with an open-addressing hash index over
 * the full key, a forgiving CSV reader (bad lines are reported and skipped,
 * never fatal) and an atomic, locked, merging writer. */
#include "route/table.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_COLUMNS 20
/* Malformed lines printed per load call; the rest are only counted. */
#define MAX_REPORTED_LINES 10
/* Refuse to slurp anything this large: a table has thousands of rows. */
#define MAX_FILE_BYTES ((int64_t)256 << 20)

static const char header_line[] =
    "schema,device,arch,units,lib_version,m,n,k,bias,dtype,out_dtype,route,"
    "kernel,params,algo,split_k,us,tflops,gbps,error";

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

const char *tgemm__table_header(void) { return header_line; }

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

/* Why a row cannot be stored, or NULL when it can. */
static const char *row_problem(const tgemm__table_row *r) {
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

/* Insert without validation (a filtered table takes only its device's
 * rows: the caller checks); false on OOM. */
static bool insert_row(struct tgemm__table *t, const tgemm__table_row *row,
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
  const char *why = row_problem(row);
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
  if (!insert_row(t, row, merge))
    return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table: out of memory inserting a row");
  return TGEMM_OK;
}

/* ------------------------------------------------------------- parsing */

static bool parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  if (!*s) return false;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static bool parse_f64(const char *s, double *out) {
  if (!*s) return false;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*end || (errno == ERANGE && isinf(v))) return false;
  *out = v;
  return true;
}

static bool copy_text(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap) return false;
  memcpy(dst, src, n + 1);
  return true;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static bool parse_params(const char *s, int32_t *params) {
  for (int i = 0; i < TGEMM__KERNEL_PARAMS; i++) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < INT32_MIN || v > INT32_MAX) return false;
    params[i] = (int32_t)v;
    if (i + 1 < TGEMM__KERNEL_PARAMS) {
      if (*end != ';') return false;
      s = end + 1;
    } else if (*end) {
      return false;
    }
  }
  return true;
}

/* Split a line into fields in place, honouring "quoted" fields with ""
 * escapes.  Returns the field count, or -1 on a broken quote. */
static int split_csv(char *line, char **fields, int cap) {
  int n = 0;
  char *p = line;
  for (;;) {
    if (n == cap) return cap + 1; /* too many: the caller reports the count */
    if (*p == '"') {
      char *w = ++p;
      fields[n++] = w;
      for (;;) {
        if (!*p) return -1;
        if (*p == '"') {
          if (p[1] == '"') {
            *w++ = '"';
            p += 2;
            continue;
          }
          p++;
          break;
        }
        *w++ = *p++;
      }
      *w = '\0';
      if (*p == '\0') return n;
      if (*p != ',') return -1;
      p++;
    } else {
      fields[n++] = p;
      char *comma = strchr(p, ',');
      if (!comma) return n;
      *comma = '\0';
      p = comma + 1;
    }
  }
}

/* Parse one data line; NULL on success, else why it is malformed. */
static const char *parse_row(char *line, tgemm__table_row *r, char *why, size_t why_cap) {
  char *f[N_COLUMNS];
  int n = split_csv(line, f, N_COLUMNS);
  if (n < 0) return "unbalanced quote";
  if (n != N_COLUMNS) {
    if (n > N_COLUMNS) snprintf(why, why_cap, "more than %d columns", N_COLUMNS);
    else snprintf(why, why_cap, "%d columns, expected %d", n, N_COLUMNS);
    return why;
  }
  memset(r, 0, sizeof *r);
  int64_t v;
  if (!parse_i64(f[0], 0, INT32_MAX, &v)) return "bad schema number";
  if (v != TGEMM__TABLE_SCHEMA) {
    snprintf(why, why_cap, "schema %lld, this build reads schema %d", (long long)v, TGEMM__TABLE_SCHEMA);
    return why;
  }
  if (!copy_text(r->device.device, sizeof r->device.device, f[1])) return "device name too long";
  if (!copy_text(r->device.arch, sizeof r->device.arch, f[2])) return "arch too long";
  if (!parse_i64(f[3], 0, INT32_MAX, &v)) return "bad units";
  r->device.units = (int)v;
  if (!copy_text(r->device.lib_version, sizeof r->device.lib_version, f[4])) return "lib_version too long";
  const int64_t dim_max = (int64_t)1 << 40;
  if (!parse_i64(f[5], 1, dim_max, &r->shape.m)) return "bad m";
  if (!parse_i64(f[6], 1, dim_max, &r->shape.n)) return "bad n";
  if (!parse_i64(f[7], 1, dim_max, &r->shape.k)) return "bad k";
  if (!parse_i64(f[8], 0, 1, &v)) return "bias must be 0 or 1";
  r->shape.has_bias = v == 1;
  if (tgemm_dtype_parse(f[9], &r->shape.dtype) != TGEMM_OK) return "unknown dtype";
  if (tgemm_dtype_parse(f[10], &r->shape.out_dtype) != TGEMM_OK) return "unknown out_dtype";
  if (tgemm_route_parse(f[11], &r->kernel.route) != TGEMM_OK ||
      r->kernel.route == TGEMM_ROUTE_AUTO)
    return "unknown route";
  if (!copy_text(r->kernel.name, sizeof r->kernel.name, f[12])) return "kernel name too long";
  if (!parse_params(f[13], r->kernel.params)) return "params must be 8 integers separated by ';'";
  size_t hex_len = strlen(f[14]);
  if (hex_len) {
    if (hex_len != 2 * sizeof r->kernel.algo) return "algo must be 128 hex digits or empty";
    for (size_t i = 0; i < sizeof r->kernel.algo; i++) {
      int hi = hex_digit(f[14][2 * i]), lo = hex_digit(f[14][2 * i + 1]);
      if (hi < 0 || lo < 0) return "algo has a non-hex digit";
      r->kernel.algo[i] = (uint8_t)(hi << 4 | lo);
    }
    r->kernel.has_algo = true;
  }
  if (!parse_i64(f[15], 0, INT32_MAX, &v)) return "bad split_k";
  r->split_k = (int32_t)v;
  if (!parse_f64(f[16], &r->us)) return "bad us";
  if (!parse_f64(f[17], &r->tflops)) return "bad tflops";
  if (!parse_f64(f[18], &r->gbps)) return "bad gbps";
  if (!parse_f64(f[19], &r->error)) return "bad error";
  return row_problem(r);
}

typedef struct parse_state {
  tgemm__table_stats *stats;
  int64_t reported;
  bool bad_header;
} parse_state;

static void report_line(parse_state *ps, const char *name, int64_t line_no, const char *why,
                        const char *what_next) {
  tgemm__table_stats *st = ps->stats;
  st->n_malformed++;
  if (st->first_bad_line == 0) {
    st->first_bad_line = line_no;
    snprintf(st->first_bad, sizeof st->first_bad, "%s:%lld: %s", name, (long long)line_no, why);
  }
  if (ps->reported++ < MAX_REPORTED_LINES)
    fprintf(stderr, "tgemm: warning: tuned table %s:%lld: %s; %s\n", name, (long long)line_no, why,
            what_next);
}

/* Parse a whole file's text (modified in place). */
static tgemm_status parse_text(tgemm_ctx *ctx, struct tgemm__table *t, char *text,
                               const char *name, parse_state *ps) {
  bool seen_header = false;
  int64_t line_no = 0;
  char why[96];
  for (char *line = text; line;) {
    char *next = strchr(line, '\n');
    if (next) *next++ = '\0';
    line_no++;
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r') line[--len] = '\0';
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '\0' || *p == '#') {
      line = next;
      continue;
    }
    if (!seen_header) {
      if (strcmp(line, header_line) != 0) {
        ps->bad_header = true;
        report_line(ps, name, line_no, "the first line is not the schema-1 header", "file skipped");
        return TGEMM_OK;
      }
      seen_header = true;
      line = next;
      continue;
    }
    tgemm__table_row row;
    const char *problem = parse_row(line, &row, why, sizeof why);
    if (problem) {
      report_line(ps, name, line_no, problem, "line skipped");
    } else if (t->has_filter && !tgemm__device_key_equal(&row.device, &t->filter)) {
      ps->stats->n_foreign++;
    } else if (!insert_row(t, &row, TGEMM__TABLE_KEEP_FASTEST)) {
      return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table %s: out of memory", name);
    }
    line = next;
  }
  return TGEMM_OK;
}

static void finish_report(parse_state *ps, const char *what) {
  if (ps->reported > MAX_REPORTED_LINES)
    fprintf(stderr, "tgemm: warning: tuned table %s: %lld more malformed lines skipped\n", what,
            (long long)(ps->reported - MAX_REPORTED_LINES));
}

tgemm_status tgemm__table_load_text(tgemm_ctx *ctx, struct tgemm__table *t, const char *text,
                                    const char *name, tgemm__table_stats *stats) {
  tgemm__table_stats local;
  if (!stats) stats = &local;
  memset(stats, 0, sizeof *stats);
  if (!t || !text) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm__table_load_text: NULL argument");
  char *copy = strdup(text);
  if (!copy) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table: out of memory");
  parse_state ps = {stats, 0, false};
  tgemm_status st = parse_text(ctx, t, copy, name ? name : "<text>", &ps);
  free(copy);
  finish_report(&ps, name ? name : "<text>");
  stats->n_rows = t->n_rows;
  return st;
}

/* Read a whole file.  *text NULL with TGEMM_OK means it does not exist. */
static tgemm_status read_file(tgemm_ctx *ctx, const char *path, char **text) {
  *text = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return TGEMM_OK;
    return tgemm__set_error(ctx, TGEMM_IO_ERROR, "tuned table %s: open: %s", path, strerror(errno));
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || sb.st_size > MAX_FILE_BYTES) {
    close(fd);
    return tgemm__set_error(ctx, TGEMM_IO_ERROR, "tuned table %s: unreadable or larger than %lld bytes",
                            path, (long long)MAX_FILE_BYTES);
  }
  size_t cap = (size_t)sb.st_size + 1, len = 0;
  char *buf = malloc(cap);
  if (!buf) {
    close(fd);
    return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table %s: out of memory", path);
  }
  for (;;) {
    if (len + 1 == cap) break; /* the file grew: a table is replaced, never appended to */
    ssize_t got = read(fd, buf + len, cap - 1 - len);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      int e = errno;
      free(buf);
      close(fd);
      return tgemm__set_error(ctx, TGEMM_IO_ERROR, "tuned table %s: read: %s", path, strerror(e));
    }
    if (got == 0) break;
    len += (size_t)got;
  }
  close(fd);
  buf[len] = '\0';
  /* a stray NUL would silently end the text early; make its line malformed */
  for (size_t i = 0; i < len; i++)
    if (buf[i] == '\0') buf[i] = '?';
  *text = buf;
  return TGEMM_OK;
}

/* Load one file; *bad_header tells a foreign or newer file. */
static tgemm_status load_file(tgemm_ctx *ctx, struct tgemm__table *t, const char *path,
                              parse_state *ps, bool *exists) {
  char *text;
  tgemm_status st = read_file(ctx, path, &text);
  *exists = text != NULL;
  if (st != TGEMM_OK || !text) return st;
  st = parse_text(ctx, t, text, path, ps);
  free(text);
  return st;
}

tgemm_status tgemm__table_load(tgemm_ctx *ctx, struct tgemm__table *t, const char *paths,
                               tgemm__table_stats *stats) {
  tgemm__table_stats local;
  if (!stats) stats = &local;
  memset(stats, 0, sizeof *stats);
  if (!t || !paths) return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm__table_load: NULL argument");
  char *list = strdup(paths);
  if (!list) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table: out of memory");
  parse_state ps = {stats, 0, false};
  tgemm_status st = TGEMM_OK;
  char *save = NULL;
  for (char *path = strtok_r(list, ":", &save); path; path = strtok_r(NULL, ":", &save)) {
    bool exists;
    st = load_file(ctx, t, path, &ps, &exists);
    if (st == TGEMM_IO_ERROR) {
      /* an unreadable table costs speed, not correctness */
      fprintf(stderr, "tgemm: warning: %s; continuing without it\n", ctx ? ctx->last_error : path);
      tgemm__clear_error(ctx);
      st = TGEMM_OK;
    }
    if (st != TGEMM_OK) break;
    if (!exists) {
      stats->n_missing_files++;
      fprintf(stderr, "tgemm: warning: tuned table %s does not exist; continuing without it\n", path);
    }
  }
  finish_report(&ps, paths);
  if (st == TGEMM_OK && stats->n_foreign > 0 && t->has_filter)
    tgemm__warn_once("table-foreign",
                     "tuned table %s: skipped %lld rows measured on another device or library "
                     "version (this one: %s, %s, %d units, %s)",
                     paths, (long long)stats->n_foreign, t->filter.device, t->filter.arch,
                     t->filter.units, t->filter.lib_version);
  stats->n_rows = t->n_rows;
  free(list);
  return st;
}

tgemm_status tgemm__table_create_for_ctx(tgemm_ctx *ctx) {
  ctx->table = NULL;
  if (!ctx->tuned || !ctx->config_paths || !ctx->config_paths[0]) return TGEMM_OK;
  struct tgemm__table *t = tgemm__table_new(&ctx->device_key);
  if (!t) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table: out of memory");
  tgemm_status st = tgemm__table_load(ctx, t, ctx->config_paths, NULL);
  if (st != TGEMM_OK || t->n_rows == 0) {
    tgemm__table_free(t);
    return st;
  }
  ctx->table = t;
  return TGEMM_OK;
}

/* ------------------------------------------------------------- writing */

/* Append a CSV field, quoted when it holds a comma, quote or edge space. */
static bool put_field(char **p, char *end, const char *s) {
  size_t n = strlen(s);
  bool quote = strpbrk(s, ",\"") || (n && (s[0] == ' ' || s[n - 1] == ' ' || s[0] == '#'));
  char *w = *p;
  if (quote) {
    if (w >= end) return false;
    *w++ = '"';
  }
  for (const char *c = s; *c; c++) {
    if (w + 2 >= end) return false;
    if (*c == '"' && quote) *w++ = '"';
    *w++ = *c;
  }
  if (quote) {
    if (w >= end) return false;
    *w++ = '"';
  }
  if (w >= end) return false;
  *w++ = ',';
  *p = w;
  return true;
}

static bool put_fmt(char **p, char *end, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool put_fmt(char **p, char *end, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(*p, (size_t)(end - *p), fmt, ap);
  va_end(ap);
  if (n < 0 || n >= end - *p) return false;
  *p += n;
  return true;
}

bool tgemm__table_format_row(const tgemm__table_row *r, char *buf, size_t cap) {
  if (!cap || row_problem(r)) return false;
  char *p = buf, *end = buf + cap;
  const tgemm__kernel *k = &r->kernel;
  char params[TGEMM__KERNEL_PARAMS * 12 + 1], *q = params;
  for (int i = 0; i < TGEMM__KERNEL_PARAMS; i++)
    q += sprintf(q, i ? ";%d" : "%d", (int)k->params[i]);
  char algo[2 * sizeof k->algo + 1] = "";
  if (k->has_algo)
    for (size_t i = 0; i < sizeof k->algo; i++) sprintf(algo + 2 * i, "%02x", k->algo[i]);
  bool ok = put_fmt(&p, end, "%d,", TGEMM__TABLE_SCHEMA) && put_field(&p, end, r->device.device) &&
            put_field(&p, end, r->device.arch) && put_fmt(&p, end, "%d,", r->device.units) &&
            put_field(&p, end, r->device.lib_version) &&
            put_fmt(&p, end, "%lld,%lld,%lld,%d,%s,%s,%s,", (long long)r->shape.m,
                    (long long)r->shape.n, (long long)r->shape.k, r->shape.has_bias ? 1 : 0,
                    tgemm_dtype_name(r->shape.dtype), tgemm_dtype_name(r->shape.out_dtype),
                    tgemm_route_name(k->route)) &&
            put_field(&p, end, k->name) &&
            put_fmt(&p, end, "%s,%s,%d,%.6g,%.6g,%.6g,%.6g", params, algo, (int)r->split_k, r->us,
                    r->tflops, r->gbps, r->error);
  return ok;
}

static int compare_str(const char *a, const char *b, size_t cap) { return strncmp(a, b, cap); }

/* A stable order makes diffs of shipped tables readable. */
static int compare_rows(const void *pa, const void *pb) {
  const tgemm__table_row *a = *(const tgemm__table_row *const *)pa;
  const tgemm__table_row *b = *(const tgemm__table_row *const *)pb;
  int c;
  if ((c = compare_str(a->device.device, b->device.device, sizeof a->device.device))) return c;
  if ((c = compare_str(a->device.arch, b->device.arch, sizeof a->device.arch))) return c;
  if (a->device.units != b->device.units) return a->device.units < b->device.units ? -1 : 1;
  if ((c = compare_str(a->device.lib_version, b->device.lib_version, sizeof a->device.lib_version)))
    return c;
#define CMP_FIELD(f) \
  if (a->f != b->f) return a->f < b->f ? -1 : 1;
  CMP_FIELD(shape.dtype)
  CMP_FIELD(shape.out_dtype)
  CMP_FIELD(shape.has_bias)
  CMP_FIELD(shape.n)
  CMP_FIELD(shape.k)
  CMP_FIELD(shape.m)
  CMP_FIELD(kernel.route)
#undef CMP_FIELD
  return 0;
}

static bool write_all(int fd, const char *buf, size_t len) {
  while (len) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buf += n;
    len -= (size_t)n;
  }
  return true;
}

/* The whole file as one buffer, so it is written with few syscalls. */
static char *render(const struct tgemm__table *t, size_t *len) {
  const tgemm__table_row **order = malloc(((size_t)t->n_rows + 1) * sizeof *order);
  if (!order) return NULL;
  for (int64_t i = 0; i < t->n_rows; i++) order[i] = &t->rows[i];
  qsort(order, (size_t)t->n_rows, sizeof *order, compare_rows);
  const size_t line_cap = 1024;
  size_t cap = sizeof header_line + 1 + (size_t)t->n_rows * line_cap;
  char *buf = malloc(cap);
  if (!buf) {
    free(order);
    return NULL;
  }
  size_t n = (size_t)sprintf(buf, "%s\n", header_line);
  for (int64_t i = 0; i < t->n_rows; i++) {
    if (!tgemm__table_format_row(order[i], buf + n, line_cap - 1)) continue; /* validated at insert */
    n += strlen(buf + n);
    buf[n++] = '\n';
  }
  free(order);
  *len = n;
  return buf;
}

static void fsync_dir_of(const char *path) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == dir) dir[1] = '\0';
  else *slash = '\0';
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd); /* best effort: makes the rename itself durable */
    close(fd);
  }
}

static tgemm_status write_atomically(tgemm_ctx *ctx, const struct tgemm__table *t, const char *path) {
  size_t len;
  char *buf = render(t, &len);
  if (!buf) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table %s: out of memory", path);
  size_t tmp_len = strlen(path) + 16;
  char *tmp = malloc(tmp_len);
  if (!tmp) {
    free(buf);
    return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table %s: out of memory", path);
  }
  snprintf(tmp, tmp_len, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    tgemm_status st = tgemm__set_error(ctx, TGEMM_IO_ERROR, "tuned table %s: creating a temp file: %s",
                                       path, strerror(errno));
    free(tmp);
    free(buf);
    return st;
  }
  struct stat sb;
  mode_t mode = stat(path, &sb) == 0 ? (sb.st_mode & 0777) : 0644;
  const char *failed = NULL;
  if (fchmod(fd, mode) != 0) failed = "fchmod";
  else if (!write_all(fd, buf, len)) failed = "write";
  else if (fsync(fd) != 0) failed = "fsync";
  int e = errno;
  if (close(fd) != 0 && !failed) {
    failed = "close";
    e = errno;
  }
  if (!failed && rename(tmp, path) != 0) {
    failed = "rename";
    e = errno;
  }
  tgemm_status st = TGEMM_OK;
  if (failed) {
    unlink(tmp);
    st = tgemm__set_error(ctx, TGEMM_IO_ERROR, "tuned table %s: %s: %s", path, failed, strerror(e));
  } else {
    fsync_dir_of(path);
  }
  free(tmp);
  free(buf);
  return st;
}

tgemm_status tgemm__table_save(tgemm_ctx *ctx, const struct tgemm__table *t, const char *path) {
  if (!t || !path || !*path)
    return tgemm__set_error(ctx, TGEMM_NULL_POINTER, "tgemm__table_save: NULL table or path");
  size_t lock_len = strlen(path) + 8;
  char *lock_path = malloc(lock_len);
  if (!lock_path) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table %s: out of memory", path);
  snprintf(lock_path, lock_len, "%s.lock", path);
  int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) {
    tgemm_status st = tgemm__set_error(ctx, TGEMM_IO_ERROR, "tuned table %s: opening the lock file %s: %s",
                                       path, lock_path, strerror(errno));
    free(lock_path);
    return st;
  }
  free(lock_path);
  int rc;
  while ((rc = flock(lock_fd, LOCK_EX)) != 0 && errno == EINTR) {
  }
  if (rc != 0) {
    tgemm_status st = tgemm__set_error(ctx, TGEMM_IO_ERROR, "tuned table %s: flock: %s", path, strerror(errno));
    close(lock_fd);
    return st;
  }

  tgemm_status st = TGEMM_OK;
  struct tgemm__table *merged = tgemm__table_new(NULL);
  if (!merged) st = tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table %s: out of memory", path);
  if (st == TGEMM_OK) {
    tgemm__table_stats stats = {0};
    parse_state ps = {&stats, 0, false};
    bool exists;
    st = load_file(ctx, merged, path, &ps, &exists);
    finish_report(&ps, path);
    if (st == TGEMM_OK && ps.bad_header)
      st = tgemm__set_error(ctx, TGEMM_FORMAT_ERROR,
                            "tuned table %s: the file on disk does not start with the schema-%d "
                            "header; not overwriting it",
                            path, TGEMM__TABLE_SCHEMA);
  }
  for (int64_t i = 0; st == TGEMM_OK && i < t->n_rows; i++)
    if (!insert_row(merged, &t->rows[i], TGEMM__TABLE_KEEP_FASTEST))
      st = tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table %s: out of memory", path);
  if (st == TGEMM_OK) st = write_atomically(ctx, merged, path);
  tgemm__table_free(merged);
  flock(lock_fd, LOCK_UN);
  close(lock_fd);
  return st;
}
