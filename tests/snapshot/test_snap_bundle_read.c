/*
 * snapshot/snap_bundle_read.c: the bundle decoder, driven through
 * vmt_snap_bundle_check with bundles written byte by byte from the format
 * in docs/bundle-format.md (snap_fixture's independent writer).  A minimal
 * good bundle is accepted; each test then breaks one rule and checks the
 * verdict: damage is VMT_ECORRUPT, a newer major version or an unknown
 * mandatory feature VMT_EUNSUPPORTED, a newer minor version and optional
 * records are accepted.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "snap_fixture.h"

static const char blob[] = "a state blob, stand-in bytes";

/* A snapshot record naming `state` and `root` as its children. */
static uint8_t *record_bytes(const vmt_id *root, const vmt_id *state, size_t *len)
{
    vmt_snap_record r;
    uint8_t *buf = NULL;
    memset(&r, 0, sizeof(r));
    r.map_root = *root;
    r.state = *state;
    r.mem_size = 4096;
    r.vcpus = 1;
    strcpy(r.message, "crafted");
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_encode(&r, &buf, len), 0);
    return buf;
}

/* header, a blob, a snapshot record (its map root not included), trailer
 * unless `open_end`. */
static void good_bundle(fx_bundle *b, unsigned major, unsigned minor, bool open_end)
{
    size_t len;
    vmt_id root = fx_fake_id(1);
    memset(b, 0, sizeof(*b));
    fx_bundle_header(b, major, minor, 0);
    vmt_id state = fx_bundle_object(b, VMT_OBJ_BLOB, blob, sizeof(blob));
    uint8_t *rec = record_bytes(&root, &state, &len);
    fx_bundle_object(b, VMT_OBJ_SNAPSHOT, rec, len);
    free(rec);
    if (!open_end)
        fx_bundle_trailer(b);
}

static int check(const fx_bundle *b)
{
    vmt_snap_bundle_info info;
    return vmt_snap_bundle_check(b->p, b->n, &info);
}

static void test_minimal_bundle_is_accepted(void)
{
    fx_bundle b;
    vmt_snap_bundle_info info;

    good_bundle(&b, 1, 0, false);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_bundle_check(b.p, b.n, &info), 0);
    CU_ASSERT_EQUAL(info.major, 1);
    CU_ASSERT_EQUAL(info.minor, 0);
    CU_ASSERT_EQUAL(info.objects, 2);
    CU_ASSERT_EQUAL(info.snapshots, 1);
    CU_ASSERT_EQUAL(info.bytes, b.n);
    CU_ASSERT_TRUE(vmt_id_equal(&info.last, &b.last));
    fx_bundle_free(&b);
}

static void test_newer_minor_and_optional_records_are_accepted(void)
{
    fx_bundle b;
    size_t len;
    vmt_id root = fx_fake_id(1), none = fx_fake_id(2);

    memset(&b, 0, sizeof(b));
    fx_bundle_header(&b, 1, 9, 0);
    fx_bundle_record(&b, 0x80, 0, &none, "future", 6, 6); /* optional: skipped */
    vmt_id state = fx_bundle_object(&b, VMT_OBJ_BLOB, blob, sizeof(blob));
    uint8_t *rec = record_bytes(&root, &state, &len);
    fx_bundle_object(&b, VMT_OBJ_SNAPSHOT, rec, len);
    free(rec);
    fx_bundle_trailer(&b);
    CU_ASSERT_EQUAL(check(&b), 0);
    fx_bundle_free(&b);
}

static void test_newer_major_or_unknown_feature_is_unsupported(void)
{
    fx_bundle b;

    good_bundle(&b, 2, 0, false);
    CU_ASSERT_EQUAL(check(&b), VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "2.0 is newer"));
    fx_bundle_free(&b);
    memset(&b, 0, sizeof(b));
    fx_bundle_header(&b, 1, 0, 1u << 3);
    CU_ASSERT_EQUAL(check(&b), VMT_EUNSUPPORTED);
    fx_bundle_free(&b);
}

static void test_damaged_records_are_corrupt(void)
{
    fx_bundle b;
    vmt_id wrong = fx_fake_id(9);

    /* An id that is not the hash of the content. */
    memset(&b, 0, sizeof(b));
    fx_bundle_header(&b, 1, 0, 0);
    fx_bundle_record(&b, VMT_OBJ_BLOB, 0, &wrong, blob, sizeof(blob), sizeof(blob));
    fx_bundle_trailer(&b);
    CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "does not hash"));
    fx_bundle_free(&b);
    /* A record checksum that does not match (payload changed after). */
    good_bundle(&b, 1, 0, false);
    b.p[32 + 40 + 3] ^= 1;
    CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "checksum"));
    fx_bundle_free(&b);
    /* Unknown kind, unknown codec. */
    static const unsigned kinds[][2] = {{0, 0}, {5, 0}, {0x7f, 0}, {VMT_OBJ_BLOB, 7}};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(kinds); i++) {
        memset(&b, 0, sizeof(b));
        fx_bundle_header(&b, 1, 0, 0);
        vmt_id id;
        vmt_id_of(blob, sizeof(blob), &id);
        fx_bundle_record(&b, kinds[i][0], kinds[i][1], &id, blob, sizeof(blob), sizeof(blob));
        CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
        fx_bundle_free(&b);
    }
}

