/*
 * Restore into guest RAM: the parts both modes share and the eager mode.
 *
 * Eager: `threads` workers pull batches of RESTORE_BATCH non-zero pages
 * from an atomic cursor; each batch is one vmt_store_get_pages call (which
 * the store spreads over its own worker pool) into a per-worker bounce
 * buffer, then one pwrite per run of consecutive pages into the memfd
 * (without a memfd: straight into the mapping).  Zero pages are skipped:
 * the range is emptied first (FALLOC_FL_PUNCH_HOLE on the memfd), so they
 * read as zero without being touched or allocated.
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

/* ---- eager -------------------------------------------------------------- */

typedef struct eager_job {
    vmt_restore *r;
    _Atomic uint64_t next; /* index into r->pfns */
    _Atomic bool stop;
} eager_job;

/* Writes n pages (buf slot i for pfn[i], ascending) into the memfd, one
 * pwrite per run of consecutive pfns. */
static int write_runs(vmt_restore *r, const uint64_t *pfn, const uint8_t *buf, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t run = 1;
        while (i + run < n && pfn[i + run] == pfn[i] + run)
            run++;
        const uint8_t *src = buf + i * VMT_PAGE_SIZE;
        size_t left = run * VMT_PAGE_SIZE;
        off_t off = (off_t)(pfn[i] * VMT_PAGE_SIZE);
        while (left > 0) {
            ssize_t w = pwrite(r->ram_fd, src, left, off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return vmt_error_errno(VMT_EIO, w < 0 ? errno : EIO,
                                       "restore: writing guest RAM at page %llu",
                                       (unsigned long long)(off / VMT_PAGE_SIZE));
            src += w;
            left -= (size_t)w;
            off += w;
        }
        i += run;
    }
    return 0;
}

/*
 * One batch.  With the memfd, pages are read into a small bounce buffer
 * and written with pwrite: the kernel then allocates each page without
 * zeroing it and without a page fault, which on a virtualised host is
 * most of the cost of filling fresh memory through the mapping.
 */
static int eager_batch(vmt_restore *r, uint64_t first, uint64_t n, uint8_t *bounce)
{
    vmt_id ids[RESTORE_BATCH];
    void *dst[RESTORE_BATCH];

    for (uint64_t i = 0; i < n; i++) {
        uint64_t pfn = r->pfns[first + i];
        ids[i] = *vmt_map_get(r->map, pfn);
        dst[i] = bounce ? bounce + i * VMT_PAGE_SIZE : r->ram + pfn * VMT_PAGE_SIZE;
    }
    int rc = vmt_store_get_pages(r->s, ids, (size_t)n, dst);
    if (rc == 0 && bounce)
        rc = write_runs(r, r->pfns + first, bounce, (size_t)n);
    return rc;
}

/* One worker; worker 0 (the caller) also reports progress. */
static void eager_work(eager_job *j, bool reporter)
{
    vmt_restore *r = j->r;
    uint8_t *bounce = NULL;
    if (r->ram_fd >= 0 && !(bounce = vmt_mallocn(RESTORE_BATCH, VMT_PAGE_SIZE))) {
        restore_fail(r, VMT_ENOMEM);
        atomic_store(&j->stop, true);
    }
    while (!atomic_load(&j->stop)) {
        uint64_t first = atomic_fetch_add(&j->next, RESTORE_BATCH);
        if (first >= r->nnz)
            break;
        uint64_t n = VMT_MIN((uint64_t)RESTORE_BATCH, r->nnz - first);
        int rc = eager_batch(r, first, n, bounce);
        if (rc) {
            restore_fail(r, rc);
            atomic_store(&j->stop, true);
            break;
        }
        uint64_t done = atomic_fetch_add(&r->pages_loaded, n) + n;
        if (reporter && r->o.progress)
            r->o.progress(r->o.progress_ctx, done, r->nnz);
    }
    free(bounce);
}

static void *eager_thread(void *arg)
{
    eager_work(arg, false);
    return NULL;
}

static unsigned eager_threads(const vmt_restore *r)
{
    unsigned t = r->o.threads;
    if (t == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        t = n > 0 ? (unsigned)n : 1;
    }
    uint64_t batches = VMT_DIV_ROUND_UP(r->nnz, (uint64_t)RESTORE_BATCH);
    t = (unsigned)VMT_MIN((uint64_t)t, VMT_MAX(batches, (uint64_t)1));
    return VMT_MIN(t, RESTORE_MAX_THREADS);
}

static int restore_eager(vmt_restore *r)
{
    pthread_t thr[RESTORE_MAX_THREADS];
    eager_job j = {.r = r};
    unsigned nt = eager_threads(r), started = 1;

    for (; started < nt; started++)
        if (pthread_create(&thr[started], NULL, eager_thread, &j) != 0)
            break; /* run with fewer threads */
    eager_work(&j, true);
    for (unsigned i = 1; i < started; i++)
        pthread_join(thr[i], NULL);
    if (r->err)
        return vmt_error_set(r->err, "%s", r->errmsg);
    restore_complete(r);
    if (r->o.progress)
        r->o.progress(r->o.progress_ctx, r->nnz, r->nnz);
    return 0;
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
