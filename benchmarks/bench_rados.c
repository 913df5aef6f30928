/*
 * vmtree-bench rados [--quick] [--runs N] [--url rados://POOL[/NS]?conf=..] [--dir DIR]
 *                    [--no-restore]
 *
 * The same real-content corpus (regular files of /usr/lib/x86_64-linux-gnu
 * and /usr/bin, non-zero pages, lz4) put into a fresh directory store and a
 * fresh RADOS store, with medians of --runs runs:
 *   ingest     put of every page + the commit, logical GB/s
 *   open       opening the store read-only again, ms
 *   read_cold  every page read back through that new handle, GB/s (RADOS:
 *              packs fetched over the network at first use; directory: from
 *              the page cache, the packs having just been written)
 *   read_warm  the same reads a second time, GB/s
 * and on RADOS, through the local read cache (docs/store-backends.md):
 *   read_cache_cold  every page through a new handle with an empty cache
 *                    directory (packs fetched and written to the cache), GB/s
 *   read_cache_warm  the same through another new handle: every pack mapped
 *                    from the cache, none fetched, GB/s
 * then the restore figures of bench_rados_restore.c (eager and lazy restore
 * from RADOS, with and without the cache, against a directory store).
 * The RADOS location comes from --url or $VMTREE_TEST_RADOS (a namespace
 * per run is added and removed); without one the area prints why and
 * exits 0 after the directory figures.
 */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>

#include "bench.h"
#include "vmtree/store.h"
#include "vmtree/util.h"

#define PAGE VMT_STORE_PAGE_SIZE
#define BATCH 4096u

typedef struct pages {
    uint8_t *buf;
    size_t n;
    const void **ptr;
    void **dst;
    uint8_t *out;
    vmt_id *ids;
} pages;

enum { F_INGEST, F_OPEN, F_COLD, F_WARM, F_CCOLD, F_CWARM, F_COUNT };

static void add_file(pages *p, size_t max, const char *path)
{
    struct stat st;
    static const uint8_t zero[PAGE];
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return; /* symlinks would repeat their target's pages */
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    while (p->n < max && fread(p->buf + p->n * PAGE, 1, PAGE, f) == PAGE) {
        if (memcmp(p->buf + p->n * PAGE, zero, PAGE) != 0)
            p->n++;
    }
    fclose(f);
}

static int load(pages *p, size_t max)
{
    static const char *pats[] = {"/usr/lib/x86_64-linux-gnu/*.so*", "/usr/bin/*"};
    p->buf = malloc(max * PAGE);
    p->out = malloc(max * PAGE);
    p->ptr = malloc(max * sizeof(*p->ptr));
    p->dst = malloc(max * sizeof(*p->dst));
    p->ids = malloc(max * sizeof(*p->ids));
    if (!p->buf || !p->out || !p->ptr || !p->dst || !p->ids)
        return -1;
    for (size_t i = 0; i < 2 && p->n < max; i++) {
        glob_t g;
        if (glob(pats[i], 0, NULL, &g) != 0)
            continue;
        for (size_t j = 0; j < g.gl_pathc && p->n < max; j++)
            add_file(p, max, g.gl_pathv[j]);
        globfree(&g);
    }
    for (size_t i = 0; i < p->n; i++) {
        p->ptr[i] = p->buf + i * PAGE;
        p->dst[i] = p->out + i * PAGE;
    }
    return p->n ? 0 : -1;
}

static void free_pages(pages *p)
{
    free(p->buf);
    free(p->out);
    free(p->ptr);
    free(p->dst);
    free(p->ids);
}

static double gbps(size_t n, uint64_t ns)
{
    return ns ? (double)n * PAGE / (double)ns : 0;
}

static int put_all(const char *loc, pages *p, double *f)
{
    vmt_store *s = NULL;
    uint64_t t0 = vmt_now_ns();
    int rc = vmt_store_open(&s, loc, NULL);
    for (size_t i = 0; rc == 0 && i < p->n; i += BATCH)
        rc = vmt_store_put_pages(s, p->ptr + i, VMT_MIN((size_t)BATCH, p->n - i), p->ids + i, NULL,
                                 NULL);
    if (rc == 0)
        rc = vmt_store_commit(s);
    f[F_INGEST] = gbps(p->n, vmt_now_ns() - t0);
    vmt_store_close(s);
    return rc;
}

