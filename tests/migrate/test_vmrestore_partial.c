/*
 * migrate/vmrestore_inplace.c, partial rollback (vmt_vm_restore_partial)
 * and snapshot/snap_restore_partial.c under it: a paused VM rolled back by
 * rewriting only the pages written since HEAD and the pages whose ids
 * differ between HEAD and the target.  After every rollback the VM's RAM
 * is compared page for page with an eager restore of the target; a counter
 * continues exactly (to HEAD itself, to a sibling branch, to an ancestor
 * several snapshots back); a dirtier holds its invariant; the pages
 * restored are exactly diff(HEAD, target) ∪ dirty, computed here
 * independently; pages named in since_head are restored too; refusals
 * leave the VM and its dirty log as they were.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "migfx.h"

#define MEM (64ull << 20)
#define PAGES (MEM / 4096)
#define COUNTER "steps=0 every=1 work=200000"
#define T30 (30 * FX_SEC)
#define DBASE (16ull << 20)
#define DPAGES 8192u

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

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* The dirty log now, as a bitmap (caller frees); the log is emptied. */
static uint64_t *dirty_bitmap(vmt_vm *vm, uint64_t *n)
{
    uint64_t pages = vmt_vm_ram_pages(vm);
    uint64_t *bm = calloc((pages + 63) / 64, 8);
    CU_ASSERT_FATAL(bm != NULL);
    CU_ASSERT_EQUAL(vmt_dirty_sync(vm, bm, pages, n), 0);
    return bm;
}

/* Pages of the VM's RAM that differ from an eager restore of `snap`
 * (printed unless `quiet`). */
static uint64_t pages_unlike(vmt_vm *vm, const vmt_id *snap, bool quiet)
{
    fx_guest r;
    vmt_restore *rr = NULL;
    CU_ASSERT_FATAL(migfx_restore(&r, st.s, snap, VMT_RESTORE_EAGER, &rr, NULL) == 0);
    uint64_t size = 0, bad = 0;
    const uint8_t *a = vmt_vm_ram(vm, &size), *b = vmt_vm_ram(r.vm, NULL);
    for (uint64_t off = 0; off < size; off += 4096)
        bad += memcmp(a + off, b + off, 4096) != 0;
    migfx_free(&r, rr);
    if (bad && !quiet)
        fprintf(stderr, "\n  %llu pages differ from the snapshot\n", (unsigned long long)bad);
    return bad;
}

/* Partial rollback of the paused g from `head` to `to`; checks the RAM. */
static void partial_opts(fx_guest *g, const vmt_id *head, const vmt_id *to,
                         const vmt_partial_opts *po, vmt_restore_partial_stats *pst)
{
    vmt_inplace_stats ist;
    vmt_snap_record rec;
    int rc = vmt_vm_restore_partial(g->vm, st.s, head, to, po, &rec, &ist, pst);
    if (rc)
        fprintf(stderr, "\n  partial rollback: %s\n", vmt_error_last());
    CU_ASSERT_FATAL(rc == 0);
    CU_ASSERT(ist.ram_replaced);
    CU_ASSERT_EQUAL(rec.mem_size, g->vm ? vmt_vm_ram_pages(g->vm) * 4096 : 0);
    CU_ASSERT_EQUAL(pages_unlike(g->vm, to, false), 0);
    uint64_t n = 0;
    free(dirty_bitmap(g->vm, &n));
    CU_ASSERT_EQUAL(n, 0); /* the log starts again from the target */
}

static void partial(fx_guest *g, const vmt_id *head, const vmt_id *to,
                    vmt_restore_partial_stats *pst)
{
    partial_opts(g, head, to, NULL, pst);
}

/* A counter with logging on for its life; snapshots into ids[0..n) with
 * `gap` steps between them; left running, detached. */
