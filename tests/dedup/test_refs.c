/* Refs: compare-and-swap across processes (on a directory or on RADOS). */
#include <errno.h>
#include <signal.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dd_test.h"

static void test_get_set_and_conflicts(void)
{
    char *dir = ddt_store("refs", NULL);
    vmt_store *s = ddt_open(dir, true, 1); /* refs need no writer lock */
    char buf[64];
    size_t len = 0;
    uint64_t v = 0;
    CU_ASSERT_EQUAL(vmt_store_ref_get(s, "vm-a", buf, sizeof(buf), &len, &v), VMT_ENOENT);
    DDT_OK(vmt_store_ref_set(s, "vm-a", 0, "one", 3, &v));
    CU_ASSERT_EQUAL(v, 1);
    /* Creating it again, or updating from a stale version, is a conflict. */
    CU_ASSERT_EQUAL(vmt_store_ref_set(s, "vm-a", 0, "two", 3, NULL), VMT_EBUSY);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "changed under you"));
    DDT_OK(vmt_store_ref_set(s, "vm-a", 1, "two!", 4, &v));
    CU_ASSERT_EQUAL(vmt_store_ref_set(s, "vm-a", 1, "three", 5, NULL), VMT_EBUSY);
    DDT_OK(vmt_store_ref_get(s, "vm-a", buf, sizeof(buf), &len, &v));
    CU_ASSERT_EQUAL(v, 2);
    CU_ASSERT_EQUAL(len, 4);
    CU_ASSERT_EQUAL(memcmp(buf, "two!", 4), 0);
    CU_ASSERT_EQUAL(vmt_store_ref_get(s, "vm-a", buf, 2, &len, &v), VMT_ERANGE);
    CU_ASSERT_EQUAL(len, 4);
    memset(buf, 0, sizeof(buf)); /* the version is optional */
    DDT_OK(vmt_store_ref_get(s, "vm-a", buf, sizeof(buf), &len, NULL));
    CU_ASSERT_EQUAL(memcmp(buf, "two!", 4), 0);
    /* The longest name (128 bytes) is a ref of its own: not cut to a
     * shorter object name that another ref could share. */
    char lng[129], lng2[129];
    memset(lng, 'x', 128);
    lng[128] = '\0';
    memcpy(lng2, lng, sizeof(lng));
    lng2[127] = 'y';
    DDT_OK(vmt_store_ref_set(s, lng, 0, "L1", 2, NULL));
    DDT_OK(vmt_store_ref_set(s, lng2, 0, "L2", 2, NULL));
    DDT_OK(vmt_store_ref_get(s, lng, buf, sizeof(buf), &len, &v));
    CU_ASSERT_TRUE(len == 2 && memcmp(buf, "L1", 2) == 0 && v == 1);
    DDT_OK(vmt_store_ref_get(s, lng2, buf, sizeof(buf), &len, &v));
    CU_ASSERT_TRUE(len == 2 && memcmp(buf, "L2", 2) == 0 && v == 1);
    lng[0] = 'z';
    CU_ASSERT_EQUAL(vmt_store_ref_get(s, lng, buf, sizeof(buf), &len, &v), VMT_ENOENT);
    /* Bad names and sizes are refused before anything is written. */
    static char big[VMT_STORE_REF_MAX + 1];
    CU_ASSERT_EQUAL(vmt_store_ref_set(s, "../x", 0, "x", 1, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_store_ref_set(s, "a/b", 0, "x", 1, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_store_ref_set(s, "x.tmp", 0, "x", 1, NULL), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_store_ref_set(s, "big", 0, big, sizeof(big), NULL), VMT_EINVAL);
    vmt_store_close(s);
    /* The whole store goes, refs included. */
    DDT_OK(vmt_store_remove(dir));
    ddt_cleanup(dir);
}

enum { WRITERS = 3, INCREMENTS = 40 };

/* A child: INCREMENTS increments of the counter in ref "counter", reading
 * again after each conflict; exits with the number of conflicts (capped). */
static void racer(const char *dir)
{
    vmt_store *s = NULL;
    vmt_store_open_opts o;
    vmt_store_open_opts_init(&o);
    o.read_only = true;
    o.threads = 1;
    if (vmt_store_open(&s, dir, &o) != 0)
        _exit(200);
    int conflicts = 0;
    for (int done = 0; done < INCREMENTS;) {
        uint64_t v, n = 0;
        size_t len;
        if (vmt_store_ref_get(s, "counter", &n, sizeof(n), &len, &v) != 0 || len != sizeof(n))
            _exit(201);
        n++;
        int rc = vmt_store_ref_set(s, "counter", v, &n, sizeof(n), NULL);
        if (rc == VMT_EBUSY) {
            conflicts++;
            if (!strstr(vmt_error_last(), "changed under you"))
                _exit(202);
        } else if (rc != 0) {
            _exit(203);
        } else {
            done++;
        }
    }
    vmt_store_close(s);
    _exit(conflicts > 150 ? 150 : conflicts);
}

static void test_racing_writers_lose_no_update(void)
{
    char *dir = ddt_store("race", NULL);
    vmt_store *s = ddt_open(dir, true, 1);
    uint64_t zero = 0, n = 0, v;
    size_t len;
    DDT_OK(vmt_store_ref_set(s, "counter", 0, &zero, sizeof(zero), NULL));
    /* A forced race first: both read version 1, another process writes
     * first, so this one must lose with the conflict error. */
    DDT_OK(vmt_store_ref_get(s, "counter", &n, sizeof(n), &len, &v));
    pid_t first = fork();
    CU_ASSERT_FATAL(first >= 0);
    if (first == 0) {
        vmt_store *c = NULL;
        vmt_store_open_opts o;
        vmt_store_open_opts_init(&o);
        o.read_only = true;
        _exit(vmt_store_open(&c, dir, &o) == 0 &&
                      vmt_store_ref_set(c, "counter", v, &zero, sizeof(zero), NULL) == 0
                  ? 0
                  : 1);
    }
    int fst;
    while (waitpid(first, &fst, 0) < 0 && errno == EINTR)
        ;
    CU_ASSERT(WIFEXITED(fst) && WEXITSTATUS(fst) == 0);
    CU_ASSERT_EQUAL(vmt_store_ref_set(s, "counter", v, &zero, sizeof(zero), NULL), VMT_EBUSY);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "changed under you"));
    vmt_store_close(s);
    pid_t pids[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        pids[i] = fork();
        CU_ASSERT_FATAL(pids[i] >= 0);
        if (pids[i] == 0)
            racer(dir);
    }
    int conflicts = 0;
    for (int i = 0; i < WRITERS; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) < 200);
        conflicts += WIFEXITED(st) ? WEXITSTATUS(st) : 0;
    }
    s = ddt_open(dir, true, 1);
    DDT_OK(vmt_store_ref_get(s, "counter", &n, sizeof(n), &len, &v));
    vmt_store_close(s);
    /* Every increment landed once: no update lost, none applied twice. */
    CU_ASSERT_EQUAL(n, (uint64_t)WRITERS * INCREMENTS);
    CU_ASSERT_EQUAL(v, (uint64_t)WRITERS * INCREMENTS + 2);
    fprintf(stderr, "(%d conflicts) ", conflicts);
    ddt_cleanup(dir);
}