/* Opens loc read-only and reads every page `passes` times: f[first] the
 * first pass, f[first + 1] the second; *fetches the packs fetched. */
static int read_all(const char *loc, pages *p, double *f, int first, int passes, uint64_t *fetches)
{
    vmt_store *s = NULL;
    vmt_store_open_opts o;
    vmt_store_stats st;
    vmt_store_open_opts_init(&o);
    o.read_only = true;
    uint64_t t0 = vmt_now_ns();
    int rc = vmt_store_open(&s, loc, &o);
    uint64_t t1 = vmt_now_ns();
    if (first == F_COLD)
        f[F_OPEN] = (double)(t1 - t0) / 1e6;
    for (int pass = 0; rc == 0 && pass < passes; pass++) {
        memset(p->out, 0, p->n * PAGE);
        t0 = vmt_now_ns();
        for (size_t i = 0; rc == 0 && i < p->n; i += BATCH)
            rc = vmt_store_get_pages(s, p->ids + i, VMT_MIN((size_t)BATCH, p->n - i), p->dst + i);
        f[first + pass] = gbps(p->n, vmt_now_ns() - t0);
    }
    if (rc == 0 && memcmp(p->buf, p->out, p->n * PAGE) != 0)
        rc = vmt_error_set(VMT_ECORRUPT, "read-back differs from what was put");
    if (rc == 0 && fetches && vmt_store_get_stats(s, &st) == 0)
        *fetches = st.pack_fetches;
    vmt_store_close(s);
    return rc;
}

void vmt_bench_syncdir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        syncfs(fd);
        close(fd);
    }
}

/* The reads through a local read cache in a new directory: cold, warm. */
static int read_cached(const char *loc, const char *dir, pages *p, double *f)
{
    char url[8320], cdir[4096], cmd[4200];
    uint64_t fetches = 0;
    snprintf(cdir, sizeof(cdir), "%s/vmtree-bench-rcache-%ld", dir, (long)getpid());
    snprintf(url, sizeof(url), "%s%scache=%s&cache_size=4G", loc, strchr(loc, '?') ? "&" : "?",
             cdir);
    int rc = read_all(url, p, f, F_CCOLD, 1, NULL);
    /* A later process finds the files written back, not being written. */
    vmt_bench_syncdir(cdir);
    if (rc == 0)
        rc = read_all(url, p, f, F_CWARM, 1, &fetches);
    if (rc == 0 && fetches)
        fprintf(stderr, "bench rados: %llu packs fetched through a warm cache (expected 0)\n",
                (unsigned long long)fetches);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cdir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench rados: could not remove %s\n", cdir);
    return rc;
}

/* One run on a fresh store at loc, removed afterwards; with a cache
 * directory (RADOS), the cached reads too. */
static int one_run(const char *loc, const char *cache_dir, pages *p, double *f)
{
    vmt_store_config c;
    vmt_store_config_init(&c);
    c.pack_size = 16u << 20; /* the same pack size on both backends */
    int rc = vmt_store_init(loc, &c);
    if (rc == 0)
        rc = put_all(loc, p, f);
    if (rc == 0)
        rc = read_all(loc, p, f, F_COLD, 2, NULL);
    if (rc == 0 && cache_dir)
        rc = read_cached(loc, cache_dir, p, f);
    int rm = vmt_store_remove(loc);
    return rc ? rc : rm;
}

