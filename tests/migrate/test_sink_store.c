/*
 * migrate/sink_store.c: what the store sink writes.  The map of a snapshot
 * names exactly the bytes of every page at the pause; zero pages become the
 * zero id without a put; an incremental snapshot writes only what changed
 * (pages, O(k/256 + depth) nodes); a failed take rolls the map back and
 * keeps every page it had received dirty since HEAD.
 *
 * The dirtier runs with end=event and pauses at every event, so the
 * written pages are known exactly: pass p writes region pages
 * [(p-1)*K, p*K).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "migfx.h"

#define MEM (64ull << 20)
#define BASE (16ull << 20)
#define BASE_PFN (BASE / 4096)
#define REGION 4096u
#define K 1000u                  /* pages per pass */
#define RT_PAGES 64u             /* what the runtime may write besides (tests/vmm) */

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

/* A dirtier that pauses after its fill (event 1) and after every pass. */
static void boot(fx_guest *g, const char *fill, unsigned passes)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u per_pass=%u passes=%u fill=%s event=1 end=event",
             (unsigned long long)BASE, REGION, K, passes, fill);
    CU_ASSERT_FATAL(migfx_boot(g, "dirtier", cmd, MEM) == 0);
    g->pause_on_event = true;
}

/* Reads a snapshot's map and checks it against the (paused) VM's RAM. */
static uint64_t map_mismatches(const vmt_id *snap, fx_guest *g)
{
    vmt_snap_record *r = malloc(sizeof(*r));
    vmt_map *m = NULL;
    uint64_t npages = vmt_vm_ram_pages(g->vm), bad = npages;
    if (vmt_snap_record_read(st.s, snap, r) == 0 &&
        vmt_map_load(&m, st.s, &r->map_root, npages) == 0) {
        const uint8_t *ram = vmt_vm_ram(g->vm, NULL);
        bad = 0;
        for (uint64_t p = 0; p < npages; p++) {
            vmt_id id;
            vmt_id_of(ram + p * 4096, 4096, &id);
            bad += !vmt_id_equal(&id, vmt_map_get(m, p));
        }
        CU_ASSERT_EQUAL(vmt_map_nonzero(m), r->nonzero_pages);
    }
    vmt_map_free(m);
    free(r);
    return bad;
}

typedef struct diffset {
    uint64_t n, in_region, first, last;
} diffset;

static int on_diff(void *ctx, uint64_t pfn, const vmt_id *a, const vmt_id *b)
{
    diffset *d = ctx;
    (void)a;
    (void)b;
    if (pfn >= BASE_PFN && pfn < BASE_PFN + REGION) {
        if (d->in_region++ == 0)
            d->first = pfn - BASE_PFN;
        d->last = pfn - BASE_PFN;
    }
    d->n++;
    return 0;
}

static diffset diff(const vmt_id *s1, const vmt_id *s2, uint64_t npages)
{
    vmt_snap_record *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    diffset d = {0};
    CU_ASSERT_FATAL(vmt_snap_record_read(st.s, s1, a) == 0 && vmt_snap_record_read(st.s, s2, b) == 0);
    CU_ASSERT_EQUAL(vmt_map_diff(st.s, &a->map_root, &b->map_root, npages, on_diff, &d, NULL), 0);
    free(a);
    free(b);
    return d;
}

static void first_snapshot_maps_every_page_to_its_bytes(void)
{
    fx_guest g;
    boot(&g, "random", 1);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "first") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 1, 30 * FX_SEC));
    uint64_t npages = vmt_vm_ram_pages(g.vm), objs0 = migfx_store_objects(&st);
    vmt_id s1;
    vmt_snap_take_stats ts;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s1, &ts) == 0);
    CU_ASSERT(vmt_vm_is_paused(g.vm)); /* it was paused: it stays so */
    /* Every page went through the sink once: the VM did not run. */
    CU_ASSERT_EQUAL(ts.precopy.pages_sent, npages);
    CU_ASSERT_EQUAL(ts.pages_hashed + ts.pages_zero, npages);
    CU_ASSERT_EQUAL(ts.precopy.rounds, 2);
    CU_ASSERT(ts.pages_hashed >= REGION && ts.pages_hashed <= REGION + 1024);
    CU_ASSERT(ts.pages_new >= REGION && ts.pages_new <= ts.pages_hashed);
    CU_ASSERT(ts.nodes_new >= REGION / 256);
    CU_ASSERT(ts.node_bytes > 0 && ts.record_bytes > 0);
    CU_ASSERT_EQUAL(ts.objects_new, ts.pages_new + ts.nodes_new + 2);
    CU_ASSERT_EQUAL(migfx_store_objects(&st) - objs0, ts.objects_new);
    CU_ASSERT_EQUAL(map_mismatches(&s1, &g), 0);
    vmt_snap_record r;
    CU_ASSERT_EQUAL(vmt_snap_record_read(st.s, &s1, &r), 0);
    CU_ASSERT_EQUAL(r.nonzero_pages, ts.pages_hashed);
    vmt_vmsnap_detach(vs);
    fx_free(&g);
}

