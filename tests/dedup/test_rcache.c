/*
 * The local read cache of a RADOS store (docs/store-backends.md, "The local
 * read cache"), over a real cluster: cold reads fill it, later handles and
 * processes read with no pack fetched from the cluster, the bound holds,
 * damaged cache files are fetched again, gc and a pack number reused after
 * a crash never serve stale bytes, two processes share one cache.
 * RADOS only: elsewhere the suite prints why and skips.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dd_test.h"
#include "vmtree/util.h"

#define PAGE VMT_STORE_PAGE_SIZE
#define PACK (1u << 20)
#define NPAGES 1200u /* random pages (stored raw): about 5 packs of 1 MiB */
#define BATCH 64u

typedef struct fixture {
    char *loc;   /* the store, no cache */
    char *cdir;  /* the cache directory */
    vmt_id *ids; /* page i has content ddt_random_page(seed + i) */
    uint64_t seed;
    size_t n;
} fixture;

/* Puts n random pages into a new store with 1 MiB packs and commits. */
static void fx_new(fixture *f, const char *tag, size_t n, uint64_t seed)
{
    f->loc = ddt_store_small(tag, PACK);
    f->cdir = vmt_test_tmpdir("rcache");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f->cdir);
    f->n = n;
    f->seed = seed;
    f->ids = calloc(n, sizeof(*f->ids));
    uint8_t *buf = malloc(n * PAGE);
    const void **ptr = calloc(n, sizeof(*ptr));
    CU_ASSERT_FATAL(f->ids && buf && ptr);
    for (size_t i = 0; i < n; i++) {
        ddt_random_page(seed + i, buf + i * PAGE);
        ptr[i] = buf + i * PAGE;
    }
    vmt_store *s = ddt_open(f->loc, false, 2);
    DDT_OK(vmt_store_put_pages(s, ptr, n, f->ids, NULL, NULL));
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    free(buf);
    free(ptr);
}

static void fx_free(fixture *f)
{
    ddt_cleanup(f->loc);
    vmt_test_rmtree(f->cdir);
    free(f->cdir);
    free(f->ids);
}

/* The store's location with parameters added ("&cache=DIR" with cache,
 * then `more`); caller frees. */
static char *with(const char *loc, const char *cache, const char *more)
{
    char *url = NULL;
    CU_ASSERT_FATAL(
        asprintf(&url, "%s%s%s%s", loc, cache ? "&cache=" : "", cache ? cache : "", more) > 0);
    return url;
}

static char *cached(const fixture *f, const char *size)
{
    char more[64];
    snprintf(more, sizeof(more), "&cache_size=%s", size);
    return with(f->loc, f->cdir, more);
}

/* Reads pages [from, to) of f in batches and compares them; 0 when all match. */
static int read_range(vmt_store *s, const fixture *f, size_t from, size_t to)
{
    static uint8_t out[BATCH][PAGE], want[PAGE];
    void *dst[BATCH];
    for (size_t i = 0; i < BATCH; i++)
        dst[i] = out[i];
    for (size_t i = from; i < to; i += BATCH) {
        size_t k = VMT_MIN((size_t)BATCH, to - i);
        int rc = vmt_store_get_pages(s, f->ids + i, k, dst);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < k; j++) {
            ddt_random_page(f->seed + i + j, want);
            if (memcmp(out[j], want, PAGE) != 0)
                return VMT_ECORRUPT;
        }
    }
    return 0;
}

static vmt_store *open_ro(const char *url)
{
    return ddt_open(url, true, 2);
}

static vmt_store_stats stats(vmt_store *s)
{
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    return st;
}

/* Bytes of the cache's pack files; *tmp counts leftover tmp files. */
static uint64_t cache_bytes(const char *dir, size_t *files, size_t *tmp)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    uint64_t total = 0;
    *files = *tmp = 0;
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    while ((de = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (strncmp(de->d_name, "tmp-", 4) == 0)
            (*tmp)++;
        if (!strstr(de->d_name, ".vpk") || stat(path, &st) != 0)
            continue;
        total += (uint64_t)st.st_size;
        (*files)++;
    }
    closedir(d);
    return total;
}

