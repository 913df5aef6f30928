/*
 * vmtree snapshot/: snapshots of running VMs as a Merkle tree over the page
 * store (DESIGN.md §1), the catalog of refs, and restore.
 *
 *   memory map  pfn (RAM page index) -> page id, stored as a radix tree of
 *               map nodes (the dedup/ map-node format).  A snapshot that
 *               changed k pages writes only the nodes on their paths.
 *   record      { parents, map root, state blob, VM config, time, message }
 *               stored as a VMT_OBJ_SNAPSHOT object through proto/; its id
 *               names the snapshot.
 *   catalog     refs (each VM's HEAD, tags), the VMs that run, and an
 *               index of snapshots (parent, time, message) for log/resolve:
 *               a SQLite database in a directory store, or the store's own
 *               refs in a RADOS store (shared by every host).  Crash-safe,
 *               atomic updates.
 *
 * Threading: handles are not shared between threads unless stated.  Errors:
 * 0 or a negative VMT_E* with vmt_error_last().
 */
#ifndef VMTREE_SNAPSHOT_H
#define VMTREE_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/store.h"
#include "vmtree/util.h"
#include "vmtree/vmm.h" /* VMT_BOOT_CMDLINE_MAX, state structs via proto/ */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- memory maps ------------------------------------------------------- */

/* Pages per leaf node and children per inner node. */
#define VMT_MAP_FANOUT 256u
/* Most pages a map may have (the VMM's largest RAM). */
#define VMT_MAP_MAX_PAGES (VMT_VM_MAX_MEM / VMT_PAGE_SIZE)

/*
 * Layout (docs/snapshot.md): a map of n pages has depth d >= 1 levels, the
 * smallest with 256^d >= n.  Leaf (level 0) node i holds the pages
 * [256 i, 256 i + 256); a level-l node i holds the level l-1 nodes
 * [256 i, 256 i + 256); the root is the one node of level d-1.  Zero pages
 * and all-zero subtrees are left out of their parent (sparse entries), so
 * an all-zero map is a single empty root node of level d-1, which is
 * stored like any other node.
 */

typedef struct vmt_map vmt_map;

/*
 * An all-zero map of `npages` pages (every page the zero page); *out is the
 * caller's, released with vmt_map_free.  VMT_EINVAL for 0 pages, VMT_ERANGE
 * beyond VMT_MAP_MAX_PAGES.  In memory a map costs 16 bytes a page.
 * A map is not thread-safe; concurrent vmt_map_get calls are fine.
 */
int vmt_map_new(vmt_map **out, uint64_t npages);
/* Reads the tree rooted at `root` (npages pages), checking every node (type,
 * level, slots in range and increasing).  VMT_ECORRUPT for a malformed node,
 * VMT_ENOENT for a missing one; *out as for vmt_map_new. */
int vmt_map_load(vmt_map **out, vmt_store *s, const vmt_id *root, uint64_t npages);
/* Frees the map (accepts NULL). */
void vmt_map_free(vmt_map *m);
/* The number of pages the map covers. */
uint64_t vmt_map_pages(const vmt_map *m);
/* The id of page pfn (the zero-page id for zero pages, and beyond the map);
 * the pointer is the map's, valid until the next vmt_map_set or free. */
const vmt_id *vmt_map_get(const vmt_map *m, uint64_t pfn);
/* Sets page pfn (the zero-page id makes it a zero page); marks the path to
 * it for rewriting.  A pfn beyond the map is ignored (and logged). */
void vmt_map_set(vmt_map *m, uint64_t pfn, const vmt_id *id);
/*
 * Writes the nodes changed since load/new/the last write and returns the root
 * id; unchanged subtrees keep their ids (structural sharing).  *new_nodes
 * and *node_bytes (may be NULL) count what was put.  Not durable until the
 * store commits.
 */
int vmt_map_write(vmt_map *m, vmt_store *s, vmt_id *root, uint64_t *new_nodes,
                  uint64_t *node_bytes);
/* Number of non-zero pages. */
uint64_t vmt_map_nonzero(const vmt_map *m);

/* Called for each page whose id differs (a zero page: the zero-page id);
 * the ids are valid during the call.  Return non-zero to stop. */
