/*
 * The transport contract (net.h), one set of test functions run against
 * every transport: ordered delivery of messages of 0 bytes to 16 MiB, exact
 * receives of fragmented data, timeouts (harmless before the first byte,
 * sticky in the middle of a message), the peer's close as a clean EOF,
 * sticky errors, shutdown waking a blocked thread, close delivering what
 * was sent first, full duplex.
 *
 * To run the contract against a new transport, add one line to `kinds`.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net_fixture.h"

typedef struct contract_kind {
    const char *name;
    net_pair_fn pair;
} contract_kind;

static const contract_kind kinds[] = {
    {"tcp", net_pair_tcp},
    {"socketpair", net_pair_socketpair},
    {"mem", net_pair_mem},
    {"tls", net_pair_tls},
    {"rate", net_pair_rate},
    /* {"rdma", net_pair_rdma},   the RDMA issue adds its line here */
};

static const contract_kind *cur;

static void make_pair(vmt_transport **a, vmt_transport **b)
{
    int rc = cur->pair(a, b);
    if (rc)
        fprintf(stderr, "%s pair: %s\n", cur->name, vmt_error_last());
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    vmt_transport_set_timeout(*a, NET_TIMEOUT_MS);
    vmt_transport_set_timeout(*b, NET_TIMEOUT_MS);
}

static double ms_since(uint64_t t0)
{
    return (double)(vmt_now_ns() - t0) / 1e6;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- ordered delivery ----------------------------------------------------- */

static const size_t sizes[] = {0,    1,    2,    3,           7,           100,      4095,
                               4096, 4097, 65549, (1u << 20) + 3, 5u << 20, 16u << 20};

typedef struct sender {
    vmt_transport *t;
    uint8_t *buf;
    uint64_t seed;
} sender;

static int send_sizes(void *arg)
{
    sender *s = arg;
    for (size_t i = 0; i < VMT_ARRAY_SIZE(sizes); i++) {
        net_fill(s->buf, sizes[i], s->seed + i);
        int rc = vmt_transport_send(s->t, s->buf, sizes[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static void test_ordered_delivery_0_to_16mib(void)
{
    vmt_transport *a, *b;
    make_pair(&a, &b);
    uint8_t *sbuf = malloc(16u << 20), *rbuf = malloc(16u << 20), *want = malloc(16u << 20);
    CU_ASSERT_FATAL(sbuf && rbuf && want);
    sender s = {a, sbuf, 42};
    net_thread th;
    net_spawn(&th, send_sizes, &s);
    for (size_t i = 0; i < VMT_ARRAY_SIZE(sizes); i++) {
        int rc = vmt_transport_recv(b, rbuf, sizes[i]);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc)
            break;
        net_fill(want, sizes[i], 42 + i);
        CU_ASSERT(memcmp(rbuf, want, sizes[i]) == 0);
    }
    CU_ASSERT_EQUAL(net_join(&th), 0);
    uint64_t total = 0;
    for (size_t i = 0; i < VMT_ARRAY_SIZE(sizes); i++)
        total += sizes[i];
    CU_ASSERT_EQUAL(vmt_transport_bytes_sent(a), total);
    CU_ASSERT_EQUAL(vmt_transport_bytes_received(b), total);
    free(sbuf);
    free(rbuf);
    free(want);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

/* ---- exact receive --------------------------------------------------------- */

static int send_fragments(void *arg)
{
    sender *s = arg;
    size_t done = 0, piece = 1;
    while (done < 10000) {
        size_t n = VMT_MIN(piece, 10000 - done);
        int rc = vmt_transport_send(s->t, s->buf + done, n);
        if (rc)
            return rc;
        done += n;
        piece = piece % 97 + 1;
        if (done % 2000 < 100)
            sleep_ms(2);
    }
    return 0;
}

static void test_exact_receive_of_fragmented_data(void)
{
    vmt_transport *a, *b;
    uint8_t out[10000], in[10000];
    make_pair(&a, &b);
    net_fill(out, sizeof(out), 7);
    sender s = {a, out, 0};
    net_thread th;
    net_spawn(&th, send_fragments, &s);
    size_t got = 0;
    CU_ASSERT_EQUAL(vmt_transport_recv_some(b, in, 10, &got, NET_TIMEOUT_MS), 0);
    CU_ASSERT(got >= 1 && got <= 10);
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in + got, sizeof(in) - got), 0);
    CU_ASSERT(memcmp(in, out, sizeof(in)) == 0);
    CU_ASSERT_EQUAL(net_join(&th), 0);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

/* ---- timeouts ---------------------------------------------------------------- */

static void test_timeout_before_first_byte_is_not_sticky(void)
{
    vmt_transport *a, *b;
    uint8_t buf[4] = {1, 2, 3, 4}, in[4];
    make_pair(&a, &b);
    uint64_t t0 = vmt_now_ns();
    CU_ASSERT_EQUAL(vmt_transport_recv_timeout(b, in, 4, 100), VMT_ETIMEDOUT);
    double ms = ms_since(t0);
    CU_ASSERT(ms >= 90 && ms < 3000);
    CU_ASSERT_EQUAL(vmt_transport_error(b), 0);
    CU_ASSERT_EQUAL(vmt_transport_send(a, buf, 4), 0);
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 4), 0);
    CU_ASSERT(memcmp(in, buf, 4) == 0);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static void test_timeout_mid_message_is_sticky(void)
{
    vmt_transport *a, *b;
    uint8_t buf[8] = {0}, in[8];
    make_pair(&a, &b);
    CU_ASSERT_EQUAL(vmt_transport_send(a, buf, 3), 0);
    CU_ASSERT_EQUAL(vmt_transport_recv_timeout(b, in, 8, 200), VMT_ETIMEDOUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "3 of 8"));
    CU_ASSERT_EQUAL(vmt_transport_error(b), VMT_ETIMEDOUT);
    /* Sticky: later calls fail at once without touching the stream. */
    uint64_t before = vmt_transport_bytes_sent(b);
    CU_ASSERT_EQUAL(vmt_transport_send(b, buf, 8), VMT_ETIMEDOUT);
    CU_ASSERT_EQUAL(vmt_transport_bytes_sent(b), before);
    CU_ASSERT_EQUAL(vmt_transport_recv_timeout(b, in, 1, 5000), VMT_ETIMEDOUT);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

/* ---- close and EOF ------------------------------------------------------------ */

static void test_peer_close_is_clean_eof_after_data(void)
{
    vmt_transport *a, *b;
    uint8_t out[1000], in[1000];
    make_pair(&a, &b);
    net_fill(out, sizeof(out), 3);
    CU_ASSERT_EQUAL(vmt_transport_send(a, out, sizeof(out)), 0);
    vmt_transport_close(a);
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, sizeof(in)), 0);
    CU_ASSERT(memcmp(in, out, sizeof(in)) == 0);
    CU_ASSERT_FALSE(vmt_transport_eof(b));
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 1), VMT_EIO);
    CU_ASSERT_TRUE(vmt_transport_eof(b));
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "closed by peer"));
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 1), VMT_EIO);
    CU_ASSERT_EQUAL(vmt_transport_send(b, out, 1), VMT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "closed by peer"));
    vmt_transport_close(b);
}

