/*
 * The OSD stopped under a writer (docs/store-backends.md, "When an OSD
 * stops"): a child process puts and commits batches into a rados:// store
 * on the persistent (bluestore) test cluster; the OSD is stopped at a
 * random moment, between or during commits.  The writer's put or commit
 * must fail within the operation timeout with an error naming the object
 * and the timeout (no hang: every wait here is bounded), and every later
 * write on that handle must fail at once (sticky).  Once the OSD is back, a
 * new handle opens the store, verify finds no damage, every batch committed
 * before the stop reads back bit-exact, and a later write works.  Reads
 * fail the same way while the OSD is down (a reader opened before the stop,
 * a new open) but are not sticky: the same reader works again after the
 * restart.  OSDFAIL_ROUNDS random stop moments (default 3).  Ref updates
 * (compare-and-swap, then a notify to watchers) cut by the stop end within
 * the bound too, and the ref holds the last update or the cut one.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dd_test.h"
#include "osdfail_fx.h"

#ifndef OSDFAIL_ROUNDS
#define OSDFAIL_ROUNDS 3
#endif

enum { BATCH = 128 };

/* What the child tells the parent about the call that failed. */
typedef struct fail_report {
    int rc, sticky_rc;
    uint32_t ms, sticky_ms; /* how long the failing call and the next one took */
    uint64_t batch;
    char msg[1024], sticky_msg[512];
} fail_report;

/* Page i of batch b; every 16th page repeats one of the previous batch. */
static void batch_page(uint64_t b, size_t i, uint8_t *page)
{
    if (i % 16 == 15 && b > 0)
        ddt_page((b - 1) * 1000 + i, page);
    else if (i % 16 == 7)
        ddt_random_page(b * 1000 + i, page);
    else
        ddt_page(b * 1000 + i, page);
}

static void batch_pages(uint64_t b, uint8_t *pages, const void **p)
{
    for (size_t i = 0; i < BATCH; i++) {
        batch_page(b, i, pages + i * VMT_STORE_PAGE_SIZE);
        p[i] = pages + i * VMT_STORE_PAGE_SIZE;
    }
}

/* Opens a writer, waiting out a lock left by a writer cut off from the
 * cluster (it expires after OFX_LOCK_TIMEOUT s). */
static int open_writer(const char *url, vmt_store **s)
{
    vmt_store_open_opts o;
    vmt_store_open_opts_init(&o);
    o.threads = 2;
    o.index_interval = 512u << 10; /* index saves too are cut by the stop */
    int rc;
    uint64_t until = ofx_now_ms() + 1000u * (OFX_LOCK_TIMEOUT + 2 * OFX_OP_TIMEOUT + 5);
    while ((rc = vmt_store_open(s, url, &o)) == VMT_EBUSY && ofx_now_ms() < until)
        ofx_sleep_ms(200);
    return rc;
}

/* One batch: its pages, then a map node naming them, then the commit. */
static int put_batch(vmt_store *s, uint64_t b, uint8_t *pages)
{
    const void *p[BATCH];
    vmt_id ids[BATCH], mid;
    vmt_mapnode_entry e[BATCH];
    uint8_t node[8192];
    size_t len = 0;
    batch_pages(b, pages, p);
    int rc = vmt_store_put_pages(s, p, BATCH, ids, NULL, NULL);
    for (size_t i = 0; rc == 0 && i < BATCH; i++)
        e[i] = (vmt_mapnode_entry){(uint32_t)i, ids[i]};
    if (rc == 0)
        rc = vmt_store_mapnode_encode(0, e, BATCH, node, sizeof(node), &len);
    vmt_store_obj mo = {node, len, VMT_OBJ_MAPNODE};
    if (rc == 0)
        rc = vmt_store_put_many(s, &mo, 1, &mid, NULL, NULL);
    return rc == 0 ? vmt_store_commit(s) : rc;
}

