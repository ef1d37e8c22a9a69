/* NumPy .npy files (format versions 1.0, 2.0 and 3.0), read strictly and
 * written atomically, plus raw little-endian files with an explicit shape.
 *
 * Errors come back as a tgemm_status and a one-line message in a caller's
 * buffer ("w.npy: header: 'descr' is '>f4' (big-endian); ..."), so that the
 * CLI and the library (through tgemm__set_error) can both use them. */
#ifndef TGEMM_IO_NPY_H
#define TGEMM_IO_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "tgemm.h"

#define TGEMM__NPY_MAX_DIMS 8

/* Element types we read and write; all little-endian. */
typedef enum tgemm__npy_dtype {
  TGEMM__NPY_F32 = 0, /* '<f4' */
  TGEMM__NPY_F16 = 1, /* '<f2' */
  TGEMM__NPY_U8 = 2,  /* '|u1' (also read as '<u1') */
  TGEMM__NPY_U16 = 3, /* '<u2': e.g. raw bf16 bits */
} tgemm__npy_dtype;

typedef struct tgemm__npy_array {
  tgemm__npy_dtype dtype;
  int ndim;
  int64_t shape[TGEMM__NPY_MAX_DIMS];
  int64_t count;  /* product of shape (1 for 0-D) */
  size_t nbytes;  /* count * element size */
  void *data;     /* malloc'd, C order; never NULL after a successful read */
} tgemm__npy_array;

/* Bytes of one element, and the descr string ('<f4', ...). */
size_t tgemm__npy_dtype_size(tgemm__npy_dtype dtype);
const char *tgemm__npy_dtype_descr(tgemm__npy_dtype dtype);

/* Read a .npy file.  want_ndim > 0 requires exactly that many dimensions;
 * 0 accepts any (0-D up to TGEMM__NPY_MAX_DIMS).  Nothing is allocated for
 * the data before its size has been checked against the file's.  Statuses:
 * TGEMM_IO_ERROR (open/read), TGEMM_FORMAT_ERROR (bad magic, version,
 * header, truncation, trailing bytes), TGEMM_UNSUPPORTED (dtype, byte
 * order, fortran_order), TGEMM_SHAPE_MISMATCH (ndim), TGEMM_OVERFLOW (shape
 * product), TGEMM_OUT_OF_MEMORY.  On failure *out is zeroed and err holds
 * the message (err may be NULL). */
tgemm_status tgemm__npy_read(const char *path, int want_ndim,
                             tgemm__npy_array *out, char *err,
                             size_t err_len);

/* Parse a whole .npy image held in memory (what tgemm__npy_read does after
 * reading the file).  `name` prefixes messages. */
tgemm_status tgemm__npy_parse(const char *name, const uint8_t *bytes,
                              size_t len, int want_ndim,
                              tgemm__npy_array *out, char *err,
                              size_t err_len);

/* Free the data of an array (safe on a zeroed one) and zero it. */
void tgemm__npy_free(tgemm__npy_array *array);

/* Write a C-order array of ndim (0..TGEMM__NPY_MAX_DIMS) dims as a
 * version 1.0 file (2.0 when the header would not fit), atomically: a temp
 * file in the same directory, then rename over path. */
tgemm_status tgemm__npy_write(const char *path, tgemm__npy_dtype dtype,
                              int ndim, const int64_t *shape,
                              const void *data, char *err, size_t err_len);

/* Read a raw little-endian file holding a C-order [rows, cols] array of
 * `dtype` (e.g. TGEMM__NPY_U16 for bf16 bits) and nothing else: the file
 * size must be exactly rows * cols * element size. */
tgemm_status tgemm__raw_read(const char *path, tgemm__npy_dtype dtype,
                             int64_t rows, int64_t cols,
                             tgemm__npy_array *out, char *err,
                             size_t err_len);

#endif
