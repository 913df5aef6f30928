/*
 * Golden images (migrate/golden_*.c): pull, push and serve between two real
 * stores over real TCP on 127.0.0.1, the server on its own thread.  Faults
 * come from the fault-injecting transport (a cut, a flipped byte) and from
 * a rogue provider that speaks the protocol but sends damaged objects.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "harness.h"
#include "snap_fixture.h"
#include "vmtree/golden.h"

#define NPAGES 4096u /* 16 MiB: depth 2 */

static const uint8_t g_psk[32] = "golden-test-pre-shared-key-0123";

/* ---- the two stores ------------------------------------------------------ */

typedef struct side {
    fx_store fx;
    vmt_catalog *c;
} side;

/* A store of its own: a directory, or (test_golden_rados) a namespace of
 * the test cluster's pool, whose catalog is in the store's refs. */
static void side_new(side *sd, const char *tag)
{
    if (fx_rados()) {
        memset(&sd->fx, 0, sizeof(sd->fx));
        sd->fx.dir = fx_location(tag);
        CU_ASSERT_PTR_NOT_NULL_FATAL(sd->fx.dir);
        CU_ASSERT_EQUAL_FATAL(vmt_store_open(&sd->fx.s, sd->fx.dir, NULL), 0);
    } else {
        fx_store_new(&sd->fx, tag);
    }
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&sd->c, sd->fx.dir), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_shared(sd->c), fx_rados());
}

static void side_free(side *sd)
{
    vmt_catalog_close(sd->c);
    if (fx_rados()) {
        vmt_store_close(sd->fx.s);
        fx_location_free(sd->fx.dir);
        memset(&sd->fx, 0, sizeof(sd->fx));
    } else {
        fx_store_free(&sd->fx);
    }
}

/* A snapshot of mem in sd, in its catalog, tagged `tag`. */
static vmt_id side_snapshot(side *sd, const uint8_t *mem, uint64_t npages, const vmt_id *parent,
                            const char *tag)
{
    vmt_snap_record r;
    char ref[80];
    vmt_id id = fx_snapshot(sd->fx.s, mem, npages, parent, tag);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_read(sd->fx.s, &id, &r), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_add_snapshot(sd->c, &id, &r), 0);
    snprintf(ref, sizeof(ref), "tag/%s", tag);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_set_ref(sd->c, ref, &id, NULL), 0);
    return id;
}

/* The memory of snapshot id in s equals mem. */
static void check_memory(vmt_store *s, const vmt_id *id, const uint8_t *mem, uint64_t npages)
{
    vmt_snap_record r;
    vmt_map *m = NULL;
    uint8_t *page = malloc(4096);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_read(s, id, &r), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_map_load(&m, s, &r.map_root, npages), 0);
    uint64_t bad = 0;
    for (uint64_t i = 0; i < npages; i++) {
        void *dst = page;
        CU_ASSERT_EQUAL_FATAL(vmt_store_get_pages(s, vmt_map_get(m, i), 1, &dst), 0);
        bad += memcmp(page, mem + i * 4096, 4096) != 0;
    }
    CU_ASSERT_EQUAL(bad, 0);
    vmt_map_free(m);
    free(page);
}

static void check_store_ok(fx_store *f)
{
    fx_store_reopen(f);
    vmt_store_verify_stats vs;
    CU_ASSERT_EQUAL(vmt_store_verify(f->s, NULL, &vs), 0);
}

static uint8_t *mem_new(uint64_t npages, uint64_t seed)
{
    uint8_t *m = mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                      0);
    CU_ASSERT_FATAL(m != MAP_FAILED);
    if (seed)
        fx_fill_mixed(m, npages, seed);
    return m;
}

/* Distinct non-zero pages of mem. */
static uint64_t distinct_pages(const uint8_t *mem, uint64_t npages)
{
    vmt_id *ids = malloc(npages * sizeof(vmt_id));
    uint64_t n = 0;
    for (uint64_t i = 0; i < npages; i++) {
        vmt_id id;
        vmt_id_of(mem + i * 4096, 4096, &id);
        if (vmt_id_is_zero_page(&id))
            continue;
        bool dup = false;
        for (uint64_t k = 0; k < n && !dup; k++)
            dup = vmt_id_equal(&ids[k], &id);
        if (!dup)
            ids[n++] = id;
    }
    free(ids);
    return n;
}

