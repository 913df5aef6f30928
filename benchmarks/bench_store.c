/*
 * vmtree-bench store: page store ingest and read-back throughput, and the
 * dictionary compression ratio (DESIGN.md §6 targets).
 *
 *   vmtree-bench store [--quick] [--runs N] [--threads N] [--dir DIR]
 *
 * Every run uses a fresh store in DIR (default $TMPDIR or /tmp).  Figures
 * are medians over the runs, in GB/s (10^9 bytes) of page content.  The
 * compressible corpus is real content: the test guests' images where built,
 * then files shipped with the OS (/usr/lib shared libraries and /usr/bin),
 * zero pages left out; its name is in each line's "corpus" field.
 * Ingest is timed without the commit; the commit is reported on its own.
 * Read-back is warm (pack data in the page cache), as after a snapshot.
 */
#include <dirent.h>
#include <ftw.h>
#include <glob.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lz4.h>
#include <zstd.h>

#include "bench.h"
#include "vmtree/store.h"
#include "vmtree/util.h"

#define PAGE VMT_STORE_PAGE_SIZE

typedef struct corpus {
    uint8_t *buf;
    size_t npages;
    const void **ptr;
    const char *name;
} corpus;

typedef struct cfg {
    unsigned threads;
    const char *dir;
    size_t zero_pages, corpus_pages, random_pages;
    unsigned runs;
} cfg;

static double gbps(size_t pages, uint64_t ns)
{
    return ns ? (double)pages * PAGE / (double)ns : 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static size_t add_file(corpus *c, size_t max, const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return c->npages; /* symlinks would repeat their target's pages */
    FILE *f = fopen(path, "rb");
    uint8_t page[PAGE];
    static const uint8_t zero[PAGE];
    if (!f)
        return c->npages;
    while (c->npages < max && fread(page, 1, PAGE, f) == PAGE) {
        if (memcmp(page, zero, PAGE) == 0)
            continue;
        memcpy(c->buf + c->npages * PAGE, page, PAGE);
        c->npages++;
    }
    fclose(f);
    return c->npages;
}

static void add_glob(corpus *c, size_t max, const char *pattern)
{
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0)
        return;
    for (size_t i = 0; i < g.gl_pathc && c->npages < max; i++)
        add_file(c, max, g.gl_pathv[i]);
    globfree(&g);
}

typedef struct keyed {
    vmt_id id;
    size_t idx;
} keyed;

static int cmp_keyed(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    int r = memcmp(x->id.b, y->id.b, sizeof(x->id.b));
    return r ? r : (x->idx > y->idx) - (x->idx < y->idx);
}

