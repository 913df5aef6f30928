/* vmtree log [NAME] [--graph] and vmtree show SNAP. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "graph.h"
#include "json.h"
#include "refs.h"
#include "vmtree/proto.h"

static const char store_help[] = "  --store DIR   the store (default: $VMTREE_STORE, else\n"
                                 "                ~/.local/share/vmtree/store)\n";

/* ---- log ------------------------------------------------------------------ */

typedef struct log_ctx {
    vmt_cli_ref *refs;
    size_t nrefs;
    vmt_json *json;
    bool color; /* stdout is a terminal */
} log_ctx;

static void log_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree log [NAME] [--graph] [--store DIR] [--json]\n\n"
            "Lists snapshots, newest first, each with the VMs whose HEAD it is and its\n"
            "tags.  With NAME (a VM, a tag or any snapshot name), only NAME and its\n"
            "ancestors; without, every snapshot of the store.\n\n"
            "  --graph       draw the tree, as `git log --graph --oneline --all` does\n"
            "%s"
            "  --json        one JSON array: {id, parent, time_ns, vm, message,\n"
            "                heads, tags} per snapshot, in the same order\n",
            store_help);
}

static void log_text(log_ctx *lc, const char *graph, const vmt_catalog_snap *s)
{
    char sid[13], when[32], marks[1024];
    if (!s) {
        printf("%s\n", graph);
        return;
    }
    vmt_cli_short_id(&s->id, sid);
    vmt_cli_format_time(s->time_ns, when, sizeof(when));
    vmt_cli_ref_markers(lc->refs, lc->nrefs, &s->id, marks, sizeof(marks));
    printf("%s%s%s%s%s%s%s%s [%s %s]%s%s%s\n", graph, graph[0] ? " " : "",
           lc->color ? "\033[33m" : "", sid, lc->color ? "\033[0m" : "", marks[0] ? " (" : "",
           marks, marks[0] ? ")" : "", s->vm_name, when,
           s->message[0] ? " " : "", s->message,
           s->has_parent && !s->parent_present ? " (parent removed)" : "");
}

static void log_json(log_ctx *lc, const vmt_catalog_snap *s)
{
    vmt_json *j = lc->json;
    vmt_json_obj_begin(j);
    vmt_json_kid(j, "id", &s->id);
    vmt_json_key(j, "parent");
    if (s->has_parent)
        vmt_json_id(j, &s->parent);
    else
        vmt_json_null(j);
    vmt_json_kbool(j, "parent_present", s->parent_present);
    vmt_json_ku64(j, "time_ns", s->time_ns);
    vmt_json_kstr(j, "vm", s->vm_name);
    vmt_json_kstr(j, "message", s->message);
    for (int pass = 0; pass < 2; pass++) {
        vmt_json_key(j, pass ? "tags" : "heads");
        vmt_json_arr_begin(j);
        for (size_t i = 0; i < lc->nrefs; i++) {
            char vm[VMT_SNAP_NAME_MAX];
            const char *tag;
            if (!vmt_id_equal(&lc->refs[i].id, &s->id))
                continue;
            if (!pass && vmt_cli_ref_is_head(&lc->refs[i], vm, sizeof(vm)))
                vmt_json_str(j, vm);
            else if (pass && vmt_cli_ref_is_tag(&lc->refs[i], &tag))
                vmt_json_str(j, tag);
        }
        vmt_json_arr_end(j);
    }
    vmt_json_obj_end(j);
}

static void log_row(void *ctx, const char *graph, const vmt_catalog_snap *s)
{
    log_ctx *lc = ctx;
    if (lc->json) {
        if (s)
            log_json(lc, s);
    } else {
        log_text(lc, graph, s);
    }
}

/* Keeps only `tip` and its ancestors in s[0..*n) (in place). */
static void keep_ancestry(vmt_catalog_snap *s, size_t *n, const vmt_id *tip)
{
    bool *keep = vmt_callocn(*n ? *n : 1, sizeof(bool));
    if (!keep)
        return;
    vmt_id want = *tip;
    for (bool found = true; found;) {
        found = false;
        for (size_t i = 0; i < *n; i++) {
            if (keep[i] || !vmt_id_equal(&s[i].id, &want))
                continue;
            keep[i] = true;
            found = s[i].has_parent;
            want = s[i].parent;
            break;
        }
    }
    size_t w = 0;
    for (size_t i = 0; i < *n; i++)
        if (keep[i])
            s[w++] = s[i];
    *n = w;
    free(keep);
}

static int log_opt(void *ctx, int code, const char *arg)
{
    (void)arg;
    if (code != 'G')
        return 1;
    *(bool *)ctx = true;
    return 0;
}