static void test_peer_close_mid_message(void)
{
    vmt_transport *a, *b;
    uint8_t out[5] = {1, 2, 3, 4, 5}, in[10];
    make_pair(&a, &b);
    CU_ASSERT_EQUAL(vmt_transport_send(a, out, 5), 0);
    vmt_transport_close(a);
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 10), VMT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "5 of 10"));
    CU_ASSERT_EQUAL(vmt_transport_error(b), VMT_EIO);
    vmt_transport_close(b);
}

static void test_fail_keeps_the_first_error(void)
{
    vmt_transport *a, *b;
    make_pair(&a, &b);
    vmt_error_set(VMT_EPROTO, "first");
    CU_ASSERT_EQUAL(vmt_transport_fail(a, VMT_EPROTO), VMT_EPROTO);
    vmt_error_set(VMT_EIO, "second");
    CU_ASSERT_EQUAL(vmt_transport_fail(a, VMT_EIO), VMT_EPROTO);
    CU_ASSERT_STRING_EQUAL(vmt_error_last(), "first");
    CU_ASSERT_EQUAL(vmt_transport_send(a, "x", 1), VMT_EPROTO);
    CU_ASSERT_STRING_EQUAL(vmt_error_last(), "first");
    vmt_transport_close(a);
    vmt_transport_close(b);
}

