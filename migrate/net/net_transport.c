/*
 * The generic transport: what every implementation gets for free on top of
 * its ops table (net.h): exact reads, timeouts turned into deadlines, byte
 * counts, and the sticky error.
 *
 * Stickiness: the first failure is recorded (code and message) and every
 * later call returns it, re-setting the message on the calling thread, until
 * close.  The one exception is a receive that times out before its first
 * byte: nothing was consumed, so the stream is still in step and the caller
 * may wait again.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_internal.h"

#define MSG_MAX 512
#define PEER_MAX 160

struct vmt_transport {
    const vmt_transport_ops *ops;
    void *impl;
    uint32_t timeout_ms;
    _Atomic int err;
    atomic_bool eof;
    atomic_bool by_peer; /* err is the peer's ERROR frame */
    _Atomic uint64_t sent, received;
    pthread_mutex_t lock;      /* guards msg */
    pthread_mutex_t send_lock; /* one frame at a time (net_frame.c) */
    pthread_mutex_t recv_lock; /* held by a receive (vmt_frame_explain skips then) */
    char msg[MSG_MAX];
    char peer[PEER_MAX];
};

uint64_t vmt_net_deadline(uint32_t timeout_ms)
{
    if (timeout_ms == VMT_NET_FOREVER)
        return UINT64_MAX;
    return vmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

int vmt_net_poll_ms(uint64_t deadline_ns)
{
    if (deadline_ns == UINT64_MAX)
        return -1;
    uint64_t now = vmt_now_ns();
    if (now >= deadline_ns)
        return 0;
    uint64_t ms = (deadline_ns - now + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

uint32_t vmt_net_left_ms(uint64_t deadline_ns)
{
    if (deadline_ns == UINT64_MAX)
        return VMT_NET_FOREVER;
    int ms = vmt_net_poll_ms(deadline_ns);
    return ms < 0 ? VMT_NET_FOREVER : (uint32_t)ms;
}

int vmt_transport_new(vmt_transport **out, const vmt_transport_ops *ops, void *impl)
{
    *out = NULL;
    vmt_transport *t = calloc(1, sizeof(*t));
    if (!t) {
        ops->close(impl);
        return vmt_error_set(VMT_ENOMEM, "transport: out of memory");
    }
    t->ops = ops;
    t->impl = impl;
    t->timeout_ms = VMT_NET_DEFAULT_TIMEOUT_MS;
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->send_lock, NULL);
    pthread_mutex_init(&t->recv_lock, NULL);
    ops->describe(impl, t->peer, sizeof(t->peer));
    *out = t;
    return 0;
}

void vmt_transport_close(vmt_transport *t)
{
    if (!t)
        return;
    t->ops->close(t->impl);
    pthread_mutex_destroy(&t->lock);
    pthread_mutex_destroy(&t->send_lock);
    pthread_mutex_destroy(&t->recv_lock);
    free(t);
}

const vmt_transport_ops *vmt_transport_get_ops(const vmt_transport *t)
{
    return t->ops;
}

void *vmt_transport_get_impl(const vmt_transport *t)
{
    return t->impl;
}

/* Returns the sticky error with its message re-set, or 0. */
static int sticky(vmt_transport *t)
{
    int err = atomic_load(&t->err);
    if (!err)
        return 0;
    pthread_mutex_lock(&t->lock);
    vmt_error_set(err, "%s", t->msg);
    pthread_mutex_unlock(&t->lock);
    return err;
}

int vmt_transport_fail(vmt_transport *t, int code)
{
    pthread_mutex_lock(&t->lock);
    int first = atomic_load(&t->err);
    if (!first) {
        snprintf(t->msg, sizeof(t->msg), "%s", vmt_error_last());
        atomic_store(&t->err, code);
    } else {
        /* Keep the first failure: what happened after it is its consequence. */
        vmt_error_set(first, "%s", t->msg);
        code = first;
    }
    pthread_mutex_unlock(&t->lock);
    return code;
}

/* Prefixes the thread's message with the peer and records it. */
static int fail_here(vmt_transport *t, int code)
{
    if (atomic_load(&t->err))
        return sticky(t);
    vmt_error_wrap(code, "%s", t->peer);
    return vmt_transport_fail(t, code);
}

int vmt_transport_fail_by_peer(vmt_transport *t, int code)
{
    pthread_mutex_lock(&t->lock);
    if (!atomic_load(&t->err) || !atomic_load(&t->by_peer)) {
        /* The peer's reason replaces a local consequence (EOF, shutdown). */
        snprintf(t->msg, sizeof(t->msg), "%s", vmt_error_last());
        atomic_store(&t->err, code);
        atomic_store(&t->by_peer, true);
    }
    code = atomic_load(&t->err);
    vmt_error_set(code, "%s", t->msg);
    pthread_mutex_unlock(&t->lock);
    return code;
}

bool vmt_transport_failed_by_peer(const vmt_transport *t)
{
    return atomic_load(&t->by_peer);
}

int vmt_transport_error(const vmt_transport *t)
{
    return atomic_load(&t->err);
}

bool vmt_transport_eof(const vmt_transport *t)
{
    return atomic_load(&t->eof);
}

bool vmt_transport_peer_gone(const vmt_transport *t)
{
    if (atomic_load(&t->eof))
        return true;
    return t->ops->peer_gone && t->ops->peer_gone(t->impl);
}

const char *vmt_transport_peer(const vmt_transport *t)
{
    return t->peer;
}

uint64_t vmt_transport_bytes_sent(const vmt_transport *t)
{
    return atomic_load(&t->sent);
}

uint64_t vmt_transport_bytes_received(const vmt_transport *t)
{
    return atomic_load(&t->received);
}

void vmt_transport_set_timeout(vmt_transport *t, uint32_t timeout_ms)
{
    t->timeout_ms = timeout_ms;
}

uint32_t vmt_transport_timeout(const vmt_transport *t)
{
    return t->timeout_ms;
}

void vmt_transport_shutdown(vmt_transport *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    if (!atomic_load(&t->err)) {
        snprintf(t->msg, sizeof(t->msg), "%s: the stream was shut down", t->peer);
        atomic_store(&t->err, VMT_ECANCELED);
    }
    pthread_mutex_unlock(&t->lock);
    t->ops->shutdown(t->impl);
}

void vmt_transport_send_lock(vmt_transport *t)
{
    pthread_mutex_lock(&t->send_lock);
}

bool vmt_transport_send_trylock(vmt_transport *t)
{
    return pthread_mutex_trylock(&t->send_lock) == 0;
}

void vmt_transport_send_unlock(vmt_transport *t)
{
    pthread_mutex_unlock(&t->send_lock);
}

int vmt_transport_send(vmt_transport *t, const void *buf, size_t len)
{
    return vmt_transport_send_deadline(t, buf, len, vmt_net_deadline(t->timeout_ms));
}

int vmt_transport_send_deadline(vmt_transport *t, const void *buf, size_t len, uint64_t deadline)
{
    int rc = sticky(t);
    if (rc)
        return rc;
    if (len == 0)
        return 0;
    rc = t->ops->send(t->impl, buf, len, deadline);
    if (rc)
        return fail_here(t, rc);
    atomic_fetch_add(&t->sent, len);
    return 0;
}

/* One receive of 1..len bytes until deadline; `before` bytes of the same
 * message have arrived already (decides whether a timeout is sticky). */
static int recv_once(vmt_transport *t, uint8_t *buf, size_t len, size_t *got, uint64_t deadline,
                     size_t before, size_t total)
{
    *got = 0;
    int rc = t->ops->recv(t->impl, buf, len, got, deadline);
    if (rc == 0 && *got == 0) {
        if (atomic_load(&t->err)) /* our own shutdown, not the peer's close */
            return sticky(t);
        atomic_store(&t->eof, true);
        if (before)
            vmt_error_set(VMT_EIO, "connection closed by peer after %zu of %zu bytes", before,
                          total);
        else
            vmt_error_set(VMT_EIO, "connection closed by peer");
        return fail_here(t, VMT_EIO);
    }
    if (rc == VMT_ETIMEDOUT && *got == 0 && before == 0) {
        if (atomic_load(&t->err)) /* shut down meanwhile */
            return sticky(t);
        return vmt_error_wrap(VMT_ETIMEDOUT, "%s", t->peer);
    }
    if (rc == VMT_ETIMEDOUT)
        vmt_error_set(VMT_ETIMEDOUT, "timed out after receiving %zu of %zu bytes", before + *got,
                      total);
    if (rc)
        return fail_here(t, rc);
    atomic_fetch_add(&t->received, *got);
    return 0;
}

int vmt_transport_recv_some(vmt_transport *t, void *buf, size_t len, size_t *got,
                            uint32_t timeout_ms)
{
    *got = 0;
    int rc = sticky(t);
    if (rc || len == 0)
        return rc;
    pthread_mutex_lock(&t->recv_lock);
    rc = recv_once(t, buf, len, got, vmt_net_deadline(timeout_ms), 0, len);
    pthread_mutex_unlock(&t->recv_lock);
    return rc;
}

int vmt_transport_recv_timeout(vmt_transport *t, void *buf, size_t len, uint32_t timeout_ms)
{
    uint8_t *p = buf;
    size_t done = 0;
    uint64_t deadline = vmt_net_deadline(timeout_ms);

    int rc = sticky(t);
    if (rc)
        return rc;
    pthread_mutex_lock(&t->recv_lock);
    while (done < len && rc == 0) {
        size_t got = 0;
        rc = recv_once(t, p + done, len - done, &got, deadline, done, len);
        done += got;
    }
    pthread_mutex_unlock(&t->recv_lock);
    return rc;
}

bool vmt_transport_recv_trylock(vmt_transport *t)
{
    return pthread_mutex_trylock(&t->recv_lock) == 0;
}

void vmt_transport_recv_unlock(vmt_transport *t)
{
    pthread_mutex_unlock(&t->recv_lock);
}

int vmt_transport_recv_raw(vmt_transport *t, void *buf, size_t len, uint64_t deadline)
{
    uint8_t *p = buf;
    for (size_t done = 0; done < len;) {
        size_t got = 0;
        int rc = t->ops->recv(t->impl, p + done, len - done, &got, deadline);
        if (rc)
            return rc;
        if (got == 0)
            return vmt_error_set(VMT_EIO, "connection closed by peer");
        done += got;
    }
    return 0;
}

int vmt_transport_recv(vmt_transport *t, void *buf, size_t len)
{
    return vmt_transport_recv_timeout(t, buf, len, t->timeout_ms);
}

/* ---- bulk placement ------------------------------------------------------ */

static int no_bulk(vmt_transport *t)
{
    return vmt_error_set(VMT_EUNSUPPORTED, "%s: the %s transport has no bulk placement", t->peer,
                         t->ops->name);
}

int vmt_transport_bulk_expose(vmt_transport *t, void *base, size_t len, const vmt_bulk_config *c)
{
    int rc = sticky(t);
    if (rc)
        return rc;
    if (!t->ops->bulk_expose)
        return no_bulk(t);
    vmt_bulk_config def = {0, 0};
    rc = t->ops->bulk_expose(t->impl, base, len, c ? c : &def);
    /* A refused argument leaves the stream as it was; anything else broke it. */
    if (rc == VMT_EINVAL || rc == VMT_EEXIST || rc == VMT_EUNSUPPORTED)
        return rc;
    return rc ? fail_here(t, rc) : 0;
}

bool vmt_transport_bulk_can_place(vmt_transport *t)
{
    return !atomic_load(&t->err) && t->ops->bulk_can_place && t->ops->bulk_can_place(t->impl);
}

int vmt_transport_bulk_place(vmt_transport *t, uint64_t offset, const void *src, size_t len)
{
    int rc = sticky(t);
    if (rc)
        return rc;
    if (!t->ops->bulk_place)
        return no_bulk(t);
    if (len == 0)
        return 0;
    rc = t->ops->bulk_place(t->impl, offset, src, len, vmt_net_deadline(t->timeout_ms));
    if (rc == VMT_EINVAL || rc == VMT_EUNSUPPORTED)
        return rc; /* refused before anything was written */
    if (rc)
        return fail_here(t, rc);
    atomic_fetch_add(&t->sent, len);
    return 0;
}

int vmt_transport_bulk_landed(vmt_transport *t, vmt_page_run *runs, size_t cap, size_t *n)
{
    *n = 0;
    int rc = sticky(t);
    if (rc)
        return rc;
    if (!t->ops->bulk_landed)
        return no_bulk(t);
    rc = t->ops->bulk_landed(t->impl, runs, cap, n);
    if (rc)
        return fail_here(t, rc);
    for (size_t i = 0; i < *n; i++)
        atomic_fetch_add(&t->received, runs[i].npages * VMT_NET_PAGE_SIZE);
    return 0;
}