typedef int (*vmt_map_diff_fn)(void *ctx, uint64_t pfn, const vmt_id *a, const vmt_id *b);
/*
 * Walks two trees of the same size, descending only into subtrees whose ids
 * differ, calling fn for each differing page in pfn order.  *nodes_read
 * (may be NULL) counts the nodes it had to read.  Every node read is
 * checked as by vmt_map_load (VMT_ECORRUPT, VMT_ENOENT).  Returns
 * VMT_ECANCELED when fn stopped it.
 */
int vmt_map_diff(vmt_store *s, const vmt_id *root_a, const vmt_id *root_b, uint64_t npages,
                 vmt_map_diff_fn fn, void *ctx, uint64_t *nodes_read);

/* ---- snapshot records -------------------------------------------------- */

#define VMT_SNAP_MAX_PARENTS 2u
#define VMT_SNAP_NAME_MAX 64u /* VM names, tags: [A-Za-z0-9._-], 1..63 bytes */
#define VMT_SNAP_MESSAGE_MAX 4096u
#define VMT_SNAP_PATH_MAX 1024u

typedef struct vmt_snap_record {
    uint32_t nparents;
    vmt_id parents[VMT_SNAP_MAX_PARENTS];
    vmt_id map_root;
    vmt_id state;      /* the state blob (proto/) */
    uint64_t mem_size; /* VM config */
    uint32_t vcpus;
    bool irqchip;
    char image[VMT_SNAP_PATH_MAX]; /* guest image it was booted from */
    char cmdline[VMT_BOOT_CMDLINE_MAX];
    char vm_name[VMT_SNAP_NAME_MAX]; /* the VM it was taken from */
    char message[VMT_SNAP_MESSAGE_MAX];
    uint64_t time_ns; /* wall clock, ns since the epoch */
    uint64_t nonzero_pages;
} vmt_snap_record;

/*
 * Encodes into a new buffer (caller frees with free()); deterministic, so
 * the id of the bytes names the snapshot.  VMT_EINVAL for a record out of
 * range (see proto.h: vmt_snaprec_encode).  The format and its versioning
 * are in docs/snapshot.md.
 */
int vmt_snap_record_encode(const vmt_snap_record *r, uint8_t **out, size_t *len);
/* Decodes a record, checking every length against its cap; *r is fully
 * written.  VMT_ECORRUPT (damaged), VMT_EUNSUPPORTED (newer major format or
 * unknown mandatory feature). */
int vmt_snap_record_decode(const uint8_t *buf, size_t len, vmt_snap_record *r);
/* Reads and decodes the record of snapshot `id` from the store.  VMT_ENOENT
 * when absent, VMT_EINVAL when the object is not a snapshot record. */
int vmt_snap_record_read(vmt_store *s, const vmt_id *id, vmt_snap_record *r);

/* ---- catalog ------------------------------------------------------------ */

typedef struct vmt_catalog vmt_catalog;

/*
 * Opens the catalog of the store at `location`:
 *  - a directory: (creating if needed) DIR/catalog.db, a SQLite database
 *    (docs/snapshot.md: WAL, synchronous=FULL, a busy timeout for other
 *    processes' writes).  VMT_EUNSUPPORTED for a catalog of a newer schema,
 *    VMT_ECORRUPT for a file that is not one, VMT_EIO when it cannot be
 *    opened.
 *  - rados://...: the catalog kept in the store's refs (vmt_store_ref_*,
 *    docs/store-backends.md "The catalog in RADOS"), shared by every host
 *    using the store.  The store must exist (VMT_ENOENT); the handle opens
 *    its own read-only store handle for refs only (no packs, no index:
 *    vmt_store_open_opts.refs_only) and closes it with the catalog.
 *    VMT_EUNSUPPORTED for a catalog written by a newer vmtree.
 * Several processes (and, on RADOS, hosts) may open one catalog; each
 * update is atomic and none is lost to a concurrent one.
 */
int vmt_catalog_open(vmt_catalog **out, const char *location);
/*
 * The same over an open store `s` (borrowed: it must outlive the catalog;
 * a read-only handle does): a directory store's catalog.db, or a RADOS
 * store's refs catalog without opening the store a second time.
 */
