/*
 * Bulk placement in the network sink: on a stream whose transport offers it
 * (RDMA: the destination exposed guest RAM; docs/rdma.md §5), a page that
 * would travel in full goes by RDMA WRITE straight into the destination's
 * RAM instead of a page batch.  Zero pages (after round 0) and pages the
 * destination holds (references) still go in batches; compression is not
 * used on placed pages (when the caller asked for compression, nothing is
 * placed: on a link RDMA is for, copying beats compressing).  A placed
 * page's XBZRLE copy is dropped, so no delta is ever made against it.
 *
 * Consecutive pages are gathered into runs of at most RUN_PAGES and placed
 * together; a run is placed before any frame that must follow it (the
 * stream's ROUND_END: an RC queue pair delivers in order, so at ROUND_END
 * the round's placed pages have landed and been counted).  The destination
 * drains its queue of landed runs when a frame arrives, and the queue is
 * bounded, so a stream never places more than MAX_RUNS runs without a
 * frame: the page after that goes in a one-page batch on the same stream.
 */
#include <string.h>

#include "mig_internal.h"

#define PAGE VMT_NET_PAGE_SIZE
#define RUN_PAGES 64u
#define MAX_RUNS 16384u

void mig_bulk_round(net_sink *c)
{
    c->bulk_any = false;
    if (c->bopts.page_codec != VMT_PAGE_RAW)
        return;
    for (unsigned k = 0; k < c->n; k++) {
        if (!c->bulk[k])
            c->bulk[k] = vmt_session_bulk_can_place(c->s, k);
        c->bulk_any |= c->bulk[k];
    }
}

int mig_bulk_flush(net_sink *c)
{
    if (c->run_n == 0)
        return 0;
    unsigned k = c->run_stream;
    int rc = vmt_session_bulk_place(c->s, k, c->run_pfn, c->run_data, c->run_n);
    if (rc == 0) {
        c->pages[k] += c->run_n;
        c->total_pages += c->run_n;
        c->placed += c->run_n;
        c->runs_since_frame[k]++;
    }
    c->run_n = 0;
    return rc;
}

static bool is_zero(const uint8_t *p)
{
    static const uint8_t zero[PAGE];
    return memcmp(p, zero, PAGE) == 0;
}

/* The next stream that may place, round robin. */
static unsigned next_bulk_stream(net_sink *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        unsigned k = c->bulk_next++ % c->n;
        if (c->bulk[k])
            return k;
    }
    return 0; /* not reached: bulk_any */
}

int mig_bulk_take(net_sink *c, uint64_t pfn, const uint8_t *data, bool *taken)
{
    *taken = false;
    if (is_zero(data))
        return 0;
    if (c->have) {
        vmt_id id;
        vmt_id_of(data, PAGE, &id);
        if (vmt_haveset_contains(c->have, &id))
            return 0; /* a 16-byte reference beats a 4 KiB write */
    }
    bool extends = c->run_n && c->run_n < RUN_PAGES && pfn == c->run_pfn + c->run_n &&
                   data == c->run_data + c->run_n * PAGE;
    if (!extends) {
        int rc = mig_bulk_flush(c);
        if (rc)
            return rc;
        unsigned k = next_bulk_stream(c);
        if (c->runs_since_frame[k] >= MAX_RUNS) { /* let its landed queue drain */
            rc = vmt_batch_writer_add(c->w, pfn, data);
            *taken = true;
            return rc ? rc : mig_ns_flush(c, c->w, k);
        }
        c->run_stream = k;
        c->run_pfn = pfn;
        c->run_data = data;
    }
    if (c->cache)
        vmt_xbzrle_cache_drop(c->cache, pfn);
    c->run_n++;
    *taken = true;
    return 0;
}
