/* Listing and printing the catalog's refs (tags, each VM's HEAD), which
 * `tag`, `log`, `show` and `rm` use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "refs.h"

int vmt_cli_list_refs(vmt_catalog *cat, vmt_cli_ref **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    return vmt_catalog_list_refs(cat, out, n);
}

bool vmt_cli_ref_is_tag(const vmt_cli_ref *r, const char **name)
{
    if (strncmp(r->name, "tag/", 4) != 0)
        return false;
    *name = r->name + 4;
    return true;
}

bool vmt_cli_ref_is_head(const vmt_cli_ref *r, char *vm, size_t cap)
{
    size_t n = strlen(r->name);
    if (strncmp(r->name, "vm/", 3) != 0 || n < 9 || strcmp(r->name + n - 5, "/HEAD") != 0)
        return false;
    snprintf(vm, cap, "%.*s", (int)(n - 8), r->name + 3);
    return true;
}

/* The markers of snapshot `id`: "HEAD a, tag: golden" (empty when none). */
void vmt_cli_ref_markers(const vmt_cli_ref *refs, size_t n, const vmt_id *id, char *buf,
                         size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            char vm[VMT_SNAP_NAME_MAX];
            const char *tag;
            if (!vmt_id_equal(&refs[i].id, id))
                continue;
            int w = 0;
            if (pass == 0 && vmt_cli_ref_is_head(&refs[i], vm, sizeof(vm)))
                w = snprintf(buf + len, cap - len, "%s%s HEAD", len ? ", " : "", vm);
            else if (pass == 1 && vmt_cli_ref_is_tag(&refs[i], &tag))
                w = snprintf(buf + len, cap - len, "%stag: %s", len ? ", " : "", tag);
            if (w > 0)
                len = VMT_MIN(len + (size_t)w, cap - 1);
        }
    }
}
