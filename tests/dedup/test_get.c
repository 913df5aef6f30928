/* Batch get, has and stat: per-item results, buffer sizes, zero pages. */
#include <stdlib.h>
#include <string.h>

#include "dd_test.h"

static void test_items_report_their_own_errors(void)
{
    char *dir = ddt_store("get1", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    uint8_t blob[10000], page[VMT_STORE_PAGE_SIZE];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i % 251);
    vmt_store_obj o = {blob, sizeof(blob), VMT_OBJ_BLOB};
    vmt_id bid, ghost;
    DDT_OK(vmt_store_put_many(s, &o, 1, &bid, NULL, NULL));
    vmt_id_of("ghost", 5, &ghost);
    uint8_t big[20000], small[100], z[VMT_STORE_PAGE_SIZE];
    vmt_store_get_item it[4] = {
        {.id = bid, .buf = big, .cap = sizeof(big)},
        {.id = bid, .buf = small, .cap = sizeof(small)},
        {.id = ghost, .buf = big, .cap = sizeof(big)},
        {.id = vmt_id_zero_page(), .buf = z, .cap = sizeof(z)},
    };
    memset(z, 1, sizeof(z));
    int rc = vmt_store_get_many(s, it, 4);
    CU_ASSERT(rc == VMT_ERANGE || rc == VMT_ENOENT);
    CU_ASSERT_EQUAL(it[0].rc, 0);
    CU_ASSERT_EQUAL(it[0].len, sizeof(blob));
    CU_ASSERT_EQUAL(it[0].type, VMT_OBJ_BLOB);
    CU_ASSERT_EQUAL(memcmp(big, blob, sizeof(blob)), 0);
    CU_ASSERT_EQUAL(it[1].rc, VMT_ERANGE);
    CU_ASSERT_EQUAL(it[1].len, sizeof(blob)); /* tells the size needed */
    CU_ASSERT_EQUAL(it[2].rc, VMT_ENOENT);
    CU_ASSERT_EQUAL(it[3].rc, 0);
    memset(page, 0, sizeof(page));
    CU_ASSERT_EQUAL(memcmp(z, page, sizeof(page)), 0);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_pages_must_be_pages(void)
{
    char *dir = ddt_store("get2", NULL);
    vmt_store *s = ddt_open(dir, false, 1);
    uint8_t small[10] = {1, 2, 3}, out[VMT_STORE_PAGE_SIZE];
    vmt_store_obj o = {small, sizeof(small), VMT_OBJ_BLOB};
    vmt_id id;
    void *dst[1] = {out};
    DDT_OK(vmt_store_put_many(s, &o, 1, &id, NULL, NULL));
    CU_ASSERT_EQUAL(vmt_store_get_pages(s, &id, 1, dst), VMT_ERANGE);
    vmt_store_objinfo info;
    DDT_OK(vmt_store_stat(s, &id, &info));
    CU_ASSERT_EQUAL(info.raw_len, 10);
    CU_ASSERT_EQUAL(info.type, VMT_OBJ_BLOB);
    CU_ASSERT_EQUAL(info.codec, VMT_CODEC_RAW); /* 10 bytes do not compress */
    vmt_id zero = vmt_id_zero_page();
    CU_ASSERT_EQUAL(vmt_store_stat(s, &zero, &info), VMT_ENOENT);
    void *data;
    size_t len;
    DDT_OK(vmt_store_get(s, &zero, &data, &len, NULL));
    CU_ASSERT_EQUAL(len, VMT_STORE_PAGE_SIZE);
    free(data);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_has_agrees_with_put(void)
{
    char *dir = ddt_store("get3", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    enum { N = 500 };
    uint8_t *buf = malloc(N * VMT_STORE_PAGE_SIZE);
    const void *p[N];
    vmt_id ids[2 * N];
    bool has[2 * N];
    for (int i = 0; i < 2 * N; i++) {
        if (i < N) {
            ddt_page((uint64_t)i, buf + i * VMT_STORE_PAGE_SIZE);
            p[i] = buf + i * VMT_STORE_PAGE_SIZE;
        } else {
            uint64_t x = (uint64_t)i;
            vmt_id_of(&x, sizeof(x), &ids[i]);
        }
    }
    DDT_OK(vmt_store_put_pages(s, p, N, ids, NULL, NULL));
    DDT_OK(vmt_store_has_many(s, ids, 2 * N, has));
    for (int i = 0; i < 2 * N; i++)
        CU_ASSERT_EQUAL(has[i], i < N);
    vmt_store_close(s);
    free(buf);
    ddt_cleanup(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"items report their own errors", test_items_report_their_own_errors},
        {"get_pages wants pages; stat", test_pages_must_be_pages},
        {"has agrees with put", test_has_agrees_with_put},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/get", cases, NULL, NULL);
}
