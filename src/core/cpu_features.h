/* What the CPU can do, detected once at run time. */
#ifndef TGEMM_CORE_CPU_FEATURES_H
#define TGEMM_CORE_CPU_FEATURES_H

#include <stdbool.h>

/* Use as `const struct tgemm__cpu_features *f = tgemm__cpu_features();`
 * (the function has the struct's name, so there is no typedef). */
struct tgemm__cpu_features {
  bool avx2, fma, f16c, avx512f;
  int n_cores;      /* online logical CPUs */
  char model[96];   /* /proc/cpuinfo "model name", or "unknown" */
};

const struct tgemm__cpu_features *tgemm__cpu_features(void);

/* Tests: pretend the vector units are absent (true) to exercise the scalar
 * fallbacks, or restore detection (false). */
void tgemm__cpu_features_force_scalar(bool scalar);

#endif
