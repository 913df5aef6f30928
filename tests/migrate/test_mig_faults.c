/*
 * Live migration never loses a VM and never runs it twice (docs/migration.md
 * "Never lost, never twice"), checked by cutting real TCP connections on
 * 127.0.0.1 through the fault-injecting transport (migrate/net tp_fault.c):
 *
 * - 24 cuts at random byte offsets of the source's control stream while a
 *   counter runs: every time the source runs on (and progresses), the
 *   destination holds no VM, and a migration afterwards succeeds;
 * - cuts at the completion, where the answer decides who runs: before GO
 *   the source keeps the VM; inside GO or while waiting for ACK the source
 *   stays paused (VMT_EINDOUBT) and the destination runs it exactly when the
 *   whole GO arrived; a destination that dies after PREPARED leaves the VM
 *   to the source;
 * - auto-converge: a guest that dirties faster than the rate limit fails
 *   cleanly after the round limit (and runs on), and converges with it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "migfx.h"
#include "vmtree/net.h"

#define MEM (32ull << 20)
#define COUNTER "steps=0 every=1 work=200000"
#define T30 (30 * FX_SEC)

static int setup(void)
{
    return fx_setup() != 0;
}

static int teardown(void)
{
    return fx_teardown();
}

/* ---- a counting transport: where the source's frames begin ------------------ */

#define MAX_STARTS 64

typedef struct counted {
    uint64_t sent;               /* bytes sent so far */
    uint64_t starts[MAX_STARTS]; /* offsets of the last frames' first bytes */
    unsigned nstarts;
} counted;

typedef struct count_impl {
    vmt_transport *inner;
    counted *c;
} count_impl;

static int count_send(void *impl, const void *buf, size_t len, uint64_t deadline)
{
    count_impl *ci = impl;
    (void)deadline;
    const uint8_t *p = buf;
    if (len >= 4 && p[0] == 'V' && p[1] == 'M' && p[2] == 'T' && p[3] == 'W') {
        counted *c = ci->c;
        if (c->nstarts == MAX_STARTS) {
            memmove(c->starts, c->starts + 1, (MAX_STARTS - 1) * sizeof(uint64_t));
            c->nstarts--;
        }
        c->starts[c->nstarts++] = c->sent;
    }
    ci->c->sent += len;
    return vmt_transport_send(ci->inner, buf, len);
}

static int count_recv(void *impl, void *buf, size_t len, size_t *got, uint64_t deadline)
{
    count_impl *ci = impl;
    uint64_t now = vmt_now_ns();
    uint32_t ms = deadline > now ? (uint32_t)((deadline - now) / 1000000) + 1 : 1;
    int rc = vmt_transport_recv_some(ci->inner, buf, len, got, ms);
    if (rc == VMT_EIO && vmt_transport_eof(ci->inner)) {
        *got = 0; /* the peer's close, as a transport reports it */
        return 0;
    }
    return rc;
}

static void count_shutdown(void *impl)
{
    vmt_transport_shutdown(((count_impl *)impl)->inner);
}

static void count_close(void *impl)
{
    count_impl *ci = impl;
    vmt_transport_close(ci->inner);
    free(ci);
}

static void count_describe(void *impl, char *buf, size_t cap)
{
    snprintf(buf, cap, "count(%s)", vmt_transport_peer(((count_impl *)impl)->inner));
}

static const vmt_transport_ops count_ops = {.name = "count",
                                            .send = count_send,
                                            .recv = count_recv,
                                            .shutdown = count_shutdown,
                                            .close = count_close,
                                            .describe = count_describe};

/* ---- the wrap hook --------------------------------------------------------------- */

typedef struct cut {
    bool count; /* wrap stream 0 in the counting transport */
    counted *counted;
    vmt_fault_opts fault; /* cut points of stream 0 */
} cut;

