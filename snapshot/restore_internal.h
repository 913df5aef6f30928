/*
 * Internals of restore (snap_restore.c: common parts; snap_restore_eager.c;
 * snap_restore_lazy.c: userfaultfd).  Never included outside snapshot/.
 */
#ifndef VMTREE_RESTORE_INTERNAL_H
#define VMTREE_RESTORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "snap_internal.h"

/* Pages per store batch (eager workers and the prefetcher): 1 MiB of bounce
 * buffer, which stays in the cache between decompression and the copy. */
#define RESTORE_BATCH 256u
/* Fault messages read at once by the fault thread. */
#define RESTORE_FAULT_MSGS 64u
#define RESTORE_MAX_THREADS 64u

struct vmt_restore {
    vmt_store *s;
    uint8_t *ram;
    int ram_fd;
    uint64_t npages;
    vmt_restore_opts o;
    uint64_t t0; /* vmt_now_ns() at open */

    /* Eager only: the whole map and its non-zero pages, ascending. */
    vmt_map *map;
    uint64_t *pfns;
    uint64_t nnz;

    _Atomic uint64_t pages_total; /* non-zero pages (lazy: found so far) */
    _Atomic uint64_t pages_loaded, pages_faulted, zero_faults;
    uint64_t ready_ns;
    _Atomic uint64_t complete_ns;

    pthread_mutex_t mu; /* guards done/err below, with cv */
    pthread_cond_t cv;
    bool done;
    int err; /* sticky: first failure of a background thread */
    char errmsg[256];

    /* Lazy only: the map is read on demand, leaf by leaf. */
    map_geom g;
    vmt_id *lvl[MAP_MAX_DEPTH];  /* node ids per level; lvl[0]: the leaves */
    _Atomic uint8_t *leaf_state; /* LEAF_* per leaf */
    vmt_id *page_ids;            /* npages; valid within READY leaves */
    _Atomic uint8_t *present;    /* per page: placed in RAM */
    _Atomic bool pass_done;      /* the prefetcher has been through every leaf */
    _Atomic bool failed;         /* err is set (readable without the lock) */
    _Atomic uint64_t next_leaf;  /* the prefetchers' cursor */
    _Atomic unsigned prefetch_live;
    _Atomic bool prefetch_aborted; /* a prefetcher stopped early */
    int uffd, stop_fd;
    _Atomic bool unregistered;
    pthread_t fault_thr, prefetch_thr[RESTORE_MAX_THREADS];
    bool fault_started;
    unsigned nprefetch; /* prefetchers started */
};

/* Records a background failure (first one wins) and wakes waiters. */
void restore_fail(vmt_restore *r, int rc);
/* Marks the restore complete and wakes waiters. */
void restore_complete(vmt_restore *r);

/* Reads pages for the lazy restore: from its source when it has one, else
 * from its store (as vmt_store_get_pages). */
static inline int restore_get_pages(vmt_restore *r, const vmt_id *ids, size_t n,
                                    void *const *dst)
{
    if (r->o.source)
        return r->o.source->get_pages(r->o.source->ctx, ids, n, dst);
    return vmt_store_get_pages(r->s, ids, n, dst);
}

/* Fills RAM with the non-zero pages r->pfns[0 .. nnz) of r->map (eager). */
int restore_eager(vmt_restore *r);
/* Writes n pages (buf slot i for pfn[i], ascending) into the memfd, one
 * pwrite per run of consecutive pfns. */
int restore_write_runs(int fd, const uint64_t *pfn, const uint8_t *buf, size_t n);

/* Reads the inner map and starts the lazy machinery (uffd, threads). */
int restore_lazy_start(vmt_restore *r, const vmt_id *root);
/* Stops the lazy threads, unregisters the range, frees the lazy state;
 * idempotent. */
void restore_lazy_stop(vmt_restore *r);

#endif
