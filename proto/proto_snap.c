/*
 * Snapshot record: vmt_snaprec <-> SnapshotRecordFile (proto/snapshot.proto).
 *
 * As for the state blob, the decoder parses the frame with the record left
 * as bytes, checks the header (major version, mandatory features), and only
 * then parses the record.  Every length is checked against its cap and the
 * parser allocates through a byte budget.
 */
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"
#include "snapshot.pb-c.h"

#ifndef VMT_PROTO_WRITER
#define VMT_PROTO_WRITER "vmtree"
#endif

#define WHERE "snapshot record"

/* Mandatory features this reader implements: format 1.0 defines none. */
static const char *const snap_features[] = {NULL};

static bool snap_feature_known(const char *name)
{
    for (const char *const *k = snap_features; *k; k++)
        if (strcmp(*k, name) == 0)
            return true;
    return false;
}

static bool name_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---- encode ------------------------------------------------------------- */

/* Length of a NUL-terminated field of `cap` bytes; VMT_EINVAL when unterminated. */
static int text_len(const char *s, size_t cap, const char *field, size_t *len)
{
    const char *nul = memchr(s, '\0', cap);
    if (!nul)
        return vmt_error_set(
            VMT_EINVAL, "snapshot record: %s is not NUL-terminated within %zu bytes", field, cap);
    *len = (size_t)(nul - s);
    return 0;
}

static int enc_check(const vmt_snaprec *r)
{
    if (r->nparents > VMT_SNAPREC_MAX_PARENTS)
        return vmt_error_set(VMT_EINVAL, "snapshot record: %u parents (at most %u)", r->nparents,
                             VMT_SNAPREC_MAX_PARENTS);
    if (r->mem_size == 0 || r->mem_size % VMT_PAGE_SIZE || r->mem_size > VMT_VM_MAX_MEM)
        return vmt_error_set(VMT_EINVAL, "snapshot record: memory size %llu is not valid",
                             (unsigned long long)r->mem_size);
    if (r->vcpus == 0 || r->vcpus > VMT_VM_MAX_VCPUS)
        return vmt_error_set(VMT_EINVAL, "snapshot record: %u vCPUs (1..%u)", r->vcpus,
                             VMT_VM_MAX_VCPUS);
    if (r->nonzero_pages > r->mem_size / VMT_PAGE_SIZE)
        return vmt_error_set(VMT_EINVAL, "snapshot record: %llu non-zero pages exceed the memory",
                             (unsigned long long)r->nonzero_pages);
    return 0;
}

/* The four text fields as protobuf bytes (pointing into *r). */
static int enc_texts(const vmt_snaprec *r, Vmtree__Snap__SnapshotRecord *m)
{
    const struct {
        const char *s;
        size_t cap;
        const char *name;
        ProtobufCBinaryData *dst;
    } f[] = {
        {r->image, sizeof(r->image), "image", &m->image},
        {r->cmdline, sizeof(r->cmdline), "cmdline", &m->cmdline},
        {r->vm_name, sizeof(r->vm_name), "vm_name", &m->vm_name},
        {r->message, sizeof(r->message), "message", &m->message},
    };
    for (size_t i = 0; i < VMT_ARRAY_SIZE(f); i++) {
        size_t len = 0;
        int rc = text_len(f[i].s, f[i].cap, f[i].name, &len);
        if (rc)
            return rc;
        /* protobuf-c only reads bytes while packing. */
        f[i].dst->data = (uint8_t *)(uintptr_t)f[i].s;
        f[i].dst->len = len;
    }
    if (!name_ok(r->vm_name, m->vm_name.len))
        return vmt_error_set(VMT_EINVAL,
                             "snapshot record: VM name \"%s\" has characters "
                             "outside [A-Za-z0-9._-]",
                             r->vm_name);
    return 0;
}

static int pack_file(const Vmtree__Snap__SnapshotRecordFile *f, uint8_t **out, size_t *out_len)
{
    size_t len = protobuf_c_message_get_packed_size(&f->base);
    if (len > VMT_SNAPREC_MAX_BYTES)
        return vmt_error_set(VMT_EINVAL, "snapshot record of %zu bytes exceeds %u", len,
                             VMT_SNAPREC_MAX_BYTES);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return vmt_error_set(VMT_ENOMEM, "snapshot record: out of memory");
    size_t packed = protobuf_c_message_pack(&f->base, buf);
    if (packed != len) {
        free(buf);
        return vmt_error_set(VMT_ERR, "snapshot record: packed %zu bytes, expected %zu", packed,
                             len);
    }
    *out = buf;
    *out_len = len;
    return 0;
}

