/*
 * migrate/mig_source.c + mig_dest.c: live migration over TCP on loopback,
 * both ends in one process (the destination on a thread).  A counter
 * migrated while it runs continues the checksum sequence of an
 * uninterrupted run exactly and the source stays paused; a dirtier under
 * load arrives with its invariant intact and keeps going; a destination
 * that drops the connection mid-round leaves the source running, and a
 * second migration then succeeds; a wrong PSK is refused before any state
 * and the source runs on.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "migfx.h"
#include "vmtree/net.h"

#define MEM (64ull << 20)
#define COUNTER "steps=0 every=1 work=200000"
#define T30 (30 * FX_SEC)
#define DBASE (16ull << 20)
#define DPAGES 8192u

static const uint8_t PSK[32] = "vmtree-test-psk-0123456789abcdef";
static const uint8_t BADPSK[32] = "vmtree-test-psk-fedcba9876543210";

static int setup(void)
{
    return fx_setup() != 0;
}

static int teardown(void)
{
    return fx_teardown();
}

/* ---- the destination thread ---------------------------------------------------- */

static vmt_event_action on_event(void *ctx, vmt_vm *vm, unsigned vcpu, uint32_t value)
{
    fx_guest *g = ctx;
    (void)vm;
    pthread_mutex_lock(&g->lock);
    if (g->nevents < FX_MAX_EVENTS) {
        g->events[g->nevents] = value;
        g->event_vcpu[g->nevents] = vcpu;
        g->nevents++;
    }
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    return VMT_EVENT_CONTINUE;
}

typedef struct dest {
    vmt_listener *l;
    uint16_t port;
    char addr[64];
    fx_guest g; /* the migrated VM, console and events */
    const uint8_t *psk;
    int rc;
    char why[256];
    bool drop; /* fake destination: drop the connection mid-round */
    vmt_tls *tls; /* TLS on the destination's streams, or NULL */
    pthread_t th;
} dest;

static void *dest_main(void *arg)
{
    dest *d = arg;
    if (d->drop) {
        vmt_session_config sc;
        vmt_session_config_init(&sc);
        sc.psk = d->psk;
        sc.psk_len = d->psk ? sizeof(PSK) : 0;
        sc.allow_unauthenticated = !d->psk;
        vmt_session *s = NULL;
        vmt_frame f;
        vmt_frame_init(&f);
        d->rc = vmt_session_accept(&s, d->l, &sc);
        /* VM_CONFIG, ROUND_START, then a few batches: gone. */
        for (int i = 0; d->rc == 0 && i < 6; i++)
            d->rc = vmt_session_recv(s, 0, &f, 10000);
        vmt_frame_free(&f);
        vmt_session_close(s);
        return NULL;
    }
    vmt_vm_config base;
    migfx_incoming_config(&d->g, &base);
    base.event = on_event;
    base.event_ctx = &d->g;
    vmt_migrate_recv_opts o = {.psk = d->psk, .psk_len = d->psk ? sizeof(PSK) : 0, .base = &base,
                               .tls = d->tls};
    d->rc = vmt_migrate_receive(fx_kvm, d->l, &o, &d->g.vm);
    if (d->rc)
        snprintf(d->why, sizeof(d->why), "%s", vmt_error_last());
    return NULL;
}

static void dest_start_with(dest *d, const uint8_t *psk, bool drop, vmt_tls *tls)
{
    memset(d, 0, sizeof(*d));
    d->psk = psk;
    d->drop = drop;
    d->tls = tls;
    CU_ASSERT_FATAL(migfx_incoming(&d->g) == 0);
    CU_ASSERT_FATAL(vmt_tcp_listen(&d->l, "127.0.0.1", 0) == 0);
    d->port = vmt_listener_port(d->l);
    snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%u", d->port);
    CU_ASSERT_FATAL(pthread_create(&d->th, NULL, dest_main, d) == 0);
}

static void dest_start(dest *d, const uint8_t *psk, bool drop)
{
    dest_start_with(d, psk, drop, NULL);
}

static int dest_join(dest *d)
{
    pthread_join(d->th, NULL);
    vmt_listener_close(d->l);
    d->l = NULL;
    if (d->rc && !d->drop)
        printf("\n  destination: %s\n", d->why);
    return d->rc;
}

static void print_report(const char *what, const vmt_migrate_report *r)
{
    printf("\n  %s: total %.1f ms, setup %.1f ms, downtime %.2f ms, rounds %u, pages %llu "
           "(zero %llu delta %llu raw %llu lz4 %llu zstd %llu), wire %llu bytes, %.1f MB/s\n",
           what, r->total_ns / 1e6, r->setup_ns / 1e6, r->downtime_ns / 1e6, r->rounds,
           (unsigned long long)r->pages_sent, (unsigned long long)r->pages_by_enc[VMT_PAGE_ZERO],
           (unsigned long long)r->pages_by_enc[VMT_PAGE_DELTA],
           (unsigned long long)r->pages_by_enc[VMT_PAGE_RAW],
           (unsigned long long)r->pages_by_enc[VMT_PAGE_LZ4],
           (unsigned long long)r->pages_by_enc[VMT_PAGE_ZSTD], (unsigned long long)r->wire_bytes,
           r->throughput / 1e6);
    for (unsigned i = 0; i < r->nround_stats; i++)
        printf("    round %u: %.0f MB/s, %.0f pages/s dirtied\n", i, r->bandwidth[i] / 1e6,
               r->dirty_rate[i]);
}

