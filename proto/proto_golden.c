/*
 * Golden image messages (proto/golden.proto, docs/golden.md): the per-type
 * caps, the encoder and the decoder.
 *
 * The decoder treats its input as hostile: the size is checked against the
 * type's cap, the protobuf parser allocates through a byte budget, and every
 * id, count, length, type and codec is checked before the caller sees it.
 * An Objects message keeps the parsed protobuf (and its allocator) alive in
 * m->priv so that object bytes (up to 16 MiB a message) are not copied a
 * second time; vmt_golden_msg_clear releases it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.pb-c.h"
#include "proto_internal.h"

typedef struct golden_kind {
    unsigned type;
    const char *name;
    const ProtobufCMessageDescriptor *desc;
    size_t max_len;
    size_t budget;
} golden_kind;

#define GK(t, n, d, max, budget) {t, n, &vmtree__golden__##d##__descriptor, max, budget}

/* Parser budgets: an id (18 bytes on the wire) costs the parser about 150
 * bytes (its scan record, the ProtobufCBinaryData, the copy, allocation
 * headers), so 256 a field; an object its bytes plus about 256 bytes. */
static const golden_kind kinds[] = {
    GK(VMT_GOLDEN_REQUEST, "GOLDEN_REQUEST", request, 1024, 64u << 10),
    GK(VMT_GOLDEN_SNAPS, "GOLDEN_SNAPS", snaps, VMT_GOLDEN_MAX_SNAPS * 18u + 64u,
       VMT_GOLDEN_MAX_SNAPS * 256u + (64u << 10)),
    GK(VMT_GOLDEN_WANT, "GOLDEN_WANT", want, VMT_GOLDEN_WANT_MAX * 18u + 64u,
       VMT_GOLDEN_WANT_MAX * 256u + (64u << 10)),
    GK(VMT_GOLDEN_OBJECTS, "GOLDEN_OBJECTS", objects, VMT_GOLDEN_OBJECTS_MAX_LEN,
       VMT_GOLDEN_OBJECTS_MAX_LEN + VMT_GOLDEN_WANT_MAX * 256u + (64u << 10)),
    GK(VMT_GOLDEN_DONE, "GOLDEN_DONE", done, 1024, 64u << 10),
};

/* A decoded message's parser state (m->priv). */
typedef struct golden_priv {
    vmt_pb_budget b;
    ProtobufCMessage *pm;
} golden_priv;

static const golden_kind *kind_of(unsigned type)
{
    for (size_t i = 0; i < VMT_ARRAY_SIZE(kinds); i++)
        if (kinds[i].type == type)
            return &kinds[i];
    return NULL;
}

const char *vmt_golden_type_name(unsigned type)
{
    const golden_kind *k = kind_of(type);
    return k ? k->name : NULL;
}

size_t vmt_golden_max_len(unsigned type)
{
    const golden_kind *k = kind_of(type);
    return k ? k->max_len : 0;
}

/* ---- encode --------------------------------------------------------------- */

static ProtobufCBinaryData gbin(const void *p, size_t len)
{
    return (ProtobufCBinaryData){len, (uint8_t *)(uintptr_t)p};
}

static int gpack(const ProtobufCMessage *msg, const golden_kind *k, uint8_t **out, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > k->max_len)
        return vmt_error_set(VMT_EINVAL, "golden message %s of %zu bytes exceeds its cap %zu",
                             k->name, n, k->max_len);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return vmt_error_set(VMT_ENOMEM, "golden message %s: out of memory", k->name);
    if (protobuf_c_message_pack(msg, buf) != n) {
        free(buf);
        return vmt_error_set(VMT_ERR, "golden message %s: packed size mismatch", k->name);
    }
    *out = buf;
    *len = n;
    return 0;
}

