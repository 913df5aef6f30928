/*
 * dedup internals: the storage backend seam (docs/store-backends.md).
 *
 * The store logic (codecs, batches, commit markers, recovery, gc, verify)
 * sees its storage as a flat namespace of named byte objects:
 *   STORE, index, lock, packs/pack-NNNNNNNN.vpk, dicts/dict-NNNNN.zdict
 * and needs only the operations below on them: positioned reads and
 * writes, a durability barrier, truncate, a read-only view, whole-object
 * atomic replacement, remove, list and a writer lock.  The local directory
 * (be_dir.c) maps names to files; RADOS (be_rados.c) maps them to objects
 * of one pool and namespace.  The byte formats are the same on both.
 *
 * Thread-safety: a backend handle and its files are used under the store's
 * own locks (writer mutex, layout lock); views returned by map are
 * read-only and may be read by any thread until unmapped.
 */
#ifndef VMTREE_DEDUP_BACKEND_H
#define VMTREE_DEDUP_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct dd_backend dd_backend;
typedef struct dd_bfile dd_bfile; /* one open object; layout private to the backend */

/* How dd_backend_ops.open opens a name. */
typedef enum dd_bmode {
    DD_BF_READ,    /* existing object, read-only */
    DD_BF_WRITE,   /* existing object, read-write */
    DD_BF_CREATE,  /* new object, read-write; VMT_EEXIST when it exists */
    DD_BF_REPLACE, /* staged writes that replace the object atomically at publish */
} dd_bmode;

/* Longest object name with its NUL: "refs/" + a 128-byte ref name +
 * ".tmp" (the directory backend's staging name) fits. */
#define DD_NAME_MAX 160

/* Called by idx_load for each entry: 32 bytes in the index file's layout. */
typedef int (*dd_idx_load_fn)(void *ctx, const uint8_t rec[32]);

/* Requests a backend handle sent, for vmt_store_stats (io_counters). */
typedef struct dd_bio_counters {
    uint64_t reads;       /* positioned read requests (read_at, pread) */
    uint64_t fetch_reads; /* read requests of whole-object fetches (map, map_sealed) */
    uint64_t stats;       /* stat requests (open of an existing object) */
    uint64_t fetch_peak;  /* most bytes of whole-object fetches in flight at once */
} dd_bio_counters;

/* Called by list for each name in a folder; non-zero stops the listing. */
typedef int (*dd_blist_fn)(void *ctx, const char *name);

