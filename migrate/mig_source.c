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
 * until the destination's ACK says its copy runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate_internal.h"
#include "vmtree/net.h"

#define PAGE VMT_NET_PAGE_SIZE
#define BATCH_PAGES 256u

typedef struct net_sink {
    vmt_session *s;
    vmt_vm *vm;
    uint8_t *ram;
    uint64_t npages;
    uint32_t timeout_ms;
    unsigned n, next;
    bool open; /* a round is open */
    uint32_t round;
    vmt_batch_opts bopts;
    vmt_xbzrle_cache *cache;
    vmt_batch_writer *w, *full;
    uint64_t pages[VMT_NET_MAX_STREAMS], bytes[VMT_NET_MAX_STREAMS];
    uint64_t batches[VMT_NET_MAX_STREAMS];
    uint64_t total_pages;
    bool aborted;
} net_sink;

static int ns_flush(net_sink *c, vmt_batch_writer *w, unsigned stream)
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
    c->total_pages += count;
    vmt_batch_writer_begin(w, c->round);
    return rc;
}

static int ns_add(net_sink *c, vmt_batch_writer *w, uint64_t pfn, const uint8_t *page,
                  unsigned stream)
{
    int rc = vmt_batch_writer_add(w, pfn, page);
    if (rc == 0 && vmt_batch_writer_count(w) >= BATCH_PAGES)
        rc = ns_flush(c, w, stream);
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
            rc = pfn < c->npages ? ns_add(c, c->full, pfn, c->ram + pfn * PAGE, 0)
                                 : vmt_error_set(VMT_EPROTO, "WANT of page %llu beyond RAM",
                                                 (unsigned long long)pfn);
        }
        vmt_wire_msg_clear(&msg);
        if (n == 0 || rc)
            return rc;
        if ((rc = ns_flush(c, c->full, 0)) != 0 || (rc = ns_round_end(c, 0, 1)) != 0)
            return rc;
    }
}

static int ns_close_round(net_sink *c)
{
    if (!c->open)
        return 0;
    c->open = false;
    int rc = ns_flush(c, c->w, UINT32_MAX);
    if (rc == 0)
        rc = ns_round_end(c, 0, c->n);
    return rc ? rc : ns_wants(c);
}

static int ns_begin(void *sink, const vmt_precopy_info *info)
{
    net_sink *c = sink;
    vmt_wire_msg msg = {.type = VMT_WIRE_VM_CONFIG};
    msg.u.vm_config.mem_size = info->mem_size;
    msg.u.vm_config.vcpus = info->vcpus;
    msg.u.vm_config.irqchip = info->irqchip;
    msg.u.vm_config.npages = info->npages;
    snprintf(msg.u.vm_config.vm_name, sizeof(msg.u.vm_config.vm_name), "vm");
    c->npages = info->npages;
    int rc = vmt_batch_writer_new(&c->w, &c->bopts, c->cache, NULL);
    if (rc == 0)
        rc = vmt_batch_writer_new(&c->full, &c->bopts, c->cache, NULL);
    if (rc == 0)
        rc = vmt_session_send(c->s, 0, &msg);
    return rc;
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
    }
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = pfns[i] < c->npages ? ns_add(c, c->w, pfns[i], data[i], UINT32_MAX)
                                 : vmt_error_set(VMT_EINVAL, "page beyond RAM");
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

static int ns_commit(void *sink)
{
    net_sink *c = sink;
    vmt_wire_msg msg = {.type = VMT_WIRE_COMMIT};
    msg.u.commit.pages = c->total_pages;
    int rc = vmt_session_send(c->s, 0, &msg);
    if (rc == 0)
        rc = vmt_session_recv_msg(c->s, 0, VMT_WIRE_ACK, &msg, c->timeout_ms);
    if (rc == 0 && !msg.u.ack.resumed)
        rc = vmt_error_set(VMT_EIO, "the destination did not resume the VM: %s", msg.u.ack.message);
    return rc;
}

static void ns_abort(void *sink)
{
    net_sink *c = sink;
    c->aborted = true;
    if (c->s)
        vmt_session_abort(c->s, VMT_ECANCELED, "the source gave the migration up");
}

