/*
 * The local directory backend: every name is a file under the store's
 * directory (docs/store.md has the layout).  Packs are mapped MAP_SHARED
 * read-only, so reads come from the page cache without a syscall.
 * Replacement writes name.tmp, fsyncs it, renames it over name and fsyncs
 * the directory; the writer lock is flock(2) on `lock`, holding the PID.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "internal.h"

typedef struct dir_be {
    dd_backend base;
    char *dir;
    int dirfd, lock_fd;
} dir_be;

struct dd_bfile {
    dir_be *b;
    int fd;
    char name[DD_NAME_MAX]; /* for messages, and the final name of a REPLACE file */
    bool staged;   /* REPLACE: writes go to name.tmp */
};

static const dd_backend_ops dir_ops;

static int dir_open(dd_backend *base, const char *name, dd_bmode mode, dd_bfile **out)
{
    dir_be *b = (dir_be *)base;
    char path[DD_NAME_MAX + 8];
    static const int flags[] = {
        [DD_BF_READ] = O_RDONLY,
        [DD_BF_WRITE] = O_RDWR,
        [DD_BF_CREATE] = O_RDWR | O_CREAT | O_EXCL,
        [DD_BF_REPLACE] = O_WRONLY | O_CREAT | O_TRUNC,
    };
    dd_bfile *f = calloc(1, sizeof(*f));
    if (!f)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    f->b = b;
    f->staged = mode == DD_BF_REPLACE;
    snprintf(f->name, sizeof(f->name), "%s", name);
    snprintf(path, sizeof(path), "%s%s", name, f->staged ? ".tmp" : "");
    f->fd = openat(b->dirfd, path, flags[mode] | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        int e = errno;
        free(f);
        if (e == ENOENT && (mode == DD_BF_READ || mode == DD_BF_WRITE))
            return vmt_error_set(VMT_ENOENT, "%s/%s does not exist", b->dir, name);
        return vmt_error_errno(e == EEXIST ? VMT_EEXIST : VMT_EIO, e, "opening %s/%s", b->dir,
                               path);
    }
    *out = f;
    return 0;
}

static int dir_size(dd_bfile *f, uint64_t *out)
{
    struct stat st;
    if (fstat(f->fd, &st) != 0)
        return vmt_error_errno(VMT_EIO, errno, "stat of %s", f->name);
    *out = (uint64_t)st.st_size;
    return 0;
}

