/*
 * migrate/precopy.c: the pre-copy engine against an in-memory sink that
 * keeps a copy of guest RAM.  A copy of a running guest equals its RAM at
 * the pause; the policy alone decides the rounds; failures of the sink leave
 * the unsent pages pending, the VM running and the sink aborted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixture.h"
#include "harness.h"
#include "vmtree/migrate.h"
#include "vmtree/proto.h"

#define MEM (128ull << 20)
#define REGION_BASE (64ull << 20)
#define REGION_PAGES 8192u

enum { OP_NONE, OP_BEGIN, OP_PAGES, OP_STATE, OP_COMMIT };

/* The in-memory sink: RAM as received, and a record of the calls. */
typedef struct memsink {
    uint8_t *copy;
    uint64_t npages;
    vmt_precopy_info info;
    unsigned begins, page_calls, states, commits, aborts;
    unsigned max_round;
    uint64_t pages;
    uint8_t *blob;
    size_t blob_len;
    int fail_op;          /* which operation fails ... */
    unsigned fail_at;     /* ... at its n-th call (1-based) */
    unsigned fail_round;  /* pages: count only calls of rounds >= this */
    unsigned counted;
    bool after_abort_call; /* a call arrived after abort */
    fx_guest *g;          /* with wait_rounds: at the first call of rounds */
    unsigned wait_rounds; /* < wait_rounds, wait for a pass of the guest */
    unsigned waited;      /* rounds waited for */
} memsink;

static void wait_for_a_pass(fx_guest *g)
{
    pthread_mutex_lock(&g->lock);
    unsigned n = g->nevents;
    pthread_mutex_unlock(&g->lock);
    CU_ASSERT(fx_wait_events(g, n + 2, 10 * FX_SEC));
}

static int maybe_fail(memsink *m, int op)
{
    if (m->fail_op != op || ++m->counted != m->fail_at)
        return 0;
    return vmt_error_set(VMT_EIO, "memsink: injected failure (op %d)", op);
}

static int ms_begin(void *ctx, const vmt_precopy_info *info)
{
    memsink *m = ctx;
    m->begins++;
    m->info = *info;
    return maybe_fail(m, OP_BEGIN);
}

static int ms_pages(void *ctx, unsigned round, const uint64_t *pfns, const uint8_t *const *data,
                    size_t n)
{
    memsink *m = ctx;
    m->after_abort_call |= m->aborts > 0;
    m->page_calls++;
    /* The guest makes a pass after this round's dirty sync: the round ends
     * with pages dirty. */
    if (round < m->wait_rounds && m->waited == round) {
        m->waited++;
        wait_for_a_pass(m->g);
    }
    if (round >= m->fail_round) {
        int rc = maybe_fail(m, OP_PAGES);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_FATAL(pfns[i] < m->npages);
        memcpy(m->copy + pfns[i] * 4096, data[i], 4096);
    }
    m->pages += n;
    if (round > m->max_round)
        m->max_round = round;
    return 0;
}

static int ms_state(void *ctx, const uint8_t *blob, size_t len)
{
    memsink *m = ctx;
    m->states++;
    int rc = maybe_fail(m, OP_STATE);
    if (rc)
        return rc;
    free(m->blob);
    m->blob = malloc(len);
    memcpy(m->blob, blob, len);
    m->blob_len = len;
    return 0;
}

static int ms_commit(void *ctx)
{
    memsink *m = ctx;
    m->commits++;
    return maybe_fail(m, OP_COMMIT);
}

static void ms_abort(void *ctx)
{
    memsink *m = ctx;
    m->aborts++;
}

static const vmt_sink_ops memsink_ops = {
    .begin = ms_begin,
    .pages = ms_pages,
    .state = ms_state,
    .commit = ms_commit,
    .abort = ms_abort,
};

static void memsink_init(memsink *m, uint64_t npages)
{
    memset(m, 0, sizeof(*m));
    m->npages = npages;
    m->copy = calloc(npages, 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->copy);
}

static void memsink_free(memsink *m)
{
    free(m->copy);
    free(m->blob);
}

/* A dirtier in a 128 MiB VM; dirty logging on; started unless told not. */
static void boot_dirtier_mode(fx_guest *g, const char *extra, bool start, vmt_dirty_mode mode)
{
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = MEM;
    cfg.dirty_mode = mode;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u fill=random %s",
             (unsigned long long)REGION_BASE, REGION_PAGES, extra ? extra : "");
    CU_ASSERT_FATAL(fx_boot(g, "dirtier", cmd, &cfg) == 0);
    CU_ASSERT_EQUAL_FATAL(vmt_dirty_start(g->vm, 0), 0);
    if (start)
        CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g->vm), 0);
}

