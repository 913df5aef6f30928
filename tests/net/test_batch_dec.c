/*
 * The page batch reader (batch_dec.c): batches built byte by byte from the
 * documented format (an encoder independent of batch_enc.c) parse to the
 * expected records; every truncation, every bad field (pfn beyond the
 * guest, unknown encoding, wrong length, bad delta, trailing bytes, lying
 * uncompressed size) is refused with no record exposed; applying a record
 * that does not decompress leaves the page untouched.
 */
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "net_fixture.h"
#include "net_internal.h"

#define PAGE VMT_NET_PAGE_SIZE

typedef struct bb {
    uint8_t b[4 * PAGE * 4];
    size_t n;
} bb;

static void put_u8(bb *x, uint8_t v)
{
    x->b[x->n++] = v;
}
static void put_var(bb *x, uint64_t v)
{
    x->n += vmt_varint_put(x->b + x->n, v);
}
static void put_rec(bb *x, uint64_t pfn, uint8_t enc, const void *data, size_t len)
{
    put_var(x, pfn);
    put_u8(x, enc);
    put_var(x, len);
    if (len)
        memcpy(x->b + x->n, data, len);
    x->n += len;
}

/* A plain batch of round 3: ZERO, RAW, DELTA, LZ4, ZSTD, REF. */
static void build_plain(bb *x, uint8_t *raw_page)
{
    uint8_t delta[] = {0x02, 0x01, 0xaa}; /* 2 unchanged, then 0xaa */
    uint8_t lz[PAGE], zs[PAGE], id[16];
    uint8_t text[PAGE];
    net_page(raw_page, 2, 1);
    net_page(text, 1, 2);
    int lzn = LZ4_compress_default((const char *)text, (char *)lz, PAGE, PAGE);
    size_t zsn = ZSTD_compress(zs, PAGE, text, PAGE, 1);
    memset(id, 0x42, sizeof(id));
    x->n = 0;
    put_u8(x, 0);
    put_var(x, 3);
    put_var(x, 6);
    put_rec(x, 0, VMT_PAGE_ZERO, NULL, 0);
    put_rec(x, 1, VMT_PAGE_RAW, raw_page, PAGE);
    put_rec(x, 2, VMT_PAGE_DELTA, delta, sizeof(delta));
    put_rec(x, 300, VMT_PAGE_LZ4, lz, (size_t)lzn);
    put_rec(x, 4, VMT_PAGE_ZSTD, zs, zsn);
    put_rec(x, 5, VMT_PAGE_REF, id, sizeof(id));
}

static vmt_batch_reader *reader(uint64_t npages)
{
    vmt_batch_reader *r = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_batch_reader_new(&r, npages), 0);
    return r;
}

static void test_documented_format_parses(void)
{
    bb x;
    uint8_t raw[PAGE], text[PAGE], page[PAGE];
    build_plain(&x, raw);
    net_page(text, 1, 2);
    vmt_batch_reader *r = reader(1000);
    CU_ASSERT_EQUAL_FATAL(vmt_batch_reader_parse(r, x.b, x.n), 0);
    CU_ASSERT_EQUAL(vmt_batch_reader_round(r), 3);
    CU_ASSERT_EQUAL_FATAL(vmt_batch_reader_count(r), 6);
    const vmt_page_rec *rec = vmt_batch_reader_rec(r, 0);
    memset(page, 1, PAGE);
    CU_ASSERT_EQUAL(vmt_batch_reader_apply(r, rec, page), 0);
    CU_ASSERT_EQUAL(page[0] | page[PAGE - 1], 0);
    CU_ASSERT_EQUAL(vmt_batch_reader_apply(r, vmt_batch_reader_rec(r, 1), page), 0);
    CU_ASSERT(memcmp(page, raw, PAGE) == 0);
    memset(page, 0, PAGE);
    CU_ASSERT_EQUAL(vmt_batch_reader_apply(r, vmt_batch_reader_rec(r, 2), page), 0);
    CU_ASSERT_EQUAL(page[2], 0xaa);
    CU_ASSERT_EQUAL(page[1] | page[3], 0);
    rec = vmt_batch_reader_rec(r, 3);
    CU_ASSERT_EQUAL(rec->pfn, 300);
    CU_ASSERT_EQUAL(vmt_batch_reader_apply(r, rec, page), 0);
    CU_ASSERT(memcmp(page, text, PAGE) == 0);
    memset(page, 0, PAGE);
    CU_ASSERT_EQUAL(vmt_batch_reader_apply(r, vmt_batch_reader_rec(r, 4), page), 0);
    CU_ASSERT(memcmp(page, text, PAGE) == 0);
    rec = vmt_batch_reader_rec(r, 5);
    CU_ASSERT_EQUAL(rec->enc, VMT_PAGE_REF);
    CU_ASSERT_EQUAL(rec->len, 16);
    CU_ASSERT_EQUAL(rec->data[0], 0x42);
    CU_ASSERT_EQUAL(vmt_batch_reader_apply(r, rec, page), VMT_EINVAL);
    CU_ASSERT_PTR_NULL(vmt_batch_reader_rec(r, 6));
    vmt_batch_reader_free(r);
}

