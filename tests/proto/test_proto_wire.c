/*
 * proto/: state blobs built byte by byte, independently of protobuf-c, from
 * the format in docs/state-format.md.  A baseline blob must decode; each
 * test then changes one thing (version, a mandatory feature, a length, a
 * count, a value) and checks the decoder's verdict and message.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "vmtree/proto.h"

/* ---- a minimal protobuf writer ---------------------------------------- */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2 };

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf;

static void put(wbuf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        CU_ASSERT_PTR_NOT_NULL_FATAL(b->p);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_varint(wbuf *b, uint64_t v)
{
    uint8_t c;
    do {
        c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            c |= 0x80;
        put(b, &c, 1);
    } while (v);
}

static void put_tag(wbuf *b, unsigned field, unsigned wt)
{
    put_varint(b, (uint64_t)field << 3 | wt);
}

static void put_uint(wbuf *b, unsigned field, uint64_t v)
{
    put_tag(b, field, WT_VARINT);
    put_varint(b, v);
}

static void put_bytes(wbuf *b, unsigned field, const void *data, size_t n)
{
    put_tag(b, field, WT_LEN);
    put_varint(b, n);
    put(b, data, n);
}

/* Appends `inner` as a length-delimited field and frees it. */
static void put_msg(wbuf *b, unsigned field, wbuf *inner)
{
    put_bytes(b, field, inner->p, inner->len);
    free(inner->p);
    memset(inner, 0, sizeof(*inner));
}

static void put_empty_msg(wbuf *b, unsigned field)
{
    put_bytes(b, field, NULL, 0);
}

/* A packed repeated fixed64 field of n words (values i + 1). */
static void put_packed_fixed64(wbuf *b, unsigned field, unsigned n)
{
    wbuf in = {0};
    for (unsigned i = 0; i < n; i++) {
        uint64_t v = i + 1; /* little-endian on x86 */
        put(&in, &v, 8);
    }
    put_msg(b, field, &in);
}

/* ---- blob builder ----------------------------------------------------- */

typedef struct blob_opts {
    uint32_t major, minor;
    const char *features[20];
    unsigned nfeatures;
    bool no_header, no_sregs, irqchip, unknown_fields;
    unsigned nvcpus;      /* VcpuState messages */
    unsigned nr_vcpus;    /* VmState.nr_vcpus */
    unsigned first_index; /* VcpuState.index of the first vCPU */
    size_t xsave, lapic;  /* byte lengths */
    size_t nmsrs, nxcrs;
    unsigned nbitmap, nredir, npit;
    uint64_t cs_type;
    uint64_t mem_size;
} blob_opts;

static blob_opts defaults(void)
{
    blob_opts o = {0};
    o.major = 1;
    o.nvcpus = o.nr_vcpus = 1;
    o.nbitmap = 4;
    o.nredir = 24;
    o.npit = 3;
    o.cs_type = 11;
    o.mem_size = 2u << 20;
    return o;
}

static void build_sregs(wbuf *v, const blob_opts *o)
{
    wbuf s = {0}, seg = {0};
    for (unsigned f = 1; f <= 8; f++) { /* cs ds es fs gs ss tr ldt */
        put_uint(&seg, 2, 0xffffffffu); /* limit */
        put_uint(&seg, 4, f == 1 ? o->cs_type : 3);
        put_uint(&seg, 5, 1); /* present */
        put_msg(&s, f, &seg);
    }
    put_empty_msg(&s, 9);  /* gdt */
    put_empty_msg(&s, 10); /* idt */
    put_uint(&s, 11, 0x80000011);
    put_packed_fixed64(&s, 18, o->nbitmap);
    put_msg(v, 3, &s);
}

static void build_events(wbuf *v)
{
    wbuf e = {0};
    put_empty_msg(&e, 1); /* exception */
    put_empty_msg(&e, 2); /* interrupt */
    put_empty_msg(&e, 3); /* nmi */
    put_empty_msg(&e, 6); /* smi */
    put_msg(v, 5, &e);
}

static void build_vcpu(wbuf *st, const blob_opts *o, unsigned idx)
{
    wbuf v = {0}, x = {0}, d = {0}, in = {0};
    put_uint(&v, 1, idx);
    put_uint(&in, 17, 0x100000 + idx); /* regs.rip */
    put_msg(&v, 2, &in);
    if (!o->no_sregs)
        build_sregs(&v, o);
    for (size_t i = 0; i < o->nxcrs; i++)
        put_empty_msg(&x, 2);
    put_msg(&v, 4, &x);
    build_events(&v);
    for (unsigned i = 0; i < 4; i++) /* debugregs.db, packed varints */
        put_varint(&in, i);
    put_msg(&d, 1, &in);
    put_msg(&v, 7, &d);
    uint8_t *area = calloc(1, VMT_XSAVE_MAX + 2048);
    CU_ASSERT_PTR_NOT_NULL_FATAL(area);
    if (o->lapic)
        put_bytes(&v, 8, area, o->lapic);
    if (o->xsave)
        put_bytes(&v, 9, area, o->xsave);
    free(area);
    for (size_t i = 0; i < o->nmsrs; i++)
        put_empty_msg(&v, 10);
    if (o->unknown_fields)
        put_uint(&v, 15, 42);
    put_msg(st, 6, &v);
}

static void build_irqchip(wbuf *st, const blob_opts *o)
{
    wbuf c = {0}, io = {0}, pit = {0};
    put_empty_msg(&c, 1);
    put_empty_msg(&c, 2);
    put_packed_fixed64(&io, 5, o->nredir);
    put_msg(&c, 3, &io);
    for (unsigned i = 0; i < o->npit; i++)
        put_empty_msg(&pit, 1);
    put_msg(&c, 4, &pit);
    put_msg(st, 5, &c);
}

static uint8_t *build(const blob_opts *o, size_t *len)
{
    wbuf blob = {0}, h = {0}, st = {0};
    if (!o->no_header) {
        put_uint(&h, 1, o->major);
        put_uint(&h, 2, o->minor);
        for (unsigned i = 0; i < o->nfeatures; i++)
            put_bytes(&h, 3, o->features[i], strlen(o->features[i]));
        put_bytes(&h, 4, "wire-test", 9);
        put_msg(&blob, 1, &h);
    }
    put_uint(&st, 1, o->mem_size);
    put_uint(&st, 2, o->nr_vcpus);
    put_empty_msg(&st, 3); /* clock */
    put_empty_msg(&st, 4); /* serial */
    if (o->irqchip)
        build_irqchip(&st, o);
    for (unsigned i = 0; i < o->nvcpus; i++)
        build_vcpu(&st, o, o->first_index + i);
    if (o->unknown_fields)
        put_bytes(&st, 40, "future", 6);
    put_msg(&blob, 2, &st);
    *len = blob.len;
    return blob.p;
}

/* Builds and decodes `o`; returns the decoder's result. */
static int decode_opts(const blob_opts *o, vmt_vm_state *vm_out, vmt_vcpu_state *vcpu0_out)
{
    size_t len = 0;
    uint8_t *blob = build(o, &len);
    vmt_vm_state vm;
    vmt_vcpu_state *vcpus = calloc(VMT_VM_MAX_VCPUS, sizeof(*vcpus));
    unsigned n = 0;
    CU_ASSERT_PTR_NOT_NULL_FATAL(vcpus);

    int rc = vmt_state_decode(blob, len, &vm, vcpus, VMT_VM_MAX_VCPUS, &n);
    if (rc == 0 && vm_out)
        *vm_out = vm;
    if (rc == 0 && vcpu0_out)
        *vcpu0_out = vcpus[0];
    free(vcpus);
    free(blob);
    return rc;
}

static bool msg_has(const char *needle)
{
    if (strstr(vmt_error_last(), needle))
        return true;
    fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", vmt_error_last(), needle);
    return false;
}

/* ---- tests ------------------------------------------------------------ */

static void hand_built_blob_decodes(void)
{
    blob_opts o = defaults();
    vmt_vm_state vm;
    vmt_vcpu_state *v = calloc(1, sizeof(*v));
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);

    CU_ASSERT_EQUAL_FATAL(decode_opts(&o, &vm, v), 0);
    CU_ASSERT_EQUAL(vm.mem_size, 2u << 20);
    CU_ASSERT_EQUAL(vm.nr_vcpus, 1);
    CU_ASSERT_EQUAL(vm.has_irqchip, 0);
    CU_ASSERT_EQUAL(v->regs.rip, 0x100000);
    CU_ASSERT_EQUAL(v->sregs.cs.type, 11);
    CU_ASSERT_EQUAL(v->sregs.cr0, 0x80000011);
    CU_ASSERT_EQUAL(v->sregs.interrupt_bitmap[3], 4);
    CU_ASSERT_EQUAL(v->debugregs.db[3], 3);
    CU_ASSERT_EQUAL(v->has_lapic, 0);

    o.irqchip = true;
    o.nvcpus = o.nr_vcpus = 3;
    o.xsave = 4096;
    o.lapic = sizeof(struct kvm_lapic_state);
    o.nmsrs = 5;
    o.nxcrs = 1;
    CU_ASSERT_EQUAL_FATAL(decode_opts(&o, &vm, v), 0);
    CU_ASSERT_EQUAL(vm.has_irqchip, 1);
    CU_ASSERT_EQUAL(vm.ioapic.chip_id, KVM_IRQCHIP_IOAPIC);
    CU_ASSERT_EQUAL(vm.ioapic.chip.ioapic.redirtbl[23].bits, 24);
    CU_ASSERT_EQUAL(v->has_lapic, 1);
    CU_ASSERT_EQUAL(v->xsave_size, 4096);
    CU_ASSERT_EQUAL(v->nr_msrs, 5);
    CU_ASSERT_EQUAL(v->xcrs.nr_xcrs, 1);
    free(v);
}

