/*
 * Rate limiting: a token bucket (bytes/s, with a burst depth) shared by any
 * number of transports, and a wrapper transport whose sends draw from it.
 *
 * Takers reserve: a send that finds too few tokens takes them anyway (the
 * balance goes negative) and sleeps until the balance would have been
 * refilled, so concurrent streams queue in order and the long-run rate
 * holds however many streams share the bucket.  Sends are cut into pieces
 * of at most the burst, so no single reservation is longer than burst/rate.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "net_internal.h"

#define RATE_MIN_BURST (64u << 10)
/* Longest single sleep, so that a shutdown is noticed promptly. */
#define RATE_SLICE_NS 20000000ull

struct vmt_ratelimit {
    pthread_mutex_t lock;
    uint64_t rate;  /* bytes/s, 0 = unlimited */
    uint64_t burst; /* bucket depth, bytes */
    bool burst_auto;
    double tokens;
    uint64_t last_ns;
};

typedef struct rate_impl {
    vmt_transport *inner;
    const vmt_transport_ops *iops;
    void *iimpl;
    vmt_ratelimit *rl;
    atomic_bool shut;
} rate_impl;

static uint64_t auto_burst(uint64_t rate)
{
    return VMT_MAX((uint64_t)RATE_MIN_BURST, rate / 20);
}

int vmt_ratelimit_new(vmt_ratelimit **out, uint64_t bytes_per_s, uint64_t burst)
{
    vmt_ratelimit *r = calloc(1, sizeof(*r));
    *out = NULL;
    if (!r)
        return vmt_error_set(VMT_ENOMEM, "rate limit: out of memory");
    pthread_mutex_init(&r->lock, NULL);
    r->rate = bytes_per_s;
    r->burst_auto = burst == 0;
    r->burst = burst ? burst : auto_burst(bytes_per_s);
    r->tokens = (double)r->burst;
    r->last_ns = vmt_now_ns();
    *out = r;
    return 0;
}

void vmt_ratelimit_set(vmt_ratelimit *r, uint64_t bytes_per_s)
{
    pthread_mutex_lock(&r->lock);
    r->rate = bytes_per_s;
    if (r->burst_auto)
        r->burst = auto_burst(bytes_per_s);
    pthread_mutex_unlock(&r->lock);
}

void vmt_ratelimit_free(vmt_ratelimit *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Reserves n bytes; *wait_ns is how long to sleep before sending them.
 * Fails (reserving nothing) when that would pass the deadline. */
static int reserve(vmt_ratelimit *r, size_t n, uint64_t deadline, uint64_t *wait_ns)
{
    int rc = 0;
    *wait_ns = 0;
    pthread_mutex_lock(&r->lock);
    uint64_t now = vmt_now_ns();
    if (r->rate) {
        r->tokens += (double)(now - r->last_ns) * (double)r->rate / 1e9;
        if (r->tokens > (double)r->burst)
            r->tokens = (double)r->burst;
        r->last_ns = now;
        double deficit = (double)n - r->tokens;
        if (deficit > 0)
            *wait_ns = (uint64_t)(deficit * 1e9 / (double)r->rate);
        if (deadline != UINT64_MAX && now + *wait_ns > deadline)
            rc = vmt_error_set(VMT_ETIMEDOUT, "rate limit: sending %zu bytes at %llu B/s would "
                                              "pass the deadline",
                               n, (unsigned long long)r->rate);
        else
            r->tokens -= (double)n;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

static size_t piece_size(vmt_ratelimit *r)
{
    pthread_mutex_lock(&r->lock);
    uint64_t b = r->rate ? r->burst : UINT64_MAX;
    pthread_mutex_unlock(&r->lock);
    return b > SIZE_MAX ? SIZE_MAX : (size_t)b;
}

static int sleep_ns(rate_impl *ri, uint64_t ns)
{
    uint64_t end = vmt_now_ns() + ns;
    for (uint64_t now = vmt_now_ns(); now < end; now = vmt_now_ns()) {
        if (atomic_load(&ri->shut))
            return vmt_error_set(VMT_EIO, "rate-limited stream shut down");
        uint64_t d = VMT_MIN(end - now, RATE_SLICE_NS);
        struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int rate_send(void *impl, const void *buf, size_t len, uint64_t deadline)
{
    rate_impl *ri = impl;
    const uint8_t *p = buf;
    size_t done = 0, piece = piece_size(ri->rl);

    while (done < len) {
        size_t n = VMT_MIN(piece, len - done);
        uint64_t wait = 0;
        int rc = reserve(ri->rl, n, deadline, &wait);
        if (rc == 0 && wait)
            rc = sleep_ns(ri, wait);
        if (rc == 0)
            rc = ri->iops->send(ri->iimpl, p + done, n, deadline);
        if (rc)
            return rc;
        done += n;
    }
    return 0;
}

static int rate_recv(void *impl, void *buf, size_t len, size_t *got, uint64_t deadline)
{
    rate_impl *ri = impl;
    return ri->iops->recv(ri->iimpl, buf, len, got, deadline);
}

static void rate_shutdown(void *impl)
{
    rate_impl *ri = impl;
    atomic_store(&ri->shut, true);
    ri->iops->shutdown(ri->iimpl);
}

static void rate_close(void *impl)
{
    rate_impl *ri = impl;
    if (!ri)
        return;
    vmt_transport_close(ri->inner);
    free(ri);
}

static void rate_describe(void *impl, char *buf, size_t cap)
{
    rate_impl *ri = impl;
    snprintf(buf, cap, "rate(%s)", vmt_transport_peer(ri->inner));
}

static bool rate_peer_gone(void *impl)
{
    rate_impl *ri = impl;
    return ri->iops->peer_gone && ri->iops->peer_gone(ri->iimpl);
}

static const vmt_transport_ops rate_ops = {
    .peer_gone = rate_peer_gone,
    .name = "rate",
    .send = rate_send,
    .recv = rate_recv,
    .shutdown = rate_shutdown,
    .close = rate_close,
    .describe = rate_describe,
};

int vmt_transport_rate(vmt_transport **out, vmt_transport *inner, vmt_ratelimit *r)
{
    *out = NULL;
    rate_impl *ri = calloc(1, sizeof(*ri));
    if (!ri) {
        vmt_transport_close(inner);
        return vmt_error_set(VMT_ENOMEM, "rate transport: out of memory");
    }
    ri->inner = inner;
    ri->iops = vmt_transport_get_ops(inner);
    ri->iimpl = vmt_transport_get_impl(inner);
    ri->rl = r;
    int rc = vmt_transport_new(out, &rate_ops, ri);
    if (rc == 0)
        vmt_transport_set_timeout(*out, vmt_transport_timeout(inner));
    return rc;
}