/* ---- a server on a thread -------------------------------------------------- */

typedef struct srv {
    vmt_listener *l;
    const char *dir;
    bool read_only, use_psk, use_fault, rogue;
    vmt_fault_opts fault;
    vmt_store *rogue_store; /* rogue: the store it answers from */
    pthread_t th;
    int rc;
    unsigned op;
    vmt_id snap;
    vmt_golden_stats st;
    char msg[512];
} srv;

static int srv_accept(void *ctx, uint64_t deadline_ns, vmt_transport **out)
{
    srv *v = ctx;
    uint64_t now = vmt_now_ns();
    uint32_t ms = deadline_ns == UINT64_MAX ? 10000u
                  : deadline_ns > now       ? (uint32_t)((deadline_ns - now) / 1000000u + 1)
                                            : 0u;
    vmt_transport *t = NULL;
    int rc = vmt_listener_accept(v->l, &t, ms);
    if (rc)
        return rc;
    if (!v->use_fault) {
        *out = t;
        return 0;
    }
    return vmt_transport_fault(out, t, &v->fault);
}

static void session_cfg(vmt_session_config *c, bool psk)
{
    vmt_session_config_init(c);
    c->timeout_ms = 10000;
    if (psk) {
        c->psk = g_psk;
        c->psk_len = sizeof(g_psk);
    } else {
        c->allow_unauthenticated = true;
    }
}

static int rogue_serve(srv *v, vmt_session *s);

static void *srv_main(void *arg)
{
    srv *v = arg;
    vmt_session_config c;
    vmt_session *s = NULL;
    session_cfg(&c, v->use_psk);
    v->rc = vmt_session_server(&s, &c, srv_accept, v);
    if (v->rc == 0 && v->rogue) {
        v->rc = rogue_serve(v, s);
    } else if (v->rc == 0) {
        vmt_golden_server_opts so = {.store_dir = v->dir, .read_only = v->read_only};
        vmt_golden_opts_init(&so.xfer);
        so.xfer.timeout_ms = 10000;
        v->rc = vmt_golden_serve(s, &so, &v->op, &v->snap, &v->st);
    }
    snprintf(v->msg, sizeof(v->msg), "%s", v->rc ? vmt_error_last() : "");
    vmt_session_close(s);
    return NULL;
}

static void srv_start(srv *v, const char *dir)
{
    v->dir = dir;
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_listen(&v->l, "127.0.0.1", 0), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&v->th, NULL, srv_main, v), 0);
}

static void srv_join(srv *v)
{
    pthread_join(v->th, NULL);
    vmt_listener_close(v->l);
}

static void srv_init(srv *v)
{
    memset(v, 0, sizeof(*v));
    vmt_fault_opts_init(&v->fault);
}

/* Connects a client session to v (with or without the key). */
static int client_connect(srv *v, bool psk, vmt_session **s)
{
    vmt_session_config c;
    session_cfg(&c, psk);
    return vmt_session_connect(s, "127.0.0.1", vmt_listener_port(v->l), &c);
}

static void xfer_opts(vmt_golden_opts *o)
{
    vmt_golden_opts_init(o);
    o->timeout_ms = 10000;
    o->commit_bytes = 1u << 20;
}

