/*
 * Listeners of any kind, and the URL entry points that let a caller name
 * a peer ("rdma://10.0.0.2:4000", "host:4000") without knowing which
 * transport serves it.  The RDMA device check happens in vmt_rdma_connect
 * and vmt_rdma_listen themselves, before anything is opened or sent.
 */
#include <stdio.h>
#include <stdlib.h>

#include "net_internal.h"

struct vmt_listener {
    const vmt_listener_ops *ops;
    void *impl;
    uint16_t port;
};

int vmt_listener_new(vmt_listener **out, const vmt_listener_ops *ops, void *impl, uint16_t port)
{
    *out = NULL;
    vmt_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        ops->close(impl);
        return vmt_error_set(VMT_ENOMEM, "listener: out of memory");
    }
    l->ops = ops;
    l->impl = impl;
    l->port = port;
    *out = l;
    return 0;
}

uint16_t vmt_listener_port(const vmt_listener *l)
{
    return l->port;
}

vmt_net_scheme vmt_listener_scheme(const vmt_listener *l)
{
    return l->ops->scheme;
}

int vmt_listener_accept(vmt_listener *l, vmt_transport **out, uint32_t timeout_ms)
{
    *out = NULL;
    int rc = l->ops->accept(l->impl, out, vmt_net_deadline(timeout_ms));
    if (rc == VMT_ETIMEDOUT)
        return vmt_error_set(VMT_ETIMEDOUT, "no %s connection on port %u within %u ms",
                             vmt_net_scheme_name(l->ops->scheme), l->port, timeout_ms);
    return rc;
}

void vmt_listener_close(vmt_listener *l)
{
    if (!l)
        return;
    l->ops->close(l->impl);
    free(l);
}

int vmt_transport_connect_url(vmt_transport **out, const char *url, uint32_t timeout_ms)
{
    vmt_net_addr a;

    *out = NULL;
    int rc = vmt_net_addr_parse(url, &a);
    if (rc)
        return rc;
    if (a.port == 0)
        return vmt_error_set(VMT_EINVAL, "address \"%s\": cannot connect to port 0", url);
    if (a.scheme == VMT_NET_SCHEME_RDMA)
        return vmt_rdma_connect(out, a.host, a.port, timeout_ms);
    return vmt_tcp_connect(out, a.host, a.port, timeout_ms);
}

int vmt_listen_url(vmt_listener **out, const char *url)
{
    vmt_net_addr a;

    *out = NULL;
    int rc = vmt_net_addr_parse(url, &a);
    if (rc)
        return rc;
    if (a.scheme == VMT_NET_SCHEME_RDMA)
        return vmt_rdma_listen(out, a.host, a.port);
    return vmt_tcp_listen(out, a.host, a.port);
}
