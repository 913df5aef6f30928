/*
 * State blob decoder, per vCPU: VcpuState message -> vmt_vcpu_state.
 *
 * Every part the encoder always writes must be present; every count and
 * byte length is checked against the capacity of the C array it fills
 * before anything is copied; every value narrower than its wire type is
 * range-checked rather than truncated.
 */
#include "proto_internal.h"

#include <stdio.h>
#include <string.h>

/* Field paths in error messages ("vcpus[3].sregs.ldt"), one buffer size per
 * nesting level so that each always holds its parent plus a suffix. */
#define VCPU_MAX 24
#define WHERE_MAX 48
#define SUB_MAX 80

static int dec_segment(const Vmtree__State__Segment *m, struct kvm_segment *s, const char *where)
{
    s->base = m->base_address;
    s->limit = m->limit;
    VMT_PROTO_TAKE_U16(s->selector, m->selector, where, "selector");
#define X(f) VMT_PROTO_TAKE_U8(s->f, m->f, where, #f);
    VMT_PROTO_SEGMENT_U8(X)
#undef X
    return 0;
}

static int dec_dtable(const Vmtree__State__DescTable *m, struct kvm_dtable *d, const char *where,
                      const char *name)
{
    char sub[SUB_MAX];

    if (!m)
        return vmt_proto_missing(where, name);
    snprintf(sub, sizeof(sub), "%s.%s", where, name);
    d->base = m->base_address;
    VMT_PROTO_TAKE_U16(d->limit, m->limit, sub, "limit");
    return 0;
}

