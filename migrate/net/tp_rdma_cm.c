/*
 * RDMA connection setup and teardown through librdmacm (tp_rdma.h).
 *
 * Client: resolve address, resolve route, create the queue pair and its
 * buffers, post every receive, rdma_connect with our connection data
 * ("VMTR", window, buffer size), wait for ESTABLISHED and read the
 * server's.  Server: a listening cm id on its own event channel; accept
 * takes a CONNECT_REQUEST, checks the client's connection data, moves the
 * new id to a channel of its own (so each connection's events are its
 * own), sets it up the same way and rdma_accepts with ours.
 *
 * Every step is bounded by the caller's deadline: cm event channels are
 * non-blocking and waited on with poll().  The device check comes before
 * anything else, so a host without RDMA refuses an rdma:// address before
 * a single packet is sent.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tp_rdma.h"

int vmt_rdma_probe(void)
{
    int n = 0;
    errno = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    int err = errno;
    if (list)
        ibv_free_device_list(list);
    if (list && n > 0)
        return 0;
    if (err && err != ENOENT)
        return vmt_error_set(VMT_EUNSUPPORTED,
                             "no RDMA device: ibv_get_device_list found none (%s; is an RDMA "
                             "NIC or the rxe/siw driver present?)",
                             strerror(err));
    return vmt_error_set(VMT_EUNSUPPORTED, "no RDMA device: ibv_get_device_list found none "
                                           "(is an RDMA NIC or the rxe/siw driver present?)");
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return vmt_error_errno(VMT_EIO, errno, "fcntl O_NONBLOCK");
    return 0;
}

static int channel_new(struct rdma_event_channel **out)
{
    *out = rdma_create_event_channel();
    if (!*out)
        return vmt_error_errno(VMT_EUNSUPPORTED, errno,
                               "no RDMA device: rdma_create_event_channel (/dev/infiniband/rdma_cm)");
    int rc = set_nonblock((*out)->fd);
    if (rc) {
        rdma_destroy_event_channel(*out);
        *out = NULL;
    }
    return rc;
}

int rdma_cm_wait(struct rdma_event_channel *ch, enum rdma_cm_event_type want, uint64_t deadline,
                 uint8_t *pd, size_t *pd_len, struct rdma_cm_id **ev_id, const char *what)
{
    struct rdma_cm_event *ev = NULL;
    while (rdma_get_cm_event(ch, &ev) != 0) {
        if (errno != EAGAIN && errno != EINTR)
            return vmt_error_errno(VMT_EIO, errno, "%s: rdma_get_cm_event", what);
        struct pollfd pfd = {.fd = ch->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, vmt_net_poll_ms(deadline));
        if (pr == 0)
            return vmt_error_set(VMT_ETIMEDOUT, "%s: timed out waiting for %s", what,
                                 rdma_event_str(want));
    }
    int rc = 0;
    if (ev->event != want) {
        if (ev->event == RDMA_CM_EVENT_REJECTED)
            rc = vmt_error_set(VMT_EIO, "%s: connection rejected (status %d)", what, ev->status);
        else
            rc = vmt_error_set(VMT_EIO, "%s: %s (status %d) while waiting for %s", what,
                               rdma_event_str(ev->event), ev->status, rdma_event_str(want));
    } else {
        const struct rdma_conn_param *cp = &ev->param.conn;
        /* Only connection events carry connection data (param is a union). */
        bool conn = want == RDMA_CM_EVENT_CONNECT_REQUEST || want == RDMA_CM_EVENT_ESTABLISHED;
        size_t n = conn && cp->private_data ? VMT_MIN((size_t)cp->private_data_len, *pd_len) : 0;
        if (n)
            memcpy(pd, cp->private_data, n);
        *pd_len = n;
        if (ev_id)
            *ev_id = ev->id;
    }
    rdma_ack_cm_event(ev);
    return rc;
}

/* ---- connections ----------------------------------------------------------- */

static rdma_conn *conn_alloc(void)
{
    rdma_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        vmt_error_set(VMT_ENOMEM, "rdma: out of memory");
        return NULL;
    }
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->mu, NULL);
    c->reg_wait = VMT_RDMA_CHUNK_NONE;
    if (c->wake_fd < 0) {
        vmt_error_errno(VMT_EIO, errno, "eventfd");
        rdma_conn_free(c);
        return NULL;
    }
    return c;
}