int vmt_catalog_open_store(vmt_catalog **out, vmt_store *s);
/* True when the catalog lives in a store several hosts share (rados://):
 * VM registrations then name their host. */
bool vmt_catalog_shared(const vmt_catalog *c);
/* The host this handle registers VMs as (shared catalogs): $VMTREE_HOST if
 * set (letters, digits, '.', '_', '-'; 1..63 bytes), else the hostname.
 * "" for a directory store's catalog (one host).  Owned by the handle. */
const char *vmt_catalog_host(const vmt_catalog *c);
/* Closes the handle (accepts NULL). */
void vmt_catalog_close(vmt_catalog *c);

/* Called from a store thread when a shared catalog changed (or its watch
 * broke): read what you care about again.  Must be quick and thread-safe. */
typedef void (*vmt_catalog_change_fn)(void *ctx);
typedef struct vmt_catalog_watch vmt_catalog_watch;
/*
 * Calls fn(ctx) each time any host changes the shared catalog: a snapshot
 * added or removed, a ref set or deleted, a VM registered or unregistered
 * (every update notifies after it lands), so a host learns of them without
 * polling.  Shared (rados://) catalogs only: a directory store's answers
 * VMT_EUNSUPPORTED.  Stop it with vmt_catalog_watch_stop before closing c.
 */
int vmt_catalog_watch_start(vmt_catalog *c, vmt_catalog_change_fn fn, void *ctx,
                            vmt_catalog_watch **out);
/* No call of its fn runs once this returns.  Accepts NULL. */
void vmt_catalog_watch_stop(vmt_catalog_watch *w);

/* Records a snapshot in the index (after its objects are committed); adding
 * one that is there already does nothing. */
int vmt_catalog_add_snapshot(vmt_catalog *c, const vmt_id *id, const vmt_snap_record *r);
/* Removes it from the index (its objects go at the next gc).  VMT_EBUSY when
 * a VM's HEAD or a tag points at it, naming which. */
int vmt_catalog_remove_snapshot(vmt_catalog *c, const vmt_id *id);

typedef struct vmt_catalog_snap {
    vmt_id id;
    vmt_id parent; /* zero-filled when none */
    bool has_parent;
    bool parent_present; /* the parent is still in the catalog */
    uint64_t time_ns;
    char vm_name[VMT_SNAP_NAME_MAX];
    char message[256]; /* first line, truncated */
} vmt_catalog_snap;

/* Every snapshot in the index, oldest first (*out: caller frees with free()). */
int vmt_catalog_list_snapshots(vmt_catalog *c, vmt_catalog_snap **out, size_t *n);

/* Refs: "vm/NAME/HEAD" and "tag/NAME".  set with expect == NULL overwrites;
 * with expect, fails VMT_EBUSY unless the ref currently equals *expect
 * (zero id: must not exist). */
int vmt_catalog_set_ref(vmt_catalog *c, const char *ref, const vmt_id *id, const vmt_id *expect);
int vmt_catalog_get_ref(vmt_catalog *c, const char *ref, vmt_id *out); /* VMT_ENOENT */
int vmt_catalog_delete_ref(vmt_catalog *c, const char *ref);

/* Longest ref name with its NUL ("vm/" NAME "/HEAD"). */
#define VMT_CATALOG_REF_MAX (VMT_SNAP_NAME_MAX + 16)

typedef struct vmt_catalog_ref {
    char name[VMT_CATALOG_REF_MAX]; /* "tag/T" or "vm/NAME/HEAD" */
    vmt_id id;
} vmt_catalog_ref;

/* Every ref, by name (*out: caller frees with free()). */
int vmt_catalog_list_refs(vmt_catalog *c, vmt_catalog_ref **out, size_t *n);

/* Longest host name with its NUL (VM registrations in a shared catalog). */
#define VMT_CATALOG_HOST_MAX 64

typedef struct vmt_catalog_vm {
    char name[VMT_SNAP_NAME_MAX];
    int64_t pid;                     /* 0 when not running; a process of `host` */
    char host[VMT_CATALOG_HOST_MAX]; /* shared catalogs: the host running it
                                        ("" when registering: this handle's
                                        host); "" in a directory store */
    char socket[VMT_SNAP_PATH_MAX];
    vmt_id head;
    bool has_head;
    char image[VMT_SNAP_PATH_MAX];
    uint64_t mem_size;
    uint32_t vcpus;
} vmt_catalog_vm;

