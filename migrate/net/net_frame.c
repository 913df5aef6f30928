/*
 * Frames: a fixed 20-byte header and a payload (docs/wire-protocol.md).
 *
 *   0  magic    u32  "VMTW"
 *   4  version  u16  frame format version (1)
 *   6  type     u16  vmt_wire_type
 *   8  flags    u16  0 in version 1
 *  10  reserved u16  0
 *  12  length   u32  payload bytes, <= the type's cap
 *  16  checksum u32  XXH32 (seed 0) over header bytes 0..15, then the payload
 *
 * All big-endian.  A receiver checks the header field by field, in that
 * order, before it reads (or allocates for) a payload byte, and the
 * checksum once the payload is in.  Whatever it refuses it tells the peer in
 * an ERROR frame, then shuts the stream down: a refused stream is never
 * read again, so no byte after a bad header is interpreted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "net_internal.h"

/* Frames up to this size go out in one send (header and payload copied
 * together); larger ones in two. */
#define FRAME_COALESCE 4096u
/* How long a refusal may take to send. */
#define REFUSE_TIMEOUT_MS 1000u
/* How long a failed sender looks for the peer's ERROR frame. */
#define EXPLAIN_TIMEOUT_MS 200u

size_t vmt_frame_max_payload(unsigned type)
{
    if (type == VMT_WIRE_PAGE_BATCH)
        return VMT_BATCH_MAX_PAYLOAD;
    if (type >= VMT_GOLDEN_TYPE_FIRST && type <= VMT_GOLDEN_TYPE_LAST)
        return vmt_golden_max_len(type); /* golden image messages (docs/golden.md) */
    return vmt_wire_max_len(type);
}

static uint32_t checksum(const uint8_t *hdr, const void *payload, size_t len)
{
    XXH32_state_t st;
    XXH32_reset(&st, 0);
    XXH32_update(&st, hdr, 16);
    if (len)
        XXH32_update(&st, payload, len);
    return XXH32_digest(&st);
}

void vmt_frame_header_build(unsigned type, const void *payload, size_t len,
                            uint8_t out[VMT_FRAME_HEADER_LEN])
{
    vmt_put_be32(out, VMT_FRAME_MAGIC);
    vmt_put_be16(out + 4, VMT_FRAME_VERSION);
    vmt_put_be16(out + 6, (uint16_t)type);
    vmt_put_be16(out + 8, 0);
    vmt_put_be16(out + 10, 0);
    vmt_put_be32(out + 12, (uint32_t)len);
    vmt_put_be32(out + 16, checksum(out, payload, len));
}

/* The magic as text for a message: printable bytes kept, others '.'. */
static void magic_text(const uint8_t *in, char out[5])
{
    for (int i = 0; i < 4; i++)
        out[i] = (in[i] >= 0x20 && in[i] < 0x7f && in[i] != '"') ? (char)in[i] : '.';
    out[4] = '\0';
}

int vmt_frame_header_parse(const uint8_t in[VMT_FRAME_HEADER_LEN], vmt_frame_header *h)
{
    char text[5];

    h->magic = vmt_get_be32(in);
    h->version = vmt_get_be16(in + 4);
    h->type = vmt_get_be16(in + 6);
    h->flags = vmt_get_be16(in + 8);
    h->reserved = vmt_get_be16(in + 10);
    h->length = vmt_get_be32(in + 12);
    h->checksum = vmt_get_be32(in + 16);
    if (h->magic != VMT_FRAME_MAGIC) {
        magic_text(in, text);
        return vmt_error_set(VMT_ECORRUPT, "bad frame magic 0x%08x (\"%s\"): not a vmtree "
                                           "migration stream",
                             h->magic, text);
    }
    if (h->version != VMT_FRAME_VERSION)
        return vmt_error_set(VMT_EUNSUPPORTED, "frame version %u is not supported (this side "
                                               "speaks frame version %u)",
                             h->version, VMT_FRAME_VERSION);
    size_t cap = vmt_frame_max_payload(h->type);
    if (cap == 0)
        return vmt_error_set(VMT_EPROTO, "unknown frame type %u", h->type);
    if (h->flags || h->reserved)
        return vmt_error_set(VMT_EPROTO, "frame %s has flags 0x%x / reserved 0x%x (must be 0)",
                             vmt_wire_type_name(h->type), h->flags, h->reserved);
    if (h->length > cap)
        return vmt_error_set(VMT_ERANGE, "frame %s of %u bytes exceeds its cap of %zu bytes",
                             vmt_wire_type_name(h->type), h->length, cap);
    return 0;
}