void rdma_conn_free(rdma_conn *c)
{
    if (!c)
        return;
    if (c->id && c->id->qp)
        rdma_destroy_qp(c->id);
    if (c->cq)
        ibv_destroy_cq(c->cq);
    if (c->cch)
        ibv_destroy_comp_channel(c->cch);
    rdma_bulk_release(c);
    if (c->rmr)
        ibv_dereg_mr(c->rmr);
    if (c->smr)
        ibv_dereg_mr(c->smr);
    if (c->slot_mr)
        ibv_dereg_mr(c->slot_mr);
    if (c->pd)
        ibv_dealloc_pd(c->pd);
    if (c->ech) {
        struct rdma_cm_event *ev;
        while (rdma_get_cm_event(c->ech, &ev) == 0) /* rdma_destroy_id waits for acks */
            rdma_ack_cm_event(ev);
    }
    if (c->id)
        rdma_destroy_id(c->id);
    if (c->ech)
        rdma_destroy_event_channel(c->ech);
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    free(c->rbuf);
    free(c->sbuf);
    free(c->slots);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

/* Allocates and registers the buffers of a connection. */
static int conn_buffers(rdma_conn *c)
{
    int access = IBV_ACCESS_LOCAL_WRITE;
    size_t rb = (size_t)RDMA_NRECV * RDMA_BUF, sb = (size_t)RDMA_NSEND * RDMA_BUF;
    if (posix_memalign((void **)&c->rbuf, 4096, rb) || posix_memalign((void **)&c->sbuf, 4096, sb))
        return vmt_error_set(VMT_ENOMEM, "rdma: out of memory for buffers");
    c->rmr = ibv_reg_mr(c->pd, c->rbuf, rb, access);
    c->smr = c->rmr ? ibv_reg_mr(c->pd, c->sbuf, sb, access) : NULL;
    if (!c->smr)
        return vmt_error_errno(VMT_ENOMEM, errno,
                               "rdma: registering %zu bytes of buffers (RLIMIT_MEMLOCK, "
                               "ulimit -l, may be too low)",
                               rb + sb);
    for (uint32_t i = 0; i < RDMA_NSEND; i++)
        c->send_free[c->nsend_free++] = i;
    return 0;
}

/* Protection domain, completion queue, queue pair, buffers, receives. */
static int conn_setup(rdma_conn *c)
{
    struct ibv_context *ctx = c->id->verbs;
    if (!ctx)
        return vmt_error_set(VMT_EIO, "%s: no RDMA device bound to the address", c->desc);
    c->pd = ibv_alloc_pd(ctx);
    c->cch = c->pd ? ibv_create_comp_channel(ctx) : NULL;
    int cqe = (int)(RDMA_NRECV + RDMA_NSEND + RDMA_NSLOT + 8);
    c->cq = c->cch ? ibv_create_cq(ctx, cqe, NULL, c->cch, 0) : NULL;
    if (!c->cq)
        return vmt_error_errno(VMT_EIO, errno, "%s: creating the completion queue", c->desc);
    int rc = set_nonblock(c->cch->fd);
    if (rc || (rc = conn_buffers(c)) != 0)
        return rc;
    struct ibv_qp_init_attr qa = {
        .send_cq = c->cq,
        .recv_cq = c->cq,
        .qp_type = IBV_QPT_RC,
        .cap = {.max_send_wr = RDMA_NSEND + RDMA_NSLOT + 1,
                .max_recv_wr = RDMA_NRECV,
                .max_send_sge = 1,
                .max_recv_sge = 1},
    };
    if (rdma_create_qp(c->id, c->pd, &qa) != 0)
        return vmt_error_errno(VMT_EIO, errno, "%s: rdma_create_qp", c->desc);
    for (uint32_t i = 0; i < RDMA_NRECV; i++) {
        struct ibv_sge sge = {(uintptr_t)(c->rbuf + (size_t)i * RDMA_BUF), RDMA_BUF, c->rmr->lkey};
        struct ibv_recv_wr wr = {.wr_id = WR_ID(WR_RECV, i), .sg_list = &sge, .num_sge = 1};
        struct ibv_recv_wr *bad = NULL;
        int err = ibv_post_recv(c->id->qp, &wr, &bad);
        if (err)
            return vmt_error_errno(VMT_EIO, err, "%s: ibv_post_recv", c->desc);
    }
    return 0;
}

/* Applies the peer's connection data: window and buffer size. */
static int conn_start(rdma_conn *c, const uint8_t *pd, size_t pd_len)
{
    vmt_rdma_hello h;
    int rc = vmt_rdma_hello_decode(pd, pd_len, &h);
    if (rc)
        return vmt_error_wrap(rc, "%s", c->desc);
    vmt_rdma_credit_init(&c->cr, h.window, h.ctrl_window);
    c->max_data = VMT_MIN(h.buf_bytes, RDMA_BUF) - VMT_RDMA_MSG_HDR;
    c->established = true;
    return 0;
}

static void conn_param(struct rdma_conn_param *p, uint8_t hello[VMT_RDMA_HELLO_LEN])
{
    vmt_rdma_hello h = {RDMA_DWINDOW, RDMA_BUF, RDMA_CWINDOW};
    vmt_rdma_hello_encode(&h, hello);
    memset(p, 0, sizeof(*p));
    p->private_data = hello;
    p->private_data_len = VMT_RDMA_HELLO_LEN;
    p->responder_resources = 1;
    p->initiator_depth = 1;
    p->retry_count = 7;
    p->rnr_retry_count = 7;
}

static void peer_text(rdma_conn *c)
{
    char host[INET6_ADDRSTRLEN] = "?";
    struct sockaddr *sa = rdma_get_peer_addr(c->id);
    unsigned port = ntohs(rdma_get_dst_port(c->id));
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
    bool v6 = strchr(host, ':') != NULL;
    snprintf(c->desc, sizeof(c->desc), "rdma %s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

static int resolve(const char *host, uint16_t port, bool passive, struct addrinfo **res)
{
    char serv[8];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
    snprintf(serv, sizeof(serv), "%u", port);
    int gai = getaddrinfo(host, serv, &hints, res);
    if (gai != 0)
        return vmt_error_set(VMT_EINVAL, "cannot resolve \"%s\": %s", host ? host : "*",
                             gai_strerror(gai));
    return 0;
}

/* Address and route resolution, resources, connect, ESTABLISHED. */
static int client_connect(rdma_conn *c, const struct sockaddr *sa, uint64_t deadline)
{
    uint8_t pd[64], hello[VMT_RDMA_HELLO_LEN];
    size_t pd_len = sizeof(pd);
    struct rdma_conn_param p;
    int ms = vmt_net_poll_ms(deadline);
    ms = ms < 0 || ms > 60000 ? 60000 : (ms ? ms : 1);

    if (rdma_resolve_addr(c->id, NULL, (struct sockaddr *)sa, ms) != 0)
        return vmt_error_errno(VMT_EIO, errno, "%s: rdma_resolve_addr", c->desc);
    int rc = rdma_cm_wait(c->ech, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, pd, &pd_len, NULL, c->desc);
    if (rc == 0 && rdma_resolve_route(c->id, ms) != 0)
        rc = vmt_error_errno(VMT_EIO, errno, "%s: rdma_resolve_route", c->desc);
    pd_len = sizeof(pd);
    if (rc == 0)
        rc = rdma_cm_wait(c->ech, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, pd, &pd_len, NULL,
                          c->desc);
    if (rc == 0)
        rc = conn_setup(c);
    conn_param(&p, hello);
    if (rc == 0 && rdma_connect(c->id, &p) != 0)
        rc = vmt_error_errno(VMT_EIO, errno, "%s: rdma_connect", c->desc);
    pd_len = sizeof(pd);
    if (rc == 0)
        rc = rdma_cm_wait(c->ech, RDMA_CM_EVENT_ESTABLISHED, deadline, pd, &pd_len, NULL, c->desc);
    if (rc == 0)
        rc = conn_start(c, pd, pd_len);
    return rc;
}

int vmt_rdma_connect(vmt_transport **out, const char *host, uint16_t port, uint32_t timeout_ms)
{
    struct addrinfo *res = NULL;
    uint64_t deadline = vmt_net_deadline(timeout_ms);

    *out = NULL;
    int rc = vmt_rdma_probe();
    if (rc)
        return vmt_error_wrap(rc, "rdma://%s:%u", host ? host : "", port);
    if ((rc = resolve(host ? host : "127.0.0.1", port, false, &res)) != 0)
        return rc;
    rdma_conn *c = conn_alloc();
    rc = c ? channel_new(&c->ech) : VMT_ENOMEM;
    if (rc == 0 && rdma_create_id(c->ech, &c->id, c, RDMA_PS_TCP) != 0)
        rc = vmt_error_errno(VMT_EIO, errno, "rdma_create_id");
    if (c)
        snprintf(c->desc, sizeof(c->desc), "rdma %s:%u", host ? host : "127.0.0.1", port);
    if (rc == 0)
        rc = client_connect(c, res->ai_addr, deadline);
    freeaddrinfo(res);
    if (rc) {
        rdma_conn_free(c);
        return rc;
    }
    peer_text(c);
    return vmt_transport_new(out, &vmt_rdma_ops, c);
}

/* ---- listening ----------------------------------------------------------- */

typedef struct rdma_listener {
    struct rdma_event_channel *ech;
    struct rdma_cm_id *id;
} rdma_listener;

static void rdma_listener_close(void *impl)
{
    rdma_listener *l = impl;
    if (!l)
        return;
    if (l->id)
        rdma_destroy_id(l->id);
    if (l->ech)
        rdma_destroy_event_channel(l->ech);
    free(l);
}

/* Sets up an accepted connection request (id) and accepts it. */
static int server_accept(rdma_conn *c, const uint8_t *pd, size_t pd_len, uint64_t deadline)
{
    uint8_t hello[VMT_RDMA_HELLO_LEN], ep[64];
    size_t ep_len = sizeof(ep);
    struct rdma_conn_param p;

    peer_text(c);
    int rc = conn_start(c, pd, pd_len);
    c->established = false; /* only once rdma_accept went through */
    if (rc == 0)
        rc = conn_setup(c);
    conn_param(&p, hello);
    if (rc == 0 && rdma_accept(c->id, &p) != 0)
        rc = vmt_error_errno(VMT_EIO, errno, "%s: rdma_accept", c->desc);
    if (rc == 0)
        c->established = true;
    if (rc == 0)
        rc = rdma_cm_wait(c->ech, RDMA_CM_EVENT_ESTABLISHED, deadline, ep, &ep_len, NULL, c->desc);
    return rc;
}

static int rdma_listener_accept(void *impl, vmt_transport **out, uint64_t deadline)
{
    rdma_listener *l = impl;
    uint8_t pd[64];
    size_t pd_len = sizeof(pd);
    struct rdma_cm_id *id = NULL;

    int rc = rdma_cm_wait(l->ech, RDMA_CM_EVENT_CONNECT_REQUEST, deadline, pd, &pd_len, &id,
                          "rdma listener");
    if (rc)
        return rc;
    rdma_conn *c = conn_alloc();
    rc = c ? channel_new(&c->ech) : VMT_ENOMEM;
    if (rc == 0 && rdma_migrate_id(id, c->ech) != 0)
        rc = vmt_error_errno(VMT_EIO, errno, "rdma_migrate_id");
    if (rc) {
        rdma_reject(id, NULL, 0);
        rdma_destroy_id(id);
        rdma_conn_free(c);
        return rc;
    }
    c->id = id;
    id->context = c;
    if ((rc = server_accept(c, pd, pd_len, deadline)) != 0) {
        if (!c->established)
            rdma_reject(id, NULL, 0);
        rdma_conn_free(c);
        return rc;
    }
    return vmt_transport_new(out, &vmt_rdma_ops, c);
}

static const vmt_listener_ops rdma_listener_ops = {
    .scheme = VMT_NET_SCHEME_RDMA,
    .accept = rdma_listener_accept,
    .close = rdma_listener_close,
};

int vmt_rdma_listen(vmt_listener **out, const char *host, uint16_t port)
{
    struct addrinfo *res = NULL;

    *out = NULL;
    int rc = vmt_rdma_probe();
    if (rc)
        return vmt_error_wrap(rc, "rdma://%s:%u", host ? host : "", port);
    if ((rc = resolve(host, port, true, &res)) != 0)
        return rc;
    rdma_listener *l = calloc(1, sizeof(*l));
    rc = l ? channel_new(&l->ech) : vmt_error_set(VMT_ENOMEM, "rdma: out of memory");
    if (rc == 0 && rdma_create_id(l->ech, &l->id, l, RDMA_PS_TCP) != 0)
        rc = vmt_error_errno(VMT_EIO, errno, "rdma_create_id");
    if (rc == 0 && (rdma_bind_addr(l->id, res->ai_addr) != 0 || rdma_listen(l->id, 16) != 0))
        rc = vmt_error_errno(VMT_EIO, errno, "listening on rdma://%s:%u", host ? host : "*",
                             port);
    freeaddrinfo(res);
    if (rc) {
        rdma_listener_close(l);
        return rc;
    }
    return vmt_listener_new(out, &rdma_listener_ops, l, ntohs(rdma_get_src_port(l->id)));
}
