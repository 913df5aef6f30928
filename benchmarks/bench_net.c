/*
 * vmtree-bench net: the migration wire over loopback TCP (migrate/net).
 *
 *   vmtree-bench net [--quick] [--runs N] [--mib N] [--rdma-addr ADDR]
 *
 * - page_throughput: guest pages moved from a source RAM buffer to a
 *   destination RAM buffer through an authenticated session of 1, 2 and 4
 *   streams, in MB/s (10^6 bytes) of guest memory, per encoding: raw, lz4,
 *   zstd (per page), and xbzrle (a second round of the same pages, each
 *   dirtied in a few places, sent as deltas against the first).  One sender
 *   thread and one receiver thread per stream; the destination parses,
 *   checks and applies every page, and the result is compared with the
 *   source.  Session setup is not timed.  wire_ratio = batch payload bytes /
 *   guest bytes.
 *   The same runs go over RDMA (rdma://ADDR, ADDR from --rdma-addr or
 *   $VMTREE_RDMA_ADDR, default 127.0.0.1) where an RDMA device exists,
 *   printed next to TCP's ("transport" field); without one a single JSON
 *   line with "skipped" says why.
 * - transport_throughput: the bare byte stream (no frames, no encodings),
 *   1 MiB sends, TCP and RDMA; and bulk_place_throughput: RDMA WRITE
 *   placement into exposed memory (RDMA only).  See bench_net_tp.c.
 * - handshake: session setup time (1 stream) with a pre-shared key, and with
 *   TLS 1.3 plus the key.
 * Page content is real: files under /usr/lib, in 4 KiB pages.  Medians over
 * the runs.  Both ends run on this machine, so the figures are what two
 * cores do with both sides at once.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "vmtree/net.h"

#define PAGE VMT_NET_PAGE_SIZE
#define BATCH_PAGES 256
#define MAX_STREAMS 4

static const uint8_t bench_psk[] = "vmtree-bench net pre-shared key!";

/* ---- corpus ---------------------------------------------------------------- */

typedef struct corpus {
    uint8_t *ram[2]; /* round 0 content, and round 1: the same, dirtied */
    size_t npages, have;
} corpus;

static void add_file(corpus *c, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    while (c->have < c->npages) {
        ssize_t n = read(fd, c->ram[0] + c->have * PAGE, PAGE);
        if (n != (ssize_t)PAGE)
            break;
        c->have++;
    }
    close(fd);
}

static void walk(corpus *c, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d)
        return;
    while (c->have < c->npages && (e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (lstat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 4)
            walk(c, path, depth + 1);
        else if (S_ISREG(st.st_mode) && st.st_size >= PAGE)
            add_file(c, path);
    }
    closedir(d);
}

static int corpus_load(corpus *c, size_t npages)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    c->npages = npages;
    c->have = 0;
    c->ram[0] = malloc(npages * PAGE);
    c->ram[1] = malloc(npages * PAGE);
    if (!c->ram[0] || !c->ram[1])
        return -1;
    walk(c, "/usr/lib", 0);
    for (; c->have < c->npages; c->have++) /* short of files: text-like filler */
        for (size_t i = 0; i < PAGE; i++)
            c->ram[0][c->have * PAGE + i] = (uint8_t)("vmtree bench filler "[i % 20]);
    memcpy(c->ram[1], c->ram[0], npages * PAGE);
    for (size_t p = 0; p < npages; p++) /* a kvstore-like guest: a few words change */
        for (int k = 0; k < 4; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            c->ram[1][p * PAGE + (s % (PAGE - 8))] += (uint8_t)(k + 1);
        }
    return 0;
}

/* ---- one transfer ------------------------------------------------------------ */

typedef struct xfer {
    const corpus *c;
    vmt_net_scheme scheme;
    const char *addr;
    unsigned streams, rounds;
    vmt_batch_opts bopts;
    bool xbzrle;
    uint8_t *dst;
    vmt_listener *l;
    vmt_session *src, *dstn;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned done[2]; /* streams through round r at the destination */
    uint64_t wire;    /* payload bytes of the timed round */
    int err;
} xfer;