static uint64_t ns_bytes(void *sink)
{
    net_sink *c = sink;
    vmt_session_stats st;
    vmt_session_get_stats(c->s, &st);
    return st.bytes_sent;
}

static const vmt_sink_ops net_sink_ops = {
    .begin = ns_begin,
    .pages = ns_pages,
    .state = ns_state,
    .commit = ns_commit,
    .abort = ns_abort,
    .bytes = ns_bytes,
    .flags = 0, /* never VMT_SINK_RESUME_BEFORE_COMMIT */
};

/* ---- policy ----------------------------------------------------------------- */

typedef struct mig_policy {
    const vmt_migrate_opts *o;
    vmt_migrate_report *rep;
    double fixed_ms; /* state, commit, ACK round trip (estimate) */
} mig_policy;

static vmt_policy_decision mig_policy_fn(void *ctx, vmt_round_stats r)
{
    mig_policy *p = ctx;
    vmt_migrate_report *rep = p->rep;
    if (rep->nround_stats < VMT_MIGRATE_MAX_ROUND_STATS) {
        rep->dirty_rate[rep->nround_stats] = r.dirty_rate;
        rep->bandwidth[rep->nround_stats] = r.bandwidth;
        rep->nround_stats++;
    }
    double bw = r.bandwidth > 0 ? r.bandwidth : 1e6;
    double need_ms = (double)r.dirty_pages * PAGE / bw * 1e3 + p->fixed_ms;
    if (need_ms <= p->o->max_downtime_ms)
        return VMT_POLICY_STOP_AND_COPY;
    if (r.round + 1 >= p->o->max_rounds) {
        snprintf(rep->why, sizeof(rep->why),
                 "did not converge in %u rounds (%llu pages dirty, %.0f ms needed)",
                 p->o->max_rounds, (unsigned long long)r.dirty_pages, need_ms);
        return VMT_POLICY_ABORT;
    }
    return VMT_POLICY_CONTINUE;
}

/* ---- vmt_migrate_send ----------------------------------------------------------- */

void vmt_migrate_opts_init(vmt_migrate_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->streams = 1;
    o->xbzrle = true;
    o->max_downtime_ms = 300;
    o->max_rounds = 30;
    o->timeout_ms = 10000;
}

static int parse_host_port(const char *hp, char *host, size_t cap, uint16_t *port)
{
    const char *colon = hp ? strrchr(hp, ':') : NULL;
    if (!colon || colon == hp || (size_t)(colon - hp) >= cap)
        return vmt_error_set(VMT_EINVAL, "bad address \"%s\" (HOST:PORT)", hp ? hp : "");
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || p == 0 || p > 65535)
        return vmt_error_set(VMT_EINVAL, "bad port in \"%s\"", hp);
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = '\0';
    *port = (uint16_t)p;
    return 0;
}

