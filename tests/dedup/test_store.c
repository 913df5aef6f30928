/* Opening and closing: the writer lock, readers beside a writer, reopening,
 * the default location, concurrent reads during puts. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dd_test.h"

/* A forked child, for the directory backend (flock is per open file). */
static void other_process_refused_fork(const char *dir, const char *pid)
{
    int fds[2];
    CU_ASSERT_FATAL(pipe(fds) == 0);
    pid_t child = fork();
    if (child == 0) {
        vmt_store *c = NULL;
        int rc = vmt_store_open(&c, dir, NULL);
        const char *m = vmt_error_last();
        ssize_t w = write(fds[1], m, strlen(m) + 1);
        (void)w;
        _exit(rc == VMT_EBUSY ? 0 : 1);
    }
    char msg[1024] = {0};
    ssize_t r = read(fds[0], msg, sizeof(msg) - 1);
    int st;
    waitpid(child, &st, 0);
    CU_ASSERT(r > 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, pid));
    close(fds[0]);
    close(fds[1]);
}

/* The vmtree CLI as a second process: librados handles do not survive a
 * fork, so the RADOS lock is tested across a real exec. */
static void other_process_refused_cli(const char *dir, const char *pid)
{
    char *cli = vmt_test_cli_path(), *out = NULL;
    size_t len = 0;
    /* train-dict wants the writer lock (and would harmlessly fail on the
     * empty store if it got it). */
    char *argv[] = {cli, "store", "train-dict", "--store", (char *)dir, NULL};
    setenv("VMTREE_LOCK_WAIT", "0", 1);
    int st = vmt_test_spawn(argv, &out, &len);
    CU_ASSERT_NOT_EQUAL(st, 0);
    CU_ASSERT_PTR_NOT_NULL(out && strstr(out, pid));
    if (out && !strstr(out, pid))
        fprintf(stderr, "\nthe CLI said: %s\n", out);
    free(out);
    free(cli);
}

static void test_second_writer_is_refused_with_pid(void)
{
    char *dir = ddt_store("lock", NULL);
    vmt_store *s = ddt_open(dir, false, 1), *t = NULL;
    char pid[32];
    snprintf(pid, sizeof(pid), "process %ld", (long)getpid());
    CU_ASSERT_EQUAL(vmt_store_open(&t, dir, NULL), VMT_EBUSY);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), pid));
    /* Another process is refused too, and told our pid. */
    if (ddt_rados())
        other_process_refused_cli(dir, pid);
    else
        other_process_refused_fork(dir, pid);
    /* Readers are welcome while the writer holds the lock. */
    vmt_store *ro = ddt_open(dir, true, 1);
    vmt_store_close(ro);
    vmt_store_close(s);
    s = ddt_open(dir, false, 1); /* the lock went with the close */
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_reader_sees_the_last_commit(void)
{
    char *dir = ddt_store("reader", NULL);
    vmt_store *w = ddt_open(dir, false, 2);
    uint8_t a[VMT_STORE_PAGE_SIZE], b[VMT_STORE_PAGE_SIZE];
    const void *pa[1] = {a}, *pb[1] = {b};
    vmt_id ia, ib;
    bool has[2];
    ddt_page(1, a);
    ddt_page(2, b);
    DDT_OK(vmt_store_put_pages(w, pa, 1, &ia, NULL, NULL));
    DDT_OK(vmt_store_commit(w));
    DDT_OK(vmt_store_put_pages(w, pb, 1, &ib, NULL, NULL)); /* not committed */
    vmt_store *r = ddt_open(dir, true, 1);
    vmt_id both[2] = {ia, ib};
    DDT_OK(vmt_store_has_many(r, both, 2, has));
    CU_ASSERT_TRUE(has[0]);
    CU_ASSERT_FALSE(has[1]);
    DDT_OK(vmt_store_verify(r, NULL, NULL)); /* the writer's tail is not damage */
    vmt_store_recovery rec;
    vmt_store_recovery_info(r, &rec);
    CU_ASSERT_EQUAL(rec.records_dropped, 1);
    vmt_store_close(r);
    vmt_store_close(w);
    ddt_cleanup(dir);
}

static void test_missing_store_and_default_dir(void)
{
    vmt_store *s = NULL;
    char buf[4096];
    CU_ASSERT_EQUAL(vmt_store_open(&s, "/nonexistent/vmtree/store", NULL), VMT_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "store init"));
    setenv(VMT_STORE_ENV, "/srv/x", 1);
    DDT_OK(vmt_store_default_dir(buf, sizeof(buf)));
    CU_ASSERT_STRING_EQUAL(buf, "/srv/x");
    unsetenv(VMT_STORE_ENV);
    setenv("XDG_DATA_HOME", "/xdg", 1);
    DDT_OK(vmt_store_default_dir(buf, sizeof(buf)));
    CU_ASSERT_STRING_EQUAL(buf, "/xdg/vmtree/store");
    unsetenv("XDG_DATA_HOME");
    setenv("HOME", "/home/u", 1);
    DDT_OK(vmt_store_default_dir(buf, sizeof(buf)));
    CU_ASSERT_STRING_EQUAL(buf, "/home/u/.local/share/vmtree/store");
    CU_ASSERT_EQUAL(vmt_store_default_dir(buf, 5), VMT_ERANGE);
}

