/*
 * vmtree page store (dedup/): a content-addressed, compressed, crash-safe
 * store of objects (4 KiB guest pages, map nodes, state blobs, snapshot
 * records) in a directory.  docs/store.md describes the on-disk format, the
 * fsync order, the lock, crash recovery and the GC protocol.
 *
 * - An object's id is the XXH3-128 of its uncompressed content (canonical,
 *   big-endian bytes, as `xxh128sum` prints it); its type is recorded beside
 *   it.  Content of exactly 4096 zero bytes (the zero page) is never stored:
 *   its id is vmt_id_zero_page() and every call treats it as present.
 * - Objects are deduplicated by id whatever their type: putting content that
 *   is already stored under another type returns the existing id.
 * - Puts become durable at vmt_store_commit(); a crash loses at most what
 *   was put since the last commit, and the next open says what it dropped.
 * - One writer process at a time (a lock in the directory); any number of
 *   read-only handles, which see the store as it was committed when they
 *   opened.
 *
 * Threading: a vmt_store handle may be used from several threads at once.
 * Calls that change the store (put, commit, gc, train_dict) are serialized
 * by an internal mutex; get, has, stat and get_stats run concurrently with
 * each other and with a put (an object being put by another thread may be
 * reported absent until that put returns).  The store runs hashing,
 * compression and decompression on its own worker threads.
 *
 * Errors: every fallible call returns 0 or a negative VMT_E* code, with a
 * message readable through vmt_error_last() on the calling thread.
 */
#ifndef VMTREE_STORE_H
#define VMTREE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/util.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VMT_STORE_PAGE_SIZE 4096u
/* Largest object the store accepts (bytes of uncompressed content). */
#define VMT_STORE_OBJECT_MAX (16u << 20)
/* Limits of vmt_store_config.pack_size. */
#define VMT_STORE_PACK_MIN (1ull << 20)
#define VMT_STORE_PACK_MAX (1ull << 30)
#define VMT_STORE_PACK_DEFAULT (128ull << 20)
/* Environment variable naming the default store directory. */
#define VMT_STORE_ENV "VMTREE_STORE"

/* The store handle (opaque). */
typedef struct vmt_store vmt_store;

/* ---- ids --------------------------------------------------------------- */

/* An object id: the 128-bit XXH3 of the content, canonical byte order. */
typedef struct vmt_id {
    uint8_t b[16];
} vmt_id;

#define VMT_ID_HEX_LEN 32

/* Computes the id of `len` bytes at `data`.  Pure; thread-safe. */
void vmt_id_of(const void *data, size_t len, vmt_id *out);

/* The reserved id of the 4096-byte zero page (= vmt_id_of of it). */
vmt_id vmt_id_zero_page(void);

/* True when `id` is the zero page's id.  Pure; thread-safe. */
bool vmt_id_is_zero_page(const vmt_id *id);

/* True when two ids are equal.  Pure; thread-safe. */
bool vmt_id_equal(const vmt_id *a, const vmt_id *b);

/* Writes 32 lowercase hex digits and a NUL into `out`.  Thread-safe. */
void vmt_id_to_hex(const vmt_id *id, char out[VMT_ID_HEX_LEN + 1]);

/* Parses exactly 32 hex digits (no prefix); VMT_EINVAL otherwise. */
int vmt_id_from_hex(const char *s, vmt_id *out);

/* ---- object types and codecs ------------------------------------------ */

typedef enum vmt_obj_type {
    VMT_OBJ_PAGE = 1,     /* 4 KiB of guest memory */
    VMT_OBJ_MAPNODE = 2,  /* a node of a memory map (format below) */
    VMT_OBJ_BLOB = 3,     /* a state blob */
    VMT_OBJ_SNAPSHOT = 4, /* a snapshot record */
} vmt_obj_type;
#define VMT_OBJ_TYPE_MAX 4

