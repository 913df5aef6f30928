/*
 * Live migration, destination side: over an accepted session, creates the
 * VM from VM_CONFIG, announces the have-set (the page ids of the announced
 * base snapshot when the store holds it), applies each round's page batches
 * straight into its RAM (every stream read on its own thread until its
 * ROUND_END: the round barrier of docs/wire-protocol.md, so deltas find
 * their base), resolves references from the store (WANT for any it cannot),
 * sets the state and completes in two phases: COMMIT -> PREPARED, and only
 * on GO does the VM start (then ACK).  Any failure before GO destroys the
 * VM; after GO the VM runs whatever happens to the connection, because the
 * source may already have stopped for good.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mig_internal.h"
#include "vmtree/proto.h"

#define PAGE VMT_NET_PAGE_SIZE

typedef struct dst_stream {
    vmt_session *s;
    uint8_t *ram;
    uint64_t npages;
    uint32_t timeout_ms;
    unsigned k;
    uint32_t round;
    vmt_store *store; /* resolves references, or NULL */
    vmt_batch_reader *rd;
    vmt_frame f;
    uint64_t *wants; /* references the store lacks, this round */
    size_t nwants, wants_cap;
    uint64_t pages, refs, wanted; /* totals */
    bool bulk;                    /* RAM exposed: pages may land by RDMA WRITE */
    uint64_t landed;              /* pages that landed so far this round */
    int rc;
    char msg[256];
} dst_stream;

static int want_add(dst_stream *d, uint64_t pfn)
{
    if (d->nwants == d->wants_cap) {
        size_t cap = d->wants_cap ? d->wants_cap * 2 : 64;
        if (cap > VMT_WIRE_WANT_MAX)
            return vmt_error_set(VMT_ERANGE, "more than %u unresolved references in a round",
                                 VMT_WIRE_WANT_MAX);
        uint64_t *w = realloc(d->wants, cap * sizeof(*w));
        if (!w)
            return vmt_error_set(VMT_ENOMEM, "out of memory");
        d->wants = w;
        d->wants_cap = cap;
    }
    d->wants[d->nwants++] = pfn;
    d->wanted++;
    return 0;
}

/* A REF record: the page of that id from the store, or a WANT. */
static int dst_ref(dst_stream *d, const vmt_page_rec *rec)
{
    if (!d->store)
        return vmt_error_set(VMT_EPROTO, "reference to a page, but no have-set was announced");
    vmt_id id;
    memcpy(id.b, rec->data, sizeof(id.b));
    void *dst = d->ram + rec->pfn * PAGE;
    int rc = vmt_store_get_pages(d->store, &id, 1, &dst);
    if (rc == 0) {
        d->refs++;
        return 0;
    }
    vmt_error_clear(); /* a false positive of the set, or damage: fetched in full */
    return want_add(d, rec->pfn);
}

static int dst_batch(dst_stream *d, uint64_t *pages)
{
    int rc = vmt_batch_reader_parse(d->rd, d->f.payload, d->f.len);
    if (rc == 0 && vmt_batch_reader_round(d->rd) != d->round)
        rc = vmt_error_set(VMT_EPROTO, "batch of round %u during round %u",
                           vmt_batch_reader_round(d->rd), d->round);
    size_t n = rc ? 0 : vmt_batch_reader_count(d->rd);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const vmt_page_rec *rec = vmt_batch_reader_rec(d->rd, i);
        rc = rec->enc == VMT_PAGE_REF
                 ? dst_ref(d, rec)
                 : vmt_batch_reader_apply(d->rd, rec, d->ram + rec->pfn * PAGE);
    }
    *pages += n;
    d->pages += n;
    return rc;
}

/* Counts the pages that landed by bulk placement (they are in RAM already;
 * draining also keeps the transport's bounded queue of runs short). */
static int dst_drain(dst_stream *d)
{
    vmt_page_run runs[64];
    size_t n;
    do {
        int rc = vmt_session_bulk_landed(d->s, d->k, runs, 64, &n);
        if (rc)
            return rc;
        for (size_t i = 0; i < n; i++)
            d->landed += runs[i].npages;
    } while (n == 64);
    return 0;
}

