/* Record, marker and pack-header layouts; ids; the zero-page test. */
#include <stdlib.h>
#include <string.h>

#include "dd_test.h"
#include "record.h"

static void test_zero_id_is_hash_of_zero_page(void)
{
    static uint8_t zero[VMT_STORE_PAGE_SIZE];
    vmt_id id, z = vmt_id_zero_page();
    vmt_id_of(zero, sizeof(zero), &id);
    CU_ASSERT(vmt_id_equal(&id, &z));
    CU_ASSERT(vmt_id_is_zero_page(&id));
    zero[4095] = 1;
    vmt_id_of(zero, sizeof(zero), &id);
    CU_ASSERT(!vmt_id_is_zero_page(&id));
}

static void test_id_hex_round_trip_and_rejects(void)
{
    vmt_id id, back;
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_of("abc", 3, &id);
    vmt_id_to_hex(&id, hex);
    CU_ASSERT_EQUAL(strlen(hex), 32);
    DDT_OK(vmt_id_from_hex(hex, &back));
    CU_ASSERT(vmt_id_equal(&id, &back));
    /* xxh128sum of "abc" (canonical byte order). */
    CU_ASSERT_STRING_EQUAL(hex, "06b05ab6733a618578af5f94892f3950");
    CU_ASSERT_EQUAL(vmt_id_from_hex("06b05ab6733a618578af5f94892f395", &back), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_id_from_hex("06b05ab6733a618578af5f94892f39500", &back), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_id_from_hex("zz", &back), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_id_from_hex(NULL, &back), VMT_EINVAL);
}

static void test_codec_names(void)
{
    vmt_codec c;
    for (int i = 0; i < VMT_CODEC_COUNT; i++) {
        DDT_OK(vmt_codec_parse(vmt_codec_name(i), &c));
        CU_ASSERT_EQUAL((int)c, i);
    }
    CU_ASSERT_EQUAL(vmt_codec_parse("gzip", &c), VMT_EINVAL);
}

static void make_record(uint8_t *rec, dd_rec_hdr *h)
{
    memset(h, 0, sizeof(*h));
    h->type = VMT_OBJ_BLOB;
    h->codec = VMT_CODEC_RAW;
    h->raw_len = h->stored_len = 100;
    memset(rec + DD_REC_HDR, 7, 100);
    vmt_id_of(rec + DD_REC_HDR, 100, &h->id);
    h->payload_sum = dd_sum32(rec + DD_REC_HDR, 100);
    dd_rec_encode(rec, h);
}

static void test_record_round_trip(void)
{
    uint8_t rec[DD_REC_HDR + 100];
    dd_rec_hdr h, d;
    make_record(rec, &h);
    DDT_OK(dd_rec_decode(rec, sizeof(rec), &d));
    CU_ASSERT(vmt_id_equal(&h.id, &d.id));
    CU_ASSERT_EQUAL(d.raw_len, 100);
    CU_ASSERT_EQUAL(d.type, VMT_OBJ_BLOB);
    CU_ASSERT_EQUAL(dd_rec_len(&d), sizeof(rec));
}

