/*
 * A snapshot cut by a stopped OSD, at the snapshot layer (no KVM needed;
 * tests/migrate/test_vm_osdfail.c does the same with a running guest).  A
 * thread plays the VM and its snapshotter over a memfd RAM image: it
 * changes pages, then snapshots them as the store sink does — changed
 * pages, the map's changed nodes, a state blob, the record, commit, and
 * only then the head ref vm.osdfail.HEAD (compare-and-swap) — again and
 * again into a rados:// store on the persistent (bluestore) test cluster.
 * The OSD is stopped at a random moment.  The snapshot in progress must
 * fail within the operation timeout with an error naming the timeout;
 * after the OSD is back nothing is half-visible: HEAD names a snapshot
 * whose record, map, pages and state all read back, every snapshot taken
 * before the stop restores bit-exact, verify finds no damage, and a new
 * snapshot of the RAM as it is now succeeds.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "osdfail_fx.h"
#include "snap_fixture.h"

#define NPAGES 2048u  /* 8 MiB of "guest RAM" */
#define CHANGED 48u   /* pages changed between two snapshots */
#define MAXSNAP 2000u /* far more than fit before the stop */
#define HEAD_REF "vm.osdfail.HEAD"
#define ROUNDS 2

typedef struct snapper {
    char *url;
    vmt_store *s;
    vmt_map *m;
    fx_ram ram;
    vmt_id ids[MAXSNAP];
    unsigned nok;         /* snapshots fully taken (committed, HEAD set) */
    uint64_t ref_version; /* HEAD's version after the last one */
    int rc;               /* how the one in progress failed */
    char msg[1024];
    uint64_t fail_ms; /* how long the failing snapshot ran */
    bool committed;   /* the failing one got past its commit */
    vmt_id failing;   /* its record id, once put */
    ofx_done end;
} snapper;

/* The pages snapshot k (k >= 1) changes, and their new content. */
static uint64_t changed_pfn(unsigned k, unsigned i)
{
    uint64_t x = k * 1000003ull + i * 7919ull;
    return (x * 0x9e3779b97f4a7c15ull >> 20) % NPAGES;
}

static void change_ram(uint8_t *mem, unsigned k)
{
    for (unsigned i = 0; i < CHANGED; i++) {
        uint8_t *p = mem + changed_pfn(k, i) * 4096;
        if (i % 8 == 3)
            memset(p, 0, 4096);
        else if (i % 2)
            fx_page_random(p, k * 100000ull + i);
        else
            fx_page_text(p, k * 100000ull + i);
    }
}

static int put_changed(snapper *sn, unsigned k)
{
    uint64_t pfn[NPAGES];
    size_t n = 0;
    if (k == 0) {
        for (uint64_t i = 0; i < NPAGES; i++)
            pfn[n++] = i;
    } else {
        for (unsigned i = 0; i < CHANGED; i++)
            pfn[n++] = changed_pfn(k, i);
    }
    for (size_t off = 0; off < n; off += 256) {
        const void *p[256];
        vmt_id ids[256];
        size_t c = VMT_MIN((size_t)256, n - off);
        for (size_t i = 0; i < c; i++)
            p[i] = sn->ram.p + pfn[off + i] * 4096;
        int rc = vmt_store_put_pages(sn->s, p, c, ids, NULL, NULL);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i < c; i++)
            vmt_map_set(sn->m, pfn[off + i], &ids[i]);
    }
    return 0;
}

/* The record of snapshot k (its parent: snapshot k-1) into the store. */
static int put_record(snapper *sn, unsigned k, const vmt_id *parent, vmt_id *id)
{
    vmt_snap_record *r = calloc(1, sizeof(*r));
    char blob[96];
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!r)
        return VMT_ENOMEM;
    snprintf(blob, sizeof(blob), "vcpu state of snapshot %u", k);
    vmt_store_obj o = {.data = blob, .len = strlen(blob), .type = VMT_OBJ_BLOB};
    int rc = vmt_map_write(sn->m, sn->s, &r->map_root, NULL, NULL);
    if (rc == 0)
        rc = vmt_store_put_many(sn->s, &o, 1, &r->state, NULL, NULL);
    if (rc == 0) {
        r->nparents = parent != NULL;
        if (parent)
            r->parents[0] = *parent;
        r->mem_size = NPAGES * 4096ull;
        r->vcpus = 1;
        snprintf(r->vm_name, sizeof(r->vm_name), "osdfail");
        snprintf(r->message, sizeof(r->message), "snapshot %u", k);
        rc = vmt_snap_record_encode(r, &buf, &len);
    }
    o = (vmt_store_obj){.data = buf, .len = len, .type = VMT_OBJ_SNAPSHOT};
    if (rc == 0)
        rc = vmt_store_put_many(sn->s, &o, 1, id, NULL, NULL);
    free(buf);
    free(r);
    return rc;
}

