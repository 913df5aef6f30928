/*
 * Pack files: naming, opening and mapping, creating, appending, rolling to a
 * new pack at the seal size, deleting.  docs/store.md has the layout.
 *
 * Every pack has a read-only view from its backend (a MAP_SHARED mapping of
 * the file for a directory store), so reads are served without a syscall.
 * Sealed packs keep no open handle (a store may hold thousands); the active
 * pack and the packs written since the last commit keep theirs until the
 * commit has synced them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAP_SLACK (1u << 20) /* room for markers past the seal size */

void dd_pack_name(char buf[40], uint32_t num)
{
    snprintf(buf, 40, DD_PACKS_DIR "/pack-%08u.vpk", num);
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

int dd_sync_packs_dir(vmt_store *s)
{
    return s->be->ops->sync_folder(s->be, DD_PACKS_DIR);
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
    char check[40];
    dd_pack_name(check, v);
    if (strcmp(check + sizeof(DD_PACKS_DIR), name) != 0 || v == 0 || v > DD_PACK_NUM_MAX)
        return false;
    *num = v;
    return true;
}

typedef struct pack_lister {
    uint32_t *v;
    size_t n, cap;
} pack_lister;

static int list_one(void *ctx, const char *name)
{
    pack_lister *l = ctx;
    uint32_t num;
    if (!parse_name(name, &num))
        return 0;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        uint32_t *nv = vmt_reallocn(l->v, ncap, sizeof(*nv));
        if (!nv)
            return vmt_error_set(VMT_ENOMEM, "out of memory listing packs");
        l->v = nv;
        l->cap = ncap;
    }
    l->v[l->n++] = num;
    return 0;
}

int dd_pack_list(vmt_store *s, uint32_t **nums, size_t *n)
{
    pack_lister l = {0};
    int rc = s->be->ops->list(s->be, DD_PACKS_DIR, list_one, &l);
    if (rc != 0) {
        free(l.v);
        return vmt_error_wrap(rc, "listing the packs of %s", s->dir);
    }
    if (l.n)
        qsort(l.v, l.n, sizeof(*l.v), compare_u32);
    *nums = l.v;
    *n = l.n;
    return 0;
}

static void set_bad(dd_pack *p, const char *why)
{
    p->bad = true;
    snprintf(p->why, sizeof(p->why), "pack %u: %s", p->num, why);
}

