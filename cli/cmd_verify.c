/*
 * vmtree verify: the store's own check (every record's checksums, every
 * object rehashed against its id), then the tree's: every snapshot's
 * record, state blob, map and pages must be readable and present.  Each
 * damaged object is named with the snapshots that hold it.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "progress.h"

typedef struct damage {
    uint32_t pack;
    uint64_t offset;
    bool id_known;
    vmt_id id;
    char what[200];
    vmt_id *holders; /* snapshots that hold the object */
    size_t nholders;
} damage;

/* A snapshot of the tree that is not whole, and why. */
typedef struct broken {
    vmt_id id;
    char why[240];
} broken;

typedef struct verify_ctx {
    damage *d;
    size_t nd;
    broken *b;
    size_t nb;
    vmt_store_verify_stats st;
    size_t nsnaps;
} verify_ctx;

static void verify_usage(FILE *f)
{
    fprintf(f, "usage: vmtree verify [--store DIR] [--json] [--progress]\n\n"
               "Reads every record of every pack, checks its checksums and rehashes it\n"
               "against its id; then checks that every snapshot of the tree has its record,\n"
               "state, map and pages.  Each damaged object is named with the snapshots that\n"
               "hold it.  Read-only: it runs beside VMs and other commands.  Exit status 0\n"
               "when all is well, 1 when something is damaged or missing.\n\n"
               "  --store DIR   the store (default: $VMTREE_STORE, else\n"
               "                ~/.local/share/vmtree/store)\n"
               "  --progress    show progress on stderr even when it is not a terminal\n"
               "  --json        {ok, packs, records, objects_ok, damaged, damage: [{pack,\n"
               "                offset, id, what, snapshots: [...]}], broken: [...]}\n");
}

static void on_damage(void *ctx, const vmt_store_damage *d)
{
    verify_ctx *v = ctx;
    /* The store reports a damaged record and the index entries that lead
     * to it: one object, told once. */
    for (size_t i = 0; i < v->nd; i++)
        if (v->d[i].pack == d->pack && v->d[i].offset == d->offset &&
            v->d[i].id_known == d->id_known &&
            (!d->id_known || vmt_id_equal(&v->d[i].id, &d->id)))
            return;
    damage *nd = vmt_reallocn(v->d, v->nd + 1, sizeof(damage));
    if (!nd)
        return;
    v->d = nd;
    damage *x = &v->d[v->nd++];
    memset(x, 0, sizeof(*x));
    x->pack = d->pack;
    x->offset = d->offset;
    x->id_known = d->id_known;
    x->id = d->id;
    snprintf(x->what, sizeof(x->what), "%s", d->what ? d->what : "damaged");
}

static void add_holder(damage *d, const vmt_id *snap)
{
    for (size_t i = 0; i < d->nholders; i++)
        if (vmt_id_equal(&d->holders[i], snap))
            return;
    vmt_id *nh = vmt_reallocn(d->holders, d->nholders + 1, sizeof(vmt_id));
    if (nh) {
        d->holders = nh;
        d->holders[d->nholders++] = *snap;
    }
}

static void add_broken(verify_ctx *v, const vmt_id *snap, const char *why)
{
    broken *nb = vmt_reallocn(v->b, v->nb + 1, sizeof(broken));
    if (!nb)
        return;
    v->b = nb;
    v->b[v->nb].id = *snap;
    snprintf(v->b[v->nb].why, sizeof(v->b[v->nb].why), "%s", why);
    v->nb++;
}

/* Records `snap` as a holder of every damaged object among ids. */
static void match(verify_ctx *v, const vmt_id *snap, const vmt_id *id)
{
    for (size_t i = 0; i < v->nd; i++)
        if (v->d[i].id_known && vmt_id_equal(&v->d[i].id, id))
            add_holder(&v->d[i], snap);
}

