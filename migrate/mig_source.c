/*
 * Live migration, source side: a sink of the pre-copy engine that speaks
 * the migration exchange of docs/wire-protocol.md over a vmt_net session
 * (tests/net/net_mig.c is the reference), and vmt_migrate_send around it.
 *
 * Rounds: the engine's pages carry their round; the sink opens a round
 * (ROUND_START on stream 0) at the first page of a new round and closes the
 * open one (ROUND_END on every stream, then the WANT exchange) when the
 * next round begins or the state comes.  WANT: the sink holds a pointer to
 * guest RAM (vmt_vm_ram) and resends the wanted pfns in full from it on
 * stream 0 before the round is closed; a page that changed meanwhile is
 * dirty again and is sent once more in a later round, so this is correct.
 * (Without a have-set no reference is sent, so no WANT comes yet.)
 *
 * The sink never sets VMT_SINK_RESUME_BEFORE_COMMIT: the VM stays paused
 * until the destination's ACK says its copy runs.  Completion is two-phase
 * (docs/migration.md "Never lost, never twice"): COMMIT -> PREPARED (the
 * destination holds the whole VM, not running) -> GO -> ACK.  A failure
 * before GO leaves the VM to the engine to resume; once GO may have left,
 * only the peer's own answer (ACK, ERROR, or its end of the connection
 * closed or reset) settles who runs it, and without one the commit fails
 * with VMT_EINDOUBT so the VM stays paused here.
 *
 * vmt_migrate_send and the policy are in mig_send.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mig_internal.h"

#define PAGE VMT_NET_PAGE_SIZE
#define BATCH_PAGES 256u

int mig_ns_flush(net_sink *c, vmt_batch_writer *w, unsigned stream)
{
    size_t count = vmt_batch_writer_count(w);
    if (count == 0)
        return 0;
    const uint8_t *p;
    size_t len;
    int rc = vmt_batch_writer_finish(w, &p, &len);
    if (stream == UINT32_MAX)
        stream = c->next++ % c->n;
    if (rc == 0)
        rc = vmt_session_send_batch(c->s, stream, p, len);
    c->pages[stream] += count;
    c->bytes[stream] += len;
    c->batches[stream]++;
    c->runs_since_frame[stream] = 0;
    c->total_pages += count;
    vmt_batch_writer_begin(w, c->round);
    return rc;
}

static int ns_add(net_sink *c, vmt_batch_writer *w, uint64_t pfn, const uint8_t *page,
                  unsigned stream)
{
    int rc = vmt_batch_writer_add(w, pfn, page);
    if (rc == 0 && vmt_batch_writer_count(w) >= BATCH_PAGES)
        rc = mig_ns_flush(c, w, stream);
    return rc;
}

static int ns_round_end(net_sink *c, unsigned first, unsigned end)
{
    for (unsigned k = first; k < end; k++) {
        vmt_wire_msg msg = {.type = VMT_WIRE_ROUND_END};
        msg.u.round_end.round = c->round;
        msg.u.round_end.pages = c->pages[k];
        msg.u.round_end.bytes = c->bytes[k];
        msg.u.round_end.batches = c->batches[k];
        int rc = vmt_session_send(c->s, k, &msg);
        if (rc)
            return rc;
        c->pages[k] = c->bytes[k] = c->batches[k] = 0;
    }
    return 0;
}

/* Answers WANTs with the pages in full from guest RAM on stream 0. */
static int ns_wants(net_sink *c)
{
    for (;;) {
        vmt_wire_msg msg;
        int rc = vmt_session_recv_msg(c->s, 0, VMT_WIRE_WANT, &msg, c->timeout_ms);
        if (rc)
            return rc;
        size_t n = msg.u.want.n;
        vmt_batch_writer_begin(c->full, c->round);
        for (size_t i = 0; i < n && rc == 0; i++) {
            uint64_t pfn = msg.u.want.pfns[i];
            if (pfn >= c->npages) {
                rc = vmt_error_set(VMT_EPROTO, "WANT of page %llu beyond RAM",
                                   (unsigned long long)pfn);
                break;
            }
            /* The peer lacks the referenced page: no delta against it. */
            if (c->cache)
                vmt_xbzrle_cache_drop(c->cache, pfn);
            rc = ns_add(c, c->full, pfn, c->ram + pfn * PAGE, 0);
        }
        vmt_wire_msg_clear(&msg);
        if (n == 0 || rc)
            return rc;
        if ((rc = mig_ns_flush(c, c->full, 0)) != 0 || (rc = ns_round_end(c, 0, 1)) != 0)
            return rc;
    }
}