static void counter_with_snapshots(fx_guest *g, const char *name, vmt_id *ids, uint64_t *steps,
                                   unsigned n, unsigned gap)
{
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_boot(g, "counter", COUNTER, MEM) == 0);
    CU_ASSERT_FATAL(vmt_dirty_start(g->vm, 0) == 0);
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, g, NULL, name) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g->vm) == 0);
    CU_ASSERT_FATAL(migfx_wait_step(g, 5, T30));
    for (unsigned i = 0; i < n; i++) {
        CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &ids[i], NULL) == 0);
        steps[i] = migfx_counter_step(g);
        CU_ASSERT_FATAL(migfx_wait_step(g, steps[i] + gap, T30));
    }
    vmt_vmsnap_detach(vs);
}

/* After a rollback to a snapshot taken at step `at` (console offset off),
 * the counter prints exactly what the first run printed after it. */
static void continues_from(fx_guest *g, const char *orig, size_t off, uint64_t at)
{
    char needle[64];
    snprintf(needle, sizeof(needle), "counter: step %llu sum", (unsigned long long)(at + 25));
    CU_ASSERT(vmt_console_buf_wait(g->con, needle, off, T30) > 0);
    char *all = vmt_console_buf_dup(g->con, NULL);
    uint64_t first = 0;
    long n = migfx_counter_compare(orig, all + off, &first);
    if (n < 20 || first <= 1 || first > at + 2)
        fprintf(stderr, "\n  %ld lines compared, first step %llu, snapshot at %llu:\n%.300s\n", n,
                (unsigned long long)first, (unsigned long long)at, all + off);
    CU_ASSERT(n >= 20);
    CU_ASSERT(first > 1 && first <= at + 2);
    CU_ASSERT_PTR_NULL(strstr(all, "fault"));
    free(all);
}

static void counter_continues_after_rollback_to_head(void)
{
    fx_guest g;
    vmt_id a;
    uint64_t at;
    counter_with_snapshots(&g, "head", &a, &at, 1, 30);
    CU_ASSERT_FATAL(vmt_vm_pause(g.vm) == 0);
    size_t off = 0;
    char *orig = vmt_console_buf_dup(g.con, &off);
    vmt_restore_partial_stats pst;
    partial(&g, &a, &a, &pst);
    /* Same map: only what the guest wrote since is rewritten. */
    CU_ASSERT_EQUAL(pst.pages_diff, 0);
    CU_ASSERT(pst.pages_dirty > 0);
    CU_ASSERT_EQUAL(pst.pages_restored, pst.pages_dirty);
    CU_ASSERT(pst.pages_restored < PAGES / 8);
    CU_ASSERT_FATAL(vmt_vm_resume(g.vm) == 0);
    continues_from(&g, orig, off, at);
    free(orig);
    migfx_free(&g, NULL);
}

/* A -> B, back to A (partial), run on, C (a sibling of B), run on; then
 * from HEAD C to B: the maps differ, and the counter continues as after B. */
static void rollback_to_a_sibling_branch(void)
{
    fx_guest g;
    vmt_id ab[2], c;
    uint64_t steps[2];
    counter_with_snapshots(&g, "sib", ab, steps, 2, 30);
    CU_ASSERT_FATAL(vmt_vm_pause(g.vm) == 0);
    size_t off_b = 0;
    char *after_b = vmt_console_buf_dup(g.con, &off_b); /* the run that went on from B */
    vmt_restore_partial_stats pst;
    partial(&g, &ab[1], &ab[0], &pst);
    CU_ASSERT(pst.pages_diff > 0);
    CU_ASSERT_FATAL(vmt_vm_resume(g.vm) == 0);
    uint64_t at_a = migfx_counter_step(&g);
    CU_ASSERT_FATAL(migfx_wait_step(&g, at_a + 10, T30));
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, &ab[0], "sib") == 0);
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &c, NULL) == 0);
    vmt_vmsnap_detach(vs);
    CU_ASSERT_FATAL(migfx_wait_step(&g, migfx_counter_step(&g) + 10, T30));
    CU_ASSERT_FATAL(vmt_vm_pause(g.vm) == 0);
    size_t off = 0;
    free(vmt_console_buf_dup(g.con, &off));
    partial(&g, &c, &ab[1], &pst);
    CU_ASSERT(pst.pages_diff > 0);
    CU_ASSERT(pst.pages_restored >= pst.pages_diff);
    CU_ASSERT_FATAL(vmt_vm_resume(g.vm) == 0);
    continues_from(&g, after_b, off, steps[1]);
    free(after_b);
    migfx_free(&g, NULL);
}

