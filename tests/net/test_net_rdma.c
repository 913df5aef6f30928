/*
 * The RDMA transport without a device: the credit accounting (rules and a
 * randomized two-sided simulation that must always finish), the
 * memory-registration planner (which chunks, what is pinned, what is
 * released), the message and connection-data codecs, the landed-run queue,
 * and the refusal path: rdma:// addresses fail quickly with the missing
 * device named, and nothing reaches the network.
 * Where a device exists, the refusal tests check the opposite (the probe
 * passes) and test_net_contract runs the transport itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net_fixture.h"
#include "net_internal.h"
#include "rdma_logic.h"

#define PAGE VMT_NET_PAGE_SIZE

/* ---- credits: rules ------------------------------------------------------------ */

#define D VMT_RDMA_CLASS_DATA
#define K VMT_RDMA_CLASS_CTRL

static void test_credit_data_rules(void)
{
    vmt_rdma_credit c;
    uint16_t g, cg;
    vmt_rdma_credit_init(&c, 8, 4);
    CU_ASSERT_EQUAL(c.pool[D].threshold, 2);
    CU_ASSERT_EQUAL(c.pool[K].threshold, 2);
    /* Data may use every data credit: its credits come back in any message. */
    for (int i = 0; i < 8; i++) {
        CU_ASSERT_TRUE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_DATA));
        vmt_rdma_credit_take(&c, VMT_RDMA_MSG_DATA, &g, &cg);
    }
    CU_ASSERT_FALSE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_DATA));
    /* ...and control messages and writes still go: they have their own credits. */
    CU_ASSERT_TRUE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_REG_REQ));
    CU_ASSERT_TRUE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_WRITE));
    /* Grants come back, not beyond the window. */
    CU_ASSERT_EQUAL(vmt_rdma_credit_on_grant(&c, 8, 0), 0);
    CU_ASSERT_EQUAL(vmt_rdma_credit_on_grant(&c, 1, 0), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "more than it could owe"));
    CU_ASSERT_EQUAL(vmt_rdma_credit_on_grant(&c, 0, 1), VMT_EPROTO);
    CU_ASSERT_EQUAL(c.pool[D].credits, 8);
    /* A WRITE carries no grants even when something is owed, and never
     * takes the last control credit. */
    vmt_rdma_credit_reposted(&c, D, 3);
    vmt_rdma_credit_reposted(&c, K, 1);
    vmt_rdma_credit_take(&c, VMT_RDMA_MSG_WRITE, &g, &cg);
    CU_ASSERT(g == 0 && cg == 0 && c.pool[D].owed == 3 && c.pool[K].credits == 3);
    vmt_rdma_credit_take(&c, VMT_RDMA_MSG_WRITE, &g, &cg);
    vmt_rdma_credit_take(&c, VMT_RDMA_MSG_WRITE, &g, &cg);
    CU_ASSERT_FALSE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_WRITE));
    CU_ASSERT_TRUE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_CREDIT)); /* returns one */
    vmt_rdma_credit_take(&c, VMT_RDMA_MSG_DATA, &g, &cg);
    CU_ASSERT(g == 3 && c.pool[D].owed == 0 && c.pool[D].granted == 11);
}

static void test_credit_last_control_credit(void)
{
    vmt_rdma_credit c;
    uint16_t g, cg;
    vmt_rdma_credit_init(&c, 8, 4);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_TRUE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_REG_REQ));
        vmt_rdma_credit_take(&c, VMT_RDMA_MSG_REG_REQ, &g, &cg);
    }
    /* The last control credit only for a message returning control credits... */
    CU_ASSERT_FALSE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_REG_REQ));
    CU_ASSERT_FALSE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_CREDIT));
    CU_ASSERT_TRUE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_FIN)); /* ...or the final FIN */
    vmt_rdma_credit_reposted(&c, D, 5); /* owed data credits do not unlock it */
    CU_ASSERT_FALSE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_CREDIT));
    CU_ASSERT_EQUAL(vmt_rdma_credit_on_receive(&c, VMT_RDMA_MSG_CREDIT), 0);
    vmt_rdma_credit_reposted(&c, K, 1);
    CU_ASSERT_TRUE(vmt_rdma_credit_can_send(&c, VMT_RDMA_MSG_CREDIT));
    vmt_rdma_credit_take(&c, VMT_RDMA_MSG_CREDIT, &g, &cg);
    CU_ASSERT(g == 5 && cg == 1 && c.pool[K].credits == 0);
}

static void test_credit_peer_overrun_is_refused(void)
{
    vmt_rdma_credit c;
    vmt_rdma_credit_init(&c, 4, 2);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(vmt_rdma_credit_on_receive(&c, VMT_RDMA_MSG_DATA), 0);
    CU_ASSERT_EQUAL(vmt_rdma_credit_on_receive(&c, VMT_RDMA_MSG_DATA), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "only 4 receive buffers granted"));
    CU_ASSERT_EQUAL(vmt_rdma_credit_on_receive(&c, VMT_RDMA_MSG_WRITE), 0); /* other class */
    CU_ASSERT_EQUAL(vmt_rdma_credit_on_receive(&c, VMT_RDMA_MSG_FIN), 0);
    CU_ASSERT_EQUAL(vmt_rdma_credit_on_receive(&c, VMT_RDMA_MSG_CREDIT), VMT_EPROTO);
}

