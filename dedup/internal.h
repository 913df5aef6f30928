/*
 * dedup internals: the store handle and the functions its source files share.
 *
 * Locks, in the order they may be taken:
 *   wmu        writer mutex: put, commit, gc, train_dict, close.
 *   layout     rwlock over the pack table and the dictionary table: readers
 *              (get, verify) hold it shared for a whole batch, so a pack
 *              is never unmapped under them; adding or removing a pack or a
 *              dictionary takes it exclusively.
 *   shard      the index shards' rwlocks (index.h), innermost.
 */
#ifndef VMTREE_DEDUP_INTERNAL_H
#define VMTREE_DEDUP_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "backend.h"
#include "codec.h"
#include "index.h"
#include "pool.h"
#include "record.h"
#include "vmtree/store.h"

#define DD_STORE_FILE "STORE"
#define DD_LOCK_FILE "lock"
#define DD_INDEX_FILE "index"
#define DD_PACKS_DIR "packs"
#define DD_DICTS_DIR "dicts"
#define DD_REFS_DIR "refs"

#define DD_WINDOW_ITEMS 4096u       /* objects per put window */
#define DD_WINDOW_BYTES (32u << 20) /* content bytes per put window */
#define DD_CHUNK 32u                /* items a worker takes at a time */

/* A position in the store's log: packs in number order, bytes within. */
typedef struct dd_pos {
    uint32_t pack;
    uint64_t off;
} dd_pos;

static inline int dd_pos_cmp(dd_pos a, dd_pos b)
{
    if (a.pack != b.pack)
        return a.pack < b.pack ? -1 : 1;
    return (a.off > b.off) - (a.off < b.off);
}

/* One pack file, mapped read-only. */
typedef struct dd_pack {
    uint32_t num;
    dd_backend *be; /* the store's backend (to unmap and close) */
    dd_bfile *f;    /* open while written or not yet synced; else NULL */
    uint8_t *map;   /* the view; NULL until first use for a lazy backend (atomic) */
    size_t map_len;
    uint64_t size; /* bytes valid for readers; atomic (the writer appends) */
    bool bad;      /* cannot be opened or mapped: reads fail with why */
    bool torn;     /* shorter than its header or header all zero: no records */
    bool hdr_err;  /* header invalid (why says how); records still scanned */
    char why[192];
    /* Lazy views (packview.c): */
    bool sealed;   /* no byte below size changes again: its view may come from
                      the backend's map_sealed (a local cache) */
    unsigned how;  /* DD_VIEW_* of the view (under view_mu); 0: the writer's own */
    bool fetching; /* a reader is fetching its view (under view_mu) */
    uint32_t fetch_fails; /* under view_mu: fetches of its view that failed */
    int fetch_rc;         /* under view_mu: the last failure's code and message */
    char fetch_why[192];
    uint64_t used; /* atomic: the store's read epoch when last read */
} dd_pack;

/* A view replaced while readers may still hold it: unmapped later. */
typedef struct dd_retired {
    struct dd_retired *next;
    uint8_t *map;
    size_t len;
} dd_retired;

struct vmt_store {
    char *dir;      /* the location as opened: a directory or a rados:// URL */
    dd_backend *be; /* where the bytes live (backend.h) */
    bool read_only;
    bool refs_only; /* opened for refs alone: no packs, no index (vmt_store_open) */
    uint8_t uuid[16];
    vmt_store_config cfg; /* as recorded in STORE */

    /* This handle's settings (open options over cfg). */
    int codec, zstd_level, lz4_accel;
    bool compare, verify_reads;
    uint64_t index_interval;

    unsigned nthreads;
    dd_pool *pool;
    dd_scratch **scr;  /* put's scratches, one per worker (under wmu) */
    dd_scratch **gscr; /* get's scratches, used only while holding the pool */

    dd_index ix;

    pthread_rwlock_t layout;
    dd_pack **packs; /* indexed by pack number; NULL where none */
    uint32_t packs_cap, last_pack;
    dd_dict **dicts; /* indexed by version */
    unsigned dicts_cap, dict_last;

    pthread_mutex_t wmu;
    dd_pack *active;      /* writer: pack receiving appends */
    dd_pos committed;     /* end of the last commit marker */
    dd_pos indexed;       /* checkpoint of the index file on disk */
    uint64_t gen;         /* generation of the last commit */
    dd_counters cc, pc;   /* counters as committed / including pending puts */
    uint32_t dirty_from;  /* first pack written since the last commit, 0: none */
    bool dir_dirty;       /* a pack was created or removed since the last fsync */
    uint64_t since_index; /* bytes appended since the index file was saved */
    bool idx_all;         /* the next save rewrites every entry (after gc or a rebuild);
                             else a backend keeping entries itself adds the new ones */
    int sticky;           /* write error that stops further writes */

