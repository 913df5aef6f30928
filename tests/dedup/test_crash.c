/*
 * Crash safety with real processes: a child puts and commits batches (and,
 * in the gc variant, collects garbage) and is killed with SIGKILL at random
 * moments; after each kill the store must open, verify, and read back every
 * committed batch bit-exact.  CRASH_KILLS / CRASH_GC_KILLS set the counts
 * (the `slow` build of this file raises them).
 */
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dd_test.h"

#ifndef CRASH_KILLS
#define CRASH_KILLS 50
#endif
#ifndef CRASH_GC_KILLS
#define CRASH_GC_KILLS 12
#endif
/* Over RADOS a killed writer's lock lasts until it expires (RADOS_LOCK_S):
 * each kill costs that long, so fewer kills, later in the child's life. */
#define RADOS_KILLS 6
#define RADOS_GC_KILLS 3
#define RADOS_LOCK_S 4

/* Opens a writer, waiting out the lock of a killed one (RADOS only). */
static int open_waiting(const char *dir, const vmt_store_open_opts *o, vmt_store **s)
{
    int rc;
    for (int i = 0; (rc = vmt_store_open(s, dir, o)) == VMT_EBUSY && i < 40 * RADOS_LOCK_S; i++)
        usleep(50000);
    return rc;
}

enum { BATCH = 32 };

/* Page i of batch b; batch b repeats a page of batch b-1 (dedup hits). */
static void batch_page(uint64_t b, size_t i, uint8_t *page)
{
    if (i == BATCH - 1 && b > 0)
        ddt_page((b - 1) * 1000 + 3, page);
    else if (i % 8 == 5)
        memset(page, 0, VMT_STORE_PAGE_SIZE);
    else
        ddt_page(b * 1000 + i, page);
}

/* Builds batch b's pages and its map node; *root gets the node's id. */
static void batch_build(uint64_t b, uint8_t *pages, vmt_id *ids, uint8_t *node, size_t *len,
                        vmt_id *root)
{
    vmt_mapnode_entry e[BATCH];
    for (size_t i = 0; i < BATCH; i++) {
        batch_page(b, i, pages + i * VMT_STORE_PAGE_SIZE);
        vmt_id_of(pages + i * VMT_STORE_PAGE_SIZE, VMT_STORE_PAGE_SIZE, &ids[i]);
        e[i] = (vmt_mapnode_entry){(uint32_t)i, ids[i]};
    }
    vmt_store_mapnode_encode(0, e, BATCH, node, vmt_store_mapnode_size(BATCH), len);
    vmt_id_of(node, *len, root);
}

static int child_gc(vmt_store *s, uint64_t b)
{
    size_t n = 0;
    vmt_id *roots = malloc((b / 2 + 1) * sizeof(*roots));
    uint8_t *pages = malloc(BATCH * VMT_STORE_PAGE_SIZE), node[1024];
    vmt_id ids[BATCH];
    size_t len;
    for (uint64_t k = 0; k <= b; k += 2)
        batch_build(k, pages, ids, node, &len, &roots[n++]);
    vmt_store_gc_opts o;
    vmt_store_gc_opts_init(&o);
    o.min_live = 0.9;
    int rc = vmt_store_gc(s, roots, n, &o, NULL);
    free(roots);
    free(pages);
    return rc;
}

static vmt_store *child_open(const char *dir)
{
    vmt_store_open_opts o;
    vmt_store *s = NULL;
    vmt_store_open_opts_init(&o);
    o.threads = 2;
    o.index_interval = 256u << 10; /* index saves happen often, to be killed in */
    if (open_waiting(dir, &o, &s) != 0) {
        fprintf(stderr, "\n  child %d: %s\n", (int)getpid(), vmt_error_last());
        _exit(3);
    }
    return s;
}

/* What a child writes to the pipe once it has the store open. */
#define OPENED UINT64_MAX

static void child(const char *dir, int fd, uint64_t b, bool gc)
{
    uint8_t *pages = malloc(BATCH * VMT_STORE_PAGE_SIZE), node[1024];
    const void *p[BATCH];
    vmt_id ids[BATCH], got[BATCH], root;
    size_t len;
    vmt_store *s = child_open(dir);
    uint64_t ready = OPENED;
    if (write(fd, &ready, sizeof(ready)) != sizeof(ready))
        _exit(5);
    for (size_t i = 0; i < BATCH; i++)
        p[i] = pages + i * VMT_STORE_PAGE_SIZE;
    for (;; b++) {
        batch_build(b, pages, ids, node, &len, &root);
        vmt_store_obj mo = {node, len, VMT_OBJ_MAPNODE};
        vmt_id mid;
        if (vmt_store_put_pages(s, p, BATCH, got, NULL, NULL) != 0 ||
            vmt_store_put_many(s, &mo, 1, &mid, NULL, NULL) != 0 || vmt_store_commit(s) != 0)
            _exit(4);
        if (write(fd, &b, sizeof(b)) != sizeof(b))
            _exit(5);
        if (gc && b % 2 == 1 && child_gc(s, b) != 0)
            _exit(6);
        if (b % 13 == 12) { /* a clean close saves the index */
            vmt_store_close(s);
            s = child_open(dir);
        }
    }
}

