/*
 * Restore into guest RAM: the parts both modes share (eager:
 * snap_restore_eager.c, lazy: snap_restore_lazy.c).  Zero pages are
 * skipped: the range is emptied first (FALLOC_FL_PUNCH_HOLE on the memfd),
 * so they read as zero without being touched or allocated.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "restore_internal.h"

void restore_fail(vmt_restore *r, int rc)
{
    pthread_mutex_lock(&r->mu);
    if (!r->err) {
        r->err = rc;
        snprintf(r->errmsg, sizeof(r->errmsg), "%s", vmt_error_last());
        atomic_store(&r->failed, true);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void restore_complete(vmt_restore *r)
{
    pthread_mutex_lock(&r->mu);
    if (!r->done) {
        r->done = true;
        atomic_store(&r->complete_ns, VMT_MAX(vmt_now_ns() - r->t0, (uint64_t)1));
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ---- common ------------------------------------------------------------- */

static int collect_pfns(vmt_restore *r)
{
    r->nnz = vmt_map_nonzero(r->map);
    atomic_store(&r->pages_total, r->nnz);
    r->pfns = vmt_mallocn(r->nnz ? r->nnz : 1, sizeof(uint64_t));
    if (!r->pfns)
        return VMT_ENOMEM;
    uint64_t k = 0;
    for (uint64_t p = 0; p < r->npages && k < r->nnz; p++)
        if (!vmt_id_is_zero_page(vmt_map_get(r->map, p)))
            r->pfns[k++] = p;
    return 0;
}

/* Empties the RAM range so that every page reads zero and is "missing". */
static int punch_ram(vmt_restore *r)
{
    if (r->ram_fd < 0)
        return 0;
    if (fallocate(r->ram_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                  (off_t)(r->npages * VMT_PAGE_SIZE)) != 0)
        return vmt_error_errno(VMT_EIO, errno, "restore: emptying guest RAM (fd %d)", r->ram_fd);
    return 0;
}

static int check_args(const vmt_id *root, const uint8_t *ram, int ram_fd, uint64_t ram_size,
                      const vmt_restore_opts *o)
{
    if (!root || !ram || !o)
        return vmt_error_set(VMT_EINVAL, "vmt_restore_open: NULL argument");
    if (ram_size == 0 || ram_size % VMT_PAGE_SIZE || ((uintptr_t)ram % VMT_PAGE_SIZE))
        return vmt_error_set(VMT_EINVAL, "restore: RAM of %llu bytes at %p is not page-aligned",
                             (unsigned long long)ram_size, (const void *)ram);
    if (o->mode != VMT_RESTORE_EAGER && o->mode != VMT_RESTORE_LAZY)
        return vmt_error_set(VMT_EINVAL, "restore: unknown mode %d", (int)o->mode);
    if (o->mode == VMT_RESTORE_LAZY && ram_fd < 0)
        return vmt_error_set(VMT_EINVAL, "restore: lazy mode needs the RAM's memfd");
    return 0;
}

static int restore_init(vmt_restore *r, vmt_store *s, uint8_t *ram, int ram_fd, uint64_t ram_size,
                        const vmt_restore_opts *o)
{
    r->t0 = vmt_now_ns();
    r->s = s;
    r->ram = ram;
    r->ram_fd = ram_fd;
    r->npages = ram_size / VMT_PAGE_SIZE;
    r->o = *o;
    r->uffd = r->stop_fd = -1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0 || pthread_mutex_init(&r->mu, NULL) != 0)
        return vmt_error_set(VMT_ERR, "restore: cannot initialise a lock");
    return 0;
}

int vmt_restore_open(vmt_restore **out, vmt_store *s, const vmt_id *map_root, uint8_t *ram,
                     int ram_fd, uint64_t ram_size, const vmt_restore_opts *o)
{
    if (!out || !s)
        return vmt_error_set(VMT_EINVAL, "vmt_restore_open: NULL argument");
    int rc = check_args(map_root, ram, ram_fd, ram_size, o);
    if (rc)
        return rc;
    vmt_restore *r = calloc(1, sizeof(*r));
    if (!r)
        return vmt_error_set(VMT_ENOMEM, "restore: out of memory");
    if ((rc = restore_init(r, s, ram, ram_fd, ram_size, o)) != 0) {
        free(r);
        return rc;
    }
    if (o->mode == VMT_RESTORE_LAZY) {
        rc = punch_ram(r);
        if (rc == 0)
            rc = restore_lazy_start(r, map_root);
    } else {
        rc = vmt_map_load(&r->map, s, map_root, r->npages);
        if (rc == 0 && (rc = collect_pfns(r)) == 0 && (rc = punch_ram(r)) == 0)
            rc = restore_eager(r);
    }
    if (rc) {
        vmt_restore_free(r);
        return rc;
    }
    r->ready_ns = VMT_MAX(vmt_now_ns() - r->t0, (uint64_t)1);
    *out = r;
    return 0;
}

int vmt_restore_wait(vmt_restore *r, uint64_t timeout_ns)
{
    struct timespec dl;
    int rc = 0;

    if (!r)
        return vmt_error_set(VMT_EINVAL, "vmt_restore_wait: NULL argument");
    clock_gettime(CLOCK_MONOTONIC, &dl);
    uint64_t at = (uint64_t)dl.tv_sec * 1000000000ull + (uint64_t)dl.tv_nsec + timeout_ns;
    dl.tv_sec = (time_t)(at / 1000000000ull);
    dl.tv_nsec = (long)(at % 1000000000ull);
    pthread_mutex_lock(&r->mu);
    while (!r->done && !r->err && rc == 0) {
        if (timeout_ns == 0)
            pthread_cond_wait(&r->cv, &r->mu);
        else if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT)
            rc = VMT_ETIMEDOUT;
    }
    int err = r->err;
    pthread_mutex_unlock(&r->mu);
    if (err)
        return vmt_error_set(err, "restore: %s", r->errmsg);
    if (rc)
        return vmt_error_set(rc, "restore: not complete after %llu ms",
                             (unsigned long long)(timeout_ns / 1000000));
    return 0;
}

void vmt_restore_get_stats(vmt_restore *r, vmt_restore_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!r)
        return;
    out->pages_total = atomic_load(&r->pages_total);
    out->pages_loaded = atomic_load(&r->pages_loaded);
    out->pages_faulted = atomic_load(&r->pages_faulted);
    out->zero_faults = atomic_load(&r->zero_faults);
    out->ready_ns = r->ready_ns;
    out->complete_ns = atomic_load(&r->complete_ns);
}

void vmt_restore_free(vmt_restore *r)
{
    if (!r)
        return;
    if (r->o.mode == VMT_RESTORE_LAZY)
        restore_lazy_stop(r);
    vmt_map_free(r->map);
    free(r->pfns);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
