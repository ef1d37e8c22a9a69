/* .npy reader and writer.  The header is a Python dict literal; we accept
 * exactly the subset NumPy writes (three keys, string/bool/int-tuple
 * values) and reject everything else with a message naming the problem.
 * Every length is checked against the file size before it is used. */
#include "io/npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* NumPy itself refuses headers over 10000 bytes by default; allow more for
 * many dims, but never let a file make us allocate megabytes for a header. */
#define NPY_HEADER_MAX (1u << 20)
#define NPY_ALIGN 64

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define NPY_HOST_BIG_ENDIAN 1
#else
#define NPY_HOST_BIG_ENDIAN 0
#endif

static tgemm_status npy_fail(char *err, size_t err_len, tgemm_status status,
                             const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static tgemm_status npy_fail(char *err, size_t err_len, tgemm_status status,
                             const char *fmt, ...) {
  if (err && err_len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
  }
  return status;
}

size_t tgemm__npy_dtype_size(tgemm__npy_dtype dtype) {
  switch (dtype) {
    case TGEMM__NPY_F32: return 4;
    case TGEMM__NPY_F16: return 2;
    case TGEMM__NPY_U8: return 1;
    case TGEMM__NPY_U16: return 2;
  }
  return 0;
}

const char *tgemm__npy_dtype_descr(tgemm__npy_dtype dtype) {
  switch (dtype) {
    case TGEMM__NPY_F32: return "<f4";
    case TGEMM__NPY_F16: return "<f2";
    case TGEMM__NPY_U8: return "|u1";
    case TGEMM__NPY_U16: return "<u2";
  }
  return "?";
}

/* "(3, 4)" into buf, for messages. */
static const char *shape_str(const int64_t *shape, int ndim, char *buf,
                             size_t len) {
  size_t at = 0;
  at += (size_t)snprintf(buf, len, "(");
  for (int i = 0; i < ndim && at < len; i++)
    at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? ", " : "",
                           (long long)shape[i]);
  if (at < len) snprintf(buf + at, len - at, ndim == 1 ? ",)" : ")");
  return buf;
}

/* ------------------------------------------------------------ header parse */

typedef struct npy_header {
  char descr[40];
  bool fortran_order;
  int ndim;
  int64_t shape[TGEMM__NPY_MAX_DIMS];
} npy_header;

typedef struct npy_lexer {
  const char *s;
  size_t len;
  size_t at;
  const char *name;
  char *err;
  size_t err_len;
} npy_lexer;

static void lex_skip_ws(npy_lexer *lx) {
  while (lx->at < lx->len &&
         (lx->s[lx->at] == ' ' || lx->s[lx->at] == '\t' ||
          lx->s[lx->at] == '\n' || lx->s[lx->at] == '\r'))
    lx->at++;
}

static int lex_peek(const npy_lexer *lx) {
  return lx->at < lx->len ? (unsigned char)lx->s[lx->at] : -1;
}