/* An array of n ProtobufCBinaryData over 16-byte ids (caller frees). */
static ProtobufCBinaryData *id_array(const uint8_t (*ids)[VMT_GOLDEN_ID_LEN], size_t n, size_t max,
                                     const char *what)
{
    if (n == 0 || n > max || !ids) {
        vmt_error_set(VMT_EINVAL, "golden message %s: %zu ids (1..%zu)", what, n, max);
        return NULL;
    }
    ProtobufCBinaryData *a = vmt_mallocn(n, sizeof(*a));
    if (!a) {
        vmt_error_set(VMT_ENOMEM, "golden message %s: out of memory", what);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        a[i] = gbin(ids[i], VMT_GOLDEN_ID_LEN);
    return a;
}

static int enc_ids(const vmt_golden_msg *m, const golden_kind *k, uint8_t **out, size_t *len)
{
    int rc;
    if (m->type == VMT_GOLDEN_SNAPS) {
        Vmtree__Golden__Snaps p = VMTREE__GOLDEN__SNAPS__INIT;
        p.ids = id_array((const void *)m->u.snaps.ids, m->u.snaps.n, VMT_GOLDEN_MAX_SNAPS, k->name);
        if (!p.ids)
            return m->u.snaps.n && m->u.snaps.n <= VMT_GOLDEN_MAX_SNAPS ? VMT_ENOMEM : VMT_EINVAL;
        p.n_ids = m->u.snaps.n;
        rc = gpack(&p.base, k, out, len);
        free(p.ids);
        return rc;
    }
    Vmtree__Golden__Want p = VMTREE__GOLDEN__WANT__INIT;
    p.seq = m->u.want.seq;
    p.ids = id_array((const void *)m->u.want.ids, m->u.want.n, VMT_GOLDEN_WANT_MAX, k->name);
    if (!p.ids)
        return m->u.want.n && m->u.want.n <= VMT_GOLDEN_WANT_MAX ? VMT_ENOMEM : VMT_EINVAL;
    p.n_ids = m->u.want.n;
    rc = gpack(&p.base, k, out, len);
    free(p.ids);
    return rc;
}

static int check_object(const vmt_golden_object *o, size_t i, int code, const char *verb);

static int enc_objects(const vmt_golden_msg *m, const golden_kind *k, uint8_t **out, size_t *len)
{
    size_t n = m->u.objects.n;
    if (n > VMT_GOLDEN_WANT_MAX || (n && !m->u.objects.objs))
        return vmt_error_set(VMT_EINVAL, "golden message %s: %zu objects", k->name, n);
    Vmtree__Golden__Objects p = VMTREE__GOLDEN__OBJECTS__INIT;
    Vmtree__Golden__Object *o = vmt_callocn(n ? n : 1, sizeof(*o));
    Vmtree__Golden__Object **po = vmt_callocn(n ? n : 1, sizeof(*po));
    int rc = o && po ? 0 : vmt_error_set(VMT_ENOMEM, "golden message %s: out of memory", k->name);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const vmt_golden_object *s = &m->u.objects.objs[i];
        if ((rc = check_object(s, i, VMT_EINVAL, "encode")) != 0)
            break;
        vmtree__golden__object__init(&o[i]);
        o[i].id = gbin(s->id, VMT_GOLDEN_ID_LEN);
        o[i].type = s->type;
        o[i].codec = s->codec;
        o[i].raw_len = s->raw_len;
        o[i].data = gbin(s->data, s->len);
        po[i] = &o[i];
    }
    if (rc == 0) {
        p.seq = m->u.objects.seq;
        p.n_objects = n;
        p.objects = po;
        p.last = m->u.objects.last;
        rc = gpack(&p.base, k, out, len);
    }
    free(po);
    free(o);
    return rc;
}

static int enc_text(const char *s, const char *field, char **dst)
{
    if (!memchr(s, '\0', VMT_GOLDEN_TEXT_MAX))
        return vmt_error_set(VMT_EINVAL, "golden message: %s is not NUL-terminated", field);
    *dst = (char *)(uintptr_t)s; /* protobuf-c only reads while packing */
    return 0;
}

