/* The untuned log: one CSV line per shape that missed the table, written
 * with O_APPEND under an flock so that several processes can share a file. */
#include "route/untuned_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Shapes remembered per process; past this, new shapes are not logged (a
 * model has a few dozen distinct linear shapes, so this is never reached in
 * practice, and the bound keeps memory fixed). */
#define SEEN_CAP 4096

static uint64_t seen[SEEN_CAP * 2]; /* open addressing; 0 = empty */
static int seen_count;
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

static uint64_t fnv_str(uint64_t h, const char *s, size_t cap) {
  size_t n = strnlen(s, cap);
  return fnv(fnv(h, s, n), "", 1);
}

static uint64_t entry_hash(const tgemm_ctx *ctx, const tgemm__shape *s) {
  uint64_t h = 14695981039346656037ull;
  h = fnv_str(h, ctx->untuned_log, 4096);
  const tgemm__device_key *d = &ctx->device_key;
  h = fnv_str(h, d->device, sizeof d->device);
  h = fnv_str(h, d->arch, sizeof d->arch);
  h = fnv_str(h, d->lib_version, sizeof d->lib_version);
  int64_t fields[7] = {s->m, s->n, s->k, s->dtype, s->out_dtype, s->has_bias, d->units};
  h = fnv(h, fields, sizeof fields);
  return h ? h : 1;
}

/* true when h was not seen before and is now remembered. */
static bool remember(uint64_t h) {
  bool fresh = false, full = false;
  pthread_mutex_lock(&seen_lock);
  size_t mask = SEEN_CAP * 2 - 1;
  size_t i = (size_t)h & mask;
  while (seen[i] && seen[i] != h) i = (i + 1) & mask;
  if (!seen[i]) {
    if (seen_count < SEEN_CAP) {
      seen[i] = h;
      seen_count++;
      fresh = true;
    } else {
      full = true;
    }
  }
  pthread_mutex_unlock(&seen_lock);
  if (full)
    tgemm__warn_once("untuned-log-full", "untuned log: more than %d distinct shapes; not logging more",
                     SEEN_CAP);
  return fresh;
}

void tgemm__untuned_log_reset(void) {
  pthread_mutex_lock(&seen_lock);
  memset(seen, 0, sizeof seen);
  seen_count = 0;
  pthread_mutex_unlock(&seen_lock);
}

/* A CSV field: device names are quoted when they hold a comma or quote. */
static void put_field(char *dst, size_t cap, const char *s, size_t s_cap) {
  size_t n = strnlen(s, s_cap);
  if (!memchr(s, ',', n) && !memchr(s, '"', n)) {
    snprintf(dst, cap, "%.*s", (int)n, s);
    return;
  }
  size_t w = 0;
  if (w + 1 < cap) dst[w++] = '"';
  for (size_t i = 0; i < n && w + 3 < cap; i++) {
    if (s[i] == '"') dst[w++] = '"';
    dst[w++] = s[i] == '\n' ? ' ' : s[i];
  }
  if (w + 1 < cap) dst[w++] = '"';
  dst[w] = '\0';
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

void tgemm__untuned_log_record(tgemm_ctx *ctx, const tgemm__shape *s) {
  if (!ctx || !ctx->untuned_log || !ctx->untuned_log[0]) return;
  if (!remember(entry_hash(ctx, s))) return;

  const tgemm__device_key *d = &ctx->device_key;
  char device[2 * sizeof d->device + 3], arch[2 * sizeof d->arch + 3],
      lib[2 * sizeof d->lib_version + 3];
  put_field(device, sizeof device, d->device, sizeof d->device);
  put_field(arch, sizeof arch, d->arch, sizeof d->arch);
  put_field(lib, sizeof lib, d->lib_version, sizeof d->lib_version);
  char line[1024];
  int len = snprintf(line, sizeof line, "%lld,%lld,%lld,%d,%s,%s,%s,%s,%d,%s\n", (long long)s->m,
                     (long long)s->n, (long long)s->k, s->has_bias ? 1 : 0,
                     tgemm_dtype_name(s->dtype), tgemm_dtype_name(s->out_dtype), device, arch,
                     d->units, lib);
  if (len < 0 || (size_t)len >= sizeof line) return;

  int fd = open(ctx->untuned_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    tgemm__warn_once("untuned-log-open", "untuned log %s: %s; shapes are not logged",
                     ctx->untuned_log, strerror(errno));
    return;
  }
  /* The lock makes "empty? then write the header" atomic across processes. */
  while (flock(fd, LOCK_EX) != 0 && errno == EINTR) {
  }
  struct stat sb;
  bool ok = true;
  if (fstat(fd, &sb) == 0 && sb.st_size == 0)
    ok = write_all(fd, TGEMM__UNTUNED_LOG_HEADER "\n", sizeof TGEMM__UNTUNED_LOG_HEADER);
  ok = ok && write_all(fd, line, (size_t)len);
  flock(fd, LOCK_UN);
  close(fd);
  if (!ok)
    tgemm__warn_once("untuned-log-write", "untuned log %s: write failed; shapes may be missing",
                     ctx->untuned_log);
}
