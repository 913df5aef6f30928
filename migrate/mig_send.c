/*
 * vmt_migrate_send: connects, runs the pre-copy engine into the network
 * sink (mig_source.c) and reports.  Also here: the convergence policy with
 * auto-converge, and the care for a VM whose dirty log holds the pages
 * changed since its HEAD snapshot (a VM process's VM): if the migration
 * fails, those pages and every page dirtied meanwhile go back to the log.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mig_internal.h"

#define PAGE VMT_NET_PAGE_SIZE
/* Throttle steps of auto-converge (share of time the VM is held paused). */
static const unsigned throttle_steps[] = {30, 50, 70, 85, 95, 99};

/* ---- policy ---------------------------------------------------------------- */

typedef struct mig_policy {
    const vmt_migrate_opts *o;
    vmt_migrate_report *rep;
    double fixed_ms; /* pause, state, PREPARED/GO round trips, resume (estimate) */
    mig_throttle *throttle;
    unsigned step; /* next throttle step */
    vmt_round_stats last;
    bool have_last;
} mig_policy;

static void record_round(mig_policy *p, vmt_round_stats r)
{
    vmt_migrate_report *rep = p->rep;
    if (rep->nround_stats < VMT_MIGRATE_MAX_ROUND_STATS) {
        rep->dirty_rate[rep->nround_stats] = r.dirty_rate;
        rep->bandwidth[rep->nround_stats] = r.bandwidth;
        rep->nround_stats++;
    }
    p->last = r;
    p->have_last = true;
}

static double need_ms(const mig_policy *p, const vmt_round_stats *r)
{
    double bw = r->bandwidth > 0 ? r->bandwidth : 1e6;
    return (double)r->dirty_pages * PAGE / bw * 1e3 + p->fixed_ms;
}

/* Raises the throttle when the guest dirtied at least half as much as the
 * round sent: the link does not outrun it. */
static void maybe_throttle(mig_policy *p, const vmt_round_stats *r)
{
    if (!p->throttle || r->round == 0 || r->dirty_pages * 2 < r->pages_sent ||
        p->step >= VMT_ARRAY_SIZE(throttle_steps))
        return;
    unsigned pct = throttle_steps[p->step++];
    mig_throttle_set(p->throttle, pct);
    if (pct > p->rep->throttle_pct)
        p->rep->throttle_pct = pct;
    vmt_info("migrate: auto-converge: VM throttled to %u%% (round %u dirtied %llu pages)", pct,
             r->round, (unsigned long long)r->dirty_pages);
}

static vmt_policy_decision mig_policy_fn(void *ctx, vmt_round_stats r)
{
    mig_policy *p = ctx;
    record_round(p, r);
    double need = need_ms(p, &r);
    vmt_policy_decision d = VMT_POLICY_CONTINUE;
    if (need <= p->o->max_downtime_ms) {
        d = VMT_POLICY_STOP_AND_COPY;
    } else if (r.round + 1 >= p->o->max_rounds) {
        snprintf(p->rep->why, sizeof(p->rep->why),
                 "did not converge in %u rounds (%llu pages dirty, %.0f ms needed, %u ms "
                 "allowed%s)",
                 p->o->max_rounds, (unsigned long long)r.dirty_pages, need, p->o->max_downtime_ms,
                 p->throttle ? "" : "; --auto-converge may help");
        d = VMT_POLICY_ABORT;
    } else {
        maybe_throttle(p, &r);
    }
    if (d != VMT_POLICY_CONTINUE && p->throttle)
        mig_throttle_stop(p->throttle); /* before the engine pauses the VM itself */
    return d;
}

typedef struct mig_progress {
    const vmt_migrate_opts *o;
    mig_policy *pol;
    mig_throttle *throttle;
} mig_progress;

