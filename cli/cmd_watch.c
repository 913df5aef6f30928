/*
 * vmtree watch: prints the changes other hosts make to a shared store's
 * catalog as they happen (snapshots added and removed, tags and VM heads
 * moved, VMs registered and gone), woken by the catalog's watch/notify
 * (vmt_catalog_watch_start), not by polling.  Each wake re-reads the
 * catalog and prints the difference from what was printed last, so a
 * notify that is lost or a watch that breaks costs latency, never an
 * event: the catalog is also re-read every --recheck seconds (default 60).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"

enum { OPT_COUNT = 0x300, OPT_TIMEOUT, OPT_RECHECK };

typedef struct watch_state {
    vmt_catalog_snap *snaps; /* sorted by id */
    size_t nsnaps;
    vmt_catalog_ref *refs; /* sorted by name */
    size_t nrefs;
    vmt_catalog_vm *vms; /* sorted by name */
    size_t nvms;
} watch_state;

typedef struct watch_out {
    bool json;
    vmt_json j;
    uint64_t events;
} watch_out;

static volatile sig_atomic_t g_stop;
static int g_wake[2] = {-1, -1}; /* the watch callback writes a byte */

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void on_change(void *ctx)
{
    (void)ctx;
    char b = 1;
    ssize_t w = write(g_wake[1], &b, 1); /* full pipe: a wake is pending anyway */
    (void)w;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree watch [--count N] [--timeout S] [--recheck S] [--store DIR] "
            "[--json]\n\n"
            "Prints each change any host makes to the catalog of a shared store\n"
            "(rados://) as it happens: snapshots added or removed, tags and VM\n"
            "heads set or deleted, VMs registered or gone.  Woken by the store's\n"
            "watch/notify, not by polling; runs until interrupted.\n\n"
            "  --count N     exit after N changes\n"
            "  --timeout S   exit after S seconds (status 0)\n"
            "  --recheck S   also re-read the catalog every S seconds (default 60), so\n"
            "                a lost notification costs at most S seconds\n"
            "  --store DIR   the store (a rados:// location; default: $VMTREE_STORE)\n"
            "  --json        one JSON object per change: {change, kind, ...}\n");
}

static int cmp_snap(const void *a, const void *b)
{
    return memcmp(((const vmt_catalog_snap *)a)->id.b, ((const vmt_catalog_snap *)b)->id.b, 16);
}

static int cmp_ref(const void *a, const void *b)
{
    return strcmp(((const vmt_catalog_ref *)a)->name, ((const vmt_catalog_ref *)b)->name);
}

static int cmp_vm(const void *a, const void *b)
{
    return strcmp(((const vmt_catalog_vm *)a)->name, ((const vmt_catalog_vm *)b)->name);
}

static void state_free(watch_state *s)
{
    free(s->snaps);
    free(s->refs);
    free(s->vms);
    memset(s, 0, sizeof(*s));
}

static int state_load(vmt_catalog *c, watch_state *s)
{
    memset(s, 0, sizeof(*s));
    int rc = vmt_catalog_list_snapshots(c, &s->snaps, &s->nsnaps);
    rc = rc ? rc : vmt_catalog_list_refs(c, &s->refs, &s->nrefs);
    rc = rc ? rc : vmt_catalog_list_vms(c, &s->vms, &s->nvms);
    if (rc) {
        state_free(s);
        return rc;
    }
    if (s->nsnaps)
        qsort(s->snaps, s->nsnaps, sizeof(*s->snaps), cmp_snap);
    if (s->nrefs)
        qsort(s->refs, s->nrefs, sizeof(*s->refs), cmp_ref);
    if (s->nvms)
        qsort(s->vms, s->nvms, sizeof(*s->vms), cmp_vm);
    return 0;
}

/* ---- printing one change --------------------------------------------------- */

static void begin(watch_out *o, const char *change, const char *kind)
{
    o->events++;
    if (!o->json)
        return;
    vmt_json_obj_begin(&o->j);
    vmt_json_kstr(&o->j, "change", change);
    vmt_json_kstr(&o->j, "kind", kind);
}

static void end(watch_out *o)
{
    if (o->json)
        vmt_json_obj_end(&o->j);
    fflush(stdout);
}