static int log_print(vmt_cli_common *c, const char *name, bool graph, log_ctx *lc)
{
    vmt_catalog *cat = NULL;
    vmt_catalog_snap *s = NULL;
    size_t n = 0;
    vmt_id tip;
    int rc = vmt_cli_catalog_open(c->store, &cat);
    if (rc == 0 && name)
        rc = vmt_cli_resolve(cat, name, &tip);
    if (rc == 0)
        rc = vmt_catalog_list_snapshots(cat, &s, &n);
    if (rc == 0)
        rc = vmt_cli_list_refs(cat, &lc->refs, &lc->nrefs);
    vmt_catalog_close(cat);
    if (rc == 0 && name)
        keep_ancestry(s, &n, &tip);
    if (rc == 0 && lc->json)
        vmt_json_arr_begin(lc->json);
    if (rc == 0 && graph)
        rc = vmt_graph_render(s, n, log_row, lc);
    if (rc == 0 && !graph) {
        size_t *order = vmt_callocn(n ? n : 1, sizeof(size_t));
        rc = order ? vmt_graph_order(s, n, order) : VMT_ENOMEM;
        for (size_t k = 0; rc == 0 && k < n; k++)
            log_row(lc, "", &s[order[k]]);
        free(order);
    }
    if (rc == 0 && lc->json)
        vmt_json_arr_end(lc->json);
    if (rc == 0 && n == 0 && !lc->json)
        printf("(no snapshots yet: vmtree snapshot NAME takes one)\n");
    free(s);
    free(lc->refs);
    return rc;
}

int vmt_cli_log(int argc, char **argv)
{
    static const struct option longopts[] = {
        VMT_CLI_COMMON_LONGOPTS, {"graph", no_argument, NULL, 'G'}, {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "log"};
    bool graph = false;
    const char *pos[1];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, log_opt, &graph, pos, 1,
                                  &npos);
    if (prc)
        return prc < 0 ? (log_usage(stdout), 0) : 1;
    vmt_json j;
    vmt_json_init(&j, stdout);
    log_ctx lc = {.json = c.json ? &j : NULL, .color = isatty(STDOUT_FILENO) == 1};
    if (vmt_cli_resolve_store(&c) || log_print(&c, npos ? pos[0] : NULL, graph, &lc))
        return vmt_cli_fail("log", "%s", vmt_error_last());
    return 0;
}

/* ---- show ------------------------------------------------------------------- */

static void show_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree show SNAP [--store DIR] [--json]\n\n"
            "Describes snapshot SNAP: its record (parent, VM, time, message, image,\n"
            "command line, memory, vCPUs, map root, state blob), the refs that point at\n"
            "it, its children, the number of non-zero pages, and a summary of the vCPU\n"
            "and device state.\n\n"
            "%s"
            "  --json        one JSON object (the state summary as text lines)\n",
            store_help);
}

typedef struct show_data {
    vmt_id id;
    vmt_snap_record rec;
    char *state_text;            /* vmt_state_describe output */
    size_t state_len;            /* bytes of the state blob */
    char marks[1024];
    vmt_catalog_snap *children;  /* entries of the listing whose parent is id */
    size_t nchildren;
} show_data;

static int show_load_state(vmt_store *s, show_data *d)
{
    void *blob = NULL;
    size_t len = 0, tl = 0;
    int rc = vmt_store_get(s, &d->rec.state, &blob, &len, NULL);
    if (rc)
        return vmt_error_wrap(rc, "reading the state blob");
    d->state_len = len;
    FILE *f = open_memstream(&d->state_text, &tl);
    if (!f) {
        free(blob);
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    }
    rc = vmt_state_describe(blob, len, f);
    if (rc)
        fprintf(f, "(cannot decode: %s)\n", vmt_error_last());
    fclose(f);
    free(blob);
    return 0;
}

static int show_children(vmt_catalog *cat, show_data *d)
{
    vmt_catalog_snap *s = NULL;
    size_t n = 0;
    int rc = vmt_catalog_list_snapshots(cat, &s, &n);
    if (rc)
        return rc;
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i].has_parent && vmt_id_equal(&s[i].parent, &d->id))
            s[w++] = s[i];
    d->children = s;
    d->nchildren = w;
    return 0;
}

static int show_load(const char *store, const char *name, show_data *d)
{
    vmt_catalog *cat = NULL;
    vmt_store *s = NULL;
    vmt_cli_ref *refs = NULL;
    size_t nrefs = 0;
    /* One store handle: the catalog is the open store's. */
    int rc = vmt_cli_store_open(store, false, &s);
    rc = rc ? rc : vmt_cli_catalog_of(s, &cat);
    rc = rc ? rc : vmt_cli_resolve(cat, name, &d->id);
    rc = rc ? rc : vmt_snap_record_read(s, &d->id, &d->rec);
    rc = rc ? rc : show_load_state(s, d);
    rc = rc ? rc : show_children(cat, d);
    rc = rc ? rc : vmt_cli_list_refs(cat, &refs, &nrefs);
    if (rc == 0)
        vmt_cli_ref_markers(refs, nrefs, &d->id, d->marks, sizeof(d->marks));
    free(refs);
    vmt_catalog_close(cat); /* borrows s */
    vmt_store_close(s);
    return rc;
}