static int wrap_fn(void *ctx, unsigned index, vmt_transport **t)
{
    cut *c = ctx;
    if (index != 0)
        return 0;
    vmt_transport *w = NULL;
    int rc;
    if (c->count) {
        count_impl *ci = calloc(1, sizeof(*ci));
        if (!ci)
            return VMT_ENOMEM;
        *ci = (count_impl){.inner = *t, .c = c->counted};
        rc = vmt_transport_new(&w, &count_ops, ci);
    } else {
        rc = vmt_transport_fault(&w, *t, &c->fault);
    }
    *t = w;
    return rc;
}

/* ---- the destination thread ----------------------------------------------------- */

typedef struct dest {
    vmt_listener *l;
    char addr[64];
    fx_guest g;
    vmt_fault_opts fault; /* the destination's own stream 0 (cut_after_sent) */
    bool faulty;
    const char *outcome_dir; /* records, and a second session: the source's QUERY */
    bool query_running, queried;
    int rc;
    char why[300];
    pthread_t th;
} dest;

static int dest_accept(void *ctx, uint64_t deadline, vmt_transport **out)
{
    dest *d = ctx;
    uint64_t now = vmt_now_ns();
    int rc =
        vmt_listener_accept(d->l, out, deadline > now ? (uint32_t)((deadline - now) / 1000000) : 0);
    if (rc == 0 && d->faulty) {
        vmt_transport *w = NULL;
        d->faulty = false; /* stream 0 only */
        rc = vmt_transport_fault(&w, *out, &d->fault);
        *out = w;
    }
    return rc;
}

static void *dest_main(void *arg)
{
    dest *d = arg;
    vmt_vm_config base;
    migfx_incoming_config(&d->g, &base);
    vmt_migrate_recv_opts o = {.base = &base, .timeout_ms = 5000, .outcome_dir = d->outcome_dir};
    vmt_session_config sc;
    vmt_migrate_recv_session_config(&o, &sc);
    vmt_session *s = NULL;
    d->rc = vmt_session_server(&s, &sc, dest_accept, d);
    if (d->rc == 0)
        d->rc = vmt_migrate_receive_session(fx_kvm, s, &o, &d->g.vm, NULL);
    if (d->rc)
        snprintf(d->why, sizeof(d->why), "%s", vmt_error_last());
    vmt_session_close(s);
    if (d->outcome_dir) { /* the source's QUERY, whatever the migration did */
        vmt_migrate_recv_report rep;
        vmt_vm *none = NULL;
        s = NULL;
        if (vmt_session_server(&s, &sc, dest_accept, d) == 0 &&
            vmt_migrate_receive_session(fx_kvm, s, &o, &none, &rep) == 0 && rep.query) {
            d->queried = true;
            d->query_running = rep.query_running;
        }
        vmt_vm_destroy(none);
        vmt_session_close(s);
    }
    return NULL;
}

static void dest_start(dest *d, const vmt_fault_opts *fault, const char *outcome_dir)
{
    memset(d, 0, sizeof(*d));
    d->outcome_dir = outcome_dir;
    CU_ASSERT_FATAL(migfx_incoming(&d->g) == 0);
    CU_ASSERT_FATAL(vmt_tcp_listen(&d->l, "127.0.0.1", 0) == 0);
    snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%u", vmt_listener_port(d->l));
    if (fault) {
        d->fault = *fault;
        d->faulty = true;
    }
    CU_ASSERT_FATAL(pthread_create(&d->th, NULL, dest_main, d) == 0);
}

/* Joins; true when the destination ended with a running VM. */
static bool dest_join(dest *d)
{
    pthread_join(d->th, NULL);
    vmt_listener_close(d->l);
    d->l = NULL;
    return d->rc == 0 && d->g.vm && !vmt_vm_is_paused(d->g.vm);
}

static int send_with(fx_guest *src, dest *d, cut *c, vmt_migrate_report *rep)
{
    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    o.timeout_ms = 3000;
    o.max_downtime_ms = 50;
    o.wrap = c ? wrap_fn : NULL;
    o.wrap_ctx = c;
    o.query_attempts = 0; /* these cases check the fence; (d) checks the query */
    return vmt_migrate_send(src->vm, d->addr, &o, rep);
}

