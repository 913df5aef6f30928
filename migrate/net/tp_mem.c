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

#define MEM_DEFAULT_CAP (256u << 10)

typedef struct mem_ring {
    uint8_t *buf;
    size_t cap, head, len;
    bool writer_gone, reader_gone;
} mem_ring;

typedef struct mem_shared {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* any change to either ring */
    mem_ring ring[2];
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

static const vmt_transport_ops mem_ops = {
    .name = "mem",
    .send = mem_send,
    .recv = mem_recv,
    .shutdown = mem_shutdown,
    .close = mem_close,
    .describe = mem_describe,
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