static void emit(const char *backend, double med[F_COUNT], const pages *p, unsigned runs,
                 double load)
{
    static const char *names[F_COUNT] = {
        "ingest", "open", "read_cold", "read_warm", "read_cache_cold", "read_cache_warm"};
    char ex[512];
    snprintf(ex, sizeof(ex),
             "\"backend\":\"%s\",\"pages\":%zu,\"runs\":%u,\"codec\":\"lz4\",\"pack_mib\":16,"
             "\"load1\":%.2f,\"corpus\":\"os-files: /usr/lib/x86_64-linux-gnu/*.so* then "
             "/usr/bin/*, non-zero pages\"",
             backend, p->n, runs, load);
    for (int i = 0; i < F_COUNT; i++) {
        if (i < F_CCOLD || strcmp(backend, "rados") == 0)
            vmt_bench_emit("rados", names[i], med[i], i == F_OPEN ? "ms" : "GB/s", ex);
    }
}

static double load1(void)
{
    double l = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = 0;
        fclose(f);
    }
    return l;
}

/* Runs `runs` times on fresh stores under base (a directory or a pool
 * location, one namespace per run) and emits the medians. */
static int measure(const char *backend, const char *base, const char *dir, bool rados, pages *p,
                   unsigned runs)
{
    double v[F_COUNT][16], med[F_COUNT], f[F_COUNT];
    char loc[4096];
    for (unsigned r = 0; r < runs; r++) {
        const char *q = strchr(base, '?');
        if (rados)
            snprintf(loc, sizeof(loc), "%.*s/bench-%ld-%u%s",
                     (int)(q ? q - base : (long)strlen(base)), base, (long)getpid(), r, q ? q : "");
        else
            snprintf(loc, sizeof(loc), "%s/vmtree-bench-rados-%ld-%u", base, (long)getpid(), r);
        int rc = one_run(loc, rados ? dir : NULL, p, f);
        if (rc != 0) {
            fprintf(stderr, "bench rados (%s): %s\n", backend, vmt_error_last());
            return rc;
        }
        for (int i = 0; i < F_COUNT; i++)
            v[i][r] = f[i];
    }
    for (int i = 0; i < F_COUNT; i++)
        med[i] = vmt_bench_median(v[i], runs);
    emit(backend, med, p, runs, load1());
    return 0;
}

int vmt_bench_rados(const vmt_bench_opts *o)
{
    const char *url = getenv("VMTREE_TEST_RADOS"), *dir = getenv("TMPDIR");
    unsigned runs = o->runs ? o->runs : (o->quick ? 3 : 5);
    bool restore = true;
    dir = dir && *dir ? dir : "/tmp";
    for (int i = 0; i < o->argc; i++) {
        if (!strcmp(o->argv[i], "--url") && i + 1 < o->argc) {
            url = o->argv[++i];
        } else if (!strcmp(o->argv[i], "--dir") && i + 1 < o->argc) {
            dir = o->argv[++i];
        } else if (!strcmp(o->argv[i], "--no-restore")) {
            restore = false;
        } else {
            fprintf(stderr, "bench rados: unknown option %s (--url URL, --dir DIR, --no-restore)\n",
                    o->argv[i]);
            return -1;
        }
    }
    runs = VMT_MIN(runs, 16u);
    pages p = {0};
    size_t max = (o->quick ? 32u : 128u) << 8; /* 32 / 128 MiB */
    int rc = load(&p, max) == 0 ? 0 : -1;
    if (rc != 0)
        fprintf(stderr, "bench rados: no corpus\n");
    if (rc == 0)
        rc = measure("dir", dir, dir, false, &p, runs);
    if (rc == 0 && !url)
        fprintf(stderr, "bench rados: no RADOS location (--url or $VMTREE_TEST_RADOS, e.g. from "
                        "scripts/ceph-cluster.sh env DIR): RADOS figures skipped\n");
    else if (rc == 0)
        rc = measure("rados", url, dir, true, &p, runs);
    free_pages(&p);
#ifdef VMT_BENCH_HAVE_RESTORE
    if (rc == 0 && url && restore)
        rc = vmt_bench_rados_restore(o, dir, url, runs, load1());
#else
    if (rc == 0 && url && restore)
        vmt_bench_skip("rados", "restore_eager", "restore from RADOS",
                       "this build has no snapshot/ library");
#endif
    return rc;
}
