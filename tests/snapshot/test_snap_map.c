/*
 * snapshot/snap_map.c: building, writing and loading memory maps.  Ids are
 * synthetic (a map never reads its pages), so large maps are cheap.  The
 * structural-sharing promise is checked by counting the nodes each write
 * puts: k changed pages cost exactly the nodes on their paths.
 */
#include <stdlib.h>
#include <string.h>

#include "snap_fixture.h"
#include "harness.h"

static fx_store fx;

static int setup(void)
{
    return 0;
}

/* Writes m; returns the root and the new-node count. */
static vmt_id write_map(vmt_map *m, uint64_t *new_nodes)
{
    vmt_id root;
    uint64_t nn = 0, nb = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_map_write(m, fx.s, &root, &nn, &nb), 0);
    CU_ASSERT_TRUE(nn == 0 || nb > 0);
    if (new_nodes)
        *new_nodes = nn;
    return root;
}

static void assert_maps_equal(const vmt_map *a, const vmt_map *b)
{
    CU_ASSERT_EQUAL_FATAL(vmt_map_pages(a), vmt_map_pages(b));
    CU_ASSERT_EQUAL(vmt_map_nonzero(a), vmt_map_nonzero(b));
    uint64_t bad = 0;
    for (uint64_t p = 0; p < vmt_map_pages(a); p++)
        bad += !vmt_id_equal(vmt_map_get(a, p), vmt_map_get(b, p));
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_new_map_is_all_zero_with_one_empty_root(void)
{
    vmt_map *m = NULL, *m2 = NULL, *l = NULL;
    vmt_id zero = vmt_id_zero_page();
    uint64_t nn;

    fx_store_new(&fx, "map");
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, 100000), 0);
    CU_ASSERT_EQUAL(vmt_map_pages(m), 100000);
    CU_ASSERT_EQUAL(vmt_map_nonzero(m), 0);
    CU_ASSERT_TRUE(vmt_id_equal(vmt_map_get(m, 99999), &zero));
    vmt_id root = write_map(m, &nn);
    CU_ASSERT_EQUAL(nn, 1); /* only the empty root */
    CU_ASSERT_FALSE(vmt_id_is_zero_page(&root));
    /* Deterministic: another all-zero map of the same size has the same root. */
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m2, 100000), 0);
    vmt_id root2 = write_map(m2, &nn);
    CU_ASSERT_TRUE(vmt_id_equal(&root, &root2));
    CU_ASSERT_EQUAL(nn, 0);
    CU_ASSERT_EQUAL_FATAL(vmt_map_load(&l, fx.s, &root, 100000), 0);
    CU_ASSERT_EQUAL(vmt_map_nonzero(l), 0);
    assert_maps_equal(m, l);
    vmt_map_free(m);
    vmt_map_free(m2);
    vmt_map_free(l);
    fx_store_free(&fx);
}

static void test_load_of_write_equals_map_for_edge_sizes(void)
{
    static const uint64_t sizes[] = {1, 2, 255, 256, 257, 65535, 65536, 65537, 300001};

    fx_store_new(&fx, "map");
    for (size_t i = 0; i < VMT_ARRAY_SIZE(sizes); i++) {
        uint64_t n = sizes[i];
        vmt_map *m = NULL, *l = NULL;
        CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, n), 0);
        vmt_id a = fx_fake_id(n), b = fx_fake_id(n + 1);
        vmt_map_set(m, 0, &a);
        vmt_map_set(m, n - 1, &b); /* the last page of the last (partial) leaf */
        vmt_id root = write_map(m, NULL);
        CU_ASSERT_EQUAL_FATAL(vmt_map_load(&l, fx.s, &root, n), 0);
        assert_maps_equal(m, l);
        CU_ASSERT_EQUAL(vmt_map_nonzero(l), n == 1 ? 1 : 2);
        vmt_map_free(m);
        vmt_map_free(l);
    }
    fx_store_free(&fx);
}

static void test_random_sets_round_trip_through_the_store(void)
{
    const uint64_t n = 300000; /* 3 levels */
    vmt_map *m = NULL, *l = NULL;
    uint64_t st = 42;
    vmt_id zero = vmt_id_zero_page();

    fx_store_new(&fx, "map");
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, n), 0);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 5000; i++) {
            uint64_t pfn = fx_rand(&st) % n;
            vmt_id id = fx_rand(&st) % 5 == 0 ? zero : fx_fake_id(fx_rand(&st) % 20000);
            vmt_map_set(m, pfn, &id);
        }
        uint64_t expect_nonzero = 0;
        for (uint64_t p = 0; p < n; p++)
            expect_nonzero += !vmt_id_is_zero_page(vmt_map_get(m, p));
        CU_ASSERT_EQUAL(vmt_map_nonzero(m), expect_nonzero);
        vmt_id root = write_map(m, NULL);
        CU_ASSERT_EQUAL_FATAL(vmt_map_load(&l, fx.s, &root, n), 0);
        assert_maps_equal(m, l);
        vmt_map_free(l);
        l = NULL;
    }
    vmt_map_free(m);
    fx_store_free(&fx);
}

/* Nodes on the paths of `pfns` in a 3-level map of 262144 pages. */
static uint64_t path_nodes(const uint64_t *pfns, size_t k)
{
    uint8_t leaf[1024] = {0}, mid[4] = {0};
    uint64_t n = 1; /* the root */
    for (size_t i = 0; i < k; i++) {
        n += !leaf[pfns[i] / 256];
        leaf[pfns[i] / 256] = 1;
        n += !mid[pfns[i] / 65536];
        mid[pfns[i] / 65536] = 1;
    }
    return n;
}