static void test_credit_when_to_return(void)
{
    vmt_rdma_credit c;
    uint16_t g, cg;
    vmt_rdma_credit_init(&c, 16, 8);
    CU_ASSERT_FALSE(vmt_rdma_credit_should_return(&c)); /* nothing owed */
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(vmt_rdma_credit_on_receive(&c, VMT_RDMA_MSG_DATA), 0);
        vmt_rdma_credit_reposted(&c, D, 1);
    }
    CU_ASSERT_FALSE(vmt_rdma_credit_should_return(&c)); /* 3 < 4, the peer has 13 */
    CU_ASSERT_EQUAL(vmt_rdma_credit_on_receive(&c, VMT_RDMA_MSG_DATA), 0);
    vmt_rdma_credit_reposted(&c, D, 1);
    CU_ASSERT_TRUE(vmt_rdma_credit_should_return(&c)); /* threshold */
    vmt_rdma_credit_take(&c, VMT_RDMA_MSG_CREDIT, &g, &cg);
    CU_ASSERT_EQUAL(g, 4);
    /* The peer spends all its data credits: return even one at once. */
    for (int i = 0; i < 16; i++)
        CU_ASSERT_EQUAL(vmt_rdma_credit_on_receive(&c, VMT_RDMA_MSG_DATA), 0);
    vmt_rdma_credit_reposted(&c, D, 1);
    CU_ASSERT_TRUE(vmt_rdma_credit_should_return(&c));
    /* One control credit owed, below the threshold of 4: it waits. */
    vmt_rdma_credit_init(&c, 16, 8);
    CU_ASSERT_EQUAL(vmt_rdma_credit_on_receive(&c, VMT_RDMA_MSG_REG_REQ), 0);
    vmt_rdma_credit_reposted(&c, K, 1);
    CU_ASSERT_FALSE(vmt_rdma_credit_should_return(&c));
    /* Nothing to send it with: no CREDIT message whatever is owed. */
    c.pool[K].credits = 0;
    vmt_rdma_credit_reposted(&c, D, 10);
    CU_ASSERT_FALSE(vmt_rdma_credit_should_return(&c));
}

/* ---- credits: a two-sided simulation --------------------------------------------- */

#define SIM_DWINDOW 8u
#define SIM_CWINDOW 6u
#define SIM_QUEUE 64u

typedef struct sim_side {
    vmt_rdma_credit cr;
    unsigned q[SIM_QUEUE]; /* message types in flight towards this side */
    size_t qh, qn;
    uint32_t unread;       /* DATA messages received, not yet read */
    uint32_t to_send, writes_to_send, ctrl_to_send;
    uint64_t data_got;
    bool reads;            /* the application reads (else it only sends) */
} sim_side;

static void sim_push(sim_side *from, sim_side *to, unsigned type)
{
    uint16_t g, cg;
    CU_ASSERT_FATAL(vmt_rdma_credit_can_send(&from->cr, type));
    vmt_rdma_credit_take(&from->cr, type, &g, &cg);
    CU_ASSERT_FATAL(to->qn < SIM_QUEUE);
    /* Grants travel with the message; applied on delivery. */
    to->q[(to->qh + to->qn++) % SIM_QUEUE] = type | (unsigned)g << 8 | (unsigned)cg << 20;
}

/* Delivers the oldest message to s. */
static void sim_deliver(sim_side *s)
{
    unsigned m = s->q[s->qh], type = m & 0xff;
    s->qh = (s->qh + 1) % SIM_QUEUE;
    s->qn--;
    CU_ASSERT_EQUAL_FATAL(vmt_rdma_credit_on_receive(&s->cr, type), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_rdma_credit_on_grant(&s->cr, (m >> 8) & 0xfff, m >> 20), 0);
    if (type == VMT_RDMA_MSG_DATA)
        s->unread++; /* held until the application reads it */
    else
        vmt_rdma_credit_reposted(&s->cr, vmt_rdma_msg_class(type), 1);
}

/* One step of side s (peer p); returns true when it did anything. */
static bool sim_step(sim_side *s, sim_side *p, uint64_t *rng)
{
    bool did = false;
    unsigned r = (unsigned)(net_rand(rng) % 4);
    if (s->qn && r != 0) {
        sim_deliver(s);
        did = true;
    }
    if (s->reads && s->unread && r != 1) {
        s->data_got += s->unread;
        vmt_rdma_credit_reposted(&s->cr, D, s->unread);
        s->unread = 0;
        did = true;
    }
    if (vmt_rdma_credit_should_return(&s->cr)) {
        sim_push(s, p, VMT_RDMA_MSG_CREDIT);
        did = true;
    }
    if (s->ctrl_to_send && vmt_rdma_credit_can_send(&s->cr, VMT_RDMA_MSG_REG_REQ) && r >= 2) {
        sim_push(s, p, VMT_RDMA_MSG_REG_REQ);
        s->ctrl_to_send--;
        did = true;
    } else if (s->writes_to_send && vmt_rdma_credit_can_send(&s->cr, VMT_RDMA_MSG_WRITE) &&
               r != 2) {
        sim_push(s, p, VMT_RDMA_MSG_WRITE);
        s->writes_to_send--;
        did = true;
    } else if (s->to_send && vmt_rdma_credit_can_send(&s->cr, VMT_RDMA_MSG_DATA)) {
        sim_push(s, p, VMT_RDMA_MSG_DATA);
        s->to_send--;
        did = true;
    }
    CU_ASSERT_FATAL(s->cr.pool[D].credits <= SIM_DWINDOW && s->cr.pool[K].credits <= SIM_CWINDOW);
    return did;
}

