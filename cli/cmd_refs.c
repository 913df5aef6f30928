/* vmtree tag (list, set, delete) and vmtree rm SNAP [--recursive]. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "refs.h"

static const char store_help[] = "  --store DIR   the store (default: $VMTREE_STORE, else\n"
                                 "                ~/.local/share/vmtree/store)\n";

/* ---- tag --------------------------------------------------------------------- */

static void tag_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree tag [--json]                 list the tags\n"
            "       vmtree tag NAME SNAP [-f]           tag snapshot SNAP as NAME\n"
            "       vmtree tag -d NAME                  delete tag NAME\n\n"
            "Tags name snapshots: `vmtree branch golden --name x`, `vmtree rollback a\n"
            "golden`.  A tag keeps its snapshot from `vmtree rm` and `vmtree gc`.\n\n"
            "  -f, --force   move an existing tag\n"
            "  -d, --delete  delete the tag (the snapshot stays)\n"
            "%s"
            "  --json        the list as a JSON array of {tag, id}; setting or deleting\n"
            "                prints {tag, id, deleted}\n",
            store_help);
}

typedef struct tag_opts {
    bool force, del;
} tag_opts;

static int tag_opt(void *ctx, int code, const char *arg)
{
    tag_opts *t = ctx;
    (void)arg;
    if (code == 'f')
        t->force = true;
    else if (code == 'd')
        t->del = true;
    else
        return 1;
    return 0;
}

static int tag_list(const char *store, bool json)
{
    vmt_catalog *cat = NULL;
    vmt_cli_ref *refs = NULL;
    size_t n = 0;
    int rc = vmt_cli_catalog_open(store, &cat);
    rc = rc ? rc : vmt_cli_list_refs(cat, &refs, &n);
    vmt_catalog_close(cat);
    if (rc)
        return rc;
    vmt_json j;
    vmt_json_init(&j, stdout);
    if (json)
        vmt_json_arr_begin(&j);
    for (size_t i = 0; i < n; i++) {
        const char *tag;
        char hex[VMT_ID_HEX_LEN + 1];
        if (!vmt_cli_ref_is_tag(&refs[i], &tag))
            continue;
        vmt_id_to_hex(&refs[i].id, hex);
        if (json) {
            vmt_json_obj_begin(&j);
            vmt_json_kstr(&j, "tag", tag);
            vmt_json_kstr(&j, "id", hex);
            vmt_json_obj_end(&j);
        } else {
            printf("%-24s %.12s\n", tag, hex);
        }
    }
    if (json)
        vmt_json_arr_end(&j);
    free(refs);
    return 0;
}

static int tag_set(vmt_catalog *c, const char *name, const char *snap, bool force, vmt_id *id)
{
    char ref[VMT_SNAP_NAME_MAX + 16];
    vmt_id old;
    snprintf(ref, sizeof(ref), "tag/%s", name);
    int rc = vmt_cli_resolve(c, snap, id);
    if (rc)
        return rc;
    rc = vmt_catalog_get_ref(c, ref, &old);
    if (rc == 0 && !force && !vmt_id_equal(&old, id)) {
        char sid[13];
        vmt_cli_short_id(&old, sid);
        return vmt_error_set(VMT_EEXIST, "tag %s exists (on %s); -f moves it", name, sid);
    }
    if (rc != 0 && rc != VMT_ENOENT)
        return rc;
    return vmt_catalog_set_ref(c, ref, id, NULL);
}

