/*
 * The XBZRLE cache (xbzrle_cache.c): bounded by its byte capacity, returns
 * the last copy put, gives recently used pages a second chance, drop and
 * reset, and a reference model check over random operations.
 */
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"

#define PAGE VMT_NET_PAGE_SIZE

static void test_capacity_is_bounded(void)
{
    vmt_xbzrle_cache *c;
    vmt_xbzrle_cache_stats st;
    uint8_t page[PAGE];

    CU_ASSERT_EQUAL_FATAL(vmt_xbzrle_cache_new(&c, 8 * PAGE + 100), 0);
    for (uint64_t pfn = 0; pfn < 100; pfn++) {
        net_fill(page, PAGE, pfn);
        vmt_xbzrle_cache_put(c, pfn, page);
        vmt_xbzrle_cache_get_stats(c, &st);
        CU_ASSERT(st.pages <= 8);
    }
    CU_ASSERT_EQUAL(st.capacity_pages, 8);
    CU_ASSERT_EQUAL(st.pages, 8);
    CU_ASSERT_EQUAL(st.evictions, 92);
    size_t present = 0;
    for (uint64_t pfn = 0; pfn < 100; pfn++)
        present += vmt_xbzrle_cache_get(c, pfn) != NULL;
    CU_ASSERT_EQUAL(present, 8);
    vmt_xbzrle_cache_free(c);
    CU_ASSERT_EQUAL(vmt_xbzrle_cache_new(&c, PAGE - 1), VMT_EINVAL);
}

static void test_get_returns_the_last_copy_put(void)
{
    vmt_xbzrle_cache *c;
    uint8_t a[PAGE], b[PAGE];
    CU_ASSERT_EQUAL_FATAL(vmt_xbzrle_cache_new(&c, 4 * PAGE), 0);
    net_fill(a, PAGE, 1);
    net_fill(b, PAGE, 2);
    CU_ASSERT_PTR_NULL(vmt_xbzrle_cache_get(c, 7));
    vmt_xbzrle_cache_put(c, 7, a);
    a[0] ^= 1; /* the cache keeps its own copy */
    const uint8_t *got = vmt_xbzrle_cache_get(c, 7);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_EQUAL(got[0], (uint8_t)(a[0] ^ 1));
    vmt_xbzrle_cache_put(c, 7, b);
    CU_ASSERT(memcmp(vmt_xbzrle_cache_get(c, 7), b, PAGE) == 0);
    vmt_xbzrle_cache_drop(c, 7);
    CU_ASSERT_PTR_NULL(vmt_xbzrle_cache_get(c, 7));
    vmt_xbzrle_cache_drop(c, 7); /* dropping a missing page is fine */
    vmt_xbzrle_cache_free(c);
}

static void test_recently_used_page_survives(void)
{
    vmt_xbzrle_cache *c;
    uint8_t page[PAGE] = {0};
    CU_ASSERT_EQUAL_FATAL(vmt_xbzrle_cache_new(&c, 4 * PAGE), 0);
    for (uint64_t pfn = 0; pfn < 4; pfn++)
        vmt_xbzrle_cache_put(c, pfn, page);
    /* The hand passes every page once (clearing their bits) and evicts 0. */
    vmt_xbzrle_cache_put(c, 10, page);
    CU_ASSERT_PTR_NULL(vmt_xbzrle_cache_get(c, 0));
    /* 1 is used again: it gets a second chance, 2 goes instead (FIFO would
     * have evicted 1). */
    CU_ASSERT_PTR_NOT_NULL(vmt_xbzrle_cache_get(c, 1));
    vmt_xbzrle_cache_put(c, 11, page);
    CU_ASSERT_PTR_NULL(vmt_xbzrle_cache_get(c, 2));
    CU_ASSERT_PTR_NOT_NULL(vmt_xbzrle_cache_get(c, 1));
    CU_ASSERT_PTR_NOT_NULL(vmt_xbzrle_cache_get(c, 3));
    CU_ASSERT_PTR_NOT_NULL(vmt_xbzrle_cache_get(c, 10));
    CU_ASSERT_PTR_NOT_NULL(vmt_xbzrle_cache_get(c, 11));
    vmt_xbzrle_cache_free(c);
}

static void test_reset_forgets_everything(void)
{
    vmt_xbzrle_cache *c;
    vmt_xbzrle_cache_stats st;
    uint8_t page[PAGE] = {1};
    CU_ASSERT_EQUAL_FATAL(vmt_xbzrle_cache_new(&c, 16 * PAGE), 0);
    for (uint64_t pfn = 0; pfn < 10; pfn++)
        vmt_xbzrle_cache_put(c, pfn, page);
    vmt_xbzrle_cache_reset(c);
    vmt_xbzrle_cache_get_stats(c, &st);
    CU_ASSERT_EQUAL(st.pages, 0);
    for (uint64_t pfn = 0; pfn < 10; pfn++)
        CU_ASSERT_PTR_NULL(vmt_xbzrle_cache_get(c, pfn));
    vmt_xbzrle_cache_free(c);
}

/* Random puts, gets and drops against a model: whatever the cache returns
 * is exactly the last version put for that pfn. */
static void test_matches_a_model(void)
{
    enum { NPFN = 200, CAP = 32 };
    vmt_xbzrle_cache *c;
    uint32_t version[NPFN] = {0};
    uint8_t page[PAGE], want[PAGE];
    uint64_t s = 99;
    vmt_xbzrle_cache_stats st;

    CU_ASSERT_EQUAL_FATAL(vmt_xbzrle_cache_new(&c, CAP * PAGE), 0);
    for (int op = 0; op < 20000; op++) {
        uint64_t pfn = net_rand(&s) % NPFN;
        unsigned what = (unsigned)(net_rand(&s) % 10);
        if (what < 5) {
            version[pfn]++;
            net_fill(page, PAGE, pfn * 1000 + version[pfn]);
            vmt_xbzrle_cache_put(c, pfn, page);
        } else if (what < 9) {
            const uint8_t *got = vmt_xbzrle_cache_get(c, pfn);
            if (got) {
                net_fill(want, PAGE, pfn * 1000 + version[pfn]);
                CU_ASSERT(memcmp(got, want, PAGE) == 0);
            }
        } else {
            vmt_xbzrle_cache_drop(c, pfn);
        }
        vmt_xbzrle_cache_get_stats(c, &st);
        CU_ASSERT(st.pages <= CAP);
    }
    CU_ASSERT(st.hits > 0 && st.misses > 0 && st.evictions > 0);
    vmt_xbzrle_cache_free(c);
}

static const vmt_test_case cases[] = {
    {"capacity is bounded", test_capacity_is_bounded},
    {"get returns the last copy put", test_get_returns_the_last_copy_put},
    {"recently used pages get a second chance", test_recently_used_page_survives},
    {"reset forgets everything", test_reset_forgets_everything},
    {"20000 random operations match a model", test_matches_a_model},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("xbzrle cache", cases, NULL, NULL);
}
