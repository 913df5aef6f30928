/*
 * vmtree-bench restore: restoring a snapshot's memory into guest RAM (a
 * MAP_SHARED memfd mapping, as the VMM has), DESIGN.md §6.
 *
 *   vmtree-bench restore [--quick] [--runs N] [--threads N] [--dir DIR]
 *                        [--mode eager|lazy|both] [--ram 4k|thp|both]
 *
 * The snapshot is a RAM image of 1 GiB (256 MiB with --quick) of realistic
 * content: one page in four is zero; the others are the pages, in order,
 * of the regular files under /usr/lib/x86_64-linux-gnu (shared libraries:
 * code, data, strings), cycling when they run out.  It is put in a fresh
 * store in DIR (default $TMPDIR or /tmp) with the store's default codec.
 * Reported, as medians over the runs, warm (the packs in the page cache):
 *   eager_throughput   GB/s (10^9 bytes) of non-zero pages restored
 *   eager_ram_rate     GB/s of guest RAM made ready
 *   eager_cpu_rate     GB of non-zero pages per CPU-second the process used
 *                      (all threads, the store's included): what the work
 *                      costs, whatever else the machine runs
 *   lazy_ready         ms until the RAM can be used (map loaded, uffd armed)
 *   lazy_complete      ms until the prefetcher has loaded every page
 * Each line says which RAM it was: "ram":"4k" (the memfd as the VMM maps it
 * by default) or "ram":"thp" (mapped 2 MiB aligned and given 2 MiB pages,
 * vmt_ram_advise_huge, as `vmtree run --huge-pages` does; eager restore then
 * writes straight into the mapping).  Where the host gives shared memory no
 * huge pages the thp line says so, skipped.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "vmtree/snapshot.h"

#define PAGE VMT_PAGE_SIZE
#define CORPUS_DIR "/usr/lib/x86_64-linux-gnu"
#define CORPUS_NAME "/usr/lib/x86_64-linux-gnu file pages + 25% zero pages"

typedef struct rcfg {
    unsigned threads, runs;
    bool eager, lazy;   /* which modes to measure (--mode) */
    bool ram4k, ramthp; /* which RAM (--ram) */
    bool huge;          /* the RAM of this pass */
    const char *dir;
    uint64_t npages;
} rcfg;

/* ---- the RAM image ------------------------------------------------------ */

int vmt_bench_store_image(vmt_store *s, const uint8_t *img, uint64_t npages, vmt_id *root)
{
    enum { CHUNK = 4096 };
    const void **ptr = calloc(CHUNK, sizeof(*ptr));
    vmt_id *ids = calloc(CHUNK, sizeof(*ids));
    vmt_map *m = NULL;
    int rc = ptr && ids ? vmt_map_new(&m, npages) : VMT_ENOMEM;

    for (uint64_t off = 0; rc == 0 && off < npages; off += CHUNK) {
        size_t n = (size_t)VMT_MIN((uint64_t)CHUNK, npages - off);
        for (size_t i = 0; i < n; i++)
            ptr[i] = img + (off + i) * PAGE;
        rc = vmt_store_put_pages(s, ptr, n, ids, NULL, NULL);
        for (size_t i = 0; rc == 0 && i < n; i++)
            vmt_map_set(m, off + i, &ids[i]);
    }
    if (rc == 0)
        rc = vmt_map_write(m, s, root, NULL, NULL);
    if (rc == 0)
        rc = vmt_store_commit(s);
    vmt_map_free(m);
    free(ptr);
    free(ids);
    return rc;
}

/* ---- one restore -------------------------------------------------------- */

typedef struct ram {
    int fd;
    uint8_t *p;
    uint64_t size;
} ram;

static int ram_new(ram *r, uint64_t size, bool huge)
{
    r->size = size;
    r->fd = memfd_create("bench-ram", MFD_CLOEXEC);
    if (r->fd < 0 || ftruncate(r->fd, (off_t)size) != 0)
        return -1;
    if (!huge) {
        r->p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
        return r->p == MAP_FAILED ? -1 : 0;
    }
    r->p = vmt_map_shared_aligned(r->fd, size);
    if (r->p == MAP_FAILED)
        return -1;
    return vmt_ram_advise_huge(r->p, size) == 0 ? 0 : -1;
}

