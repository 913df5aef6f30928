/*
 * Part of `vmtree-bench rados`: restoring a snapshot's memory from a RADOS
 * store against a directory store, measured in the same run.
 *
 * A RAM image (64 MiB with --quick, else 256 MiB) of real file pages (every
 * fourth page zero; bench_corpus.c) is put into a fresh store of each kind
 * with its map (the snapshot/ API: what `vmtree rollback` restores), then
 * restored into a memfd mapping, as the VMM's guest RAM is, through a
 * read-only handle opened for each restore (so RADOS packs are fetched
 * again, as on a host that never read them).  The handle's open is not
 * counted (the `open` figure of the read-back part).  Per backend:
 *   restore_eager        ms until every page is in RAM
 *   restore_lazy_ready   ms until the RAM can be used (map read, uffd armed)
 *   restore_lazy_first   ms until, after that, a first read of a non-zero page
 *                        in the middle of RAM returns (the guest's first fault)
 *   restore_lazy_complete ms until the prefetcher has loaded every page
 * for: dir, rados (no cache), rados_cache_cold (an empty local read cache,
 * filled as it goes), rados_cache_warm (the cache already holds every pack,
 * written back to disk: syncfs after the cold restore).
 * Every figure is a median over the runs, with its ratio to the directory's
 * median of the same run set.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"
#include "vmtree/snapshot.h"

#define PAGE VMT_PAGE_SIZE
#define CORPUS_DIR "/usr/lib/x86_64-linux-gnu"
#define RUNS_MAX 16u

enum { K_DIR, K_RADOS, K_CCOLD, K_CWARM, K_COUNT };
enum { M_EAGER, M_READY, M_FIRST, M_DONE, M_COUNT };

static const char *kind_names[K_COUNT] = {"dir", "rados", "rados_cache_cold", "rados_cache_warm"};
static const char *metric_names[M_COUNT] = {"restore_eager", "restore_lazy_ready",
                                            "restore_lazy_first", "restore_lazy_complete"};

typedef struct rbench {
    uint8_t *img;
    uint64_t npages, probe; /* probe: the non-zero page read first */
    unsigned runs;
    double v[K_COUNT][M_COUNT][RUNS_MAX];
} rbench;

static int put_image(const char *loc, const rbench *b, vmt_id *root)
{
    vmt_store *s = NULL;
    vmt_store_config c;
    vmt_store_config_init(&c);
    c.pack_size = 16u << 20; /* the same on both backends */
    int rc = vmt_store_init(loc, &c);
    if (rc == 0)
        rc = vmt_store_open(&s, loc, NULL);
    if (rc == 0)
        rc = vmt_bench_store_image(s, b->img, b->npages, root);
    vmt_store_close(s);
    return rc;
}

/* One restore through a new read-only handle on loc; fills out[M_*] (ms)
 * for the mode; checks the RAM against the image. */