static void child(const char *url, int cfd, int ffd)
{
    fail_report f = {0};
    uint8_t *pages = malloc(BATCH * VMT_STORE_PAGE_SIZE);
    vmt_store *s = NULL;
    if (!pages || open_writer(url, &s) != 0)
        _exit(3);
    uint64_t b = 0, t0;
    for (;; b++) {
        t0 = ofx_now_ms();
        if ((f.rc = put_batch(s, b, pages)) != 0)
            break;
        if (write(cfd, &b, sizeof(b)) != sizeof(b))
            _exit(4);
    }
    f.ms = (uint32_t)(ofx_now_ms() - t0);
    f.batch = b;
    snprintf(f.msg, sizeof(f.msg), "%s", vmt_error_last());
    /* The handle must refuse every later write at once. */
    t0 = ofx_now_ms();
    f.sticky_rc = put_batch(s, b + 1, pages);
    f.sticky_ms = (uint32_t)(ofx_now_ms() - t0);
    snprintf(f.sticky_msg, sizeof(f.sticky_msg), "%s", vmt_error_last());
    if (write(ffd, &f, sizeof(f)) != sizeof(f))
        _exit(5);
    vmt_store_close(s); /* bounded too: its requests time out */
    free(pages);
    _exit(0);
}

/* Reads back batches [0, n) bit-exact through s. */
static void check_batches(vmt_store *s, uint64_t n)
{
    uint8_t *pages = malloc(BATCH * VMT_STORE_PAGE_SIZE), *out = malloc(BATCH * 4096);
    const void *p[BATCH];
    void *dst[BATCH];
    vmt_id ids[BATCH];
    CU_ASSERT_FATAL(pages && out);
    for (size_t i = 0; i < BATCH; i++)
        dst[i] = out + i * VMT_STORE_PAGE_SIZE;
    for (uint64_t b = 0; b < n; b++) {
        batch_pages(b, pages, p);
        for (size_t i = 0; i < BATCH; i++)
            vmt_id_of(p[i], VMT_STORE_PAGE_SIZE, &ids[i]);
        DDT_OK(vmt_store_get_pages(s, ids, BATCH, dst));
        CU_ASSERT_EQUAL(memcmp(out, pages, BATCH * VMT_STORE_PAGE_SIZE), 0);
    }
    free(pages);
    free(out);
}

/* After the restart: a reader verifies and reads; a writer recovers,
 * verifies, reads, and writes one more batch that a reader then sees. */
static void check_after_restart(const char *url, uint64_t committed)
{
    vmt_store *s = NULL;
    vmt_store_verify_stats vs;
    s = ddt_open(url, true, 2);
    DDT_OK(vmt_store_verify(s, NULL, &vs));
    CU_ASSERT_EQUAL(vs.damaged, 0);
    check_batches(s, committed);
    vmt_store_close(s);

    DDT_OK(open_writer(url, &s));
    DDT_OK(vmt_store_verify(s, NULL, &vs));
    check_batches(s, committed);
    uint8_t *pages = malloc(BATCH * VMT_STORE_PAGE_SIZE);
    DDT_OK(put_batch(s, committed, pages)); /* a later write works */
    free(pages);
    vmt_store_close(s);

    s = ddt_open(url, true, 2);
    DDT_OK(vmt_store_verify(s, NULL, &vs));
    CU_ASSERT_EQUAL(vs.damaged, 0);
    check_batches(s, committed + 1);
    vmt_store_close(s);
}

static void check_report(const fail_report *f, uint64_t stopped_at, uint64_t reported_at)
{
    fprintf(stderr, "\n  failed at batch %llu after %u ms: %s\n  then (%u ms): %s\n",
            (unsigned long long)f->batch, f->ms, f->msg, f->sticky_ms, f->sticky_msg);
    CU_ASSERT_EQUAL(f->rc, VMT_EIO);
    char within[32];
    snprintf(within, sizeof(within), "within %d s (op_timeout", OFX_OP_TIMEOUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(f->msg, within));
    CU_ASSERT(strstr(f->msg, "packs/pack-") || strstr(f->msg, "index"));
    /* One request's timeout, plus the OSD's own shutdown (~3 s) during
     * which requests still get answers, plus scheduling on a loaded host. */
    CU_ASSERT(f->ms <= 1000u * (2 * OFX_OP_TIMEOUT + 5));
    CU_ASSERT(reported_at - stopped_at <= 1000u * (OFX_OP_TIMEOUT + 5));
    CU_ASSERT_NOT_EQUAL(f->sticky_rc, 0);
    CU_ASSERT(f->sticky_ms < 1000);
    CU_ASSERT_PTR_NOT_NULL(strstr(f->sticky_msg, "earlier write"));
}

/* While the OSD is down: a reader opened before the stop fails to read a
 * pack it has not fetched yet, and a new open fails, each within the
 * timeout and naming it. */
