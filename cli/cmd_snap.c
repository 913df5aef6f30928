/* vmtree snapshot | rollback | branch: snapshots of running VMs, and VMs
 * (back) from snapshots. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "control.h"
#include "json.h"
#include "progress.h"
#include "vmproc.h"

static const char store_help[] = "  --store DIR      the store (default: $VMTREE_STORE, else\n"
                                 "                   ~/.local/share/vmtree/store)\n";

/* Resolves a snapshot name through the store's catalog. */
static int resolve_name(const char *store, const char *name, vmt_id *id)
{
    vmt_catalog *c = NULL;
    int rc = vmt_cli_catalog_open(store, &c);
    if (rc == 0)
        rc = vmt_cli_resolve(c, name, id);
    vmt_catalog_close(c);
    return rc;
}

/* ---- snapshot -------------------------------------------------------------- */

static void snapshot_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree snapshot NAME [-m MSG] [--store DIR] [--json]\n\n"
            "Snapshots running VM NAME: pages dirtied since its HEAD are stored while it\n"
            "runs (pre-copy), the VM pauses only for the last few.  The snapshot's parent\n"
            "is the old HEAD; HEAD moves to it.  Prints the new snapshot's id.\n\n"
            "  -m, --message MSG  a message recorded with the snapshot\n"
            "  --progress       show the pre-copy rounds even without a terminal\n"
            "%s"
            "  --json           {vm, snap, pages_new, objects_new, rounds, pause_us, ...}\n",
            store_help);
}

static int set_message(void *ctx, int code, const char *arg)
{
    if (code != 'm')
        return 1;
    *(const char **)ctx = arg;
    return 0;
}

static void print_snapshot(const char *vm, const vmt_ctl_msg *rep)
{
    uint64_t pages = 0, objs = 0, pause = 0;
    const char *snap = vmt_ctl_get(rep, "snap");
    vmt_ctl_get_u64(rep, "pages_new", &pages);
    vmt_ctl_get_u64(rep, "objects_new", &objs);
    vmt_ctl_get_u64(rep, "pause_us", &pause);
    printf("%s: snapshot %.12s (%llu new pages, %llu new objects, paused %.1f ms)\n", vm,
           snap ? snap : "?", (unsigned long long)pages, (unsigned long long)objs,
           (double)pause / 1000.0);
    vmt_error_clear();
}

int vmt_cli_snapshot(int argc, char **argv)
{
    static const struct option longopts[] = {
        VMT_CLI_COMMON_LONGOPTS, {"message", required_argument, NULL, 'm'}, {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "snapshot"};
    const char *msg = NULL, *pos[1];
    int npos, prc = vmt_cli_parse(&c, argc, argv, "m:", longopts, set_message, &msg, pos, 1,
                                  &npos);
    if (prc)
        return prc < 0 ? (snapshot_usage(stdout), 0) : 1;
    if (npos != 1)
        return vmt_cli_fail("snapshot", "which VM? (usage: vmtree snapshot NAME [-m MSG])");
    if (vmt_cli_resolve_store(&c))
        return vmt_cli_fail("snapshot", "%s", vmt_error_last());
    vmt_ctl_msg *req = malloc(sizeof(*req)), *rep = malloc(sizeof(*rep));
    vmt_progress prog;
    vmt_progress_init(&prog, "snapshot", c.progress);
    int rc = req && rep ? 0 : vmt_error_set(VMT_ENOMEM, "out of memory");
    if (rc == 0) {
        vmt_ctl_init(req, VMT_CTL_REQUEST);
        rc = vmt_ctl_adds(req, "op", "snapshot");
        if (rc == 0 && msg)
            rc = vmt_ctl_adds(req, "message", msg);
    }
    if (rc == 0)
        rc = vmt_cli_vm_request(c.store, pos[0], req, rep, VMT_CLI_LONG_TIMEOUT_NS, &prog);
    if (rc == 0 && c.json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_cli_reply_json(&j, rep);
    } else if (rc == 0) {
        print_snapshot(pos[0], rep);
    }
    free(req);
    free(rep);
    return rc ? vmt_cli_fail("snapshot", "%s", vmt_error_last()) : 0;
}

/* ---- rollback ---------------------------------------------------------------- */

static void rollback_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree rollback NAME SNAP [--lazy] [--store DIR] [--json]\n\n"
            "Puts running VM NAME back to snapshot SNAP: the VM is paused, only the pages\n"
            "that differ (dirtied since its HEAD, or different between HEAD and SNAP) are\n"
            "restored in place (else all of its RAM, or a fresh VM when the config\n"
            "differs), HEAD moves to SNAP, and it runs on.  The snapshots taken since stay\n"
            "in the tree.  SNAP: an id prefix, a tag, a VM name, NAME@HEAD, X~N, X^.\n\n"
            "  --lazy           restore on demand (userfaultfd): the VM runs at once\n"
            "  --progress       show the restore's progress even without a terminal\n"
            "%s"
            "  --json           print the VM's new state as a JSON object\n",
            store_help);
}