typedef struct stream_job {
    xfer *x;
    unsigned k;
    vmt_batch_writer *w;
    vmt_xbzrle_cache *cache;
    pthread_t tid;
    int rc;
} stream_job;

static void set_err(xfer *x, int rc)
{
    pthread_mutex_lock(&x->lock);
    if (rc && !x->err) {
        x->err = rc;
        fprintf(stderr, "vmtree-bench net: %s\n", vmt_error_last());
    }
    pthread_cond_broadcast(&x->cond);
    pthread_mutex_unlock(&x->lock);
}

static int send_round(stream_job *j, unsigned r)
{
    xfer *x = j->x;
    const uint8_t *p;
    size_t len;
    uint64_t before = vmt_batch_writer_stats(j->w)->payload_bytes;
    int rc = 0;
    vmt_batch_writer_begin(j->w, r);
    for (size_t pfn = j->k; pfn < x->c->npages && rc == 0; pfn += x->streams) {
        rc = vmt_batch_writer_add(j->w, pfn, x->c->ram[r] + pfn * PAGE);
        if (rc == 0 && vmt_batch_writer_count(j->w) == BATCH_PAGES &&
            (rc = vmt_batch_writer_finish(j->w, &p, &len)) == 0) {
            rc = vmt_session_send_batch(x->src, j->k, p, len);
            vmt_batch_writer_begin(j->w, r);
        }
    }
    if (rc == 0 && vmt_batch_writer_count(j->w) &&
        (rc = vmt_batch_writer_finish(j->w, &p, &len)) == 0)
        rc = vmt_session_send_batch(x->src, j->k, p, len);
    vmt_wire_msg m = {.type = VMT_WIRE_ROUND_END};
    m.u.round_end.round = r;
    if (rc == 0)
        rc = vmt_session_send(x->src, j->k, &m);
    pthread_mutex_lock(&x->lock);
    if (r == x->rounds - 1)
        x->wire += vmt_batch_writer_stats(j->w)->payload_bytes - before;
    pthread_mutex_unlock(&x->lock);
    return rc;
}

/* Waits until the destination finished round r on every stream. */
static int wait_round(xfer *x, unsigned r)
{
    pthread_mutex_lock(&x->lock);
    while (x->done[r] < x->streams && !x->err)
        pthread_cond_wait(&x->cond, &x->lock);
    int rc = x->err;
    pthread_mutex_unlock(&x->lock);
    return rc;
}

static void *sender(void *arg)
{
    stream_job *j = arg;
    for (unsigned r = 0; r < j->x->rounds && j->rc == 0; r++) {
        j->rc = send_round(j, r);
        if (j->rc == 0 && r + 1 < j->x->rounds)
            j->rc = wait_round(j->x, r); /* round 0 is applied before round 1 starts */
    }
    set_err(j->x, j->rc);
    return NULL;
}

static int apply_batch(stream_job *j, vmt_batch_reader *rd, const vmt_frame *f)
{
    int rc = vmt_batch_reader_parse(rd, f->payload, f->len);
    for (size_t i = 0; rc == 0 && i < vmt_batch_reader_count(rd); i++) {
        const vmt_page_rec *rec = vmt_batch_reader_rec(rd, i);
        rc = vmt_batch_reader_apply(rd, rec, j->x->dst + rec->pfn * PAGE);
    }
    return rc;
}

static void *receiver(void *arg)
{
    stream_job *j = arg;
    xfer *x = j->x;
    vmt_batch_reader *rd = NULL;
    vmt_frame f;
    unsigned r = 0;
    vmt_frame_init(&f);
    int rc = vmt_batch_reader_new(&rd, x->c->npages);
    while (rc == 0 && r < x->rounds) {
        rc = vmt_session_recv(x->dstn, j->k, &f, 30000);
        if (rc == 0 && f.type == VMT_WIRE_PAGE_BATCH)
            rc = apply_batch(j, rd, &f);
        else if (rc == 0 && f.type == VMT_WIRE_ROUND_END) {
            pthread_mutex_lock(&x->lock);
            x->done[r++]++;
            pthread_cond_broadcast(&x->cond);
            pthread_mutex_unlock(&x->lock);
        }
    }
    j->rc = rc;
    set_err(x, rc);
    vmt_frame_free(&f);
    vmt_batch_reader_free(rd);
    return NULL;
}