static void engine_progress(void *ctx, unsigned round, uint64_t remaining, uint64_t sent)
{
    mig_progress *mp = ctx;
    vmt_migrate_progress pr = {.round = round, .remaining = remaining, .sent = sent};
    if (mp->pol->have_last) {
        pr.bandwidth = mp->pol->last.bandwidth;
        pr.dirty_rate = mp->pol->last.dirty_rate;
        pr.expected_downtime_ms = need_ms(mp->pol, &mp->pol->last);
    }
    pr.throttle_pct = mp->throttle ? mig_throttle_get(mp->throttle) : 0;
    mp->o->progress(mp->o->progress_ctx, &pr);
}

/* ---- options and the address ------------------------------------------------ */

void vmt_migrate_opts_init(vmt_migrate_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->streams = 1;
    o->xbzrle = true;
    o->dedup = true;
    o->max_downtime_ms = 300;
    o->max_rounds = 30;
    o->timeout_ms = 10000;
    o->query_attempts = 3;
}

/* ---- the dirty log of a VM with a HEAD ------------------------------------- */

typedef struct dirty_keep {
    uint64_t *before; /* what the log held when the migration began */
    uint64_t nwords;
    bool started_log; /* logging was off: we started it and stop it again */
} dirty_keep;

static int dirty_keep_begin(dirty_keep *k, vmt_vm *vm, uint64_t npages)
{
    k->nwords = (npages + 63) / 64;
    if (!vmt_dirty_active(vm)) {
        int rc = vmt_dirty_start(vm, 0);
        k->started_log = rc == 0;
        return rc;
    }
    k->before = vmt_callocn((size_t)k->nwords, sizeof(uint64_t));
    if (!k->before)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    return vmt_dirty_sync(vm, k->before, k->nwords * 64, NULL);
}

/* After a failure: the log gets back what it held and what the engine's
 * syncs reported during the copy. */
static void dirty_keep_fail(dirty_keep *k, vmt_vm *vm, const uint64_t *dirtied)
{
    if (!k->before)
        return;
    for (uint64_t w = 0; w < k->nwords; w++) {
        uint64_t bits = k->before[w] | dirtied[w];
        for (unsigned b = 0; bits && b < 64; b++)
            if (bits >> b & 1)
                vmt_vm_mark_dirty(vm, w * 64 + b, 1);
    }
}

static void dirty_keep_end(dirty_keep *k, vmt_vm *vm)
{
    if (k->started_log)
        vmt_dirty_stop(vm);
    free(k->before);
}

/* ---- settling a completion the source could not see ------------------------------ */

/* The session settings every connection of a migration shares: key or
 * TLS, timeout (one stream; the migration adds its streams and hooks). */
static void session_auth(const vmt_migrate_opts *o, vmt_session_config *sc)
{
    vmt_session_config_init(sc);
    sc->psk = o->psk;
    sc->psk_len = o->psk ? o->psk_len : 0;
    sc->allow_unauthenticated = !o->psk;
    sc->timeout_ms = o->timeout_ms;
    sc->tls = o->tls;
    sc->tls_peer_name = o->tls_peer_name;
}

/* One QUERY on a new session: does the VM of session sid run there? */
static int query_once(const vmt_migrate_opts *o, const char *host_port, const uint8_t *sid,
                      bool *running)
{
    vmt_session_config sc;
    session_auth(o, &sc);
    vmt_session *s = NULL;
    int rc = vmt_session_connect_url(&s, host_port, &sc);
    vmt_wire_msg msg = {.type = VMT_WIRE_QUERY};
    memcpy(msg.u.query.session_id, sid, sizeof(msg.u.query.session_id));
    if (rc == 0)
        rc = vmt_session_send(s, 0, &msg);
    if (rc == 0)
        rc = vmt_session_recv_msg(s, 0, VMT_WIRE_ACK, &msg, o->timeout_ms);
    if (rc == 0)
        *running = msg.u.ack.resumed;
    vmt_session_close(s);
    return rc;
}

/* After VMT_EINDOUBT: asks the destination; returns 0 (the VM runs
 * there), an error with the VM resumed here (it was recorded discarded),
 * or VMT_EINDOUBT still. */
