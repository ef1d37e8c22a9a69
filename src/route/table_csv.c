/* The table's CSV form: one header line, then one line per row; fields
 * that hold a comma or quote are quoted.  The reader reports a bad line
 * with file:line and skips it; nothing in a file can crash it. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route/table.h"
#include "route/table_internal.h"

#define N_COLUMNS 20
/* Malformed lines printed per load call; the rest are only counted. */
#define MAX_REPORTED_LINES 10

static const char header_line[] =
    "schema,device,arch,units,lib_version,m,n,k,bias,dtype,out_dtype,route,"
    "kernel,params,algo,split_k,us,tflops,gbps,error";

const char *tgemm__table_header(void) { return header_line; }

/* ------------------------------------------------------------- reading */


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
  return tgemm__table_row_problem(r);
}

static void report_line(tgemm__table_parse *ps, const char *name, int64_t line_no, const char *why,
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
tgemm_status tgemm__table_parse_text(tgemm_ctx *ctx, struct tgemm__table *t, char *text,
                               const char *name, tgemm__table_parse *ps) {
  const tgemm__device_key *filter = tgemm__table_filter(t);
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
    } else if (filter && !tgemm__device_key_equal(&row.device, filter)) {
      ps->stats->n_foreign++;
    } else if (!tgemm__table_insert_unchecked(t, &row, TGEMM__TABLE_KEEP_FASTEST)) {
      return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table %s: out of memory", name);
    }
    line = next;
  }
  return TGEMM_OK;
}

void tgemm__table_parse_finish(tgemm__table_parse *ps, const char *what) {
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
  tgemm__table_parse ps = {stats, 0, false};
  tgemm_status st = tgemm__table_parse_text(ctx, t, copy, name ? name : "<text>", &ps);
  free(copy);
  tgemm__table_parse_finish(&ps, name ? name : "<text>");
  stats->n_rows = tgemm__table_size(t);
  return st;
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
  if (!cap || tgemm__table_row_problem(r)) return false;
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

/* The whole file as one buffer, so it is written with few syscalls. */
char *tgemm__table_render(const struct tgemm__table *t, size_t *len) {
  int64_t n_rows = tgemm__table_size(t);
  const tgemm__table_row **order = malloc(((size_t)n_rows + 1) * sizeof *order);
  if (!order) return NULL;
  for (int64_t i = 0; i < n_rows; i++) order[i] = tgemm__table_row_at(t, i);
  qsort(order, (size_t)n_rows, sizeof *order, compare_rows);
  const size_t line_cap = 1024;
  size_t cap = sizeof header_line + 1 + (size_t)n_rows * line_cap;
  char *buf = malloc(cap);
  if (!buf) {
    free(order);
    return NULL;
  }
  size_t n = (size_t)sprintf(buf, "%s\n", header_line);
  for (int64_t i = 0; i < n_rows; i++) {
    if (!tgemm__table_format_row(order[i], buf + n, line_cap - 1)) continue; /* validated at insert */
    n += strlen(buf + n);
    buf[n++] = '\n';
  }
  free(order);
  *len = n;
  return buf;
}