static void *accept_main(void *arg)
{
    xfer *x = arg;
    vmt_session_config c;
    vmt_session_config_init(&c);
    c.psk = bench_psk;
    c.psk_len = sizeof(bench_psk) - 1;
    if (vmt_session_accept(&x->dstn, x->l, &c) != 0)
        set_err(x, VMT_EIO);
    return NULL;
}

static int connect_pair(xfer *x)
{
    vmt_session_config c;
    pthread_t acc;
    vmt_session_config_init(&c);
    c.nstreams = x->streams;
    c.psk = bench_psk;
    c.psk_len = sizeof(bench_psk) - 1;
    if (pthread_create(&acc, NULL, accept_main, x) != 0)
        return -1;
    char url[300];
    vmt_net_addr a = {.scheme = x->scheme, .port = vmt_listener_port(x->l)};
    snprintf(a.host, sizeof(a.host), "%s", x->addr);
    vmt_net_addr_format(&a, url, sizeof(url));
    int rc = vmt_session_connect_url(&x->src, url, &c);
    if (rc)
        fprintf(stderr, "vmtree-bench net: connect %s: %s\n", url, vmt_error_last());
    pthread_join(acc, NULL);
    return rc || !x->dstn ? -1 : 0;
}

/* Runs one transfer; *mbps of guest memory in the timed round. */
static int run_xfer(xfer *x, double *mbps)
{
    stream_job snd[MAX_STREAMS] = {{0}}, rcv[MAX_STREAMS] = {{0}};
    int rc = connect_pair(x);
    for (unsigned k = 0; rc == 0 && k < x->streams; k++) {
        snd[k] = (stream_job){.x = x, .k = k};
        rcv[k] = (stream_job){.x = x, .k = k};
        if (x->xbzrle)
            rc = vmt_xbzrle_cache_new(&snd[k].cache, (x->c->npages / x->streams + 1) * PAGE);
        if (rc == 0)
            rc = vmt_batch_writer_new(&snd[k].w, &x->bopts, snd[k].cache, NULL);
    }
    uint64_t t0 = 0, t1 = 0;
    for (unsigned k = 0; rc == 0 && k < x->streams; k++) {
        pthread_create(&rcv[k].tid, NULL, receiver, &rcv[k]);
        pthread_create(&snd[k].tid, NULL, sender, &snd[k]);
    }
    if (rc == 0) {
        if (x->rounds > 1)
            wait_round(x, 0);
        t0 = vmt_now_ns();
        wait_round(x, x->rounds - 1);
        t1 = vmt_now_ns();
        for (unsigned k = 0; k < x->streams; k++) {
            pthread_join(snd[k].tid, NULL);
            pthread_join(rcv[k].tid, NULL);
        }
        rc = x->err;
    }
    if (rc == 0 && memcmp(x->dst, x->c->ram[x->rounds - 1], x->c->npages * PAGE) != 0) {
        fprintf(stderr, "vmtree-bench net: destination differs from the source\n");
        rc = -1;
    }
    for (unsigned k = 0; k < x->streams; k++) {
        vmt_batch_writer_free(snd[k].w);
        vmt_xbzrle_cache_free(snd[k].cache);
    }
    *mbps = rc == 0 ? (double)x->c->npages * PAGE / ((double)(t1 - t0) / 1e9) / 1e6 : 0;
    return rc;
}

typedef struct encoding {
    const char *name;
    vmt_page_enc codec;
    bool xbzrle;
} encoding;

static const encoding encodings[] = {
    {"raw", VMT_PAGE_RAW, false},
    {"lz4", VMT_PAGE_LZ4, false},
    {"zstd", VMT_PAGE_ZSTD, false},
    {"xbzrle", VMT_PAGE_LZ4, true},
};

