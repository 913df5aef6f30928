/*
 * Bulk placement in the migration engine (mig_bulk.c, mig_dest.c): over a
 * session whose streams offer it, pages that would travel in full are
 * written straight into the destination's RAM (RDMA WRITE on an RDMA
 * transport) and counted at ROUND_END.  No RDMA device exists here, so the
 * session runs over in-memory streams, whose bulk placement (a memcpy into
 * the exposed RAM, with the same ordering promise and landed-run queue)
 * stands in for RDMA's: the engine's code path is the one RDMA uses.  A
 * dirtier under load arrives with its invariant intact, mostly placed, and
 * a counter continues; TCP (no bulk path) is covered by test_mig_tcp.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "migfx.h"
#include "net_fixture.h"
#include "vmtree/net.h"

#define MEM (32ull << 20)
#define DBASE (8ull << 20)
#define DPAGES 4096u
#define T30 (30 * FX_SEC)

static int setup(void)
{
    return fx_setup() != 0;
}

static int teardown(void)
{
    return fx_teardown();
}

/* The destination: accepts the session, then receives the migration. */
typedef struct dest {
    net_mem_link link;
    vmt_session_config sc;
    vmt_session *s;
    fx_guest g;
    vmt_migrate_recv_report rep;
    int rc;
    char why[300];
    pthread_t th;
} dest;

static void *dest_main(void *arg)
{
    dest *d = arg;
    vmt_vm_config base;
    migfx_incoming_config(&d->g, &base);
    vmt_migrate_recv_opts o = {.base = &base};
    d->rc = vmt_session_server(&d->s, &d->sc, net_mem_accept, &d->link);
    if (d->rc == 0)
        d->rc = vmt_migrate_receive_session(fx_kvm, d->s, &o, &d->g.vm, &d->rep);
    if (d->rc)
        snprintf(d->why, sizeof(d->why), "%s", vmt_error_last());
    return NULL;
}

/* Connects a client session to a new destination thread. */
static vmt_session *dest_start(dest *d, unsigned streams)
{
    memset(d, 0, sizeof(*d));
    net_mem_link_init(&d->link, 1u << 20);
    CU_ASSERT_FATAL(migfx_incoming(&d->g) == 0);
    vmt_session_config_init(&d->sc);
    d->sc.allow_unauthenticated = true;
    d->sc.nstreams = streams;
    CU_ASSERT_FATAL(pthread_create(&d->th, NULL, dest_main, d) == 0);
    vmt_session *cli = NULL;
    CU_ASSERT_FATAL(vmt_session_client(&cli, &d->sc, net_mem_dial, &d->link) == 0);
    return cli;
}

static void dest_join(dest *d)
{
    pthread_join(d->th, NULL);
    if (d->rc)
        printf("\n  destination: %s\n", d->why);
    vmt_session_close(d->s);
}

static int send_over(fx_guest *src, vmt_session *cli, vmt_migrate_report *rep)
{
    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    o.session = cli;
    o.max_downtime_ms = 50;
    int rc = vmt_migrate_send(src->vm, "mem", &o, rep);
    if (rc)
        printf("\n  migrate: %s\n", rep->why);
    return rc;
}

static void dirtier_pages_are_placed_and_arrive_consistent(void)
{
    fx_guest src;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u fill=random spin=2000 per_pass=512 event=1",
             (unsigned long long)DBASE, DPAGES);
    CU_ASSERT_FATAL(migfx_boot(&src, "dirtier", cmd, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(fx_wait_value(&src, 0xffffffffu, 1, T30));

    dest d;
    vmt_session *cli = dest_start(&d, 2);
    vmt_migrate_report rep;
    int rc = send_over(&src, cli, &rep);
    dest_join(&d);
    vmt_session_close(cli);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    printf("\n  %u rounds, %llu pages placed, %llu in batches (raw %llu, delta %llu), "
           "downtime %.2f ms\n",
           rep.rounds, (unsigned long long)rep.pages_placed,
           (unsigned long long)(rep.pages_sent - rep.pages_placed),
           (unsigned long long)rep.pages_by_enc[VMT_PAGE_RAW],
           (unsigned long long)rep.pages_by_enc[VMT_PAGE_DELTA], rep.downtime_ns / 1e6);
    CU_ASSERT(rep.pages_placed >= DPAGES);                  /* round 0's region at least */
    CU_ASSERT(rep.pages_by_enc[VMT_PAGE_RAW] < DPAGES / 8); /* little went in batches */
    CU_ASSERT(vmt_vm_is_paused(src.vm));
    CU_ASSERT_FATAL(vmt_vm_pause(d.g.vm) == 0);
    char why[256] = "";
    bool ok = migfx_dirtier_invariant(vmt_vm_ram(d.g.vm, NULL), DBASE, DPAGES, 1, why, sizeof(why));
    if (!ok)
        printf("  invariant: %s\n", why);
    CU_ASSERT(ok);
    fx_free(&d.g);
    fx_free(&src);
}

static void counter_continues_over_placed_pages(void)
{
    fx_guest ref, src;
    const char *cmd = "steps=0 every=1 work=200000";
    CU_ASSERT_FATAL(migfx_boot(&ref, "counter", cmd, MEM) == 0);
    CU_ASSERT_FATAL(migfx_boot(&src, "counter", cmd, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(ref.vm) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(src.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&src, 5, T30));
    dest d;
    vmt_session *cli = dest_start(&d, 1);
    vmt_migrate_report rep;
    int rc = send_over(&src, cli, &rep);
    dest_join(&d);
    vmt_session_close(cli);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT(rep.pages_placed > 0);
    uint64_t at = migfx_counter_step(&src);
    CU_ASSERT_FATAL(migfx_wait_step(&d.g, at + 10, T30));
    CU_ASSERT_FATAL(vmt_vm_pause(d.g.vm) == 0);
    char *after = vmt_console_buf_dup(d.g.con, NULL);
    CU_ASSERT_FATAL(migfx_wait_step(&ref, migfx_counter_step(&d.g) + 1, T30));
    char *orig = vmt_console_buf_dup(ref.con, NULL);
    uint64_t first = 0;
    long n = migfx_counter_compare(orig, after, &first);
    CU_ASSERT(n >= 5);
    CU_ASSERT(first >= at && first <= at + 2);
    printf("\n  counter: %llu pages placed; %ld lines match from step %llu\n",
           (unsigned long long)rep.pages_placed, n, (unsigned long long)first);
    free(orig);
    free(after);
    fx_free(&d.g);
    fx_free(&src);
    fx_free(&ref);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"dirtier_pages_are_placed_and_arrive_consistent",
         dirtier_pages_are_placed_and_arrive_consistent},
        {"counter_continues_over_placed_pages", counter_continues_over_placed_pages},
        {NULL, NULL},
    };
    fx_require_kvm();
    return vmt_test_run("migrate_mig_bulk", cases, setup, teardown);
}
