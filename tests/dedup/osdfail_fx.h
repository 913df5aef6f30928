/*
 * Shared by the OSD-failure suites (tests/dedup/test_osdfail.c,
 * tests/snapshot/test_snap_osdfail.c, tests/migrate/test_vm_osdfail.c): the
 * persistent (bluestore) single-node cluster a ctest fixture starts in
 * $VMTREE_OSDFAIL_CEPH, its OSD stopped and started again through
 * scripts/ceph-cluster.sh, and bounded waits for child processes.
 */
#ifndef VMTREE_TESTS_OSDFAIL_FX_H
#define VMTREE_TESTS_OSDFAIL_FX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"

/* Seconds a request may go unanswered (op_timeout) and the writer lock's
 * lease (lock_timeout) in the stores these suites create. */
#define OFX_OP_TIMEOUT 4
#define OFX_LOCK_TIMEOUT 5

/*
 * Checks that the bluestore cluster is there; prints "SKIP: reason" and
 * exits VMT_TEST_SKIP when it is not (Ceph not installed, no fixture).
 * Call before forking anything.
 */
void ofx_require_cluster(void);

/* A new location rados://vmtree/TAG-...?conf=...&op_timeout=..&lock_timeout=..
 * in a namespace of its own (caller frees).  No store is created. */
char *ofx_location(const char *tag);

/* Runs scripts/ceph-cluster.sh VERB on the cluster (stop-osd, start-osd)
 * without any CUnit assertion (for other threads); its exit status, and
 * in *ms how long it took. */
int ofx_osd_script(const char *verb, uint64_t *ms);

/* Stops / starts the OSD; CUnit-fatal when the script fails.  Each returns
 * the milliseconds the script took. */
uint64_t ofx_stop_osd(void);
uint64_t ofx_start_osd(void);

/* Waits for pid up to timeout_s seconds; on timeout kills it (SIGKILL),
 * reaps it and returns false.  *status gets waitpid's status. */
bool ofx_wait_child(pid_t pid, unsigned timeout_s, int *status);

/* Raised by a worker thread as it ends; a thread stuck in a request that
 * never ends cannot be joined, so the test waits for this with a bound. */
typedef struct ofx_done {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} ofx_done;
void ofx_done_init(ofx_done *d);
void ofx_done_set(ofx_done *d);
/* Joins t once d is raised, waiting for that at most timeout_s seconds;
 * false (t not joined: it hangs) when it was not. */
bool ofx_join_bounded(ofx_done *d, pthread_t t, unsigned timeout_s);

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t ofx_now_ms(void);

/* Sleeps ms milliseconds. */
void ofx_sleep_ms(uint64_t ms);

#endif
