/* Table files: loading a ':'-separated list (a missing or unreadable file
 * is a warning, never an error) and saving atomically (temp file in the
 * same folder, fsync, rename) under an flock on "<path>.lock", merged with
 * what is on disk at that moment. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "route/table.h"
#include "route/table_internal.h"

/* Refuse to slurp anything this large: a table has thousands of rows. */
#define MAX_FILE_BYTES ((int64_t)256 << 20)

/* ------------------------------------------------------------- loading */

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
                              tgemm__table_parse *ps, bool *exists) {
  char *text;
  tgemm_status st = read_file(ctx, path, &text);
  *exists = text != NULL;
  if (st != TGEMM_OK || !text) return st;
  st = tgemm__table_parse_text(ctx, t, text, path, ps);
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
  tgemm__table_parse ps = {stats, 0, false};
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
  tgemm__table_parse_finish(&ps, paths);
  const tgemm__device_key *filter = tgemm__table_filter(t);
  if (st == TGEMM_OK && stats->n_foreign > 0 && filter)
    tgemm__warn_once("table-foreign",
                     "tuned table %s: skipped %lld rows measured on another device or library "
                     "version (this one: %s, %s, %d units, %s)",
                     paths, (long long)stats->n_foreign, filter->device, filter->arch, filter->units,
                     filter->lib_version);
  stats->n_rows = tgemm__table_size(t);
  free(list);
  return st;
}

tgemm_status tgemm__table_create_for_ctx(tgemm_ctx *ctx) {
  ctx->table = NULL;
  if (!ctx->tuned || !ctx->config_paths || !ctx->config_paths[0]) return TGEMM_OK;
  struct tgemm__table *t = tgemm__table_new(&ctx->device_key);
  if (!t) return tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table: out of memory");
  tgemm_status st = tgemm__table_load(ctx, t, ctx->config_paths, NULL);
  if (st != TGEMM_OK || tgemm__table_size(t) == 0) {
    tgemm__table_free(t);
    return st;
  }
  ctx->table = t;
  return TGEMM_OK;
}

/* -------------------------------------------------------------- saving */

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
  char *buf = tgemm__table_render(t, &len);
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
    tgemm__table_parse ps = {&stats, 0, false};
    bool exists;
    st = load_file(ctx, merged, path, &ps, &exists);
    tgemm__table_parse_finish(&ps, path);
    if (st == TGEMM_OK && ps.bad_header)
      st = tgemm__set_error(ctx, TGEMM_FORMAT_ERROR,
                            "tuned table %s: the file on disk does not start with the schema-%d "
                            "header; not overwriting it",
                            path, TGEMM__TABLE_SCHEMA);
  }
  for (int64_t i = 0; st == TGEMM_OK && i < tgemm__table_size(t); i++)
    if (!tgemm__table_insert_unchecked(merged, tgemm__table_row_at(t, i), TGEMM__TABLE_KEEP_FASTEST))
      st = tgemm__set_error(ctx, TGEMM_OUT_OF_MEMORY, "tuned table %s: out of memory", path);
  if (st == TGEMM_OK) st = write_atomically(ctx, merged, path);
  tgemm__table_free(merged);
  flock(lock_fd, LOCK_UN);
  close(lock_fd);
  return st;
}
