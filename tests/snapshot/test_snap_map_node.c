/*
 * snapshot/snap_map_node.c: every map node read from the store is checked for
 * what the map expects of it (type, level, slots in range, sorted), beyond
 * the layout dedup's parser checks.  Malformed nodes are put into a real
 * store by hand and must make load and diff fail with VMT_ECORRUPT.
 */
#include <stdlib.h>
#include <string.h>

#include "snap_fixture.h"
#include "harness.h"

static fx_store fx;

/* Puts raw bytes as an object of `type`; returns its id. */
static vmt_id put_raw(const void *buf, size_t len, vmt_obj_type type)
{
    vmt_store_obj o = {.data = buf, .len = len, .type = type};
    vmt_id id;
    CU_ASSERT_EQUAL_FATAL(vmt_store_put_many(fx.s, &o, 1, &id, NULL, NULL), 0);
    return id;
}

/* Encodes and puts a node with `n` entries at `slots`, children `child`. */
static vmt_id put_node(unsigned level, const uint32_t *slots, size_t n, const vmt_id *child)
{
    vmt_mapnode_entry e[8];
    uint8_t buf[512];
    size_t len;
    for (size_t i = 0; i < n; i++) {
        e[i].slot = slots[i];
        e[i].child = child[i];
    }
    CU_ASSERT_EQUAL_FATAL(vmt_store_mapnode_encode(level, e, n, buf, sizeof(buf), &len), 0);
    return put_raw(buf, len, VMT_OBJ_MAPNODE);
}

static void expect_load_corrupt(const vmt_id *root, uint64_t npages, const char *what)
{
    vmt_map *m = NULL;
    int rc = vmt_map_load(&m, fx.s, root, npages);
    CU_ASSERT_EQUAL(rc, VMT_ECORRUPT);
    CU_ASSERT_PTR_NULL(m);
    if (what)
        CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), what));
    vmt_map_free(m);
}

static int count_page(void *ctx, uint64_t pfn, const vmt_id *a, const vmt_id *b)
{
    (void)pfn;
    (void)a;
    (void)b;
    ++*(int *)ctx;
    return 0;
}

static void test_root_of_the_wrong_level_is_corrupt(void)
{
    vmt_id kid = fx_fake_id(1);
    uint32_t slot = 3;

    fx_store_new(&fx, "mapnode");
    vmt_id leaf = put_node(0, &slot, 1, &kid);
    expect_load_corrupt(&leaf, 100000, "level 0 where the tree needs 2");
    vmt_id high = put_node(2, &slot, 1, &kid);
    expect_load_corrupt(&high, 200, "level 2 where the tree needs 0");
    fx_store_free(&fx);
}

static void test_child_of_the_wrong_level_is_corrupt(void)
{
    vmt_id kid = fx_fake_id(1);
    uint32_t slot = 0;

    fx_store_new(&fx, "mapnode");
    /* 1000 pages: a level-1 root over 4 leaves; give it a level-1 child. */
    vmt_id wrong = put_node(1, &slot, 1, &kid);
    vmt_id root = put_node(1, &slot, 1, &wrong);
    expect_load_corrupt(&root, 1000, "level 1 where the tree needs 0");
    fx_store_free(&fx);
}

static void test_slot_beyond_the_covered_range_is_corrupt(void)
{
    vmt_id kid[2] = {fx_fake_id(1), fx_fake_id(2)};

    fx_store_new(&fx, "mapnode");
    /* 300 pages: leaf 1 covers pages 256..299, so slots 0..43 only. */
    uint32_t ok_slot = 43, bad_slot = 44, full = 255;
    vmt_id leaf0 = put_node(0, &full, 1, kid);
    vmt_id good1 = put_node(0, &ok_slot, 1, kid);
    vmt_id bad1 = put_node(0, &bad_slot, 1, kid);
    uint32_t rs[2] = {0, 1};
    vmt_id good_kids[2] = {leaf0, good1}, bad_kids[2] = {leaf0, bad1};
    vmt_id good = put_node(1, rs, 2, good_kids);
    vmt_id bad = put_node(1, rs, 2, bad_kids);
    vmt_map *m = NULL;
    CU_ASSERT_EQUAL(vmt_map_load(&m, fx.s, &good, 300), 0);
    CU_ASSERT_EQUAL(vmt_map_nonzero(m), 2);
    vmt_map_free(m);
    expect_load_corrupt(&bad, 300, "slot 44 is out of range");
    /* The root over 2 leaves may not name a third. */
    uint32_t rs3[2] = {0, 2};
    vmt_id bad_root = put_node(1, rs3, 2, good_kids);
    expect_load_corrupt(&bad_root, 300, "slot 2 is out of range");
    fx_store_free(&fx);
}

