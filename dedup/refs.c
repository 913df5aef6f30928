/*
 * Refs: small named values (a VM's head, a tag) beside the objects, updated
 * with compare-and-swap so that two hosts updating one ref cannot lose an
 * update.  A ref is the object refs/NAME: a u64 version (little-endian,
 * 1 for the first value) and the value.  The backend's ref_cas applies
 * "if the version is still `expect`, write this" atomically: on a
 * directory under flock, on RADOS as one compound op (cmpext + write_full).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define REF_NAME_MAX 128u

static int check_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > REF_NAME_MAX || name[0] == '.' || strstr(name, "..") ||
        (n >= 4 && strcmp(name + n - 4, ".tmp") == 0))
        return vmt_error_set(VMT_EINVAL, "ref name '%s': 1..%u characters, not starting with '.' "
                                         "nor ending in .tmp", name, REF_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == '@'))
            return vmt_error_set(VMT_EINVAL, "ref name '%s': only letters, digits and -_.@",
                                 name);
    }
    return 0;
}

int vmt_store_ref_get(vmt_store *s, const char *name, void *buf, size_t cap, size_t *len,
                      uint64_t *version)
{
    char oid[16 + REF_NAME_MAX];
    uint8_t *data;
    size_t n;
    int rc = check_name(name);
    if (rc != 0)
        return rc;
    snprintf(oid, sizeof(oid), DD_REFS_DIR "/%s", name);
    rc = dd_backend_get(s->be, oid, 8 + VMT_STORE_REF_MAX, &data, &n);
    if (rc == VMT_ENOENT)
        return vmt_error_set(VMT_ENOENT, "no ref %s in %s", name, s->dir);
    if (rc != 0)
        return rc;
    if (n < 8 || dd_get64(data) == 0)
        rc = vmt_error_set(VMT_ECORRUPT, "ref %s in %s is damaged (%zu bytes)", name, s->dir, n);
    if (rc == 0) {
        if (version)
            *version = dd_get64(data);
        *len = n - 8;
        if (n - 8 > cap)
            rc = vmt_error_set(VMT_ERANGE, "ref %s holds %zu bytes, the buffer %zu", name, n - 8,
                               cap);
        else
            memcpy(buf, data + 8, n - 8);
    }
    free(data);
    return rc;
}

struct vmt_store_ref_watch {
    dd_backend *be;
    void *handle;
    vmt_store_ref_fn fn;
    void *ctx;
    char name[REF_NAME_MAX + 1];
};

static void watch_fired(void *arg)
{
    vmt_store_ref_watch *w = arg;
    w->fn(w->ctx, w->name);
}

/* For what only a shared store does (`what`, when the backend has the op):
 * checks the name and writes the ref's object name into oid. */
static int shared_ref(vmt_store *s, const char *name, bool has_op, const char *what,
                      char oid[16 + REF_NAME_MAX])
{
    int rc = check_name(name);
    if (rc != 0)
        return rc;
    if (!has_op)
        return vmt_error_set(VMT_EUNSUPPORTED,
                             "%s needs a shared store (rados://); a %s store has one host, "
                             "which sees its own updates",
                             what, s->be->ops->scheme);
    snprintf(oid, 16 + REF_NAME_MAX, DD_REFS_DIR "/%s", name);
    return 0;
}

int vmt_store_ref_watch_start(vmt_store *s, const char *name, vmt_store_ref_fn fn, void *ctx,
                              vmt_store_ref_watch **out)
{
    char oid[16 + REF_NAME_MAX];
    int rc = shared_ref(s, name, s->be->ops->ref_watch != NULL, "watching refs", oid);
    if (rc != 0)
        return rc;
    vmt_store_ref_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    *w = (vmt_store_ref_watch){.be = s->be, .fn = fn, .ctx = ctx};
    snprintf(w->name, sizeof(w->name), "%s", name);
    rc = s->be->ops->ref_watch(s->be, oid, watch_fired, w, &w->handle);
    if (rc != 0) {
        free(w);
        return rc == VMT_ENOENT ? vmt_error_set(VMT_ENOENT, "no ref %s to watch", name) : rc;
    }
    *out = w;
    return 0;
}

void vmt_store_ref_watch_stop(vmt_store_ref_watch *w)
{
    if (!w)
        return;
    w->be->ops->ref_unwatch(w->be, w->handle);
    free(w);
}

int vmt_store_ref_notify(vmt_store *s, const char *name)
{
    char oid[16 + REF_NAME_MAX];
    int rc = shared_ref(s, name, s->be->ops->ref_notify != NULL, "notifying ref watchers", oid);
    return rc ? rc : s->be->ops->ref_notify(s->be, oid);
}

int vmt_store_ref_set(vmt_store *s, const char *name, uint64_t expect, const void *data,
                      size_t len, uint64_t *version)
{
    char oid[16 + REF_NAME_MAX];
    uint8_t rec[8 + VMT_STORE_REF_MAX];
    int rc = check_name(name);
    if (rc != 0)
        return rc;
    if (len > VMT_STORE_REF_MAX || expect == UINT64_MAX)
        return vmt_error_set(VMT_EINVAL, "ref %s: %zu bytes (at most %u)", name, len,
                             VMT_STORE_REF_MAX);
    if (!s->be->ops->ref_cas)
        return vmt_error_set(VMT_EUNSUPPORTED, "%s backend keeps no refs", s->be->ops->scheme);
    snprintf(oid, sizeof(oid), DD_REFS_DIR "/%s", name);
    dd_put64(rec, expect + 1);
    memcpy(rec + 8, data, len);
    rc = s->be->ops->ref_cas(s->be, oid, expect, rec, 8 + len);
    if (rc == VMT_EBUSY)
        return vmt_error_set(VMT_EBUSY,
                             "ref %s changed under you: it is no longer at version %llu (read it "
                             "again and retry)",
                             name, (unsigned long long)expect);
    if (rc != 0)
        return vmt_error_wrap(rc, "setting ref %s in %s", name, s->dir);
    if (version)
        *version = expect + 1;
    return 0;
}

typedef struct ref_lister {
    const char *prefix;
    size_t plen;
    vmt_store_ref_list_fn fn;
    void *ctx;
    bool called; /* the folder exists: an error after this is the callback's */
} ref_lister;

/* Skips what is not a ref: the directory backend's refs/.lock and the
 * staging files NAME.tmp of a replacement in progress. */
static int list_one(void *arg, const char *name)
{
    ref_lister *l = arg;
    size_t n = strlen(name);
    l->called = true;
    if (name[0] == '.' || (n >= 4 && strcmp(name + n - 4, ".tmp") == 0) || n > REF_NAME_MAX ||
        strncmp(name, l->prefix, l->plen) != 0)
        return 0;
    return l->fn(l->ctx, name);
}

int vmt_store_ref_list(vmt_store *s, const char *prefix, vmt_store_ref_list_fn fn, void *ctx)
{
    if (!s || !prefix || !fn)
        return vmt_error_set(VMT_EINVAL, "vmt_store_ref_list: NULL argument");
    ref_lister l = {.prefix = prefix, .plen = strlen(prefix), .fn = fn, .ctx = ctx};
    int rc = s->be->ops->list(s->be, DD_REFS_DIR, list_one, &l);
    if (rc == VMT_ECORRUPT && !l.called) {
        /* A directory store made before refs existed has no refs/ yet (it
         * appears with the first ref): no refs. */
        vmt_error_clear();
        return 0;
    }
    return rc;
}
