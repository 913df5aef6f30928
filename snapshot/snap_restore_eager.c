/*
 * Eager restore: every non-zero page of the map into guest RAM before
 * vmt_restore_open returns.
 *
 * `threads` workers (the caller is worker 0) take batches of RESTORE_BATCH
 * non-zero pages from an atomic cursor and read each batch (in slices the
 * store serves on the calling thread) into a bounce buffer of their own.  With the memfd,
 * the batch is then written with one pwrite per run of consecutive pages:
 * the kernel allocates each page without zeroing it and without installing
 * a page-table entry, which on a virtualised host (shadow or paravirtual
 * paging) costs more than the copy (measured: a write fault per page fills
 * fresh memory at ~2 GB/s a core, pwrite at ~4 GB/s).
 *
 * But a shmem pwrite holds the inode's lock for the whole copy, and a
 * second writer spins in the kernel while the first one copies: on two
 * cores half of the machine then waits.  So writing is combined: a worker
 * that has read a batch queues it and takes the writer role only if nobody
 * has it (trylock); the writer writes every batch queued, anyone's.  A
 * worker whose buffers are all queued waits for the writer role (a sleep,
 * not a spin) and then writes.  Each worker owns EAGER_BUFS buffers, so it
 * can read the next batch while one of its batches waits to be written.
 *
 * Without a memfd, pages are decompressed straight into the mapping.  So
 * are they when the mapping has 2 MiB pages (opts.ram_huge): the first
 * write to a region then costs one fault for 512 pages and the bounce copy
 * goes away; each worker takes whole 2 MiB regions, so two workers never
 * queue on one huge page's allocation.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "restore_internal.h"

#define EAGER_BUFS 3u
/* Pages per vmt_store_get_pages call: the store decompresses a batch of at
 * most 32 objects on the calling thread, larger ones on its pool
 * (dedup/get.c, DD_CHUNK). */
#define RESTORE_SLICE 32u

typedef struct eager_buf {
    uint8_t *pages;         /* RESTORE_BATCH pages */
    uint64_t first, n;      /* r->pfns[first .. first + n) */
    struct eager_buf *next; /* in the write queue */
    _Atomic bool queued;    /* read, not yet written: owned by the queue */
} eager_buf;

typedef struct eager_job {
    vmt_restore *r;
    _Atomic uint64_t next; /* index into r->pfns */
    _Atomic bool stop;
    pthread_mutex_t qmu; /* guards head/tail */
    eager_buf *head, **tail;
    pthread_mutex_t wmu; /* the writer role */
    /* Writing through the mapping: region k holds r->pfns[reg[k] ..
     * reg[k+1]) (nnz at the end); workers take regions from next_reg. */
    uint64_t *reg;
    uint64_t nreg;
    _Atomic uint64_t next_reg;
} eager_job;

int restore_write_runs(int fd, const uint64_t *pfn, const uint8_t *buf, size_t n)
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
            ssize_t w = pwrite(fd, src, left, off);
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

/* Reads batch [first, first+n) of r->pfns into dst (bounce) or into RAM. */
static int read_batch(vmt_restore *r, uint64_t first, uint64_t n, uint8_t *bounce)
{
    vmt_id ids[RESTORE_BATCH];
    void *dst[RESTORE_BATCH];

    for (uint64_t i = 0; i < n; i++) {
        uint64_t pfn = r->pfns[first + i];
        ids[i] = *vmt_map_get(r->map, pfn);
        dst[i] = bounce ? bounce + i * VMT_PAGE_SIZE : r->ram + pfn * VMT_PAGE_SIZE;
    }
    /* In slices the store runs on the calling thread: the workers are as
     * many as the cores already, and handing each batch to the store's
     * own pool as well costs ~15 % in wake-ups and a third thread per core
     * pair (measured on 2 cores). */
    for (uint64_t i = 0; i < n; i += RESTORE_SLICE) {
        int rc = vmt_store_get_pages(r->s, ids + i, (size_t)VMT_MIN(n - i, RESTORE_SLICE), dst + i);
        if (rc)
            return rc;
    }
    return 0;
}

static void fail(eager_job *j, int rc)
{
    restore_fail(j->r, rc);
    atomic_store(&j->stop, true);
}

/* Writes every queued batch; the caller holds wmu.  Buffers go back to
 * their owners even after a failure (nothing more is written then). */
static void drain(eager_job *j)
{
    for (;;) {
        pthread_mutex_lock(&j->qmu);
        eager_buf *b = j->head;
        j->head = NULL;
        j->tail = &j->head;
        pthread_mutex_unlock(&j->qmu);
        if (!b)
            return;
        while (b) {
            eager_buf *nx = b->next;
            if (!atomic_load(&j->stop)) {
                int rc = restore_write_runs(j->r->ram_fd, j->r->pfns + b->first, b->pages, b->n);
                if (rc)
                    fail(j, rc);
                else
                    atomic_fetch_add(&j->r->pages_loaded, b->n);
            }
            atomic_store_explicit(&b->queued, false, memory_order_release);
            b = nx;
        }
    }
}

static void enqueue(eager_job *j, eager_buf *b)
{
    atomic_store(&b->queued, true);
    b->next = NULL;
    pthread_mutex_lock(&j->qmu);
    *j->tail = b;
    j->tail = &b->next;
    pthread_mutex_unlock(&j->qmu);
}

