/*
 * State blob encoder: plain hypervisor-glue structs -> StateBlob message ->
 * bytes.
 *
 * The message tree is built in arenas of fixed shape (one per vCPU plus one
 * for the VM), so encoding does one allocation per vCPU batch and nothing
 * can be forgotten on an error path.  Bytes fields point into the caller's
 * structs; protobuf-c only reads them while packing.
 */
#include "proto_internal.h"

#include <stdlib.h>
#include <string.h>

#ifndef VMT_PROTO_WRITER
#define VMT_PROTO_WRITER "vmtree"
#endif

/* Every sub-message of one vCPU. */
typedef struct enc_vcpu {
    Vmtree__State__VcpuState m;
    Vmtree__State__Regs regs;
    Vmtree__State__Sregs sregs;
    Vmtree__State__Segment seg[8];
    Vmtree__State__DescTable gdt, idt;
    uint64_t bitmap[VMT_PROTO_BITMAP_WORDS];
    Vmtree__State__Xcrs xcrs;
    Vmtree__State__Xcr xcr[KVM_MAX_XCRS];
    Vmtree__State__Xcr *xcr_ptr[KVM_MAX_XCRS];
    Vmtree__State__Events ev;
    Vmtree__State__Events__Exception exc;
    Vmtree__State__Events__Interrupt irq;
    Vmtree__State__Events__Nmi nmi;
    Vmtree__State__Events__Smi smi;
    Vmtree__State__DebugRegs dbg;
    uint64_t db[VMT_PROTO_DEBUG_DB];
    Vmtree__State__Msr msr[VMT_MAX_MSRS];
    Vmtree__State__Msr *msr_ptr[VMT_MAX_MSRS];
} enc_vcpu;

/* Every VM-wide message. */
typedef struct enc_vm {
    Vmtree__State__StateBlob blob;
    Vmtree__State__Header hdr;
    Vmtree__State__VmState vm;
    Vmtree__State__Clock clock;
    Vmtree__State__Serial serial;
    Vmtree__State__Irqchip irqchip;
    Vmtree__State__Pic pic_master, pic_slave;
    Vmtree__State__Ioapic ioapic;
    uint64_t redir[KVM_IOAPIC_NUM_PINS];
    Vmtree__State__Pit pit;
    Vmtree__State__PitChannel ch[VMT_PROTO_PIT_CHANNELS];
    Vmtree__State__PitChannel *ch_ptr[VMT_PROTO_PIT_CHANNELS];
    Vmtree__State__VcpuState *vcpu_ptr[VMT_VM_MAX_VCPUS];
} enc_vm;

_Static_assert(sizeof(((struct kvm_sregs *)0)->interrupt_bitmap) ==
                   VMT_PROTO_BITMAP_WORDS * sizeof(uint64_t),
               "interrupt_bitmap size");
_Static_assert(sizeof(((struct kvm_debugregs *)0)->db) == VMT_PROTO_DEBUG_DB * sizeof(uint64_t),
               "debugregs.db size");
_Static_assert(VMT_PROTO_PIT_CHANNELS == VMT_ARRAY_SIZE(((struct kvm_pit_state2 *)0)->channels),
               "pit channels");

static void enc_segment(Vmtree__State__Segment *m, const struct kvm_segment *s)
{
    vmtree__state__segment__init(m);
    m->base_address = s->base;
    m->limit = s->limit;
    m->selector = s->selector;
#define X(f) m->f = s->f;
    VMT_PROTO_SEGMENT_U8(X)
#undef X
}

