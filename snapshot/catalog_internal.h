/*
 * Internals of the catalog (catalog*.c): the handle, the backend ops table
 * and the helpers its files share.  Two backends:
 *   catalog_sql.c, catalog_sql_vm.c   SQLite file STORE_DIR/catalog.db
 *   catalog_refs.c, catalog_refs_vm.c the store's own refs (rados://)
 * catalog.c checks every argument and dispatches; catalog_resolve.c
 * resolves names over any backend.  Never included outside snapshot/.
 */
#ifndef VMTREE_CATALOG_INTERNAL_H
#define VMTREE_CATALOG_INTERNAL_H

#include <sqlite3.h>

#include "snap_internal.h"

/* The schema this code creates and reads; a newer one is refused. */
#define CATALOG_SCHEMA_VERSION 1
/* How long a statement waits for another process's write lock. */
#define CATALOG_BUSY_MS 10000
/* Longest ref name: "vm/" NAME "/HEAD". */
#define CATALOG_REF_MAX VMT_CATALOG_REF_MAX

/*
 * What a backend implements.  Arguments are checked by catalog.c (non-NULL,
 * valid ref and VM names, NUL-terminated text) before any call.
 */
typedef struct cat_ops {
    const char *name; /* "sqlite", "refs" */
    void (*close)(vmt_catalog *c);
    int (*add_snapshot)(vmt_catalog *c, const vmt_id *id, const vmt_snap_record *r);
    int (*remove_snapshot)(vmt_catalog *c, const vmt_id *id);
    int (*list_snapshots)(vmt_catalog *c, vmt_catalog_snap **out, size_t *n);
    /* One index entry (parent_present not filled); VMT_ENOENT when absent. */
    int (*get_snapshot)(vmt_catalog *c, const vmt_id *id, vmt_catalog_snap *out);
    /* The ids whose lowercase hex starts with `lo`, in hex order: at most
     * cap into ids, *count = how many match (at least up to cap + 1). */
    int (*find_prefix)(vmt_catalog *c, const char *lo, vmt_id *ids, size_t cap, size_t *count);
    int (*get_ref)(vmt_catalog *c, const char *ref, vmt_id *out); /* VMT_ENOENT */
    int (*set_ref)(vmt_catalog *c, const char *ref, const vmt_id *id, const vmt_id *expect);
    int (*delete_ref)(vmt_catalog *c, const char *ref);
    int (*list_refs)(vmt_catalog *c, vmt_catalog_ref **out, size_t *n);
    int (*register_vm)(vmt_catalog *c, const vmt_catalog_vm *vm);
    int (*get_vm)(vmt_catalog *c, const char *name, vmt_catalog_vm *out);
    int (*list_vms)(vmt_catalog *c, vmt_catalog_vm **out, size_t *n);
    int (*unregister_vm)(vmt_catalog *c, const char *name);
    /* Optional: the id of every snapshot entry and ref in one pass (*out:
     * caller frees; any order, repeats allowed).  NULL: vmt_catalog_roots
     * uses list_snapshots and list_refs. */
    int (*roots)(vmt_catalog *c, vmt_id **out, size_t *n);
} cat_ops;

struct vmt_catalog {
    const cat_ops *ops;
    char *path; /* catalog.db, or the store's location */
    /* SQLite backend */
    sqlite3 *db;
    /* refs backend */
    vmt_store *store;
    bool own_store;                  /* opened by vmt_catalog_open: closed with it */
    char host[VMT_CATALOG_HOST_MAX]; /* the host VMs registered here run on */
};

extern const cat_ops cat_sql_ops;
extern const cat_ops cat_refs_ops;

/* Opens the SQLite backend into c (c->path set to STORE_DIR/catalog.db). */
int cat_sql_open(vmt_catalog *c, const char *store_dir);
/* Opens the refs backend over c->store (set by the caller). */
int cat_refs_open(vmt_catalog *c);

/* True when pid is a live process of this host (kill(pid, 0)). */
bool cat_pid_alive(int64_t pid);

/* ---- SQLite helpers (catalog_sql.c) ------------------------------------- */

/* Maps a SQLite result to a VMT_E* with a message about `what`. */
int cat_error(vmt_catalog *c, int src, const char *what);

/* Prepares `sql`; on failure sets the error and returns it. */
int cat_prepare(vmt_catalog *c, const char *sql, sqlite3_stmt **st);
/* Reads one row into the element at `elem`. */
typedef int (*cat_row_fn)(sqlite3_stmt *st, void *elem);
/* Runs `sql` and collects one `size`-byte element per row into a new array
 * (*out, caller frees; *n elements); `what` names the work in errors. */
int cat_collect(vmt_catalog *c, const char *sql, size_t size, cat_row_fn row, const char *what,
                void **out, size_t *n);

/* Runs SQL without results. */
int cat_exec(vmt_catalog *c, const char *sql);

/* BEGIN IMMEDIATE (takes the write lock now, so no upgrade deadlock). */
int cat_begin(vmt_catalog *c);
/* COMMIT when rc == 0, else ROLLBACK; returns rc or the commit's error. */
int cat_end(vmt_catalog *c, int rc);

/* Binds / reads a 16-byte id. */
int cat_bind_id(sqlite3_stmt *st, int col, const vmt_id *id);
/* Copies column `col` into *id; VMT_ECORRUPT unless it is 16 bytes. */
int cat_column_id(sqlite3_stmt *st, int col, vmt_id *id);
/* Copies a text column into dst[cap], truncated. */
void cat_column_text(sqlite3_stmt *st, int col, char *dst, size_t cap);

