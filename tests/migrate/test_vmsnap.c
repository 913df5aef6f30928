/*
 * migrate/vmsnap.c: snapshots of running VMs.  Attaching, the HEAD ref and
 * the records; a take keeps the guest running; the round limit holds
 * against a guest that dirties faster than the copy; a take that fails at
 * any point leaves the VM running and HEAD where it was, and the next take
 * restores correctly; two VMs branched from one snapshot both continue from
 * it and each of their snapshots adds only what it changed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "migfx.h"

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

static void boot_counter(fx_guest *g)
{
    CU_ASSERT_FATAL(migfx_boot(g, "counter", COUNTER, MEM) == 0);
}

/* The guest keeps printing: `more` further steps within the timeout. */
static bool progresses(fx_guest *g, uint64_t more)
{
    return migfx_wait_step(g, migfx_counter_step(g) + more, T30);
}

static void attach_checks_its_arguments_and_owns_logging(void)
{
    fx_guest g;
    boot_counter(&g);
    vmt_vmsnap *vs = NULL;
    vmt_vmsnap_info bad = {.vm_name = "no/slash"};
    CU_ASSERT_EQUAL(vmt_vmsnap_attach(&vs, st.s, st.c, g.vm, NULL, &bad), VMT_EINVAL);
    bad.vm_name = "";
    CU_ASSERT_EQUAL(vmt_vmsnap_attach(&vs, st.s, st.c, g.vm, NULL, &bad), VMT_EINVAL);
    CU_ASSERT_PTR_NULL(vs);
    vmt_id nosuch;
    memset(&nosuch, 0x11, sizeof(nosuch));
    vmt_vmsnap_info ok = {.vm_name = "args"};
    CU_ASSERT_EQUAL(vmt_vmsnap_attach(&vs, st.s, st.c, g.vm, &nosuch, &ok), VMT_ENOENT);
    CU_ASSERT_FALSE(vmt_dirty_active(g.vm));
    CU_ASSERT_EQUAL_FATAL(vmt_vmsnap_attach(&vs, st.s, st.c, g.vm, NULL, &ok), 0);
    CU_ASSERT(vmt_dirty_active(g.vm));
    CU_ASSERT_FALSE(vmt_vmsnap_head(vs, NULL));
    vmt_vmsnap_detach(vs);
    CU_ASSERT_FALSE(vmt_dirty_active(g.vm));
    vmt_vmsnap_detach(NULL);
    /* A snapshot of a 64 MiB VM does not attach to a 128 MiB one. */
    CU_ASSERT_EQUAL_FATAL(vmt_vmsnap_attach(&vs, st.s, st.c, g.vm, NULL, &ok), 0);
    vmt_id s1;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s1, NULL) == 0);
    vmt_vmsnap_detach(vs);
    fx_guest big;
    CU_ASSERT_FATAL(migfx_boot(&big, "counter", COUNTER, 2 * MEM) == 0);
    CU_ASSERT_EQUAL(vmt_vmsnap_attach(&vs, st.s, st.c, big.vm, &s1, &ok), VMT_EINVAL);
    fx_free(&big);
    fx_free(&g);
}

/* Two snapshots of a running counter: the guest never stops for long,
 * HEAD follows, the records say what they should. */