static void boot_dirtier(fx_guest *g, const char *extra, bool start)
{
    boot_dirtier_mode(g, extra, start, VMT_DIRTY_BITMAP);
}

static uint64_t *all_pending(const fx_guest *g)
{
    uint64_t *bm = fx_bitmap(g);
    for (uint64_t p = 0; p < vmt_vm_ram_pages(g->vm); p++)
        bm[p / 64] |= 1ull << (p % 64);
    return bm;
}

/* Waits until the guest wrote its region at least once (the fill and the
 * first pass: event 1 is READY with event=1). */
static void wait_ready(fx_guest *g)
{
    CU_ASSERT_FATAL(fx_wait_value(g, DIRTIER_READY, 1, 30 * FX_SEC));
}

/* The guest goes on: three more events (passes) arrive. */
static bool progressing(fx_guest *g)
{
    pthread_mutex_lock(&g->lock);
    unsigned n0 = g->nevents;
    pthread_mutex_unlock(&g->lock);
    return fx_wait_events(g, n0 + 3, 10 * FX_SEC);
}

/* Counts the policy's calls and delegates to the simple policy. */
typedef struct counting_policy {
    vmt_simple_policy simple;
    unsigned calls;
    vmt_round_stats last;
    uint64_t min_dirty;
    vmt_policy_decision force; /* CONTINUE: use simple */
    unsigned think_ms;         /* time taken to decide: the guest runs on */
} counting_policy;

static vmt_policy_decision count_policy(void *ctx, vmt_round_stats r)
{
    counting_policy *p = ctx;
    CU_ASSERT_EQUAL(r.round, p->calls);
    p->calls++;
    p->last = r;
    if (p->calls == 1 || r.dirty_pages < p->min_dirty)
        p->min_dirty = r.dirty_pages;
    if (p->think_ms) {
        struct timespec ts = {0, (long)p->think_ms * 1000000};
        nanosleep(&ts, NULL);
    }
    if (p->force != VMT_POLICY_CONTINUE)
        return p->force;
    return vmt_simple_policy_fn(&p->simple, r);
}

