/*
 * XBZRLE deltas (xbzrle.c): exact round trips over thousands of random
 * mutations (single bytes, runs, word boundaries, page ends), the empty
 * delta of an unchanged page, the cap (worst case refused, caller falls
 * back), and crafted deltas refused without touching the page.
 */
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"
#include "net_internal.h"

#define PAGE VMT_NET_PAGE_SIZE

static void round_trip(const uint8_t *old, const uint8_t *cur, size_t cap, size_t *len_out)
{
    uint8_t delta[PAGE], page[PAGE];
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_xbzrle_encode(old, cur, delta, cap, &len), 0);
    CU_ASSERT(len <= cap);
    CU_ASSERT_EQUAL(vmt_xbzrle_check(delta, len), 0);
    memcpy(page, old, PAGE);
    CU_ASSERT_EQUAL(vmt_xbzrle_decode(delta, len, page), 0);
    CU_ASSERT(memcmp(page, cur, PAGE) == 0);
    if (len_out)
        *len_out = len;
}

static void test_unchanged_page_is_empty_delta(void)
{
    uint8_t a[PAGE];
    size_t len = 99;
    net_fill(a, PAGE, 1);
    round_trip(a, a, PAGE, &len);
    CU_ASSERT_EQUAL(len, 0);
}

static void test_single_byte_changes_everywhere(void)
{
    uint8_t a[PAGE], b[PAGE];
    net_fill(a, PAGE, 2);
    for (size_t i = 0; i < PAGE; i++) {
        size_t len;
        memcpy(b, a, PAGE);
        b[i] ^= 0x80;
        round_trip(a, b, PAGE, &len);
        CU_ASSERT(len <= 1 + 2 + 2 + 1); /* varints of the runs and the byte */
    }
}

static void test_random_mutations_round_trip(void)
{
    uint8_t a[PAGE], b[PAGE];
    uint64_t s = 12345;
    for (int iter = 0; iter < 3000; iter++) {
        net_page(a, (unsigned)(iter % 3) + 1, (uint64_t)iter);
        memcpy(b, a, PAGE);
        unsigned changes = (unsigned)(net_rand(&s) % 64);
        for (unsigned c = 0; c < changes; c++) {
            size_t at = net_rand(&s) % PAGE;
            size_t run = net_rand(&s) % 4 == 0 ? net_rand(&s) % 300 : 1;
            for (size_t j = at; j < VMT_MIN(at + run, (size_t)PAGE); j++)
                b[j] = (uint8_t)net_rand(&s);
        }
        if (iter % 10 == 0) /* the page edges */
            b[0] ^= 1, b[PAGE - 1] ^= 1;
        round_trip(a, b, PAGE, NULL);
    }
}

static void test_worst_case_exceeds_cap(void)
{
    uint8_t a[PAGE], b[PAGE], delta[PAGE];
    size_t len = 0;
    memset(a, 0, PAGE);
    memset(b, 0, PAGE);
    for (size_t i = 0; i < PAGE; i += 16)
        b[i] = 1; /* a change every other word: one pair per change */
    CU_ASSERT_EQUAL(vmt_xbzrle_encode(a, b, delta, 256, &len), VMT_ERANGE);
    CU_ASSERT_EQUAL(len, 0);
    /* A whole new page costs more than the page: refused at any cap < 4096+4. */
    net_fill(b, PAGE, 5);
    CU_ASSERT_EQUAL(vmt_xbzrle_encode(a, b, delta, PAGE - 1, &len), VMT_ERANGE);
    /* With room it still round-trips. */
    uint8_t big[PAGE + 16], page[PAGE];
    CU_ASSERT_EQUAL(vmt_xbzrle_encode(a, b, big, sizeof(big), &len), 0);
    memcpy(page, a, PAGE);
    CU_ASSERT_EQUAL(vmt_xbzrle_decode(big, len, page), 0);
    CU_ASSERT(memcmp(page, b, PAGE) == 0);
}

/* Crafted deltas are refused and leave the page as it was. */
static void refused(const uint8_t *d, size_t len)
{
    uint8_t page[PAGE], before[PAGE];
    net_fill(page, PAGE, 11);
    memcpy(before, page, PAGE);
    CU_ASSERT_EQUAL(vmt_xbzrle_check(d, len), VMT_ECORRUPT);
    CU_ASSERT_EQUAL(vmt_xbzrle_decode(d, len, page), VMT_ECORRUPT);
    CU_ASSERT(memcmp(page, before, PAGE) == 0);
}

static void test_crafted_deltas_refused(void)
{
    uint8_t d[16];
    size_t n;
    /* empty changed run */
    refused((const uint8_t[]){0x05, 0x00}, 2);
    /* runs past the page end: 4000 unchanged + 200 changed */
    n = vmt_varint_put(d, 4000);
    n += vmt_varint_put(d + n, 200);
    refused(d, n);
    /* unchanged run alone beyond the page */
    n = vmt_varint_put(d, 5000);
    n += vmt_varint_put(d + n, 1);
    d[n++] = 0;
    refused(d, n);
    /* truncated varint */
    refused((const uint8_t[]){0x80}, 1);
    /* changed bytes missing */
    refused((const uint8_t[]){0x00, 0x04, 1, 2}, 4);
    /* a second pair cut short */
    refused((const uint8_t[]){0x00, 0x01, 7, 0x02}, 4);
    /* a varint of 11 bytes */
    refused((const uint8_t[]){0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
            11);
    /* and a valid one for contrast */
    uint8_t page[PAGE] = {0};
    CU_ASSERT_EQUAL(vmt_xbzrle_decode((const uint8_t[]){0x02, 0x01, 9}, 3, page), 0);
    CU_ASSERT_EQUAL(page[2], 9);
}

static const vmt_test_case cases[] = {
    {"unchanged page is the empty delta", test_unchanged_page_is_empty_delta},
    {"single-byte changes at every offset", test_single_byte_changes_everywhere},
    {"3000 random mutations round-trip", test_random_mutations_round_trip},
    {"worst case exceeds the cap", test_worst_case_exceeds_cap},
    {"crafted deltas refused, page untouched", test_crafted_deltas_refused},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("xbzrle", cases, NULL, NULL);
}