static void test_record_every_header_bit_flip_is_caught(void)
{
    uint8_t rec[DD_REC_HDR + 100];
    dd_rec_hdr h, d;
    make_record(rec, &h);
    for (size_t bit = 0; bit < DD_REC_HDR * 8; bit++) {
        rec[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        CU_ASSERT_EQUAL(dd_rec_decode(rec, sizeof(rec), &d), VMT_ECORRUPT);
        rec[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    CU_ASSERT_EQUAL(dd_rec_decode(rec, DD_REC_HDR - 1, &d), VMT_ECORRUPT);
}

static void test_record_rejects_impossible_lengths(void)
{
    uint8_t rec[DD_REC_HDR + 100];
    dd_rec_hdr h, d;
    make_record(rec, &h);
    h.stored_len = 99; /* raw must store raw_len bytes */
    dd_rec_encode(rec, &h);
    CU_ASSERT_EQUAL(dd_rec_decode(rec, sizeof(rec), &d), VMT_ECORRUPT);
    h.codec = VMT_CODEC_LZ4;
    h.raw_len = VMT_STORE_OBJECT_MAX + 1;
    dd_rec_encode(rec, &h);
    CU_ASSERT_EQUAL(dd_rec_decode(rec, sizeof(rec), &d), VMT_ECORRUPT);
    h.raw_len = 100;
    h.stored_len = 100000; /* beyond any codec's bound for 100 bytes */
    dd_rec_encode(rec, &h);
    CU_ASSERT_EQUAL(dd_rec_decode(rec, sizeof(rec), &d), VMT_ECORRUPT);
    h.stored_len = 50;
    h.codec = VMT_CODEC_ZSTD_DICT; /* dict codec without a version */
    dd_rec_encode(rec, &h);
    CU_ASSERT_EQUAL(dd_rec_decode(rec, sizeof(rec), &d), VMT_ECORRUPT);
    h.codec = 9;
    dd_rec_encode(rec, &h);
    CU_ASSERT_EQUAL(dd_rec_decode(rec, sizeof(rec), &d), VMT_ECORRUPT);
}

static void test_marker_round_trip(void)
{
    uint8_t rec[DD_REC_HDR + DD_MARKER_LEN];
    dd_marker m = {.gen = 42, .c = {1, 2, 3, 4, 5, 6}}, back;
    dd_rec_hdr h;
    dd_marker_encode(rec, &m);
    DDT_OK(dd_rec_decode(rec, sizeof(rec), &h));
    CU_ASSERT_EQUAL(h.type, DD_REC_COMMIT);
    CU_ASSERT_EQUAL(dd_sum32(rec + DD_REC_HDR, DD_MARKER_LEN), h.payload_sum);
    DDT_OK(dd_marker_decode(&h, rec + DD_REC_HDR, &back));
    CU_ASSERT_EQUAL(back.gen, 42);
    CU_ASSERT_EQUAL(back.c.new_bytes, 6);
}

static void test_pack_header_checks(void)
{
    uint8_t hdr[DD_PACK_HDR], uuid[16] = {1, 2, 3}, other[16] = {9};
    dd_pack_hdr_encode(hdr, 7, uuid);
    DDT_OK(dd_pack_hdr_check(hdr, sizeof(hdr), 7, uuid));
    CU_ASSERT_EQUAL(dd_pack_hdr_check(hdr, sizeof(hdr), 8, uuid), VMT_ECORRUPT);
    CU_ASSERT_EQUAL(dd_pack_hdr_check(hdr, sizeof(hdr), 7, other), VMT_ECORRUPT);
    CU_ASSERT_EQUAL(dd_pack_hdr_check(hdr, 10, 7, uuid), VMT_ECORRUPT);
    hdr[3] ^= 1;
    CU_ASSERT_EQUAL(dd_pack_hdr_check(hdr, sizeof(hdr), 7, uuid), VMT_ECORRUPT);
}

static void test_zero_page_detection(void)
{
    uint64_t page[512] = {0};
    CU_ASSERT(dd_is_zero_page(page));
    for (size_t i = 0; i < 4096; i += 511) {
        ((uint8_t *)page)[i] = 0x80;
        CU_ASSERT(!dd_is_zero_page(page));
        ((uint8_t *)page)[i] = 0;
    }
    ((uint8_t *)page)[4095] = 1;
    CU_ASSERT(!dd_is_zero_page(page));
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"zero id is the hash of the zero page", test_zero_id_is_hash_of_zero_page},
        {"id hex round trip and rejects", test_id_hex_round_trip_and_rejects},
        {"codec names", test_codec_names},
        {"record round trip", test_record_round_trip},
        {"every header bit flip is caught", test_record_every_header_bit_flip_is_caught},
        {"impossible lengths rejected", test_record_rejects_impossible_lengths},
        {"marker round trip", test_marker_round_trip},
        {"pack header checks", test_pack_header_checks},
        {"zero page detection", test_zero_page_detection},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/record", cases, NULL, NULL);
}