/* Pulls `name` from a fresh server on `from` into `to`; returns the rc. */
static int do_pull(srv *v, side *from, side *to, const char *name, const char *as, vmt_id *out,
                   vmt_golden_stats *st)
{
    vmt_session *s = NULL;
    vmt_golden_opts o;
    xfer_opts(&o);
    srv_start(v, from->fx.dir);
    int rc = client_connect(v, v->use_psk, &s);
    if (rc == 0)
        rc = vmt_golden_pull(s, to->fx.s, to->c, name, as, &o, out, st);
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", vmt_error_last());
    vmt_session_close(s);
    srv_join(v);
    vmt_error_set(rc ? rc : VMT_ERR, "%s", msg);
    return rc;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_pull_empty_store(void)
{
    side a, b;
    srv v;
    vmt_golden_stats st;
    vmt_id id, got, tagged;
    uint8_t *mem = mem_new(NPAGES, 11);
    side_new(&a, "golden-src");
    side_new(&b, "golden-dst");
    id = side_snapshot(&a, mem, NPAGES, NULL, "golden");

    srv_init(&v);
    v.use_psk = true;
    int rc = do_pull(&v, &a, &b, "golden", "local", &got, &st);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(v.rc, 0);
    CU_ASSERT_EQUAL(v.op, VMT_GOLDEN_OP_PULL);
    CU_ASSERT(vmt_id_equal(&got, &id));
    CU_ASSERT_EQUAL(vmt_catalog_resolve(b.c, "local", &tagged), 0);
    CU_ASSERT(vmt_id_equal(&tagged, &id));
    CU_ASSERT_EQUAL(st.snapshots_new, 1);
    CU_ASSERT_EQUAL(st.pages_fetched, distinct_pages(mem, NPAGES));
    CU_ASSERT_EQUAL(st.nodes_fetched, 1 + NPAGES / 256);
    CU_ASSERT(st.wire_received < st.pages_fetched * 4096 + (1u << 20));
    check_memory(b.fx.s, &id, mem, NPAGES);
    check_store_ok(&b.fx);

    /* A second pull of the same finds everything present: nothing crosses. */
    srv_init(&v);
    v.use_psk = true;
    CU_ASSERT_EQUAL(do_pull(&v, &a, &b, "golden", NULL, &got, &st), 0);
    CU_ASSERT_EQUAL(st.snapshots_new, 0);
    CU_ASSERT_EQUAL(st.pages_fetched + st.nodes_fetched, 0);
    CU_ASSERT(st.wire_received < 4096);
    munmap(mem, NPAGES * 4096);
    side_free(&a);
    side_free(&b);
}

/* A child that changed `k` pages: only those (and the nodes on their paths)
 * cross the wire. */
static void test_pull_sibling_sends_difference(void)
{
    side a, b;
    srv v;
    vmt_golden_stats st1, st2;
    vmt_id p, c, got;
    uint8_t *mem = mem_new(NPAGES, 21);
    side_new(&a, "golden-src");
    side_new(&b, "golden-dst");
    p = side_snapshot(&a, mem, NPAGES, NULL, "base");
    const unsigned k = 40; /* 1 % of the pages, spread over the map */
    for (unsigned i = 0; i < k; i++)
        fx_page_random(mem + (uint64_t)(i * 97 + 5) % NPAGES * 4096, 1000 + i);
    c = side_snapshot(&a, mem, NPAGES, &p, "child");

    srv_init(&v);
    CU_ASSERT_EQUAL_FATAL(do_pull(&v, &a, &b, "base", NULL, &got, &st1), 0);
    srv_init(&v);
    CU_ASSERT_EQUAL_FATAL(do_pull(&v, &a, &b, "child", "child", &got, &st2), 0);
    CU_ASSERT(vmt_id_equal(&got, &c));
    CU_ASSERT_EQUAL(st2.snapshots, 2);
    CU_ASSERT_EQUAL(st2.snapshots_new, 1);
    CU_ASSERT_EQUAL(st2.pages_fetched, k);
    /* The root and the leaves holding changed pages, no more. */
    CU_ASSERT(st2.nodes_fetched <= 1 + NPAGES / 256);
    /* Bytes on the wire: the changed pages (random: incompressible), the
     * nodes on their paths (at most 5132 bytes each), and a little for
     * messages and framing. */
    uint64_t bound = k * 4096u * 11 / 10 + st2.nodes_fetched * 5200u + 16384u;
    fprintf(stderr, "sibling pull: %llu bytes received (bound %llu; first pull %llu)\n",
            (unsigned long long)st2.wire_received, (unsigned long long)bound,
            (unsigned long long)st1.wire_received);
    CU_ASSERT(st2.wire_received <= bound);
    CU_ASSERT(st2.wire_received * 10 < st1.wire_received);
    check_memory(b.fx.s, &c, mem, NPAGES);
    check_store_ok(&b.fx);
    munmap(mem, NPAGES * 4096);
    side_free(&a);
    side_free(&b);
}

/* 1 GiB with a few hundred non-zero pages: a map of depth 3; empty
 * subtrees are never visited. */
static void test_pull_sparse_deep_map(void)
{
    const uint64_t np = 262144;
    side a, b;
    srv v;
    vmt_golden_stats st;
    vmt_id id, got;
    uint8_t *mem = mem_new(np, 0);
    for (unsigned i = 0; i < 300; i++)
        fx_page_text(mem + (uint64_t)i * 877 % np * 4096, 7 + i);
    side_new(&a, "golden-src");
    side_new(&b, "golden-dst");
    id = side_snapshot(&a, mem, np, NULL, "sparse");
    srv_init(&v);
    CU_ASSERT_EQUAL_FATAL(do_pull(&v, &a, &b, "sparse", NULL, &got, &st), 0);
    CU_ASSERT(vmt_id_equal(&got, &id));
    CU_ASSERT_EQUAL(st.pages_fetched, 300);
    CU_ASSERT(st.nodes_fetched <= 1 + 4 + 300);
    CU_ASSERT(st.wire_received < 300 * 4096 + 300 * 5200 + 65536);
    check_memory(b.fx.s, &id, mem, np);
    munmap(mem, np * 4096);
    side_free(&a);
    side_free(&b);
}

static void test_push(void)
{
    side a, b;
    srv v;
    vmt_golden_stats st;
    vmt_session *s = NULL;
    vmt_golden_opts o;
    vmt_id p, c, tagged;
    uint8_t *mem = mem_new(NPAGES, 31);
    side_new(&a, "golden-src");
    side_new(&b, "golden-dst");
    p = side_snapshot(&a, mem, NPAGES, NULL, "base");
    fx_page_random(mem + 77 * 4096, 5);
    c = side_snapshot(&a, mem, NPAGES, &p, "child");
    xfer_opts(&o);

    /* A read-only server refuses. */
    srv_init(&v);
    v.read_only = true;
    srv_start(&v, b.fx.dir);
    CU_ASSERT_EQUAL_FATAL(client_connect(&v, false, &s), 0);
    int rc = vmt_golden_push(s, a.fx.s, &c, "pushed", &o, &st);
    CU_ASSERT_EQUAL(rc, VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "read-only"));
    vmt_session_close(s);
    srv_join(&v);
    CU_ASSERT_EQUAL(v.rc, VMT_EAUTH);

    /* Its store is free for the push: the server opens it per request. */
    vmt_catalog_close(b.c);
    vmt_store_close(b.fx.s);
    b.fx.s = NULL;
    srv_init(&v);
    srv_start(&v, b.fx.dir);
    CU_ASSERT_EQUAL_FATAL(client_connect(&v, false, &s), 0);
    rc = vmt_golden_push(s, a.fx.s, &c, "pushed", &o, &st);
    CU_ASSERT_EQUAL(rc, 0);
    vmt_session_close(s);
    srv_join(&v);
    CU_ASSERT_EQUAL_FATAL(v.rc, 0);
    CU_ASSERT_EQUAL(v.op, VMT_GOLDEN_OP_PUSH);
    CU_ASSERT(vmt_id_equal(&v.snap, &c));
    CU_ASSERT_EQUAL(v.st.snapshots_new, 2);
    CU_ASSERT_EQUAL(st.snapshots, 2);
    CU_ASSERT(st.objects > 0);
    fx_store_reopen(&b.fx);
    CU_ASSERT_EQUAL(vmt_catalog_open(&b.c, b.fx.dir), 0);
    CU_ASSERT_EQUAL(vmt_catalog_resolve(b.c, "pushed", &tagged), 0);
    CU_ASSERT(vmt_id_equal(&tagged, &c));
    CU_ASSERT_EQUAL(vmt_catalog_resolve(b.c, "pushed^", &tagged), 0);
    CU_ASSERT(vmt_id_equal(&tagged, &p));
    check_memory(b.fx.s, &c, mem, NPAGES);
    check_store_ok(&b.fx);
    munmap(mem, NPAGES * 4096);
    side_free(&a);
    side_free(&b);
}

