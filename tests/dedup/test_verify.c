/* Damage: flipped bytes make get of that object fail with a clear error and
 * verify report it by pack and offset, while the other objects still read. */
#include <stdlib.h>
#include <string.h>

#include "dd_test.h"

enum { N = 400 };

typedef struct found {
    int n;
    vmt_store_damage d[16];
    char what[16][256];
} found;

static void on_damage(void *ctx, const vmt_store_damage *d)
{
    found *f = ctx;
    if (f->n < 16) {
        f->d[f->n] = *d;
        snprintf(f->what[f->n], sizeof(f->what[0]), "%s", d->what);
    }
    f->n++;
}

static void build(char **dir, vmt_id *ids, int codec)
{
    uint8_t *buf = malloc(N * VMT_STORE_PAGE_SIZE);
    const void *p[N];
    vmt_store_put_opts po;
    vmt_store_put_opts_init(&po);
    po.codec = codec;
    *dir = ddt_store("verify", NULL);
    for (int i = 0; i < N; i++) {
        ddt_page((uint64_t)i + 77, buf + i * VMT_STORE_PAGE_SIZE);
        p[i] = buf + i * VMT_STORE_PAGE_SIZE;
    }
    vmt_store *s = ddt_open(*dir, false, 2);
    DDT_OK(vmt_store_put_pages(s, p, N, ids, NULL, &po));
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    free(buf);
}

static void check_damage_at(int codec, uint64_t rel, uint8_t mask)
{
    char *dir;
    vmt_id ids[N];
    build(&dir, ids, codec);
    vmt_store *s = ddt_open(dir, false, 2);
    vmt_store_objinfo info;
    const int victim = 123;
    DDT_OK(vmt_store_stat(s, &ids[victim], &info));
    vmt_store_close(s);
    char *pack = ddt_pack_name(info.pack);
    ddt_obj_flip(dir, pack, info.offset + rel, mask);
    free(pack);

    s = ddt_open(dir, false, 2);
    uint8_t page[VMT_STORE_PAGE_SIZE], want[VMT_STORE_PAGE_SIZE];
    void *dst[1] = {page};
    memset(page, 0xaa, sizeof(page));
    CU_ASSERT_EQUAL(vmt_store_get_pages(s, &ids[victim], 1, dst), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "damaged"));
    for (int i = 0; i < N; i++) { /* everything else still reads */
        if (i == victim)
            continue;
        ddt_page((uint64_t)i + 77, want);
        DDT_OK(vmt_store_get_pages(s, &ids[i], 1, dst));
        CU_ASSERT_EQUAL(memcmp(page, want, sizeof(page)), 0);
    }
    found f = {0};
    vmt_store_verify_opts vo = {.damage = on_damage, .damage_ctx = &f};
    vmt_store_verify_stats vs;
    CU_ASSERT_EQUAL(vmt_store_verify(s, &vo, &vs), VMT_ECORRUPT);
    CU_ASSERT(f.n >= 1);
    bool located = false;
    for (int i = 0; i < f.n && i < 16; i++)
        located |= f.d[i].pack == info.pack && f.d[i].offset == info.offset;
    CU_ASSERT_TRUE(located);
    CU_ASSERT(vs.objects_ok >= N - 1);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_payload_flip_lz4(void)
{
    check_damage_at(VMT_CODEC_LZ4, 40 + 100, 0x04);
}

static void test_payload_flip_raw(void)
{
    check_damage_at(VMT_CODEC_RAW, 40 + 4000, 0x80);
}

static void test_header_flip(void)
{
    check_damage_at(VMT_CODEC_ZSTD, 26, 0x01); /* the length field */
}

static void test_id_flip(void)
{
    check_damage_at(VMT_CODEC_LZ4, 10, 0x01);
}

static void test_clean_store_verifies(void)
{
    char *dir;
    vmt_id ids[N];
    build(&dir, ids, VMT_CODEC_LZ4);
    vmt_store *s = ddt_open(dir, true, 1);
    vmt_store_verify_stats vs;
    DDT_OK(vmt_store_verify(s, NULL, &vs));
    CU_ASSERT_EQUAL(vs.objects_ok, N);
    CU_ASSERT_EQUAL(vs.records, N + 1); /* and one commit marker */
    CU_ASSERT_EQUAL(vs.damaged, 0);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_verify_reads_rehashes(void)
{
    char *dir;
    vmt_id ids[N];
    build(&dir, ids, VMT_CODEC_LZ4);
    vmt_store_open_opts o;
    vmt_store_open_opts_init(&o);
    o.verify_reads = true;
    vmt_store *s;
    DDT_OK(vmt_store_open(&s, dir, &o));
    uint8_t *out = malloc(N * VMT_STORE_PAGE_SIZE);
    void *dst[N];
    for (int i = 0; i < N; i++)
        dst[i] = out + i * VMT_STORE_PAGE_SIZE;
    DDT_OK(vmt_store_get_pages(s, ids, N, dst));
    vmt_store_close(s);
    free(out);
    ddt_cleanup(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"a flipped lz4 payload byte", test_payload_flip_lz4},
        {"a flipped raw payload byte", test_payload_flip_raw},
        {"a flipped header length", test_header_flip},
        {"a flipped id byte", test_id_flip},
        {"a clean store verifies", test_clean_store_verifies},
        {"verify_reads rehashes what it reads", test_verify_reads_rehashes},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/verify", cases, NULL, NULL);
}