int vmt_snaprec_encode(const vmt_snaprec *r, uint8_t **out, size_t *out_len)
{
    Vmtree__Snap__SnapshotRecordFile file;
    Vmtree__Snap__Header hdr;
    Vmtree__Snap__SnapshotRecord m;
    ProtobufCBinaryData parents[VMT_SNAPREC_MAX_PARENTS];

    if (!r || !out || !out_len)
        return vmt_error_set(VMT_EINVAL, "snapshot record encode: NULL argument");
    int rc = enc_check(r);
    if (rc)
        return rc;
    vmtree__snap__snapshot_record__init(&m);
    if ((rc = enc_texts(r, &m)) != 0)
        return rc;
    for (uint32_t i = 0; i < r->nparents; i++)
        parents[i] = (ProtobufCBinaryData){VMT_SNAPREC_ID_LEN, (uint8_t *)(uintptr_t)r->parents[i]};
    m.n_parents = r->nparents;
    m.parents = parents;
    m.map_root = (ProtobufCBinaryData){VMT_SNAPREC_ID_LEN, (uint8_t *)(uintptr_t)r->map_root};
    m.state = (ProtobufCBinaryData){VMT_SNAPREC_ID_LEN, (uint8_t *)(uintptr_t)r->state};
    m.mem_size = r->mem_size;
    m.vcpus = r->vcpus;
    m.irqchip = r->irqchip;
    m.time_ns = r->time_ns;
    m.nonzero_pages = r->nonzero_pages;
    vmtree__snap__header__init(&hdr);
    hdr.major = VMT_SNAPREC_FORMAT_MAJOR;
    hdr.minor = VMT_SNAPREC_FORMAT_MINOR;
    hdr.writer = (char *)VMT_PROTO_WRITER;
    vmtree__snap__snapshot_record_file__init(&file);
    file.header = &hdr;
    file.record = &m;
    return pack_file(&file, out, out_len);
}

/* ---- decode ------------------------------------------------------------- */

static int snap_unpack_error(const vmt_pb_budget *b, const char *what)
{
    if (b->oom)
        return vmt_error_set(VMT_ENOMEM, WHERE ": out of memory decoding %s", what);
    if (b->over)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": %s needs more than %zu bytes to decode", what,
                             b->limit);
    return vmt_error_set(VMT_ECORRUPT, WHERE ": %s is not valid protobuf (truncated or damaged)",
                         what);
}

static int check_snap_features(const Vmtree__Snap__Header *h)
{
    char shown[VMT_STATE_MAX_FEATURE_LEN + 1];

    if (h->n_mandatory_features > VMT_STATE_MAX_FEATURES)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": %zu mandatory features (at most %u)",
                             h->n_mandatory_features, VMT_STATE_MAX_FEATURES);
    for (size_t i = 0; i < h->n_mandatory_features; i++) {
        const char *f = h->mandatory_features[i];
        size_t flen = f ? strlen(f) : 0;
        if (flen == 0 || flen > VMT_STATE_MAX_FEATURE_LEN)
            return vmt_error_set(VMT_ECORRUPT, WHERE ": mandatory feature %zu has %zu bytes", i,
                                 flen);
        if (!snap_feature_known(f)) {
            vmt_proto_printable(shown, sizeof(shown), f, flen);
            return vmt_error_set(VMT_EUNSUPPORTED,
                                 WHERE " requires feature \"%s\", unknown to this reader "
                                       "(format %u.%u)",
                                 shown, VMT_SNAPREC_FORMAT_MAJOR, VMT_SNAPREC_FORMAT_MINOR);
        }
    }
    return 0;
}

static int check_snap_header(const Vmtree__Snap__Header *h)
{
    if (!h)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": header is missing");
    if (h->major == 0)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": header.major is 0 (no format version)");
    if (h->major > VMT_SNAPREC_FORMAT_MAJOR)
        return vmt_error_set(VMT_EUNSUPPORTED,
                             WHERE " format %u.%u is newer than this reader (%u.%u); "
                                   "a newer vmtree is needed",
                             h->major, h->minor, VMT_SNAPREC_FORMAT_MAJOR,
                             VMT_SNAPREC_FORMAT_MINOR);
    size_t wlen = h->writer ? strlen(h->writer) : 0;
    if (wlen > VMT_STATE_MAX_WRITER_LEN)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": writer of %zu bytes (at most %u)", wlen,
                             VMT_STATE_MAX_WRITER_LEN);
    return check_snap_features(h);
}

static int dec_id(const ProtobufCBinaryData *b, uint8_t *dst, const char *field)
{
    if (b->len != VMT_SNAPREC_ID_LEN)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": %s has %zu bytes, expected %u", field, b->len,
                             VMT_SNAPREC_ID_LEN);
    memcpy(dst, b->data, VMT_SNAPREC_ID_LEN);
    return 0;
}

