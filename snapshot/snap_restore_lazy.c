/*
 * Lazy restore through userfaultfd.
 *
 * Opening reads only the inner nodes of the map (5 nodes for 1 GiB), empties
 * the RAM range and registers it in MISSING mode, so the VM can run at
 * once: the first touch of any page, by a vCPU or by KVM itself through
 * get_user_pages, blocks and queues a message.
 *   - The fault thread serves those messages: it reads the page's leaf if
 *     nobody has yet, then maps a zero page with UFFDIO_ZEROPAGE (never a
 *     store read) or reads the page (one batch per burst of messages) and
 *     places it with UFFDIO_COPY.
 *   - `threads` prefetchers walk the map in pfn order, taking PREFETCH_LEAVES
 *     leaves at a time from a shared cursor: each reads its leaves, then
 *     their non-zero pages not yet in, RESTORE_BATCH at a time, placing each
 *     run of consecutive pages with one UFFDIO_COPY.
 * Leaves are read once: a thread claims a leaf (ABSENT -> LOADING), reads
 * it and publishes it (READY, release); a thread finding it LOADING waits.
 * Both threads may race for a page: UFFDIO_COPY is atomic, the loser gets
 * EEXIST.  A copy wakes the threads waiting on that range; after an EEXIST
 * the fault thread still sends UFFDIO_WAKE, in case the faulting thread
 * queued after the winner's wake.  Each page is placed by exactly one
 * successful copy, which counts it; when the prefetcher has been through
 * every leaf and the counts reach the non-zero pages found, RAM is complete
 * and the range is unregistered, so zero pages touched later are the
 * kernel's business.  Stopping writes an eventfd that the fault thread
 * polls beside the uffd.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "restore_internal.h"

#define PAGE VMT_PAGE_SIZE
#define PREFETCH_LEAVES 4u /* 1024 pages: 4 MiB of RAM per step */

enum { LEAF_ABSENT = 0, LEAF_LOADING = 1, LEAF_READY = 2 };