/* What is at the cursor, quoted, for "expected X at offset N, found Y". */
static const char *lex_found(const npy_lexer *lx, char *buf, size_t len) {
  if (lx->at >= lx->len) return "the end of the header";
  size_t n = 0;
  buf[n++] = '\'';
  for (size_t i = lx->at; i < lx->len && n + 3 < len && i < lx->at + 12; i++) {
    unsigned char c = (unsigned char)lx->s[i];
    if (c == '\n') {
      buf[n++] = '\\';
      buf[n++] = 'n';
    } else {
      buf[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
  }
  buf[n++] = '\'';
  buf[n] = '\0';
  return buf;
}

static tgemm_status lex_expected(npy_lexer *lx, const char *what) {
  char found[24];
  return npy_fail(lx->err, lx->err_len, TGEMM_FORMAT_ERROR,
                  "%s: malformed header: expected %s at offset %zu, found %s",
                  lx->name, what, lx->at, lex_found(lx, found, sizeof found));
}

/* A quoted string without escapes (NumPy never writes any in these keys). */
static tgemm_status lex_string(npy_lexer *lx, char *out, size_t cap) {
  int quote = lex_peek(lx);
  if (quote != '\'' && quote != '"') return lex_expected(lx, "a quoted string");
  size_t start = ++lx->at;
  while (lx->at < lx->len && lx->s[lx->at] != quote) {
    unsigned char c = (unsigned char)lx->s[lx->at];
    if (c == '\\' || c < 0x20 || c >= 0x7f)
      return lex_expected(lx, "a plain ASCII string character");
    lx->at++;
  }
  if (lx->at >= lx->len) return lex_expected(lx, "a closing quote");
  size_t n = lx->at - start;
  if (n + 1 > cap) {
    lx->at = start;
    return lex_expected(lx, "a string this short");
  }
  memcpy(out, lx->s + start, n);
  out[n] = '\0';
  lx->at++; /* closing quote */
  return TGEMM_OK;
}

static bool lex_word(npy_lexer *lx, const char *word) {
  size_t n = strlen(word);
  if (lx->len - lx->at < n || memcmp(lx->s + lx->at, word, n) != 0) return false;
  /* a word must end here: "Falsey" is not False */
  if (lx->at + n < lx->len) {
    char c = lx->s[lx->at + n];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9') || c == '_')
      return false;
  }
  lx->at += n;
  return true;
}

/* A non-negative decimal integer (Python 2 NumPy wrote a trailing 'L'). */
static tgemm_status lex_dim(npy_lexer *lx, int64_t *out) {
  int c = lex_peek(lx);
  if (c < '0' || c > '9')
    return lex_expected(lx, "a non-negative integer dimension");
  int64_t v = 0;
  size_t start = lx->at;
  while ((c = lex_peek(lx)) >= '0' && c <= '9') {
    int d = c - '0';
    if (v > (INT64_MAX - d) / 10) {
      lx->at = start;
      return npy_fail(lx->err, lx->err_len, TGEMM_OVERFLOW,
                      "%s: header: a dimension at offset %zu does not fit "
                      "in 64 bits", lx->name, start);
    }
    v = v * 10 + d;
    lx->at++;
  }
  if (lex_peek(lx) == 'L') lx->at++;
  *out = v;
  return TGEMM_OK;
}

/* "(a, b, ...)" with Python's tuple rules: "(5)" is not a tuple. */
static tgemm_status lex_shape(npy_lexer *lx, npy_header *h) {
  if (lex_peek(lx) != '(') return lex_expected(lx, "'(' starting the shape tuple");
  lx->at++;
  h->ndim = 0;
  bool trailing_comma = false;
  for (;;) {
    lex_skip_ws(lx);
    if (lex_peek(lx) == ')') break;
    if (h->ndim == TGEMM__NPY_MAX_DIMS)
      return npy_fail(lx->err, lx->err_len, TGEMM_UNSUPPORTED,
                      "%s: header: more than %d dimensions", lx->name,
                      TGEMM__NPY_MAX_DIMS);
    tgemm_status st = lex_dim(lx, &h->shape[h->ndim]);
    if (st != TGEMM_OK) return st;
    h->ndim++;
    lex_skip_ws(lx);
    trailing_comma = false;
    if (lex_peek(lx) == ',') {
      lx->at++;
      trailing_comma = true;
    } else if (lex_peek(lx) != ')') {
      return lex_expected(lx, "',' or ')' in the shape tuple");
    }
  }
  if (h->ndim == 1 && !trailing_comma)
    return lex_expected(lx, "',' (a 1-D shape is written '(n,)')");
  lx->at++; /* ')' */
  return TGEMM_OK;
}

static tgemm_status parse_header_dict(const char *name, const char *text,
                                      size_t len, npy_header *h, char *err,
                                      size_t err_len) {
  npy_lexer lx = {text, len, 0, name, err, err_len};
  bool seen_descr = false, seen_fortran = false, seen_shape = false;
  tgemm_status st;
  memset(h, 0, sizeof *h);

  lex_skip_ws(&lx);
  if (lex_peek(&lx) != '{') return lex_expected(&lx, "'{'");
  lx.at++;
  for (;;) {
    lex_skip_ws(&lx);
    if (lex_peek(&lx) == '}') break;
    char key[32];
    size_t key_at = lx.at;
    if ((st = lex_string(&lx, key, sizeof key)) != TGEMM_OK) return st;
    lex_skip_ws(&lx);
    if (lex_peek(&lx) != ':') return lex_expected(&lx, "':'");
    lx.at++;
    lex_skip_ws(&lx);
    bool *seen;
    if (strcmp(key, "descr") == 0) {
      seen = &seen_descr;
      if (lex_peek(&lx) == '[')
        return npy_fail(err, err_len, TGEMM_UNSUPPORTED,
                        "%s: structured dtypes (a 'descr' list) are not "
                        "supported", name);
      if ((st = lex_string(&lx, h->descr, sizeof h->descr)) != TGEMM_OK)
        return st;
    } else if (strcmp(key, "fortran_order") == 0) {
      seen = &seen_fortran;
      if (lex_word(&lx, "True")) h->fortran_order = true;
      else if (lex_word(&lx, "False")) h->fortran_order = false;
      else return lex_expected(&lx, "True or False for 'fortran_order'");
    } else if (strcmp(key, "shape") == 0) {
      seen = &seen_shape;
      if ((st = lex_shape(&lx, h)) != TGEMM_OK) return st;
    } else {
      return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                      "%s: header: unexpected key '%s' at offset %zu (only "
                      "'descr', 'fortran_order' and 'shape' are allowed)",
                      name, key, key_at);
    }
    if (*seen)
      return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                      "%s: header: key '%s' appears twice", name, key);
    *seen = true;
    lex_skip_ws(&lx);
    if (lex_peek(&lx) == ',') lx.at++;
    else if (lex_peek(&lx) != '}') return lex_expected(&lx, "',' or '}'");
  }
  lx.at++; /* '}' */
  lex_skip_ws(&lx);
  if (lx.at != lx.len)
    return lex_expected(&lx, "only spaces and a newline after the dict");
  if (!seen_descr || !seen_fortran || !seen_shape)
    return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                    "%s: header: missing key '%s'", name,
                    !seen_descr ? "descr" : !seen_fortran ? "fortran_order"
                                                          : "shape");
  return TGEMM_OK;
}