static void test_init_refuses_a_used_directory(void)
{
    char *dir = ddt_store("init", NULL);
    CU_ASSERT_EQUAL(vmt_store_init(dir, NULL), VMT_EEXIST);
    char *other = ddt_location("initx");
    ddt_obj_write(other, "precious", "x", 1);
    CU_ASSERT_EQUAL(vmt_store_init(other, NULL), VMT_EEXIST);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "precious"));
    vmt_store_config cfg;
    vmt_store_config_init(&cfg);
    cfg.pack_size = 1000;
    CU_ASSERT_EQUAL(vmt_store_init(dir, &cfg), VMT_EINVAL);
    ddt_cleanup(other);
    ddt_cleanup(dir);
}

static void test_store_file_damage_is_a_clear_error(void)
{
    char *dir = ddt_store("cfg", NULL);
    vmt_store *s = NULL;
    ddt_obj_write(dir, "STORE", "garbage\n", 8);
    CU_ASSERT_EQUAL(vmt_store_open(&s, dir, NULL), VMT_ECORRUPT);
    ddt_obj_write(dir, "STORE", "vmtree-store 1\npack-size 5\n", 27);
    CU_ASSERT_EQUAL(vmt_store_open(&s, dir, NULL), VMT_ECORRUPT);
    CU_ASSERT_PTR_NULL(s);
    ddt_cleanup(dir);
}

typedef struct reader_arg {
    vmt_store *s;
    vmt_id *ids;
    uint8_t *want;
    size_t n;
    int bad;
    volatile int stop;
} reader_arg;

static void *reader(void *v)
{
    reader_arg *a = v;
    uint8_t page[VMT_STORE_PAGE_SIZE];
    void *dst[1] = {page};
    while (!a->stop) {
        for (size_t i = 0; i < a->n; i++) {
            if (vmt_store_get_pages(a->s, &a->ids[i], 1, dst) != 0 ||
                memcmp(page, a->want + i * VMT_STORE_PAGE_SIZE, sizeof(page)) != 0)
                a->bad++;
        }
    }
    return NULL;
}

static void test_gets_run_beside_puts(void)
{
    char *dir = ddt_store_small("conc", 1u << 20);
    vmt_store *s = ddt_open(dir, false, 2);
    enum { N = 64, M = 3000 };
    uint8_t *a = malloc(N * VMT_STORE_PAGE_SIZE), *b = malloc(M * VMT_STORE_PAGE_SIZE);
    const void *pa[N], **pb = malloc(M * sizeof(*pb));
    vmt_id ia[N], *ib = malloc(M * sizeof(*ib));
    for (int i = 0; i < N; i++) {
        ddt_page((uint64_t)i, a + i * VMT_STORE_PAGE_SIZE);
        pa[i] = a + i * VMT_STORE_PAGE_SIZE;
    }
    for (int i = 0; i < M; i++) {
        ddt_page(100000u + (uint64_t)i, b + i * VMT_STORE_PAGE_SIZE);
        pb[i] = b + i * VMT_STORE_PAGE_SIZE;
    }
    DDT_OK(vmt_store_put_pages(s, pa, N, ia, NULL, NULL));
    reader_arg ra = {.s = s, .ids = ia, .want = a, .n = N};
    pthread_t th;
    pthread_create(&th, NULL, reader, &ra);
    for (int i = 0; i < M; i += 100) /* new packs get added meanwhile */
        DDT_OK(vmt_store_put_pages(s, pb + i, 100, ib + i, NULL, NULL));
    DDT_OK(vmt_store_commit(s));
    ra.stop = 1;
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(ra.bad, 0);
    vmt_store_close(s);
    free(a);
    free(b);
    free(pb);
    free(ib);
    ddt_cleanup(dir);
}

/* Reopens as a writer; asserts the index was loaded, not rebuilt or replayed. */
static vmt_store *reopen_from_index(const char *dir)
{
    vmt_store *s = ddt_open(dir, false, 2);
    vmt_store_recovery r;
    vmt_store_recovery_info(s, &r);
    CU_ASSERT_FALSE(r.index_rebuilt);
    CU_ASSERT_EQUAL(r.records_replayed, 0);
    CU_ASSERT_EQUAL(r.records_dropped, 0);
    return s;
}

