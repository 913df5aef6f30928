/*
 * Internals of proto/: the protobuf-c allocator with a byte budget, the
 * decoder entry point shared with describe, and field lists shared by the
 * encoder and the decoder.  Never installed, never included outside proto/
 * (the generated vmstate.pb-c.h is reachable only from here).
 */
#ifndef VMTREE_PROTO_INTERNAL_H
#define VMTREE_PROTO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmstate.pb-c.h"
#include "vmtree/proto.h"

/*
 * A ProtobufCAllocator that refuses to hand out more than `limit` bytes in
 * total (headers included), so unpacking a hostile blob is bounded.  One
 * per decode call, on the caller's stack: not shared between threads.
 */
typedef struct vmt_pb_budget {
    ProtobufCAllocator pb; /* pass &budget.pb to protobuf-c */
    size_t used;
    size_t limit;
    bool over; /* a request was refused because of the budget */
    bool oom;  /* malloc itself failed */
} vmt_pb_budget;

void vmt_proto_budget_init(vmt_pb_budget *b, size_t limit);

/*
 * Turns a failed protobuf-c unpack of `what` into an error code and message:
 * VMT_ENOMEM when malloc failed, VMT_ECORRUPT otherwise (malformed wire data,
 * or a blob needing more memory than the budget, which no valid blob does).
 */
int vmt_proto_unpack_error(const vmt_pb_budget *b, const char *what);

/*
 * Error helpers for the decoders; each sets a VMT_ECORRUPT message naming
 * the field as "<where>.<field>" and returns VMT_ECORRUPT.
 */
int vmt_proto_too_wide(const char *where, const char *field, uint64_t v, uint64_t max);
int vmt_proto_missing(const char *where, const char *field);
int vmt_proto_bad_count(const char *where, const char *field, size_t n, size_t want);

/* dst = src after checking src <= max (a narrower C field); else returns
 * VMT_ECORRUPT from the enclosing function. */
#define VMT_PROTO_TAKE(dst, src, max, where, name)                                                 \
    do {                                                                                           \
        if ((uint64_t)(src) > (uint64_t)(max))                                                     \
            return vmt_proto_too_wide((where), (name), (uint64_t)(src), (uint64_t)(max));          \
        (dst) = (src);                                                                             \
    } while (0)
#define VMT_PROTO_TAKE_U8(dst, src, where, name) VMT_PROTO_TAKE(dst, src, UINT8_MAX, where, name)
#define VMT_PROTO_TAKE_U16(dst, src, where, name) VMT_PROTO_TAKE(dst, src, UINT16_MAX, where, name)

/* What the header of a decoded blob said (for describe). */
typedef struct vmt_proto_header_info {
    uint32_t major;
    uint32_t minor;
    char writer[VMT_STATE_MAX_WRITER_LEN + 1]; /* printable ASCII only */
} vmt_proto_header_info;

/* vmt_state_decode that also returns the header (hdr may be NULL). */
int vmt_proto_state_decode(const uint8_t *buf, size_t len, vmt_vm_state *vm, vmt_vcpu_state *vcpus,
                           unsigned max_vcpus, unsigned *nvcpus, vmt_proto_header_info *hdr);

/* Decodes one vCPU message into *st (fully overwritten); `idx` names it in
 * error messages. */
int vmt_proto_vcpu_from_msg(const Vmtree__State__VcpuState *m, unsigned idx, vmt_vcpu_state *st);

/* Copies `s` (len bytes, not NUL-terminated) into dst[cap] keeping only
 * printable ASCII (others become '?'), truncating with "..." past cap-1. */
void vmt_proto_printable(char *dst, size_t cap, const char *s, size_t len);

/* clang-format off */
/*
 * Field lists whose names are the same in the kvm struct and the message,
 * used by both directions so that they cannot disagree.  X(name).
 */
#define VMT_PROTO_REGS(X)                                                                          \
    X(rax) X(rbx) X(rcx) X(rdx) X(rsi) X(rdi) X(rsp) X(rbp) X(r8) X(r9) X(r10) X(r11) X(r12)      \
    X(r13) X(r14) X(r15) X(rip) X(rflags)

/* 8-bit fields of struct kvm_segment. */
#define VMT_PROTO_SEGMENT_U8(X) X(type) X(present) X(dpl) X(db) X(s) X(l) X(g) X(avl) X(unusable)

/* 64-bit control registers of struct kvm_sregs. */
#define VMT_PROTO_SREGS_U64(X) X(cr0) X(cr2) X(cr3) X(cr4) X(cr8) X(efer) X(apic_base)

/* The segments of struct kvm_sregs. */
#define VMT_PROTO_SEGMENTS(X) X(cs) X(ds) X(es) X(fs) X(gs) X(ss) X(tr) X(ldt)

/* vmt_serial_state: all 8-bit. */
#define VMT_PROTO_SERIAL(X)                                                                        \
    X(ier) X(iir) X(lcr) X(mcr) X(lsr) X(msr) X(scr) X(dll) X(dlm) X(fcr)

/* struct kvm_pic_state: all 8-bit. */
#define VMT_PROTO_PIC(X)                                                                           \
    X(last_irr) X(irr) X(imr) X(isr) X(priority_add) X(irq_base) X(read_reg_select) X(poll)      \
    X(special_mask) X(init_state) X(auto_eoi) X(rotate_on_auto_eoi)                               \
    X(special_fully_nested_mode) X(init4) X(elcr) X(elcr_mask)

/* 8-bit fields of struct kvm_pit_channel_state. */
#define VMT_PROTO_PIT_U8(X)                                                                        \
    X(count_latched) X(status_latched) X(status) X(read_state) X(write_state) X(write_latch)      \
    X(rw_mode) X(mode) X(bcd) X(gate)

/* clang-format on */

/* Fixed counts of repeated fields that mirror C arrays. */
#define VMT_PROTO_BITMAP_WORDS 4u /* kvm_sregs.interrupt_bitmap */
#define VMT_PROTO_DEBUG_DB 4u     /* kvm_debugregs.db */
#define VMT_PROTO_PIT_CHANNELS 3u /* kvm_pit_state2.channels */

#endif
