/*
 * vmtree-bench net, transport part: the bare byte stream of each transport
 * (no frames, no page encodings) and RDMA bulk placement.
 *
 * - transport_throughput: one thread sends N MiB in 1 MiB sends, another
 *   receives them (and checks the last byte of each), over loopback TCP
 *   and over RDMA (rdma_addr) where a device exists; MB/s (10^6 bytes),
 *   median of the runs.  Connection setup is not timed.
 * - bulk_place_throughput (RDMA only): pages placed with
 *   vmt_transport_bulk_place into memory the receiver exposed (64 MiB
 *   chunks, 256 MiB pinned at most), timed until the receiver has them
 *   all in its landed runs.
 * Without an RDMA device each RDMA measurement prints one line with
 * "skipped":true and the reason.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "vmtree/net.h"

#define CHUNK (1u << 20)

typedef struct tp_pair {
    vmt_listener *l;
    vmt_transport *a, *b;
    int arc;
} tp_pair;

static void *accept_main(void *arg)
{
    tp_pair *p = arg;
    p->arc = vmt_listener_accept(p->l, &p->b, 10000);
    return NULL;
}

static int pair_open(tp_pair *p, vmt_net_scheme scheme, const char *addr)
{
    char url[300];
    pthread_t th;
    vmt_net_addr a = {.scheme = scheme};
    memset(p, 0, sizeof(*p));
    snprintf(a.host, sizeof(a.host), "%s", addr);
    vmt_net_addr_format(&a, url, sizeof(url));
    int rc = vmt_listen_url(&p->l, url);
    if (rc == 0 && pthread_create(&th, NULL, accept_main, p) == 0) {
        a.port = vmt_listener_port(p->l);
        vmt_net_addr_format(&a, url, sizeof(url));
        rc = vmt_transport_connect_url(&p->a, url, 10000);
        pthread_join(th, NULL);
        rc = rc ? rc : p->arc;
    }
    vmt_listener_close(p->l);
    if (rc)
        fprintf(stderr, "vmtree-bench net: %s: %s\n", url, vmt_error_last());
    return rc;
}

static void pair_close(tp_pair *p)
{
    vmt_transport_close(p->a);
    vmt_transport_close(p->b);
}

typedef struct stream_job {
    vmt_transport *t;
    uint8_t *buf;
    size_t mib;
    int rc;
} stream_job;

static void *sender_main(void *arg)
{
    stream_job *j = arg;
    for (size_t i = 0; i < j->mib && j->rc == 0; i++) {
        j->buf[CHUNK - 1] = (uint8_t)i;
        j->rc = vmt_transport_send(j->t, j->buf, CHUNK);
    }
    return NULL;
}

/* Receives mib MiB; returns MB/s, or a negative value on failure. */
static double stream_once(tp_pair *p, uint8_t *sbuf, uint8_t *rbuf, size_t mib)
{
    stream_job j = {p->a, sbuf, mib, 0};
    pthread_t th;
    uint64_t t0 = vmt_now_ns();
    if (pthread_create(&th, NULL, sender_main, &j) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < mib && rc == 0; i++) {
        rc = vmt_transport_recv(p->b, rbuf, CHUNK);
        if (rc == 0 && rbuf[CHUNK - 1] != (uint8_t)i)
            rc = VMT_ECORRUPT;
    }
    uint64_t t1 = vmt_now_ns();
    pthread_join(th, NULL);
    if (rc || j.rc) {
        fprintf(stderr, "vmtree-bench net: stream: %s\n", vmt_error_last());
        return -1;
    }
    return (double)mib * CHUNK / ((double)(t1 - t0) / 1e9) / 1e6;
}

static int bench_stream(const vmt_bench_opts *o, vmt_net_scheme scheme, const char *addr)
{
    size_t mib = o->quick ? 64 : 256;
    unsigned runs = VMT_MIN(o->runs, 32u);
    double v[32];
    uint8_t *sbuf = calloc(1, CHUNK), *rbuf = malloc(CHUNK);
    int rc = sbuf && rbuf ? 0 : -1;
    for (unsigned r = 0; rc == 0 && r < runs; r++) {
        tp_pair p;
        rc = pair_open(&p, scheme, addr);
        if (rc == 0 && (v[r] = stream_once(&p, sbuf, rbuf, mib)) < 0)
            rc = -1;
        pair_close(&p);
    }
    if (rc == 0) {
        char extra[96];
        snprintf(extra, sizeof(extra), "\"transport\":\"%s\",\"mib\":%zu,\"send_bytes\":%u",
                 vmt_net_scheme_name(scheme), mib, CHUNK);
        vmt_bench_emit("net", "transport_throughput", vmt_bench_median(v, runs), "MB/s", extra);
    }
    free(sbuf);
    free(rbuf);
    return rc;
}

