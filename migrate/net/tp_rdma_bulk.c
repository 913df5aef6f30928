/*
 * Bulk placement over RDMA (net.h "bulk placement", docs/rdma.md).
 *
 * Receiver: bulk_expose records the range and sends EXPOSE {length, chunk
 * size, most chunks registered at once}.  A REG_REQ {chunk, release}
 * from the sender unregisters `release` and registers `chunk` for remote
 * writes, answered by REG_ACK {chunk, rkey, address}; asking for more than
 * the bound is a protocol error.  Each RDMA WRITE with immediate consumes
 * one receive buffer (a credit) and its completion says where it landed:
 * the immediate is the first page index, the length the bytes written.
 *
 * Sender: the registration planner (rdma_mrplan.c) decides which chunk to
 * release; the pages are copied into a registered staging slot (so the
 * caller's memory needs no registration and may change at once) and
 * written from there.  WRITE is ordered before every later SEND on the
 * queue pair, so the receiver has the pages before the next stream bytes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tp_rdma.h"

#define PAGE VMT_NET_PAGE_SIZE

/* ---- receiver ---------------------------------------------------------------- */

static int reg_chunk(rdma_conn *c, uint32_t chunk)
{
    uint64_t off = (uint64_t)chunk * c->ex_chunk;
    size_t len = (size_t)VMT_MIN(c->ex_chunk, c->ex_len - off);
    int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
    c->ex_mr[chunk] = ibv_reg_mr(c->pd, c->ex_base + off, len, access);
    if (!c->ex_mr[chunk])
        return vmt_error_errno(VMT_ENOMEM, errno,
                               "registering chunk %u (%zu bytes) of exposed memory (is "
                               "RLIMIT_MEMLOCK, ulimit -l, large enough?)",
                               chunk, len);
    c->ex_registered++;
    return 0;
}

static int on_reg_req(rdma_conn *c, const vmt_rdma_msg *m)
{
    if (!c->ex_base)
        return vmt_error_set(VMT_EPROTO, "RDMA REG_REQ before any memory was exposed");
    if (c->ack_pending)
        return vmt_error_set(VMT_EPROTO, "RDMA REG_REQ before the previous one was answered");
    if (m->chunk >= c->ex_nchunks ||
        (m->release != VMT_RDMA_CHUNK_NONE &&
         (m->release >= c->ex_nchunks || !c->ex_mr[m->release])))
        return vmt_error_set(VMT_EPROTO, "RDMA REG_REQ for chunk %u releasing %u (of %u)",
                             m->chunk, m->release, c->ex_nchunks);
    if (m->release != VMT_RDMA_CHUNK_NONE) {
        ibv_dereg_mr(c->ex_mr[m->release]);
        c->ex_mr[m->release] = NULL;
        c->ex_registered--;
    }
    if (!c->ex_mr[m->chunk]) {
        if (c->ex_registered >= c->ex_max)
            return vmt_error_set(VMT_EPROTO,
                                 "RDMA REG_REQ beyond the bound of %u registered chunks",
                                 c->ex_max);
        int rc = reg_chunk(c, m->chunk);
        if (rc)
            return rc;
    }
    struct ibv_mr *mr = c->ex_mr[m->chunk];
    c->ack = (vmt_rdma_msg){.type = VMT_RDMA_MSG_REG_ACK, .chunk = m->chunk, .rkey = mr->rkey,
                            .addr = (uintptr_t)mr->addr};
    c->ack_pending = true;
    return 0;
}

int rdma_bulk_on_imm(rdma_conn *c, uint32_t imm, uint32_t byte_len)
{
    uint64_t pages = c->ex_len / PAGE;
    if (!c->ex_base)
        return vmt_error_set(VMT_EPROTO, "RDMA WRITE into memory that was never exposed");
    if (byte_len == 0 || byte_len % PAGE || imm >= pages || byte_len / PAGE > pages - imm)
        return vmt_error_set(VMT_EPROTO, "RDMA WRITE of %u bytes at page %u (of %llu)", byte_len,
                             imm, (unsigned long long)pages);
    return vmt_rdma_landed_push(&c->landed, imm, byte_len / PAGE);
}