static void enc_sregs(enc_vcpu *e, const struct kvm_sregs *s)
{
    Vmtree__State__Sregs *m = &e->sregs;
    unsigned i = 0;

    vmtree__state__sregs__init(m);
#define X(f)                                                                                       \
    enc_segment(&e->seg[i], &s->f);                                                                \
    m->f = &e->seg[i++];
    VMT_PROTO_SEGMENTS(X)
#undef X
    vmtree__state__desc_table__init(&e->gdt);
    e->gdt.base_address = s->gdt.base;
    e->gdt.limit = s->gdt.limit;
    vmtree__state__desc_table__init(&e->idt);
    e->idt.base_address = s->idt.base;
    e->idt.limit = s->idt.limit;
    m->gdt = &e->gdt;
    m->idt = &e->idt;
#define X(f) m->f = s->f;
    VMT_PROTO_SREGS_U64(X)
#undef X
    for (i = 0; i < VMT_PROTO_BITMAP_WORDS; i++)
        e->bitmap[i] = s->interrupt_bitmap[i];
    m->n_interrupt_bitmap = VMT_PROTO_BITMAP_WORDS;
    m->interrupt_bitmap = e->bitmap;
}

static void enc_xcrs(enc_vcpu *e, const struct kvm_xcrs *x)
{
    vmtree__state__xcrs__init(&e->xcrs);
    e->xcrs.flags = x->flags;
    for (uint32_t i = 0; i < x->nr_xcrs; i++) {
        vmtree__state__xcr__init(&e->xcr[i]);
        e->xcr[i].xcr = x->xcrs[i].xcr;
        e->xcr[i].value = x->xcrs[i].value;
        e->xcr_ptr[i] = &e->xcr[i];
    }
    e->xcrs.n_xcrs = x->nr_xcrs;
    e->xcrs.xcrs = e->xcr_ptr;
}

static void enc_events(enc_vcpu *e, const struct kvm_vcpu_events *ev)
{
    vmtree__state__events__exception__init(&e->exc);
    e->exc.injected = ev->exception.injected;
    e->exc.nr = ev->exception.nr;
    e->exc.has_error_code = ev->exception.has_error_code;
    e->exc.pending = ev->exception.pending;
    e->exc.error_code = ev->exception.error_code;
    e->exc.has_payload = ev->exception_has_payload;
    e->exc.payload = ev->exception_payload;
    vmtree__state__events__interrupt__init(&e->irq);
    e->irq.injected = ev->interrupt.injected;
    e->irq.nr = ev->interrupt.nr;
    e->irq.soft = ev->interrupt.soft;
    e->irq.shadow = ev->interrupt.shadow;
    vmtree__state__events__nmi__init(&e->nmi);
    e->nmi.injected = ev->nmi.injected;
    e->nmi.pending = ev->nmi.pending;
    e->nmi.masked = ev->nmi.masked;
    vmtree__state__events__smi__init(&e->smi);
    e->smi.smm = ev->smi.smm;
    e->smi.pending = ev->smi.pending;
    e->smi.smm_inside_nmi = ev->smi.smm_inside_nmi;
    e->smi.latched_init = ev->smi.latched_init;
    vmtree__state__events__init(&e->ev);
    e->ev.exception = &e->exc;
    e->ev.interrupt = &e->irq;
    e->ev.nmi = &e->nmi;
    e->ev.smi = &e->smi;
    e->ev.sipi_vector = ev->sipi_vector;
    e->ev.flags = ev->flags;
    e->ev.triple_fault_pending = ev->triple_fault.pending;
}

static void enc_debugregs(enc_vcpu *e, const struct kvm_debugregs *d)
{
    vmtree__state__debug_regs__init(&e->dbg);
    for (unsigned i = 0; i < VMT_PROTO_DEBUG_DB; i++)
        e->db[i] = d->db[i];
    e->dbg.n_db = VMT_PROTO_DEBUG_DB;
    e->dbg.db = e->db;
    e->dbg.dr6 = d->dr6;
    e->dbg.dr7 = d->dr7;
    e->dbg.flags = d->flags;
}

static void enc_msrs(enc_vcpu *e, const vmt_vcpu_state *st)
{
    for (uint32_t i = 0; i < st->nr_msrs; i++) {
        vmtree__state__msr__init(&e->msr[i]);
        e->msr[i].index = st->msrs[i].index;
        e->msr[i].value = st->msrs[i].data;
        e->msr_ptr[i] = &e->msr[i];
    }
    e->m.n_msrs = st->nr_msrs;
    e->m.msrs = e->msr_ptr;
}