/* One of this worker's buffers that is not queued; writes (as the writer,
 * waiting for the role) until one is free. */
static eager_buf *free_buf(eager_job *j, eager_buf *bufs)
{
    for (;;) {
        for (unsigned i = 0; i < EAGER_BUFS; i++)
            if (!atomic_load_explicit(&bufs[i].queued, memory_order_acquire))
                return &bufs[i];
        pthread_mutex_lock(&j->wmu);
        drain(j);
        pthread_mutex_unlock(&j->wmu);
    }
}

/* The memfd path: read into own buffers, write combined. */
static void work_fd(eager_job *j, eager_buf *bufs, bool reporter)
{
    vmt_restore *r = j->r;
    while (!atomic_load(&j->stop)) {
        eager_buf *b = free_buf(j, bufs);
        uint64_t first = atomic_fetch_add(&j->next, RESTORE_BATCH);
        if (first >= r->nnz)
            break;
        b->first = first;
        b->n = VMT_MIN((uint64_t)RESTORE_BATCH, r->nnz - first);
        int rc = read_batch(r, first, b->n, b->pages);
        if (rc) {
            fail(j, rc);
            break;
        }
        enqueue(j, b);
        if (pthread_mutex_trylock(&j->wmu) == 0) {
            drain(j);
            pthread_mutex_unlock(&j->wmu);
        }
        if (reporter && r->o.progress)
            r->o.progress(r->o.progress_ctx, atomic_load(&r->pages_loaded), r->nnz);
    }
    /* Nothing of ours may stay queued once we return (the buffers go). */
    pthread_mutex_lock(&j->wmu);
    drain(j);
    pthread_mutex_unlock(&j->wmu);
}

/* Straight into the mapping (no memfd, or 2 MiB pages): whole 2 MiB
 * regions per worker. */
static void work_map(eager_job *j, bool reporter)
{
    vmt_restore *r = j->r;
    while (!atomic_load(&j->stop)) {
        uint64_t k = atomic_fetch_add(&j->next_reg, 1);
        if (k >= j->nreg)
            break;
        uint64_t first = j->reg[k], end = k + 1 < j->nreg ? j->reg[k + 1] : r->nnz;
        for (uint64_t i = first; i < end && !atomic_load(&j->stop);) {
            uint64_t n = VMT_MIN((uint64_t)RESTORE_BATCH, end - i);
            int rc = read_batch(r, i, n, NULL);
            if (rc) {
                fail(j, rc);
                return;
            }
            i += n;
        }
        uint64_t done = atomic_fetch_add(&r->pages_loaded, end - first) + (end - first);
        if (reporter && r->o.progress)
            r->o.progress(r->o.progress_ctx, done, r->nnz);
    }
}

/* The start of each 2 MiB region in r->pfns (ascending), for work_map. */
static int map_regions(eager_job *j)
{
    vmt_restore *r = j->r;
    const uint64_t per = VMT_HUGE_PAGE_SIZE / VMT_PAGE_SIZE;
    uint64_t n = 0;
    for (uint64_t i = 0; i < r->nnz; i++)
        n += i == 0 || r->pfns[i] / per != r->pfns[i - 1] / per;
    if (n && !(j->reg = vmt_mallocn(n, sizeof(*j->reg))))
        return VMT_ENOMEM;
    for (uint64_t i = 0, k = 0; i < r->nnz; i++)
        if (i == 0 || r->pfns[i] / per != r->pfns[i - 1] / per)
            j->reg[k++] = i;
    j->nreg = n;
    return 0;
}

static void eager_work(eager_job *j, bool reporter)
{
    eager_buf bufs[EAGER_BUFS];
    memset(bufs, 0, sizeof(bufs));
    if (j->reg) {
        work_map(j, reporter);
        return;
    }
    bool ok = true;
    for (unsigned i = 0; i < EAGER_BUFS; i++)
        ok &= (bufs[i].pages = vmt_mallocn(RESTORE_BATCH, VMT_PAGE_SIZE)) != NULL;
    if (ok)
        work_fd(j, bufs, reporter);
    else
        fail(j, vmt_error_set(VMT_ENOMEM, "restore: out of memory for buffers"));
    for (unsigned i = 0; i < EAGER_BUFS; i++)
        free(bufs[i].pages);
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

int restore_eager(vmt_restore *r)
{
    pthread_t thr[RESTORE_MAX_THREADS];
    eager_job j = {.r = r};
    unsigned nt = eager_threads(r), started = 1;

    j.tail = &j.head;
    if ((r->ram_fd < 0 || r->o.ram_huge) && r->nnz > 0 && map_regions(&j) != 0)
        return vmt_error_set(VMT_ENOMEM, "restore: out of memory for the region list");
    pthread_mutex_init(&j.qmu, NULL);
    pthread_mutex_init(&j.wmu, NULL);
    for (; started < nt; started++)
        if (pthread_create(&thr[started], NULL, eager_thread, &j) != 0)
            break; /* run with fewer threads */
    eager_work(&j, true);
    for (unsigned i = 1; i < started; i++)
        pthread_join(thr[i], NULL);
    pthread_mutex_destroy(&j.qmu);
    pthread_mutex_destroy(&j.wmu);
    free(j.reg);
    if (r->err)
        return vmt_error_set(r->err, "%s", r->errmsg);
    restore_complete(r);
    if (r->o.progress)
        r->o.progress(r->o.progress_ctx, r->nnz, r->nnz);
    return 0;
}
