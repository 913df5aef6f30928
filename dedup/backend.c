/* Backend selection and the whole-object helpers every backend shares. */
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

int dd_backend_get(dd_backend *b, const char *name, size_t cap, uint8_t **data, size_t *len)
{
    dd_bfile *f;
    uint64_t size = 0;
    size_t got = 0;
    int rc = b->ops->open(b, name, DD_BF_READ, &f);
    if (rc != 0)
        return rc;
    rc = b->ops->size(f, &size);
    if (rc == 0 && size > cap)
        rc = vmt_error_set(VMT_ECORRUPT, "%s is larger than %zu bytes", name, cap);
    uint8_t *buf = rc == 0 ? malloc(size ? (size_t)size : 1) : NULL;
    if (rc == 0 && !buf)
        rc = vmt_error_set(VMT_ENOMEM, "out of memory reading %s", name);
    if (rc == 0)
        rc = b->ops->pread(f, buf, (size_t)size, 0, &got);
    if (rc == 0 && got != size)
        rc = vmt_error_set(VMT_EIO, "%s shrank while being read", name);
    b->ops->close(f);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *data = buf;
    *len = (size_t)size;
    return 0;
}