static int set_lazy(void *ctx, int code, const char *arg)
{
    (void)arg;
    if (code != 'L')
        return 1;
    *(bool *)ctx = true;
    return 0;
}

int vmt_cli_rollback(int argc, char **argv)
{
    static const struct option longopts[] = {
        VMT_CLI_COMMON_LONGOPTS, {"lazy", no_argument, NULL, 'L'}, {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "rollback"};
    bool lazy = false;
    const char *pos[2];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, set_lazy, &lazy, pos, 2,
                                  &npos);
    if (prc)
        return prc < 0 ? (rollback_usage(stdout), 0) : 1;
    if (npos != 2)
        return vmt_cli_fail("rollback", "usage: vmtree rollback NAME SNAP");
    vmt_id id;
    char hex[VMT_ID_HEX_LEN + 1];
    if (vmt_cli_resolve_store(&c) || resolve_name(c.store, pos[1], &id))
        return vmt_cli_fail("rollback", "%s", vmt_error_last());
    vmt_id_to_hex(&id, hex);
    vmt_ctl_msg *req = malloc(sizeof(*req)), *rep = malloc(sizeof(*rep));
    vmt_progress prog;
    vmt_progress_init(&prog, "rollback", c.progress);
    int rc = req && rep ? 0 : vmt_error_set(VMT_ENOMEM, "out of memory");
    if (rc == 0) {
        vmt_ctl_init(req, VMT_CTL_REQUEST);
        rc = vmt_ctl_adds(req, "op", "rollback");
        rc = rc ? rc : vmt_ctl_adds(req, "snap", hex);
        rc = rc ? rc : vmt_ctl_adds(req, "lazy", lazy ? "1" : "0");
    }
    if (rc == 0)
        rc = vmt_cli_vm_request(c.store, pos[0], req, rep, VMT_CLI_LONG_TIMEOUT_NS, &prog);
    if (rc == 0 && c.json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_cli_reply_json(&j, rep);
    } else if (rc == 0) {
        uint64_t us = 0, run_us = 0;
        vmt_ctl_get_u64(rep, "restore_us", &us);
        if (vmt_ctl_get_u64(rep, "running_us", &run_us) == 0)
            printf("%s: rolled back to %.12s in place (%s restore, running after %.1f ms, "
                   "%.1f ms in all)\n",
                   pos[0], hex, lazy ? "lazy" : "eager", (double)run_us / 1000.0,
                   (double)us / 1000.0);
        else
            printf("%s: rolled back to %.12s (%s restore, %.1f ms)\n", pos[0], hex,
                   lazy ? "lazy" : "eager", (double)us / 1000.0);
    }
    free(req);
    free(rep);
    return rc ? vmt_cli_fail("rollback", "%s", vmt_error_last()) : 0;
}

/* ---- branch --------------------------------------------------------------------- */

