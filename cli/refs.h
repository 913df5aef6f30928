/* The catalog's refs as cli/ lists and prints them (refs.c).  Not
 * thread-safe. */
#ifndef VMTREE_CLI_REFS_H
#define VMTREE_CLI_REFS_H

#include <stdbool.h>
#include <stddef.h>

#include "vmtree/snapshot.h"

typedef vmt_catalog_ref vmt_cli_ref; /* name "tag/T" or "vm/NAME/HEAD", id */

/* Every ref of the catalog cat, by name (*out: caller frees). */
int vmt_cli_list_refs(vmt_catalog *cat, vmt_cli_ref **out, size_t *n);
/* True for a tag; *name: the tag's name (inside r). */
bool vmt_cli_ref_is_tag(const vmt_cli_ref *r, const char **name);
/* True for a VM's HEAD; the VM's name into vm[cap]. */
bool vmt_cli_ref_is_head(const vmt_cli_ref *r, char *vm, size_t cap);
/* "a HEAD, b HEAD, tag: golden" for the refs that point at `id`. */
void vmt_cli_ref_markers(const vmt_cli_ref *refs, size_t n, const vmt_id *id, char *buf,
                         size_t cap);

#endif