static void print_snap(watch_out *o, const vmt_catalog_snap *s, bool added)
{
    char sid[13];
    begin(o, added ? "added" : "removed", "snapshot");
    if (o->json) {
        vmt_json_kid(&o->j, "id", &s->id);
        vmt_json_kstr(&o->j, "vm", s->vm_name);
        vmt_json_kstr(&o->j, "message", s->message);
        vmt_json_key(&o->j, "parent");
        if (s->has_parent)
            vmt_json_id(&o->j, &s->parent);
        else
            vmt_json_null(&o->j);
    } else {
        vmt_cli_short_id(&s->id, sid);
        printf("%c snapshot %s [%s]%s%s\n", added ? '+' : '-', sid, s->vm_name,
               s->message[0] ? " " : "", s->message);
    }
    end(o);
}

static void print_ref(watch_out *o, const char *name, const vmt_id *id)
{
    char sid[13];
    begin(o, id ? "set" : "deleted", "ref");
    if (o->json) {
        vmt_json_kstr(&o->j, "ref", name);
        vmt_json_key(&o->j, "id");
        if (id)
            vmt_json_id(&o->j, id);
        else
            vmt_json_null(&o->j);
    } else if (id) {
        vmt_cli_short_id(id, sid);
        printf("  %s -> %s\n", name, sid);
    } else {
        printf("- %s\n", name);
    }
    end(o);
}

static void print_vm(watch_out *o, const vmt_catalog_vm *vm, bool present)
{
    begin(o, present ? "registered" : "gone", "vm");
    if (o->json) {
        vmt_json_kstr(&o->j, "name", vm->name);
        vmt_json_kstr(&o->j, "host", vm->host);
        vmt_json_ki64(&o->j, "pid", present ? vm->pid : 0);
    } else if (present) {
        printf("+ vm %s on %s (pid %lld)\n", vm->name, vm->host[0] ? vm->host : "this host",
               (long long)vm->pid);
    } else {
        printf("- vm %s\n", vm->name);
    }
    end(o);
}

/* ---- the difference of two states (each list sorted) ------------------------ */

static void diff(watch_out *o, const watch_state *a, const watch_state *b)
{
    size_t i = 0, k = 0;
    while (i < a->nsnaps || k < b->nsnaps) {
        int c = i == a->nsnaps   ? 1
                : k == b->nsnaps ? -1
                                 : memcmp(a->snaps[i].id.b, b->snaps[k].id.b, 16);
        if (c < 0)
            print_snap(o, &a->snaps[i++], false);
        else if (c > 0)
            print_snap(o, &b->snaps[k++], true);
        else
            i++, k++;
    }
    for (i = 0, k = 0; i < a->nrefs || k < b->nrefs;) {
        int c = i == a->nrefs   ? 1
                : k == b->nrefs ? -1
                                : strcmp(a->refs[i].name, b->refs[k].name);
        if (c < 0) {
            print_ref(o, a->refs[i++].name, NULL);
        } else if (c > 0) {
            print_ref(o, b->refs[k].name, &b->refs[k].id);
            k++;
        } else {
            if (!vmt_id_equal(&a->refs[i].id, &b->refs[k].id))
                print_ref(o, b->refs[k].name, &b->refs[k].id);
            i++, k++;
        }
    }
    for (i = 0, k = 0; i < a->nvms || k < b->nvms;) {
        int c = i == a->nvms   ? 1
                : k == b->nvms ? -1
                               : strcmp(a->vms[i].name, b->vms[k].name);
        if (c < 0) {
            print_vm(o, &a->vms[i++], false);
        } else if (c > 0) {
            print_vm(o, &b->vms[k++], true);
        } else {
            /* The same name taken again (another host or process). */
            if (strcmp(a->vms[i].host, b->vms[k].host) != 0 || a->vms[i].pid != b->vms[k].pid)
                print_vm(o, &b->vms[k], true);
            i++, k++;
        }
    }
}

typedef struct watch_opts {
    uint64_t count, timeout_s, recheck_s;
} watch_opts;