static void show_text(const show_data *d)
{
    const vmt_snap_record *r = &d->rec;
    char hex[VMT_ID_HEX_LEN + 1], when[32], mem[32];
    vmt_id_to_hex(&d->id, hex);
    printf("snapshot   %s%s%s%s\n", hex, d->marks[0] ? " (" : "", d->marks,
           d->marks[0] ? ")" : "");
    for (uint32_t i = 0; i < r->nparents; i++) {
        vmt_id_to_hex(&r->parents[i], hex);
        printf("parent     %s\n", hex);
    }
    if (r->nparents == 0)
        printf("parent     (none: a VM as booted)\n");
    vmt_cli_format_time(r->time_ns, when, sizeof(when));
    vmt_cli_format_bytes(r->mem_size, mem, sizeof(mem));
    printf("vm         %s\ntime       %s\nmessage    %s\nimage      %s\ncmdline    %s\n",
           r->vm_name, when, r->message, r->image, r->cmdline);
    printf("memory     %s (%llu pages, %llu not zero)\n", mem,
           (unsigned long long)(r->mem_size / VMT_PAGE_SIZE),
           (unsigned long long)r->nonzero_pages);
    printf("vcpus      %u%s\n", r->vcpus, r->irqchip ? ", in-kernel irqchip" : "");
    vmt_id_to_hex(&r->map_root, hex);
    printf("map root   %s\n", hex);
    vmt_id_to_hex(&r->state, hex);
    printf("state      %s (%zu bytes)\n", hex, d->state_len);
    for (size_t i = 0; i < d->nchildren; i++) {
        vmt_id_to_hex(&d->children[i].id, hex);
        printf("child      %s\n", hex);
    }
    printf("\n%s", d->state_text ? d->state_text : "");
}

static void show_json(const show_data *d)
{
    const vmt_snap_record *r = &d->rec;
    vmt_json j;
    vmt_json_init(&j, stdout);
    vmt_json_obj_begin(&j);
    vmt_json_kid(&j, "id", &d->id);
    vmt_json_key(&j, "parents");
    vmt_json_arr_begin(&j);
    for (uint32_t i = 0; i < r->nparents; i++)
        vmt_json_id(&j, &r->parents[i]);
    vmt_json_arr_end(&j);
    vmt_json_kstr(&j, "vm", r->vm_name);
    vmt_json_ku64(&j, "time_ns", r->time_ns);
    vmt_json_kstr(&j, "message", r->message);
    vmt_json_kstr(&j, "image", r->image);
    vmt_json_kstr(&j, "cmdline", r->cmdline);
    vmt_json_ku64(&j, "mem_size", r->mem_size);
    vmt_json_ku64(&j, "vcpus", r->vcpus);
    vmt_json_kbool(&j, "irqchip", r->irqchip);
    vmt_json_ku64(&j, "nonzero_pages", r->nonzero_pages);
    vmt_json_kid(&j, "map_root", &r->map_root);
    vmt_json_kid(&j, "state", &r->state);
    vmt_json_ku64(&j, "state_bytes", d->state_len);
    vmt_json_kstr(&j, "refs", d->marks);
    vmt_json_key(&j, "children");
    vmt_json_arr_begin(&j);
    for (size_t i = 0; i < d->nchildren; i++)
        vmt_json_id(&j, &d->children[i].id);
    vmt_json_arr_end(&j);
    vmt_json_kstr(&j, "state_summary", d->state_text ? d->state_text : "");
    vmt_json_obj_end(&j);
}

int vmt_cli_show(int argc, char **argv)
{
    static const struct option longopts[] = {VMT_CLI_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "show"};
    const char *pos[1];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, NULL, NULL, pos, 1, &npos);
    if (prc)
        return prc < 0 ? (show_usage(stdout), 0) : 1;
    if (npos != 1)
        return vmt_cli_fail("show", "which snapshot? (usage: vmtree show SNAP)");
    show_data *d = calloc(1, sizeof(*d));
    int rc = d ? vmt_cli_resolve_store(&c) : vmt_error_set(VMT_ENOMEM, "out of memory");
    if (rc == 0)
        rc = show_load(c.store, pos[0], d);
    if (rc == 0 && c.json)
        show_json(d);
    else if (rc == 0)
        show_text(d);
    if (d) {
        free(d->state_text);
        free(d->children);
    }
    free(d);
    return rc ? vmt_cli_fail("show", "%s", vmt_error_last()) : 0;
}