static void newer_major_version_refused(void)
{
    blob_opts o = defaults();
    o.major = VMT_STATE_FORMAT_MAJOR + 1;
    o.minor = 3;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_EUNSUPPORTED);
    CU_ASSERT_TRUE(msg_has("2.3"));
    CU_ASSERT_TRUE(msg_has("newer"));
    /* Refused for its version even when its state means nothing here. */
    o.no_sregs = true;
    o.nbitmap = 1;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_EUNSUPPORTED);
}

static void newer_minor_with_unknown_fields_accepted(void)
{
    blob_opts o = defaults();
    o.minor = VMT_STATE_FORMAT_MINOR + 7;
    o.unknown_fields = true;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), 0);
}

static void missing_or_zero_version_corrupt(void)
{
    blob_opts o = defaults();
    o.no_header = true;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("header"));
    o = defaults();
    o.major = 0;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("major"));
}

static void unknown_mandatory_feature_refused(void)
{
    blob_opts o = defaults();
    o.features[0] = "frobnicated-xsave-v9";
    o.nfeatures = 1;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_EUNSUPPORTED);
    CU_ASSERT_TRUE(msg_has("\"frobnicated-xsave-v9\""));
    /* Names are shown sanitised. */
    o.features[0] = "evil\n\x1b[2J";
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_EUNSUPPORTED);
    CU_ASSERT_TRUE(msg_has("\"evil??[2J\""));
}

