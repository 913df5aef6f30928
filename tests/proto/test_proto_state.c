/*
 * proto/: the state blob through the public API — exact round trips of
 * states whose every carried byte is non-zero, input checks of the encoder,
 * truncated and damaged blobs, and the human summary.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "vmtree/proto.h"

/* ---- deterministic filling ------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Every byte 1..255, so every field holds a non-zero value. */
static void fill_nonzero(void *p, size_t n)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(next_rand() % 255 + 1);
}

typedef struct span {
    size_t off, size;
} span;

#define MEMBER(type, m)                                                                            \
    {                                                                                              \
        offsetof(type, m), sizeof(((type *)0)->m)                                                  \
    }

/* Zeroes the compiler's padding: every byte of `total` not covered by the
 * members listed (in layout order). */
static void zero_gaps(void *base, size_t total, const span *m, size_t n)
{
    uint8_t *b = base;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i].off > at)
            memset(b + at, 0, m[i].off - at);
        at = m[i].off + m[i].size;
    }
    if (total > at)
        memset(b + at, 0, total - at);
}

/* Bytes of a struct kvm_irqchip beyond the chip it holds are not carried. */
static void trim_chip(struct kvm_irqchip *c, uint32_t id, size_t used)
{
    c->chip_id = id;
    c->pad = 0;
    memset((uint8_t *)&c->chip + used, 0, sizeof(c->chip) - used);
}

static void fill_vm(vmt_vm_state *vm, unsigned nvcpus, int irqchip)
{
    static const span members[] = {
        MEMBER(vmt_vm_state, mem_size),    MEMBER(vmt_vm_state, nr_vcpus),
        MEMBER(vmt_vm_state, has_irqchip), MEMBER(vmt_vm_state, clock),
        MEMBER(vmt_vm_state, serial),      MEMBER(vmt_vm_state, pic_master),
        MEMBER(vmt_vm_state, pic_slave),   MEMBER(vmt_vm_state, ioapic),
        MEMBER(vmt_vm_state, pit),
    };
    fill_nonzero(vm, sizeof(*vm));
    zero_gaps(vm, sizeof(*vm), members, VMT_ARRAY_SIZE(members));
    vm->mem_size = (next_rand() % (VMT_VM_MAX_MEM / VMT_PAGE_SIZE) + 1) * VMT_PAGE_SIZE;
    vm->nr_vcpus = nvcpus;
    vm->has_irqchip = irqchip ? 1 : 0;
    vm->clock.pad0 = 0;
    memset(vm->clock.pad, 0, sizeof(vm->clock.pad));
    trim_chip(&vm->pic_master, KVM_IRQCHIP_PIC_MASTER, sizeof(struct kvm_pic_state));
    trim_chip(&vm->pic_slave, KVM_IRQCHIP_PIC_SLAVE, sizeof(struct kvm_pic_state));
    trim_chip(&vm->ioapic, KVM_IRQCHIP_IOAPIC, sizeof(struct kvm_ioapic_state));
    vm->ioapic.chip.ioapic.pad = 0;
    memset(vm->pit.reserved, 0, sizeof(vm->pit.reserved));
    if (!irqchip) {
        memset(&vm->pic_master, 0, sizeof(vm->pic_master));
        memset(&vm->pic_slave, 0, sizeof(vm->pic_slave));
        memset(&vm->ioapic, 0, sizeof(vm->ioapic));
        memset(&vm->pit, 0, sizeof(vm->pit));
    }
}

static void trim_sregs(struct kvm_sregs *s)
{
    struct kvm_segment *segs[] = {&s->cs, &s->ds, &s->es, &s->fs, &s->gs, &s->ss, &s->tr, &s->ldt};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(segs); i++)
        segs[i]->padding = 0;
    memset(s->gdt.padding, 0, sizeof(s->gdt.padding));
    memset(s->idt.padding, 0, sizeof(s->idt.padding));
}