static int settle(vmt_vm *vm, const net_sink *c, const vmt_migrate_opts *o, const char *host_port,
                  bool was_paused)
{
    uint8_t sid[16];
    char doubt[256];
    snprintf(doubt, sizeof(doubt), "%s", vmt_error_last());
    vmt_session_id(c->s, sid);
    for (unsigned i = 0; i < o->query_attempts; i++) {
        bool running = false;
        if (i) {
            struct timespec ts = {0, 500000000};
            nanosleep(&ts, NULL);
        }
        if (query_once(o, host_port, sid, &running) != 0)
            continue;
        vmt_info("migrate: the destination says the VM %s", running ? "runs there"
                                                                    : "was "
                                                                      "discarded");
        if (running)
            return 0;
        if (!was_paused) /* as it was found */
            vmt_vm_resume(vm);
        return vmt_error_set(VMT_EIO, "the completion was lost and the destination discarded "
                                      "the VM (settled by a query): it runs on here");
    }
    return vmt_error_set(VMT_EINDOUBT, "%s", doubt);
}

/* ---- vmt_migrate_send --------------------------------------------------------- */

static int connect_session(net_sink *c, const vmt_migrate_opts *o, const char *host_port,
                           vmt_ratelimit **rate)
{
    vmt_net_addr addr;
    int rc = vmt_net_addr_parse(host_port, &addr);
    if (rc == 0 && addr.port == 0)
        rc = vmt_error_set(VMT_EINVAL, "%s: port 0 is not a destination", host_port);
    if (rc)
        return rc;
    if (o->streams < 1 || o->streams > VMT_NET_MAX_STREAMS)
        return vmt_error_set(VMT_EINVAL, "streams must be 1..%u", VMT_NET_MAX_STREAMS);
    vmt_session_config sc;
    session_auth(o, &sc);
    sc.nstreams = o->streams;
    sc.wrap = o->wrap;
    sc.wrap_ctx = o->wrap_ctx;
    if (!o->dedup)
        sc.features &= ~(uint32_t)VMT_WIRE_FEAT_HAVESET;
    if (o->bandwidth && (rc = vmt_ratelimit_new(rate, o->bandwidth, o->bandwidth / 10 + 65536)))
        return rc;
    sc.rate = *rate;
    /* tcp:// or HOST:PORT, or rdma:// (refused before anything is sent
     * where no RDMA device exists: the VM runs on). */
    rc = vmt_session_connect_url(&c->s, host_port, &sc);
    return rc ? vmt_error_wrap(rc, "connecting to %s", host_port) : 0;
}

static void fill_report(vmt_migrate_report *rep, const net_sink *c, const vmt_precopy_stats *st)
{
    rep->rounds = st->rounds;
    rep->pages_sent = st->pages_sent;
    rep->downtime_ns = st->pause_ns;
    rep->in_doubt = c->in_doubt;
    rep->have_ids = c->have ? vmt_haveset_count(c->have) : 0;
    rep->pages_by_enc[VMT_PAGE_ZERO] += c->zero_skipped;
    rep->pages_placed = c->placed;
    const vmt_batch_writer *ws[2] = {c->w, c->full};
    for (int i = 0; i < 2; i++) {
        if (!ws[i])
            continue;
        const vmt_batch_stats *bs = vmt_batch_writer_stats(ws[i]);
        for (unsigned e = 0; e < VMT_PAGE_ENC_COUNT; e++)
            rep->pages_by_enc[e] += bs->pages[e];
    }
    if (c->s) {
        vmt_session_stats ss;
        vmt_session_get_stats(c->s, &ss);
        rep->wire_bytes = ss.bytes_sent + ss.bytes_received;
    }
}

