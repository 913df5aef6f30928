/*
 * snapshot/snap_restore.c: eager restore fills a memfd-backed region (as
 * the VMM's guest RAM is) with exactly the snapshot's pages, real content
 * included (system libraries, text, random and zero pages), discards what
 * the region held before, and reports failures of the store.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "snap_fixture.h"

#define NPAGES 8192u /* 32 MiB */

static fx_store fx;
static uint8_t *src;
static vmt_id root;

static int setup(void)
{
    src = malloc((size_t)NPAGES * 4096);
    if (!src)
        return 1;
    fx_fill_mixed(src, NPAGES, 2024);
    return 0;
}

static int teardown(void)
{
    free(src);
    return 0;
}

static void store_source(void)
{
    fx_store_new(&fx, "restore");
    root = fx_store_memory(fx.s, src, NPAGES);
}

typedef struct progress {
    uint64_t last, total, calls;
    bool monotonic;
} progress;

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    progress *p = ctx;
    p->monotonic &= done >= p->last && done <= total;
    p->last = done;
    p->total = total;
    p->calls++;
}

static uint64_t nonzero_pages(void)
{
    static const uint8_t zero[4096];
    uint64_t n = 0;
    for (uint64_t i = 0; i < NPAGES; i++)
        n += memcmp(src + i * 4096, zero, 4096) != 0;
    return n;
}

static void test_eager_restore_gives_back_every_page(void)
{
    static const unsigned threads[] = {0, 1, 3};
    store_source();
    for (size_t t = 0; t < VMT_ARRAY_SIZE(threads); t++) {
        fx_ram r;
        vmt_restore *h = NULL;
        vmt_restore_stats st;
        progress pr = {.monotonic = true};
        vmt_restore_opts o = {.mode = VMT_RESTORE_EAGER,
                              .threads = threads[t],
                              .progress = on_progress,
                              .progress_ctx = &pr};
        fx_ram_new(&r, NPAGES);
        CU_ASSERT_EQUAL_FATAL(vmt_restore_open(&h, fx.s, &root, r.p, r.fd, r.size, &o), 0);
        CU_ASSERT_EQUAL(vmt_restore_wait(h, 0), 0);
        CU_ASSERT_EQUAL(memcmp(r.p, src, r.size), 0);
        vmt_restore_get_stats(h, &st);
        CU_ASSERT_EQUAL(st.pages_total, nonzero_pages());
        CU_ASSERT_EQUAL(st.pages_loaded, st.pages_total);
        CU_ASSERT_EQUAL(st.pages_faulted, 0);
        CU_ASSERT_EQUAL(st.zero_faults, 0);
        CU_ASSERT_TRUE(st.ready_ns > 0 && st.complete_ns > 0);
        CU_ASSERT_TRUE(pr.monotonic && pr.calls > 0);
        CU_ASSERT_EQUAL(pr.last, st.pages_total);
        vmt_restore_free(h);
        fx_ram_free(&r);
    }
    fx_store_free(&fx);
}

static void test_eager_restore_discards_what_ram_held(void)
{
    fx_ram r;
    vmt_restore *h = NULL;
    vmt_restore_opts o = {.mode = VMT_RESTORE_EAGER};

    store_source();
    fx_ram_new(&r, NPAGES);
    memset(r.p, 0xa5, r.size); /* e.g. a paused VM rolled back in place */
    CU_ASSERT_EQUAL_FATAL(vmt_restore_open(&h, fx.s, &root, r.p, r.fd, r.size, &o), 0);
    CU_ASSERT_EQUAL(memcmp(r.p, src, r.size), 0);
    vmt_restore_free(h);
    fx_ram_free(&r);
    fx_store_free(&fx);
}

static void test_eager_restore_without_a_memfd_writes_through_the_mapping(void)
{
    vmt_restore *h = NULL;
    vmt_restore_opts o = {.mode = VMT_RESTORE_EAGER, .threads = 2};
    uint64_t size = (uint64_t)NPAGES * 4096;
    uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    CU_ASSERT_FATAL(p != MAP_FAILED);
    store_source();
    CU_ASSERT_EQUAL_FATAL(vmt_restore_open(&h, fx.s, &root, p, -1, size, &o), 0);
    CU_ASSERT_EQUAL(memcmp(p, src, size), 0);
    vmt_restore_free(h);
    munmap(p, size);
    fx_store_free(&fx);
}

/* kB of the mapping at p mapped with 2 MiB page-table entries (smaps'
 * ShmemPmdMapped), or -1 when it cannot be read. */
static long pmd_mapped_kb(const void *p)
{
    char line[256];
    long kb = -1;
    bool in = false;
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
            continue;
        }
        if (in && sscanf(line, "ShmemPmdMapped: %ld kB", &kb) == 1)
            break;
    }
    fclose(f);
    return kb;
}