static void fill_vcpu(vmt_vcpu_state *st, uint32_t xsave_size, uint32_t nr_msrs, uint32_t nr_xcrs)
{
    static const span members[] = {
        MEMBER(vmt_vcpu_state, regs),       MEMBER(vmt_vcpu_state, sregs),
        MEMBER(vmt_vcpu_state, xcrs),       MEMBER(vmt_vcpu_state, events),
        MEMBER(vmt_vcpu_state, mp_state),   MEMBER(vmt_vcpu_state, debugregs),
        MEMBER(vmt_vcpu_state, lapic),      MEMBER(vmt_vcpu_state, has_lapic),
        MEMBER(vmt_vcpu_state, xsave_size), MEMBER(vmt_vcpu_state, xsave),
        MEMBER(vmt_vcpu_state, nr_msrs),    MEMBER(vmt_vcpu_state, pad),
        MEMBER(vmt_vcpu_state, msrs),
    };
    fill_nonzero(st, sizeof(*st));
    zero_gaps(st, sizeof(*st), members, VMT_ARRAY_SIZE(members));
    trim_sregs(&st->sregs);
    st->xcrs.nr_xcrs = nr_xcrs;
    for (unsigned i = 0; i < KVM_MAX_XCRS; i++) {
        st->xcrs.xcrs[i].reserved = 0;
        if (i >= nr_xcrs)
            memset(&st->xcrs.xcrs[i], 0, sizeof(st->xcrs.xcrs[i]));
    }
    memset(st->xcrs.padding, 0, sizeof(st->xcrs.padding));
    st->events.nmi.pad = 0;
    memset(st->events.reserved, 0, sizeof(st->events.reserved));
    memset(st->debugregs.reserved, 0, sizeof(st->debugregs.reserved));
    st->has_lapic = 1;
    st->xsave_size = xsave_size;
    memset(st->xsave + xsave_size, 0, sizeof(st->xsave) - xsave_size);
    st->nr_msrs = nr_msrs;
    for (unsigned i = 0; i < VMT_MAX_MSRS; i++) {
        st->msrs[i].pad = 0;
        if (i >= nr_msrs)
            memset(&st->msrs[i], 0, sizeof(st->msrs[i]));
    }
    st->pad = 0;
}

/* ---- helpers ---------------------------------------------------------- */

typedef struct state_set {
    vmt_vm_state vm;
    unsigned n;
    vmt_vcpu_state *vcpus;
} state_set;

static state_set *state_new(unsigned n)
{
    state_set *s = calloc(1, sizeof(*s));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    s->n = n;
    s->vcpus = calloc(n ? n : 1, sizeof(*s->vcpus));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->vcpus);
    return s;
}

static void state_free(state_set *s)
{
    if (s) {
        free(s->vcpus);
        free(s);
    }
}

static state_set *state_full(unsigned n, int irqchip, uint32_t xsave, uint32_t msrs)
{
    state_set *s = state_new(n);
    fill_vm(&s->vm, n, irqchip);
    for (unsigned i = 0; i < n; i++)
        fill_vcpu(&s->vcpus[i], xsave, msrs, KVM_MAX_XCRS);
    return s;
}

/* memcmp that names the first differing byte offset on failure. */
static int same_bytes(const char *what, const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) {
            fprintf(stderr, "\n  %s differs at byte %zu: %02x != %02x\n", what, i, x[i], y[i]);
            return 0;
        }
    }
    return 1;
}

/* Encodes `s`, decodes into fresh garbage-filled structs, compares exactly,
 * and checks that re-encoding gives the same bytes. */