/* A child process: opens url read-only, reads every page `rounds` times;
 * exits 0 when all matched and (when zero_fetch) nothing was fetched. */
static void reader_child(const char *url, const fixture *f, int rounds, bool zero_fetch)
{
    vmt_store *s = NULL;
    vmt_store_open_opts o;
    vmt_store_open_opts_init(&o);
    o.read_only = true;
    o.threads = 2;
    if (vmt_store_open(&s, url, &o) != 0)
        _exit(10);
    for (int r = 0; r < rounds; r++) {
        if (read_range(s, f, 0, f->n) != 0) {
            fprintf(stderr, "child: %s\n", vmt_error_last());
            _exit(11);
        }
    }
    vmt_store_stats st;
    vmt_store_get_stats(s, &st);
    vmt_store_close(s);
    _exit(zero_fetch && st.pack_fetches != 0 ? 12 : 0);
}

static int wait_child(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs n reader children at once; asserts that each exited 0. */
static void run_readers(int n, const char *url, const fixture *f, int rounds, bool zero_fetch)
{
    pid_t pids[4];
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        CU_ASSERT_FATAL(pids[i] >= 0);
        if (pids[i] == 0)
            reader_child(url, f, rounds, zero_fetch);
    }
    for (int i = 0; i < n; i++)
        CU_ASSERT_EQUAL(wait_child(pids[i]), 0);
}

static void test_cold_fills_warm_reads_locally(void)
{
    fixture f;
    fx_new(&f, "rc-warm", NPAGES, 1000);
    char *url = cached(&f, "64M");
    /* Cold: every pack fetched once, and written to the cache. */
    vmt_store *s = open_ro(url);
    DDT_OK(read_range(s, &f, 0, f.n));
    vmt_store_stats st = stats(s);
    CU_ASSERT(st.packs >= 4);
    CU_ASSERT_EQUAL(st.pack_fetches, st.packs);
    CU_ASSERT_EQUAL(st.pack_cache_fills, st.packs);
    CU_ASSERT_EQUAL(st.pack_cache_hits, 0);
    /* The same handle again: from memory, nothing more fetched. */
    DDT_OK(read_range(s, &f, 0, f.n));
    CU_ASSERT_EQUAL(stats(s).pack_fetches, st.packs);
    vmt_store_close(s);
    /* A second handle: every pack from the cache, none from the cluster. */
    s = open_ro(url);
    DDT_OK(read_range(s, &f, 0, f.n));
    st = stats(s);
    CU_ASSERT_EQUAL(st.pack_fetches, 0);
    CU_ASSERT_EQUAL(st.pack_cache_hits, st.packs);
    CU_ASSERT_EQUAL(st.pack_cache_fills, 0);
    vmt_store_close(s);
    /* A second process too. */
    run_readers(1, url, &f, 1, true);
    /* Without the cache (cache=off beats the environment) it fetches. */
    setenv("VMTREE_RADOS_CACHE", f.cdir, 1);
    char *off = with(f.loc, "off", "");
    s = open_ro(off);
    DDT_OK(read_range(s, &f, 0, f.n));
    CU_ASSERT_EQUAL(stats(s).pack_fetches, stats(s).packs);
    vmt_store_close(s);
    /* ... and the environment names the cache when the location does not. */
    s = open_ro(f.loc);
    DDT_OK(read_range(s, &f, 0, f.n));
    CU_ASSERT_EQUAL(stats(s).pack_fetches, 0);
    vmt_store_close(s);
    unsetenv("VMTREE_RADOS_CACHE");
    free(off);
    free(url);
    fx_free(&f);
}