static void check_reads_while_down(vmt_store *rd, const char *url)
{
    uint8_t *pages = malloc(BATCH * VMT_STORE_PAGE_SIZE), *out = malloc(BATCH * 4096);
    const void *p[BATCH];
    void *dst[BATCH];
    vmt_id ids[BATCH];
    CU_ASSERT_FATAL(pages && out);
    batch_pages(0, pages, p);
    for (size_t i = 0; i < BATCH; i++) {
        vmt_id_of(p[i], VMT_STORE_PAGE_SIZE, &ids[i]);
        dst[i] = out + i * VMT_STORE_PAGE_SIZE;
    }
    uint64_t t0 = ofx_now_ms();
    int rc = vmt_store_get_pages(rd, ids, BATCH, dst);
    uint64_t ms = ofx_now_ms() - t0;
    fprintf(stderr, "  read while down (%llu ms): %s\n", (unsigned long long)ms, vmt_error_last());
    CU_ASSERT_EQUAL(rc, VMT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "op_timeout"));
    /* One timeout: the workers waiting for the pack's fetch share its
     * failure (they fetched again, one after another: 2 timeouts). */
    CU_ASSERT(ms <= 1000u * (OFX_OP_TIMEOUT + 3));
    vmt_store *s = NULL;
    vmt_store_open_opts o;
    vmt_store_open_opts_init(&o);
    o.read_only = true;
    t0 = ofx_now_ms();
    rc = vmt_store_open(&s, url, &o);
    ms = ofx_now_ms() - t0;
    fprintf(stderr, "  open while down (%llu ms): %s\n", (unsigned long long)ms, vmt_error_last());
    CU_ASSERT_NOT_EQUAL(rc, 0);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "op_timeout"));
    CU_ASSERT(ms <= 1000u * (OFX_OP_TIMEOUT + 5));
    free(pages);
    free(out);
}

/* One stop moment: returns the batches committed before it. */
static uint64_t one_round(unsigned delay_ms)
{
    vmt_store_config c;
    vmt_store_config_init(&c);
    c.pack_size = 1u << 20; /* several seals per second of ingest */
    char *url = ofx_location("osdfail");
    DDT_OK(vmt_store_init(url, &c));
    int cp[2], fp[2];
    CU_ASSERT_FATAL(pipe(cp) == 0 && pipe(fp) == 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        close(cp[0]);
        close(fp[0]);
        child(url, cp[1], fp[1]);
    }
    close(cp[1]);
    close(fp[1]);
    uint64_t b, committed = 0;
    /* A reader opened once a batch is in, before the stop. */
    CU_ASSERT_EQUAL_FATAL(read(cp[0], &b, sizeof(b)), (ssize_t)sizeof(b));
    committed = b + 1;
    vmt_store *rd = ddt_open(url, true, 2);
    ofx_sleep_ms(delay_ms);
    uint64_t stop_ms = ofx_stop_osd(), stopped_at = ofx_now_ms();
    fail_report f;
    ssize_t got = read(fp[0], &f, sizeof(f)); /* bounded: the child's requests time out */
    uint64_t reported_at = ofx_now_ms();
    int st = 0;
    bool exited = ofx_wait_child(pid, 3 * OFX_OP_TIMEOUT + 20, &st);
    while (read(cp[0], &b, sizeof(b)) == sizeof(b))
        committed = b + 1;
    close(cp[0]);
    close(fp[0]);
    fprintf(stderr, "\n  stop after %u ms (%llu batches committed), stop-osd %llu ms", delay_ms,
            (unsigned long long)committed, (unsigned long long)stop_ms);
    CU_ASSERT_TRUE(exited); /* else it hung and was killed */
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_EQUAL_FATAL(got, (ssize_t)sizeof(f));
    check_report(&f, stopped_at, reported_at);
    check_reads_while_down(rd, url);
    uint64_t start_ms = ofx_start_osd();
    fprintf(stderr, "  start-osd %llu ms\n", (unsigned long long)start_ms);
    check_batches(rd, 1); /* the same reader works again: reads are not sticky */
    vmt_store_close(rd);
    check_after_restart(url, committed);
    ddt_cleanup(url);
    return committed;
}

static void test_osd_stopped_mid_ingest(void)
{
    unsigned seed = (unsigned)time(NULL);
    fprintf(stderr, "(seed %u) ", seed);
    srand(seed);
    uint64_t total = 0;
    for (int r = 0; r < OSDFAIL_ROUNDS; r++)
        total += one_round(300 + (unsigned)(rand() % 2700));
    CU_ASSERT(total > 0);
}

/* A thread updating one ref as fast as it can until an update fails. */
typedef struct ref_loop {
    vmt_store *s;
    uint64_t version, last_ok, worst_ms, fail_ms;
    int rc;
    char msg[1024];
    ofx_done end;
} ref_loop;

