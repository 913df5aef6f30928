/* Commit: counters persist with the marker, empty commits are free, the
 * pack seal size is honoured, foreign files in packs/ are ignored. */
#include <stdlib.h>
#include <string.h>

#include "dd_test.h"

static void put_n(vmt_store *s, uint64_t seed, size_t n)
{
    uint8_t *buf = malloc(n * VMT_STORE_PAGE_SIZE);
    const void **p = malloc(n * sizeof(*p));
    vmt_id *ids = malloc(n * sizeof(*ids));
    for (size_t i = 0; i < n; i++) {
        ddt_page(seed + i, buf + i * VMT_STORE_PAGE_SIZE);
        p[i] = buf + i * VMT_STORE_PAGE_SIZE;
    }
    DDT_OK(vmt_store_put_pages(s, p, n, ids, NULL, NULL));
    free(buf);
    free(p);
    free(ids);
}

static void test_counters_survive_reopen(void)
{
    char *dir = ddt_store("commit1", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    put_n(s, 0, 100);
    put_n(s, 50, 100); /* 50 hits */
    DDT_OK(vmt_store_commit(s));
    put_n(s, 1000, 10); /* not committed: not counted after reopen */
    vmt_store_close(s);
    s = ddt_open(dir, true, 1);
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.put_objects, 200);
    CU_ASSERT_EQUAL(st.dedup_hits, 50);
    CU_ASSERT_EQUAL(st.new_objects, 150);
    CU_ASSERT_EQUAL(st.objects, 150);
    CU_ASSERT_EQUAL(st.new_bytes, 150 * VMT_STORE_PAGE_SIZE);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_empty_commit_writes_nothing(void)
{
    char *dir = ddt_store("commit2", NULL);
    vmt_store *s = ddt_open(dir, false, 1);
    DDT_OK(vmt_store_commit(s));
    CU_ASSERT_EQUAL(ddt_pack_bytes(dir), 0);
    put_n(s, 0, 10);
    DDT_OK(vmt_store_commit(s));
    uint64_t after = ddt_pack_bytes(dir);
    DDT_OK(vmt_store_commit(s));
    CU_ASSERT_EQUAL(ddt_pack_bytes(dir), after);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_packs_respect_the_seal_size(void)
{
    char *dir = ddt_store_small("commit3", 1u << 20);
    vmt_store *s = ddt_open(dir, false, 2);
    put_n(s, 0, 2000);
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    for (unsigned n = 1;; n++) {
        char *p = ddt_pack_name(n);
        long long size = ddt_obj_size(dir, p);
        free(p);
        if (size < 0) {
            CU_ASSERT(n > 3);
            break;
        }
        CU_ASSERT(size <= (1 << 20) + 104); /* a marker may run past the seal */
    }
    ddt_obj_write(dir, "packs/README", "x", 1);
    s = ddt_open(dir, false, 1);
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    vmt_store_close(s);
    CU_ASSERT_EQUAL(ddt_obj_size(dir, "packs/README"), 1);
    ddt_cleanup(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"counters survive a reopen", test_counters_survive_reopen},
        {"an empty commit writes nothing", test_empty_commit_writes_nothing},
        {"packs respect the seal size; foreign files ignored", test_packs_respect_the_seal_size},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/commit", cases, NULL, NULL);
}