static void take_keeps_the_guest_running_and_moves_head(void)
{
    fx_guest g;
    boot_counter(&g);
    vmt_vmsnap *vs;
    vmt_vmsnap_info info = {.vm_name = "run", .image = "counter.elf", .cmdline = COUNTER};
    CU_ASSERT_FATAL(vmt_vmsnap_attach(&vs, st.s, st.c, g.vm, NULL, &info) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&g, 5, T30));
    vmt_id s1, s2, ref, head;
    vmt_snap_take_opts o;
    vmt_snap_take_opts_init(&o);
    o.message = "first";
    vmt_snap_take_stats ts;
    CU_ASSERT_FATAL(vmt_vmsnap_take(vs, &o, &s1, &ts) == 0);
    CU_ASSERT_FALSE(vmt_vm_is_paused(g.vm));
    CU_ASSERT(progresses(&g, 5));
    CU_ASSERT(ts.precopy.pause_ns > 0 && ts.precopy.pause_ns < ts.precopy.total_ns);
    CU_ASSERT(vmt_vmsnap_head(vs, &head) && vmt_id_equal(&head, &s1));
    CU_ASSERT(vmt_catalog_get_ref(st.c, "vm/run/HEAD", &ref) == 0 && vmt_id_equal(&ref, &s1));
    o.message = "second";
    CU_ASSERT_FATAL(vmt_vmsnap_take(vs, &o, &s2, &ts) == 0);
    CU_ASSERT(progresses(&g, 5));
    /* The counter rewrites its 1 MiB buffer: about 256 pages, not 16384. */
    CU_ASSERT(ts.pages_hashed < 2048);
    vmt_snap_record r;
    CU_ASSERT_EQUAL(vmt_snap_record_read(st.s, &s2, &r), 0);
    CU_ASSERT_EQUAL(r.nparents, 1);
    CU_ASSERT(vmt_id_equal(&r.parents[0], &s1));
    CU_ASSERT_STRING_EQUAL(r.message, "second");
    CU_ASSERT_STRING_EQUAL(r.vm_name, "run");
    CU_ASSERT_STRING_EQUAL(r.image, "counter.elf");
    CU_ASSERT_STRING_EQUAL(r.cmdline, COUNTER);
    CU_ASSERT_EQUAL(r.mem_size, MEM);
    CU_ASSERT_EQUAL(r.vcpus, 1);
    CU_ASSERT_FALSE(r.irqchip);
    CU_ASSERT(r.nonzero_pages > 256);
    CU_ASSERT_EQUAL(vmt_snap_record_read(st.s, &s1, &r), 0);
    CU_ASSERT_EQUAL(r.nparents, 0);
    CU_ASSERT_STRING_EQUAL(r.message, "first");
    CU_ASSERT(vmt_catalog_get_ref(st.c, "vm/run/HEAD", &ref) == 0 && vmt_id_equal(&ref, &s2));
    vmt_vmsnap_detach(vs);
    fx_free(&g);
}

/* Round 0 waits until the counter has done two more steps: it rewrote its
 * buffer after the round's dirty sync, so there is a round 1. */
static void two_more_steps(void *ctx, unsigned round)
{
    fx_guest *g = ctx;
    if (round == 0)
        CU_ASSERT(migfx_wait_step(g, migfx_counter_step(g) + 2, T30));
}

/* Rounds 0 and 1 (the VM runs) wait for two more passes of the dirtier. */
static void two_more_passes(void *ctx, unsigned round)
{
    fx_guest *g = ctx;
    if (round < 2)
        CU_ASSERT(fx_wait_events(g, migfx_events(g) + 2, T30));
}

/* A dirtier rewriting 64 MiB as fast as it can: with pause_pages 0 the dirty
 * set never becomes small enough, and max_rounds=2 alone ends the copy. */
static void max_rounds_stops_a_guest_faster_than_the_copy(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(migfx_boot(&g, "dirtier", "base=16M pages=16384 fill=random event=1", 4 * MEM) == 0);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "fast") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(fx_wait_value(&g, DIRTIER_READY, 1, T30));
    /* Only watches the rounds, and makes sure the guest writes in each. */
    migfx_faulty watch = {.op = MIGFX_OP_NONE, .on_round = two_more_passes, .on_round_ctx = &g};
    vmt_snap_take_opts o;
    vmt_snap_take_opts_init(&o);
    o.max_rounds = 2;
    o.pause_pages = 0;
    o.interpose = migfx_faulty_interpose;
    o.interpose_ctx = &watch;
    vmt_snap_take_stats ts;
    vmt_id s;
    CU_ASSERT_EQUAL_FATAL(vmt_vmsnap_take(vs, &o, &s, &ts), 0);
    CU_ASSERT_EQUAL(ts.precopy.rounds, 3);
    CU_ASSERT_EQUAL(watch.max_round, 2); /* the paused round had pages */
    CU_ASSERT_FALSE(vmt_vm_is_paused(g.vm));
    unsigned n = migfx_events(&g);
    CU_ASSERT(fx_wait_events(&g, n + 2, T30));
    vmt_vmsnap_detach(vs);
    fx_free(&g);
}

/*
 * A take failing in round 0, in a later round (while the VM runs) or at the
 * commit (while it is paused): the VM keeps running and printing, HEAD does
 * not move, and the next take makes a snapshot that restores and continues
 * exactly.
 */