/* How an object's bytes are stored (chosen per object; see docs/store.md). */
typedef enum vmt_codec {
    VMT_CODEC_RAW = 0,       /* stored as is (also chosen where compression does not pay) */
    VMT_CODEC_LZ4 = 1,       /* LZ4 block, fast default */
    VMT_CODEC_ZSTD = 2,      /* zstd frame at a level */
    VMT_CODEC_ZSTD_DICT = 3, /* zstd with the store's newest trained dictionary */
} vmt_codec;
#define VMT_CODEC_COUNT 4

/* "raw", "lz4", "zstd", "zstd-dict"; "?" for anything else. */
const char *vmt_codec_name(int codec);
/* Parses a codec name as printed by vmt_codec_name; VMT_EINVAL otherwise. */
int vmt_codec_parse(const char *name, vmt_codec *out);

/* ---- creating a store --------------------------------------------------- */

/* Settings recorded in the store when it is created. */
typedef struct vmt_store_config {
    uint64_t pack_size;    /* packs are sealed at this size; [PACK_MIN, PACK_MAX].  A RADOS
                              store takes 16 MiB for PACK_DEFAULT and refuses more
                              than 64 MiB (docs/store-backends.md) */
    vmt_codec codec;       /* default codec for puts (default LZ4) */
    int zstd_level;        /* 1..19 (default 6: see docs/store.md) */
    int lz4_accel;         /* LZ4 acceleration 1..64 (default 1) */
    bool compare_on_dedup; /* byte-compare every dedup hit with the stored copy */
} vmt_store_config;

/* Fills `cfg` with the defaults above. */
void vmt_store_config_init(vmt_store_config *cfg);

/*
 * Creates an empty store at `dir` (created with its parents if missing; an
 * existing directory must be empty).  `cfg` may be NULL for the defaults.
 * `dir` may instead be rados://POOL[/NAMESPACE][?conf=PATH][&id=CLIENT]:
 * the store then lives in that existing pool and namespace, which must hold
 * no objects (docs/store-backends.md); builds without librados refuse it
 * with VMT_EUNSUPPORTED.  The same locations work for every function taking
 * `dir` below.  Returns VMT_EEXIST when `dir` already holds a store or other
 * files, VMT_EINVAL for a bad setting, VMT_EIO otherwise.  Durable on return.
 */
int vmt_store_init(const char *dir, const vmt_store_config *cfg);

/*
 * Deletes the store at `dir` (a directory or a rados:// location) and
 * everything in it: STORE first, so a removal cut short leaves no store,
 * then packs, dictionaries, the index; then the directory itself (which
 * must hold nothing else).  Takes the writer lock: VMT_EBUSY while a writer
 * has the store open; VMT_ENOENT when there is no store.  Open read-only
 * handles elsewhere fail their later reads.
 */
int vmt_store_remove(const char *dir);

/*
 * Writes the default store directory into buf: $VMTREE_STORE if set, else
 * $XDG_DATA_HOME/vmtree/store, else $HOME/.local/share/vmtree/store.
 * VMT_ERANGE when it does not fit, VMT_ENOENT when none can be found.
 */
int vmt_store_default_dir(char *buf, size_t cap);

/* ---- opening --------------------------------------------------------- */

typedef struct vmt_store_open_opts {
    bool read_only;          /* no lock, no writes; sees the last commit */
    unsigned threads;        /* worker threads incl. the caller; 0 = online cores */
    int codec;               /* -1: the store's; else a vmt_codec for this handle */
    int zstd_level;          /* 0: the store's */
    int lz4_accel;           /* 0: the store's */
    int compare_on_dedup;    /* -1: the store's; 0 off; 1 on */
    bool verify_reads;       /* rehash every object read against its id */
    uint64_t index_interval; /* rewrite the index file at a commit once this many
                                pack bytes are not in it; 0 = 512 MiB */
    bool refs_only;          /* with read_only: the refs alone (vmt_store_ref_*);
                                see vmt_store_open */
} vmt_store_open_opts;

/* Fills `o` with the defaults (read-write, store settings, all cores). */
void vmt_store_open_opts_init(vmt_store_open_opts *o);

