/*
 * The fault-injecting transport: passes bytes through to an inner transport
 * until a configured byte offset, then cuts the connection (shuts the inner
 * stream down, so the peer sees EOF or a reset) and fails.  It can also
 * flip one byte on the way out, to check that the peer's checksums catch
 * corruption the transport itself does not.
 *
 * The wrapper calls the inner implementation's ops directly: stickiness,
 * timeouts and counting are the outer generic layer's.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_internal.h"

typedef struct fault_impl {
    vmt_transport *inner;
    const vmt_transport_ops *iops;
    void *iimpl;
    vmt_fault_opts o;
    uint64_t sent, received; /* each touched by its one direction's thread */
    atomic_bool cut;
} fault_impl;

void vmt_fault_opts_init(vmt_fault_opts *o)
{
    o->cut_after_sent = UINT64_MAX;
    o->cut_after_recv = UINT64_MAX;
    o->flip_sent_at = UINT64_MAX;
}

static int do_cut(fault_impl *f, const char *dir, uint64_t at)
{
    atomic_store(&f->cut, true);
    f->iops->shutdown(f->iimpl);
    return vmt_error_set(VMT_EIO, "fault injection: connection cut after %llu bytes %s",
                         (unsigned long long)at, dir);
}

static int cut_error(void)
{
    return vmt_error_set(VMT_EIO, "fault injection: the connection was cut");
}

/* Sends p[0..n) (at stream offset f->sent) flipping the byte at flip_sent_at. */
static int send_flipped(fault_impl *f, const uint8_t *p, size_t n, uint64_t deadline)
{
    uint64_t at = f->o.flip_sent_at;
    if (at < f->sent || at - f->sent >= n)
        return f->iops->send(f->iimpl, p, n, deadline);
    size_t k = (size_t)(at - f->sent);
    int rc = k ? f->iops->send(f->iimpl, p, k, deadline) : 0;
    uint8_t b = (uint8_t)~p[k];
    if (rc == 0)
        rc = f->iops->send(f->iimpl, &b, 1, deadline);
    if (rc == 0 && n > k + 1)
        rc = f->iops->send(f->iimpl, p + k + 1, n - k - 1, deadline);
    return rc;
}

static int fault_send(void *impl, const void *buf, size_t len, uint64_t deadline)
{
    fault_impl *f = impl;

    if (atomic_load(&f->cut))
        return cut_error();
    uint64_t room = f->o.cut_after_sent - f->sent; /* cut_after_sent >= sent always */
    size_t n = room < len ? (size_t)room : len;
    int rc = n ? send_flipped(f, buf, n, deadline) : 0;
    if (rc)
        return rc;
    f->sent += n;
    if (f->sent == f->o.cut_after_sent) {
        int cut = do_cut(f, "sent", f->sent);
        return n == len ? 0 : cut; /* all of this call's bytes passed: the next call fails */
    }
    return 0;
}

static int fault_recv(void *impl, void *buf, size_t len, size_t *got, uint64_t deadline)
{
    fault_impl *f = impl;

    *got = 0;
    if (atomic_load(&f->cut))
        return cut_error();
    uint64_t room = f->o.cut_after_recv - f->received;
    if (room == 0)
        return do_cut(f, "received", f->received);
    size_t n = room < len ? (size_t)room : len;
    int rc = f->iops->recv(f->iimpl, buf, n, got, deadline);
    if (rc)
        return rc;
    f->received += *got;
    if (f->received == f->o.cut_after_recv)
        do_cut(f, "received", f->received); /* these bytes still count; the next call fails */
    return 0;
}

static void fault_shutdown(void *impl)
{
    fault_impl *f = impl;
    f->iops->shutdown(f->iimpl);
}

static void fault_close(void *impl)
{
    fault_impl *f = impl;
    if (!f)
        return;
    vmt_transport_close(f->inner);
    free(f);
}

static void fault_describe(void *impl, char *buf, size_t cap)
{
    fault_impl *f = impl;
    snprintf(buf, cap, "fault(%s)", vmt_transport_peer(f->inner));
}

/* A cut of our own is not the peer's doing. */
static bool fault_peer_gone(void *impl)
{
    fault_impl *f = impl;
    return !atomic_load(&f->cut) && f->iops->peer_gone && f->iops->peer_gone(f->iimpl);
}

static const vmt_transport_ops fault_ops = {
    .peer_gone = fault_peer_gone,
    .name = "fault",
    .send = fault_send,
    .recv = fault_recv,
    .shutdown = fault_shutdown,
    .close = fault_close,
    .describe = fault_describe,
};

int vmt_transport_fault(vmt_transport **out, vmt_transport *inner, const vmt_fault_opts *o)
{
    *out = NULL;
    fault_impl *f = calloc(1, sizeof(*f));
    if (!f) {
        vmt_transport_close(inner);
        return vmt_error_set(VMT_ENOMEM, "fault transport: out of memory");
    }
    f->inner = inner;
    f->iops = vmt_transport_get_ops(inner);
    f->iimpl = vmt_transport_get_impl(inner);
    if (o)
        f->o = *o;
    else
        vmt_fault_opts_init(&f->o);
    int rc = vmt_transport_new(out, &fault_ops, f);
    if (rc == 0)
        vmt_transport_set_timeout(*out, vmt_transport_timeout(inner));
    return rc;
}
