/* Small helpers shared by the subcommands: option parsing and matrices
 * moved between files, host memory and the context's memory. */
#ifndef TGEMM_TOOLS_CLI_UTIL_H
#define TGEMM_TOOLS_CLI_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "io/npy.h"
#include "tgemm.h"

/* argv[*i] is `flag`: take its value (argv[++*i]) or print an error. */
bool cli_take_value(int argc, char **argv, int *i, const char *cmd, const char **value);
bool cli_is_help(const char *arg);

/* Parse "1,2,4" into up to cap positive integers; returns the count, or -1. */
int cli_parse_int_list(const char *text, int64_t *out, int cap);

/* Backend names: auto, cpu, cuda. */
bool cli_parse_backend(const char *text, tgemm_backend_kind *out);

/* Convert a host f32/f16 npy array into a new host buffer of dtype. */
void *cli_convert_host(const tgemm__npy_array *a, tgemm_dtype dtype);

/* Copy a host buffer into the context's memory (a plain copy on CPU). */
tgemm_status cli_upload(tgemm_ctx *ctx, const void *host, size_t bytes, void **dev);

/* Index of the first non-finite value of an f32/f16 array, or -1. */
int64_t cli_first_nonfinite(const tgemm__npy_array *a);

#endif