int vmt_frame_verify(const uint8_t hdr[VMT_FRAME_HEADER_LEN], const void *payload, size_t len)
{
    uint32_t want = vmt_get_be32(hdr + 16);
    uint32_t got = checksum(hdr, payload, len);
    if (want != got)
        return vmt_error_set(VMT_ECORRUPT, "frame %s of %zu bytes: checksum 0x%08x does not "
                                           "match 0x%08x (corrupted in transit)",
                             vmt_wire_type_name(vmt_get_be16(hdr + 6)), len, got, want);
    return 0;
}

int vmt_frame_parse(const uint8_t *buf, size_t len, vmt_frame_header *h, const uint8_t **payload,
                    size_t *payload_len)
{
    if (len < VMT_FRAME_HEADER_LEN)
        return vmt_error_set(VMT_ECORRUPT, "frame truncated: %zu bytes, header needs %u", len,
                             VMT_FRAME_HEADER_LEN);
    int rc = vmt_frame_header_parse(buf, h);
    if (rc)
        return rc;
    if (len - VMT_FRAME_HEADER_LEN != h->length)
        return vmt_error_set(VMT_ECORRUPT, "frame %s: header says %u payload bytes, %zu present",
                             vmt_wire_type_name(h->type), h->length, len - VMT_FRAME_HEADER_LEN);
    rc = vmt_frame_verify(buf, buf + VMT_FRAME_HEADER_LEN, h->length);
    if (rc)
        return rc;
    *payload = buf + VMT_FRAME_HEADER_LEN;
    *payload_len = h->length;
    return 0;
}

void vmt_frame_init(vmt_frame *f)
{
    memset(f, 0, sizeof(*f));
}

void vmt_frame_free(vmt_frame *f)
{
    if (!f)
        return;
    free(f->payload);
    memset(f, 0, sizeof(*f));
}

static int send_locked(vmt_transport *t, unsigned type, const void *payload, size_t len,
                       uint64_t deadline)
{
    uint8_t small[VMT_FRAME_HEADER_LEN + FRAME_COALESCE];

    vmt_frame_header_build(type, payload, len, small);
    if (len <= FRAME_COALESCE) {
        if (len)
            memcpy(small + VMT_FRAME_HEADER_LEN, payload, len);
        return vmt_transport_send_deadline(t, small, VMT_FRAME_HEADER_LEN + len, deadline);
    }
    int rc = vmt_transport_send_deadline(t, small, VMT_FRAME_HEADER_LEN, deadline);
    return rc ? rc : vmt_transport_send_deadline(t, payload, len, deadline);
}

/* Reads a pending ERROR frame through the implementation (see
 * vmt_frame_explain); 0 and the peer's code in *code when there was one. */
static int read_reason(vmt_transport *t, int *code)
{
    uint8_t hdr[VMT_FRAME_HEADER_LEN], payload[1024];
    vmt_frame_header h;
    vmt_wire_msg m;
    uint64_t deadline = vmt_net_deadline(EXPLAIN_TIMEOUT_MS);

    if (vmt_transport_recv_raw(t, hdr, sizeof(hdr), deadline) != 0 ||
        vmt_frame_header_parse(hdr, &h) != 0 || h.type != VMT_WIRE_ERROR ||
        h.length > sizeof(payload) ||
        vmt_transport_recv_raw(t, payload, h.length, deadline) != 0 ||
        vmt_frame_verify(hdr, payload, h.length) != 0 ||
        vmt_wire_decode(VMT_WIRE_ERROR, payload, h.length, &m) != 0)
        return VMT_ERR;
    vmt_error_set(m.u.error.code, "peer %s: %s", vmt_transport_peer(t), m.u.error.message);
    *code = m.u.error.code;
    return 0;
}

int vmt_frame_explain(vmt_transport *t, int rc)
{
    char msg[512];
    int code = rc;

    if (rc != VMT_EIO || vmt_transport_failed_by_peer(t) || !vmt_transport_recv_trylock(t))
        return rc;
    snprintf(msg, sizeof(msg), "%s", vmt_error_last());
    bool told = read_reason(t, &code) == 0;
    vmt_transport_recv_unlock(t);
    if (!told)
        return vmt_error_set(rc, "%s", msg);
    return vmt_transport_fail_by_peer(t, code);
}