static int enc_small(const vmt_golden_msg *m, const golden_kind *k, uint8_t **out, size_t *len)
{
    int rc;
    if (m->type == VMT_GOLDEN_REQUEST) {
        Vmtree__Golden__Request p = VMTREE__GOLDEN__REQUEST__INIT;
        if (m->u.request.op != VMT_GOLDEN_OP_PULL && m->u.request.op != VMT_GOLDEN_OP_PUSH)
            return vmt_error_set(VMT_EINVAL, "golden message REQUEST: unknown op %u",
                                 m->u.request.op);
        p.op = m->u.request.op;
        p.max_ancestors = m->u.request.max_ancestors;
        rc = enc_text(m->u.request.name, "request.name", &p.name);
        return rc ? rc : gpack(&p.base, k, out, len);
    }
    Vmtree__Golden__Done p = VMTREE__GOLDEN__DONE__INIT;
    if (m->u.done.code > 0)
        return vmt_error_set(VMT_EINVAL, "golden message DONE: code %d", m->u.done.code);
    p.code = m->u.done.code;
    p.objects = m->u.done.objects;
    p.bytes = m->u.done.bytes;
    if (m->u.done.has_snapshot)
        p.snapshot = gbin(m->u.done.snapshot, VMT_GOLDEN_ID_LEN);
    rc = enc_text(m->u.done.message, "done.message", &p.message);
    return rc ? rc : gpack(&p.base, k, out, len);
}

int vmt_golden_encode(const vmt_golden_msg *m, uint8_t **out, size_t *out_len)
{
    const golden_kind *k = m ? kind_of(m->type) : NULL;
    if (!k || !out || !out_len)
        return vmt_error_set(VMT_EINVAL, "golden encode: type %d is not a golden message",
                             m ? (int)m->type : -1);
    switch (m->type) {
    case VMT_GOLDEN_SNAPS:
    case VMT_GOLDEN_WANT:
        return enc_ids(m, k, out, out_len);
    case VMT_GOLDEN_OBJECTS:
        return enc_objects(m, k, out, out_len);
    default:
        return enc_small(m, k, out, out_len);
    }
}

/* ---- decode --------------------------------------------------------------- */

static int check_object(const vmt_golden_object *o, size_t i, int code, const char *verb)
{
    const char *why = NULL;
    if (o->type < 1 || o->type > 4)
        why = "unknown object type";
    else if (o->codec > VMT_GOLDEN_CODEC_LZ4)
        why = "unknown codec";
    else if (o->raw_len == 0 || o->raw_len > VMT_GOLDEN_OBJECT_MAX)
        why = "raw_len out of range";
    else if (o->type == 1 && o->raw_len != 4096)
        why = "a page that is not 4096 bytes";
    else if (o->codec == VMT_GOLDEN_CODEC_RAW && o->len != o->raw_len)
        why = "raw data whose length is not raw_len";
    else if (o->codec == VMT_GOLDEN_CODEC_LZ4 && (o->len == 0 || o->len > o->raw_len))
        why = "LZ4 data longer than raw_len or empty";
    else if (o->len && !o->data)
        why = "no data";
    if (!why)
        return 0;
    return vmt_error_set(code, "golden message OBJECTS (%s): object %zu: %s (type %u, codec %u, "
                               "raw_len %u, %zu bytes)",
                         verb, i, why, o->type, o->codec, o->raw_len, o->len);
}

static int dec_ids(const ProtobufCBinaryData *in, size_t n, size_t max, const char *what,
                   uint8_t (**out)[VMT_GOLDEN_ID_LEN])
{
    if (n == 0 || n > max)
        return vmt_error_set(VMT_ECORRUPT, "golden message %s: %zu ids (1..%zu)", what, n, max);
    uint8_t(*ids)[VMT_GOLDEN_ID_LEN] = vmt_mallocn(n, VMT_GOLDEN_ID_LEN);
    if (!ids)
        return vmt_error_set(VMT_ENOMEM, "golden message %s: out of memory", what);
    for (size_t i = 0; i < n; i++) {
        if (in[i].len != VMT_GOLDEN_ID_LEN) {
            free(ids);
            return vmt_error_set(VMT_ECORRUPT, "golden message %s: id %zu has %zu bytes", what, i,
                                 in[i].len);
        }
        memcpy(ids[i], in[i].data, VMT_GOLDEN_ID_LEN);
    }
    *out = ids;
    return 0;
}