static void copy_equals_ram_at_the_pause(vmt_dirty_mode mode)
{
    fx_guest g;
    boot_dirtier_mode(&g, "event=1 spin=20000", true, mode);
    wait_ready(&g);
    uint64_t npages = vmt_vm_ram_pages(g.vm), *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, npages);
    /* The policy takes its time: the guest writes between the last live
     * sync and the pause, which only the final sync can catch. */
    counting_policy pol = {.simple = {.pause_pages = 32, .max_rounds = 5}, .think_ms = 5};
    vmt_precopy_opts o = {.policy = count_policy, .policy_ctx = &pol, .batch_pages = 100};
    vmt_precopy_stats st;
    int rc = vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, &st);
    if (rc)
        fprintf(stderr, "\n  precopy: %s\n", vmt_error_last());
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT(vmt_vm_is_paused(g.vm));
    /* The copy is RAM as it is now, page for page. */
    uint8_t *ram = vmt_vm_ram(g.vm, NULL);
    uint64_t differ = 0;
    for (uint64_t p = 0; p < npages; p++)
        differ += memcmp(ram + p * 4096, m.copy + p * 4096, 4096) != 0;
    CU_ASSERT_EQUAL(differ, 0);
    CU_ASSERT_EQUAL(fx_count_range(pending, 0, npages), 0);
    CU_ASSERT_EQUAL(m.begins, 1);
    CU_ASSERT_EQUAL(m.info.mem_size, MEM);
    CU_ASSERT_EQUAL(m.info.npages, npages);
    CU_ASSERT_EQUAL(m.info.vcpus, 1);
    CU_ASSERT_FALSE(m.info.irqchip);
    CU_ASSERT_EQUAL(m.states, 1);
    CU_ASSERT_EQUAL(m.commits, 1);
    CU_ASSERT_EQUAL(m.aborts, 0);
    CU_ASSERT_EQUAL(st.rounds, pol.calls + 1);
    CU_ASSERT(st.pages_sent >= npages);
    CU_ASSERT_EQUAL(st.pages_sent, m.pages);
    CU_ASSERT_EQUAL(st.state_bytes, m.blob_len);
    CU_ASSERT(st.pause_ns > 0 && st.pause_ns <= st.total_ns);
    /* The blob is the paused VM's state. */
    vmt_vm_state vs;
    vmt_vcpu_state *cpu = malloc(sizeof(*cpu));
    unsigned n = 0;
    CU_ASSERT_EQUAL(vmt_state_decode(m.blob, m.blob_len, &vs, cpu, 1, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(vs.mem_size, MEM);
    vmt_vcpu_state *now = malloc(sizeof(*now));
    CU_ASSERT_EQUAL(vmt_vcpu_get_state(g.vm, 0, now), 0);
    CU_ASSERT_EQUAL(cpu->regs.rip, now->regs.rip);
    CU_ASSERT_EQUAL(cpu->regs.rsp, now->regs.rsp);
    free(cpu);
    free(now);
    vmt_vm_resume(g.vm);
    CU_ASSERT(progressing(&g));
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

static void copy_of_running_guest_equals_ram_at_the_pause(void)
{
    copy_equals_ram_at_the_pause(VMT_DIRTY_BITMAP);
}

static void same_with_the_dirty_ring(void)
{
    if (!vmt_kvm_get_caps(fx_kvm)->dirty_ring_max) {
        printf("(this KVM has no dirty ring: not checked) ");
        return;
    }
    copy_equals_ram_at_the_pause(VMT_DIRTY_RING);
}

/* A guest that dirties its region faster than the copy: the dirty set never
 * shrinks to pause_pages, and max_rounds alone ends the live rounds. */
static void max_rounds_stops_a_dirtier_faster_than_the_copy(void)
{
    fx_guest g;
    boot_dirtier(&g, "event=1", true);
    wait_ready(&g);
    uint64_t npages = vmt_vm_ram_pages(g.vm), *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, npages);
    m.g = &g; /* each live round lasts a guest's pass at least */
    m.wait_rounds = 2;
    counting_policy pol = {.simple = {.pause_pages = 0, .max_rounds = 2}};
    vmt_precopy_opts o = {.policy = count_policy, .policy_ctx = &pol};
    vmt_precopy_stats st;
    CU_ASSERT_EQUAL_FATAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, &st), 0);
    CU_ASSERT_EQUAL(pol.calls, 2);
    CU_ASSERT(pol.min_dirty > 0); /* it never converged */
    CU_ASSERT_EQUAL(st.rounds, 3);
    CU_ASSERT_EQUAL(m.max_round, 2);
    CU_ASSERT_EQUAL(m.commits, 1);
    CU_ASSERT(vmt_vm_is_paused(g.vm));
    vmt_vm_resume(g.vm);
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

static void abort_policy_leaves_the_vm_running_with_the_dirty_set_pending(void)
{
    fx_guest g;
    boot_dirtier(&g, "event=1 spin=20000", true);
    wait_ready(&g);
    uint64_t npages = vmt_vm_ram_pages(g.vm), *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, npages);
    m.g = &g; /* round 0 lasts a guest's pass at least */
    m.wait_rounds = 1;
    counting_policy pol = {.force = VMT_POLICY_ABORT};
    vmt_precopy_opts o = {.policy = count_policy, .policy_ctx = &pol};
    vmt_precopy_stats st;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, &st), VMT_ECANCELED);
    CU_ASSERT_EQUAL(pol.calls, 1);
    CU_ASSERT_EQUAL(m.aborts, 1);
    CU_ASSERT_EQUAL(m.states, 0);
    CU_ASSERT_EQUAL(m.commits, 0);
    CU_ASSERT_FALSE(m.after_abort_call);
    CU_ASSERT_FALSE(vmt_vm_is_paused(g.vm));
    CU_ASSERT(progressing(&g));
    /* Round 0 sent everything; what is pending is what it saw dirtied. */
    CU_ASSERT_EQUAL(st.pages_sent, npages);
    CU_ASSERT_EQUAL(fx_count_range(pending, 0, npages), pol.last.dirty_pages);
    CU_ASSERT(pol.last.dirty_pages > 0);
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

/* The sink refuses the third batch of round 0: the two batches it took are
 * no longer pending, every other page still is. */
