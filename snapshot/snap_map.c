/*
 * Memory maps: pfn -> page id, stored as a Merkle radix tree of map nodes
 * (layout in snapshot.h and docs/snapshot.md).
 *
 * In memory a map is a flat array of page ids (16 bytes a page) plus, per
 * level, the id of every node and a dirty flag.  vmt_map_set marks the
 * path from the page to the root; vmt_map_write re-encodes only dirty
 * nodes, level by level from the leaves, with one batched put per level
 * (per MAP_BATCH nodes), so a child that changed k pages writes O(k·depth)
 * nodes and every other subtree keeps its id.  An all-zero subtree below
 * the root has no node: its id is the zero-page id (which never names a
 * node) and its parent leaves it out.
 */
#include <stdlib.h>
#include <string.h>

#include "snap_internal.h"

struct vmt_map {
    map_geom g;
    vmt_id zero;   /* the zero page's id */
    vmt_id *pages; /* npages */
    uint64_t nonzero;
    vmt_id *ids[MAP_MAX_DEPTH];    /* node ids per level; zero id = empty subtree */
    uint8_t *dirty[MAP_MAX_DEPTH]; /* per node: must be rewritten */
};

static bool is_zero(const vmt_map *m, const vmt_id *id)
{
    return memcmp(id->b, m->zero.b, sizeof(id->b)) == 0;
}

static int map_alloc(vmt_map **out, uint64_t npages)
{
    vmt_map *m = calloc(1, sizeof(*m));
    if (!m)
        return vmt_error_set(VMT_ENOMEM, "memory map: out of memory");
    int rc = map_geom_init(&m->g, npages);
    if (rc) {
        free(m);
        return rc;
    }
    m->zero = vmt_id_zero_page();
    m->pages = vmt_mallocn(npages, sizeof(vmt_id));
    for (unsigned l = 0; m->pages && l < m->g.depth; l++) {
        m->ids[l] = vmt_mallocn(m->g.nodes[l], sizeof(vmt_id));
        m->dirty[l] = calloc(m->g.nodes[l], 1);
        if (!m->ids[l] || !m->dirty[l])
            break;
    }
    if (!m->pages || !m->ids[m->g.depth - 1] || !m->dirty[m->g.depth - 1]) {
        vmt_map_free(m);
        return vmt_error_set(VMT_ENOMEM, "memory map: out of memory for %llu pages",
                             (unsigned long long)npages);
    }
    for (uint64_t i = 0; i < npages; i++)
        m->pages[i] = m->zero;
    for (unsigned l = 0; l < m->g.depth; l++)
        for (uint64_t i = 0; i < m->g.nodes[l]; i++)
            m->ids[l][i] = m->zero;
    *out = m;
    return 0;
}

int vmt_map_new(vmt_map **out, uint64_t npages)
{
    if (!out)
        return vmt_error_set(VMT_EINVAL, "vmt_map_new: NULL argument");
    int rc = map_alloc(out, npages);
    if (rc == 0)
        (*out)->dirty[(*out)->g.depth - 1][0] = 1; /* the empty root is written once */
    return rc;
}

void vmt_map_free(vmt_map *m)
{
    if (!m)
        return;
    for (unsigned l = 0; l < MAP_MAX_DEPTH; l++) {
        free(m->ids[l]);
        free(m->dirty[l]);
    }
    free(m->pages);
    free(m);
}

uint64_t vmt_map_pages(const vmt_map *m)
{
    return m->g.npages;
}

uint64_t vmt_map_nonzero(const vmt_map *m)
{
    return m->nonzero;
}

const vmt_id *vmt_map_get(const vmt_map *m, uint64_t pfn)
{
    if (pfn >= m->g.npages)
        return &m->zero;
    return &m->pages[pfn];
}

void vmt_map_set(vmt_map *m, uint64_t pfn, const vmt_id *id)
{
    if (pfn >= m->g.npages) {
        vmt_error("memory map: vmt_map_set(%llu) beyond %llu pages ignored",
                  (unsigned long long)pfn, (unsigned long long)m->g.npages);
        return;
    }
    vmt_id *cur = &m->pages[pfn];
    if (vmt_id_equal(cur, id))
        return;
    bool was_zero = is_zero(m, cur), now_zero = is_zero(m, id);
    m->nonzero += (uint64_t)was_zero - (uint64_t)now_zero;
    *cur = *id;
    /* A dirty node's ancestors are dirty already: stop at the first one. */
    uint64_t idx = pfn;
    for (unsigned l = 0; l < m->g.depth; l++) {
        idx /= VMT_MAP_FANOUT;
        if (m->dirty[l][idx])
            break;
        m->dirty[l][idx] = 1;
    }
}

/* ---- writing ------------------------------------------------------------ */