/* ---- (a) cuts at random offsets while the counter runs ------------------------------ */

static void random_cuts_leave_the_source_running(void)
{
    fx_guest src;
    CU_ASSERT_FATAL(migfx_boot(&src, "counter", COUNTER, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&src, 3, T30));

    /* How many bytes the control stream carries in a whole migration. */
    counted cnt = {0};
    cut c = {.count = true, .counted = &cnt};
    dest d;
    dest_start(&d, NULL, NULL);
    vmt_migrate_report rep;
    int rc = send_with(&src, &d, &c, &rep);
    bool ran = dest_join(&d);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_FATAL(ran);
    uint64_t total = cnt.sent;
    printf("\n  a whole migration sends %llu bytes on stream 0\n", (unsigned long long)total);
    fx_free(&d.g);
    fx_free(&src);
    CU_ASSERT_FATAL(migfx_boot(&src, "counter", COUNTER, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&src, 3, T30));

    srand(20261124);
    unsigned resumed = 0, completed = 0;
    for (int i = 0; i < 24; i++) {
        uint64_t off = (uint64_t)((double)rand() / RAND_MAX * (double)total * 0.9);
        cut k = {.count = false};
        vmt_fault_opts_init(&k.fault);
        k.fault.cut_after_sent = off;
        dest_start(&d, NULL, NULL);
        rc = send_with(&src, &d, &k, &rep);
        ran = dest_join(&d);
        CU_ASSERT(rc != VMT_EINDOUBT);
        if (rc == 0) { /* this run ended before the cut: exactly once, there */
            CU_ASSERT(ran);
            CU_ASSERT(vmt_vm_is_paused(src.vm));
            completed++;
            fx_free(&src);
            src = d.g; /* the running copy becomes the next source */
            memset(&d.g, 0, sizeof(d.g));
            continue;
        }
        CU_ASSERT(!ran);                      /* never twice */
        CU_ASSERT_PTR_NULL(d.g.vm);           /* the destination discarded it */
        CU_ASSERT(!vmt_vm_is_paused(src.vm)); /* never lost: it runs here */
        uint64_t at = migfx_counter_step(&src);
        bool progresses = migfx_wait_step(&src, at + 2, T30);
        CU_ASSERT(progresses);
        resumed += !vmt_vm_is_paused(src.vm) && progresses;
        if (i < 3 || !progresses)
            printf("  cut after %llu bytes: %s%s\n", (unsigned long long)off, rep.why,
                   progresses ? "" : " (the source did not progress)");
        fx_free(&d.g);
    }
    printf("  24 cuts: the source ran on %u times; %u migrations ended before their cut\n", resumed,
           completed);
    CU_ASSERT_EQUAL(resumed + completed, 24);

    dest_start(&d, NULL, NULL);
    rc = send_with(&src, &d, NULL, &rep);
    ran = dest_join(&d);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(ran);
    CU_ASSERT(vmt_vm_is_paused(src.vm));
    fx_free(&d.g);
    fx_free(&src);
}

/* ---- (b) cuts at the completion -------------------------------------------------------- */

typedef struct tail_case {
    const char *what;
    int64_t from_go; /* cut_after_sent relative to GO's first byte */
    bool expect_doubt;
    bool expect_dest_runs;
} tail_case;

