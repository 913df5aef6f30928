/*
 * The page batch writer (batch_enc.c): the encoding chosen for each kind of
 * page, exact round trips through the reader for every page codec and
 * batch codec, the XBZRLE cache kept in step with what the destination
 * holds, the stable copy of a page being written, limits and statistics.
 */
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"

#define PAGE VMT_NET_PAGE_SIZE

static int add_chunk(void *h, const vmt_wire_have_set *chunk)
{
    return vmt_haveset_add_chunk(h, chunk);
}

/* The set of the ids of n pages, through the real chunk format. */
static vmt_haveset *set_of(const uint8_t *pages, size_t n)
{
    vmt_id *ids = calloc(n + 1, sizeof(*ids));
    vmt_haveset *h = NULL;
    for (size_t i = 0; i < n; i++)
        vmt_id_of(pages + i * PAGE, PAGE, &ids[i]);
    CU_ASSERT_EQUAL_FATAL(vmt_haveset_new(&h, n + 1), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_haveset_encode(ids, n, 0, add_chunk, h), 0);
    free(ids);
    return h;
}

/* Parses a payload and returns the records' encodings in order. */
static size_t parse_encs(const uint8_t *p, size_t len, uint64_t npages, vmt_page_enc *encs)
{
    vmt_batch_reader *r;
    CU_ASSERT_EQUAL_FATAL(vmt_batch_reader_new(&r, npages), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_batch_reader_parse(r, p, len), 0);
    size_t n = vmt_batch_reader_count(r);
    for (size_t i = 0; i < n; i++)
        encs[i] = vmt_batch_reader_rec(r, i)->enc;
    vmt_batch_reader_free(r);
    return n;
}

static void test_encoding_choices(void)
{
    uint8_t zero[PAGE] = {0}, text[PAGE], rnd[PAGE], held[PAGE], changed[PAGE];
    vmt_batch_opts o;
    vmt_batch_writer *w;
    vmt_xbzrle_cache *cache;
    const uint8_t *p;
    size_t len;
    vmt_page_enc e[8];

    net_page(text, 1, 1);
    net_page(rnd, 2, 2);
    net_page(held, 2, 3);
    vmt_haveset *have = set_of(held, 1);
    CU_ASSERT_EQUAL_FATAL(vmt_xbzrle_cache_new(&cache, 16 * PAGE), 0);
    vmt_batch_opts_init(&o);
    o.page_codec = VMT_PAGE_LZ4;
    CU_ASSERT_EQUAL_FATAL(vmt_batch_writer_new(&w, &o, cache, have), 0);
    vmt_batch_writer_begin(w, 0);
    CU_ASSERT_EQUAL(vmt_batch_writer_add(w, 0, zero), 0);
    CU_ASSERT_EQUAL(vmt_batch_writer_add(w, 1, held), 0);
    CU_ASSERT_EQUAL(vmt_batch_writer_add(w, 2, text), 0);
    CU_ASSERT_EQUAL(vmt_batch_writer_add(w, 3, rnd), 0);
    memcpy(changed, rnd, PAGE);
    changed[100] ^= 1;
    CU_ASSERT_EQUAL(vmt_batch_writer_add(w, 3, changed), 0); /* cached: a delta */
    net_page(changed, 2, 99);
    CU_ASSERT_EQUAL(vmt_batch_writer_add(w, 3, changed), 0); /* delta too long: fallback */
    CU_ASSERT_EQUAL(vmt_batch_writer_finish(w, &p, &len), 0);
    CU_ASSERT_EQUAL(parse_encs(p, len, 4, e), 6);
    CU_ASSERT_EQUAL(e[0], VMT_PAGE_ZERO);
    CU_ASSERT_EQUAL(e[1], VMT_PAGE_REF);
    CU_ASSERT_EQUAL(e[2], VMT_PAGE_LZ4);
    CU_ASSERT_EQUAL(e[3], VMT_PAGE_RAW); /* random: LZ4 does not shrink it */
    CU_ASSERT_EQUAL(e[4], VMT_PAGE_DELTA);
    CU_ASSERT_EQUAL(e[5], VMT_PAGE_RAW);
    const vmt_batch_stats *st = vmt_batch_writer_stats(w);
    CU_ASSERT_EQUAL(st->delta_fallbacks, 1);
    CU_ASSERT_EQUAL(st->pages[VMT_PAGE_RAW], 2);
    CU_ASSERT_EQUAL(st->bytes[VMT_PAGE_REF], 16);
    CU_ASSERT_EQUAL(st->batches, 1);
    CU_ASSERT_EQUAL(st->payload_bytes, len);
    /* The cache mirrors the destination: the last version of 3, no zero page. */
    CU_ASSERT(memcmp(vmt_xbzrle_cache_get(cache, 3), changed, PAGE) == 0);
    CU_ASSERT_PTR_NULL(vmt_xbzrle_cache_get(cache, 0));
    vmt_batch_writer_free(w);
    vmt_xbzrle_cache_free(cache);
    vmt_haveset_free(have);
}