/* Opens (as reader or writer), verifies, reads every committed batch. */
static void check_store(const char *dir, uint64_t committed, bool gc, bool writer)
{
    vmt_store_open_opts o;
    vmt_store *s = NULL;
    vmt_store_open_opts_init(&o);
    o.read_only = !writer;
    o.threads = 2;
    DDT_OK(open_waiting(dir, &o, &s));
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    uint8_t *pages = malloc(BATCH * VMT_STORE_PAGE_SIZE), *out = malloc(BATCH * 4096), node[1024];
    void *dst[BATCH];
    vmt_id ids[BATCH], root;
    size_t len;
    for (size_t i = 0; i < BATCH; i++)
        dst[i] = out + i * VMT_STORE_PAGE_SIZE;
    for (uint64_t b = 0; b < committed; b++) {
        if (gc && b % 2 == 1)
            continue; /* garbage in the gc variant */
        batch_build(b, pages, ids, node, &len, &root);
        DDT_OK(vmt_store_get_pages(s, ids, BATCH, dst));
        CU_ASSERT_EQUAL(memcmp(out, pages, BATCH * VMT_STORE_PAGE_SIZE), 0);
        bool has;
        DDT_OK(vmt_store_has_many(s, &root, 1, &has));
        CU_ASSERT_TRUE(has);
    }
    vmt_store_close(s);
    free(pages);
    free(out);
}

/* Kills per store: the checks read the whole store after each kill, so a
 * fresh store every so often keeps the slow variant's time linear. */
#define KILLS_PER_STORE 60

/* A store with 1 MiB packs; on RADOS with a short lock timeout. */
static char *new_store(const char *tag)
{
    vmt_store_config c;
    vmt_store_config_init(&c);
    c.pack_size = 1u << 20;
    char *dir = ddt_location(tag);
    if (ddt_rados()) {
        char *url = NULL;
        CU_ASSERT_FATAL(asprintf(&url, "%s&lock_timeout=%d", dir, RADOS_LOCK_S) > 0);
        free(dir);
        dir = url;
    }
    DDT_OK(vmt_store_init(dir, &c));
    return dir;
}

/* Waits (60 s at most) until the child says it has the store open; false
 * (the child's end said why) when it ended before. */
static bool wait_opened(int fd, pid_t pid)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    uint64_t v = 0;
    CU_ASSERT_FATAL(poll(&pfd, 1, 60000) == 1);
    if (read(fd, &v, sizeof(v)) == sizeof(v) && v == OPENED)
        return true;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    fprintf(stderr, "\n  a child ended before it had the store open (%s %d) ",
            WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    return false;
}

static void run_kills(const char *tag, int kills, bool gc)
{
    char *dir = NULL;
    uint64_t committed = 0, total = 0; /* batches [0, committed) are durable */
    int open_failures = 0;
    unsigned seed = (unsigned)time(NULL);
    fprintf(stderr, "(seed %u) ", seed);
    srand(seed);
    for (int k = 0; k < kills; k++) {
        if (k % KILLS_PER_STORE == 0) {
            if (dir)
                ddt_cleanup(dir);
            dir = new_store(tag);
            total += committed;
            committed = 0;
        }
        int fds[2];
        CU_ASSERT_FATAL(pipe(fds) == 0);
        pid_t pid = fork();
        CU_ASSERT_FATAL(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child(dir, fds[1], committed, gc);
        }
        close(fds[1]);
        /* On RADOS the delay starts once the child has the store open: the
         * lock a killed writer left must expire first (lock_timeout), which
         * under a sanitizer on a loaded machine outlasted the whole delay,
         * so no batch was ever committed.  Opening is not what is tested
         * there; on a directory a kill during open and recovery is. */
        if (ddt_rados() && !wait_opened(fds[0], pid)) {
            /* Once is noise of a loaded host (said above); twice running
             * is a failure. */
            close(fds[0]);
            CU_ASSERT_FATAL(++open_failures < 2);
            k--;
            continue;
        }
        open_failures = 0;
        long us = ddt_rados() ? 100000 + rand() % 600000 : rand() % 80000;
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        CU_ASSERT_FATAL(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        uint64_t b;
        while (read(fds[0], &b, sizeof(b)) == sizeof(b))
            if (b != OPENED)
                committed = b + 1;
        close(fds[0]);
        check_store(dir, committed, gc, k % 3 != 0);
    }
    total += committed;
    fprintf(stderr, "%llu batches committed over %d kills ", (unsigned long long)total, kills);
    CU_ASSERT(total > 0);
    ddt_cleanup(dir);
}

static void test_kill_during_put_and_commit(void)
{
    run_kills("crash", ddt_rados() ? RADOS_KILLS : CRASH_KILLS, false);
}

static void test_kill_during_gc(void)
{
    run_kills("crashgc", ddt_rados() ? RADOS_GC_KILLS : CRASH_GC_KILLS, true);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"SIGKILL during put and commit", test_kill_during_put_and_commit},
        {"SIGKILL during gc", test_kill_during_gc},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/crash", cases, NULL, NULL);
}
