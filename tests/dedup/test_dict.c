/* Dictionaries: training from the store's pages, versions, reloading,
 * damaged dictionary files. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dd_test.h"

enum { N = 1500 };

static void put_pages(vmt_store *s, uint64_t seed, size_t n, vmt_id *ids, int codec)
{
    uint8_t *buf = malloc(n * VMT_STORE_PAGE_SIZE);
    const void **p = malloc(n * sizeof(*p));
    vmt_store_put_opts po;
    vmt_store_put_opts_init(&po);
    po.codec = codec;
    for (size_t i = 0; i < n; i++) {
        ddt_page(seed + i, buf + i * VMT_STORE_PAGE_SIZE);
        p[i] = buf + i * VMT_STORE_PAGE_SIZE;
    }
    DDT_OK(vmt_store_put_pages(s, p, n, ids, NULL, &po));
    free(buf);
    free(p);
}

static int bad_pages(vmt_store *s, uint64_t seed, size_t n, const vmt_id *ids)
{
    uint8_t page[VMT_STORE_PAGE_SIZE], want[VMT_STORE_PAGE_SIZE];
    void *dst[1] = {page};
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        ddt_page(seed + i, want);
        bad += vmt_store_get_pages(s, &ids[i], 1, dst) != 0 || memcmp(page, want, sizeof(page));
    }
    return bad;
}

static void test_versions_and_reload(void)
{
    char *dir = ddt_store("dict", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    vmt_id *a = malloc(N * sizeof(*a)), *b = malloc(N * sizeof(*b)), *c = malloc(N * sizeof(*c));
    unsigned v1, v2;
    put_pages(s, 0, N, a, -1);
    DDT_OK(vmt_store_train_dict(s, NULL, &v1));
    CU_ASSERT_EQUAL(v1, 1);
    put_pages(s, 100000, N, b, VMT_CODEC_ZSTD_DICT);
    DDT_OK(vmt_store_train_dict(s, NULL, &v2));
    CU_ASSERT_EQUAL(v2, 2);
    put_pages(s, 200000, N, c, VMT_CODEC_ZSTD_DICT);
    DDT_OK(vmt_store_commit(s));
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.dict_version, 2);
    CU_ASSERT(st.codec[VMT_CODEC_ZSTD_DICT].objects > N);
    vmt_store_close(s);
    s = ddt_open(dir, true, 2); /* records of both versions read back */
    CU_ASSERT_EQUAL(bad_pages(s, 100000, N, b), 0);
    CU_ASSERT_EQUAL(bad_pages(s, 200000, N, c), 0);
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    vmt_store_close(s);
    /* A damaged version-1 file fails only the records that need it. */
    ddt_obj_flip(dir, "dicts/dict-00001.zdict", 100, 0x01);
    s = ddt_open(dir, true, 2);
    CU_ASSERT_EQUAL(bad_pages(s, 100000, N, b), N);
    CU_ASSERT_EQUAL(bad_pages(s, 200000, N, c), 0);
    CU_ASSERT_EQUAL(bad_pages(s, 0, N, a), 0);
    CU_ASSERT_EQUAL(vmt_store_verify(s, NULL, NULL), VMT_ECORRUPT);
    vmt_store_close(s);
    free(a);
    free(b);
    free(c);
    ddt_cleanup(dir);
}

static void test_training_needs_pages(void)
{
    char *dir = ddt_store("dict2", NULL);
    vmt_store *s = ddt_open(dir, false, 1);
    vmt_id ids[10];
    put_pages(s, 0, 10, ids, -1);
    CU_ASSERT_EQUAL(vmt_store_train_dict(s, NULL, NULL), VMT_EINVAL);
    vmt_store_dict_opts o;
    vmt_store_dict_opts_init(&o);
    o.dict_size = 10u << 20;
    CU_ASSERT_EQUAL(vmt_store_train_dict(s, &o, NULL), VMT_EINVAL);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"versions, reload and a damaged dictionary", test_versions_and_reload},
        {"training needs enough pages", test_training_needs_pages},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/dict", cases, NULL, NULL);
}
