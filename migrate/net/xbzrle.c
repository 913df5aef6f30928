/*
 * XBZRLE page deltas (QEMU's "Xor Based Zero Run Length Encoding" form):
 * the delta of a page against its previous version is a sequence of pairs
 *
 *     uleb128 unchanged-run, uleb128 changed-run (>= 1), changed bytes
 *
 * covering the page from its start; bytes after the last pair are
 * unchanged.  An unchanged page is the empty delta.
 *
 * The encoder scans 8 bytes at a time and merges changes less than a word
 * apart into one changed run (a pair costs at least 2 bytes of header, an
 * equal word inside a run 8 at most, so splitting at single equal bytes
 * would not pay).  It stops as soon as the output would exceed its cap: the
 * caller then sends the page another way.
 */
#include <string.h>

#include "net_internal.h"

#define PAGE VMT_NET_PAGE_SIZE

static uint64_t word(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof(w));
    return w;
}

/* End of the unchanged run starting at i. */
static size_t equal_run(const uint8_t *a, const uint8_t *b, size_t i)
{
    while (i < PAGE && (i & 7))
        if (a[i] == b[i])
            i++;
        else
            return i;
    while (i < PAGE && word(a + i) == word(b + i))
        i += 8;
    while (i < PAGE && a[i] == b[i])
        i++;
    return i;
}

/* End of the changed run starting at i (a[i] != b[i]): through every word
 * that differs, trimmed of the equal bytes ending the last one. */
static size_t changed_run(const uint8_t *a, const uint8_t *b, size_t i)
{
    size_t j = (i & ~(size_t)7) + 8;
    while (j < PAGE && word(a + j) != word(b + j))
        j += 8;
    while (a[j - 1] == b[j - 1])
        j--;
    return j;
}

int vmt_xbzrle_encode(const uint8_t *old_page, const uint8_t *new_page, uint8_t *out, size_t cap,
                      size_t *out_len)
{
    size_t pos = 0, i = 0;

    *out_len = 0;
    while (i < PAGE) {
        size_t z = equal_run(old_page, new_page, i);
        if (z == PAGE)
            break;
        size_t end = changed_run(old_page, new_page, z);
        uint8_t hdr[2 * VMT_VARINT_MAX];
        size_t h = vmt_varint_put(hdr, z - i);
        h += vmt_varint_put(hdr + h, end - z);
        if (h + (end - z) > cap - pos || pos > cap)
            return vmt_error_set(VMT_ERANGE, "XBZRLE delta exceeds %zu bytes", cap);
        memcpy(out + pos, hdr, h);
        memcpy(out + pos + h, new_page + z, end - z);
        pos += h + (end - z);
        i = end;
    }
    *out_len = pos;
    return 0;
}

/* Walks a delta; applies it to page when page is not NULL.  Every check
 * happens in the walk, so applying after a successful check cannot fail. */
static int walk(const uint8_t *d, size_t len, uint8_t *page)
{
    size_t pos = 0, at = 0;
    unsigned pair = 0;

    while (pos < len) {
        uint64_t z, nz;
        if (!vmt_varint_get(d, len, &pos, &z) || !vmt_varint_get(d, len, &pos, &nz))
            return vmt_error_set(VMT_ECORRUPT, "XBZRLE pair %u: truncated run length", pair);
        if (nz == 0)
            return vmt_error_set(VMT_ECORRUPT, "XBZRLE pair %u: empty changed run", pair);
        if (z > PAGE - at || nz > PAGE - at - z)
            return vmt_error_set(VMT_ECORRUPT, "XBZRLE pair %u: runs %llu+%llu pass the page end "
                                               "at %zu",
                                 pair, (unsigned long long)z, (unsigned long long)nz, at);
        if (nz > len - pos)
            return vmt_error_set(VMT_ECORRUPT, "XBZRLE pair %u: %llu changed bytes, %zu left",
                                 pair, (unsigned long long)nz, len - pos);
        at += (size_t)z;
        if (page)
            memcpy(page + at, d + pos, (size_t)nz);
        at += (size_t)nz;
        pos += (size_t)nz;
        pair++;
    }
    return 0;
}

int vmt_xbzrle_check(const uint8_t *delta, size_t len)
{
    if (len && !delta)
        return vmt_error_set(VMT_EINVAL, "XBZRLE: NULL delta");
    return walk(delta, len, NULL);
}

int vmt_xbzrle_decode(const uint8_t *delta, size_t len, uint8_t *page)
{
    int rc = vmt_xbzrle_check(delta, len);
    return rc ? rc : walk(delta, len, page);
}
