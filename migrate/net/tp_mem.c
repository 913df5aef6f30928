/*
 * The in-memory transport: two ends joined by two ring buffers under one
 * mutex, with no file descriptors at all.  It is the transport contract
 * implemented a second, independent way (tests run the same suite over it),
 * and a fast pipe for tests that do not need the kernel.
 *
 * Each end sends into ring[side] and receives from ring[1 - side].  Closing
 * or shutting down an end marks its outgoing ring "writer gone" (the peer
 * reads what is left, then EOF) and its incoming ring "reader gone" (the
 * peer's sends fail).  The shared state is freed with the last end.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net_internal.h"
#include "rdma_logic.h"

#define MEM_DEFAULT_CAP (256u << 10)

typedef struct mem_ring {
    uint8_t *buf;
    size_t cap, head, len;
    bool writer_gone, reader_gone;
} mem_ring;

/* Memory exposed by one end for bulk placement. */
typedef struct mem_bulk {
    uint8_t *base;
    size_t len;
    vmt_rdma_landed landed;
} mem_bulk;

#define MEM_LANDED_MAX (1u << 16)

typedef struct mem_shared {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* any change to either ring */
    mem_ring ring[2];
    mem_bulk ex[2]; /* by the end that exposed it (receives into it) */
    int refs;
} mem_shared;

typedef struct mem_end {
    mem_shared *sh;
    int side;
} mem_end;

/* Waits on the condition until deadline; false when it passed. */
static bool wait_until(mem_shared *sh, uint64_t deadline)
{
    if (deadline == UINT64_MAX) {
        pthread_cond_wait(&sh->cond, &sh->lock);
        return true;
    }
    if (vmt_now_ns() >= deadline)
        return false;
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000ull),
                          .tv_nsec = (long)(deadline % 1000000000ull)};
    return pthread_cond_timedwait(&sh->cond, &sh->lock, &ts) != ETIMEDOUT ||
           vmt_now_ns() < deadline;
}

static int mem_send(void *impl, const void *buf, size_t len, uint64_t deadline)
{
    mem_end *e = impl;
    mem_ring *r = &e->sh->ring[e->side];
    const uint8_t *p = buf;
    size_t done = 0;
    int rc = 0;

    pthread_mutex_lock(&e->sh->lock);
    while (done < len) {
        if (r->writer_gone || r->reader_gone) {
            rc = vmt_error_set(VMT_EIO, "in-memory pipe: %s after %zu of %zu bytes",
                               r->writer_gone ? "shut down" : "peer closed", done, len);
            break;
        }
        size_t space = r->cap - r->len;
        if (space == 0) {
            if (!wait_until(e->sh, deadline)) {
                rc = vmt_error_set(VMT_ETIMEDOUT, "timed out sending (%zu of %zu bytes sent)",
                                   done, len);
                break;
            }
            continue;
        }
        size_t tail = (r->head + r->len) % r->cap;
        size_t n = VMT_MIN(VMT_MIN(space, len - done), r->cap - tail);
        memcpy(r->buf + tail, p + done, n);
        r->len += n;
        done += n;
        pthread_cond_broadcast(&e->sh->cond);
    }
    pthread_mutex_unlock(&e->sh->lock);
    return rc;
}

static int mem_recv(void *impl, void *buf, size_t len, size_t *got, uint64_t deadline)
{
    mem_end *e = impl;
    mem_ring *r = &e->sh->ring[1 - e->side];
    int rc = 0;

    *got = 0;
    pthread_mutex_lock(&e->sh->lock);
    while (r->len == 0) {
        if (r->reader_gone) {
            rc = vmt_error_set(VMT_EIO, "in-memory pipe: shut down");
            goto out;
        }
        if (r->writer_gone)
            goto out; /* EOF */
        if (!wait_until(e->sh, deadline)) {
            rc = vmt_error_set(VMT_ETIMEDOUT, "timed out waiting for data");
            goto out;
        }
    }
    size_t n = VMT_MIN(VMT_MIN(len, r->len), r->cap - r->head);
    memcpy(buf, r->buf + r->head, n);
    r->head = (r->head + n) % r->cap;
    r->len -= n;
    *got = n;
    pthread_cond_broadcast(&e->sh->cond);
out:
    pthread_mutex_unlock(&e->sh->lock);
    return rc;
}

static void mem_shutdown(void *impl)
{
    mem_end *e = impl;
    pthread_mutex_lock(&e->sh->lock);
    e->sh->ring[e->side].writer_gone = true;
    e->sh->ring[1 - e->side].reader_gone = true;
    pthread_cond_broadcast(&e->sh->cond);
    pthread_mutex_unlock(&e->sh->lock);
}

static void shared_free(mem_shared *sh)
{
    free(sh->ring[0].buf);
    free(sh->ring[1].buf);
    vmt_rdma_landed_free(&sh->ex[0].landed);
    vmt_rdma_landed_free(&sh->ex[1].landed);
    pthread_cond_destroy(&sh->cond);
    pthread_mutex_destroy(&sh->lock);
    free(sh);
}

static void mem_close(void *impl)
{
    mem_end *e = impl;
    if (!e)
        return;
    mem_shutdown(e);
    pthread_mutex_lock(&e->sh->lock);
    bool last = --e->sh->refs == 0;
    pthread_mutex_unlock(&e->sh->lock);
    if (last)
        shared_free(e->sh);
    free(e);
}