/* ---- shutdown ------------------------------------------------------------------- */

typedef struct blocked {
    vmt_transport *t;
    double ms;
} blocked;

static int recv_blocked(void *arg)
{
    blocked *bl = arg;
    uint8_t buf[8];
    uint64_t t0 = vmt_now_ns();
    int rc = vmt_transport_recv_timeout(bl->t, buf, sizeof(buf), 20000);
    bl->ms = ms_since(t0);
    return rc;
}

static void test_shutdown_wakes_a_blocked_receiver(void)
{
    vmt_transport *a, *b;
    make_pair(&a, &b);
    blocked bl = {a, 0};
    net_thread th;
    net_spawn(&th, recv_blocked, &bl);
    sleep_ms(100);
    vmt_transport_shutdown(a);
    int rc = net_join(&th);
    CU_ASSERT(rc != 0);
    CU_ASSERT(bl.ms < 5000);
    CU_ASSERT_EQUAL(vmt_transport_send(a, "x", 1), VMT_ECANCELED);
    uint8_t in[1];
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 1), VMT_EIO); /* the peer sees the end */
    vmt_transport_close(a);
    vmt_transport_close(b);
}

/* ---- full duplex ------------------------------------------------------------------ */

#define DUPLEX_BYTES (8u << 20)

typedef struct duplex {
    vmt_transport *t;
    uint8_t *buf;
    uint64_t seed;
} duplex;

static int duplex_send(void *arg)
{
    duplex *d = arg;
    net_fill(d->buf, DUPLEX_BYTES, d->seed);
    return vmt_transport_send(d->t, d->buf, DUPLEX_BYTES);
}

static int duplex_recv(void *arg)
{
    duplex *d = arg;
    int rc = vmt_transport_recv(d->t, d->buf, DUPLEX_BYTES);
    if (rc)
        return rc;
    uint8_t *want = malloc(DUPLEX_BYTES);
    if (!want)
        return VMT_ENOMEM;
    net_fill(want, DUPLEX_BYTES, d->seed);
    rc = memcmp(want, d->buf, DUPLEX_BYTES) ? VMT_ECORRUPT : 0;
    free(want);
    return rc;
}

static void test_full_duplex_does_not_deadlock(void)
{
    vmt_transport *a, *b;
    make_pair(&a, &b);
    duplex d[4] = {{a, malloc(DUPLEX_BYTES), 1}, {b, malloc(DUPLEX_BYTES), 2},
                   {a, malloc(DUPLEX_BYTES), 2}, {b, malloc(DUPLEX_BYTES), 1}};
    net_thread th[4];
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(d[i].buf);
        net_spawn(&th[i], i < 2 ? duplex_send : duplex_recv, &d[i]);
    }
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(net_join(&th[i]), 0);
        free(d[i].buf);
    }
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static void test_peer_description(void)
{
    vmt_transport *a, *b;
    make_pair(&a, &b);
    CU_ASSERT(strlen(vmt_transport_peer(a)) > 0);
    CU_ASSERT(strlen(vmt_transport_peer(b)) > 0);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static const vmt_test_case cases[] = {
    {"ordered delivery of 0 B .. 16 MiB messages", test_ordered_delivery_0_to_16mib},
    {"exact receive of fragmented data", test_exact_receive_of_fragmented_data},
    {"timeout before the first byte is not sticky", test_timeout_before_first_byte_is_not_sticky},
    {"timeout in the middle of a message is sticky", test_timeout_mid_message_is_sticky},
    {"peer close is a clean EOF after its data", test_peer_close_is_clean_eof_after_data},
    {"peer close in the middle of a message", test_peer_close_mid_message},
    {"fail keeps the first error", test_fail_keeps_the_first_error},
    {"shutdown wakes a blocked receiver", test_shutdown_wakes_a_blocked_receiver},
    {"full duplex does not deadlock", test_full_duplex_does_not_deadlock},
    {"peer description", test_peer_description},
    {NULL, NULL},
};

int main(void)
{
    int rc = 0;
    for (size_t i = 0; i < VMT_ARRAY_SIZE(kinds); i++) {
        char name[64];
        cur = &kinds[i];
        snprintf(name, sizeof(name), "transport contract: %s", kinds[i].name);
        rc |= vmt_test_run(name, cases, NULL, NULL);
    }
    return rc;
}