static void branch_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree branch SNAP --name NEW [--detach] [--lazy] [--dirty-mode M]\n"
            "                     [--huge-pages] [--store DIR] [--json] [--progress]\n"
            "       vmtree branch --from HOST:PORT SNAP --name NEW [--detach]\n"
            "                     [--psk FILE | --tls CA] [--store DIR] [--json]\n\n"
            "Starts a new VM process NEW restored from snapshot SNAP, with HEAD = SNAP:\n"
            "it continues exactly where SNAP was taken, and its snapshots are SNAP's\n"
            "children.  Like `vmtree run --name`, in the foreground with the console on\n"
            "stdout, or with --detach in the background.\n\n"
            "With --from, SNAP (as that server names it) comes from the store served at\n"
            "HOST:PORT (`vmtree serve`) and the VM runs before it has arrived: its map\n"
            "and state come first, pages the local store lacks are fetched when the\n"
            "guest touches them and prefetched in map order, each checked and stored.\n"
            "Once every page is in, the snapshot is complete in the local store (as\n"
            "after `vmtree pull --no-ancestors`) and becomes HEAD.  If the server goes\n"
            "away before, the VM stops with the reason; the pages that arrived stay.\n\n"
            "  --name NEW       the new VM's name ([A-Za-z0-9._-], 1..63)\n"
            "  --from HOST:PORT branch from a snapshot on that server\n"
            "  --psk FILE       with --from: the server's pre-shared key\n"
            "  --tls CA|CERT,KEY,CA  with --from: TLS 1.3 (the server's CA)\n"
            "  --detach         run in the background (console: vmtree console NEW)\n"
            "  --lazy           restore on demand (userfaultfd): the VM runs at once\n"
            "  --dirty-mode M   bitmap (default) or ring\n"
            "  --huge-pages     2 MiB pages for guest RAM where the host allows: the\n"
            "                   eager restore writes straight into them, ~2x faster\n"
            "  --progress       show the restore's progress even without a terminal\n"
            "%s"
            "  --json           with --detach: print {name, pid, store} as JSON\n",
            store_help);
}

static int branch_opt(void *ctx, int code, const char *arg)
{
    vmproc_opts *o = ctx;
    switch (code) {
    case 'N':
        if (vmt_cli_check_name("--name", arg))
            return vmt_cli_fail("branch", "%s", vmt_error_last());
        o->name = arg;
        return 0;
    case 'D': o->detach = true; return 0;
    case 'L': o->lazy = true; return 0;
    case 'H': o->huge_pages = true; return 0;
    case 'F': o->from_addr = arg; return 0;
    case 'P': o->psk_file = arg; return 0;
    case 'T': o->tls = arg; return 0;
    case 'M':
        if (vmt_cli_parse_dirty_mode(arg, &o->dirty_mode) != 0)
            return vmt_cli_fail("branch", "%s", vmt_error_last());
        return 0;
    default: return 1;
    }
}

int vmt_cli_branch(int argc, char **argv)
{
    static const struct option longopts[] = {
        VMT_CLI_COMMON_LONGOPTS,
        {"name", required_argument, NULL, 'N'},
        {"detach", no_argument, NULL, 'D'},
        {"lazy", no_argument, NULL, 'L'},
        {"dirty-mode", required_argument, NULL, 'M'},
        {"huge-pages", no_argument, NULL, 'H'},
        {"from", required_argument, NULL, 'F'},
        {"psk", required_argument, NULL, 'P'},
        {"tls", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "branch"};
    vmproc_opts o = {.cmd = "branch", .from_snapshot = true};
    const char *pos[1];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, branch_opt, &o, pos, 1,
                                  &npos);
    if (prc)
        return prc < 0 ? (branch_usage(stdout), 0) : 125;
    if (npos != 1 || !o.name)
        return vmt_cli_fail("branch", "usage: vmtree branch SNAP --name NEW"), 125;
    if ((o.psk_file || o.tls) && !o.from_addr)
        return vmt_cli_fail("branch", "--psk and --tls go with --from HOST:PORT"), 125;
    if (vmt_cli_resolve_store(&c) ||
        (!o.from_addr && resolve_name(c.store, pos[0], &o.snap)))
        return vmt_cli_fail("branch", "%s", vmt_error_last()), 125;
    if (o.from_addr && vmt_cli_store_shared(c.store))
        return vmt_cli_fail("branch",
                            "--from (a VM running while its pages arrive) is not supported on "
                            "the shared RADOS store %s yet: `vmtree pull %s %s --store ...` "
                            "copies the image into it once for every host sharing it; then "
                            "branch it by name",
                            c.store, o.from_addr, pos[0]),
               125;
    /* --from: the server resolves the name; a pull creates the store. */
    o.snap_name = pos[0];
    o.init_store = o.from_addr != NULL;
    o.store = c.store;
    o.json = c.json;
    o.progress = c.progress;
    return vmt_vmproc_main(&o);
}