static void mem_describe(void *impl, char *buf, size_t cap)
{
    mem_end *e = impl;
    snprintf(buf, cap, "mem end %d", e->side);
}

/* ---- bulk placement ------------------------------------------------------ */

static int mem_bulk_expose(void *impl, void *base, size_t len, const vmt_bulk_config *c)
{
    mem_end *e = impl;
    (void)c; /* nothing to register: no chunks, no bound */
    if (!base || (uintptr_t)base % VMT_NET_PAGE_SIZE || len == 0 || len % VMT_NET_PAGE_SIZE ||
        len > VMT_RDMA_MAX_EXPOSE)
        return vmt_error_set(VMT_EINVAL, "bulk expose: bad range (%zu bytes)", len);
    pthread_mutex_lock(&e->sh->lock);
    mem_bulk *b = &e->sh->ex[e->side];
    int rc = b->base ? vmt_error_set(VMT_EEXIST, "bulk expose: memory is exposed already") : 0;
    if (rc == 0) {
        b->base = base;
        b->len = len;
        vmt_rdma_landed_init(&b->landed, MEM_LANDED_MAX);
    }
    pthread_mutex_unlock(&e->sh->lock);
    return rc;
}

static bool mem_bulk_can_place(void *impl)
{
    mem_end *e = impl;
    pthread_mutex_lock(&e->sh->lock);
    bool ok = e->sh->ex[1 - e->side].base != NULL;
    pthread_mutex_unlock(&e->sh->lock);
    return ok;
}

static int mem_bulk_place(void *impl, uint64_t offset, const void *src, size_t len,
                          uint64_t deadline)
{
    mem_end *e = impl;
    mem_ring *r = &e->sh->ring[e->side];
    (void)deadline; /* a copy never waits */
    pthread_mutex_lock(&e->sh->lock);
    mem_bulk *b = &e->sh->ex[1 - e->side];
    int rc = 0;
    if (!b->base)
        rc = vmt_error_set(VMT_EUNSUPPORTED, "in-memory pipe: the peer has not exposed memory");
    else if (offset % VMT_NET_PAGE_SIZE || len % VMT_NET_PAGE_SIZE || offset > b->len ||
             len > b->len - offset)
        rc = vmt_error_set(VMT_EINVAL, "bulk place: %zu bytes at %llu are not page-aligned or "
                                       "not inside the %zu exposed bytes",
                           len, (unsigned long long)offset, b->len);
    else if (r->writer_gone || r->reader_gone)
        rc = vmt_error_set(VMT_EIO, "in-memory pipe: %s", r->writer_gone ? "shut down"
                                                                          : "peer closed");
    if (rc == 0) {
        memcpy(b->base + offset, src, len);
        rc = vmt_rdma_landed_push(&b->landed, offset / VMT_NET_PAGE_SIZE,
                                  len / VMT_NET_PAGE_SIZE);
        pthread_cond_broadcast(&e->sh->cond);
    }
    pthread_mutex_unlock(&e->sh->lock);
    return rc;
}

static int mem_bulk_landed(void *impl, vmt_page_run *runs, size_t cap, size_t *n)
{
    mem_end *e = impl;
    pthread_mutex_lock(&e->sh->lock);
    mem_bulk *b = &e->sh->ex[e->side];
    int rc = b->base ? 0 : vmt_error_set(VMT_EUNSUPPORTED, "bulk landed: no memory was exposed");
    *n = rc ? 0 : vmt_rdma_landed_pop(&b->landed, runs, cap);
    pthread_mutex_unlock(&e->sh->lock);
    return rc;
}

static const vmt_transport_ops mem_ops = {
    .name = "mem",
    .send = mem_send,
    .recv = mem_recv,
    .shutdown = mem_shutdown,
    .close = mem_close,
    .describe = mem_describe,
    .bulk_expose = mem_bulk_expose,
    .bulk_can_place = mem_bulk_can_place,
    .bulk_place = mem_bulk_place,
    .bulk_landed = mem_bulk_landed,
};

static mem_shared *shared_new(size_t cap)
{
    mem_shared *sh = calloc(1, sizeof(*sh));
    if (!sh)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines are vmt_now_ns() */
    pthread_cond_init(&sh->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&sh->lock, NULL);
    sh->refs = 2;
    for (int i = 0; i < 2; i++) {
        sh->ring[i].cap = cap;
        sh->ring[i].buf = malloc(cap);
        if (!sh->ring[i].buf) {
            shared_free(sh);
            return NULL;
        }
    }
    return sh;
}

int vmt_transport_mem_pair(vmt_transport **a, vmt_transport **b, size_t capacity)
{
    *a = *b = NULL;
    mem_shared *sh = shared_new(capacity ? capacity : MEM_DEFAULT_CAP);
    mem_end *ea = calloc(1, sizeof(*ea)), *eb = calloc(1, sizeof(*eb));
    if (!sh || !ea || !eb) {
        if (sh)
            shared_free(sh);
        free(ea);
        free(eb);
        return vmt_error_set(VMT_ENOMEM, "in-memory pipe: out of memory");
    }
    *ea = (mem_end){sh, 0};
    *eb = (mem_end){sh, 1};
    int rc = vmt_transport_new(a, &mem_ops, ea);
    if (rc) {
        mem_close(eb);
        return rc;
    }
    rc = vmt_transport_new(b, &mem_ops, eb);
    if (rc) {
        vmt_transport_close(*a);
        *a = NULL;
    }
    return rc;
}