static void malformed_feature_lists_corrupt(void)
{
    static char longname[VMT_STATE_MAX_FEATURE_LEN + 2];
    blob_opts o = defaults();

    memset(longname, 'a', VMT_STATE_MAX_FEATURE_LEN + 1);
    o.features[0] = longname;
    o.nfeatures = 1;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    o.features[0] = "";
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    o.nfeatures = VMT_STATE_MAX_FEATURES + 1;
    for (unsigned i = 0; i < o.nfeatures; i++)
        o.features[i] = "x";
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("mandatory_features"));
}

static void area_lengths_capped(void)
{
    blob_opts o = defaults();
    o.xsave = VMT_XSAVE_MAX;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), 0);
    o.xsave = VMT_XSAVE_MAX + 1;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("vcpus[0].xsave"));

    o = defaults();
    o.lapic = sizeof(struct kvm_lapic_state) - 1;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("lapic"));
    o.lapic = sizeof(struct kvm_lapic_state) + 1;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
}

static void counts_capped(void)
{
    blob_opts o = defaults();
    o.nmsrs = VMT_MAX_MSRS;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), 0);
    o.nmsrs = VMT_MAX_MSRS + 1;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("msrs"));

    o = defaults();
    o.nxcrs = KVM_MAX_XCRS;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), 0);
    o.nxcrs = KVM_MAX_XCRS + 1;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("xcrs"));
}