typedef struct seen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    char name[64];
} seen;

static void on_change(void *ctx, const char *name)
{
    seen *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->calls++;
    snprintf(w->name, sizeof(w->name), "%s", name);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits up to 10 s for the watch to have fired `n` times. */
static bool wait_calls(seen *w, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&w->mu);
    while (w->calls < n && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
        ;
    bool ok = w->calls >= n;
    pthread_mutex_unlock(&w->mu);
    return ok;
}

/* Another process (another host, as far as RADOS knows) sets the ref; the
 * watch here hears of it without polling. */
static void test_watch_sees_another_process(void)
{
    char *dir = ddt_store("watch", NULL);
    vmt_store *s = ddt_open(dir, true, 1);
    seen w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    vmt_store_ref_watch *h = NULL;
    CU_ASSERT_EQUAL(vmt_store_ref_watch_start(s, "head", on_change, &w, &h), ddt_rados() ? VMT_ENOENT : VMT_EUNSUPPORTED);
    DDT_OK(vmt_store_ref_set(s, "head", 0, "a", 1, NULL));
    if (!ddt_rados()) {
        CU_ASSERT_EQUAL(vmt_store_ref_watch_start(s, "head", on_change, &w, &h), VMT_EUNSUPPORTED);
        CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "rados://"));
        vmt_store_close(s);
        ddt_cleanup(dir);
        return;
    }
    DDT_OK(vmt_store_ref_watch_start(s, "head", on_change, &w, &h));
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        vmt_store *c = NULL;
        vmt_store_open_opts o;
        vmt_store_open_opts_init(&o);
        o.read_only = true;
        o.threads = 1;
        _exit(vmt_store_open(&c, dir, &o) == 0 && vmt_store_ref_set(c, "head", 1, "b", 1, NULL) == 0
                  ? 0 : 1);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_TRUE(wait_calls(&w, 1));
    CU_ASSERT_STRING_EQUAL(w.name, "head");
    /* An update from this process is heard too; after stop, nothing. */
    DDT_OK(vmt_store_ref_set(s, "head", 2, "c", 1, NULL));
    CU_ASSERT_TRUE(wait_calls(&w, 2));
    vmt_store_ref_watch_stop(h);
    int before = w.calls;
    DDT_OK(vmt_store_ref_set(s, "head", 3, "d", 1, NULL));
    usleep(200000);
    CU_ASSERT_EQUAL(w.calls, before);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

typedef struct listed {
    char names[8][32];
    int n;
} listed;