/* The connection is cut mid-pull: the pull fails, the store is whole and
 * holds what arrived; the next pull does not fetch it again. */
static void test_interrupted_pull_resumes(void)
{
    side a, b, scratch;
    srv v;
    vmt_golden_stats full, st;
    vmt_id id, got;
    uint8_t *mem = mem_new(NPAGES, 41);
    side_new(&a, "golden-src");
    side_new(&b, "golden-dst");
    side_new(&scratch, "golden-scratch");
    id = side_snapshot(&a, mem, NPAGES, NULL, "golden");
    srv_init(&v);
    CU_ASSERT_EQUAL_FATAL(do_pull(&v, &a, &scratch, "golden", NULL, &got, &full), 0);

    srv_init(&v);
    v.use_fault = true;
    v.fault.cut_after_sent = full.wire_received / 2;
    int rc = do_pull(&v, &a, &b, "golden", NULL, &got, &st);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    fprintf(stderr, "cut pull: %s (%llu bytes received, %llu pages stored)\n", vmt_error_last(),
            (unsigned long long)st.wire_received, (unsigned long long)st.pages_fetched);
    CU_ASSERT(st.pages_fetched > 0);
    CU_ASSERT_EQUAL(vmt_catalog_resolve(b.c, "golden", &got), VMT_ENOENT);
    check_store_ok(&b.fx);

    srv_init(&v);
    CU_ASSERT_EQUAL_FATAL(do_pull(&v, &a, &b, "golden", NULL, &got, &st), 0);
    CU_ASSERT(vmt_id_equal(&got, &id));
    fprintf(stderr, "resumed pull: %llu bytes received of %llu for a full pull\n",
            (unsigned long long)st.wire_received, (unsigned long long)full.wire_received);
    CU_ASSERT(st.wire_received < full.wire_received * 65 / 100);
    CU_ASSERT(st.pages_fetched < full.pages_fetched * 65 / 100);
    check_memory(b.fx.s, &id, mem, NPAGES);
    check_store_ok(&b.fx);
    munmap(mem, NPAGES * 4096);
    side_free(&a);
    side_free(&b);
    side_free(&scratch);
}