/* ---- (a) counter ------------------------------------------------------------------- */

static void counter_continues_exactly_and_source_stays_paused(void)
{
    fx_guest ref, src;
    CU_ASSERT_FATAL(migfx_boot(&ref, "counter", COUNTER, MEM) == 0);
    CU_ASSERT_FATAL(migfx_boot(&src, "counter", COUNTER, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(ref.vm) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&src, 5, T30));

    dest d;
    dest_start(&d, PSK, false);
    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    o.streams = 2;
    o.compress = VMT_MIGRATE_COMPRESS_LZ4;
    o.psk = PSK;
    o.psk_len = sizeof(PSK);
    vmt_migrate_report rep;
    int rc = vmt_migrate_send(src.vm, d.addr, &o, &rep);
    if (rc)
        printf("\n  migrate: %s\n", rep.why);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL_FATAL(dest_join(&d), 0);
    CU_ASSERT(rep.acked);
    print_report("counter (2 streams, lz4)", &rep);

    /* The source is paused for good; the destination runs on. */
    CU_ASSERT(vmt_vm_is_paused(src.vm));
    uint64_t at = migfx_counter_step(&src);
    CU_ASSERT_FATAL(migfx_wait_step(&d.g, at + 20, T30));
    CU_ASSERT_EQUAL(migfx_counter_step(&src), at);
    CU_ASSERT(vmt_vm_is_paused(src.vm));

    char *after = vmt_console_buf_dup(d.g.con, NULL);
    CU_ASSERT_FATAL(vmt_vm_pause(d.g.vm) == 0);
    free(after);
    after = vmt_console_buf_dup(d.g.con, NULL); /* complete: the destination is paused */
    CU_ASSERT_FATAL(migfx_wait_step(&ref, migfx_counter_step(&d.g) + 1, T30));
    char *orig = vmt_console_buf_dup(ref.con, NULL);
    uint64_t first = 0;
    long n = migfx_counter_compare(orig, after, &first);
    CU_ASSERT(n >= 10);
    /* The source may have paused in the middle of step at+1's line: the
     * destination then prints its tail, and at+2 is its first whole line. */
    CU_ASSERT(first >= at && first <= at + 2);
    printf("  source stopped at step %llu; destination printed %ld matching lines from %llu\n",
           (unsigned long long)at, n, (unsigned long long)first);
    free(orig);
    free(after);
    fx_free(&d.g);
    fx_free(&src);
    fx_free(&ref);
}

/* ---- (b) dirtier under load -------------------------------------------------------------- */

