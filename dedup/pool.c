/* Worker pool (see pool.h). */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

#include "vmtree/util.h"

struct dd_pool {
    pthread_mutex_t run_mu; /* held by the caller whose job runs */
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    unsigned n;
    pthread_t *th;
    unsigned long gen; /* bumped per job */
    unsigned remaining;
    bool stop;
    dd_job_fn fn;
    void *arg;
};

typedef struct worker_arg {
    dd_pool *p;
    unsigned idx;
} worker_arg;

static void *worker_main(void *v)
{
    worker_arg *wa = v;
    dd_pool *p = wa->p;
    unsigned idx = wa->idx;
    unsigned long seen = 0;
    free(wa);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->start, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        dd_job_fn fn = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->mu);
        fn(arg, idx);
        pthread_mutex_lock(&p->mu);
        if (--p->remaining == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int start_threads(dd_pool *p)
{
    for (unsigned i = 1; i < p->n; i++) {
        worker_arg *wa = malloc(sizeof(*wa));
        if (!wa)
            return vmt_error_set(VMT_ENOMEM, "out of memory starting workers");
        wa->p = p;
        wa->idx = i;
        int rc = pthread_create(&p->th[i], NULL, worker_main, wa);
        if (rc != 0) {
            free(wa);
            p->n = i; /* destroy joins the ones started */
            return vmt_error_errno(VMT_ERR, rc, "starting worker thread %u", i);
        }
    }
    return 0;
}

int dd_pool_create(dd_pool **out, unsigned nthreads)
{
    dd_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    p->n = nthreads ? nthreads : 1;
    p->th = vmt_callocn(p->n, sizeof(pthread_t));
    if (!p->th) {
        free(p);
        return VMT_ENOMEM;
    }
    pthread_mutex_init(&p->run_mu, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    int rc = start_threads(p);
    if (rc != 0) {
        dd_pool_destroy(p);
        return rc;
    }
    *out = p;
    return 0;
}

void dd_pool_destroy(dd_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 1; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run_mu);
    free(p->th);
    free(p);
}

unsigned dd_pool_size(const dd_pool *p)
{
    return p->n;
}

bool dd_pool_try_run(dd_pool *p, dd_job_fn fn, void *arg)
{
    if (pthread_mutex_trylock(&p->run_mu) != 0)
        return false;
    if (p->n > 1) {
        pthread_mutex_lock(&p->mu);
        p->fn = fn;
        p->arg = arg;
        p->remaining = p->n - 1;
        p->gen++;
        pthread_cond_broadcast(&p->start);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0);
    if (p->n > 1) {
        pthread_mutex_lock(&p->mu);
        while (p->remaining > 0)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&p->run_mu);
    return true;
}