static void ram_free(ram *r)
{
    if (r->p && r->p != MAP_FAILED)
        munmap(r->p, r->size);
    if (r->fd >= 0)
        close(r->fd);
}

/* CPU time the process has used, all threads (ns). */
static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

/* Restores once; *st the stats, *cpu the CPU time used; verifies against
 * img when given. */
static int restore_once(vmt_store *s, const vmt_id *root, const rcfg *c, vmt_restore_mode mode,
                        const uint8_t *img, vmt_restore_stats *st, uint64_t *cpu)
{
    ram r = {.fd = -1};
    vmt_restore *h = NULL;
    vmt_restore_opts o = {.mode = mode, .threads = c->threads, .ram_huge = c->huge};
    int rc = ram_new(&r, c->npages * PAGE, c->huge);
    uint64_t c0 = cpu_ns();
    if (rc == 0)
        rc = vmt_restore_open(&h, s, root, r.p, r.fd, r.size, &o);
    if (rc == 0)
        rc = vmt_restore_wait(h, 0);
    *cpu = cpu_ns() - c0;
    vmt_restore_get_stats(h, st);
    if (rc == 0 && img && memcmp(r.p, img, r.size) != 0) {
        fprintf(stderr, "vmtree-bench restore: restored memory differs from the image\n");
        rc = -1;
    }
    vmt_restore_free(h);
    ram_free(&r);
    if (rc)
        fprintf(stderr, "vmtree-bench restore: %s\n", vmt_error_last());
    return rc;
}

static void emit(const rcfg *c, const char *metric, double v, const char *unit, uint64_t nonzero)
{
    char extra[512];
    snprintf(extra, sizeof(extra),
             "\"mem_mib\":%llu,\"nonzero_mib\":%.0f,\"threads\":%u,\"runs\":%u,"
             "\"ram\":\"%s\",\"corpus\":\"%s\"",
             (unsigned long long)(c->npages * PAGE >> 20), (double)nonzero * PAGE / 1048576.0,
             c->threads, c->runs, c->huge ? "thp" : "4k", CORPUS_NAME);
    vmt_bench_emit("restore", metric, v, unit, extra);
}

static int measure(vmt_store *s, const vmt_id *root, const rcfg *c, const uint8_t *img)
{
    double eager[64], ram_rate[64], cpu_rate[64], ready[64], done[64];
    vmt_restore_stats st = {0};
    unsigned runs = VMT_MIN(c->runs, 64u);
    uint64_t cpu = 0;

    /* The first eager run also checks the result byte for byte. */
    for (unsigned i = 0; c->eager && i < runs; i++) {
        if (restore_once(s, root, c, VMT_RESTORE_EAGER, i == 0 ? img : NULL, &st, &cpu) != 0)
            return -1;
        eager[i] = (double)st.pages_total * PAGE / (double)st.complete_ns;
        ram_rate[i] = (double)c->npages * PAGE / (double)st.complete_ns;
        cpu_rate[i] = (double)st.pages_total * PAGE / (double)VMT_MAX(cpu, (uint64_t)1);
    }
    for (unsigned i = 0; c->lazy && i < runs; i++) {
        if (restore_once(s, root, c, VMT_RESTORE_LAZY, i == 0 ? img : NULL, &st, &cpu) != 0)
            return -1;
        ready[i] = (double)st.ready_ns / 1e6;
        done[i] = (double)st.complete_ns / 1e6;
    }
    if (c->eager) {
        emit(c, "eager_throughput", vmt_bench_median(eager, runs), "GB/s", st.pages_total);
        emit(c, "eager_ram_rate", vmt_bench_median(ram_rate, runs), "GB/s", st.pages_total);
        emit(c, "eager_cpu_rate", vmt_bench_median(cpu_rate, runs), "GB/cpu-s", st.pages_total);
    }
    if (c->lazy) {
        emit(c, "lazy_ready", vmt_bench_median(ready, runs), "ms", st.pages_total);
        emit(c, "lazy_complete", vmt_bench_median(done, runs), "ms", st.pages_total);
    }
    return 0;
}

