/* `tgemm tune`: measure every kernel per shape and write a tuned table. */
#ifndef TGEMM_TOOLS_COMMANDS_TUNE_H
#define TGEMM_TOOLS_COMMANDS_TUNE_H

/* argv[0] is "tune".  Exit code: 0 ok, 1 failure, 2 usage error, 128+signal
 * when interrupted (130 for Ctrl-C) after saving a valid table. */
int tgemm__cmd_tune(int argc, char **argv);

#endif