static void test_unsorted_or_garbage_nodes_are_corrupt(void)
{
    vmt_id kid = fx_fake_id(9);
    uint8_t buf[512];
    size_t len;
    vmt_mapnode_entry e[2] = {{.slot = 9, .child = kid}, {.slot = 5, .child = kid}};

    fx_store_new(&fx, "mapnode");
    /* Encode sorted, then swap the two slots by hand. */
    CU_ASSERT_EQUAL_FATAL(vmt_store_mapnode_encode(0, (vmt_mapnode_entry[]){{5, kid}, {9, kid}}, 2,
                                                   buf, sizeof(buf), &len),
                          0);
    memcpy(buf + VMT_MAPNODE_HDR, &e[0].slot, 4);
    memcpy(buf + VMT_MAPNODE_HDR + VMT_MAPNODE_ENTRY, &e[1].slot, 4);
    vmt_id unsorted = put_raw(buf, len, VMT_OBJ_MAPNODE);
    expect_load_corrupt(&unsorted, 200, NULL);
    static const char garbage[] = "this is not a map node at all";
    vmt_id g = put_raw(garbage, sizeof(garbage), VMT_OBJ_MAPNODE);
    expect_load_corrupt(&g, 200, NULL);
    /* A well-formed node stored as a blob is not a map node. */
    CU_ASSERT_EQUAL_FATAL(
        vmt_store_mapnode_encode(0, (vmt_mapnode_entry[]){{7, kid}}, 1, buf, sizeof(buf), &len), 0);
    vmt_id blob = put_raw(buf, len, VMT_OBJ_BLOB);
    expect_load_corrupt(&blob, 200, "not a map node");
    fx_store_free(&fx);
}

static void test_diff_checks_the_nodes_it_reads(void)
{
    vmt_id kid = fx_fake_id(1);
    uint32_t slot = 3;
    int n = 0;

    fx_store_new(&fx, "mapnode");
    vmt_id good = put_node(0, &slot, 1, &kid);
    vmt_id bad = put_node(1, &slot, 1, &kid);
    CU_ASSERT_EQUAL(vmt_map_diff(fx.s, &good, &bad, 200, count_page, &n, NULL), VMT_ECORRUPT);
    uint32_t far = 250;
    vmt_id beyond = put_node(0, &far, 1, &kid);
    CU_ASSERT_EQUAL(vmt_map_diff(fx.s, &good, &beyond, 200, count_page, &n, NULL), VMT_ECORRUPT);
    CU_ASSERT_EQUAL(vmt_map_diff(fx.s, &good, &beyond, 251, count_page, &n, NULL), 0);
    CU_ASSERT_EQUAL(n, 2);
    fx_store_free(&fx);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"root of the wrong level is corrupt", test_root_of_the_wrong_level_is_corrupt},
        {"child of the wrong level is corrupt", test_child_of_the_wrong_level_is_corrupt},
        {"slot beyond the covered range is corrupt", test_slot_beyond_the_covered_range_is_corrupt},
        {"unsorted or garbage nodes are corrupt", test_unsorted_or_garbage_nodes_are_corrupt},
        {"diff checks the nodes it reads", test_diff_checks_the_nodes_it_reads},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/map_node", cases, NULL, NULL);
}
