/* Refs: compare-and-swap across processes (on a directory or on RADOS). */
#include <errno.h>
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
    CU_ASSERT_EQUAL(v, (uint64_t)WRITERS * INCREMENTS + 1);
    fprintf(stderr, "(%d conflicts) ", conflicts);
    ddt_cleanup(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"get, set and conflicts", test_get_set_and_conflicts},
        {"racing writers lose no update", test_racing_writers_lose_no_update},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/refs", cases, NULL, NULL);
}
