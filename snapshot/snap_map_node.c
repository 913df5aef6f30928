/*
 * Map geometry and the check every map node read from the store goes
 * through.  dedup's parser checks the layout (magic, version, sizes, sorted
 * slots); this adds what only the map knows: where in the tree the node
 * sits and so which level and slots it may have.
 */
#include <stdio.h>
#include <string.h>

#include "snap_internal.h"

int map_geom_init(map_geom *g, uint64_t npages)
{
    memset(g, 0, sizeof(*g));
    if (npages == 0)
        return vmt_error_set(VMT_EINVAL, "memory map: 0 pages");
    if (npages > VMT_MAP_MAX_PAGES)
        return vmt_error_set(VMT_ERANGE, "memory map: %llu pages exceed the maximum of %llu",
                             (unsigned long long)npages, (unsigned long long)VMT_MAP_MAX_PAGES);
    g->npages = npages;
    uint64_t n = npages;
    do {
        n = VMT_DIV_ROUND_UP(n, VMT_MAP_FANOUT);
        g->nodes[g->depth++] = n;
    } while (n > 1 && g->depth < MAP_MAX_DEPTH);
    return 0;
}

unsigned map_geom_children(const map_geom *g, unsigned level, uint64_t idx)
{
    uint64_t below = level == 0 ? g->npages : g->nodes[level - 1];
    uint64_t first = idx * VMT_MAP_FANOUT;

    if (first >= below)
        return 0;
    return (unsigned)VMT_MIN(below - first, (uint64_t)VMT_MAP_FANOUT);
}

static int node_corrupt(const vmt_id *id, unsigned level, uint64_t idx, const char *what)
{
    char hex[VMT_ID_HEX_LEN + 1];

    vmt_id_to_hex(id, hex);
    return vmt_error_set(VMT_ECORRUPT, "memory map: node %s (level %u, index %llu): %s", hex, level,
                         (unsigned long long)idx, what);
}

int map_node_check(const map_geom *g, const vmt_id *id, vmt_obj_type type, const void *buf,
                   size_t len, unsigned level, uint64_t idx, size_t *count)
{
    unsigned got_level;
    size_t n;
    char what[128];

    if (type != VMT_OBJ_MAPNODE)
        return node_corrupt(id, level, idx, "the object is not a map node");
    if (len > MAP_NODE_MAX)
        return node_corrupt(id, level, idx, "larger than a node of 256 entries");
    if (vmt_store_mapnode_parse(buf, len, &got_level, &n) != 0) {
        /* Copied: the message buffer is about to be rewritten. */
        snprintf(what, sizeof(what), "%s", vmt_error_last());
        return node_corrupt(id, level, idx, what);
    }
    if (got_level != level) {
        snprintf(what, sizeof(what), "has level %u where the tree needs %u", got_level, level);
        return node_corrupt(id, level, idx, what);
    }
    unsigned nchildren = map_geom_children(g, level, idx);
    uint32_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        vmt_mapnode_entry e;
        vmt_store_mapnode_entry_at(buf, i, &e);
        if (e.slot >= nchildren) {
            snprintf(what, sizeof(what), "slot %u is out of range (the node covers %u)", e.slot,
                     nchildren);
            return node_corrupt(id, level, idx, what);
        }
        if (i > 0 && e.slot <= prev)
            return node_corrupt(id, level, idx, "slots are not strictly increasing");
        prev = e.slot;
    }
    *count = n;
    return 0;
}

int map_node_get_error(const vmt_store_get_item *it)
{
    char hex[VMT_ID_HEX_LEN + 1];

    vmt_id_to_hex(&it->id, hex);
    if (it->rc == VMT_ENOENT)
        return vmt_error_set(VMT_ENOENT, "memory map: node %s is missing from the store", hex);
    if (it->rc == VMT_ERANGE)
        return vmt_error_set(VMT_ECORRUPT,
                             "memory map: node %s has %zu bytes, more than a node "
                             "can have (%u)",
                             hex, it->len, (unsigned)MAP_NODE_MAX);
    return vmt_error_wrap(it->rc, "memory map: reading node %s", hex);
}

bool snap_name_valid(const char *name)
{
    size_t n = strnlen(name, VMT_SNAP_NAME_MAX);

    if (n == 0 || n >= VMT_SNAP_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}