/* The same on RAM with 2 MiB pages, where the host gives them. */
static int measure_thp(vmt_store *s, const vmt_id *root, rcfg *c, const uint8_t *img)
{
    ram probe = {.fd = -1};
    int rc = ram_new(&probe, VMT_HUGE_PAGE_SIZE, true);
    ram_free(&probe);
    if (rc) {
        vmt_bench_skip("restore", "eager_throughput", "ram thp", vmt_error_last());
        return 0;
    }
    c->huge = true;
    rc = measure(s, root, c, img);
    c->huge = false;
    return rc;
}

/* ---- the area ----------------------------------------------------------- */

static int parse_args(const vmt_bench_opts *o, rcfg *c)
{
    c->runs = o->runs;
    c->eager = c->lazy = true;
    c->ram4k = c->ramthp = true;
    c->npages = (o->quick ? 256ull << 20 : 1ull << 30) / PAGE;
    c->dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    for (int i = 0; i < o->argc; i++) {
        uint64_t v;
        if (!strcmp(o->argv[i], "--threads") && i + 1 < o->argc &&
            vmt_parse_u64(o->argv[i + 1], 0, 64, &v) == 0) {
            c->threads = (unsigned)v;
            i++;
        } else if (!strcmp(o->argv[i], "--dir") && i + 1 < o->argc) {
            c->dir = o->argv[++i];
        } else if (!strcmp(o->argv[i], "--mode") && i + 1 < o->argc) {
            const char *m = o->argv[++i];
            c->eager = !strcmp(m, "eager") || !strcmp(m, "both");
            c->lazy = !strcmp(m, "lazy") || !strcmp(m, "both");
            if (!c->eager && !c->lazy) {
                fprintf(stderr, "vmtree-bench restore: --mode eager|lazy|both\n");
                return -1;
            }
        } else if (!strcmp(o->argv[i], "--ram") && i + 1 < o->argc) {
            const char *m = o->argv[++i];
            c->ram4k = !strcmp(m, "4k") || !strcmp(m, "both");
            c->ramthp = !strcmp(m, "thp") || !strcmp(m, "both");
            if (!c->ram4k && !c->ramthp) {
                fprintf(stderr, "vmtree-bench restore: --ram 4k|thp|both\n");
                return -1;
            }
        } else {
            fprintf(stderr, "vmtree-bench restore: unknown option %s\n", o->argv[i]);
            return -1;
        }
    }
    return 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

int vmt_bench_restore(const vmt_bench_opts *o)
{
    rcfg c = {0};
    char *tmp = NULL, *dir = NULL;
    vmt_store *s = NULL;
    vmt_id root;
    uint8_t *img = NULL;
    int rc = parse_args(o, &c);

    if (rc == 0 && (asprintf(&tmp, "%s/vmtree-bench-restore-XXXXXX", c.dir) < 0 || !mkdtemp(tmp) ||
                    asprintf(&dir, "%s/store", tmp) < 0))
        rc = -1;
    if (rc == 0 && !(img = malloc(c.npages * PAGE)))
        rc = -1;
    if (rc == 0)
        rc = vmt_bench_fill_image(img, c.npages, CORPUS_DIR);
    if (rc == 0 && (vmt_store_init(dir, NULL) != 0 || vmt_store_open(&s, dir, NULL) != 0 ||
                    vmt_bench_store_image(s, img, c.npages, &root) != 0)) {
        fprintf(stderr, "vmtree-bench restore: %s\n", vmt_error_last());
        rc = -1;
    }
    if (rc == 0 && c.ram4k)
        rc = measure(s, &root, &c, img);
    if (rc == 0 && c.ramthp)
        rc = measure_thp(s, &root, &c, img);
    vmt_store_close(s);
    if (tmp)
        nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(img);
    free(tmp);
    free(dir);
    return rc ? 1 : 0;
}
