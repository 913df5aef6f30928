/*
 * dedup internals: a fixed pool of worker threads running one job at a time.
 * The calling thread takes part as worker 0, so a pool of N runs N-way.  A
 * job is a function called once per worker; it pulls its own work items
 * (usually from an atomic counter), so one dispatch costs two condition
 * variable hand-offs, not one per item.
 */
#ifndef VMTREE_DEDUP_POOL_H
#define VMTREE_DEDUP_POOL_H

#include <stdbool.h>

typedef struct dd_pool dd_pool;

/* fn(arg, worker) with worker in [0, dd_pool_size). */
typedef void (*dd_job_fn)(void *arg, unsigned worker);

/* Starts nthreads - 1 threads (nthreads >= 1).  *out owned by the caller. */
int dd_pool_create(dd_pool **out, unsigned nthreads);

/* Stops and joins the threads.  Accepts NULL. */
void dd_pool_destroy(dd_pool *p);

unsigned dd_pool_size(const dd_pool *p);

/*
 * Runs fn on every worker and returns when all are done.  Returns false
 * without running anything when the pool is already running a job for
 * another caller (the caller then works alone).  Thread-safe.
 */
bool dd_pool_try_run(dd_pool *p, dd_job_fn fn, void *arg);

#endif