/* ---- bulk placement (RDMA) -------------------------------------------------------- */

typedef struct place_job {
    vmt_transport *t;
    const uint8_t *src;
    size_t bytes;
    int rc;
} place_job;

static void *placer_main(void *arg)
{
    place_job *j = arg;
    uint64_t t0 = vmt_now_ns();
    while (!vmt_transport_bulk_can_place(j->t) && vmt_now_ns() - t0 < 10000000000ull) {
    }
    for (size_t off = 0; off < j->bytes && j->rc == 0; off += CHUNK)
        j->rc = vmt_transport_bulk_place(j->t, off, j->src + off, CHUNK);
    return NULL;
}

/* Places `bytes` and waits until every page is listed as landed. */
static double place_once(tp_pair *p, uint8_t *src, uint8_t *ram, size_t bytes)
{
    vmt_bulk_config cfg = {64u << 20, 256u << 20};
    place_job j = {p->a, src, bytes, 0};
    pthread_t th;
    int rc = vmt_transport_bulk_expose(p->b, ram, bytes, &cfg);
    if (rc || pthread_create(&th, NULL, placer_main, &j) != 0)
        return -1;
    uint64_t t0 = vmt_now_ns(), pages = 0;
    while (rc == 0 && pages < bytes / VMT_NET_PAGE_SIZE && vmt_now_ns() - t0 < 60000000000ull) {
        vmt_page_run runs[64];
        size_t n = 0;
        uint8_t none;
        /* A short receive runs the receiver's progress (registrations). */
        (void)vmt_transport_recv_timeout(p->b, &none, 1, 1);
        rc = vmt_transport_bulk_landed(p->b, runs, 64, &n);
        for (size_t i = 0; i < n; i++)
            pages += runs[i].npages;
    }
    uint64_t t1 = vmt_now_ns();
    pthread_join(th, NULL);
    if (rc || j.rc || pages != bytes / VMT_NET_PAGE_SIZE || memcmp(src, ram, bytes) != 0) {
        fprintf(stderr, "vmtree-bench net: bulk placement: %s\n", vmt_error_last());
        return -1;
    }
    return (double)bytes / ((double)(t1 - t0) / 1e9) / 1e6;
}

static int bench_place(const vmt_bench_opts *o, const char *addr)
{
    size_t bytes = (o->quick ? 64u : 512u) << 20;
    unsigned runs = VMT_MIN(o->runs, 32u);
    double v[32];
    uint8_t *src = malloc(bytes), *ram = aligned_alloc(VMT_NET_PAGE_SIZE, bytes);
    int rc = src && ram ? 0 : -1;
    if (rc == 0)
        for (size_t i = 0; i < bytes; i += 64)
            src[i] = (uint8_t)(i >> 12);
    for (unsigned r = 0; rc == 0 && r < runs; r++) {
        tp_pair p;
        memset(ram, 0, bytes);
        rc = pair_open(&p, VMT_NET_SCHEME_RDMA, addr);
        if (rc == 0 && (v[r] = place_once(&p, src, ram, bytes)) < 0)
            rc = -1;
        pair_close(&p);
    }
    if (rc == 0) {
        char extra[96];
        snprintf(extra, sizeof(extra), "\"transport\":\"rdma\",\"mib\":%zu,\"chunk_mib\":64",
                 bytes >> 20);
        vmt_bench_emit("net", "bulk_place_throughput", vmt_bench_median(v, runs), "MB/s", extra);
    }
    free(src);
    free(ram);
    return rc;
}

int vmt_bench_net_transports(const vmt_bench_opts *o, const char *rdma_addr)
{
    int rc = bench_stream(o, VMT_NET_SCHEME_TCP, "127.0.0.1");
    if (rc)
        return rc;
    if (vmt_rdma_probe() != 0) {
        char why[512];
        snprintf(why, sizeof(why), "%s", vmt_error_last());
        vmt_bench_skip("net", "transport_throughput", "rdma", why);
        vmt_bench_skip("net", "bulk_place_throughput", "rdma", why);
        return 0;
    }
    rc = bench_stream(o, VMT_NET_SCHEME_RDMA, rdma_addr);
    return rc ? rc : bench_place(o, rdma_addr);
}