static int cmp_idx(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Drops repeated pages, keeping first occurrences in order: "new pages"
 * must all be new. */
static int unique_pages(corpus *c)
{
    keyed *k = malloc(c->npages * sizeof(*k));
    if (!k)
        return -1;
    for (size_t i = 0; i < c->npages; i++) {
        vmt_id_of(c->buf + i * PAGE, PAGE, &k[i].id);
        k[i].idx = i;
    }
    qsort(k, c->npages, sizeof(*k), cmp_keyed);
    size_t n = 0;
    for (size_t i = 0; i < c->npages; i++) {
        if (i == 0 || !vmt_id_equal(&k[i].id, &k[i - 1].id))
            k[n++] = k[i];
    }
    qsort(k, n, sizeof(*k), cmp_idx);
    for (size_t i = 0; i < n; i++)
        memmove(c->buf + i * PAGE, c->buf + k[i].idx * PAGE, PAGE);
    c->npages = n;
    free(k);
    return 0;
}

static int load_corpus(corpus *c, size_t max, const vmt_bench_opts *o)
{
    char pat[4096];
    size_t raw = 2 * max; /* read twice the target: repeats are dropped */
    c->buf = malloc(raw * PAGE);
    c->ptr = malloc(max * sizeof(*c->ptr));
    if (!c->buf || !c->ptr)
        return -1;
    c->name = "os-files: /usr/lib/x86_64-linux-gnu/*.so* then /usr/bin/*, regular files, unique "
              "non-zero pages";
    snprintf(pat, sizeof(pat), "%s/guests/*.elf", o->build_dir);
    add_glob(c, raw, pat);
    if (c->npages > 0)
        c->name = "guest images + os-files: /usr/lib/x86_64-linux-gnu/*.so* then /usr/bin/*, "
                  "unique non-zero pages";
    add_glob(c, raw, "/usr/lib/x86_64-linux-gnu/*.so*");
    add_glob(c, raw, "/usr/bin/*");
    if (unique_pages(c) != 0)
        return -1;
    c->npages = VMT_MIN(c->npages, max);
    for (size_t i = 0; i < c->npages; i++)
        c->ptr[i] = c->buf + i * PAGE;
    return c->npages ? 0 : -1;
}

static int fresh_store(const cfg *k, char *path, size_t cap, vmt_store **s, int codec)
{
    vmt_store_open_opts oo;
    snprintf(path, cap, "%s/vmtree-bench-store-XXXXXX", k->dir);
    if (!mkdtemp(path))
        return -1;
    if (vmt_store_init(path, NULL) != 0)
        return -1;
    vmt_store_open_opts_init(&oo);
    oo.threads = k->threads;
    oo.codec = codec;
    return vmt_store_open(s, path, &oo);
}

static void drop_store(vmt_store *s, const char *path)
{
    vmt_store_close(s);
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t timed_put(vmt_store *s, const void **p, size_t n, vmt_id *ids, int *rc)
{
    uint64_t t0 = vmt_now_ns();
    *rc = vmt_store_put_pages(s, p, n, ids, NULL, NULL);
    return vmt_now_ns() - t0;
}

enum {
    M_ZERO,
    M_STORED,
    M_NEW,
    M_COMMIT,
    M_RANDOM,
    M_READ,
    M_RATIO,
    M_NEW8,
    M_RATIO8,
    M_LZ4C,
    M_LZ4D,
    M_COUNT
};

typedef struct bufs {
    uint8_t *zero, *random, *out;
    const void **zp, **rp;
    void **dst;
    vmt_id *ids;
} bufs;

/* The bound: LZ4 alone, one thread, page by page, on the same corpus. */
static void lz4_reference(const corpus *c, double *m)
{
    void *state = malloc((size_t)LZ4_sizeofState());
    size_t cap = (size_t)LZ4_compressBound(PAGE);
    char *z = malloc(c->npages * cap);
    int *zl = malloc(c->npages * sizeof(int));
    uint8_t page[PAGE];
    if (!state || !z || !zl)
        goto out;
    uint64_t t0 = vmt_now_ns();
    for (size_t i = 0; i < c->npages; i++)
        zl[i] = LZ4_compress_fast_extState(state, (const char *)c->ptr[i], z + i * cap, PAGE,
                                           (int)cap, 1);
    uint64_t t1 = vmt_now_ns();
    for (size_t i = 0; i < c->npages; i++)
        LZ4_decompress_safe(z + i * cap, (char *)page, zl[i], PAGE);
    uint64_t t2 = vmt_now_ns();
    m[M_LZ4C] = gbps(c->npages, t1 - t0);
    m[M_LZ4D] = gbps(c->npages, t2 - t1);
out:
    free(state);
    free(z);
    free(zl);
}

/* New pages again with LZ4 acceleration 8: speed against ratio. */
static int accel8_run(const cfg *k, const corpus *c, vmt_id *ids, double *m)
{
    char path[4096];
    vmt_store *s;
    vmt_store_stats st;
    vmt_store_put_opts po;
    vmt_store_put_opts_init(&po);
    po.lz4_accel = 8;
    if (fresh_store(k, path, sizeof(path), &s, VMT_CODEC_LZ4) != 0)
        return -1;
    uint64_t t0 = vmt_now_ns();
    int rc = vmt_store_put_pages(s, c->ptr, c->npages, ids, NULL, &po);
    m[M_NEW8] = gbps(c->npages, vmt_now_ns() - t0);
    vmt_store_get_stats(s, &st);
    m[M_RATIO8] = st.compression_ratio;
    drop_store(s, path);
    return rc;
}

/* One run: every ingest figure and the read-back. */
static int one_run(const cfg *k, const corpus *c, bufs *b, double *m)
{
    char path[4096];
    vmt_store *s;
    vmt_store_stats st;
    int rc;
    if (fresh_store(k, path, sizeof(path), &s, VMT_CODEC_LZ4) != 0)
        return -1;
    m[M_ZERO] = gbps(k->zero_pages, timed_put(s, b->zp, k->zero_pages, b->ids, &rc));
    m[M_NEW] = rc ? 0 : gbps(c->npages, timed_put(s, c->ptr, c->npages, b->ids, &rc));
    uint64_t t0 = vmt_now_ns();
    rc = rc ? rc : vmt_store_commit(s);
    m[M_COMMIT] = (double)(vmt_now_ns() - t0) / 1e6;
    m[M_STORED] = rc ? 0 : gbps(c->npages, timed_put(s, c->ptr, c->npages, b->ids, &rc));
    t0 = vmt_now_ns();
    rc = rc ? rc : vmt_store_get_pages(s, b->ids, c->npages, b->dst);
    m[M_READ] = gbps(c->npages, vmt_now_ns() - t0);
    if (rc == 0 && memcmp(b->out, c->buf, c->npages * PAGE) != 0) {
        fprintf(stderr, "vmtree-bench store: read-back differs from what was put\n");
        rc = -1;
    }
    vmt_store_get_stats(s, &st);
    m[M_RATIO] = st.compression_ratio;
    vmt_id *rid = b->ids;
    m[M_RANDOM] = rc ? 0 : gbps(k->random_pages, timed_put(s, b->rp, k->random_pages, rid, &rc));
    if (rc)
        fprintf(stderr, "vmtree-bench store: %s\n", vmt_error_last());
    drop_store(s, path);
    if (rc == 0)
        rc = accel8_run(k, c, b->ids, m);
    lz4_reference(c, m);
    return rc;
}

/* ---- dictionary ratio ---- */

/* Trains on the first half of the corpus (put into the store), then puts the
 * second half with zstd-dict; compares with one zstd -1 stream of that half. */
static int dict_ratio(const cfg *k, const corpus *c, vmt_id *ids, double *r_dict, double *r_stream,
                      double *r_zstd, double *speed)
{
    char path[4096];
    vmt_store *s;
    vmt_store_stats st;
    size_t half = c->npages / 2, rest = c->npages - half;
    if (fresh_store(k, path, sizeof(path), &s, VMT_CODEC_LZ4) != 0)
        return -1;
    vmt_store_put_opts po;
    vmt_store_put_opts_init(&po);
    int rc = vmt_store_put_pages(s, c->ptr, half, ids, NULL, NULL);
    rc = rc ? rc : vmt_store_train_dict(s, NULL, NULL);
    vmt_store_get_stats(s, &st);
    uint64_t before = st.codec[VMT_CODEC_ZSTD_DICT].stored_bytes;
    uint64_t lbefore = st.codec[VMT_CODEC_ZSTD_DICT].logical_bytes;
    uint64_t rawb = st.codec[VMT_CODEC_RAW].logical_bytes,
             raws = st.codec[VMT_CODEC_RAW].stored_bytes;
    po.codec = VMT_CODEC_ZSTD_DICT;
    uint64_t t0 = vmt_now_ns();
    rc = rc ? rc : vmt_store_put_pages(s, c->ptr + half, rest, ids, NULL, &po);
    *speed = gbps(rest, vmt_now_ns() - t0);
    vmt_store_get_stats(s, &st);
    /* Pages that compression did not pay for are stored raw: count them. */
    uint64_t logical = st.codec[VMT_CODEC_ZSTD_DICT].logical_bytes - lbefore +
                       st.codec[VMT_CODEC_RAW].logical_bytes - rawb;
    uint64_t stored = st.codec[VMT_CODEC_ZSTD_DICT].stored_bytes - before +
                      st.codec[VMT_CODEC_RAW].stored_bytes - raws;
    *r_dict = stored ? (double)logical / (double)stored : 0;
    drop_store(s, path);
    /* zstd without a dictionary, per page, for reference. */
    if (rc == 0 && fresh_store(k, path, sizeof(path), &s, VMT_CODEC_ZSTD) == 0) {
        vmt_store_put_pages(s, c->ptr + half, rest, ids, NULL, NULL);
        vmt_store_get_stats(s, &st);
        *r_zstd = st.logical_bytes
                      ? (double)st.logical_bytes / (double)(st.stored_bytes - 40 * st.objects)
                      : 0;
        drop_store(s, path);
    }
    size_t cap = ZSTD_compressBound(rest * PAGE);
    void *z = malloc(cap);
    size_t n = z ? ZSTD_compress(z, cap, c->buf + half * PAGE, rest * PAGE, 1) : 0;
    *r_stream = z && !ZSTD_isError(n) ? (double)(rest * PAGE) / (double)n : 0;
    free(z);
    return rc;
}

static int parse_args(const vmt_bench_opts *o, cfg *k)
{
    uint64_t v;
    const char *tmp = getenv("TMPDIR");
    k->threads = 2;
    k->dir = tmp && *tmp ? tmp : "/tmp";
    k->runs = o->runs;
    k->zero_pages = (o->quick ? 256u : 1024u) << 8; /* 256 MiB / 1 GiB */
    k->corpus_pages = (o->quick ? 64u : 256u) << 8; /* 64 / 256 MiB */
    k->random_pages = (o->quick ? 32u : 128u) << 8; /* 32 / 128 MiB */
    for (int i = 0; i < o->argc; i++) {
        if (!strcmp(o->argv[i], "--threads") && i + 1 < o->argc) {
            if (vmt_parse_u64(o->argv[++i], 1, 256, &v) != 0)
                return -1;
            k->threads = (unsigned)v;
        } else if (!strcmp(o->argv[i], "--dir") && i + 1 < o->argc) {
            k->dir = o->argv[++i];
        } else {
            fprintf(stderr,
                    "vmtree-bench store: unknown option '%s'\n"
                    "options: --threads N, --dir DIR\n",
                    o->argv[i]);
            return -1;
        }
    }
    return 0;
}

static int alloc_bufs(const cfg *k, const corpus *c, bufs *b)
{
    size_t nid = VMT_MAX(VMT_MAX(k->zero_pages, c->npages), k->random_pages);
    b->zero = malloc(k->zero_pages * PAGE);
    b->random = malloc(k->random_pages * PAGE);
    b->out = malloc(c->npages * PAGE);
    b->zp = malloc(k->zero_pages * sizeof(*b->zp));
    b->rp = malloc(k->random_pages * sizeof(*b->rp));
    b->dst = malloc(c->npages * sizeof(*b->dst));
    b->ids = malloc(nid * sizeof(*b->ids));
    if (!b->zero || !b->random || !b->out || !b->zp || !b->rp || !b->dst || !b->ids)
        return -1;
    memset(b->zero, 0, k->zero_pages * PAGE); /* real, touched memory */
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < k->random_pages * PAGE / 8; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(b->random + i * 8, &x, 8);
    }
    for (size_t i = 0; i < k->zero_pages; i++)
        b->zp[i] = b->zero + i * PAGE;
    for (size_t i = 0; i < k->random_pages; i++)
        b->rp[i] = b->random + i * PAGE;
    for (size_t i = 0; i < c->npages; i++)
        b->dst[i] = b->out + i * PAGE;
    return 0;
}

static void free_bufs(bufs *b)
{
    free(b->zero);
    free(b->random);
    free(b->out);
    free(b->zp);
    free(b->rp);
    free(b->dst);
    free(b->ids);
}

static void emit_all(const cfg *k, const corpus *c, double med[M_COUNT])
{
    char ex[512];
    snprintf(ex, sizeof(ex), "\"threads\":%u,\"runs\":%u,\"pages\":%zu,\"target\":8", k->threads,
             k->runs, k->zero_pages);
    vmt_bench_emit("store", "ingest_zero_pages", med[M_ZERO], "GB/s", ex);
    snprintf(ex, sizeof(ex),
             "\"threads\":%u,\"runs\":%u,\"pages\":%zu,\"corpus\":\"%s\","
             "\"target\":4",
             k->threads, k->runs, c->npages, c->name);
    vmt_bench_emit("store", "ingest_stored_pages", med[M_STORED], "GB/s", ex);
    snprintf(ex, sizeof(ex),
             "\"threads\":%u,\"runs\":%u,\"pages\":%zu,\"corpus\":\"%s\","
             "\"codec\":\"lz4\",\"target\":1.5",
             k->threads, k->runs, c->npages, c->name);
    vmt_bench_emit("store", "ingest_new_pages_lz4", med[M_NEW], "GB/s", ex);
    snprintf(ex, sizeof(ex),
             "\"threads\":%u,\"runs\":%u,\"pages\":%zu,\"corpus\":\"%s\","
             "\"codec\":\"lz4\"",
             k->threads, k->runs, c->npages, c->name);
    vmt_bench_emit("store", "commit_after_new_pages", med[M_COMMIT], "ms", ex);
    vmt_bench_emit("store", "compression_ratio_lz4", med[M_RATIO], "x", ex);
    snprintf(ex, sizeof(ex),
             "\"threads\":%u,\"runs\":%u,\"pages\":%zu,\"corpus\":\"%s\","
             "\"codec\":\"lz4\",\"lz4_accel\":8",
             k->threads, k->runs, c->npages, c->name);
    vmt_bench_emit("store", "ingest_new_pages_lz4_accel8", med[M_NEW8], "GB/s", ex);
    vmt_bench_emit("store", "compression_ratio_lz4_accel8", med[M_RATIO8], "x", ex);
    snprintf(ex, sizeof(ex),
             "\"threads\":1,\"runs\":%u,\"pages\":%zu,\"corpus\":\"%s\","
             "\"what\":\"LZ4 alone, per 4 KiB page, no store\"",
             k->runs, c->npages, c->name);
    vmt_bench_emit("store", "reference_lz4_compress_1thread", med[M_LZ4C], "GB/s", ex);
    vmt_bench_emit("store", "reference_lz4_decompress_1thread", med[M_LZ4D], "GB/s", ex);
    snprintf(ex, sizeof(ex), "\"threads\":%u,\"runs\":%u,\"pages\":%zu,\"stored\":\"raw\"",
             k->threads, k->runs, k->random_pages);
    vmt_bench_emit("store", "ingest_random_pages", med[M_RANDOM], "GB/s", ex);
    snprintf(ex, sizeof(ex),
             "\"threads\":%u,\"runs\":%u,\"pages\":%zu,\"corpus\":\"%s\","
             "\"cache\":\"warm\",\"target\":3",
             k->threads, k->runs, c->npages, c->name);
    vmt_bench_emit("store", "readback_pages", med[M_READ], "GB/s", ex);
}

static void emit_dict(const cfg *k, const corpus *c, vmt_id *ids)
{
    double rd = 0, rs = 0, rz = 0, speed = 0;
    char ex[512];
    vmt_store_config sc;
    vmt_store_config_init(&sc);
    int level = sc.zstd_level;
    if (dict_ratio(k, c, ids, &rd, &rs, &rz, &speed) != 0) {
        fprintf(stderr, "vmtree-bench store: dictionary: %s\n", vmt_error_last());
        return;
    }
    snprintf(ex, sizeof(ex),
             "\"corpus\":\"%s\",\"pages\":%zu,\"trained_on\":\"first half\","
             "\"measured_on\":\"second half\",\"zstd_level\":%d",
             c->name, c->npages - c->npages / 2, level);
    vmt_bench_emit("store", "ratio_zstd_dict_per_page", rd, "x", ex);
    vmt_bench_emit("store", "ratio_zstd_per_page", rz, "x", ex);
    vmt_bench_emit("store", "ratio_zstd1_whole_stream", rs, "x", ex);
    vmt_bench_emit("store", "ingest_new_pages_zstd_dict", speed, "GB/s", ex);
    snprintf(ex, sizeof(ex), "\"corpus\":\"%s\",\"target\":0.9", c->name);
    vmt_bench_emit("store", "dict_vs_stream_ratio", rs > 0 ? rd / rs : 0, "fraction", ex);
}

int vmt_bench_store(const vmt_bench_opts *o)
{
    cfg k;
    corpus c = {0};
    bufs b = {0};
    int rc = parse_args(o, &k);
    if (rc == 0 && load_corpus(&c, k.corpus_pages, o) != 0)
        rc = -1;
    if (rc == 0 && alloc_bufs(&k, &c, &b) != 0)
        rc = -1;
    double *m = calloc((size_t)k.runs * M_COUNT, sizeof(double));
    double med[M_COUNT], col[1000];
    for (unsigned r = 0; rc == 0 && m && r < k.runs; r++)
        rc = one_run(&k, &c, &b, m + (size_t)r * M_COUNT);
    if (rc == 0 && m) {
        for (int i = 0; i < M_COUNT; i++) {
            for (unsigned r = 0; r < k.runs; r++)
                col[r] = m[(size_t)r * M_COUNT + i];
            med[i] = vmt_bench_median(col, k.runs);
        }
        emit_all(&k, &c, med);
        emit_dict(&k, &c, b.ids);
    } else {
        fprintf(stderr, "vmtree-bench store: setup failed: %s\n", vmt_error_last());
    }
    free(m);
    free_bufs(&b);
    free(c.buf);
    free(c.ptr);
    return rc == 0 ? 0 : 1;
}