static void failed_take_leaves_the_vm_running(int op, unsigned nth, unsigned min_round)
{
    fx_guest g;
    boot_counter(&g);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "faulty") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&g, 3, T30));
    vmt_id s1, s2, ref;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s1, NULL) == 0);
    /* Two steps: the counter has rewritten its whole buffer (256 pages). */
    CU_ASSERT_FATAL(migfx_wait_step(&g, migfx_counter_step(&g) + 2, T30));
    migfx_faulty f = {.op = op, .nth = nth, .min_round = min_round, .on_round = two_more_steps,
                      .on_round_ctx = &g};
    vmt_snap_take_opts o;
    vmt_snap_take_opts_init(&o);
    o.batch_pages = 64;
    o.pause_pages = 0; /* the counter always dirties: several rounds */
    o.max_rounds = 4;
    o.interpose = migfx_faulty_interpose;
    o.interpose_ctx = &f;
    vmt_snap_take_stats ts;
    int rc = vmt_vmsnap_take(vs, &o, NULL, &ts);
    if (rc != VMT_EIO)
        fprintf(stderr, "\n  take: %d %s (%u rounds, %llu pages, fault at %u)\n", rc,
                vmt_error_last(), ts.precopy.rounds,
                (unsigned long long)ts.precopy.pages_sent, f.counted);
    CU_ASSERT_EQUAL(rc, VMT_EIO);
    CU_ASSERT(f.fired);
    CU_ASSERT_EQUAL(f.aborts, 1);
    CU_ASSERT_FALSE(vmt_vm_is_paused(g.vm));
    CU_ASSERT(progresses(&g, 5));
    CU_ASSERT(vmt_catalog_get_ref(st.c, "vm/faulty/HEAD", &ref) == 0 && vmt_id_equal(&ref, &s1));
    CU_ASSERT(vmt_vmsnap_head(vs, &ref) && vmt_id_equal(&ref, &s1));
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s2, NULL) == 0);
    uint64_t at = migfx_counter_step(&g);
    CU_ASSERT_FATAL(migfx_wait_step(&g, at + 30, T30));
    char *orig = vmt_console_buf_dup(g.con, NULL);
    vmt_vmsnap_detach(vs);
    fx_free(&g);

    CU_ASSERT(migfx_restore_compare(st.s, &s2, orig, at, NULL) >= 5);
    free(orig);
}

static void failure_in_round_0_leaves_the_vm_running(void)
{
    failed_take_leaves_the_vm_running(MIGFX_OP_PAGES, 2, 0);
}

static void failure_in_a_later_round_leaves_the_vm_running(void)
{
    failed_take_leaves_the_vm_running(MIGFX_OP_PAGES, 1, 1);
}

static void failure_at_commit_leaves_the_vm_running(void)
{
    failed_take_leaves_the_vm_running(MIGFX_OP_COMMIT, 1, 0);
}

static int count_diff(void *ctx, uint64_t pfn, const vmt_id *a, const vmt_id *b)
{
    (void)pfn;
    (void)a;
    (void)b;
    (*(uint64_t *)ctx)++;
    return 0;
}

/* Pages whose content differs between two snapshots. */
static uint64_t changed_pages(const vmt_id *s1, const vmt_id *s2)
{
    vmt_snap_record *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    uint64_t n = 0;
    CU_ASSERT_FATAL(vmt_snap_record_read(st.s, s1, a) == 0 &&
                    vmt_snap_record_read(st.s, s2, b) == 0);
    CU_ASSERT_EQUAL(vmt_map_diff(st.s, &a->map_root, &b->map_root, MEM / 4096, count_diff, &n,
                                 NULL),
                    0);
    free(a);
    free(b);
    return n;
}

/* With dirty logging owned by the caller (as the CLI's VM process does),
 * a handle may live only for one take: what a failed take had collected
 * goes back to the log at detach, and the next handle saves it. */
static void detach_hands_unsaved_pages_back_to_the_log(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(migfx_boot(&g, "dirtier", "base=16M pages=4096 per_pass=1000 passes=1 "
                                              "fill=random event=1 end=event",
                               MEM) == 0);
    g.pause_on_event = true;
    CU_ASSERT_EQUAL_FATAL(vmt_dirty_start(g.vm, 0), 0);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "handback") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 1, T30));
    vmt_id s1, s2;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s1, NULL) == 0);
    vmt_vmsnap_detach(vs);
    CU_ASSERT(vmt_dirty_active(g.vm)); /* not attach's to stop */
    vmt_vm_resume(g.vm);
    CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 2, T30)); /* 1000 pages written */
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, &s1, "handback") == 0);
    migfx_faulty f = {.op = MIGFX_OP_COMMIT, .nth = 1};
    vmt_snap_take_opts o;
    vmt_snap_take_opts_init(&o);
    o.interpose = migfx_faulty_interpose;
    o.interpose_ctx = &f;
    CU_ASSERT_EQUAL(vmt_vmsnap_take(vs, &o, NULL, NULL), VMT_EIO);
    vmt_vmsnap_detach(vs);
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, &s1, "handback") == 0);
    vmt_snap_take_stats ts;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s2, &ts) == 0);
    CU_ASSERT(ts.precopy.pages_sent >= 1000 && ts.precopy.pages_sent <= 1000 + 64);
    CU_ASSERT(changed_pages(&s1, &s2) >= 1000);
    vmt_vmsnap_detach(vs);
    fx_free(&g);
}

