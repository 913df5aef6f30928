/*
 * Live migration, destination side: accepts a session, creates the VM from
 * VM_CONFIG, applies each round's page batches straight into its RAM (every
 * stream read on its own thread until its ROUND_END: the round barrier of
 * docs/wire-protocol.md, so deltas find their base), sets the state, starts
 * the VM and sends ACK.  No store yet: the have-set is empty, so a REF is a
 * protocol error.  Any failure before the ACK destroys the VM.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate_internal.h"
#include "vmtree/net.h"
#include "vmtree/proto.h"

#define PAGE VMT_NET_PAGE_SIZE

typedef struct dst_stream {
    vmt_session *s;
    uint8_t *ram;
    uint64_t npages;
    uint32_t timeout_ms;
    unsigned k;
    uint32_t round;
    vmt_batch_reader *rd;
    vmt_frame f;
    int rc;
    char msg[256];
} dst_stream;

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
                 ? vmt_error_set(VMT_EPROTO, "reference to a page never announced")
                 : vmt_batch_reader_apply(d->rd, rec, d->ram + rec->pfn * PAGE);
    }
    *pages += n;
    return rc;
}

/* Reads stream k until its ROUND_END of the current round. */
static int dst_read_round(dst_stream *d)
{
    uint64_t pages = 0;
    for (;;) {
        int rc = vmt_session_recv(d->s, d->k, &d->f, d->timeout_ms);
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
    if (rc == 0) { /* nothing to ask for: the have-set is empty */
        vmt_wire_msg msg = {.type = VMT_WIRE_WANT};
        msg.u.want.round = round;
        rc = vmt_session_send(s, 0, &msg);
    }
    return rc;
}

static int dst_state(vmt_vm *vm, unsigned vcpus, const uint8_t *blob, size_t len)
{
    vmt_vm_state *vst = malloc(sizeof(*vst));
    vmt_vcpu_state *cpus = vmt_callocn(vcpus, sizeof(*cpus));
    unsigned n = 0;
    int rc = 0;
    if (!vst || !cpus)
        rc = vmt_error_set(VMT_ENOMEM, "out of memory for the VM state");
    else if ((rc = vmt_state_decode(blob, len, vst, cpus, vcpus, &n)) != 0)
        rc = vmt_error_wrap(rc == VMT_ERANGE ? VMT_ECORRUPT : rc, "decoding the state blob");
    else if (n != vcpus)
        rc = vmt_error_set(VMT_ECORRUPT, "the state blob has %u vCPUs, VM_CONFIG %u", n, vcpus);
    if (rc == 0)
        rc = vmt_vm_set_state(vm, vst);
    for (unsigned i = 0; rc == 0 && i < n; i++)
        rc = vmt_vcpu_set_state(vm, i, &cpus[i]);
    free(vst);
    free(cpus);
    return rc;
}

static int dst_loop(vmt_session *s, vmt_vm *vm, unsigned vcpus, dst_stream *ds, unsigned n,
                    uint32_t timeout_ms)
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
            rc = dst_state(vm, vcpus, msg.u.state_blob.data, msg.u.state_blob.len);
            if (rc)
                rc = vmt_session_abort(s, rc, vmt_error_last());
            have_state = rc == 0;
            break;
        case VMT_WIRE_COMMIT:
            vmt_wire_msg_clear(&msg);
            if (!have_state)
                return vmt_session_abort(s, VMT_EPROTO, "COMMIT before STATE_BLOB");
            if ((rc = vmt_vm_start(vm)) != 0) {
                char why[256];
                snprintf(why, sizeof(why), "starting the VM: %s", vmt_error_last());
                return vmt_session_abort(s, rc, why);
            }
            msg = (vmt_wire_msg){.type = VMT_WIRE_ACK};
            msg.u.ack.resumed = true;
            return vmt_session_send(s, 0, &msg);
        default:
            vmt_error_set(VMT_EPROTO, "unexpected %s", vmt_wire_type_name(msg.type));
            rc = vmt_session_abort(s, VMT_EPROTO, vmt_error_last());
        }
        vmt_wire_msg_clear(&msg);
        if (rc)
            return rc;
    }
}

int vmt_migrate_receive(vmt_kvm *kvm, vmt_listener *l, const vmt_migrate_recv_opts *o, vmt_vm **out)
{
    vmt_migrate_recv_opts def = {0};
    if (!o)
        o = &def;
    *out = NULL;
    uint32_t timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    vmt_session_config sc;
    vmt_session_config_init(&sc);
    sc.max_streams = o->max_streams ? o->max_streams : VMT_NET_MAX_STREAMS;
    sc.psk = o->psk;
    sc.psk_len = o->psk ? o->psk_len : 0;
    sc.allow_unauthenticated = !o->psk; /* no key configured: anyone may migrate in */
    sc.timeout_ms = timeout_ms;
    vmt_session *s = NULL;
    int rc = vmt_session_accept(&s, l, &sc);
    if (rc)
        return vmt_error_wrap(rc, "accepting the migration");

    vmt_vm *vm = NULL;
    dst_stream ds[VMT_NET_MAX_STREAMS];
    unsigned n = vmt_session_nstreams(s);
    memset(ds, 0, sizeof(ds));
    vmt_wire_msg msg;
    rc = vmt_session_recv_msg(s, 0, VMT_WIRE_VM_CONFIG, &msg, timeout_ms);
    unsigned vcpus = 0;
    if (rc == 0) {
        vmt_vm_config cfg;
        if (o->base)
            cfg = *o->base;
        else
            vmt_vm_config_init(&cfg);
        cfg.mem_size = msg.u.vm_config.mem_size;
        cfg.vcpus = vcpus = msg.u.vm_config.vcpus;
        cfg.irqchip = msg.u.vm_config.irqchip;
        vmt_wire_msg_clear(&msg);
        rc = vmt_vm_create(&vm, kvm, &cfg);
        if (rc)
            rc = vmt_session_abort(s, rc, vmt_error_last());
    }
    uint64_t size = 0;
    uint8_t *ram = vm ? vmt_vm_ram(vm, &size) : NULL;
    for (unsigned k = 0; k < n && rc == 0; k++) {
        ds[k] = (dst_stream){
            .s = s, .ram = ram, .npages = size / PAGE, .timeout_ms = timeout_ms, .k = k};
        vmt_frame_init(&ds[k].f);
        rc = vmt_batch_reader_new(&ds[k].rd, size / PAGE);
    }
    if (rc == 0)
        rc = dst_loop(s, vm, vcpus, ds, n, timeout_ms);
    for (unsigned k = 0; k < n; k++) {
        vmt_batch_reader_free(ds[k].rd);
        vmt_frame_free(&ds[k].f);
    }
    if (rc) {
        char why[256];
        snprintf(why, sizeof(why), "%s", vmt_error_last());
        vmt_vm_destroy(vm); /* nothing runs here unless the ACK went out */
        vmt_session_close(s);
        return vmt_error_set(rc, "receiving the migration: %s", why);
    }
    vmt_session_close(s);
    *out = vm;
    return 0;
}
