/*
 * vmtree proto: the versioned state blob (everything about a VM that is not
 * RAM), the snapshot record and, later, the migration wire messages.
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

#include <stdbool.h>
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

/* ---- snapshot records -------------------------------------------------- */

/*
 * The snapshot record (proto/snapshot.proto, docs/snapshot.md): what names a
 * snapshot in the page store.  snapshot/ wraps these as vmt_snap_record_*;
 * ids are carried here as plain 16-byte arrays so that proto/ needs nothing
 * of dedup/.
 */
#define VMT_SNAPREC_FORMAT_MAJOR 1u
#define VMT_SNAPREC_FORMAT_MINOR 0u
/* Largest record accepted or produced (bytes), and the parser's budget. */
#define VMT_SNAPREC_MAX_BYTES (64u << 10)
#define VMT_SNAPREC_DECODE_BUDGET (1u << 20)
#define VMT_SNAPREC_ID_LEN 16u
#define VMT_SNAPREC_MAX_PARENTS 2u
/* Sizes of the text fields below, each including the terminating NUL. */
#define VMT_SNAPREC_NAME_MAX 64u
#define VMT_SNAPREC_MESSAGE_MAX 4096u
#define VMT_SNAPREC_PATH_MAX 1024u

/* A snapshot record as plain data.  Text fields are NUL-terminated. */
typedef struct vmt_snaprec {
    uint32_t nparents;                                      /* 0..VMT_SNAPREC_MAX_PARENTS */
    uint8_t parents[VMT_SNAPREC_MAX_PARENTS][VMT_SNAPREC_ID_LEN];
    uint8_t map_root[VMT_SNAPREC_ID_LEN];
    uint8_t state[VMT_SNAPREC_ID_LEN];
    uint64_t mem_size;                                      /* > 0, multiple of 4096 */
    uint32_t vcpus;                                         /* 1..VMT_VM_MAX_VCPUS */
    bool irqchip;
    char image[VMT_SNAPREC_PATH_MAX];
    char cmdline[VMT_BOOT_CMDLINE_MAX];
    char vm_name[VMT_SNAPREC_NAME_MAX];                     /* "" or [A-Za-z0-9._-]+ */
    char message[VMT_SNAPREC_MESSAGE_MAX];
    uint64_t time_ns;
    uint64_t nonzero_pages;                                 /* <= mem_size / 4096 */
} vmt_snaprec;

/*
 * Serializes *r.  Deterministic: equal records give equal bytes (the
 * snapshot id is their hash).  On success *out is a new malloc'd buffer
 * owned by the caller and *out_len its size.  Errors: VMT_EINVAL (a field
 * out of range, a text field not NUL-terminated, a bad VM name),
 * VMT_ENOMEM.  Thread-safe.
 */
int vmt_snaprec_encode(const vmt_snaprec *r, uint8_t **out, size_t *out_len);

/*
 * Parses a record of any 1.x minor version into *r (fully overwritten,
 * unused bytes zero).  `buf` is borrowed.  Errors: VMT_EUNSUPPORTED (a newer
 * major version, an unknown mandatory feature), VMT_ECORRUPT (malformed,
 * a length beyond its cap, a value out of range), VMT_EINVAL, VMT_ENOMEM.
 * Thread-safe.
 */
int vmt_snaprec_decode(const uint8_t *buf, size_t len, vmt_snaprec *r);

/* ---- migration wire messages (proto/wire.proto) ------------------------ */

/*
 * The control messages of the migration protocol (docs/wire-protocol.md) as
 * plain structs.  migrate/net frames them: the frame's type field is the
 * vmt_wire_type below, its payload the bytes these functions produce.  Page
 * batches (VMT_WIRE_PAGE_BATCH) are not protobuf and are coded in
 * migrate/net, not here.
 */
#define VMT_WIRE_SESSION_ID_LEN 16u
#define VMT_WIRE_NONCE_LEN 32u
#define VMT_WIRE_MAC_LEN 32u
/* Sizes of text fields, each including the terminating NUL. */
#define VMT_WIRE_TEXT_MAX 256u  /* software, Ack/Error messages */
#define VMT_WIRE_IMAGE_MAX 1024u
#define VMT_WIRE_NAME_MAX 64u
/* Feature names in a Hello/HelloAck, and bytes per name. */
#define VMT_WIRE_MAX_FEATURES 32u
#define VMT_WIRE_FEATURE_LEN 32u
/* Bytes of HaveSet.data in one chunk, pfns in one Want. */
#define VMT_WIRE_HAVESET_MAX_BYTES (8u << 20)
#define VMT_WIRE_WANT_MAX 65536u
/* Largest encoded control message of any type (a StateBlob of
 * VMT_STATE_MAX_BYTES plus its field header). */
