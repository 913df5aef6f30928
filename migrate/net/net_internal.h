/*
 * Internals of migrate/net: byte-order and varint helpers, deadlines, the
 * hooks the TLS transport needs into the socket transport, and the
 * per-stream handshake used by the session.  Never installed.
 */
#ifndef VMTREE_NET_INTERNAL_H
#define VMTREE_NET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/net.h"

/* ---- deadlines ----------------------------------------------------------- */

/* The absolute deadline timeout_ms from now (UINT64_MAX for FOREVER). */
uint64_t vmt_net_deadline(uint32_t timeout_ms);
/* Milliseconds left until deadline for poll(): -1 for none, 0 when past. */
int vmt_net_poll_ms(uint64_t deadline_ns);
/* Milliseconds left (FOREVER for none, 0 when past). */
uint32_t vmt_net_left_ms(uint64_t deadline_ns);

/* ---- byte order ---------------------------------------------------------- */

static inline void vmt_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void vmt_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint16_t vmt_get_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t vmt_get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t vmt_get_be64(const uint8_t *p)
{
    return ((uint64_t)vmt_get_be32(p) << 32) | vmt_get_be32(p + 4);
}

/* ---- varints (unsigned LEB128, at most 10 bytes) ------------------------- */

#define VMT_VARINT_MAX 10u

/* Writes v at p (room for VMT_VARINT_MAX bytes); returns the bytes used. */
static inline size_t vmt_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Reads a varint from p[*pos..end); false when truncated, longer than 10
 * bytes or above 2^64-1.  Advances *pos on success only. */
static inline bool vmt_varint_get(const uint8_t *p, size_t end, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = *pos;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (i >= end)
            return false;
        uint8_t b = p[i++];
        if (shift == 63 && b > 1)
            return false;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pos = i;
            *out = v;
            return true;
        }
    }
    return false;
}

/* ---- socket transport hooks (for TLS) ------------------------------------ */

/* The file descriptor of a socket transport (TCP, socketpair), or -1. */
int vmt_sock_fd(vmt_transport *t);

/* Sends with an explicit deadline (vmt_transport_send uses the timeout). */
int vmt_transport_send_deadline(vmt_transport *t, const void *buf, size_t len, uint64_t deadline);

/* The frame lock: held while one frame (header + payload) is sent, so that
 * frames from two threads (a refusal and a regular send) never interleave. */
void vmt_transport_send_lock(vmt_transport *t);
bool vmt_transport_send_trylock(vmt_transport *t);
void vmt_transport_send_unlock(vmt_transport *t);

/* Sends an ERROR frame {code, msg} (best effort: short deadline, skipped
 * while another thread sends a frame or after a failure); nothing else. */
void vmt_frame_tell(vmt_transport *t, int code, const char *msg);

/* The receive lock, held by every receive: a thread that wants to read
 * out of turn (vmt_frame_explain) takes it only when nobody receives. */
bool vmt_transport_recv_trylock(vmt_transport *t);
void vmt_transport_recv_unlock(vmt_transport *t);
/* Reads exactly len bytes through the implementation, whatever the sticky
 * state (the caller holds the receive lock).  No counting. */
int vmt_transport_recv_raw(vmt_transport *t, void *buf, size_t len, uint64_t deadline);

/* After a failed send (rc): the peer may have said why before closing.
 * Reads a pending ERROR frame (briefly, if no other thread is receiving)
 * and returns its code with "peer <who>: <reason>"; otherwise rc with the
 * message as it was. */
int vmt_frame_explain(vmt_transport *t, int rc);

/* Records the peer's stated reason (an ERROR frame) as the sticky error;
 * it replaces a local error that was only its consequence. */
int vmt_transport_fail_by_peer(vmt_transport *t, int code);
bool vmt_transport_failed_by_peer(const vmt_transport *t);

/* The implementation behind a transport (for wrappers that need it). */
const vmt_transport_ops *vmt_transport_get_ops(const vmt_transport *t);
void *vmt_transport_get_impl(const vmt_transport *t);

/* ---- listeners (TCP, RDMA) ------------------------------------------------ */

/* A listener implementation.  accept waits until deadline (absolute
 * vmt_now_ns; UINT64_MAX none) for one connection: VMT_ETIMEDOUT then. */
typedef struct vmt_listener_ops {
    vmt_net_scheme scheme;
    int (*accept)(void *impl, vmt_transport **out, uint64_t deadline);
    void (*close)(void *impl);
} vmt_listener_ops;

/* Wraps an implementation (ownership of impl taken, closed also on
 * failure).  Errors: VMT_ENOMEM. */
int vmt_listener_new(vmt_listener **out, const vmt_listener_ops *ops, void *impl, uint16_t port);

/* ---- authentication --------------------------------------------------------- */

/* What both sides' MACs cover (docs/wire-protocol.md "Authentication"). */
typedef struct vmt_auth_transcript {
    uint32_t min_version, max_version; /* the client's offer */
    uint32_t version, features;        /* what the server chose */
    const uint8_t *session_id;         /* VMT_WIRE_SESSION_ID_LEN */
    uint32_t stream_index;
    const uint8_t *client_nonce, *server_nonce; /* VMT_WIRE_NONCE_LEN each */
} vmt_auth_transcript;

/* HMAC-SHA256(key, label || transcript) for the client (server = false) or
 * the server.  Errors: VMT_ERR (OpenSSL failed). */
int vmt_auth_mac(const uint8_t *key, size_t key_len, bool server, const vmt_auth_transcript *tr,
                 uint8_t mac[VMT_WIRE_MAC_LEN]);
/* Constant-time comparison of two MACs. */
bool vmt_auth_equal(const uint8_t *a, const uint8_t *b);
/* Fills buf with cryptographically random bytes.  Errors: VMT_ERR. */
int vmt_auth_random(uint8_t *buf, size_t len);

/* ---- per-stream handshake (net_handshake.c) ---------------------------------- */

/* What a stream's handshake agreed. */
typedef struct vmt_hs_result {
    uint32_t version, features;
    uint8_t session_id[VMT_WIRE_SESSION_ID_LEN];
    uint32_t stream_index, nstreams;
} vmt_hs_result;

/*
 * Client handshake on stream `index` of `nstreams` under session_id.
 * Server handshake: `expect` NULL for stream 0 (anything valid), else the
 * session's agreed result (the stream must carry its session id, version
 * range including its version, and an index in 1..nstreams-1).
 * Both refuse the peer with an ERROR frame on failure.
 */
int vmt_hs_client(vmt_transport *t, const vmt_session_config *c, const uint8_t *session_id,
                  unsigned index, unsigned nstreams, vmt_hs_result *out);
int vmt_hs_server(vmt_transport *t, const vmt_session_config *c, const vmt_hs_result *expect,
                  vmt_hs_result *out);

/* ---- page records shared by the batch writer and reader ------------------ */

/* Batch header flags: bits 0-1 the whole-batch codec; others must be 0. */
#define VMT_BATCH_CODEC_MASK 0x3u
/* Largest record payload by encoding (LZ4/ZSTD bounds of one page). */
size_t vmt_batch_enc_max(vmt_page_enc enc);

#endif
