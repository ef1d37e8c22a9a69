/* tgemm: command-line entry point; each subcommand lives in its own file. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "commands_quant.h"
#include "commands_tune.h"
#include "tgemm.h"

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} command;

static const command commands[] = {
    {"info", tgemm__cmd_info, "version, backends, devices and CPU features"},
    {"bench", tgemm__cmd_bench, "time every route against the library default (the main job)"},
    {"linear", tgemm__cmd_linear, "run one linear layer on .npy data"},
    {"quant", tgemm__cmd_quant, "quantize a matrix to MXFP4"},
    {"dequant", tgemm__cmd_dequant, "dequantize MXFP4 back to float32"},
    {"tune", tgemm__cmd_tune, "measure every kernel per shape and write a tuned table"},
};

static void usage(FILE *f) {
  fprintf(f, "tgemm %s: y = x*W^T + b through the fastest measured kernel\n\n", tgemm_version_string());
  fprintf(f, "usage: tgemm <command> [options]   (tgemm <command> --help for more)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf(f,
          "\nenvironment:\n"
          "  TGEMM_TUNED=0|1      tuned-table routing off or on (default on)\n"
          "  TGEMM_CONFIG=a:b     tuned table files\n"
          "  TGEMM_LOG_UNTUNED=f  record shapes the tables miss\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("tgemm %s\n", tgemm_version_string());
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "tgemm: unknown command '%s' (try tgemm --help)\n", argv[1]);
  return 2;
}
