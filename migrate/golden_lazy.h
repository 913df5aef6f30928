/*
 * Internals of a VM from a snapshot still arriving (golden_lazy.c: open,
 * poll, close and the VM; golden_lazy_io.c: the restore's source, which
 * fetches pages over the session on demand).  Never included outside
 * migrate/.
 */
#ifndef VMTREE_GOLDEN_LAZY_H
#define VMTREE_GOLDEN_LAZY_H

#include <pthread.h>
#include <stdatomic.h>

#include "golden_rx.h"

/* One page Want in flight: the caller waits until `done`. */
typedef struct lazy_req {
    const vmt_id *ids;
    void *const *dst; /* 4096 bytes each, the restore's buffers */
    size_t n, got;
    uint64_t seq;
    int rc;
    bool done;
    struct lazy_req *next;
} lazy_req;

struct vmt_golden_lazy {
    rx r;       /* session, store, options, the walk's nodes (in memory) */
    rx_recs rs; /* the snapshot's record when the store lacked it */
    vmt_golden_opts o;
    vmt_golden_stats st; /* guarded by mu once the receiver runs */
    vmt_id snap;
    vmt_snap_record rec;
    golden_idmap node_idx; /* fetched node id -> index into r.nodes */
    vmt_restore *restore;
    vmt_restore_source src;
    uint64_t t0, open_ns, complete_ns;
    uint64_t pages_missing;

    pthread_mutex_t send_mu; /* one Want on the wire at a time, in seq order */
    pthread_mutex_t mu;      /* the queue, err, stopping, st; with cv */
    pthread_cond_t cv;
    lazy_req *head, *tail; /* Wants sent and not yet answered, by seq */
    lazy_req *cur;         /* the one the receiver is filling */
    uint64_t seq;          /* the last Want's seq */
    int err;               /* sticky: the transfer failed */
    char errmsg[512];
    bool stopping, rx_started, locks;
    pthread_t rx_thr;
    uint64_t since_commit; /* receiver thread only */
    _Atomic uint64_t fetches;
    int state; /* 0 loading, 1 finished, <0 failed (poll's) */
};

/* Starts the receiver thread and fills g->src.  VMT_ERR. */
int lazy_io_start(vmt_golden_lazy *g);
/* Fails every Want in flight and every later one with `rc` and the
 * thread's message (first failure wins); shuts the session down. */
void lazy_io_fail(vmt_golden_lazy *g, int rc);
/* Stops the receiver thread (after lazy_io_fail, or once nothing is in
 * flight) and waits for it. */
void lazy_io_stop(vmt_golden_lazy *g);
/* The sticky error (0 while healthy), its message re-set on this thread. */
int lazy_io_error(vmt_golden_lazy *g);

#endif