static bool stopping(vmt_restore *r)
{
    struct pollfd p = {.fd = r->stop_fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

static void unregister_range(vmt_restore *r)
{
    if (atomic_exchange(&r->unregistered, true))
        return;
    struct uffdio_range range = {.start = (uint64_t)(uintptr_t)r->ram, .len = r->npages * PAGE};
    (void)ioctl(r->uffd, UFFDIO_UNREGISTER, &range);
}

/* Complete once every leaf was walked and every non-zero page counted. */
static void check_complete(vmt_restore *r)
{
    if (!atomic_load(&r->pass_done))
        return;
    uint64_t placed = atomic_load(&r->pages_loaded) + atomic_load(&r->pages_faulted);
    if (placed != atomic_load(&r->pages_total))
        return;
    unregister_range(r); /* every non-zero page is in: the rest reads zero */
    restore_complete(r);
}

/* ---- the map, leaf by leaf ---------------------------------------------- */

static bool leaf_empty(const vmt_restore *r, uint64_t leaf)
{
    return vmt_id_is_zero_page(&r->lvl[0][leaf]);
}

/* Reads claimed (LOADING) leaves and publishes them; on failure they go
 * back to ABSENT. */
static int load_leaves(vmt_restore *r, const uint64_t *idx, size_t n)
{
    uint64_t nz = 0;
    int rc = map_read_leaves_from(r->s, r->o.source, &r->g, r->lvl[0], idx, n, r->page_ids, &nz);
    if (rc == 0)
        atomic_fetch_add(&r->pages_total, nz);
    for (size_t i = 0; i < n; i++)
        atomic_store_explicit(&r->leaf_state[idx[i]], rc ? LEAF_ABSENT : LEAF_READY,
                              memory_order_release);
    return rc;
}

static bool claim_leaf(vmt_restore *r, uint64_t leaf)
{
    uint8_t want = LEAF_ABSENT;
    return atomic_compare_exchange_strong(&r->leaf_state[leaf], &want, LEAF_LOADING);
}

/* Makes a non-empty leaf readable: reads it, or waits for whoever does. */
static int ensure_leaf(vmt_restore *r, uint64_t leaf)
{
    for (;;) {
        uint8_t st = atomic_load_explicit(&r->leaf_state[leaf], memory_order_acquire);
        if (st == LEAF_READY)
            return 0;
        if (st == LEAF_ABSENT && claim_leaf(r, leaf))
            return load_leaves(r, &leaf, 1);
        if (atomic_load(&r->failed))
            return VMT_ECANCELED;
        sched_yield(); /* the other thread is reading it: a few µs */
    }
}

/* The id of page pfn (the zero-page id for zero pages). */
static int page_id(vmt_restore *r, uint64_t pfn, vmt_id *id)
{
    uint64_t leaf = pfn / VMT_MAP_FANOUT;
    if (leaf_empty(r, leaf)) {
        *id = vmt_id_zero_page();
        return 0;
    }
    int rc = ensure_leaf(r, leaf);
    if (rc == 0)
        *id = r->page_ids[pfn];
    return rc;
}

/* ---- placing pages ------------------------------------------------------- */

static void wake_page(vmt_restore *r, uint64_t addr)
{
    struct uffdio_range range = {.start = addr, .len = PAGE};
    (void)ioctl(r->uffd, UFFDIO_WAKE, &range);
}

/* An ioctl failure: fatal unless the range was unregistered meanwhile. */
static void uffd_failed(vmt_restore *r, int err, const char *what, uint64_t pfn)
{
    if (atomic_load(&r->unregistered))
        return;
    restore_fail(r, vmt_error_errno(VMT_EIO, err, "lazy restore: %s of page %llu", what,
                                    (unsigned long long)pfn));
}

/*
 * Copies `n` pages from src to RAM at pfn with one ioctl, going on past
 * pages that are in already.  Counts (in *counter) and marks each page it
 * placed: a page is placed by exactly one copy, so the counts add up.
 */
static void copy_run(vmt_restore *r, uint64_t pfn, const uint8_t *src, uint64_t n,
                     _Atomic uint64_t *counter)
{
    uint64_t i = 0;
    while (i < n) {
        struct uffdio_copy c = {.dst = (uint64_t)(uintptr_t)(r->ram + (pfn + i) * PAGE),
                                .src = (uint64_t)(uintptr_t)(src + i * PAGE),
                                .len = (n - i) * PAGE};
        int rc = ioctl(r->uffd, UFFDIO_COPY, &c);
        int err = errno;
        uint64_t pages = c.copy > 0 ? (uint64_t)c.copy / PAGE : 0;
        atomic_fetch_add(counter, pages);
        for (uint64_t k = 0; k < pages; k++)
            atomic_store(&r->present[pfn + i + k], 1);
        i += pages;
        if (rc == 0 || err == EAGAIN) /* EAGAIN: the mm changed, retry the rest */
            continue;
        if (err == EEXIST) { /* the other thread placed it, and counts it */
            wake_page(r, c.dst + pages * PAGE);
            i++;
            continue;
        }
        uffd_failed(r, err, "UFFDIO_COPY", pfn + i);
        return;
    }
}

/* ---- the fault thread ---------------------------------------------------- */

typedef struct fault_batch {
    uint64_t pfn[RESTORE_FAULT_MSGS];
    vmt_id ids[RESTORE_FAULT_MSGS];
    void *dst[RESTORE_FAULT_MSGS];
    uint8_t *buf; /* RESTORE_FAULT_MSGS pages */
    size_t n;
} fault_batch;

static void serve_zero(vmt_restore *r, uint64_t pfn)
{
    struct uffdio_zeropage z = {
        .range = {.start = (uint64_t)(uintptr_t)(r->ram + pfn * PAGE), .len = PAGE}};
    for (;;) {
        if (ioctl(r->uffd, UFFDIO_ZEROPAGE, &z) == 0) {
            atomic_fetch_add(&r->zero_faults, 1);
            return;
        }
        if (errno == EAGAIN)
            continue;
        if (errno == EEXIST)
            wake_page(r, z.range.start);
        else
            uffd_failed(r, errno, "UFFDIO_ZEROPAGE", pfn);
        return;
    }
}

/* Queues a faulting address: zero pages at once, others for one batch read. */
static void take_fault(vmt_restore *r, fault_batch *b, uint64_t addr)
{
    uint64_t base = (uint64_t)(uintptr_t)r->ram;
    vmt_id id;
    if (addr < base || addr >= base + r->npages * PAGE)
        return; /* not ours (cannot happen: only this range is registered) */
    uint64_t pfn = (addr - base) / PAGE;
    int rc = page_id(r, pfn, &id);
    if (rc) {
        /* The faulting thread stays blocked until vmt_restore_free. */
        restore_fail(r, vmt_error_wrap(rc, "lazy restore: reading the map for page %llu",
                                       (unsigned long long)pfn));
        return;
    }
    if (vmt_id_is_zero_page(&id)) {
        serve_zero(r, pfn);
        return;
    }
    for (size_t i = 0; i < b->n; i++)
        if (b->pfn[i] == pfn)
            return; /* two threads faulted on one page */
    b->pfn[b->n] = pfn;
    b->ids[b->n] = id;
    b->dst[b->n] = b->buf + b->n * PAGE;
    b->n++;
}

static void serve_batch(vmt_restore *r, fault_batch *b)
{
    if (b->n == 0)
        return;
    int rc = restore_get_pages(r, b->ids, b->n, b->dst);
    if (rc) {
        /* The faulting threads stay blocked until vmt_restore_free. */
        restore_fail(r, vmt_error_wrap(rc, "lazy restore: reading faulted pages"));
        b->n = 0;
        return;
    }
    for (size_t i = 0; i < b->n; i++)
        copy_run(r, b->pfn[i], b->buf + i * PAGE, 1, &r->pages_faulted);
    b->n = 0;
    check_complete(r);
}

/* Reads what the uffd has; false when it failed for good. */
static bool drain_faults(vmt_restore *r, fault_batch *b)
{
    struct uffd_msg msg[RESTORE_FAULT_MSGS];
    ssize_t got = read(r->uffd, msg, sizeof(msg));
    if (got < 0)
        return errno == EAGAIN || errno == EINTR;
    for (size_t i = 0; i < (size_t)got / sizeof(msg[0]); i++)
        if (msg[i].event == UFFD_EVENT_PAGEFAULT)
            take_fault(r, b, msg[i].arg.pagefault.address & ~(uint64_t)(PAGE - 1));
    serve_batch(r, b);
    return true;
}

static void *fault_main(void *arg)
{
    vmt_restore *r = arg;
    fault_batch b = {.n = 0};
    struct pollfd p[2] = {{.fd = r->uffd, .events = POLLIN}, {.fd = r->stop_fd, .events = POLLIN}};

    b.buf = vmt_mallocn(RESTORE_FAULT_MSGS, PAGE);
    if (!b.buf) {
        restore_fail(r, VMT_ENOMEM);
        return NULL;
    }
    for (;;) {
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if ((p[0].revents & POLLIN) && !drain_faults(r, &b)) {
            uffd_failed(r, errno, "reading fault messages", 0);
            break;
        }
    }
    free(b.buf);
    return NULL;
}

/* ---- the prefetcher ------------------------------------------------------ */

typedef struct prefetch {
    uint64_t pfn[RESTORE_BATCH];
    vmt_id ids[RESTORE_BATCH];
    void *dst[RESTORE_BATCH];
    uint8_t *buf; /* RESTORE_BATCH pages */
    size_t n;
} prefetch;

/* Reads the queued pages and places them, one ioctl per run. */
static int flush_pages(vmt_restore *r, prefetch *p)
{
    if (p->n == 0)
        return 0;
    int rc = restore_get_pages(r, p->ids, p->n, p->dst);
    for (size_t i = 0; rc == 0 && i < p->n;) {
        size_t run = 1;
        while (i + run < p->n && p->pfn[i + run] == p->pfn[i] + run)
            run++;
        copy_run(r, p->pfn[i], p->buf + i * PAGE, run, &r->pages_loaded);
        i += run;
    }
    p->n = 0;
    return rc ? vmt_error_wrap(rc, "lazy restore: prefetching") : 0;
}

/* Reads the leaves [first, first+n) that nobody has read, waits for the rest. */
static int read_leaf_group(vmt_restore *r, uint64_t first, uint64_t n)
{
    uint64_t mine[PREFETCH_LEAVES];
    size_t k = 0;
    for (uint64_t l = first; l < first + n; l++)
        if (!leaf_empty(r, l) && claim_leaf(r, l))
            mine[k++] = l;
    int rc = load_leaves(r, mine, k);
    for (uint64_t l = first; rc == 0 && l < first + n; l++)
        if (!leaf_empty(r, l))
            rc = ensure_leaf(r, l);
    return rc;
}

/* Queues and places the non-zero pages of leaves [first, first+n) not yet in. */
static int prefetch_group(vmt_restore *r, prefetch *p, uint64_t first, uint64_t n)
{
    int rc = read_leaf_group(r, first, n);
    uint64_t end = VMT_MIN((first + n) * VMT_MAP_FANOUT, r->npages);
    for (uint64_t pfn = first * VMT_MAP_FANOUT; rc == 0 && pfn < end; pfn++) {
        if (leaf_empty(r, pfn / VMT_MAP_FANOUT)) {
            pfn = (pfn / VMT_MAP_FANOUT + 1) * VMT_MAP_FANOUT - 1;
            continue;
        }
        if (vmt_id_is_zero_page(&r->page_ids[pfn]) || atomic_load(&r->present[pfn]))
            continue;
        p->pfn[p->n] = pfn;
        p->ids[p->n] = r->page_ids[pfn];
        p->dst[p->n] = p->buf + p->n * PAGE;
        if (++p->n == RESTORE_BATCH)
            rc = flush_pages(r, p);
    }
    return rc ? rc : flush_pages(r, p);
}

/* A prefetcher: takes groups of leaves from the shared cursor; the last
 * one to finish a complete pass marks it done.  Prefetcher 0 reports
 * progress. */
static void prefetch_run(vmt_restore *r, bool reporter)
{
    prefetch *p = calloc(1, sizeof(*p));
    uint64_t nleaves = r->g.nodes[0];
    int rc = p && (p->buf = vmt_mallocn(RESTORE_BATCH, PAGE)) ? 0 : VMT_ENOMEM;

    while (rc == 0 && !atomic_load(&r->prefetch_aborted)) {
        uint64_t l = atomic_fetch_add(&r->next_leaf, PREFETCH_LEAVES);
        if (l >= nleaves)
            break;
        if (stopping(r)) {
            atomic_store(&r->prefetch_aborted, true);
            break;
        }
        rc = prefetch_group(r, p, l, VMT_MIN((uint64_t)PREFETCH_LEAVES, nleaves - l));
        if (rc == 0 && reporter && r->o.progress)
            r->o.progress(r->o.progress_ctx,
                          atomic_load(&r->pages_loaded) + atomic_load(&r->pages_faulted),
                          atomic_load(&r->pages_total));
    }
    if (p)
        free(p->buf);
    free(p);
    if (rc) {
        atomic_store(&r->prefetch_aborted, true);
        restore_fail(r, rc);
    }
    if (atomic_fetch_sub(&r->prefetch_live, 1) == 1 && !atomic_load(&r->prefetch_aborted)) {
        atomic_store(&r->pass_done, true);
        check_complete(r);
    }
}

static void *prefetch_main(void *arg)
{
    prefetch_run(arg, false);
    return NULL;
}

static void *prefetch_main0(void *arg)
{
    prefetch_run(arg, true);
    return NULL;
}

static unsigned prefetch_threads(const vmt_restore *r)
{
    unsigned t = r->o.threads;
    if (t == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        t = n > 0 ? (unsigned)n : 1;
    }
    return VMT_MAX(1u, VMT_MIN(t, RESTORE_MAX_THREADS));
}

/* ---- start and stop ------------------------------------------------------ */

static int open_uffd(vmt_restore *r)
{
    r->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (r->uffd < 0)
        return vmt_error_errno(errno == EPERM || errno == ENOSYS ? VMT_EUNSUPPORTED : VMT_EIO,
                               errno,
                               "lazy restore: userfaultfd (needs CAP_SYS_PTRACE or "
                               "vm.unprivileged_userfaultfd=1)");
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MISSING_SHMEM};
    if (ioctl(r->uffd, UFFDIO_API, &api) != 0)
        return vmt_error_errno(VMT_EUNSUPPORTED, errno,
                               "lazy restore: userfaultfd lacks shared-memory support");
    struct uffdio_register reg = {
        .range = {.start = (uint64_t)(uintptr_t)r->ram, .len = r->npages * PAGE},
        .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(r->uffd, UFFDIO_REGISTER, &reg) != 0)
        return vmt_error_errno(VMT_EIO, errno, "lazy restore: registering guest RAM");
    uint64_t need = (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE) | (1ull << _UFFDIO_WAKE);
    if ((reg.ioctls & need) != need) {
        unregister_range(r);
        return vmt_error_set(VMT_EUNSUPPORTED, "lazy restore: the kernel cannot copy or zero "
                                               "pages into this mapping");
    }
    return 0;
}

/* The inner map and the per-leaf and per-page state. */
static int lazy_map(vmt_restore *r, const vmt_id *root)
{
    int rc = map_geom_init(&r->g, r->npages);
    for (unsigned l = 0; rc == 0 && l < r->g.depth; l++)
        if (!(r->lvl[l] = vmt_mallocn(r->g.nodes[l], sizeof(vmt_id))))
            rc = VMT_ENOMEM;
    /* calloc: pages of these arrays are only touched where leaves are read. */
    if (rc == 0 && (!(r->leaf_state = calloc(r->g.nodes[0], sizeof(*r->leaf_state))) ||
                    !(r->page_ids = calloc(r->npages, sizeof(vmt_id))) ||
                    !(r->present = calloc(r->npages, sizeof(*r->present)))))
        rc = vmt_error_set(VMT_ENOMEM, "lazy restore: out of memory");
    return rc ? rc : map_read_inner_from(r->s, r->o.source, &r->g, root, r->lvl);
}

int restore_lazy_start(vmt_restore *r, const vmt_id *root)
{
    int rc = lazy_map(r, root);
    if (rc == 0)
        rc = open_uffd(r);
    if (rc)
        return rc;
    r->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->stop_fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "lazy restore: eventfd");
    if (pthread_create(&r->fault_thr, NULL, fault_main, r) != 0)
        return vmt_error_set(VMT_ERR, "lazy restore: cannot start the fault thread");
    r->fault_started = true;
    unsigned want = prefetch_threads(r);
    atomic_store(&r->prefetch_live, want);
    for (; r->nprefetch < want; r->nprefetch++) {
        if (pthread_create(&r->prefetch_thr[r->nprefetch], NULL,
                           r->nprefetch ? prefetch_main : prefetch_main0, r) != 0) {
            /* The ones started cover every leaf; account for the others. */
            atomic_fetch_sub(&r->prefetch_live, want - r->nprefetch);
            if (r->nprefetch == 0)
                return vmt_error_set(VMT_ERR, "lazy restore: cannot start the prefetcher");
            break;
        }
    }
    return 0;
}

void restore_lazy_stop(vmt_restore *r)
{
    if (r->stop_fd >= 0) {
        uint64_t one = 1;
        ssize_t w = write(r->stop_fd, &one, sizeof(one));
        (void)w; /* an eventfd write of 1 cannot fail short of overflow */
    }
    for (unsigned i = 0; i < r->nprefetch; i++)
        pthread_join(r->prefetch_thr[i], NULL);
    /* Unregistering wakes any thread still blocked on a page. */
    if (r->uffd >= 0)
        unregister_range(r);
    if (r->fault_started)
        pthread_join(r->fault_thr, NULL);
    r->nprefetch = 0;
    r->fault_started = false;
    if (r->uffd >= 0)
        close(r->uffd);
    if (r->stop_fd >= 0)
        close(r->stop_fd);
    r->uffd = r->stop_fd = -1;
    for (unsigned l = 0; l < MAP_MAX_DEPTH; l++) {
        free(r->lvl[l]);
        r->lvl[l] = NULL;
    }
    free((void *)r->leaf_state);
    free(r->page_ids);
    free((void *)r->present);
    r->leaf_state = NULL;
    r->page_ids = NULL;
    r->present = NULL;
}
