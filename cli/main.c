/* vmtree: the command-line front end.  Dispatches to one function per
 * subcommand; each handles its own options and --help. */
#include <signal.h>
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
    {"run", vmt_cli_run, "run a guest image on KVM (with --name: as a VM process)"},
    {"branch", vmt_cli_branch, "start a new VM process from a snapshot"},
    {"snapshot", vmt_cli_snapshot, "snapshot a running VM"},
    {"rollback", vmt_cli_rollback, "put a running VM back to a snapshot"},
    {"ps", vmt_cli_ps, "list the running VMs"},
    {"status", vmt_cli_status, "show the state of a running VM"},
    {"pause", vmt_cli_pause, "pause a running VM"},
    {"resume", vmt_cli_resume, "resume a paused VM"},
    {"stop", vmt_cli_stop, "stop a running VM"},
    {"console", vmt_cli_console, "print the console of a detached VM"},
    {"logs", vmt_cli_console, "the same as console"},
    {"log", vmt_cli_log, "the tree of snapshots (--graph), with each VM's HEAD and tags"},
    {"watch", vmt_cli_watch, "print changes other hosts make to a shared store's catalog"},
    {"show", vmt_cli_show, "describe a snapshot"},
    {"diff", vmt_cli_diff, "pages that differ between two snapshots"},
    {"tag", vmt_cli_tag, "list, set or delete tags"},
    {"rm", vmt_cli_rm, "remove snapshots from the tree"},
    {"gc", vmt_cli_gc, "reclaim the space of removed snapshots"},
    {"verify", vmt_cli_verify, "check every object; name the snapshots a damage touches"},
    {"export", vmt_cli_export, "write a snapshot to a bundle file"},
    {"import", vmt_cli_import, "read a bundle file into the store"},
    {"migrate", vmt_cli_migrate, "move a running VM to another host, live"},
    {"receive", vmt_cli_receive, "wait for live migrations and run the VMs that arrive"},
    {"serve", vmt_cli_serve, "serve the store to pull and push from other hosts"},
    {"pull", vmt_cli_pull, "copy a snapshot from another host's store (only what is missing)"},
    {"push", vmt_cli_push, "copy a snapshot to another host's store (only what is missing)"},
#ifdef VMT_CLI_HAVE_STORE
    {"store", vmt_cli_store, "create, inspect, verify and collect a page store"},
#endif
};

static void usage(FILE *f)
{
    fprintf(f, "usage: vmtree COMMAND [OPTIONS]\n\n"
               "Branching snapshots and live migration of KVM virtual machines.\n\n"
               "commands:\n");
    for (size_t i = 0; i < VMT_ARRAY_SIZE(commands); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`vmtree COMMAND --help` describes a command.  Snapshots are named by an id\n"
               "prefix (4+ hex digits), a tag, a VM name (its HEAD), NAME@HEAD, and X~N or\n"
               "X^ for ancestors.  Every command takes --store DIR (default: $VMTREE_STORE,\n"
               "else ~/.local/share/vmtree/store); commands whose output is data take --json.\n"
               "Environment: VMTREE_LOG=error|warn|info|debug|trace sets the log level;\n"
               "VMTREE_LOCK_WAIT=SECONDS how long writers wait for the store's lock (10).\n");
}

int main(int argc, char **argv)
{
    /* A peer that closes a socket (a migration, a served store, the RADOS
     * cluster) must surface as an error on that connection, never as a
     * signal that kills a VM process. */
    signal(SIGPIPE, SIG_IGN);
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
