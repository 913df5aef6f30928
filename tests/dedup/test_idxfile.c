/* The index file: deleted, truncated or garbage, open rebuilds it from the
 * packs and everything reads back. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dd_test.h"

enum { N = 3000 };

typedef struct fixture {
    char *dir, *index;
    uint8_t *data;
    vmt_id ids[N];
} fixture;

static void build(fixture *f, const char *tag)
{
    f->dir = ddt_store_small(tag, 1u << 20);
    CU_ASSERT_FATAL(asprintf(&f->index, "%s/index", f->dir) > 0);
    f->data = malloc((size_t)N * VMT_STORE_PAGE_SIZE);
    const void **p = malloc(N * sizeof(*p));
    for (size_t i = 0; i < N; i++) {
        ddt_page(i * 31 + 7, f->data + i * VMT_STORE_PAGE_SIZE);
        p[i] = f->data + i * VMT_STORE_PAGE_SIZE;
    }
    vmt_store *s = ddt_open(f->dir, false, 2);
    DDT_OK(vmt_store_put_pages(s, p, N / 2, f->ids, NULL, NULL));
    DDT_OK(vmt_store_commit(s));
    DDT_OK(vmt_store_put_pages(s, p + N / 2, N - N / 2, f->ids + N / 2, NULL, NULL));
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    CU_ASSERT(ddt_file_size(f->index) > 128);
    free(p);
}

static void check_all(fixture *f, bool expect_rebuilt)
{
    vmt_store *s = ddt_open(f->dir, false, 2);
    vmt_store_recovery rec;
    vmt_store_recovery_info(s, &rec);
    CU_ASSERT_EQUAL(rec.index_rebuilt, expect_rebuilt);
    uint8_t *out = malloc((size_t)N * VMT_STORE_PAGE_SIZE);
    void **dst = malloc(N * sizeof(*dst));
    for (size_t i = 0; i < N; i++)
        dst[i] = out + i * VMT_STORE_PAGE_SIZE;
    DDT_OK(vmt_store_get_pages(s, f->ids, N, dst));
    CU_ASSERT_EQUAL(memcmp(out, f->data, (size_t)N * VMT_STORE_PAGE_SIZE), 0);
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.objects, N);
    CU_ASSERT_EQUAL(st.new_objects, N); /* counters come back from the markers */
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    vmt_store_close(s);
    /* The rebuilt index was saved: the next open does not rebuild. */
    s = ddt_open(f->dir, true, 1);
    vmt_store_recovery_info(s, &rec);
    CU_ASSERT_FALSE(rec.index_rebuilt);
    vmt_store_close(s);
    free(out);
    free(dst);
}

static void done(fixture *f)
{
    free(f->index);
    free(f->data);
    ddt_cleanup(f->dir);
}

static void test_index_opens_without_rebuild(void)
{
    fixture f;
    build(&f, "idx0");
    check_all(&f, false);
    done(&f);
}

static void test_deleted_index_is_rebuilt(void)
{
    fixture f;
    build(&f, "idx1");
    CU_ASSERT_EQUAL(unlink(f.index), 0);
    check_all(&f, true);
    done(&f);
}

static void test_truncated_index_is_rebuilt(void)
{
    fixture f;
    build(&f, "idx2");
    long long size = ddt_file_size(f.index);
    long long cuts[] = {0, 5, 127, 128 + 32 * 10 + 3, size - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        CU_ASSERT_EQUAL(truncate(f.index, cuts[i]), 0);
        check_all(&f, true);
    }
    done(&f);
}

static void test_garbage_or_damaged_index_is_rebuilt(void)
{
    fixture f;
    build(&f, "idx3");
    uint8_t junk[4096];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)(i * 13 + 1);
    ddt_write_file(f.index, junk, sizeof(junk));
    check_all(&f, true);
    long long size = ddt_file_size(f.index);
    ddt_flip(f.index, (uint64_t)size / 2, 0x10); /* one bit in an entry */
    check_all(&f, true);
    ddt_flip(f.index, 40, 0x01); /* the checkpoint in the header */
    check_all(&f, true);
    done(&f);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"a saved index opens without rebuilding", test_index_opens_without_rebuild},
        {"a deleted index is rebuilt", test_deleted_index_is_rebuilt},
        {"a truncated index is rebuilt", test_truncated_index_is_rebuilt},
        {"a garbage or damaged index is rebuilt", test_garbage_or_damaged_index_is_rebuilt},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/idxfile", cases, NULL, NULL);
}
