/* Batch put: ids, dedup (within and across batches), windows, codecs,
 * compare-on-dedup, argument checks. */
#include <stdlib.h>
#include <string.h>

#include "dd_test.h"

static uint8_t *pages(size_t n, uint64_t seed, const void **ptrs)
{
    uint8_t *buf = malloc(n * VMT_STORE_PAGE_SIZE);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    for (size_t i = 0; i < n; i++) {
        ddt_page(seed + i, buf + i * VMT_STORE_PAGE_SIZE);
        ptrs[i] = buf + i * VMT_STORE_PAGE_SIZE;
    }
    return buf;
}

static void test_same_page_twice_is_stored_once(void)
{
    char *dir = ddt_store("put1", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    const void *p[64];
    uint8_t *buf = pages(64, 1000, p);
    vmt_id ids[64], ids2[64];
    bool is_new[64];
    vmt_store_stats st;
    DDT_OK(vmt_store_put_pages(s, p, 64, ids, is_new, NULL));
    for (int i = 0; i < 64; i++)
        CU_ASSERT_TRUE(is_new[i]);
    DDT_OK(vmt_store_get_stats(s, &st));
    uint64_t stored = st.stored_bytes;
    DDT_OK(vmt_store_put_pages(s, p, 64, ids2, is_new, NULL));
    for (int i = 0; i < 64; i++) {
        CU_ASSERT_FALSE(is_new[i]);
        CU_ASSERT(vmt_id_equal(&ids[i], &ids2[i]));
        vmt_id want;
        vmt_id_of(p[i], VMT_STORE_PAGE_SIZE, &want);
        CU_ASSERT(vmt_id_equal(&ids[i], &want));
    }
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.objects, 64);
    CU_ASSERT_EQUAL(st.stored_bytes, stored);
    DDT_OK(vmt_store_commit(s));
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.put_objects, 128);
    CU_ASSERT_EQUAL(st.dedup_hits, 64);
    CU_ASSERT_EQUAL(st.new_objects, 64);
    CU_ASSERT_DOUBLE_EQUAL(st.dedup_ratio, 2.0, 1e-9);
    vmt_store_close(s);
    free(buf);
    ddt_cleanup(dir);
}

static void test_duplicates_within_a_batch(void)
{
    char *dir = ddt_store("put2", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    enum { N = 300 };
    const void *p[N];
    uint8_t *buf = pages(N, 7, p);
    vmt_id ids[N];
    bool is_new[N];
    for (int i = 100; i < N; i++)
        p[i] = p[i % 10]; /* 200 repeats of the first ten pages */
    DDT_OK(vmt_store_put_pages(s, p, N, ids, is_new, NULL));
    int fresh = 0;
    for (int i = 0; i < N; i++) {
        fresh += is_new[i];
        CU_ASSERT(vmt_id_equal(&ids[i], &ids[i < 100 ? i : i % 10]));
    }
    CU_ASSERT_EQUAL(fresh, 100);
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.objects, 100);
    vmt_store_close(s);
    free(buf);
    ddt_cleanup(dir);
}

static void test_zero_pages_are_never_stored(void)
{
    char *dir = ddt_store("put3", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    static uint8_t zero[VMT_STORE_PAGE_SIZE];
    const void *p[100];
    vmt_id ids[100];
    bool is_new[100], has[1];
    for (int i = 0; i < 100; i++)
        p[i] = zero;
    DDT_OK(vmt_store_put_pages(s, p, 100, ids, is_new, NULL));
    for (int i = 0; i < 100; i++) {
        CU_ASSERT(vmt_id_is_zero_page(&ids[i]));
        CU_ASSERT_FALSE(is_new[i]);
    }
    vmt_store_stats st;
    DDT_OK(vmt_store_commit(s));
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.objects, 0);
    CU_ASSERT_EQUAL(st.zero_pages, 100);
    DDT_OK(vmt_store_has_many(s, ids, 1, has));
    CU_ASSERT_TRUE(has[0]);
    /* A 4096-byte zero blob is the zero page too. */
    vmt_store_obj o = {zero, sizeof(zero), VMT_OBJ_BLOB};
    DDT_OK(vmt_store_put_many(s, &o, 1, ids, is_new, NULL));
    CU_ASSERT(vmt_id_is_zero_page(&ids[0]));
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_many_windows_and_seals(void)
{
    char *dir = ddt_store_small("put4", 1u << 20);
    vmt_store *s = ddt_open(dir, false, 2);
    enum { N = 10000 }; /* > 2 windows, ~15 packs */
    const void **p = malloc(N * sizeof(*p));
    uint8_t *buf = pages(N, 50000, p);
    vmt_id *ids = malloc(N * sizeof(*ids));
    uint8_t *out = malloc(N * VMT_STORE_PAGE_SIZE);
    void **dst = malloc(N * sizeof(*dst));
    for (size_t i = 0; i < N; i++)
        dst[i] = out + i * VMT_STORE_PAGE_SIZE;
    DDT_OK(vmt_store_put_pages(s, p, N, ids, NULL, NULL));
    DDT_OK(vmt_store_commit(s));
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.objects, N);
    CU_ASSERT(st.packs > 5);
    DDT_OK(vmt_store_get_pages(s, ids, N, dst));
    CU_ASSERT_EQUAL(memcmp(buf, out, (size_t)N * VMT_STORE_PAGE_SIZE), 0);
    vmt_store_close(s);
    /* And after reopening (from the index). */
    s = ddt_open(dir, true, 2);
    memset(out, 0, (size_t)N * VMT_STORE_PAGE_SIZE);
    DDT_OK(vmt_store_get_pages(s, ids, N, dst));
    CU_ASSERT_EQUAL(memcmp(buf, out, (size_t)N * VMT_STORE_PAGE_SIZE), 0);
    vmt_store_close(s);
    free(p);
    free(buf);
    free(ids);
    free(out);
    free(dst);
    ddt_cleanup(dir);
}

