/*
 * The RDMA transport's progress engine and byte stream (tp_rdma.h).
 *
 * There is no thread of our own: whichever caller needs something (data,
 * a credit, a free buffer, a registration) runs the engine under the
 * connection lock: it polls the completion queue, acts on what arrived
 * (DATA is queued for the reader, everything else is handled and its
 * buffer reposted at once, so credits and control messages flow even when
 * nobody reads the stream), and returns owed credits.  When nothing is
 * there, one caller sleeps in poll() on the completion channel, the cm
 * event channel and the shutdown eventfd; the others sleep on a condition
 * variable that the poller broadcasts after each pass.
 *
 * Stream end: close sends FIN after the data and waits for its completion
 * (the peer has it) before disconnecting, so the peer reads everything and
 * then a clean EOF.  A disconnect without FIN, or a failed work completion,
 * is "connection lost" (VMT_EIO).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tp_rdma.h"

int rdma_fail(rdma_conn *c, int code)
{
    if (!c->fatal) {
        c->fatal = code;
        snprintf(c->fatal_msg, sizeof(c->fatal_msg), "%s", vmt_error_last());
    }
    return vmt_error_set(c->fatal, "%s", c->fatal_msg);
}

int rdma_check(rdma_conn *c, bool sending)
{
    if (c->fatal)
        return vmt_error_set(c->fatal, "%s", c->fatal_msg);
    if (c->shut)
        return vmt_error_set(VMT_ECANCELED, "the stream was shut down");
    if (sending && c->fin_seen)
        return vmt_error_set(VMT_EIO, "connection closed by peer");
    if (sending && (c->peer_gone || c->qp_dead))
        return vmt_error_set(VMT_EIO, "connection lost: the RDMA peer disconnected");
    return 0;
}

static int repost(rdma_conn *c, uint32_t idx, vmt_rdma_class k)
{
    struct ibv_sge sge = {(uintptr_t)(c->rbuf + (size_t)idx * RDMA_BUF), RDMA_BUF, c->rmr->lkey};
    struct ibv_recv_wr wr = {.wr_id = WR_ID(WR_RECV, idx), .sg_list = &sge, .num_sge = 1};
    struct ibv_recv_wr *bad = NULL;
    int err = ibv_post_recv(c->id->qp, &wr, &bad);
    if (err)
        return rdma_fail(c, vmt_error_errno(VMT_EIO, err, "ibv_post_recv"));
    vmt_rdma_credit_reposted(&c->cr, k, 1);
    return 0;
}

int rdma_post_msg(rdma_conn *c, vmt_rdma_msg *m)
{
    uint32_t idx = c->send_free[--c->nsend_free];
    uint8_t *buf = c->sbuf + (size_t)idx * RDMA_BUF;
    vmt_rdma_credit_take(&c->cr, m->type, &m->grant, &m->cgrant);
    size_t len = vmt_rdma_msg_encode(m, buf, RDMA_BUF);
    struct ibv_sge sge = {(uintptr_t)buf, (uint32_t)len, c->smr->lkey};
    struct ibv_send_wr wr = {.wr_id = WR_ID(WR_SEND, idx),
                             .sg_list = &sge,
                             .num_sge = 1,
                             .opcode = IBV_WR_SEND,
                             .send_flags = IBV_SEND_SIGNALED};
    struct ibv_send_wr *bad = NULL;
    int err = ibv_post_send(c->id->qp, &wr, &bad);
    if (err) {
        c->send_free[c->nsend_free++] = idx;
        return rdma_fail(c, vmt_error_errno(VMT_EIO, err, "ibv_post_send"));
    }
    c->sends_in_flight++;
    return 0;
}

/* Sends a CREDIT message when the accounting says so and a buffer is free. */
static int return_credits(rdma_conn *c)
{
    if (c->fatal || c->shut || !vmt_rdma_credit_should_return(&c->cr) || c->nsend_free == 0)
        return 0;
    vmt_rdma_msg m = {.type = VMT_RDMA_MSG_CREDIT};
    c->cr.credit_msgs++;
    return rdma_post_msg(c, &m);
}