/* ---- sender ------------------------------------------------------------------ */

int rdma_slots_setup(rdma_conn *c)
{
    size_t bytes = (size_t)RDMA_NSLOT * RDMA_SLOT;
    if (posix_memalign((void **)&c->slots, 4096, bytes))
        return vmt_error_set(VMT_ENOMEM, "rdma: out of memory for staging slots");
    c->slot_mr = ibv_reg_mr(c->pd, c->slots, bytes, IBV_ACCESS_LOCAL_WRITE);
    if (!c->slot_mr)
        return vmt_error_errno(VMT_ENOMEM, errno,
                               "rdma: registering %zu bytes of staging slots (RLIMIT_MEMLOCK, "
                               "ulimit -l, may be too low)",
                               bytes);
    for (uint32_t i = 0; i < RDMA_NSLOT; i++)
        c->slot_free[c->nslot_free++] = i;
    return 0;
}

static int on_expose(rdma_conn *c, const vmt_rdma_msg *m)
{
    if (c->plan)
        return vmt_error_set(VMT_EPROTO, "RDMA EXPOSE received twice");
    int rc = rdma_slots_setup(c);
    return rc ? rc : vmt_rdma_mrplan_new(&c->plan, m->region_len, m->chunk_bytes, m->max_chunks);
}

static int on_reg_ack(rdma_conn *c, const vmt_rdma_msg *m)
{
    if (!c->plan || m->chunk != c->reg_wait)
        return vmt_error_set(VMT_EPROTO, "RDMA REG_ACK for chunk %u, which was not asked for",
                             m->chunk);
    vmt_rdma_mrplan_registered(c->plan, m->chunk, c->reg_evict, m->rkey, m->addr);
    c->reg_wait = VMT_RDMA_CHUNK_NONE;
    return 0;
}

int rdma_bulk_on_msg(rdma_conn *c, const vmt_rdma_msg *m)
{
    switch (m->type) {
    case VMT_RDMA_MSG_EXPOSE:
        return on_expose(c, m);
    case VMT_RDMA_MSG_REG_REQ:
        return on_reg_req(c, m);
    case VMT_RDMA_MSG_REG_ACK:
        return on_reg_ack(c, m);
    default:
        return vmt_error_set(VMT_EPROTO, "unexpected RDMA %s", vmt_rdma_msg_name(m->type));
    }
}

void rdma_bulk_on_write_done(rdma_conn *c, uint32_t slot)
{
    if (slot >= RDMA_NSLOT)
        return;
    if (c->plan)
        vmt_rdma_mrplan_busy(c->plan, c->slot_chunk[slot], -1);
    c->slot_free[c->nslot_free++] = slot;
}

int rdma_bulk_flush(rdma_conn *c)
{
    if (c->shut || c->fatal)
        return 0;
    if (c->ex_announce && c->nsend_free && vmt_rdma_credit_can_send(&c->cr, VMT_RDMA_MSG_EXPOSE)) {
        vmt_rdma_msg m = {.type = VMT_RDMA_MSG_EXPOSE, .region_len = c->ex_len,
                          .chunk_bytes = c->ex_chunk, .max_chunks = c->ex_max};
        c->ex_announce = false;
        int rc = rdma_post_msg(c, &m);
        if (rc)
            return rc;
    }
    if (c->ack_pending && c->nsend_free && vmt_rdma_credit_can_send(&c->cr, VMT_RDMA_MSG_REG_ACK)) {
        c->ack_pending = false;
        return rdma_post_msg(c, &c->ack);
    }
    return 0;
}

void rdma_bulk_release(rdma_conn *c)
{
    for (uint32_t i = 0; c->ex_mr && i < c->ex_nchunks; i++)
        if (c->ex_mr[i])
            ibv_dereg_mr(c->ex_mr[i]);
    free(c->ex_mr);
    c->ex_mr = NULL;
    vmt_rdma_landed_free(&c->landed);
    vmt_rdma_mrplan_free(c->plan);
    c->plan = NULL;
}