static void test_eager_restore_into_huge_page_ram_gives_back_every_page(void)
{
    static const unsigned threads[] = {1, 2, 3};
    uint64_t size = (uint64_t)NPAGES * 4096;
    store_source();
    for (size_t t = 0; t < VMT_ARRAY_SIZE(threads); t++) {
        int fd = memfd_create("huge-ram", MFD_CLOEXEC);
        CU_ASSERT_FATAL(fd >= 0 && ftruncate(fd, (off_t)size) == 0);
        uint8_t *p = vmt_map_shared_aligned(fd, size);
        CU_ASSERT_FATAL(p != MAP_FAILED);
        CU_ASSERT_EQUAL((uintptr_t)p % VMT_HUGE_PAGE_SIZE, 0);
        bool huge = vmt_ram_advise_huge(p, size) == 0;
        if (!huge && t == 0)
            printf("\n  (host gives no huge pages: %s; the write path is still checked) ",
                   vmt_error_last());
        memset(p, 0xa5, size); /* what a rolled-back VM's RAM held */
        vmt_restore *h = NULL;
        vmt_restore_stats st;
        progress pr = {.monotonic = true};
        vmt_restore_opts o = {.mode = VMT_RESTORE_EAGER,
                              .threads = threads[t],
                              .ram_huge = true,
                              .progress = on_progress,
                              .progress_ctx = &pr};
        CU_ASSERT_EQUAL_FATAL(vmt_restore_open(&h, fx.s, &root, p, fd, size, &o), 0);
        CU_ASSERT_EQUAL(memcmp(p, src, size), 0);
        vmt_restore_get_stats(h, &st);
        CU_ASSERT_EQUAL(st.pages_loaded, nonzero_pages());
        CU_ASSERT_TRUE(pr.monotonic && pr.last == st.pages_total);
        /* Written through the mapping, so the memfd holds them too. */
        uint8_t page[4096];
        for (uint64_t i = 0; i < NPAGES; i += 997) {
            CU_ASSERT_EQUAL(pread(fd, page, 4096, (off_t)(i * 4096)), 4096);
            CU_ASSERT_EQUAL(memcmp(page, src + i * 4096, 4096), 0);
        }
        if (huge) /* the restore's writes faulted in whole 2 MiB pages */
            CU_ASSERT_TRUE(pmd_mapped_kb(p) >= 2048);
        vmt_restore_free(h);
        munmap(p, size);
        close(fd);
    }
    fx_store_free(&fx);
}

static void test_restore_reports_missing_pages_and_bad_arguments(void)
{
    fx_ram r;
    vmt_restore *h = NULL;
    vmt_map *m = NULL;
    vmt_id bad_root, missing = fx_fake_id(3);
    vmt_restore_opts o = {.mode = VMT_RESTORE_EAGER};

    fx_store_new(&fx, "restore");
    fx_ram_new(&r, 64);
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, 64), 0);
    vmt_map_set(m, 10, &missing); /* names a page the store lacks */
    CU_ASSERT_EQUAL_FATAL(vmt_map_write(m, fx.s, &bad_root, NULL, NULL), 0);
    vmt_map_free(m);
    CU_ASSERT_EQUAL(vmt_restore_open(&h, fx.s, &bad_root, r.p, r.fd, r.size, &o), VMT_ENOENT);
    CU_ASSERT_PTR_NULL(h);
    CU_ASSERT_EQUAL(vmt_restore_open(&h, fx.s, &missing, r.p, r.fd, r.size, &o), VMT_ENOENT);
    CU_ASSERT_EQUAL(vmt_restore_open(&h, fx.s, &bad_root, r.p, r.fd, r.size - 1, &o), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_restore_open(&h, fx.s, &bad_root, r.p + 1, r.fd, 4096, &o), VMT_EINVAL);
    o.mode = VMT_RESTORE_LAZY;
    CU_ASSERT_EQUAL(vmt_restore_open(&h, fx.s, &bad_root, r.p, -1, r.size, &o), VMT_EINVAL);
    /* A map of another size does not fit this RAM. */
    o.mode = VMT_RESTORE_EAGER;
    CU_ASSERT_EQUAL(vmt_restore_open(&h, fx.s, &bad_root, r.p, r.fd, 4096, &o), VMT_ECORRUPT);
    fx_ram_free(&r);
    fx_store_free(&fx);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"eager restore gives back every page", test_eager_restore_gives_back_every_page},
        {"eager restore discards what RAM held", test_eager_restore_discards_what_ram_held},
        {"eager restore without a memfd writes through the mapping",
         test_eager_restore_without_a_memfd_writes_through_the_mapping},
        {"eager restore into huge-page RAM gives back every page",
         test_eager_restore_into_huge_page_ram_gives_back_every_page},
        {"restore reports missing pages and bad arguments",
         test_restore_reports_missing_pages_and_bad_arguments},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/restore", cases, setup, teardown);
}
