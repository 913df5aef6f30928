/*
 * snapshot/snap_map_diff.c: diffing two maps in the store reports exactly the
 * pages that differ, in pfn order, and reads only the subtrees whose ids
 * differ (nodes_read is bounded by the nodes on the changed paths).
 */
#include <stdlib.h>
#include <string.h>

#include "snap_fixture.h"
#include "harness.h"

#define N 262144u /* 3 levels: 1024 leaves, 4 level-1 nodes, a root */

static fx_store fx;

typedef struct seen {
    uint64_t pfn[4096];
    vmt_id a[4096], b[4096];
    size_t n;
    size_t stop_after; /* 0: never */
} seen;

static int collect(void *ctx, uint64_t pfn, const vmt_id *a, const vmt_id *b)
{
    seen *s = ctx;
    if (s->n < 4096) {
        s->pfn[s->n] = pfn;
        s->a[s->n] = *a;
        s->b[s->n] = *b;
    }
    s->n++;
    return s->stop_after && s->n >= s->stop_after;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

static vmt_map *base_map(void)
{
    vmt_map *m = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, N), 0);
    for (uint64_t p = 0; p < N; p++) {
        if (p % 5 == 0)
            continue; /* some zero pages */
        vmt_id id = fx_fake_id(p);
        vmt_map_set(m, p, &id);
    }
    return m;
}

static vmt_id write_map(vmt_map *m)
{
    vmt_id root;
    CU_ASSERT_EQUAL_FATAL(vmt_map_write(m, fx.s, &root, NULL, NULL), 0);
    return root;
}

/* Distinct nodes on the paths of sorted pfns (leaves + level 1 + root). */
static uint64_t path_nodes(const uint64_t *pfns, size_t k)
{
    uint64_t n = 1;
    for (size_t i = 0; i < k; i++) {
        n += i == 0 || pfns[i] / 256 != pfns[i - 1] / 256;
        n += i == 0 || pfns[i] / 65536 != pfns[i - 1] / 65536;
    }
    return n;
}

static void test_diff_reports_exactly_the_changed_pages_in_order(void)
{
    vmt_map *m = NULL;
    uint64_t st = 99, pfns[300], nodes = 0;
    vmt_id zero = vmt_id_zero_page();
    seen *s = calloc(1, sizeof(*s));

    fx_store_new(&fx, "mapdiff");
    m = base_map();
    vmt_id a = write_map(m);
    size_t k = 0;
    while (k < 300) {
        uint64_t p = fx_rand(&st) % N;
        bool dup = false;
        for (size_t i = 0; i < k; i++)
            dup |= pfns[i] == p;
        if (dup)
            continue;
        pfns[k++] = p;
        /* Every third change zeroes a page (or un-zeroes a zero one). */
        vmt_id id = k % 3 == 0 ? zero : fx_fake_id(fx_rand(&st));
        if (vmt_id_equal(vmt_map_get(m, p), &id))
            id = fx_fake_id(p + N);
        vmt_map_set(m, p, &id);
    }
    vmt_id b = write_map(m);
    qsort(pfns, k, sizeof(pfns[0]), cmp_u64);
    CU_ASSERT_EQUAL(vmt_map_diff(fx.s, &a, &b, N, collect, s, &nodes), 0);
    CU_ASSERT_EQUAL_FATAL(s->n, k);
    for (size_t i = 0; i < k; i++) {
        CU_ASSERT_EQUAL(s->pfn[i], pfns[i]);
        CU_ASSERT_TRUE(vmt_id_equal(&s->b[i], vmt_map_get(m, pfns[i])));
        CU_ASSERT_FALSE(vmt_id_equal(&s->a[i], &s->b[i]));
        vmt_id old = pfns[i] % 5 == 0 ? zero : fx_fake_id(pfns[i]);
        CU_ASSERT_TRUE(vmt_id_equal(&s->a[i], &old));
    }
    CU_ASSERT_TRUE(nodes <= 2 * path_nodes(pfns, k));
    CU_ASSERT_TRUE(nodes >= 2 * 3);
    vmt_map_free(m);
    free(s);
    fx_store_free(&fx);
}