int vmt_cli_tag(int argc, char **argv)
{
    static const struct option longopts[] = {VMT_CLI_COMMON_LONGOPTS,
                                             {"force", no_argument, NULL, 'f'},
                                             {"delete", no_argument, NULL, 'd'},
                                             {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "tag"};
    tag_opts t = {0};
    const char *pos[2];
    int npos, prc = vmt_cli_parse(&c, argc, argv, "fd", longopts, tag_opt, &t, pos, 2, &npos);
    if (prc)
        return prc < 0 ? (tag_usage(stdout), 0) : 1;
    if (vmt_cli_resolve_store(&c))
        return vmt_cli_fail("tag", "%s", vmt_error_last());
    if (npos == 0 && !t.del)
        return tag_list(c.store, c.json) ? vmt_cli_fail("tag", "%s", vmt_error_last()) : 0;
    if ((t.del && npos != 1) || (!t.del && npos != 2))
        return vmt_cli_fail("tag", "usage: vmtree tag NAME SNAP, or vmtree tag -d NAME");
    if (vmt_cli_check_name("tag", pos[0]))
        return vmt_cli_fail("tag", "%s", vmt_error_last());
    vmt_catalog *cat = NULL;
    vmt_id id;
    char ref[VMT_SNAP_NAME_MAX + 16], sid[13];
    snprintf(ref, sizeof(ref), "tag/%s", pos[0]);
    int rc = vmt_cli_catalog_open(c.store, &cat);
    if (rc == 0 && t.del) {
        rc = vmt_catalog_delete_ref(cat, ref);
        if (rc == VMT_ENOENT)
            rc = vmt_error_set(VMT_ENOENT, "no tag named %s", pos[0]);
    } else if (rc == 0) {
        rc = tag_set(cat, pos[0], pos[1], t.force, &id);
    }
    vmt_catalog_close(cat);
    if (rc)
        return vmt_cli_fail("tag", "%s", vmt_error_last());
    if (c.json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_json_obj_begin(&j);
        vmt_json_kstr(&j, "tag", pos[0]);
        vmt_json_key(&j, "id");
        if (t.del)
            vmt_json_null(&j);
        else
            vmt_json_id(&j, &id);
        vmt_json_kbool(&j, "deleted", t.del);
        vmt_json_obj_end(&j);
    } else if (!t.del) {
        vmt_cli_short_id(&id, sid);
        printf("%s -> %s\n", pos[0], sid);
    } else {
        printf("deleted tag %s\n", pos[0]);
    }
    return 0;
}

/* ---- rm ------------------------------------------------------------------------ */

static void rm_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree rm SNAP [--recursive] [--force] [--store DIR] [--json]\n\n"
            "Removes snapshot SNAP from the tree.  Its children stay valid: they hold\n"
            "their pages by id, not as deltas.  The space it alone used is reclaimed by\n"
            "the next `vmtree gc`.  A snapshot that a tag or a stopped VM's HEAD points\n"
            "at is kept unless --force (which deletes those refs); one a running VM's\n"
            "HEAD points at is always kept.\n\n"
            "  -r, --recursive  also remove every descendant of SNAP\n"
            "  -f, --force      delete the tags and stopped VMs' HEADs in the way\n"
            "%s"
            "  --json           {removed: [ids], refs_deleted: [names]}\n",
            store_help);
}

typedef struct rm_opts {
    bool recursive, force;
} rm_opts;

static int rm_opt(void *ctx, int code, const char *arg)
{
    rm_opts *o = ctx;
    (void)arg;
    if (code == 'r')
        o->recursive = true;
    else if (code == 'f')
        o->force = true;
    else
        return 1;
    return 0;
}

/* Marks in `sel` SNAP and, recursively, its descendants. */
static void select_tree(const vmt_catalog_snap *s, size_t n, const vmt_id *root, bool recursive,
                        bool *sel)
{
    for (size_t i = 0; i < n; i++)
        sel[i] = vmt_id_equal(&s[i].id, root);
    for (bool grew = recursive; grew;) {
        grew = false;
        for (size_t i = 0; i < n; i++) {
            if (sel[i] || !s[i].has_parent)
                continue;
            for (size_t k = 0; k < n && !sel[i]; k++)
                if (sel[k] && vmt_id_equal(&s[k].id, &s[i].parent))
                    sel[i] = grew = true;
        }
    }
}

/* Whether ref r may go with the selected snapshots: VMT_EBUSY when it is a
 * running VM's HEAD (always) or, without force, any ref. */
static int ref_may_go(const char *store, vmt_catalog *cat, const vmt_cli_ref *r, bool force)
{
    char vm[VMT_SNAP_NAME_MAX], sid[13], host[VMT_CATALOG_HOST_MAX];
    long pid;
    vmt_cli_short_id(&r->id, sid);
    if (vmt_cli_ref_is_head(r, vm, sizeof(vm)) &&
        vmt_cli_vm_running(store, cat, vm, &pid, host, sizeof(host)) == 1)
        return vmt_error_set(VMT_EBUSY, "%s is the HEAD of running VM %s (process %ld%s%s)", sid,
                             vm, pid, host[0] ? " on host " : "", host);
    if (!force)
        return vmt_error_set(VMT_EBUSY, "%s is %s (--force deletes that ref)", sid, r->name);
    return 0;
}

/* Checks the refs on the selected snapshots; with force deletes those that
 * may go (their names appended to *deleted, one per line).  Refuses a
 * running VM's HEAD always.  Every ref is checked before any is deleted,
 * so a refusal deletes nothing. */
