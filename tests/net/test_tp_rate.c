/*
 * Rate limiting (tp_rate.c): N bytes at R bytes/s take about N/R (generous
 * bounds: the machine is shared), two streams sharing one bucket share the
 * rate, the rate can change while sending, a send that would pass its
 * deadline fails at once, and a shutdown wakes a throttled sender.
 */
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"

#define MIB (1u << 20)

typedef struct drain {
    vmt_transport *t;
    size_t n;
} drain;

static int drain_fn(void *arg)
{
    drain *d = arg;
    uint8_t *buf = malloc(d->n);
    int rc = buf ? vmt_transport_recv_timeout(d->t, buf, d->n, 30000) : VMT_ENOMEM;
    free(buf);
    return rc;
}

/* Sends n bytes through a rate-limited wrapper of a TCP pair; returns ms. */
static double timed_send(vmt_ratelimit *rl, size_t n, int *rc_out)
{
    vmt_transport *a0, *a, *b;
    uint8_t *buf = calloc(1, n);
    CU_ASSERT_EQUAL_FATAL(net_pair_tcp(&a0, &b), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_transport_rate(&a, a0, rl), 0);
    vmt_transport_set_timeout(a, 30000);
    drain d = {b, n};
    net_thread th;
    net_spawn(&th, drain_fn, &d);
    uint64_t t0 = vmt_now_ns();
    *rc_out = vmt_transport_send(a, buf, n);
    double ms = (double)(vmt_now_ns() - t0) / 1e6;
    if (*rc_out)
        vmt_transport_shutdown(b);
    net_join(&th);
    free(buf);
    vmt_transport_close(a);
    vmt_transport_close(b);
    return ms;
}

static void test_rate_is_about_n_over_r(void)
{
    vmt_ratelimit *rl;
    int rc;
    /* 4 MiB at 16 MiB/s, the first 256 KiB (the full bucket) at once: 234 ms */
    CU_ASSERT_EQUAL_FATAL(vmt_ratelimit_new(&rl, 16 * MIB, 256u << 10), 0);
    double ms = timed_send(rl, 4 * MIB, &rc);
    printf("\n    4 MiB at 16 MiB/s: %.0f ms (ideal %.0f)\n", ms, (4.0 - 0.25) / 16 * 1000);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(ms >= 0.8 * 234 && ms < 3 * 250 + 500);
    vmt_ratelimit_free(rl);
}

typedef struct sender {
    vmt_ratelimit *rl;
    size_t n;
    double ms;
    int rc;
} sender;

static int sender_fn(void *arg)
{
    sender *s = arg;
    s->ms = timed_send(s->rl, s->n, &s->rc);
    return s->rc;
}

static void test_streams_share_one_bucket(void)
{
    vmt_ratelimit *rl;
    CU_ASSERT_EQUAL_FATAL(vmt_ratelimit_new(&rl, 16 * MIB, 64u << 10), 0);
    sender s[2] = {{rl, 2 * MIB, 0, 0}, {rl, 2 * MIB, 0, 0}};
    net_thread th[2];
    uint64_t t0 = vmt_now_ns();
    net_spawn(&th[0], sender_fn, &s[0]);
    net_spawn(&th[1], sender_fn, &s[1]);
    CU_ASSERT_EQUAL(net_join(&th[0]), 0);
    CU_ASSERT_EQUAL(net_join(&th[1]), 0);
    double ms = (double)(vmt_now_ns() - t0) / 1e6;
    printf("\n    2 x 2 MiB sharing 16 MiB/s: %.0f ms (ideal 250)\n", ms);
    /* Each alone would take 125 ms; together they take the whole 250. */
    CU_ASSERT(s[0].ms >= 0.8 * 125 && s[1].ms >= 0.8 * 125);
    CU_ASSERT(VMT_MAX(s[0].ms, s[1].ms) >= 0.8 * 250);
    CU_ASSERT(ms < 3 * 250 + 800);
    vmt_ratelimit_free(rl);
}