typedef struct dd_backend_ops {
    const char *scheme; /* "dir", "rados" */
    /* Prepares an empty store location (folders); VMT_EEXIST when it holds
     * anything. */
    int (*init)(dd_backend *b);
    /* Opens name; VMT_ENOENT when it does not exist (READ, WRITE). */
    int (*open)(dd_backend *b, const char *name, dd_bmode mode, dd_bfile **out);
    int (*size)(dd_bfile *f, uint64_t *out);
    /* Reads up to len bytes at off; *got < len only at the object's end. */
    int (*pread)(dd_bfile *f, void *buf, size_t len, uint64_t off, size_t *got);
    /* Writes every byte of iov at off, as one atomic operation where the
     * backend can (RADOS: one compound write op). */
    int (*pwritev)(dd_bfile *f, const struct iovec *iov, int n, uint64_t off);
    /* Durability barrier: everything written through f survives a crash. */
    int (*sync)(dd_bfile *f);
    int (*truncate)(dd_bfile *f, uint64_t len);
    /* A read-only view of the first len bytes (len may exceed the size:
     * room to grow), showing later writes through f, valid until unmap
     * even after f is closed. */
    int (*map)(dd_bfile *f, size_t len, uint8_t **out);
    void (*unmap)(dd_backend *b, uint8_t *p, size_t len);
    /* DD_BF_REPLACE files: makes the staged bytes the object's content,
     * atomically and durably.  Closes f in every case. */
    int (*publish)(dd_bfile *f);
    void (*close)(dd_bfile *f); /* accepts NULL; drops unpublished staging */
    /* Removes name; absent is not an error. */
    int (*remove)(dd_backend *b, const char *name);
    /* Calls fn with the base name of every object in folder ("packs"). */
    int (*list)(dd_backend *b, const char *folder, dd_blist_fn fn, void *ctx);
    /* Makes creations and removals in folder durable. */
    int (*sync_folder)(dd_backend *b, const char *folder);
    /* Takes the single-writer lock for the handle's life; VMT_EBUSY naming
     * the holder when another writer has it. */
    int (*lock)(dd_backend *b);
    /* After every object of the store was removed: releases the lock and
     * removes what is left (the folders, the lock, the directory itself),
     * then destroys b. */
    int (*purge)(dd_backend *b);
    void (*destroy)(dd_backend *b); /* releases the lock; accepts NULL */
    /*
     * Optional (NULL: the entries live in the index file).  The backend
     * keeps the index entries itself in idx_shards shards chosen by
     * id byte 0 % idx_shards (RADOS: omap of shard objects).  idx_add sets
     * n entries (32-byte records, index-file layout; it may reorder them)
     * in a shard, and with `replace` then removes the shard's other entries;
     * idx_load calls fn for every entry.
     */
    /*
     * Compare-and-swap of a ref object: when the u64 at its first 8 bytes
     * is `expect` (0: the object does not exist), replaces it with rec
     * (whose first 8 bytes are the new version), atomically and durably;
     * else VMT_EBUSY.  Works without the writer lock: any handle, any host.
     */
    int (*ref_cas)(dd_backend *b, const char *name, uint64_t expect, const uint8_t *rec,
                   size_t len);
    /* Optional: calls fn(ctx) from a backend thread whenever ref object
     * `name` is updated through ref_cas anywhere (and when the watch breaks);
     * *handle is released with ref_unwatch. */
    int (*ref_watch)(dd_backend *b, const char *name, void (*fn)(void *ctx), void *ctx,
                     void **handle);
    void (*ref_unwatch)(dd_backend *b, void *handle);
    /* Optional (with ref_watch): wakes the watchers of ref object `name`
     * without changing it, bounded as ref_cas's own notify is. */
    int (*ref_notify)(dd_backend *b, const char *name);
    unsigned idx_shards;
    int (*idx_add)(dd_backend *b, unsigned shard, uint8_t *recs, size_t n, bool replace);
    int (*idx_load)(dd_backend *b, dd_idx_load_fn fn, void *ctx);
    /*
     * Optional (NULL: open + map).  A read-only view of the first len bytes
     * of `name`, bytes that never change while it exists (a sealed pack);
     * tag (the store's uuid) tells apart stores that used the same name.
     * The backend may serve it from a local copy (*how gets DD_VIEW_LOCAL;
     * such a copy can be damaged: DD_MAP_FRESH then reads the object itself
     * and replaces the copy; DD_MAP_LOCAL only maps a local copy, else
     * VMT_ENOENT).  Released with unmap.
     */
    int (*map_sealed)(dd_backend *b, const char *name, size_t len, const uint8_t tag[16],
                      int mode, uint8_t **out, unsigned *how);
    /* Optional: local copies written and removed (the bound) by this handle. */
    void (*cache_counters)(dd_backend *b, uint64_t *fills, uint64_t *evicted);
    /*
     * Optional (NULL: open + pread + close).  Reads up to len bytes of
     * `name` at off with as few requests as the backend can (RADOS: one
     * read, no stat: the caller knows the length from the index); *got <
     * len only at the object's end; VMT_ENOENT when it does not exist.
     * For a lazy restore's faults (it must not wait behind whole-object
     * fetches of the same handle) and for dd_backend_get (a ref read is
     * then one round trip on RADOS, not a stat and a read).  Thread-safe.
     */
    int (*read_at)(dd_backend *b, const char *name, void *buf, size_t len, uint64_t off,
                   size_t *got);
    /* Optional: the store will read packs through this handle (any open but
     * a refs-only one): RADOS connects its fetch connection behind the
     * caller, so that a refs-only handle never opens a second one. */
    void (*reads_ahead)(dd_backend *b);
    /* Optional: the requests this handle sent (all zero when absent). */
    void (*io_counters)(dd_backend *b, dd_bio_counters *out);
} dd_backend_ops;

/* map_sealed modes. */
#define DD_MAP_ANY 0   /* a local copy, else the object (kept as a local copy) */
#define DD_MAP_FRESH 1 /* the object itself, replacing any local copy */
#define DD_MAP_LOCAL 2 /* a local copy only */

/* How map_sealed served a view (flags). */
#define DD_VIEW_FETCHED 1u /* read from the backend's objects */
#define DD_VIEW_LOCAL 2u   /* mapped from a local copy */

/* Every backend handle starts with this. */
struct dd_backend {
    const dd_backend_ops *ops;
    const char *where;     /* the location as the caller gave it (owned by the backend) */
    uint64_t pack_max;     /* largest pack-size its objects can hold */
    uint64_t pack_default; /* what init uses in place of VMT_STORE_PACK_DEFAULT */
    bool lazy_views;       /* map sealed packs at their first read, not at open
                              (a RADOS view costs reading the whole pack) */
    uint64_t view_max;     /* lazy_views: bytes of views of sealed packs the store
                              keeps mapped (least recently used dropped); 0: no bound */
};

/*
 * Opens the backend for a store location: "rados://POOL[/NS]?conf=..&id=.."
 * selects RADOS (VMT_EUNSUPPORTED when this build has no librados), anything
 * else is a local directory.  `create`: the location need not hold a store
 * yet (init).  *out is released with ops->destroy.
 */
int dd_backend_open(const char *where, bool create, dd_backend **out);

/* Whether a location names a RADOS pool (without opening anything). */
bool dd_backend_is_rados(const char *where);

int dd_be_dir_open(const char *dir, bool create, dd_backend **out);
int dd_be_rados_open(const char *url, bool create, dd_backend **out);

/* Writes name durably as a whole: open REPLACE, write, publish. */
int dd_backend_put(dd_backend *b, const char *name, const void *data, size_t len);
/* Reads up to len bytes of `name` at off: ops->read_at, else open +
 * pread + close.  *got < len only at the object's end; VMT_ENOENT when it
 * does not exist. */
int dd_backend_read_at(dd_backend *b, const char *name, void *buf, size_t len, uint64_t off,
                       size_t *got);
/* Reads a whole object of at most cap bytes into a new buffer (free());
 * VMT_ENOENT when absent, VMT_ECORRUPT when larger than cap. */
int dd_backend_get(dd_backend *b, const char *name, size_t cap, uint8_t **data, size_t *len);

#endif