static int dir_pread(dd_bfile *f, void *buf, size_t len, uint64_t off, size_t *got)
{
    size_t n = 0;
    while (n < len) {
        ssize_t r = pread(f->fd, (uint8_t *)buf + n, len - n, (off_t)(off + n));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return vmt_error_errno(VMT_EIO, errno, "reading %s", f->name);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *got = n;
    return 0;
}

static int dir_pwritev(dd_bfile *f, const struct iovec *in, int n, uint64_t off)
{
    struct iovec local[64], *iov = local;
    if (n > 64)
        return vmt_error_set(VMT_ERR, "internal: %d pieces in one write", n);
    memcpy(local, in, (size_t)n * sizeof(*in));
    while (n > 0) {
        ssize_t w = pwritev(f->fd, iov, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return vmt_error_errno(VMT_EIO, w < 0 ? errno : ENOSPC, "writing %s", f->name);
        off += (uint64_t)w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int dir_sync(dd_bfile *f)
{
    if (fdatasync(f->fd) != 0)
        return vmt_error_errno(VMT_EIO, errno, "fdatasync of %s", f->name);
    return 0;
}

static int dir_truncate(dd_bfile *f, uint64_t len)
{
    if (ftruncate(f->fd, (off_t)len) != 0)
        return vmt_error_errno(VMT_EIO, errno, "truncating %s", f->name);
    return 0;
}

static int dir_map(dd_bfile *f, size_t len, uint8_t **out)
{
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, f->fd, 0);
    if (m == MAP_FAILED)
        return vmt_error_errno(VMT_EIO, errno, "mapping %s", f->name);
    *out = m;
    return 0;
}

static void dir_unmap(dd_backend *b, uint8_t *p, size_t len)
{
    (void)b;
    if (p)
        munmap(p, len);
}

static void dir_close(dd_bfile *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    free(f);
}

static int fsync_dir_at(dir_be *b, const char *folder)
{
    int fd = folder ? openat(b->dirfd, folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : b->dirfd;
    int rc = 0;
    if (fd < 0 || fsync(fd) != 0)
        rc = vmt_error_errno(VMT_EIO, errno, "fsync of directory %s/%s", b->dir,
                             folder ? folder : ".");
    if (folder && fd >= 0)
        close(fd);
    return rc;
}

/* The folder part of a name ("packs/x" -> "packs"), NULL for the top. */
static const char *folder_of(const char *name, char buf[64])
{
    const char *sl = strrchr(name, '/');
    if (!sl || (size_t)(sl - name) >= 64)
        return NULL;
    memcpy(buf, name, (size_t)(sl - name));
    buf[sl - name] = '\0';
    return buf;
}

static int dir_publish(dd_bfile *f)
{
    char tmp[DD_NAME_MAX + 8], folder[64];
    int rc = f->staged ? 0 : vmt_error_set(VMT_ERR, "internal: publish of a plain file");
    if (rc == 0 && fsync(f->fd) != 0)
        rc = vmt_error_errno(VMT_EIO, errno, "fsync of %s", f->name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->name);
    if (rc == 0 && renameat(f->b->dirfd, tmp, f->b->dirfd, f->name) != 0)
        rc = vmt_error_errno(VMT_EIO, errno, "renaming %s", tmp);
    if (rc == 0)
        rc = fsync_dir_at(f->b, folder_of(f->name, folder));
    dir_close(f);
    return rc;
}

static int dir_remove(dd_backend *base, const char *name)
{
    dir_be *b = (dir_be *)base;
    if (unlinkat(b->dirfd, name, 0) != 0 && errno != ENOENT)
        return vmt_error_errno(VMT_EIO, errno, "deleting %s/%s", b->dir, name);
    return 0;
}

static int dir_list(dd_backend *base, const char *folder, dd_blist_fn fn, void *ctx)
{
    dir_be *b = (dir_be *)base;
    int fd = openat(b->dirfd, folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return vmt_error_errno(e == ENOENT ? VMT_ECORRUPT : VMT_EIO, e, "listing %s/%s", b->dir,
                               folder);
    }
    int rc = 0;
    for (struct dirent *de; rc == 0 && (de = readdir(d));) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            rc = fn(ctx, de->d_name);
    }
    closedir(d);
    return rc;
}

static int dir_sync_folder(dd_backend *base, const char *folder)
{
    return fsync_dir_at((dir_be *)base, folder);
}

static int dir_lock(dd_backend *base)
{
    dir_be *b = (dir_be *)base;
    char buf[32];
    b->lock_fd = openat(b->dirfd, DD_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (b->lock_fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "opening %s/%s", b->dir, DD_LOCK_FILE);
    if (flock(b->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        ssize_t n = pread(b->lock_fd, buf, sizeof(buf) - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        if (e == EWOULDBLOCK)
            return vmt_error_set(VMT_EBUSY, "store %s is open for writing by process %s", b->dir,
                                 buf[0] ? buf : "(unknown pid)");
        return vmt_error_errno(VMT_EIO, e, "locking %s", b->dir);
    }
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (ftruncate(b->lock_fd, 0) != 0 || pwrite(b->lock_fd, buf, (size_t)n, 0) != n)
        return vmt_error_errno(VMT_EIO, errno, "writing %s/%s", b->dir, DD_LOCK_FILE);
    return 0;
}

static int mkdir_p(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
        return vmt_error_set(VMT_ERANGE, "path too long");
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return vmt_error_errno(VMT_EIO, errno, "creating %s", path);
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return vmt_error_errno(VMT_EIO, errno, "creating %s", path);
    return 0;
}

static int refuse_entry(void *ctx, const char *name)
{
    return vmt_error_set(VMT_EEXIST, "%s is not empty (found '%s')", (const char *)ctx, name);
}

static int dir_init(dd_backend *base)
{
    dir_be *b = (dir_be *)base;
    if (faccessat(b->dirfd, DD_STORE_FILE, F_OK, 0) == 0)
        return vmt_error_set(VMT_EEXIST, "%s already holds a store", b->dir);
    int rc = dir_list(base, ".", refuse_entry, b->dir);
    if (rc != 0)
        return rc;
    if ((mkdirat(b->dirfd, DD_PACKS_DIR, 0755) != 0 && errno != EEXIST) ||
        (mkdirat(b->dirfd, DD_DICTS_DIR, 0755) != 0 && errno != EEXIST))
        return vmt_error_errno(VMT_EIO, errno, "creating subdirectories of %s", b->dir);
    return 0;
}

static void dir_destroy(dd_backend *base)
{
    dir_be *b = (dir_be *)base;
    if (!b)
        return;
    if (b->lock_fd >= 0)
        close(b->lock_fd); /* releases the writer lock */
    if (b->dirfd >= 0)
        close(b->dirfd);
    free(b->dir);
    free(b);
}

static int dir_purge(dd_backend *base)
{
    dir_be *b = (dir_be *)base;
    int rc = 0;
    if ((unlinkat(b->dirfd, DD_REFS_DIR, AT_REMOVEDIR) != 0 && errno != ENOENT) ||
        unlinkat(b->dirfd, DD_PACKS_DIR, AT_REMOVEDIR) != 0 ||
        unlinkat(b->dirfd, DD_DICTS_DIR, AT_REMOVEDIR) != 0 ||
        unlinkat(b->dirfd, DD_LOCK_FILE, 0) != 0 || rmdir(b->dir) != 0)
        rc = vmt_error_errno(VMT_EIO, errno, "removing %s (something else is in it?)", b->dir);
    dir_destroy(base);
    return rc;
}

/* The ref's current version: 0 when absent. */
static int ref_version(dir_be *b, const char *name, uint64_t *v)
{
    uint8_t buf[8];
    int fd = openat(b->dirfd, name, O_RDONLY | O_CLOEXEC);
    *v = 0;
    if (fd < 0)
        return errno == ENOENT ? 0 : vmt_error_errno(VMT_EIO, errno, "opening %s", name);
    ssize_t n = pread(fd, buf, 8, 0);
    close(fd);
    if (n != 8)
        return vmt_error_set(VMT_ECORRUPT, "%s/%s is damaged", b->dir, name);
    memcpy(v, buf, 8);
    return 0;
}

/* Compare-and-swap under an exclusive flock of refs/.lock, which every
 * process updating a ref of this store takes. */
static int dir_ref_cas(dd_backend *base, const char *name, uint64_t expect, const uint8_t *rec,
                       size_t len)
{
    dir_be *b = (dir_be *)base;
    uint64_t cur;
    if (mkdirat(b->dirfd, DD_REFS_DIR, 0755) != 0 && errno != EEXIST)
        return vmt_error_errno(VMT_EIO, errno, "creating %s/%s", b->dir, DD_REFS_DIR);
    int lfd = openat(b->dirfd, DD_REFS_DIR "/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lfd < 0)
        return vmt_error_errno(VMT_EIO, errno, "opening %s/%s/.lock", b->dir, DD_REFS_DIR);
    int r;
    while ((r = flock(lfd, LOCK_EX)) != 0 && errno == EINTR)
        ;
    int rc = r != 0 ? vmt_error_errno(VMT_EIO, errno, "locking the refs of %s", b->dir)
                    : ref_version(b, name, &cur);
    if (rc == 0 && cur != expect)
        rc = VMT_EBUSY;
    if (rc == 0)
        rc = dd_backend_put(base, name, rec, len);
    close(lfd); /* releases the flock */
    return rc;
}

static const dd_backend_ops dir_ops = {
    .scheme = "dir",
    .init = dir_init,
    .open = dir_open,
    .size = dir_size,
    .pread = dir_pread,
    .pwritev = dir_pwritev,
    .sync = dir_sync,
    .truncate = dir_truncate,
    .map = dir_map,
    .unmap = dir_unmap,
    .publish = dir_publish,
    .close = dir_close,
    .remove = dir_remove,
    .list = dir_list,
    .sync_folder = dir_sync_folder,
    .lock = dir_lock,
    .purge = dir_purge,
    .ref_cas = dir_ref_cas,
    .destroy = dir_destroy,
};

int dd_be_dir_open(const char *dir, bool create, dd_backend **out)
{
    int rc = create ? mkdir_p(dir) : 0;
    if (rc != 0)
        return rc;
    dir_be *b = calloc(1, sizeof(*b));
    if (!b || !(b->dir = strdup(dir))) {
        free(b);
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    }
    b->base.ops = &dir_ops;
    b->base.where = b->dir;
    b->base.pack_max = VMT_STORE_PACK_MAX;
    b->base.pack_default = VMT_STORE_PACK_DEFAULT;
    b->lock_fd = -1;
    b->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (b->dirfd < 0) {
        int e = errno;
        dir_destroy(&b->base);
        if (e == ENOENT)
            return vmt_error_set(VMT_ENOENT,
                                 "no store at %s (create one with 'vmtree store init')", dir);
        return vmt_error_errno(VMT_EIO, e, "opening %s", dir);
    }
    *out = &b->base;
    return 0;
}
