/*
 * Migration control messages (proto/wire.proto): the per-type table of
 * caps, the feature names, and the encoder (plain struct -> protobuf).
 * The decoder is in proto_wire_dec.c.
 */
#include <stdlib.h>
#include <string.h>

#include "proto_wire_internal.h"

#define KIND(t, n, d, max, budget) {t, n, &vmtree__wire__##d##__descriptor, max, budget}

/* Small messages get a 64 KiB parser budget; messages with a big array get
 * room for that array in memory (a packed varint of 1 byte becomes 8). */
static const vmt_wire_kind kinds[] = {
    KIND(VMT_WIRE_HELLO, "HELLO", hello, 4096, 64u << 10),
    KIND(VMT_WIRE_HELLO_ACK, "HELLO_ACK", hello_ack, 2048, 64u << 10),
    KIND(VMT_WIRE_AUTH_CHALLENGE, "AUTH_CHALLENGE", auth_challenge, 128, 64u << 10),
    KIND(VMT_WIRE_AUTH_RESPONSE, "AUTH_RESPONSE", auth_response, 128, 64u << 10),
    KIND(VMT_WIRE_VM_CONFIG, "VM_CONFIG", vm_config, 2048, 64u << 10),
    KIND(VMT_WIRE_HAVE_SET, "HAVE_SET", have_set, VMT_WIRE_HAVESET_MAX_BYTES + 128,
         VMT_WIRE_HAVESET_MAX_BYTES + (64u << 10)),
    KIND(VMT_WIRE_ROUND_START, "ROUND_START", round_start, 128, 64u << 10),
    KIND(VMT_WIRE_ROUND_END, "ROUND_END", round_end, 128, 64u << 10),
    KIND(VMT_WIRE_STATE_BLOB, "STATE_BLOB", state_blob, VMT_WIRE_MSG_MAX,
         VMT_WIRE_MSG_MAX + (64u << 10)),
    KIND(VMT_WIRE_COMMIT, "COMMIT", commit, 128, 64u << 10),
    KIND(VMT_WIRE_ACK, "ACK", ack, 1024, 64u << 10),
    KIND(VMT_WIRE_ERROR, "ERROR", error, 1024, 64u << 10),
    KIND(VMT_WIRE_WANT, "WANT", want, VMT_WIRE_WANT_MAX * 10u + 64u,
         VMT_WIRE_WANT_MAX * 8u + (64u << 10)),
    KIND(VMT_WIRE_PREPARED, "PREPARED", ack, 1024, 64u << 10),
    KIND(VMT_WIRE_GO, "GO", commit, 128, 64u << 10),
    KIND(VMT_WIRE_QUERY, "QUERY", query, 128, 64u << 10),
};

static const char *const feature_names[] = {"xbzrle", "lz4", "zstd", "haveset", "want"};

const vmt_wire_kind *vmt_wire_kind_of(unsigned type)
{
    for (size_t i = 0; i < VMT_ARRAY_SIZE(kinds); i++)
        if (kinds[i].type == type)
            return &kinds[i];
    return NULL;
}

const char *vmt_wire_type_name(unsigned type)
{
    if (type == VMT_WIRE_PAGE_BATCH)
        return "PAGE_BATCH";
    if (vmt_golden_type_name(type)) /* golden image messages (proto_golden.c) */
        return vmt_golden_type_name(type);
    const vmt_wire_kind *k = vmt_wire_kind_of(type);
    return k ? k->name : "UNKNOWN";
}

size_t vmt_wire_max_len(unsigned type)
{
    const vmt_wire_kind *k = vmt_wire_kind_of(type);
    return k ? k->max_len : 0;
}

uint32_t vmt_wire_features_from_names(char *const *names, size_t n)
{
    uint32_t f = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t b = 0; b < VMT_ARRAY_SIZE(feature_names); b++)
            if (names[i] && strcmp(names[i], feature_names[b]) == 0)
                f |= 1u << b;
    return f;
}

size_t vmt_wire_features_to_names(uint32_t features, const char **names)
{
    size_t n = 0;
    for (size_t b = 0; b < VMT_ARRAY_SIZE(feature_names); b++)
        if (features & (1u << b))
            names[n++] = feature_names[b];
    return n;
}

/* ---- encode ------------------------------------------------------------- */

/* A text field of `cap` bytes as a protobuf string; VMT_EINVAL when it is not
 * NUL-terminated within cap. */
static int enc_text(const char *s, size_t cap, const char *field, char **dst)
{
    if (!memchr(s, '\0', cap))
        return vmt_error_set(VMT_EINVAL, "wire message: %s is not NUL-terminated within %zu bytes",
                             field, cap);
    *dst = (char *)(uintptr_t)s; /* protobuf-c only reads while packing */
    return 0;
}

static ProtobufCBinaryData bin(const void *p, size_t len)
{
    return (ProtobufCBinaryData){len, (uint8_t *)(uintptr_t)p};
}