static void test_bad_settings_are_refused(void)
{
    fixture f = {.loc = ddt_location("rc-bad")};
    vmt_store *s = NULL;
    static const char *bad[] = {"&cache_size=12", "&cache_size=lots", "&mem=1K", "&cache="};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(bad); i++) {
        char *url = with(f.loc, NULL, bad[i]);
        CU_ASSERT_EQUAL(vmt_store_open(&s, url, NULL), VMT_EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), bad[i][1] == 'c' ? "cache" : "mem"));
        free(url);
    }
    setenv("VMTREE_RADOS_CACHE", "/tmp", 1);
    setenv("VMTREE_RADOS_CACHE_SIZE", "ten", 1);
    CU_ASSERT_EQUAL(vmt_store_open(&s, f.loc, NULL), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "VMTREE_RADOS_CACHE_SIZE"));
    unsetenv("VMTREE_RADOS_CACHE");
    unsetenv("VMTREE_RADOS_CACHE_SIZE");
    ddt_cleanup(f.loc);
}

/* Cache files by name (sorted), for damage injection. */
static size_t cache_files(const char *dir, char names[][4096], size_t max)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t n = 0;
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    while ((de = readdir(d)) != NULL && n < max) {
        if (strstr(de->d_name, ".vpk") && strncmp(de->d_name, "tmp-", 4) != 0)
            snprintf(names[n++], 4096, "%s/%s", dir, de->d_name);
    }
    closedir(d);
    return n;
}

static void test_damaged_cache_file_is_fetched_again(void)
{
    fixture f;
    static char names[16][4096];
    fx_new(&f, "rc-damage", NPAGES, 2000);
    char *url = cached(&f, "64M");
    vmt_store *s = open_ro(url);
    DDT_OK(read_range(s, &f, 0, f.n));
    uint64_t packs = stats(s).packs;
    vmt_store_close(s);
    size_t n = cache_files(f.cdir, names, 16);
    CU_ASSERT_FATAL(n == packs && n >= 3);
    /* A record in the middle of one file, the pack header of another. */
    long long size = ddt_file_size(names[0]);
    ddt_flip(names[0], (uint64_t)size / 2, 0x40);
    ddt_flip(names[1], 20, 0x01);
    s = open_ro(url);
    DDT_OK(read_range(s, &f, 0, f.n));
    vmt_store_stats st = stats(s);
    CU_ASSERT_EQUAL(st.pack_cache_damaged, 2);
    CU_ASSERT_EQUAL(st.pack_fetches, 2);
    CU_ASSERT_EQUAL(st.pack_cache_hits, packs - 1); /* the flipped record's pack was a hit first */
    CU_ASSERT_EQUAL(st.pack_cache_fills, 2);
    vmt_store_close(s);
    /* The copies were replaced: the next handle reads all locally. */
    s = open_ro(url);
    DDT_OK(read_range(s, &f, 0, f.n));
    CU_ASSERT_EQUAL(stats(s).pack_fetches, 0);
    CU_ASSERT_EQUAL(stats(s).pack_cache_damaged, 0);
    vmt_store_close(s);
    /* A copy of the wrong length is no copy. */
    ddt_write_file(names[2], "short", 5);
    s = open_ro(url);
    DDT_OK(read_range(s, &f, 0, f.n));
    CU_ASSERT_EQUAL(stats(s).pack_fetches, 1);
    vmt_store_close(s);
    free(url);
    fx_free(&f);
}

static void test_bounds_hold_and_reads_stay_right(void)
{
    fixture f;
    fx_new(&f, "rc-bound", NPAGES, 3000);
    /* Room for two of the ~5 packs on disk, and in memory. */
    char *url = with(f.loc, f.cdir, "&cache_size=2M&mem=2M");
    vmt_store *s = open_ro(url);
    size_t files, tmp;
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < f.n; i += BATCH) {
            DDT_OK(read_range(s, &f, i, VMT_MIN(i + BATCH, f.n)));
            CU_ASSERT(cache_bytes(f.cdir, &files, &tmp) <= (2u << 20));
            CU_ASSERT(stats(s).pack_view_bytes <= (2u << 20));
        }
    }
    vmt_store_stats st = stats(s);
    CU_ASSERT(st.pack_cache_evicted > 0);
    CU_ASSERT(st.pack_views_dropped > 0);
    CU_ASSERT(st.pack_fetches + st.pack_cache_hits > st.packs); /* dropped views came back */
    CU_ASSERT_EQUAL(tmp, 0);
    /* Backwards: the least recently used order is no accident of the scan. */
    for (size_t i = f.n; i > 0; i -= VMT_MIN((size_t)BATCH, i))
        DDT_OK(read_range(s, &f, i - VMT_MIN((size_t)BATCH, i), i));
    vmt_store_close(s);
    free(url);
    fx_free(&f);
}

