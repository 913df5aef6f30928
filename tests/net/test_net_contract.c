/*
 * The transport contract (net.h), one set of test functions run against
 * every transport: ordered delivery of messages of 0 bytes to 16 MiB with
 * byte counts, exact receives of fragmented data and recv_some, timeouts
 * (harmless before the first byte, sticky in the middle of a message), the
 * peer's close as a clean EOF, sticky errors, shutdown waking a blocked
 * receiver and a blocked sender, close delivering what was sent first,
 * full duplex with concurrent send and receive threads, and bulk placement
 * (offered and working, or refused with VMT_EUNSUPPORTED leaving the
 * stream usable so that callers fall back to frames).
 *
 * Kinds: tcp, socketpair, mem, tls, rate, fault (transparent wrapper) and
 * rdma.  rdma needs an RDMA device; without one its suite is skipped with
 * the reason printed.  `test_net_contract KIND` runs one kind and exits 77
 * (ctest: skipped) when that kind cannot run here.
 *
 * To run the contract against a new transport, add one line to `kinds`.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net_fixture.h"
#include "net_internal.h"

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
    {"fault", net_pair_fault},
    {"rdma", net_pair_rdma},
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

/* ---- shutdown of a blocked sender ------------------------------------------ */

#define FLOOD_BYTES (256u << 20)

static int send_flood(void *arg)
{
    blocked *bl = arg;
    uint8_t *buf = calloc(1, 1u << 20);
    if (!buf)
        return VMT_ENOMEM;
    uint64_t t0 = vmt_now_ns();
    int rc = 0;
    vmt_transport_set_timeout(bl->t, 20000);
    for (size_t done = 0; done < FLOOD_BYTES && rc == 0; done += 1u << 20)
        rc = vmt_transport_send(bl->t, buf, 1u << 20);
    bl->ms = ms_since(t0);
    free(buf);
    return rc;
}

static void test_shutdown_wakes_a_blocked_sender(void)
{
    vmt_transport *a, *b;
    make_pair(&a, &b);
    blocked bl = {a, 0};
    net_thread th;
    net_spawn(&th, send_flood, &bl); /* nobody reads: the sender blocks */
    sleep_ms(300);
    vmt_transport_shutdown(a);
    int rc = net_join(&th);
    CU_ASSERT(rc != 0);
    CU_ASSERT(bl.ms < 10000);
    CU_ASSERT(vmt_transport_bytes_sent(a) < FLOOD_BYTES);
    CU_ASSERT_EQUAL(vmt_transport_error(a), VMT_ECANCELED);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

/* ---- bulk placement ---------------------------------------------------------- */

#define BULK_PAGES 96u

static void check_bulk_refused(vmt_transport *a, vmt_transport *b, uint8_t *ram)
{
    uint8_t msg[5] = "still", in[5];
    CU_ASSERT_EQUAL(vmt_transport_bulk_expose(b, ram, BULK_PAGES * VMT_NET_PAGE_SIZE, NULL),
                    VMT_EUNSUPPORTED);
    CU_ASSERT_FALSE(vmt_transport_bulk_can_place(a));
    CU_ASSERT_EQUAL(vmt_transport_bulk_place(a, 0, ram, VMT_NET_PAGE_SIZE), VMT_EUNSUPPORTED);
    /* Refused, not broken: the caller falls back to frames on the same stream. */
    CU_ASSERT_EQUAL(vmt_transport_error(a), 0);
    CU_ASSERT_EQUAL(vmt_transport_error(b), 0);
    CU_ASSERT_EQUAL(vmt_transport_send(a, msg, 5), 0);
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 5), 0);
    CU_ASSERT(memcmp(in, msg, 5) == 0);
}