static int dec_objects(const Vmtree__Golden__Objects *p, vmt_golden_msg *m)
{
    if (p->n_objects > VMT_GOLDEN_WANT_MAX)
        return vmt_error_set(VMT_ECORRUPT, "golden message OBJECTS: %zu objects (at most %u)",
                             p->n_objects, VMT_GOLDEN_WANT_MAX);
    m->u.objects.seq = p->seq;
    m->u.objects.last = p->last;
    m->u.objects.objs = vmt_callocn(p->n_objects ? p->n_objects : 1, sizeof(vmt_golden_object));
    if (!m->u.objects.objs)
        return vmt_error_set(VMT_ENOMEM, "golden message OBJECTS: out of memory");
    for (size_t i = 0; i < p->n_objects; i++) {
        const Vmtree__Golden__Object *s = p->objects[i];
        vmt_golden_object *o = &m->u.objects.objs[i];
        if (s->id.len != VMT_GOLDEN_ID_LEN)
            return vmt_error_set(VMT_ECORRUPT, "golden message OBJECTS: object %zu: id of %zu "
                                               "bytes",
                                 i, s->id.len);
        memcpy(o->id, s->id.data, VMT_GOLDEN_ID_LEN);
        *o = (vmt_golden_object){.type = s->type, .codec = s->codec, .raw_len = s->raw_len,
                                 .data = s->data.data, .len = s->data.len};
        memcpy(o->id, s->id.data, VMT_GOLDEN_ID_LEN);
        int rc = check_object(o, i, VMT_ECORRUPT, "decode");
        if (rc)
            return rc;
        m->u.objects.n = i + 1;
    }
    return 0;
}

static void dec_text(const char *s, char *dst)
{
    vmt_proto_printable(dst, VMT_GOLDEN_TEXT_MAX, s ? s : "", s ? strlen(s) : 0);
}

static int text_fits(const char *s, const char *what)
{
    size_t n = s ? strlen(s) : 0;
    if (n >= VMT_GOLDEN_TEXT_MAX)
        return vmt_error_set(VMT_ECORRUPT, "golden message %s: text of %zu bytes (at most %u)",
                             what, n, VMT_GOLDEN_TEXT_MAX - 1);
    return 0;
}

static int dec_small(const ProtobufCMessage *pm, vmt_golden_msg *m)
{
    if (m->type == VMT_GOLDEN_REQUEST) {
        const Vmtree__Golden__Request *p = (const void *)pm;
        if (p->op != VMT_GOLDEN_OP_PULL && p->op != VMT_GOLDEN_OP_PUSH)
            return vmt_error_set(VMT_ECORRUPT, "golden message REQUEST: unknown op %u", p->op);
        if (text_fits(p->name, "REQUEST"))
            return VMT_ECORRUPT;
        m->u.request.op = p->op;
        m->u.request.max_ancestors = p->max_ancestors;
        dec_text(p->name, m->u.request.name);
        return 0;
    }
    const Vmtree__Golden__Done *p = (const void *)pm;
    if (p->code > 0)
        return vmt_error_set(VMT_ECORRUPT, "golden message DONE: code %d", p->code);
    if (p->snapshot.len != 0 && p->snapshot.len != VMT_GOLDEN_ID_LEN)
        return vmt_error_set(VMT_ECORRUPT, "golden message DONE: snapshot of %zu bytes",
                             p->snapshot.len);
    if (text_fits(p->message, "DONE"))
        return VMT_ECORRUPT;
    /* A newer peer may know codes this build does not: they read as VMT_ERR. */
    m->u.done.code = p->code < VMT_EAUTH ? VMT_ERR : p->code;
    m->u.done.objects = p->objects;
    m->u.done.bytes = p->bytes;
    m->u.done.has_snapshot = p->snapshot.len == VMT_GOLDEN_ID_LEN;
    if (m->u.done.has_snapshot)
        memcpy(m->u.done.snapshot, p->snapshot.data, VMT_GOLDEN_ID_LEN);
    dec_text(p->message, m->u.done.message);
    return 0;
}

