/* Shape presets: the linear layers of a model, as data (DESIGN.md §7), for
 * the tuner and the bench. */
#ifndef TGEMM_TUNE_PRESET_H
#define TGEMM_TUNE_PRESET_H

#include <stdint.h>

typedef struct {
  const char *layer; /* "q_b_proj" */
  int64_t n, k;      /* y[M,N] = x[M,K]·Wᵀ */
} tgemm__layer_shape;

#define TGEMM__PRESET_MAX_LAYERS 16

/* The layers of preset `name` ("deepseek-v3") at tensor parallelism tp, into
 * out (room for TGEMM__PRESET_MAX_LAYERS).  Returns the count, -1 for an
 * unknown preset, -2 for a tp that does not divide the split dimensions. */
int tgemm__preset_layers(const char *name, int tp, tgemm__layer_shape *out);

/* The standard token counts M: 1, 2, 4, ..., 8192.  Returns the count. */
int tgemm__preset_m_list(const int64_t **out);

/* Names of the known presets, NULL-terminated (for --help). */
const char *const *tgemm__preset_names(void);

#endif