static int ns_close_round(net_sink *c)
{
    if (!c->open)
        return 0;
    c->open = false;
    int rc = mig_bulk_flush(c); /* placed pages land before ROUND_END */
    if (rc == 0)
        rc = mig_ns_flush(c, c->w, UINT32_MAX);
    if (rc == 0)
        rc = ns_round_end(c, 0, c->n);
    return rc ? rc : ns_wants(c);
}

/* Reads the destination's HaveSet chunks (sent when the feature was agreed,
 * empty when it holds nothing of use). */
static int ns_recv_haveset(net_sink *c)
{
    int rc = vmt_haveset_new(&c->have, c->npages);
    while (rc == 0 && !vmt_haveset_complete(c->have)) {
        vmt_wire_msg msg;
        if ((rc = vmt_session_recv_msg(c->s, 0, VMT_WIRE_HAVE_SET, &msg, c->timeout_ms)) != 0)
            return rc;
        rc = vmt_haveset_add_chunk(c->have, &msg.u.have_set);
        vmt_wire_msg_clear(&msg);
        if (rc)
            rc = vmt_session_abort(c->s, rc, vmt_error_last());
    }
    return rc;
}

static int ns_begin(void *sink, const vmt_precopy_info *info)
{
    net_sink *c = sink;
    vmt_wire_msg msg = {.type = VMT_WIRE_VM_CONFIG};
    vmt_wire_vm_config *vc = &msg.u.vm_config;
    vc->mem_size = info->mem_size;
    vc->vcpus = info->vcpus;
    vc->irqchip = info->irqchip;
    vc->npages = info->npages;
    snprintf(vc->vm_name, sizeof(vc->vm_name), "%s", c->vm_name[0] ? c->vm_name : "vm");
    snprintf(vc->image, sizeof(vc->image), "%s", c->image);
    if (c->base) {
        vc->has_base = true;
        memcpy(vc->base, c->base->b, sizeof(vc->base));
    }
    c->npages = info->npages;
    mig_ram_holes_init(&c->holes, c->vm);
    int rc = vmt_session_send(c->s, 0, &msg);
    if (rc == 0 && (vmt_session_features(c->s) & VMT_WIRE_FEAT_HAVESET))
        rc = ns_recv_haveset(c);
    if (rc == 0)
        rc = vmt_batch_writer_new(&c->w, &c->bopts, c->cache, c->have);
    if (rc == 0)
        rc = vmt_batch_writer_new(&c->full, &c->bopts, c->cache, NULL);
    return rc;
}

static bool zero_page(const uint8_t *p)
{
    static const uint8_t zero[PAGE];
    return memcmp(p, zero, PAGE) == 0;
}