/* Runs both sides until neither can act; returns the steps taken. */
static unsigned sim_run(uint64_t seed, bool a_reads, bool b_reads, bool *ok)
{
    sim_side s[2];
    memset(s, 0, sizeof(s));
    uint64_t rng = seed, sent[2];
    for (int i = 0; i < 2; i++) {
        vmt_rdma_credit_init(&s[i].cr, SIM_DWINDOW, SIM_CWINDOW);
        s[i].to_send = 200 + (uint32_t)(net_rand(&rng) % 300);
        s[i].writes_to_send = (uint32_t)(net_rand(&rng) % 200);
        s[i].ctrl_to_send = 100 + (uint32_t)(net_rand(&rng) % 400);
        sent[i] = s[i].to_send;
    }
    s[0].reads = a_reads;
    s[1].reads = b_reads;
    unsigned steps = 0;
    for (unsigned idle = 0; idle < 200 && steps < 2000000; steps++) {
        unsigned i = (unsigned)(net_rand(&rng) % 2);
        idle = sim_step(&s[i], &s[1 - i], &rng) ? 0 : idle + 1;
    }
    *ok = true;
    for (int i = 0; i < 2; i++) {
        sim_side *rx = &s[i], *tx = &s[1 - i];
        /* Control messages and writes always get through, read or not. */
        *ok &= tx->ctrl_to_send == 0 && tx->writes_to_send == 0 && rx->qn == 0;
        if (rx->reads) { /* a reading side got everything, and credits are home */
            *ok &= rx->data_got == sent[1 - i] && tx->to_send == 0;
            *ok &= tx->cr.pool[D].credits + rx->cr.pool[D].owed == SIM_DWINDOW;
            *ok &= rx->cr.pool[D].owed < rx->cr.pool[D].threshold;
        } else { /* a side that never reads holds the whole data window */
            *ok &= rx->unread == SIM_DWINDOW && tx->cr.pool[D].credits == 0;
        }
        *ok &= tx->cr.pool[K].credits + rx->cr.pool[K].owed == SIM_CWINDOW;
    }
    return steps;
}

/* The worst interleaving for control credits: both sides send control
 * messages as long as they may before anything is delivered, twice over.
 * Both must still be able to go on afterwards. */
static void test_credit_control_burst_both_ways(void)
{
    sim_side s[2];
    memset(s, 0, sizeof(s));
    for (int i = 0; i < 2; i++)
        vmt_rdma_credit_init(&s[i].cr, SIM_DWINDOW, SIM_CWINDOW);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 2; i++)
            while (vmt_rdma_credit_can_send(&s[i].cr, VMT_RDMA_MSG_REG_REQ))
                sim_push(&s[i], &s[1 - i], VMT_RDMA_MSG_REG_REQ);
        for (int i = 0; i < 2; i++)
            while (s[i].qn)
                sim_deliver(&s[i]);
        /* Each side can answer: a REG_ACK (or a CREDIT) still goes. */
        for (int i = 0; i < 2; i++)
            CU_ASSERT_TRUE(vmt_rdma_credit_can_send(&s[i].cr, VMT_RDMA_MSG_REG_ACK));
    }
}

static void test_credit_simulation_never_deadlocks(void)
{
    static const bool modes[][2] = {{true, true}, {true, false}, {false, true}, {false, false}};
    unsigned failures = 0;
    for (uint64_t seed = 1; seed <= 300; seed++)
        for (size_t m = 0; m < VMT_ARRAY_SIZE(modes); m++) {
            bool ok;
            sim_run(seed, modes[m][0], modes[m][1], &ok);
            if (!ok && failures++ < 5)
                fprintf(stderr, "simulation seed %llu mode %zu: stuck or lost credits\n",
                        (unsigned long long)seed, m);
        }
    CU_ASSERT_EQUAL(failures, 0);
}

/* ---- registration planner ----------------------------------------------------- */