/* A byte flipped in transit: the frame checksum catches it, the pull fails
 * clearly, the store is whole, and a new pull completes. */
static void test_flipped_byte_refused(void)
{
    side a, b;
    srv v;
    vmt_golden_stats st;
    vmt_id id, got;
    uint8_t *mem = mem_new(NPAGES, 51);
    side_new(&a, "golden-src");
    side_new(&b, "golden-dst");
    id = side_snapshot(&a, mem, NPAGES, NULL, "golden");
    srv_init(&v);
    v.use_fault = true;
    v.fault.flip_sent_at = 1u << 20;
    int rc = do_pull(&v, &a, &b, "golden", NULL, &got, &st);
    CU_ASSERT_EQUAL(rc, VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "corrupted in transit"));
    check_store_ok(&b.fx);
    srv_init(&v);
    CU_ASSERT_EQUAL_FATAL(do_pull(&v, &a, &b, "golden", NULL, &got, &st), 0);
    check_memory(b.fx.s, &id, mem, NPAGES);
    munmap(mem, NPAGES * 4096);
    side_free(&a);
    side_free(&b);
}

/* ---- a rogue provider: valid frames, a damaged object ---------------------- */

static int rogue_answer(srv *v, vmt_session *s, const vmt_golden_msg *w)
{
    vmt_golden_object *objs = calloc(w->u.want.n, sizeof(*objs));
    void **bufs = calloc(w->u.want.n, sizeof(void *));
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < w->u.want.n; i++) {
        vmt_id id;
        size_t len;
        vmt_obj_type type;
        memcpy(id.b, w->u.want.ids[i], 16);
        rc = vmt_store_get(v->rogue_store, &id, &bufs[i], &len, &type);
        if (type == VMT_OBJ_PAGE && i == 3)
            ((uint8_t *)bufs[i])[100] ^= 1; /* damaged at the provider: the id no longer fits */
        memcpy(objs[i].id, id.b, 16);
        objs[i].type = type;
        objs[i].codec = VMT_GOLDEN_CODEC_RAW;
        objs[i].raw_len = (uint32_t)len;
        objs[i].data = bufs[i];
        objs[i].len = len;
    }
    vmt_golden_msg m = {.type = VMT_GOLDEN_OBJECTS};
    m.u.objects.seq = w->u.want.seq;
    m.u.objects.objs = objs;
    m.u.objects.n = w->u.want.n;
    m.u.objects.last = true;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc == 0 && (rc = vmt_golden_encode(&m, &buf, &len)) == 0)
        rc = vmt_session_send_frame(s, 0, VMT_GOLDEN_OBJECTS, buf, len);
    free(buf);
    for (size_t i = 0; i < w->u.want.n; i++)
        free(bufs[i]);
    free(bufs);
    free(objs);
    return rc;
}

