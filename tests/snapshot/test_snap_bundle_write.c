/*
 * snapshot/snap_bundle_write.c: export writes a bundle that the decoder
 * accepts, holding each object once; with ancestors, a chain of snapshots
 * shares what they share (the bundle is far smaller than separate ones),
 * and the walk stops at the first parent no longer stored.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "snap_fixture.h"

#define NPAGES 2048u

static fx_store fx;

static void bundle_info(const char *path, vmt_snap_bundle_info *info)
{
    size_t n;
    uint8_t *p = fx_read_file(path, &n);
    CU_ASSERT_EQUAL(vmt_snap_bundle_check(p, n, info), 0);
    free(p);
}

/* Distinct non-zero pages of mem. */
static uint64_t distinct_pages(const uint8_t *mem, uint64_t n)
{
    vmt_id *ids = calloc(n, sizeof(vmt_id));
    uint64_t d = 0;
    for (uint64_t i = 0; i < n; i++) {
        vmt_id id;
        vmt_id_of(mem + i * 4096, 4096, &id);
        if (vmt_id_is_zero_page(&id))
            continue;
        bool dup = false;
        for (uint64_t k = 0; k < d && !dup; k++)
            dup = vmt_id_equal(&ids[k], &id);
        if (!dup)
            ids[d++] = id;
    }
    free(ids);
    return d;
}

typedef struct prog {
    uint64_t calls, last, total;
} prog;

static void on_progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    prog *p = ctx;
    CU_ASSERT_STRING_EQUAL(phase, "export");
    CU_ASSERT_TRUE(done >= p->last && done <= total);
    p->calls++;
    p->last = done;
    p->total = total;
}

static void test_export_holds_each_object_once(void)
{
    uint8_t *mem = malloc((size_t)NPAGES * 4096);
    vmt_snap_bundle_info info;
    prog pr = {0};
    char *path = NULL;

    fx_store_new(&fx, "bwrite");
    fx_fill_mixed(mem, NPAGES, 11);
    memcpy(mem + 100 * 4096, mem + 200 * 4096, 4096); /* a duplicate page */
    vmt_id id = fx_snapshot(fx.s, mem, NPAGES, NULL, "one");
    CU_ASSERT_FATAL(asprintf(&path, "%s/one.vmtb", fx.tmp) > 0);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_export(fx.s, &id, false, path, on_progress, &pr), 0);
    bundle_info(path, &info);
    /* pages + 8 leaves + the root + the blob + the record */
    CU_ASSERT_EQUAL(info.objects, distinct_pages(mem, NPAGES) + 8 + 1 + 2);
    CU_ASSERT_EQUAL(info.snapshots, 1);
    CU_ASSERT_TRUE(vmt_id_equal(&info.last, &id));
    CU_ASSERT_TRUE(pr.calls > 0 && pr.last == pr.total && pr.total == info.objects);
    /* Exporting again replaces the file; no temporary file is left. */
    CU_ASSERT_EQUAL(vmt_snap_export(fx.s, &id, false, path, NULL, NULL), 0);
    char *tmp = NULL;
    CU_ASSERT_FATAL(asprintf(&tmp, "%s.tmp-%ld", path, (long)getpid()) > 0);
    CU_ASSERT_NOT_EQUAL(access(tmp, F_OK), 0);
    free(tmp);
    free(path);
    free(mem);
    fx_store_free(&fx);
}

static void test_ancestors_share_what_they_share(void)
{
    uint8_t *mem = malloc((size_t)NPAGES * 4096);
    vmt_snap_bundle_info chain, one;
    char *pc = NULL, *p1 = NULL;
    struct stat sc, s1;

    fx_store_new(&fx, "bwrite");
    fx_fill_mixed(mem, NPAGES, 12);
    fx_page_random(mem + 5 * 4096, 901); /* the pages to change: unique, non-zero */
    fx_page_random(mem + 1500 * 4096, 902);
    vmt_id a = fx_snapshot(fx.s, mem, NPAGES, NULL, "a");
    fx_page_random(mem + 5 * 4096, 501);
    vmt_id b = fx_snapshot(fx.s, mem, NPAGES, &a, "b");
    fx_page_random(mem + 1500 * 4096, 502);
    vmt_id c = fx_snapshot(fx.s, mem, NPAGES, &b, "c");
    CU_ASSERT_FATAL(asprintf(&pc, "%s/chain.vmtb", fx.tmp) > 0);
    CU_ASSERT_FATAL(asprintf(&p1, "%s/one.vmtb", fx.tmp) > 0);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_export(fx.s, &c, true, pc, NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_export(fx.s, &c, false, p1, NULL, NULL), 0);
    bundle_info(pc, &chain);
    bundle_info(p1, &one);
    CU_ASSERT_EQUAL(chain.snapshots, 3);
    CU_ASSERT_TRUE(vmt_id_equal(&chain.last, &c));
    /* Each parent adds 1 page, 2 nodes (leaf and root), its blob, its record. */
    CU_ASSERT_EQUAL(chain.objects, one.objects + 2 * 5);
    CU_ASSERT_EQUAL(stat(pc, &sc), 0);
    CU_ASSERT_EQUAL(stat(p1, &s1), 0);
    CU_ASSERT_TRUE(sc.st_size < s1.st_size + s1.st_size / 10);
    free(pc);
    free(p1);
    free(mem);
    fx_store_free(&fx);
}

static void test_ancestor_walk_stops_at_the_first_missing_parent(void)
{
    uint8_t *mem = malloc((size_t)64 * 4096);
    vmt_snap_bundle_info info;
    char *path = NULL;
    vmt_id gone = fx_fake_id(12345), missing = fx_fake_id(6);

    fx_store_new(&fx, "bwrite");
    fx_fill_mixed(mem, 64, 13);
    vmt_id a = fx_snapshot(fx.s, mem, 64, &gone, "a"); /* its parent was deleted */
    fx_page_text(mem, 7);
    vmt_id b = fx_snapshot(fx.s, mem, 64, &a, "b");
    CU_ASSERT_FATAL(asprintf(&path, "%s/b.vmtb", fx.tmp) > 0);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_export(fx.s, &b, true, path, NULL, NULL), 0);
    bundle_info(path, &info);
    CU_ASSERT_EQUAL(info.snapshots, 2);
    CU_ASSERT_EQUAL(vmt_snap_export(fx.s, &missing, false, path, NULL, NULL), VMT_ENOENT);
    bundle_info(path, &info); /* the old bundle is untouched */
    CU_ASSERT_EQUAL(info.snapshots, 2);
    free(path);
    free(mem);
    fx_store_free(&fx);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"export holds each object once", test_export_holds_each_object_once},
        {"ancestors share what they share", test_ancestors_share_what_they_share},
        {"ancestor walk stops at the first missing parent",
         test_ancestor_walk_stops_at_the_first_missing_parent},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/bundle_write", cases, NULL, NULL);
}