static void sink_failure_in_round_0_leaves_unsent_pages_pending(void)
{
    fx_guest g;
    boot_dirtier(&g, "event=1", false);
    uint64_t npages = vmt_vm_ram_pages(g.vm), *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, npages);
    m.fail_op = OP_PAGES;
    m.fail_at = 3;
    vmt_simple_policy sp = {.pause_pages = 0, .max_rounds = 4};
    vmt_precopy_opts o = {.policy = vmt_simple_policy_fn, .policy_ctx = &sp, .batch_pages = 256};
    vmt_precopy_stats st;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, &st), VMT_EIO);
    CU_ASSERT(strstr(vmt_error_last(), "injected failure") != NULL);
    CU_ASSERT_EQUAL(m.aborts, 1);
    CU_ASSERT_EQUAL(m.commits, 0);
    CU_ASSERT_EQUAL(st.pages_sent, 512);
    CU_ASSERT_EQUAL(fx_count_range(pending, 0, 512), 0);
    CU_ASSERT_EQUAL(fx_count_range(pending, 512, npages), npages - 512);
    CU_ASSERT_FALSE(vmt_vm_is_paused(g.vm));
    /* The VM was never started: it starts and runs normally. */
    CU_ASSERT_EQUAL(vmt_vm_start(g.vm), 0);
    wait_ready(&g);
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

/* Failures while the VM is paused for the copy (a later round, the state,
 * the commit): the engine resumes the VM it paused and the guest runs on. */
static void failure_while_paused_resumes_the_vm(int op, unsigned at, unsigned round)
{
    fx_guest g;
    boot_dirtier(&g, "event=1 spin=20000", true);
    wait_ready(&g);
    uint64_t npages = vmt_vm_ram_pages(g.vm), *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, npages);
    m.fail_op = op;
    m.fail_at = at;
    m.fail_round = round;
    m.g = &g; /* round 0 lasts a guest's pass at least */
    m.wait_rounds = 1;
    vmt_simple_policy sp = {.pause_pages = 0, .max_rounds = 1};
    vmt_precopy_opts o = {.policy = vmt_simple_policy_fn, .policy_ctx = &sp};
    vmt_precopy_stats st;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, &st), VMT_EIO);
    CU_ASSERT_EQUAL(m.aborts, 1);
    CU_ASSERT_FALSE(m.after_abort_call);
    CU_ASSERT_FALSE(vmt_vm_is_paused(g.vm));
    CU_ASSERT(progressing(&g));
    CU_ASSERT_EQUAL(st.rounds, 2);
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

static void failure_in_the_paused_round_resumes_the_vm(void)
{
    failure_while_paused_resumes_the_vm(OP_PAGES, 1, 1);
}

static void failure_of_state_resumes_the_vm(void)
{
    failure_while_paused_resumes_the_vm(OP_STATE, 1, 0);
}

static void failure_of_commit_resumes_the_vm(void)
{
    failure_while_paused_resumes_the_vm(OP_COMMIT, 1, 0);
}

/* A sink that needs the VM only until the state: the VM runs again while
 * it commits, and also when the commit then fails. */
static void resume_before_commit_runs_the_vm_during_commit(void)
{
    fx_guest g;
    boot_dirtier(&g, "event=1 spin=20000", true);
    wait_ready(&g);
    uint64_t npages = vmt_vm_ram_pages(g.vm), *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, npages);
    vmt_sink_ops ops = memsink_ops;
    ops.flags = VMT_SINK_RESUME_BEFORE_COMMIT;
    vmt_simple_policy sp = {.pause_pages = 64, .max_rounds = 3};
    vmt_precopy_opts o = {.policy = vmt_simple_policy_fn, .policy_ctx = &sp};
    vmt_precopy_stats st;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &ops, &m, &o, &st), 0);
    CU_ASSERT_FALSE(vmt_vm_is_paused(g.vm));
    CU_ASSERT(progressing(&g));
    CU_ASSERT(st.pause_ns > 0 && st.pause_ns < st.total_ns);
    CU_ASSERT_EQUAL(m.commits, 1);
    m.fail_op = OP_COMMIT;
    m.fail_at = 1;
    m.counted = 0;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &ops, &m, &o, &st), VMT_EIO);
    CU_ASSERT_EQUAL(m.aborts, 1);
    CU_ASSERT_FALSE(vmt_vm_is_paused(g.vm));
    CU_ASSERT(progressing(&g));
    /* A VM paused by its owner is not resumed for the commit. */
    vmt_vm_pause(g.vm);
    m.fail_op = OP_NONE;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &ops, &m, &o, &st), 0);
    CU_ASSERT(vmt_vm_is_paused(g.vm));
    vmt_vm_resume(g.vm);
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