#define VMT_WIRE_MSG_MAX (VMT_STATE_MAX_BYTES + 64u)

/* Frame types.  1..31 are protobuf control messages; 32 is the binary page
 * batch.  Numbers are never reused. */
typedef enum vmt_wire_type {
    VMT_WIRE_HELLO = 1,
    VMT_WIRE_HELLO_ACK = 2,
    VMT_WIRE_AUTH_CHALLENGE = 3,
    VMT_WIRE_AUTH_RESPONSE = 4,
    VMT_WIRE_VM_CONFIG = 5,
    VMT_WIRE_HAVE_SET = 6,
    VMT_WIRE_ROUND_START = 7,
    VMT_WIRE_ROUND_END = 8,
    VMT_WIRE_STATE_BLOB = 9,
    VMT_WIRE_COMMIT = 10,
    VMT_WIRE_ACK = 11,
    VMT_WIRE_ERROR = 12,
    VMT_WIRE_WANT = 13,
    VMT_WIRE_PREPARED = 14, /* u.ack (resumed false): complete, not running */
    VMT_WIRE_GO = 15,       /* u.commit: resume it (two-phase completion) */
    VMT_WIRE_QUERY = 16,    /* u.query: the outcome of an earlier session (answer: ACK) */
    VMT_WIRE_PAGE_BATCH = 32,
} vmt_wire_type;

/* Optional features, offered in Hello and agreed in HelloAck as names;
 * these bits are the names this build knows ("xbzrle", "lz4", "zstd",
 * "haveset", "want").  Unknown names are ignored (features are optional by
 * definition; what is mandatory comes with a protocol version). */
#define VMT_WIRE_FEAT_XBZRLE (1u << 0)
#define VMT_WIRE_FEAT_LZ4 (1u << 1)
#define VMT_WIRE_FEAT_ZSTD (1u << 2)
#define VMT_WIRE_FEAT_HAVESET (1u << 3)
#define VMT_WIRE_FEAT_WANT (1u << 4)
#define VMT_WIRE_FEAT_ALL 0x1fu

/* HelloAck.auth */
#define VMT_WIRE_AUTH_NONE 0u
#define VMT_WIRE_AUTH_PSK 1u

typedef struct vmt_wire_hello {
    uint32_t min_version, max_version;
    uint32_t features; /* VMT_WIRE_FEAT_* */
    uint8_t session_id[VMT_WIRE_SESSION_ID_LEN];
    uint32_t stream_index, nstreams;
    uint8_t nonce[VMT_WIRE_NONCE_LEN];
    char software[VMT_WIRE_TEXT_MAX];
} vmt_wire_hello;

typedef struct vmt_wire_hello_ack {
    uint32_t version;
    uint32_t features;
    uint32_t auth; /* VMT_WIRE_AUTH_* */
} vmt_wire_hello_ack;

typedef struct vmt_wire_vm_config {
    uint64_t mem_size; /* > 0, multiple of 4096, <= VMT_VM_MAX_MEM */
    uint32_t vcpus;    /* 1..VMT_VM_MAX_VCPUS */
    bool irqchip;
    char image[VMT_WIRE_IMAGE_MAX];
    char vm_name[VMT_WIRE_NAME_MAX];
    uint64_t npages; /* = mem_size / 4096 */
    bool has_base;   /* base: the snapshot the VM runs from (its HEAD id) */
    uint8_t base[16];
} vmt_wire_vm_config;

/* A chunk of the destination's id set (coded in migrate/net/haveset.c). */
typedef struct vmt_wire_have_set {
    uint64_t count, total, first;
    uint32_t prefix_bits, rice_bits;
    bool last;
    uint8_t *data; /* decode: owned by the message; encode: borrowed */
    size_t len;    /* <= VMT_WIRE_HAVESET_MAX_BYTES */
} vmt_wire_have_set;

typedef struct vmt_wire_round_end {
    uint32_t round;
    uint64_t pages, bytes, batches, ns, dirty_pages;
} vmt_wire_round_end;

typedef struct vmt_wire_want {
    uint32_t round;
    uint64_t *pfns; /* decode: owned by the message; encode: borrowed */
    size_t n;       /* <= VMT_WIRE_WANT_MAX */
} vmt_wire_want;