/* Listens on scheme://addr:0. */
static int listen_on(xfer *x)
{
    char url[300];
    vmt_net_addr a = {.scheme = x->scheme};
    snprintf(a.host, sizeof(a.host), "%s", x->addr);
    vmt_net_addr_format(&a, url, sizeof(url));
    int rc = vmt_listen_url(&x->l, url);
    if (rc)
        fprintf(stderr, "vmtree-bench net: listen %s: %s\n", url, vmt_error_last());
    return rc;
}

/* Median MB/s of `runs` transfers of one encoding over `streams` streams. */
static int throughput_of(const vmt_bench_opts *o, const corpus *c, uint8_t *dst,
                         vmt_net_scheme scheme, const char *addr, const encoding *enc,
                         unsigned streams)
{
    double v[64], wire = 0;
    unsigned runs = VMT_MIN(o->runs, 64u);
    for (unsigned r = 0; r < runs; r++) {
        xfer x = {.c = c, .scheme = scheme, .addr = addr, .streams = streams, .dst = dst};
        x.rounds = enc->xbzrle ? 2 : 1;
        x.xbzrle = enc->xbzrle;
        vmt_batch_opts_init(&x.bopts);
        x.bopts.page_codec = enc->codec;
        pthread_mutex_init(&x.lock, NULL);
        pthread_cond_init(&x.cond, NULL);
        memset(dst, 0, c->npages * PAGE);
        int rc = listen_on(&x);
        if (rc == 0)
            rc = run_xfer(&x, &v[r]);
        vmt_session_close(x.src);
        vmt_session_close(x.dstn);
        vmt_listener_close(x.l);
        pthread_mutex_destroy(&x.lock);
        pthread_cond_destroy(&x.cond);
        if (rc)
            return -1;
        wire = (double)x.wire / ((double)c->npages * PAGE);
    }
    char extra[200];
    snprintf(extra, sizeof(extra),
             "\"transport\":\"%s\",\"streams\":%u,\"encoding\":\"%s\",\"mib\":%zu,"
             "\"wire_ratio\":%.4f",
             vmt_net_scheme_name(scheme), streams, enc->name, c->npages * PAGE >> 20, wire);
    vmt_bench_emit("net", "page_throughput", vmt_bench_median(v, runs), "MB/s", extra);
    return 0;
}

static int bench_throughput(const vmt_bench_opts *o, const corpus *c, uint8_t *dst,
                            const char *rdma_addr)
{
    static const unsigned stream_counts[] = {1, 2, 4};
    bool rdma = vmt_rdma_probe() == 0;
    if (!rdma)
        vmt_bench_skip("net", "page_throughput", "rdma", vmt_error_last());
    for (size_t e = 0; e < VMT_ARRAY_SIZE(encodings); e++)
        for (size_t s = 0; s < VMT_ARRAY_SIZE(stream_counts); s++) {
            if (throughput_of(o, c, dst, VMT_NET_SCHEME_TCP, "127.0.0.1", &encodings[e],
                              stream_counts[s]) != 0)
                return -1;
            if (rdma && throughput_of(o, c, dst, VMT_NET_SCHEME_RDMA, rdma_addr, &encodings[e],
                                      stream_counts[s]) != 0)
                return -1;
        }
    return 0;
}

/* ---- handshakes ---------------------------------------------------------------- */

static void *tls_accept_main(void *arg)
{
    void **a = arg;
    xfer *x = a[0];
    vmt_session_config c;
    vmt_session_config_init(&c);
    c.psk = bench_psk;
    c.psk_len = sizeof(bench_psk) - 1;
    c.tls = a[1];
    if (vmt_session_accept(&x->dstn, x->l, &c) != 0)
        set_err(x, VMT_EIO);
    return NULL;
}