/*
 * Opens the store at `dir` (`opts` may be NULL for defaults).  Recovers to
 * the last commit: rebuilds a missing or damaged index from the packs,
 * drops records written after the last commit (a writer truncates them) and
 * reports it through vmt_store_recovery_info() and a warning in the log.
 * Returns VMT_ENOENT when there is no store, VMT_EBUSY when another process
 * holds the writer lock (the message names its PID), VMT_ECORRUPT for an
 * unreadable store file, VMT_EIO otherwise.  *out is owned by the caller,
 * released with vmt_store_close.
 *
 * With `refs_only` (and `read_only`, else VMT_EINVAL) the handle serves
 * refs only, for a catalog that needs nothing else: it checks the STORE
 * file and loads no dictionaries, packs or index (on RADOS: no listing of
 * the packs and none of the 256 index shards).  Objects read through it
 * are absent (VMT_ENOENT); vmt_store_get_stats and vmt_store_verify fail
 * with VMT_EINVAL; it takes no lock and writes nothing, as any reader.
 */
int vmt_store_open(vmt_store **out, const char *dir, const vmt_store_open_opts *opts);

/*
 * Closes the handle, waiting for its worker threads; puts not committed are
 * dropped (the next open truncates them).  A writer saves the index first
 * so the next open is fast.  Accepts NULL.  Not concurrent with other calls
 * on the same handle.
 */
void vmt_store_close(vmt_store *s);

/* What opening had to repair. */
typedef struct vmt_store_recovery {
    bool index_rebuilt;        /* the index was missing or damaged */
    uint64_t records_replayed; /* committed records found after the index */
    uint64_t records_dropped;  /* records after the last commit, discarded */
    uint64_t bytes_dropped;    /* pack bytes after the last commit */
    uint64_t records_damaged;  /* committed records that fail their checksum */
    uint64_t packs_removed;    /* empty or orphaned pack files deleted */
} vmt_store_recovery;

/* Copies what the last open repaired into *out.  Thread-safe. */
void vmt_store_recovery_info(const vmt_store *s, vmt_store_recovery *out);

/* The store's directory (owned by the handle). */
const char *vmt_store_dir(const vmt_store *s);

/* ---- putting ---------------------------------------------------------- */

/* Per-call codec choice; fields at -1/0 take the handle's setting. */
typedef struct vmt_store_put_opts {
    int codec;      /* -1 or a vmt_codec */
    int zstd_level; /* 0 or 1..19 */
    int lz4_accel;  /* 0 or 1..64 */
} vmt_store_put_opts;

/* Fills `o` with "use the handle's settings". */
void vmt_store_put_opts_init(vmt_store_put_opts *o);

/* One object to put: `len` bytes at `data` (1..VMT_STORE_OBJECT_MAX). */
typedef struct vmt_store_obj {
    const void *data;
    size_t len;
    vmt_obj_type type;
} vmt_store_obj;

/*
 * Puts n objects.  ids[i] receives each id; is_new (may be NULL) is set true
 * for the objects this call wrote (neither stored before nor earlier in the
 * batch).  Zero pages are never written.  The data is only read during the
 * call.  With compare_on_dedup, a hit whose bytes differ from the stored
 * copy fails with VMT_ECORRUPT (a hash collision).  Returns VMT_EINVAL for a
 * bad object, VMT_EIO when writing fails (the handle then refuses further
 * writes until reopened); ids already returned may not have been written.
 * Not durable until vmt_store_commit.  Read-only handles: VMT_EINVAL.
 */
int vmt_store_put_many(vmt_store *s, const vmt_store_obj *objs, size_t n, vmt_id *ids, bool *is_new,
                       const vmt_store_put_opts *opts);

/* As vmt_store_put_many for n pages of VMT_STORE_PAGE_SIZE bytes each. */
int vmt_store_put_pages(vmt_store *s, const void *const *pages, size_t n, vmt_id *ids, bool *is_new,
                        const vmt_store_put_opts *opts);

