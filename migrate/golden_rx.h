/*
 * The receiver of a golden image transfer (golden_fetch.c: pipelined Wants
 * and the walk of the maps; golden_recv.c: pages, blobs, records and the
 * final checks).  Never included outside migrate/.
 */
#ifndef VMTREE_GOLDEN_RX_H
#define VMTREE_GOLDEN_RX_H

#include "golden_internal.h"

/* Values in rx.seen: a node's index with this bit, else a page's position. */
#define RX_NODE_BIT (1ull << 63)

/* A map node fetched but perhaps not stored yet. */
typedef struct rx_node {
    vmt_id id;
    uint64_t idx;    /* its index within its level (where it was first met) */
    uint64_t npages; /* pages of its map */
    uint64_t ready;  /* Want seq after whose answer its whole subtree is stored */
    uint8_t *data;
    uint32_t len;
    uint8_t level;
} rx_node;

/* A node to fetch: where it sits in its map. */
typedef struct rx_want_node {
    vmt_id id;
    uint64_t idx, npages;
    uint8_t level;
} rx_want_node;

typedef struct rx {
    vmt_session *s;
    vmt_store *st;
    const vmt_golden_opts *o;
    vmt_golden_stats *stats;
    vmt_frame f;
    golden_idmap seen;    /* every node and page planned for fetching */
    rx_node *nodes;       /* in the order fetched */
    size_t nnodes, capnodes;
    size_t *order;        /* node indices by (ready, level): the order they are stored */
    size_t stored;        /* order[0..stored) are in the store */
    vmt_id *pages;        /* pages to fetch, in the order asked */
    size_t npages, cappages;
    uint64_t seq;         /* the last Want's seq */
    uint64_t page_base;   /* seq before the first page Want */
    uint8_t *slab;        /* verified pages of the Want being answered */
    size_t slab_n;
    uint64_t since_commit; /* content bytes put since the last commit */
    uint64_t pages_done;
    void *walk;           /* the walk's state while it fetches nodes */
} rx;

/* Called for object k (index into the ids fetched) with the object as it
 * arrived; opens (checks) it with golden_object_open and keeps it. */
typedef int (*rx_obj_fn)(rx *r, size_t k, const vmt_golden_object *o);
/* Called once the answer to Want `seq` is complete (may be NULL). */
typedef int (*rx_batch_fn)(rx *r, uint64_t seq);

/* Fetches ids[0..n) of `type` in Wants of o->want_ids, o->window in
 * flight, calling on_obj per object in order and on_batch per Want. */
int rx_fetch(rx *r, const vmt_id *ids, size_t n, unsigned type, rx_obj_fn on_obj,
             rx_batch_fn on_batch);

/* Walks the maps of roots[0..n) (each with its pages): fetches every node
 * the store lacks, level by level, and lists the pages it lacks. */
int rx_walk(rx *r, const vmt_id *roots, const uint64_t *npages, size_t n);

/* Computes when each fetched node becomes storable (its `ready` seq, the
 * page Wants starting after r->seq) and the order to store them in. */
int rx_plan(rx *r);

/* Stores, children first, every node whose subtree is complete once the
 * answer to Want `seq` is in (0: those complete already). */
int rx_store_ready(rx *r, uint64_t seq);

/* The records of the chain's snapshots the store lacks (golden_recv.c). */
typedef struct rx_recs {
    vmt_id *ids;        /* the new snapshots, newest first */
    size_t n;
    uint8_t **bytes;    /* their record objects */
    uint32_t *len;
    vmt_snap_record *recs;
} rx_recs;

/* Which of the chain ids[0..n) the store lacks, and their records from the
 * provider, into *rs (rx_free_recs). */
int rx_fetch_records(rx *r, const vmt_id *ids, size_t n, rx_recs *rs);
void rx_free_recs(rx_recs *rs);
/* Fetches and stores the state blobs of rs the store lacks. */
int rx_fetch_blobs(rx *r, const rx_recs *rs);
/* Checks each new snapshot complete in the store, stores its record
 * (oldest first) and commits. */
int rx_store_records(rx *r, const rx_recs *rs);
/* Adds the chain to catalog c (may be NULL), oldest first; sets tag/AS_TAG. */
int rx_catalog_chain(rx *r, vmt_catalog *c, const vmt_id *ids, size_t n, const char *as_tag);
/* Commits the store (counted in stats). */
int rx_commit(rx *r);

/* Reports progress (when the caller asked for it). */
void rx_progress(rx *r, const char *phase, uint64_t done, uint64_t total);

#endif