static int ns_pages(void *sink, unsigned round, const uint64_t *pfns, const uint8_t *const *data,
                    size_t n)
{
    net_sink *c = sink;
    int rc = 0;
    if (!c->open || round != c->round) {
        if ((rc = ns_close_round(c)) != 0)
            return rc;
        c->round = round;
        c->open = true;
        vmt_wire_msg msg = {.type = VMT_WIRE_ROUND_START};
        msg.u.round_start.round = round;
        if ((rc = vmt_session_send(c->s, 0, &msg)) != 0)
            return rc;
        vmt_batch_writer_begin(c->w, round);
        mig_bulk_round(c);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (pfns[i] >= c->npages)
            return vmt_error_set(VMT_EINVAL, "page beyond RAM");
        /* The destination's RAM starts zero: round 0 need not mention zero
         * pages, nor read holes (which would allocate them here). */
        if (round == 0 &&
            ((!c->lazy_ram && mig_ram_hole(&c->holes, pfns[i] * PAGE)) || zero_page(data[i]))) {
            c->zero_skipped++;
            continue;
        }
        bool taken = false;
        if (c->bulk_any && (rc = mig_bulk_take(c, pfns[i], data[i], &taken)) != 0)
            return rc;
        if (!taken)
            rc = ns_add(c, c->w, pfns[i], data[i], UINT32_MAX);
    }
    return rc;
}

static int ns_state(void *sink, const uint8_t *blob, size_t len)
{
    net_sink *c = sink;
    int rc = ns_close_round(c);
    if (rc)
        return rc;
    vmt_wire_msg msg = {.type = VMT_WIRE_STATE_BLOB};
    msg.u.state_blob.data = (uint8_t *)blob;
    msg.u.state_blob.len = len;
    return vmt_session_send(c->s, 0, &msg);
}

/* GO has (maybe) left: settles who runs the VM from the peer's answer. */
static int ns_go(net_sink *c)
{
    vmt_wire_msg msg = {.type = VMT_WIRE_GO};
    msg.u.commit.pages = c->total_pages;
    c->go_sent = true;
    int rc = vmt_session_send(c->s, 0, &msg);
    if (rc == 0)
        rc = vmt_session_recv_msg(c->s, 0, VMT_WIRE_ACK, &msg, c->timeout_ms);
    if (rc == 0 && msg.u.ack.resumed)
        return 0;
    if (rc == 0) /* the destination answered: it does not run the VM */
        return vmt_error_set(VMT_EIO, "the destination did not resume the VM: %s",
                             msg.u.ack.message);
    /* Its ERROR frame, or its end closed or reset, means the destination's
     * process no longer holds the VM (it keeps the connection open while
     * the VM runs there, and TCP delivers the ACK before any close). */
    if (vmt_session_peer_ended(c->s, 0))
        return rc;
    char why[256];
    snprintf(why, sizeof(why), "%s", vmt_error_last());
    c->in_doubt = true;
    return vmt_error_set(VMT_EINDOUBT,
                         "no answer after GO (%s): the destination may be running the VM, so "
                         "it stays paused here",
                         why);
}

static int ns_commit(void *sink)
{
    net_sink *c = sink;
    vmt_wire_msg msg = {.type = VMT_WIRE_COMMIT};
    msg.u.commit.pages = c->total_pages;
    int rc = vmt_session_send(c->s, 0, &msg);
    if (rc == 0)
        rc = vmt_session_recv_msg(c->s, 0, VMT_WIRE_PREPARED, &msg, c->timeout_ms);
    if (rc == 0)
        vmt_wire_msg_clear(&msg);
    c->prepared_ns = vmt_now_ns();
    return rc ? rc : ns_go(c);
}

static void ns_abort(void *sink)
{
    net_sink *c = sink;
    c->aborted = true;
    if (c->s && !c->in_doubt)
        vmt_session_abort(c->s, VMT_ECANCELED, "the source gave the migration up");
}

static uint64_t ns_bytes(void *sink)
{
    net_sink *c = sink;
    vmt_session_stats st;
    vmt_session_get_stats(c->s, &st);
    return st.bytes_sent;
}

const vmt_sink_ops mig_net_sink_ops = {
    .begin = ns_begin,
    .pages = ns_pages,
    .state = ns_state,
    .commit = ns_commit,
    .abort = ns_abort,
    .bytes = ns_bytes,
    .flags = 0, /* never VMT_SINK_RESUME_BEFORE_COMMIT */
};