static void completion_cuts_settle_who_runs(void)
{
    /* A paused guest sends the same bytes every time: GO's offset is known. */
    fx_guest src;
    CU_ASSERT_FATAL(migfx_boot(&src, "counter", COUNTER, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&src, 3, T30));
    CU_ASSERT_FATAL(vmt_vm_pause(src.vm) == 0);

    counted cnt = {0};
    cut c = {.count = true, .counted = &cnt};
    dest d;
    dest_start(&d, NULL, NULL);
    vmt_migrate_report rep;
    int rc = send_with(&src, &d, &c, &rep);
    bool ran = dest_join(&d);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_FATAL(ran);
    fx_free(&d.g);
    CU_ASSERT_FATAL(cnt.nstarts >= 2);
    uint64_t go = cnt.starts[cnt.nstarts - 1], end = cnt.sent;
    printf("\n  GO at bytes %llu..%llu of stream 0\n", (unsigned long long)go,
           (unsigned long long)end);

    const tail_case cases[] = {
        {"before GO", 0, false, false},
        {"inside GO", 5, true, false},
        {"right after GO", (int64_t)(end - go), true, true},
    };
    for (size_t i = 0; i < VMT_ARRAY_SIZE(cases); i++) {
        cut k = {.count = false};
        vmt_fault_opts_init(&k.fault);
        k.fault.cut_after_sent = (uint64_t)((int64_t)go + cases[i].from_go);
        dest_start(&d, NULL, NULL);
        rc = send_with(&src, &d, &k, &rep);
        ran = dest_join(&d);
        printf("  cut %s: rc %d (%s), destination %s\n", cases[i].what, rc, rep.why,
               ran ? "runs the VM" : "discarded it");
        CU_ASSERT_EQUAL(rc == VMT_EINDOUBT, cases[i].expect_doubt);
        CU_ASSERT_EQUAL(rep.in_doubt, cases[i].expect_doubt);
        CU_ASSERT_EQUAL(ran, cases[i].expect_dest_runs);
        CU_ASSERT(vmt_vm_is_paused(src.vm)); /* as found, or fenced */
        fx_free(&d.g);
    }

    /* The destination dies right after PREPARED: its stream is cut when it
     * would read GO (it has read exactly the source's bytes before GO), so
     * it never runs the VM and the source sees its end closed: not in doubt. */
    vmt_fault_opts df;
    vmt_fault_opts_init(&df);
    df.cut_after_recv = go;
    dest_start(&d, &df, NULL);
    rc = send_with(&src, &d, NULL, &rep);
    ran = dest_join(&d);
    printf("  destination gone after PREPARED: rc %d (%s)\n", rc, rep.why);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    CU_ASSERT(rc != VMT_EINDOUBT);
    CU_ASSERT(!ran);
    CU_ASSERT(vmt_vm_is_paused(src.vm)); /* as it was found */
    fx_free(&d.g);
    fx_free(&src);
}

/* ---- (d) a completion in doubt settled by a query --------------------------------- */

static void a_query_settles_a_completion_in_doubt(void)
{
    fx_guest src;
    CU_ASSERT_FATAL(migfx_boot(&src, "counter", COUNTER, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&src, 3, T30));
    CU_ASSERT_FATAL(vmt_vm_pause(src.vm) == 0); /* the same bytes every time */
    char *dir = vmt_test_tmpdir("mig-outcomes");
    CU_ASSERT_FATAL(dir != NULL);

    counted cnt = {0};
    cut c = {.count = true, .counted = &cnt};
    dest d;
    vmt_migrate_report rep;
    dest_start(&d, NULL, NULL);
    CU_ASSERT_EQUAL_FATAL(send_with(&src, &d, &c, &rep), 0);
    CU_ASSERT_FATAL(dest_join(&d));
    fx_free(&d.g);
    uint64_t go = cnt.starts[cnt.nstarts - 1], end = cnt.sent;

    for (int k = 0; k < 2; k++) { /* inside GO: discarded; after GO: it runs there */
        cut q = {.count = false};
        vmt_fault_opts_init(&q.fault);
        q.fault.cut_after_sent = k == 0 ? go + 5 : end;
        dest_start(&d, NULL, dir);
        vmt_migrate_opts o;
        vmt_migrate_opts_init(&o);
        o.timeout_ms = 3000;
        o.wrap = wrap_fn;
        o.wrap_ctx = &q;
        int rc = vmt_migrate_send(src.vm, d.addr, &o, &rep);
        bool ran = dest_join(&d);
        printf("\n  cut %s GO, then a query: rc %d (%s), destination %s, query said %s",
               k == 0 ? "inside" : "right after", rc, rc ? rep.why : "ok",
               ran ? "runs the VM" : "discarded it",
               !d.queried        ? "nothing"
               : d.query_running ? "running"
                                 : "discarded");
        CU_ASSERT(d.queried);
        CU_ASSERT(!rep.in_doubt);
        CU_ASSERT_EQUAL(ran, k == 1);
        CU_ASSERT_EQUAL(rc == 0, k == 1);    /* settled: success exactly when it runs there */
        CU_ASSERT(vmt_vm_is_paused(src.vm)); /* as found (paused), or migrated */
        fx_free(&d.g);
    }
    printf("\n");
    vmt_test_rmtree(dir);
    free(dir);
    fx_free(&src);
}