static int watch_opt(void *ctx, int code, const char *arg)
{
    watch_opts *w = ctx;
    const char *opt = code == OPT_COUNT ? "--count" : code == OPT_TIMEOUT ? "--timeout" : "--recheck";
    uint64_t max = code == OPT_COUNT ? UINT32_MAX : code == OPT_TIMEOUT ? 86400u * 365 : 86400u;
    uint64_t *out = code == OPT_COUNT     ? &w->count
                    : code == OPT_TIMEOUT ? &w->timeout_s
                                          : &w->recheck_s;
    if (code != OPT_COUNT && code != OPT_TIMEOUT && code != OPT_RECHECK)
        return 1;
    if (vmt_parse_u64(arg, 1, max, out) != 0)
        return vmt_cli_fail("watch", "%s %s: not a whole number from 1 to %llu", opt, arg,
                            (unsigned long long)max);
    return 0;
}

/* Waits up to ms for a wake byte (or a signal); drains the pipe.  True
 * when woken. */
static bool wait_wake(int ms)
{
    struct pollfd p = {.fd = g_wake[0], .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return false;
    char buf[64];
    while (read(g_wake[0], buf, sizeof(buf)) > 0)
        ;
    return true;
}

static int watch_loop(vmt_catalog *cat, const char *store, const watch_opts *w, watch_out *o)
{
    watch_state cur, next;
    int rc = state_load(cat, &cur);
    if (rc)
        return rc;
    const uint64_t sec = 1000000000ull;
    uint64_t last = vmt_now_ns();
    uint64_t deadline = w->timeout_s ? last + w->timeout_s * sec : UINT64_MAX;
    fprintf(stderr, "vmtree: watching %s: %zu snapshots, %zu refs, %zu VMs\n", store,
            cur.nsnaps, cur.nrefs, cur.nvms);
    while (!g_stop && (!w->count || o->events < w->count)) {
        uint64_t now = vmt_now_ns();
        if (now >= deadline)
            break;
        /* Sleep until woken, the recheck or the deadline (in slices of at
         * most 1 s, to see signals). */
        uint64_t until = VMT_MIN(deadline, last + w->recheck_s * sec);
        bool woken = wait_wake(until > now ? (int)VMT_MIN((until - now) / 1000000 + 1, 1000u) : 0);
        if (g_stop || (!woken && vmt_now_ns() < until))
            continue;
        if ((rc = state_load(cat, &next)) != 0)
            break;
        last = vmt_now_ns();
        diff(o, &cur, &next);
        state_free(&cur);
        cur = next;
    }
    state_free(&cur);
    return rc;
}

int vmt_cli_watch(int argc, char **argv)
{
    static const struct option longopts[] = {VMT_CLI_COMMON_LONGOPTS,
                                             {"count", required_argument, NULL, OPT_COUNT},
                                             {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                             {"recheck", required_argument, NULL, OPT_RECHECK},
                                             {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "watch"};
    watch_opts w = {.recheck_s = 60};
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, watch_opt, &w, NULL, 0, &npos);
    if (prc)
        return prc < 0 ? (usage(stdout), 0) : 1;
    if (vmt_cli_resolve_store(&c))
        return vmt_cli_fail("watch", "%s", vmt_error_last());
    if (!vmt_cli_store_shared(c.store))
        return vmt_cli_fail("watch",
                            "store %s: only a shared store (rados://) has other hosts to watch; "
                            "on one host, `vmtree log` shows everything",
                            c.store);
    vmt_catalog *cat = NULL;
    vmt_catalog_watch *cw = NULL;
    watch_out o = {.json = c.json};
    vmt_json_init(&o.j, stdout);
    if (pipe2(g_wake, O_CLOEXEC | O_NONBLOCK) != 0)
        return vmt_cli_fail("watch", "pipe: %s", strerror(errno));
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = vmt_cli_catalog_open(c.store, &cat);
    rc = rc ? rc : vmt_catalog_watch_start(cat, on_change, NULL, &cw);
    rc = rc ? rc : watch_loop(cat, c.store, &w, &o);
    vmt_catalog_watch_stop(cw);
    vmt_catalog_close(cat);
    close(g_wake[0]);
    close(g_wake[1]);
    if (rc)
        return vmt_cli_fail("watch", "%s", vmt_error_last());
    return 0;
}