/* Sender: waits for the exposed range, places pages 3.., 40.., sends a byte. */
static int bulk_sender(void *arg)
{
    vmt_transport *a = arg;
    uint8_t *pages = malloc(64 * VMT_NET_PAGE_SIZE), tag = 0x5a;
    if (!pages)
        return VMT_ENOMEM;
    net_fill(pages, 64 * VMT_NET_PAGE_SIZE, 99);
    uint64_t t0 = vmt_now_ns();
    while (!vmt_transport_bulk_can_place(a) && vmt_now_ns() - t0 < 5000000000ull)
        sleep_ms(5);
    int rc = vmt_transport_bulk_place(a, 3 * VMT_NET_PAGE_SIZE, pages, 20 * VMT_NET_PAGE_SIZE);
    if (rc == 0)
        rc = vmt_transport_bulk_place(a, 40 * VMT_NET_PAGE_SIZE, pages + 20 * VMT_NET_PAGE_SIZE,
                                      44 * VMT_NET_PAGE_SIZE);
    if (rc == 0)
        rc = vmt_transport_send(a, &tag, 1);
    free(pages);
    return rc;
}

static void test_bulk_placement_or_clean_refusal(void)
{
    vmt_transport *a, *b;
    make_pair(&a, &b);
    uint8_t *ram = aligned_alloc(VMT_NET_PAGE_SIZE, BULK_PAGES * VMT_NET_PAGE_SIZE);
    uint8_t *want = malloc(64 * VMT_NET_PAGE_SIZE), tag = 0;
    CU_ASSERT_FATAL(ram && want);
    memset(ram, 0, BULK_PAGES * VMT_NET_PAGE_SIZE);
    if (!vmt_transport_get_ops(b)->bulk_expose) {
        check_bulk_refused(a, b, ram);
    } else {
        /* Chunks of 8 pages, at most 2 registered: registration on demand with eviction. */
        vmt_bulk_config cfg = {8 * VMT_NET_PAGE_SIZE, 16 * VMT_NET_PAGE_SIZE};
        CU_ASSERT_EQUAL(vmt_transport_bulk_expose(b, ram, BULK_PAGES * VMT_NET_PAGE_SIZE, &cfg), 0);
        net_thread th;
        net_spawn(&th, bulk_sender, a);
        CU_ASSERT_EQUAL(vmt_transport_recv(b, &tag, 1), 0); /* runs progress meanwhile */
        CU_ASSERT_EQUAL(net_join(&th), 0);
        vmt_page_run runs[16];
        size_t n = 0;
        CU_ASSERT_EQUAL(vmt_transport_bulk_landed(b, runs, 16, &n), 0);
        CU_ASSERT_EQUAL(n, 2);
        CU_ASSERT(n == 2 && runs[0].pfn == 3 && runs[0].npages == 20 && runs[1].pfn == 40 &&
                  runs[1].npages == 44);
        net_fill(want, 64 * VMT_NET_PAGE_SIZE, 99);
        CU_ASSERT(memcmp(ram + 3 * VMT_NET_PAGE_SIZE, want, 20 * VMT_NET_PAGE_SIZE) == 0);
        CU_ASSERT(memcmp(ram + 40 * VMT_NET_PAGE_SIZE, want + 20 * VMT_NET_PAGE_SIZE,
                         44 * VMT_NET_PAGE_SIZE) == 0);
    }
    free(ram);
    free(want);
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
    {"shutdown wakes a blocked sender", test_shutdown_wakes_a_blocked_sender},
    {"full duplex does not deadlock", test_full_duplex_does_not_deadlock},
    {"peer description", test_peer_description},
    {"bulk placement, or a clean refusal", test_bulk_placement_or_clean_refusal},
    {NULL, NULL},
};

/* NULL when the kind can run here, else why not. */
static const char *unavailable(const contract_kind *k)
{
    static char why[512];
    if (strcmp(k->name, "rdma") != 0 || vmt_rdma_probe() == 0)
        return NULL;
    snprintf(why, sizeof(why), "%s", vmt_error_last());
    return why;
}

int main(int argc, char **argv)
{
    int rc = 0;
    bool ran = false;
    for (size_t i = 0; i < VMT_ARRAY_SIZE(kinds); i++) {
        char name[64];
        if (argc > 1 && strcmp(argv[1], kinds[i].name) != 0)
            continue;
        const char *why = unavailable(&kinds[i]);
        if (why) {
            printf("SKIP: transport contract: %s: %s\n", kinds[i].name, why);
            continue;
        }
        cur = &kinds[i];
        snprintf(name, sizeof(name), "transport contract: %s", kinds[i].name);
        rc |= vmt_test_run(name, cases, NULL, NULL);
        ran = true;
    }
    return ran ? rc : VMT_TEST_SKIP;
}