static void test_one_change_reads_one_path_per_tree(void)
{
    vmt_map *m = base_map();
    uint64_t nodes = 0;
    seen *s = calloc(1, sizeof(*s));

    fx_store_new(&fx, "mapdiff");
    vmt_id a = write_map(m);
    vmt_id id = fx_fake_id(123456789);
    vmt_map_set(m, 200000, &id);
    vmt_id b = write_map(m);
    CU_ASSERT_EQUAL(vmt_map_diff(fx.s, &a, &b, N, collect, s, &nodes), 0);
    CU_ASSERT_EQUAL(s->n, 1);
    CU_ASSERT_EQUAL(s->pfn[0], 200000);
    CU_ASSERT_EQUAL(nodes, 6); /* root, level-1 node, leaf in each tree */
    /* Identical roots: nothing read, nothing reported. */
    s->n = 0;
    CU_ASSERT_EQUAL(vmt_map_diff(fx.s, &b, &b, N, collect, s, &nodes), 0);
    CU_ASSERT_EQUAL(s->n, 0);
    CU_ASSERT_EQUAL(nodes, 0);
    vmt_map_free(m);
    free(s);
    fx_store_free(&fx);
}

static void test_diff_against_the_empty_map_lists_every_nonzero_page(void)
{
    const uint64_t n = 3000;
    vmt_map *m = NULL, *e = NULL;
    seen *s = calloc(1, sizeof(*s));
    uint64_t nodes = 0;

    fx_store_new(&fx, "mapdiff");
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, n), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&e, n), 0);
    for (uint64_t p = 7; p < n; p += 11) {
        vmt_id id = fx_fake_id(p);
        vmt_map_set(m, p, &id);
    }
    vmt_id a = write_map(e), b = write_map(m);
    CU_ASSERT_EQUAL(vmt_map_diff(fx.s, &a, &b, n, collect, s, &nodes), 0);
    CU_ASSERT_EQUAL_FATAL(s->n, vmt_map_nonzero(m));
    for (size_t i = 0; i < s->n; i++) {
        CU_ASSERT_EQUAL(s->pfn[i], 7 + 11 * i);
        CU_ASSERT_TRUE(vmt_id_is_zero_page(&s->a[i]));
    }
    /* The empty side is one node; the other side every node it has. */
    CU_ASSERT_EQUAL(nodes, 1 + 1 + VMT_DIV_ROUND_UP(n, 256));
    vmt_map_free(m);
    vmt_map_free(e);
    free(s);
    fx_store_free(&fx);
}

static void test_callback_can_stop_the_diff(void)
{
    const uint64_t n = 3000;
    vmt_map *m = NULL, *e = NULL;
    seen *s = calloc(1, sizeof(*s));

    fx_store_new(&fx, "mapdiff");
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, n), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&e, n), 0);
    for (uint64_t p = 0; p < n; p++) {
        vmt_id id = fx_fake_id(p);
        vmt_map_set(m, p, &id);
    }
    vmt_id a = write_map(e), b = write_map(m);
    s->stop_after = 10;
    CU_ASSERT_EQUAL(vmt_map_diff(fx.s, &a, &b, n, collect, s, NULL), VMT_ECANCELED);
    CU_ASSERT_EQUAL(s->n, 10);
    vmt_id missing = fx_fake_id(77);
    CU_ASSERT_EQUAL(vmt_map_diff(fx.s, &a, &missing, n, collect, s, NULL), VMT_ENOENT);
    vmt_map_free(m);
    vmt_map_free(e);
    free(s);
    fx_store_free(&fx);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"diff reports exactly the changed pages in order",
         test_diff_reports_exactly_the_changed_pages_in_order},
        {"one change reads one path per tree", test_one_change_reads_one_path_per_tree},
        {"diff against the empty map lists every nonzero page",
         test_diff_against_the_empty_map_lists_every_nonzero_page},
        {"callback can stop the diff", test_callback_can_stop_the_diff},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/map_diff", cases, NULL, NULL);
}
