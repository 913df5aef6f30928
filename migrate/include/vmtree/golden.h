/*
 * vmtree migrate/ golden images (DESIGN.md §4, docs/golden.md): moving a
 * snapshot and its ancestors between two hosts' stores, sending only the
 * objects the receiving store lacks.
 *
 * Over one migrate/net session (version negotiation, PSK or TLS
 * authentication, checksummed frames) a *receiver* asks a *provider* for
 * objects by id (Want) and gets them back (Objects): first the snapshot
 * records, then the map nodes level by level, descending only into children
 * it does not hold (a node it holds stands for its whole subtree), then the
 * pages and state blobs it lacks.  Every object is decompressed and rehashed
 * against its id before it is stored.  Pull: the client receives; push: the
 * server receives.
 *
 * Store invariant the walk relies on and keeps: a map node is only stored
 * after everything below it.  The receiver stores pages as they arrive and a
 * node once its subtree is in, and commits every `commit_bytes`, so an
 * interrupted transfer leaves a consistent store holding what arrived, and
 * the next transfer does not send it again.  The snapshot records and the
 * catalog entries come last, after a completeness check.
 *
 * Threading: one transfer per session, driven from one thread.  Errors: 0 or
 * a negative VMT_E* with vmt_error_last(); a peer's refusal arrives as its
 * code with "peer ...: <its message>".
 */
#ifndef VMTREE_GOLDEN_H
#define VMTREE_GOLDEN_H

#include <stdbool.h>
#include <stdint.h>

#include "vmtree/net.h"
#include "vmtree/snapshot.h"
#include "vmtree/store.h"
#include "vmtree/vmm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Progress of a transfer: phase ("snapshots", "maps", "objects", "check"),
 * units done of total (0: unknown).  Called on the transfer's thread. */
typedef void (*vmt_golden_progress_fn)(void *ctx, const char *phase, uint64_t done,
                                       uint64_t total);

typedef struct vmt_golden_opts {
    uint32_t max_ancestors; /* ancestors carried besides the snapshot
                               (VMT_GOLDEN_ALL_ANCESTORS: all the provider holds) */
    uint64_t commit_bytes;  /* receiver: commit after this many content bytes */
    unsigned want_ids;      /* ids per Want, 1..VMT_GOLDEN_WANT_MAX */
    unsigned window;        /* Wants in flight, 1..16 */
    uint32_t timeout_ms;    /* longest wait for the peer's next message */
    vmt_golden_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} vmt_golden_opts;

/* All ancestors, 64 MiB commits, 1024 ids a Want, 4 in flight, 60 s. */
void vmt_golden_opts_init(vmt_golden_opts *o);

/* What one transfer did, on the side that reports it. */
typedef struct vmt_golden_stats {
    uint64_t snapshots;      /* in the chain (the snapshot and its ancestors) */
    uint64_t snapshots_new;  /* receiver: not in its store before */
    uint64_t nodes_fetched;  /* receiver: map nodes that crossed */
    uint64_t nodes_skipped;  /* receiver: subtrees not visited (held already) */
    uint64_t pages_fetched;  /* receiver: pages that crossed */
    uint64_t pages_present;  /* receiver: non-zero page ids found present */
    uint64_t objects;        /* objects received (receiver) or sent (provider) */
    uint64_t object_bytes;   /* their content bytes */
    uint64_t payload_bytes;  /* their bytes in Objects messages (compressed) */
    uint64_t wants;          /* Want messages */
    uint64_t commits;        /* receiver: store commits */
    uint64_t wire_sent, wire_received; /* the session's bytes, frames included */
    uint64_t ns;             /* duration of the transfer */
} vmt_golden_stats;

/*
 * Client side of a pull: asks the server of session `s` for snapshot `name`
 * (resolved by the server: a tag, VM name, id prefix, X~N...) and its
 * ancestors, and receives into `st` (a writer handle) what it lacks; then
 * records the snapshots in `c` and, with `as_tag`, sets tag/AS_TAG to the
 * snapshot.  *out receives its id.  `stats` may be NULL.  Errors:
 * VMT_ENOENT (no such snapshot there), VMT_ECORRUPT (an object failed its
 * check: nothing of it was stored), the session's, the store's.  After a
 * failure the store holds, committed, what arrived whole; a new pull
 * continues from there.
 */
int vmt_golden_pull(vmt_session *s, vmt_store *st, vmt_catalog *c, const char *name,
                    const char *as_tag, const vmt_golden_opts *o, vmt_id *out,
                    vmt_golden_stats *stats);

/*
 * Client side of a push: offers snapshot `id` of `st` (and its ancestors)
 * to the server of `s`, which receives what it lacks and, with `as_tag`,
 * sets its tag/AS_TAG.  Returns when the server reports the snapshot
 * complete in its store.  Errors: VMT_EAUTH (the server is read-only), the
 * server's failure, the session's, the store's.
 */
