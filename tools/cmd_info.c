/* tgemm info: what this build and machine can do. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "core/backend.h"
#include "core/cpu_features.h"
#include "tgemm.h"

static void print_ctx(tgemm_backend_kind kind, const char *label) {
  tgemm_ctx_options o;
  tgemm_ctx_options_default(&o);
  o.backend = kind;
  tgemm_ctx *ctx = NULL;
  tgemm_status st = tgemm_ctx_create(&o, &ctx);
  if (st != TGEMM_OK) {
    printf("  %-5s unavailable: %s (%s)\n", label, tgemm_ctx_create_error(), tgemm_status_name(st));
    return;
  }
  printf("  %-5s %s\n", label, tgemm_ctx_device_name(ctx));
  tgemm_ctx_free(ctx);
}

int tgemm__cmd_info(int argc, char **argv) {
  if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("usage: tgemm info\n\nPrints the version, the backends built in, the devices found and the CPU "
           "features detected.\n");
    return 0;
  }
  if (argc > 1) {
    fprintf(stderr, "tgemm info: unexpected argument '%s'\n", argv[1]);
    return 2;
  }
  const struct tgemm__cpu_features *f = tgemm__cpu_features();
  printf("tgemm %s\n", tgemm_version_string());
  printf("backends built: cpu%s\n", tgemm__cuda_backend_get() ? ", cuda" : " (CUDA backend not built)");
  printf("cpu: %s, %d logical cores, avx2=%s fma=%s f16c=%s avx512f=%s\n", f->model, f->n_cores,
         f->avx2 ? "yes" : "no", f->fma ? "yes" : "no", f->f16c ? "yes" : "no", f->avx512f ? "yes" : "no");
  printf("devices:\n");
  print_ctx(TGEMM_BACKEND_CPU, "cpu");
  if (tgemm__cuda_backend_get()) print_ctx(TGEMM_BACKEND_CUDA, "cuda");
  return 0;
}