/* ---- transport ops -------------------------------------------------------------- */

int rdma_bulk_expose(void *impl, void *base, size_t len, const vmt_bulk_config *cfg)
{
    rdma_conn *c = impl;
    uint64_t chunk = cfg->chunk_bytes ? cfg->chunk_bytes : RDMA_DEFAULT_CHUNK;
    uint64_t pinned = cfg->max_pinned ? cfg->max_pinned : RDMA_DEFAULT_PINNED;

    if (!base || (uintptr_t)base % PAGE || len == 0 || len % PAGE || len > VMT_RDMA_MAX_EXPOSE ||
        chunk % PAGE || pinned < chunk)
        return vmt_error_set(VMT_EINVAL, "bulk expose: bad range (%zu bytes), chunk (%llu) or "
                                         "bound (%llu)",
                             len, (unsigned long long)chunk, (unsigned long long)pinned);
    uint64_t n = (len + chunk - 1) / chunk;
    if (n > VMT_RDMA_MAX_CHUNKS)
        return vmt_error_set(VMT_EINVAL, "bulk expose: %llu chunks (at most %u)",
                             (unsigned long long)n, VMT_RDMA_MAX_CHUNKS);
    pthread_mutex_lock(&c->mu);
    int rc = c->ex_base ? vmt_error_set(VMT_EEXIST, "bulk expose: memory is exposed already") : 0;
    if (rc == 0 && !(c->ex_mr = vmt_callocn((size_t)n, sizeof(*c->ex_mr))))
        rc = vmt_error_set(VMT_ENOMEM, "bulk expose: out of memory");
    if (rc == 0) {
        c->ex_base = base;
        c->ex_len = len;
        c->ex_chunk = chunk;
        c->ex_nchunks = (uint32_t)n;
        c->ex_max = (uint32_t)VMT_MIN(n, pinned / chunk);
        vmt_rdma_landed_init(&c->landed, RDMA_LANDED_MAX);
        c->ex_announce = true; /* goes out now or with the next progress pass */
        rc = rdma_progress(c);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

bool rdma_bulk_can_place(void *impl)
{
    rdma_conn *c = impl;
    pthread_mutex_lock(&c->mu);
    (void)rdma_progress(c);
    bool ok = c->plan != NULL && !c->fatal;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

/* Makes `chunk` registered at the receiver (mu held). */
static int ensure_chunk(rdma_conn *c, uint32_t chunk, uint64_t deadline)
{
    for (;;) {
        int rc = rdma_progress(c);
        if (rc || (rc = rdma_check(c, true)) != 0)
            return rc;
        vmt_rdma_plan p = vmt_rdma_mrplan_touch(c->plan, chunk);
        if (p.kind == VMT_RDMA_PLAN_HIT && c->reg_wait == VMT_RDMA_CHUNK_NONE) {
            vmt_rdma_mrplan_used(c->plan, chunk);
            return 0;
        }
        if (p.kind == VMT_RDMA_PLAN_MISS && c->reg_wait == VMT_RDMA_CHUNK_NONE) {
            vmt_rdma_msg m = {.type = VMT_RDMA_MSG_REG_REQ, .chunk = chunk, .release = p.evict};
            if ((rc = rdma_send_msg(c, &m, deadline)) != 0)
                return rc;
            c->reg_wait = chunk;
            c->reg_evict = p.evict;
            continue;
        }
        if (rdma_wait(c, deadline) == VMT_ETIMEDOUT)
            return vmt_error_set(VMT_ETIMEDOUT, "%s: timed out registering chunk %u (is the "
                                                "receiver receiving?)",
                                 c->desc, chunk);
    }
}

/* Writes len bytes (within one chunk, at most a slot) at offset (mu held). */
static int write_piece(rdma_conn *c, uint64_t offset, const uint8_t *src, size_t len,
                       uint32_t chunk, uint64_t deadline)
{
    int rc;
    while (!(c->nslot_free && vmt_rdma_credit_can_send(&c->cr, VMT_RDMA_MSG_WRITE))) {
        if ((rc = rdma_check(c, true)) != 0)
            return rc;
        if (rdma_wait(c, deadline) == VMT_ETIMEDOUT)
            return vmt_error_set(VMT_ETIMEDOUT, "%s: timed out placing pages", c->desc);
    }
    if ((rc = rdma_check(c, true)) != 0)
        return rc;
    uint32_t slot = c->slot_free[--c->nslot_free];
    uint8_t *buf = c->slots + (size_t)slot * RDMA_SLOT;
    uint32_t rkey;
    uint64_t raddr, coff, clen;
    memcpy(buf, src, len);
    vmt_rdma_mrplan_key(c->plan, chunk, &rkey, &raddr);
    vmt_rdma_mrplan_extent(c->plan, chunk, &coff, &clen);
    struct ibv_sge sge = {(uintptr_t)buf, (uint32_t)len, c->slot_mr->lkey};
    struct ibv_send_wr wr = {.wr_id = WR_ID(WR_WRITE, slot), .sg_list = &sge, .num_sge = 1,
                             .opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
                             .send_flags = IBV_SEND_SIGNALED,
                             .imm_data = htonl((uint32_t)(offset / PAGE))};
    wr.wr.rdma.remote_addr = raddr + (offset - coff);
    wr.wr.rdma.rkey = rkey;
    struct ibv_send_wr *bad = NULL;
    int err = ibv_post_send(c->id->qp, &wr, &bad);
    if (err) {
        c->slot_free[c->nslot_free++] = slot;
        return rdma_fail(c, vmt_error_errno(VMT_EIO, err, "%s: posting an RDMA WRITE", c->desc));
    }
    uint16_t g, cg;
    vmt_rdma_credit_take(&c->cr, VMT_RDMA_MSG_WRITE, &g, &cg);
    c->slot_chunk[slot] = chunk;
    vmt_rdma_mrplan_busy(c->plan, chunk, +1);
    return 0;
}

int rdma_bulk_place(void *impl, uint64_t offset, const void *src, size_t len, uint64_t deadline)
{
    rdma_conn *c = impl;
    const uint8_t *p = src;
    int rc = 0;

    pthread_mutex_lock(&c->mu);
    (void)rdma_progress(c);
    uint64_t end = 0, coff, clen;
    if (c->plan) { /* the range's end is the last chunk's */
        vmt_rdma_mrplan_extent(c->plan, vmt_rdma_mrplan_nchunks(c->plan) - 1, &coff, &clen);
        end = coff + clen;
    }
    if (!c->plan)
        rc = vmt_error_set(VMT_EUNSUPPORTED, "%s: the peer has not exposed memory", c->desc);
    else if (offset % PAGE || len % PAGE || offset > end || len > end - offset)
        rc = vmt_error_set(VMT_EINVAL, "bulk place: %zu bytes at %llu are not page-aligned or "
                                       "not inside the %llu exposed bytes",
                           len, (unsigned long long)offset, (unsigned long long)end);
    for (size_t done = 0; rc == 0 && done < len;) {
        uint64_t pos = offset + done;
        uint32_t chunk = vmt_rdma_mrplan_chunk_of(c->plan, pos);
        vmt_rdma_mrplan_extent(c->plan, chunk, &coff, &clen);
        size_t n = (size_t)VMT_MIN((uint64_t)VMT_MIN(len - done, (size_t)RDMA_SLOT),
                                   coff + clen - pos);
        if ((rc = ensure_chunk(c, chunk, deadline)) == 0 &&
            (rc = write_piece(c, pos, p + done, n, chunk, deadline)) == 0)
            done += n;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int rdma_bulk_landed(void *impl, vmt_page_run *runs, size_t cap, size_t *n)
{
    rdma_conn *c = impl;
    pthread_mutex_lock(&c->mu);
    int rc = rdma_progress(c);
    *n = 0;
    if (rc == 0 && !c->ex_base)
        rc = vmt_error_set(VMT_EUNSUPPORTED, "bulk landed: no memory was exposed");
    if (rc == 0)
        *n = vmt_rdma_landed_pop(&c->landed, runs, cap);
    pthread_mutex_unlock(&c->mu);
    return rc;
}