/* Reads stream k until its ROUND_END of the current round. */
static int dst_read_round(dst_stream *d)
{
    uint64_t pages = 0;
    d->landed = 0;
    for (;;) {
        int rc = vmt_session_recv(d->s, d->k, &d->f, d->timeout_ms);
        if (rc == 0 && d->bulk)
            rc = dst_drain(d); /* what landed before this frame */
        if (rc)
            return rc;
        if (d->f.type == VMT_WIRE_PAGE_BATCH) {
            if ((rc = dst_batch(d, &pages)) != 0)
                return vmt_session_abort(d->s, rc, vmt_error_last());
            continue;
        }
        vmt_wire_msg msg;
        rc = d->f.type == VMT_WIRE_ROUND_END
                 ? vmt_wire_decode(d->f.type, d->f.payload, d->f.len, &msg)
                 : vmt_error_set(VMT_EPROTO, "unexpected %s in a round",
                                 vmt_wire_type_name(d->f.type));
        pages += d->landed;
        d->pages += d->landed;
        if (rc == 0 && (msg.u.round_end.round != d->round || msg.u.round_end.pages != pages))
            rc = vmt_error_set(VMT_EPROTO, "ROUND_END of round %u with %llu pages; got %llu",
                               msg.u.round_end.round, (unsigned long long)msg.u.round_end.pages,
                               (unsigned long long)pages);
        return rc ? vmt_session_abort(d->s, rc, vmt_error_last()) : 0;
    }
}

static void *dst_thread(void *arg)
{
    dst_stream *d = arg;
    d->rc = dst_read_round(d);
    if (d->rc)
        snprintf(d->msg, sizeof(d->msg), "%s", vmt_error_last());
    return NULL;
}

/* After the round barrier: asks for the pages whose references did not
 * resolve (on stream 0 they come in full, then ROUND_END), until none. */
static int dst_wants(vmt_session *s, dst_stream *ds, unsigned n, uint32_t round)
{
    for (;;) {
        size_t total = 0;
        for (unsigned k = 0; k < n; k++)
            total += ds[k].nwants;
        if (total > VMT_WIRE_WANT_MAX)
            return vmt_session_abort(s, VMT_ERANGE, "too many unresolved references");
        uint64_t *pfns = total ? malloc(total * sizeof(*pfns)) : NULL;
        if (total && !pfns)
            return vmt_session_abort(s, VMT_ENOMEM, "out of memory");
        size_t at = 0;
        for (unsigned k = 0; k < n; k++) {
            if (ds[k].nwants)
                memcpy(pfns + at, ds[k].wants, ds[k].nwants * sizeof(*pfns));
            at += ds[k].nwants;
            ds[k].nwants = 0;
        }
        vmt_wire_msg msg = {.type = VMT_WIRE_WANT};
        msg.u.want.round = round;
        msg.u.want.pfns = pfns;
        msg.u.want.n = total;
        int rc = vmt_session_send(s, 0, &msg);
        free(pfns);
        if (rc || total == 0)
            return rc;
        if ((rc = dst_read_round(&ds[0])) != 0) /* full pages: no references */
            return rc;
    }
}

static int dst_round(vmt_session *s, dst_stream *ds, unsigned n, uint32_t round)
{
    pthread_t th[VMT_NET_MAX_STREAMS];
    bool started[VMT_NET_MAX_STREAMS] = {false};
    int rc = 0;
    for (unsigned k = 0; k < n; k++)
        ds[k].round = round;
    for (unsigned k = 1; k < n; k++) {
        if (pthread_create(&th[k], NULL, dst_thread, &ds[k]) != 0) {
            rc = vmt_session_abort(s, VMT_ERR, "cannot start a stream thread");
            break;
        }
        started[k] = true;
    }
    int rc0 = dst_read_round(&ds[0]);
    if (!rc)
        rc = rc0;
    for (unsigned k = 1; k < n; k++) {
        if (!started[k])
            continue;
        pthread_join(th[k], NULL);
        if (!rc && ds[k].rc)
            rc = vmt_error_set(ds[k].rc, "%s", ds[k].msg);
    }
    return rc ? rc : dst_wants(s, ds, n, round);
}

/* ---- completion ------------------------------------------------------------- */

/* The source closes once it has the ACK; waiting for that keeps our own
 * close (e.g. a guest that exits at once) from racing the ACK. */
static void dst_wait_close(vmt_session *s, uint32_t timeout_ms)
{
    vmt_frame f;
    vmt_frame_init(&f);
    int rc = vmt_session_recv(s, 0, &f, timeout_ms);
    if (rc == 0)
        vmt_debug("migrate: %s after ACK ignored", vmt_wire_type_name(f.type));
    vmt_frame_free(&f);
    vmt_error_clear();
}

