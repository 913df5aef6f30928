/* Backend selection and the whole-object helpers every backend shares. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "internal.h"

bool dd_backend_is_rados(const char *where)
{
    return strncmp(where, "rados://", 8) == 0;
}

int dd_backend_open(const char *where, bool create, dd_backend **out)
{
    *out = NULL;
    if (dd_backend_is_rados(where))
        return dd_be_rados_open(where, create, out);
    return dd_be_dir_open(where, create, out);
}

static int remove_in(void *ctx, const char *name)
{
    void **c = ctx;
    dd_backend *b = c[0];
    char full[DD_NAME_MAX];
    snprintf(full, sizeof(full), "%s/%s", (const char *)c[1], name);
    return b->ops->remove(b, full);
}

int vmt_store_remove(const char *dir)
{
    dd_backend *b;
    int rc = dd_backend_open(dir, false, &b);
    if (rc != 0)
        return rc;
    dd_bfile *f;
    if ((rc = b->ops->open(b, DD_STORE_FILE, DD_BF_READ, &f)) == 0)
        b->ops->close(f);
    else if (rc == VMT_ENOENT)
        rc = vmt_error_set(VMT_ENOENT, "no store at %s: nothing removed", dir);
    if (rc == 0)
        rc = b->ops->lock(b);
    /* STORE goes first: what is left of a removal cut short is no store. */
    if (rc == 0)
        rc = b->ops->remove(b, DD_STORE_FILE);
    const char *folders[] = {DD_PACKS_DIR, DD_DICTS_DIR, DD_REFS_DIR};
    for (size_t i = 0; rc == 0 && i < 3; i++) {
        rc = b->ops->list(b, folders[i], remove_in, (void *[]){b, (void *)folders[i]});
        if (rc == VMT_ECORRUPT && i == 2)
            rc = 0; /* refs/ appears with the first ref */
    }
    if (rc == 0)
        rc = b->ops->remove(b, DD_INDEX_FILE);
    if (rc == 0)
        return b->ops->purge(b);
    b->ops->destroy(b);
    return vmt_error_wrap(rc, "removing store %s", dir);
}

int dd_backend_put(dd_backend *b, const char *name, const void *data, size_t len)
{
    dd_bfile *f;
    int rc = b->ops->open(b, name, DD_BF_REPLACE, &f);
    if (rc != 0)
        return rc;
    struct iovec iov = {(void *)data, len};
    rc = len ? b->ops->pwritev(f, &iov, 1, 0) : 0;
    if (rc != 0) {
        b->ops->close(f);
        return rc;
    }
    return b->ops->publish(f);
}

int dd_backend_read_at(dd_backend *b, const char *name, void *buf, size_t len, uint64_t off,
                       size_t *got)
{
    if (b->ops->read_at)
        return b->ops->read_at(b, name, buf, len, off, got);
    dd_bfile *f = NULL;
    int rc = b->ops->open(b, name, DD_BF_READ, &f);
    if (rc == 0)
        rc = b->ops->pread(f, buf, len, off, got);
    if (f)
        b->ops->close(f);
    return rc;
}

/* One read of up to cap + 1 bytes, whatever the size said at open: an
 * object replaced meanwhile (a ref) is read whole, old or new, never a mix
 * (RADOS applies a read of an object atomically; a directory's file is the
 * inode opened). */
int dd_backend_get(dd_backend *b, const char *name, size_t cap, uint8_t **data, size_t *len)
{
    size_t got = 0;
    uint8_t *buf = malloc(cap + 1);
    if (!buf)
        return vmt_error_set(VMT_ENOMEM, "out of memory reading %s", name);
    int rc = dd_backend_read_at(b, name, buf, cap + 1, 0, &got);
    if (rc == 0 && got > cap)
        rc = vmt_error_set(VMT_ECORRUPT, "%s is larger than %zu bytes", name, cap);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *data = buf;
    *len = got;
    return 0;
}
