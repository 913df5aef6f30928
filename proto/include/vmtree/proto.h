/*
 * vmtree proto: the versioned state blob (everything about a VM that is not
 * RAM) and, later, the migration wire messages.
 *
 * This module is the only one that sees protobuf-c: its public API speaks
 * the plain structs of hypervisor-glue (vmtree/vmm.h) and byte buffers.
 * The blob format and its versioning rules are in docs/state-format.md.
 *
 * Decoding treats its input as hostile: the blob size, every count and every
 * byte length is checked against a cap before it is used, and the protobuf
 * parser allocates through a byte budget (VMT_STATE_DECODE_BUDGET), so a
 * crafted blob can make it neither allocate without limit nor write past an
 * output struct.
 *
 * Thread-safety: every function is reentrant and keeps no state between
 * calls; different threads may encode and decode at the same time as long
 * as they do not share output buffers.
 */
#ifndef VMTREE_PROTO_H
#define VMTREE_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vmtree/util.h"
#include "vmtree/vmm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The format this code writes.  It reads every 1.x blob; see the rules in
 * docs/state-format.md. */
#define VMT_STATE_FORMAT_MAJOR 1u
#define VMT_STATE_FORMAT_MINOR 0u

/* Largest blob accepted or produced (bytes). */
#define VMT_STATE_MAX_BYTES (16u << 20)
/* Most memory the protobuf parser may allocate while decoding one blob. */
#define VMT_STATE_DECODE_BUDGET (64u << 20)
/* Caps on the header: mandatory features listed, bytes per feature name,
 * bytes of the informational writer string. */
#define VMT_STATE_MAX_FEATURES 16u
#define VMT_STATE_MAX_FEATURE_LEN 64u
#define VMT_STATE_MAX_WRITER_LEN 128u

/*
 * Serializes a VM's non-RAM state: `vm` and the `nvcpus` vCPU states
 * `vcpus[0..nvcpus)` (in vCPU index order; nvcpus must equal
 * vm->nr_vcpus and lie in 1..VMT_VM_MAX_VCPUS).  Only the meaningful part of
 * each struct is written: xsave[0..xsave_size), msrs[0..nr_msrs),
 * xcrs[0..nr_xcrs), the LAPIC page only when has_lapic, the irqchip and PIT
 * only when has_irqchip; padding and reserved words are not carried.
 *
 * On success *out is a new malloc'd buffer owned by the caller (free() it)
 * and *out_len its size (at most VMT_STATE_MAX_BYTES).  Inputs are borrowed
 * and not modified.  Errors: VMT_EINVAL (a count in the input is out of
 * range), VMT_ENOMEM.  Thread-safe (reentrant, no shared state).
 */
int vmt_state_encode(const vmt_vm_state *vm, const vmt_vcpu_state *vcpus, unsigned nvcpus,
                     uint8_t **out, size_t *out_len);

/*
 * Parses a blob made by vmt_state_encode (of any 1.x minor version) into
 * *vm and vcpus[0..*nvcpus).  `buf` is borrowed; nothing is kept after the
 * call.  Every output struct is fully written (padding, reserved words and
 * whatever the blob does not carry are zero), so decode-then-encode is
 * deterministic.
 *
 * Errors:
 *   VMT_EUNSUPPORTED  the blob has a newer major format version or lists a
 *                     mandatory feature this reader does not know; the
 *                     message names the version or the feature.
 *   VMT_ECORRUPT      the blob is malformed: bad protobuf, a missing part,
 *                     a count or length beyond its cap, a value too wide for
 *                     its register; the message names the field.
 *   VMT_ERANGE        the blob holds more vCPUs than max_vcpus; *nvcpus is
 *                     then set to the number it holds, so a caller may pass
 *                     vcpus = NULL and max_vcpus = 0 to learn it.
 *   VMT_EINVAL, VMT_ENOMEM.
 * On any error *vm and vcpus[] hold unspecified data.  Thread-safe
 * (reentrant; the outputs belong to the caller).
 */
int vmt_state_decode(const uint8_t *buf, size_t len, vmt_vm_state *vm, vmt_vcpu_state *vcpus,
                     unsigned max_vcpus, unsigned *nvcpus);

/*
 * Decodes `buf` (borrowed) and prints a short human summary to `out`
 * (format version and writer, VM size and devices, per vCPU the mode, RIP,
 * RSP, control registers and sizes of the hardware areas).  Used by
 * `vmtree show`.  Returns what vmt_state_decode returns, or VMT_EIO when
 * writing to `out` fails; prints nothing when decoding fails.  Thread-safe
 * as far as stdio is (concurrent writers to one FILE interleave lines).
 */
int vmt_state_describe(const uint8_t *buf, size_t len, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
