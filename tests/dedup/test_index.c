/* The sharded in-memory index: insert, lookup, pending, remove, grow, mark. */
#include <stdlib.h>
#include <string.h>

#include "dd_test.h"
#include "index.h"

static dd_entry entry(uint32_t n)
{
    dd_entry e = {.pack = 1 + n % 7, .off = n, .slen = 10, .meta = dd_meta(10, 1, 0)};
    vmt_id_of(&n, sizeof(n), &e.id);
    return e;
}

static void test_insert_lookup_remove_many(void)
{
    dd_index ix;
    const uint32_t n = 50000;
    DDT_OK(dd_index_init(&ix, 0)); /* starts small: forces growth */
    for (uint32_t i = 0; i < n; i++) {
        dd_entry e = entry(i);
        bool existed = true;
        DDT_OK(dd_index_insert(&ix, &e, &existed, NULL));
        CU_ASSERT_FALSE(existed);
    }
    CU_ASSERT_EQUAL(dd_index_count(&ix), n);
    /* Remove every third; the rest must still be found (backward shift). */
    for (uint32_t i = 0; i < n; i += 3) {
        dd_entry e = entry(i);
        CU_ASSERT_TRUE(dd_index_remove(&ix, &e.id));
    }
    for (uint32_t i = 0; i < n; i++) {
        dd_entry e = entry(i), got;
        bool found = dd_index_lookup(&ix, &e.id, &got);
        CU_ASSERT_EQUAL(found, i % 3 != 0);
        if (found)
            CU_ASSERT_EQUAL(got.off, i);
    }
    CU_ASSERT_EQUAL(dd_index_count(&ix), n - (n + 2) / 3);
    dd_index_free(&ix);
}

static void test_duplicate_insert_reports_existing(void)
{
    dd_index ix;
    DDT_OK(dd_index_init(&ix, 10));
    dd_entry e = entry(5), e2 = entry(5), old;
    bool existed;
    e2.off = 999;
    DDT_OK(dd_index_insert(&ix, &e, &existed, NULL));
    DDT_OK(dd_index_insert(&ix, &e2, &existed, &old));
    CU_ASSERT_TRUE(existed);
    CU_ASSERT_EQUAL(old.off, 5);
    CU_ASSERT_TRUE(dd_index_update(&ix, &e2));
    CU_ASSERT_TRUE(dd_index_lookup(&ix, &e.id, &old));
    CU_ASSERT_EQUAL(old.off, 999);
    dd_index_free(&ix);
}

static void test_pending_entries_are_invisible(void)
{
    dd_index ix;
    DDT_OK(dd_index_init(&ix, 10));
    dd_entry e = entry(1);
    bool existed;
    e.pack = DD_PACK_PENDING;
    DDT_OK(dd_index_insert(&ix, &e, &existed, NULL));
    CU_ASSERT_FALSE(dd_index_lookup(&ix, &e.id, NULL));
    CU_ASSERT_EQUAL(dd_index_mark(&ix, &e.id, NULL), -1);
    e.pack = 3;
    CU_ASSERT_TRUE(dd_index_update(&ix, &e));
    CU_ASSERT_TRUE(dd_index_lookup(&ix, &e.id, NULL));
    dd_index_free(&ix);
}

static void test_mark_and_unmark(void)
{
    dd_index ix;
    DDT_OK(dd_index_init(&ix, 10));
    dd_entry e = entry(2), got;
    bool existed;
    DDT_OK(dd_index_insert(&ix, &e, &existed, NULL));
    CU_ASSERT_EQUAL(dd_index_mark(&ix, &e.id, &got), 1);
    CU_ASSERT_EQUAL(dd_index_mark(&ix, &e.id, &got), 0);
    CU_ASSERT(got.meta & DD_META_MARK);
    CU_ASSERT_EQUAL(dd_meta_rlen(got.meta), 10); /* the mark does not disturb fields */
    dd_index_unmark_all(&ix);
    CU_ASSERT_EQUAL(dd_index_mark(&ix, &e.id, NULL), 1);
    dd_entry absent = entry(77);
    CU_ASSERT_EQUAL(dd_index_mark(&ix, &absent.id, NULL), -1);
    dd_index_free(&ix);
}

static int seen_count;
static bool drop_odd(void *ctx, dd_entry *e)
{
    (void)ctx;
    seen_count++;
    return e->off % 2 == 0;
}

static void test_edit_sees_each_entry_once(void)
{
    dd_index ix;
    bool existed;
    DDT_OK(dd_index_init(&ix, 0));
    for (uint32_t i = 0; i < 20000; i++) {
        dd_entry e = entry(i);
        DDT_OK(dd_index_insert(&ix, &e, &existed, NULL));
    }
    seen_count = 0;
    DDT_OK(dd_index_edit(&ix, drop_odd, NULL));
    CU_ASSERT_EQUAL(seen_count, 20000);
    CU_ASSERT_EQUAL(dd_index_count(&ix), 10000);
    for (uint32_t i = 0; i < 20000; i++) {
        dd_entry e = entry(i);
        CU_ASSERT_EQUAL(dd_index_lookup(&ix, &e.id, NULL), i % 2 == 0);
    }
    dd_index_free(&ix);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"insert, lookup, remove many", test_insert_lookup_remove_many},
        {"duplicate insert reports the existing entry", test_duplicate_insert_reports_existing},
        {"pending entries are invisible", test_pending_entries_are_invisible},
        {"mark and unmark", test_mark_and_unmark},
        {"edit sees each entry once", test_edit_sees_each_entry_once},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/index", cases, NULL, NULL);
}
