/*
 * Internals of the catalog (catalog*.c): the handle and the SQLite helpers
 * its files share.  Never included outside snapshot/.
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

struct vmt_catalog {
    sqlite3 *db;
    char *path;
};

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

/* True for "tag/NAME" and "vm/NAME/HEAD" with a valid NAME. */
bool cat_ref_valid(const char *ref);

/* Looks a ref up: 0 and *out, VMT_ENOENT when absent. */
int cat_get_ref(vmt_catalog *c, const char *ref, vmt_id *out);

#endif