static void test_compressed_batches_parse(void)
{
    bb x, y;
    uint8_t raw[PAGE];
    build_plain(&x, raw);
    for (unsigned codec = 1; codec <= 2; codec++) {
        size_t hdr = 1 + 1 + 1; /* flags, round 3, count 6 */
        size_t body = x.n - hdr;
        y.n = 0;
        put_u8(&y, (uint8_t)codec);
        put_var(&y, 3);
        put_var(&y, 6);
        put_var(&y, body);
        size_t c = codec == 1 ? (size_t)LZ4_compress_default((const char *)x.b + hdr,
                                                             (char *)y.b + y.n, (int)body,
                                                             (int)(sizeof(y.b) - y.n))
                              : ZSTD_compress(y.b + y.n, sizeof(y.b) - y.n, x.b + hdr, body, 3);
        y.n += c;
        vmt_batch_reader *r = reader(1000);
        CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, y.b, y.n), 0);
        CU_ASSERT_EQUAL(vmt_batch_reader_count(r), 6);
        CU_ASSERT_EQUAL(vmt_batch_reader_rec(r, 3)->pfn, 300);
        /* The declared size lies: refused. */
        bb z = y;
        z.b[3] = (uint8_t)(z.b[3] + 1);
        CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, z.b, z.n), VMT_ECORRUPT);
        CU_ASSERT_EQUAL(vmt_batch_reader_count(r), 0);
        /* A body that is not what the codec made. */
        z = y;
        memset(z.b + 6, 0x5a, z.n - 6);
        CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, z.b, z.n), VMT_ECORRUPT);
        vmt_batch_reader_free(r);
    }
}

static void test_every_truncation_refused(void)
{
    bb x;
    uint8_t raw[PAGE];
    build_plain(&x, raw);
    vmt_batch_reader *r = reader(1000);
    for (size_t n = 0; n < x.n; n++) {
        CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, x.b, n), VMT_ECORRUPT);
        CU_ASSERT_EQUAL(vmt_batch_reader_count(r), 0);
    }
    /* and trailing bytes */
    x.b[x.n++] = 0;
    CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, x.b, x.n), VMT_ECORRUPT);
    vmt_batch_reader_free(r);
}

/* One record in a plain batch; parse must fail. */
static void bad_record(uint64_t npages, uint64_t pfn, uint8_t enc, const void *data, size_t len,
                       const char *text)
{
    bb x = {.n = 0};
    put_u8(&x, 0);
    put_var(&x, 0);
    put_var(&x, 1);
    put_rec(&x, pfn, enc, data, len);
    vmt_batch_reader *r = reader(npages);
    CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, x.b, x.n), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), text));
    CU_ASSERT_EQUAL(vmt_batch_reader_count(r), 0);
    vmt_batch_reader_free(r);
}