static void too_many_vcpus_refused(void)
{
    blob_opts o = defaults();
    o.nvcpus = o.nr_vcpus = VMT_VM_MAX_VCPUS;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), 0);
    o.nvcpus = o.nr_vcpus = VMT_VM_MAX_VCPUS + 1;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("vcpus"));
    o.nvcpus = o.nr_vcpus = 0;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    o.nvcpus = 2;
    o.nr_vcpus = 3;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("nr_vcpus"));
    o.nr_vcpus = 2;
    o.first_index = 1;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("index"));
}

static void narrow_fields_range_checked(void)
{
    blob_opts o = defaults();
    o.cs_type = 255;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), 0);
    o.cs_type = 256;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("vcpus[0].sregs.cs.type"));
    o = defaults();
    o.mem_size = VMT_VM_MAX_MEM + VMT_PAGE_SIZE;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("mem_size"));
}

static void fixed_counts_and_parts_enforced(void)
{
    blob_opts o = defaults();
    o.nbitmap = 3;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("interrupt_bitmap"));
    o = defaults();
    o.irqchip = true;
    o.nredir = 23;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("redirtbl"));
    o.nredir = 24;
    o.npit = 4;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("channels"));
    o = defaults();
    o.no_sregs = true;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("vcpus[0].sregs is missing"));
}

static void hostile_counts_hit_the_memory_budget(void)
{
    /* 2 M empty MSR messages: 4 MiB on the wire, far more once parsed. */
    blob_opts o = defaults();
    o.nmsrs = 2u << 20;
    CU_ASSERT_EQUAL(decode_opts(&o, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_TRUE(msg_has("memory"));
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"hand_built_blob_decodes", hand_built_blob_decodes},
        {"newer_major_version_refused", newer_major_version_refused},
        {"newer_minor_with_unknown_fields_accepted", newer_minor_with_unknown_fields_accepted},
        {"missing_or_zero_version_corrupt", missing_or_zero_version_corrupt},
        {"unknown_mandatory_feature_refused", unknown_mandatory_feature_refused},
        {"malformed_feature_lists_corrupt", malformed_feature_lists_corrupt},
        {"area_lengths_capped", area_lengths_capped},
        {"counts_capped", counts_capped},
        {"too_many_vcpus_refused", too_many_vcpus_refused},
        {"narrow_fields_range_checked", narrow_fields_range_checked},
        {"fixed_counts_and_parts_enforced", fixed_counts_and_parts_enforced},
        {"hostile_counts_hit_the_memory_budget", hostile_counts_hit_the_memory_budget},
        {NULL, NULL},
    };
    return vmt_test_run("proto_state_wire", cases, NULL, NULL);
}