static void test_objects_of_every_type_and_size(void)
{
    char *dir = ddt_store("put5", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    size_t sizes[] = {1, 17, 4095, 4097, 100000, VMT_STORE_OBJECT_MAX};
    enum { K = sizeof(sizes) / sizeof(sizes[0]) };
    vmt_store_obj o[K];
    vmt_id ids[K];
    for (size_t i = 0; i < K; i++) {
        uint8_t *d = malloc(sizes[i]);
        for (size_t b = 0; b < sizes[i]; b++)
            d[b] = (uint8_t)(b * 7 + i + (b >> 9));
        o[i] = (vmt_store_obj){d, sizes[i], (vmt_obj_type)(1 + i % 4)};
    }
    DDT_OK(vmt_store_put_many(s, o, K, ids, NULL, NULL));
    for (size_t i = 0; i < K; i++) {
        void *data;
        size_t len;
        vmt_obj_type type;
        DDT_OK(vmt_store_get(s, &ids[i], &data, &len, &type));
        CU_ASSERT_EQUAL(len, sizes[i]);
        CU_ASSERT_EQUAL(type, o[i].type);
        CU_ASSERT_EQUAL(memcmp(data, o[i].data, len), 0);
        free(data);
        free((void *)o[i].data);
    }
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_bad_arguments_are_refused(void)
{
    char *dir = ddt_store("put6", NULL);
    vmt_store *s = ddt_open(dir, false, 1);
    uint8_t b[8] = {1};
    vmt_id id;
    vmt_store_obj empty = {b, 0, VMT_OBJ_BLOB}, big = {b, VMT_STORE_OBJECT_MAX + 1, VMT_OBJ_BLOB};
    vmt_store_obj badtype = {b, 8, (vmt_obj_type)9}, null = {NULL, 8, VMT_OBJ_BLOB};
    CU_ASSERT_EQUAL(vmt_store_put_many(s, &empty, 1, &id, NULL, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_store_put_many(s, &big, 1, &id, NULL, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_store_put_many(s, &badtype, 1, &id, NULL, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_store_put_many(s, &null, 1, &id, NULL, NULL), VMT_EINVAL);
    vmt_store_put_opts po;
    vmt_store_put_opts_init(&po);
    po.codec = 7;
    vmt_store_obj ok = {b, 8, VMT_OBJ_BLOB};
    CU_ASSERT_EQUAL(vmt_store_put_many(s, &ok, 1, &id, NULL, &po), VMT_EINVAL);
    vmt_store_close(s);
    s = ddt_open(dir, true, 1);
    CU_ASSERT_EQUAL(vmt_store_put_many(s, &ok, 1, &id, NULL, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_store_commit(s), VMT_EINVAL);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_compare_on_dedup_accepts_true_duplicates(void)
{
    vmt_store_config cfg;
    vmt_store_config_init(&cfg);
    cfg.compare_on_dedup = true;
    char *dir = ddt_store("put7", &cfg);
    vmt_store *s = ddt_open(dir, false, 2);
    const void *p[200];
    uint8_t *buf = pages(200, 3, p);
    vmt_id ids[200];
    bool is_new[200];
    for (int i = 100; i < 200; i++)
        p[i] = p[i - 100];
    DDT_OK(vmt_store_put_pages(s, p, 200, ids, is_new, NULL));
    DDT_OK(vmt_store_put_pages(s, p, 200, ids, is_new, NULL));
    for (int i = 0; i < 200; i++)
        CU_ASSERT_FALSE(is_new[i]);
    vmt_store_close(s);
    free(buf);
    ddt_cleanup(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"the same page put twice is stored once", test_same_page_twice_is_stored_once},
        {"duplicates within a batch are stored once", test_duplicates_within_a_batch},
        {"zero pages are never stored", test_zero_pages_are_never_stored},
        {"many windows across pack seals", test_many_windows_and_seals},
        {"objects of every type and size", test_objects_of_every_type_and_size},
        {"bad arguments are refused", test_bad_arguments_are_refused},
        {"compare-on-dedup accepts true duplicates", test_compare_on_dedup_accepts_true_duplicates},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/put", cases, NULL, NULL);
}
