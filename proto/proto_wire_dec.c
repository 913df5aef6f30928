/*
 * Migration control messages: the decoder (protobuf -> plain struct).
 *
 * The input comes from the network: the payload size is checked against the
 * type's cap first, the protobuf parser allocates through a byte budget, and
 * every length, count and value is checked before it is used.  Arrays the
 * message keeps (HaveSet data, StateBlob bytes, Want pfns) are copied out
 * of the parser's memory, so the parsed message is freed before returning.
 */
#include <stdlib.h>
#include <string.h>

#include "proto_wire_internal.h"

static int wire_bad(const char *type, const char *what)
{
    return vmt_error_set(VMT_ECORRUPT, "wire message %s: %s", type, what);
}

/* Copies a protobuf string of at most cap-1 bytes as printable ASCII. */
static int dec_text(const char *s, char *dst, size_t cap, const char *type, const char *field)
{
    size_t len = s ? strlen(s) : 0;
    if (len >= cap)
        return vmt_error_set(VMT_ECORRUPT, "wire message %s: %s has %zu bytes (at most %zu)", type,
                             field, len, cap - 1);
    vmt_proto_printable(dst, cap, s ? s : "", len);
    return 0;
}

static int dec_fixed(const ProtobufCBinaryData *b, uint8_t *dst, size_t want, const char *type,
                     const char *field)
{
    if (b->len != want)
        return vmt_error_set(VMT_ECORRUPT, "wire message %s: %s has %zu bytes, expected %zu",
                             type, field, b->len, want);
    memcpy(dst, b->data, want);
    return 0;
}

/* A copy of `len` bytes in a new buffer (at least 1 byte so that an empty
 * array is still a valid pointer to free). */
static void *dup_bytes(const void *p, size_t len, const char *type)
{
    void *d = malloc(len ? len : 1);
    if (!d) {
        vmt_error_set(VMT_ENOMEM, "wire message %s: out of memory", type);
        return NULL;
    }
    if (len)
        memcpy(d, p, len);
    return d;
}

static int dec_features(char **names, size_t n, const char *type, uint32_t *out)
{
    if (n > VMT_WIRE_MAX_FEATURES)
        return vmt_error_set(VMT_ECORRUPT, "wire message %s: %zu features (at most %u)", type, n,
                             VMT_WIRE_MAX_FEATURES);
    for (size_t i = 0; i < n; i++) {
        size_t len = names[i] ? strlen(names[i]) : 0;
        if (len == 0 || len > VMT_WIRE_FEATURE_LEN)
            return vmt_error_set(VMT_ECORRUPT, "wire message %s: feature %zu has %zu bytes", type,
                                 i, len);
    }
    *out = vmt_wire_features_from_names(names, n);
    return 0;
}

static int dec_hello(const Vmtree__Wire__Hello *p, vmt_wire_hello *h)
{
    int rc;

    if (p->min_version == 0 || p->min_version > p->max_version || p->max_version > UINT16_MAX)
        return vmt_error_set(VMT_ECORRUPT, "wire message HELLO: version range %u..%u is not valid",
                             p->min_version, p->max_version);
    if (p->nstreams == 0 || p->stream_index >= p->nstreams)
        return vmt_error_set(VMT_ECORRUPT, "wire message HELLO: stream %u of %u is not valid",
                             p->stream_index, p->nstreams);
    h->min_version = p->min_version;
    h->max_version = p->max_version;
    h->stream_index = p->stream_index;
    h->nstreams = p->nstreams;
    if ((rc = dec_features(p->features, p->n_features, "HELLO", &h->features)) != 0 ||
        (rc = dec_fixed(&p->session_id, h->session_id, VMT_WIRE_SESSION_ID_LEN, "HELLO",
                        "session_id")) != 0 ||
        (rc = dec_fixed(&p->nonce, h->nonce, VMT_WIRE_NONCE_LEN, "HELLO", "nonce")) != 0)
        return rc;
    return dec_text(p->software, h->software, sizeof(h->software), "HELLO", "software");
}

static int dec_hello_ack(const Vmtree__Wire__HelloAck *p, vmt_wire_hello_ack *a)
{
    if (p->version == 0 || p->version > UINT16_MAX)
        return vmt_error_set(VMT_ECORRUPT, "wire message HELLO_ACK: version %u is not valid",
                             p->version);
    if (p->auth > VMT_WIRE_AUTH_PSK)
        return vmt_error_set(VMT_ECORRUPT, "wire message HELLO_ACK: unknown auth method %u",
                             p->auth);
    a->version = p->version;
    a->auth = p->auth;
    return dec_features(p->features, p->n_features, "HELLO_ACK", &a->features);
}