static int dec_msg(const ProtobufCMessage *pm, vmt_golden_msg *m)
{
    switch (m->type) {
    case VMT_GOLDEN_SNAPS: {
        const Vmtree__Golden__Snaps *p = (const void *)pm;
        m->u.snaps.n = p->n_ids;
        return dec_ids(p->ids, p->n_ids, VMT_GOLDEN_MAX_SNAPS, "SNAPS", &m->u.snaps.ids);
    }
    case VMT_GOLDEN_WANT: {
        const Vmtree__Golden__Want *p = (const void *)pm;
        m->u.want.seq = p->seq;
        m->u.want.n = p->n_ids;
        return dec_ids(p->ids, p->n_ids, VMT_GOLDEN_WANT_MAX, "WANT", &m->u.want.ids);
    }
    case VMT_GOLDEN_OBJECTS:
        return dec_objects((const void *)pm, m);
    default:
        return dec_small(pm, m);
    }
}

int vmt_golden_decode(unsigned type, const uint8_t *buf, size_t len, vmt_golden_msg *m)
{
    if (!m || (!buf && len))
        return vmt_error_set(VMT_EINVAL, "golden decode: NULL argument");
    memset(m, 0, sizeof(*m));
    const golden_kind *k = kind_of(type);
    if (!k)
        return vmt_error_set(VMT_EPROTO, "golden decode: frame type %u is not a golden message",
                             type);
    if (len > k->max_len)
        return vmt_error_set(VMT_ECORRUPT, "golden message %s of %zu bytes exceeds its cap %zu",
                             k->name, len, k->max_len);
    golden_priv *gp = malloc(sizeof(*gp));
    if (!gp)
        return vmt_error_set(VMT_ENOMEM, "golden decode: out of memory");
    vmt_proto_budget_init(&gp->b, k->budget);
    gp->pm = protobuf_c_message_unpack(k->desc, &gp->b.pb, len, buf ? buf : (const uint8_t *)"");
    if (!gp->pm) {
        int rc = gp->b.oom ? vmt_error_set(VMT_ENOMEM, "golden message %s: out of memory", k->name)
                 : gp->b.over
                     ? vmt_error_set(VMT_ECORRUPT, "golden message %s needs more than %zu bytes "
                                                   "to decode", k->name, gp->b.limit)
                     : vmt_error_set(VMT_ECORRUPT, "golden message %s is not valid protobuf "
                                                   "(truncated or damaged)", k->name);
        free(gp);
        return rc;
    }
    m->type = (vmt_golden_type)type;
    m->priv = gp;
    int rc = dec_msg(gp->pm, m);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", vmt_error_last());
        vmt_golden_msg_clear(m);
        vmt_error_set(rc, "%s", msg);
    }
    return rc;
}

void vmt_golden_msg_clear(vmt_golden_msg *m)
{
    if (!m)
        return;
    switch (m->type) {
    case VMT_GOLDEN_SNAPS:
        free(m->u.snaps.ids);
        break;
    case VMT_GOLDEN_WANT:
        free(m->u.want.ids);
        break;
    case VMT_GOLDEN_OBJECTS:
        free(m->u.objects.objs);
        break;
    default:
        break;
    }
    golden_priv *gp = m->priv;
    if (gp) {
        protobuf_c_message_free_unpacked(gp->pm, &gp->b.pb);
        free(gp);
    }
    memset(m, 0, sizeof(*m));
}
