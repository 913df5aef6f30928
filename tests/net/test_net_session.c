/*
 * Sessions (net_session.c) over real TCP on 127.0.0.1: setup of 1, 2 and 4
 * authenticated streams (also under TLS); the reference migration exchange
 * end to end with every page encoding, checking the destination's RAM byte
 * for byte; the WANT path for HaveSet false positives; one failure failing
 * the whole session and waking threads on other streams; a message out of
 * order refused; config checks.
 */
#include <stdio.h>
#include <string.h>

#include "net_fixture.h"

static const uint8_t psk[] = "session test key, 32 bytes long!";

static void cfgs(vmt_session_config *c, vmt_session_config *s, unsigned n)
{
    vmt_session_config_init(c);
    vmt_session_config_init(s);
    c->nstreams = n;
    c->psk = s->psk = psk;
    c->psk_len = s->psk_len = sizeof(psk) - 1;
    c->timeout_ms = s->timeout_ms = NET_TIMEOUT_MS;
}

static void test_setup_of_n_streams(void)
{
    static const unsigned ns[] = {1, 2, 4, VMT_NET_MAX_STREAMS};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(ns); i++) {
        vmt_session_config c, s;
        net_session_pair p;
        cfgs(&c, &s, ns[i]);
        int rc = net_session_pair_tcp(&p, &c, &s);
        if (rc)
            fprintf(stderr, "client: %s / server: %s\n", p.client_msg, p.server_msg);
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        CU_ASSERT_EQUAL(vmt_session_nstreams(p.client), ns[i]);
        CU_ASSERT_EQUAL(vmt_session_nstreams(p.server), ns[i]);
        CU_ASSERT_EQUAL(vmt_session_version(p.client), VMT_NET_PROTO_MAX);
        CU_ASSERT_EQUAL(vmt_session_features(p.server), VMT_WIRE_FEAT_ALL);
        CU_ASSERT_PTR_NOT_NULL(vmt_session_stream(p.client, ns[i] - 1));
        CU_ASSERT_PTR_NULL(vmt_session_stream(p.client, ns[i]));
        vmt_session_stats st;
        vmt_session_get_stats(p.client, &st);
        CU_ASSERT(st.bytes_sent > 0 && st.bytes_received > 0 && st.handshake_ns > 0);
        net_session_pair_close(&p);
    }
}

/* ---- the exchange end to end --------------------------------------------- */

typedef struct dest_job {
    vmt_session *s;
    net_mig *m;
} dest_job;

static int dest_fn(void *arg)
{
    dest_job *j = arg;
    return net_mig_dest(j->s, j->m);
}

/* Runs the reference exchange over a session pair; both must succeed. */
static void migrate(net_session_pair *p, net_mig *m)
{
    net_thread th;
    dest_job j = {p->server, m};
    net_spawn(&th, dest_fn, &j);
    int rc = net_mig_source(p->client, m);
    if (rc)
        fprintf(stderr, "source: %s\n", vmt_error_last());
    CU_ASSERT_EQUAL(rc, 0);
    int drc = net_join(&th);
    if (drc)
        fprintf(stderr, "destination: %s\n", th.msg);
    CU_ASSERT_EQUAL(drc, 0);
    CU_ASSERT_TRUE(m->committed);
    CU_ASSERT_TRUE(m->acked);
    CU_ASSERT_TRUE(net_mig_dst_matches(m));
    CU_ASSERT(memcmp(m->got_state, m->state, sizeof(m->state)) == 0);
}

typedef struct variant {
    unsigned streams, rounds;
    vmt_page_enc codec;
    vmt_batch_codec bc;
    bool xbzrle, haveset, tls;
} variant;

