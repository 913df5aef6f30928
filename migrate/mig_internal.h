/* Internals of live migration shared by mig_source.c (the network sink),
 * mig_send.c (vmt_migrate_send, the policy) and mig_throttle.c. */
#ifndef VMTREE_MIG_INTERNAL_H
#define VMTREE_MIG_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "migrate_internal.h"
#include "vmtree/net.h"

/* The network sink of the pre-copy engine (mig_source.c). */
typedef struct net_sink {
    vmt_session *s;
    vmt_vm *vm;
    uint8_t *ram;
    uint64_t npages;
    uint32_t timeout_ms;
    unsigned n, next;
    bool open; /* a round is open */
    uint32_t round;
    vmt_batch_opts bopts;
    vmt_xbzrle_cache *cache;
    vmt_haveset *have; /* the destination's ids (feature agreed), or NULL */
    vmt_batch_writer *w, *full;
    uint64_t pages[VMT_NET_MAX_STREAMS], bytes[VMT_NET_MAX_STREAMS];
    uint64_t batches[VMT_NET_MAX_STREAMS];
    uint64_t total_pages;
    const vmt_id *base; /* announced in VM_CONFIG, or NULL */
    char vm_name[64];
    char image[1024];
    mig_ram_holes holes;   /* round 0: holes of RAM are not even read */
    bool lazy_ram;         /* ... unless they are pages still to arrive */
    uint64_t zero_skipped; /* round 0: zero pages not sent (the peer's RAM is new) */
    /* Bulk placement (RDMA WRITE; mig_bulk.c): streams whose peer exposed
     * RAM, the run being gathered, runs placed since a stream's last frame. */
    bool bulk[VMT_NET_MAX_STREAMS];
    bool bulk_any;
    uint64_t run_pfn;
    const uint8_t *run_data;
    size_t run_n;
    unsigned run_stream, bulk_next;
    uint64_t runs_since_frame[VMT_NET_MAX_STREAMS];
    uint64_t placed;      /* pages placed, all rounds */
    uint64_t prepared_ns; /* when PREPARED arrived */
    bool go_sent, in_doubt, aborted;
} net_sink;

extern const vmt_sink_ops mig_net_sink_ops;

/* Sends the sink's current batch of `w` on `stream` (UINT32_MAX: the next
 * stream round robin) (mig_source.c). */
int mig_ns_flush(net_sink *c, vmt_batch_writer *w, unsigned stream);

/* ---- outcome records (mig_outcome.c) ------------------------------------------ */

typedef enum mig_outcome {
    MIG_OUTCOME_NONE = 0,
    MIG_OUTCOME_RUNNING,
    MIG_OUTCOME_DISCARDED,
} mig_outcome;

/* Claims `want` for session sid in dir; *got is the record that holds
 * afterwards (want when this call created it).  Errors: VMT_EIO. */
int mig_outcome_claim(const char *dir, const uint8_t sid[16], mig_outcome want, mig_outcome *got);
const char *mig_outcome_name(mig_outcome o);

/* ---- bulk placement (mig_bulk.c) ------------------------------------------- */

/* At a round's start: which streams may place (their peer exposed RAM). */
void mig_bulk_round(net_sink *c);
/* Takes page pfn for placement when a stream may place it and no cheaper
 * encoding applies (zero, a reference); *taken says so. */
int mig_bulk_take(net_sink *c, uint64_t pfn, const uint8_t *data, bool *taken);
/* Places the gathered run: before any frame that must follow it. */
int mig_bulk_flush(net_sink *c);

/* Auto-converge: a thread pausing the VM for pct % of every period. */
typedef struct mig_throttle {
    vmt_vm *vm;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned pct; /* 0..99, under mu */
    bool stop, started;
} mig_throttle;

/* Starts the thread (throttling nothing yet).  Errors: VMT_ERR. */
int mig_throttle_start(mig_throttle *t, vmt_vm *vm);
/* Sets the share of time the VM is held paused (0..99). */
void mig_throttle_set(mig_throttle *t, unsigned pct);
unsigned mig_throttle_get(mig_throttle *t);
/* Stops and joins the thread; the VM is left running as the thread found
 * it.  Safe to call twice and on a throttle never started. */
void mig_throttle_stop(mig_throttle *t);

#endif
