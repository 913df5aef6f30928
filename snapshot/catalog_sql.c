/*
 * The catalog: STORE_DIR/catalog.db, a SQLite database (WAL, synchronous =
 * FULL, busy timeout) holding the refs, the registered VMs and an index of
 * snapshots.  Every update that takes more than one statement runs in one
 * BEGIN IMMEDIATE transaction, so a crash leaves either all of it or none.
 * Schema (docs/snapshot.md) versioned in the `meta` table; a newer schema
 * is refused.  This file: opening, helpers, snapshots and refs; VMs are in
 * catalog_sql_vm.c.  One backend of the catalog (catalog_internal.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_internal.h"

/* clang-format off */
static const char *const schema_v1[] = {
    "CREATE TABLE snapshots ("
    " id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),"
    " hex TEXT NOT NULL UNIQUE,"           /* lowercase hex of id, for prefixes */
    " parent BLOB CHECK (parent IS NULL OR length(parent) = 16)," /* first parent */
    " time_ns INTEGER NOT NULL,"
    " vm_name TEXT NOT NULL,"
    " message TEXT NOT NULL,"
    " mem_size INTEGER NOT NULL,"
    " nonzero_pages INTEGER NOT NULL)",
    "CREATE INDEX snapshots_parent ON snapshots (parent)",
    "CREATE TABLE refs ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " id BLOB NOT NULL CHECK (length(id) = 16))",
    "CREATE INDEX refs_id ON refs (id)",
    "CREATE TABLE vms ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " pid INTEGER NOT NULL,"
    " socket TEXT NOT NULL,"
    " image TEXT NOT NULL,"
    " mem_size INTEGER NOT NULL,"
    " vcpus INTEGER NOT NULL)",
};
/* clang-format on */

/* ---- helpers ------------------------------------------------------------ */

int cat_error(vmt_catalog *c, int src, const char *what)
{
    const char *msg = c && c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(src);
    int code;

    switch (src & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        code = VMT_EBUSY;
        break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        code = VMT_ECORRUPT;
        break;
    case SQLITE_NOMEM:
        code = VMT_ENOMEM;
        break;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
        code = VMT_EIO;
        break;
    default:
        code = VMT_ERR;
    }
    return vmt_error_set(code, "catalog %s: %s: %s", c && c->path ? c->path : "", what, msg);
}

int cat_prepare(vmt_catalog *c, const char *sql, sqlite3_stmt **st)
{
    int src = sqlite3_prepare_v2(c->db, sql, -1, st, NULL);
    if (src != SQLITE_OK)
        return cat_error(c, src, "preparing a statement");
    return 0;
}