    /* Views of packs on a backend that fetches them (packview.c). */
    pthread_mutex_t view_mu; /* installing and replacing views */
    pthread_cond_t view_cv;  /* a fetch ended */
    dd_retired *retired;     /* under view_mu */
    uint64_t view_bytes;     /* atomic: bytes of droppable views (as of the last trim + since) */
    uint64_t epoch;          /* atomic: read batches begun (the views' LRU clock) */
    unsigned bg;             /* under view_mu: fetches running behind small reads */
    uint64_t n_fetch, n_hit, n_damaged, n_dropped, n_ranged; /* atomic: counters */

    pthread_mutex_t spare_mu; /* spare scratches for calls that run alone */
    dd_scratch *spare[8];
    unsigned nspare;

    vmt_store_recovery rec;
};

/* ---- pack.c ---- */
dd_pack *dd_pack_get(vmt_store *s, uint32_t num); /* caller holds layout */

/* ---- packview.c ---- */
/* The pack's bytes, fetched on first use where the backend's views are lazy
 * (RADOS), from the backend's local cache when the pack is sealed; NULL with
 * the message set when they cannot be read.  Caller holds layout shared (or
 * wmu); thread-safe against other readers. */
const uint8_t *dd_pack_view(vmt_store *s, dd_pack *p);
/* A record of view `old` of p failed its checks.  When that view is a local
 * copy, fetches the pack from the backend itself (replacing the copy) and
 * returns the new view; else NULL: the damage is in the store. */
const uint8_t *dd_pack_refetch(vmt_store *s, dd_pack *p, const uint8_t *old);
/* For a small read: p's view when it is there or can be mapped at once
 * (a local copy); else NULL with *inflight set while another reader fetches
 * it, or with *inflight and *owner when the caller is to start the fetch
 * (dd_pack_fetch_behind) once it read its record alone.  NULL without
 * *inflight: an error. */
const uint8_t *dd_pack_view_nowait(vmt_store *s, dd_pack *p, bool *inflight, bool *owner);
void dd_pack_fetch_behind(vmt_store *s, dd_pack *p);
/* Waits for the fetches running behind small reads (pack removal, close). */
void dd_views_wait(vmt_store *s);
/* After load_index: packs before the commit position are sealed. */
void dd_views_seal(vmt_store *s);
/* A read batch begins (the views' LRU clock). */
void dd_views_tick(vmt_store *s);
/* Drops the least recently used views while they take more than the
 * backend's view_max; skips when a writer or a reader is at work.  Caller
 * holds no store lock (dd_views_trim) or wmu (dd_views_trim_locked). */
void dd_views_trim(vmt_store *s);
void dd_views_trim_locked(vmt_store *s);
/* Unmaps the retired views (close). */
void dd_views_free(vmt_store *s);
int dd_pack_open(vmt_store *s, uint32_t num, bool reserve, dd_pack **out);
int dd_pack_create(vmt_store *s, uint32_t num, dd_pack **out);
int dd_pack_install(vmt_store *s, dd_pack *p); /* takes layout exclusively */
void dd_pack_close(dd_pack *p);
/* Reserves a writer mapping past the end so the active pack can grow. */
int dd_pack_remap(vmt_store *s, dd_pack *p);
int dd_pack_list(vmt_store *s, uint32_t **nums, size_t *n);
/* Writes iov at the active pack's end; makes it visible to readers. */
int dd_append(vmt_store *s, const struct iovec *iov, int iovcnt, size_t total);
/* Starts a new active pack after the current one (or the first one). */
int dd_roll(vmt_store *s);
/* Makes sure there is an active pack to append to. */
int dd_active(vmt_store *s);
/* Whether a record of reclen fits the active pack after `pending` bytes. */
bool dd_fits(const vmt_store *s, size_t reclen, size_t pending);
/* Queues records for the active pack, rolling to a new pack where one does
 * not fit, and writes them with one pwritev per pack (or per 64 pieces). */
