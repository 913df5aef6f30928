/*
 * Diff of two memory maps straight from the store, descending only where
 * child ids differ: breadth first, one level at a time, with batched reads;
 * pairs of nodes stay in index order, so pages come out in pfn order.
 * An absent child (an all-zero subtree) is represented by the zero-page
 * id, which never names a node.
 */
#include <stdlib.h>
#include <string.h>

#include "snap_internal.h"

/* Node `idx` of the current level in tree a and in tree b (zero id: absent). */
typedef struct dpair {
    uint64_t idx;
    vmt_id a, b;
} dpair;

typedef struct dlist {
    dpair *v;
    size_t n, cap;
} dlist;

typedef struct diff_ctx {
    vmt_store *s;
    map_geom g;
    vmt_id zero;
    vmt_map_diff_fn fn;
    void *ctx;
    uint64_t nodes_read;
    uint8_t *slab; /* 2 * MAP_BATCH nodes */
    vmt_store_get_item items[2 * MAP_BATCH];
    vmt_id ka[VMT_MAP_FANOUT], kb[VMT_MAP_FANOUT];
} diff_ctx;

#define DIFF_CHUNK MAP_BATCH

static int dlist_push(dlist *l, uint64_t idx, const vmt_id *a, const vmt_id *b)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        dpair *v = vmt_reallocn(l->v, cap, sizeof(*v));
        if (!v)
            return VMT_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (dpair){.idx = idx, .a = *a, .b = *b};
    return 0;
}

/* Expands a checked node into kids[0..256) (absent slots: zero id). */
static void expand(const diff_ctx *d, const vmt_store_get_item *it, size_t count, vmt_id *kids)
{
    for (unsigned s = 0; s < VMT_MAP_FANOUT; s++)
        kids[s] = d->zero;
    for (size_t i = 0; it && i < count; i++) {
        vmt_mapnode_entry e;
        vmt_store_mapnode_entry_at(it->buf, i, &e);
        kids[e.slot] = e.child;
    }
}

/* Reads and checks a node (it may be NULL for an absent one) and expands it. */
static int open_node(diff_ctx *d, vmt_store_get_item *it, unsigned l, uint64_t idx, vmt_id *kids)
{
    size_t count = 0;

    if (it) {
        if (it->rc)
            return map_node_get_error(it);
        int rc = map_node_check(&d->g, &it->id, it->type, it->buf, it->len, l, idx, &count);
        if (rc)
            return rc;
    }
    expand(d, it, count, kids);
    return 0;
}

/* Compares the children of one pair; leaves report pages, others queue pairs. */
static int compare_pair(diff_ctx *d, unsigned l, const dpair *p, dlist *next)
{
    unsigned nch = map_geom_children(&d->g, l, p->idx);

    for (unsigned s = 0; s < nch; s++) {
        if (vmt_id_equal(&d->ka[s], &d->kb[s]))
            continue;
        uint64_t child = p->idx * VMT_MAP_FANOUT + s;
        if (l == 0) {
            if (d->fn(d->ctx, child, &d->ka[s], &d->kb[s]) != 0)
                return vmt_error_set(VMT_ECANCELED, "memory map diff: stopped by the callback");
        } else if (dlist_push(next, child, &d->ka[s], &d->kb[s]) != 0) {
            return vmt_error_set(VMT_ENOMEM, "memory map diff: out of memory");
        }
    }
    return 0;
}

static int diff_chunk(diff_ctx *d, unsigned l, const dpair *p, size_t n, dlist *next)
{
    vmt_store_get_item *ia[DIFF_CHUNK], *ib[DIFF_CHUNK];
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        ia[i] = ib[i] = NULL;
        const vmt_id *ids[2] = {&p[i].a, &p[i].b};
        for (int t = 0; t < 2; t++) {
            if (vmt_id_equal(ids[t], &d->zero))
                continue;
            d->items[k] = (vmt_store_get_item){
                .id = *ids[t], .buf = d->slab + k * MAP_NODE_MAX, .cap = MAP_NODE_MAX};
            *(t ? &ib[i] : &ia[i]) = &d->items[k++];
        }
    }
    d->nodes_read += k;
    (void)vmt_store_get_many(d->s, d->items, k); /* each item's rc is checked */
    for (size_t i = 0; i < n; i++) {
        int rc = open_node(d, ia[i], l, p[i].idx, d->ka);
        if (rc == 0)
            rc = open_node(d, ib[i], l, p[i].idx, d->kb);
        if (rc == 0)
            rc = compare_pair(d, l, &p[i], next);
        if (rc)
            return rc;
    }
    return 0;
}

static int diff_levels(diff_ctx *d, dlist *cur, dlist *next)
{
    for (unsigned l = d->g.depth; l-- > 0;) {
        next->n = 0;
        for (size_t off = 0; off < cur->n; off += DIFF_CHUNK) {
            int rc =
                diff_chunk(d, l, cur->v + off, VMT_MIN(cur->n - off, (size_t)DIFF_CHUNK), next);
            if (rc)
                return rc;
        }
        dlist t = *cur;
        *cur = *next;
        *next = t;
    }
    return 0;
}

int vmt_map_diff(vmt_store *s, const vmt_id *root_a, const vmt_id *root_b, uint64_t npages,
                 vmt_map_diff_fn fn, void *ctx, uint64_t *nodes_read)
{
    dlist cur = {0}, next = {0};

    if (nodes_read)
        *nodes_read = 0;
    if (!s || !root_a || !root_b || !fn)
        return vmt_error_set(VMT_EINVAL, "vmt_map_diff: NULL argument");
    if (vmt_id_is_zero_page(root_a) || vmt_id_is_zero_page(root_b))
        return vmt_error_set(VMT_EINVAL, "memory map diff: a root is the zero page's id");
    diff_ctx *d = calloc(1, sizeof(*d));
    if (!d)
        return vmt_error_set(VMT_ENOMEM, "memory map diff: out of memory");
    int rc = map_geom_init(&d->g, npages);
    if (rc)
        goto out;
    d->s = s;
    d->zero = vmt_id_zero_page();
    d->fn = fn;
    d->ctx = ctx;
    d->slab = vmt_mallocn(2 * MAP_BATCH, MAP_NODE_MAX);
    if (!d->slab) {
        rc = vmt_error_set(VMT_ENOMEM, "memory map diff: out of memory");
        goto out;
    }
    if (!vmt_id_equal(root_a, root_b)) {
        rc = dlist_push(&cur, 0, root_a, root_b);
        rc = rc ? vmt_error_set(VMT_ENOMEM, "memory map diff: out of memory")
                : diff_levels(d, &cur, &next);
    }
    if (nodes_read)
        *nodes_read = d->nodes_read;
out:
    free(cur.v);
    free(next.v);
    free(d->slab);
    free(d);
    return rc;
}