/* A SEND arrived in receive buffer idx. */
static int on_recv(rdma_conn *c, uint32_t idx, uint32_t byte_len)
{
    vmt_rdma_msg m;
    const uint8_t *buf = c->rbuf + (size_t)idx * RDMA_BUF;
    int rc = vmt_rdma_msg_decode(buf, byte_len, RDMA_BUF - VMT_RDMA_MSG_HDR, &m);
    if (rc == 0)
        rc = vmt_rdma_credit_on_receive(&c->cr, m.type);
    if (rc == 0)
        rc = vmt_rdma_credit_on_grant(&c->cr, m.grant, m.cgrant);
    if (rc)
        return rdma_fail(c, vmt_error_wrap(rc, "%s", c->desc));
    if (m.type == VMT_RDMA_MSG_DATA) {
        uint32_t slot = (c->ready_head + c->ready_n++) % RDMA_NRECV;
        c->ready[slot] = idx;
        c->rlen[idx] = m.len;
        return 0;
    }
    if (m.type == VMT_RDMA_MSG_FIN)
        c->fin_seen = true;
    else if (m.type != VMT_RDMA_MSG_CREDIT && (rc = rdma_bulk_on_msg(c, &m)) != 0)
        return rdma_fail(c, vmt_error_wrap(rc, "%s", c->desc));
    return repost(c, idx, VMT_RDMA_CLASS_CTRL);
}

static int on_completion(rdma_conn *c, const struct ibv_wc *wc)
{
    uint32_t kind = (uint32_t)(wc->wr_id >> 32), idx = (uint32_t)wc->wr_id;
    if (kind == WR_SEND) {
        c->send_free[c->nsend_free++] = idx;
        c->sends_in_flight--;
    } else if (kind == WR_WRITE) {
        rdma_bulk_on_write_done(c, idx);
    }
    if (wc->status != IBV_WC_SUCCESS) {
        c->qp_dead = true;
        /* Flushed by a disconnect: the stream's state says what happened. */
        if (wc->status == IBV_WC_WR_FLUSH_ERR || c->shut || c->peer_gone)
            return 0;
        vmt_error_set(VMT_EIO, "%s: RDMA %s failed: %s", c->desc,
                      kind == WR_RECV ? "receive" : kind == WR_SEND ? "send" : "write",
                      ibv_wc_status_str(wc->status));
        return rdma_fail(c, VMT_EIO);
    }
    if (kind != WR_RECV)
        return 0;
    if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
        int rc = vmt_rdma_credit_on_receive(&c->cr, VMT_RDMA_MSG_WRITE);
        if (rc == 0)
            rc = rdma_bulk_on_imm(c, ntohl(wc->imm_data), wc->byte_len);
        return rc ? rdma_fail(c, vmt_error_wrap(rc, "%s", c->desc))
                  : repost(c, idx, vmt_rdma_msg_class(VMT_RDMA_MSG_WRITE));
    }
    return on_recv(c, idx, wc->byte_len);
}

/* Handles the cm events that may come after setup. */
static void cm_events(rdma_conn *c)
{
    struct rdma_cm_event *ev;
    while (rdma_get_cm_event(c->ech, &ev) == 0) {
        if (ev->event == RDMA_CM_EVENT_DISCONNECTED)
            c->peer_gone = true;
        else if (ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL) {
            vmt_error_set(VMT_EIO, "%s: the RDMA device was removed", c->desc);
            rdma_fail(c, VMT_EIO);
        }
        rdma_ack_cm_event(ev);
    }
}

/* Handles every completion there is; returns how many. */
static int drain(rdma_conn *c)
{
    struct ibv_wc wc[16];
    int n = 0, total = 0;
    while (!c->fatal && (n = ibv_poll_cq(c->cq, 16, wc)) > 0) {
        for (int i = 0; i < n && !c->fatal; i++)
            on_completion(c, &wc[i]);
        total += n;
    }
    if (n < 0 && !c->fatal)
        rdma_fail(c, vmt_error_set(VMT_EIO, "%s: ibv_poll_cq failed", c->desc));
    if ((c->peer_gone || c->qp_dead) && !c->lost_ns)
        c->lost_ns = vmt_now_ns();
    return total;
}

