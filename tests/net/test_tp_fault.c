/*
 * Fault injection (tp_fault.c): the wrapper cuts at exactly the byte asked
 * for, in either direction; and a full session handshake plus migration
 * exchange over TCP cut at 24 random byte offsets (sent and received, on
 * the control stream and on a data stream) always ends with a clean error
 * on both sides, within the timeouts, with nothing partial applied at the
 * destination.  Random single-byte corruption is caught the same way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"

#define CUTS 24
#define CUT_TIMEOUT_MS 2000u

static void test_cut_after_exactly_n_sent(void)
{
    vmt_transport *a0, *a, *b;
    vmt_fault_opts o;
    uint8_t buf[100], in[100];
    CU_ASSERT_EQUAL_FATAL(net_pair_tcp(&a0, &b), 0);
    vmt_fault_opts_init(&o);
    o.cut_after_sent = 37;
    CU_ASSERT_EQUAL_FATAL(vmt_transport_fault(&a, a0, &o), 0);
    net_fill(buf, sizeof(buf), 1);
    CU_ASSERT_EQUAL(vmt_transport_send(a, buf, 30), 0);
    CU_ASSERT_EQUAL(vmt_transport_send(a, buf + 30, 20), VMT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "cut after 37 bytes sent"));
    CU_ASSERT_EQUAL(vmt_transport_send(a, buf, 1), VMT_EIO); /* sticky */
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 37), 0);
    CU_ASSERT(memcmp(in, buf, 37) == 0);
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 1), VMT_EIO);
    CU_ASSERT_TRUE(vmt_transport_eof(b));
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static void test_cut_after_exactly_n_received(void)
{
    vmt_transport *b0, *a, *b;
    vmt_fault_opts o;
    uint8_t buf[100], in[100];
    CU_ASSERT_EQUAL_FATAL(net_pair_tcp(&a, &b0), 0);
    vmt_fault_opts_init(&o);
    o.cut_after_recv = 10;
    CU_ASSERT_EQUAL_FATAL(vmt_transport_fault(&b, b0, &o), 0);
    net_fill(buf, sizeof(buf), 2);
    CU_ASSERT_EQUAL(vmt_transport_send(a, buf, 100), 0);
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 10), 0);
    CU_ASSERT(memcmp(in, buf, 10) == 0);
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 1), VMT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "fault injection"));
    /* the peer's next send meets the cut (EPIPE/ECONNRESET) or its data is
     * dropped; its receive sees the end */
    CU_ASSERT_EQUAL(vmt_transport_recv(a, in, 1), VMT_EIO);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

/* ---- the full exchange, cut ----------------------------------------------- */

typedef struct cut_plan {
    unsigned stream;       /* which client stream is wrapped */
    vmt_fault_opts o;
    vmt_transport *tp;     /* the wrapped transport (for byte counts) */
} cut_plan;

typedef struct dial_ctx {
    uint16_t port;
    cut_plan *plan;
} dial_ctx;

static int dial(void *ctx, unsigned index, vmt_transport **out)
{
    dial_ctx *d = ctx;
    vmt_transport *t = NULL;
    int rc = vmt_tcp_connect(&t, "127.0.0.1", d->port, CUT_TIMEOUT_MS);
    if (rc || index != d->plan->stream) {
        *out = t;
        return rc;
    }
    rc = vmt_transport_fault(out, t, &d->plan->o);
    d->plan->tp = *out;
    return rc;
}

typedef struct dest_job {
    vmt_listener *l;
    vmt_session_config c;
    net_mig *m;
} dest_job;

static int dest_fn(void *arg)
{
    dest_job *j = arg;
    vmt_session *s = NULL;
    int rc = vmt_session_accept(&s, j->l, &j->c);
    if (rc == 0)
        rc = net_mig_dest(s, j->m);
    vmt_session_close(s);
    return rc;
}

typedef struct outcome {
    int src, dst;
    char src_msg[512], dst_msg[512];
    uint64_t ms;
    uint64_t sent, received; /* through the wrapped stream */
} outcome;

static const uint8_t psk[] = "fault injection pre-shared key!!";

/* One whole exchange with the plan's fault; fills the outcome. */
static void exchange(net_mig *m, cut_plan *plan, outcome *out)
{
    dest_job j = {.m = m};
    vmt_session_config c;
    vmt_session *s = NULL;
    net_thread th;

    vmt_session_config_init(&j.c);
    j.c.psk = psk;
    j.c.psk_len = sizeof(psk) - 1;
    j.c.timeout_ms = CUT_TIMEOUT_MS;
    c = j.c;
    c.nstreams = 2;
    memset(m->dst, 0, (size_t)m->npages * VMT_NET_PAGE_SIZE);
    m->committed = m->acked = false;
    m->wanted = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_listen(&j.l, "127.0.0.1", 0), 0);
    dial_ctx d = {vmt_listener_port(j.l), plan};
    uint64_t t0 = vmt_now_ns();
    net_spawn(&th, dest_fn, &j);
    out->src = vmt_session_client(&s, &c, dial, &d);
    if (out->src == 0)
        out->src = net_mig_source(s, m);
    snprintf(out->src_msg, sizeof(out->src_msg), "%s", vmt_error_last());
    if (plan->tp && s) { /* a failed setup closed it */
        out->sent = vmt_transport_bytes_sent(plan->tp);
        out->received = vmt_transport_bytes_received(plan->tp);
    }
    vmt_session_close(s); /* ends the destination's wait if it still waits */
    out->dst = net_join(&th);
    snprintf(out->dst_msg, sizeof(out->dst_msg), "%s", th.msg);
    out->ms = (vmt_now_ns() - t0) / 1000000;
    vmt_listener_close(j.l);
    plan->tp = NULL;
}