/* ---- (c) convergence: the round limit, and auto-converge ------------------------------ */

#define DCMD "base=8388608 pages=4096 fill=random per_pass=4096 spin=20000000 event=1"

static void fast_dirtier_fails_cleanly_then_converges_throttled(void)
{
    fx_guest src;
    CU_ASSERT_FATAL(migfx_boot(&src, "dirtier", DCMD, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(fx_wait_value(&src, DIRTIER_READY, 1, T30));

    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    o.bandwidth = 24u << 20; /* the guest dirties its 16 MiB many times a second */
    o.max_downtime_ms = 40;
    o.max_rounds = 4;
    o.xbzrle = false;
    dest d;
    dest_start(&d, NULL, NULL);
    vmt_migrate_report rep;
    int rc = vmt_migrate_send(src.vm, d.addr, &o, &rep);
    bool ran = dest_join(&d);
    printf("\n  without auto-converge: rc %d after %u rounds: %s\n", rc, rep.rounds, rep.why);
    CU_ASSERT_EQUAL(rc, VMT_ECANCELED);
    CU_ASSERT(strstr(rep.why, "did not converge") != NULL);
    CU_ASSERT(!ran);
    CU_ASSERT(!vmt_vm_is_paused(src.vm));
    unsigned seen = migfx_events(&src);
    CU_ASSERT(fx_wait_events(&src, seen + 3, T30)); /* it runs on */
    fx_free(&d.g);

    o.auto_converge = true;
    o.max_rounds = 12;
    dest_start(&d, NULL, NULL);
    rc = vmt_migrate_send(src.vm, d.addr, &o, &rep);
    ran = dest_join(&d);
    printf("  with auto-converge: rc %d, %u rounds, throttled up to %u%%, downtime %.1f ms%s%s\n",
           rc, rep.rounds, rep.throttle_pct, rep.downtime_ns / 1e6, rc ? ": " : "",
           rc ? rep.why : "");
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(ran);
    CU_ASSERT(rep.throttle_pct > 0);
    if (ran) {
        CU_ASSERT_FATAL(vmt_vm_pause(d.g.vm) == 0);
        char why[256] = "";
        bool ok =
            migfx_dirtier_invariant(vmt_vm_ram(d.g.vm, NULL), 8u << 20, 4096, 1, why, sizeof(why));
        if (!ok)
            printf("  invariant: %s\n", why);
        CU_ASSERT(ok);
    }
    fx_free(&d.g);
    fx_free(&src);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"random_cuts_leave_the_source_running", random_cuts_leave_the_source_running},
        {"completion_cuts_settle_who_runs", completion_cuts_settle_who_runs},
        {"a_query_settles_a_completion_in_doubt", a_query_settles_a_completion_in_doubt},
        {"fast_dirtier_fails_cleanly_then_converges_throttled",
         fast_dirtier_fails_cleanly_then_converges_throttled},
        {NULL, NULL},
    };
    fx_require_kvm();
    return vmt_test_run("migrate_mig_faults", cases, setup, teardown);
}
