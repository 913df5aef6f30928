/* hypervisor-glue/dirty.c: the dirty log reports exactly what was written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixture.h"
#include "harness.h"

#define BASE (64ull << 20)
#define BASE_PFN (BASE / 4096)
#define REGION 1024
#define PER_PASS 100
#define RT_LIMIT_PFN ((4ull << 20) / 4096) /* the runtime writes only below 4 MiB */
#define RT_MAX_PAGES 64

/* The region pages reported by each sync, for comparing the two modes. */
typedef struct trace {
    uint64_t region[8][REGION / 64];
    unsigned n;
} trace;

static uint64_t sync_now(fx_guest *g, uint64_t *bm)
{
    uint64_t n = 0;
    memset(bm, 0, (vmt_vm_ram_pages(g->vm) / 64 + 1) * 8);
    CU_ASSERT_EQUAL(vmt_dirty_sync(g->vm, bm, vmt_vm_ram_pages(g->vm), &n), 0);
    return n;
}

/* Pages outside the region: only the runtime's own, below 4 MiB. */
static void assert_outside_region_is_runtime(const uint64_t *bm, uint64_t pages)
{
    CU_ASSERT(fx_count_range(bm, RT_LIMIT_PFN, BASE_PFN) == 0);
    CU_ASSERT(fx_count_range(bm, BASE_PFN + REGION, pages) == 0);
    CU_ASSERT(fx_count_range(bm, 0, RT_LIMIT_PFN) <= RT_MAX_PAGES);
}

static void record(trace *t, const uint64_t *bm)
{
    for (uint64_t i = 0; i < REGION; i++)
        if (fx_test_bit(bm, BASE_PFN + i))
            t->region[t->n][i / 64] |= 1ull << (i % 64);
    t->n++;
}

/* dirtier writes PER_PASS pages per pass from a cursor; pause after each
 * pass (an event) and check the log holds exactly that pass's pages. */
static void run_exactness(vmt_dirty_mode mode, trace *t)
{
    fx_guest g;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.dirty_mode = mode;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u per_pass=%u passes=3 event=1 end=event",
             BASE, REGION, PER_PASS);
    CU_ASSERT_FATAL(fx_boot(&g, "dirtier", cmd, &cfg) == 0);
    g.pause_on_event = true;
    uint64_t pages = vmt_vm_ram_pages(g.vm);
    uint64_t *bm = fx_bitmap(&g);
    CU_ASSERT_EQUAL_FATAL(vmt_dirty_start(g.vm, 0), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    /* events: READY, pass 1, 2, 3, DONE */
    for (unsigned ev = 1; ev <= 5; ev++) {
        CU_ASSERT_FATAL(fx_wait_events(&g, ev, 20 * FX_SEC));
        vmt_vm_pause(g.vm);
        sync_now(&g, bm);
        assert_outside_region_is_runtime(bm, pages);
        unsigned pass = ev - 1; /* pages written since the previous event */
        for (uint64_t i = 0; i < REGION; i++) {
            bool want = pass >= 1 && pass <= 3 && i >= (pass - 1) * PER_PASS && i < pass * PER_PASS;
            if (fx_test_bit(bm, BASE_PFN + i) != want)
                fprintf(stderr, "\n  event %u page %llu: dirty %d, expected %d\n", ev,
                        (unsigned long long)i, !want, want);
            CU_ASSERT_EQUAL(fx_test_bit(bm, BASE_PFN + i), want);
        }
        record(t, bm);
        vmt_vm_resume(g.vm);
    }
    /* The guest now spins without writing: nothing at all is dirty. */
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL);
    vmt_vm_pause(g.vm);
    CU_ASSERT_EQUAL(sync_now(&g, bm), 0);
    free(bm);
    fx_free(&g);
}

static trace bitmap_trace, ring_trace;

static void bitmap_mode_reports_exactly_the_written_pages(void)
{
    memset(&bitmap_trace, 0, sizeof(bitmap_trace));
    run_exactness(VMT_DIRTY_BITMAP, &bitmap_trace);
}

static void ring_mode_reports_exactly_the_written_pages(void)
{
    if (!vmt_kvm_get_caps(fx_kvm)->dirty_ring_max) {
        printf("(this KVM has no dirty ring: only the bitmap mode is checked) ");
        return;
    }
    memset(&ring_trace, 0, sizeof(ring_trace));
    run_exactness(VMT_DIRTY_RING, &ring_trace);
    CU_ASSERT_EQUAL(ring_trace.n, bitmap_trace.n);
    CU_ASSERT_EQUAL(memcmp(ring_trace.region, bitmap_trace.region, sizeof(ring_trace.region)),
                    0);
}

/* A ring far smaller than the dirty set: the vCPU exits ring-full, the VMM
 * harvests, and nothing is lost. */