int rdma_progress(rdma_conn *c)
{
    drain(c);
    if (!c->fatal && rdma_bulk_flush(c) == 0)
        return_credits(c);
    return c->fatal ? vmt_error_set(c->fatal, "%s", c->fatal_msg) : 0;
}

static void cond_wait_until(rdma_conn *c, uint64_t deadline)
{
    if (deadline == UINT64_MAX) {
        pthread_cond_wait(&c->cv, &c->mu);
        return;
    }
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000ull),
                          .tv_nsec = (long)(deadline % 1000000000ull)};
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

/* The poller's turn: arms the CQ, sleeps in poll(), collects the events. */
static void poll_channels(rdma_conn *c, uint64_t deadline)
{
    struct pollfd pfd[3] = {{.fd = c->cch->fd, .events = POLLIN},
                            {.fd = c->ech->fd, .events = POLLIN},
                            {.fd = c->wake_fd, .events = POLLIN}};
    c->waiter = true;
    /* Armed first, then drained: a completion between the two is seen by
     * the drain, one after it raises the event. */
    if (ibv_req_notify_cq(c->cq, 0) == 0 && drain(c) == 0) {
        pthread_mutex_unlock(&c->mu);
        (void)poll(pfd, 3, vmt_net_poll_ms(deadline));
        pthread_mutex_lock(&c->mu);
    }
    if (pfd[0].revents & POLLIN) {
        struct ibv_cq *cq;
        void *ctx;
        if (ibv_get_cq_event(c->cch, &cq, &ctx) == 0)
            ibv_ack_cq_events(cq, 1);
    }
    cm_events(c);
    c->waiter = false;
}

int rdma_wait(rdma_conn *c, uint64_t deadline)
{
    if (vmt_now_ns() >= deadline)
        return VMT_ETIMEDOUT;
    if (c->waiter)
        cond_wait_until(c, deadline);
    else
        poll_channels(c, deadline);
    rdma_progress(c);
    pthread_cond_broadcast(&c->cv);
    return 0;
}

int rdma_send_msg(rdma_conn *c, vmt_rdma_msg *m, uint64_t deadline)
{
    for (;;) {
        int rc = rdma_progress(c);
        if (rc || (rc = rdma_check(c, true)) != 0)
            return rc;
        if (c->nsend_free && vmt_rdma_credit_can_send(&c->cr, m->type))
            return rdma_post_msg(c, m);
        if (rdma_wait(c, deadline) == VMT_ETIMEDOUT)
            return vmt_error_set(VMT_ETIMEDOUT, "%s: timed out waiting for send credit",
                                 c->desc);
    }
}

/* ---- the byte stream ------------------------------------------------------ */

