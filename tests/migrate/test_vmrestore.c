/*
 * migrate/vmrestore.c: VMs from snapshots.  A counter restored from a
 * snapshot taken while it ran prints exactly the checksums that followed
 * the snapshot in the original run (eager and lazy); every memory image of
 * a dirtier snapshotted under load, over several rounds, satisfies the
 * dirtier's invariant; the record and errors are as documented.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "migfx.h"
#include "vmtree/proto.h"

#define MEM (64ull << 20)
#define COUNTER "steps=0 every=1 work=200000"
#define T30 (30 * FX_SEC)

static migfx_store st;

static int setup(void)
{
    if (fx_setup() != 0)
        return 1;
    return migfx_store_open(&st) == 0 ? 0 : 1;
}

static int teardown(void)
{
    migfx_store_close(&st);
    return fx_teardown();
}

/* Whether the host gives shared memory 2 MiB pages (vmt_ram_advise_huge). */
static bool host_has_shmem_thp(void)
{
    char mode[32];
    return vmt_thp_shmem_mode(mode, sizeof(mode)) == 0 && strcmp(mode, "never") != 0 &&
           strcmp(mode, "deny") != 0;
}

/* Runs a counter (on 2 MiB pages with `huge`), snapshots it at step >= 5
 * while it runs, lets it run 40 more steps; returns the snapshot and the
 * whole output. */
static char *counter_run(const char *name, bool huge, vmt_id *snap, uint64_t *at)
{
    fx_guest g;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = MEM;
    cfg.huge_pages = huge;
    CU_ASSERT_FATAL(fx_boot(&g, "counter", COUNTER, &cfg) == 0);
    CU_ASSERT_EQUAL(vmt_vm_ram_huge(g.vm), huge && host_has_shmem_thp());
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, name) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&g, 5, T30));
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, snap, NULL) == 0);
    *at = migfx_counter_step(&g);
    CU_ASSERT_FATAL(migfx_wait_step(&g, *at + 40, T30));
    char *text = vmt_console_buf_dup(g.con, NULL);
    vmt_vmsnap_detach(vs);
    fx_free(&g);
    return text;
}

static void rollback_continues_exactly(vmt_restore_mode mode, bool huge)
{
    vmt_id a;
    uint64_t at;
    char *orig = counter_run(huge ? "huge" : mode == VMT_RESTORE_LAZY ? "lazy" : "eager", huge, &a,
                             &at);
    fx_guest r;
    vmt_restore *rs = NULL;
    vmt_snap_record rec;
    CU_ASSERT_FATAL(migfx_restore_huge(&r, st.s, &a, mode, huge, &rs, &rec) == 0);
    CU_ASSERT_EQUAL(vmt_vm_ram_huge(r.vm), huge && host_has_shmem_thp());
    CU_ASSERT_EQUAL(rec.mem_size, MEM);
    CU_ASSERT_EQUAL(vmt_vm_ram_pages(r.vm), MEM / 4096);
    CU_ASSERT_FATAL(vmt_vm_start(r.vm) == 0);
    CU_ASSERT(migfx_wait_step(&r, at + 25, T30));
    char *after = vmt_console_buf_dup(r.con, NULL);
    uint64_t first = 0;
    long n = migfx_counter_compare(orig, after, &first);
    if (n < 20 || first <= 1 || first > at + 2)
        fprintf(stderr, "\n  %ld lines compared, first step %llu, snapshot before step %llu:\n%.300s\n", n,
                (unsigned long long)first, (unsigned long long)at, after);
    CU_ASSERT(n >= 20);
    /* It continued from the snapshot, not from the beginning: the pause was
     * at most in the middle of printing line at + 1 (`at` is the last
     * complete line after the take returned). */
    CU_ASSERT(first > 1 && first <= at + 2);
    if (mode == VMT_RESTORE_LAZY)
        CU_ASSERT_EQUAL(vmt_restore_wait(rs, T30), 0);
    free(after);
    free(orig);
    migfx_free(&r, rs);
}