/* COMMIT arrived: PREPARED, then GO starts the VM.  *running tells whether
 * it was started (then it must never be destroyed for a failure here). */
static int dst_complete(vmt_session *s, vmt_vm *vm, const char *outcome_dir, uint32_t timeout_ms,
                        bool *running)
{
    vmt_wire_msg msg = {.type = VMT_WIRE_PREPARED};
    msg.u.ack.resumed = false;
    snprintf(msg.u.ack.message, sizeof(msg.u.ack.message), "prepared");
    int rc = vmt_session_send(s, 0, &msg);
    if (rc == 0)
        rc = vmt_session_recv_msg(s, 0, VMT_WIRE_GO, &msg, timeout_ms);
    if (rc)
        return vmt_error_wrap(rc, "waiting for GO");
    if (outcome_dir) { /* recorded before the VM starts: a query can tell */
        uint8_t sid[16];
        mig_outcome got = MIG_OUTCOME_NONE;
        vmt_session_id(s, sid);
        rc = mig_outcome_claim(outcome_dir, sid, MIG_OUTCOME_RUNNING, &got);
        if (rc == 0 && got != MIG_OUTCOME_RUNNING)
            rc = vmt_error_set(VMT_ECANCELED, "GO came after the source's query discarded "
                                              "this migration");
        if (rc)
            return vmt_session_abort(s, rc, vmt_error_last());
    }
    if ((rc = vmt_vm_start(vm)) != 0) {
        char why[256];
        snprintf(why, sizeof(why), "starting the VM: %s", vmt_error_last());
        return vmt_session_abort(s, rc, why);
    }
    *running = true;
    msg = (vmt_wire_msg){.type = VMT_WIRE_ACK};
    msg.u.ack.resumed = true;
    if (vmt_session_send(s, 0, &msg) != 0) /* the VM runs: the source must not */
        vmt_warn("migrate: the VM runs, but the ACK could not be sent: %s", vmt_error_last());
    else
        dst_wait_close(s, timeout_ms);
    return 0;
}

static int dst_loop(vmt_session *s, vmt_vm *vm, unsigned vcpus, dst_stream *ds, unsigned n,
                    const vmt_migrate_recv_opts *o, uint32_t timeout_ms, bool *running)
{
    bool have_state = false;
    for (;;) {
        vmt_wire_msg msg;
        int rc = vmt_session_recv_msg(s, 0, 0, &msg, timeout_ms);
        if (rc)
            return rc;
        switch (msg.type) {
        case VMT_WIRE_ROUND_START:
            rc = dst_round(s, ds, n, msg.u.round_start.round);
            break;
        case VMT_WIRE_STATE_BLOB:
            rc = mig_state_apply_blob(vm, vcpus, msg.u.state_blob.data, msg.u.state_blob.len);
            if (rc)
                rc = vmt_session_abort(s, rc, vmt_error_last());
            have_state = rc == 0;
            break;
        case VMT_WIRE_COMMIT:
            vmt_wire_msg_clear(&msg);
            if (!have_state)
                return vmt_session_abort(s, VMT_EPROTO, "COMMIT before STATE_BLOB");
            return dst_complete(s, vm, o->outcome_dir, timeout_ms, running);
        default:
            vmt_error_set(VMT_EPROTO, "unexpected %s", vmt_wire_type_name(msg.type));
            rc = vmt_session_abort(s, VMT_EPROTO, vmt_error_last());
        }
        vmt_wire_msg_clear(&msg);
        if (rc)
            return rc;
    }
}

/* ---- the have-set ------------------------------------------------------------- */

static int emit_chunk(void *ctx, const vmt_wire_have_set *chunk)
{
    vmt_wire_msg msg = {.type = VMT_WIRE_HAVE_SET};
    msg.u.have_set = *chunk;
    return vmt_session_send(ctx, 0, &msg);
}

/* The non-zero page ids of the base snapshot, when the store holds it
 * with the VM's size; else none (*n = 0). */