static int dec_vm_config(const Vmtree__Wire__VmConfig *p, vmt_wire_vm_config *c)
{
    int rc;

    if (p->mem_size == 0 || p->mem_size % VMT_PAGE_SIZE || p->mem_size > VMT_VM_MAX_MEM)
        return vmt_error_set(VMT_ECORRUPT, "wire message VM_CONFIG: mem_size = %llu is not valid",
                             (unsigned long long)p->mem_size);
    if (p->vcpus == 0 || p->vcpus > VMT_VM_MAX_VCPUS)
        return vmt_error_set(VMT_ECORRUPT, "wire message VM_CONFIG: vcpus = %u (1..%u)", p->vcpus,
                             VMT_VM_MAX_VCPUS);
    if (p->npages != p->mem_size / VMT_PAGE_SIZE)
        return wire_bad("VM_CONFIG", "npages does not match mem_size");
    c->mem_size = p->mem_size;
    c->vcpus = p->vcpus;
    c->irqchip = p->irqchip;
    c->npages = p->npages;
    if (p->base_snapshot.len != 0 && p->base_snapshot.len != sizeof(c->base))
        return wire_bad("VM_CONFIG", "base is not a 16-byte id");
    c->has_base = p->base_snapshot.len == sizeof(c->base);
    if (c->has_base)
        memcpy(c->base, p->base_snapshot.data, sizeof(c->base));
    if ((rc = dec_text(p->image, c->image, sizeof(c->image), "VM_CONFIG", "image")) != 0)
        return rc;
    return dec_text(p->vm_name, c->vm_name, sizeof(c->vm_name), "VM_CONFIG", "vm_name");
}

static int dec_have_set(const Vmtree__Wire__HaveSet *p, vmt_wire_have_set *h)
{
    if (p->prefix_bits == 0 || p->prefix_bits > 64 || p->rice_bits >= p->prefix_bits)
        return vmt_error_set(VMT_ECORRUPT,
                             "wire message HAVE_SET: prefix_bits %u / rice_bits %u not valid",
                             p->prefix_bits, p->rice_bits);
    if (p->count > p->total)
        return wire_bad("HAVE_SET", "count exceeds total");
    if (p->data.len > VMT_WIRE_HAVESET_MAX_BYTES)
        return wire_bad("HAVE_SET", "data beyond its cap");
    h->count = p->count;
    h->total = p->total;
    h->first = p->first;
    h->prefix_bits = p->prefix_bits;
    h->rice_bits = p->rice_bits;
    h->last = p->last;
    h->len = p->data.len;
    h->data = dup_bytes(p->data.data, p->data.len, "HAVE_SET");
    return h->data ? 0 : VMT_ENOMEM;
}

static int dec_want(const Vmtree__Wire__Want *p, vmt_wire_want *w)
{
    if (p->n_pfns > VMT_WIRE_WANT_MAX)
        return vmt_error_set(VMT_ECORRUPT, "wire message WANT: %zu pfns (at most %u)", p->n_pfns,
                             VMT_WIRE_WANT_MAX);
    w->round = p->round;
    w->n = p->n_pfns;
    w->pfns = dup_bytes(p->pfns, p->n_pfns * sizeof(uint64_t), "WANT");
    return w->pfns ? 0 : VMT_ENOMEM;
}

static int dec_error(const Vmtree__Wire__Error *p, vmt_wire_msg *m)
{
    if (p->code >= 0)
        return vmt_error_set(VMT_ECORRUPT, "wire message ERROR: code %d is not an error", p->code);
    /* A newer peer may know codes this build does not: they read as VMT_ERR. */
    m->u.error.code = p->code < VMT_ELAST ? VMT_ERR : p->code;
    return dec_text(p->message, m->u.error.message, sizeof(m->u.error.message), "ERROR",
                    "message");
}

static int dec_scalars(const ProtobufCMessage *pm, vmt_wire_msg *m)
{
    switch (m->type) {
    case VMT_WIRE_ROUND_START: {
        const Vmtree__Wire__RoundStart *p = (const void *)pm;
        m->u.round_start.round = p->round;
        m->u.round_start.pages = p->pages;
        return 0;
    }
    case VMT_WIRE_ROUND_END: {
        const Vmtree__Wire__RoundEnd *p = (const void *)pm;
        m->u.round_end = (vmt_wire_round_end){p->round,   p->pages, p->bytes,
                                              p->batches, p->ns,    p->dirty_pages};
        return 0;
    }
    default: { /* VMT_WIRE_COMMIT, VMT_WIRE_GO */
        const Vmtree__Wire__Commit *p = (const void *)pm;
        m->u.commit.pages = p->pages;
        m->u.commit.bytes = p->bytes;
        return 0;
    }
    }
}