/* Snapshot k of the RAM as it is: records, commit, then HEAD. */
static int take(snapper *sn, unsigned k, const vmt_id *parent, uint64_t expect)
{
    vmt_id id;
    int rc = put_changed(sn, k);
    if (rc == 0)
        rc = put_record(sn, k, parent, &id);
    if (rc == 0)
        sn->failing = id;
    if (rc == 0 && (rc = vmt_store_commit(sn->s)) == 0)
        sn->committed = true;
    if (rc == 0)
        rc = vmt_store_ref_set(sn->s, HEAD_REF, expect, &id, sizeof(id), &sn->ref_version);
    if (rc == 0)
        sn->ids[k] = id;
    return rc;
}

static void *snap_loop(void *arg)
{
    snapper *sn = arg;
    for (unsigned k = 0; k < MAXSNAP; k++) {
        if (k > 0)
            change_ram(sn->ram.p, k); /* the "guest" runs */
        sn->committed = false;
        uint64_t t0 = ofx_now_ms();
        sn->rc = take(sn, k, k ? &sn->ids[k - 1] : NULL, k ? sn->ref_version : 0);
        if (sn->rc != 0) {
            sn->fail_ms = ofx_now_ms() - t0;
            snprintf(sn->msg, sizeof(sn->msg), "%s", vmt_error_last());
            break;
        }
        sn->nok = k + 1;
    }
    ofx_done_set(&sn->end);
    return NULL;
}

static vmt_store *open_store(const char *url, bool writer)
{
    vmt_store_open_opts o;
    vmt_store *s = NULL;
    vmt_store_open_opts_init(&o);
    o.read_only = !writer;
    o.threads = 2;
    int rc;
    uint64_t until = ofx_now_ms() + 1000u * (OFX_LOCK_TIMEOUT + 2 * OFX_OP_TIMEOUT + 5);
    while ((rc = vmt_store_open(&s, url, &o)) == VMT_EBUSY && ofx_now_ms() < until)
        ofx_sleep_ms(200);
    if (rc != 0)
        fprintf(stderr, "\nopening %s: %s\n", url, vmt_error_last());
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return s;
}

/* Restores `root` into fresh RAM and compares it with `want`. */
static void check_restore(vmt_store *s, const vmt_id *root, const uint8_t *want)
{
    fx_ram r;
    vmt_restore *h = NULL;
    vmt_restore_opts o = {.mode = VMT_RESTORE_EAGER, .threads = 2};
    fx_ram_new(&r, NPAGES);
    CU_ASSERT_EQUAL_FATAL(vmt_restore_open(&h, s, root, r.p, r.fd, r.size, &o), 0);
    CU_ASSERT_EQUAL(vmt_restore_wait(h, 0), 0);
    CU_ASSERT_EQUAL(memcmp(r.p, want, r.size), 0);
    vmt_restore_free(h);
    fx_ram_free(&r);
}

/* Every object a snapshot names is there: record, state, map, pages. */
static void check_snapshot(vmt_store *s, const vmt_id *id, const uint8_t *want)
{
    vmt_snap_record *r = calloc(1, sizeof(*r));
    void *data = NULL;
    size_t len = 0;
    vmt_obj_type type;
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_read(s, id, r), 0);
    CU_ASSERT_EQUAL(vmt_store_get(s, &r->state, &data, &len, &type), 0);
    free(data);
    check_restore(s, &r->map_root, want);
    free(r);
}

/* After the restart: verify, HEAD, every snapshot before the stop. */
static void check_after_restart(snapper *sn, vmt_id *head, uint64_t *version)
{
    vmt_store *s = open_store(sn->url, false);
    vmt_store_verify_stats vs;
    size_t len = 0;
    CU_ASSERT_EQUAL(vmt_store_verify(s, NULL, &vs), 0);
    CU_ASSERT_EQUAL(vs.damaged, 0);
    CU_ASSERT_EQUAL_FATAL(vmt_store_ref_get(s, HEAD_REF, head, sizeof(*head), &len, version), 0);
    CU_ASSERT_EQUAL(len, sizeof(*head));
    /* HEAD is the last snapshot taken, or the failing one when its commit
     * went through and only the answer to the ref update was lost. */
    bool last = memcmp(head, &sn->ids[sn->nok - 1], sizeof(*head)) == 0;
    bool cut = sn->committed && memcmp(head, &sn->failing, sizeof(*head)) == 0;
    CU_ASSERT_TRUE(last || cut);
    uint8_t *want = malloc(NPAGES * 4096ull);
    CU_ASSERT_FATAL(want != NULL);
    fx_fill_mixed(want, NPAGES, 42);
    for (unsigned n = 0; n < sn->nok; n++) {
        if (n > 0)
            change_ram(want, n);
        check_snapshot(s, &sn->ids[n], want);
    }
    if (cut) {
        change_ram(want, sn->nok);
        check_snapshot(s, head, want);
    }
    free(want);
    vmt_store_close(s);
}

