/*
 * The catalog kept in the store's own refs (vmt_store_ref_*), for stores
 * that several hosts share (rados://).  docs/store-backends.md, "The
 * catalog in RADOS", has the layout:
 *
 *   cat.format        u32 format version (1); a newer one is refused
 *   cat.t.N           tag/N: the 16-byte id
 *   cat.h.N           vm/N/HEAD: the 16-byte id
 *   cat.s.HEX         a snapshot index entry (HEX: its 32-digit id)
 *   cat.v.N           a VM registration (catalog_refs_vm.c)
 *
 * N is the name with each '.' written '@' (names never hold '@'), so a key
 * holds no '.' of the user's: no "..", no ".tmp" ending, as store ref names
 * require.  Every update is one compare-and-swap of one ref, retried after
 * re-reading when another writer got there first, so no update is lost.
 * A deleted entry is an empty value (a tombstone), never removed: versions
 * only grow, so a compare-and-swap cannot mistake a re-created entry for
 * the one it read (no ABA).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_internal.h"

#define FORMAT_VERSION 1u
#define FORMAT_KEY CAT_FORMAT_KEY
#define SNAP_PREFIX "cat.s."
#define SNAP_ENTRY_VERSION 1u
#define SNAP_MSG_MAX 255u

/* ---- keys and values ------------------------------------------------------ */

void cat_key(char key[CAT_KEY_MAX], const char *prefix, const char *name)
{
    size_t n = (size_t)snprintf(key, CAT_KEY_MAX, "%s%s", prefix, name);
    for (size_t i = strlen(prefix); i < n && i < CAT_KEY_MAX; i++)
        if (key[i] == '.')
            key[i] = '@';
}

bool cat_key_name(const char *key, const char *prefix, char *name, size_t cap)
{
    size_t pl = strlen(prefix);
    if (strncmp(key, prefix, pl) != 0 || strlen(key + pl) >= cap)
        return false;
    snprintf(name, cap, "%s", key + pl);
    for (char *p = name; *p; p++)
        if (*p == '@')
            *p = '.';
    return snap_name_valid(name);
}

/* "tag/N" -> cat.t.N, "vm/N/HEAD" -> cat.h.N (ref already checked). */
static void ref_key(const char *ref, char key[CAT_KEY_MAX])
{
    char name[VMT_SNAP_NAME_MAX];
    if (strncmp(ref, "tag/", 4) == 0) {
        cat_key(key, CAT_TAG_PREFIX, ref + 4);
        return;
    }
    size_t n = strlen(ref) - 8; /* "vm/" ... "/HEAD" */
    memcpy(name, ref + 3, n);
    name[n] = '\0';
    cat_key(key, CAT_HEAD_PREFIX, name);
}

int cat_rget(vmt_catalog *c, const char *key, uint8_t *buf, size_t cap, size_t *len, uint64_t *ver)
{
    int rc = vmt_store_ref_get(c->store, key, buf, cap, len, ver);
    if (rc == VMT_ENOENT) {
        vmt_error_clear();
        *len = 0;
        *ver = 0;
        return 0;
    }
    return rc ? vmt_error_wrap(rc, "catalog %s: reading %s", c->path, key) : 0;
}

int cat_rset(vmt_catalog *c, const char *key, uint64_t ver, const void *data, size_t len)
{
    int rc = vmt_store_ref_set(c->store, key, ver, len ? data : "", len, NULL);
    if (rc == VMT_EBUSY)
        return rc; /* the caller reads again */
    return rc ? vmt_error_wrap(rc, "catalog %s: writing %s", c->path, key) : 0;
}

int cat_conflict(vmt_catalog *c, const char *key)
{
    return vmt_error_set(VMT_EBUSY,
                         "catalog %s: %s changed under us %u times in a row (too many "
                         "concurrent writers); try again",
                         c->path, key, CAT_CAS_TRIES);
}

