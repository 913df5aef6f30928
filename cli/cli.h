/*
 * Internal interface of the vmtree command: each subcommand is a function
 * taking its own argv (argv[0] is the subcommand name) and returning the
 * process exit status.  Only cli/ may call exit().  Everything but main.c is
 * the static library vmt_cli (so fuzz targets and tests can link it).
 */
#ifndef VMTREE_CLI_H
#define VMTREE_CLI_H

#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vmtree/util.h"

#include "vmtree/snapshot.h"
#include "vmtree/vmm.h"

int vmt_cli_run(int argc, char **argv);   /* vmtree run GUEST.elf ... */
int vmt_cli_store(int argc, char **argv); /* vmtree store init|stats|verify|gc */

/* The VM process commands (cmd_vm.c, cmd_branch.c). */
int vmt_cli_ps(int argc, char **argv);
int vmt_cli_pause(int argc, char **argv);
int vmt_cli_resume(int argc, char **argv);
int vmt_cli_stop(int argc, char **argv);
int vmt_cli_status(int argc, char **argv);
int vmt_cli_console(int argc, char **argv);
int vmt_cli_snapshot(int argc, char **argv);
int vmt_cli_rollback(int argc, char **argv);
int vmt_cli_branch(int argc, char **argv);
/* The tree commands (cmd_log.c, cmd_diff.c, cmd_refs.c, cmd_maint.c, cmd_bundle.c). */
int vmt_cli_log(int argc, char **argv);
int vmt_cli_watch(int argc, char **argv);
int vmt_cli_show(int argc, char **argv);
int vmt_cli_diff(int argc, char **argv);
int vmt_cli_tag(int argc, char **argv);
int vmt_cli_rm(int argc, char **argv);
int vmt_cli_gc(int argc, char **argv);
int vmt_cli_verify(int argc, char **argv);
int vmt_cli_export(int argc, char **argv);
int vmt_cli_import(int argc, char **argv);
int vmt_cli_migrate(int argc, char **argv); /* cmd_migrate.c */
int vmt_cli_receive(int argc, char **argv); /* cmd_receive.c */
/* Golden images between hosts (cmd_golden.c). */
int vmt_cli_serve(int argc, char **argv);
int vmt_cli_pull(int argc, char **argv);
int vmt_cli_push(int argc, char **argv);

/* Prints "vmtree: <cmd>: <msg>\n" to stderr; returns the exit status 1. */
int vmt_cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- options every command shares ------------------------------------- */

/* getopt_long codes of the shared options. */
#define VMT_CLI_OPT_STORE 0x1001
#define VMT_CLI_OPT_JSON 0x1002
#define VMT_CLI_OPT_PROGRESS 0x1003
#define VMT_CLI_OPT_HELP 'h'

#define VMT_CLI_COMMON_LONGOPTS                                                                    \
    {"store", required_argument, NULL, VMT_CLI_OPT_STORE},                                         \
        {"json", no_argument, NULL, VMT_CLI_OPT_JSON},                                             \
        {"progress", no_argument, NULL, VMT_CLI_OPT_PROGRESS},                                     \
        {"help", no_argument, NULL, VMT_CLI_OPT_HELP}

typedef struct vmt_cli_common {
    const char *cmd;         /* the command's name, for messages */
    const char *store_opt;   /* --store, or NULL */
    bool json, progress, help;
    char store[PATH_MAX];    /* resolved by vmt_cli_resolve_store */
} vmt_cli_common;

/*
 * Handles a shared option: returns 1 when `code` was one, else 0.
 * A second --store replaces the first.
 */
int vmt_cli_common_opt(vmt_cli_common *c, int code, const char *arg);

/*
 * Parses argv with getopt_long (options and positionals mixed; `shortopts`
 * in getopt syntax besides -h, may be NULL),
 * collecting positionals into pos[0..*npos) (at most maxpos).  For each
 * option not shared, calls on_opt(ctx, code, optarg), which returns 0 or
 * prints the error and returns 1.  Returns 0, 1 after an error (printed), or
 * -1 after --help (the caller prints usage and exits 0).
 */
typedef int (*vmt_cli_opt_fn)(void *ctx, int code, const char *arg);
int vmt_cli_parse(vmt_cli_common *c, int argc, char **argv, const char *shortopts,
                  const struct option *longopts, vmt_cli_opt_fn on_opt, void *ctx,
                  const char **pos, int maxpos, int *npos);

/* Fills c->store: --store, else $VMTREE_STORE, else the default directory. */
int vmt_cli_resolve_store(vmt_cli_common *c);

/* "bitmap" or "ring" (--dirty-mode); VMT_EINVAL naming the option otherwise. */
int vmt_cli_parse_dirty_mode(const char *s, vmt_dirty_mode *out);

/* VM names and tags: [A-Za-z0-9._-], 1..63 bytes, not starting with '.' or '-'. */
int vmt_cli_check_name(const char *what, const char *name);

/* True for a store several hosts share (rados://). */
bool vmt_cli_store_shared(const char *store);