/* Encodes node idx of level l into buf; *empty when it has no entries. */
static int encode_node(const vmt_map *m, unsigned l, uint64_t idx, uint8_t *buf, size_t *len,
                       bool *empty)
{
    vmt_mapnode_entry e[VMT_MAP_FANOUT];
    const vmt_id *child = l == 0 ? m->pages : m->ids[l - 1];
    unsigned nch = map_geom_children(&m->g, l, idx);
    size_t n = 0;

    child += idx * VMT_MAP_FANOUT;
    for (unsigned s = 0; s < nch; s++) {
        if (is_zero(m, &child[s]))
            continue;
        e[n].slot = s;
        e[n].child = child[s];
        n++;
    }
    *empty = n == 0;
    return vmt_store_mapnode_encode(l, e, n, buf, MAP_NODE_MAX, len);
}

typedef struct write_batch {
    uint8_t *slab; /* MAP_BATCH nodes of MAP_NODE_MAX bytes */
    vmt_store_obj objs[MAP_BATCH];
    uint64_t idx[MAP_BATCH];
    vmt_id ids[MAP_BATCH];
    bool is_new[MAP_BATCH];
    size_t n;
    uint64_t new_nodes, node_bytes;
} write_batch;

static int flush_batch(vmt_map *m, vmt_store *s, unsigned l, write_batch *b)
{
    if (b->n == 0)
        return 0;
    int rc = vmt_store_put_many(s, b->objs, b->n, b->ids, b->is_new, NULL);
    if (rc)
        return vmt_error_wrap(rc, "memory map: writing %zu level-%u nodes", b->n, l);
    for (size_t i = 0; i < b->n; i++) {
        m->ids[l][b->idx[i]] = b->ids[i];
        m->dirty[l][b->idx[i]] = 0;
        if (b->is_new[i]) {
            b->new_nodes++;
            b->node_bytes += b->objs[i].len;
        }
    }
    b->n = 0;
    return 0;
}

static int write_level(vmt_map *m, vmt_store *s, unsigned l, write_batch *b)
{
    bool root = l == m->g.depth - 1;

    for (uint64_t i = 0; i < m->g.nodes[l]; i++) {
        if (!m->dirty[l][i])
            continue;
        uint8_t *buf = b->slab + b->n * MAP_NODE_MAX;
        size_t len;
        bool empty;
        int rc = encode_node(m, l, i, buf, &len, &empty);
        if (rc)
            return rc;
        if (empty && !root) { /* left out of the parent, never stored */
            m->ids[l][i] = m->zero;
            m->dirty[l][i] = 0;
            continue;
        }
        b->objs[b->n] = (vmt_store_obj){.data = buf, .len = len, .type = VMT_OBJ_MAPNODE};
        b->idx[b->n++] = i;
        if (b->n == MAP_BATCH && (rc = flush_batch(m, s, l, b)) != 0)
            return rc;
    }
    return flush_batch(m, s, l, b);
}

int vmt_map_write(vmt_map *m, vmt_store *s, vmt_id *root, uint64_t *new_nodes, uint64_t *node_bytes)
{
    if (!m || !s || !root)
        return vmt_error_set(VMT_EINVAL, "vmt_map_write: NULL argument");
    write_batch *b = calloc(1, sizeof(*b));
    if (b)
        b->slab = vmt_mallocn(MAP_BATCH, MAP_NODE_MAX);
    if (!b || !b->slab) {
        free(b);
        return vmt_error_set(VMT_ENOMEM, "memory map: out of memory writing");
    }
    int rc = 0;
    for (unsigned l = 0; rc == 0 && l < m->g.depth; l++)
        rc = write_level(m, s, l, b);
    if (rc == 0) {
        *root = m->ids[m->g.depth - 1][0];
        if (new_nodes)
            *new_nodes = b->new_nodes;
        if (node_bytes)
            *node_bytes = b->node_bytes;
    }
    free(b->slab);
    free(b);
    return rc;
}

/* ---- loading ------------------------------------------------------------ */

int vmt_map_load(vmt_map **out, vmt_store *s, const vmt_id *root, uint64_t npages)
{
    vmt_map *m = NULL;
    uint64_t *leaves = NULL, n = 0;

    if (!out || !s || !root)
        return vmt_error_set(VMT_EINVAL, "vmt_map_load: NULL argument");
    int rc = map_alloc(&m, npages);
    if (rc)
        return rc;
    rc = map_read_inner(s, &m->g, root, m->ids);
    if (rc == 0 && !(leaves = vmt_mallocn(m->g.nodes[0], sizeof(uint64_t))))
        rc = VMT_ENOMEM;
    for (uint64_t i = 0; rc == 0 && i < m->g.nodes[0]; i++)
        if (!is_zero(m, &m->ids[0][i]))
            leaves[n++] = i;
    for (uint64_t off = 0; rc == 0 && off < n; off += MAP_BATCH)
        rc = map_read_leaves(s, &m->g, m->ids[0], leaves + off,
                             (size_t)VMT_MIN(n - off, (uint64_t)MAP_BATCH), m->pages, &m->nonzero);
    free(leaves);
    if (rc) {
        vmt_map_free(m);
        return rc;
    }
    *out = m;
    return 0;
}