static void test_mrplan_registers_on_demand_within_the_bound(void)
{
    vmt_rdma_mrplan *p = NULL;
    vmt_rdma_mrplan_stats st;
    /* 10 chunks of 4 pages, the last one of 2 pages; at most 3 registered. */
    CU_ASSERT_EQUAL_FATAL(vmt_rdma_mrplan_new(&p, 38 * PAGE, 4 * PAGE, 3), 0);
    CU_ASSERT_EQUAL(vmt_rdma_mrplan_nchunks(p), 10);
    CU_ASSERT_EQUAL(vmt_rdma_mrplan_chunk_of(p, 37 * PAGE), 9);
    uint64_t off, len;
    vmt_rdma_mrplan_extent(p, 9, &off, &len);
    CU_ASSERT(off == 36 * PAGE && len == 2 * PAGE);

    uint32_t order[] = {0, 1, 2};
    for (size_t i = 0; i < 3; i++) {
        vmt_rdma_plan pl = vmt_rdma_mrplan_touch(p, order[i]);
        CU_ASSERT(pl.kind == VMT_RDMA_PLAN_MISS && pl.evict == VMT_RDMA_CHUNK_NONE);
        vmt_rdma_mrplan_registered(p, order[i], pl.evict, 100 + order[i], 0x1000 * order[i]);
    }
    CU_ASSERT_EQUAL(vmt_rdma_mrplan_touch(p, 1).kind, VMT_RDMA_PLAN_HIT);
    vmt_rdma_mrplan_used(p, 1); /* LRU now 0, 2, 1 */
    vmt_rdma_plan pl = vmt_rdma_mrplan_touch(p, 9);
    CU_ASSERT(pl.kind == VMT_RDMA_PLAN_MISS && pl.evict == 0);
    vmt_rdma_mrplan_registered(p, 9, pl.evict, 109, 0x9000);
    CU_ASSERT_FALSE(vmt_rdma_mrplan_is_registered(p, 0));
    uint32_t rkey;
    uint64_t addr;
    vmt_rdma_mrplan_key(p, 9, &rkey, &addr);
    CU_ASSERT(rkey == 109 && addr == 0x9000);
    vmt_rdma_mrplan_get_stats(p, &st);
    CU_ASSERT_EQUAL(st.registered, 3);
    CU_ASSERT_EQUAL(st.pinned_bytes, (4 + 4 + 2) * PAGE); /* chunks 1, 2, 9 */
    CU_ASSERT_EQUAL(st.peak_pinned, 12 * PAGE);
    CU_ASSERT_EQUAL(st.registrations, 4);
    CU_ASSERT_EQUAL(st.evictions, 1);
    CU_ASSERT_EQUAL(st.hits, 1);
    vmt_rdma_mrplan_free(p);
}

static void test_mrplan_never_releases_a_chunk_with_writes_in_flight(void)
{
    vmt_rdma_mrplan *p = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_rdma_mrplan_new(&p, 16 * PAGE, 4 * PAGE, 2), 0);
    vmt_rdma_mrplan_registered(p, 0, VMT_RDMA_CHUNK_NONE, 1, 0);
    vmt_rdma_mrplan_registered(p, 1, VMT_RDMA_CHUNK_NONE, 2, 0);
    vmt_rdma_mrplan_busy(p, 0, +1); /* the least recently used one is busy */
    vmt_rdma_plan pl = vmt_rdma_mrplan_touch(p, 2);
    CU_ASSERT(pl.kind == VMT_RDMA_PLAN_MISS && pl.evict == 1);
    vmt_rdma_mrplan_busy(p, 1, +1);
    CU_ASSERT_EQUAL(vmt_rdma_mrplan_touch(p, 2).kind, VMT_RDMA_PLAN_BUSY);
    vmt_rdma_mrplan_busy(p, 0, -1);
    pl = vmt_rdma_mrplan_touch(p, 2);
    CU_ASSERT(pl.kind == VMT_RDMA_PLAN_MISS && pl.evict == 0);
    vmt_rdma_mrplan_free(p);
}

static void test_mrplan_sequential_sweep_pins_at_most_the_bound(void)
{
    vmt_rdma_mrplan *p = NULL;
    vmt_rdma_mrplan_stats st;
    /* A 1 GiB guest in 64 MiB chunks, 256 MiB pinned at most: a pre-copy
     * round walks every page in order, twice. */
    uint64_t gib = 1ull << 30, chunk = 64ull << 20;
    CU_ASSERT_EQUAL_FATAL(vmt_rdma_mrplan_new(&p, gib, chunk, 4), 0);
    for (int round = 0; round < 2; round++)
        for (uint64_t off = 0; off < gib; off += 256 * PAGE) {
            uint32_t c = vmt_rdma_mrplan_chunk_of(p, off);
            vmt_rdma_plan pl = vmt_rdma_mrplan_touch(p, c);
            CU_ASSERT_NOT_EQUAL(pl.kind, VMT_RDMA_PLAN_BUSY);
            if (pl.kind == VMT_RDMA_PLAN_HIT)
                vmt_rdma_mrplan_used(p, c);
            else
                vmt_rdma_mrplan_registered(p, c, pl.evict, c, 0);
        }
    vmt_rdma_mrplan_get_stats(p, &st);
    CU_ASSERT_EQUAL(st.peak_pinned, 4 * chunk);
    CU_ASSERT_EQUAL(st.registrations, 32); /* each chunk once per round */
    CU_ASSERT_EQUAL(st.evictions, 28);
    vmt_rdma_mrplan_free(p);
    CU_ASSERT_EQUAL(vmt_rdma_mrplan_new(&p, 0, chunk, 1), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_rdma_mrplan_new(&p, gib, 1000, 1), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_rdma_mrplan_new(&p, gib, chunk, 0), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_rdma_mrplan_new(&p, 1ull << 40, PAGE, 1), VMT_EINVAL); /* chunks */
}

