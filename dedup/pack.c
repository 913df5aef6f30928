/*
 * Pack files: naming, opening and mapping, creating, appending, rolling to a
 * new pack at the seal size, deleting.  docs/store.md has the layout.
 *
 * Every pack is mapped read-only with MAP_SHARED, so reads are served from
 * the page cache without a syscall.  Sealed packs keep no file descriptor
 * (a store may hold thousands); the active pack and the packs written since
 * the last commit keep theirs until the commit has synced them.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MAP_SLACK (1u << 20) /* room for markers past the seal size */

static void pack_name(char buf[32], uint32_t num)
{
    snprintf(buf, 32, "pack-%08u.vpk", num);
}

static size_t reserve_len(const vmt_store *s)
{
    size_t need =
        VMT_MAX((size_t)s->cfg.pack_size, DD_PACK_HDR + DD_REC_HDR + VMT_STORE_OBJECT_MAX);
    return (need + MAP_SLACK + 4095) & ~(size_t)4095;
}

dd_pack *dd_pack_get(vmt_store *s, uint32_t num)
{
    return num < s->packs_cap ? s->packs[num] : NULL;
}

int dd_fsync_dir(int fd, const char *what)
{
    if (fsync(fd) != 0)
        return vmt_error_errno(VMT_EIO, errno, "fsync of directory %s", what);
    return 0;
}

int dd_fail_sticky(vmt_store *s, int rc)
{
    if (!s->sticky)
        s->sticky = rc ? rc : VMT_EIO;
    vmt_error("store %s: writes stopped until reopened: %s", s->dir, vmt_error_last());
    return rc;
}

static int compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Parses "pack-NNNNNNNN.vpk" exactly. */
static bool parse_name(const char *name, uint32_t *num)
{
    unsigned v;
    char tail[8];
    if (strlen(name) != 17 || sscanf(name, "pack-%8u.vp%1s", &v, tail) != 2 || tail[0] != 'k')
        return false;
    char check[32];
    pack_name(check, v);
    if (strcmp(check, name) != 0 || v == 0 || v > DD_PACK_NUM_MAX)
        return false;
    *num = v;
    return true;
}

int dd_pack_list(vmt_store *s, uint32_t **nums, size_t *n)
{
    int fd = dup(s->packs_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    size_t cap = 16, cnt = 0;
    uint32_t *v = malloc(cap * sizeof(*v));
    if (!d || !v) {
        if (fd >= 0 && !d)
            close(fd);
        if (d)
            closedir(d);
        free(v);
        return vmt_error_errno(VMT_EIO, errno, "listing %s/%s", s->dir, DD_PACKS_DIR);
    }
    rewinddir(d);
    for (struct dirent *de; (de = readdir(d));) {
        uint32_t num;
        if (!parse_name(de->d_name, &num))
            continue;
        if (cnt == cap) {
            uint32_t *nv = vmt_reallocn(v, cap * 2, sizeof(*v));
            if (!nv) {
                free(v);
                closedir(d);
                return VMT_ENOMEM;
            }
            v = nv;
            cap *= 2;
        }
        v[cnt++] = num;
    }
    closedir(d);
    qsort(v, cnt, sizeof(*v), compare_u32);
    *nums = v;
    *n = cnt;
    return 0;
}

static void set_bad(dd_pack *p, const char *why)
{
    p->bad = true;
    snprintf(p->why, sizeof(p->why), "pack %u: %s", p->num, why);
}

/* Maps p->fd for len bytes; a failure marks the pack bad. */
static void map_pack(dd_pack *p, size_t len)
{
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, p->fd, 0);
    if (m == MAP_FAILED) {
        set_bad(p, strerror(errno));
        return;
    }
    p->map = m;
    p->map_len = len;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i])
            return false;
    }
    return true;
}

/* Classifies the header: torn (a pack whose creation did not reach the
 * disk) or damaged/foreign (reported, never deleted automatically). */
static void check_header(vmt_store *s, dd_pack *p)
{
    if (p->size < DD_PACK_HDR || all_zero(p->map, DD_PACK_HDR)) {
        p->torn = true;
        snprintf(p->why, sizeof(p->why), "pack %u: incomplete (%llu bytes, no header)", p->num,
                 (unsigned long long)p->size);
    } else if (dd_pack_hdr_check(p->map, (size_t)p->size, p->num, s->uuid) != 0) {
        p->hdr_err = true;
        snprintf(p->why, sizeof(p->why), "pack %u: %s", p->num, vmt_error_last());
    }
}

