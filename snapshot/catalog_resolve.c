/*
 * Resolving a user's name for a snapshot, and the GC roots.
 *
 * Grammar:  NAME := BASE SUFFIX*,  SUFFIX := '^' | '~' DIGITS?  (~ alone = ~1)
 *   BASE := "tag/" T | "vm/" V "/HEAD" | V "@HEAD" | V | T | HEX
 * A bare word is tried as a VM (its HEAD), then as a tag, then as a unique
 * prefix (>= 4 digits) of a snapshot id in the index.  Names hold no '^',
 * '~', '@' or '/', so the grammar is unambiguous.  Suffixes walk first
 * parents through the index.  Works over any backend (cat_ops).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_internal.h"

#define RESOLVE_NAME_MAX 256u
#define RESOLVE_MAX_STEPS 1000000u
#define RESOLVE_CANDIDATES 8

/* Strips trailing ^ and ~N from s (in place) and returns the steps. */
static int parse_suffixes(char *s, uint64_t *steps)
{
    *steps = 0;
    for (;;) {
        size_t n = strlen(s);
        uint64_t k;
        if (n > 0 && s[n - 1] == '^') {
            k = 1;
            s[n - 1] = '\0';
        } else {
            size_t d = n;
            while (d > 0 && isdigit((unsigned char)s[d - 1]))
                d--;
            if (d == 0 || s[d - 1] != '~')
                return 0;
            k = 1;
            if (d < n && vmt_parse_u64(s + d, 0, RESOLVE_MAX_STEPS, &k) != 0)
                return vmt_error_set(VMT_EINVAL, "\"~%s\": too many generations", s + d);
            s[d - 1] = '\0';
        }
        *steps += k;
        if (*steps > RESOLVE_MAX_STEPS)
            return vmt_error_set(VMT_EINVAL, "more than %u generations", RESOLVE_MAX_STEPS);
    }
}

static bool all_hex(const char *s)
{
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s))
            return false;
    return true;
}

/* A unique snapshot id starting with the hex digits `prefix`. */
static int resolve_prefix(vmt_catalog *c, const char *prefix, vmt_id *out)
{
    char lo[VMT_ID_HEX_LEN + 1], list[RESOLVE_CANDIDATES * (VMT_ID_HEX_LEN + 2) + 8] = "";
    vmt_id ids[RESOLVE_CANDIDATES];
    size_t n = strlen(prefix), count = 0;

    for (size_t i = 0; i <= n; i++)
        lo[i] = (char)tolower((unsigned char)prefix[i]);
    int rc = c->ops->find_prefix(c, lo, ids, RESOLVE_CANDIDATES, &count);
    if (rc)
        return rc;
    if (count == 0)
        return vmt_error_set(VMT_ENOENT, "no snapshot id starts with %s", lo);
    if (count == 1) {
        *out = ids[0];
        return 0;
    }
    for (size_t i = 0; i < VMT_MIN(count, (size_t)RESOLVE_CANDIDATES); i++) {
        char hex[VMT_ID_HEX_LEN + 1];
        vmt_id_to_hex(&ids[i], hex);
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "", hex);
    }
    return vmt_error_set(VMT_EINVAL, "id prefix %s is ambiguous: %s%s", lo, list,
                         count > RESOLVE_CANDIDATES ? ", ..." : "");
}

/* Tries the ref PREFIX NAME SUFFIX; VMT_ENOENT when absent. */
static int try_ref(vmt_catalog *c, const char *prefix, const char *name, const char *suffix,
                   vmt_id *out)
{
    char ref[CATALOG_REF_MAX];

    snprintf(ref, sizeof(ref), "%s%s%s", prefix, name, suffix);
    return c->ops->get_ref(c, ref, out);
}

static int resolve_word(vmt_catalog *c, const char *w, vmt_id *out)
{
    size_t n = strlen(w);
    int rc;

    if (snap_name_valid(w)) {
        if ((rc = try_ref(c, "vm/", w, "/HEAD", out)) != VMT_ENOENT)
            return rc;
        if ((rc = try_ref(c, "tag/", w, "", out)) != VMT_ENOENT)
            return rc;
    }
    if (n >= 4 && n <= VMT_ID_HEX_LEN && all_hex(w))
        return resolve_prefix(c, w, out);
    return vmt_error_set(VMT_ENOENT,
                         "\"%s\" names no VM, tag or snapshot (an id prefix needs "
                         "4 to 32 hex digits)",
                         w);
}