static void eager_rollback_continues_exactly(void)
{
    rollback_continues_exactly(VMT_RESTORE_EAGER, false);
}

static void lazy_rollback_continues_exactly(void)
{
    rollback_continues_exactly(VMT_RESTORE_LAZY, false);
}

/* Guest RAM on 2 MiB pages where the host gives them (else 4 KiB, as the
 * VM reports): the eager restore writes straight into the mapping. */
static void huge_page_vm_continues_exactly(void)
{
    if (!host_has_shmem_thp())
        printf("\n  (the host gives shared memory no huge pages: RAM keeps 4 KiB pages) ");
    rollback_continues_exactly(VMT_RESTORE_EAGER, true);
}

#define DBASE (16ull << 20)
#define DPAGES 8192u

static void passes_in_live_rounds(void *ctx, unsigned round)
{
    fx_guest *g = ctx;
    if (round < 2)
        CU_ASSERT(fx_wait_events(g, migfx_events(g) + 2, T30));
}

/* Snapshots of a dirtier writing its region without pause, taken with a
 * small pause_pages so that they need several rounds: each image restored
 * (eagerly, and lazily read from the host) holds the invariant. */
static void dirtier_images_hold_the_invariant(void)
{
    fx_guest g;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u fill=random spin=2000 per_pass=512 event=1",
             (unsigned long long)DBASE, DPAGES);
    CU_ASSERT_FATAL(migfx_boot(&g, "dirtier", cmd, MEM) == 0);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "inv") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(fx_wait_value(&g, DIRTIER_READY, 1, T30));
    vmt_id s[4];
    for (int i = 0; i < 4; i++) {
        vmt_snap_take_stats ts;
        struct timespec pause = {0, 20000000}; /* some passes between */
        nanosleep(&pause, NULL);
        /* The guest makes passes during rounds 0 and 1: at least 3 rounds. */
        migfx_faulty watch = {.op = MIGFX_OP_NONE, .on_round = passes_in_live_rounds,
                              .on_round_ctx = &g};
        vmt_snap_take_opts o;
        vmt_snap_take_opts_init(&o);
        o.max_rounds = 6;
        o.pause_pages = 16;
        o.interpose = migfx_faulty_interpose;
        o.interpose_ctx = &watch;
        CU_ASSERT_FATAL(vmt_vmsnap_take(vs, &o, &s[i], &ts) == 0);
        CU_ASSERT(ts.precopy.rounds >= 3);
    }
    vmt_vmsnap_detach(vs);
    fx_free(&g);
    for (int i = 0; i < 4; i++) {
        for (int lazy = 0; lazy < 2; lazy++) {
            fx_guest r;
            vmt_restore *rs = NULL;
            CU_ASSERT_FATAL(migfx_restore(&r, st.s, &s[i],
                                          lazy ? VMT_RESTORE_LAZY : VMT_RESTORE_EAGER, &rs,
                                          NULL) == 0);
            char why[256] = "";
            bool ok = migfx_dirtier_invariant(vmt_vm_ram(r.vm, NULL), DBASE, DPAGES, 1, why,
                                              sizeof(why));
            if (!ok)
                fprintf(stderr, "\n  snapshot %d (%s): %s\n", i, lazy ? "lazy" : "eager", why);
            CU_ASSERT(ok);
            migfx_free(&r, rs);
        }
    }
}

