/*
 * The destination's id set (haveset.c): a million ids encoded compactly
 * (bytes per id printed and bounded), every id found after decoding, the
 * false-positive rate measured against its documented bound, several
 * chunks, the empty set, and crafted chunks refused with the set unchanged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"
#include "net_internal.h"

/* Collects emitted chunks (copies their data). */
typedef struct chunks {
    vmt_wire_have_set c[16];
    size_t n, bytes;
} chunks;

static int collect(void *ctx, const vmt_wire_have_set *chunk)
{
    chunks *cs = ctx;
    if (cs->n == VMT_ARRAY_SIZE(cs->c))
        return VMT_ERANGE;
    cs->c[cs->n] = *chunk;
    cs->c[cs->n].data = malloc(chunk->len + 1);
    memcpy(cs->c[cs->n].data, chunk->data, chunk->len);
    cs->bytes += chunk->len;
    cs->n++;
    return 0;
}

static void chunks_free(chunks *cs)
{
    for (size_t i = 0; i < cs->n; i++)
        free(cs->c[i].data);
    memset(cs, 0, sizeof(*cs));
}

static void random_ids(vmt_id *ids, size_t n, uint64_t seed)
{
    net_fill(ids, n * sizeof(*ids), seed);
}

static vmt_haveset *decode_all(chunks *cs)
{
    vmt_haveset *h = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_haveset_new(&h, 1u << 24), 0);
    for (size_t i = 0; i < cs->n; i++)
        CU_ASSERT_EQUAL(vmt_haveset_add_chunk(h, &cs->c[i]), 0);
    CU_ASSERT_TRUE(vmt_haveset_complete(h));
    return h;
}

static void test_million_ids_compact_and_exact(void)
{
    enum { N = 1000000 };
    vmt_id *ids = malloc(N * sizeof(*ids)), *other = malloc(N * sizeof(*other));
    chunks cs = {0};
    CU_ASSERT_FATAL(ids && other);
    random_ids(ids, N, 1);
    random_ids(other, N, 2);
    uint64_t t0 = vmt_now_ns();
    CU_ASSERT_EQUAL_FATAL(vmt_haveset_encode(ids, N, 0, collect, &cs), 0);
    double enc_ms = (double)(vmt_now_ns() - t0) / 1e6;
    double per_id = (double)cs.bytes / N;
    t0 = vmt_now_ns();
    vmt_haveset *h = decode_all(&cs);
    double dec_ms = (double)(vmt_now_ns() - t0) / 1e6;
    printf("\n    have-set: %d ids in %zu chunks, %zu bytes = %.3f bytes/id "
           "(16 raw); encode %.0f ms, decode %.0f ms\n",
           N, cs.n, cs.bytes, per_id, enc_ms, dec_ms);
    CU_ASSERT(per_id < 4.6);
    CU_ASSERT(cs.n >= 2); /* 4.2 MB does not fit one 4 MiB chunk */
    CU_ASSERT_EQUAL(vmt_haveset_count(h), N);
    size_t missing = 0, fp = 0;
    for (size_t i = 0; i < N; i++)
        missing += !vmt_haveset_contains(h, &ids[i]);
    for (size_t i = 0; i < N; i++)
        fp += vmt_haveset_contains(h, &other[i]);
    printf("    false positives among %d other ids: %zu (bound 2^-32 each)\n", N, fp);
    CU_ASSERT_EQUAL(missing, 0);
    CU_ASSERT(fp <= 2);
    vmt_haveset_free(h);
    chunks_free(&cs);
    free(ids);
    free(other);
}

static void test_false_positive_rate_matches_bound(void)
{
    enum { N = 20000, PROBES = 400000 };
    vmt_id *ids = malloc(N * sizeof(*ids)), probe;
    chunks cs = {0};
    random_ids(ids, N, 3);
    CU_ASSERT_EQUAL_FATAL(vmt_haveset_encode(ids, N, 8, collect, &cs), 0);
    vmt_haveset *h = decode_all(&cs);
    size_t fp = 0;
    for (size_t i = 0; i < PROBES; i++) {
        random_ids(&probe, 1, 1000000 + i);
        fp += vmt_haveset_contains(h, &probe);
    }
    double rate = (double)fp / PROBES;
    printf("\n    fp_bits 8: %.2f bytes/id, false-positive rate %.5f (bound %.5f)\n",
           (double)cs.bytes / N, rate, 1.0 / 256);
    CU_ASSERT(rate <= 1.0 / 256 * 1.3);
    CU_ASSERT(rate >= 1.0 / 256 / 4); /* the bound is close, not vacuous */
    for (size_t i = 0; i < N; i++)
        CU_ASSERT_TRUE(vmt_haveset_contains(h, &ids[i]));
    vmt_haveset_free(h);
    chunks_free(&cs);
    free(ids);
}