static void test_index_survives_reopen_and_gc(void)
{
    enum { N = 3000 };
    char *dir = ddt_store_small("idx", 1u << 20);
    vmt_store *s = ddt_open(dir, false, 2);
    uint8_t *pages = malloc((size_t)N * VMT_STORE_PAGE_SIZE), *out = malloc(VMT_STORE_PAGE_SIZE);
    const void **ptr = malloc(N * sizeof(*ptr));
    vmt_id *ids = malloc(N * sizeof(*ids));
    CU_ASSERT_FATAL(pages && out && ptr && ids);
    for (size_t i = 0; i < N; i++) {
        ddt_page(7000 + i, pages + i * VMT_STORE_PAGE_SIZE);
        ptr[i] = pages + i * VMT_STORE_PAGE_SIZE;
    }
    /* Two saves: the second adds only what is new where the backend can. */
    DDT_OK(vmt_store_put_pages(s, ptr, N / 2, ids, NULL, NULL));
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    s = reopen_from_index(dir);
    DDT_OK(vmt_store_put_pages(s, ptr + N / 2, N - N / 2, ids + N / 2, NULL, NULL));
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    s = reopen_from_index(dir);
    if (ddt_rados()) /* the entries are in omap shards, not in "index" */
        CU_ASSERT(ddt_obj_size(dir, "index") < 256 && ddt_obj_size(dir, "index.00") >= 0);
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.objects, N);
    /* gc keeps every tenth page: dead entries must leave the saved index,
     * or the next open would find entries in deleted packs and rebuild. */
    vmt_id keep[N / 10];
    for (size_t i = 0; i < N / 10; i++)
        keep[i] = ids[10 * i];
    vmt_store_gc_stats gs;
    DDT_OK(vmt_store_gc(s, keep, N / 10, NULL, &gs));
    CU_ASSERT(gs.packs_deleted > 0);
    vmt_store_close(s);
    s = reopen_from_index(dir);
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.objects, N / 10);
    for (size_t i = 0; i < N; i += 10) {
        void *dst[1] = {out};
        DDT_OK(vmt_store_get_pages(s, &ids[i], 1, dst));
        CU_ASSERT_EQUAL(memcmp(out, ptr[i], VMT_STORE_PAGE_SIZE), 0);
    }
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    vmt_store_close(s);
    free(pages);
    free(out);
    free(ptr);
    free(ids);
    ddt_cleanup(dir);
}

/* Pages whose ids fill every index shard (the id's first byte picks it):
 * BIG in shard 0, more than one page of omap keys on RADOS (1024), and
 * SMALL in each other shard.  A base page with a counter stamped in. */
enum { SHARDS = 256, BIG = 1100, SMALL = 6, SPREAD = BIG + (SHARDS - 1) * SMALL };

static void spread_pages(uint8_t *pages, vmt_id *ids)
{
    unsigned count[SHARDS] = {0};
    uint8_t base[VMT_STORE_PAGE_SIZE];
    size_t n = 0;
    ddt_page(4242, base);
    for (uint64_t c = 0; n < SPREAD; c++) {
        uint8_t *p = pages + n * VMT_STORE_PAGE_SIZE;
        memcpy(p, base, VMT_STORE_PAGE_SIZE);
        memcpy(p + 64, &c, sizeof(c));
        vmt_id_of(p, VMT_STORE_PAGE_SIZE, &ids[n]);
        unsigned sh = ids[n].b[0];
        if (count[sh] < (sh == 0 ? BIG : SMALL)) {
            count[sh]++;
            n++;
        }
    }
}

/* Asserts which of ids the store holds: every one where want[i]. */
static void check_present(vmt_store *s, const vmt_id *ids, const bool *want, size_t n)
{
    bool *has = calloc(n, sizeof(bool));
    CU_ASSERT_PTR_NOT_NULL_FATAL(has);
    DDT_OK(vmt_store_has_many(s, ids, n, has));
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++)
        wrong += has[i] != want[i];
    CU_ASSERT_EQUAL(wrong, 0);
    free(has);
}

