/* sluice convert: not yet written (see the issue that owns it). */
#include "tools/cli.h"

int cmd_convert(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  return cli_fail("convert", "not implemented yet");
}