/*
 * Makes everything put so far durable (fsync order: docs/store.md).  Once it
 * returns 0, those objects survive a crash.  Cheap when nothing was put.
 */
int vmt_store_commit(vmt_store *s);

/* ---- getting ---------------------------------------------------------- */

/* One object to read: the caller fills id, buf and cap. */
typedef struct vmt_store_get_item {
    vmt_id id;         /* in */
    void *buf;         /* in: destination, owned by the caller */
    size_t cap;        /* in: bytes available at buf */
    size_t len;        /* out: the object's length (also when cap is short) */
    vmt_obj_type type; /* out */
    int rc;            /* out: 0, VMT_ENOENT, VMT_ECORRUPT, or VMT_ERANGE (cap short) */
} vmt_store_get_item;

/*
 * Reads n objects into the callers' buffers, checking each stored record's
 * checksums (and rehashing with verify_reads).  Returns 0 when every item
 * succeeded, else the first failing item's rc with its message; every item's
 * own rc is set.  A damaged object is never copied out.
 */
int vmt_store_get_many(vmt_store *s, vmt_store_get_item *items, size_t n);

/*
 * Reads n pages: dst[i] receives VMT_STORE_PAGE_SIZE bytes of ids[i] (zeros
 * for the zero page).  Returns 0 or the first error (VMT_ENOENT,
 * VMT_ECORRUPT, VMT_ERANGE when an object is not 4096 bytes).
 */
int vmt_store_get_pages(vmt_store *s, const vmt_id *ids, size_t n, void *const *dst);

/*
 * Reads one object of any size into a new buffer (*data, caller frees with
 * free()); *len and *type (may be NULL) describe it.
 */
int vmt_store_get(vmt_store *s, const vmt_id *id, void **data, size_t *len, vmt_obj_type *type);

/* present[i] = whether ids[i] is stored (the zero page always is). */
int vmt_store_has_many(vmt_store *s, const vmt_id *ids, size_t n, bool *present);

/* Where and how one object is stored. */
typedef struct vmt_store_objinfo {
    vmt_obj_type type;
    vmt_codec codec;
    uint32_t raw_len;    /* content bytes */
    uint32_t stored_len; /* payload bytes in the pack (without the record header) */
    uint32_t pack;       /* pack number */
    uint64_t offset;     /* record offset in the pack */
} vmt_store_objinfo;

/* Describes one object; VMT_ENOENT when absent (or the zero page). */
int vmt_store_stat(vmt_store *s, const vmt_id *id, vmt_store_objinfo *out);

/* ---- refs ---------------------------------------------------------------- */

/* Largest value of a ref, bytes. */
#define VMT_STORE_REF_MAX 4096u

/*
 * Reads ref `name` (1..128 of letters, digits, -_.@) into buf: *len gets its
 * length, *version (may be NULL) its version (1 for the first value, +1 per
 * update).
 * VMT_ENOENT when there is none, VMT_ERANGE when cap is short (*len says
 * how much is needed).  Any handle, read-only too; thread-safe.
 */
int vmt_store_ref_get(vmt_store *s, const char *name, void *buf, size_t cap, size_t *len,
                      uint64_t *version);

/*
 * Sets ref `name` to len bytes of data (at most VMT_STORE_REF_MAX) if its
 * version is still `expect` (0: the ref must not exist yet): compare-and-
 * swap, atomic and durable, across processes and hosts (on RADOS, one
 * compound operation).  *version (may be NULL) gets the new version.  The
 * loser of a race gets VMT_EBUSY ("changed under you") and should read the
 * ref again.  Refs live beside the objects (refs/NAME); gc does not treat
 * them as roots (the caller passes its roots).  Any handle, read-only too.
 */
int vmt_store_ref_set(vmt_store *s, const char *name, uint64_t expect, const void *data,
                      size_t len, uint64_t *version);

/* Called by vmt_store_ref_list for each ref name (valid during the call);
 * non-zero stops the listing, which then returns that value. */
