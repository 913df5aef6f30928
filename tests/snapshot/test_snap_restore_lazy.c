/*
 * snapshot/snap_restore_lazy.c: lazy restore through userfaultfd.  The
 * region is usable the moment vmt_restore_open returns: readers and writers
 * touching random pages get the right bytes while the prefetcher is still
 * loading; zero pages are mapped without a store read; the final memory is
 * the snapshot's (as eager restore gives); stopping early does not hang.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "snap_fixture.h"

#define NPAGES 32768u /* 128 MiB: the prefetcher takes a while */

static fx_store fx;
static uint8_t *src;
static vmt_id root;
static const char *skip_reason;

static int setup(void)
{
    src = malloc((size_t)NPAGES * 4096);
    if (!src)
        return 1;
    fx_fill_mixed(src, NPAGES, 77);
    return 0;
}

static int teardown(void)
{
    free(src);
    return 0;
}

static bool page_is_zero(uint64_t pfn)
{
    static const uint8_t zero[4096];
    return memcmp(src + pfn * 4096, zero, 4096) == 0;
}

/* Opens a lazy restore; false (and the test skips) where uffd is refused. */
static bool open_lazy(vmt_restore **h, fx_ram *r)
{
    vmt_restore_opts o = {.mode = VMT_RESTORE_LAZY};
    int rc = vmt_restore_open(h, fx.s, &root, r->p, r->fd, r->size, &o);
    if (rc == VMT_EUNSUPPORTED) {
        skip_reason = "userfaultfd is not available here";
        return false;
    }
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return true;
}

typedef struct toucher {
    fx_ram *r;
    vmt_restore *h;
    uint64_t seed;
    bool write;
    unsigned touched, before_complete, wrong, zero_touched;
    uint64_t pfns[64];
} toucher;

static void *touch_main(void *arg)
{
    toucher *t = arg;
    uint64_t st = t->seed;
    for (unsigned i = 0; i < 64; i++) {
        vmt_restore_stats s;
        uint64_t pfn = fx_rand(&st) % NPAGES;
        vmt_restore_get_stats(t->h, &s);
        bool early = s.complete_ns == 0;
        uint8_t *p = t->r->p + pfn * 4096;
        t->pfns[i] = pfn;
        if (t->write) {
            p[100] ^= 0x5a; /* a write to a missing page: content first */
        } else if (memcmp(p, src + pfn * 4096, 4096) != 0) {
            t->wrong++;
        }
        t->touched++;
        t->before_complete += early;
        t->zero_touched += page_is_zero(pfn) && early;
    }
    return NULL;
}

static void test_region_is_usable_at_once_and_ends_equal_to_the_snapshot(void)
{
    fx_ram r;
    vmt_restore *h = NULL;
    vmt_restore_stats st;
    toucher t[3] = {{.seed = 1}, {.seed = 2}, {.seed = 3, .write = true}};
    pthread_t thr[3];

    fx_store_new(&fx, "lazy");
    root = fx_store_memory(fx.s, src, NPAGES);
    fx_ram_new(&r, NPAGES);
    if (!open_lazy(&h, &r))
        goto out;
    for (int i = 0; i < 3; i++) {
        t[i].r = &r;
        t[i].h = h;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&thr[i], NULL, touch_main, &t[i]), 0);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(thr[i], NULL);
    CU_ASSERT_EQUAL(vmt_restore_wait(h, 60ull * 1000000000), 0);
    vmt_restore_get_stats(h, &st);
    CU_ASSERT_EQUAL(t[0].wrong + t[1].wrong, 0);
    /* The readers ran while pages were still arriving. */
    CU_ASSERT_TRUE(t[0].before_complete + t[1].before_complete > 0);
    CU_ASSERT_TRUE(st.ready_ns > 0 && st.complete_ns >= st.ready_ns);
    /* Every non-zero page was fetched exactly once, by one of the threads;
     * zero pages that were touched early were mapped, never fetched. */
    CU_ASSERT_EQUAL(st.pages_loaded + st.pages_faulted, st.pages_total);
    if (t[0].zero_touched + t[1].zero_touched + t[2].zero_touched > 0)
        CU_ASSERT_TRUE(st.zero_faults > 0);
    CU_ASSERT_TRUE(st.pages_faulted + st.zero_faults > 0);
    /* Final memory = the snapshot, plus the writer's changes. */
    for (unsigned i = 0; i < 64; i++)
        src[t[2].pfns[i] * 4096 + 100] ^= 0x5a;
    CU_ASSERT_EQUAL(memcmp(r.p, src, r.size), 0);
    for (unsigned i = 0; i < 64; i++)
        src[t[2].pfns[i] * 4096 + 100] ^= 0x5a;
    vmt_restore_free(h);