typedef struct dd_appender {
    vmt_store *s;
    struct iovec iov[64];
    int niov;
    size_t pending;
} dd_appender;
/* Queues len bytes at rec (kept valid until flushed); *at gets their place. */
int dd_appender_add(dd_appender *a, const uint8_t *rec, size_t len, dd_pos *at);
int dd_appender_flush(dd_appender *a);
/* Removes pack num from the table and deletes its file. */
int dd_pack_delete(vmt_store *s, uint32_t num);
/* Sets the sticky write error from the current message. */
int dd_fail_sticky(vmt_store *s, int rc);
/* Makes pack creations and removals durable. */
int dd_sync_packs_dir(vmt_store *s);
/* "packs/pack-NNNNNNNN.vpk" */
void dd_pack_name(char buf[40], uint32_t num);
uint64_t dd_disk_bytes(vmt_store *s);

/* ---- config.c ---- */
int dd_config_load(vmt_store *s);


/* ---- idxfile.c ---- */
/* Loads the index file into s->ix; VMT_ENOENT when missing, VMT_ECORRUPT. */
int dd_idx_load(vmt_store *s);
/* Writes the committed entries durably (tmp, fsync, rename, fsync dir). */
int dd_idx_save(vmt_store *s);
/* Shared with idxomap.c: the header (flags: DD_IDX_OMAP), an entry's 32
 * bytes, the checks and insertion of a loaded entry. */
#define DD_IDX_HDR 128u
#define DD_IDX_OMAP 1u /* header flag: the entries live in the backend's shards */
void dd_idx_encode_header(uint8_t *h, const vmt_store *s, uint64_t count, uint32_t flags);
void dd_idx_put_entry(uint8_t *p, const dd_entry *e);
int dd_idx_insert(vmt_store *s, const uint8_t *p);

/* ---- idxomap.c ---- */
/* dd_idx_save / the entries of dd_idx_load for a backend with idx_add. */
int dd_idxomap_save(vmt_store *s);
int dd_idxomap_load(vmt_store *s);

/* ---- recover.c ---- */
int dd_recover(vmt_store *s, bool rebuild);
/* Logs what recovery dropped, skipped or rebuilt. */
void dd_recover_report(vmt_store *s);

/* ---- scan.c ---- */
typedef enum dd_scan_kind {
    DD_SCAN_RECORD,  /* valid header; payload_ok says whether its checksum holds */
    DD_SCAN_GARBAGE, /* bytes with no valid record header [off, off+len) */
    DD_SCAN_TORN,    /* an incomplete record runs past the end: [off, end) */
} dd_scan_kind;

typedef struct dd_scan_item {
    dd_scan_kind kind;
    uint64_t off, len;
    dd_rec_hdr h;
    const uint8_t *payload; /* valid during the callback */
    bool payload_ok;
} dd_scan_item;

typedef int (*dd_scan_fn)(void *ctx, const dd_scan_item *it);
/* Reads pack file f from `start` to `end` with pread, calling fn per item. */
int dd_scan_pack(dd_backend *be, dd_bfile *f, uint64_t start, uint64_t end, dd_scan_fn fn,
                 void *ctx);
/* Opens pack num's object for reading (mode DD_BF_READ) or truncation. */
int dd_pack_file(vmt_store *s, uint32_t num, dd_bmode mode, dd_bfile **out);

/* ---- store.c ---- */
int dd_commit_locked(vmt_store *s);
/*
 * Runs fn(arg, scr[w], w) on every worker.  With few items, or when the
 * pool is busy with another caller's job, fn runs once on the calling
 * thread: with scr[0] when `own` (the caller holds scr exclusively, as puts
 * do under wmu), else with a temporary scratch.
 */
typedef void (*dd_work_fn)(void *arg, dd_scratch *sc, unsigned worker);
int dd_run(vmt_store *s, dd_scratch **scr, bool own, dd_work_fn fn, void *arg, size_t items);
dd_dict *dd_dict_get(vmt_store *s, unsigned version); /* caller holds layout */

/* ---- get.c ---- */
/*
 * Reads the record e points at into dst (rlen bytes), checking header,
 * checksum (and id with verify).  Caller holds layout shared.  A get batch
 * of at most DD_SMALL_BATCH objects (a lazy restore's faults) does not wait
 * for a pack being fetched: it reads the record alone (get.c).
 */
int dd_read_entry(vmt_store *s, dd_scratch *sc, const dd_entry *e, void *dst, bool rehash);
#define DD_SMALL_BATCH 16u

/* ---- dict.c ---- */
int dd_dicts_load(vmt_store *s);
void dd_dicts_free(vmt_store *s);

/* ---- errors from workers ---- */
/* First error of a parallel job, copied from the worker's thread. */
typedef struct dd_job_err {
    int rc; /* atomic: 0 until a worker fails */
    char msg[512];
} dd_job_err;
void dd_job_err_set(dd_job_err *je, int rc);
int dd_job_err_raise(const dd_job_err *je);

#endif
