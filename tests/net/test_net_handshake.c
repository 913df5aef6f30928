/*
 * The per-stream handshake (net_handshake.c), both sides real or one side
 * hand-driven: the right key authenticates both ways; a wrong key is
 * refused on both sides with a clear message; a missing key on either side
 * is refused; versions are negotiated to the highest common one and a gap
 * is refused naming both ranges; nothing but HELLO and then AUTH_RESPONSE
 * is accepted before authentication; a server reflecting the client's MAC
 * is caught; a stream claiming another session is refused.
 */
#include <stdio.h>
#include <string.h>

#include "net_fixture.h"
#include "net_internal.h"

static const uint8_t key_a[] = "correct horse battery staple";
static const uint8_t key_b[] = "correct horse battery stapl3";

typedef struct hs_run {
    vmt_session_config cc, sc;
    vmt_hs_result cr, sr;
    int crc, src;
    char cmsg[512], smsg[512];
} hs_run;

typedef struct srv_job {
    vmt_transport *t;
    hs_run *h;
} srv_job;

static int srv_fn(void *arg)
{
    srv_job *j = arg;
    return vmt_hs_server(j->t, &j->h->sc, NULL, &j->h->sr);
}

static void configs(hs_run *h, const uint8_t *ckey, const uint8_t *skey)
{
    memset(h, 0, sizeof(*h));
    vmt_session_config_init(&h->cc);
    vmt_session_config_init(&h->sc);
    h->cc.psk = ckey;
    h->cc.psk_len = ckey ? sizeof(key_a) - 1 : 0;
    h->sc.psk = skey;
    h->sc.psk_len = skey ? sizeof(key_a) - 1 : 0;
    h->sc.allow_unauthenticated = !skey;
}

/* Runs both sides over an in-memory pair. */
static void run(hs_run *h)
{
    vmt_transport *a, *b;
    uint8_t sid[16];
    net_thread th;
    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&a, &b, 0), 0);
    vmt_transport_set_timeout(a, 2000);
    vmt_transport_set_timeout(b, 2000);
    net_fill(sid, sizeof(sid), 1);
    srv_job j = {b, h};
    net_spawn(&th, srv_fn, &j);
    h->crc = vmt_hs_client(a, &h->cc, sid, 0, 1, &h->cr);
    snprintf(h->cmsg, sizeof(h->cmsg), "%s", vmt_error_last());
    h->src = net_join(&th);
    snprintf(h->smsg, sizeof(h->smsg), "%s", th.msg);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static void test_right_key_authenticates(void)
{
    hs_run h;
    configs(&h, key_a, key_a);
    run(&h);
    CU_ASSERT_EQUAL(h.crc, 0);
    CU_ASSERT_EQUAL(h.src, 0);
    CU_ASSERT_EQUAL(h.cr.version, VMT_NET_PROTO_MAX);
    CU_ASSERT_EQUAL(h.sr.version, VMT_NET_PROTO_MAX);
    CU_ASSERT_EQUAL(h.cr.features, VMT_WIRE_FEAT_ALL);
    CU_ASSERT(memcmp(h.cr.session_id, h.sr.session_id, 16) == 0);
}

static void test_wrong_key_refused_on_both_sides(void)
{
    hs_run h;
    configs(&h, key_a, key_b);
    run(&h);
    CU_ASSERT_EQUAL(h.src, VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(h.smsg, "wrong pre-shared key"));
    CU_ASSERT_EQUAL(h.crc, VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(h.cmsg, "peer"));
    CU_ASSERT_PTR_NOT_NULL(strstr(h.cmsg, "wrong pre-shared key"));
}

static void test_missing_keys_refused(void)
{
    hs_run h;
    configs(&h, NULL, key_a); /* the server wants a key the client lacks */
    run(&h);
    CU_ASSERT_EQUAL(h.crc, VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(h.cmsg, "requires a pre-shared key"));
    CU_ASSERT_EQUAL(h.src, VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(h.smsg, "requires a pre-shared key"));
    configs(&h, key_a, NULL); /* the client insists, the server does not authenticate */
    run(&h);
    CU_ASSERT_EQUAL(h.crc, VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(h.cmsg, "does not authenticate"));
    configs(&h, NULL, NULL); /* both agree to go without */
    h.cc.allow_unauthenticated = true;
    run(&h);
    CU_ASSERT_EQUAL(h.crc, 0);
    CU_ASSERT_EQUAL(h.src, 0);
}

