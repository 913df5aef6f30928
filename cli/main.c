/* vmtree: the command-line front end.  Dispatches to one function per
 * subcommand; each handles its own options and --help. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "vmtree/util.h"

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"run", vmt_cli_run, "run a guest image on KVM with its console on stdout"},
#ifdef VMT_CLI_HAVE_STORE
    {"store", vmt_cli_store, "create, inspect, verify and collect a page store"},
#endif
};

int vmt_cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "vmtree: %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vmtree COMMAND [OPTIONS]\n\n"
               "Branching snapshots and live migration of KVM virtual machines.\n\n"
               "commands:\n");
    for (size_t i = 0; i < VMT_ARRAY_SIZE(commands); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`vmtree COMMAND --help` describes a command.\n"
               "Environment: VMTREE_LOG=error|warn|info|debug|trace sets the log level.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("vmtree %s\n", VMT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < VMT_ARRAY_SIZE(commands); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "vmtree: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
