/*
 * Internals of the RDMA transport, shared by its files:
 *   tp_rdma_cm.c    rdma_cm connect / listen / accept, resources, teardown
 *   tp_rdma_io.c    the progress engine (completions, cm events, waiting)
 *                   and the byte stream (send, recv, shutdown, close)
 *   tp_rdma_bulk.c  bulk placement (expose, on-demand registration, RDMA
 *                   WRITE with immediate, landed runs)
 * The pure parts (messages, credits, registration planner) are in
 * rdma_logic.h.  Every field below `mu` is guarded by it.
 */
#ifndef VMTREE_TP_RDMA_H
#define VMTREE_TP_RDMA_H

#include <infiniband/verbs.h>
#include <pthread.h>
#include <rdma/rdma_cma.h>

#include "net_internal.h"
#include "rdma_logic.h"

/* Sizes keep a connection's registered memory small (about 2 MiB, plus
 * 2 MiB of staging once the peer exposes memory): registered memory counts
 * against RLIMIT_MEMLOCK, often 8 MiB for an unprivileged user, and a
 * session has up to 16 connections. */
#define RDMA_DWINDOW 32u           /* receive buffers for DATA (the peer's data credits) */
#define RDMA_CWINDOW 16u           /* receive buffers for control messages and writes */
#define RDMA_NRECV (RDMA_DWINDOW + RDMA_CWINDOW) /* all posted on one receive queue */
#define RDMA_BUF (32u << 10)       /* bytes per send/receive buffer, header included */
#define RDMA_NSEND 16u             /* send buffers */
#define RDMA_NSLOT 8u              /* bulk staging slots (allocated on EXPOSE) */
#define RDMA_SLOT (256u << 10)     /* bytes per slot: the largest single write */
#define RDMA_LANDED_MAX (1u << 16) /* undrained landed runs before the receiver fails */
#define RDMA_CLOSE_MS 1000u        /* how long close waits to deliver FIN */
#define RDMA_LOST_GRACE_NS 100000000ull /* FIN may trail the disconnect */
#define RDMA_DEFAULT_CHUNK (64ull << 20)
#define RDMA_DEFAULT_PINNED (1ull << 30)

/* Work request ids: kind in the high half, buffer index in the low. */
enum { WR_RECV = 1, WR_SEND = 2, WR_WRITE = 3 };
#define WR_ID(kind, idx) (((uint64_t)(kind) << 32) | (uint32_t)(idx))

typedef struct rdma_conn {
    struct rdma_event_channel *ech; /* this connection's cm events */
    struct rdma_cm_id *id;
    struct ibv_pd *pd;
    struct ibv_comp_channel *cch;
    struct ibv_cq *cq;
    uint8_t *rbuf, *sbuf, *slots;
    struct ibv_mr *rmr, *smr, *slot_mr;
    int wake_fd; /* eventfd written by shutdown */
    char desc[96];

    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast after every progress pass */
    bool waiter;       /* a thread is polling the channels */
    bool established;

    vmt_rdma_credit cr;
    size_t max_data; /* DATA body bytes per message (fits the peer's buffers) */
    uint32_t send_free[RDMA_NSEND], nsend_free;
    uint32_t sends_in_flight;

    /* Received DATA not yet read: buffer indexes in arrival order. */
    uint32_t ready[RDMA_NRECV], ready_head, ready_n;
    uint32_t rlen[RDMA_NRECV]; /* body bytes in each buffer */
    uint32_t ready_off;         /* bytes of the head buffer already read */

    bool fin_seen, peer_gone, qp_dead, shut;
    uint64_t lost_ns; /* when peer_gone or qp_dead was first seen */
    int fatal;
    char fatal_msg[256];

    /* Bulk, receiving side: the exposed range and its registered chunks. */
    uint8_t *ex_base;
    uint64_t ex_len, ex_chunk;
    uint32_t ex_nchunks, ex_max, ex_registered;
    struct ibv_mr **ex_mr;
    bool ex_announce;  /* EXPOSE still to be sent */
    bool ack_pending;  /* a REG_ACK to send */
    vmt_rdma_msg ack;
    vmt_rdma_landed landed;

    /* Bulk, sending side: the peer's range and the registration plan. */
    vmt_rdma_mrplan *plan;
    uint32_t reg_wait, reg_evict; /* chunk asked for (NONE: none) */
    uint32_t slot_free[RDMA_NSLOT], nslot_free;
    uint32_t slot_chunk[RDMA_NSLOT];
} rdma_conn;

/* ---- tp_rdma_cm.c -------------------------------------------------------- */

/* Waits for the next cm event on ch until deadline and checks it is
 * `want`; copies its connection data (if any) into pd[0..*pd_len).
 * *ev_id gets the event's id (CONNECT_REQUEST: the new connection). */
int rdma_cm_wait(struct rdma_event_channel *ch, enum rdma_cm_event_type want, uint64_t deadline,
                 uint8_t *pd, size_t *pd_len, struct rdma_cm_id **ev_id, const char *what);

/* Frees everything of a connection (disconnected or never connected). */
void rdma_conn_free(rdma_conn *c);

/* ---- tp_rdma_io.c -------------------------------------------------------- */

extern const vmt_transport_ops vmt_rdma_ops;

/* Runs completions and cm events without waiting; 0 or the fatal error. */
int rdma_progress(rdma_conn *c);
/* Waits (mu held) for anything to happen, at most until deadline:
 * VMT_ETIMEDOUT when it passed. */
int rdma_wait(rdma_conn *c, uint64_t deadline);
/* The stream's state as an error (fatal, shut, lost), or 0. */
int rdma_check(rdma_conn *c, bool sending);
/* Records the thread's message as the fatal error; returns code. */
int rdma_fail(rdma_conn *c, int code);
/* Posts a message (mu held; a send buffer and a credit must be free). */
int rdma_post_msg(rdma_conn *c, vmt_rdma_msg *m);
/* Waits for a send buffer and a credit, then posts m (control messages
 * carry the grant). */
int rdma_send_msg(rdma_conn *c, vmt_rdma_msg *m, uint64_t deadline);

/* ---- tp_rdma_bulk.c ------------------------------------------------------ */

/* Handlers called by the progress engine (mu held). */
int rdma_bulk_on_msg(rdma_conn *c, const vmt_rdma_msg *m);
int rdma_bulk_on_imm(rdma_conn *c, uint32_t imm, uint32_t byte_len);
void rdma_bulk_on_write_done(rdma_conn *c, uint32_t slot);
/* Sender: allocates and registers the staging slots (on EXPOSE). */
int rdma_slots_setup(rdma_conn *c);
/* Posts a pending REG_ACK / EXPOSE when a buffer and credit allow. */
int rdma_bulk_flush(rdma_conn *c);
/* Unregisters every exposed chunk and frees the bulk state. */
void rdma_bulk_release(rdma_conn *c);

int rdma_bulk_expose(void *impl, void *base, size_t len, const vmt_bulk_config *cfg);
bool rdma_bulk_can_place(void *impl);
int rdma_bulk_place(void *impl, uint64_t offset, const void *src, size_t len, uint64_t deadline);
int rdma_bulk_landed(void *impl, vmt_page_run *runs, size_t cap, size_t *n);

#endif