static int rogue_serve(srv *v, vmt_session *s)
{
    vmt_frame f;
    vmt_golden_msg m;
    vmt_frame_init(&f);
    int rc = vmt_session_recv(s, 0, &f, 10000);
    vmt_id id = v->snap;
    vmt_golden_msg snaps = {.type = VMT_GOLDEN_SNAPS};
    snaps.u.snaps.ids = (void *)&id;
    snaps.u.snaps.n = 1;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc == 0 && (rc = vmt_golden_encode(&snaps, &buf, &len)) == 0)
        rc = vmt_session_send_frame(s, 0, VMT_GOLDEN_SNAPS, buf, len);
    free(buf);
    while (rc == 0 && (rc = vmt_session_recv(s, 0, &f, 10000)) == 0) {
        if ((rc = vmt_golden_decode(f.type, f.payload, f.len, &m)) != 0)
            break;
        rc = m.type == VMT_GOLDEN_WANT ? rogue_answer(v, s, &m) : VMT_EPROTO;
        vmt_golden_msg_clear(&m);
    }
    vmt_frame_free(&f);
    return rc;
}

static void test_damaged_object_rejected(void)
{
    side a, b;
    srv v;
    vmt_golden_stats st;
    vmt_id id, got;
    uint8_t *mem = mem_new(NPAGES, 61);
    side_new(&a, "golden-src");
    side_new(&b, "golden-dst");
    id = side_snapshot(&a, mem, NPAGES, NULL, "golden");
    srv_init(&v);
    v.rogue = true;
    v.rogue_store = a.fx.s;
    v.snap = id;
    int rc = do_pull(&v, &a, &b, "golden", NULL, &got, &st);
    CU_ASSERT_EQUAL(rc, VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "does not hash to its id"));
    /* The rogue's session failed too (told why when the ERROR frame reached
     * it before the reset of a socket closed with its data unread). */
    fprintf(stderr, "rogue saw: %s\n", v.msg);
    CU_ASSERT_NOT_EQUAL(v.rc, 0);
    CU_ASSERT_EQUAL(vmt_catalog_resolve(b.c, "golden", &got), VMT_ENOENT);
    check_store_ok(&b.fx);
    /* The honest server completes it. */
    srv_init(&v);
    CU_ASSERT_EQUAL_FATAL(do_pull(&v, &a, &b, "golden", NULL, &got, &st), 0);
    check_memory(b.fx.s, &id, mem, NPAGES);
    munmap(mem, NPAGES * 4096);
    side_free(&a);
    side_free(&b);
}

/* ---- bad input and authentication ------------------------------------------ */

