/* Runs the tgemm CLI (path in TGEMM_CLI) from a test: a temp folder, its
 * paths, and a spawn that captures stdout and stderr.  Header-only so that
 * each CLI test stays one executable. */
#ifndef TGEMM_TESTS_CLI_RUNNER_H
#define TGEMM_TESTS_CLI_RUNNER_H

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

extern char **environ;

static const char *cli;
static char out_text[1 << 16];
static char err_text[1 << 16];

static void slurp(const char *path, char *dst, size_t cap) {
  dst[0] = '\0';
  FILE *f = fopen(path, "rb");
  if (!f) return;
  size_t n = fread(dst, 1, cap - 1, f);
  dst[n] = '\0';
  fclose(f);
}

/* Run the CLI with args (NULL-terminated); stdout/stderr land in out_text
 * and err_text.  Returns the exit code, or -1 if it died from a signal. */
static int run_cli(const char *const *args) {
  const char *argv[32];
  int n = 0;
  argv[n++] = cli;
  for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
  argv[n] = NULL;
  /* Own buffers: the callers hold test_tmp_path entries across many calls. */
  static char out_path[640], err_path[640];
  snprintf(out_path, sizeof out_path, "%s/stdout.txt", test_tmp_dir());
  snprintf(err_path, sizeof err_path, "%s/stderr.txt", test_tmp_dir());
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  int rc = posix_spawn(&pid, cli, &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    fprintf(stderr, "posix_spawn %s: %s\n", cli, strerror(rc));
    exit(1);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      perror("waitpid");
      exit(1);
    }
  slurp(out_path, out_text, sizeof out_text);
  slurp(err_path, err_text, sizeof err_text);
  if (WIFSIGNALED(status)) {
    fprintf(stderr, "CLI killed by signal %d; stderr:\n%s\n", WTERMSIG(status),
            err_text);
    return -1;
  }
  return WEXITSTATUS(status);
}

#endif
