/* vmtree diff A B: the pages that differ between two snapshots, found by
 * walking only the map subtrees whose ids differ (vmt_map_diff). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"

#define TEXT_RANGES_MAX 40

typedef struct range {
    uint64_t first, count;
} range;

typedef struct diff_ctx {
    range *r;
    size_t n, cap;
    uint64_t pages, added, removed; /* removed: became zero; added: were zero */
} diff_ctx;

static void diff_usage(FILE *f)
{
    fprintf(f, "usage: vmtree diff A B [--all] [--store DIR] [--json]\n\n"
               "Counts the guest pages that differ between snapshots A and B (of VMs of the\n"
               "same memory size) and lists them as ranges of page numbers.  Only the\n"
               "subtrees of the two memory maps whose ids differ are read, so a small\n"
               "change between two large VMs is found quickly.\n\n"
               "  --all         list every range (default: the first 40)\n"
               "  --store DIR   the store (default: $VMTREE_STORE, else\n"
               "                ~/.local/share/vmtree/store)\n"
               "  --json        {a, b, pages, ranges: [[first, count], ...], ...}\n");
}

static int on_page(void *ctx, uint64_t pfn, const vmt_id *a, const vmt_id *b)
{
    diff_ctx *d = ctx;
    d->pages++;
    d->added += vmt_id_is_zero_page(a);
    d->removed += vmt_id_is_zero_page(b);
    if (d->n && d->r[d->n - 1].first + d->r[d->n - 1].count == pfn) {
        d->r[d->n - 1].count++;
        return 0;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        range *nr = vmt_reallocn(d->r, cap, sizeof(range));
        if (!nr)
            return VMT_ENOMEM;
        d->r = nr;
        d->cap = cap;
    }
    d->r[d->n++] = (range){pfn, 1};
    return 0;
}

static void print_text(const vmt_snap_record *ra, const vmt_snap_record *rb, const diff_ctx *d,
                       uint64_t nodes, bool all)
{
    char size[32];
    vmt_cli_format_bytes(d->pages * VMT_PAGE_SIZE, size, sizeof(size));
    printf("%llu pages differ (%s) in %zu ranges; %llu became non-zero, %llu became zero\n",
           (unsigned long long)d->pages, size, d->n, (unsigned long long)d->added,
           (unsigned long long)d->removed);
    printf("state %s; %llu map nodes read\n",
           vmt_id_equal(&ra->state, &rb->state) ? "identical" : "differs",
           (unsigned long long)nodes);
    for (size_t i = 0; i < d->n && (all || i < TEXT_RANGES_MAX); i++)
        printf("  pages %#llx-%#llx (%llu)\n", (unsigned long long)d->r[i].first,
               (unsigned long long)(d->r[i].first + d->r[i].count - 1),
               (unsigned long long)d->r[i].count);
    if (!all && d->n > TEXT_RANGES_MAX)
        printf("  ... %zu more ranges (--all lists them)\n", d->n - TEXT_RANGES_MAX);
}

static void print_json(const vmt_id *a, const vmt_id *b, const vmt_snap_record *ra,
                       const vmt_snap_record *rb, const diff_ctx *d, uint64_t nodes)
{
    vmt_json j;
    vmt_json_init(&j, stdout);
    vmt_json_obj_begin(&j);
    vmt_json_kid(&j, "a", a);
    vmt_json_kid(&j, "b", b);
    vmt_json_ku64(&j, "pages", d->pages);
    vmt_json_ku64(&j, "became_nonzero", d->added);
    vmt_json_ku64(&j, "became_zero", d->removed);
    vmt_json_kbool(&j, "state_differs", !vmt_id_equal(&ra->state, &rb->state));
    vmt_json_ku64(&j, "nodes_read", nodes);
    vmt_json_key(&j, "ranges");
    vmt_json_arr_begin(&j);
    for (size_t i = 0; i < d->n; i++) {
        vmt_json_arr_begin(&j);
        vmt_json_u64(&j, d->r[i].first);
        vmt_json_u64(&j, d->r[i].count);
        vmt_json_arr_end(&j);
    }
    vmt_json_arr_end(&j);
    vmt_json_obj_end(&j);
}

static int diff_opt(void *ctx, int code, const char *arg)
{
    (void)arg;
    if (code != 'A')
        return 1;
    *(bool *)ctx = true;
    return 0;
}

typedef struct diff_args {
    vmt_id a, b;
    vmt_snap_record ra, rb;
} diff_args;

static int load(const char *store, const char *na, const char *nb, diff_args *x, vmt_store **s)
{
    vmt_catalog *cat = NULL;
    int rc = vmt_cli_store_open(store, false, s);
    rc = rc ? rc : vmt_cli_catalog_of(*s, &cat); /* one store handle */
    rc = rc ? rc : vmt_cli_resolve(cat, na, &x->a);
    rc = rc ? rc : vmt_cli_resolve(cat, nb, &x->b);
    vmt_catalog_close(cat);
    rc = rc ? rc : vmt_snap_record_read(*s, &x->a, &x->ra);
    rc = rc ? rc : vmt_snap_record_read(*s, &x->b, &x->rb);
    if (rc == 0 && x->ra.mem_size != x->rb.mem_size)
        rc = vmt_error_set(VMT_EINVAL,
                           "%s is of a %llu MiB VM and %s of a %llu MiB VM: diff compares "
                           "snapshots of one memory size",
                           na, (unsigned long long)(x->ra.mem_size >> 20), nb,
                           (unsigned long long)(x->rb.mem_size >> 20));
    return rc;
}

int vmt_cli_diff(int argc, char **argv)
{
    static const struct option longopts[] = {
        VMT_CLI_COMMON_LONGOPTS, {"all", no_argument, NULL, 'A'}, {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "diff"};
    bool all = false;
    const char *pos[2];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, diff_opt, &all, pos, 2, &npos);
    if (prc)
        return prc < 0 ? (diff_usage(stdout), 0) : 1;
    if (npos != 2)
        return vmt_cli_fail("diff", "usage: vmtree diff A B");
    diff_args *x = calloc(1, sizeof(*x));
    diff_ctx d = {0};
    vmt_store *s = NULL;
    uint64_t nodes = 0;
    int rc = x ? vmt_cli_resolve_store(&c) : vmt_error_set(VMT_ENOMEM, "out of memory");
    rc = rc ? rc : load(c.store, pos[0], pos[1], x, &s);
    if (rc == 0)
        rc = vmt_map_diff(s, &x->ra.map_root, &x->rb.map_root, x->ra.mem_size / VMT_PAGE_SIZE,
                          on_page, &d, &nodes);
    if (rc == 0 && c.json)
        print_json(&x->a, &x->b, &x->ra, &x->rb, &d, nodes);
    else if (rc == 0)
        print_text(&x->ra, &x->rb, &d, nodes, all);
    vmt_store_close(s);
    free(d.r);
    free(x);
    return rc ? vmt_cli_fail("diff", "%s", vmt_error_last()) : 0;
}
