/*
 * Internal interface of the vmtree command: each subcommand is a function
 * taking its own argv (argv[0] is the subcommand name) and returning the
 * process exit status.  Only cli/ may call exit().
 */
#ifndef VMTREE_CLI_H
#define VMTREE_CLI_H

int vmt_cli_run(int argc, char **argv);   /* vmtree run GUEST.elf ... */
int vmt_cli_store(int argc, char **argv); /* vmtree store init|stats|verify|gc */

/* Prints "vmtree: <cmd>: <msg>\n" to stderr; returns the exit status 1. */
int vmt_cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