/* Maps p->f for len bytes; a failure marks the pack bad. */
static void map_pack(vmt_store *s, dd_pack *p, size_t len)
{
    uint8_t *m;
    if (s->be->ops->map(p->f, len, &m) != 0) {
        set_bad(p, vmt_error_last());
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
static void check_header(vmt_store *s, dd_pack *p, const uint8_t *hdr)
{
    if (p->size < DD_PACK_HDR || all_zero(hdr, DD_PACK_HDR)) {
        p->torn = true;
        snprintf(p->why, sizeof(p->why), "pack %u: incomplete (%llu bytes, no header)", p->num,
                 (unsigned long long)p->size);
    } else if (dd_pack_hdr_check(hdr, (size_t)p->size, p->num, s->uuid) != 0) {
        p->hdr_err = true;
        snprintf(p->why, sizeof(p->why), "pack %u: %s", p->num, vmt_error_last());
    }
}

/* A pack whose view is fetched later: read and classify its header now. */
static void lazy_header(vmt_store *s, dd_pack *p)
{
    uint8_t hdr[DD_PACK_HDR] = {0};
    size_t got = 0;
    p->map_len = (size_t)p->size;
    if (s->be->ops->pread(p->f, hdr, sizeof(hdr), 0, &got) != 0)
        set_bad(p, vmt_error_last());
    else
        check_header(s, p, hdr);
}

int dd_pack_open(vmt_store *s, uint32_t num, bool reserve, dd_pack **out)
{
    char name[40];
    const dd_backend_ops *ops = s->be->ops;
    dd_pack *p = calloc(1, sizeof(*p));
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    p->num = num;
    p->be = s->be;
    dd_pack_name(name, num);
    int rc = ops->open(s->be, name, s->read_only ? DD_BF_READ : DD_BF_WRITE, &p->f);
    if (rc == 0)
        rc = ops->size(p->f, &p->size);
    if (rc != 0) {
        set_bad(p, rc == VMT_ENOENT ? "file vanished (removed by a gc?)" : vmt_error_last());
        *out = p;
        return 0;
    }
    if (p->size == 0) {
        p->torn = true;
        snprintf(p->why, sizeof(p->why), "pack %u: empty file", num);
    } else if (!reserve && s->be->lazy_views) {
        lazy_header(s, p); /* the view comes at the first read (dd_pack_view) */
    } else {
        map_pack(s, p, reserve ? VMT_MAX(reserve_len(s), (size_t)p->size) : (size_t)p->size);
    }
    if (p->map)
        check_header(s, p, p->map);
    if (!reserve) {
        ops->close(p->f);
        p->f = NULL;
    }
    *out = p;
    return 0;
}

int dd_pack_remap(vmt_store *s, dd_pack *p)
{
    char name[40];
    uint8_t *m;
    size_t len = VMT_MAX(reserve_len(s), (size_t)p->size);
    if (!p->f) {
        dd_pack_name(name, p->num);
        int rc = s->be->ops->open(s->be, name, DD_BF_WRITE, &p->f);
        if (rc != 0)
            return vmt_error_wrap(rc, "opening pack %u", p->num);
    }
    if (s->be->ops->map(p->f, len, &m) != 0)
        return vmt_error_wrap(VMT_EIO, "mapping pack %u", p->num);
    /* Swapping the mapping needs the layout lock: readers may be in it. */
    pthread_rwlock_wrlock(&s->layout);
    s->be->ops->unmap(s->be, p->map, p->map_len);
    p->map = m;
    p->map_len = len;
    pthread_rwlock_unlock(&s->layout);
    return 0;
}

int dd_pack_create(vmt_store *s, uint32_t num, dd_pack **out)
{
    char name[40];
    uint8_t hdr[DD_PACK_HDR];
    if (num == 0 || num > DD_PACK_NUM_MAX)
        return vmt_error_set(VMT_ERANGE, "pack numbers exhausted (%u)", num);
    dd_pack *p = calloc(1, sizeof(*p));
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    p->num = num;
    p->be = s->be;
    dd_pack_name(name, num);
    int rc = s->be->ops->open(s->be, name, DD_BF_CREATE, &p->f);
    if (rc != 0) {
        free(p);
        return vmt_error_wrap(rc, "creating %s in %s", name, s->dir);
    }
    s->dir_dirty = true;
    dd_pack_hdr_encode(hdr, num, s->uuid);
    struct iovec iov = {hdr, sizeof(hdr)};
    if ((rc = s->be->ops->pwritev(p->f, &iov, 1, 0)) != 0) {
        dd_pack_close(p);
        return vmt_error_wrap(rc, "writing the header of pack %u", num);
    }
    p->size = DD_PACK_HDR;
    map_pack(s, p, reserve_len(s));
    if (p->bad) {
        rc = vmt_error_set(VMT_EIO, "%s", p->why);
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
        p->be->ops->unmap(p->be, p->map, p->map_len);
    p->be->ops->close(p->f);
    free(p);
}

int dd_append(vmt_store *s, const struct iovec *iov, int iovcnt, size_t total)
{
    dd_pack *p = s->active;
    if (iovcnt > 64 || p->size + total > p->map_len)
        return vmt_error_set(VMT_ERR, "internal: append of %zu bytes does not fit pack %u", total,
                             p->num);
    int rc = s->be->ops->pwritev(p->f, iov, iovcnt, p->size);
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
    char name[40];
    pthread_rwlock_wrlock(&s->layout);
    dd_pack *p = dd_pack_get(s, num);
    if (p)
        s->packs[num] = NULL;
    pthread_rwlock_unlock(&s->layout);
    dd_views_wait(s); /* a fetch behind a small read may still fill its view */
    dd_pack_close(p);
    dd_pack_name(name, num);
    s->dir_dirty = true;
    int rc = s->be->ops->remove(s->be, name);
    if (rc != 0)
        return vmt_error_wrap(rc, "deleting pack %u", num);
    return 0;
}

int dd_pack_file(vmt_store *s, uint32_t num, dd_bmode mode, dd_bfile **out)
{
    char name[40];
    dd_pack_name(name, num);
    return s->be->ops->open(s->be, name, mode, out);
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