static void enc_vcpu_state(enc_vcpu *e, const vmt_vcpu_state *st, unsigned idx)
{
    Vmtree__State__VcpuState *m = &e->m;

    vmtree__state__vcpu_state__init(m);
    m->index = idx;
    vmtree__state__regs__init(&e->regs);
#define X(f) e->regs.f = st->regs.f;
    VMT_PROTO_REGS(X)
#undef X
    m->regs = &e->regs;
    enc_sregs(e, &st->sregs);
    m->sregs = &e->sregs;
    enc_xcrs(e, &st->xcrs);
    m->xcrs = &e->xcrs;
    enc_events(e, &st->events);
    m->events = &e->ev;
    m->mp_state = st->mp_state.mp_state;
    enc_debugregs(e, &st->debugregs);
    m->debugregs = &e->dbg;
    if (st->has_lapic) {
        /* protobuf-c reads, never writes, bytes while packing. */
        m->lapic.data = (uint8_t *)st->lapic.regs;
        m->lapic.len = sizeof(st->lapic);
    }
    m->xsave.data = (uint8_t *)st->xsave;
    m->xsave.len = st->xsave_size;
    enc_msrs(e, st);
}

static void enc_pic(Vmtree__State__Pic *m, const struct kvm_pic_state *p)
{
    vmtree__state__pic__init(m);
#define X(f) m->f = p->f;
    VMT_PROTO_PIC(X)
#undef X
}

static void enc_pit(enc_vm *e, const struct kvm_pit_state2 *p)
{
    for (unsigned i = 0; i < VMT_PROTO_PIT_CHANNELS; i++) {
        const struct kvm_pit_channel_state *c = &p->channels[i];
        Vmtree__State__PitChannel *m = &e->ch[i];

        vmtree__state__pit_channel__init(m);
        m->count = c->count;
        m->latched_count = c->latched_count;
#define X(f) m->f = c->f;
        VMT_PROTO_PIT_U8(X)
#undef X
        m->count_load_time = c->count_load_time;
        e->ch_ptr[i] = m;
    }
    vmtree__state__pit__init(&e->pit);
    e->pit.n_channels = VMT_PROTO_PIT_CHANNELS;
    e->pit.channels = e->ch_ptr;
    e->pit.flags = p->flags;
}