static void test_index_over_every_shard_loads_back(void)
{
    char *dir = ddt_store_small("shards", 4u << 20);
    uint8_t *pages = malloc((size_t)SPREAD * VMT_STORE_PAGE_SIZE), *out = malloc(VMT_STORE_PAGE_SIZE);
    const void **ptr = malloc(SPREAD * sizeof(*ptr));
    vmt_id *ids = malloc(SPREAD * sizeof(*ids)), *keep = malloc(SPREAD * sizeof(*keep));
    bool *want = malloc(SPREAD * sizeof(*want));
    CU_ASSERT_FATAL(pages && out && ptr && ids && keep && want);
    spread_pages(pages, ids);
    for (size_t i = 0; i < SPREAD; i++) {
        ptr[i] = pages + i * VMT_STORE_PAGE_SIZE;
        want[i] = true;
    }
    vmt_store *s = ddt_open(dir, false, 2);
    vmt_id got[SPREAD];
    DDT_OK(vmt_store_put_pages(s, ptr, SPREAD, got, NULL, NULL));
    CU_ASSERT_EQUAL(memcmp(got, ids, sizeof(got)), 0);
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    /* Every entry back from the saved index (nothing replayed), no more. */
    s = reopen_from_index(dir);
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.objects, SPREAD);
    check_present(s, ids, want, SPREAD);
    /* gc drops every third page of shard 0: its saved keys are rewritten
     * and the dead ones pruned, page by page on RADOS. */
    size_t nk = 0;
    for (size_t i = 0; i < SPREAD; i++) {
        want[i] = ids[i].b[0] != 0 || i % 3 != 0;
        if (want[i])
            keep[nk++] = ids[i];
    }
    vmt_store_gc_opts go;
    vmt_store_gc_opts_init(&go);
    go.min_live = 1.0; /* every pack with a dead object is rewritten */
    vmt_store_gc_stats gs;
    DDT_OK(vmt_store_gc(s, keep, nk, &go, &gs));
    CU_ASSERT(gs.packs_deleted > 0);
    vmt_store_close(s);
    s = reopen_from_index(dir);
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.objects, nk);
    check_present(s, ids, want, SPREAD);
    vmt_store_close(s);
    /* A reader loads the same, and each kept page of shard 0 reads back. */
    s = ddt_open(dir, true, 2);
    DDT_OK(vmt_store_get_stats(s, &st));
    CU_ASSERT_EQUAL(st.objects, nk);
    check_present(s, ids, want, SPREAD);
    size_t bad = 0;
    for (size_t i = 0; i < SPREAD; i++) {
        void *dst[1] = {out};
        if (ids[i].b[0] != 0 || !want[i])
            continue;
        DDT_OK(vmt_store_get_pages(s, &ids[i], 1, dst));
        bad += memcmp(out, ptr[i], VMT_STORE_PAGE_SIZE) != 0;
    }
    CU_ASSERT_EQUAL(bad, 0);
    vmt_store_close(s);
    free(pages);
    free(out);
    free(ptr);
    free(ids);
    free(keep);
    free(want);
    ddt_cleanup(dir);
}

static void test_remove_deletes_the_whole_store(void)
{
    char *dir = ddt_store_small("remove", 1u << 20);
    vmt_store *s = ddt_open(dir, false, 2);
    uint8_t *pages = malloc(600 * VMT_STORE_PAGE_SIZE);
    const void *ptr[600];
    vmt_id ids[600];
    CU_ASSERT_PTR_NOT_NULL_FATAL(pages);
    for (size_t i = 0; i < 600; i++) {
        ddt_random_page(i, pages + i * VMT_STORE_PAGE_SIZE);
        ptr[i] = pages + i * VMT_STORE_PAGE_SIZE;
    }
    DDT_OK(vmt_store_put_pages(s, ptr, 600, ids, NULL, NULL));
    DDT_OK(vmt_store_commit(s));
    CU_ASSERT(ddt_pack_bytes(dir) > 2u << 20); /* several packs */
    CU_ASSERT_EQUAL(vmt_store_remove(dir), VMT_EBUSY); /* the writer is still there */
    vmt_store_close(s);
    DDT_OK(vmt_store_remove(dir));
    CU_ASSERT_EQUAL(vmt_store_open(&s, dir, NULL), VMT_ENOENT);
    CU_ASSERT_EQUAL(vmt_store_remove(dir), VMT_ENOENT);
    if (!ddt_rados())
        CU_ASSERT_EQUAL(access(dir, F_OK), -1); /* the directory went too */
    /* Nothing is left: the location takes a new store. */
    DDT_OK(vmt_store_init(dir, NULL));
    free(pages);
    ddt_cleanup(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"a second writer is refused with the holder's pid",
         test_second_writer_is_refused_with_pid},
        {"a reader sees the last commit only", test_reader_sees_the_last_commit},
        {"missing store and the default location", test_missing_store_and_default_dir},
        {"init refuses a used directory", test_init_refuses_a_used_directory},
        {"a damaged STORE file is a clear error", test_store_file_damage_is_a_clear_error},
        {"remove deletes the whole store", test_remove_deletes_the_whole_store},
        {"the index survives reopening and gc", test_index_survives_reopen_and_gc},
        {"gets run beside puts", test_gets_run_beside_puts},
        {"an index over every shard, one of several omap pages, loads back exactly",
         test_index_over_every_shard_loads_back},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/store", cases, NULL, NULL);
}