static int dec_blob_ack(const ProtobufCMessage *pm, vmt_wire_msg *m)
{
    if (m->type == VMT_WIRE_STATE_BLOB) {
        const Vmtree__Wire__StateBlob *p = (const void *)pm;
        if (p->blob.len > VMT_STATE_MAX_BYTES)
            return wire_bad("STATE_BLOB", "blob beyond its cap");
        m->u.state_blob.len = p->blob.len;
        m->u.state_blob.data = dup_bytes(p->blob.data, p->blob.len, "STATE_BLOB");
        return m->u.state_blob.data ? 0 : VMT_ENOMEM;
    }
    const Vmtree__Wire__Ack *p = (const void *)pm;
    m->u.ack.resumed = p->resumed;
    return dec_text(p->message, m->u.ack.message, sizeof(m->u.ack.message), "ACK", "message");
}

static int dec_msg(const ProtobufCMessage *pm, vmt_wire_msg *m)
{
    switch (m->type) {
    case VMT_WIRE_HELLO:
        return dec_hello((const void *)pm, &m->u.hello);
    case VMT_WIRE_HELLO_ACK:
        return dec_hello_ack((const void *)pm, &m->u.hello_ack);
    case VMT_WIRE_AUTH_CHALLENGE:
        return dec_fixed(&((const Vmtree__Wire__AuthChallenge *)(const void *)pm)->nonce,
                         m->u.auth_challenge.nonce, VMT_WIRE_NONCE_LEN, "AUTH_CHALLENGE", "nonce");
    case VMT_WIRE_AUTH_RESPONSE:
        return dec_fixed(&((const Vmtree__Wire__AuthResponse *)(const void *)pm)->mac,
                         m->u.auth_response.mac, VMT_WIRE_MAC_LEN, "AUTH_RESPONSE", "mac");
    case VMT_WIRE_VM_CONFIG:
        return dec_vm_config((const void *)pm, &m->u.vm_config);
    case VMT_WIRE_HAVE_SET:
        return dec_have_set((const void *)pm, &m->u.have_set);
    case VMT_WIRE_WANT:
        return dec_want((const void *)pm, &m->u.want);
    case VMT_WIRE_QUERY:
        return dec_fixed(&((const Vmtree__Wire__Query *)(const void *)pm)->session_id,
                         m->u.query.session_id, VMT_WIRE_SESSION_ID_LEN, "QUERY", "session_id");
    case VMT_WIRE_ERROR:
        return dec_error((const void *)pm, m);
    case VMT_WIRE_STATE_BLOB:
    case VMT_WIRE_ACK:
    case VMT_WIRE_PREPARED:
        return dec_blob_ack(pm, m);
    default:
        return dec_scalars(pm, m);
    }
}

static int wire_unpack_error(const vmt_pb_budget *b, const vmt_wire_kind *k)
{
    if (b->oom)
        return vmt_error_set(VMT_ENOMEM, "wire message %s: out of memory decoding", k->name);
    if (b->over)
        return vmt_error_set(VMT_ECORRUPT, "wire message %s needs more than %zu bytes to decode",
                             k->name, b->limit);
    return vmt_error_set(VMT_ECORRUPT, "wire message %s is not valid protobuf (truncated or "
                                       "damaged)",
                         k->name);
}

int vmt_wire_decode(unsigned type, const uint8_t *buf, size_t len, vmt_wire_msg *m)
{
    vmt_pb_budget b;

    if (!m || (!buf && len))
        return vmt_error_set(VMT_EINVAL, "wire decode: NULL argument");
    memset(m, 0, sizeof(*m));
    const vmt_wire_kind *k = vmt_wire_kind_of(type);
    if (!k)
        return vmt_error_set(VMT_EPROTO, "wire decode: type %u (%s) is not a control message",
                             type, vmt_wire_type_name(type));
    if (len > k->max_len)
        return vmt_error_set(VMT_ECORRUPT, "wire message %s of %zu bytes exceeds its cap %zu",
                             k->name, len, k->max_len);
    vmt_proto_budget_init(&b, k->budget);
    ProtobufCMessage *pm = protobuf_c_message_unpack(k->desc, &b.pb, len, buf ? buf : (const uint8_t *)"");
    if (!pm)
        return wire_unpack_error(&b, k);
    m->type = (vmt_wire_type)type;
    int rc = dec_msg(pm, m);
    protobuf_c_message_free_unpacked(pm, &b.pb);
    if (rc)
        vmt_wire_msg_clear(m);
    return rc;
}

void vmt_wire_msg_clear(vmt_wire_msg *m)
{
    if (!m)
        return;
    switch (m->type) {
    case VMT_WIRE_HAVE_SET:
        free(m->u.have_set.data);
        break;
    case VMT_WIRE_STATE_BLOB:
        free(m->u.state_blob.data);
        break;
    case VMT_WIRE_WANT:
        free(m->u.want.pfns);
        break;
    default:
        break;
    }
    memset(m, 0, sizeof(*m));
}