/* Four snapshots; from HEAD (the fourth) back to the first. */
static void rollback_to_an_ancestor_several_back(void)
{
    fx_guest g;
    vmt_id s[4];
    uint64_t steps[4];
    counter_with_snapshots(&g, "anc", s, steps, 4, 15);
    CU_ASSERT_FATAL(vmt_vm_pause(g.vm) == 0);
    size_t off = 0;
    char *orig = vmt_console_buf_dup(g.con, &off);
    vmt_restore_partial_stats pst;
    partial(&g, &s[3], &s[0], &pst);
    CU_ASSERT(pst.pages_diff > 0);
    CU_ASSERT(pst.pages_restored < PAGES / 8);
    CU_ASSERT_FATAL(vmt_vm_resume(g.vm) == 0);
    continues_from(&g, orig, off, steps[0]);
    free(orig);
    migfx_free(&g, NULL);
}

/* A dirtier snapshotted while it runs (S1, S2), paused later: rolled back to
 * S1 from HEAD S2 it holds its invariant, and still after running on. */
static void dirtier_holds_the_invariant(void)
{
    fx_guest g;
    vmt_id s1, s2;
    vmt_vmsnap *vs;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u fill=random spin=2000 per_pass=512 event=1",
             (unsigned long long)DBASE, DPAGES);
    CU_ASSERT_FATAL(migfx_boot(&g, "dirtier", cmd, MEM) == 0);
    CU_ASSERT_FATAL(vmt_dirty_start(g.vm, 0) == 0);
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, NULL, "dinv") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(fx_wait_value(&g, DIRTIER_READY, 1, T30));
    CU_ASSERT_FATAL(migfx_take(vs, 6, 16, &s1, NULL) == 0);
    sleep_ms(30);
    CU_ASSERT_FATAL(migfx_take(vs, 6, 16, &s2, NULL) == 0);
    vmt_vmsnap_detach(vs);
    sleep_ms(30); /* it writes on: RAM now differs from both */
    CU_ASSERT_FATAL(vmt_vm_pause(g.vm) == 0);
    vmt_restore_partial_stats pst;
    partial(&g, &s2, &s1, &pst);
    CU_ASSERT(pst.pages_diff > 0 && pst.pages_dirty > 0);
    char why[256] = "";
    bool ok = migfx_dirtier_invariant(vmt_vm_ram(g.vm, NULL), DBASE, DPAGES, 1, why, sizeof(why));
    if (!ok)
        fprintf(stderr, "\n  after the rollback: %s\n", why);
    CU_ASSERT(ok);
    CU_ASSERT_FATAL(vmt_vm_resume(g.vm) == 0);
    sleep_ms(20);
    CU_ASSERT_FATAL(vmt_vm_pause(g.vm) == 0);
    ok = migfx_dirtier_invariant(vmt_vm_ram(g.vm, NULL), DBASE, DPAGES, 1, why, sizeof(why));
    if (!ok)
        fprintf(stderr, "\n  after running on: %s\n", why);
    CU_ASSERT(ok);
    migfx_free(&g, NULL);
}

static int count_diff(void *ctx, uint64_t pfn, const vmt_id *a, const vmt_id *b)
{
    uint64_t *bm = ctx;
    (void)a;
    (void)b;
    bm[pfn / 64] |= 1ull << (pfn % 64);
    return 0;
}

static uint64_t popcount(const uint64_t *bm, uint64_t pages)
{
    uint64_t n = 0;
    for (uint64_t w = 0; w < (pages + 63) / 64; w++)
        n += (uint64_t)__builtin_popcountll(bm[w]);
    return n;
}

/* With the VM paused at HEAD H (a paused take: nothing dirty), K pages
 * written through the VMM (a known dirty set, some inside the diff, some
 * outside) and a rollback to T: exactly diff(H, T) ∪ K is restored. */
