/* Helpers shared by the subcommands (see cli_util.h). */
#include "cli_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype_convert.h"

bool cli_is_help(const char *arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

bool cli_take_value(int argc, char **argv, int *i, const char *cmd, const char **value) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "tgemm %s: %s needs a value\n", cmd, argv[*i]);
    return false;
  }
  *value = argv[++*i];
  return true;
}

int cli_parse_int_list(const char *text, int64_t *out, int cap) {
  int count = 0;
  const char *p = text;
  while (*p) {
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (end == p || errno || v <= 0 || count == cap) return -1;
    out[count++] = v;
    if (*end == ',') end++;
    else if (*end) return -1;
    p = end;
  }
  return count > 0 ? count : -1;
}

bool cli_parse_backend(const char *text, tgemm_backend_kind *out) {
  if (!strcmp(text, "auto")) *out = TGEMM_BACKEND_AUTO;
  else if (!strcmp(text, "cpu")) *out = TGEMM_BACKEND_CPU;
  else if (!strcmp(text, "cuda")) *out = TGEMM_BACKEND_CUDA;
  else return false;
  return true;
}

static float npy_value(const tgemm__npy_array *a, int64_t i) {
  return a->dtype == TGEMM__NPY_F32 ? ((const float *)a->data)[i]
                                    : tgemm__f16_to_f32(((const uint16_t *)a->data)[i]);
}

void *cli_convert_host(const tgemm__npy_array *a, tgemm_dtype dtype) {
  size_t size = tgemm_dtype_size(dtype);
  void *out = malloc((size_t)a->count * size);
  if (!out) return NULL;
  for (int64_t i = 0; i < a->count; i++) {
    float v = npy_value(a, i);
    if (dtype == TGEMM_F32) ((float *)out)[i] = v;
    else if (dtype == TGEMM_F16) ((uint16_t *)out)[i] = tgemm__f32_to_f16(v);
    else ((uint16_t *)out)[i] = tgemm__f32_to_bf16(v);
  }
  return out;
}

tgemm_status cli_upload(tgemm_ctx *ctx, const void *host, size_t bytes, void **dev) {
  tgemm_status st = tgemm_malloc(ctx, bytes, dev);
  if (st != TGEMM_OK) return st;
  st = tgemm_memcpy(ctx, *dev, host, bytes, TGEMM_COPY_HOST_TO_DEVICE);
  if (st != TGEMM_OK) {
    tgemm_free(ctx, *dev);
    *dev = NULL;
  }
  return st;
}

int64_t cli_first_nonfinite(const tgemm__npy_array *a) {
  if (a->dtype != TGEMM__NPY_F32 && a->dtype != TGEMM__NPY_F16) return -1;
  for (int64_t i = 0; i < a->count; i++)
    if (!isfinite(npy_value(a, i))) return i;
  return -1;
}