typedef struct key_list {
    char **v;
    size_t n, cap;
} key_list;

static int add_key(void *ctx, const char *name)
{
    key_list *l = ctx;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        char **nv = vmt_reallocn(l->v, ncap, sizeof(char *));
        if (!nv)
            return vmt_error_set(VMT_ENOMEM, "out of memory listing the catalog");
        l->v = nv;
        l->cap = ncap;
    }
    if (!(l->v[l->n] = strdup(name)))
        return vmt_error_set(VMT_ENOMEM, "out of memory listing the catalog");
    l->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_keys(char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

/* Every key starting with prefix, sorted (caller frees with free_keys). */
static int list_keys(vmt_catalog *c, const char *prefix, char ***keys, size_t *n)
{
    key_list l = {0};
    int rc = vmt_store_ref_list(c->store, prefix, add_key, &l);
    if (rc) {
        free_keys(l.v, l.n);
        return vmt_error_wrap(rc, "catalog %s: listing", c->path);
    }
    if (l.n)
        qsort(l.v, l.n, sizeof(char *), cmp_str);
    *keys = l.v;
    *n = l.n;
    return 0;
}

int cat_read_keys(vmt_catalog *c, const char *prefix, size_t size, cat_read_fn read, void **out,
                  size_t *n)
{
    char **keys = NULL;
    size_t nk = 0, k = 0;
    int rc = list_keys(c, prefix, &keys, &nk);
    uint8_t *v = rc == 0 ? vmt_reallocn(NULL, nk + 1, size) : NULL;
    if (rc == 0 && !v)
        rc = vmt_error_set(VMT_ENOMEM, "out of memory listing the catalog");
    for (size_t i = 0; rc == 0 && i < nk; i++) {
        bool present = false;
        memset(v + size * k, 0, size);
        rc = read(c, keys[i], v + size * k, &present);
        k += rc == 0 && present;
    }
    free_keys(keys, nk);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

/* ---- format --------------------------------------------------------------- */

int cat_refs_open(vmt_catalog *c)
{
    uint8_t buf[8];
    size_t len;
    uint64_t ver;
    c->ops = &cat_refs_ops;
    if (!(c->path = strdup(vmt_store_dir(c->store))))
        return vmt_error_set(VMT_ENOMEM, "catalog: out of memory");
    for (unsigned t = 0; t < CAT_CAS_TRIES; t++) {
        int rc = cat_rget(c, FORMAT_KEY, buf, sizeof(buf), &len, &ver);
        if (rc == VMT_ERANGE || (rc == 0 && ver && len != 4))
            return vmt_error_set(VMT_ECORRUPT, "catalog %s: %s is damaged", c->path, FORMAT_KEY);
        if (rc)
            return rc;
        if (ver) {
            uint32_t v = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16 |
                         (uint32_t)buf[3] << 24;
            if (v > FORMAT_VERSION)
                return vmt_error_set(VMT_EUNSUPPORTED,
                                     "catalog %s has format %u, newer than this vmtree's (%u)",
                                     c->path, v, FORMAT_VERSION);
            return 0;
        }
        const uint8_t fmt[4] = {FORMAT_VERSION, 0, 0, 0};
        rc = cat_rset(c, FORMAT_KEY, 0, fmt, sizeof(fmt));
        if (rc != VMT_EBUSY)
            return rc;
    }
    return cat_conflict(c, FORMAT_KEY);
}

static void refs_close(vmt_catalog *c)
{
    (void)c; /* the store (if the catalog's) is closed by vmt_catalog_close */
}

/* ---- refs ----------------------------------------------------------------- */

/* Reads ref `ref` (at key) into *id: *present false when absent (or a
 * tombstone), *ver its version. */
static int read_ref(vmt_catalog *c, const char *ref, const char *key, vmt_id *id, bool *present,
                    uint64_t *ver)
{
    uint8_t buf[sizeof(vmt_id)];
    size_t len;
    int rc = cat_rget(c, key, buf, sizeof(buf), &len, ver);
    if (rc == VMT_ERANGE || (rc == 0 && len && len != sizeof(buf)))
        return vmt_error_set(VMT_ECORRUPT, "catalog %s: ref %s (%s) is damaged", c->path, ref, key);
    *present = rc == 0 && len > 0;
    if (*present)
        memcpy(id->b, buf, sizeof(id->b));
    return rc;
}

static int refs_get_ref(vmt_catalog *c, const char *ref, vmt_id *out)
{
    char key[CAT_KEY_MAX];
    bool present;
    uint64_t ver;
    ref_key(ref, key);
    int rc = read_ref(c, ref, key, out, &present, &ver);
    if (rc == 0 && !present)
        rc = vmt_error_set(VMT_ENOENT, "no ref %s", ref);
    return rc;
}

/*
 * Sets (id != NULL) or deletes (id == NULL: a tombstone) ref `ref`; with
 * expect, only while it holds *expect (zero id: absent).  The version read
 * guards the write, so a concurrent update makes it read and check again:
 * the compare is on the value, as in the SQLite catalog.
 */
static int refs_update(vmt_catalog *c, const char *ref, const vmt_id *id, const vmt_id *expect)
{
    char key[CAT_KEY_MAX];
    ref_key(ref, key);
    for (unsigned t = 0; t < CAT_CAS_TRIES; t++) {
        vmt_id have;
        bool present;
        uint64_t ver;
        int rc = read_ref(c, ref, key, &have, &present, &ver);
        if (rc)
            return rc;
        if (expect && (rc = cat_check_expect(ref, present ? &have : NULL, expect)) != 0)
            return rc;
        if (!id && !present)
            return vmt_error_set(VMT_ENOENT, "no ref %s", ref);
        rc = cat_rset(c, key, ver, id ? id->b : NULL, id ? sizeof(id->b) : 0);
        if (rc != VMT_EBUSY)
            return rc;
    }
    return cat_conflict(c, key);
}

static int refs_set_ref(vmt_catalog *c, const char *ref, const vmt_id *id, const vmt_id *expect)
{
    return refs_update(c, ref, id, expect);
}

static int refs_delete_ref(vmt_catalog *c, const char *ref)
{
    return refs_update(c, ref, NULL, NULL);
}

/* The ref named by key, if it is a tag or HEAD; false to skip it. */
static bool key_ref(const char *key, char ref[CATALOG_REF_MAX])
{
    char name[VMT_SNAP_NAME_MAX];
    if (cat_key_name(key, CAT_TAG_PREFIX, name, sizeof(name)))
        return snprintf(ref, CATALOG_REF_MAX, "tag/%s", name) > 0;
    if (!cat_key_name(key, CAT_HEAD_PREFIX, name, sizeof(name)))
        return false;
    cat_head_ref(ref, name);
    return true;
}

static int cmp_ref(const void *a, const void *b)
{
    return strcmp(((const vmt_catalog_ref *)a)->name, ((const vmt_catalog_ref *)b)->name);
}

/* cat_read_fn: the tag or HEAD at key; other keys are skipped. */
static int read_ref_key(vmt_catalog *c, const char *key, void *elem, bool *present)
{
    vmt_catalog_ref *r = elem;
    uint64_t ver;
    if (!key_ref(key, r->name))
        return 0;
    return read_ref(c, r->name, key, &r->id, present, &ver);
}

static int refs_list_refs(vmt_catalog *c, vmt_catalog_ref **out, size_t *n)
{
    void *v = NULL;
    int rc = cat_read_keys(c, CAT_REF_PREFIX, sizeof(vmt_catalog_ref), read_ref_key, &v, n);
    if (rc)
        return rc;
    qsort(v, *n, sizeof(vmt_catalog_ref), cmp_ref);
    *out = v;
    return 0;
}

/* ---- snapshot index entries ---------------------------------------------- */

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* version, flags, parent[16], time, mem_size, nonzero, then vm_name and the
 * message's first line, each a length byte and the bytes. */
#define SNAP_FIXED (2 + 16 + 24)
_Static_assert(SNAP_FIXED + 2 + VMT_SNAP_NAME_MAX + SNAP_MSG_MAX <= CAT_REFS_SNAP_ENTRY_MAX &&
                   CAT_REFS_SNAP_ENTRY_MAX <= VMT_STORE_REF_MAX,
               "a snapshot entry fits one ref");

size_t cat_refs_snap_encode(const vmt_snap_record *r, uint8_t *p)
{
    size_t vl = strlen(r->vm_name), ml = strcspn(r->message, "\n");
    vl = VMT_MIN(vl, (size_t)VMT_SNAP_NAME_MAX - 1);
    ml = VMT_MIN(ml, (size_t)SNAP_MSG_MAX);
    memset(p, 0, SNAP_FIXED);
    p[0] = SNAP_ENTRY_VERSION;
    p[1] = r->nparents > 0;
    if (r->nparents > 0)
        memcpy(p + 2, r->parents[0].b, 16);
    put64(p + 18, r->time_ns);
    put64(p + 26, r->mem_size);
    put64(p + 34, r->nonzero_pages);
    size_t o = SNAP_FIXED;
    p[o++] = (uint8_t)vl;
    memcpy(p + o, r->vm_name, vl);
    o += vl;
    p[o++] = (uint8_t)ml;
    memcpy(p + o, r->message, ml);
    return o + ml;
}

int cat_refs_snap_decode(const char *where, const char *key, const uint8_t *p, size_t len,
                         vmt_catalog_snap *s)
{
    memset(s, 0, sizeof(*s));
    size_t vl = len > SNAP_FIXED ? p[SNAP_FIXED] : 0;
    size_t ml = len > SNAP_FIXED + 1 + vl ? p[SNAP_FIXED + 1 + vl] : 0;
    const uint8_t *vm = p + SNAP_FIXED + 1, *msg = p + SNAP_FIXED + 2 + vl;
    /* The texts hold no NUL (they were C strings), the message no line
     * break (only its first line is kept), and without a parent its 16
     * bytes are zero: exactly what snap_encode writes. */
    static const uint8_t no_parent[16];
    if (len < SNAP_FIXED + 2 || p[0] != SNAP_ENTRY_VERSION || p[1] > 1 ||
        (p[1] == 0 && memcmp(p + 2, no_parent, 16) != 0) || vl >= VMT_SNAP_NAME_MAX ||
        len != SNAP_FIXED + 2 + vl + ml || memchr(vm, 0, vl) || memchr(msg, 0, ml) ||
        memchr(msg, '\n', ml) || strncmp(key, SNAP_PREFIX, strlen(SNAP_PREFIX)) != 0 ||
        vmt_id_from_hex(key + strlen(SNAP_PREFIX), &s->id) != 0)
        return vmt_error_set(VMT_ECORRUPT, "catalog %s: snapshot entry %s is damaged (%zu bytes)",
                             where, key, len);
    s->has_parent = p[1];
    if (s->has_parent)
        memcpy(s->parent.b, p + 2, 16);
    s->time_ns = get64(p + 18);
    memcpy(s->vm_name, vm, vl);
    memcpy(s->message, msg, ml);
    return 0;
}

static void snap_key(const vmt_id *id, char key[CAT_KEY_MAX])
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(id, hex);
    snprintf(key, CAT_KEY_MAX, SNAP_PREFIX "%s", hex);
}

static int refs_add_snapshot(vmt_catalog *c, const vmt_id *id, const vmt_snap_record *r)
{
    char key[CAT_KEY_MAX];
    uint8_t entry[CAT_REFS_SNAP_ENTRY_MAX], cur[VMT_STORE_REF_MAX];
    size_t elen = cat_refs_snap_encode(r, entry), len;
    uint64_t ver;
    snap_key(id, key);
    for (unsigned t = 0; t < CAT_CAS_TRIES; t++) {
        int rc = cat_rget(c, key, cur, sizeof(cur), &len, &ver);
        if (rc || len) /* there already: adding again does nothing */
            return rc;
        if ((rc = cat_rset(c, key, ver, entry, elen)) != VMT_EBUSY)
            return rc;
    }
    return cat_conflict(c, key);
}

static int read_entry(vmt_catalog *c, const char *key, vmt_catalog_snap *s, bool *present)
{
    uint8_t buf[VMT_STORE_REF_MAX];
    size_t len;
    uint64_t ver;
    int rc = cat_rget(c, key, buf, sizeof(buf), &len, &ver);
    *present = rc == 0 && len > 0;
    return rc == 0 && len ? cat_refs_snap_decode(c->path, key, buf, len, s) : rc;
}

static int refs_get_snapshot(vmt_catalog *c, const vmt_id *id, vmt_catalog_snap *out)
{
    char key[CAT_KEY_MAX];
    bool present;
    snap_key(id, key);
    int rc = read_entry(c, key, out, &present);
    return rc == 0 && !present ? cat_no_snapshot(id) : rc;
}

/* Tombstones the entry if it is at version ver (VMT_EBUSY when not). */
static int tombstone(vmt_catalog *c, const char *key, uint64_t ver)
{
    return cat_rset(c, key, ver, NULL, 0);
}

/*
 * No transaction spans refs and the index here: the entry is removed if no
 * ref points at the snapshot, then the refs are checked again; a ref set to
 * it in between (a tag made at that moment) puts the entry back and the
 * removal fails as if it had come second.
 */
static int refs_remove_snapshot(vmt_catalog *c, const vmt_id *id)
{
    char key[CAT_KEY_MAX];
    uint8_t entry[VMT_STORE_REF_MAX];
    vmt_catalog_ref *refs = NULL;
    size_t nr = 0, len = 0;
    uint64_t ver = 0;
    snap_key(id, key);
    int rc = 0;
    for (unsigned t = 0;; t++) {
        free(refs);
        refs = NULL;
        rc = refs_list_refs(c, &refs, &nr);
        rc = rc ? rc : cat_check_unreferenced(refs, nr, id);
        rc = rc ? rc : cat_rget(c, key, entry, sizeof(entry), &len, &ver);
        if (rc == 0 && len == 0)
            rc = cat_no_snapshot(id);
        if (rc)
            break;
        if ((rc = tombstone(c, key, ver)) != VMT_EBUSY)
            break;
        if (t + 1 == CAT_CAS_TRIES) {
            rc = cat_conflict(c, key);
            break;
        }
    }
    free(refs);
    refs = NULL;
    if (rc == 0 && (rc = refs_list_refs(c, &refs, &nr)) == 0 &&
        (rc = cat_check_unreferenced(refs, nr, id)) == VMT_EBUSY) {
        char why[256];
        snprintf(why, sizeof(why), "%s", vmt_error_last());
        if (cat_rset(c, key, ver + 1, entry, len) != 0)
            vmt_warn("catalog %s: could not put back %s: %s", c->path, key, vmt_error_last());
        rc = vmt_error_set(VMT_EBUSY, "%s (a ref was set to it while it was being removed)", why);
    }
    free(refs);
    return rc;
}

static int cmp_snap(const void *a, const void *b)
{
    const vmt_catalog_snap *x = a, *y = b;
    if (x->time_ns != y->time_ns)
        return x->time_ns < y->time_ns ? -1 : 1;
    return memcmp(x->id.b, y->id.b, sizeof(x->id.b));
}

static int cmp_snap_id(const void *a, const void *b)
{
    return memcmp(((const vmt_catalog_snap *)a)->id.b, ((const vmt_catalog_snap *)b)->id.b,
                  sizeof(vmt_id));
}

/* cat_read_fn over read_entry. */
static int read_entry_key(vmt_catalog *c, const char *key, void *elem, bool *present)
{
    return read_entry(c, key, elem, present);
}

static int refs_list_snapshots(vmt_catalog *c, vmt_catalog_snap **out, size_t *n)
{
    void *all = NULL;
    size_t k = 0;
    int rc = cat_read_keys(c, SNAP_PREFIX, sizeof(vmt_catalog_snap), read_entry_key, &all, &k);
    if (rc)
        return rc;
    vmt_catalog_snap *v = all;
    /* parent_present: look each parent up among the entries (by id). */
    qsort(v, k, sizeof(*v), cmp_snap_id);
    for (size_t i = 0; i < k; i++) {
        vmt_catalog_snap probe = {.id = v[i].parent};
        v[i].parent_present =
            v[i].has_parent && bsearch(&probe, v, k, sizeof(*v), cmp_snap_id) != NULL;
    }
    qsort(v, k, sizeof(*v), cmp_snap);
    *out = v;
    *n = k;
    return 0;
}

/* cat_read_fn for roots: the id of a snapshot entry or of a tag or HEAD;
 * other keys (registrations, the format) are skipped. */
static int read_root_key(vmt_catalog *c, const char *key, void *elem, bool *present)
{
    char ref[CATALOG_REF_MAX];
    uint64_t ver;
    if (strncmp(key, SNAP_PREFIX, strlen(SNAP_PREFIX)) == 0) {
        vmt_catalog_snap s;
        int rc = read_entry(c, key, &s, present);
        if (rc == 0 && *present)
            memcpy(elem, &s.id, sizeof(vmt_id));
        return rc;
    }
    if (!key_ref(key, ref))
        return 0;
    return read_ref(c, ref, key, elem, present, &ver);
}

/* GC roots with one listing of the namespace (a RADOS listing is
 * O(objects of the store)), not one for the entries and one for the refs. */
static int refs_roots(vmt_catalog *c, vmt_id **out, size_t *n)
{
    void *v = NULL;
    int rc = cat_read_keys(c, CAT_REF_PREFIX, sizeof(vmt_id), read_root_key, &v, n);
    if (rc == 0)
        *out = v;
    return rc;
}

static int refs_find_prefix(vmt_catalog *c, const char *lo, vmt_id *ids, size_t cap, size_t *count)
{
    char prefix[CAT_KEY_MAX];
    size_t k = 0;
    void *all = NULL;
    snprintf(prefix, sizeof(prefix), SNAP_PREFIX "%s", lo);
    /* Keys sort as their hex does; tombstones are not snapshots. */
    int rc = cat_read_keys(c, prefix, sizeof(vmt_catalog_snap), read_entry_key, &all, &k);
    if (rc)
        return rc;
    vmt_catalog_snap *v = all;
    for (size_t i = 0; i < k && i < cap; i++)
        ids[i] = v[i].id;
    *count = k;
    free(v);
    return 0;
}

const cat_ops cat_refs_ops = {
    .name = "refs",
    .close = refs_close,
    .add_snapshot = refs_add_snapshot,
    .remove_snapshot = refs_remove_snapshot,
    .list_snapshots = refs_list_snapshots,
    .get_snapshot = refs_get_snapshot,
    .find_prefix = refs_find_prefix,
    .get_ref = refs_get_ref,
    .set_ref = refs_set_ref,
    .delete_ref = refs_delete_ref,
    .list_refs = refs_list_refs,
    .register_vm = cat_refs_register_vm,
    .get_vm = cat_refs_get_vm,
    .list_vms = cat_refs_list_vms,
    .unregister_vm = cat_refs_unregister_vm,
    .roots = refs_roots,
};
