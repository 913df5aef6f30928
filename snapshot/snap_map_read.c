/*
 * Reading memory maps from the store, level by level with batched gets:
 * the inner levels (map_read_inner) and the leaves (map_read_leaves)
 * separately, so that a lazy restore can be ready after reading the few
 * inner nodes and fetch leaves as they are needed.  Every node goes
 * through map_node_check.
 */
#include <stdlib.h>
#include <string.h>

#include "snap_internal.h"

/* Reads the nodes idx[0..n) of level l (ids in ids[l]) into slab; checks them. */
static int read_nodes(vmt_store *s, const vmt_restore_source *src, const map_geom *g, unsigned l, const vmt_id *ids,
                      const uint64_t *idx, size_t n, uint8_t *slab, vmt_store_get_item *items,
                      size_t *counts)
{
    for (size_t i = 0; i < n; i++)
        items[i] = (vmt_store_get_item){
            .id = ids[idx[i]], .buf = slab + i * MAP_NODE_MAX, .cap = MAP_NODE_MAX};
    /* each item's rc is checked */
    if (src)
        (void)src->get_nodes(src->ctx, items, n);
    else
        (void)vmt_store_get_many(s, items, n);
    for (size_t i = 0; i < n; i++) {
        if (items[i].rc)
            return map_node_get_error(&items[i]);
        int rc = map_node_check(g, &items[i].id, items[i].type, items[i].buf, items[i].len, l,
                                idx[i], &counts[i]);
        if (rc)
            return rc;
    }
    return 0;
}

typedef struct reader {
    uint8_t *slab;
    vmt_store_get_item items[MAP_BATCH];
    size_t counts[MAP_BATCH];
} reader;

static reader *reader_new(size_t n)
{
    reader *r = malloc(sizeof(*r));
    if (r && !(r->slab = vmt_mallocn(n, MAP_NODE_MAX))) {
        free(r);
        r = NULL;
    }
    if (!r)
        vmt_error_set(VMT_ENOMEM, "memory map: out of memory reading nodes");
    return r;
}

static void reader_free(reader *r)
{
    if (r)
        free(r->slab);
    free(r);
}

/* One level: reads nodes cur[0..ncur) of level l, records their children's
 * ids and (next != NULL) the non-empty children to read next. */
static int inner_level(vmt_store *s, const vmt_restore_source *src, const map_geom *g, unsigned l, vmt_id *const *ids,
                       const uint64_t *cur, size_t ncur, uint64_t *next, size_t *nnext, reader *r)
{
    vmt_id zero = vmt_id_zero_page();
    for (size_t off = 0; off < ncur; off += MAP_BATCH) {
        size_t n = VMT_MIN(ncur - off, (size_t)MAP_BATCH);
        int rc = read_nodes(s, src, g, l, ids[l], cur + off, n, r->slab, r->items, r->counts);
        if (rc)
            return rc;
        for (size_t i = 0; i < n; i++) {
            for (size_t k = 0; k < r->counts[i]; k++) {
                vmt_mapnode_entry e;
                vmt_store_mapnode_entry_at(r->items[i].buf, k, &e);
                uint64_t child = cur[off + i] * VMT_MAP_FANOUT + e.slot;
                ids[l - 1][child] = e.child;
                if (next && !vmt_id_equal(&e.child, &zero)) /* zero: an empty subtree */
                    next[(*nnext)++] = child;
            }
        }
    }
    return 0;
}

int map_read_inner(vmt_store *s, const map_geom *g, const vmt_id *root,
                   vmt_id *const ids[MAP_MAX_DEPTH])
{
    return map_read_inner_from(s, NULL, g, root, ids);
}

int map_read_inner_from(vmt_store *s, const vmt_restore_source *src, const map_geom *g,
                        const vmt_id *root, vmt_id *const ids[MAP_MAX_DEPTH])
{
    vmt_id zero = vmt_id_zero_page();
    if (vmt_id_equal(root, &zero))
        return vmt_error_set(VMT_ECORRUPT, "memory map: the root is the zero page's id");
    for (unsigned l = 0; l < g->depth; l++)
        for (uint64_t i = 0; i < g->nodes[l]; i++)
            ids[l][i] = zero;
    ids[g->depth - 1][0] = *root;
    if (g->depth == 1)
        return 0;
    /* A frontier never holds more nodes than its level has; level 1 is the
     * widest inner one. */
    uint64_t *a = vmt_mallocn(g->nodes[1], sizeof(uint64_t));
    uint64_t *b = vmt_mallocn(g->nodes[1], sizeof(uint64_t));
    reader *r = reader_new(MAP_BATCH);
    int rc = a && b && r ? 0 : VMT_ENOMEM;
    size_t na = 1;
    if (rc == 0)
        a[0] = 0;
    for (unsigned l = g->depth - 1; rc == 0 && l >= 1; l--) {
        size_t nb = 0;
        rc = inner_level(s, src, g, l, ids, a, na, l > 1 ? b : NULL, &nb, r);
        uint64_t *t = a;
        a = b;
        b = t;
        na = nb;
        if (l == 1)
            break;
    }
    free(a);
    free(b);
    reader_free(r);
    return rc;
}

int map_read_leaves(vmt_store *s, const map_geom *g, const vmt_id *leaf_ids, const uint64_t *idx,
                    size_t n, vmt_id *pages, uint64_t *nonzero)
{
    return map_read_leaves_from(s, NULL, g, leaf_ids, idx, n, pages, nonzero);
}

int map_read_leaves_from(vmt_store *s, const vmt_restore_source *src, const map_geom *g,
                         const vmt_id *leaf_ids, const uint64_t *idx, size_t n, vmt_id *pages,
                         uint64_t *nonzero)
{
    vmt_id zero = vmt_id_zero_page();
    if (n == 0)
        return 0;
    reader *r = reader_new(VMT_MIN(n, (size_t)MAP_BATCH));
    if (!r)
        return VMT_ENOMEM;
    int rc = read_nodes(s, src, g, 0, leaf_ids, idx, VMT_MIN(n, (size_t)MAP_BATCH), r->slab, r->items,
                        r->counts);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        vmt_id *p = pages + idx[i] * VMT_MAP_FANOUT;
        unsigned nch = map_geom_children(g, 0, idx[i]);
        for (unsigned k = 0; k < nch; k++)
            p[k] = zero;
        for (size_t k = 0; k < r->counts[i]; k++) {
            vmt_mapnode_entry e;
            vmt_store_mapnode_entry_at(r->items[i].buf, k, &e);
            p[e.slot] = e.child;
            *nonzero += !vmt_id_equal(&e.child, &zero);
        }
    }
    reader_free(r);
    return rc;
}
