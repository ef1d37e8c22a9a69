/* Run-time CPU feature detection (cpuid via the compiler's builtins). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/cpu_features.h"

static struct tgemm__cpu_features detected;
static struct tgemm__cpu_features scalar_view;
static int detected_done;
static int force_scalar;

static void read_model(char *model, size_t size) {
  snprintf(model, size, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) == 0) {
      const char *colon = strchr(line, ':');
      if (colon) {
        colon++;
        while (*colon == ' ') colon++;
        snprintf(model, size, "%s", colon);
        model[strcspn(model, "\n")] = '\0';
      }
      break;
    }
  }
  fclose(f);
}

static void detect(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  detected.avx2 = __builtin_cpu_supports("avx2");
  detected.fma = __builtin_cpu_supports("fma");
  detected.avx512f = __builtin_cpu_supports("avx512f");
  /* F16C has no __builtin_cpu_supports name in every GCC; AVX2 CPUs have it. */
  detected.f16c = detected.avx2;
#endif
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  detected.n_cores = n > 0 ? (int)n : 1;
  read_model(detected.model, sizeof detected.model);
  scalar_view = detected;
  scalar_view.avx2 = scalar_view.fma = scalar_view.f16c = scalar_view.avx512f = false;
}

const struct tgemm__cpu_features *tgemm__cpu_features(void) {
  /* Detection is idempotent, so a benign race only repeats it. */
  if (!__atomic_load_n(&detected_done, __ATOMIC_ACQUIRE)) {
    detect();
    __atomic_store_n(&detected_done, 1, __ATOMIC_RELEASE);
  }
  return __atomic_load_n(&force_scalar, __ATOMIC_RELAXED) ? &scalar_view : &detected;
}

void tgemm__cpu_features_force_scalar(bool scalar) {
  tgemm__cpu_features();
  __atomic_store_n(&force_scalar, scalar ? 1 : 0, __ATOMIC_RELAXED);
}