/*
 * Registers a VM name (VMT_EEXIST when another live process holds it:
 * kill(pid, 0) succeeds; a registration left by a dead process is replaced;
 * the same pid may re-register to update its entry).  In a shared catalog
 * a registration by another host counts as live (this host cannot test its
 * process): the message names that host; vm->host "" means this handle's
 * host.  With has_head, the ref vm/NAME/HEAD is set to head (SQLite: in the
 * same transaction; refs catalog: right after the registration, which is
 * what claims the name); without, an existing HEAD is kept.  VMT_EINVAL for
 * a bad name.
 */
int vmt_catalog_register_vm(vmt_catalog *c, const vmt_catalog_vm *vm);
/* True when `vm` (as read from c) runs on this host, so its pid can be
 * tested here: always in a directory store. */
bool vmt_catalog_vm_local(const vmt_catalog *c, const vmt_catalog_vm *vm);
/* A registered VM (VMT_ENOENT); its head is the ref vm/NAME/HEAD. */
int vmt_catalog_get_vm(vmt_catalog *c, const char *name, vmt_catalog_vm *out);
/* Every registered VM by name (*out: caller frees with free()). */
int vmt_catalog_list_vms(vmt_catalog *c, vmt_catalog_vm **out, size_t *n);
/* Forgets a VM's registration (VMT_ENOENT).  Its HEAD ref stays, so its
 * snapshots stay reachable and `NAME` resolves; delete the ref to let gc
 * reclaim them. */
int vmt_catalog_unregister_vm(vmt_catalog *c, const char *name);

/*
 * Resolves a user's name for a snapshot: a full or unique prefix of the hex
 * id (at least 4 digits), a tag, NAME (a VM's HEAD), NAME@HEAD, or
 * relative forms X~N (N-th first parent) and X^ (first parent), which may
 * be chained (X~2^).  A bare word is tried as a VM name, then a tag, then an
 * id prefix.  Prefixes and parents are looked up in the index.
 * VMT_ENOENT for unknown names, VMT_EINVAL for ambiguous prefixes (the
 * message lists the candidates) and malformed names.
 */
int vmt_catalog_resolve(vmt_catalog *c, const char *name, vmt_id *out);

/* Ids the store must keep: every snapshot in the index and every ref, each
 * once (*out: caller frees with free()). */
int vmt_catalog_roots(vmt_catalog *c, vmt_id **out, size_t *n);

/* The GC children callback for the store: a snapshot record's children are
 * its map root and state blob (not its parents, which deletion may drop). */
int vmt_snap_gc_children(void *ctx, vmt_obj_type type, const void *data, size_t len,
                         vmt_store_emit_fn emit, void *emit_ctx);

/* ---- restore into guest RAM ------------------------------------------- */

/*
 * Restoring fills a VM's RAM (a shared mapping of a memfd, as hypervisor-glue
 * provides) from a snapshot's map; the caller creates the VM from the
 * record's config and sets the vCPU/VM state decoded from the record's state
 * blob (proto/).  snapshot/ never drives the VM itself.
 */
typedef enum vmt_restore_mode {
    VMT_RESTORE_EAGER = 0, /* every page in RAM before returning (parallel) */
    VMT_RESTORE_LAZY = 1,  /* userfaultfd: returns at once; pages arrive on fault,
                              a prefetcher loads the rest; zero pages never fetched */
} vmt_restore_mode;

typedef struct vmt_restore vmt_restore;