/* ---- messages ------------------------------------------------------------------ */

static void round_trip(const vmt_rdma_msg *m)
{
    uint8_t buf[256];
    vmt_rdma_msg d;
    size_t n = vmt_rdma_msg_encode(m, buf, sizeof(buf));
    CU_ASSERT_FATAL(n >= VMT_RDMA_MSG_HDR);
    CU_ASSERT_EQUAL_FATAL(vmt_rdma_msg_decode(buf, n, 200, &d), 0);
    CU_ASSERT_EQUAL(d.type, m->type);
    CU_ASSERT_EQUAL(d.grant, m->grant);
    CU_ASSERT_EQUAL(d.cgrant, m->cgrant);
    CU_ASSERT_EQUAL(d.region_len, m->region_len);
    CU_ASSERT_EQUAL(d.chunk_bytes, m->chunk_bytes);
    CU_ASSERT_EQUAL(d.max_chunks, m->max_chunks);
    CU_ASSERT_EQUAL(d.chunk, m->chunk);
    CU_ASSERT_EQUAL(d.rkey, m->rkey);
    CU_ASSERT_EQUAL(d.addr, m->addr);
    if (m->type == VMT_RDMA_MSG_DATA)
        CU_ASSERT(d.len == m->len && memcmp(d.data, m->data, m->len) == 0);
    if (m->type == VMT_RDMA_MSG_REG_REQ)
        CU_ASSERT_EQUAL(d.release, m->release);
}

static void test_messages_round_trip(void)
{
    const uint8_t body[5] = "hello";
    round_trip(&(vmt_rdma_msg){.type = VMT_RDMA_MSG_DATA, .grant = 7, .cgrant = 2, .len = 5,
                               .data = body});
    round_trip(&(vmt_rdma_msg){.type = VMT_RDMA_MSG_CREDIT, .grant = 65535});
    round_trip(&(vmt_rdma_msg){.type = VMT_RDMA_MSG_CREDIT, .cgrant = 1});
    round_trip(&(vmt_rdma_msg){.type = VMT_RDMA_MSG_FIN});
    round_trip(&(vmt_rdma_msg){.type = VMT_RDMA_MSG_EXPOSE, .region_len = 1ull << 30,
                               .chunk_bytes = 64ull << 20, .max_chunks = 16});
    round_trip(&(vmt_rdma_msg){.type = VMT_RDMA_MSG_REG_REQ, .grant = 1, .chunk = 3,
                               .release = VMT_RDMA_CHUNK_NONE});
    round_trip(&(vmt_rdma_msg){.type = VMT_RDMA_MSG_REG_ACK, .chunk = 3, .rkey = 0xdeadbeef,
                               .addr = 0x7f0011223344ull});
    uint8_t small[10];
    CU_ASSERT_EQUAL(vmt_rdma_msg_encode(&(vmt_rdma_msg){.type = VMT_RDMA_MSG_DATA, .len = 5,
                                                        .data = body},
                                        small, 12 > sizeof(small) ? sizeof(small) : 12),
                    0);
}

typedef struct bad_msg {
    uint8_t b[32];
    size_t len;
    const char *says;
} bad_msg;