/* Packs `msg` into a new buffer after checking the type's cap. */
static int pack(const ProtobufCMessage *msg, const vmt_wire_kind *k, uint8_t **out,
                size_t *out_len)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > k->max_len)
        return vmt_error_set(VMT_EINVAL, "wire message %s of %zu bytes exceeds its cap %zu",
                             k->name, len, k->max_len);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return vmt_error_set(VMT_ENOMEM, "wire message %s: out of memory", k->name);
    size_t packed = protobuf_c_message_pack(msg, buf);
    if (packed != len) {
        free(buf);
        return vmt_error_set(VMT_ERR, "wire message %s: packed %zu bytes, expected %zu", k->name,
                             packed, len);
    }
    *out = buf;
    *out_len = len;
    return 0;
}

static int enc_hello(const vmt_wire_hello *h, const vmt_wire_kind *k, uint8_t **out,
                     size_t *out_len)
{
    Vmtree__Wire__Hello m;
    const char *names[VMT_WIRE_MAX_FEATURES];

    vmtree__wire__hello__init(&m);
    m.min_version = h->min_version;
    m.max_version = h->max_version;
    m.n_features = vmt_wire_features_to_names(h->features, names);
    m.features = (char **)(uintptr_t)names;
    m.session_id = bin(h->session_id, sizeof(h->session_id));
    m.stream_index = h->stream_index;
    m.nstreams = h->nstreams;
    m.nonce = bin(h->nonce, sizeof(h->nonce));
    int rc = enc_text(h->software, sizeof(h->software), "hello.software", &m.software);
    return rc ? rc : pack(&m.base, k, out, out_len);
}

static int enc_hello_ack(const vmt_wire_hello_ack *a, const vmt_wire_kind *k, uint8_t **out,
                         size_t *out_len)
{
    Vmtree__Wire__HelloAck m;
    const char *names[VMT_WIRE_MAX_FEATURES];

    vmtree__wire__hello_ack__init(&m);
    m.version = a->version;
    m.n_features = vmt_wire_features_to_names(a->features, names);
    m.features = (char **)(uintptr_t)names;
    m.auth = a->auth;
    return pack(&m.base, k, out, out_len);
}

static int enc_vm_config(const vmt_wire_vm_config *c, const vmt_wire_kind *k, uint8_t **out,
                         size_t *out_len)
{
    Vmtree__Wire__VmConfig m;

    vmtree__wire__vm_config__init(&m);
    m.mem_size = c->mem_size;
    m.vcpus = c->vcpus;
    m.irqchip = c->irqchip;
    m.npages = c->npages;
    if (c->has_base)
        m.base_snapshot = bin(c->base, sizeof(c->base));
    int rc = enc_text(c->image, sizeof(c->image), "vm_config.image", &m.image);
    if (rc == 0)
        rc = enc_text(c->vm_name, sizeof(c->vm_name), "vm_config.vm_name", &m.vm_name);
    return rc ? rc : pack(&m.base, k, out, out_len);
}

static int enc_have_set(const vmt_wire_have_set *h, const vmt_wire_kind *k, uint8_t **out,
                        size_t *out_len)
{
    Vmtree__Wire__HaveSet m;

    if (h->len > VMT_WIRE_HAVESET_MAX_BYTES || (h->len && !h->data))
        return vmt_error_set(VMT_EINVAL, "wire message HAVE_SET: %zu data bytes (at most %u)",
                             h->len, VMT_WIRE_HAVESET_MAX_BYTES);
    vmtree__wire__have_set__init(&m);
    m.count = h->count;
    m.total = h->total;
    m.first = h->first;
    m.prefix_bits = h->prefix_bits;
    m.rice_bits = h->rice_bits;
    m.last = h->last;
    m.data = bin(h->data, h->len);
    return pack(&m.base, k, out, out_len);
}

static int enc_round_end(const vmt_wire_round_end *r, const vmt_wire_kind *k, uint8_t **out,
                         size_t *out_len)
{
    Vmtree__Wire__RoundEnd m;

    vmtree__wire__round_end__init(&m);
    m.round = r->round;
    m.pages = r->pages;
    m.bytes = r->bytes;
    m.batches = r->batches;
    m.ns = r->ns;
    m.dirty_pages = r->dirty_pages;
    return pack(&m.base, k, out, out_len);
}

static int enc_want(const vmt_wire_want *w, const vmt_wire_kind *k, uint8_t **out,
                    size_t *out_len)
{
    Vmtree__Wire__Want m;

    if (w->n > VMT_WIRE_WANT_MAX || (w->n && !w->pfns))
        return vmt_error_set(VMT_EINVAL, "wire message WANT: %zu pfns (at most %u)", w->n,
                             VMT_WIRE_WANT_MAX);
    vmtree__wire__want__init(&m);
    m.round = w->round;
    m.n_pfns = w->n;
    m.pfns = w->pfns;
    return pack(&m.base, k, out, out_len);
}