typedef int (*vmt_store_ref_list_fn)(void *ctx, const char *name);

/*
 * Calls fn(ctx, name) for every ref whose name starts with `prefix` ("" for
 * all), in no particular order.  Names only: read each with
 * vmt_store_ref_get (a ref may be set while the listing runs, and one set
 * after it began may or may not be listed).  A directory store reads
 * refs/; a RADOS store lists its namespace's objects, so the cost grows
 * with the objects of the store (packs, index shards), not just the refs.
 * Any handle, read-only too.
 */
int vmt_store_ref_list(vmt_store *s, const char *prefix, vmt_store_ref_list_fn fn, void *ctx);

/* Called when a watched ref changed (or its watch broke: read it again). */
typedef void (*vmt_store_ref_fn)(void *ctx, const char *name);

/* A watch of one ref (vmt_store_ref_watch_start). */
typedef struct vmt_store_ref_watch vmt_store_ref_watch;

/*
 * Calls fn(ctx, name) from a backend thread each time ref `name` is set,
 * by any process on any host, so a host learns of new heads and tags
 * without polling; fn must be quick and thread-safe and should read the
 * ref.  The ref must exist (VMT_ENOENT).  RADOS stores only: a directory
 * store answers VMT_EUNSUPPORTED.  *out is stopped with
 * vmt_store_ref_watch_stop before the store is closed.
 */
int vmt_store_ref_watch_start(vmt_store *s, const char *name, vmt_store_ref_fn fn, void *ctx,
                              vmt_store_ref_watch **out);

/* Stops a watch; no call of its fn runs once this returns.  Accepts NULL. */
void vmt_store_ref_watch_stop(vmt_store_ref_watch *w);

/*
 * Wakes every watcher of ref `name` (on any host) without changing the ref:
 * for a change its watchers care about that is written elsewhere (the
 * catalog wakes the watchers of cat.format whenever it changes).  Waits
 * at most op_timeout plus the watchers' acknowledgement time (2 s); a
 * watcher that does not answer only learns late.  RADOS stores only
 * (VMT_EUNSUPPORTED elsewhere).
 */
int vmt_store_ref_notify(vmt_store *s, const char *name);

/* ---- dictionaries ------------------------------------------------------ */

/* Dictionary training settings. */
typedef struct vmt_store_dict_opts {
    size_t dict_size;   /* bytes (default 112 KiB; at most 1 MiB) */
    size_t max_samples; /* pages sampled from the store (default 16384) */
} vmt_store_dict_opts;

/* Fills `o` with the defaults above. */
void vmt_store_dict_opts_init(vmt_store_dict_opts *o);

/*
 * Trains a zstd dictionary from pages already in the store, saves it durably
 * as the next version (docs/store.md) and makes it the one VMT_CODEC_ZSTD_DICT
 * puts use.  Older versions stay, since records name the one they need.
 * *version (may be NULL) receives the new version.  VMT_EINVAL when the store
 * holds too few pages.  Writers only.
 */
int vmt_store_train_dict(vmt_store *s, const vmt_store_dict_opts *o, unsigned *version);

/* ---- map nodes ---------------------------------------------------------- */

/*
 * The map-node object format, which GC walks.  All fields little-endian:
 *   u32 magic VMT_MAPNODE_MAGIC, u8 version (1), u8 level, u16 zero,
 *   u32 count, then count entries of { u32 slot, u8 child[16] }
 * with strictly increasing slots.  Children of a level-0 node are pages; of
 * a level-n node (n >= 1), map nodes of level n-1.  A child equal to the
 * zero page id is allowed and never looked up.
 */
#define VMT_MAPNODE_MAGIC 0x4d544d56u /* "VMTM" */
#define VMT_MAPNODE_HDR 12u
#define VMT_MAPNODE_ENTRY 20u
#define VMT_MAPNODE_MAX_ENTRIES 65536u
#define VMT_MAPNODE_MAX_LEVEL 15u