int vmt_frame_send(vmt_transport *t, unsigned type, const void *payload, size_t len)
{
    size_t cap = vmt_frame_max_payload(type);
    if (cap == 0 || len > cap || (len && !payload))
        return vmt_error_set(VMT_EINVAL, "frame send: %s with %zu bytes (cap %zu)",
                             vmt_wire_type_name(type), len, cap);
    vmt_transport_send_lock(t);
    int rc = send_locked(t, type, payload, len, vmt_net_deadline(vmt_transport_timeout(t)));
    vmt_transport_send_unlock(t);
    return rc == VMT_EIO ? vmt_frame_explain(t, rc) : rc;
}

int vmt_frame_send_msg(vmt_transport *t, const vmt_wire_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = vmt_wire_encode(m, &buf, &len);
    if (rc)
        return rc;
    rc = vmt_frame_send(t, m->type, buf, len);
    free(buf);
    return rc;
}

void vmt_frame_tell(vmt_transport *t, int code, const char *msg)
{
    vmt_wire_msg m;

    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_ERROR;
    m.u.error.code = code < 0 ? code : VMT_ERR;
    snprintf(m.u.error.message, sizeof(m.u.error.message), "%s", msg);
    /* Skipped if another thread is in the middle of a frame (the peer then
     * sees only the close). */
    if (vmt_transport_error(t) || !vmt_transport_send_trylock(t))
        return;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (vmt_wire_encode(&m, &buf, &len) == 0)
        (void)send_locked(t, VMT_WIRE_ERROR, buf, len, vmt_net_deadline(REFUSE_TIMEOUT_MS));
    free(buf);
    vmt_transport_send_unlock(t);
}

int vmt_frame_refuse(vmt_transport *t, int code)
{
    char msg[VMT_WIRE_TEXT_MAX];

    snprintf(msg, sizeof(msg), "%s", vmt_error_last());
    vmt_frame_tell(t, code, msg);
    vmt_error_set(code, "%s", msg);
    code = vmt_transport_fail(t, code);
    vmt_transport_shutdown(t);
    return code;
}

/* An ERROR frame from the peer becomes our error. */
static int peer_error(vmt_transport *t, const vmt_frame *f)
{
    vmt_wire_msg m;
    int rc = vmt_wire_decode(VMT_WIRE_ERROR, f->payload, f->len, &m);
    if (rc)
        return vmt_frame_refuse(t, rc);
    vmt_error_set(m.u.error.code, "peer %s: %s", vmt_transport_peer(t), m.u.error.message);
    rc = vmt_transport_fail_by_peer(t, m.u.error.code);
    vmt_transport_shutdown(t);
    return rc;
}

/* Makes room for len payload bytes (len is at most the type's cap). */
static int frame_reserve(vmt_frame *f, size_t len)
{
    if (len <= f->cap)
        return 0;
    size_t cap = VMT_MAX(len, VMT_MIN(f->cap * 2, (size_t)VMT_FRAME_MAX_PAYLOAD));
    uint8_t *p = realloc(f->payload, cap);
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "frame: out of memory for %zu bytes", len);
    f->payload = p;
    f->cap = cap;
    return 0;
}

int vmt_frame_recv(vmt_transport *t, vmt_frame *f, uint32_t timeout_ms)
{
    uint8_t hdr[VMT_FRAME_HEADER_LEN];
    vmt_frame_header h;

    f->type = 0;
    f->len = 0;
    /* timeout_ms bounds the wait for the frame to begin; once it has, the
     * rest comes within the stream's own timeout (a short poll must not cut
     * a frame in half). */
    size_t got = 0;
    int rc = vmt_transport_recv_some(t, hdr, sizeof(hdr), &got, timeout_ms);
    if (rc == 0 && got < sizeof(hdr))
        rc = vmt_transport_recv(t, hdr + got, sizeof(hdr) - got);
    if (rc)
        return rc;
    if ((rc = vmt_frame_header_parse(hdr, &h)) != 0)
        return vmt_frame_refuse(t, rc);
    if ((rc = frame_reserve(f, h.length)) != 0)
        return vmt_frame_refuse(t, rc);
    if (h.length && (rc = vmt_transport_recv(t, f->payload, h.length)) != 0)
        return rc;
    if ((rc = vmt_frame_verify(hdr, f->payload, h.length)) != 0)
        return vmt_frame_refuse(t, rc);
    f->type = h.type;
    f->len = h.length;
    if (f->type == VMT_WIRE_ERROR)
        return peer_error(t, f);
    return 0;
}