static void test_version_negotiation(void)
{
    hs_run h;
    configs(&h, key_a, key_a);
    h.cc.min_version = 1;
    h.cc.max_version = 3;
    h.sc.min_version = 2;
    h.sc.max_version = 5;
    h.cc.features = VMT_WIRE_FEAT_LZ4 | VMT_WIRE_FEAT_XBZRLE;
    h.sc.features = VMT_WIRE_FEAT_LZ4 | VMT_WIRE_FEAT_ZSTD;
    run(&h);
    CU_ASSERT_EQUAL(h.crc, 0);
    CU_ASSERT_EQUAL(h.cr.version, 3);
    CU_ASSERT_EQUAL(h.sr.version, 3);
    CU_ASSERT_EQUAL(h.cr.features, VMT_WIRE_FEAT_LZ4);
    h.cc.min_version = 2;
    h.cc.max_version = 3;
    h.sc.min_version = 1;
    h.sc.max_version = 1;
    run(&h);
    CU_ASSERT_EQUAL(h.src, VMT_EUNSUPPORTED);
    CU_ASSERT_EQUAL(h.crc, VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(h.cmsg, "no common protocol version"));
    CU_ASSERT_PTR_NOT_NULL(strstr(h.cmsg, "2..3"));
    CU_ASSERT_PTR_NOT_NULL(strstr(h.cmsg, "1..1"));
}

/* ---- hand-driven peers ------------------------------------------------------ */

static void hello_msg(vmt_wire_msg *m, const uint8_t *sid, uint32_t index, uint32_t n)
{
    memset(m, 0, sizeof(*m));
    m->type = VMT_WIRE_HELLO;
    m->u.hello.min_version = VMT_NET_PROTO_MAX;
    m->u.hello.max_version = VMT_NET_PROTO_MAX;
    m->u.hello.features = VMT_WIRE_FEAT_ALL;
    memcpy(m->u.hello.session_id, sid, 16);
    m->u.hello.stream_index = index;
    m->u.hello.nstreams = n;
}

typedef struct raw_srv {
    vmt_transport *t;
    vmt_session_config c;
    const vmt_hs_result *expect;
    vmt_hs_result r;
} raw_srv;

static int raw_srv_fn(void *arg)
{
    raw_srv *s = arg;
    return vmt_hs_server(s->t, &s->c, s->expect, &s->r);
}

/* A client that sends HELLO then `next` (a state message); the server must
 * refuse it before authentication and say so. */
static void early_message(bool send_hello, unsigned next_type, const char *text)
{
    vmt_transport *a, *b;
    vmt_frame f;
    vmt_wire_msg m;
    uint8_t sid[16] = {1};
    net_thread th;
    raw_srv s = {0};
    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&a, &b, 0), 0);
    vmt_session_config_init(&s.c);
    s.c.psk = key_a;
    s.c.psk_len = sizeof(key_a) - 1;
    s.t = b;
    net_spawn(&th, raw_srv_fn, &s);
    vmt_frame_init(&f);
    if (send_hello) {
        hello_msg(&m, sid, 0, 1);
        CU_ASSERT_EQUAL(vmt_frame_send_msg(a, &m), 0);
        CU_ASSERT_EQUAL(vmt_frame_recv(a, &f, 2000), 0); /* HELLO_ACK */
        CU_ASSERT_EQUAL(f.type, VMT_WIRE_HELLO_ACK);
        CU_ASSERT_EQUAL(vmt_frame_recv(a, &f, 2000), 0); /* AUTH_CHALLENGE */
        CU_ASSERT_EQUAL(f.type, VMT_WIRE_AUTH_CHALLENGE);
    }
    memset(&m, 0, sizeof(m));
    m.type = (vmt_wire_type)next_type;
    if (next_type == VMT_WIRE_VM_CONFIG) {
        m.u.vm_config.mem_size = 4096;
        m.u.vm_config.npages = 1;
        m.u.vm_config.vcpus = 1;
    } else if (next_type == VMT_WIRE_STATE_BLOB) {
        m.u.state_blob.data = sid;
        m.u.state_blob.len = sizeof(sid);
    }
    CU_ASSERT_EQUAL(vmt_frame_send_msg(a, &m), 0);
    CU_ASSERT_EQUAL(net_join(&th), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(th.msg, text));
    /* The client is told, then the stream ends. */
    CU_ASSERT_EQUAL(vmt_frame_recv(a, &f, 2000), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), text));
    vmt_frame_free(&f);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static void test_nothing_before_authentication(void)
{
    early_message(true, VMT_WIRE_VM_CONFIG,
                  "expected AUTH_RESPONSE, got VM_CONFIG before authentication");
    early_message(true, VMT_WIRE_STATE_BLOB,
                  "expected AUTH_RESPONSE, got STATE_BLOB before authentication");
    early_message(false, VMT_WIRE_VM_CONFIG, "expected HELLO, got VM_CONFIG before the handshake");
    early_message(false, VMT_WIRE_COMMIT, "expected HELLO, got COMMIT before the handshake");
}