static int base_ids(vmt_store *st, const vmt_migrate_incoming *in, uint64_t npages, vmt_id **ids,
                    size_t *n)
{
    vmt_snap_record rec;
    vmt_map *map = NULL;
    *ids = NULL;
    *n = 0;
    if (!st || !in->has_base)
        return 0;
    if (vmt_snap_record_read(st, &in->base, &rec) != 0 || rec.mem_size != in->mem_size ||
        vmt_map_load(&map, st, &rec.map_root, npages) != 0) {
        vmt_info("migrate: base snapshot not usable here (%s): no have-set", vmt_error_last());
        vmt_error_clear();
        return 0;
    }
    vmt_id *v = vmt_mallocn((size_t)npages, sizeof(*v));
    if (!v) {
        vmt_map_free(map);
        return vmt_error_set(VMT_ENOMEM, "out of memory for the have-set");
    }
    size_t k = 0;
    for (uint64_t pfn = 0; pfn < npages; pfn++) {
        const vmt_id *id = vmt_map_get(map, pfn);
        if (id && !vmt_id_is_zero_page(id))
            v[k++] = *id;
    }
    vmt_map_free(map);
    *ids = v;
    *n = k;
    return 0;
}

static int dst_haveset(vmt_session *s, vmt_store *st, const vmt_migrate_incoming *in,
                       uint64_t npages, uint64_t *count)
{
    if (!(vmt_session_features(s) & VMT_WIRE_FEAT_HAVESET))
        return 0;
    vmt_id *ids = NULL;
    size_t n = 0;
    int rc = base_ids(st, in, npages, &ids, &n);
    if (rc == 0)
        rc = vmt_haveset_encode(ids, n, 0, emit_chunk, s);
    free(ids);
    *count = n;
    return rc ? vmt_session_abort(s, rc, vmt_error_last()) : 0;
}

/* ---- receive ------------------------------------------------------------------ */

void vmt_migrate_recv_session_config(const vmt_migrate_recv_opts *o, vmt_session_config *sc)
{
    vmt_session_config_init(sc);
    sc->max_streams = o->max_streams ? o->max_streams : VMT_NET_MAX_STREAMS;
    sc->psk = o->psk;
    sc->psk_len = o->psk ? o->psk_len : 0;
    sc->allow_unauthenticated = !o->psk; /* no key configured: anyone may migrate in */
    sc->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    sc->tls = o->tls;
}

/* A QUERY: what became of session q (recorded as discarded when unknown,
 * so that a late GO cannot start it). */
static int dst_query(vmt_session *s, const vmt_migrate_recv_opts *o, const uint8_t *q,
                     vmt_migrate_recv_report *rep)
{
    if (!o->outcome_dir)
        return vmt_session_abort(s, VMT_EUNSUPPORTED, "this destination keeps no outcomes");
    mig_outcome got = MIG_OUTCOME_NONE;
    int rc = mig_outcome_claim(o->outcome_dir, q, MIG_OUTCOME_DISCARDED, &got);
    if (rc)
        return vmt_session_abort(s, rc, vmt_error_last());
    vmt_wire_msg msg = {.type = VMT_WIRE_ACK};
    msg.u.ack.resumed = got == MIG_OUTCOME_RUNNING;
    snprintf(msg.u.ack.message, sizeof(msg.u.ack.message), "%s", mig_outcome_name(got));
    rep->query = true;
    rep->query_running = msg.u.ack.resumed;
    rc = vmt_session_send(s, 0, &msg);
    if (rc == 0)
        dst_wait_close(s, 2000);
    return rc;
}

/* VM_CONFIG (msg, the session's first message): asks on_config, then
 * creates the VM. */
static int dst_config(vmt_kvm *kvm, vmt_session *s, const vmt_migrate_recv_opts *o,
                      vmt_wire_msg *msg, vmt_migrate_incoming *in, vmt_vm **vm)
{
    int rc;
    if (msg->type != VMT_WIRE_VM_CONFIG) {
        vmt_wire_msg_clear(msg);
        return vmt_session_abort(s, VMT_EPROTO, "expected VM_CONFIG or QUERY");
    }
    const vmt_wire_vm_config *c = &msg->u.vm_config;
    *in = (vmt_migrate_incoming){
        .mem_size = c->mem_size, .vcpus = c->vcpus, .irqchip = c->irqchip, .has_base = c->has_base};
    snprintf(in->vm_name, sizeof(in->vm_name), "%s", c->vm_name);
    snprintf(in->image, sizeof(in->image), "%s", c->image);
    if (c->has_base)
        memcpy(in->base.b, c->base, sizeof(in->base.b));
    vmt_wire_msg_clear(msg);
    if (o->on_config && (rc = o->on_config(o->config_ctx, in)) != 0)
        return vmt_session_abort(s, rc, vmt_error_last());
    vmt_vm_config cfg;
    if (o->base)
        cfg = *o->base;
    else
        vmt_vm_config_init(&cfg);
    cfg.mem_size = in->mem_size;
    cfg.vcpus = in->vcpus;
    cfg.irqchip = in->irqchip;
    rc = vmt_vm_create(vm, kvm, &cfg);
    return rc ? vmt_session_abort(s, rc, vmt_error_last()) : 0;
}