static void test_write_after_k_changes_puts_only_their_paths(void)
{
    const uint64_t n = 262144; /* 1024 leaves, 4 level-1 nodes, 1 root */
    vmt_map *m = NULL, *l = NULL;
    uint64_t nn, st = 7;

    fx_store_new(&fx, "map");
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, n), 0);
    for (uint64_t p = 0; p < n; p++) {
        vmt_id id = fx_fake_id(p + 1000000);
        vmt_map_set(m, p, &id);
    }
    vmt_id base = write_map(m, &nn);
    CU_ASSERT_EQUAL(nn, 1024 + 4 + 1);
    for (size_t k = 1; k <= 64; k *= 4) {
        uint64_t pfns[64];
        for (size_t i = 0; i < k; i++) {
            pfns[i] = fx_rand(&st) % n;
            vmt_id id = fx_fake_id(fx_rand(&st));
            vmt_map_set(m, pfns[i], &id);
        }
        write_map(m, &nn);
        CU_ASSERT_EQUAL(nn, path_nodes(pfns, k));
        CU_ASSERT_TRUE(nn <= k * 3);
    }
    /* Undoing every change gives back the original root with nothing new. */
    CU_ASSERT_EQUAL_FATAL(vmt_map_load(&l, fx.s, &base, n), 0);
    for (uint64_t p = 0; p < n; p++)
        vmt_map_set(m, p, vmt_map_get(l, p));
    vmt_id again = write_map(m, &nn);
    CU_ASSERT_TRUE(vmt_id_equal(&again, &base));
    CU_ASSERT_EQUAL(nn, 0);
    vmt_map_free(m);
    vmt_map_free(l);
    fx_store_free(&fx);
}

static void test_loaded_map_rewrites_nothing_until_changed(void)
{
    const uint64_t n = 70000;
    vmt_map *m = NULL, *l = NULL;
    uint64_t nn;

    fx_store_new(&fx, "map");
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, n), 0);
    for (uint64_t p = 0; p < n; p += 3) {
        vmt_id id = fx_fake_id(p);
        vmt_map_set(m, p, &id);
    }
    vmt_id root = write_map(m, NULL);
    CU_ASSERT_EQUAL_FATAL(vmt_map_load(&l, fx.s, &root, n), 0);
    vmt_id again = write_map(l, &nn);
    CU_ASSERT_TRUE(vmt_id_equal(&root, &again));
    CU_ASSERT_EQUAL(nn, 0);
    /* One change in the loaded map: one leaf, one level-1 node, the root. */
    vmt_id id = fx_fake_id(999);
    vmt_map_set(l, 1, &id);
    write_map(l, &nn);
    CU_ASSERT_EQUAL(nn, 3);
    vmt_map_free(m);
    vmt_map_free(l);
    fx_store_free(&fx);
}

static void test_zeroing_every_page_gives_the_empty_root(void)
{
    const uint64_t n = 5000;
    vmt_map *m = NULL, *e = NULL;
    vmt_id zero = vmt_id_zero_page();

    fx_store_new(&fx, "map");
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&e, n), 0);
    vmt_id empty = write_map(e, NULL);
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, n), 0);
    for (uint64_t p = 256; p < 1024; p++) {
        vmt_id id = fx_fake_id(p);
        vmt_map_set(m, p, &id);
    }
    vmt_id full = write_map(m, NULL);
    CU_ASSERT_FALSE(vmt_id_equal(&full, &empty));
    for (uint64_t p = 256; p < 1024; p++)
        vmt_map_set(m, p, &zero);
    CU_ASSERT_EQUAL(vmt_map_nonzero(m), 0);
    vmt_id again = write_map(m, NULL);
    CU_ASSERT_TRUE(vmt_id_equal(&again, &empty));
    vmt_map_free(m);
    vmt_map_free(e);
    fx_store_free(&fx);
}

static void test_bad_sizes_and_missing_roots_are_refused(void)
{
    vmt_map *m = NULL;
    vmt_id missing = fx_fake_id(1);

    fx_store_new(&fx, "map");
    CU_ASSERT_EQUAL(vmt_map_new(&m, 0), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_map_new(&m, VMT_MAP_MAX_PAGES + 1), VMT_ERANGE);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(vmt_map_load(&m, fx.s, &missing, 1000), VMT_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "missing"));
    CU_ASSERT_PTR_NULL(m);
    /* A map written for one size does not load as another depth. */
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, 100), 0);
    vmt_id root = write_map(m, NULL);
    vmt_map_free(m);
    m = NULL;
    CU_ASSERT_EQUAL(vmt_map_load(&m, fx.s, &root, 100000), VMT_ECORRUPT);
    CU_ASSERT_PTR_NULL(m);
    fx_store_free(&fx);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"new map is all zero with one empty root", test_new_map_is_all_zero_with_one_empty_root},
        {"load of write equals the map for edge sizes",
         test_load_of_write_equals_map_for_edge_sizes},
        {"random sets round trip through the store", test_random_sets_round_trip_through_the_store},
        {"write after k changes puts only their paths",
         test_write_after_k_changes_puts_only_their_paths},
        {"loaded map rewrites nothing until changed",
         test_loaded_map_rewrites_nothing_until_changed},
        {"zeroing every page gives the empty root", test_zeroing_every_page_gives_the_empty_root},
        {"bad sizes and missing roots are refused", test_bad_sizes_and_missing_roots_are_refused},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/map", cases, setup, NULL);
}