static void put_range(vmt_store *s, fixture *f, size_t from, size_t to);

/* A writer's own sealed packs are dropped past `mem` at its commits and
 * come back through the cache. */
static void test_writer_views_are_bounded(void)
{
    fixture f;
    fx_new(&f, "rc-writer", 300, 8000);
    vmt_id *ids = realloc(f.ids, NPAGES * sizeof(*ids));
    CU_ASSERT_FATAL(ids != NULL);
    f.ids = ids;
    f.n = NPAGES;
    char *url = with(f.loc, f.cdir, "&cache_size=64M&mem=2M");
    vmt_store *w = ddt_open(url, false, 2);
    for (size_t i = 300; i < f.n; i += 300) {
        put_range(w, &f, i, VMT_MIN(i + 300, f.n));
        DDT_OK(vmt_store_commit(w));
        CU_ASSERT(stats(w).pack_view_bytes <= (2u << 20));
    }
    CU_ASSERT(stats(w).pack_views_dropped > 0);
    DDT_OK(read_range(w, &f, 0, f.n));
    CU_ASSERT(stats(w).pack_fetches + stats(w).pack_cache_hits > 0);
    vmt_store_close(w);
    free(url);
    fx_free(&f);
}

static void put_range(vmt_store *s, fixture *f, size_t from, size_t to)
{
    uint8_t *buf = malloc((to - from) * PAGE);
    const void **ptr = calloc(to - from, sizeof(*ptr));
    CU_ASSERT_FATAL(buf && ptr);
    for (size_t i = from; i < to; i++) {
        ddt_random_page(f->seed + i, buf + (i - from) * PAGE);
        ptr[i - from] = buf + (i - from) * PAGE;
    }
    DDT_OK(vmt_store_put_pages(s, ptr, to - from, f->ids + from, NULL, NULL));
    free(buf);
    free(ptr);
}

static void test_gc_leaves_nothing_stale(void)
{
    fixture f;
    fx_new(&f, "rc-gc", NPAGES, 4000);
    char *url = cached(&f, "64M");
    /* This handle keeps at most one view in memory: the rest from the cache. */
    char *url1 = with(url, NULL, "&mem=1M");
    vmt_store *old = open_ro(url1);
    DDT_OK(read_range(old, &f, 0, f.n)); /* everything cached */
    /* gc keeps the second half only: the packs are rewritten and deleted. */
    vmt_store *w = ddt_open(f.loc, false, 2);
    vmt_store_gc_opts o;
    vmt_store_gc_opts_init(&o);
    o.min_live = 0.9;
    vmt_store_gc_stats gs;
    DDT_OK(vmt_store_gc(w, f.ids + f.n / 2, f.n - f.n / 2, &o, &gs));
    CU_ASSERT(gs.packs_deleted >= 2);
    vmt_store_close(w);
    /* A new handle finds the moved pages in new packs, through the cache. */
    vmt_store *s = open_ro(url);
    DDT_OK(read_range(s, &f, f.n / 2, f.n));
    CU_ASSERT(stats(s).pack_fetches >= 1);
    void *page = NULL;
    size_t len;
    CU_ASSERT_EQUAL(vmt_store_get(s, &f.ids[0], &page, &len, NULL), VMT_ENOENT);
    vmt_store_close(s);
    /* A handle opened before the gc still reads what it saw: its packs are
     * gone from the pool, their cached copies are the same bytes. */
    uint64_t fetched = stats(old).pack_fetches;
    DDT_OK(read_range(old, &f, 0, f.n));
    CU_ASSERT_EQUAL(stats(old).pack_fetches, fetched);
    CU_ASSERT(stats(old).pack_views_dropped > 0);
    vmt_store_close(old);
    free(url1);
    free(url);
    fx_free(&f);
}