/* Checks the pages of one loaded map: damaged ones and missing ones. */
static int check_pages(vmt_store *s, verify_ctx *v, const vmt_id *snap, const vmt_map *m)
{
    uint64_t n = vmt_map_pages(m), missing = 0;
    enum { BATCH = 4096 };
    vmt_id *ids = vmt_callocn(BATCH, sizeof(vmt_id));
    bool *have = vmt_callocn(BATCH, sizeof(bool));
    int rc = ids && have ? 0 : VMT_ENOMEM;
    for (uint64_t at = 0; rc == 0 && at < n; at += BATCH) {
        size_t k = (size_t)VMT_MIN((uint64_t)BATCH, n - at);
        for (size_t i = 0; i < k; i++) {
            ids[i] = *vmt_map_get(m, at + i);
            match(v, snap, &ids[i]);
        }
        rc = vmt_store_has_many(s, ids, k, have);
        for (size_t i = 0; rc == 0 && i < k; i++)
            missing += !have[i];
    }
    if (rc == 0 && missing) {
        char why[96];
        snprintf(why, sizeof(why), "%llu of its pages are missing", (unsigned long long)missing);
        add_broken(v, snap, why);
    }
    free(ids);
    free(have);
    return rc;
}

/* One snapshot: its record, state and map must read; then its pages. */
static int check_snapshot(vmt_store *s, verify_ctx *v, const vmt_id *snap)
{
    vmt_snap_record *r = malloc(sizeof(*r));
    vmt_map *m = NULL;
    if (!r)
        return VMT_ENOMEM;
    match(v, snap, snap);
    int rc = vmt_snap_record_read(s, snap, r);
    if (rc == 0) {
        match(v, snap, &r->state);
        match(v, snap, &r->map_root);
        bool have = false;
        if (vmt_store_has_many(s, &r->state, 1, &have) == 0 && !have)
            add_broken(v, snap, "its state blob is missing");
        rc = vmt_map_load(&m, s, &r->map_root, r->mem_size / VMT_PAGE_SIZE);
        if (rc == 0)
            rc = check_pages(s, v, snap, m);
    }
    if (rc && rc != VMT_ENOMEM) {
        char why[240];
        snprintf(why, sizeof(why), "%s", vmt_error_last());
        add_broken(v, snap, why);
        rc = 0;
    }
    vmt_map_free(m);
    free(r);
    return rc;
}

static int check_tree(vmt_store *s, verify_ctx *v, vmt_progress *p)
{
    vmt_catalog *cat = NULL;
    vmt_catalog_snap *snaps = NULL;
    size_t n = 0;
    int rc = vmt_cli_catalog_of(s, &cat);
    rc = rc ? rc : vmt_catalog_list_snapshots(cat, &snaps, &n);
    vmt_catalog_close(cat);
    v->nsnaps = n;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        vmt_progress_update(p, "snapshots", i, n);
        rc = check_snapshot(s, v, &snaps[i].id);
    }
    vmt_progress_update(p, "snapshots", n, n);
    free(snaps);
    return rc;
}

static void print_text(const verify_ctx *v)
{
    char bytes[32], sid[13], hex[VMT_ID_HEX_LEN + 1];
    vmt_cli_format_bytes(v->st.bytes, bytes, sizeof(bytes));
    printf("%llu packs, %llu records, %llu objects ok, %zu damaged (%s read); %zu snapshots "
           "checked\n",
           (unsigned long long)v->st.packs, (unsigned long long)v->st.records,
           (unsigned long long)v->st.objects_ok, v->nd, bytes, v->nsnaps);
    for (size_t i = 0; i < v->nd; i++) {
        const damage *d = &v->d[i];
        if (d->id_known)
            vmt_id_to_hex(&d->id, hex);
        printf("damaged: pack %u offset %llu%s%s: %s\n", d->pack, (unsigned long long)d->offset,
               d->id_known ? " object " : "", d->id_known ? hex : "", d->what);
        if (d->nholders)
            printf("  held by %zu snapshot%s:", d->nholders, d->nholders == 1 ? "" : "s");
        for (size_t k = 0; k < d->nholders; k++) {
            vmt_cli_short_id(&d->holders[k], sid);
            printf(" %s", sid);
        }
        printf(d->nholders ? "\n" : "  held by no snapshot of the tree\n");
    }
    for (size_t i = 0; i < v->nb; i++) {
        vmt_cli_short_id(&v->b[i].id, sid);
        printf("snapshot %s is not whole: %s\n", sid, v->b[i].why);
    }
    if (!v->nd && !v->nb)
        printf("ok\n");
}

