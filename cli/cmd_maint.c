/* vmtree gc and vmtree verify: the store's maintenance seen through the
 * snapshot tree (roots from the catalog; damage named by snapshot). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "progress.h"

static const char store_help[] = "  --store DIR   the store (default: $VMTREE_STORE, else\n"
                                 "                ~/.local/share/vmtree/store)\n"
                                 "  --progress    show progress on stderr even when it is not a "
                                 "terminal\n";

/* ---- gc ----------------------------------------------------------------------- */

static void gc_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree gc [--dry-run] [--min-live F] [--store DIR] [--json]\n\n"
            "Reclaims the space of objects no snapshot in the tree and no ref needs any\n"
            "more (after `vmtree rm`): marks from every snapshot and ref of the catalog,\n"
            "then rewrites the packs whose live fraction is below F and deletes them.\n"
            "Crash-safe; the store is locked for writing meanwhile.\n\n"
            "  --dry-run     mark and report only\n"
            "  --min-live F  rewrite packs less than F live (0..1, default 0.5)\n"
            "%s"
            "  --json        the GC statistics as a JSON object\n",
            store_help);
}

typedef struct gc_args {
    bool dry_run;
    double min_live;
} gc_args;

static int gc_opt(void *ctx, int code, const char *arg)
{
    gc_args *g = ctx;
    char *end;
    switch (code) {
    case 'n': g->dry_run = true; return 0;
    case 'l':
        g->min_live = strtod(arg, &end);
        if (*arg && !*end && g->min_live >= 0 && g->min_live <= 1)
            return 0;
        return vmt_cli_fail("gc", "--min-live: '%s' is not a number in [0, 1]", arg);
    default: return 1;
    }
}

static void gc_print(bool json, const vmt_store_gc_stats *st, bool dry_run)
{
    uint64_t freed = st->disk_before > st->disk_after ? st->disk_before - st->disk_after : 0;
    if (json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_json_obj_begin(&j);
        vmt_json_kbool(&j, "dry_run", dry_run);
        vmt_json_ku64(&j, "live_objects", st->live_objects);
        vmt_json_ku64(&j, "live_bytes", st->live_bytes);
        vmt_json_ku64(&j, "dead_objects", st->dead_objects);
        vmt_json_ku64(&j, "missing_objects", st->missing_objects);
        vmt_json_ku64(&j, "packs_rewritten", st->packs_rewritten);
        vmt_json_ku64(&j, "packs_deleted", st->packs_deleted);
        vmt_json_ku64(&j, "bytes_copied", st->bytes_copied);
        vmt_json_ku64(&j, "disk_before", st->disk_before);
        vmt_json_ku64(&j, "disk_after", st->disk_after);
        vmt_json_ku64(&j, "reclaimed_bytes", freed);
        vmt_json_obj_end(&j);
        return;
    }
    char a[32], b[32], r[32];
    vmt_cli_format_bytes(st->disk_before, a, sizeof(a));
    vmt_cli_format_bytes(st->disk_after, b, sizeof(b));
    vmt_cli_format_bytes(freed, r, sizeof(r));
    printf("%s%s reclaimed (packs %s -> %s); %llu live objects, %llu dead, %llu packs "
           "rewritten\n",
           dry_run ? "dry run: " : "", r, a, b, (unsigned long long)st->live_objects,
           (unsigned long long)st->dead_objects, (unsigned long long)st->packs_rewritten);
    if (st->missing_objects)
        printf("warning: %llu objects the tree refers to are missing (vmtree verify)\n",
               (unsigned long long)st->missing_objects);
}

int vmt_cli_gc(int argc, char **argv)
{
    static const struct option longopts[] = {VMT_CLI_COMMON_LONGOPTS,
                                             {"dry-run", no_argument, NULL, 'n'},
                                             {"min-live", required_argument, NULL, 'l'},
                                             {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "gc"};
    gc_args g = {.min_live = -1};
    const char *pos[1];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, gc_opt, &g, pos, 0, &npos);
    if (prc)
        return prc < 0 ? (gc_usage(stdout), 0) : 1;
    vmt_store *s = NULL;
    vmt_catalog *cat = NULL;
    vmt_id *roots = NULL;
    size_t nroots = 0;
    vmt_store_gc_stats st;
    vmt_store_gc_opts o;
    vmt_progress prog;
    vmt_progress_init(&prog, "gc", c.progress);
    vmt_store_gc_opts_init(&o);
    o.children = vmt_snap_gc_children;
    o.progress = vmt_progress_store_cb;
    o.progress_ctx = &prog;
    o.dry_run = g.dry_run;
    if (g.min_live >= 0)
        o.min_live = g.min_live;
    memset(&st, 0, sizeof(st));
    int rc = vmt_cli_resolve_store(&c);
    rc = rc ? rc : vmt_cli_store_open(c.store, true, &s);
    rc = rc ? rc : vmt_cli_catalog_of(s, &cat);
    rc = rc ? rc : vmt_catalog_roots(cat, &roots, &nroots);
    rc = rc ? rc : vmt_store_gc(s, roots, nroots, &o, &st);
    vmt_progress_end(&prog);
    if (rc == 0)
        gc_print(c.json, &st, g.dry_run);
    free(roots);
    vmt_catalog_close(cat);
    vmt_store_close(s);
    return rc ? vmt_cli_fail("gc", "%s", vmt_error_last()) : 0;
}