static void dirtier_arrives_consistent_and_runs_on(void)
{
    fx_guest src;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u fill=random spin=2000 per_pass=512 event=1",
             (unsigned long long)DBASE, DPAGES);
    CU_ASSERT_FATAL(migfx_boot(&src, "dirtier", cmd, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(fx_wait_value(&src, DIRTIER_READY, 1, T30));
    CU_ASSERT_FATAL(fx_wait_events(&src, migfx_events(&src) + 3, T30));

    dest d;
    dest_start(&d, NULL, false);
    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    o.max_downtime_ms = 50;
    vmt_migrate_report rep;
    int rc = vmt_migrate_send(src.vm, d.addr, &o, &rep);
    if (rc)
        printf("\n  migrate: %s\n", rep.why);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL_FATAL(dest_join(&d), 0);
    print_report("dirtier (1 stream, xbzrle)", &rep);
    CU_ASSERT(vmt_vm_is_paused(src.vm));

    /* Consistent at once (paused to read it), and then it runs on. */
    CU_ASSERT_FATAL(vmt_vm_pause(d.g.vm) == 0);
    char why[256] = "";
    bool ok = migfx_dirtier_invariant(vmt_vm_ram(d.g.vm, NULL), DBASE, DPAGES, 1, why, sizeof(why));
    if (!ok)
        printf("\n  invariant: %s\n", why);
    CU_ASSERT(ok);
    CU_ASSERT_FATAL(vmt_vm_resume(d.g.vm) == 0);
    unsigned seen = migfx_events(&d.g);
    CU_ASSERT(fx_wait_events(&d.g, seen + 3, T30));
    CU_ASSERT_FATAL(vmt_vm_pause(d.g.vm) == 0);
    ok = migfx_dirtier_invariant(vmt_vm_ram(d.g.vm, NULL), DBASE, DPAGES, 1, why, sizeof(why));
    if (!ok)
        printf("\n  invariant after more passes: %s\n", why);
    CU_ASSERT(ok);
    fx_free(&d.g);
    fx_free(&src);
}

/* ---- (c) the destination drops the connection -------------------------------------------- */

static void dropped_connection_leaves_the_source_running(void)
{
    fx_guest src;
    CU_ASSERT_FATAL(migfx_boot(&src, "counter", COUNTER, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&src, 3, T30));

    dest d;
    dest_start(&d, NULL, true);
    vmt_migrate_report rep;
    int rc = vmt_migrate_send(src.vm, d.addr, NULL, &rep);
    dest_join(&d);
    fx_free(&d.g);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    CU_ASSERT(!rep.acked);
    CU_ASSERT(rep.why[0] != '\0');
    printf("\n  dropped: rc %d after %.1f ms: %s\n", rc, rep.total_ns / 1e6, rep.why);
    CU_ASSERT(!vmt_vm_is_paused(src.vm));
    uint64_t at = migfx_counter_step(&src);
    CU_ASSERT(migfx_wait_step(&src, at + 5, T30));

    /* Again, to a real destination. */
    dest_start(&d, NULL, false);
    rc = vmt_migrate_send(src.vm, d.addr, NULL, &rep);
    if (rc)
        printf("\n  migrate: %s\n", rep.why);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL_FATAL(dest_join(&d), 0);
    print_report("after the drop", &rep);
    at = migfx_counter_step(&src);
    CU_ASSERT(migfx_wait_step(&d.g, at + 5, T30));
    CU_ASSERT(vmt_vm_is_paused(src.vm));
    fx_free(&d.g);
    fx_free(&src);
}

/* ---- (d) wrong PSK -------------------------------------------------------------------------- */

static void wrong_psk_is_refused_before_any_state(void)
{
    fx_guest src;
    CU_ASSERT_FATAL(migfx_boot(&src, "counter", COUNTER, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&src, 3, T30));

    dest d;
    dest_start(&d, PSK, false);
    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    o.psk = BADPSK;
    o.psk_len = sizeof(BADPSK);
    vmt_migrate_report rep;
    int rc = vmt_migrate_send(src.vm, d.addr, &o, &rep);
    CU_ASSERT_EQUAL(rc, VMT_EAUTH);
    CU_ASSERT_EQUAL(dest_join(&d), VMT_EAUTH);
    CU_ASSERT_PTR_NULL(d.g.vm);
    CU_ASSERT_EQUAL(rep.pages_sent, 0);
    printf("\n  wrong PSK: %s\n", rep.why);
    CU_ASSERT(!vmt_vm_is_paused(src.vm));
    uint64_t at = migfx_counter_step(&src);
    CU_ASSERT(migfx_wait_step(&src, at + 5, T30));
    fx_free(&d.g);
    fx_free(&src);
}

/* ---- (e) TLS ------------------------------------------------------------------------- */

static void counter_migrates_over_tls(void)
{
    char *dir = vmt_test_tmpdir("mig-tls");
    CU_ASSERT_FATAL(dir != NULL);
    CU_ASSERT_FATAL(vmt_tls_write_test_pki(dir) == 0);
    char cert[4096], key[4096], ca[4096];
    snprintf(cert, sizeof(cert), "%s/server.pem", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    vmt_tls_config sc = {.server = true, .cert_file = cert, .key_file = key};
    vmt_tls_config cc = {.server = false, .ca_file = ca};
    vmt_tls *st = NULL, *ct = NULL;
    CU_ASSERT_FATAL(vmt_tls_new(&st, &sc) == 0);
    CU_ASSERT_FATAL(vmt_tls_new(&ct, &cc) == 0);

    fx_guest src;
    CU_ASSERT_FATAL(migfx_boot(&src, "counter", COUNTER, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&src, 3, T30));
    dest d;
    dest_start_with(&d, NULL, false, st);
    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    o.tls = ct;
    o.tls_peer_name = "127.0.0.1";
    o.streams = 2;
    vmt_migrate_report rep;
    int rc = vmt_migrate_send(src.vm, d.addr, &o, &rep);
    if (rc)
        printf("\n  migrate: %s\n", rep.why);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(dest_join(&d), 0);
    print_report("counter over TLS (2 streams)", &rep);
    uint64_t at = migfx_counter_step(&src);
    CU_ASSERT(migfx_wait_step(&d.g, at + 5, T30));
    CU_ASSERT(vmt_vm_is_paused(src.vm));
    fx_free(&d.g);
    fx_free(&src);
    vmt_tls_free(st);
    vmt_tls_free(ct);
    vmt_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"counter_continues_exactly_and_source_stays_paused",
         counter_continues_exactly_and_source_stays_paused},
        {"dirtier_arrives_consistent_and_runs_on", dirtier_arrives_consistent_and_runs_on},
        {"dropped_connection_leaves_the_source_running",
         dropped_connection_leaves_the_source_running},
        {"wrong_psk_is_refused_before_any_state", wrong_psk_is_refused_before_any_state},
        {"counter_migrates_over_tls", counter_migrates_over_tls},
        {NULL, NULL},
    };
    fx_require_kvm();
    return vmt_test_run("migrate_mig_tcp", cases, setup, teardown);
}