static void test_wrong_key_and_unknown_name(void)
{
    side a, b;
    srv v;
    vmt_session *s = NULL;
    vmt_session_config c;
    uint8_t *mem = mem_new(16, 71);
    side_new(&a, "golden-src");
    side_new(&b, "golden-dst");
    side_snapshot(&a, mem, 16, NULL, "golden");

    srv_init(&v);
    v.use_psk = true;
    srv_start(&v, a.fx.dir);
    session_cfg(&c, true);
    uint8_t wrong[32];
    memset(wrong, 'x', sizeof(wrong));
    c.psk = wrong;
    CU_ASSERT_EQUAL(vmt_session_connect(&s, "127.0.0.1", vmt_listener_port(v.l), &c), VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "wrong pre-shared key"));
    srv_join(&v);
    CU_ASSERT_EQUAL(v.rc, VMT_EAUTH);

    /* No key at all against a server that wants one. */
    srv_init(&v);
    v.use_psk = true;
    srv_start(&v, a.fx.dir);
    CU_ASSERT_NOT_EQUAL(client_connect(&v, false, &s), 0);
    srv_join(&v);
    CU_ASSERT_NOT_EQUAL(v.rc, 0);

    /* A name the server does not know. */
    srv_init(&v);
    vmt_golden_stats st;
    vmt_id got;
    CU_ASSERT_EQUAL(do_pull(&v, &a, &b, "nosuch", NULL, &got, &st), VMT_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "nosuch"));
    munmap(mem, 16 * 4096);
    side_free(&a);
    side_free(&b);
}

/* Raw bytes on the server's port: garbage, a newer protocol, an oversized
 * golden frame after the handshake. */
static void test_garbage_version_oversized(void)
{
    side a;
    srv v;
    vmt_transport *t = NULL;
    vmt_session *s = NULL;
    vmt_session_config c;
    side_new(&a, "golden-src");

    srv_init(&v);
    srv_start(&v, a.fx.dir);
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_connect(&t, "127.0.0.1", vmt_listener_port(v.l), 5000), 0);
    CU_ASSERT_EQUAL(vmt_transport_send(t, "GET / HTTP/1.0\r\n\r\nxx", 20), 0);
    srv_join(&v);
    vmt_transport_close(t);
    CU_ASSERT_EQUAL(v.rc, VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(v.msg, "not a vmtree"));

    srv_init(&v);
    srv_start(&v, a.fx.dir);
    session_cfg(&c, false);
    c.min_version = VMT_NET_PROTO_MAX + 1; /* a newer client */
    c.max_version = VMT_NET_PROTO_MAX + 2;
    CU_ASSERT_EQUAL(vmt_session_connect(&s, "127.0.0.1", vmt_listener_port(v.l), &c),
                    VMT_EUNSUPPORTED);
    srv_join(&v);
    CU_ASSERT_EQUAL(v.rc, VMT_EUNSUPPORTED);

    srv_init(&v);
    srv_start(&v, a.fx.dir);
    CU_ASSERT_EQUAL_FATAL(client_connect(&v, false, &s), 0);
    uint8_t hdr[VMT_FRAME_HEADER_LEN];
    vmt_frame_header_build(VMT_GOLDEN_REQUEST, NULL, 0, hdr);
    hdr[12] = 0x40; /* length (big-endian) = 1 GiB */
    hdr[13] = hdr[14] = hdr[15] = 0;
    CU_ASSERT_EQUAL(vmt_transport_send(vmt_session_stream(s, 0), hdr, sizeof(hdr)), 0);
    srv_join(&v);
    CU_ASSERT_EQUAL(v.rc, VMT_ERANGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(v.msg, "exceeds its cap"));
    vmt_session_close(s);
    side_free(&a);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"pull into an empty store", test_pull_empty_store},
        {"pull of a sibling sends the difference", test_pull_sibling_sends_difference},
        {"pull of a sparse 1 GiB map", test_pull_sparse_deep_map},
        {"push, and a read-only server refusing it", test_push},
        {"interrupted pull resumes", test_interrupted_pull_resumes},
        {"flipped byte in transit refused", test_flipped_byte_refused},
        {"damaged object rejected", test_damaged_object_rejected},
        {"wrong key, no key, unknown name", test_wrong_key_and_unknown_name},
        {"garbage, newer version, oversized frame", test_garbage_version_oversized},
        {NULL, NULL},
    };
    return vmt_test_run("golden", cases, NULL, NULL);
}
