/*
 * The local read cache of a RADOS store (be_rados_cache.h;
 * docs/store-backends.md, "The local read cache").
 *
 * Files:  DIR/KEY.vpk     one sealed pack, exactly its bytes
 *         DIR/tmp-*       a copy being written (removed when stale)
 *         DIR/.lock       flock'ed by the one process sweeping at a time
 * Nothing is ever written in place, so a reader that mapped a file keeps
 * consistent bytes even when another process replaces or removes it (the
 * inode lives while mapped).  Nothing is fsync'ed either: after a power
 * loss a file may be short or hold zeros, which the size check, the pack
 * header check and the records' checksums catch; the object is then
 * fetched again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "be_rados_cache.h"
#include "vmtree/util.h"

#define SUFFIX ".vpk"
#define TMP_STALE_S 600 /* a tmp file this old belongs to a writer that died */
#define SWEEP_FILES_MAX 65536u

struct dd_pcache {
    char *dir;
    int dfd;
    uint64_t max;
    uint64_t fills, evicted; /* atomic */
    unsigned seq;            /* atomic: tmp names */
};

int dd_pcache_open(const char *dir, uint64_t max_bytes, dd_pcache **out)
{
    if (max_bytes < DD_PCACHE_SIZE_MIN)
        return vmt_error_set(VMT_EINVAL, "read cache %s: cache_size below the minimum of 1 MiB",
                             dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return vmt_error_errno(VMT_EIO, errno, "read cache: creating %s", dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return vmt_error_errno(errno == ENOENT ? VMT_ENOENT : VMT_EIO, errno,
                               "read cache: opening %s", dir);
    dd_pcache *c = calloc(1, sizeof(*c));
    if (!c || !(c->dir = strdup(dir))) {
        free(c);
        close(dfd);
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    }
    c->dfd = dfd;
    c->max = max_bytes;
    *out = c;
    return 0;
}

void dd_pcache_close(dd_pcache *c)
{
    if (!c)
        return;
    close(c->dfd);
    free(c->dir);
    free(c);
}

const char *dd_pcache_dir(const dd_pcache *c)
{
    return c->dir;
}

void dd_pcache_key(const char *scope, const char *name, uint64_t len, const uint8_t tag[16],
                   char key[DD_PCACHE_KEY_LEN + 1])
{
    uint8_t buf[512];
    size_t ls = strnlen(scope, 255), ln = strnlen(name, 223), n = 0;
    memcpy(buf, scope, ls);
    buf[ls] = '\0';
    n = ls + 1;
    memcpy(buf + n, name, ln);
    buf[n + ln] = '\0';
    n += ln + 1;
    memcpy(buf + n, &len, sizeof(len));
    n += sizeof(len);
    memcpy(buf + n, tag, 16);
    n += 16;
    XXH128_hash_t h = XXH3_128bits(buf, n);
    snprintf(key, DD_PCACHE_KEY_LEN + 1, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
}

static void file_name(char *buf, size_t cap, const char *key)
{
    snprintf(buf, cap, "%s" SUFFIX, key);
}

int dd_pcache_map(dd_pcache *c, const char *key, size_t len, uint8_t **out)
{
    char name[64];
    struct stat st;
    file_name(name, sizeof(name), key);
    int fd = openat(c->dfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? VMT_ENOENT
                               : vmt_error_errno(VMT_EIO, errno, "read cache: %s/%s", c->dir, name);
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != len || len == 0) {
        /* A copy cut short (a crash) or of something else: useless. */
        unlinkat(c->dfd, name, 0);
        close(fd);
        return VMT_ENOENT;
    }
    /* Populated at once: one call instead of a fault per page at first use. */
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    int err = errno;
    if (m != MAP_FAILED)
        futimens(fd, NULL); /* used now: the LRU order is by mtime */
    close(fd);
    if (m == MAP_FAILED)
        return vmt_error_errno(VMT_EIO, err, "read cache: mapping %s/%s", c->dir, name);
    *out = m;
    return 0;
}

typedef struct cfile {
    char name[64];
    uint64_t size;
    struct timespec mtime;
} cfile;

static int by_mtime(const void *a, const void *b)
{
    const cfile *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec)
        return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    return (x->mtime.tv_nsec > y->mtime.tv_nsec) - (x->mtime.tv_nsec < y->mtime.tv_nsec);
}

/* Lists the cache's files (removing stale tmp files); *total their bytes. */
static cfile *list_files(dd_pcache *c, size_t *n, uint64_t *total)
{
    int fd = openat(c->dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    size_t cap = 0;
    cfile *v = NULL;
    struct dirent *de;
    time_t now = time(NULL);
    *n = 0;
    *total = 0;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    while ((de = readdir(d)) != NULL && *n < SWEEP_FILES_MAX) {
        struct stat st;
        size_t l = strlen(de->d_name);
        bool tmp = strncmp(de->d_name, "tmp-", 4) == 0;
        bool ours = l == DD_PCACHE_KEY_LEN + strlen(SUFFIX) &&
                    strcmp(de->d_name + DD_PCACHE_KEY_LEN, SUFFIX) == 0;
        if ((!tmp && !ours) || fstatat(c->dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        if (tmp) {
            if (now - st.st_mtime > TMP_STALE_S)
                unlinkat(c->dfd, de->d_name, 0);
            continue;
        }
        if (*n == cap) {
            cfile *nv = vmt_reallocn(v, cap ? cap * 2 : 64, sizeof(*v));
            if (!nv)
                break;
            v = nv;
            cap = cap ? cap * 2 : 64;
        }
        snprintf(v[*n].name, sizeof(v[*n].name), "%s", de->d_name);
        v[*n].size = (uint64_t)st.st_size;
        v[*n].mtime = st.st_mtim;
        *total += (uint64_t)st.st_size;
        (*n)++;
    }
    closedir(d);
    return v;
}

/* Removes least recently used files until the directory fits its bound.
 * One process sweeps at a time (flock), and every one that added a file
 * sweeps after it: one that skipped while another swept would leave its
 * file uncounted by that sweep's listing, and the directory over its bound
 * (seen: two processes filling at once ended above it).  A sweep lists one
 * directory, so the wait is short. */
static void sweep(dd_pcache *c, const char *keep)
{
    int lfd = openat(c->dfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0)
        return;
    int r;
    while ((r = flock(lfd, LOCK_EX)) != 0 && errno == EINTR)
        ;
    if (r != 0) {
        close(lfd);
        return;
    }
    size_t n = 0;
    uint64_t total = 0;
    cfile *v = list_files(c, &n, &total);
    if (v && total > c->max) {
        qsort(v, n, sizeof(*v), by_mtime);
        for (size_t i = 0; i < n && total > c->max; i++) {
            if (strcmp(v[i].name, keep) == 0)
                continue;
            /* Another process may have removed it first: fine. */
            if (unlinkat(c->dfd, v[i].name, 0) == 0)
                __atomic_add_fetch(&c->evicted, 1, __ATOMIC_RELAXED);
            total -= v[i].size;
        }
    }
    free(v);
    flock(lfd, LOCK_UN);
    close(lfd);
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int dd_pcache_put(dd_pcache *c, const char *key, const void *data, size_t len)
{
    char name[64], tmp[96];
    if (len > c->max || len == 0)
        return 0;
    file_name(name, sizeof(name), key);
    snprintf(tmp, sizeof(tmp), "tmp-%ld-%u-%s", (long)getpid(),
             __atomic_add_fetch(&c->seq, 1, __ATOMIC_RELAXED), name);
    int fd = openat(c->dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "read cache: creating %s/%s", c->dir, tmp);
    int rc = write_all(fd, data, len);
    int err = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        err = errno;
    }
    if (rc == 0 && renameat(c->dfd, tmp, c->dfd, name) != 0) {
        rc = -1;
        err = errno;
    }
    if (rc != 0) {
        unlinkat(c->dfd, tmp, 0);
        return vmt_error_errno(VMT_EIO, err, "read cache: writing %s/%s", c->dir, name);
    }
    __atomic_add_fetch(&c->fills, 1, __ATOMIC_RELAXED);
    sweep(c, name);
    return 0;
}

int dd_pcache_begin(dd_pcache *c, const char *key, size_t len, dd_pcache_fill *f)
{
    memset(f, 0, sizeof(*f));
    if (len > c->max || len == 0)
        return vmt_error_set(VMT_ERANGE, "read cache: %zu bytes do not fit its bound", len);
    file_name(f->name, sizeof(f->name), key);
    snprintf(f->tmp, sizeof(f->tmp), "tmp-%ld-%u-%s", (long)getpid(),
             __atomic_add_fetch(&c->seq, 1, __ATOMIC_RELAXED), f->name);
    int fd = openat(c->dfd, f->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "read cache: creating %s/%s", c->dir, f->tmp);
    void *m = MAP_FAILED;
    int err = fallocate(fd, 0, 0, (off_t)len) == 0 ? 0 : errno;
    if (err == 0 && (m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED)
        err = errno;
    close(fd);
    if (err != 0) {
        unlinkat(c->dfd, f->tmp, 0);
        return vmt_error_errno(VMT_EIO, err, "read cache: reserving %zu bytes in %s", len, c->dir);
    }
    f->map = m;
    f->len = len;
    return 0;
}

int dd_pcache_commit(dd_pcache *c, dd_pcache_fill *f)
{
    mprotect(f->map, f->len, PROT_READ);
    if (renameat(c->dfd, f->tmp, c->dfd, f->name) != 0) {
        int err = errno;
        unlinkat(c->dfd, f->tmp, 0);
        return vmt_error_errno(VMT_EIO, err, "read cache: publishing %s/%s", c->dir, f->name);
    }
    __atomic_add_fetch(&c->fills, 1, __ATOMIC_RELAXED);
    sweep(c, f->name);
    return 0;
}

void dd_pcache_abort(dd_pcache *c, dd_pcache_fill *f)
{
    if (f->map)
        munmap(f->map, f->len);
    unlinkat(c->dfd, f->tmp, 0);
    f->map = NULL;
}

void dd_pcache_drop(dd_pcache *c, const char *key)
{
    char name[64];
    file_name(name, sizeof(name), key);
    unlinkat(c->dfd, name, 0);
}

void dd_pcache_counters(const dd_pcache *c, uint64_t *fills, uint64_t *evicted)
{
    *fills = __atomic_load_n(&c->fills, __ATOMIC_RELAXED);
    *evicted = __atomic_load_n(&c->evicted, __ATOMIC_RELAXED);
}