/*
 * The run directory of a store on this host (control sockets, pid lock
 * files, consoles, logs, migration outcome records; docs/cli.md):
 *   a directory store   STORE/run
 *   a RADOS store       $VMTREE_RUN_DIR if set, else /run/vmtree/H as root,
 *                       else $XDG_RUNTIME_DIR/vmtree/H, else
 *                       /tmp/vmtree-UID/H, where H is 16 hex digits of the
 *                       hash of the store's URL (one per store and host).
 * VMT_ERANGE when it does not fit buf.
 */
#define VMT_CLI_RUN_DIR_ENV "VMTREE_RUN_DIR"
int vmt_cli_run_dir(const char *store, char *buf, size_t cap);
/* RUN_DIR/NAME<suffix> into buf; VMT_ERANGE when it does not fit. */
int vmt_cli_run_path(const char *store, const char *name, const char *suffix, char *buf,
                     size_t cap);
/* Creates the run directory (mode 0700; a RADOS store's with its parents)
 * if missing and checks its mode. */
int vmt_cli_make_run_dir(const char *store);

/*
 * Liveness of VM NAME on this host: its process holds an exclusive lock on
 * RUN_DIR/NAME.pid for its whole life.  Returns 1 and *pid when a live
 * process holds it, 0 when none does (*pid: the pid last written, or 0),
 * or a negative VMT_E*.
 */
int vmt_cli_vm_alive(const char *store, const char *name, long *pid);
/* Removes RUN_DIR/NAME.{sock,pid} left by a dead VM process (and its
 * catalog registration, if this host made it). */
void vmt_cli_vm_cleanup(const char *store, const char *name);

/* Wall clock ns since the epoch as "YYYY-MM-DD HH:MM:SS" local time. */
void vmt_cli_format_time(uint64_t ns, char *buf, size_t cap);
/* Bytes as "1.5 MiB". */
void vmt_cli_format_bytes(uint64_t bytes, char *buf, size_t cap);

/* ---- the store and catalog --------------------------------------------- */

/*
 * Opens the store.  Writers retry on VMT_EBUSY (another process holds the
 * writer lock) with a short backoff for up to VMT_CLI_LOCK_WAIT_MS (or
 * $VMTREE_LOCK_WAIT seconds), then fail naming the holder.  VMT_ENOENT
 * says how to create a store.
 */
#define VMT_CLI_LOCK_WAIT_MS 10000
int vmt_cli_store_open(const char *dir, bool writer, vmt_store **out);
/* Opens the catalog of an existing store (VMT_ENOENT when there is none). */
int vmt_cli_catalog_open(const char *dir, vmt_catalog **out);
/* The catalog of the open store s (borrowed: close the catalog first); a
 * RADOS store's then needs no second store handle. */
int vmt_cli_catalog_of(vmt_store *s, vmt_catalog **out);
/*
 * Whether VM NAME runs: 1 when a process of this host holds its name
 * (vmt_cli_vm_alive), or when a shared catalog `cat` holds another host's
 * registration of it (*pid: its process there, host[cap]: that host; ""
 * for this host); 0 when not; or a negative VMT_E*.
 */
int vmt_cli_vm_running(const char *store, vmt_catalog *cat, const char *name, long *pid, char *host,
                       size_t cap);
/* Resolves a snapshot name (vmt_catalog_resolve) with a message naming it. */
int vmt_cli_resolve(vmt_catalog *c, const char *name, vmt_id *out);
/* The first 12 hex digits of an id. */
void vmt_cli_short_id(const vmt_id *id, char out[13]);

/* ---- talking to VM processes (ctl_client.c) ----------------------------- */

struct vmt_ctl_msg;
struct vmt_progress;

/* Timeouts of requests: quick ones, and snapshot/rollback. */
#define VMT_CLI_QUICK_TIMEOUT_NS (10ull * 1000000000ull)
#define VMT_CLI_LONG_TIMEOUT_NS (600ull * 1000000000ull)

/*
 * Sends `req` to VM `name` in store `store` and waits for its reply,
 * showing PROGRESS frames on `prog` (may be NULL).  A VM whose process is
 * gone is reported as "VM NAME is not running (its process N is gone)"
 * (VMT_ENOENT) and its registration and socket are removed; an unknown
 * name as VMT_ENOENT; an error reply returns its code and message.
 */
int vmt_cli_vm_request(const char *store, const char *name, const struct vmt_ctl_msg *req,
                       struct vmt_ctl_msg *reply, uint64_t timeout_ns,
                       struct vmt_progress *prog);

struct vmt_json;
/* Writes a reply's fields as one JSON object (numbers as numbers). */
void vmt_cli_reply_json(struct vmt_json *j, const struct vmt_ctl_msg *m);

/* Connects to a unix socket path (long paths through the directory fd);
 * VMT_ENOENT when nothing listens there. */
int vmt_cli_unix_connect(const char *path, int *fd);
/* Listens on a unix socket path (mode 0600), replacing a stale socket file;
 * the fd is non-blocking. */
int vmt_cli_unix_listen(const char *path, int *fd);

#endif