/* The copy itself, once connected. */
static int run_copy(net_sink *c, vmt_vm *vm, const vmt_migrate_opts *o, const char *host_port,
                    vmt_migrate_report *rep, vmt_precopy_stats *st)
{
    uint64_t npages = vmt_vm_ram_pages(vm);
    size_t nwords = (size_t)(npages + 63) / 64;
    bool was_paused = vmt_vm_is_paused(vm);
    dirty_keep keep = {0};
    mig_throttle thr = {0};
    uint64_t *pending = vmt_callocn(nwords, sizeof(uint64_t));
    uint64_t *dirtied = vmt_callocn(nwords, sizeof(uint64_t));
    int rc = pending && dirtied ? 0 : vmt_error_set(VMT_ENOMEM, "out of memory");
    if (rc == 0)
        rc = dirty_keep_begin(&keep, vm, npages);
    if (rc == 0 && o->auto_converge)
        rc = mig_throttle_start(&thr, vm);
    if (rc == 0) {
        for (uint64_t i = 0; i < npages; i++)
            pending[i / 64] |= 1ull << (i % 64);
        mig_policy pol = {
            .o = o, .rep = rep, .fixed_ms = 5.0, .throttle = o->auto_converge ? &thr : NULL};
        mig_progress mp = {.o = o, .pol = &pol, .throttle = pol.throttle};
        vmt_precopy_opts po = {
            .policy = mig_policy_fn, .policy_ctx = &pol, .batch_pages = 1024, .dirtied = dirtied};
        if (o->progress) {
            po.progress = engine_progress;
            po.progress_ctx = &mp;
        }
        rc = vmt_precopy_run(vm, pending, &mig_net_sink_ops, c, &po, st);
        mig_throttle_stop(&thr); /* before the VM is touched again */
        if (rc == VMT_EINDOUBT && o->query_attempts) {
            rc = settle(vm, c, o, host_port, was_paused);
            c->in_doubt = rc == VMT_EINDOUBT;
        }
        if (rc && rc != VMT_EINDOUBT)
            dirty_keep_fail(&keep, vm, dirtied);
    }
    dirty_keep_end(&keep, vm);
    free(pending);
    free(dirtied);
    return rc;
}

static int migrate_send(vmt_vm *vm, const char *host_port, const vmt_migrate_opts *o,
                        vmt_migrate_report *rep, uint64_t t0)
{
    net_sink c = {.vm = vm,
                  .timeout_ms = o->timeout_ms,
                  .base = o->dedup ? o->base : NULL,
                  .lazy_ram = o->lazy_ram};
    uint64_t size = 0;
    c.ram = vmt_vm_ram(vm, &size);
    snprintf(c.vm_name, sizeof(c.vm_name), "%s", o->vm_name ? o->vm_name : "vm");
    snprintf(c.image, sizeof(c.image), "%s", o->image ? o->image : "");
    vmt_batch_opts_init(&c.bopts);
    if (o->compress == VMT_MIGRATE_COMPRESS_LZ4)
        c.bopts.page_codec = VMT_PAGE_LZ4;
    else if (o->compress == VMT_MIGRATE_COMPRESS_ZSTD)
        c.bopts.page_codec = VMT_PAGE_ZSTD;
    if (o->compress_level > 0)
        c.bopts.level = o->compress_level;
    vmt_ratelimit *rate = NULL;
    int rc = 0;
    if (o->session)
        c.s = o->session;
    else
        rc = connect_session(&c, o, host_port, &rate);
    rep->setup_ns = vmt_now_ns() - t0;
    c.n = c.s ? vmt_session_nstreams(c.s) : 0;
    if (rc == 0 && o->xbzrle)
        rc = vmt_xbzrle_cache_new(&c.cache, VMT_MIN((size_t)size / 4, (size_t)64 << 20) + PAGE);
    vmt_precopy_stats st = {0};
    if (rc == 0)
        rc = run_copy(&c, vm, o, host_port, rep, &st);
    rep->acked = rc == 0;
    fill_report(rep, &c, &st);
    vmt_batch_writer_free(c.w);
    vmt_batch_writer_free(c.full);
    vmt_xbzrle_cache_free(c.cache);
    vmt_haveset_free(c.have);
    if (!o->session)
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
