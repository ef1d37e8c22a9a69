/* The subcommands of the tgemm tool.  Each takes argv starting at its own
 * name and returns the process exit code: 0 ok, 1 failure, 2 usage error. */
#ifndef TGEMM_TOOLS_COMMANDS_H
#define TGEMM_TOOLS_COMMANDS_H

int tgemm__cmd_info(int argc, char **argv);
int tgemm__cmd_linear(int argc, char **argv);
int tgemm__cmd_bench(int argc, char **argv);

#endif