static int restore_once(const char *loc, const rbench *b, const vmt_id *root, vmt_restore_mode mode,
                        double *out)
{
    vmt_store *s = NULL;
    vmt_restore *h = NULL;
    vmt_restore_stats st = {0};
    vmt_store_open_opts so;
    vmt_store_open_opts_init(&so);
    so.read_only = true;
    uint64_t size = b->npages * PAGE;
    int fd = memfd_create("bench-rados-ram", MFD_CLOEXEC);
    uint8_t *ram = fd >= 0 && ftruncate(fd, (off_t)size) == 0
                       ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                       : MAP_FAILED;
    vmt_restore_opts o = {.mode = mode};
    int rc = ram == MAP_FAILED
                 ? vmt_error_set(VMT_ENOMEM, "guest RAM of %llu bytes", (unsigned long long)size)
                 : vmt_store_open(&s, loc, &so);
    uint64_t t0 = vmt_now_ns();
    if (rc == 0)
        rc = vmt_restore_open(&h, s, root, ram, fd, size, &o);
    if (rc == 0 && mode == VMT_RESTORE_LAZY) {
        volatile uint8_t first = ram[b->probe * PAGE + 17];
        (void)first;
        out[M_FIRST] = (double)(vmt_now_ns() - t0) / 1e6;
    }
    if (rc == 0)
        rc = vmt_restore_wait(h, 0);
    if (h)
        vmt_restore_get_stats(h, &st);
    if (rc == 0 && memcmp(ram, b->img, size) != 0)
        rc = vmt_error_set(VMT_ECORRUPT, "restored RAM differs from the image");
    if (mode == VMT_RESTORE_EAGER) {
        out[M_EAGER] = (double)st.complete_ns / 1e6;
    } else {
        out[M_READY] = (double)st.ready_ns / 1e6;
        out[M_DONE] = (double)st.complete_ns / 1e6;
    }
    vmt_restore_free(h);
    vmt_store_close(s);
    if (ram != MAP_FAILED)
        munmap(ram, size);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Both modes for kind k in run r. */
static int restore_kind(rbench *b, unsigned r, int k, const char *loc, const vmt_id *root)
{
    double out[M_COUNT] = {0};
    int rc = restore_once(loc, b, root, VMT_RESTORE_EAGER, out);
    /* A cold cache is cold once: its eager restore filled it. */
    if (rc == 0 && k != K_CCOLD)
        rc = restore_once(loc, b, root, VMT_RESTORE_LAZY, out);
    for (int m = 0; m < M_COUNT; m++)
        b->v[k][m][r] = out[m];
    return rc;
}

/* One run: a directory store and a RADOS store of the image, every kind. */
static int one_run(rbench *b, unsigned r, const char *dir, const char *url)
{
    char dloc[4096], rloc[4096], cloc[8320], cdir[4096];
    const char *q = strchr(url, '?');
    vmt_id droot, rroot;
    snprintf(dloc, sizeof(dloc), "%s/vmtree-bench-rrestore-%ld-%u", dir, (long)getpid(), r);
    snprintf(cdir, sizeof(cdir), "%s/vmtree-bench-rcache-%ld-%u", dir, (long)getpid(), r);
    snprintf(rloc, sizeof(rloc), "%.*s/bench-restore-%ld-%u%s",
             (int)(q ? q - url : (long)strlen(url)), url, (long)getpid(), r, q ? q : "?");
    snprintf(cloc, sizeof(cloc), "%s%scache=%s&cache_size=4G", rloc, q ? "&" : "", cdir);
    int rc = put_image(dloc, b, &droot);
    if (rc == 0)
        rc = put_image(rloc, b, &rroot);
    if (rc == 0)
        rc = restore_kind(b, r, K_DIR, dloc, &droot);
    if (rc == 0)
        rc = restore_kind(b, r, K_RADOS, rloc, &rroot);
    if (rc == 0)
        rc = restore_kind(b, r, K_CCOLD, cloc, &rroot);
    vmt_bench_syncdir(cdir); /* a later restore finds the files written back */
    if (rc == 0)
        rc = restore_kind(b, r, K_CWARM, cloc, &rroot);
    vmt_store_remove(dloc);
    vmt_store_remove(rloc);
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cdir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench rados: could not remove %s\n", cdir);
    return rc;
}

static void emit_all(rbench *b, double load)
{
    double med[K_COUNT][M_COUNT];
    for (int k = 0; k < K_COUNT; k++)
        for (int m = 0; m < M_COUNT; m++)
            med[k][m] = vmt_bench_median(b->v[k][m], b->runs);
    for (int k = 0; k < K_COUNT; k++) {
        for (int m = 0; m < M_COUNT; m++) {
            if (k == K_CCOLD && m != M_EAGER)
                continue;
            char ex[512];
            snprintf(ex, sizeof(ex),
                     "\"backend\":\"%s\",\"ratio_vs_dir\":%.2f,\"mem_mib\":%llu,\"runs\":%u,"
                     "\"pack_mib\":16,\"load1\":%.2f,\"corpus\":\"" CORPUS_DIR
                     " file pages + 25%% zero pages\"",
                     kind_names[k], med[K_DIR][m] > 0 ? med[k][m] / med[K_DIR][m] : 0,
                     (unsigned long long)(b->npages * PAGE >> 20), b->runs, load);
            vmt_bench_emit("rados", metric_names[m], med[k][m], "ms", ex);
        }
    }
}

int vmt_bench_rados_restore(const vmt_bench_opts *o, const char *dir, const char *url,
                            unsigned runs, double load)
{
    rbench *b = calloc(1, sizeof(*b));
    int rc = b ? 0 : -1;
    if (rc == 0) {
        b->runs = VMT_MIN(runs, RUNS_MAX);
        b->npages = (o->quick ? 64ull << 20 : 256ull << 20) / PAGE;
        b->img = malloc(b->npages * PAGE);
        rc = b->img ? vmt_bench_fill_image(b->img, b->npages, CORPUS_DIR) : -1;
    }
    /* The first non-zero page from the middle: the guest's first touch. */
    for (b->probe = b->npages / 2; rc == 0 && b->probe < b->npages; b->probe++) {
        static const uint8_t zero[PAGE];
        if (memcmp(b->img + b->probe * PAGE, zero, PAGE) != 0)
            break;
    }
    for (unsigned r = 0; rc == 0 && r < b->runs; r++) {
        rc = one_run(b, r, dir, url);
        if (rc != 0)
            fprintf(stderr, "bench rados (restore): %s\n", vmt_error_last());
    }
    if (rc == 0)
        emit_all(b, load);
    if (b)
        free(b->img);
    free(b);
    return rc;
}