enum { NP = 300 };

/* Builds a batch of NP mixed pages (two rounds: the second a delta round)
 * and checks that applying it reproduces them. */
static void round_trip(vmt_page_enc codec, vmt_batch_codec bc, bool with_cache)
{
    uint8_t *src = malloc(NP * PAGE), *dst = calloc(NP, PAGE), *held = malloc(8 * PAGE);
    vmt_batch_opts o;
    vmt_batch_writer *w;
    vmt_batch_reader *r;
    vmt_xbzrle_cache *cache = NULL;
    for (size_t i = 0; i < NP; i++)
        net_page(src + i * PAGE, (unsigned)i % 4, i);
    for (size_t i = 0; i < 8; i++)
        memcpy(held + i * PAGE, src + (i * 7 + 1) * PAGE, PAGE);
    vmt_haveset *have = set_of(held, 8);
    if (with_cache)
        CU_ASSERT_EQUAL_FATAL(vmt_xbzrle_cache_new(&cache, NP * PAGE), 0);
    vmt_batch_opts_init(&o);
    o.page_codec = codec;
    o.batch_codec = bc;
    CU_ASSERT_EQUAL_FATAL(vmt_batch_writer_new(&w, &o, cache, have), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_batch_reader_new(&r, NP), 0);
    for (uint32_t round = 0; round < 2; round++) {
        const uint8_t *p;
        size_t len;
        vmt_batch_writer_begin(w, round);
        for (size_t i = 0; i < NP; i++) {
            if (round == 1)
                src[i * PAGE + (i * 13) % PAGE] += 1;
            CU_ASSERT_EQUAL(vmt_batch_writer_add(w, i, src + i * PAGE), 0);
        }
        CU_ASSERT_EQUAL_FATAL(vmt_batch_writer_finish(w, &p, &len), 0);
        CU_ASSERT_EQUAL_FATAL(vmt_batch_reader_parse(r, p, len), 0);
        CU_ASSERT_EQUAL(vmt_batch_reader_round(r), round);
        CU_ASSERT_EQUAL(vmt_batch_reader_count(r), NP);
        for (size_t i = 0; i < vmt_batch_reader_count(r); i++) {
            const vmt_page_rec *rec = vmt_batch_reader_rec(r, i);
            uint8_t *page = dst + rec->pfn * PAGE;
            if (rec->enc == VMT_PAGE_REF) {
                vmt_id id;
                vmt_id_of(src + rec->pfn * PAGE, PAGE, &id);
                CU_ASSERT(memcmp(rec->data, id.b, 16) == 0);
                memcpy(page, src + rec->pfn * PAGE, PAGE); /* "from the store" */
            } else {
                CU_ASSERT_EQUAL(vmt_batch_reader_apply(r, rec, page), 0);
            }
        }
        CU_ASSERT(memcmp(dst, src, NP * PAGE) == 0);
    }
    const vmt_batch_stats *st = vmt_batch_writer_stats(w);
    CU_ASSERT(st->pages[VMT_PAGE_ZERO] >= NP / 4);
    CU_ASSERT(st->pages[VMT_PAGE_REF] >= 6); /* the 8 held pages but 2 zero ones */
    if (with_cache)
        CU_ASSERT(st->pages[VMT_PAGE_DELTA] >= NP / 2);
    if (codec != VMT_PAGE_RAW)
        CU_ASSERT(st->pages[codec] > 0);
    vmt_batch_reader_free(r);
    vmt_batch_writer_free(w);
    vmt_xbzrle_cache_free(cache);
    vmt_haveset_free(have);
    free(src);
    free(dst);
    free(held);
}

static void test_round_trip_every_codec(void)
{
    const vmt_page_enc codecs[] = {VMT_PAGE_RAW, VMT_PAGE_LZ4, VMT_PAGE_ZSTD};
    const vmt_batch_codec bcs[] = {VMT_BATCH_PLAIN, VMT_BATCH_LZ4, VMT_BATCH_ZSTD};
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < 3; j++)
            for (int c = 0; c < 2; c++)
                round_trip(codecs[i], bcs[j], c);
}

