/* The map-node object format that GC walks (see store.h). */
#include <string.h>

#include "record.h"

size_t vmt_store_mapnode_size(size_t count)
{
    return VMT_MAPNODE_HDR + count * VMT_MAPNODE_ENTRY;
}

int vmt_store_mapnode_encode(unsigned level, const vmt_mapnode_entry *entries, size_t count,
                             void *buf, size_t cap, size_t *len)
{
    if (level > VMT_MAPNODE_MAX_LEVEL || count > VMT_MAPNODE_MAX_ENTRIES)
        return vmt_error_set(VMT_EINVAL, "map node: level %u or %zu entries beyond the limits",
                             level, count);
    size_t need = vmt_store_mapnode_size(count);
    if (cap < need)
        return vmt_error_set(VMT_ERANGE, "map node needs %zu bytes, buffer has %zu", need, cap);
    uint8_t *p = buf;
    dd_put32(p, VMT_MAPNODE_MAGIC);
    p[4] = 1;
    p[5] = (uint8_t)level;
    dd_put16(p + 6, 0);
    dd_put32(p + 8, (uint32_t)count);
    for (size_t i = 0; i < count; i++) {
        if (i > 0 && entries[i].slot <= entries[i - 1].slot)
            return vmt_error_set(VMT_EINVAL, "map node: slots not strictly increasing at %zu", i);
        uint8_t *e = p + VMT_MAPNODE_HDR + i * VMT_MAPNODE_ENTRY;
        dd_put32(e, entries[i].slot);
        memcpy(e + 4, entries[i].child.b, 16);
    }
    *len = need;
    return 0;
}

int vmt_store_mapnode_parse(const void *buf, size_t len, unsigned *level, size_t *count)
{
    const uint8_t *p = buf;
    if (len < VMT_MAPNODE_HDR || dd_get32(p) != VMT_MAPNODE_MAGIC || p[4] != 1 ||
        dd_get16(p + 6) != 0)
        return vmt_error_set(VMT_ECORRUPT, "not a map node");
    uint32_t n = dd_get32(p + 8);
    if (p[5] > VMT_MAPNODE_MAX_LEVEL || n > VMT_MAPNODE_MAX_ENTRIES ||
        len != vmt_store_mapnode_size(n))
        return vmt_error_set(VMT_ECORRUPT, "map node with level %u and %u entries in %zu bytes",
                             p[5], n, len);
    for (uint32_t i = 1; i < n; i++) {
        const uint8_t *e = p + VMT_MAPNODE_HDR + (size_t)i * VMT_MAPNODE_ENTRY;
        if (dd_get32(e) <= dd_get32(e - VMT_MAPNODE_ENTRY))
            return vmt_error_set(VMT_ECORRUPT, "map node slots not increasing at entry %u", i);
    }
    *level = p[5];
    *count = n;
    return 0;
}

void vmt_store_mapnode_entry_at(const void *buf, size_t i, vmt_mapnode_entry *out)
{
    const uint8_t *e = (const uint8_t *)buf + VMT_MAPNODE_HDR + i * VMT_MAPNODE_ENTRY;
    out->slot = dd_get32(e);
    memcpy(out->child.b, e + 4, 16);
}