static void test_lengths_beyond_caps_are_corrupt_before_allocating(void)
{
    fx_bundle b;
    vmt_id id = fx_fake_id(3);
    static const uint32_t lens[][2] = {
        {VMT_STORE_OBJECT_MAX + 1, VMT_STORE_OBJECT_MAX + 1}, /* raw too big */
        {100, 200},                                           /* stored > raw */
        {0, 0},                                               /* empty */
        {1u << 20, 1u << 20},                                 /* beyond the input */
        {0xffffffffu, 16},                                    /* lz4 claiming 4 GiB */
    };
    for (size_t i = 0; i < VMT_ARRAY_SIZE(lens); i++) {
        memset(&b, 0, sizeof(b));
        fx_bundle_header(&b, 1, 0, 0);
        fx_bundle_record(&b, VMT_OBJ_BLOB, i == 4 ? 1 : 0, &id, blob, 16, lens[i][0]);
        /* Patch the stored length to the claimed one. */
        uint32_t sl = lens[i][1];
        memcpy(b.p + 32 + 8, &sl, 4);
        fx_bundle_trailer(&b);
        CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
        fx_bundle_free(&b);
    }
    /* A raw record whose stored length differs from its length. */
    memset(&b, 0, sizeof(b));
    fx_bundle_header(&b, 1, 0, 0);
    fx_bundle_record(&b, VMT_OBJ_BLOB, 0, &id, blob, 16, 20);
    CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
    fx_bundle_free(&b);
}

static void test_bad_trailers_are_corrupt(void)
{
    fx_bundle b;

    good_bundle(&b, 1, 0, true); /* no trailer at all */
    CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "truncated"));
    b.objects++; /* counts that do not match */
    fx_bundle_trailer(&b);
    CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
    fx_bundle_free(&b);
    good_bundle(&b, 1, 0, true);
    b.last = fx_fake_id(4); /* names another snapshot */
    fx_bundle_trailer(&b);
    CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
    fx_bundle_free(&b);
    good_bundle(&b, 1, 0, false);
    fx_bundle_put(&b, "x", 1); /* bytes after the trailer */
    CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
    b.n--;
    b.p[b.n - 20] ^= 0x40; /* the file checksum */
    CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
    fx_bundle_free(&b);
    CU_ASSERT_EQUAL(vmt_snap_bundle_check("", 0, NULL), VMT_ECORRUPT);
    CU_ASSERT_EQUAL(vmt_snap_bundle_check("VMTBUNDX and more bytes than a header needs", 40, NULL),
                    VMT_ECORRUPT);
}

static void test_zero_page_and_bad_snapshot_records_are_corrupt(void)
{
    fx_bundle b;
    static const uint8_t zero[4096];

    memset(&b, 0, sizeof(b));
    fx_bundle_header(&b, 1, 0, 0);
    fx_bundle_object(&b, VMT_OBJ_PAGE, zero, sizeof(zero));
    fx_bundle_trailer(&b);
    CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
    fx_bundle_free(&b);
    /* A "snapshot" that does not decode as a record. */
    memset(&b, 0, sizeof(b));
    fx_bundle_header(&b, 1, 0, 0);
    fx_bundle_object(&b, VMT_OBJ_SNAPSHOT, blob, sizeof(blob));
    fx_bundle_trailer(&b);
    CU_ASSERT_EQUAL(check(&b), VMT_ECORRUPT);
    fx_bundle_free(&b);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"minimal bundle is accepted", test_minimal_bundle_is_accepted},
        {"newer minor and optional records are accepted",
         test_newer_minor_and_optional_records_are_accepted},
        {"newer major or unknown feature is unsupported",
         test_newer_major_or_unknown_feature_is_unsupported},
        {"damaged records are corrupt", test_damaged_records_are_corrupt},
        {"lengths beyond caps are corrupt before allocating",
         test_lengths_beyond_caps_are_corrupt_before_allocating},
        {"bad trailers are corrupt", test_bad_trailers_are_corrupt},
        {"zero page and bad snapshot records are corrupt",
         test_zero_page_and_bad_snapshot_records_are_corrupt},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/bundle_read", cases, NULL, NULL);
}