static void test_messages_refused(void)
{
    /* Header: type, flags, data grant (2), control grant (2), reserved (2), length (4). */
    static const bad_msg bad[] = {
        {{1, 0, 0, 0}, 4, "header is 12"},
        {{9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 12, "unknown RDMA message type 9"},
        {{7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 12, "unknown RDMA message type 7"},
        {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 12, "unknown RDMA message type 0"},
        {{3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 12, "flags"},
        {{3, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, 12, "reserved 0x0001"},
        {{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 'a'}, 13, "says 5 body bytes, 1 arrived"},
        {{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 12, "DATA of 0 bytes"},
        {{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 12, "returning no credit"},
        {{3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}, 13, "body of 1 bytes"},
        {{5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 4, 0, 0, 0, 4}, 20, "chunk 4, release 4"},
        {{5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1}, 20, "REG_REQ"},
        /* EXPOSE of 4097 bytes */
        {{4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 0, 0, 0,
          0x10, 0, 0, 0, 0, 1},
         32, "bad range"},
        /* EXPOSE with max_chunks 0 */
        {{4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x10,
          0, 0, 0, 0, 0},
         32, "max_chunks 0"},
    };
    for (size_t i = 0; i < VMT_ARRAY_SIZE(bad); i++) {
        vmt_rdma_msg m;
        CU_ASSERT_EQUAL(vmt_rdma_msg_decode(bad[i].b, bad[i].len, 64, &m), VMT_EPROTO);
        if (!strstr(vmt_error_last(), bad[i].says))
            fprintf(stderr, "case %zu: \"%s\" lacks \"%s\"\n", i, vmt_error_last(), bad[i].says);
        CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), bad[i].says));
    }
    /* DATA beyond what a buffer holds. */
    uint8_t big[80] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 68};
    vmt_rdma_msg m;
    CU_ASSERT_EQUAL(vmt_rdma_msg_decode(big, 80, 64, &m), VMT_EPROTO);
    CU_ASSERT_EQUAL(vmt_rdma_msg_decode(big, 80, 68, &m), 0);
}

static void test_connection_data(void)
{
    uint8_t b[VMT_RDMA_HELLO_LEN + 32] = {0};
    vmt_rdma_hello h = {64, 65536, 16}, d;
    vmt_rdma_hello_encode(&h, b);
    /* IB pads private data: longer is fine. */
    CU_ASSERT_EQUAL(vmt_rdma_hello_decode(b, sizeof(b), &d), 0);
    CU_ASSERT(d.window == 64 && d.buf_bytes == 65536 && d.ctrl_window == 16);
    CU_ASSERT_EQUAL(vmt_rdma_hello_decode(b, VMT_RDMA_HELLO_LEN - 1, &d), VMT_EPROTO);
    CU_ASSERT_EQUAL(vmt_rdma_hello_decode(NULL, 0, &d), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "not a vmtree transport"));
    b[5] = 2;
    CU_ASSERT_EQUAL(vmt_rdma_hello_decode(b, sizeof(b), &d), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "version 2"));
    b[5] = 1;
    b[20] = 1;
    CU_ASSERT_EQUAL(vmt_rdma_hello_decode(b, sizeof(b), &d), VMT_EPROTO);
    b[20] = 0;
    h.window = 2;
    vmt_rdma_hello_encode(&h, b);
    CU_ASSERT_EQUAL(vmt_rdma_hello_decode(b, sizeof(b), &d), VMT_EPROTO);
    h.window = 64;
    h.buf_bytes = 100;
    vmt_rdma_hello_encode(&h, b);
    CU_ASSERT_EQUAL(vmt_rdma_hello_decode(b, sizeof(b), &d), VMT_EPROTO);
    h.buf_bytes = 65536;
    h.ctrl_window = 1;
    vmt_rdma_hello_encode(&h, b);
    CU_ASSERT_EQUAL(vmt_rdma_hello_decode(b, sizeof(b), &d), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "control window"));
}

static void test_landed_runs(void)
{
    vmt_rdma_landed l;
    vmt_page_run out[8];
    vmt_rdma_landed_init(&l, 3);
    CU_ASSERT_EQUAL(vmt_rdma_landed_push(&l, 10, 4), 0);
    CU_ASSERT_EQUAL(vmt_rdma_landed_push(&l, 14, 2), 0); /* merged */
    CU_ASSERT_EQUAL(vmt_rdma_landed_push(&l, 100, 1), 0);
    CU_ASSERT_EQUAL(vmt_rdma_landed_push(&l, 50, 1), 0);
    CU_ASSERT_EQUAL(vmt_rdma_landed_push(&l, 7, 1), VMT_ERANGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "not collected"));
    CU_ASSERT_EQUAL(vmt_rdma_landed_pop(&l, out, 1), 1);
    CU_ASSERT(out[0].pfn == 10 && out[0].npages == 6);
    CU_ASSERT_EQUAL(vmt_rdma_landed_push(&l, 7, 1), 0); /* wraps around */
    CU_ASSERT_EQUAL(vmt_rdma_landed_pop(&l, out, 8), 3);
    CU_ASSERT(out[0].pfn == 100 && out[1].pfn == 50 && out[2].pfn == 7);
    CU_ASSERT_EQUAL(vmt_rdma_landed_pop(&l, out, 8), 0);
    vmt_rdma_landed_free(&l);
    /* Growth keeps the order. */
    vmt_rdma_landed_init(&l, 1000);
    for (uint64_t i = 0; i < 300; i++)
        CU_ASSERT_EQUAL(vmt_rdma_landed_push(&l, i * 2, 1), 0);
    size_t got = 0;
    bool ordered = true;
    for (size_t n; (n = vmt_rdma_landed_pop(&l, out, 8)) > 0; got += n)
        for (size_t k = 0; k < n; k++)
            ordered &= out[k].pfn == (got + k) * 2;
    CU_ASSERT_EQUAL(got, 300);
    CU_ASSERT_TRUE(ordered);
    vmt_rdma_landed_free(&l);
}

/* ---- refusal without a device ---------------------------------------------------- */

static bool have_device(void)
{
    return vmt_rdma_probe() == 0;
}

static void test_probe_names_the_missing_device(void)
{
    int rc = vmt_rdma_probe();
    if (rc == 0) {
        printf("(an RDMA device exists here: the refusal path is not exercised)\n");
        return;
    }
    CU_ASSERT_EQUAL(rc, VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "no RDMA device"));
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "ibv_get_device_list"));
}