static int handshake_once(vmt_tls *cli, vmt_tls *srv, double *ms)
{
    xfer x = {.streams = 1};
    vmt_session_config c;
    pthread_t acc;
    void *args[2] = {&x, srv};
    pthread_mutex_init(&x.lock, NULL);
    pthread_cond_init(&x.cond, NULL);
    int rc = vmt_tcp_listen(&x.l, "127.0.0.1", 0);
    vmt_session_config_init(&c);
    c.psk = bench_psk;
    c.psk_len = sizeof(bench_psk) - 1;
    c.tls = cli;
    if (rc == 0 && pthread_create(&acc, NULL, tls_accept_main, args) == 0) {
        uint64_t t0 = vmt_now_ns();
        rc = vmt_session_connect(&x.src, "127.0.0.1", vmt_listener_port(x.l), &c);
        *ms = (double)(vmt_now_ns() - t0) / 1e6;
        pthread_join(acc, NULL);
        if (rc == 0 && !x.dstn)
            rc = -1;
    }
    vmt_session_close(x.src);
    vmt_session_close(x.dstn);
    vmt_listener_close(x.l);
    pthread_mutex_destroy(&x.lock);
    pthread_cond_destroy(&x.cond);
    return rc;
}

static int make_tls(const char *dir, vmt_tls **cli, vmt_tls **srv)
{
    char cert[4200], key[4200], ca[4200];
    snprintf(cert, sizeof(cert), "%s/server.pem", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    vmt_tls_config sc = {.server = true, .cert_file = cert, .key_file = key};
    vmt_tls_config cc = {.server = false, .ca_file = ca};
    if (vmt_tls_write_test_pki(dir) != 0 || vmt_tls_new(srv, &sc) != 0 ||
        vmt_tls_new(cli, &cc) != 0) {
        fprintf(stderr, "vmtree-bench net: TLS: %s\n", vmt_error_last());
        return -1;
    }
    return 0;
}

static void remove_pki(const char *dir)
{
    static const char *const files[] = {"ca.pem", "server.pem", "server.key", "client.pem",
                                        "client.key"};
    char path[4200];
    for (size_t i = 0; i < VMT_ARRAY_SIZE(files); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int bench_handshakes(const vmt_bench_opts *o)
{
    char dir[] = "/tmp/vmtree-bench-net-XXXXXX";
    vmt_tls *cli = NULL, *srv = NULL;
    unsigned runs = VMT_MIN(o->runs * 4, 64u);
    double v[64];
    int rc = mkdtemp(dir) ? make_tls(dir, &cli, &srv) : -1;
    for (int tls = 0; rc == 0 && tls < 2; tls++) {
        for (unsigned r = 0; r < runs && rc == 0; r++)
            rc = handshake_once(tls ? cli : NULL, tls ? srv : NULL, &v[r]);
        if (rc == 0)
            vmt_bench_emit("net", "handshake", vmt_bench_median(v, runs), "ms",
                           tls ? "\"auth\":\"tls13+psk\",\"streams\":1"
                               : "\"auth\":\"psk\",\"streams\":1");
    }
    vmt_tls_free(cli);
    vmt_tls_free(srv);
    remove_pki(dir);
    return rc;
}

int vmt_bench_net(const vmt_bench_opts *o)
{
    corpus c = {0};
    uint64_t mib = o->quick ? 16 : 64;
    const char *rdma_addr = getenv("VMTREE_RDMA_ADDR");
    if (!rdma_addr || !*rdma_addr)
        rdma_addr = "127.0.0.1";
    for (int i = 0; i + 1 < o->argc; i++) {
        if (strcmp(o->argv[i], "--mib") == 0 && vmt_parse_u64(o->argv[i + 1], 1, 4096, &mib) != 0) {
            fprintf(stderr, "vmtree-bench net: --mib: %s\n", vmt_error_last());
            return -1;
        }
        if (strcmp(o->argv[i], "--rdma-addr") == 0)
            rdma_addr = o->argv[i + 1];
    }
    size_t npages = (size_t)(mib << 20) / PAGE;
    uint8_t *dst = malloc(npages * PAGE);
    int rc = dst && corpus_load(&c, npages) == 0 ? 0 : -1;
    if (rc == 0)
        rc = bench_handshakes(o);
    if (rc == 0)
        rc = vmt_bench_net_transports(o, rdma_addr);
    if (rc == 0)
        rc = bench_throughput(o, &c, dst, rdma_addr);
    free(dst);
    free(c.ram[0]);
    free(c.ram[1]);
    return rc;
}
