/*
 * Migration with the destination's store (mig_dest.c have-set, mig_source.c
 * references): the source announces the snapshot its VM runs from, the
 * destination holding it sends that snapshot's page ids, and unchanged
 * pages travel as 16-byte references resolved from the store.  A reference
 * the store cannot serve (a damaged pack) is asked for again (WANT) and
 * arrives in full, so the VM is still exact.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "migfx.h"
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

typedef struct dest {
    vmt_listener *l;
    char addr[64];
    fx_guest g;
    vmt_store *store;
    vmt_migrate_recv_report rep;
    int rc;
    pthread_t th;
} dest;

static void *dest_main(void *arg)
{
    dest *d = arg;
    vmt_vm_config base;
    migfx_incoming_config(&d->g, &base);
    vmt_migrate_recv_opts o = {.base = &base, .store = d->store};
    vmt_session_config sc;
    vmt_migrate_recv_session_config(&o, &sc);
    vmt_session *s = NULL;
    d->rc = vmt_session_accept(&s, d->l, &sc);
    if (d->rc == 0)
        d->rc = vmt_migrate_receive_session(fx_kvm, s, &o, &d->g.vm, &d->rep);
    if (d->rc)
        printf("\n  destination: %s\n", vmt_error_last());
    vmt_session_close(s);
    return NULL;
}

static void dest_start(dest *d, vmt_store *store)
{
    memset(d, 0, sizeof(*d));
    d->store = store;
    CU_ASSERT_FATAL(migfx_incoming(&d->g) == 0);
    CU_ASSERT_FATAL(vmt_tcp_listen(&d->l, "127.0.0.1", 0) == 0);
    snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%u", vmt_listener_port(d->l));
    CU_ASSERT_FATAL(pthread_create(&d->th, NULL, dest_main, d) == 0);
}

static void dest_join(dest *d)
{
    pthread_join(d->th, NULL);
    vmt_listener_close(d->l);
}

/* A dirtier that fills its region with page-seeded random bytes once and
 * then spins: two boots hold the same pages. */
static void boot_filled(fx_guest *g)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u fill=random passes=1 end=event event=1",
             (unsigned long long)DBASE, DPAGES);
    CU_ASSERT_FATAL(migfx_boot(g, "dirtier", cmd, MEM) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g->vm) == 0);
    CU_ASSERT_FATAL(fx_wait_value(g, 0xfffffffeu, 1, T30)); /* the pass is done */
}

static void check_invariant(fx_guest *g)
{
    char why[256] = "";
    CU_ASSERT_FATAL(vmt_vm_pause(g->vm) == 0);
    bool ok = migfx_dirtier_invariant(vmt_vm_ram(g->vm, NULL), DBASE, DPAGES, 1, why, sizeof(why));
    if (!ok)
        printf("\n  invariant: %s\n", why);
    CU_ASSERT(ok);
}

static int send(fx_guest *src, dest *d, const vmt_id *base, vmt_migrate_report *rep)
{
    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    o.base = base;
    int rc = vmt_migrate_send(src->vm, d->addr, &o, rep);
    if (rc)
        printf("\n  migrate: %s\n", rep->why);
    return rc;
}

