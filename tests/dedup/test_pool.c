/* The worker pool: every worker runs, a busy pool is refused, not waited on. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "dd_test.h"
#include "pool.h"

typedef struct job {
    int ran[8];
    size_t next, total;
    dd_pool *pool;
    int nested_refused;
} job;

static void work(void *arg, unsigned w)
{
    job *j = arg;
    __atomic_fetch_add(&j->ran[w], 1, __ATOMIC_RELAXED);
    while (__atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED) < 100000)
        __atomic_fetch_add(&j->total, 1, __ATOMIC_RELAXED);
}

static void test_every_worker_runs_once_per_job(void)
{
    dd_pool *p;
    DDT_OK(dd_pool_create(&p, 4));
    CU_ASSERT_EQUAL(dd_pool_size(p), 4);
    for (int round = 0; round < 50; round++) {
        job j;
        memset(&j, 0, sizeof(j));
        CU_ASSERT_TRUE(dd_pool_try_run(p, work, &j));
        for (int w = 0; w < 4; w++)
            CU_ASSERT_EQUAL(j.ran[w], 1);
        CU_ASSERT_EQUAL(j.total, 100000);
    }
    dd_pool_destroy(p);
}

static void nested(void *arg, unsigned w)
{
    job *j = arg;
    if (w == 0 && !dd_pool_try_run(j->pool, work, j))
        j->nested_refused = 1;
}

static void test_busy_pool_refuses(void)
{
    dd_pool *p;
    job j;
    memset(&j, 0, sizeof(j));
    DDT_OK(dd_pool_create(&p, 2));
    j.pool = p;
    CU_ASSERT_TRUE(dd_pool_try_run(p, nested, &j));
    CU_ASSERT_EQUAL(j.nested_refused, 1);
    dd_pool_destroy(p);
}

static void test_single_thread_pool(void)
{
    dd_pool *p;
    job j;
    memset(&j, 0, sizeof(j));
    DDT_OK(dd_pool_create(&p, 1));
    CU_ASSERT_TRUE(dd_pool_try_run(p, work, &j));
    CU_ASSERT_EQUAL(j.ran[0], 1);
    CU_ASSERT_EQUAL(j.total, 100000);
    dd_pool_destroy(p);
    dd_pool_destroy(NULL);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"every worker runs once per job", test_every_worker_runs_once_per_job},
        {"a busy pool refuses a second job", test_busy_pool_refuses},
        {"a single-thread pool runs on the caller", test_single_thread_pool},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/pool", cases, NULL, NULL);
}
