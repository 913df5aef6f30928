/*
 * migrate/golden_lazy*.c: a VM from a snapshot still arriving from another
 * store, over real TCP on 127.0.0.1 with real guests.  The server is the
 * library's (vmt_golden_serve) on a thread or in a forked process that the
 * test kills; its sends go through a rate limit so that the transfer takes
 * seconds while the guest needs only a few hundred pages to run.
 *
 * The snapshot: a counter guest whose upper 24 MiB of RAM the host filled
 * with random pages (ballast the guest never touches), so most of the
 * snapshot is still missing while the counter prints.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "migfx.h"
#include "vmtree/golden.h"

#define MEM (64ull << 20)
#define COUNTER "buf=256 steps=0 every=1 work=20000"
#define BALLAST_PAGE 4096u  /* 16 MiB */
#define BALLAST_PAGES 6144u /* 24 MiB: to 40 MiB */
#define RATE (4u << 20)     /* bytes a second from the server */
#define T30 (30 * FX_SEC)

static migfx_store src;    /* the server's store */
static vmt_id g_snap;      /* the counter snapshot in it */
static uint64_t g_at;      /* the counter's step at the snapshot */
static char *g_orig;       /* the original run's console */
static uint8_t *g_ballast; /* what the ballast holds */

/* ---- the server -------------------------------------------------------------- */

typedef struct srv {
    vmt_listener *l;
    vmt_ratelimit *rate;
    pthread_t th;
    int rc;
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
    return v->rate ? vmt_transport_rate(out, t, v->rate) : (*out = t, 0);
}

static void session_cfg(vmt_session_config *c)
{
    vmt_session_config_init(c);
    c->timeout_ms = 10000;
    c->allow_unauthenticated = true;
}

/* Serves one request on v's listener (in a thread or a child process). */
static int srv_serve(srv *v)
{
    vmt_session_config c;
    vmt_session *s = NULL;
    session_cfg(&c);
    int rc = vmt_session_server(&s, &c, srv_accept, v);
    if (rc == 0) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/store", src.dir);
        vmt_golden_server_opts so = {.store_dir = dir, .read_only = true};
        vmt_golden_opts_init(&so.xfer);
        so.xfer.timeout_ms = 10000;
        rc = vmt_golden_serve(s, &so, NULL, NULL, NULL);
    }
    vmt_session_close(s);
    return rc;
}

static void *srv_main(void *arg)
{
    srv *v = arg;
    v->rc = srv_serve(v);
    return NULL;
}

static void srv_open(srv *v, uint64_t rate)
{
    memset(v, 0, sizeof(*v));
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_listen(&v->l, "127.0.0.1", 0), 0);
    if (rate)
        CU_ASSERT_EQUAL_FATAL(vmt_ratelimit_new(&v->rate, rate, 0), 0);
}

static void srv_close(srv *v)
{
    vmt_listener_close(v->l);
    vmt_ratelimit_free(v->rate);
}

static vmt_session *connect_to(srv *v)
{
    vmt_session_config c;
    vmt_session *s = NULL;
    session_cfg(&c);
    CU_ASSERT_EQUAL_FATAL(vmt_session_connect(&s, "127.0.0.1", vmt_listener_port(v->l), &c), 0);
    return s;
}

/* ---- the snapshot -------------------------------------------------------------- */

static int setup(void)
{
    if (fx_setup() != 0 || migfx_store_open(&src) != 0)
        return 1;
    fx_guest g;
    vmt_vmsnap *vs = NULL;
    if (migfx_boot(&g, "counter", COUNTER, MEM) != 0)
        return 1;
    /* Random ballast the counter never touches. */
    uint8_t *ram = vmt_vm_ram(g.vm, NULL);
    g_ballast = malloc((size_t)BALLAST_PAGES * 4096);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < (size_t)BALLAST_PAGES * 512; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ((uint64_t *)g_ballast)[i] = x;
    }
    memcpy(ram + (size_t)BALLAST_PAGE * 4096, g_ballast, (size_t)BALLAST_PAGES * 4096);
    int rc = migfx_attach(&vs, &src, &g, NULL, "orig");
    vmt_vm_mark_dirty(g.vm, BALLAST_PAGE, BALLAST_PAGES);
    rc = rc ? rc : vmt_vm_start(g.vm);
    if (rc == 0 && !migfx_wait_step(&g, 5, T30))
        rc = -1;
    rc = rc ? rc : migfx_take(vs, 8, 256, &g_snap, NULL);
    g_at = migfx_counter_step(&g);
    if (rc == 0 && !migfx_wait_step(&g, g_at + 300, T30))
        rc = -1;
    g_orig = vmt_console_buf_dup(g.con, NULL);
    vmt_vmsnap_detach(vs);
    fx_free(&g);
    return rc ? 1 : 0;
}