static tgemm_status descr_to_dtype(const char *name, const char *descr,
                                   tgemm__npy_dtype *out, char *err,
                                   size_t err_len) {
  static const struct {
    const char *descr;
    tgemm__npy_dtype dtype;
  } known[] = {
      {"<f4", TGEMM__NPY_F32}, {"<f2", TGEMM__NPY_F16}, {"|u1", TGEMM__NPY_U8},
      {"<u1", TGEMM__NPY_U8},  {"<u2", TGEMM__NPY_U16},
  };
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (strcmp(descr, known[i].descr) == 0) {
      *out = known[i].dtype;
      return TGEMM_OK;
    }
  if (descr[0] == '>')
    return npy_fail(err, err_len, TGEMM_UNSUPPORTED,
                    "%s: dtype '%s' is big-endian; only little-endian data "
                    "is supported (use arr.astype('<%s'))", name, descr,
                    descr + 1);
  return npy_fail(err, err_len, TGEMM_UNSUPPORTED,
                  "%s: dtype '%s' is not supported (supported: '<f4', '<f2', "
                  "'|u1', '<u2')", name, descr);
}

/* Everything about a file that its first bytes say, checked against its
 * total size: on success the data starts at *data_offset and is exactly
 * out->nbytes long (out->data stays NULL). */