static int dec_sregs(const Vmtree__State__Sregs *m, struct kvm_sregs *s, const char *vcpu)
{
    char where[WHERE_MAX], sub[SUB_MAX];
    int rc;

    if (!m)
        return vmt_proto_missing(vcpu, "sregs");
    snprintf(where, sizeof(where), "%s.sregs", vcpu);
#define X(f)                                                                                       \
    if (!m->f)                                                                                     \
        return vmt_proto_missing(where, #f);                                                       \
    snprintf(sub, sizeof(sub), "%s.%s", where, #f);                                                \
    if ((rc = dec_segment(m->f, &s->f, sub)) != 0)                                                 \
        return rc;
    VMT_PROTO_SEGMENTS(X)
#undef X
    if ((rc = dec_dtable(m->gdt, &s->gdt, where, "gdt")) != 0 ||
        (rc = dec_dtable(m->idt, &s->idt, where, "idt")) != 0)
        return rc;
#define X(f) s->f = m->f;
    VMT_PROTO_SREGS_U64(X)
#undef X
    if (m->n_interrupt_bitmap != VMT_PROTO_BITMAP_WORDS)
        return vmt_proto_bad_count(where, "interrupt_bitmap", m->n_interrupt_bitmap,
                                   VMT_PROTO_BITMAP_WORDS);
    for (unsigned i = 0; i < VMT_PROTO_BITMAP_WORDS; i++)
        s->interrupt_bitmap[i] = m->interrupt_bitmap[i];
    return 0;
}

static int dec_xcrs(const Vmtree__State__Xcrs *m, struct kvm_xcrs *x, const char *vcpu)
{
    char where[WHERE_MAX];

    if (!m)
        return vmt_proto_missing(vcpu, "xcrs");
    snprintf(where, sizeof(where), "%s.xcrs", vcpu);
    if (m->n_xcrs > KVM_MAX_XCRS)
        return vmt_proto_too_wide(where, "xcrs (count)", m->n_xcrs, KVM_MAX_XCRS);
    x->flags = m->flags;
    x->nr_xcrs = (uint32_t)m->n_xcrs;
    for (size_t i = 0; i < m->n_xcrs; i++) {
        if (!m->xcrs[i])
            return vmt_proto_missing(where, "xcrs[]");
        x->xcrs[i].xcr = m->xcrs[i]->xcr;
        x->xcrs[i].value = m->xcrs[i]->value;
    }
    return 0;
}

static int dec_exception(const Vmtree__State__Events__Exception *m, struct kvm_vcpu_events *e,
                         const char *where)
{
    VMT_PROTO_TAKE_U8(e->exception.injected, m->injected, where, "injected");
    VMT_PROTO_TAKE_U8(e->exception.nr, m->nr, where, "nr");
    VMT_PROTO_TAKE_U8(e->exception.has_error_code, m->has_error_code, where, "has_error_code");
    VMT_PROTO_TAKE_U8(e->exception.pending, m->pending, where, "pending");
    e->exception.error_code = m->error_code;
    VMT_PROTO_TAKE_U8(e->exception_has_payload, m->has_payload, where, "has_payload");
    e->exception_payload = m->payload;
    return 0;
}

static int dec_interrupts(const Vmtree__State__Events *m, struct kvm_vcpu_events *e,
                          const char *where)
{
    const Vmtree__State__Events__Interrupt *irq = m->interrupt;
    const Vmtree__State__Events__Nmi *nmi = m->nmi;
    const Vmtree__State__Events__Smi *smi = m->smi;

    if (!irq || !nmi || !smi)
        return vmt_proto_missing(where, !irq ? "interrupt" : !nmi ? "nmi" : "smi");
    VMT_PROTO_TAKE_U8(e->interrupt.injected, irq->injected, where, "interrupt.injected");
    VMT_PROTO_TAKE_U8(e->interrupt.nr, irq->nr, where, "interrupt.nr");
    VMT_PROTO_TAKE_U8(e->interrupt.soft, irq->soft, where, "interrupt.soft");
    VMT_PROTO_TAKE_U8(e->interrupt.shadow, irq->shadow, where, "interrupt.shadow");
    VMT_PROTO_TAKE_U8(e->nmi.injected, nmi->injected, where, "nmi.injected");
    VMT_PROTO_TAKE_U8(e->nmi.pending, nmi->pending, where, "nmi.pending");
    VMT_PROTO_TAKE_U8(e->nmi.masked, nmi->masked, where, "nmi.masked");
    VMT_PROTO_TAKE_U8(e->smi.smm, smi->smm, where, "smi.smm");
    VMT_PROTO_TAKE_U8(e->smi.pending, smi->pending, where, "smi.pending");
    VMT_PROTO_TAKE_U8(e->smi.smm_inside_nmi, smi->smm_inside_nmi, where, "smi.smm_inside_nmi");
    VMT_PROTO_TAKE_U8(e->smi.latched_init, smi->latched_init, where, "smi.latched_init");
    return 0;
}

static int dec_events(const Vmtree__State__Events *m, struct kvm_vcpu_events *e, const char *vcpu)
{
    char where[WHERE_MAX], sub[SUB_MAX];
    int rc;

    if (!m)
        return vmt_proto_missing(vcpu, "events");
    snprintf(where, sizeof(where), "%s.events", vcpu);
    if (!m->exception)
        return vmt_proto_missing(where, "exception");
    snprintf(sub, sizeof(sub), "%s.exception", where);
    if ((rc = dec_exception(m->exception, e, sub)) != 0)
        return rc;
    if ((rc = dec_interrupts(m, e, where)) != 0)
        return rc;
    e->sipi_vector = m->sipi_vector;
    e->flags = m->flags;
    VMT_PROTO_TAKE_U8(e->triple_fault.pending, m->triple_fault_pending, where,
                      "triple_fault_pending");
    return 0;
}

static int dec_debugregs(const Vmtree__State__DebugRegs *m, struct kvm_debugregs *d,
                         const char *vcpu)
{
    if (!m)
        return vmt_proto_missing(vcpu, "debugregs");
    if (m->n_db != VMT_PROTO_DEBUG_DB)
        return vmt_proto_bad_count(vcpu, "debugregs.db", m->n_db, VMT_PROTO_DEBUG_DB);
    for (unsigned i = 0; i < VMT_PROTO_DEBUG_DB; i++)
        d->db[i] = m->db[i];
    d->dr6 = m->dr6;
    d->dr7 = m->dr7;
    d->flags = m->flags;
    return 0;
}

/* The hardware-format areas: LAPIC page, XSAVE area, MSR list. */
static int dec_areas(const Vmtree__State__VcpuState *m, vmt_vcpu_state *st, const char *vcpu)
{
    if (m->lapic.len != 0 && m->lapic.len != sizeof(st->lapic))
        return vmt_error_set(VMT_ECORRUPT, "state blob: %s.lapic is %zu bytes, expected 0 or %zu",
                             vcpu, m->lapic.len, sizeof(st->lapic));
    if (m->lapic.len) {
        memcpy(st->lapic.regs, m->lapic.data, sizeof(st->lapic));
        st->has_lapic = 1;
    }
    if (m->xsave.len > VMT_XSAVE_MAX)
        return vmt_proto_too_wide(vcpu, "xsave (bytes)", m->xsave.len, VMT_XSAVE_MAX);
    if (m->xsave.len)
        memcpy(st->xsave, m->xsave.data, m->xsave.len);
    st->xsave_size = (uint32_t)m->xsave.len;
    if (m->n_msrs > VMT_MAX_MSRS)
        return vmt_proto_too_wide(vcpu, "msrs (count)", m->n_msrs, VMT_MAX_MSRS);
    for (size_t i = 0; i < m->n_msrs; i++) {
        if (!m->msrs[i])
            return vmt_proto_missing(vcpu, "msrs[]");
        st->msrs[i].index = m->msrs[i]->index;
        st->msrs[i].data = m->msrs[i]->value;
    }
    st->nr_msrs = (uint32_t)m->n_msrs;
    return 0;
}

int vmt_proto_vcpu_from_msg(const Vmtree__State__VcpuState *m, unsigned idx, vmt_vcpu_state *st)
{
    char vcpu[VCPU_MAX];
    int rc;

    memset(st, 0, sizeof(*st));
    snprintf(vcpu, sizeof(vcpu), "vcpus[%u]", idx);
    if (!m)
        return vmt_error_set(VMT_ECORRUPT, "state blob: %s is missing", vcpu);
    if (m->index != idx)
        return vmt_error_set(VMT_ECORRUPT, "state blob: %s.index is %u", vcpu, m->index);
    if (!m->regs)
        return vmt_proto_missing(vcpu, "regs");
#define X(f) st->regs.f = m->regs->f;
    VMT_PROTO_REGS(X)
#undef X
    if ((rc = dec_sregs(m->sregs, &st->sregs, vcpu)) != 0 ||
        (rc = dec_xcrs(m->xcrs, &st->xcrs, vcpu)) != 0 ||
        (rc = dec_events(m->events, &st->events, vcpu)) != 0 ||
        (rc = dec_debugregs(m->debugregs, &st->debugregs, vcpu)) != 0)
        return rc;
    st->mp_state.mp_state = m->mp_state;
    return dec_areas(m, st, vcpu);
}
