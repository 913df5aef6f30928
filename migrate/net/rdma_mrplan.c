/*
 * The memory-registration planner (rdma_logic.h): which chunks of the
 * receiver's exposed range are registered, in LRU order, with the writes
 * in flight into each.  Pinning all of a large guest's RAM at once may
 * exceed RLIMIT_MEMLOCK or starve the host, so the receiver offers at most
 * max_chunks registered chunks and the sender, which knows which chunk it
 * writes next and which writes have completed, decides what to release:
 * never a chunk with a write in flight, since unregistering it would turn
 * that write into a remote access error.
 */
#include <stdlib.h>

#include "net_internal.h"
#include "rdma_logic.h"

#define NIL UINT32_MAX

typedef struct chunk_ent {
    uint32_t prev, next; /* LRU list of registered chunks (head: most recent) */
    uint32_t busy;       /* writes in flight */
    uint32_t rkey;
    bool registered;
    uint64_t addr;
} chunk_ent;

struct vmt_rdma_mrplan {
    uint64_t region_len, chunk_bytes;
    uint32_t nchunks, max_chunks;
    uint32_t head, tail;
    chunk_ent *c;
    vmt_rdma_mrplan_stats st;
};

int vmt_rdma_mrplan_new(vmt_rdma_mrplan **out, uint64_t region_len, uint64_t chunk_bytes,
                        uint32_t max_chunks)
{
    *out = NULL;
    if (region_len == 0 || chunk_bytes == 0 || region_len % VMT_NET_PAGE_SIZE ||
        chunk_bytes % VMT_NET_PAGE_SIZE || max_chunks == 0)
        return vmt_error_set(VMT_EINVAL, "registration plan: bad range %llu / chunk %llu / %u",
                             (unsigned long long)region_len, (unsigned long long)chunk_bytes,
                             max_chunks);
    uint64_t n = (region_len + chunk_bytes - 1) / chunk_bytes;
    if (n > VMT_RDMA_MAX_CHUNKS)
        return vmt_error_set(VMT_EINVAL, "registration plan: %llu chunks (at most %u)",
                             (unsigned long long)n, VMT_RDMA_MAX_CHUNKS);
    vmt_rdma_mrplan *p = calloc(1, sizeof(*p));
    if (p)
        p->c = vmt_callocn((size_t)n, sizeof(*p->c));
    if (!p || !p->c) {
        free(p);
        return vmt_error_set(VMT_ENOMEM, "registration plan: out of memory");
    }
    p->region_len = region_len;
    p->chunk_bytes = chunk_bytes;
    p->nchunks = (uint32_t)n;
    p->max_chunks = max_chunks < n ? max_chunks : (uint32_t)n;
    p->head = p->tail = NIL;
    *out = p;
    return 0;
}

void vmt_rdma_mrplan_free(vmt_rdma_mrplan *p)
{
    if (!p)
        return;
    free(p->c);
    free(p);
}

uint32_t vmt_rdma_mrplan_nchunks(const vmt_rdma_mrplan *p)
{
    return p->nchunks;
}

uint32_t vmt_rdma_mrplan_chunk_of(const vmt_rdma_mrplan *p, uint64_t offset)
{
    return (uint32_t)(offset / p->chunk_bytes);
}

void vmt_rdma_mrplan_extent(const vmt_rdma_mrplan *p, uint32_t chunk, uint64_t *off,
                            uint64_t *len)
{
    *off = (uint64_t)chunk * p->chunk_bytes;
    *len = VMT_MIN(p->chunk_bytes, p->region_len - *off);
}

static void lru_unlink(vmt_rdma_mrplan *p, uint32_t i)
{
    chunk_ent *e = &p->c[i];
    if (e->prev != NIL)
        p->c[e->prev].next = e->next;
    else
        p->head = e->next;
    if (e->next != NIL)
        p->c[e->next].prev = e->prev;
    else
        p->tail = e->prev;
    e->prev = e->next = NIL;
}

static void lru_push_front(vmt_rdma_mrplan *p, uint32_t i)
{
    chunk_ent *e = &p->c[i];
    e->prev = NIL;
    e->next = p->head;
    if (p->head != NIL)
        p->c[p->head].prev = i;
    p->head = i;
    if (p->tail == NIL)
        p->tail = i;
}

vmt_rdma_plan vmt_rdma_mrplan_touch(const vmt_rdma_mrplan *p, uint32_t chunk)
{
    vmt_rdma_plan r = {VMT_RDMA_PLAN_HIT, chunk, VMT_RDMA_CHUNK_NONE};
    if (p->c[chunk].registered)
        return r;
    r.kind = VMT_RDMA_PLAN_MISS;
    if (p->st.registered < p->max_chunks)
        return r;
    /* Full: the least recently used chunk with nothing in flight. */
    for (uint32_t i = p->tail; i != NIL; i = p->c[i].prev)
        if (p->c[i].busy == 0) {
            r.evict = i;
            return r;
        }
    r.kind = VMT_RDMA_PLAN_BUSY;
    return r;
}

void vmt_rdma_mrplan_used(vmt_rdma_mrplan *p, uint32_t chunk)
{
    p->st.hits++;
    lru_unlink(p, chunk);
    lru_push_front(p, chunk);
}

void vmt_rdma_mrplan_registered(vmt_rdma_mrplan *p, uint32_t chunk, uint32_t evict, uint32_t rkey,
                                uint64_t addr)
{
    uint64_t off, len;
    if (evict != VMT_RDMA_CHUNK_NONE && p->c[evict].registered) {
        lru_unlink(p, evict);
        p->c[evict].registered = false;
        vmt_rdma_mrplan_extent(p, evict, &off, &len);
        p->st.pinned_bytes -= len;
        p->st.registered--;
        p->st.evictions++;
    }
    chunk_ent *e = &p->c[chunk];
    e->registered = true;
    e->rkey = rkey;
    e->addr = addr;
    lru_push_front(p, chunk);
    vmt_rdma_mrplan_extent(p, chunk, &off, &len);
    p->st.pinned_bytes += len;
    p->st.registered++;
    p->st.registrations++;
    if (p->st.pinned_bytes > p->st.peak_pinned)
        p->st.peak_pinned = p->st.pinned_bytes;
}

bool vmt_rdma_mrplan_is_registered(const vmt_rdma_mrplan *p, uint32_t chunk)
{
    return chunk < p->nchunks && p->c[chunk].registered;
}

void vmt_rdma_mrplan_key(const vmt_rdma_mrplan *p, uint32_t chunk, uint32_t *rkey, uint64_t *addr)
{
    *rkey = p->c[chunk].rkey;
    *addr = p->c[chunk].addr;
}

void vmt_rdma_mrplan_busy(vmt_rdma_mrplan *p, uint32_t chunk, int delta)
{
    if (delta < 0 && p->c[chunk].busy > 0)
        p->c[chunk].busy--;
    else if (delta > 0)
        p->c[chunk].busy++;
}

void vmt_rdma_mrplan_get_stats(const vmt_rdma_mrplan *p, vmt_rdma_mrplan_stats *st)
{
    *st = p->st;
}
