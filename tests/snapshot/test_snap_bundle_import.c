/*
 * snapshot/snap_bundle_import.c: a bundle exported from one store imports
 * into another with every page, node, blob and record intact and its
 * snapshots in the catalog, parent first.  A damaged bundle (a flipped
 * byte anywhere, a truncation anywhere), a newer format or an incomplete
 * one is refused with a clear error and leaves the destination exactly as
 * it was: no new objects, verify passes, the catalog unchanged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "snap_fixture.h"

#define NPAGES 300u

static fx_store src, dst;
static vmt_catalog *cat;
static uint8_t *mem_a, *mem_b;
static vmt_id snap_a, snap_b;
static char *bundle_path, *bad_path;
static uint8_t *bundle;
static size_t bundle_len;

/* Source store with a -> b, exported with ancestors; an empty destination. */
static void prepare(void)
{
    mem_a = malloc((size_t)NPAGES * 4096);
    mem_b = malloc((size_t)NPAGES * 4096);
    fx_store_new(&src, "bimport-src");
    fx_store_new(&dst, "bimport-dst");
    fx_fill_mixed(mem_a, NPAGES, 21);
    memcpy(mem_b, mem_a, (size_t)NPAGES * 4096);
    fx_page_random(mem_b + 9 * 4096, 1234);
    snap_a = fx_snapshot(src.s, mem_a, NPAGES, NULL, "a");
    snap_b = fx_snapshot(src.s, mem_b, NPAGES, &snap_a, "b");
    CU_ASSERT_FATAL(asprintf(&bundle_path, "%s/b.vmtb", src.tmp) > 0);
    CU_ASSERT_FATAL(asprintf(&bad_path, "%s/bad.vmtb", src.tmp) > 0);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_export(src.s, &snap_b, true, bundle_path, NULL, NULL), 0);
    bundle = fx_read_file(bundle_path, &bundle_len);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&cat, dst.dir), 0);
}

static void finish(void)
{
    vmt_catalog_close(cat);
    cat = NULL;
    fx_store_free(&src);
    fx_store_free(&dst);
    free(mem_a);
    free(mem_b);
    free(bundle);
    free(bundle_path);
    free(bad_path);
}

/* The snapshot's memory read back from the destination equals mem. */
static void assert_memory(const vmt_id *snap, const uint8_t *mem)
{
    vmt_snap_record r;
    vmt_map *m = NULL;
    uint8_t page[4096];
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_read(dst.s, snap, &r), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_map_load(&m, dst.s, &r.map_root, NPAGES), 0);
    uint64_t bad = 0;
    for (uint64_t p = 0; p < NPAGES; p++) {
        void *d[1] = {page};
        CU_ASSERT_EQUAL_FATAL(vmt_store_get_pages(dst.s, vmt_map_get(m, p), 1, d), 0);
        bad += memcmp(page, mem + p * 4096, 4096) != 0;
    }
    CU_ASSERT_EQUAL(bad, 0);
    vmt_map_free(m);
}

static uint64_t object_count(void)
{
    vmt_store_stats st;
    CU_ASSERT_EQUAL_FATAL(vmt_store_get_stats(dst.s, &st), 0);
    return st.objects;
}

static size_t catalog_count(void)
{
    vmt_catalog_snap *v = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_list_snapshots(cat, &v, &n), 0);
    free(v);
    return n;
}