static tgemm_status parse_preamble(const char *name, const uint8_t *bytes,
                                   size_t avail, size_t file_size,
                                   int want_ndim, tgemm__npy_array *out,
                                   size_t *data_offset, size_t *header_end,
                                   char *err, size_t err_len) {
  if (file_size < NPY_MAGIC_LEN + 2 || avail < NPY_MAGIC_LEN + 2)
    return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                    "%s: truncated: %zu bytes, too short for a .npy file",
                    name, file_size);
  if (memcmp(bytes, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
    return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                    "%s: not a .npy file (bad magic bytes)", name);
  unsigned major = bytes[6], minor = bytes[7];
  if (minor != 0 || major < 1 || major > 3)
    return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                    "%s: unsupported .npy format version %u.%u (known: 1.0, "
                    "2.0, 3.0)", name, major, minor);
  size_t prefix = major == 1 ? 10 : 12;
  if (file_size < prefix || avail < prefix)
    return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                    "%s: truncated: %zu bytes, too short for a version %u.0 "
                    "preamble", name, file_size, major);
  size_t header_len = major == 1
                          ? (size_t)bytes[8] | (size_t)bytes[9] << 8
                          : (size_t)bytes[8] | (size_t)bytes[9] << 8 |
                                (size_t)bytes[10] << 16 | (size_t)bytes[11] << 24;
  if (header_len > file_size - prefix)
    return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                    "%s: truncated: header_len %zu points past the end of "
                    "the file (%zu bytes)", name, header_len, file_size);
  if (header_len > NPY_HEADER_MAX)
    return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                    "%s: header_len %zu is larger than the %u-byte limit",
                    name, header_len, NPY_HEADER_MAX);
  *header_end = prefix + header_len;
  if (avail < *header_end) return TGEMM_OK; /* caller reads more and retries */

  npy_header h;
  tgemm_status st = parse_header_dict(name, (const char *)bytes + prefix,
                                      header_len, &h, err, err_len);
  if (st != TGEMM_OK) return st;
  tgemm__npy_dtype dtype = TGEMM__NPY_F32;
  if ((st = descr_to_dtype(name, h.descr, &dtype, err, err_len)) != TGEMM_OK)
    return st;
  if (h.fortran_order)
    return npy_fail(err, err_len, TGEMM_UNSUPPORTED,
                    "%s: fortran_order is True (column-major); save a C-order "
                    "array (np.ascontiguousarray)", name);
  char shape_buf[256];
  if (want_ndim > 0 && h.ndim != want_ndim)
    return npy_fail(err, err_len, TGEMM_SHAPE_MISMATCH,
                    "%s: array has %d dimension%s %s; expected %d", name,
                    h.ndim, h.ndim == 1 ? "" : "s",
                    shape_str(h.shape, h.ndim, shape_buf, sizeof shape_buf),
                    want_ndim);
  int64_t count = 1;
  for (int i = 0; i < h.ndim; i++) {
    if (h.shape[i] != 0 && count > INT64_MAX / h.shape[i]) {
      /* a zero later on would make it 0, but such a shape is absurd anyway */
      return npy_fail(err, err_len, TGEMM_OVERFLOW,
                      "%s: shape %s: element count overflows 64 bits", name,
                      shape_str(h.shape, h.ndim, shape_buf, sizeof shape_buf));
    }
    count *= h.shape[i];
  }
  size_t elem = tgemm__npy_dtype_size(dtype);
  if ((uint64_t)count > SIZE_MAX / elem)
    return npy_fail(err, err_len, TGEMM_OVERFLOW,
                    "%s: shape %s: byte count overflows", name,
                    shape_str(h.shape, h.ndim, shape_buf, sizeof shape_buf));
  size_t nbytes = (size_t)count * elem;
  size_t have = file_size - *header_end;
  if (nbytes > have)
    return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                    "%s: truncated: shape %s of '%s' needs %zu data bytes, "
                    "the file has %zu", name,
                    shape_str(h.shape, h.ndim, shape_buf, sizeof shape_buf),
                    h.descr, nbytes, have);
  if (nbytes < have)
    return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                    "%s: %zu unexpected bytes after the data of shape %s",
                    name, have - nbytes,
                    shape_str(h.shape, h.ndim, shape_buf, sizeof shape_buf));

  memset(out, 0, sizeof *out);
  out->dtype = dtype;
  out->ndim = h.ndim;
  memcpy(out->shape, h.shape, sizeof h.shape);
  out->count = count;
  out->nbytes = nbytes;
  *data_offset = *header_end;
  return TGEMM_OK;
}

static tgemm_status host_check(const char *name, char *err, size_t err_len) {
  if (NPY_HOST_BIG_ENDIAN)
    return npy_fail(err, err_len, TGEMM_UNSUPPORTED,
                    "%s: .npy I/O needs a little-endian host", name);
  return TGEMM_OK;
}

tgemm_status tgemm__npy_parse(const char *name, const uint8_t *bytes,
                              size_t len, int want_ndim,
                              tgemm__npy_array *out, char *err,
                              size_t err_len) {
  if (!out) return npy_fail(err, err_len, TGEMM_NULL_POINTER, "npy_parse: out is NULL");
  memset(out, 0, sizeof *out);
  if (!name) name = "<memory>";
  if (!bytes && len) return npy_fail(err, err_len, TGEMM_NULL_POINTER, "%s: NULL bytes", name);
  tgemm_status st = host_check(name, err, err_len);
  if (st != TGEMM_OK) return st;
  tgemm__npy_array a;
  size_t data_offset = 0, header_end = 0;
  st = parse_preamble(name, bytes, len, len, want_ndim, &a, &data_offset,
                      &header_end, err, err_len);
  if (st != TGEMM_OK) return st;
  a.data = malloc(a.nbytes ? a.nbytes : 1);
  if (!a.data)
    return npy_fail(err, err_len, TGEMM_OUT_OF_MEMORY,
                    "%s: cannot allocate %zu bytes", name, a.nbytes);
  if (a.nbytes) memcpy(a.data, bytes + data_offset, a.nbytes);
  *out = a;
  return TGEMM_OK;
}

