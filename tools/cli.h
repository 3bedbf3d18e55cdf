/* The sluice command: one function per subcommand (tools/cmd-*.c).
 * Each takes argv starting at the subcommand's name and returns the exit
 * status.  Messages go to stderr as "sluice CMD: ...". */
#ifndef SLUICE_TOOLS_CLI_H
#define SLUICE_TOOLS_CLI_H

#include <stdio.h>

int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_io(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_disk(int argc, char **argv);
int cmd_filter(int argc, char **argv);
int cmd_mirror(int argc, char **argv);
int cmd_cache(int argc, char **argv);
int cmd_owner(int argc, char **argv);
int cmd_release(int argc, char **argv);

/* --timeout SECONDS (fractions allowed, (0, 3600]): 0, or 1 after
 * printing a message for CMD (cmd-owner.c). */
int cli_parse_timeout(const char *cmd, const char *s, double *out);

/* "sluice CMD: MESSAGE\n" on stderr; returns 1 for `return cli_fail(...)`. */
int cli_fail(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The same with sl_last_error() appended after ": ". */
int cli_fail_lib(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