static int collect(void *ctx, const char *name)
{
    listed *l = ctx;
    if (l->n < 8)
        snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
    l->n++;
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int stop_at_first(void *ctx, const char *name)
{
    (void)name;
    ++*(int *)ctx;
    return VMT_ECORRUPT; /* any code: the listing returns it as is */
}

/* Listing by prefix sees exactly the refs (not the store's packs, index or
 * the directory's lock and staging files), from another handle too. */
static void test_list_by_prefix(void)
{
    char *dir = ddt_store("list", NULL);
    vmt_store *s = ddt_open(dir, true, 1);
    listed l = {.n = 0};
    DDT_OK(vmt_store_ref_list(s, "", collect, &l)); /* no refs yet */
    CU_ASSERT_EQUAL(l.n, 0);
    static const char *const names[] = {"cat.s.00ff", "cat.s.0100", "cat.r.tag@sx", "other",
                                        "cat.s"};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(names); i++)
        DDT_OK(vmt_store_ref_set(s, names[i], 0, "v", 1, NULL));
    DDT_OK(vmt_store_ref_set(s, "cat.s.00ff", 1, "w", 1, NULL)); /* listed once */
    vmt_store *r = ddt_open(dir, true, 1);
    DDT_OK(vmt_store_ref_list(r, "cat.s.", collect, &l));
    CU_ASSERT_EQUAL_FATAL(l.n, 2);
    qsort(l.names, 2, sizeof(l.names[0]), cmp_name);
    CU_ASSERT_STRING_EQUAL(l.names[0], "cat.s.00ff");
    CU_ASSERT_STRING_EQUAL(l.names[1], "cat.s.0100");
    l.n = 0;
    DDT_OK(vmt_store_ref_list(r, "", collect, &l));
    CU_ASSERT_EQUAL(l.n, 5);
    l.n = 0;
    DDT_OK(vmt_store_ref_list(r, "nothing", collect, &l));
    CU_ASSERT_EQUAL(l.n, 0);
    int calls = 0;
    CU_ASSERT_EQUAL(vmt_store_ref_list(r, "cat.", stop_at_first, &calls), VMT_ECORRUPT);
    CU_ASSERT_EQUAL(calls, 1);
    vmt_store_close(r);
    vmt_store_close(s);
    ddt_cleanup(dir);
}

/* A handle opened for refs only (what a catalog by location uses): refs
 * work beside a writer, nothing of the index or packs is loaded or read. */
static void test_refs_only_handle(void)
{
    char *dir = ddt_store("refsonly", NULL);
    vmt_store *w = ddt_open(dir, false, 1), *r = NULL;
    uint8_t page[VMT_STORE_PAGE_SIZE];
    const void *pp[1] = {page};
    vmt_id id;
    ddt_page(77, page);
    DDT_OK(vmt_store_put_pages(w, pp, 1, &id, NULL, NULL));
    DDT_OK(vmt_store_commit(w));
    vmt_store_open_opts o;
    vmt_store_open_opts_init(&o);
    o.refs_only = true;
    CU_ASSERT_EQUAL(vmt_store_open(&r, dir, &o), VMT_EINVAL); /* must be read-only */
    o.read_only = true;
    o.threads = 1;
    DDT_OK(vmt_store_open(&r, dir, &o)); /* beside the writer: no lock */
    DDT_OK(vmt_store_ref_set(r, "cat.t.x", 0, "v1", 2, NULL));
    char buf[8];
    size_t len = 0;
    DDT_OK(vmt_store_ref_get(w, "cat.t.x", buf, sizeof(buf), &len, NULL));
    CU_ASSERT(len == 2 && memcmp(buf, "v1", 2) == 0);
    listed l = {.n = 0};
    DDT_OK(vmt_store_ref_list(r, "cat.", collect, &l));
    CU_ASSERT_EQUAL(l.n, 1);
    /* No index: objects are absent, stats and verify refuse. */
    bool has = true;
    DDT_OK(vmt_store_has_many(r, &id, 1, &has));
    CU_ASSERT_FALSE(has);
    vmt_store_stats st;
    CU_ASSERT_EQUAL(vmt_store_get_stats(r, &st), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "refs only"));
    CU_ASSERT_EQUAL(vmt_store_verify(r, NULL, NULL), VMT_EINVAL);
    vmt_store_close(r);
    vmt_store_close(w);
    /* A damaged index header is not even read (a full open rebuilds). */
    ddt_obj_write(dir, "index", "garbage", 7);
    r = NULL;
    DDT_OK(vmt_store_open(&r, dir, &o));
    vmt_store_recovery rec;
    vmt_store_recovery_info(r, &rec);
    CU_ASSERT_FALSE(rec.index_rebuilt);
    vmt_store_close(r);
    r = ddt_open(dir, true, 1);
    vmt_store_recovery_info(r, &rec);
    CU_ASSERT_TRUE(rec.index_rebuilt);
    vmt_store_close(r);
    /* Where there is no store, VMT_ENOENT as for any open. */
    char *none = ddt_location("refsonly-none");
    r = NULL;
    CU_ASSERT_EQUAL(vmt_store_open(&r, none, &o), VMT_ENOENT);
    ddt_cleanup(none);
    ddt_cleanup(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"get, set and conflicts", test_get_set_and_conflicts},
        {"racing writers lose no update", test_racing_writers_lose_no_update},
        {"a watch sees another process's update", test_watch_sees_another_process},
        {"list by prefix", test_list_by_prefix},
        {"a handle for refs only loads no index and refuses stats", test_refs_only_handle},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/refs", cases, NULL, NULL);
}