static void *ref_updates(void *arg)
{
    ref_loop *l = arg;
    for (uint64_t n = 1;; n++) {
        uint64_t t0 = ofx_now_ms();
        l->rc = vmt_store_ref_set(l->s, "osdfail.head", l->version, &n, sizeof(n), &l->version);
        uint64_t ms = ofx_now_ms() - t0;
        l->worst_ms = VMT_MAX(l->worst_ms, ms);
        if (l->rc != 0) {
            l->fail_ms = ms;
            snprintf(l->msg, sizeof(l->msg), "%s", vmt_error_last());
            break;
        }
        l->last_ok = n;
    }
    ofx_done_set(&l->end);
    return NULL;
}

/* librados waits for a notify's answer without limit: before notifies were
 * bounded, an update cut by the stop hung until the OSD came back. */
static void test_ref_updates_cut_by_osd_stop(void)
{
    char *url = ofx_location("osdref");
    DDT_OK(vmt_store_init(url, NULL));
    ref_loop l = {.s = ddt_open(url, true, 1)};
    ofx_done_init(&l.end);
    pthread_t t;
    CU_ASSERT_FATAL(pthread_create(&t, NULL, ref_updates, &l) == 0);
    ofx_sleep_ms(300 + (unsigned)(rand() % 1500));
    ofx_stop_osd();
    bool done = ofx_join_bounded(&l.end, t, 3 * OFX_OP_TIMEOUT + 15);
    fprintf(stderr, "\n  %llu updates, slowest %llu ms, then one failed after %llu ms: %s\n",
            (unsigned long long)l.last_ok, (unsigned long long)l.worst_ms,
            (unsigned long long)l.fail_ms, l.msg);
    CU_ASSERT_FATAL(done); /* else an update hangs */
    CU_ASSERT_EQUAL(l.rc, VMT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(l.msg, "op_timeout"));
    CU_ASSERT(l.worst_ms <= 1000u * (2 * OFX_OP_TIMEOUT + 5));
    vmt_store_close(l.s);
    ofx_start_osd();
    vmt_store *s = ddt_open(url, true, 1);
    uint64_t v = 0, got = 0, version = 0;
    size_t len = 0;
    DDT_OK(vmt_store_ref_get(s, "osdfail.head", &got, sizeof(got), &len, &version));
    CU_ASSERT(got == l.last_ok || got == l.last_ok + 1); /* the cut one may have landed */
    v = got + 100;
    DDT_OK(vmt_store_ref_set(s, "osdfail.head", version, &v, sizeof(v), NULL));
    vmt_store_close(s);
    ddt_cleanup(url);
}

/* op_timeout in the location: 1..3600 seconds, else a clear refusal. */
static void test_op_timeout_option(void)
{
    static const char *bad[] = {"0", "3601", "abc", "", "5s"};
    char *base = ofx_location("optimeout"), *url = NULL;
    char *q = strstr(base, "&op_timeout=");
    CU_ASSERT_FATAL(q != NULL);
    *q = '\0'; /* rados://vmtree/NS?conf=PATH */
    for (size_t i = 0; i < VMT_ARRAY_SIZE(bad); i++) {
        CU_ASSERT_FATAL(asprintf(&url, "%s&op_timeout=%s", base, bad[i]) > 0);
        CU_ASSERT_EQUAL(vmt_store_init(url, NULL), VMT_EINVAL);
        /* "op_timeout is 1..3600 seconds" (empty: "unknown parameter 'op_timeout='") */
        CU_ASSERT_PTR_NOT_NULL(
            strstr(vmt_error_last(), *bad[i] ? "op_timeout is 1..3600" : "op_timeout="));
        free(url);
    }
    CU_ASSERT_FATAL(asprintf(&url, "%s&op_timeout=1", base) > 0);
    DDT_OK(vmt_store_init(url, NULL));
    vmt_store_close(ddt_open(url, false, 1));
    ddt_cleanup(url);
    free(base);
}

int main(void)
{
    ofx_require_cluster();
    static const vmt_test_case cases[] = {
        {"op_timeout location option", test_op_timeout_option},
        {"ref updates cut by an OSD stop end within the bound", test_ref_updates_cut_by_osd_stop},
        {"OSD stopped mid-ingest: clear bounded failure, committed batches survive",
         test_osd_stopped_mid_ingest},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/osdfail", cases, NULL, NULL);
}