/* A VM that was paused before the copy stays paused whatever happens. */
static void a_paused_vm_stays_paused(void)
{
    fx_guest g;
    boot_dirtier(&g, "event=1 spin=20000", false);
    g.pause_on_event = true;
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    wait_ready(&g);
    /* The event callback asked for a pause; make sure it has happened. */
    vmt_vm_pause(g.vm);
    CU_ASSERT(vmt_vm_is_paused(g.vm));
    uint64_t npages = vmt_vm_ram_pages(g.vm), *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, npages);
    m.fail_op = OP_COMMIT;
    m.fail_at = 1;
    vmt_simple_policy sp = {.pause_pages = 0, .max_rounds = 3};
    vmt_precopy_opts o = {.policy = vmt_simple_policy_fn, .policy_ctx = &sp};
    vmt_precopy_stats st;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, &st), VMT_EIO);
    CU_ASSERT(vmt_vm_is_paused(g.vm));
    /* Nothing runs, so round 0 leaves nothing dirty and the policy stops. */
    CU_ASSERT_EQUAL(st.rounds, 2);
    m.fail_op = OP_NONE;
    memset(m.copy, 0, npages * 4096);
    uint64_t *all = all_pending(&g);
    memcpy(pending, all, (npages + 63) / 64 * 8);
    free(all);
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, &st), 0);
    CU_ASSERT(vmt_vm_is_paused(g.vm));
    CU_ASSERT_EQUAL(memcmp(m.copy, vmt_vm_ram(g.vm, NULL), npages * 4096), 0);
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

static void begin_failure_aborts_without_pages(void)
{
    fx_guest g;
    boot_dirtier(&g, NULL, false);
    uint64_t npages = vmt_vm_ram_pages(g.vm), *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, npages);
    m.fail_op = OP_BEGIN;
    m.fail_at = 1;
    vmt_precopy_opts o = {.policy = vmt_simple_policy_fn};
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, NULL), VMT_EIO);
    CU_ASSERT_EQUAL(m.aborts, 1);
    CU_ASSERT_EQUAL(m.page_calls, 0);
    CU_ASSERT_EQUAL(fx_count_range(pending, 0, npages), npages);
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

static void bad_arguments_are_refused_before_the_sink_is_called(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(fx_boot(&g, "hello", NULL, NULL) == 0);
    uint64_t *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, vmt_vm_ram_pages(g.vm));
    vmt_precopy_opts o = {.policy = vmt_simple_policy_fn};
    /* dirty logging is off */
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL_FATAL(vmt_dirty_start(g.vm, 0), 0);
    vmt_precopy_opts nopol = {0};
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &nopol, NULL), VMT_EINVAL);
    vmt_precopy_opts big = {.policy = vmt_simple_policy_fn, .batch_pages = 1u << 20};
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &big, NULL), VMT_ERANGE);
    vmt_sink_ops partial = memsink_ops;
    partial.commit = NULL;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &partial, &m, &o, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, NULL, &memsink_ops, &m, &o, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL(m.begins + m.aborts, 0);
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

/* A config given by the caller is checked against the VM: its size at
 * once, its irqchip when the state is read (then the VM runs on). */
static void a_given_config_must_be_the_vms(void)
{
    fx_guest g;
    boot_dirtier(&g, "event=1 spin=20000", true);
    wait_ready(&g);
    uint64_t npages = vmt_vm_ram_pages(g.vm), *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, npages);
    vmt_precopy_info info = {.mem_size = MEM / 2, .vcpus = 1, .npages = npages};
    vmt_precopy_opts o = {.policy = vmt_simple_policy_fn, .info = &info};
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL(m.begins, 0);
    info.mem_size = MEM;
    info.irqchip = true;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, NULL), VMT_EINVAL);
    CU_ASSERT(strstr(vmt_error_last(), "irqchip") != NULL);
    CU_ASSERT(m.begins == 1 && m.aborts == 1 && m.commits == 0);
    CU_ASSERT(m.info.irqchip);
    CU_ASSERT_FALSE(vmt_vm_is_paused(g.vm));
    CU_ASSERT(progressing(&g));
    info.irqchip = false;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, NULL), 0);
    CU_ASSERT_EQUAL(m.commits, 1);
    vmt_vm_resume(g.vm);
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