static void test_round_trip_into_a_second_store(void)
{
    vmt_id *ids = NULL;
    size_t n = 0;

    prepare();
    CU_ASSERT_EQUAL_FATAL(vmt_snap_import(dst.s, cat, bundle_path, &ids, &n, NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_TRUE(vmt_id_equal(&ids[0], &snap_a)); /* parent first */
    CU_ASSERT_TRUE(vmt_id_equal(&ids[1], &snap_b)); /* the exported one last */
    free(ids);
    fx_store_reopen(&dst); /* what import committed is durable */
    assert_memory(&snap_a, mem_a);
    assert_memory(&snap_b, mem_b);
    CU_ASSERT_EQUAL(vmt_store_verify(dst.s, NULL, NULL), 0);
    vmt_catalog_snap *v = NULL;
    size_t cn = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_list_snapshots(cat, &v, &cn), 0);
    CU_ASSERT_EQUAL_FATAL(cn, 2);
    CU_ASSERT_TRUE(v[1].has_parent && v[1].parent_present);
    CU_ASSERT_STRING_EQUAL(v[1].message, "snapshot b");
    free(v);
    vmt_id got;
    CU_ASSERT_EQUAL(vmt_catalog_resolve(cat, "fx", &got), VMT_ENOENT); /* no ref made */
    /* Importing again adds nothing. */
    uint64_t before = object_count();
    CU_ASSERT_EQUAL(vmt_snap_import(dst.s, cat, bundle_path, &ids, &n, NULL, NULL), 0);
    free(ids);
    CU_ASSERT_EQUAL(object_count(), before);
    finish();
}

/* Imports bad_path; asserts refusal and an unchanged destination. */
static void expect_refused(int want_a, int want_b, uint64_t objects)
{
    vmt_id *ids = NULL;
    size_t n = 0;
    int rc = vmt_snap_import(dst.s, cat, bad_path, &ids, &n, NULL, NULL);
    CU_ASSERT_TRUE(rc == want_a || rc == want_b);
    CU_ASSERT_PTR_NULL(ids);
    CU_ASSERT_EQUAL(object_count(), objects); /* nothing was even put */
    CU_ASSERT_EQUAL(catalog_count(), 0);
}

static void test_flipped_bytes_are_refused_leaving_the_store_as_it_was(void)
{
    prepare();
    uint64_t objects = object_count();
    uint8_t *copy = malloc(bundle_len);
    /* Every byte of the header and trailer, and a spread of others. */
    for (size_t off = 0; off < bundle_len;
         off += (off < 200 || off + 100 > bundle_len) ? 1 : 1 + bundle_len / 150) {
        memcpy(copy, bundle, bundle_len);
        copy[off] ^= (uint8_t)(1u << (off % 8));
        fx_write_file(bad_path, copy, bundle_len);
        bool version = off == 8 || off == 9; /* the major: newer, or damage */
        expect_refused(VMT_ECORRUPT, version ? VMT_EUNSUPPORTED : VMT_ECORRUPT, objects);
    }
    free(copy);
    fx_store_reopen(&dst);
    CU_ASSERT_EQUAL(object_count(), objects);
    CU_ASSERT_EQUAL(vmt_store_verify(dst.s, NULL, NULL), 0);
    finish();
}

static void test_truncations_are_refused_leaving_the_store_as_it_was(void)
{
    prepare();
    uint64_t objects = object_count();
    for (size_t len = 0; len < bundle_len;
         len += (len < 100 || len + 100 > bundle_len) ? 1 : 1 + bundle_len / 150) {
        fx_write_file(bad_path, bundle, len);
        expect_refused(VMT_ECORRUPT, VMT_ECORRUPT, objects);
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "truncated"));
    fx_store_reopen(&dst);
    CU_ASSERT_EQUAL(object_count(), objects);
    CU_ASSERT_EQUAL(vmt_store_verify(dst.s, NULL, NULL), 0);
    finish();
}

static void test_newer_major_version_is_unsupported(void)
{
    prepare();
    uint64_t objects = object_count();
    uint8_t *copy = malloc(bundle_len);
    memcpy(copy, bundle, bundle_len);
    copy[8] = 2; /* major 2 */
    fx_write_file(bad_path, copy, bundle_len);
    expect_refused(VMT_EUNSUPPORTED, VMT_EUNSUPPORTED, objects);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "newer"));
    free(copy);
    finish();
}

static void test_incomplete_bundle_is_refused_without_commit(void)
{
    fx_bundle b;
    vmt_snap_record r;
    uint8_t *rec = NULL;
    size_t len;
    uint8_t page[4096];
    vmt_id *ids = NULL;
    size_t n = 0;

    prepare();
    uint64_t objects = object_count();
    /* A snapshot whose map (a single leaf) names a page the bundle lacks. */
    memset(&b, 0, sizeof(b));
    fx_bundle_header(&b, 1, 0, 0);
    fx_page_text(page, 1);
    vmt_id pid = fx_bundle_object(&b, VMT_OBJ_PAGE, page, sizeof(page));
    vmt_mapnode_entry e[2] = {{.slot = 0, .child = pid}, {.slot = 1, .child = fx_fake_id(8)}};
    uint8_t node[128];
    CU_ASSERT_EQUAL_FATAL(vmt_store_mapnode_encode(0, e, 2, node, sizeof(node), &len), 0);
    memset(&r, 0, sizeof(r));
    r.map_root = fx_bundle_object(&b, VMT_OBJ_MAPNODE, node, len);
    r.state = fx_bundle_object(&b, VMT_OBJ_BLOB, "state", 5);
    r.mem_size = 16 * 4096;
    r.vcpus = 1;
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_encode(&r, &rec, &len), 0);
    fx_bundle_object(&b, VMT_OBJ_SNAPSHOT, rec, len);
    fx_bundle_trailer(&b);
    CU_ASSERT_EQUAL(vmt_snap_bundle_check(b.p, b.n, NULL), 0); /* well-formed... */
    fx_write_file(bad_path, b.p, b.n);
    CU_ASSERT_EQUAL(vmt_snap_import(dst.s, cat, bad_path, &ids, &n, NULL, NULL), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "incomplete"));
    CU_ASSERT_EQUAL(catalog_count(), 0);
    fx_store_reopen(&dst); /* ...but nothing of it was committed */
    CU_ASSERT_EQUAL(object_count(), objects);
    CU_ASSERT_EQUAL(vmt_store_verify(dst.s, NULL, NULL), 0);
    free(rec);
    fx_bundle_free(&b);
    finish();
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"round trip into a second store", test_round_trip_into_a_second_store},
        {"flipped bytes are refused leaving the store as it was",
         test_flipped_bytes_are_refused_leaving_the_store_as_it_was},
        {"truncations are refused leaving the store as it was",
         test_truncations_are_refused_leaving_the_store_as_it_was},
        {"newer major version is unsupported", test_newer_major_version_is_unsupported},
        {"incomplete bundle is refused without commit",
         test_incomplete_bundle_is_refused_without_commit},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/bundle_import", cases, NULL, NULL);
}