/* One control message: `type` says which member of `u` is meaningful. */
typedef struct vmt_wire_msg {
    vmt_wire_type type;
    union {
        vmt_wire_hello hello;
        vmt_wire_hello_ack hello_ack;
        struct {
            uint8_t nonce[VMT_WIRE_NONCE_LEN];
        } auth_challenge;
        struct {
            uint8_t mac[VMT_WIRE_MAC_LEN];
        } auth_response;
        vmt_wire_vm_config vm_config;
        vmt_wire_have_set have_set;
        struct {
            uint32_t round;
            uint64_t pages;
        } round_start;
        vmt_wire_round_end round_end;
        struct {
            uint8_t *data; /* decode: owned by the message; encode: borrowed */
            size_t len;    /* <= VMT_STATE_MAX_BYTES */
        } state_blob;
        struct {
            uint64_t pages, bytes;
        } commit;
        struct {
            bool resumed;
            char message[VMT_WIRE_TEXT_MAX];
        } ack;
        struct {
            int32_t code; /* a VMT_E* code, negative */
            char message[VMT_WIRE_TEXT_MAX];
        } error;
        vmt_wire_want want;
        struct {
            uint8_t session_id[VMT_WIRE_SESSION_ID_LEN];
        } query;
    } u;
} vmt_wire_msg;

/* "HELLO", "PAGE_BATCH", ...; "UNKNOWN" for other values.  Thread-safe. */
const char *vmt_wire_type_name(unsigned type);

/* The largest payload a frame of `type` may carry: the cap checked before a
 * payload is read.  0 for types proto/ does not know (the page batch's cap
 * is migrate/net's).  Thread-safe. */
size_t vmt_wire_max_len(unsigned type);

/*
 * Serializes the control message `m` (m->type in 1..16).  Pointers inside
 * *m are borrowed.  On success *out is a new malloc'd buffer owned by the
 * caller and *out_len its size (<= vmt_wire_max_len(m->type)).  Errors:
 * VMT_EINVAL (unknown type, a count, length or text beyond its cap, a text
 * not NUL-terminated), VMT_ENOMEM.  Thread-safe.
 */
int vmt_wire_encode(const vmt_wire_msg *m, uint8_t **out, size_t *out_len);

/*
 * Parses the payload of a frame of `type` into *m (fully overwritten).  The
 * input is hostile: its size, every length, count and value is checked
 * against its cap, and the parser allocates through a byte budget.  On
 * success the arrays of *m (have_set.data, state_blob.data, want.pfns) are
 * owned by *m: release them with vmt_wire_msg_clear.  Texts are
 * NUL-terminated and printable ASCII (others become '?').  On failure *m
 * holds nothing to free.  Errors: VMT_EPROTO (type unknown or not a
 * control message), VMT_ECORRUPT (malformed, beyond a cap; the message
 * names the field), VMT_ENOMEM.  Thread-safe.
 */
int vmt_wire_decode(unsigned type, const uint8_t *buf, size_t len, vmt_wire_msg *m);

/* Frees what vmt_wire_decode allocated in *m and zeroes it.  Only for
 * decoded messages (never for one whose pointers the caller set).  NULL ok. */
void vmt_wire_msg_clear(vmt_wire_msg *m);


/* ==== golden image messages (proto/golden.proto) ========================
 * [golden block: issue 7]  The messages of `vmtree serve/push/pull`
 * (docs/golden.md).  They ride on a migrate/net session (its frames,
 * version negotiation and authentication); frame types 40..63 belong to
 * this protocol.  Same conventions as the wire messages above: hostile
 * input, every length capped before use, parser allocation through a
 * budget.  Thread-safe (reentrant).
 */
#define VMT_GOLDEN_ID_LEN 16u
/* Snapshots in one Snaps message (a snapshot and its ancestors). */
#define VMT_GOLDEN_MAX_SNAPS 4096u
/* Ids in one Want, and objects in one Objects message. */
#define VMT_GOLDEN_WANT_MAX 4096u
/* Largest object content (= the store's VMT_STORE_OBJECT_MAX). */
#define VMT_GOLDEN_OBJECT_MAX (16u << 20)
/* Largest Objects payload: one object of VMT_GOLDEN_OBJECT_MAX stored raw
 * plus its fields fits (senders split the rest into smaller messages);
 * equal to migrate/net's absolute frame cap. */
