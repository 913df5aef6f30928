/* Every codec round-trips real content; random pages are stored raw. */
#include <stdlib.h>
#include <string.h>

#include "dd_test.h"

static uint8_t *corpus;
static size_t corpus_pages;

static int setup(void)
{
    const char *name;
    size_t len = ddt_corpus(&corpus, 8u << 20, &name);
    corpus_pages = len / VMT_STORE_PAGE_SIZE;
    fprintf(stderr, "corpus: %s, %zu pages\n", name, corpus_pages);
    return corpus_pages >= 256 ? 0 : 1;
}

static int teardown(void)
{
    free(corpus);
    return 0;
}

/* Puts the corpus with `codec`, reads it back through a fresh handle. */
static void round_trip(int codec, bool train)
{
    char *dir = ddt_store("codec", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    size_t n = corpus_pages;
    const void **p = malloc(n * sizeof(*p));
    void **dst = malloc(n * sizeof(*dst));
    vmt_id *ids = malloc(n * sizeof(*ids));
    uint8_t *out = malloc(n * VMT_STORE_PAGE_SIZE);
    for (size_t i = 0; i < n; i++) {
        p[i] = corpus + i * VMT_STORE_PAGE_SIZE;
        dst[i] = out + i * VMT_STORE_PAGE_SIZE;
    }
    vmt_store_put_opts po;
    vmt_store_put_opts_init(&po);
    size_t first = 0;
    if (train) { /* the dictionary is trained on the first half */
        first = n / 2;
        DDT_OK(vmt_store_put_pages(s, p, first, ids, NULL, NULL));
        DDT_OK(vmt_store_train_dict(s, NULL, NULL));
    }
    po.codec = codec;
    DDT_OK(vmt_store_put_pages(s, p + first, n - first, ids + first, NULL, &po));
    DDT_OK(vmt_store_commit(s));
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    if (codec != VMT_CODEC_RAW) { /* the codec was really used, and paid off */
        CU_ASSERT(st.codec[codec].objects > (n - first) / 2);
        CU_ASSERT(st.compression_ratio > 1.2);
    } else {
        CU_ASSERT_EQUAL(st.codec[VMT_CODEC_RAW].objects, st.objects);
    }
    vmt_store_close(s);
    s = ddt_open(dir, true, 2);
    DDT_OK(vmt_store_get_pages(s, ids, n, dst));
    CU_ASSERT_EQUAL(memcmp(out, corpus, n * VMT_STORE_PAGE_SIZE), 0);
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    vmt_store_close(s);
    free(p);
    free(dst);
    free(ids);
    free(out);
    ddt_cleanup(dir);
}

static void test_raw_round_trip(void)
{
    round_trip(VMT_CODEC_RAW, false);
}
static void test_lz4_round_trip(void)
{
    round_trip(VMT_CODEC_LZ4, false);
}
static void test_zstd_round_trip(void)
{
    round_trip(VMT_CODEC_ZSTD, false);
}
static void test_zstd_dict_round_trip(void)
{
    round_trip(VMT_CODEC_ZSTD_DICT, true);
}

static void test_random_pages_are_stored_raw(void)
{
    char *dir = ddt_store("codecr", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    enum { N = 200 };
    uint8_t *buf = malloc(N * VMT_STORE_PAGE_SIZE), *out = malloc(N * VMT_STORE_PAGE_SIZE);
    const void *p[N];
    void *dst[N];
    vmt_id ids[N];
    for (int i = 0; i < N; i++) {
        ddt_random_page((uint64_t)i, buf + i * VMT_STORE_PAGE_SIZE);
        p[i] = buf + i * VMT_STORE_PAGE_SIZE;
        dst[i] = out + i * VMT_STORE_PAGE_SIZE;
    }
    for (int codec = VMT_CODEC_LZ4; codec <= VMT_CODEC_ZSTD; codec++) {
        vmt_store_put_opts po;
        vmt_store_put_opts_init(&po);
        po.codec = codec;
        DDT_OK(vmt_store_put_pages(s, p, N, ids, NULL, &po));
    }
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.codec[VMT_CODEC_RAW].objects, N);
    CU_ASSERT_EQUAL(st.objects, N);
    DDT_OK(vmt_store_get_pages(s, ids, N, dst));
    CU_ASSERT_EQUAL(memcmp(buf, out, N * VMT_STORE_PAGE_SIZE), 0);
    vmt_store_close(s);
    free(buf);
    free(out);
    ddt_cleanup(dir);
}

static void test_dict_codec_without_dictionary_falls_back(void)
{
    char *dir = ddt_store("codecd", NULL);
    vmt_store *s = ddt_open(dir, false, 1);
    uint8_t page[VMT_STORE_PAGE_SIZE];
    const void *p[1] = {page};
    vmt_id id;
    vmt_store_objinfo info;
    vmt_store_put_opts po;
    vmt_store_put_opts_init(&po);
    po.codec = VMT_CODEC_ZSTD_DICT;
    ddt_page(1, page);
    DDT_OK(vmt_store_put_pages(s, p, 1, &id, NULL, &po));
    DDT_OK(vmt_store_stat(s, &id, &info));
    CU_ASSERT_EQUAL(info.codec, VMT_CODEC_ZSTD);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"raw round trip on real content", test_raw_round_trip},
        {"lz4 round trip on real content", test_lz4_round_trip},
        {"zstd round trip on real content", test_zstd_round_trip},
        {"zstd-dict round trip on real content", test_zstd_dict_round_trip},
        {"random pages are stored raw", test_random_pages_are_stored_raw},
        {"zstd-dict without a dictionary falls back to zstd",
         test_dict_codec_without_dictionary_falls_back},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/codec", cases, setup, teardown);
}