/* One VM restored twice: both continue from the snapshot exactly, and each
 * one's snapshot adds only what that VM changed since it. */
static void two_branches_continue_from_one_snapshot(void)
{
    fx_guest g;
    boot_counter(&g);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "trunk") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(&g, 5, T30));
    vmt_id a;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &a, NULL) == 0);
    uint64_t at = migfx_counter_step(&g);
    CU_ASSERT_FATAL(migfx_wait_step(&g, at + 40, T30));
    char *orig = vmt_console_buf_dup(g.con, NULL);
    vmt_vmsnap_detach(vs);
    fx_free(&g);

    fx_guest b[2];
    vmt_restore *rs[2];
    vmt_vmsnap *bs[2];
    static const char *const names[2] = {"branch1", "branch2"};
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_FATAL(migfx_restore(&b[i], st.s, &a, i ? VMT_RESTORE_LAZY : VMT_RESTORE_EAGER,
                                      &rs[i], NULL) == 0);
        CU_ASSERT_FATAL(migfx_attach(&bs[i], &st, &b[i], &a, names[i]) == 0);
        CU_ASSERT_FATAL(vmt_vm_start(b[i].vm) == 0);
    }
    for (int i = 0; i < 2; i++) {
        CU_ASSERT(migfx_wait_step(&b[i], at + 10, T30));
        char *text = vmt_console_buf_dup(b[i].con, NULL);
        CU_ASSERT(migfx_counter_compare(orig, text, NULL) >= 5);
        free(text);
        uint64_t objs0 = migfx_store_objects(&st);
        vmt_id s;
        vmt_snap_take_stats ts;
        CU_ASSERT_FATAL(migfx_take(bs[i], 8, 256, &s, &ts) == 0);
        uint64_t added = migfx_store_objects(&st) - objs0;
        /* What the branch changed since A: the counter's 256 pages of
         * buffer and a few of the runtime's.  The store gained at most the
         * pages sent (a page rewritten during round 0 is sent again in the
         * next), the nodes on their paths, the blob and the record. */
        CU_ASSERT(changed_pages(&a, &s) <= 256 + 64);
        CU_ASSERT(ts.precopy.pages_sent <= ts.precopy.rounds * (256 + 64));
        CU_ASSERT(added <= ts.precopy.pages_sent + ts.nodes_new + 2);
        CU_ASSERT_EQUAL(added, ts.objects_new);
        CU_ASSERT(ts.nodes_new <= 8);
        vmt_snap_record r;
        CU_ASSERT_EQUAL(vmt_snap_record_read(st.s, &s, &r), 0);
        CU_ASSERT(r.nparents == 1 && vmt_id_equal(&r.parents[0], &a));
        char ref[64];
        snprintf(ref, sizeof(ref), "vm/%s/HEAD", names[i]);
        vmt_id head;
        CU_ASSERT(vmt_catalog_get_ref(st.c, ref, &head) == 0 && vmt_id_equal(&head, &s));
    }
    for (int i = 0; i < 2; i++) {
        vmt_vmsnap_detach(bs[i]);
        migfx_free(&b[i], rs[i]);
    }
    free(orig);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"attach_checks_its_arguments_and_owns_logging",
         attach_checks_its_arguments_and_owns_logging},
        {"take_keeps_the_guest_running_and_moves_head",
         take_keeps_the_guest_running_and_moves_head},
        {"max_rounds_stops_a_guest_faster_than_the_copy",
         max_rounds_stops_a_guest_faster_than_the_copy},
        {"failure_in_round_0_leaves_the_vm_running", failure_in_round_0_leaves_the_vm_running},
        {"failure_in_a_later_round_leaves_the_vm_running",
         failure_in_a_later_round_leaves_the_vm_running},
        {"failure_at_commit_leaves_the_vm_running", failure_at_commit_leaves_the_vm_running},
        {"detach_hands_unsaved_pages_back_to_the_log",
         detach_hands_unsaved_pages_back_to_the_log},
        {"two_branches_continue_from_one_snapshot", two_branches_continue_from_one_snapshot},
        {NULL, NULL},
    };
    fx_require_kvm();
    return vmt_test_run("migrate_vmsnap", cases, setup, teardown);
}