int cat_collect(vmt_catalog *c, const char *sql, size_t size, cat_row_fn row, const char *what,
                void **out, size_t *n)
{
    sqlite3_stmt *st = NULL;
    uint8_t *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = cat_prepare(c, sql, &st);
    int src = SQLITE_DONE;
    while (rc == 0 && (src = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            uint8_t *nv = vmt_reallocn(v, ncap, size);
            if (!nv) {
                rc = VMT_ENOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        rc = row(st, v + size * cnt++);
    }
    if (rc == 0 && src != SQLITE_DONE)
        rc = cat_error(c, src, what);
    sqlite3_finalize(st);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

int cat_exec(vmt_catalog *c, const char *sql)
{
    int src = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    if (src != SQLITE_OK)
        return cat_error(c, src, sql);
    return 0;
}

int cat_begin(vmt_catalog *c)
{
    return cat_exec(c, "BEGIN IMMEDIATE");
}

int cat_end(vmt_catalog *c, int rc)
{
    if (rc == 0)
        return cat_exec(c, "COMMIT");
    /* Keep the first error's message: rollback failing is secondary. */
    (void)sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int cat_bind_id(sqlite3_stmt *st, int col, const vmt_id *id)
{
    return sqlite3_bind_blob(st, col, id->b, sizeof(id->b), SQLITE_TRANSIENT);
}

int cat_column_id(sqlite3_stmt *st, int col, vmt_id *id)
{
    const void *p = sqlite3_column_blob(st, col);
    if (!p || sqlite3_column_bytes(st, col) != (int)sizeof(id->b))
        return vmt_error_set(VMT_ECORRUPT, "catalog: an id column does not hold 16 bytes");
    memcpy(id->b, p, sizeof(id->b));
    return 0;
}

void cat_column_text(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *p = sqlite3_column_text(st, col);
    int n = sqlite3_column_bytes(st, col);
    size_t len = p && n > 0 ? VMT_MIN((size_t)n, cap - 1) : 0;

    if (len)
        memcpy(dst, p, len);
    dst[len] = '\0';
}

/* ---- opening ------------------------------------------------------------ */

/* Reads the schema version; 0 when the database is new (no meta table). */
static int schema_version(vmt_catalog *c, int64_t *version)
{
    sqlite3_stmt *st;
    int rc = cat_prepare(c,
                         "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                         "name = 'meta'",
                         &st);
    if (rc)
        return rc;
    int src = sqlite3_step(st);
    bool have = src == SQLITE_ROW && sqlite3_column_int64(st, 0) > 0;
    sqlite3_finalize(st);
    if (src != SQLITE_ROW)
        return cat_error(c, src, "reading the schema");
    *version = 0;
    if (!have)
        return 0;
    if ((rc = cat_prepare(c, "SELECT value FROM meta WHERE key = 'schema_version'", &st)) != 0)
        return rc;
    src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        *version = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (src != SQLITE_ROW)
        return vmt_error_set(VMT_ECORRUPT, "catalog %s: the meta table has no schema_version",
                             c->path);
    return 0;
}

static int create_schema(vmt_catalog *c)
{
    char sql[128];
    int rc = cat_exec(c, "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value NOT NULL)");
    for (size_t i = 0; rc == 0 && i < VMT_ARRAY_SIZE(schema_v1); i++)
        rc = cat_exec(c, schema_v1[i]);
    snprintf(sql, sizeof(sql), "INSERT INTO meta VALUES ('schema_version', %d)",
             CATALOG_SCHEMA_VERSION);
    return rc ? rc : cat_exec(c, sql);
}

static int check_schema(vmt_catalog *c)
{
    int64_t v = 0;
    int rc = cat_begin(c);
    if (rc)
        return rc;
    rc = schema_version(c, &v);
    if (rc == 0 && v == 0)
        rc = create_schema(c);
    else if (rc == 0 && v > CATALOG_SCHEMA_VERSION)
        rc = vmt_error_set(VMT_EUNSUPPORTED,
                           "catalog %s has schema version %lld, newer than this vmtree's (%d)",
                           c->path, (long long)v, CATALOG_SCHEMA_VERSION);
    else if (rc == 0 && v < 1)
        rc = vmt_error_set(VMT_ECORRUPT, "catalog %s: schema version %lld is not valid", c->path,
                           (long long)v);
    return cat_end(c, rc);
}

static int configure(vmt_catalog *c)
{
    sqlite3_stmt *st;
    char mode[16] = "";

    sqlite3_busy_timeout(c->db, CATALOG_BUSY_MS);
    sqlite3_extended_result_codes(c->db, 1);
    int rc = cat_prepare(c, "PRAGMA journal_mode = WAL", &st);
    if (rc)
        return rc;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        cat_column_text(st, 0, mode, sizeof(mode));
    sqlite3_finalize(st);
    if (src != SQLITE_ROW)
        return cat_error(c, src, "setting WAL mode");
    if (strcmp(mode, "wal") != 0)
        return vmt_error_set(VMT_EIO, "catalog %s: cannot use WAL mode (got \"%s\")", c->path,
                             mode);
    return cat_exec(c, "PRAGMA synchronous = FULL");
}

int cat_sql_open(vmt_catalog *c, const char *store_dir)
{
    if (asprintf(&c->path, "%s/catalog.db", store_dir) < 0) {
        c->path = NULL;
        return vmt_error_set(VMT_ENOMEM, "catalog: out of memory");
    }
    c->ops = &cat_sql_ops;
    int src = sqlite3_open_v2(
        c->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    int rc = src == SQLITE_OK ? 0 : cat_error(c, src, "opening");
    if (rc == 0)
        rc = configure(c);
    if (rc == 0)
        rc = check_schema(c);
    return rc;
}

static void sql_close(vmt_catalog *c)
{
    sqlite3_close_v2(c->db);
    c->db = NULL;
}

/* ---- snapshots ---------------------------------------------------------- */

static int sql_add_snapshot(vmt_catalog *c, const vmt_id *id, const vmt_snap_record *r)
{
    char hex[VMT_ID_HEX_LEN + 1];
    sqlite3_stmt *st;
    int rc = cat_prepare(c,
                         "INSERT INTO snapshots VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
                         "ON CONFLICT (id) DO NOTHING",
                         &st);
    if (rc)
        return rc;
    vmt_id_to_hex(id, hex);
    cat_bind_id(st, 1, id);
    sqlite3_bind_text(st, 2, hex, -1, SQLITE_TRANSIENT);
    if (r->nparents > 0)
        cat_bind_id(st, 3, &r->parents[0]);
    sqlite3_bind_int64(st, 4, (int64_t)r->time_ns);
    sqlite3_bind_text(st, 5, r->vm_name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, r->message, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 7, (int64_t)r->mem_size);
    sqlite3_bind_int64(st, 8, (int64_t)r->nonzero_pages);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? 0 : cat_error(c, src, "adding a snapshot");
}

/* VMT_EBUSY naming a ref that points at id, 0 when none does. */
static int check_unreferenced(vmt_catalog *c, const vmt_id *id)
{
    sqlite3_stmt *st;
    vmt_catalog_ref ref = {.id = *id};
    int rc = cat_prepare(c, "SELECT name FROM refs WHERE id = ?1 ORDER BY name LIMIT 1", &st);
    if (rc)
        return rc;
    cat_bind_id(st, 1, id);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        cat_column_text(st, 0, ref.name, sizeof(ref.name));
        rc = cat_check_unreferenced(&ref, 1, id);
    } else if (src != SQLITE_DONE) {
        rc = cat_error(c, src, "looking up refs");
    }
    sqlite3_finalize(st);
    return rc;
}

static int delete_snapshot(vmt_catalog *c, const vmt_id *id)
{
    sqlite3_stmt *st;
    int rc = cat_prepare(c, "DELETE FROM snapshots WHERE id = ?1", &st);
    if (rc)
        return rc;
    cat_bind_id(st, 1, id);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (src != SQLITE_DONE)
        return cat_error(c, src, "removing a snapshot");
    if (sqlite3_changes(c->db) == 0)
        return cat_no_snapshot(id);
    return 0;
}

static int sql_remove_snapshot(vmt_catalog *c, const vmt_id *id)
{
    int rc = cat_begin(c);
    if (rc)
        return rc;
    rc = check_unreferenced(c, id);
    if (rc == 0)
        rc = delete_snapshot(c, id);
    return cat_end(c, rc);
}

static int read_snap_row(sqlite3_stmt *st, vmt_catalog_snap *s)
{
    memset(s, 0, sizeof(*s));
    int rc = cat_column_id(st, 0, &s->id);
    if (rc == 0 && sqlite3_column_type(st, 1) != SQLITE_NULL) {
        s->has_parent = true;
        rc = cat_column_id(st, 1, &s->parent);
        s->parent_present = sqlite3_column_int(st, 4) != 0;
    }
    s->time_ns = (uint64_t)sqlite3_column_int64(st, 2);
    cat_column_text(st, 3, s->vm_name, sizeof(s->vm_name));
    cat_column_text(st, 5, s->message, sizeof(s->message));
    s->message[strcspn(s->message, "\n")] = '\0'; /* the first line */
    return rc;
}

static int snap_row(sqlite3_stmt *st, void *e)
{
    return read_snap_row(st, e);
}

static int sql_list_snapshots(vmt_catalog *c, vmt_catalog_snap **out, size_t *n)
{
    void *v = NULL;
    int rc = cat_collect(c,
                         "SELECT s.id, s.parent, s.time_ns, s.vm_name, p.id IS NOT NULL, "
                         "substr(s.message, 1, 255) FROM snapshots s LEFT JOIN snapshots p "
                         "ON p.id = s.parent ORDER BY s.time_ns, s.rowid",
                         sizeof(vmt_catalog_snap), snap_row, "listing snapshots", &v, n);
    if (rc == 0)
        *out = v;
    return rc;
}

static int sql_get_snapshot(vmt_catalog *c, const vmt_id *id, vmt_catalog_snap *out)
{
    sqlite3_stmt *st;
    int rc = cat_prepare(c,
                         "SELECT id, parent, time_ns, vm_name, 0, substr(message, 1, 255) "
                         "FROM snapshots WHERE id = ?1",
                         &st);
    if (rc)
        return rc;
    cat_bind_id(st, 1, id);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        rc = read_snap_row(st, out);
    } else if (src == SQLITE_DONE) {
        rc = cat_no_snapshot(id);
    } else {
        rc = cat_error(c, src, "reading a snapshot");
    }
    sqlite3_finalize(st);
    return rc;
}

static int sql_find_prefix(vmt_catalog *c, const char *lo, vmt_id *ids, size_t cap, size_t *count)
{
    char hi[VMT_ID_HEX_LEN + 2];
    sqlite3_stmt *st;
    /* Every hex string starting with lo sorts in [lo, lo "g"). */
    snprintf(hi, sizeof(hi), "%sg", lo);
    int rc = cat_prepare(c,
                         "SELECT id FROM snapshots WHERE hex >= ?1 AND hex < ?2 "
                         "ORDER BY hex LIMIT ?3",
                         &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, lo, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, hi, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, (int64_t)cap + 1);
    int src;
    *count = 0;
    while (rc == 0 && (src = sqlite3_step(st)) == SQLITE_ROW) {
        if (*count < cap)
            rc = cat_column_id(st, 0, &ids[*count]);
        ++*count;
    }
    if (rc == 0 && src != SQLITE_DONE)
        rc = cat_error(c, src, "looking up an id prefix");
    sqlite3_finalize(st);
    return rc;
}

/* ---- refs --------------------------------------------------------------- */

static int sql_get_ref(vmt_catalog *c, const char *ref, vmt_id *out)
{
    sqlite3_stmt *st;
    int rc = cat_prepare(c, "SELECT id FROM refs WHERE name = ?1", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, ref, -1, SQLITE_TRANSIENT);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        rc = cat_column_id(st, 0, out);
    else if (src == SQLITE_DONE)
        rc = vmt_error_set(VMT_ENOENT, "no ref %s", ref);
    else
        rc = cat_error(c, src, "reading a ref");
    sqlite3_finalize(st);
    return rc;
}

static int check_expect(vmt_catalog *c, const char *ref, const vmt_id *expect)
{
    vmt_id cur;
    int rc = sql_get_ref(c, ref, &cur);
    if (rc && rc != VMT_ENOENT)
        return rc;
    return cat_check_expect(ref, rc == 0 ? &cur : NULL, expect);
}

int cat_sql_upsert_ref(vmt_catalog *c, const char *ref, const vmt_id *id)
{
    sqlite3_stmt *st;
    int rc = cat_prepare(c,
                         "INSERT INTO refs VALUES (?1, ?2) ON CONFLICT (name) "
                         "DO UPDATE SET id = excluded.id",
                         &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, ref, -1, SQLITE_TRANSIENT);
    cat_bind_id(st, 2, id);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? 0 : cat_error(c, src, "setting a ref");
}

int cat_sql_delete_named(vmt_catalog *c, const char *sql, const char *name, const char *what)
{
    sqlite3_stmt *st;
    int rc = cat_prepare(c, sql, &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (src != SQLITE_DONE)
        return cat_error(c, src, what);
    return sqlite3_changes(c->db) == 0 ? VMT_ENOENT : 0;
}

static int sql_set_ref(vmt_catalog *c, const char *ref, const vmt_id *id, const vmt_id *expect)
{
    int rc = cat_begin(c);
    if (rc)
        return rc;
    if (expect)
        rc = check_expect(c, ref, expect);
    if (rc == 0)
        rc = cat_sql_upsert_ref(c, ref, id);
    return cat_end(c, rc);
}

static int sql_delete_ref(vmt_catalog *c, const char *ref)
{
    int rc = cat_sql_delete_named(c, "DELETE FROM refs WHERE name = ?1", ref, "deleting a ref");
    return rc == VMT_ENOENT ? vmt_error_set(VMT_ENOENT, "no ref %s", ref) : rc;
}

static int ref_row(sqlite3_stmt *st, void *e)
{
    vmt_catalog_ref *r = e;
    memset(r, 0, sizeof(*r));
    cat_column_text(st, 0, r->name, sizeof(r->name));
    return cat_column_id(st, 1, &r->id);
}

static int sql_list_refs(vmt_catalog *c, vmt_catalog_ref **out, size_t *n)
{
    void *v = NULL;
    int rc = cat_collect(c, "SELECT name, id FROM refs ORDER BY name", sizeof(vmt_catalog_ref),
                         ref_row, "listing refs", &v, n);
    if (rc == 0)
        *out = v;
    return rc;
}

const cat_ops cat_sql_ops = {
    .name = "sqlite",
    .close = sql_close,
    .add_snapshot = sql_add_snapshot,
    .remove_snapshot = sql_remove_snapshot,
    .list_snapshots = sql_list_snapshots,
    .get_snapshot = sql_get_snapshot,
    .find_prefix = sql_find_prefix,
    .get_ref = sql_get_ref,
    .set_ref = sql_set_ref,
    .delete_ref = sql_delete_ref,
    .list_refs = sql_list_refs,
    .register_vm = cat_sql_register_vm,
    .get_vm = cat_sql_get_vm,
    .list_vms = cat_sql_list_vms,
    .unregister_vm = cat_sql_unregister_vm,
};