/* After a full snapshot the guest writes K pages; the next snapshot hashes
 * about K pages and writes O(K/256 + depth) nodes. */
static void incremental_snapshot_writes_only_what_changed(void)
{
    fx_guest g;
    boot(&g, "random", 2);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "incr") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 1, 30 * FX_SEC));
    uint64_t npages = vmt_vm_ram_pages(g.vm);
    vmt_id s[3];
    vmt_snap_take_stats ts;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s[0], &ts) == 0);
    for (unsigned pass = 1; pass <= 2; pass++) {
        vmt_vm_resume(g.vm);
        CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 1 + pass, 30 * FX_SEC));
        uint64_t objs0 = migfx_store_objects(&st);
        CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s[pass], &ts) == 0);
        /* The K pages, plus the runtime's few. */
        CU_ASSERT(ts.precopy.pages_sent >= K && ts.precopy.pages_sent <= K + RT_PAGES);
        CU_ASSERT(ts.pages_hashed >= K && ts.pages_hashed <= K + RT_PAGES);
        CU_ASSERT(ts.pages_new >= K && ts.pages_new <= K + RT_PAGES);
        /* 64 MiB: 16384 pages, 64 leaves under one root (depth 2).  The K
         * pages span at most K/256 + 2 leaves, the runtime's pages (below
         * 4 MiB) at most 4 more, plus the root. */
        CU_ASSERT(ts.nodes_new <= K / 256 + 2 + 4 + 1);
        CU_ASSERT(ts.nodes_new >= K / 256 + 1);
        CU_ASSERT(ts.objects_new <= ts.pages_new + ts.nodes_new + 2);
        CU_ASSERT_EQUAL(migfx_store_objects(&st) - objs0, ts.objects_new);
        CU_ASSERT_EQUAL(map_mismatches(&s[pass], &g), 0);
        diffset d = diff(&s[pass - 1], &s[pass], npages);
        CU_ASSERT_EQUAL(d.in_region, K);
        CU_ASSERT_EQUAL(d.first, (pass - 1) * K);
        CU_ASSERT_EQUAL(d.last, pass * K - 1);
        CU_ASSERT(d.n <= K + RT_PAGES);
        vmt_snap_record r;
        CU_ASSERT_EQUAL(vmt_snap_record_read(st.s, &s[pass], &r), 0);
        CU_ASSERT_EQUAL(r.nparents, 1);
        CU_ASSERT(vmt_id_equal(&r.parents[0], &s[pass - 1]));
    }
    vmt_vmsnap_detach(vs);
    fx_free(&g);
}

/* fill=zero: the region is zero until written; then every written page is
 * the same bytes (first byte 1): one object for all of them. */
static void zero_pages_are_not_stored_and_equal_pages_once(void)
{
    fx_guest g;
    boot(&g, "zero", 1);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "zero") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 1, 30 * FX_SEC));
    vmt_id s1, s2;
    vmt_snap_take_stats ts;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s1, &ts) == 0);
    CU_ASSERT(ts.pages_hashed <= 1024); /* the runtime, the boot data: the region is zero */
    CU_ASSERT(ts.pages_zero >= vmt_vm_ram_pages(g.vm) - 1024);
    vmt_vm_resume(g.vm);
    CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 2, 30 * FX_SEC));
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s2, &ts) == 0);
    CU_ASSERT(ts.pages_hashed >= K);
    CU_ASSERT(ts.pages_new <= 1 + RT_PAGES);
    CU_ASSERT_EQUAL(map_mismatches(&s2, &g), 0);
    vmt_vmsnap_detach(vs);
    fx_free(&g);
}

/* A take that fails after the sink took some of the K pages (or all of
 * them, or at the commit): HEAD stays, and the next take still saves all K
 * pages, with a map equal to RAM. */