/* A rogue server that does not know the key sends the client's own MAC back. */
static int reflect_fn(void *arg)
{
    vmt_transport *t = arg;
    vmt_frame f;
    vmt_wire_msg m;
    vmt_frame_init(&f);
    int rc = vmt_frame_recv(t, &f, 2000); /* HELLO */
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_HELLO_ACK;
    m.u.hello_ack = (vmt_wire_hello_ack){VMT_NET_PROTO_MAX, VMT_WIRE_FEAT_ALL, VMT_WIRE_AUTH_PSK};
    if (rc == 0)
        rc = vmt_frame_send_msg(t, &m);
    m.type = VMT_WIRE_AUTH_CHALLENGE;
    net_fill(m.u.auth_challenge.nonce, 32, 9);
    if (rc == 0)
        rc = vmt_frame_send_msg(t, &m);
    if (rc == 0)
        rc = vmt_frame_recv(t, &f, 2000); /* the client's AUTH_RESPONSE */
    if (rc == 0)
        rc = vmt_frame_send(t, VMT_WIRE_AUTH_RESPONSE, f.payload, f.len); /* echoed */
    if (rc == 0)
        rc = vmt_frame_recv(t, &f, 2000); /* the client's verdict */
    vmt_frame_free(&f);
    return rc;
}

static void test_reflected_mac_is_caught(void)
{
    vmt_transport *a, *b;
    vmt_session_config c;
    vmt_hs_result r;
    uint8_t sid[16] = {2};
    net_thread th;
    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&a, &b, 0), 0);
    vmt_session_config_init(&c);
    c.psk = key_a;
    c.psk_len = sizeof(key_a) - 1;
    net_spawn(&th, reflect_fn, b);
    CU_ASSERT_EQUAL(vmt_hs_client(a, &c, sid, 0, 1, &r), VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "does not know our pre-shared key"));
    CU_ASSERT_EQUAL(net_join(&th), VMT_EAUTH); /* the rogue is told too */
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static void test_stream_of_another_session_refused(void)
{
    vmt_transport *a, *b;
    vmt_frame f;
    vmt_wire_msg m;
    uint8_t other[16] = {7};
    net_thread th;
    raw_srv s = {0};
    vmt_hs_result expect = {.version = VMT_NET_PROTO_MAX, .features = VMT_WIRE_FEAT_ALL, .nstreams = 2};
    memset(expect.session_id, 0x33, 16);
    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&a, &b, 0), 0);
    vmt_session_config_init(&s.c);
    s.c.psk = key_a;
    s.c.psk_len = sizeof(key_a) - 1;
    s.t = b;
    s.expect = &expect;
    net_spawn(&th, raw_srv_fn, &s);
    hello_msg(&m, other, 1, 2);
    CU_ASSERT_EQUAL(vmt_frame_send_msg(a, &m), 0);
    CU_ASSERT_EQUAL(net_join(&th), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(th.msg, "does not belong to the session"));
    vmt_frame_init(&f);
    CU_ASSERT_EQUAL(vmt_frame_recv(a, &f, 2000), VMT_EPROTO);
    vmt_frame_free(&f);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static void test_garbage_refused_before_anything(void)
{
    vmt_transport *a, *b;
    net_thread th;
    raw_srv s = {0};
    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&a, &b, 0), 0);
    vmt_session_config_init(&s.c);
    s.c.psk = key_a;
    s.c.psk_len = sizeof(key_a) - 1;
    s.t = b;
    net_spawn(&th, raw_srv_fn, &s);
    static const char junk[] = "SSH-2.0-OpenSSH_9.2\r\nmore bytes that must never be read";
    CU_ASSERT_EQUAL(vmt_transport_send(a, junk, sizeof(junk) - 1), 0);
    CU_ASSERT_EQUAL(net_join(&th), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(th.msg, "not a vmtree migration stream"));
    CU_ASSERT_EQUAL(vmt_transport_bytes_received(b), VMT_FRAME_HEADER_LEN);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static const vmt_test_case cases[] = {
    {"the right key authenticates both ways", test_right_key_authenticates},
    {"a wrong key is refused on both sides", test_wrong_key_refused_on_both_sides},
    {"a missing key is refused", test_missing_keys_refused},
    {"version negotiation: highest common, or refused", test_version_negotiation},
    {"nothing but the handshake before authentication", test_nothing_before_authentication},
    {"a reflected MAC is caught", test_reflected_mac_is_caught},
    {"a stream of another session is refused", test_stream_of_another_session_refused},
    {"garbage is refused before anything is read", test_garbage_refused_before_anything},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("handshake", cases, NULL, NULL);
}