/* ------------------------------------------------------------------ read */

static tgemm_status read_exact(FILE *f, const char *path, void *dst,
                               size_t n, char *err, size_t err_len) {
  size_t got = n ? fread(dst, 1, n, f) : 0;
  if (got != n) {
    if (ferror(f))
      return npy_fail(err, err_len, TGEMM_IO_ERROR, "%s: read failed: %s",
                      path, strerror(errno));
    return npy_fail(err, err_len, TGEMM_FORMAT_ERROR,
                    "%s: truncated: the file ended %zu bytes early (did it "
                    "change while being read?)", path, n - got);
  }
  return TGEMM_OK;
}

/* Open a regular file and get its size. */
static tgemm_status open_regular(const char *path, FILE **out, size_t *size,
                                 char *err, size_t err_len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return npy_fail(err, err_len, TGEMM_IO_ERROR, "%s: cannot open: %s", path,
                    strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0) {
    int e = errno;
    fclose(f);
    return npy_fail(err, err_len, TGEMM_IO_ERROR, "%s: cannot stat: %s", path,
                    strerror(e));
  }
  if (!S_ISREG(sb.st_mode)) {
    fclose(f);
    return npy_fail(err, err_len, TGEMM_IO_ERROR, "%s: not a regular file",
                    path);
  }
  if ((uint64_t)sb.st_size > SIZE_MAX) {
    fclose(f);
    return npy_fail(err, err_len, TGEMM_OVERFLOW, "%s: file too large", path);
  }
  *out = f;
  *size = (size_t)sb.st_size;
  return TGEMM_OK;
}

tgemm_status tgemm__npy_read(const char *path, int want_ndim,
                             tgemm__npy_array *out, char *err,
                             size_t err_len) {
  if (!out) return npy_fail(err, err_len, TGEMM_NULL_POINTER, "npy_read: out is NULL");
  memset(out, 0, sizeof *out);
  if (!path) return npy_fail(err, err_len, TGEMM_NULL_POINTER, "npy_read: path is NULL");
  tgemm_status st = host_check(path, err, err_len);
  if (st != TGEMM_OK) return st;
  if (want_ndim < 0 || want_ndim > TGEMM__NPY_MAX_DIMS)
    return npy_fail(err, err_len, TGEMM_INVALID_ARGUMENT,
                    "%s: want_ndim %d out of range", path, want_ndim);

  FILE *f;
  size_t file_size;
  if ((st = open_regular(path, &f, &file_size, err, err_len)) != TGEMM_OK)
    return st;

  uint8_t pre[12];
  size_t pre_len = file_size < sizeof pre ? file_size : sizeof pre;
  uint8_t *head = NULL;
  tgemm__npy_array a;
  size_t data_offset = 0, header_end = 0;
  if ((st = read_exact(f, path, pre, pre_len, err, err_len)) != TGEMM_OK)
    goto done;
  /* First pass: the preamble alone (header_len is checked against the file
   * size before we allocate for the header). */
  st = parse_preamble(path, pre, pre_len, file_size, want_ndim, &a,
                      &data_offset, &header_end, err, err_len);
  if (st != TGEMM_OK) goto done;
  head = malloc(header_end);
  if (!head) {
    st = npy_fail(err, err_len, TGEMM_OUT_OF_MEMORY,
                  "%s: cannot allocate %zu bytes for the header", path,
                  header_end);
    goto done;
  }
  memcpy(head, pre, pre_len < header_end ? pre_len : header_end);
  if (header_end > pre_len &&
      (st = read_exact(f, path, head + pre_len, header_end - pre_len, err,
                       err_len)) != TGEMM_OK)
    goto done;
  st = parse_preamble(path, head, header_end, file_size, want_ndim, &a,
                      &data_offset, &header_end, err, err_len);
  if (st != TGEMM_OK) goto done;
  /* Now a.nbytes is known to equal what the file holds.  A tiny header can
   * end inside the 12 bytes read first, so seek to the data. */
  if (fseek(f, (long)data_offset, SEEK_SET) != 0) {
    st = npy_fail(err, err_len, TGEMM_IO_ERROR, "%s: seek failed: %s", path,
                  strerror(errno));
    goto done;
  }
  a.data = malloc(a.nbytes ? a.nbytes : 1);
  if (!a.data) {
    st = npy_fail(err, err_len, TGEMM_OUT_OF_MEMORY,
                  "%s: cannot allocate %zu bytes for the data", path, a.nbytes);
    goto done;
  }
  if ((st = read_exact(f, path, a.data, a.nbytes, err, err_len)) != TGEMM_OK) {
    free(a.data);
    goto done;
  }
  *out = a;
done:
  free(head);
  fclose(f);
  return st;
}