static void check_round_trip(const state_set *s)
{
    uint8_t *blob = NULL, *again = NULL;
    size_t len = 0, len2 = 0;
    unsigned n = 0;

    CU_ASSERT_EQUAL_FATAL(vmt_state_encode(&s->vm, s->vcpus, s->n, &blob, &len), 0);
    CU_ASSERT_TRUE(len > 0 && len <= VMT_STATE_MAX_BYTES);
    state_set *d = state_new(s->n);
    memset(&d->vm, 0xa5, sizeof(d->vm));
    memset(d->vcpus, 0x5a, s->n * sizeof(*d->vcpus));
    int rc = vmt_state_decode(blob, len, &d->vm, d->vcpus, s->n, &n);
    if (rc)
        fprintf(stderr, "\n  decode: %s\n", vmt_error_last());
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(n, s->n);
    CU_ASSERT_TRUE(same_bytes("vm state", &s->vm, &d->vm, sizeof(s->vm)));
    for (unsigned i = 0; i < s->n; i++)
        CU_ASSERT_TRUE(same_bytes("vcpu state", &s->vcpus[i], &d->vcpus[i], sizeof(s->vcpus[i])));
    CU_ASSERT_EQUAL_FATAL(vmt_state_encode(&d->vm, d->vcpus, n, &again, &len2), 0);
    CU_ASSERT_TRUE(len2 == len && memcmp(blob, again, len) == 0);
    free(again);
    free(blob);
    state_free(d);
}

/* ---- round trips ------------------------------------------------------ */

static void full_state_round_trips_exactly(void)
{
    state_set *s = state_full(3, 1, VMT_XSAVE_MAX, VMT_MAX_MSRS);
    /* The filling really is non-zero where it matters. */
    CU_ASSERT_NOT_EQUAL(s->vcpus[2].regs.r15, 0);
    CU_ASSERT_NOT_EQUAL(s->vcpus[1].sregs.ldt.unusable, 0);
    CU_ASSERT_NOT_EQUAL(s->vcpus[0].events.triple_fault.pending, 0);
    CU_ASSERT_NOT_EQUAL(s->vm.pit.channels[2].count_load_time, 0);
    CU_ASSERT_NOT_EQUAL(s->vm.ioapic.chip.ioapic.redirtbl[23].bits, 0);
    CU_ASSERT_NOT_EQUAL(s->vm.serial.fcr, 0);
    check_round_trip(s);
    state_free(s);
}

static void largest_state_round_trips(void)
{
    state_set *s = state_full(VMT_VM_MAX_VCPUS, 1, VMT_XSAVE_MAX, VMT_MAX_MSRS);
    check_round_trip(s);
    state_free(s);
}

static void minimal_state_round_trips(void)
{
    state_set *s = state_new(1);
    s->vm.mem_size = VMT_VM_MIN_MEM;
    s->vm.nr_vcpus = 1;
    check_round_trip(s);
    /* Partial areas: some xsave bytes, a few MSRs, no LAPIC, no irqchip. */
    state_set *p = state_full(2, 0, 4096, 7);
    p->vcpus[1].has_lapic = 0;
    memset(&p->vcpus[1].lapic, 0, sizeof(p->vcpus[1].lapic));
    p->vcpus[0].xcrs.nr_xcrs = 1;
    memset(&p->vcpus[0].xcrs.xcrs[1], 0, sizeof(p->vcpus[0].xcrs.xcrs) - sizeof(struct kvm_xcr));
    check_round_trip(p);
    state_free(p);
    state_free(s);
}

static void each_field_change_survives(void)
{
    /* A single changed register must show up after a round trip (guards
     * against a decoder that returns a cached or constant state). */
    state_set *s = state_full(1, 1, 64, 2);
    uint8_t *blob = NULL;
    size_t len = 0;
    unsigned n = 0;
    vmt_vm_state vm;
    vmt_vcpu_state *out = calloc(1, sizeof(*out));
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);

    s->vcpus[0].regs.rip = 0xffffffff81000000ull;
    s->vcpus[0].sregs.cs.l = 1;
    s->vcpus[0].msrs[1].data = 0x1234;
    CU_ASSERT_EQUAL_FATAL(vmt_state_encode(&s->vm, s->vcpus, 1, &blob, &len), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_state_decode(blob, len, &vm, out, 1, &n), 0);
    CU_ASSERT_EQUAL(out->regs.rip, 0xffffffff81000000ull);
    CU_ASSERT_EQUAL(out->sregs.cs.l, 1);
    CU_ASSERT_EQUAL(out->msrs[1].data, 0x1234);
    CU_ASSERT_EQUAL(vm.pic_master.chip_id, KVM_IRQCHIP_PIC_MASTER);
    CU_ASSERT_EQUAL(vm.ioapic.chip_id, KVM_IRQCHIP_IOAPIC);
    free(blob);
    free(out);
    state_free(s);
}

