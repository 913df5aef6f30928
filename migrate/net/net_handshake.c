/*
 * The per-stream handshake (docs/wire-protocol.md "Handshake"):
 *
 *   client                                   server
 *   HELLO {versions, features, session, stream, nonce_c}  ->
 *                     <- HELLO_ACK {version, features, auth}   (or ERROR)
 *   with auth = PSK:
 *                     <- AUTH_CHALLENGE {nonce_s}
 *   AUTH_RESPONSE {MAC_client}  ->
 *                     <- AUTH_RESPONSE {MAC_server}            (or ERROR)
 *
 * The server reads exactly one frame before the key is proven, and accepts
 * only HELLO there, then only AUTH_RESPONSE: no other message can reach
 * anything before authentication.  Each side refuses the other with an
 * ERROR frame (vmt_frame_refuse) and the stream is not read again.
 */
#include <stdio.h>
#include <string.h>

#include "net_internal.h"

#ifndef VMT_NET_SOFTWARE
#define VMT_NET_SOFTWARE "vmtree"
#endif

/* Receives the next frame, which must be the control message `want`. */
static int recv_expect(vmt_transport *t, unsigned want, vmt_wire_msg *m, const char *when)
{
    vmt_frame f;
    vmt_frame_init(&f);
    int rc = vmt_frame_recv(t, &f, vmt_transport_timeout(t));
    if (rc == 0 && f.type != want) {
        vmt_error_set(VMT_EPROTO, "expected %s, got %s %s", vmt_wire_type_name(want),
                      vmt_wire_type_name(f.type), when);
        rc = vmt_frame_refuse(t, VMT_EPROTO);
    }
    if (rc == 0 && (rc = vmt_wire_decode(want, f.payload, f.len, m)) != 0)
        rc = vmt_frame_refuse(t, rc);
    vmt_frame_free(&f);
    return rc;
}

static int send_msg(vmt_transport *t, const vmt_wire_msg *m)
{
    return vmt_frame_send_msg(t, m);
}

static void transcript(vmt_auth_transcript *tr, const vmt_wire_hello *h,
                       const vmt_wire_hello_ack *a, const uint8_t *nonce_s)
{
    tr->min_version = h->min_version;
    tr->max_version = h->max_version;
    tr->version = a->version;
    tr->features = a->features;
    tr->session_id = h->session_id;
    tr->stream_index = h->stream_index;
    tr->client_nonce = h->nonce;
    tr->server_nonce = nonce_s;
}

/* ---- client ----------------------------------------------------------- */

/* The client's half of the PSK exchange. */
static int client_auth(vmt_transport *t, const vmt_session_config *c, const vmt_wire_hello *h,
                       const vmt_wire_hello_ack *a)
{
    vmt_wire_msg m;
    vmt_auth_transcript tr;
    uint8_t nonce_s[VMT_WIRE_NONCE_LEN], want[VMT_WIRE_MAC_LEN];

    if (!c->psk) {
        vmt_error_set(VMT_EAUTH, "the server requires a pre-shared key and none is configured");
        return vmt_frame_refuse(t, VMT_EAUTH);
    }
    int rc = recv_expect(t, VMT_WIRE_AUTH_CHALLENGE, &m, "after HELLO_ACK");
    if (rc)
        return rc;
    memcpy(nonce_s, m.u.auth_challenge.nonce, sizeof(nonce_s));
    transcript(&tr, h, a, nonce_s);
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_AUTH_RESPONSE;
    if ((rc = vmt_auth_mac(c->psk, c->psk_len, false, &tr, m.u.auth_response.mac)) != 0 ||
        (rc = send_msg(t, &m)) != 0)
        return rc;
    if ((rc = recv_expect(t, VMT_WIRE_AUTH_RESPONSE, &m, "after our AUTH_RESPONSE")) != 0 ||
        (rc = vmt_auth_mac(c->psk, c->psk_len, true, &tr, want)) != 0)
        return rc;
    if (!vmt_auth_equal(want, m.u.auth_response.mac)) {
        vmt_error_set(VMT_EAUTH, "authentication failed: the server does not know our "
                                 "pre-shared key");
        return vmt_frame_refuse(t, VMT_EAUTH);
    }
    return 0;
}

/* Checks the server's HelloAck against what we offered. */
static int check_ack(vmt_transport *t, const vmt_session_config *c, const vmt_wire_hello *h,
                     const vmt_wire_hello_ack *a)
{
    if (a->version < h->min_version || a->version > h->max_version) {
        vmt_error_set(VMT_EPROTO, "the server chose protocol version %u, outside our %u..%u",
                      a->version, h->min_version, h->max_version);
        return vmt_frame_refuse(t, VMT_EPROTO);
    }
    if (a->features & ~h->features) {
        vmt_error_set(VMT_EPROTO, "the server accepted features 0x%x we did not offer",
                      a->features & ~h->features);
        return vmt_frame_refuse(t, VMT_EPROTO);
    }
    if (a->auth == VMT_WIRE_AUTH_NONE && c->psk && !c->allow_unauthenticated) {
        vmt_error_set(VMT_EAUTH, "the server does not authenticate and this side requires a "
                                 "pre-shared key");
        return vmt_frame_refuse(t, VMT_EAUTH);
    }
    return 0;
}