static void run_variant(const variant *v)
{
    vmt_session_config c, s;
    net_session_pair p;
    net_mig m;
    cfgs(&c, &s, v->streams);
    if (v->tls) {
        c.tls = net_tls_client();
        s.tls = net_tls_server();
    }
    CU_ASSERT_EQUAL_FATAL(net_session_pair_tcp(&p, &c, &s), 0);
    CU_ASSERT_EQUAL_FATAL(net_mig_init(&m, 1500, v->rounds, 7), 0);
    m.bopts.page_codec = v->codec;
    m.bopts.batch_codec = v->bc;
    m.xbzrle = v->xbzrle;
    m.use_haveset = v->haveset;
    migrate(&p, &m);
    const vmt_batch_stats *st = &m.stats;
    CU_ASSERT(st->pages[VMT_PAGE_ZERO] > 0);
    if (v->haveset)
        CU_ASSERT(st->pages[VMT_PAGE_REF] > 0);
    if (v->xbzrle && v->rounds > 1)
        CU_ASSERT(st->pages[VMT_PAGE_DELTA] > 0);
    if (v->codec != VMT_PAGE_RAW)
        CU_ASSERT(st->pages[v->codec] > 0);
    CU_ASSERT_EQUAL(m.wanted, 0);
    net_mig_free(&m);
    net_session_pair_close(&p);
}

static void test_exchange_every_encoding(void)
{
    static const variant vs[] = {
        {1, 1, VMT_PAGE_RAW, VMT_BATCH_PLAIN, false, false, false},
        {2, 3, VMT_PAGE_LZ4, VMT_BATCH_PLAIN, true, true, false},
        {4, 4, VMT_PAGE_ZSTD, VMT_BATCH_PLAIN, true, true, false},
        {3, 2, VMT_PAGE_RAW, VMT_BATCH_ZSTD, true, false, false},
        {2, 2, VMT_PAGE_RAW, VMT_BATCH_LZ4, false, true, false},
    };
    for (size_t i = 0; i < VMT_ARRAY_SIZE(vs); i++)
        run_variant(&vs[i]);
}

static void test_exchange_over_tls_and_psk(void)
{
    static const variant v = {2, 2, VMT_PAGE_LZ4, VMT_BATCH_PLAIN, true, true, true};
    run_variant(&v);
}

static void test_false_positives_are_resent(void)
{
    vmt_session_config c, s;
    net_session_pair p;
    net_mig m;
    cfgs(&c, &s, 2);
    CU_ASSERT_EQUAL_FATAL(net_session_pair_tcp(&p, &c, &s), 0);
    CU_ASSERT_EQUAL_FATAL(net_mig_init(&m, 600, 2, 11), 0);
    m.use_haveset = true;
    m.xbzrle = true;
    /* Announce pages the destination does not hold: as a false positive of
     * the set would.  They arrive as REFs, are wanted and resent in full. */
    m.extra = m.ram[0] + 2 * VMT_NET_PAGE_SIZE; /* pfns 2..11: none held */
    m.nextra = 10;
    migrate(&p, &m);
    CU_ASSERT(m.wanted >= 5);
    net_mig_free(&m);
    net_session_pair_close(&p);
}

/* ---- failures --------------------------------------------------------------- */

typedef struct waiter {
    vmt_session *s;
    unsigned stream;
    uint64_t ns;
} waiter;

static int wait_fn(void *arg)
{
    waiter *w = arg;
    vmt_frame f;
    vmt_frame_init(&f);
    uint64_t t0 = vmt_now_ns();
    int rc = vmt_session_recv(w->s, w->stream, &f, 30000);
    w->ns = vmt_now_ns() - t0;
    vmt_frame_free(&f);
    return rc;
}

static void test_abort_fails_both_sessions_and_wakes_threads(void)
{
    vmt_session_config c, s;
    net_session_pair p;
    cfgs(&c, &s, 3);
    CU_ASSERT_EQUAL_FATAL(net_session_pair_tcp(&p, &c, &s), 0);
    waiter w[3] = {{p.server, 0, 0}, {p.server, 2, 0}, {p.client, 1, 0}};
    net_thread th[3];
    for (int i = 0; i < 3; i++)
        net_spawn(&th[i], wait_fn, &w[i]);
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL);
    CU_ASSERT_EQUAL(vmt_session_abort(p.client, VMT_ECANCELED, "operator cancelled"),
                    VMT_ECANCELED);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT(net_join(&th[i]) != 0);
        CU_ASSERT(w[i].ns < 5000000000ull);
    }
    /* The server learned the reason on stream 0. */
    if (th[0].rc != VMT_ECANCELED || !strstr(th[0].msg, "operator cancelled"))
        fprintf(stderr, "stream 0 waiter: %d %s\n", th[0].rc, th[0].msg);
    CU_ASSERT_EQUAL(th[0].rc, VMT_ECANCELED);
    CU_ASSERT_PTR_NOT_NULL(strstr(th[0].msg, "operator cancelled"));
    /* Sticky: every later call on either session fails at once. */
    vmt_wire_msg m = {.type = VMT_WIRE_COMMIT};
    CU_ASSERT(vmt_session_send(p.server, 1, &m) != 0);
    CU_ASSERT_EQUAL(vmt_session_send(p.client, 0, &m), VMT_ECANCELED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "operator cancelled"));
    CU_ASSERT_EQUAL(vmt_session_error(p.client), VMT_ECANCELED);
    net_session_pair_close(&p);
}