/* A writer that stops without committing (or dies) leaves records and
 * packs after its last commit; the next writer drops them and writes other
 * bytes at the same places, in packs of the same numbers.  A reader with the
 * cache must see those, never the dropped ones. */
static void test_reused_pack_number_is_not_served_stale(void)
{
    fixture f;
    fx_new(&f, "rc-reuse", 300, 5000); /* A: one pack and a bit, committed */
    vmt_id *ids = realloc(f.ids, 1500 * sizeof(*ids));
    CU_ASSERT_FATAL(ids != NULL);
    f.ids = ids;
    f.n = 1500;
    char *url = cached(&f, "64M");
    /* B: appended after A's commit marker and into new packs, never committed. */
    vmt_store *w = ddt_open(f.loc, false, 2);
    put_range(w, &f, 300, 900);
    vmt_store *r1 = open_ro(url); /* caches A's packs, the last one up to the commit */
    DDT_OK(read_range(r1, &f, 0, 300));
    CU_ASSERT_EQUAL(stats(r1).pack_cache_fills, 2);
    vmt_store_close(r1);
    vmt_store_close(w); /* no commit: B is dropped at the next open */
    /* C: other pages, committed at B's places. */
    fixture g = f;
    g.seed = 9000;
    w = ddt_open(f.loc, false, 2);
    put_range(w, &g, 300, 1500);
    DDT_OK(vmt_store_commit(w));
    vmt_store_close(w);
    vmt_store *s = open_ro(url);
    DDT_OK(read_range(s, &f, 0, 300));
    DDT_OK(read_range(s, &g, 300, 1500));
    CU_ASSERT_EQUAL(stats(s).pack_cache_hits, 1); /* pack 1 only: pack 2 has grown */
    vmt_store_close(s);
    s = open_ro(url);
    DDT_OK(read_range(s, &g, 300, 1500));
    CU_ASSERT_EQUAL(stats(s).pack_fetches, 0);
    vmt_store_close(s);
    free(url);
    fx_free(&f);
}

/* Reads pages [from, to) one by one (small batches: no waiting for packs). */
static int read_singly(vmt_store *s, const fixture *f, size_t from, size_t to)
{
    static uint8_t out[PAGE], want[PAGE];
    void *dst[1] = {out};
    for (size_t i = from; i < to; i++) {
        int rc = vmt_store_get_pages(s, f->ids + i, 1, dst);
        ddt_random_page(f->seed + i, want);
        if (rc != 0 || memcmp(out, want, PAGE) != 0)
            return rc ? rc : VMT_ECORRUPT;
    }
    return 0;
}

static void test_small_reads_do_not_wait_for_a_pack(void)
{
    fixture f;
    fx_new(&f, "rc-small", NPAGES, 7000);
    char *url = cached(&f, "64M");
    /* Cold: the first reads of a pack read their record alone while the
     * pack is fetched behind them, once. */
    vmt_store *s = open_ro(url);
    DDT_OK(read_singly(s, &f, 0, f.n));
    vmt_store_stats st = stats(s);
    CU_ASSERT(st.pack_ranged_reads >= 1);
    CU_ASSERT(st.pack_ranged_reads < f.n);
    vmt_store_close(s); /* waits for the fetches behind */
    s = open_ro(url);
    DDT_OK(read_singly(s, &f, 0, f.n));
    DDT_OK(read_range(s, &f, 0, f.n));
    st = stats(s);
    CU_ASSERT(st.pack_fetches + st.pack_cache_hits == st.packs); /* each pack once */
    vmt_store_close(s);
    /* Warm: every pack mapped from the cache at once, nothing read alone. */
    s = open_ro(url);
    DDT_OK(read_singly(s, &f, 0, f.n));
    st = stats(s);
    CU_ASSERT_EQUAL(st.pack_ranged_reads, 0);
    CU_ASSERT_EQUAL(st.pack_fetches, 0);
    CU_ASSERT_EQUAL(st.pack_cache_hits, st.packs);
    vmt_store_close(s);
    free(url);
    fx_free(&f);
}