/* Progress: units done of total (pages). */
typedef void (*vmt_restore_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/*
 * Where a lazy restore reads its map nodes and pages instead of its store
 * (golden images: a snapshot still arriving from another host; snapshot/
 * itself never talks to the network).  Both callbacks block until they can
 * answer and are called from the restore's threads (the fault thread and
 * the prefetchers) concurrently, so they must be thread-safe.
 *   get_nodes  as vmt_store_get_many: fills each item (buf, len, type, rc)
 *              and returns 0 or the first failing item's rc.  The restore
 *              checks every node it gets (layout, level, place).
 *   get_pages  as vmt_store_get_pages: dst[i] receives page ids[i] (never
 *              the zero page's id), already checked against its id.
 * A failure stops the restore (vmt_restore_wait returns it; the vCPU that
 * touched a page it could not get stays blocked until vmt_restore_free).
 */
typedef struct vmt_restore_source {
    int (*get_nodes)(void *ctx, vmt_store_get_item *items, size_t n);
    int (*get_pages)(void *ctx, const vmt_id *ids, size_t n, void *const *dst);
    void *ctx;
} vmt_restore_source;

typedef struct vmt_restore_opts {
    vmt_restore_mode mode;
    unsigned threads; /* eager: decompression threads, lazy: prefetchers; 0 = cores */
    vmt_restore_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    /* Lazy only: read nodes and pages through this (borrowed: it must
     * outlive the restore) rather than the store.  NULL: the store. */
    const vmt_restore_source *source;
    /* Eager only: the RAM mapping is backed by 2 MiB pages (it was given
     * them with vmt_ram_advise_huge): pages are decompressed straight into
     * it, each worker filling whole 2 MiB regions, instead of written with
     * pwrite from a bounce buffer (one fault per 2 MiB, no copy). */
    bool ram_huge;
} vmt_restore_opts;

typedef struct vmt_restore_stats {
    uint64_t pages_total;   /* non-zero pages in the map (lazy: found so far, as the
                               prefetchers read the map's leaves) */
    uint64_t pages_loaded;  /* by the eager load or the prefetcher */
    uint64_t pages_faulted; /* lazy: loaded because a fault asked for them */
    uint64_t zero_faults;   /* lazy: zero pages mapped without any fetch */
    uint64_t ready_ns;      /* until RAM could be used */
    uint64_t complete_ns;   /* until every page was in (0 while loading) */
} vmt_restore_stats;

/*
 * Fills `ram` (`ram_size` bytes, mapped MAP_SHARED from offset 0 of the
 * memfd `ram_fd`) with the pages of `map_root` (ram_size / 4096 pages).
 * Whatever the range held is discarded first (FALLOC_FL_PUNCH_HOLE), so a
 * paused VM may be rolled back in place.  Eager: returns when every page is
 * in (ram_fd may be -1; RAM must then be all zero).  Lazy: reads the map's
 * inner nodes, registers the range with userfaultfd and returns at once; a
 * fault thread serves missing pages (zero pages with UFFDIO_ZEROPAGE, never
 * a store read) and prefetchers load the rest in the background.  Until a
 * page is in, only the mapping sees it (reading the memfd with read() gives
 * zeros).  The store must stay open while the handle lives.  *out is the
 * caller's (vmt_restore_free).  VMT_EUNSUPPORTED when userfaultfd is not
 * available, VMT_ENOENT / VMT_ECORRUPT for a missing or damaged map or page.
 */
int vmt_restore_open(vmt_restore **out, vmt_store *s, const vmt_id *map_root, uint8_t *ram,
                     int ram_fd, uint64_t ram_size, const vmt_restore_opts *o);
/* Waits until every page is in RAM (0 = forever); VMT_ETIMEDOUT, or the
 * error that stopped a lazy restore (a page the store could not give: the
 * thread that touched it stays blocked until vmt_restore_free). */
int vmt_restore_wait(vmt_restore *r, uint64_t timeout_ns);
/* Copies the current figures; thread-safe. */
void vmt_restore_get_stats(vmt_restore *r, vmt_restore_stats *out);
/* Stops the lazy threads (unregistering the range; pages not yet loaded
 * read as zero afterwards, so call vmt_restore_wait first) and frees. */
void vmt_restore_free(vmt_restore *r);

typedef struct vmt_restore_partial_stats {
    uint64_t pages_diff;     /* pages whose ids differ between the two maps */
    uint64_t pages_dirty;    /* pages set in the dirty bitmap */
    uint64_t pages_restored; /* pages rewritten: diff ∪ dirty */
    uint64_t pages_zeroed;   /* of those, zero in the target (holes punched) */
    uint64_t nodes_read;     /* map nodes read: the diff's and the target's leaves */
    uint64_t plan_ns;        /* diffing and reading ids (RAM untouched) */
    uint64_t write_ns;       /* reading the pages and writing RAM */
    bool ram_touched;        /* RAM was changed (after a failure: partly) */
} vmt_restore_partial_stats;

/*
 * Turns RAM that holds the pages of map `from_root` — except the pages set
 * in `dirty` (one bit per page, LSB first; NULL: none), whose content is
 * unknown — into the pages of map `to_root`, rewriting only the pages whose
 * ids differ between the two maps (found by vmt_map_diff, which reads only
 * differing subtrees) and the dirty ones: the cost follows those pages, not
 * the size of RAM or how much of it is populated.  RAM as for
 * vmt_restore_open (memfd mapping; ram_fd -1: written through the mapping);
 * zero pages become holes (FALLOC_FL_PUNCH_HOLE).  Synchronous: pages are
 * read with vmt_store_get_pages (its pool) and written with pwrite.
 *
 * Nothing is written before the whole set is known: VMT_ERANGE with RAM
 * untouched when it holds more than `max_pages` pages (0: no limit), and
 * the map errors of vmt_map_diff (VMT_ENOENT, VMT_ECORRUPT) leave it
 * untouched too.  A failure while writing (a missing page, a write error)
 * sets st->ram_touched: RAM is then partly rewritten.  `st` may be NULL.
 * Not thread-safe against other writers of the same RAM (a lazy restore
 * still filling it, a running vCPU).
 */
int vmt_restore_partial(vmt_store *s, const vmt_id *from_root, const vmt_id *to_root,
                        const uint64_t *dirty, uint8_t *ram, int ram_fd, uint64_t ram_size,
                        uint64_t max_pages, vmt_restore_partial_stats *st);

/* ---- bundles ------------------------------------------------------------ */

/*
 * Writes snapshot `id` (and with_ancestors, its ancestors still in the
 * store) with every object it needs to a self-contained bundle file
 * (docs/bundle-format.md): versioned, each object checksummed, each object
 * once (a parent adds only what its child does not share).  Written to
 * PATH.tmp-PID, fsynced and renamed, so PATH is whole or untouched.
 * Progress phase "export", in objects.  VMT_ENOENT for an unknown snapshot.
 */
int vmt_snap_export(vmt_store *s, const vmt_id *id, bool with_ancestors, const char *path,
                    vmt_store_progress_fn progress, void *progress_ctx);
/*
 * Reads a bundle, verifies every object against its id before storing it,
 * commits, and records its snapshots in the catalog.  A damaged bundle or
 * one of a newer format is refused with VMT_ECORRUPT / VMT_EUNSUPPORTED and
 * leaves the store as it was (nothing committed).  *ids receives the
 * snapshots imported (caller frees), the last one the one exported.
 * The file is read twice: verified whole before anything is put, then put
 * and verified again; each snapshot is also checked to be complete (its map,
 * pages and state in the bundle or the store) before the commit.  A failure
 * after puts began leaves them pending in the handle: they are dropped when
 * it is closed, unless something commits first.  `c` may be NULL (the
 * catalog is then not touched).  Progress phases "verify" and "import", in
 * bytes of the file.
 */
int vmt_snap_import(vmt_store *s, vmt_catalog *c, const char *path, vmt_id **ids, size_t *n,
                    vmt_store_progress_fn progress, void *progress_ctx);

/* What a bundle holds (from its trailer, after every check passed). */
typedef struct vmt_snap_bundle_info {
    uint32_t major, minor; /* format version */
    uint64_t objects;      /* object records (snapshot records included) */
    uint64_t snapshots;
    uint64_t bytes; /* size of the bundle */
    vmt_id last;    /* the exported snapshot */
} vmt_snap_bundle_info;

/*
 * Checks a whole bundle held in memory (`buf` borrowed, `len` bytes) as
 * import does, without a store: format version, every record's caps and
 * checksum, decompression, every object's id, snapshot records, the
 * trailer.  *info (may be NULL) is filled on success.  VMT_EUNSUPPORTED for
 * a newer major format or an unknown mandatory feature, VMT_ECORRUPT for
 * anything damaged.  Thread-safe (no shared state).
 */
int vmt_snap_bundle_check(const void *buf, size_t len, vmt_snap_bundle_info *info);

#ifdef __cplusplus
}
#endif
#endif