int vmt_golden_push(vmt_session *s, vmt_store *st, const vmt_id *id, const char *as_tag,
                    const vmt_golden_opts *o, vmt_golden_stats *stats);

typedef struct vmt_golden_server_opts {
    const char *store_dir; /* the store served (must exist) */
    bool read_only;        /* refuse pushes */
    vmt_golden_opts xfer;
} vmt_golden_server_opts;

/*
 * Serves one request on an accepted session: a pull (the store opened
 * read-only for the request, so it sees the last commit) or a push (the
 * store opened as writer for the request: VMT_EBUSY while another process
 * writes it).  Returns when the peer is done.  *op (may be NULL) receives
 * the request's VMT_GOLDEN_OP_*, *snap (may be NULL) the snapshot moved.
 * Errors: the peer's refusal, VMT_EPROTO, the store's.
 */
int vmt_golden_serve(vmt_session *s, const vmt_golden_server_opts *o, unsigned *op, vmt_id *snap,
                     vmt_golden_stats *stats);

/* ---- a VM from a snapshot still arriving (vmtree branch --from) ------------ */

/*
 * The client side of a pull whose snapshot runs before it has arrived
 * (docs/golden.md §6).  Open asks the server of `s` for snapshot `name`
 * alone (no ancestors), fetches its record, its state blob (stored: a blob
 * stands for nothing below it) and the map nodes the store lacks (kept in
 * memory: a node is only stored after its subtree), and creates a VM (not
 * started) whose RAM is restored lazily: a page the store lacks is fetched
 * from the server when the guest touches it, and prefetchers fetch the rest
 * in map order.  Every page is checked against its id and stored as it
 * arrives.  Once RAM is complete, vmt_golden_lazy_poll stores the nodes and
 * the record as a pull does, so the snapshot ends complete in the store.
 *
 * If the transfer fails (server gone, a damaged object, a timeout) the
 * restore stops: the vCPU that touches a missing page stays blocked, so the
 * VM never runs with a page it lacks; poll reports the failure and the
 * caller ends the VM.  The store keeps, committed, the pages that arrived
 * (a later pull continues from them), never a node or record without what
 * is below it.
 *
 * Threading: the handle's own threads (a receiver, the restore's fault
 * thread and prefetchers) use the session and the store; the caller uses
 * the handle from one thread.  `s` and `st` (a writer handle) are borrowed
 * and must stay open until vmt_golden_lazy_close.
 */
typedef struct vmt_golden_lazy vmt_golden_lazy;

typedef struct vmt_golden_lazy_stats {
    vmt_golden_stats xfer;   /* the transfer so far (pages_fetched grows as pages arrive) */
    uint64_t pages_missing;  /* distinct non-zero pages the store lacked at open */
    uint64_t fetches;        /* page Wants sent by faults and prefetchers */
    uint64_t open_ns;        /* open: request to the VM ready to start */
    uint64_t complete_ns;    /* open to the snapshot complete in the store (0 before) */
    bool complete;
} vmt_golden_lazy_stats;

/*
 * Opens the transfer and creates *vm (the caller's: start it, and destroy
 * it before vmt_golden_lazy_close) configured from the record over `base`
 * (may be NULL).  `prefetchers`: restore threads (0 = cores).  *snap and
 * *rec (may be NULL) receive the snapshot's id and record.  Errors:
 * VMT_ENOENT (no such snapshot there), VMT_EUNSUPPORTED (no userfaultfd),
 * VMT_ECORRUPT, the session's, the store's, the VMM's.
 */
int vmt_golden_lazy_open(vmt_golden_lazy **out, vmt_session *s, vmt_store *st, vmt_kvm *kvm,
                         const vmt_vm_config *base, const char *name, const vmt_golden_opts *o,
                         unsigned prefetchers, vmt_vm **vm, vmt_id *snap, vmt_snap_record *rec);

/*
 * Advances the transfer without blocking: 0 while pages are arriving; 1 once
 * every page is in, after storing the nodes and the record, committing,
 * adding the snapshot to `c` (may be NULL) with tag/AS_TAG (may be NULL) and
 * telling the server Done (from then on it returns 1); a negative VMT_E*
 * when the transfer failed (sticky: the VM must be ended).
 */
int vmt_golden_lazy_poll(vmt_golden_lazy *g, vmt_catalog *c, const char *as_tag);

/* Current figures; callable from any thread. */
void vmt_golden_lazy_get_stats(vmt_golden_lazy *g, vmt_golden_lazy_stats *out);

/* Ends the transfer (the server is told why unless it completed), stops
 * the restore, commits what arrived, frees.  The VM must be destroyed
 * first.  NULL is fine. */
void vmt_golden_lazy_close(vmt_golden_lazy *g);

#ifdef __cplusplus
}
#endif
#endif