static void test_rate_changes_and_unlimited(void)
{
    vmt_ratelimit *rl;
    int rc;
    CU_ASSERT_EQUAL_FATAL(vmt_ratelimit_new(&rl, 0, 0), 0);
    double ms = timed_send(rl, 16 * MIB, &rc); /* unlimited */
    CU_ASSERT_EQUAL(rc, 0);
    vmt_ratelimit_set(rl, 8 * MIB);
    double slow = timed_send(rl, 2 * MIB, &rc);
    CU_ASSERT_EQUAL(rc, 0);
    printf("\n    unlimited 16 MiB: %.0f ms; 2 MiB at 8 MiB/s: %.0f ms (ideal 200)\n", ms, slow);
    CU_ASSERT(slow >= 150); /* (2 MiB - the 410 KiB bucket) / 8 MiB/s = 200 ms */
    vmt_ratelimit_free(rl);
}

static void test_deadline_fails_at_once(void)
{
    vmt_transport *a0, *a, *b;
    vmt_ratelimit *rl;
    uint8_t *buf = calloc(1, 4 * MIB);
    CU_ASSERT_EQUAL_FATAL(vmt_ratelimit_new(&rl, 1 * MIB, 64u << 10), 0);
    CU_ASSERT_EQUAL_FATAL(net_pair_tcp(&a0, &b), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_transport_rate(&a, a0, rl), 0);
    vmt_transport_set_timeout(a, 200); /* 4 MiB at 1 MiB/s needs 4 s */
    drain d = {b, 4 * MIB};
    net_thread th;
    net_spawn(&th, drain_fn, &d);
    uint64_t t0 = vmt_now_ns();
    CU_ASSERT_EQUAL(vmt_transport_send(a, buf, 4 * MIB), VMT_ETIMEDOUT);
    CU_ASSERT((vmt_now_ns() - t0) / 1000000 < 1500);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "rate limit"));
    CU_ASSERT_EQUAL(vmt_transport_error(a), VMT_ETIMEDOUT);
    vmt_transport_close(a);
    net_join(&th);
    vmt_transport_close(b);
    vmt_ratelimit_free(rl);
    free(buf);
}

typedef struct slow_send {
    vmt_transport *t;
    uint8_t *buf;
    uint64_t ms;
} slow_send;

static int slow_send_fn(void *arg)
{
    slow_send *s = arg;
    uint64_t t0 = vmt_now_ns();
    int rc = vmt_transport_send(s->t, s->buf, 4 * MIB);
    s->ms = (vmt_now_ns() - t0) / 1000000;
    return rc;
}

static void test_shutdown_wakes_a_throttled_sender(void)
{
    vmt_transport *a0, *a, *b;
    vmt_ratelimit *rl;
    CU_ASSERT_EQUAL_FATAL(vmt_ratelimit_new(&rl, 256u << 10, 64u << 10), 0);
    CU_ASSERT_EQUAL_FATAL(net_pair_tcp(&a0, &b), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_transport_rate(&a, a0, rl), 0);
    vmt_transport_set_timeout(a, 60000);
    slow_send s = {a, calloc(1, 4 * MIB), 0};
    net_thread th;
    net_spawn(&th, slow_send_fn, &s);
    struct timespec ts = {0, 200000000};
    nanosleep(&ts, NULL);
    vmt_transport_shutdown(a);
    CU_ASSERT(net_join(&th) != 0);
    CU_ASSERT(s.ms < 2000); /* 16 s at this rate otherwise */
    free(s.buf);
    vmt_transport_close(a);
    vmt_transport_close(b);
    vmt_ratelimit_free(rl);
}

static const vmt_test_case cases[] = {
    {"N bytes at R bytes/s take about N/R", test_rate_is_about_n_over_r},
    {"two streams share one bucket", test_streams_share_one_bucket},
    {"the rate changes; 0 is unlimited", test_rate_changes_and_unlimited},
    {"a send that would pass its deadline fails at once", test_deadline_fails_at_once},
    {"shutdown wakes a throttled sender", test_shutdown_wakes_a_throttled_sender},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("rate limit", cases, NULL, NULL);
}