/* The restored VM's vCPU is where the snapshot's state blob says. */
static void restored_state_is_the_blobs(void)
{
    vmt_id a;
    uint64_t at;
    char *orig = counter_run("state", false, &a, &at);
    free(orig);
    fx_guest r;
    vmt_restore *rs = NULL;
    vmt_snap_record rec;
    CU_ASSERT_FATAL(migfx_restore(&r, st.s, &a, VMT_RESTORE_EAGER, &rs, &rec) == 0);
    void *blob = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(vmt_store_get(st.s, &rec.state, &blob, &len, NULL) == 0);
    vmt_vm_state vm;
    vmt_vcpu_state *want = malloc(sizeof(*want)), *have = malloc(sizeof(*have));
    unsigned n = 0;
    CU_ASSERT_EQUAL(vmt_state_decode(blob, len, &vm, want, 1, &n), 0);
    CU_ASSERT_EQUAL(vmt_vcpu_get_state(r.vm, 0, have), 0);
    CU_ASSERT_EQUAL(memcmp(&want->regs, &have->regs, sizeof(have->regs)), 0);
    CU_ASSERT_EQUAL(want->sregs.cr3, have->sregs.cr3);
    free(want);
    free(have);
    free(blob);
    migfx_free(&r, rs);
}

/* A VM with an in-kernel irqchip (LAPIC, PIC, IOAPIC, PIT state in the
 * blob): the record says so and the restored VM continues exactly. */
static void irqchip_vm_continues_exactly(void)
{
    if (!vmt_kvm_get_caps(fx_kvm)->irqchip) {
        printf("(this KVM has no in-kernel irqchip: not checked) ");
        return;
    }
    fx_guest g;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = MEM;
    cfg.irqchip = true;
    cfg.vcpus = 2;
    CU_ASSERT_FATAL(fx_boot(&g, "counter", COUNTER, &cfg) == 0);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "irq") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&g, 3, T30));
    vmt_id a, b;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &a, NULL) == 0);
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &b, NULL) == 0); /* with the config known */
    uint64_t at = migfx_counter_step(&g);
    CU_ASSERT_FATAL(migfx_wait_step(&g, at + 30, T30));
    char *orig = vmt_console_buf_dup(g.con, NULL);
    vmt_vmsnap_detach(vs);
    fx_free(&g);
    vmt_snap_record rec;
    memset(&rec, 0, sizeof(rec));
    CU_ASSERT(migfx_restore_compare(st.s, &b, orig, at, &rec) >= 5);
    CU_ASSERT(rec.irqchip);
    CU_ASSERT_EQUAL(rec.vcpus, 2);
    free(orig);
}

static void unknown_snapshots_and_missing_handles_are_refused(void)
{
    vmt_id nosuch;
    memset(&nosuch, 0x42, sizeof(nosuch));
    vmt_vm *vm = (vmt_vm *)&nosuch;
    vmt_restore *rs = (vmt_restore *)&nosuch;
    CU_ASSERT_EQUAL(vmt_vm_from_snapshot(fx_kvm, st.s, &nosuch, NULL, NULL, &vm, &rs, NULL),
                    VMT_ENOENT);
    CU_ASSERT_PTR_NULL(vm);
    CU_ASSERT_PTR_NULL(rs);
    vmt_restore_opts lazy = {.mode = VMT_RESTORE_LAZY};
    CU_ASSERT_EQUAL(vmt_vm_from_snapshot(fx_kvm, st.s, &nosuch, NULL, &lazy, &vm, NULL, NULL),
                    VMT_EINVAL);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"eager_rollback_continues_exactly", eager_rollback_continues_exactly},
        {"lazy_rollback_continues_exactly", lazy_rollback_continues_exactly},
        {"huge_page_vm_continues_exactly", huge_page_vm_continues_exactly},
        {"dirtier_images_hold_the_invariant", dirtier_images_hold_the_invariant},
        {"restored_state_is_the_blobs", restored_state_is_the_blobs},
        {"irqchip_vm_continues_exactly", irqchip_vm_continues_exactly},
        {"unknown_snapshots_and_missing_handles_are_refused",
         unknown_snapshots_and_missing_handles_are_refused},
        {NULL, NULL},
    };
    fx_require_kvm();
    return vmt_test_run("migrate_vmrestore", cases, setup, teardown);
}