static void simple_policy_stops_on_a_small_set_or_the_round_limit(void)
{
    vmt_simple_policy p = {.pause_pages = 100, .max_rounds = 3};
    vmt_round_stats r = {.round = 0, .dirty_pages = 101};
    CU_ASSERT_EQUAL(vmt_simple_policy_fn(&p, r), VMT_POLICY_CONTINUE);
    r.dirty_pages = 100;
    CU_ASSERT_EQUAL(vmt_simple_policy_fn(&p, r), VMT_POLICY_STOP_AND_COPY);
    r.dirty_pages = 1000;
    r.round = 1;
    CU_ASSERT_EQUAL(vmt_simple_policy_fn(&p, r), VMT_POLICY_CONTINUE);
    r.round = 2;
    CU_ASSERT_EQUAL(vmt_simple_policy_fn(&p, r), VMT_POLICY_STOP_AND_COPY);
    p.max_rounds = 0;
    r.round = 0;
    CU_ASSERT_EQUAL(vmt_simple_policy_fn(&p, r), VMT_POLICY_STOP_AND_COPY);
    CU_ASSERT_EQUAL(vmt_simple_policy_fn(NULL, r), VMT_POLICY_STOP_AND_COPY);
}

typedef struct prog {
    unsigned calls;
    uint64_t last_sent;
    bool monotonic;
} prog;

static void on_progress(void *ctx, unsigned round, uint64_t remaining, uint64_t sent)
{
    prog *p = ctx;
    (void)round;
    (void)remaining;
    p->monotonic &= sent >= p->last_sent;
    p->last_sent = sent;
    p->calls++;
}

static void progress_reports_every_batch(void)
{
    fx_guest g;
    boot_dirtier(&g, NULL, false);
    uint64_t npages = vmt_vm_ram_pages(g.vm), *pending = all_pending(&g);
    memsink m;
    memsink_init(&m, npages);
    prog p = {.monotonic = true};
    vmt_precopy_opts o = {.policy = vmt_simple_policy_fn, .progress = on_progress,
                          .progress_ctx = &p, .batch_pages = 1000};
    vmt_precopy_stats st;
    CU_ASSERT_EQUAL(vmt_precopy_run(g.vm, pending, &memsink_ops, &m, &o, &st), 0);
    CU_ASSERT_EQUAL(p.calls, (npages + 999) / 1000);
    CU_ASSERT(p.monotonic);
    CU_ASSERT_EQUAL(p.last_sent, npages);
    CU_ASSERT_EQUAL(st.pages_sent, npages);
    memsink_free(&m);
    free(pending);
    fx_free(&g);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"simple_policy_stops_on_a_small_set_or_the_round_limit",
         simple_policy_stops_on_a_small_set_or_the_round_limit},
        {"copy_of_running_guest_equals_ram_at_the_pause",
         copy_of_running_guest_equals_ram_at_the_pause},
        {"same_with_the_dirty_ring", same_with_the_dirty_ring},
        {"max_rounds_stops_a_dirtier_faster_than_the_copy",
         max_rounds_stops_a_dirtier_faster_than_the_copy},
        {"abort_policy_leaves_the_vm_running_with_the_dirty_set_pending",
         abort_policy_leaves_the_vm_running_with_the_dirty_set_pending},
        {"sink_failure_in_round_0_leaves_unsent_pages_pending",
         sink_failure_in_round_0_leaves_unsent_pages_pending},
        {"failure_in_the_paused_round_resumes_the_vm", failure_in_the_paused_round_resumes_the_vm},
        {"failure_of_state_resumes_the_vm", failure_of_state_resumes_the_vm},
        {"failure_of_commit_resumes_the_vm", failure_of_commit_resumes_the_vm},
        {"resume_before_commit_runs_the_vm_during_commit",
         resume_before_commit_runs_the_vm_during_commit},
        {"a_paused_vm_stays_paused", a_paused_vm_stays_paused},
        {"begin_failure_aborts_without_pages", begin_failure_aborts_without_pages},
        {"bad_arguments_are_refused_before_the_sink_is_called",
         bad_arguments_are_refused_before_the_sink_is_called},
        {"progress_reports_every_batch", progress_reports_every_batch},
        {"a_given_config_must_be_the_vms", a_given_config_must_be_the_vms},
        {NULL, NULL},
    };
    fx_require_kvm();
    return vmt_test_run("migrate_precopy", cases, fx_setup, fx_teardown);
}
