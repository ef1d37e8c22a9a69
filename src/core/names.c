/* Names of status codes, dtypes, routes and scale modes, and their parsers. */
#include <string.h>
#include <strings.h>

#include "tgemm.h"

const char *tgemm_status_name(tgemm_status status) {
  switch (status) {
#define TGEMM__STATUS_NAME(name, value, msg) \
  case TGEMM_##name:                         \
    return "TGEMM_" #name;
    TGEMM_STATUS_MAP(TGEMM__STATUS_NAME)
#undef TGEMM__STATUS_NAME
  }
  return "TGEMM_UNKNOWN_STATUS";
}

const char *tgemm_status_str(tgemm_status status) {
  switch (status) {
#define TGEMM__STATUS_STR(name, value, msg) \
  case TGEMM_##name:                        \
    return msg;
    TGEMM_STATUS_MAP(TGEMM__STATUS_STR)
#undef TGEMM__STATUS_STR
  }
  return "unknown status";
}

unsigned tgemm_version(void) { return TGEMM_VERSION_HEX; }

const char *tgemm_version_string(void) {
#define TGEMM__STR2(x) #x
#define TGEMM__STR(x) TGEMM__STR2(x)
  return TGEMM__STR(TGEMM_VERSION_MAJOR) "." TGEMM__STR(
      TGEMM_VERSION_MINOR) "." TGEMM__STR(TGEMM_VERSION_PATCH);
}

static const char *const dtype_names[] = {"f32", "f16", "bf16", "mxfp4"};
static const char *const route_names[] = {"auto",  "reference", "skinny",
                                          "library", "w4a16",   "w4a4"};
static const char *const scale_mode_names[] = {"even", "floor", "rceil"};

#define COUNT_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

const char *tgemm_dtype_name(tgemm_dtype dtype) {
  return (unsigned)dtype < (unsigned)COUNT_OF(dtype_names) ? dtype_names[dtype]
                                                           : "invalid-dtype";
}

const char *tgemm_route_name(tgemm_route route) {
  return (unsigned)route < (unsigned)COUNT_OF(route_names) ? route_names[route]
                                                           : "invalid-route";
}

const char *tgemm_scale_mode_name(tgemm_scale_mode mode) {
  return (unsigned)mode < (unsigned)COUNT_OF(scale_mode_names)
             ? scale_mode_names[mode]
             : "invalid-scale-mode";
}

static int find_name(const char *text, const char *const *names, int count) {
  if (!text) return -1;
  for (int i = 0; i < count; i++)
    if (strcasecmp(text, names[i]) == 0) return i;
  return -1;
}

tgemm_status tgemm_dtype_parse(const char *text, tgemm_dtype *out) {
  int i = find_name(text, dtype_names, COUNT_OF(dtype_names));
  if (i < 0 && text) {
    if (!strcasecmp(text, "float32") || !strcasecmp(text, "fp32")) i = TGEMM_F32;
    else if (!strcasecmp(text, "float16") || !strcasecmp(text, "fp16")) i = TGEMM_F16;
    else if (!strcasecmp(text, "bfloat16")) i = TGEMM_BF16;
  }
  if (i < 0 || !out) return i < 0 ? TGEMM_INVALID_ARGUMENT : TGEMM_NULL_POINTER;
  *out = (tgemm_dtype)i;
  return TGEMM_OK;
}

tgemm_status tgemm_route_parse(const char *text, tgemm_route *out) {
  int i = find_name(text, route_names, COUNT_OF(route_names));
  if (i < 0 && text && !strcasecmp(text, "ref")) i = TGEMM_ROUTE_REFERENCE;
  if (i < 0 || !out) return i < 0 ? TGEMM_INVALID_ARGUMENT : TGEMM_NULL_POINTER;
  *out = (tgemm_route)i;
  return TGEMM_OK;
}

tgemm_status tgemm_scale_mode_parse(const char *text, tgemm_scale_mode *out) {
  int i = find_name(text, scale_mode_names, COUNT_OF(scale_mode_names));
  if (i < 0 || !out) return i < 0 ? TGEMM_INVALID_ARGUMENT : TGEMM_NULL_POINTER;
  *out = (tgemm_scale_mode)i;
  return TGEMM_OK;
}

size_t tgemm_dtype_size(tgemm_dtype dtype) {
  switch (dtype) {
    case TGEMM_F32: return 4;
    case TGEMM_F16:
    case TGEMM_BF16: return 2;
    default: return 0;
  }
}