/* ---- encoder input checks --------------------------------------------- */

static void encoder_refuses_bad_counts(void)
{
    state_set *s = state_full(2, 1, 128, 4);
    uint8_t *blob = NULL;
    size_t len = 0;

    CU_ASSERT_EQUAL(vmt_state_encode(&s->vm, s->vcpus, 0, &blob, &len), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_state_encode(&s->vm, s->vcpus, 1, &blob, &len), VMT_EINVAL);
    s->vcpus[1].xsave_size = VMT_XSAVE_MAX + 1;
    CU_ASSERT_EQUAL(vmt_state_encode(&s->vm, s->vcpus, 2, &blob, &len), VMT_EINVAL);
    s->vcpus[1].xsave_size = 128;
    s->vcpus[0].nr_msrs = VMT_MAX_MSRS + 1;
    CU_ASSERT_EQUAL(vmt_state_encode(&s->vm, s->vcpus, 2, &blob, &len), VMT_EINVAL);
    s->vcpus[0].nr_msrs = 4;
    s->vcpus[0].xcrs.nr_xcrs = KVM_MAX_XCRS + 1;
    CU_ASSERT_EQUAL(vmt_state_encode(&s->vm, s->vcpus, 2, &blob, &len), VMT_EINVAL);
    s->vcpus[0].xcrs.nr_xcrs = 1;
    s->vm.mem_size = VMT_VM_MAX_MEM + VMT_PAGE_SIZE;
    CU_ASSERT_EQUAL(vmt_state_encode(&s->vm, s->vcpus, 2, &blob, &len), VMT_EINVAL);
    s->vm.mem_size = VMT_VM_MIN_MEM;
    CU_ASSERT_EQUAL(vmt_state_encode(NULL, s->vcpus, 2, &blob, &len), VMT_EINVAL);
    CU_ASSERT_PTR_NULL(blob);
    CU_ASSERT_EQUAL(vmt_state_encode(&s->vm, s->vcpus, 2, &blob, &len), 0);
    free(blob);
    state_free(s);
}

/* ---- damaged input ---------------------------------------------------- */

static uint8_t *small_blob(size_t *len)
{
    state_set *s = state_full(2, 1, 512, 8);
    uint8_t *blob = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_state_encode(&s->vm, s->vcpus, 2, &blob, len), 0);
    state_free(s);
    return blob;
}