static int dec_text(const ProtobufCBinaryData *b, char *dst, size_t cap, const char *field)
{
    if (b->len >= cap)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": %s has %zu bytes (at most %zu)", field, b->len,
                             cap - 1);
    if (b->len && memchr(b->data, '\0', b->len))
        return vmt_error_set(VMT_ECORRUPT, WHERE ": %s contains a NUL byte", field);
    if (b->len)
        memcpy(dst, b->data, b->len);
    dst[b->len] = '\0';
    return 0;
}

static int dec_values(const Vmtree__Snap__SnapshotRecord *m, vmt_snaprec *r)
{
    if (m->mem_size == 0 || m->mem_size % VMT_PAGE_SIZE || m->mem_size > VMT_VM_MAX_MEM)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": mem_size = %llu is not a valid size",
                             (unsigned long long)m->mem_size);
    if (m->vcpus == 0 || m->vcpus > VMT_VM_MAX_VCPUS)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": vcpus = %u (1..%u)", m->vcpus,
                             VMT_VM_MAX_VCPUS);
    if (m->nonzero_pages > m->mem_size / VMT_PAGE_SIZE)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": nonzero_pages = %llu exceeds the memory",
                             (unsigned long long)m->nonzero_pages);
    r->mem_size = m->mem_size;
    r->vcpus = m->vcpus;
    r->irqchip = m->irqchip;
    r->time_ns = m->time_ns;
    r->nonzero_pages = m->nonzero_pages;
    return 0;
}

static int dec_record(const Vmtree__Snap__SnapshotRecord *m, vmt_snaprec *r)
{
    int rc;

    if (m->n_parents > VMT_SNAPREC_MAX_PARENTS)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": %zu parents (at most %u)", m->n_parents,
                             VMT_SNAPREC_MAX_PARENTS);
    r->nparents = (uint32_t)m->n_parents;
    for (size_t i = 0; i < m->n_parents; i++)
        if ((rc = dec_id(&m->parents[i], r->parents[i], "parents[]")) != 0)
            return rc;
    if ((rc = dec_id(&m->map_root, r->map_root, "map_root")) != 0 ||
        (rc = dec_id(&m->state, r->state, "state")) != 0 || (rc = dec_values(m, r)) != 0 ||
        (rc = dec_text(&m->image, r->image, sizeof(r->image), "image")) != 0 ||
        (rc = dec_text(&m->cmdline, r->cmdline, sizeof(r->cmdline), "cmdline")) != 0 ||
        (rc = dec_text(&m->vm_name, r->vm_name, sizeof(r->vm_name), "vm_name")) != 0 ||
        (rc = dec_text(&m->message, r->message, sizeof(r->message), "message")) != 0)
        return rc;
    if (!name_ok(r->vm_name, m->vm_name.len))
        return vmt_error_set(VMT_ECORRUPT, WHERE ": vm_name has characters outside "
                                                 "[A-Za-z0-9._-]");
    return 0;
}

static int dec_body(const ProtobufCBinaryData *body, vmt_pb_budget *b, vmt_snaprec *r)
{
    if (body->len == 0)
        return vmt_error_set(VMT_ECORRUPT, WHERE ": record is missing");
    Vmtree__Snap__SnapshotRecord *m =
        vmtree__snap__snapshot_record__unpack(&b->pb, body->len, body->data);
    if (!m)
        return snap_unpack_error(b, "record");
    int rc = dec_record(m, r);
    vmtree__snap__snapshot_record__free_unpacked(m, &b->pb);
    return rc;
}

int vmt_snaprec_decode(const uint8_t *buf, size_t len, vmt_snaprec *r)
{
    vmt_pb_budget b;

    if (!r || (!buf && len))
        return vmt_error_set(VMT_EINVAL, "snapshot record decode: NULL argument");
    memset(r, 0, sizeof(*r));
    if (len == 0)
        return vmt_error_set(VMT_ECORRUPT, WHERE " is empty");
    if (len > VMT_SNAPREC_MAX_BYTES)
        return vmt_error_set(VMT_ECORRUPT, WHERE " of %zu bytes exceeds the %u-byte limit", len,
                             VMT_SNAPREC_MAX_BYTES);
    vmt_proto_budget_init(&b, VMT_SNAPREC_DECODE_BUDGET);
    Vmtree__Snap__SnapshotRecordHead *head =
        vmtree__snap__snapshot_record_head__unpack(&b.pb, len, buf);
    if (!head)
        return snap_unpack_error(&b, "frame");
    int rc = check_snap_header(head->header);
    if (rc == 0)
        rc = dec_body(&head->record, &b, r);
    vmtree__snap__snapshot_record_head__free_unpacked(head, &b.pb);
    if (rc)
        memset(r, 0, sizeof(*r));
    return rc;
}