/* One child of a map node: its slot (index within the node's range) and id. */
typedef struct vmt_mapnode_entry {
    uint32_t slot;
    vmt_id child;
} vmt_mapnode_entry;

/* Bytes needed for a node with `count` entries. */
size_t vmt_store_mapnode_size(size_t count);

/*
 * Encodes a node into buf (cap bytes); *len receives its size.  VMT_EINVAL
 * for unsorted slots, a level above the maximum or too many entries,
 * VMT_ERANGE when cap is short.  Pure; thread-safe.
 */
int vmt_store_mapnode_encode(unsigned level, const vmt_mapnode_entry *entries, size_t count,
                             void *buf, size_t cap, size_t *len);

/*
 * Checks a node's layout and returns its level and entry count;
 * VMT_ECORRUPT when it is not a valid node.  Pure; thread-safe.
 */
int vmt_store_mapnode_parse(const void *buf, size_t len, unsigned *level, size_t *count);

/* Entry i of a node that vmt_store_mapnode_parse accepted (i < count). */
void vmt_store_mapnode_entry_at(const void *buf, size_t i, vmt_mapnode_entry *out);

/* ---- garbage collection ------------------------------------------------ */

/* Called by a children callback for each id the object refers to. */
typedef void (*vmt_store_emit_fn)(void *emit_ctx, const vmt_id *child);

/*
 * Lists the children of a blob or snapshot record (types GC cannot parse):
 * calls emit for each; returns 0 or an error that aborts GC.  `data` is
 * valid only during the call.
 */
typedef int (*vmt_store_children_fn)(void *ctx, vmt_obj_type type, const void *data, size_t len,
                                     vmt_store_emit_fn emit, void *emit_ctx);

/* Progress of long work: phase name, units done of total (0 if unknown). */
typedef void (*vmt_store_progress_fn)(void *ctx, const char *phase, uint64_t done, uint64_t total);

/* GC settings; callbacks run on the calling thread, contexts owned by the caller. */
typedef struct vmt_store_gc_opts {
    double min_live;                /* rewrite packs whose live fraction is below (0.5) */
    vmt_store_children_fn children; /* NULL: blobs and snapshots are leaves */
    void *children_ctx;
    vmt_store_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    bool dry_run; /* mark and report, change nothing */
} vmt_store_gc_opts;

/* Fills `o` with the defaults (min_live 0.5, no callbacks, not a dry run). */
void vmt_store_gc_opts_init(vmt_store_gc_opts *o);

/* What a gc found and did. */
typedef struct vmt_store_gc_stats {
    uint64_t live_objects, live_bytes; /* reachable objects; their record bytes */
    uint64_t dead_objects;             /* indexed but unreachable */
    uint64_t missing_objects;          /* referenced but not in the store */
    uint64_t packs_rewritten;          /* packs whose live records were copied */
    uint64_t packs_deleted;            /* pack files removed (incl. rewritten) */
    uint64_t bytes_copied;             /* record bytes copied to new packs */
    uint64_t disk_before, disk_after;  /* bytes of pack files */
} vmt_store_gc_stats;

/*
 * Mark and sweep: marks everything reachable from roots (through map nodes
 * and the children callback), then rewrites the live records of packs whose
 * live fraction is below min_live into new packs and deletes those packs,
 * crash-safely (old packs go only after the new packs and the index are
 * durable).  Commits pending puts first.  Aborts with VMT_ECORRUPT, deleting
 * nothing, when a reachable object cannot be read.  Missing objects are
 * counted, not fatal.  `o` and `out` may be NULL.  Writers only.
 */
int vmt_store_gc(vmt_store *s, const vmt_id *roots, size_t nroots, const vmt_store_gc_opts *o,
                 vmt_store_gc_stats *out);

/* ---- verify --------------------------------------------------------- */

/* One damaged record or object found by verify. */
typedef struct vmt_store_damage {
    uint32_t pack;   /* pack number */
    uint64_t offset; /* byte offset in the pack (0 for the pack itself) */
    bool id_known;   /* whether id is meaningful */
    vmt_id id;
    const char *what; /* description, valid during the callback */
} vmt_store_damage;