static void restored_pages_are_exactly_the_differing_set(void)
{
    fx_guest g;
    vmt_id s[2], h;
    uint64_t steps[2];
    counter_with_snapshots(&g, "exact", s, steps, 2, 20);
    CU_ASSERT_FATAL(vmt_vm_pause(g.vm) == 0);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, &s[1], "exact") == 0);
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &h, NULL) == 0); /* paused: the log is empty */
    vmt_vmsnap_detach(vs);
    vmt_snap_record hr, tr;
    CU_ASSERT_FATAL(vmt_snap_record_read(st.s, &h, &hr) == 0);
    CU_ASSERT_FATAL(vmt_snap_record_read(st.s, &s[0], &tr) == 0);
    uint64_t *want = calloc((PAGES + 63) / 64, 8);
    CU_ASSERT_FATAL(want != NULL);
    CU_ASSERT_FATAL(vmt_map_diff(st.s, &hr.map_root, &tr.map_root, PAGES, count_diff, want, NULL) ==
                    0);
    uint64_t ndiff = popcount(want, PAGES);
    CU_ASSERT_FATAL(ndiff > 0);
    /* K pages: every 97th page (zero pages among them), and the first
     * page of the diff (already in it). */
    uint64_t first_diff = 0;
    while (!(want[first_diff / 64] & (1ull << (first_diff % 64))))
        first_diff++;
    uint64_t k = 0;
    for (uint64_t pfn = 3; pfn < PAGES; pfn += 97, k++) {
        uint8_t v = 0xa5;
        CU_ASSERT_FATAL(vmt_vm_write_ram(g.vm, pfn * 4096 + 11, &v, 1) == 0);
        want[pfn / 64] |= 1ull << (pfn % 64);
    }
    uint8_t v = 0x5a;
    CU_ASSERT_FATAL(vmt_vm_write_ram(g.vm, first_diff * 4096 + 7, &v, 1) == 0);
    want[first_diff / 64] |= 1ull << (first_diff % 64);
    k += !(first_diff >= 3 && (first_diff - 3) % 97 == 0); /* unless counted already */
    vmt_restore_partial_stats pst;
    partial(&g, &h, &s[0], &pst);
    CU_ASSERT_EQUAL(pst.pages_diff, ndiff);
    CU_ASSERT_EQUAL(pst.pages_dirty, k);
    CU_ASSERT_EQUAL(pst.pages_restored, popcount(want, PAGES));
    if (pst.pages_restored != popcount(want, PAGES))
        fprintf(stderr, "\n  restored %llu, differing set %llu (diff %llu, dirty %llu)\n",
                (unsigned long long)pst.pages_restored, (unsigned long long)popcount(want, PAGES),
                (unsigned long long)ndiff, (unsigned long long)k);
    CU_ASSERT(pst.pages_zeroed > 0); /* written zero pages go back to holes */
    free(want);
    migfx_free(&g, NULL);
}

/* A page changed behind the log's back (through the mapping, unreported)
 * is restored only when the caller names it in since_head. */
static void since_head_pages_are_restored(void)
{
    fx_guest g;
    vmt_id s, h;
    uint64_t step;
    counter_with_snapshots(&g, "since", &s, &step, 1, 10);
    CU_ASSERT_FATAL(vmt_vm_pause(g.vm) == 0);
    vmt_vmsnap *vs;
    CU_ASSERT_FATAL(migfx_attach(&vs, &st, &g, &s, "since") == 0);
    CU_ASSERT_FATAL(migfx_take(vs, 8, 256, &h, NULL) == 0); /* paused: RAM == h */
    vmt_vmsnap_detach(vs);
    uint8_t *ram = vmt_vm_ram(g.vm, NULL);
    const uint64_t pfn = 2000;
    ram[pfn * 4096 + 1] ^= 0xff; /* not in the dirty log */
    vmt_restore_partial_stats pst;
    CU_ASSERT_FATAL(vmt_vm_restore_partial(g.vm, st.s, &h, &h, NULL, NULL, NULL, &pst) == 0);
    CU_ASSERT_EQUAL(pst.pages_restored, 0);
    CU_ASSERT_EQUAL(pages_unlike(g.vm, &h, true), 1); /* the log alone cannot know */
    uint64_t *since = calloc((PAGES + 63) / 64, 8);
    CU_ASSERT_FATAL(since != NULL);
    since[pfn / 64] |= 1ull << (pfn % 64);
    vmt_partial_opts po = {.since_head = since};
    partial_opts(&g, &h, &h, &po, &pst);
    CU_ASSERT_EQUAL(pst.pages_restored, 1);
    CU_ASSERT_EQUAL(pst.pages_dirty, 1);
    free(since);
    migfx_free(&g, NULL);
}