static void test_cuts_at_random_offsets(void)
{
    net_mig m;
    outcome clean[2], o;
    uint64_t seed = 0xc0ffee;
    CU_ASSERT_EQUAL_FATAL(net_mig_init(&m, 400, 2, 3), 0);
    m.xbzrle = true;
    m.use_haveset = true;
    m.bopts.page_codec = VMT_PAGE_LZ4;
    m.batch_pages = 32;
    /* Clean runs tell how many bytes each client stream carries. */
    for (unsigned st = 0; st < 2; st++) {
        cut_plan plan = {.stream = st};
        vmt_fault_opts_init(&plan.o);
        exchange(&m, &plan, &clean[st]);
        CU_ASSERT_EQUAL_FATAL(clean[st].src, 0);
        CU_ASSERT_EQUAL_FATAL(clean[st].dst, 0);
        CU_ASSERT_TRUE(net_mig_dst_matches(&m));
    }
    printf("\n    clean: stream 0 sent %llu / received %llu bytes, stream 1 sent %llu\n",
           (unsigned long long)clean[0].sent, (unsigned long long)clean[0].received,
           (unsigned long long)clean[1].sent);
    for (int i = 0; i < CUTS; i++) {
        cut_plan plan = {.stream = (unsigned)(i % 2)};
        bool on_recv = plan.stream == 0 && i % 4 == 2;
        vmt_fault_opts_init(&plan.o);
        uint64_t total = on_recv ? clean[0].received : clean[plan.stream].sent;
        uint64_t at = net_rand(&seed) % total;
        if (on_recv)
            plan.o.cut_after_recv = at;
        else
            plan.o.cut_after_sent = at;
        exchange(&m, &plan, &o);
        bool late_ack = on_recv && m.committed; /* only the ACK was lost */
        printf("    cut %2d stream %u %-8s at %6llu: %3llu ms, source %s, destination %s%s\n", i,
               plan.stream, on_recv ? "received" : "sent", (unsigned long long)at,
               (unsigned long long)o.ms, vmt_strerror(o.src), vmt_strerror(o.dst),
               late_ack ? " (committed: only the ACK was lost)" : "");
        if (o.src == 0 || (o.dst == 0 && !late_ack))
            printf("      source: %s\n      destination: %s\n", o.src_msg, o.dst_msg);
        CU_ASSERT(o.src != 0);
        CU_ASSERT(o.dst != 0 || late_ack);
        CU_ASSERT(o.ms < 4 * CUT_TIMEOUT_MS);
        /* Nothing partial or foreign in the destination's RAM; a destination
         * that committed has all of it. */
        CU_ASSERT_TRUE(net_mig_dst_plausible(&m));
        if (m.committed)
            CU_ASSERT_TRUE(net_mig_dst_matches(&m));
    }
    net_mig_free(&m);
}

static void test_corruption_at_random_offsets(void)
{
    net_mig m;
    outcome clean, o;
    uint64_t seed = 0xbad;
    CU_ASSERT_EQUAL_FATAL(net_mig_init(&m, 200, 1, 4), 0);
    cut_plan plan = {.stream = 1};
    vmt_fault_opts_init(&plan.o);
    exchange(&m, &plan, &clean);
    CU_ASSERT_EQUAL_FATAL(clean.src, 0);
    for (int i = 0; i < 8; i++) {
        vmt_fault_opts_init(&plan.o);
        plan.o.flip_sent_at = net_rand(&seed) % clean.sent;
        exchange(&m, &plan, &o);
        CU_ASSERT(o.src != 0);
        CU_ASSERT(o.dst != 0);
        CU_ASSERT_TRUE(net_mig_dst_plausible(&m));
        CU_ASSERT_FALSE(m.committed);
    }
    net_mig_free(&m);
}

static const vmt_test_case cases[] = {
    {"cut after exactly N bytes sent", test_cut_after_exactly_n_sent},
    {"cut after exactly N bytes received", test_cut_after_exactly_n_received},
    {"a full exchange cut at 24 random offsets", test_cuts_at_random_offsets},
    {"a full exchange corrupted at random offsets", test_corruption_at_random_offsets},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("fault injection", cases, NULL, NULL);
}