static void small_ring_overflows_without_loss(void)
{
    if (!vmt_kvm_get_caps(fx_kvm)->dirty_ring_max)
        return;
    fx_guest g;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.dirty_mode = VMT_DIRTY_RING;
    cfg.dirty_ring_entries = 1024; /* 8192 pages: several ring-full exits */
    CU_ASSERT_FATAL(fx_boot(&g, "dirtier", "pages=8192 passes=1 end=event", &cfg) == 0);
    uint64_t *bm = fx_bitmap(&g);
    CU_ASSERT_EQUAL_FATAL(vmt_dirty_start(g.vm, 0), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    CU_ASSERT_FATAL(fx_wait_value(&g, DIRTIER_DONE, 1, 30 * FX_SEC));
    vmt_vm_pause(g.vm);
    sync_now(&g, bm);
    CU_ASSERT_EQUAL(fx_count_range(bm, BASE_PFN, BASE_PFN + 8192), 8192);
    free(bm);
    fx_free(&g);
}

static void two_vcpus_dirtying_disjoint_halves_are_both_logged(void)
{
    fx_guest g;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.vcpus = 2;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u vcpus=2 passes=1 end=event", BASE, REGION);
    CU_ASSERT_FATAL(fx_boot(&g, "dirtier", cmd, &cfg) == 0);
    uint64_t *bm = fx_bitmap(&g);
    CU_ASSERT_EQUAL_FATAL(vmt_dirty_start(g.vm, 0), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    CU_ASSERT_FATAL(fx_wait_value(&g, DIRTIER_DONE, 1, 20 * FX_SEC)); /* vCPU 0 reports for both */
    vmt_vm_pause(g.vm);
    sync_now(&g, bm);
    CU_ASSERT_EQUAL(fx_count_range(bm, BASE_PFN, BASE_PFN + REGION / 2), REGION / 2);
    CU_ASSERT_EQUAL(fx_count_range(bm, BASE_PFN + REGION / 2, BASE_PFN + REGION), REGION / 2);
    assert_outside_region_is_runtime(bm, vmt_vm_ram_pages(g.vm));
    uint8_t *ram = vmt_vm_ram(g.vm, NULL);
    CU_ASSERT_EQUAL(ram[BASE], 1);
    CU_ASSERT_EQUAL(ram[BASE + (REGION - 1) * 4096ull], 1);
    free(bm);
    fx_free(&g);
}

static void vmm_writes_are_reported_and_start_all_reports_everything(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(fx_boot(&g, "hello", NULL, NULL) == 0);
    uint64_t *bm = fx_bitmap(&g);
    uint64_t pages = vmt_vm_ram_pages(g.vm);
    CU_ASSERT_EQUAL(vmt_dirty_sync(g.vm, bm, pages, NULL), VMT_EINVAL); /* not started */
    CU_ASSERT_EQUAL_FATAL(vmt_dirty_start(g.vm, 0), 0);
    CU_ASSERT_EQUAL(vmt_dirty_start(g.vm, 0), VMT_EBUSY);
    CU_ASSERT_EQUAL(sync_now(&g, bm), 0);
    char msg[5000];
    memset(msg, 'x', sizeof(msg));
    CU_ASSERT_EQUAL(vmt_vm_write_ram(g.vm, 100 * 4096 + 4000, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(sync_now(&g, bm), 3); /* 100, 101, 102 */
    CU_ASSERT(fx_test_bit(bm, 100) && fx_test_bit(bm, 101) && fx_test_bit(bm, 102));
    CU_ASSERT_EQUAL(vmt_vm_write_ram(g.vm, pages * 4096 - 1, msg, 2), VMT_ERANGE);
    CU_ASSERT_EQUAL(vmt_dirty_sync(g.vm, bm, pages - 1, NULL), VMT_ERANGE);
    CU_ASSERT_EQUAL(vmt_dirty_stop(g.vm), 0);
    CU_ASSERT_EQUAL(vmt_dirty_start(g.vm, VMT_DIRTY_START_ALL), 0);
    CU_ASSERT_EQUAL(sync_now(&g, bm), pages);
    CU_ASSERT_EQUAL(sync_now(&g, bm), 0);
    free(bm);
    fx_free(&g);
}

int main(void)
{
    fx_require_kvm();
    static const vmt_test_case cases[] = {
        {"bitmap_mode_reports_exactly_the_written_pages",
         bitmap_mode_reports_exactly_the_written_pages},
        {"ring_mode_reports_exactly_the_written_pages",
         ring_mode_reports_exactly_the_written_pages},
        {"small_ring_overflows_without_loss", small_ring_overflows_without_loss},
        {"two_vcpus_dirtying_disjoint_halves_are_both_logged",
         two_vcpus_dirtying_disjoint_halves_are_both_logged},
        {"vmm_writes_are_reported_and_start_all_reports_everything",
         vmm_writes_are_reported_and_start_all_reports_everything},
        {NULL, NULL},
    };
    return vmt_test_run("vmm_dirty", cases, fx_setup, fx_teardown);
}
