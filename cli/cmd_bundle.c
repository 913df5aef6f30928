/* vmtree export SNAP FILE [--with-ancestors] and vmtree import FILE: the
 * self-contained bundle files of snapshot/ (docs/bundle-format.md). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "json.h"
#include "progress.h"

static const char common_help[] =
    "  --store DIR   the store (default: $VMTREE_STORE, else\n"
    "                ~/.local/share/vmtree/store)\n"
    "  --progress    show progress on stderr even when it is not a terminal\n";

/* ---- export ------------------------------------------------------------------ */

static void export_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree export SNAP FILE [--with-ancestors] [--store DIR] [--json]\n\n"
            "Writes snapshot SNAP with every object it needs (record, state, map, pages)\n"
            "to the bundle FILE: versioned, each object checksummed, importable into any\n"
            "store with `vmtree import`.\n\n"
            "  --with-ancestors  also its ancestors still in the store (the history)\n"
            "%s"
            "  --json        {id, file, bytes}\n",
            common_help);
}

static int export_opt(void *ctx, int code, const char *arg)
{
    (void)arg;
    if (code != 'a')
        return 1;
    *(bool *)ctx = true;
    return 0;
}

int vmt_cli_export(int argc, char **argv)
{
    static const struct option longopts[] = {
        VMT_CLI_COMMON_LONGOPTS, {"with-ancestors", no_argument, NULL, 'a'}, {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "export"};
    bool anc = false;
    const char *pos[2];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, export_opt, &anc, pos, 2,
                                  &npos);
    if (prc)
        return prc < 0 ? (export_usage(stdout), 0) : 1;
    if (npos != 2)
        return vmt_cli_fail("export", "usage: vmtree export SNAP FILE [--with-ancestors]");
    vmt_catalog *cat = NULL;
    vmt_store *s = NULL;
    vmt_id id;
    vmt_progress prog;
    vmt_progress_init(&prog, "export", c.progress);
    int rc = vmt_cli_resolve_store(&c);
    rc = rc ? rc : vmt_cli_store_open(c.store, false, &s);
    rc = rc ? rc : vmt_cli_catalog_of(s, &cat); /* one store handle */
    rc = rc ? rc : vmt_cli_resolve(cat, pos[0], &id);
    rc = rc ? rc : vmt_snap_export(s, &id, anc, pos[1], vmt_progress_store_cb, &prog);
    vmt_progress_end(&prog);
    vmt_catalog_close(cat); /* borrows s */
    vmt_store_close(s);
    if (rc)
        return vmt_cli_fail("export", "%s", vmt_error_last());
    struct stat st;
    uint64_t size = stat(pos[1], &st) == 0 ? (uint64_t)st.st_size : 0;
    char sid[13], sz[32];
    vmt_cli_short_id(&id, sid);
    vmt_cli_format_bytes(size, sz, sizeof(sz));
    if (c.json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_json_obj_begin(&j);
        vmt_json_kid(&j, "id", &id);
        vmt_json_kstr(&j, "file", pos[1]);
        vmt_json_ku64(&j, "bytes", size);
        vmt_json_kbool(&j, "with_ancestors", anc);
        vmt_json_obj_end(&j);
    } else {
        printf("exported %s%s to %s (%s)\n", sid, anc ? " and its ancestors" : "", pos[1], sz);
    }
    return 0;
}

/* ---- import ---------------------------------------------------------------------- */

static void import_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree import FILE [--tag NAME] [--store DIR] [--json]\n\n"
            "Reads a bundle written by `vmtree export`: every object is checked against\n"
            "its id before it is stored, and a damaged bundle or one of a newer format\n"
            "changes nothing.  Its snapshots join the tree; objects the store holds\n"
            "already are not stored twice.  A missing store is created.\n\n"
            "  --tag NAME    tag the exported snapshot as NAME\n"
            "%s"
            "  --json        {snapshot, imported: [ids]}\n",
            common_help);
}

static int import_opt(void *ctx, int code, const char *arg)
{
    if (code != 't')
        return 1;
    if (vmt_cli_check_name("--tag", arg))
        return vmt_cli_fail("import", "%s", vmt_error_last());
    *(const char **)ctx = arg;
    return 0;
}

static int set_tag(vmt_catalog *cat, const char *tag, const vmt_id *id)
{
    char ref[VMT_SNAP_NAME_MAX + 16];
    snprintf(ref, sizeof(ref), "tag/%s", tag);
    return vmt_catalog_set_ref(cat, ref, id, NULL);
}

static void import_print(bool json, const vmt_id *ids, size_t n, const char *tag)
{
    char sid[13];
    if (json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_json_obj_begin(&j);
        vmt_json_key(&j, "snapshot");
        if (n)
            vmt_json_id(&j, &ids[n - 1]);
        else
            vmt_json_null(&j);
        vmt_json_key(&j, "imported");
        vmt_json_arr_begin(&j);
        for (size_t i = 0; i < n; i++)
            vmt_json_id(&j, &ids[i]);
        vmt_json_arr_end(&j);
        vmt_json_obj_end(&j);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        vmt_cli_short_id(&ids[i], sid);
        printf("imported %s%s%s\n", sid, i + 1 == n && tag ? " as tag " : "",
               i + 1 == n && tag ? tag : "");
    }
}

int vmt_cli_import(int argc, char **argv)
{
    static const struct option longopts[] = {
        VMT_CLI_COMMON_LONGOPTS, {"tag", required_argument, NULL, 't'}, {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "import"};
    const char *tag = NULL, *pos[1];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, import_opt, &tag, pos, 1,
                                  &npos);
    if (prc)
        return prc < 0 ? (import_usage(stdout), 0) : 1;
    if (npos != 1)
        return vmt_cli_fail("import", "which bundle? (usage: vmtree import FILE)");
    vmt_catalog *cat = NULL;
    vmt_store *s = NULL;
    vmt_id *ids = NULL;
    size_t n = 0;
    vmt_progress prog;
    vmt_progress_init(&prog, "import", c.progress);
    int rc = vmt_cli_resolve_store(&c);
    rc = rc ? rc : vmt_cli_store_open(c.store, true, &s);
    if (rc == VMT_ENOENT && (rc = vmt_store_init(c.store, NULL)) == 0)
        rc = vmt_cli_store_open(c.store, true, &s); /* importing into a new store */
    rc = rc ? rc : vmt_cli_catalog_of(s, &cat);
    if (rc == 0) /* its messages name the file */
        rc = vmt_snap_import(s, cat, pos[0], &ids, &n, vmt_progress_store_cb, &prog);
    vmt_progress_end(&prog);
    if (rc == 0 && tag && n)
        rc = set_tag(cat, tag, &ids[n - 1]);
    if (rc == 0)
        import_print(c.json, ids, n, tag);
    free(ids);
    vmt_catalog_close(cat);
    vmt_store_close(s);
    return rc ? vmt_cli_fail("import", "%s", vmt_error_last()) : 0;
}