void tgemm__npy_free(tgemm__npy_array *array) {
  if (!array) return;
  free(array->data);
  memset(array, 0, sizeof *array);
}

tgemm_status tgemm__raw_read(const char *path, tgemm__npy_dtype dtype,
                             int64_t rows, int64_t cols,
                             tgemm__npy_array *out, char *err,
                             size_t err_len) {
  if (!out) return npy_fail(err, err_len, TGEMM_NULL_POINTER, "raw_read: out is NULL");
  memset(out, 0, sizeof *out);
  if (!path) return npy_fail(err, err_len, TGEMM_NULL_POINTER, "raw_read: path is NULL");
  tgemm_status st = host_check(path, err, err_len);
  if (st != TGEMM_OK) return st;
  size_t elem = tgemm__npy_dtype_size(dtype);
  if (elem == 0)
    return npy_fail(err, err_len, TGEMM_INVALID_ARGUMENT,
                    "%s: unknown dtype %d", path, (int)dtype);
  if (rows <= 0 || cols <= 0)
    return npy_fail(err, err_len, TGEMM_INVALID_ARGUMENT,
                    "%s: shape [%lld, %lld] must be positive", path,
                    (long long)rows, (long long)cols);
  if (rows > INT64_MAX / cols || (uint64_t)(rows * cols) > SIZE_MAX / elem)
    return npy_fail(err, err_len, TGEMM_OVERFLOW,
                    "%s: shape [%lld, %lld] overflows", path, (long long)rows,
                    (long long)cols);
  size_t nbytes = (size_t)(rows * cols) * elem;
  FILE *f;
  size_t file_size;
  if ((st = open_regular(path, &f, &file_size, err, err_len)) != TGEMM_OK)
    return st;
  if (file_size != nbytes) {
    fclose(f);
    return npy_fail(err, err_len, TGEMM_SHAPE_MISMATCH,
                    "%s: file has %zu bytes; shape [%lld, %lld] of %zu-byte "
                    "elements needs exactly %zu", path, file_size,
                    (long long)rows, (long long)cols, elem, nbytes);
  }
  void *data = malloc(nbytes);
  if (!data) {
    fclose(f);
    return npy_fail(err, err_len, TGEMM_OUT_OF_MEMORY,
                    "%s: cannot allocate %zu bytes", path, nbytes);
  }
  st = read_exact(f, path, data, nbytes, err, err_len);
  fclose(f);
  if (st != TGEMM_OK) {
    free(data);
    return st;
  }
  out->dtype = dtype;
  out->ndim = 2;
  out->shape[0] = rows;
  out->shape[1] = cols;
  out->count = rows * cols;
  out->nbytes = nbytes;
  out->data = data;
  return TGEMM_OK;
}

/* ----------------------------------------------------------------- write */

static tgemm_status write_all(int fd, const char *path, const void *buf,
                              size_t n, char *err, size_t err_len) {
  const uint8_t *p = buf;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return npy_fail(err, err_len, TGEMM_IO_ERROR, "%s: write failed: %s",
                      path, strerror(errno));
    }
    p += w;
    n -= (size_t)w;
  }
  return TGEMM_OK;
}