int vmt_hs_client(vmt_transport *t, const vmt_session_config *c, const uint8_t *session_id,
                  unsigned index, unsigned nstreams, vmt_hs_result *out)
{
    vmt_wire_msg m;
    vmt_wire_hello h;

    memset(&h, 0, sizeof(h));
    h.min_version = c->min_version;
    h.max_version = c->max_version;
    h.features = c->features;
    memcpy(h.session_id, session_id, VMT_WIRE_SESSION_ID_LEN);
    h.stream_index = index;
    h.nstreams = nstreams;
    snprintf(h.software, sizeof(h.software), "%s", VMT_NET_SOFTWARE);
    int rc = vmt_auth_random(h.nonce, sizeof(h.nonce));
    if (rc)
        return rc;
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_HELLO;
    m.u.hello = h;
    if ((rc = send_msg(t, &m)) != 0 ||
        (rc = recv_expect(t, VMT_WIRE_HELLO_ACK, &m, "after HELLO")) != 0)
        return rc;
    vmt_wire_hello_ack a = m.u.hello_ack;
    if ((rc = check_ack(t, c, &h, &a)) != 0)
        return rc;
    if (a.auth == VMT_WIRE_AUTH_PSK && (rc = client_auth(t, c, &h, &a)) != 0)
        return rc;
    out->version = a.version;
    out->features = a.features;
    memcpy(out->session_id, session_id, VMT_WIRE_SESSION_ID_LEN);
    out->stream_index = index;
    out->nstreams = nstreams;
    return 0;
}

/* ---- server ----------------------------------------------------------- */

/* Checks a Hello: a common version, and for streams after the first, the
 * session it claims.  Fills the agreed version and features into *a. */
static int check_hello(vmt_transport *t, const vmt_session_config *c, const vmt_hs_result *expect,
                       const vmt_wire_hello *h, vmt_wire_hello_ack *a)
{
    uint32_t lo = VMT_MAX(c->min_version, h->min_version);
    uint32_t hi = VMT_MIN(c->max_version, h->max_version);
    if (lo > hi) {
        vmt_error_set(VMT_EUNSUPPORTED, "no common protocol version: the client speaks %u..%u, "
                                        "this server %u..%u",
                      h->min_version, h->max_version, c->min_version, c->max_version);
        return vmt_frame_refuse(t, VMT_EUNSUPPORTED);
    }
    a->version = hi;
    a->features = h->features & c->features;
    a->auth = c->psk ? VMT_WIRE_AUTH_PSK : VMT_WIRE_AUTH_NONE;
    if (!expect) {
        if (h->stream_index != 0 || h->nstreams > c->max_streams) {
            vmt_error_set(VMT_EPROTO, "the first stream is %u of %u (must be 0 of at most %u)",
                          h->stream_index, h->nstreams, c->max_streams);
            return vmt_frame_refuse(t, VMT_EPROTO);
        }
        return 0;
    }
    if (memcmp(h->session_id, expect->session_id, VMT_WIRE_SESSION_ID_LEN) != 0 ||
        h->nstreams != expect->nstreams || h->stream_index == 0 || a->version != expect->version ||
        a->features != expect->features) {
        vmt_error_set(VMT_EPROTO, "stream %u of %u does not belong to the session being set up",
                      h->stream_index, h->nstreams);
        return vmt_frame_refuse(t, VMT_EPROTO);
    }
    return 0;
}

static int server_auth(vmt_transport *t, const vmt_session_config *c, const vmt_wire_hello *h,
                       const vmt_wire_hello_ack *a)
{
    vmt_wire_msg m;
    vmt_auth_transcript tr;
    uint8_t nonce_s[VMT_WIRE_NONCE_LEN], want[VMT_WIRE_MAC_LEN];

    int rc = vmt_auth_random(nonce_s, sizeof(nonce_s));
    if (rc)
        return rc;
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_AUTH_CHALLENGE;
    memcpy(m.u.auth_challenge.nonce, nonce_s, sizeof(nonce_s));
    if ((rc = send_msg(t, &m)) != 0 ||
        (rc = recv_expect(t, VMT_WIRE_AUTH_RESPONSE, &m, "before authentication")) != 0)
        return rc;
    transcript(&tr, h, a, nonce_s);
    if ((rc = vmt_auth_mac(c->psk, c->psk_len, false, &tr, want)) != 0)
        return rc;
    if (!vmt_auth_equal(want, m.u.auth_response.mac)) {
        vmt_error_set(VMT_EAUTH, "authentication failed: wrong pre-shared key");
        return vmt_frame_refuse(t, VMT_EAUTH);
    }
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_AUTH_RESPONSE;
    if ((rc = vmt_auth_mac(c->psk, c->psk_len, true, &tr, m.u.auth_response.mac)) != 0)
        return rc;
    return send_msg(t, &m);
}

int vmt_hs_server(vmt_transport *t, const vmt_session_config *c, const vmt_hs_result *expect,
                  vmt_hs_result *out)
{
    vmt_wire_msg m;
    vmt_wire_hello_ack a;

    int rc = recv_expect(t, VMT_WIRE_HELLO, &m, "before the handshake");
    if (rc)
        return rc;
    vmt_wire_hello h = m.u.hello;
    memset(&a, 0, sizeof(a));
    if ((rc = check_hello(t, c, expect, &h, &a)) != 0)
        return rc;
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_HELLO_ACK;
    m.u.hello_ack = a;
    if ((rc = send_msg(t, &m)) != 0)
        return rc;
    if (a.auth == VMT_WIRE_AUTH_PSK && (rc = server_auth(t, c, &h, &a)) != 0)
        return rc;
    out->version = a.version;
    out->features = a.features;
    memcpy(out->session_id, h.session_id, VMT_WIRE_SESSION_ID_LEN);
    out->stream_index = h.stream_index;
    out->nstreams = h.nstreams;
    return 0;
}