static void test_rdma_urls_refused_quickly_without_a_device(void)
{
    if (have_device())
        return;
    vmt_transport *t = NULL;
    vmt_listener *l = NULL;
    uint64_t t0 = vmt_now_ns();
    CU_ASSERT_EQUAL(vmt_transport_connect_url(&t, "rdma://127.0.0.1:4791", 5000),
                    VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "no RDMA device"));
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "rdma://127.0.0.1:4791"));
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_EQUAL(vmt_listen_url(&l, "rdma://127.0.0.1:0"), VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "no RDMA device"));
    CU_ASSERT_PTR_NULL(l);
    CU_ASSERT_EQUAL(vmt_rdma_connect(&t, "10.255.255.1", 1, 5000), VMT_EUNSUPPORTED);
    CU_ASSERT_EQUAL(vmt_rdma_listen(&l, NULL, 0), VMT_EUNSUPPORTED);
    CU_ASSERT((vmt_now_ns() - t0) / 1000000 < 1000); /* no timeouts were waited for */
}

typedef struct watch_job {
    vmt_listener *l;
    vmt_transport *t;
} watch_job;

static int watch_accept(void *arg)
{
    watch_job *j = arg;
    return vmt_listener_accept(j->l, &j->t, 500);
}

/* A session to rdma:// on a port where a TCP listener waits: refused with
 * the device named, and the listener never sees a connection (nothing was
 * sent: no handshake, no state). */
static void test_session_to_rdma_url_sends_nothing(void)
{
    if (have_device())
        return;
    watch_job j = {0};
    vmt_session *s = NULL;
    vmt_session_config c;
    char url[64];
    net_thread th;
    vmt_session_config_init(&c);
    c.nstreams = 4;
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_listen(&j.l, "127.0.0.1", 0), 0);
    snprintf(url, sizeof(url), "rdma://127.0.0.1:%u", vmt_listener_port(j.l));
    net_spawn(&th, watch_accept, &j);
    CU_ASSERT_EQUAL(vmt_session_connect_url(&s, url, &c), VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "no RDMA device"));
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), url));
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL(net_join(&th), VMT_ETIMEDOUT);
    CU_ASSERT_PTR_NULL(j.t);
    /* TLS over rdma:// is refused as a configuration error. */
    c.tls = net_tls_client();
    CU_ASSERT_EQUAL(vmt_session_connect_url(&s, url, &c), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "TLS over rdma://"));
    vmt_listener_close(j.l);
}

/* ---- the session layer's fallback ------------------------------------------------- */

static void test_session_bulk_falls_back_on_tcp(void)
{
    net_session_pair p;
    vmt_session_config c;
    vmt_session_config_init(&c);
    c.allow_unauthenticated = true;
    CU_ASSERT_EQUAL_FATAL(net_session_pair_tcp(&p, &c, &c), 0);
    uint8_t *ram = aligned_alloc(PAGE, 4 * PAGE);
    CU_ASSERT_FATAL(ram != NULL);
    vmt_page_run runs[1];
    size_t n = 9;
    CU_ASSERT_EQUAL(vmt_session_bulk_expose(p.server, ram, 4 * PAGE, NULL), VMT_EUNSUPPORTED);
    CU_ASSERT_FALSE(vmt_session_bulk_can_place(p.client, 0));
    CU_ASSERT_EQUAL(vmt_session_bulk_place(p.client, 0, 0, ram, 1), VMT_EUNSUPPORTED);
    CU_ASSERT_EQUAL(vmt_session_bulk_landed(p.server, 0, runs, 1, &n), VMT_EUNSUPPORTED);
    CU_ASSERT_EQUAL(n, 0);
    /* The sessions are intact: frames still flow. */
    CU_ASSERT_EQUAL(vmt_session_error(p.client), 0);
    CU_ASSERT_EQUAL(vmt_session_error(p.server), 0);
    vmt_wire_msg m = {.type = VMT_WIRE_ROUND_END}, r;
    m.u.round_end.round = 3;
    CU_ASSERT_EQUAL(vmt_session_send(p.client, 0, &m), 0);
    CU_ASSERT_EQUAL(vmt_session_recv_msg(p.server, 0, VMT_WIRE_ROUND_END, &r, NET_TIMEOUT_MS), 0);
    CU_ASSERT_EQUAL(r.u.round_end.round, 3);
    vmt_wire_msg_clear(&r);
    free(ram);
    net_session_pair_close(&p);
}

typedef struct mem_server {
    net_mem_link *link;
    const vmt_session_config *c;
    vmt_session *s;
} mem_server;

static int mem_server_main(void *arg)
{
    mem_server *m = arg;
    return vmt_session_server(&m->s, m->c, net_mem_accept, m->link);
}

#define SB_PAGES 64u

