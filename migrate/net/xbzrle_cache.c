/*
 * The source's XBZRLE cache: the last copy sent of recently sent pages, so
 * that a page dirtied again can travel as a delta against it.  Bounded in
 * bytes; eviction by the clock algorithm (a page used since the hand last
 * passed gets a second chance), which approximates LRU at O(1) per access.
 *
 * Lookup is a chained hash from pfn to slot: bucket[] heads, next[] links,
 * both as slot + 1 (0 = end).  Free slots sit on a stack.
 */
#include <stdlib.h>
#include <string.h>

#include "net_internal.h"

#define PAGE VMT_NET_PAGE_SIZE
#define NO_PFN UINT64_MAX

struct vmt_xbzrle_cache {
    size_t nslots, nbuckets; /* nbuckets a power of two >= nslots */
    uint8_t *data;           /* nslots pages */
    uint64_t *pfn;           /* NO_PFN: free */
    uint8_t *ref;
    uint32_t *bucket, *next, *free_stack;
    size_t nfree, hand;
    uint64_t hits, misses, evictions;
};

static size_t hash_pfn(const vmt_xbzrle_cache *c, uint64_t pfn)
{
    return (size_t)((pfn * 0x9e3779b97f4a7c15ull) >> 17) & (c->nbuckets - 1);
}

void vmt_xbzrle_cache_reset(vmt_xbzrle_cache *c)
{
    memset(c->bucket, 0, c->nbuckets * sizeof(*c->bucket));
    for (size_t i = 0; i < c->nslots; i++) {
        c->pfn[i] = NO_PFN;
        c->ref[i] = 0;
        c->free_stack[i] = (uint32_t)(c->nslots - 1 - i);
    }
    c->nfree = c->nslots;
    c->hand = 0;
}

int vmt_xbzrle_cache_new(vmt_xbzrle_cache **out, size_t capacity_bytes)
{
    size_t n = capacity_bytes / PAGE;

    *out = NULL;
    if (n == 0 || n > UINT32_MAX - 1)
        return vmt_error_set(VMT_EINVAL, "XBZRLE cache: capacity %zu bytes (at least one page)",
                             capacity_bytes);
    vmt_xbzrle_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return vmt_error_set(VMT_ENOMEM, "XBZRLE cache: out of memory");
    c->nslots = n;
    c->nbuckets = 1;
    while (c->nbuckets < n)
        c->nbuckets <<= 1;
    c->data = vmt_mallocn(n, PAGE);
    c->pfn = vmt_mallocn(n, sizeof(*c->pfn));
    c->ref = vmt_mallocn(n, 1);
    c->next = vmt_mallocn(n, sizeof(*c->next));
    c->free_stack = vmt_mallocn(n, sizeof(*c->free_stack));
    c->bucket = vmt_mallocn(c->nbuckets, sizeof(*c->bucket));
    if (!c->data || !c->pfn || !c->ref || !c->next || !c->free_stack || !c->bucket) {
        vmt_xbzrle_cache_free(c);
        return vmt_error_set(VMT_ENOMEM, "XBZRLE cache: out of memory for %zu pages", n);
    }
    vmt_xbzrle_cache_reset(c);
    *out = c;
    return 0;
}

void vmt_xbzrle_cache_free(vmt_xbzrle_cache *c)
{
    if (!c)
        return;
    free(c->data);
    free(c->pfn);
    free(c->ref);
    free(c->next);
    free(c->free_stack);
    free(c->bucket);
    free(c);
}

/* The slot of pfn, or SIZE_MAX. */
static size_t find(const vmt_xbzrle_cache *c, uint64_t pfn)
{
    for (uint32_t s = c->bucket[hash_pfn(c, pfn)]; s; s = c->next[s - 1])
        if (c->pfn[s - 1] == pfn)
            return s - 1;
    return SIZE_MAX;
}

static void unlink_slot(vmt_xbzrle_cache *c, size_t slot)
{
    uint32_t *link = &c->bucket[hash_pfn(c, c->pfn[slot])];
    while (*link != slot + 1)
        link = &c->next[*link - 1];
    *link = c->next[slot];
    c->pfn[slot] = NO_PFN;
}

const uint8_t *vmt_xbzrle_cache_get(vmt_xbzrle_cache *c, uint64_t pfn)
{
    size_t s = find(c, pfn);
    if (s == SIZE_MAX) {
        c->misses++;
        return NULL;
    }
    c->hits++;
    c->ref[s] = 1;
    return c->data + s * PAGE;
}

/* A slot to fill: a free one, or the clock's victim. */
static size_t take_slot(vmt_xbzrle_cache *c)
{
    if (c->nfree)
        return c->free_stack[--c->nfree];
    for (;;) {
        size_t s = c->hand;
        c->hand = (c->hand + 1) % c->nslots;
        if (c->ref[s]) {
            c->ref[s] = 0;
            continue;
        }
        unlink_slot(c, s);
        c->evictions++;
        return s;
    }
}

void vmt_xbzrle_cache_put(vmt_xbzrle_cache *c, uint64_t pfn, const uint8_t *page)
{
    if (pfn == NO_PFN) /* not a page frame number (pfns are below 2^52) */
        return;
    size_t s = find(c, pfn);
    if (s == SIZE_MAX) {
        s = take_slot(c);
        size_t b = hash_pfn(c, pfn);
        c->pfn[s] = pfn;
        c->next[s] = c->bucket[b];
        c->bucket[b] = (uint32_t)(s + 1);
    }
    c->ref[s] = 1;
    memcpy(c->data + s * PAGE, page, PAGE);
}

void vmt_xbzrle_cache_drop(vmt_xbzrle_cache *c, uint64_t pfn)
{
    size_t s = find(c, pfn);
    if (s == SIZE_MAX)
        return;
    unlink_slot(c, s);
    c->ref[s] = 0;
    c->free_stack[c->nfree++] = (uint32_t)s;
}

void vmt_xbzrle_cache_get_stats(const vmt_xbzrle_cache *c, vmt_xbzrle_cache_stats *st)
{
    st->capacity_pages = c->nslots;
    st->pages = c->nslots - c->nfree;
    st->hits = c->hits;
    st->misses = c->misses;
    st->evictions = c->evictions;
}