out:
    fx_ram_free(&r);
    fx_store_free(&fx);
}

static void test_lazy_and_eager_give_the_same_memory(void)
{
    fx_ram a, b;
    vmt_restore *h = NULL, *e = NULL;
    vmt_restore_opts eo = {.mode = VMT_RESTORE_EAGER};

    fx_store_new(&fx, "lazy");
    root = fx_store_memory(fx.s, src, NPAGES);
    fx_ram_new(&a, NPAGES);
    fx_ram_new(&b, NPAGES);
    if (!open_lazy(&h, &a))
        goto out;
    CU_ASSERT_EQUAL_FATAL(vmt_restore_open(&e, fx.s, &root, b.p, b.fd, b.size, &eo), 0);
    CU_ASSERT_EQUAL(vmt_restore_wait(h, 0), 0);
    CU_ASSERT_EQUAL(memcmp(a.p, b.p, a.size), 0);
    CU_ASSERT_EQUAL(memcmp(a.p, src, a.size), 0);
    vmt_restore_free(h);
    vmt_restore_free(e);
out:
    fx_ram_free(&a);
    fx_ram_free(&b);
    fx_store_free(&fx);
}

static void test_zero_pages_are_never_fetched(void)
{
    fx_ram r;
    vmt_restore *h = NULL;
    vmt_restore_stats st;
    uint64_t zeros = 0;

    fx_store_new(&fx, "lazy");
    root = fx_store_memory(fx.s, src, NPAGES);
    fx_ram_new(&r, NPAGES);
    if (!open_lazy(&h, &r))
        goto out;
    /* Touch zero pages first, while most of RAM is still missing. */
    for (uint64_t p = 0; p < NPAGES && zeros < 200; p++) {
        if (!page_is_zero(p))
            continue;
        CU_ASSERT_EQUAL(r.p[p * 4096 + 7], 0);
        zeros++;
    }
    CU_ASSERT_EQUAL(vmt_restore_wait(h, 0), 0);
    vmt_restore_get_stats(h, &st);
    CU_ASSERT_TRUE(st.zero_faults > 0 && st.zero_faults <= zeros);
    CU_ASSERT_EQUAL(st.pages_loaded + st.pages_faulted, st.pages_total);
    /* Zero pages touched after completion cost no fault here. */
    uint64_t zf = st.zero_faults;
    for (uint64_t p = NPAGES; p-- > 0;)
        if (page_is_zero(p))
            CU_ASSERT_EQUAL(r.p[p * 4096], 0);
    vmt_restore_get_stats(h, &st);
    CU_ASSERT_EQUAL(st.zero_faults, zf);
    vmt_restore_free(h);
out:
    fx_ram_free(&r);
    fx_store_free(&fx);
}

static void test_stopping_early_leaves_readable_memory(void)
{
    fx_ram r;
    vmt_restore *h = NULL;

    fx_store_new(&fx, "lazy");
    root = fx_store_memory(fx.s, src, NPAGES);
    fx_ram_new(&r, NPAGES);
    if (!open_lazy(&h, &r))
        goto out;
    CU_ASSERT_EQUAL(memcmp(r.p + 4096 * 100, src + 4096 * 100, 4096), 0);
    vmt_restore_free(h); /* probably before the prefetcher is done */
    /* Nothing blocks now: what was loaded is there, the rest reads zero. */
    uint64_t ok = 0;
    for (uint64_t p = 0; p < NPAGES; p += 97) {
        static const uint8_t zero[4096];
        uint8_t *pg = r.p + p * 4096;
        ok += memcmp(pg, src + p * 4096, 4096) == 0 || memcmp(pg, zero, 4096) == 0;
    }
    CU_ASSERT_EQUAL(ok, VMT_DIV_ROUND_UP(NPAGES, 97));
    CU_ASSERT_EQUAL(memcmp(r.p + 4096 * 100, src + 4096 * 100, 4096), 0);
out:
    fx_ram_free(&r);
    fx_store_free(&fx);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"region is usable at once and ends equal to the snapshot",
         test_region_is_usable_at_once_and_ends_equal_to_the_snapshot},
        {"lazy and eager give the same memory", test_lazy_and_eager_give_the_same_memory},
        {"zero pages are never fetched", test_zero_pages_are_never_fetched},
        {"stopping early leaves readable memory", test_stopping_early_leaves_readable_memory},
        {NULL, NULL},
    };
    int rc = vmt_test_run("snapshot/restore_lazy", cases, setup, teardown);
    if (rc == 0 && skip_reason) {
        printf("SKIP: %s\n", skip_reason);
        return VMT_TEST_SKIP;
    }
    return rc;
}