static void test_whole_batch_compression_shrinks_text(void)
{
    vmt_batch_opts o;
    vmt_batch_writer *plain, *z;
    uint8_t page[PAGE];
    const uint8_t *p;
    size_t plain_len, z_len;
    vmt_batch_opts_init(&o);
    CU_ASSERT_EQUAL_FATAL(vmt_batch_writer_new(&plain, &o, NULL, NULL), 0);
    o.batch_codec = VMT_BATCH_ZSTD;
    CU_ASSERT_EQUAL_FATAL(vmt_batch_writer_new(&z, &o, NULL, NULL), 0);
    for (uint64_t i = 0; i < 64; i++) {
        net_page(page, 1, i);
        CU_ASSERT_EQUAL(vmt_batch_writer_add(plain, i, page), 0);
        CU_ASSERT_EQUAL(vmt_batch_writer_add(z, i, page), 0);
    }
    CU_ASSERT_EQUAL(vmt_batch_writer_finish(plain, &p, &plain_len), 0);
    CU_ASSERT_EQUAL(vmt_batch_writer_finish(z, &p, &z_len), 0);
    CU_ASSERT(plain_len > 64 * PAGE);
    CU_ASSERT(z_len < plain_len / 2);
    vmt_batch_writer_free(plain);
    vmt_batch_writer_free(z);
}

static void test_page_is_copied_before_encoding(void)
{
    vmt_batch_writer *w;
    vmt_batch_reader *r;
    uint8_t page[PAGE], out[PAGE];
    const uint8_t *p;
    size_t len;
    net_page(page, 1, 5);
    CU_ASSERT_EQUAL_FATAL(vmt_batch_writer_new(&w, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(vmt_batch_writer_add(w, 0, page), 0);
    uint8_t want[PAGE];
    memcpy(want, page, PAGE);
    memset(page, 0x77, PAGE); /* the "guest" writes after the add */
    CU_ASSERT_EQUAL(vmt_batch_writer_finish(w, &p, &len), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_batch_reader_new(&r, 1), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_batch_reader_parse(r, p, len), 0);
    CU_ASSERT_EQUAL(vmt_batch_reader_apply(r, vmt_batch_reader_rec(r, 0), out), 0);
    CU_ASSERT(memcmp(out, want, PAGE) == 0);
    vmt_batch_reader_free(r);
    vmt_batch_writer_free(w);
}

static void test_limits_and_options(void)
{
    vmt_batch_writer *w;
    vmt_batch_opts o;
    uint8_t page[PAGE] = {1};
    const uint8_t *p;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(vmt_batch_writer_new(&w, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(vmt_batch_writer_finish(w, &p, &len), VMT_EINVAL);
    for (uint64_t i = 0; i < VMT_BATCH_MAX_PAGES; i++)
        CU_ASSERT_EQUAL(vmt_batch_writer_add(w, i, page), 0);
    CU_ASSERT_EQUAL(vmt_batch_writer_add(w, 0, page), VMT_ERANGE);
    CU_ASSERT_EQUAL(vmt_batch_writer_finish(w, &p, &len), 0);
    CU_ASSERT(len <= VMT_BATCH_MAX_PAYLOAD);
    vmt_batch_writer_begin(w, 1);
    CU_ASSERT_EQUAL(vmt_batch_writer_count(w), 0);
    vmt_batch_writer_free(w);
    vmt_batch_opts_init(&o);
    o.page_codec = VMT_PAGE_DELTA;
    CU_ASSERT_EQUAL(vmt_batch_writer_new(&w, &o, NULL, NULL), VMT_EINVAL);
    vmt_batch_opts_init(&o);
    o.delta_max = PAGE;
    CU_ASSERT_EQUAL(vmt_batch_writer_new(&w, &o, NULL, NULL), VMT_EINVAL);
    vmt_batch_opts_init(&o);
    o.page_codec = VMT_PAGE_ZSTD;
    o.level = 30;
    CU_ASSERT_EQUAL(vmt_batch_writer_new(&w, &o, NULL, NULL), VMT_EINVAL);
}

static const vmt_test_case cases[] = {
    {"encoding chosen for each kind of page", test_encoding_choices},
    {"round trip: every page codec x batch codec, with/without cache",
     test_round_trip_every_codec},
    {"whole-batch compression shrinks text", test_whole_batch_compression_shrinks_text},
    {"a page is copied before it is encoded", test_page_is_copied_before_encoding},
    {"limits and options", test_limits_and_options},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("batch writer", cases, NULL, NULL);
}