static int resolve_base(vmt_catalog *c, const char *b, vmt_id *out)
{
    const char *at = strchr(b, '@');

    if (strncmp(b, "tag/", 4) == 0 || strncmp(b, "vm/", 3) == 0) {
        if (!cat_ref_valid(b))
            return vmt_error_set(VMT_EINVAL, "\"%s\" is not a valid ref", b);
        return c->ops->get_ref(c, b, out);
    }
    if (at) {
        char name[VMT_SNAP_NAME_MAX];
        size_t n = (size_t)(at - b);
        if (strcmp(at + 1, "HEAD") != 0 || n == 0 || n >= sizeof(name))
            return vmt_error_set(VMT_EINVAL, "\"%s\": expected NAME@HEAD", b);
        memcpy(name, b, n);
        name[n] = '\0';
        if (!snap_name_valid(name))
            return vmt_error_set(VMT_EINVAL, "\"%s\" is not a valid VM name", name);
        int rc = try_ref(c, "vm/", name, "/HEAD", out);
        return rc == VMT_ENOENT ? vmt_error_set(rc, "VM %s has no HEAD", name) : rc;
    }
    return resolve_word(c, b, out);
}

/* The first parent of `id` per the index. */
static int first_parent(vmt_catalog *c, const vmt_id *id, vmt_id *out)
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_catalog_snap e;
    int rc = c->ops->get_snapshot(c, id, &e);
    if (rc)
        return rc;
    if (!e.has_parent) {
        vmt_id_to_hex(id, hex);
        return vmt_error_set(VMT_ENOENT, "snapshot %s has no parent", hex);
    }
    *out = e.parent;
    return 0;
}

int vmt_catalog_resolve(vmt_catalog *c, const char *name, vmt_id *out)
{
    char buf[RESOLVE_NAME_MAX];
    uint64_t steps;
    vmt_id id;

    if (!c || !name || !out)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_resolve: NULL argument");
    size_t n = strnlen(name, sizeof(buf));
    if (n == 0 || n >= sizeof(buf))
        return vmt_error_set(VMT_EINVAL, "a snapshot name has 1..%u bytes", RESOLVE_NAME_MAX - 1);
    memcpy(buf, name, n + 1);
    int rc = parse_suffixes(buf, &steps);
    if (rc == 0 && buf[0] == '\0')
        rc = vmt_error_set(VMT_EINVAL, "\"%s\": nothing before the ~ or ^", name);
    if (rc == 0)
        rc = resolve_base(c, buf, &id);
    for (uint64_t i = 0; rc == 0 && i < steps; i++)
        rc = first_parent(c, &id, &id);
    if (rc)
        return vmt_error_wrap(rc, "resolving \"%s\"", name);
    *out = id;
    return 0;
}

/* ---- GC roots ----------------------------------------------------------- */

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(vmt_id));
}

/* Each id of v[k] once, in id order; returns the count. */
static size_t sort_unique(vmt_id *v, size_t k)
{
    qsort(v, k, sizeof(vmt_id), cmp_id);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || !vmt_id_equal(&v[u - 1], &v[i]))
            v[u++] = v[i];
    return u;
}

/* The backend's own one-pass listing (ops->roots). */
static int unique_roots(vmt_catalog *c, vmt_id **out, size_t *n)
{
    vmt_id *v = NULL;
    size_t k = 0;
    int rc = c->ops->roots(c, &v, &k);
    if (rc)
        return rc;
    *out = v;
    *n = sort_unique(v, k);
    return 0;
}

int vmt_catalog_roots(vmt_catalog *c, vmt_id **out, size_t *n)
{
    vmt_catalog_snap *snaps = NULL;
    vmt_catalog_ref *refs = NULL;
    size_t ns = 0, nr = 0;

    if (!c || !out || !n)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_roots: NULL argument");
    if (c->ops->roots)
        return unique_roots(c, out, n);
    int rc = c->ops->list_snapshots(c, &snaps, &ns);
    if (rc == 0)
        rc = c->ops->list_refs(c, &refs, &nr);
    vmt_id *v = rc == 0 ? vmt_reallocn(NULL, ns + nr + 1, sizeof(vmt_id)) : NULL;
    if (rc == 0 && !v)
        rc = vmt_error_set(VMT_ENOMEM, "catalog: out of memory listing roots");
    size_t k = 0;
    for (size_t i = 0; v && i < ns; i++)
        v[k++] = snaps[i].id;
    for (size_t i = 0; v && i < nr; i++)
        v[k++] = refs[i].id;
    free(snaps);
    free(refs);
    if (rc)
        return rc;
    *out = v;
    *n = sort_unique(v, k);
    return 0;
}