static int migrate_send(vmt_vm *vm, const char *host_port, const vmt_migrate_opts *o,
                        vmt_migrate_report *rep, uint64_t t0)
{
    char host[256];
    uint16_t port = 0;
    int rc = parse_host_port(host_port, host, sizeof(host), &port);
    if (rc)
        return rc;
    if (o->streams < 1 || o->streams > VMT_NET_MAX_STREAMS)
        return vmt_error_set(VMT_EINVAL, "streams must be 1..%u", VMT_NET_MAX_STREAMS);

    net_sink c = {.vm = vm, .timeout_ms = o->timeout_ms};
    uint64_t size = 0;
    c.ram = vmt_vm_ram(vm, &size);
    vmt_batch_opts_init(&c.bopts);
    if (o->compress == VMT_MIGRATE_COMPRESS_LZ4)
        c.bopts.page_codec = VMT_PAGE_LZ4;
    else if (o->compress == VMT_MIGRATE_COMPRESS_ZSTD)
        c.bopts.page_codec = VMT_PAGE_ZSTD;

    vmt_ratelimit *rate = NULL;
    vmt_session_config sc;
    vmt_session_config_init(&sc);
    sc.nstreams = o->streams;
    sc.psk = o->psk;
    sc.psk_len = o->psk ? o->psk_len : 0;
    sc.timeout_ms = o->timeout_ms;
    if (o->bandwidth && (rc = vmt_ratelimit_new(&rate, o->bandwidth, o->bandwidth / 10 + 65536)))
        return rc;
    sc.rate = rate;
    rc = vmt_session_connect(&c.s, host, port, &sc);
    rep->setup_ns = vmt_now_ns() - t0;
    if (rc) {
        vmt_ratelimit_free(rate);
        return vmt_error_wrap(rc, "connecting to %s", host_port);
    }
    c.n = vmt_session_nstreams(c.s);
    if (o->xbzrle)
        rc = vmt_xbzrle_cache_new(&c.cache, VMT_MIN((size_t)size / 4, (size_t)64 << 20) + PAGE);

    bool started_log = false;
    uint64_t npages = vmt_vm_ram_pages(vm);
    uint64_t *pending = vmt_callocn((size_t)(npages + 63) / 64, sizeof(uint64_t));
    if (rc == 0 && !pending)
        rc = vmt_error_set(VMT_ENOMEM, "out of memory");
    if (rc == 0 && !vmt_dirty_active(vm)) {
        rc = vmt_dirty_start(vm, 0);
        started_log = rc == 0;
    }
    vmt_precopy_stats st = {0};
    if (rc == 0) {
        for (uint64_t i = 0; i < npages; i++)
            pending[i / 64] |= 1ull << (i % 64);
        mig_policy pol = {.o = o, .rep = rep, .fixed_ms = 5.0};
        vmt_precopy_opts po = {.policy = mig_policy_fn, .policy_ctx = &pol, .batch_pages = 1024};
        rc = vmt_precopy_run(vm, pending, &net_sink_ops, &c, &po, &st);
        if (rc == 0)
            rep->acked = true;
    }
    if (started_log)
        vmt_dirty_stop(vm);
    rep->rounds = st.rounds;
    rep->pages_sent = st.pages_sent;
    rep->downtime_ns = st.pause_ns;
    if (c.w) {
        const vmt_batch_stats *bs = vmt_batch_writer_stats(c.w);
        for (unsigned e = 0; e < VMT_PAGE_ENC_COUNT; e++)
            rep->pages_by_enc[e] += bs->pages[e];
    }
    if (c.full) {
        const vmt_batch_stats *bs = vmt_batch_writer_stats(c.full);
        for (unsigned e = 0; e < VMT_PAGE_ENC_COUNT; e++)
            rep->pages_by_enc[e] += bs->pages[e];
    }
    vmt_session_stats ss;
    vmt_session_get_stats(c.s, &ss);
    rep->wire_bytes = ss.bytes_sent + ss.bytes_received;
    free(pending);
    vmt_batch_writer_free(c.w);
    vmt_batch_writer_free(c.full);
    vmt_xbzrle_cache_free(c.cache);
    vmt_session_close(c.s);
    vmt_ratelimit_free(rate);
    return rc;
}

int vmt_migrate_send(vmt_vm *vm, const char *host_port, const vmt_migrate_opts *o,
                     vmt_migrate_report *rep)
{
    vmt_migrate_opts def;
    vmt_migrate_report local;
    if (!o) {
        vmt_migrate_opts_init(&def);
        o = &def;
    }
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof(*rep));
    vmt_migrate_opts eff = *o;
    if (!eff.streams)
        eff.streams = 1;
    if (!eff.max_downtime_ms)
        eff.max_downtime_ms = 300;
    if (!eff.max_rounds)
        eff.max_rounds = 30;
    if (!eff.timeout_ms)
        eff.timeout_ms = 10000;
    uint64_t t0 = vmt_now_ns();
    int rc = vm ? migrate_send(vm, host_port, &eff, rep, t0)
                : vmt_error_set(VMT_EINVAL, "no VM to migrate");
    rep->total_ns = vmt_now_ns() - t0;
    rep->error = rc;
    if (rep->total_ns)
        rep->throughput = (double)rep->wire_bytes * 1e9 / (double)rep->total_ns;
    if (rc && !rep->why[0])
        snprintf(rep->why, sizeof(rep->why), "%s", vmt_error_last());
    return rc;
}