static void print_json(const verify_ctx *v)
{
    vmt_json j;
    vmt_json_init(&j, stdout);
    vmt_json_obj_begin(&j);
    vmt_json_kbool(&j, "ok", !v->nd && !v->nb);
    vmt_json_ku64(&j, "packs", v->st.packs);
    vmt_json_ku64(&j, "records", v->st.records);
    vmt_json_ku64(&j, "objects_ok", v->st.objects_ok);
    vmt_json_ku64(&j, "damaged", v->nd);
    vmt_json_ku64(&j, "bytes", v->st.bytes);
    vmt_json_ku64(&j, "snapshots", v->nsnaps);
    vmt_json_key(&j, "damage");
    vmt_json_arr_begin(&j);
    for (size_t i = 0; i < v->nd; i++) {
        const damage *d = &v->d[i];
        vmt_json_obj_begin(&j);
        vmt_json_ku64(&j, "pack", d->pack);
        vmt_json_ku64(&j, "offset", d->offset);
        vmt_json_key(&j, "id");
        if (d->id_known)
            vmt_json_id(&j, &d->id);
        else
            vmt_json_null(&j);
        vmt_json_kstr(&j, "what", d->what);
        vmt_json_key(&j, "snapshots");
        vmt_json_arr_begin(&j);
        for (size_t k = 0; k < d->nholders; k++)
            vmt_json_id(&j, &d->holders[k]);
        vmt_json_arr_end(&j);
        vmt_json_obj_end(&j);
    }
    vmt_json_arr_end(&j);
    vmt_json_key(&j, "broken");
    vmt_json_arr_begin(&j);
    for (size_t i = 0; i < v->nb; i++) {
        vmt_json_obj_begin(&j);
        vmt_json_kid(&j, "snapshot", &v->b[i].id);
        vmt_json_kstr(&j, "why", v->b[i].why);
        vmt_json_obj_end(&j);
    }
    vmt_json_arr_end(&j);
    vmt_json_obj_end(&j);
}

int vmt_cli_verify(int argc, char **argv)
{
    static const struct option longopts[] = {VMT_CLI_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "verify"};
    const char *pos[1];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, NULL, NULL, pos, 0, &npos);
    if (prc)
        return prc < 0 ? (verify_usage(stdout), 0) : 1;
    verify_ctx v;
    vmt_store *s = NULL;
    vmt_progress prog;
    vmt_store_verify_opts o = {.damage = on_damage, .damage_ctx = &v,
                               .progress = vmt_progress_store_cb, .progress_ctx = &prog};
    memset(&v, 0, sizeof(v));
    vmt_progress_init(&prog, "verify", c.progress);
    int rc = vmt_cli_resolve_store(&c);
    rc = rc ? rc : vmt_cli_store_open(c.store, false, &s);
    if (rc == 0) {
        rc = vmt_store_verify(s, &o, &v.st);
        if (rc == VMT_ECORRUPT)
            rc = 0; /* reported through on_damage */
    }
    rc = rc ? rc : check_tree(s, &v, &prog);
    vmt_progress_end(&prog);
    if (rc == 0 && c.json)
        print_json(&v);
    else if (rc == 0)
        print_text(&v);
    bool bad = v.nd || v.nb;
    for (size_t i = 0; i < v.nd; i++)
        free(v.d[i].holders);
    free(v.d);
    free(v.b);
    vmt_store_close(s);
    if (rc)
        return vmt_cli_fail("verify", "%s", vmt_error_last());
    return bad ? 1 : 0;
}