/* Receives each damage found; `d` and its strings are valid during the call. */
typedef void (*vmt_store_damage_fn)(void *ctx, const vmt_store_damage *d);

/* verify settings; callbacks run on the calling thread. */
typedef struct vmt_store_verify_opts {
    vmt_store_damage_fn damage; /* may be NULL */
    void *damage_ctx;
    vmt_store_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} vmt_store_verify_opts;

/* What verify read and found. */
typedef struct vmt_store_verify_stats {
    uint64_t packs, records, objects_ok, damaged, bytes;
} vmt_store_verify_stats;

/*
 * Reads every committed record of every pack, checks its checksums,
 * decompresses and rehashes it against its id, and checks that every index
 * entry points at a good record.  Reports each damage through o->damage.
 * Returns 0 when all is well, VMT_ECORRUPT when anything is damaged.
 * `o` and `out` may be NULL.
 */
int vmt_store_verify(vmt_store *s, const vmt_store_verify_opts *o, vmt_store_verify_stats *out);

/* ---- stats --------------------------------------------------------- */

/* Objects, content bytes and payload bytes stored with one codec. */
typedef struct vmt_store_codec_stats {
    uint64_t objects, logical_bytes, stored_bytes;
} vmt_store_codec_stats;

/* A snapshot of the store's figures (vmt_store_get_stats). */
typedef struct vmt_store_stats {
    uint64_t objects;                               /* indexed objects */
    uint64_t objects_by_type[VMT_OBJ_TYPE_MAX + 1]; /* index = vmt_obj_type */
    uint64_t logical_bytes;                         /* their content bytes */
    uint64_t stored_bytes;                          /* their record bytes (headers incl.) */
    uint64_t disk_bytes;                            /* bytes of pack files */
    uint64_t packs;
    vmt_store_codec_stats codec[VMT_CODEC_COUNT]; /* payload bytes per codec */
    /* Lifetime counters as of the last commit (lost puts not counted). */
    uint64_t put_objects, put_bytes; /* everything ever put, zero pages incl. */
    uint64_t zero_pages;             /* zero pages put */
    uint64_t dedup_hits;             /* puts of content already stored */
    uint64_t new_objects, new_bytes; /* puts that wrote a record; their content bytes */
    unsigned dict_version;           /* newest dictionary, 0 if none */
    /* Ratios: logical/stored, and put_bytes/new_bytes (1 when empty). */
    double compression_ratio, dedup_ratio;
    /* This handle's reads of whole packs on a backend that fetches them
     * (RADOS; all zero on a directory store; docs/store-backends.md): */
    uint64_t pack_fetches;       /* packs read from the backend's objects */
    uint64_t pack_cache_hits;    /* packs mapped from the local read cache instead */
    uint64_t pack_cache_fills;   /* packs written into the read cache */
    uint64_t pack_cache_evicted; /* cache files removed to keep the cache under its bound */
    uint64_t pack_cache_damaged; /* cached copies found damaged and fetched again */
    uint64_t pack_views_dropped; /* views unmapped to keep memory under the bound */
    uint64_t pack_view_bytes;    /* bytes of packs' views that can be dropped, mapped now */
    uint64_t pack_ranged_reads;  /* objects of small reads read alone while their pack was
                                    being fetched (a lazy restore's first faults) */
    /* Requests this handle sent to the backend (RADOS; all zero on a
     * directory store): */
    uint64_t backend_reads;       /* positioned reads (a record read alone: one each) */
    uint64_t backend_fetch_reads; /* reads of pieces of whole-pack fetches */
    uint64_t backend_stats;       /* stats (the size of an object opened for reading) */
    uint64_t backend_fetch_peak;  /* most bytes of whole-pack fetch reads in flight at once */
} vmt_store_stats;

/* Fills *out.  Thread-safe. */
int vmt_store_get_stats(vmt_store *s, vmt_store_stats *out);

#ifdef __cplusplus
}
#endif
#endif