int vmt_migrate_receive_session(vmt_kvm *kvm, vmt_session *s, const vmt_migrate_recv_opts *o,
                                vmt_vm **out, vmt_migrate_recv_report *rep)
{
    vmt_migrate_recv_opts def = {0};
    vmt_migrate_recv_report local;
    o = o ? o : &def;
    rep = rep ? rep : &local;
    memset(rep, 0, sizeof(*rep));
    *out = NULL;
    uint32_t timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    uint64_t t0 = vmt_now_ns();
    vmt_vm *vm = NULL;
    dst_stream ds[VMT_NET_MAX_STREAMS];
    unsigned n = vmt_session_nstreams(s);
    bool running = false;
    memset(ds, 0, sizeof(ds));
    vmt_wire_msg first;
    int rc = vmt_session_recv_msg(s, 0, 0, &first, timeout_ms);
    if (rc == 0 && first.type == VMT_WIRE_QUERY) {
        rc = dst_query(s, o, first.u.query.session_id, rep);
        vmt_wire_msg_clear(&first);
        return rc;
    }
    if (rc == 0)
        rc = dst_config(kvm, s, o, &first, &rep->in, &vm);
    uint64_t size = 0;
    uint8_t *ram = vm ? vmt_vm_ram(vm, &size) : NULL;
    /* Pages may land by RDMA WRITE where the transport offers it (not TCP). */
    bool bulk = false;
    if (rc == 0) {
        int e = vmt_session_bulk_expose(s, ram, size, NULL);
        bulk = e == 0;
        if (e == VMT_EUNSUPPORTED)
            vmt_error_clear();
        else if (e)
            rc = vmt_session_abort(s, e, vmt_error_last());
    }
    if (rc == 0)
        rc = dst_haveset(s, o->store, &rep->in, size / PAGE, &rep->have_ids);
    for (unsigned k = 0; k < n; k++) {
        ds[k] = (dst_stream){.s = s,
                             .ram = ram,
                             .npages = size / PAGE,
                             .timeout_ms = timeout_ms,
                             .k = k,
                             .store = rep->have_ids ? o->store : NULL,
                             .bulk = bulk};
        vmt_frame_init(&ds[k].f);
        if (rc == 0)
            rc = vmt_batch_reader_new(&ds[k].rd, size / PAGE);
    }
    if (rc == 0)
        rc = dst_loop(s, vm, rep->in.vcpus, ds, n, o, timeout_ms, &running);
    for (unsigned k = 0; k < n; k++) {
        rep->pages += ds[k].pages;
        rep->refs += ds[k].refs;
        rep->wants += ds[k].wanted;
        vmt_batch_reader_free(ds[k].rd);
        vmt_frame_free(&ds[k].f);
        free(ds[k].wants);
    }
    rep->total_ns = vmt_now_ns() - t0;
    if (rc && !running) {
        char why[256];
        snprintf(why, sizeof(why), "%s", vmt_error_last());
        vmt_vm_destroy(vm); /* nothing runs here: GO never came */
        return vmt_error_set(rc, "receiving the migration: %s", why);
    }
    *out = vm;
    return 0;
}

int vmt_migrate_receive(vmt_kvm *kvm, vmt_listener *l, const vmt_migrate_recv_opts *o, vmt_vm **out)
{
    vmt_migrate_recv_opts def = {0};
    vmt_session_config sc;
    vmt_session *s = NULL;
    *out = NULL;
    vmt_migrate_recv_session_config(o ? o : &def, &sc);
    int rc = vmt_session_accept(&s, l, &sc);
    if (rc)
        return vmt_error_wrap(rc, "accepting the migration");
    rc = vmt_migrate_receive_session(kvm, s, o, out, NULL);
    vmt_session_close(s);
    return rc;
}