static void every_truncation_is_corrupt(void)
{
    size_t len = 0;
    uint8_t *blob = small_blob(&len);
    vmt_vm_state vm;
    vmt_vcpu_state *vcpus = calloc(2, sizeof(*vcpus));
    unsigned n = 0, bad = 0;
    CU_ASSERT_PTR_NOT_NULL_FATAL(vcpus);

    for (size_t cut = 0; cut < len; cut++) {
        /* A copy of exactly `cut` bytes, so ASan sees any over-read. */
        uint8_t *p = malloc(cut ? cut : 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        memcpy(p, blob, cut);
        int rc = vmt_state_decode(p, cut, &vm, vcpus, 2, &n);
        if (rc != VMT_ECORRUPT) {
            if (bad++ < 5)
                fprintf(stderr, "\n  cut at %zu of %zu: rc %d (%s)\n", cut, len, rc,
                        vmt_error_last());
        }
        free(p);
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(vmt_state_decode(blob, len, &vm, vcpus, 2, &n), 0);
    free(vcpus);
    free(blob);
}

static void damaged_bytes_fail_cleanly(void)
{
    size_t len = 0;
    uint8_t *blob = small_blob(&len);
    vmt_vm_state vm;
    vmt_vcpu_state *vcpus = calloc(2, sizeof(*vcpus));
    unsigned n = 0, odd = 0, refused = 0;
    static const uint8_t flips[] = {0xff, 0x80, 0x01};
    CU_ASSERT_PTR_NOT_NULL_FATAL(vcpus);

    for (size_t i = 0; i < len; i++) {
        for (size_t f = 0; f < sizeof(flips); f++) {
            blob[i] ^= flips[f];
            int rc = vmt_state_decode(blob, len, &vm, vcpus, 2, &n);
            blob[i] ^= flips[f];
            if (rc == 0) {
                /* Whatever decodes must encode again. */
                uint8_t *again = NULL;
                size_t l2 = 0;
                if (vmt_state_encode(&vm, vcpus, n, &again, &l2) != 0)
                    odd++;
                free(again);
            } else if (rc == VMT_ECORRUPT || rc == VMT_EUNSUPPORTED || rc == VMT_ERANGE) {
                refused++;
            } else {
                odd++;
            }
        }
    }
    CU_ASSERT_EQUAL(odd, 0);
    CU_ASSERT_TRUE(refused > 0);
    free(vcpus);
    free(blob);
}

static void caller_array_too_small_is_range(void)
{
    size_t len = 0;
    uint8_t *blob = small_blob(&len);
    vmt_vm_state vm;
    vmt_vcpu_state *one = calloc(1, sizeof(*one));
    unsigned n = 0;
    CU_ASSERT_PTR_NOT_NULL_FATAL(one);

    CU_ASSERT_EQUAL(vmt_state_decode(blob, len, &vm, NULL, 0, &n), VMT_ERANGE);
    CU_ASSERT_EQUAL(n, 2);
    n = 0;
    CU_ASSERT_EQUAL(vmt_state_decode(blob, len, &vm, one, 1, &n), VMT_ERANGE);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(vmt_state_decode(NULL, len, &vm, one, 1, &n), VMT_EINVAL);
    free(one);
    free(blob);
}

static void oversized_blob_refused_before_parsing(void)
{
    size_t len = (size_t)VMT_STATE_MAX_BYTES + 1;
    uint8_t *big = calloc(1, len);
    vmt_vm_state vm;
    unsigned n = 0;
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);

    CU_ASSERT_EQUAL(vmt_state_decode(big, len, &vm, NULL, 0, &n), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "limit"));
    free(big);
}

/* ---- describe --------------------------------------------------------- */

static void describe_summarises_a_blob(void)
{
    size_t len = 0;
    uint8_t *blob = small_blob(&len);
    char *text = NULL;
    size_t tlen = 0;
    FILE *f = open_memstream(&text, &tlen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);

    CU_ASSERT_EQUAL(vmt_state_describe(blob, len, f), 0);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "format 1.0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "2 vCPUs"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "in-kernel irqchip: yes"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "vcpu 1:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "xsave 512 B"));
    free(text);

    f = open_memstream(&text, &tlen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(vmt_state_describe(blob, len / 2, f), VMT_ECORRUPT);
    fclose(f);
    CU_ASSERT_EQUAL(tlen, 0);
    free(text);
    free(blob);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"full_state_round_trips_exactly", full_state_round_trips_exactly},
        {"largest_state_round_trips", largest_state_round_trips},
        {"minimal_state_round_trips", minimal_state_round_trips},
        {"each_field_change_survives", each_field_change_survives},
        {"encoder_refuses_bad_counts", encoder_refuses_bad_counts},
        {"every_truncation_is_corrupt", every_truncation_is_corrupt},
        {"damaged_bytes_fail_cleanly", damaged_bytes_fail_cleanly},
        {"caller_array_too_small_is_range", caller_array_too_small_is_range},
        {"oversized_blob_refused_before_parsing", oversized_blob_refused_before_parsing},
        {"describe_summarises_a_blob", describe_summarises_a_blob},
        {NULL, NULL},
    };
    return vmt_test_run("proto_state", cases, NULL, NULL);
}