/* Sets ref `ref` to id (insert or update), inside the caller's transaction. */
int cat_sql_upsert_ref(vmt_catalog *c, const char *ref, const vmt_id *id);
/* Runs `sql` (a DELETE binding ?1 to name): 0, VMT_ENOENT (no message) when
 * it deleted nothing, or the SQLite error about `what`. */
int cat_sql_delete_named(vmt_catalog *c, const char *sql, const char *name, const char *what);

/* SQLite VMs (catalog_sql_vm.c). */
int cat_sql_register_vm(vmt_catalog *c, const vmt_catalog_vm *vm);
int cat_sql_get_vm(vmt_catalog *c, const char *name, vmt_catalog_vm *out);
int cat_sql_list_vms(vmt_catalog *c, vmt_catalog_vm **out, size_t *n);
int cat_sql_unregister_vm(vmt_catalog *c, const char *name);

/* ---- refs backend helpers (catalog_refs.c) ------------------------------- */

/* Room for a store ref name (at most 128 bytes) and its NUL. */
#define CAT_KEY_MAX 160
/* Compare-and-swap attempts before an update gives up with VMT_EBUSY. */
#define CAT_CAS_TRIES 1000u
#define CAT_REF_PREFIX "cat."    /* every key of the catalog */
#define CAT_TAG_PREFIX "cat.t."  /* tag/N */
#define CAT_HEAD_PREFIX "cat.h." /* vm/N/HEAD */
#define CAT_VM_PREFIX "cat.v."   /* VM registrations */
#define CAT_FORMAT_KEY "cat.format" /* the format; its watchers hear of every change */

/*
 * Entry codecs of the refs backend (the bytes of cat.s.HEX and cat.v.NAME;
 * hostile input: they come from a shared pool).  decode checks every length
 * and field and returns VMT_ECORRUPT naming `where` and key; encode writes
 * at most CAT_REFS_SNAP_ENTRY_MAX / CAT_REFS_VM_ENTRY_MAX bytes.
 */
#define CAT_REFS_SNAP_ENTRY_MAX (2 + 16 + 24 + 2 + VMT_SNAP_NAME_MAX + 255)
#define CAT_REFS_VM_ENTRY_MAX (21 + 1 + VMT_CATALOG_HOST_MAX + 2 * (2 + VMT_SNAP_PATH_MAX))
size_t cat_refs_snap_encode(const vmt_snap_record *r, uint8_t *p);
int cat_refs_snap_decode(const char *where, const char *key, const uint8_t *p, size_t len,
                         vmt_catalog_snap *s);
size_t cat_refs_vm_encode(const vmt_catalog_vm *vm, const char *host, uint8_t *p);
int cat_refs_vm_decode(const char *where, const char *key, const uint8_t *p, size_t len,
                       vmt_catalog_vm *vm);

/* key = prefix + name with every '.' of name written '@'. */
void cat_key(char key[CAT_KEY_MAX], const char *prefix, const char *name);
/* The name in a key of `prefix` (into name[cap]); false when it is not one
 * or not a valid name. */
bool cat_key_name(const char *key, const char *prefix, char *name, size_t cap);
/* Reads a key: an absent key reads as empty at version 0 (so do
 * tombstones, at their version). */
int cat_rget(vmt_catalog *c, const char *key, uint8_t *buf, size_t cap, size_t *len, uint64_t *ver);
/* Writes a key if still at version ver; VMT_EBUSY (no message) when not. */
int cat_rset(vmt_catalog *c, const char *key, uint64_t ver, const void *data, size_t len);
/* The error after CAT_CAS_TRIES lost compare-and-swaps on key. */
int cat_conflict(vmt_catalog *c, const char *key);
/* Reads one key into the element at elem (zeroed); *present false to skip
 * it (absent, a tombstone, not of this listing). */
typedef int (*cat_read_fn)(vmt_catalog *c, const char *key, void *elem, bool *present);
/* Lists the keys starting with prefix and reads each, in key order, into a
 * new array of the present ones (*out, caller frees; *n `size`-byte
 * elements). */
int cat_read_keys(vmt_catalog *c, const char *prefix, size_t size, cat_read_fn read, void **out,
                  size_t *n);

/* Refs-catalog VMs (catalog_refs_vm.c). */
int cat_refs_register_vm(vmt_catalog *c, const vmt_catalog_vm *vm);
int cat_refs_get_vm(vmt_catalog *c, const char *name, vmt_catalog_vm *out);
int cat_refs_list_vms(vmt_catalog *c, vmt_catalog_vm **out, size_t *n);
int cat_refs_unregister_vm(vmt_catalog *c, const char *name);

/* ---- shared ---------------------------------------------------------------- */

/* True for "tag/NAME" and "vm/NAME/HEAD" with a valid NAME. */
bool cat_ref_valid(const char *ref);

/* The compare part of set_ref's compare-and-swap: `have` (NULL: absent)
 * against *expect (the zero id: must be absent); VMT_EBUSY saying which. */
int cat_check_expect(const char *ref, const vmt_id *have, const vmt_id *expect);

/* VMT_ENOENT: snapshot id is not in the catalog. */
int cat_no_snapshot(const vmt_id *id);

/* VMT_ENOENT: no VM registered as name. */
int cat_no_vm(const char *name);

/* "vm/NAME/HEAD" into ref. */
void cat_head_ref(char ref[CATALOG_REF_MAX], const char *vm);

/* VMT_EBUSY naming the first ref (by name) of refs[0..n) at id; else 0. */
int cat_check_unreferenced(const vmt_catalog_ref *refs, size_t n, const vmt_id *id);

#endif