/* A new full snapshot of the RAM as it is now, on a new handle. */
static void snapshot_again(snapper *sn, const vmt_id *head, uint64_t version)
{
    vmt_map_free(sn->m);
    sn->m = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&sn->m, NPAGES), 0);
    sn->s = open_store(sn->url, true);
    sn->committed = false;
    int rc = take(sn, 0, head, version);
    if (rc != 0)
        fprintf(stderr, "\nsnapshot after the restart: %s\n", vmt_error_last());
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    vmt_store_close(sn->s);
    vmt_store *s = open_store(sn->url, false);
    vmt_id now;
    size_t len;
    uint64_t v = 0;
    CU_ASSERT_EQUAL(vmt_store_ref_get(s, HEAD_REF, &now, sizeof(now), &len, &v), 0);
    CU_ASSERT_EQUAL(v, sn->ref_version);
    CU_ASSERT_EQUAL(memcmp(&now, &sn->ids[0], sizeof(now)), 0);
    check_snapshot(s, &now, sn->ram.p);
    CU_ASSERT_EQUAL(vmt_store_verify(s, NULL, NULL), 0);
    vmt_store_close(s);
}

static void one_round(unsigned delay_ms)
{
    snapper *sn = calloc(1, sizeof(*sn));
    CU_ASSERT_FATAL(sn != NULL);
    ofx_done_init(&sn->end);
    vmt_store_config c;
    vmt_store_config_init(&c);
    c.pack_size = 1u << 20;
    sn->url = ofx_location("snaposd");
    CU_ASSERT_EQUAL_FATAL(vmt_store_init(sn->url, &c), 0);
    sn->s = open_store(sn->url, true);
    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&sn->m, NPAGES), 0);
    fx_ram_new(&sn->ram, NPAGES);
    fx_fill_mixed(sn->ram.p, NPAGES, 42);
    pthread_t t;
    CU_ASSERT_FATAL(pthread_create(&t, NULL, snap_loop, sn) == 0);
    ofx_sleep_ms(delay_ms);
    uint64_t stop_ms = ofx_stop_osd(), stopped_at = ofx_now_ms();
    bool done = ofx_join_bounded(&sn->end, t, 2 * OFX_OP_TIMEOUT + 15);
    uint64_t failed_at = ofx_now_ms();
    fprintf(stderr,
            "\n  stop after %u ms (%u snapshots), stop-osd %llu ms; snapshot %u failed "
            "after %llu ms: %s\n",
            delay_ms, sn->nok, (unsigned long long)stop_ms, sn->nok,
            (unsigned long long)sn->fail_ms, sn->msg);
    CU_ASSERT_FATAL(done); /* else the snapshot hangs */
    CU_ASSERT_NOT_EQUAL(sn->rc, 0);
    CU_ASSERT_FATAL(sn->nok > 0 && sn->nok < MAXSNAP);
    CU_ASSERT_PTR_NOT_NULL(strstr(sn->msg, "op_timeout"));
    /* A ref update whose notify is cut waits op_timeout + 3 s, then the next
     * snapshot fails after one op_timeout. */
    CU_ASSERT(failed_at - stopped_at <= 1000u * (2 * OFX_OP_TIMEOUT + 5));
    vmt_store_close(sn->s); /* the failed handle (its requests time out) */
    fprintf(stderr, "  start-osd %llu ms\n", (unsigned long long)ofx_start_osd());
    vmt_id head;
    uint64_t version = 0;
    check_after_restart(sn, &head, &version);
    snapshot_again(sn, &head, version);
    vmt_map_free(sn->m);
    fx_ram_free(&sn->ram);
    free(sn->url);
    free(sn);
}

static void test_snapshot_cut_by_osd_stop(void)
{
    unsigned seed = (unsigned)time(NULL);
    fprintf(stderr, "(seed %u) ", seed);
    srand(seed);
    for (int r = 0; r < ROUNDS; r++)
        one_round(500 + (unsigned)(rand() % 2500));
}

int main(void)
{
    ofx_require_cluster();
    static const vmt_test_case cases[] = {
        {"OSD stopped mid-snapshot: fails cleanly, nothing half-visible, verify passes",
         test_snapshot_cut_by_osd_stop},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/osdfail", cases, NULL, NULL);
}
