/* Helpers of the OSD-failure suites (see osdfail_fx.h). */
#include "osdfail_fx.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmtree/util.h"

static const char *cluster_dir(void)
{
    return getenv("VMTREE_OSDFAIL_CEPH");
}

/* Whether the OSD's PID file names a live process. */
static bool osd_running(const char *dir)
{
    char path[4096];
    long pid = 0;
    FILE *f;
    snprintf(path, sizeof(path), "%s/osd.id", dir);
    if (!(f = fopen(path, "r")))
        return false;
    int id = -1;
    bool ok = fscanf(f, "%d", &id) == 1;
    fclose(f);
    snprintf(path, sizeof(path), "%s/run/osd.%d.pid", dir, id);
    if (!ok || !(f = fopen(path, "r")))
        return false;
    ok = fscanf(f, "%ld", &pid) == 1 && pid > 0 && kill((pid_t)pid, 0) == 0;
    fclose(f);
    return ok;
}

void ofx_require_cluster(void)
{
    const char *dir = cluster_dir(), *src = getenv("VMTREE_SOURCE_DIR");
    char path[4096];
    if (!dir || !src) {
        printf("SKIP: VMTREE_OSDFAIL_CEPH / VMTREE_SOURCE_DIR not set (run through ctest: the "
               "fixture rados_bluestore_start starts the cluster)\n");
        exit(VMT_TEST_SKIP);
    }
    snprintf(path, sizeof(path), "%s/ceph.conf", dir);
    if (access(path, R_OK) != 0) {
        printf("SKIP: no bluestore Ceph test cluster (%s missing: ceph-mon/ceph-osd not "
               "installed? scripts/install-deps.sh --ceph)\n",
               path);
        exit(VMT_TEST_SKIP);
    }
    signal(SIGPIPE, SIG_IGN); /* a closed librados socket is an error, not a kill */
    /* A suite that failed half-way may have left the OSD stopped. */
    if (!osd_running(dir)) {
        uint64_t ms;
        printf("the OSD of %s is not running: starting it\n", dir);
        if (ofx_osd_script("start-osd", &ms) != 0) {
            printf("SKIP: the OSD of %s could not be started\n", dir);
            exit(VMT_TEST_SKIP);
        }
    }
}

char *ofx_location(const char *tag)
{
    static unsigned seq;
    char *url = NULL;
    if (asprintf(&url,
                 "rados://vmtree/%s-%ld-%u-%ld?conf=%s/ceph.conf&op_timeout=%d&lock_timeout=%d",
                 tag, (long)getpid(), ++seq, (long)(vmt_now_ns() % 1000000), cluster_dir(),
                 OFX_OP_TIMEOUT, OFX_LOCK_TIMEOUT) < 0)
        url = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(url);
    return url;
}

uint64_t ofx_now_ms(void)
{
    return vmt_now_ns() / 1000000u;
}

void ofx_sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int ofx_osd_script(const char *verb, uint64_t *ms)
{
    char *cmd = NULL;
    uint64_t t0 = ofx_now_ms();
    if (asprintf(&cmd, "'%s/scripts/ceph-cluster.sh' %s '%s' >&2", getenv("VMTREE_SOURCE_DIR"),
                 verb, cluster_dir()) < 0)
        return -1;
    int st = system(cmd);
    free(cmd);
    if (st != 0)
        fprintf(stderr, "\nceph-cluster.sh %s failed (status %d)\n", verb, st);
    *ms = ofx_now_ms() - t0;
    return st;
}

static uint64_t run_script(const char *verb)
{
    uint64_t ms = 0;
    CU_ASSERT_EQUAL_FATAL(ofx_osd_script(verb, &ms), 0);
    return ms;
}

uint64_t ofx_stop_osd(void)
{
    return run_script("stop-osd");
}

uint64_t ofx_start_osd(void)
{
    return run_script("start-osd");
}

bool ofx_wait_child(pid_t pid, unsigned timeout_s, int *status)
{
    uint64_t until = ofx_now_ms() + 1000ull * timeout_s;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
        if (ofx_now_ms() >= until) {
            kill(pid, SIGKILL);
            while (waitpid(pid, status, 0) < 0 && errno == EINTR)
                ;
            return false;
        }
        ofx_sleep_ms(20);
    }
}

void ofx_done_init(ofx_done *d)
{
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->done = false;
}

void ofx_done_set(ofx_done *d)
{
    pthread_mutex_lock(&d->mu);
    d->done = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

bool ofx_join_bounded(ofx_done *d, pthread_t t, unsigned timeout_s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)timeout_s;
    pthread_mutex_lock(&d->mu);
    while (!d->done && pthread_cond_timedwait(&d->cv, &d->mu, &until) == 0)
        ;
    bool done = d->done;
    pthread_mutex_unlock(&d->mu);
    if (done)
        pthread_join(t, NULL);
    return done;
}