static int teardown(void)
{
    free(g_orig);
    free(g_ballast);
    migfx_store_close(&src);
    return fx_teardown();
}

/* ---- the branch ----------------------------------------------------------------- */

typedef struct branch {
    migfx_store dst;
    vmt_session *s;
    vmt_golden_lazy *gl;
    fx_guest g;
} branch;

/* A VM in the fixture's fx_guest from the remote snapshot (not started). */
static int branch_open(branch *b, srv *v, const vmt_id *want)
{
    vmt_snap_record rec;
    vmt_id id;
    vmt_golden_opts o;
    memset(b, 0, sizeof(*b));
    CU_ASSERT_EQUAL_FATAL(migfx_store_open(&b->dst), 0);
    b->s = connect_to(v);
    vmt_golden_opts_init(&o);
    o.timeout_ms = 5000;
    o.commit_bytes = 1u << 20;
    CU_ASSERT_FATAL(vmt_console_buf_new(&b->g.con) == 0);
    pthread_mutex_init(&b->g.lock, NULL);
    pthread_cond_init(&b->g.cond, NULL);
    vmt_vm_config base;
    vmt_vm_config_init(&base);
    base.console = vmt_console_buf_sink;
    base.console_ctx = b->g.con;
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(want, hex);
    int rc = vmt_golden_lazy_open(&b->gl, b->s, b->dst.s, fx_kvm, &base, hex, &o, 1, &b->g.vm, &id,
                                  &rec);
    if (rc) {
        fprintf(stderr, "\n  vmt_golden_lazy_open: %s\n", vmt_error_last());
        return rc;
    }
    CU_ASSERT(vmt_id_equal(&id, want));
    CU_ASSERT_EQUAL(rec.mem_size, MEM);
    return 0;
}

static void branch_close(branch *b)
{
    fx_free(&b->g);
    vmt_golden_lazy_close(b->gl);
    vmt_session_close(b->s);
    migfx_store_close(&b->dst);
}