/* The small messages of a few scalars. */
static int enc_small(const vmt_wire_msg *w, const vmt_wire_kind *k, uint8_t **out,
                     size_t *out_len)
{
    union {
        Vmtree__Wire__AuthChallenge ch;
        Vmtree__Wire__AuthResponse re;
        Vmtree__Wire__RoundStart rs;
        Vmtree__Wire__Commit co;
        Vmtree__Wire__Query q;
    } m;

    switch (w->type) {
    case VMT_WIRE_AUTH_CHALLENGE:
        vmtree__wire__auth_challenge__init(&m.ch);
        m.ch.nonce = bin(w->u.auth_challenge.nonce, VMT_WIRE_NONCE_LEN);
        return pack(&m.ch.base, k, out, out_len);
    case VMT_WIRE_AUTH_RESPONSE:
        vmtree__wire__auth_response__init(&m.re);
        m.re.mac = bin(w->u.auth_response.mac, VMT_WIRE_MAC_LEN);
        return pack(&m.re.base, k, out, out_len);
    case VMT_WIRE_ROUND_START:
        vmtree__wire__round_start__init(&m.rs);
        m.rs.round = w->u.round_start.round;
        m.rs.pages = w->u.round_start.pages;
        return pack(&m.rs.base, k, out, out_len);
    case VMT_WIRE_QUERY:
        vmtree__wire__query__init(&m.q);
        m.q.session_id = bin(w->u.query.session_id, VMT_WIRE_SESSION_ID_LEN);
        return pack(&m.q.base, k, out, out_len);
    default: /* VMT_WIRE_COMMIT, VMT_WIRE_GO */
        vmtree__wire__commit__init(&m.co);
        m.co.pages = w->u.commit.pages;
        m.co.bytes = w->u.commit.bytes;
        return pack(&m.co.base, k, out, out_len);
    }
}

/* StateBlob, Ack, Error. */
static int enc_other(const vmt_wire_msg *w, const vmt_wire_kind *k, uint8_t **out,
                     size_t *out_len)
{
    union {
        Vmtree__Wire__StateBlob sb;
        Vmtree__Wire__Ack ack;
        Vmtree__Wire__Error err;
    } m;
    int rc;

    switch (w->type) {
    case VMT_WIRE_STATE_BLOB:
        if (w->u.state_blob.len > VMT_STATE_MAX_BYTES ||
            (w->u.state_blob.len && !w->u.state_blob.data))
            return vmt_error_set(VMT_EINVAL, "wire message STATE_BLOB: %zu bytes (at most %u)",
                                 w->u.state_blob.len, VMT_STATE_MAX_BYTES);
        vmtree__wire__state_blob__init(&m.sb);
        m.sb.blob = bin(w->u.state_blob.data, w->u.state_blob.len);
        return pack(&m.sb.base, k, out, out_len);
    case VMT_WIRE_ACK:
    case VMT_WIRE_PREPARED:
        vmtree__wire__ack__init(&m.ack);
        m.ack.resumed = w->u.ack.resumed;
        rc = enc_text(w->u.ack.message, sizeof(w->u.ack.message), "ack.message",
                      &m.ack.message);
        return rc ? rc : pack(&m.ack.base, k, out, out_len);
    default: /* VMT_WIRE_ERROR */
        vmtree__wire__error__init(&m.err);
        m.err.code = w->u.error.code;
        rc = enc_text(w->u.error.message, sizeof(w->u.error.message), "error.message",
                      &m.err.message);
        return rc ? rc : pack(&m.err.base, k, out, out_len);
    }
}

int vmt_wire_encode(const vmt_wire_msg *m, uint8_t **out, size_t *out_len)
{
    if (!m || !out || !out_len)
        return vmt_error_set(VMT_EINVAL, "wire encode: NULL argument");
    const vmt_wire_kind *k = vmt_wire_kind_of(m->type);
    if (!k)
        return vmt_error_set(VMT_EINVAL, "wire encode: %u is not a control message type",
                             (unsigned)m->type);
    switch (m->type) {
    case VMT_WIRE_HELLO:
        return enc_hello(&m->u.hello, k, out, out_len);
    case VMT_WIRE_HELLO_ACK:
        return enc_hello_ack(&m->u.hello_ack, k, out, out_len);
    case VMT_WIRE_VM_CONFIG:
        return enc_vm_config(&m->u.vm_config, k, out, out_len);
    case VMT_WIRE_HAVE_SET:
        return enc_have_set(&m->u.have_set, k, out, out_len);
    case VMT_WIRE_ROUND_END:
        return enc_round_end(&m->u.round_end, k, out, out_len);
    case VMT_WIRE_WANT:
        return enc_want(&m->u.want, k, out, out_len);
    case VMT_WIRE_STATE_BLOB:
    case VMT_WIRE_ACK:
    case VMT_WIRE_PREPARED:
    case VMT_WIRE_ERROR:
        return enc_other(m, k, out, out_len);
    default:
        return enc_small(m, k, out, out_len);
    }
}