static void test_session_bulk_places_pages_before_the_next_frame(void)
{
    net_mem_link link;
    net_mem_link_init(&link, 0);
    vmt_session_config c;
    vmt_session_config_init(&c);
    c.allow_unauthenticated = true;
    c.nstreams = 2;
    mem_server srv = {&link, &c, NULL};
    vmt_session *cli = NULL;
    net_thread th;
    net_spawn(&th, mem_server_main, &srv);
    CU_ASSERT_EQUAL(vmt_session_client(&cli, &c, net_mem_dial, &link), 0);
    CU_ASSERT_EQUAL_FATAL(net_join(&th), 0);
    CU_ASSERT_FATAL(cli != NULL);

    uint8_t *ram = aligned_alloc(PAGE, SB_PAGES * PAGE), *src = malloc(SB_PAGES * PAGE);
    CU_ASSERT_FATAL(ram && src);
    memset(ram, 0, SB_PAGES * PAGE);
    net_fill(src, SB_PAGES * PAGE, 5);
    CU_ASSERT_FALSE(vmt_session_bulk_can_place(cli, 1)); /* nothing exposed yet */
    CU_ASSERT_EQUAL(vmt_session_bulk_expose(srv.s, ram, SB_PAGES * PAGE, NULL), 0);
    CU_ASSERT_EQUAL(vmt_session_bulk_expose(srv.s, ram, SB_PAGES * PAGE, NULL), VMT_EEXIST);
    CU_ASSERT_EQUAL(vmt_session_error(srv.s), 0); /* a refusal, not a failure */
    CU_ASSERT_TRUE(vmt_session_bulk_can_place(cli, 1));
    /* Out of range: refused, nothing written, the session intact. */
    CU_ASSERT_EQUAL(vmt_session_bulk_place(cli, 1, SB_PAGES - 1, src, 2), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_session_error(cli), 0);
    CU_ASSERT_EQUAL(vmt_session_bulk_place(cli, 1, 8, src + 8 * PAGE, 16), 0);
    CU_ASSERT_EQUAL(vmt_session_bulk_place(cli, 1, 24, src + 24 * PAGE, 8), 0);
    CU_ASSERT_EQUAL(vmt_session_bulk_place(cli, 0, 60, src + 60 * PAGE, 4), 0);
    vmt_wire_msg m = {.type = VMT_WIRE_ROUND_END}, r;
    m.u.round_end.round = 1;
    CU_ASSERT_EQUAL(vmt_session_send(cli, 1, &m), 0);
    /* The frame after the pages: by then they are in place and listed. */
    CU_ASSERT_EQUAL(vmt_session_recv_msg(srv.s, 1, VMT_WIRE_ROUND_END, &r, NET_TIMEOUT_MS), 0);
    vmt_wire_msg_clear(&r);
    vmt_page_run runs[8];
    size_t n = 0;
    CU_ASSERT_EQUAL(vmt_session_bulk_landed(srv.s, 1, runs, 8, &n), 0);
    CU_ASSERT(n == 1 && runs[0].pfn == 8 && runs[0].npages == 24); /* merged */
    CU_ASSERT_EQUAL(vmt_session_bulk_landed(srv.s, 0, runs, 8, &n), 0);
    CU_ASSERT(n == 1 && runs[0].pfn == 60 && runs[0].npages == 4);
    CU_ASSERT(memcmp(ram + 8 * PAGE, src + 8 * PAGE, 24 * PAGE) == 0);
    CU_ASSERT(memcmp(ram + 60 * PAGE, src + 60 * PAGE, 4 * PAGE) == 0);
    uint8_t zero[PAGE] = {0};
    CU_ASSERT(memcmp(ram, zero, PAGE) == 0 && memcmp(ram + 32 * PAGE, zero, PAGE) == 0);
    CU_ASSERT_EQUAL(vmt_session_error(cli), 0);
    CU_ASSERT_EQUAL(vmt_session_error(srv.s), 0);
    vmt_session_close(cli);
    vmt_session_close(srv.s);
    free(ram);
    free(src);
    pthread_cond_destroy(&link.cond);
    pthread_mutex_destroy(&link.lock);
}

static const vmt_test_case cases[] = {
    {"credit: data rules", test_credit_data_rules},
    {"credit: the last control credit", test_credit_last_control_credit},
    {"credit: a peer overrunning its grant is refused", test_credit_peer_overrun_is_refused},
    {"credit: when owed credits go back", test_credit_when_to_return},
    {"credit: control bursts both ways", test_credit_control_burst_both_ways},
    {"credit: randomized two-sided simulation never deadlocks",
     test_credit_simulation_never_deadlocks},
    {"planner: on demand, within the bound, LRU", test_mrplan_registers_on_demand_within_the_bound},
    {"planner: never releases a chunk with writes in flight",
     test_mrplan_never_releases_a_chunk_with_writes_in_flight},
    {"planner: a sequential sweep pins at most the bound",
     test_mrplan_sequential_sweep_pins_at_most_the_bound},
    {"messages round-trip", test_messages_round_trip},
    {"bad messages are refused with the reason", test_messages_refused},
    {"connection data", test_connection_data},
    {"landed runs", test_landed_runs},
    {"probe names the missing device", test_probe_names_the_missing_device},
    {"rdma:// refused quickly without a device", test_rdma_urls_refused_quickly_without_a_device},
    {"a session to rdma:// sends nothing", test_session_to_rdma_url_sends_nothing},
    {"session bulk placement falls back on TCP", test_session_bulk_falls_back_on_tcp},
    {"session bulk placement: pages before the next frame",
     test_session_bulk_places_pages_before_the_next_frame},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("rdma without a device", cases, NULL, NULL);
}