static void pages_the_destination_holds_travel_as_references(void)
{
    migfx_store st;
    CU_ASSERT_FATAL(migfx_store_open(&st) == 0);
    fx_guest a;
    boot_filled(&a);
    vmt_vmsnap *vs = NULL;
    vmt_id snap;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &a, NULL, "a") == 0);
    CU_ASSERT_FATAL(migfx_take(vs, 4, 32, &snap, NULL) == 0);
    vmt_vmsnap_detach(vs);

    /* Without the base: every page of the region crosses in full. */
    dest d;
    vmt_migrate_report full, ref;
    dest_start(&d, st.s);
    CU_ASSERT_EQUAL_FATAL(send(&a, &d, NULL, &full), 0);
    dest_join(&d);
    CU_ASSERT_EQUAL(d.rc, 0);
    CU_ASSERT_EQUAL(full.pages_by_enc[VMT_PAGE_REF], 0);
    fx_free(&d.g);

    /* With it: the destination announces the snapshot's ids. */
    fx_guest b;
    boot_filled(&b);
    dest_start(&d, st.s);
    CU_ASSERT_EQUAL_FATAL(send(&b, &d, &snap, &ref), 0);
    dest_join(&d);
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    printf("\n  without the base: %llu bytes, downtime %.2f ms; with it: %llu bytes, downtime "
           "%.2f ms, %llu ids announced, %llu references (%llu resolved from the store)\n",
           (unsigned long long)full.wire_bytes, full.downtime_ns / 1e6,
           (unsigned long long)ref.wire_bytes, ref.downtime_ns / 1e6,
           (unsigned long long)ref.have_ids, (unsigned long long)ref.pages_by_enc[VMT_PAGE_REF],
           (unsigned long long)d.rep.refs);
    CU_ASSERT(ref.have_ids >= DPAGES);
    CU_ASSERT(ref.pages_by_enc[VMT_PAGE_REF] >= DPAGES);
    CU_ASSERT_EQUAL(d.rep.refs, ref.pages_by_enc[VMT_PAGE_REF]);
    CU_ASSERT_EQUAL(d.rep.wants, 0);
    CU_ASSERT(ref.wire_bytes * 10 < full.wire_bytes);
    check_invariant(&d.g);
    fx_free(&d.g);

    /* Damage the packs: references that do not resolve are fetched in full. */
    char pack[4096];
    snprintf(pack, sizeof(pack), "%s/store/packs/pack-%08u.vpk", st.dir, 1u);
    int fd = open(pack, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    off_t size = lseek(fd, 0, SEEK_END);
    for (int i = 1; i <= 16; i++) {
        uint8_t byte;
        off_t at = size / 17 * i;
        CU_ASSERT(pread(fd, &byte, 1, at) == 1);
        byte ^= 0x5a;
        CU_ASSERT(pwrite(fd, &byte, 1, at) == 1);
    }
    close(fd);
    fx_guest c;
    boot_filled(&c);
    dest_start(&d, st.s);
    CU_ASSERT_EQUAL_FATAL(send(&c, &d, &snap, &ref), 0);
    dest_join(&d);
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    printf("  damaged pack: %llu references, %llu asked for again in full\n",
           (unsigned long long)d.rep.refs, (unsigned long long)d.rep.wants);
    CU_ASSERT(d.rep.wants >= 1);
    check_invariant(&d.g);
    fx_free(&d.g);
    fx_free(&a);
    fx_free(&b);
    fx_free(&c);
    migfx_store_close(&st);
}

/* A VM whose lazy restore is still loading migrates whole: its pages come
 * through the restore's fault handling while the prefetcher races the
 * copy, and the holes of its RAM (pages yet to arrive, not zero) are read
 * (vmt_migrate_opts.lazy_ram).  Here the prefetcher usually stays ahead of
 * round 0, so this checks the path end to end rather than catching a hole
 * taken for a zero page every time. */
#define LPAGES 32768u

static void a_vm_still_arriving_by_lazy_restore_migrates_whole(void)
{
    migfx_store st;
    CU_ASSERT_FATAL(migfx_store_open(&st) == 0);
    fx_guest a;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u fill=random passes=1 end=event event=1",
             (unsigned long long)DBASE, LPAGES);
    CU_ASSERT_FATAL(migfx_boot(&a, "dirtier", cmd, 256ull << 20) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(a.vm) == 0);
    CU_ASSERT_FATAL(fx_wait_value(&a, 0xfffffffeu, 1, 120 * FX_SEC));
    vmt_vmsnap *vs = NULL;
    vmt_id snap;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &a, NULL, "a") == 0);
    CU_ASSERT_FATAL(migfx_take(vs, 4, 32, &snap, NULL) == 0);
    vmt_vmsnap_detach(vs);
    fx_free(&a);

    fx_guest b;
    vmt_restore *restore = NULL;
    CU_ASSERT_FATAL(migfx_restore(&b, st.s, &snap, VMT_RESTORE_LAZY, &restore, NULL) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(b.vm) == 0);
    dest d;
    dest_start(&d, NULL);
    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    o.lazy_ram = true;
    vmt_migrate_report rep;
    int rc = vmt_migrate_send(b.vm, d.addr, &o, &rep);
    if (rc)
        printf("\n  migrate: %s\n", rep.why);
    dest_join(&d);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL_FATAL(d.rc, 0);
    CU_ASSERT_FATAL(vmt_vm_pause(d.g.vm) == 0);
    char why[256] = "";
    bool ok = migfx_dirtier_invariant(vmt_vm_ram(d.g.vm, NULL), DBASE, LPAGES, 1, why, sizeof(why));
    if (!ok)
        printf("\n  invariant: %s\n", why);
    CU_ASSERT(ok);
    fx_free(&d.g);
    migfx_free(&b, restore);
    migfx_store_close(&st);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"pages_the_destination_holds_travel_as_references",
         pages_the_destination_holds_travel_as_references},
        {"a_vm_still_arriving_by_lazy_restore_migrates_whole",
         a_vm_still_arriving_by_lazy_restore_migrates_whole},
        {NULL, NULL},
    };
    fx_require_kvm();
    return vmt_test_run("migrate_mig_haveset", cases, setup, teardown);
}