/* Polls until complete (1) or failed (<0), up to timeout. */
static int poll_until(branch *b, uint64_t timeout_ns)
{
    uint64_t end = vmt_now_ns() + timeout_ns;
    for (;;) {
        int rc = vmt_golden_lazy_poll(b->gl, b->dst.c, "got");
        if (rc != 0 || vmt_now_ns() > end)
            return rc;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}

static bool stats_complete(branch *b, vmt_golden_lazy_stats *st)
{
    vmt_golden_lazy_get_stats(b->gl, st);
    return st->complete;
}

/* Cuts `text` after the line of the original run's last step (the branch
 * runs on past it, and only steps both printed can be compared). */
static void cut_after_orig(char *text)
{
    migfx_line *l = NULL;
    size_t n = migfx_counter_lines(g_orig, &l);
    char needle[64];
    snprintf(needle, sizeof(needle), "counter: step %llu ",
             (unsigned long long)(n ? l[n - 1].step : 0));
    free(l);
    char *p = strstr(text, needle);
    char *nl = p ? strchr(p, '\n') : NULL;
    if (nl)
        nl[1] = '\0';
}

/* The counter runs (prints its next steps, exactly as the original did)
 * while most pages are still missing; after the transfer the snapshot is
 * complete in the store, tagged, and the ballast is intact in RAM. */
static void runs_before_the_pull_completes(void)
{
    srv v;
    branch b;
    srv_open(&v, RATE);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&v.th, NULL, srv_main, &v), 0);
    CU_ASSERT_FATAL(branch_open(&b, &v, &g_snap) == 0);
    vmt_golden_lazy_stats st;
    CU_ASSERT(!stats_complete(&b, &st));
    CU_ASSERT(st.pages_missing >= BALLAST_PAGES);
    CU_ASSERT_FATAL(vmt_vm_start(b.g.vm) == 0);
    CU_ASSERT_EQUAL(vmt_golden_lazy_poll(b.gl, b.dst.c, "got"), 0);
    CU_ASSERT(migfx_wait_step(&b.g, g_at + 10, T30));
    /* Ten steps printed: pages were still missing meanwhile. */
    CU_ASSERT_EQUAL(vmt_golden_lazy_poll(b.gl, b.dst.c, "got"), 0);
    CU_ASSERT(!stats_complete(&b, &st));
    CU_ASSERT(st.xfer.pages_fetched < st.pages_missing / 2);
    fprintf(stderr, "\n  10 steps after start: %llu of %llu pages in, open %.1f ms\n",
            (unsigned long long)st.xfer.pages_fetched, (unsigned long long)st.pages_missing,
            st.open_ns / 1e6);

    int rc = poll_until(&b, 60 * FX_SEC);
    if (rc != 1)
        fprintf(stderr, "\n  poll: %d %s\n", rc, vmt_error_last());
    CU_ASSERT_EQUAL_FATAL(rc, 1);
    CU_ASSERT(stats_complete(&b, &st));
    CU_ASSERT(st.xfer.pages_fetched >= st.pages_missing);
    CU_ASSERT(migfx_wait_step(&b.g, g_at + 40, T30));
    char *after = vmt_console_buf_dup(b.g.con, NULL);
    cut_after_orig(after);
    uint64_t first = 0;
    long n = migfx_counter_compare(g_orig, after, &first);
    CU_ASSERT(n >= 30);
    CU_ASSERT(first > 5 && first <= g_at + 1); /* the snapshot was taken by step g_at */
    free(after);
    uint8_t *ram = vmt_vm_ram(b.g.vm, NULL);
    CU_ASSERT(memcmp(ram + (size_t)BALLAST_PAGE * 4096, g_ballast, (size_t)BALLAST_PAGES * 4096) ==
              0);
    /* Complete in the store: the record, tagged, and every page. */
    vmt_id tagged;
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(b.dst.c, "tag/got", &tagged), 0);
    CU_ASSERT(vmt_id_equal(&tagged, &g_snap));
    vmt_store_verify_stats vs;
    CU_ASSERT_EQUAL(vmt_store_verify(b.dst.s, NULL, &vs), 0);
    vmt_restore *rs = NULL;
    fx_guest r;
    CU_ASSERT_FATAL(migfx_restore(&r, b.dst.s, &g_snap, VMT_RESTORE_EAGER, &rs, NULL) == 0);
    CU_ASSERT(memcmp(vmt_vm_ram(r.vm, NULL) + (size_t)BALLAST_PAGE * 4096, g_ballast,
                     (size_t)BALLAST_PAGES * 4096) == 0);
    migfx_free(&r, rs);
    branch_close(&b);
    pthread_join(v.th, NULL);
    CU_ASSERT_EQUAL(v.rc, 0);
    srv_close(&v);
}

/* The server process dies midway: poll reports it (the caller ends the VM),
 * the store verifies and holds neither the record nor any node of the
 * snapshot, and a later pull moves only what had not arrived. */
