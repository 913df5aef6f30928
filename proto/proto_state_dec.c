/*
 * State blob decoder: bytes -> header check -> VmState -> plain structs.
 *
 * Order matters for versioning: the frame (StateBlobHead) is parsed with
 * the state left as bytes, the header is checked (major version, mandatory
 * features), and only then is the state parsed with this reader's schema.
 * So a blob of a newer major version is refused as unsupported even when
 * its state would not parse here.
 */
#include "proto_internal.h"

#include <string.h>

/*
 * Mandatory features this reader implements.  Format 1.0 defines none; a
 * name is added here together with the code that honours it.
 */
static const char *const known_features[] = {NULL};

static bool feature_known(const char *name)
{
    for (const char *const *k = known_features; *k; k++)
        if (strcmp(*k, name) == 0)
            return true;
    return false;
}

static int check_features(const Vmtree__State__Header *h)
{
    char shown[VMT_STATE_MAX_FEATURE_LEN + 1];

    if (h->n_mandatory_features > VMT_STATE_MAX_FEATURES)
        return vmt_proto_too_wide("header", "mandatory_features (count)", h->n_mandatory_features,
                                  VMT_STATE_MAX_FEATURES);
    for (size_t i = 0; i < h->n_mandatory_features; i++) {
        const char *f = h->mandatory_features[i];
        size_t flen = f ? strlen(f) : 0;

        if (flen == 0 || flen > VMT_STATE_MAX_FEATURE_LEN)
            return vmt_error_set(VMT_ECORRUPT,
                                 "state blob: header.mandatory_features[%zu] has %zu bytes "
                                 "(1..%u allowed)",
                                 i, flen, VMT_STATE_MAX_FEATURE_LEN);
        if (!feature_known(f)) {
            vmt_proto_printable(shown, sizeof(shown), f, flen);
            return vmt_error_set(VMT_EUNSUPPORTED,
                                 "state blob requires feature \"%s\", unknown to this reader "
                                 "(format %u.%u)",
                                 shown, VMT_STATE_FORMAT_MAJOR, VMT_STATE_FORMAT_MINOR);
        }
    }
    return 0;
}

static int check_header(const Vmtree__State__Header *h, vmt_proto_header_info *info)
{
    if (!h)
        return vmt_error_set(VMT_ECORRUPT, "state blob: header is missing");
    if (h->major == 0)
        return vmt_error_set(VMT_ECORRUPT, "state blob: header.major is 0 (no format version)");
    if (h->major > VMT_STATE_FORMAT_MAJOR)
        return vmt_error_set(VMT_EUNSUPPORTED,
                             "state blob format %u.%u is newer than this reader (%u.%u); "
                             "a newer vmtree is needed",
                             h->major, h->minor, VMT_STATE_FORMAT_MAJOR, VMT_STATE_FORMAT_MINOR);
    if (h->major != VMT_STATE_FORMAT_MAJOR)
        return vmt_error_set(VMT_EUNSUPPORTED, "state blob format %u.%u is no longer supported",
                             h->major, h->minor);
    size_t wlen = h->writer ? strlen(h->writer) : 0;
    if (wlen > VMT_STATE_MAX_WRITER_LEN)
        return vmt_proto_too_wide("header", "writer (bytes)", wlen, VMT_STATE_MAX_WRITER_LEN);
    int rc = check_features(h);
    if (rc)
        return rc;
    if (info) {
        info->major = h->major;
        info->minor = h->minor;
        vmt_proto_printable(info->writer, sizeof(info->writer), h->writer ? h->writer : "", wlen);
    }
    return 0;
}

static int dec_pic(const Vmtree__State__Pic *m, struct kvm_irqchip *chip, uint32_t id,
                   const char *where)
{
    chip->chip_id = id;
#define X(f) VMT_PROTO_TAKE_U8(chip->chip.pic.f, m->f, where, #f);
    VMT_PROTO_PIC(X)
#undef X
    return 0;
}