static void test_small_and_empty_sets(void)
{
    vmt_id ids[3];
    chunks cs = {0};
    CU_ASSERT_EQUAL(vmt_haveset_encode(NULL, 0, 0, collect, &cs), 0);
    CU_ASSERT_EQUAL(cs.n, 1);
    CU_ASSERT_TRUE(cs.c[0].last);
    vmt_haveset *h = decode_all(&cs);
    random_ids(ids, 3, 4);
    CU_ASSERT_FALSE(vmt_haveset_contains(h, &ids[0]));
    vmt_haveset_free(h);
    chunks_free(&cs);
    /* duplicates and an all-zero id */
    memset(&ids[0], 0, sizeof(ids[0]));
    ids[2] = ids[1];
    CU_ASSERT_EQUAL(vmt_haveset_encode(ids, 3, 0, collect, &cs), 0);
    h = decode_all(&cs);
    CU_ASSERT_EQUAL(vmt_haveset_count(h), 2);
    CU_ASSERT_TRUE(vmt_haveset_contains(h, &ids[0]));
    CU_ASSERT_TRUE(vmt_haveset_contains(h, &ids[1]));
    vmt_haveset_free(h);
    chunks_free(&cs);
    CU_ASSERT_EQUAL(vmt_haveset_encode(ids, 3, 4, collect, &cs), VMT_EINVAL);
}

/* A chunk refused leaves the set as it was: still incomplete, same count. */
static void refuse(vmt_haveset *h, const vmt_wire_have_set *c, int want)
{
    uint64_t n = vmt_haveset_count(h);
    bool done = vmt_haveset_complete(h);
    CU_ASSERT_EQUAL(vmt_haveset_add_chunk(h, c), want);
    CU_ASSERT_EQUAL(vmt_haveset_count(h), n);
    CU_ASSERT_EQUAL(vmt_haveset_complete(h), done);
}

static void test_crafted_chunks_refused(void)
{
    enum { N = 1000 };
    vmt_id ids[N];
    chunks cs = {0};
    random_ids(ids, N, 5);
    CU_ASSERT_EQUAL_FATAL(vmt_haveset_encode(ids, N, 0, collect, &cs), 0);
    CU_ASSERT_EQUAL_FATAL(cs.n, 1);
    vmt_wire_have_set c = cs.c[0];
    vmt_haveset *h;
    CU_ASSERT_EQUAL_FATAL(vmt_haveset_new(&h, N - 1), 0);
    refuse(h, &c, VMT_ERANGE); /* more ids than the receiver accepts */
    vmt_haveset_free(h);
    CU_ASSERT_EQUAL_FATAL(vmt_haveset_new(&h, N), 0);
    vmt_wire_have_set bad = c;
    bad.first = 1;
    refuse(h, &bad, VMT_ECORRUPT);
    bad = c;
    bad.count = c.count + 1;
    refuse(h, &bad, VMT_ECORRUPT);
    bad = c;
    bad.len = c.len - 1; /* truncated stream */
    refuse(h, &bad, VMT_ECORRUPT);
    bad = c;
    bad.count = c.count - 1; /* stray bits after the values */
    bad.total = bad.count;
    refuse(h, &bad, VMT_ECORRUPT);
    bad = c;
    bad.rice_bits = c.prefix_bits;
    refuse(h, &bad, VMT_ECORRUPT);
    bad = c;
    bad.last = false;
    bad.count = 0;
    bad.len = 0;
    CU_ASSERT_EQUAL(vmt_haveset_add_chunk(h, &bad), 0); /* an empty chunk is fine */
    bad = c;
    bad.prefix_bits = c.prefix_bits - 1; /* parameters changed */
    bad.rice_bits = c.rice_bits - 1;
    refuse(h, &bad, VMT_ECORRUPT);
    /* a unary run that never ends */
    uint8_t ones[64];
    memset(ones, 0xff, sizeof(ones));
    bad = c;
    bad.data = ones;
    bad.len = sizeof(ones);
    refuse(h, &bad, VMT_ECORRUPT);
    CU_ASSERT_EQUAL(vmt_haveset_add_chunk(h, &c), 0);
    CU_ASSERT_TRUE(vmt_haveset_complete(h));
    refuse(h, &c, VMT_EPROTO); /* after the last chunk */
    vmt_haveset_free(h);
    chunks_free(&cs);
}

static void test_flipped_bits_never_crash(void)
{
    enum { N = 300 };
    vmt_id ids[N];
    chunks cs = {0};
    random_ids(ids, N, 6);
    CU_ASSERT_EQUAL_FATAL(vmt_haveset_encode(ids, N, 0, collect, &cs), 0);
    size_t accepted = 0;
    for (size_t i = 0; i < cs.c[0].len * 8; i++) {
        vmt_haveset *h;
        CU_ASSERT_EQUAL_FATAL(vmt_haveset_new(&h, N), 0);
        cs.c[0].data[i / 8] ^= (uint8_t)(0x80 >> (i % 8));
        int rc = vmt_haveset_add_chunk(h, &cs.c[0]);
        CU_ASSERT(rc == 0 || rc == VMT_ECORRUPT);
        accepted += rc == 0;
        cs.c[0].data[i / 8] ^= (uint8_t)(0x80 >> (i % 8));
        vmt_haveset_free(h);
    }
    /* A flipped remainder bit gives another valid set; the frame checksum,
     * not this decoder, catches corruption in transit. */
    CU_ASSERT(accepted < cs.c[0].len * 8);
    chunks_free(&cs);
}

static const vmt_test_case cases[] = {
    {"a million ids: compact and exact", test_million_ids_compact_and_exact},
    {"false-positive rate matches its bound", test_false_positive_rate_matches_bound},
    {"small, duplicate and empty sets", test_small_and_empty_sets},
    {"crafted chunks refused, set unchanged", test_crafted_chunks_refused},
    {"flipped bits never crash the decoder", test_flipped_bits_never_crash},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("have-set", cases, NULL, NULL);
}