static void test_out_of_order_message_refused(void)
{
    vmt_session_config c, s;
    net_session_pair p;
    vmt_wire_msg m = {.type = VMT_WIRE_COMMIT}, got;
    cfgs(&c, &s, 1);
    CU_ASSERT_EQUAL_FATAL(net_session_pair_tcp(&p, &c, &s), 0);
    CU_ASSERT_EQUAL(vmt_session_send(p.client, 0, &m), 0);
    CU_ASSERT_EQUAL(vmt_session_recv_msg(p.server, 0, VMT_WIRE_VM_CONFIG, &got, 2000),
                    VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "expected VM_CONFIG, got COMMIT"));
    CU_ASSERT_EQUAL(vmt_session_recv_msg(p.client, 0, 0, &got, 2000), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "expected VM_CONFIG, got COMMIT"));
    net_session_pair_close(&p);
}

static void test_wrong_key_session(void)
{
    vmt_session_config c, s;
    net_session_pair p;
    static const uint8_t other[] = "session test key, 32 bytes long?";
    cfgs(&c, &s, 2);
    c.psk = other;
    CU_ASSERT_EQUAL(net_session_pair_tcp(&p, &c, &s), VMT_EAUTH);
    CU_ASSERT_EQUAL(p.client_rc, VMT_EAUTH);
    CU_ASSERT_EQUAL(p.server_rc, VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.client_msg, "wrong pre-shared key"));
    CU_ASSERT_PTR_NULL(p.client);
    CU_ASSERT_PTR_NULL(p.server);
}

static void test_config_checks(void)
{
    vmt_session_config c;
    vmt_session *s = NULL;
    vmt_listener *l;
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_listen(&l, "127.0.0.1", 0), 0);
    vmt_session_config_init(&c);
    c.nstreams = 0;
    CU_ASSERT_EQUAL(vmt_session_connect(&s, "127.0.0.1", 1, &c), VMT_EINVAL);
    c.nstreams = VMT_NET_MAX_STREAMS + 1;
    CU_ASSERT_EQUAL(vmt_session_connect(&s, "127.0.0.1", 1, &c), VMT_EINVAL);
    vmt_session_config_init(&c);
    c.psk = psk;
    c.psk_len = 8;
    CU_ASSERT_EQUAL(vmt_session_connect(&s, "127.0.0.1", 1, &c), VMT_EINVAL);
    vmt_session_config_init(&c); /* a server with neither key nor consent */
    CU_ASSERT_EQUAL(vmt_session_accept(&s, l, &c), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "allow_unauthenticated"));
    vmt_session_config_init(&c);
    c.min_version = 3;
    c.max_version = 2;
    CU_ASSERT_EQUAL(vmt_session_connect(&s, "127.0.0.1", 1, &c), VMT_EINVAL);
    CU_ASSERT_PTR_NULL(s);
    /* nobody there */
    uint16_t port = vmt_listener_port(l);
    vmt_listener_close(l);
    vmt_session_config_init(&c);
    CU_ASSERT_EQUAL(vmt_session_connect(&s, "127.0.0.1", port, &c), VMT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "session setup"));
}

static const vmt_test_case cases[] = {
    {"setup of 1, 2, 4 and 16 streams", test_setup_of_n_streams},
    {"the exchange end to end, every encoding", test_exchange_every_encoding},
    {"the exchange over TLS with PSK", test_exchange_over_tls_and_psk},
    {"HaveSet false positives are wanted and resent", test_false_positives_are_resent},
    {"abort fails both sessions and wakes threads",
     test_abort_fails_both_sessions_and_wakes_threads},
    {"a message out of order is refused", test_out_of_order_message_refused},
    {"a wrong key fails the session on both sides", test_wrong_key_session},
    {"config checks", test_config_checks},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("session", cases, NULL, NULL);
}