static int dec_ioapic(const Vmtree__State__Ioapic *m, struct kvm_irqchip *chip)
{
    struct kvm_ioapic_state *io = &chip->chip.ioapic;

    if (!m)
        return vmt_proto_missing("state.irqchip", "ioapic");
    if (m->n_redirtbl != KVM_IOAPIC_NUM_PINS)
        return vmt_proto_bad_count("state.irqchip.ioapic", "redirtbl", m->n_redirtbl,
                                   KVM_IOAPIC_NUM_PINS);
    chip->chip_id = KVM_IRQCHIP_IOAPIC;
    io->base_address = m->base_address;
    io->ioregsel = m->ioregsel;
    io->id = m->id;
    io->irr = m->irr;
    for (unsigned i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
        io->redirtbl[i].bits = m->redirtbl[i];
    return 0;
}

static int dec_pit_channel(const Vmtree__State__PitChannel *m, struct kvm_pit_channel_state *c)
{
    const char *where = "state.irqchip.pit.channels[]";

    if (!m)
        return vmt_proto_missing("state.irqchip.pit", "channels[]");
    c->count = m->count;
    VMT_PROTO_TAKE_U16(c->latched_count, m->latched_count, where, "latched_count");
#define X(f) VMT_PROTO_TAKE_U8(c->f, m->f, where, #f);
    VMT_PROTO_PIT_U8(X)
#undef X
    c->count_load_time = m->count_load_time;
    return 0;
}

static int dec_pit(const Vmtree__State__Pit *m, struct kvm_pit_state2 *pit)
{
    if (!m)
        return vmt_proto_missing("state.irqchip", "pit");
    if (m->n_channels != VMT_PROTO_PIT_CHANNELS)
        return vmt_proto_bad_count("state.irqchip.pit", "channels", m->n_channels,
                                   VMT_PROTO_PIT_CHANNELS);
    for (unsigned i = 0; i < VMT_PROTO_PIT_CHANNELS; i++) {
        int rc = dec_pit_channel(m->channels[i], &pit->channels[i]);
        if (rc)
            return rc;
    }
    pit->flags = m->flags;
    return 0;
}

static int dec_irqchip(const Vmtree__State__Irqchip *m, vmt_vm_state *vm)
{
    int rc;

    if (!m)
        return 0; /* no in-kernel irqchip: everything stays zero */
    vm->has_irqchip = 1;
    if (!m->pic_master || !m->pic_slave)
        return vmt_proto_missing("state.irqchip", !m->pic_master ? "pic_master" : "pic_slave");
    if ((rc = dec_pic(m->pic_master, &vm->pic_master, KVM_IRQCHIP_PIC_MASTER,
                      "state.irqchip.pic_master")) != 0 ||
        (rc = dec_pic(m->pic_slave, &vm->pic_slave, KVM_IRQCHIP_PIC_SLAVE,
                      "state.irqchip.pic_slave")) != 0 ||
        (rc = dec_ioapic(m->ioapic, &vm->ioapic)) != 0)
        return rc;
    return dec_pit(m->pit, &vm->pit);
}

static int dec_vm_devices(const Vmtree__State__VmState *m, vmt_vm_state *vm)
{
    if (m->mem_size > VMT_VM_MAX_MEM || m->mem_size % VMT_PAGE_SIZE != 0)
        return vmt_error_set(VMT_ECORRUPT, "state blob: state.mem_size = %llu is not a valid size",
                             (unsigned long long)m->mem_size);
    vm->mem_size = m->mem_size;
    if (!m->clock)
        return vmt_proto_missing("state", "clock");
    vm->clock.clock = m->clock->clock;
    vm->clock.flags = m->clock->flags;
    vm->clock.realtime = m->clock->realtime;
    vm->clock.host_tsc = m->clock->host_tsc;
    if (!m->serial)
        return vmt_proto_missing("state", "serial");
#define X(f) VMT_PROTO_TAKE_U8(vm->serial.f, m->serial->f, "state.serial", #f);
    VMT_PROTO_SERIAL(X)
#undef X
    return dec_irqchip(m->irqchip, vm);
}

static int dec_vm(const Vmtree__State__VmState *m, vmt_vm_state *vm, vmt_vcpu_state *vcpus,
                  unsigned max_vcpus, unsigned *nvcpus)
{
    size_t n = m->n_vcpus;

    memset(vm, 0, sizeof(*vm));
    if (n == 0 || n > VMT_VM_MAX_VCPUS)
        return vmt_error_set(VMT_ECORRUPT, "state blob: state.vcpus has %zu entries (1..%u)", n,
                             VMT_VM_MAX_VCPUS);
    if (m->nr_vcpus != n)
        return vmt_error_set(VMT_ECORRUPT, "state blob: state.nr_vcpus is %u but %zu are stored",
                             m->nr_vcpus, n);
    *nvcpus = (unsigned)n;
    if (n > max_vcpus)
        return vmt_error_set(VMT_ERANGE, "state blob holds %zu vCPUs, room for %u", n, max_vcpus);
    vm->nr_vcpus = (uint32_t)n;
    int rc = dec_vm_devices(m, vm);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = vmt_proto_vcpu_from_msg(m->vcpus[i], (unsigned)i, &vcpus[i]);
    return rc;
}

static int dec_state(const ProtobufCBinaryData *body, vmt_pb_budget *b, vmt_vm_state *vm,
                     vmt_vcpu_state *vcpus, unsigned max_vcpus, unsigned *nvcpus)
{
    if (body->len == 0)
        return vmt_error_set(VMT_ECORRUPT, "state blob: state is missing");
    Vmtree__State__VmState *m = vmtree__state__vm_state__unpack(&b->pb, body->len, body->data);
    if (!m)
        return vmt_proto_unpack_error(b, "state");
    int rc = dec_vm(m, vm, vcpus, max_vcpus, nvcpus);
    vmtree__state__vm_state__free_unpacked(m, &b->pb);
    return rc;
}

int vmt_proto_state_decode(const uint8_t *buf, size_t len, vmt_vm_state *vm, vmt_vcpu_state *vcpus,
                           unsigned max_vcpus, unsigned *nvcpus, vmt_proto_header_info *hdr)
{
    vmt_pb_budget b;

    if (!buf || !vm || !nvcpus || (!vcpus && max_vcpus))
        return vmt_error_set(VMT_EINVAL, "state decode: NULL argument");
    *nvcpus = 0;
    if (len == 0)
        return vmt_error_set(VMT_ECORRUPT, "state blob is empty");
    if (len > VMT_STATE_MAX_BYTES)
        return vmt_error_set(VMT_ECORRUPT, "state blob of %zu bytes exceeds the %u-byte limit", len,
                             VMT_STATE_MAX_BYTES);
    vmt_proto_budget_init(&b, VMT_STATE_DECODE_BUDGET);
    Vmtree__State__StateBlobHead *head = vmtree__state__state_blob_head__unpack(&b.pb, len, buf);
    if (!head)
        return vmt_proto_unpack_error(&b, "frame");
    int rc = check_header(head->header, hdr);
    if (rc == 0)
        rc = dec_state(&head->state, &b, vm, vcpus, max_vcpus, nvcpus);
    vmtree__state__state_blob_head__free_unpacked(head, &b.pb);
    return rc;
}

int vmt_state_decode(const uint8_t *buf, size_t len, vmt_vm_state *vm, vmt_vcpu_state *vcpus,
                     unsigned max_vcpus, unsigned *nvcpus)
{
    return vmt_proto_state_decode(buf, len, vm, vcpus, max_vcpus, nvcpus, NULL);
}