static int rdma_send(void *impl, const void *buf, size_t len, uint64_t deadline)
{
    rdma_conn *c = impl;
    const uint8_t *p = buf;
    size_t done = 0;
    int rc = 0;

    pthread_mutex_lock(&c->mu);
    while (done < len && rc == 0) {
        if ((rc = rdma_progress(c)) != 0 || (rc = rdma_check(c, true)) != 0)
            break;
        if (c->nsend_free && vmt_rdma_credit_can_send(&c->cr, VMT_RDMA_MSG_DATA)) {
            vmt_rdma_msg m = {.type = VMT_RDMA_MSG_DATA, .data = p + done};
            m.len = (uint32_t)VMT_MIN(len - done, c->max_data);
            if ((rc = rdma_post_msg(c, &m)) == 0)
                done += m.len;
            continue;
        }
        if (rdma_wait(c, deadline) == VMT_ETIMEDOUT)
            rc = vmt_error_set(VMT_ETIMEDOUT, "timed out sending (%zu of %zu bytes sent)", done,
                               len);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* Copies queued DATA into buf; reposts the buffers read to the end. */
static size_t take_ready(rdma_conn *c, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len && c->ready_n) {
        uint32_t idx = c->ready[c->ready_head];
        const uint8_t *src = c->rbuf + (size_t)idx * RDMA_BUF + VMT_RDMA_MSG_HDR;
        size_t n = VMT_MIN(len - got, (size_t)(c->rlen[idx] - c->ready_off));
        memcpy(buf + got, src + c->ready_off, n);
        got += n;
        c->ready_off += (uint32_t)n;
        if (c->ready_off == c->rlen[idx]) {
            c->ready_off = 0;
            c->ready_head = (c->ready_head + 1) % RDMA_NRECV;
            c->ready_n--;
            if (repost(c, idx, VMT_RDMA_CLASS_DATA) != 0)
                break;
        }
    }
    return got;
}

static int rdma_recv(void *impl, void *buf, size_t len, size_t *got, uint64_t deadline)
{
    rdma_conn *c = impl;
    int rc;

    *got = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        rc = rdma_progress(c);
        if (rc == 0 && c->ready_n) {
            *got = take_ready(c, buf, len);
            (void)rdma_progress(c); /* returns credits; a failure shows next call */
            break;
        }
        if (rc || c->fin_seen || (rc = rdma_check(c, false)) != 0)
            break; /* FIN with nothing queued: EOF (*got = 0) */
        if ((c->peer_gone || c->qp_dead) && vmt_now_ns() < c->lost_ns + RDMA_LOST_GRACE_NS) {
            /* The FIN may complete just after the disconnect is seen. */
            (void)rdma_wait(c, VMT_MIN(deadline, c->lost_ns + RDMA_LOST_GRACE_NS));
            continue;
        }
        if (c->peer_gone || c->qp_dead) {
            rc = vmt_error_set(VMT_EIO, "connection lost: the RDMA peer disconnected without "
                                        "closing the stream");
            break;
        }
        if (rdma_wait(c, deadline) == VMT_ETIMEDOUT) {
            rc = vmt_error_set(VMT_ETIMEDOUT, "timed out waiting for data");
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void rdma_shutdown(void *impl)
{
    rdma_conn *c = impl;
    uint64_t one = 1;
    pthread_mutex_lock(&c->mu);
    bool first = !c->shut;
    c->shut = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (write(c->wake_fd, &one, sizeof(one)) < 0) {
        /* The eventfd cannot overflow with one write per shutdown. */
    }
    if (first && c->established)
        rdma_disconnect(c->id); /* the QP flushes; the peer sees DISCONNECTED */
}

/* Delivers FIN after everything sent, so the peer reads a clean EOF. */
static void send_fin(rdma_conn *c)
{
    uint64_t deadline = vmt_net_deadline(RDMA_CLOSE_MS);
    pthread_mutex_lock(&c->mu);
    while (rdma_progress(c) == 0 && rdma_check(c, true) == 0) {
        /* FIN is the last message: it may use the last control credit. */
        if (c->nsend_free && vmt_rdma_credit_can_send(&c->cr, VMT_RDMA_MSG_FIN)) {
            vmt_rdma_msg m = {.type = VMT_RDMA_MSG_FIN};
            if (rdma_post_msg(c, &m) != 0)
                break;
            while (c->sends_in_flight && rdma_progress(c) == 0 && !c->qp_dead &&
                   rdma_wait(c, deadline) == 0) {
            }
            break;
        }
        if (rdma_wait(c, deadline) == VMT_ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&c->mu);
}

static void rdma_close(void *impl)
{
    rdma_conn *c = impl;
    if (!c)
        return;
    if (c->established && !c->shut) {
        send_fin(c);
        rdma_disconnect(c->id);
    }
    rdma_conn_free(c);
}

static void rdma_describe(void *impl, char *buf, size_t cap)
{
    rdma_conn *c = impl;
    snprintf(buf, cap, "%s", c->desc);
}

const vmt_transport_ops vmt_rdma_ops = {
    .name = "rdma",
    .send = rdma_send,
    .recv = rdma_recv,
    .shutdown = rdma_shutdown,
    .close = rdma_close,
    .describe = rdma_describe,
    .bulk_expose = rdma_bulk_expose,
    .bulk_can_place = rdma_bulk_can_place,
    .bulk_place = rdma_bulk_place,
    .bulk_landed = rdma_bulk_landed,
};