int dd_pack_open(vmt_store *s, uint32_t num, bool reserve, dd_pack **out)
{
    char name[32];
    struct stat st;
    dd_pack *p = calloc(1, sizeof(*p));
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    p->num = num;
    pack_name(name, num);
    p->fd = openat(s->packs_fd, name, (s->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (p->fd < 0 || fstat(p->fd, &st) != 0) {
        set_bad(p, errno == ENOENT ? "file vanished (removed by a gc?)" : strerror(errno));
        *out = p;
        return 0;
    }
    p->size = (uint64_t)st.st_size;
    if (p->size == 0) {
        p->torn = true;
        snprintf(p->why, sizeof(p->why), "pack %u: empty file", num);
    } else
        map_pack(p, reserve ? VMT_MAX(reserve_len(s), (size_t)p->size) : (size_t)p->size);
    if (p->map)
        check_header(s, p);
    if (!reserve) {
        close(p->fd);
        p->fd = -1;
    }
    *out = p;
    return 0;
}

int dd_pack_remap(vmt_store *s, dd_pack *p)
{
    char name[32];
    size_t len = VMT_MAX(reserve_len(s), (size_t)p->size);
    if (p->fd < 0) {
        pack_name(name, p->num);
        p->fd = openat(s->packs_fd, name, O_RDWR | O_CLOEXEC);
        if (p->fd < 0)
            return vmt_error_errno(VMT_EIO, errno, "opening pack %u", p->num);
    }
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, p->fd, 0);
    if (m == MAP_FAILED)
        return vmt_error_errno(VMT_EIO, errno, "mapping pack %u", p->num);
    /* Swapping the mapping needs the layout lock: readers may be in it. */
    pthread_rwlock_wrlock(&s->layout);
    if (p->map)
        munmap(p->map, p->map_len);
    p->map = m;
    p->map_len = len;
    pthread_rwlock_unlock(&s->layout);
    return 0;
}

int dd_pack_create(vmt_store *s, uint32_t num, dd_pack **out)
{
    char name[32];
    uint8_t hdr[DD_PACK_HDR];
    if (num == 0 || num > DD_PACK_NUM_MAX)
        return vmt_error_set(VMT_ERANGE, "pack numbers exhausted (%u)", num);
    dd_pack *p = calloc(1, sizeof(*p));
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    p->num = num;
    pack_name(name, num);
    p->fd = openat(s->packs_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (p->fd < 0) {
        free(p);
        return vmt_error_errno(VMT_EIO, errno, "creating %s/%s/%s", s->dir, DD_PACKS_DIR, name);
    }
    s->dir_dirty = true;
    dd_pack_hdr_encode(hdr, num, s->uuid);
    if (pwrite(p->fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr)) {
        int e = errno;
        dd_pack_close(p);
        return vmt_error_errno(VMT_EIO, e, "writing the header of pack %u", num);
    }
    p->size = DD_PACK_HDR;
    map_pack(p, reserve_len(s));
    if (p->bad) {
        int rc = vmt_error_set(VMT_EIO, "%s", p->why);
        dd_pack_close(p);
        return rc;
    }
    *out = p;
    return 0;
}

int dd_pack_install(vmt_store *s, dd_pack *p)
{
    int rc = 0;
    pthread_rwlock_wrlock(&s->layout);
    if (p->num >= s->packs_cap) {
        uint32_t ncap = VMT_MAX(s->packs_cap * 2, p->num + 16);
        dd_pack **np = vmt_reallocn(s->packs, ncap, sizeof(*np));
        if (np) {
            memset(np + s->packs_cap, 0, (ncap - s->packs_cap) * sizeof(*np));
            s->packs = np;
            s->packs_cap = ncap;
        } else {
            rc = VMT_ENOMEM;
        }
    }
    if (rc == 0) {
        s->packs[p->num] = p;
        if (p->num > s->last_pack)
            s->last_pack = p->num;
    }
    pthread_rwlock_unlock(&s->layout);
    return rc;
}

void dd_pack_close(dd_pack *p)
{
    if (!p)
        return;
    if (p->map)
        munmap(p->map, p->map_len);
    if (p->fd >= 0)
        close(p->fd);
    free(p);
}

/* pwritev until everything is written, advancing through iov. */
static int write_all(int fd, struct iovec *iov, int n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return vmt_error_errno(VMT_EIO, w < 0 ? errno : ENOSPC, "writing a pack");
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

int dd_append(vmt_store *s, const struct iovec *iov, int iovcnt, size_t total)
{
    dd_pack *p = s->active;
    struct iovec local[64];
    if (iovcnt > 64 || p->size + total > p->map_len)
        return vmt_error_set(VMT_ERR, "internal: append of %zu bytes does not fit pack %u", total,
                             p->num);
    memcpy(local, iov, (size_t)iovcnt * sizeof(*iov));
    int rc = write_all(p->fd, local, iovcnt, p->size);
    if (rc != 0)
        return dd_fail_sticky(s, vmt_error_wrap(rc, "pack %u", p->num));
    __atomic_store_n(&p->size, p->size + total, __ATOMIC_RELEASE);
    s->since_index += total;
    if (!s->dirty_from)
        s->dirty_from = p->num;
    return 0;
}

bool dd_fits(const vmt_store *s, size_t reclen, size_t pending)
{
    uint64_t used = s->active->size + pending;
    return used + reclen <= s->cfg.pack_size || used == DD_PACK_HDR;
}

int dd_roll(vmt_store *s)
{
    dd_pack *np;
    int rc = dd_pack_create(s, s->last_pack + 1, &np);
    if (rc == 0)
        rc = dd_pack_install(s, np);
    if (rc != 0)
        return dd_fail_sticky(s, rc);
    /* The old pack keeps its fd until the next commit has synced it. */
    s->active = np;
    return 0;
}

int dd_appender_flush(dd_appender *a)
{
    if (a->niov == 0)
        return 0;
    int rc = dd_append(a->s, a->iov, a->niov, a->pending);
    a->niov = 0;
    a->pending = 0;
    return rc;
}

int dd_appender_add(dd_appender *a, const uint8_t *rec, size_t len, dd_pos *at)
{
    int rc = dd_active(a->s);
    if (rc == 0 && !dd_fits(a->s, len, a->pending)) {
        if ((rc = dd_appender_flush(a)) == 0)
            rc = dd_roll(a->s);
    }
    if (rc != 0)
        return rc;
    struct iovec *last = a->niov ? &a->iov[a->niov - 1] : NULL;
    if (last && (const uint8_t *)last->iov_base + last->iov_len == rec) {
        last->iov_len += len; /* contiguous with the previous record */
    } else {
        if (a->niov == (int)VMT_ARRAY_SIZE(a->iov) && (rc = dd_appender_flush(a)) != 0)
            return rc;
        a->iov[a->niov++] = (struct iovec){(void *)rec, len};
    }
    *at = (dd_pos){a->s->active->num, a->s->active->size + a->pending};
    a->pending += len;
    return 0;
}

int dd_active(vmt_store *s)
{
    if (s->sticky)
        return vmt_error_set(s->sticky, "an earlier write to %s failed; reopen the store", s->dir);
    return s->active ? 0 : dd_roll(s);
}

int dd_pack_delete(vmt_store *s, uint32_t num)
{
    char name[32];
    pthread_rwlock_wrlock(&s->layout);
    dd_pack *p = dd_pack_get(s, num);
    if (p)
        s->packs[num] = NULL;
    pthread_rwlock_unlock(&s->layout);
    dd_pack_close(p);
    pack_name(name, num);
    s->dir_dirty = true;
    if (unlinkat(s->packs_fd, name, 0) != 0 && errno != ENOENT)
        return vmt_error_errno(VMT_EIO, errno, "deleting pack %u", num);
    return 0;
}

uint64_t dd_disk_bytes(vmt_store *s)
{
    uint64_t n = 0;
    pthread_rwlock_rdlock(&s->layout);
    for (uint32_t i = 0; i < s->packs_cap; i++) {
        if (s->packs[i])
            n += __atomic_load_n(&s->packs[i]->size, __ATOMIC_ACQUIRE);
    }
    pthread_rwlock_unlock(&s->layout);
    return n;
}