#define VMT_GOLDEN_OBJECTS_MAX_LEN ((16u << 20) + 4096u)
/* Size of the text fields (request name, done message) with their NUL. */
#define VMT_GOLDEN_TEXT_MAX 256u

typedef enum vmt_golden_type {
    VMT_GOLDEN_REQUEST = 40,
    VMT_GOLDEN_SNAPS = 41,
    VMT_GOLDEN_WANT = 42,
    VMT_GOLDEN_OBJECTS = 43,
    VMT_GOLDEN_DONE = 44,
} vmt_golden_type;
#define VMT_GOLDEN_TYPE_FIRST 40u
#define VMT_GOLDEN_TYPE_LAST 63u

/* Request.op */
#define VMT_GOLDEN_OP_PULL 1u
#define VMT_GOLDEN_OP_PUSH 2u
/* Request.max_ancestors: every ancestor still in the provider's store. */
#define VMT_GOLDEN_ALL_ANCESTORS UINT32_MAX
/* Object.codec */
#define VMT_GOLDEN_CODEC_RAW 0u
#define VMT_GOLDEN_CODEC_LZ4 1u

/* One object of an Objects message.  Decode: data points into the decoded
 * message (valid until vmt_golden_msg_clear); encode: borrowed. */
typedef struct vmt_golden_object {
    uint8_t id[VMT_GOLDEN_ID_LEN];
    uint32_t type;    /* 1..4 (dedup's vmt_obj_type); a page has raw_len 4096 */
    uint32_t codec;   /* VMT_GOLDEN_CODEC_* */
    uint32_t raw_len; /* 1..VMT_GOLDEN_OBJECT_MAX */
    const uint8_t *data;
    size_t len;       /* raw: raw_len; LZ4: 1..raw_len */
} vmt_golden_object;

typedef struct vmt_golden_msg {
    vmt_golden_type type;
    union {
        struct {
            uint32_t op;                   /* VMT_GOLDEN_OP_* */
            char name[VMT_GOLDEN_TEXT_MAX];
            uint32_t max_ancestors;
        } request;
        struct {
            uint8_t (*ids)[VMT_GOLDEN_ID_LEN]; /* decode: owned; encode: borrowed */
            size_t n;                          /* 1..VMT_GOLDEN_MAX_SNAPS */
        } snaps;
        struct {
            uint64_t seq;
            uint8_t (*ids)[VMT_GOLDEN_ID_LEN]; /* decode: owned; encode: borrowed */
            size_t n;                          /* 1..VMT_GOLDEN_WANT_MAX */
        } want;
        struct {
            uint64_t seq;
            vmt_golden_object *objs; /* decode: owned; encode: borrowed */
            size_t n;                /* 0..VMT_GOLDEN_WANT_MAX */
            bool last;
        } objects;
        struct {
            int32_t code; /* 0 or a VMT_E* code (unknown codes read as VMT_ERR) */
            char message[VMT_GOLDEN_TEXT_MAX];
            bool has_snapshot;
            uint8_t snapshot[VMT_GOLDEN_ID_LEN];
            uint64_t objects, bytes;
        } done;
    } u;
    void *priv; /* decode: the parsed message the pointers above point into */
} vmt_golden_msg;

/* "GOLDEN_REQUEST", ...; NULL for types that are not golden messages. */
const char *vmt_golden_type_name(unsigned type);

/* The payload cap of a golden frame type; 0 for other types. */
size_t vmt_golden_max_len(unsigned type);

/* Serializes *m (pointers borrowed) into a new malloc'd buffer (*out,
 * caller frees).  Errors: VMT_EINVAL (unknown type, a count, length or
 * value out of range, a text not NUL-terminated), VMT_ENOMEM. */
int vmt_golden_encode(const vmt_golden_msg *m, uint8_t **out, size_t *out_len);

/* Parses the payload of a golden frame of `type` into *m (release with
 * vmt_golden_msg_clear, also after a failure).  Every id, count, length,
 * type and codec is checked; texts become printable ASCII.  `buf` is only
 * read during the call.  Errors: VMT_EPROTO (not a golden type),
 * VMT_ECORRUPT (malformed or beyond a cap; the message names the field),
 * VMT_ENOMEM. */
int vmt_golden_decode(unsigned type, const uint8_t *buf, size_t len, vmt_golden_msg *m);

/* Frees what vmt_golden_decode allocated and zeroes *m.  NULL is fine. */
void vmt_golden_msg_clear(vmt_golden_msg *m);
/* ==== end of golden block ================================================ */

#ifdef __cplusplus
}
#endif
#endif