tgemm_status tgemm__npy_write(const char *path, tgemm__npy_dtype dtype,
                              int ndim, const int64_t *shape,
                              const void *data, char *err, size_t err_len) {
  if (!path) return npy_fail(err, err_len, TGEMM_NULL_POINTER, "npy_write: path is NULL");
  tgemm_status st = host_check(path, err, err_len);
  if (st != TGEMM_OK) return st;
  size_t elem = tgemm__npy_dtype_size(dtype);
  if (elem == 0)
    return npy_fail(err, err_len, TGEMM_INVALID_ARGUMENT,
                    "%s: unknown dtype %d", path, (int)dtype);
  if (ndim < 0 || ndim > TGEMM__NPY_MAX_DIMS || (ndim > 0 && !shape))
    return npy_fail(err, err_len, TGEMM_INVALID_ARGUMENT,
                    "%s: ndim %d out of range 0..%d (or NULL shape)", path,
                    ndim, TGEMM__NPY_MAX_DIMS);
  int64_t count = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return npy_fail(err, err_len, TGEMM_INVALID_ARGUMENT,
                      "%s: negative dimension %lld", path, (long long)shape[i]);
    if (shape[i] != 0 && count > INT64_MAX / shape[i])
      return npy_fail(err, err_len, TGEMM_OVERFLOW, "%s: shape overflows", path);
    count *= shape[i];
  }
  if ((uint64_t)count > SIZE_MAX / elem)
    return npy_fail(err, err_len, TGEMM_OVERFLOW, "%s: shape overflows", path);
  size_t nbytes = (size_t)count * elem;
  if (nbytes && !data)
    return npy_fail(err, err_len, TGEMM_NULL_POINTER, "%s: NULL data", path);

  /* Header as NumPy writes it, padded with spaces so the data starts on a
   * 64-byte boundary, ending in '\n'. */
  char dict[512];
  int n = snprintf(dict, sizeof dict,
                   "{'descr': '%s', 'fortran_order': False, 'shape': (",
                   tgemm__npy_dtype_descr(dtype));
  for (int i = 0; i < ndim; i++)
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld", i ? ", " : "",
                  (long long)shape[i]);
  n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }",
                ndim == 1 ? "," : "");
  size_t dict_len = (size_t)n;
  size_t prefix = 10;
  size_t total = (prefix + dict_len + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
  if (total - prefix > 65535) { /* cannot happen with 8 dims; kept honest */
    prefix = 12;
    total = (prefix + dict_len + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
  }
  uint8_t head[640];
  size_t header_len = total - prefix;
  memcpy(head, NPY_MAGIC, NPY_MAGIC_LEN);
  head[6] = prefix == 10 ? 1 : 2;
  head[7] = 0;
  head[8] = (uint8_t)(header_len & 0xff);
  head[9] = (uint8_t)(header_len >> 8);
  if (prefix == 12) {
    head[10] = (uint8_t)(header_len >> 16);
    head[11] = (uint8_t)(header_len >> 24);
  }
  memcpy(head + prefix, dict, dict_len);
  memset(head + prefix + dict_len, ' ', total - prefix - dict_len - 1);
  head[total - 1] = '\n';

  /* Temp file in the same directory, so rename() is atomic. */
  static unsigned counter;
  size_t tmp_cap = strlen(path) + 48;
  char *tmp = malloc(tmp_cap);
  if (!tmp)
    return npy_fail(err, err_len, TGEMM_OUT_OF_MEMORY, "%s: out of memory", path);
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
    unsigned id = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    snprintf(tmp, tmp_cap, "%s.tmp.%ld.%u", path, (long)getpid(), id);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    st = npy_fail(err, err_len, TGEMM_IO_ERROR,
                  "%s: cannot create temp file %s: %s", path, tmp,
                  strerror(errno));
    free(tmp);
    return st;
  }
  st = write_all(fd, path, head, total, err, err_len);
  if (st == TGEMM_OK) st = write_all(fd, path, data, nbytes, err, err_len);
  if (st == TGEMM_OK && fsync(fd) != 0)
    st = npy_fail(err, err_len, TGEMM_IO_ERROR, "%s: fsync failed: %s", path,
                  strerror(errno));
  if (close(fd) != 0 && st == TGEMM_OK)
    st = npy_fail(err, err_len, TGEMM_IO_ERROR, "%s: close failed: %s", path,
                  strerror(errno));
  if (st == TGEMM_OK && rename(tmp, path) != 0)
    st = npy_fail(err, err_len, TGEMM_IO_ERROR, "%s: rename from %s failed: %s",
                  path, tmp, strerror(errno));
  if (st != TGEMM_OK) unlink(tmp);
  free(tmp);
  return st;
}