static int clear_refs(const char *store, vmt_catalog *cat, const vmt_catalog_snap *s, size_t n,
                      const bool *sel, bool force, FILE *deleted)
{
    vmt_cli_ref *refs = NULL;
    size_t nr = 0;
    int rc = vmt_cli_list_refs(cat, &refs, &nr);
    bool *hit = rc == 0 ? calloc(nr + 1, sizeof(bool)) : NULL;
    if (rc == 0 && !hit)
        rc = vmt_error_set(VMT_ENOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < nr; i++) {
        for (size_t k = 0; k < n && !hit[i]; k++)
            hit[i] = sel[k] && vmt_id_equal(&s[k].id, &refs[i].id);
        if (hit[i])
            rc = ref_may_go(store, cat, &refs[i], force);
    }
    for (size_t i = 0; rc == 0 && i < nr; i++)
        if (hit[i] && (rc = vmt_catalog_delete_ref(cat, refs[i].name)) == 0)
            fprintf(deleted, "%s\n", refs[i].name);
    free(hit);
    free(refs);
    return rc;
}

static void rm_report(bool json, const vmt_catalog_snap *s, size_t n, const bool *sel,
                      const char *deleted)
{
    vmt_json j;
    vmt_json_init(&j, stdout);
    if (json) {
        vmt_json_obj_begin(&j);
        vmt_json_key(&j, "refs_deleted");
        vmt_json_arr_begin(&j);
    }
    for (const char *p = deleted; p && *p; p = strchr(p, '\n') + 1) {
        size_t l = strcspn(p, "\n");
        if (json)
            vmt_json_strn(&j, p, l);
        else
            printf("deleted ref %.*s\n", (int)l, p);
    }
    if (json) {
        vmt_json_arr_end(&j);
        vmt_json_key(&j, "removed");
        vmt_json_arr_begin(&j);
    }
    size_t removed = 0;
    for (size_t i = 0; i < n; i++) {
        char sid[13];
        if (!sel[i])
            continue;
        removed++;
        vmt_cli_short_id(&s[i].id, sid);
        if (json)
            vmt_json_id(&j, &s[i].id);
        else
            printf("removed %s\n", sid);
    }
    if (json) {
        vmt_json_arr_end(&j);
        vmt_json_obj_end(&j);
    } else {
        printf("%zu snapshot%s removed; `vmtree gc` reclaims the space\n", removed,
               removed == 1 ? "" : "s");
    }
}

static int rm_run(vmt_cli_common *c, const char *name, const rm_opts *o)
{
    vmt_catalog *cat = NULL;
    vmt_catalog_snap *s = NULL;
    bool *sel = NULL;
    size_t n = 0, dlen = 0;
    char *deleted = NULL;
    vmt_id id;
    FILE *df = open_memstream(&deleted, &dlen);
    int rc = df ? vmt_cli_catalog_open(c->store, &cat) : VMT_ENOMEM;
    rc = rc ? rc : vmt_cli_resolve(cat, name, &id);
    rc = rc ? rc : vmt_catalog_list_snapshots(cat, &s, &n);
    if (rc == 0 && !(sel = vmt_callocn(n ? n : 1, sizeof(bool))))
        rc = VMT_ENOMEM;
    if (rc == 0)
        select_tree(s, n, &id, o->recursive, sel);
    rc = rc ? rc : clear_refs(c->store, cat, s, n, sel, o->force, df);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (sel[i])
            rc = vmt_catalog_remove_snapshot(cat, &s[i].id);
    if (df)
        fclose(df);
    if (rc == 0)
        rm_report(c->json, s, n, sel, deleted);
    vmt_catalog_close(cat);
    free(deleted);
    free(s);
    free(sel);
    return rc;
}

int vmt_cli_rm(int argc, char **argv)
{
    static const struct option longopts[] = {VMT_CLI_COMMON_LONGOPTS,
                                             {"recursive", no_argument, NULL, 'r'},
                                             {"force", no_argument, NULL, 'f'},
                                             {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "rm"};
    rm_opts o = {0};
    const char *pos[1];
    int npos, prc = vmt_cli_parse(&c, argc, argv, "rf", longopts, rm_opt, &o, pos, 1, &npos);
    if (prc)
        return prc < 0 ? (rm_usage(stdout), 0) : 1;
    if (npos != 1)
        return vmt_cli_fail("rm", "which snapshot? (usage: vmtree rm SNAP [--recursive])");
    if (vmt_cli_resolve_store(&c) || rm_run(&c, pos[0], &o))
        return vmt_cli_fail("rm", "%s", vmt_error_last());
    return 0;
}