/* A lazy restore's fault on a cold host: one read request for the record,
 * no stat (its length is in the index), whatever the pack fetched behind
 * it costs afterwards. */
static void test_a_record_read_alone_costs_one_request(void)
{
    fixture f;
    static uint8_t out[PAGE], want[PAGE];
    void *dst[1] = {out};
    fx_new(&f, "rc-onereq", NPAGES, 7500);
    char *url = with(f.loc, NULL, "&cache=off");
    vmt_store *s = open_ro(url);
    vmt_store_stats a = stats(s);
    DDT_OK(vmt_store_get_pages(s, f.ids + f.n / 2, 1, dst));
    vmt_store_stats b = stats(s);
    ddt_random_page(f.seed + f.n / 2, want);
    CU_ASSERT_EQUAL(memcmp(out, want, PAGE), 0);
    CU_ASSERT_EQUAL(b.pack_ranged_reads - a.pack_ranged_reads, 1);
    CU_ASSERT_EQUAL(b.backend_reads - a.backend_reads, 1);
    CU_ASSERT_EQUAL(b.backend_stats - a.backend_stats, 0);
    /* The rest of the pack came behind, as whole-pack pieces. */
    DDT_OK(read_range(s, &f, 0, f.n));
    b = stats(s);
    CU_ASSERT_EQUAL(b.backend_stats - a.backend_stats, 0);
    CU_ASSERT(b.backend_fetch_reads >= b.pack_fetches);
    vmt_store_close(s);
    free(url);
    fx_free(&f);
}

typedef struct big_read {
    vmt_store *s;
    const fixture *f;
    size_t n;
    int rc;
    uint64_t ns;
} big_read;

/* Reads the first n pages of f in one batch (whole packs fetched). */
static void *big_read_main(void *arg)
{
    big_read *b = arg;
    void **dst = calloc(b->n, sizeof(*dst));
    uint8_t *buf = malloc(b->n * PAGE);
    uint64_t t0 = vmt_now_ns();
    b->rc = VMT_ENOMEM;
    if (dst && buf) {
        for (size_t i = 0; i < b->n; i++)
            dst[i] = buf + i * PAGE;
        b->rc = vmt_store_get_pages(b->s, b->f->ids, b->n, dst);
    }
    __atomic_store_n(&b->ns, vmt_now_ns() - t0, __ATOMIC_RELEASE);
    free(dst);
    free(buf);
    return NULL;
}

/*
 * A fault (a one-page read of a pack nobody fetches yet) while whole packs
 * are being fetched by the same handle returns long before they are in:
 * here under an eighth of the big read's time (measured: 0.5-3.3 ms against
 * 200-850 ms; with the old fetch settings, a fault waited behind every
 * piece in flight: 90-240 ms).  The fetches of two
 * 16 MiB packs at once kept at most 2 MiB in flight (before: 32 MiB).
 */