static void enc_irqchip(enc_vm *e, const vmt_vm_state *vm)
{
    const struct kvm_ioapic_state *io = &vm->ioapic.chip.ioapic;

    enc_pic(&e->pic_master, &vm->pic_master.chip.pic);
    enc_pic(&e->pic_slave, &vm->pic_slave.chip.pic);
    vmtree__state__ioapic__init(&e->ioapic);
    e->ioapic.base_address = io->base_address;
    e->ioapic.ioregsel = io->ioregsel;
    e->ioapic.id = io->id;
    e->ioapic.irr = io->irr;
    for (unsigned i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
        e->redir[i] = io->redirtbl[i].bits;
    e->ioapic.n_redirtbl = KVM_IOAPIC_NUM_PINS;
    e->ioapic.redirtbl = e->redir;
    enc_pit(e, &vm->pit);
    vmtree__state__irqchip__init(&e->irqchip);
    e->irqchip.pic_master = &e->pic_master;
    e->irqchip.pic_slave = &e->pic_slave;
    e->irqchip.ioapic = &e->ioapic;
    e->irqchip.pit = &e->pit;
    e->vm.irqchip = &e->irqchip;
}

static void enc_vm_state(enc_vm *e, const vmt_vm_state *vm)
{
    vmtree__state__vm_state__init(&e->vm);
    e->vm.mem_size = vm->mem_size;
    e->vm.nr_vcpus = vm->nr_vcpus;
    vmtree__state__clock__init(&e->clock);
    e->clock.clock = vm->clock.clock;
    e->clock.flags = vm->clock.flags;
    e->clock.realtime = vm->clock.realtime;
    e->clock.host_tsc = vm->clock.host_tsc;
    e->vm.clock = &e->clock;
    vmtree__state__serial__init(&e->serial);
#define X(f) e->serial.f = vm->serial.f;
    VMT_PROTO_SERIAL(X)
#undef X
    e->vm.serial = &e->serial;
    if (vm->has_irqchip)
        enc_irqchip(e, vm);
}

/* Refuses input the decoder would refuse, so every blob written reads back. */
static int check_input(const vmt_vm_state *vm, const vmt_vcpu_state *vcpus, unsigned nvcpus)
{
    if (nvcpus == 0 || nvcpus > VMT_VM_MAX_VCPUS || nvcpus != vm->nr_vcpus)
        return vmt_error_set(VMT_EINVAL, "state encode: %u vCPU states for a VM of %u (max %u)",
                             nvcpus, vm->nr_vcpus, VMT_VM_MAX_VCPUS);
    if (vm->mem_size > VMT_VM_MAX_MEM || vm->mem_size % VMT_PAGE_SIZE != 0)
        return vmt_error_set(VMT_EINVAL, "state encode: bad memory size %llu",
                             (unsigned long long)vm->mem_size);
    for (unsigned i = 0; i < nvcpus; i++) {
        const vmt_vcpu_state *st = &vcpus[i];
        if (st->xsave_size > VMT_XSAVE_MAX || st->nr_msrs > VMT_MAX_MSRS ||
            st->xcrs.nr_xcrs > KVM_MAX_XCRS)
            return vmt_error_set(VMT_EINVAL,
                                 "state encode: vCPU %u: xsave %u B, %u MSRs, %u XCRs "
                                 "(max %u, %u, %u)",
                                 i, st->xsave_size, st->nr_msrs, st->xcrs.nr_xcrs, VMT_XSAVE_MAX,
                                 VMT_MAX_MSRS, KVM_MAX_XCRS);
    }
    return 0;
}

static int pack_blob(const Vmtree__State__StateBlob *blob, uint8_t **out, size_t *out_len)
{
    size_t len = protobuf_c_message_get_packed_size(&blob->base);

    /* Unreachable with the caps checked above (about 22 KiB per vCPU), kept
     * so that the writer can never emit what a reader refuses. */
    if (len > VMT_STATE_MAX_BYTES)
        return vmt_error_set(VMT_EINVAL, "state encode: blob of %zu bytes exceeds %u", len,
                             VMT_STATE_MAX_BYTES);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return vmt_error_set(VMT_ENOMEM, "state encode: out of memory for %zu bytes", len);
    size_t packed = protobuf_c_message_pack(&blob->base, buf);
    if (packed != len) {
        free(buf);
        return vmt_error_set(VMT_ERR, "state encode: packed %zu bytes, expected %zu", packed, len);
    }
    *out = buf;
    *out_len = len;
    return 0;
}

int vmt_state_encode(const vmt_vm_state *vm, const vmt_vcpu_state *vcpus, unsigned nvcpus,
                     uint8_t **out, size_t *out_len)
{
    enc_vm e;

    if (!vm || !vcpus || !out || !out_len)
        return vmt_error_set(VMT_EINVAL, "state encode: NULL argument");
    int rc = check_input(vm, vcpus, nvcpus);
    if (rc)
        return rc;
    enc_vcpu *ev = vmt_callocn(nvcpus, sizeof(*ev));
    if (!ev)
        return VMT_ENOMEM;
    memset(&e, 0, sizeof(e));
    vmtree__state__header__init(&e.hdr);
    e.hdr.major = VMT_STATE_FORMAT_MAJOR;
    e.hdr.minor = VMT_STATE_FORMAT_MINOR;
    e.hdr.writer = (char *)VMT_PROTO_WRITER;
    enc_vm_state(&e, vm);
    for (unsigned i = 0; i < nvcpus; i++) {
        enc_vcpu_state(&ev[i], &vcpus[i], i);
        e.vcpu_ptr[i] = &ev[i].m;
    }
    e.vm.n_vcpus = nvcpus;
    e.vm.vcpus = e.vcpu_ptr;
    vmtree__state__state_blob__init(&e.blob);
    e.blob.header = &e.hdr;
    e.blob.state = &e.vm;
    rc = pack_blob(&e.blob, out, out_len);
    free(ev);
    return rc;
}
