/*
 * dedup internals: the RADOS backend's handle, shared by be_rados.c (the
 * objects) and be_rados_lock.c (the writer lock).
 */
#ifndef VMTREE_DEDUP_BE_RADOS_H
#define VMTREE_DEDUP_BE_RADOS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <rados/librados.h>

#include "backend.h"
#include "be_rados_cache.h"

#define RADOS_LOCK_NAME "vmtree-writer"
#define RADOS_LOCK_TIMEOUT_DEFAULT 30u /* seconds a dead writer's lock outlives it */

typedef struct rados_be {
    dd_backend base;
    char *url;
    rados_t cluster;
    rados_ioctx_t io;
    bool connected;
    unsigned op_timeout; /* seconds before a request without an answer fails */
    int timed_out;       /* atomic: a request timed out (close fences, see dd_rados_fail) */
    unsigned timeouts;   /* requests timed out so far (under fetch_mu) */
    struct dd_rados_notify *abandoned; /* notifies given up on (under mu) */
    /* The writer lock (be_rados_lock.c). */
    unsigned lock_timeout; /* seconds; renewed every third of it */
    bool locked;           /* this handle holds the lock */
    int lost;              /* atomic: a renewal failed, writes must stop */
    char cookie[128];      /* host:pid:time */
    bool renewing;         /* the renewal thread runs */
    pthread_t renewer;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    /* The local read cache of sealed packs (be_rados_cache.c); NULL: none. */
    dd_pcache *cache;
    char scope[192];  /* cluster fsid/pool id/namespace: part of every cache key */
    int cache_warned; /* atomic: a failed cache write was reported once */
    /* Whole-object fetches share a bound on the bytes they have in flight,
     * so that a small read (a lazy restore's fault) queues behind at most
     * that much at the OSD (be_rados_read.c). */
    pthread_mutex_t fetch_mu;
    pthread_cond_t fetch_cv;
    size_t fetch_inflight; /* bytes of fetch requests in flight (under fetch_mu) */
    /* The second cluster handle fetches read through (dd_rados_fetch_io),
     * connected by a thread started at open. */
    pthread_mutex_t fconn_mu;
    pthread_cond_t fconn_cv;
    bool fconn_started; /* under fconn_mu: a connect began (thread or caller) */
    bool fconn_done;    /* under fconn_mu: fcluster/fio are final (NULL: failed) */
    bool fconn_thread;  /* fconn_thr runs (joined at destroy) */
    pthread_t fconn_thr;
    rados_t fcluster;
    rados_ioctx_t fio;
    bool fio_off; /* under fconn_mu: fio timed out, fetches use io (dd_rados_fetch_timed_out) */
    dd_bio_counters ctr;   /* atomic counters (fetch_peak under fetch_mu) */
} rados_be;

/* Read-path settings of a location (be_rados_read.c). */
typedef struct rados_read_cfg {
    char cache[1024];    /* cache=DIR, else $VMTREE_RADOS_CACHE; "" none */
    bool cache_off;      /* cache=off: no cache whatever the environment says */
    uint64_t cache_size; /* cache_size=SIZE, else $VMTREE_RADOS_CACHE_SIZE; 0: default */
    uint64_t mem;        /* mem=SIZE: view_max; 0: default */
} rados_read_cfg;

/* Parses one "key=value" of n bytes of a location's query when it is a
 * read-path setting: 0 taken, 1 not one of them, else an error code. */
int dd_rados_read_param(rados_read_cfg *c, const char *kv, size_t n);
/* After connecting: the memory bound, the cache (opened), the read ops. */
int dd_rados_read_setup(rados_be *b, const rados_read_cfg *c, const char *ns);

/* ops->map_sealed, ops->cache_counters, ops->read_at and ops->io_counters
 * (be_rados_read.c). */
int dd_rados_map_sealed(dd_backend *b, const char *name, size_t len, const uint8_t tag[16],
                        int mode, uint8_t **out, unsigned *how);
void dd_rados_cache_counters(dd_backend *b, uint64_t *fills, uint64_t *evicted);
int dd_rados_read_at(dd_backend *b, const char *name, void *buf, size_t len, uint64_t off,
                     size_t *got);
void dd_rados_io_counters(dd_backend *b, dd_bio_counters *out);

/* Reads len bytes of name from offset 0 into buf, in pieces in flight at
 * once (within the handle's bound on fetch bytes in flight); VMT_EIO when
 * the object is shorter. */
int dd_rados_read_all(rados_be *b, const char *name, uint8_t *buf, size_t len);
/* The ioctx of whole-object fetches: a second cluster handle, waiting for
 * the connect begun at open (the handle's own ioctx when that failed).
 * Thread-safe. */
rados_ioctx_t dd_rados_fetch_io(rados_be *b);
/* A fetch request sent through io timed out: when io is the second
 * handle's, later fetches use the handle's own ioctx. */
void dd_rados_fetch_timed_out(rados_be *b, rados_ioctx_t io);

#define DD_RADOS_IDX_SHARDS 256u

/* Index entries in omap (be_rados_idx.c): ops idx_add, idx_load. */
int dd_rados_idx_add(dd_backend *b, unsigned shard, uint8_t *recs, size_t n, bool replace);
int dd_rados_idx_load(dd_backend *b, dd_idx_load_fn fn, void *ctx);
/* Removes every index shard object (store removal). */
int dd_rados_idx_remove(rados_be *b);

/* A VMT_E* code and message for a negative librados result: for steps
 * that are not requests to the OSDs (connecting, configuration, submitting
 * an aio); a request that can time out uses dd_rados_fail. */
int dd_rados_err(int r, const char *what, const char *name);
/* Same for the store's reads and writes: a timeout is VMT_EIO naming the
 * object and op_timeout, and is remembered on the handle. */
int dd_rados_fail(rados_be *b, int r, const char *what, const char *name);

/* Takes the writer lock (ops->lock); fences and replaces a lock whose
 * holder died (docs/store-backends.md). */
int dd_rados_lock(dd_backend *b);
/* Stops renewing and releases the lock cleanly; no-op when not held. */
void dd_rados_unlock(rados_be *b);
/* 0 while writes may go on; VMT_EBUSY once the lock was lost. */
int dd_rados_may_write(rados_be *b);

#endif
