/* `tgemm quant` and `tgemm dequant`: MXFP4 files from and to .npy.
 * argv[0] is the subcommand name ("quant" / "dequant").  Exit codes:
 * 0 success, 1 bad data (unreadable or malformed files, shapes that do not
 * fit), 2 bad usage (unknown option, missing or malformed argument). */
#ifndef TGEMM_TOOLS_COMMANDS_QUANT_H
#define TGEMM_TOOLS_COMMANDS_QUANT_H

int tgemm__cmd_quant(int argc, char **argv);
int tgemm__cmd_dequant(int argc, char **argv);

#endif
