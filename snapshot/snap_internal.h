/*
 * snapshot/ internals shared by its source files: the geometry of a memory
 * map and the semantic check of a map node read from the store.  Never
 * included outside snapshot/.
 */
#ifndef VMTREE_SNAP_INTERNAL_H
#define VMTREE_SNAP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/snapshot.h"

/* 256^3 pages = 64 GiB = VMT_MAP_MAX_PAGES, so 3 levels suffice; one spare. */
#define MAP_MAX_DEPTH 4u
/* Largest node the writer produces and the reader accepts. */
#define MAP_NODE_MAX (VMT_MAPNODE_HDR + VMT_MAP_FANOUT * VMT_MAPNODE_ENTRY)
/* Nodes handled per store batch (bounds memory to ~5 MiB of node buffers). */
#define MAP_BATCH 1024u

/* The shape of a map of `npages` pages: how many nodes each level has. */
typedef struct map_geom {
    uint64_t npages;
    unsigned depth;                /* levels; the root is level depth-1 */
    uint64_t nodes[MAP_MAX_DEPTH]; /* nodes at each level; nodes[depth-1] == 1 */
} map_geom;

/* Fills *g; VMT_EINVAL for 0 pages, VMT_ERANGE beyond VMT_MAP_MAX_PAGES. */
int map_geom_init(map_geom *g, uint64_t npages);

/* How many children (pages or nodes) node `idx` of `level` covers. */
unsigned map_geom_children(const map_geom *g, unsigned level, uint64_t idx);

/*
 * Checks a map node read from the store as node `idx` of `level`: its type,
 * its layout (dedup's parser), that its level is `level`, that it has at
 * most as many entries as children it covers, and that every slot is in
 * range and the slots strictly increase.  *count receives the entries.
 * VMT_ECORRUPT naming the node otherwise.
 */
int map_node_check(const map_geom *g, const vmt_id *id, vmt_obj_type type, const void *buf,
                   size_t len, unsigned level, uint64_t idx, size_t *count);

/*
 * Reads the inner nodes (levels depth-1 .. 1) of the tree at `root`,
 * checking each, and fills ids[l][0 .. g->nodes[l]) for every level: the
 * node ids, the zero-page id for empty subtrees; ids[depth-1][0] = root.
 * ids[0] are then the leaves' ids.  Batched: one get per level per
 * MAP_BATCH nodes.
 */
int map_read_inner(vmt_store *s, const map_geom *g, const vmt_id *root,
                   vmt_id *const ids[MAP_MAX_DEPTH]);

/*
 * Reads the n (<= MAP_BATCH) leaves idx[0..n) whose ids are leaf_ids[idx[k]]
 * (none the zero id), checking each, and writes the page ids of each leaf,
 * the zero-page id for pages it leaves out, into pages[256 idx[k] ..].
 * Adds the non-zero pages found to *nonzero.
 */
int map_read_leaves(vmt_store *s, const map_geom *g, const vmt_id *leaf_ids, const uint64_t *idx,
                    size_t n, vmt_id *pages, uint64_t *nonzero);

/* The same, reading the nodes through `src` (a lazy restore's source;
 * NULL: the store `s`). */
int map_read_inner_from(vmt_store *s, const vmt_restore_source *src, const map_geom *g,
                        const vmt_id *root, vmt_id *const ids[MAP_MAX_DEPTH]);
int map_read_leaves_from(vmt_store *s, const vmt_restore_source *src, const map_geom *g,
                         const vmt_id *leaf_ids, const uint64_t *idx, size_t n, vmt_id *pages,
                         uint64_t *nonzero);

/* Maps a failed get of map node `id` to VMT_ENOENT / VMT_ECORRUPT with a message. */
int map_node_get_error(const vmt_store_get_item *it);

/* ---- records ------------------------------------------------------------ */

/* True for a valid VM or tag name: [A-Za-z0-9._-], 1..VMT_SNAP_NAME_MAX-1 bytes. */
bool snap_name_valid(const char *name);

#endif