static void server_killed_midway_fails_cleanly(void)
{
    srv v;
    branch b;
    srv_open(&v, RATE / 4);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0)
        _exit(srv_serve(&v) ? 1 : 0);
    CU_ASSERT_FATAL(branch_open(&b, &v, &g_snap) == 0);
    CU_ASSERT_FATAL(vmt_vm_start(b.g.vm) == 0);
    CU_ASSERT(migfx_wait_step(&b.g, g_at + 3, T30));
    vmt_golden_lazy_stats st;
    CU_ASSERT(!stats_complete(&b, &st));
    kill(pid, SIGKILL);
    int wst = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &wst, 0), pid);
    uint64_t t0 = vmt_now_ns();
    int rc = poll_until(&b, 20 * FX_SEC);
    fprintf(stderr, "\n  after the kill (%.0f ms): %d %s\n", (vmt_now_ns() - t0) / 1e6, rc,
            vmt_error_last());
    CU_ASSERT(rc < 0);
    CU_ASSERT(vmt_golden_lazy_poll(b.gl, b.dst.c, "got") == rc); /* sticky */
    CU_ASSERT(!stats_complete(&b, &st));
    uint64_t arrived = st.xfer.pages_fetched;
    fx_free(&b.g);
    vmt_golden_lazy_close(b.gl);
    vmt_session_close(b.s);
    srv_close(&v);

    /* Nothing of the snapshot but pages; the store is sound. */
    bool have = true;
    vmt_snap_record rec;
    CU_ASSERT_EQUAL(vmt_snap_record_read(src.s, &g_snap, &rec), 0);
    CU_ASSERT_EQUAL(vmt_store_has_many(b.dst.s, &g_snap, 1, &have), 0);
    CU_ASSERT(!have);
    CU_ASSERT_EQUAL(vmt_store_has_many(b.dst.s, &rec.map_root, 1, &have), 0);
    CU_ASSERT(!have);
    vmt_id tagged;
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(b.dst.c, "tag/got", &tagged), VMT_ENOENT);
    vmt_store_verify_stats vs;
    CU_ASSERT_EQUAL(vmt_store_verify(b.dst.s, NULL, &vs), 0);

    /* A pull continues: what arrived does not cross again. */
    srv_open(&v, 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&v.th, NULL, srv_main, &v), 0);
    vmt_session *s = connect_to(&v);
    vmt_golden_stats ps;
    vmt_id got;
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(&g_snap, hex);
    CU_ASSERT_EQUAL(vmt_golden_pull(s, b.dst.s, b.dst.c, hex, NULL, NULL, &got, &ps), 0);
    vmt_session_close(s);
    pthread_join(v.th, NULL);
    srv_close(&v);
    CU_ASSERT(arrived > 0);
    CU_ASSERT(ps.pages_present >= arrived / 2);
    CU_ASSERT(ps.pages_fetched + ps.pages_present >= st.pages_missing);
    fprintf(stderr, "  pull after: %llu pages fetched, %llu present (%llu had arrived)\n",
            (unsigned long long)ps.pages_fetched, (unsigned long long)ps.pages_present,
            (unsigned long long)arrived);
    migfx_store_close(&b.dst);
}

#define DBASE (8ull << 20)
#define DPAGES 4096u

/* A dirtier snapshotted while it writes: its RAM, read through the faults
 * (the VM not started: every page the host touches comes from the server),
 * holds the invariant. */
static void dirtier_invariant_through_faults(void)
{
    fx_guest g;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%u fill=random spin=2000 per_pass=512 event=1",
             (unsigned long long)DBASE, DPAGES);
    CU_ASSERT_FATAL(migfx_boot(&g, "dirtier", cmd, MEM) == 0);
    vmt_vmsnap *vs;
    vmt_id id;
    CU_ASSERT_FATAL(migfx_attach(&vs, &src, &g, NULL, "dirtier") == 0);
    CU_ASSERT_FATAL(vmt_vm_start(g.vm) == 0);
    CU_ASSERT_FATAL(fx_wait_value(&g, DIRTIER_READY, 1, T30));
    struct timespec pause = {0, 50000000};
    nanosleep(&pause, NULL);
    CU_ASSERT_FATAL(migfx_take(vs, 6, 16, &id, NULL) == 0);
    vmt_vmsnap_detach(vs);
    fx_free(&g);

    srv v;
    branch b;
    srv_open(&v, 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&v.th, NULL, srv_main, &v), 0);
    CU_ASSERT_FATAL(branch_open(&b, &v, &id) == 0);
    char why[256] = "";
    bool ok = migfx_dirtier_invariant(vmt_vm_ram(b.g.vm, NULL), DBASE, DPAGES, 1, why, sizeof(why));
    if (!ok)
        fprintf(stderr, "\n  %s\n", why);
    CU_ASSERT(ok);
    CU_ASSERT_EQUAL(poll_until(&b, 60 * FX_SEC), 1);
    vmt_golden_lazy_stats st;
    CU_ASSERT(stats_complete(&b, &st));
    CU_ASSERT(st.fetches > 0);
    branch_close(&b);
    pthread_join(v.th, NULL);
    CU_ASSERT_EQUAL(v.rc, 0);
    srv_close(&v);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"runs_before_the_pull_completes", runs_before_the_pull_completes},
        {"server_killed_midway_fails_cleanly", server_killed_midway_fails_cleanly},
        {"dirtier_invariant_through_faults", dirtier_invariant_through_faults},
        {NULL, NULL},
    };
    fx_require_kvm();
    return vmt_test_run("migrate_golden_lazy", cases, setup, teardown);
}