static void test_bad_records_refused(void)
{
    uint8_t buf[PAGE + 1] = {0};
    bad_record(10, 10, VMT_PAGE_ZERO, NULL, 0, "pfn 10 beyond the 10 pages");
    bad_record(10, UINT64_MAX, VMT_PAGE_ZERO, NULL, 0, "beyond");
    bad_record(10, 1, 6, NULL, 0, "unknown encoding 6");
    bad_record(10, 1, VMT_PAGE_ZERO, buf, 1, "zero page of 1 bytes");
    bad_record(10, 1, VMT_PAGE_REF, buf, 15, "ref page of 15 bytes");
    bad_record(10, 1, VMT_PAGE_RAW, buf, PAGE - 1, "raw page of 4095 bytes");
    bad_record(10, 1, VMT_PAGE_RAW, buf, PAGE + 1, "raw page of 4097 bytes");
    bad_record(10, 1, VMT_PAGE_LZ4, buf, 0, "lz4 page of 0 bytes");
    bad_record(10, 1, VMT_PAGE_ZSTD, buf, PAGE, "zstd page of 4096 bytes");
    bad_record(10, 1, VMT_PAGE_DELTA, (const uint8_t[]){0x05, 0x00}, 2, "empty changed run");
}

static void test_bad_headers_refused(void)
{
    vmt_batch_reader *r = reader(10);
    const uint8_t zero_count[] = {0, 0, 0, 0, 0, 0};
    CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, zero_count, sizeof(zero_count)), VMT_ECORRUPT);
    bb x = {.n = 0};
    put_u8(&x, 0);
    put_var(&x, 0);
    put_var(&x, VMT_BATCH_MAX_PAGES + 1);
    for (int i = 0; i < 8; i++)
        put_u8(&x, 0);
    CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, x.b, x.n), VMT_ECORRUPT);
    x.n = 0;
    put_u8(&x, 0x04); /* unknown flag */
    put_var(&x, 0);
    put_var(&x, 1);
    put_rec(&x, 0, VMT_PAGE_ZERO, NULL, 0);
    CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, x.b, x.n), VMT_ECORRUPT);
    x.b[0] = 3; /* codec 3 */
    CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, x.b, x.n), VMT_ECORRUPT);
    x.n = 0;
    put_u8(&x, 0);
    put_var(&x, (uint64_t)UINT32_MAX + 1); /* round beyond 32 bits */
    put_var(&x, 1);
    put_rec(&x, 0, VMT_PAGE_ZERO, NULL, 0);
    CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, x.b, x.n), VMT_ECORRUPT);
    /* compressed: a declared size no count of records can have */
    x.n = 0;
    put_u8(&x, VMT_BATCH_ZSTD);
    put_var(&x, 0);
    put_var(&x, 1);
    put_var(&x, 1u << 30);
    put_u8(&x, 0);
    CU_ASSERT_EQUAL(vmt_batch_reader_parse(r, x.b, x.n), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "cannot hold"));
    vmt_batch_reader_free(r);
    CU_ASSERT_EQUAL(vmt_batch_reader_new(&r, 0), VMT_EINVAL);
}

static void test_undecompressible_page_left_untouched(void)
{
    uint8_t junk[100], page[PAGE], before[PAGE];
    memset(junk, 0xf0, sizeof(junk));
    bb x = {.n = 0};
    put_u8(&x, 0);
    put_var(&x, 0);
    put_var(&x, 2);
    put_rec(&x, 0, VMT_PAGE_LZ4, junk, sizeof(junk));
    put_rec(&x, 1, VMT_PAGE_ZSTD, junk, sizeof(junk));
    vmt_batch_reader *r = reader(2);
    CU_ASSERT_EQUAL_FATAL(vmt_batch_reader_parse(r, x.b, x.n), 0);
    net_fill(page, PAGE, 1);
    memcpy(before, page, PAGE);
    for (size_t i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(vmt_batch_reader_apply(r, vmt_batch_reader_rec(r, i), page),
                        VMT_ECORRUPT);
        CU_ASSERT(memcmp(page, before, PAGE) == 0);
    }
    vmt_batch_reader_free(r);
}

static const vmt_test_case cases[] = {
    {"the documented format parses and applies", test_documented_format_parses},
    {"LZ4 and zstd whole-batch forms parse; lies refused", test_compressed_batches_parse},
    {"every truncation and trailing bytes refused", test_every_truncation_refused},
    {"bad records refused by name", test_bad_records_refused},
    {"bad headers refused", test_bad_headers_refused},
    {"an undecompressible page leaves the page untouched",
     test_undecompressible_page_left_untouched},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("batch reader", cases, NULL, NULL);
}