static void test_a_fault_does_not_wait_for_fetches(void)
{
    fixture f;
    static uint8_t out[PAGE], want[PAGE];
    void *dst[1] = {out};
    f.loc = ddt_store_small("rc-fault", 16u << 20);
    f.cdir = vmt_test_tmpdir("rcache");
    f.n = 12288; /* 48 MiB of random pages: 3 packs of 16 MiB */
    f.seed = 7900;
    f.ids = calloc(f.n, sizeof(*f.ids));
    CU_ASSERT_FATAL(f.cdir && f.ids);
    vmt_store *w = ddt_open(f.loc, false, 2);
    for (size_t i = 0; i < f.n; i += BATCH) {
        static uint8_t pages[BATCH][PAGE];
        const void *ptr[BATCH];
        for (size_t j = 0; j < BATCH; j++) {
            ddt_random_page(f.seed + i + j, pages[j]);
            ptr[j] = pages[j];
        }
        DDT_OK(vmt_store_put_pages(w, ptr, BATCH, f.ids + i, NULL, NULL));
    }
    DDT_OK(vmt_store_commit(w));
    vmt_store_close(w);
    char *url = with(f.loc, NULL, "&cache=off");
    vmt_store *s = open_ro(url);
    /* The big read covers the first two packs (4,000-odd pages each); the
     * fault reads the third. */
    big_read b = {.s = s, .f = &f, .n = 8000};
    pthread_t t;
    CU_ASSERT_FATAL(pthread_create(&t, NULL, big_read_main, &b) == 0);
    while (stats(s).backend_fetch_reads == 0 && !__atomic_load_n(&b.ns, __ATOMIC_ACQUIRE))
        usleep(200);
    uint64_t t0 = vmt_now_ns();
    DDT_OK(vmt_store_get_pages(s, f.ids + f.n - 100, 1, dst));
    uint64_t fault = vmt_now_ns() - t0;
    pthread_join(t, NULL);
    DDT_OK(b.rc);
    ddt_random_page(f.seed + f.n - 100, want);
    CU_ASSERT_EQUAL(memcmp(out, want, PAGE), 0);
    printf("\n    fault %.2f ms while fetching; the big read %.2f ms\n", (double)fault / 1e6,
           (double)b.ns / 1e6);
    CU_ASSERT(fault < b.ns / 8);
    vmt_store_stats st = stats(s);
    CU_ASSERT(st.pack_fetches >= 2);
    CU_ASSERT(st.backend_fetch_peak > 0);
    CU_ASSERT(st.backend_fetch_peak <= (2u << 20));
    CU_ASSERT(st.backend_fetch_reads >= 32); /* two packs of 16 MiB in pieces of 1 MiB */
    vmt_store_close(s);
    free(url);
    fx_free(&f);
}

static void test_two_processes_share_one_cache(void)
{
    fixture f;
    fx_new(&f, "rc-share", NPAGES, 6000);
    /* A bound below the data: both processes fill and evict at once. */
    char *url = with(f.loc, f.cdir, "&cache_size=3M&mem=2M");
    run_readers(2, url, &f, 4, false);
    size_t files, tmp;
    CU_ASSERT(cache_bytes(f.cdir, &files, &tmp) <= (3u << 20));
    CU_ASSERT(files >= 1);
    CU_ASSERT_EQUAL(tmp, 0);
    /* With room for everything, a third process reads it all locally. */
    free(url);
    url = cached(&f, "64M");
    run_readers(2, url, &f, 2, false);
    run_readers(1, url, &f, 1, true);
    free(url);
    fx_free(&f);
}

int main(void)
{
    if (!ddt_rados()) {
        printf("SKIP: the read cache belongs to RADOS stores (VMTREE_TEST_BACKEND=rados, "
               "ctest label rados)\n");
        return VMT_TEST_SKIP;
    }
    unsetenv("VMTREE_RADOS_CACHE");
    static const vmt_test_case cases[] = {
        {"a cold cache fills, later handles and processes read locally",
         test_cold_fills_warm_reads_locally},
        {"bad cache settings are refused", test_bad_settings_are_refused},
        {"a damaged cache file is fetched again", test_damaged_cache_file_is_fetched_again},
        {"the disk and memory bounds hold, reads stay right",
         test_bounds_hold_and_reads_stay_right},
        {"gc leaves nothing stale", test_gc_leaves_nothing_stale},
        {"a reused pack number is not served stale", test_reused_pack_number_is_not_served_stale},
        {"two processes share one cache", test_two_processes_share_one_cache},
        {"small reads do not wait for a pack", test_small_reads_do_not_wait_for_a_pack},
        {"a writer's views are bounded too", test_writer_views_are_bounded},
        {"a record read alone costs one request, no stat",
         test_a_record_read_alone_costs_one_request},
        {"a fault does not wait for the fetches in flight, which stay bounded",
         test_a_fault_does_not_wait_for_fetches},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/rcache", cases, NULL, NULL);
}