static void failed_take_keeps_the_pages_dirty_since_head(int op, unsigned nth)
{
    fx_guest g;
    boot(&g, "random", 1);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "fail") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 1, 30 * FX_SEC));
    uint64_t npages = vmt_vm_ram_pages(g.vm);
    vmt_id s1, s2, head, ref;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s1, NULL) == 0);
    vmt_vm_resume(g.vm);
    CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 2, 30 * FX_SEC));
    migfx_faulty f = {.op = op, .nth = nth};
    vmt_snap_take_opts o;
    vmt_snap_take_opts_init(&o);
    o.batch_pages = 256;
    o.interpose = migfx_faulty_interpose;
    o.interpose_ctx = &f;
    vmt_snap_take_stats ts;
    CU_ASSERT_EQUAL(vmt_vmsnap_take(vs, &o, NULL, &ts), VMT_EIO);
    CU_ASSERT(strstr(vmt_error_last(), "injected") != NULL);
    CU_ASSERT(f.fired);
    CU_ASSERT_EQUAL(f.aborts, 1);
    CU_ASSERT(vmt_vmsnap_head(vs, &head) && vmt_id_equal(&head, &s1));
    CU_ASSERT(vmt_catalog_get_ref(st.c, "vm/fail/HEAD", &ref) == 0 && vmt_id_equal(&ref, &s1));
    /* The next take has everything since HEAD. */
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s2, &ts) == 0);
    CU_ASSERT(ts.precopy.pages_sent >= K);
    CU_ASSERT_EQUAL(map_mismatches(&s2, &g), 0);
    diffset d = diff(&s1, &s2, npages);
    CU_ASSERT_EQUAL(d.in_region, K);
    CU_ASSERT_EQUAL(d.last, K - 1);
    vmt_snap_record r;
    CU_ASSERT_EQUAL(vmt_snap_record_read(st.s, &s2, &r), 0);
    CU_ASSERT(r.nparents == 1 && vmt_id_equal(&r.parents[0], &s1));
    CU_ASSERT(vmt_catalog_get_ref(st.c, "vm/fail/HEAD", &ref) == 0 && vmt_id_equal(&ref, &s2));
    vmt_vmsnap_detach(vs);
    fx_free(&g);
}

static void failure_after_one_batch_rolls_back(void)
{
    failed_take_keeps_the_pages_dirty_since_head(MIGFX_OP_PAGES, 2);
}

static void failure_of_the_state_rolls_back(void)
{
    failed_take_keeps_the_pages_dirty_since_head(MIGFX_OP_STATE, 1);
}

static void failure_at_commit_rolls_back(void)
{
    failed_take_keeps_the_pages_dirty_since_head(MIGFX_OP_COMMIT, 1);
}

/* Someone else moved the VM's HEAD ref: the take fails VMT_EBUSY, indexes
 * no snapshot, and leaves everything to save for the next try. */
static void head_moved_elsewhere_fails_busy(void)
{
    fx_guest g;
    boot(&g, "random", 1);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "moved") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 1, 30 * FX_SEC));
    vmt_id s1, s2, other, ref;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s1, NULL) == 0);
    memset(&other, 0x5a, sizeof(other));
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_set_ref(st.c, "vm/moved/HEAD", &other, NULL), 0);
    vmt_catalog_snap *list = NULL;
    size_t n0 = 0, n1 = 0;
    CU_ASSERT_EQUAL(vmt_catalog_list_snapshots(st.c, &list, &n0), 0);
    free(list);
    vmt_vm_resume(g.vm);
    CU_ASSERT_FATAL(migfx_wait_event_paused(&g, 2, 30 * FX_SEC));
    CU_ASSERT_EQUAL(vmt_vmsnap_take(vs, NULL, &s2, NULL), VMT_EBUSY);
    CU_ASSERT(vmt_catalog_get_ref(st.c, "vm/moved/HEAD", &ref) == 0 &&
              vmt_id_equal(&ref, &other));
    CU_ASSERT_EQUAL(vmt_catalog_list_snapshots(st.c, &list, &n1), 0);
    free(list);
    CU_ASSERT_EQUAL(n1, n0);
    CU_ASSERT(vmt_vmsnap_head(vs, &ref) && vmt_id_equal(&ref, &s1));
    /* Put the ref back: the retry saves the K pages. */
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(st.c, "vm/moved/HEAD", &s1, NULL), 0);
    vmt_snap_take_stats ts;
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &s2, &ts) == 0);
    CU_ASSERT(ts.precopy.pages_sent >= K);
    CU_ASSERT_EQUAL(map_mismatches(&s2, &g), 0);
    vmt_vmsnap_detach(vs);
    fx_free(&g);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"first_snapshot_maps_every_page_to_its_bytes",
         first_snapshot_maps_every_page_to_its_bytes},
        {"incremental_snapshot_writes_only_what_changed",
         incremental_snapshot_writes_only_what_changed},
        {"zero_pages_are_not_stored_and_equal_pages_once",
         zero_pages_are_not_stored_and_equal_pages_once},
        {"failure_after_one_batch_rolls_back", failure_after_one_batch_rolls_back},
        {"failure_of_the_state_rolls_back", failure_of_the_state_rolls_back},
        {"failure_at_commit_rolls_back", failure_at_commit_rolls_back},
        {"head_moved_elsewhere_fails_busy", head_moved_elsewhere_fails_busy},
        {NULL, NULL},
    };
    fx_require_kvm();
    return vmt_test_run("migrate_sink_store", cases, setup, teardown);
}