/* Refusals leave the RAM and the dirty log as they were. */
static void refusals_leave_the_vm_untouched(void)
{
    fx_guest g;
    vmt_id s[2];
    uint64_t steps[2];
    counter_with_snapshots(&g, "ref", s, steps, 2, 20);
    CU_ASSERT_FATAL(vmt_vm_pause(g.vm) == 0);
    uint8_t v = 0x42;
    CU_ASSERT_FATAL(vmt_vm_write_ram(g.vm, 5 * 4096, &v, 1) == 0);
    uint64_t size = 0;
    uint8_t *ram = vmt_vm_ram(g.vm, &size);
    uint8_t *copy = malloc(size);
    CU_ASSERT_FATAL(copy != NULL);
    memcpy(copy, ram, size);
    vmt_inplace_stats ist;
    vmt_restore_partial_stats pst;
    /* Too many pages for the limit. */
    vmt_partial_opts po = {.max_pages = 1};
    CU_ASSERT_EQUAL(vmt_vm_restore_partial(g.vm, st.s, &s[1], &s[0], &po, NULL, &ist, &pst),
                    VMT_ERANGE);
    CU_ASSERT(!ist.ram_replaced);
    CU_ASSERT(!pst.ram_touched);
    /* An unknown target, an unknown head. */
    vmt_id nosuch;
    memset(&nosuch, 0x5a, sizeof(nosuch));
    CU_ASSERT_EQUAL(vmt_vm_restore_partial(g.vm, st.s, &s[1], &nosuch, NULL, NULL, &ist, NULL),
                    VMT_ENOENT);
    CU_ASSERT_EQUAL(vmt_vm_restore_partial(g.vm, st.s, &nosuch, &s[0], NULL, NULL, &ist, NULL),
                    VMT_ENOENT);
    CU_ASSERT(!ist.ram_replaced);
    CU_ASSERT_EQUAL(memcmp(copy, ram, size), 0);
    /* The dirty log still has everything the guest and we wrote. */
    uint64_t n = 0;
    uint64_t *bm = dirty_bitmap(g.vm, &n);
    CU_ASSERT(bm[0] & (1ull << 5));
    CU_ASSERT(n > 1);
    free(bm);
    /* Logging off: the dirty set is unknown. */
    CU_ASSERT_FATAL(vmt_dirty_stop(g.vm) == 0);
    CU_ASSERT_EQUAL(vmt_vm_restore_partial(g.vm, st.s, &s[1], &s[0], NULL, NULL, &ist, NULL),
                    VMT_EINVAL);
    CU_ASSERT_EQUAL(memcmp(copy, ram, size), 0);
    free(copy);
    migfx_free(&g, NULL);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"counter_continues_after_rollback_to_head", counter_continues_after_rollback_to_head},
        {"rollback_to_a_sibling_branch", rollback_to_a_sibling_branch},
        {"rollback_to_an_ancestor_several_back", rollback_to_an_ancestor_several_back},
        {"dirtier_holds_the_invariant", dirtier_holds_the_invariant},
        {"restored_pages_are_exactly_the_differing_set",
         restored_pages_are_exactly_the_differing_set},
        {"since_head_pages_are_restored", since_head_pages_are_restored},
        {"refusals_leave_the_vm_untouched", refusals_leave_the_vm_untouched},
        {NULL, NULL},
    };
    fx_require_kvm();
    return vmt_test_run("migrate_vmrestore_partial", cases, setup, teardown);
}
