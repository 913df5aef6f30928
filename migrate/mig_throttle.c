/*
 * Auto-converge: when a guest dirties memory faster than the link carries
 * it, pre-copy never converges.  The throttle holds the VM paused for pct %
 * of every 20 ms period (the VMM's pause stops every vCPU within ~50 us
 * here), which cuts the dirty rate by the same share without the guest's
 * cooperation.  QEMU does the same with a per-vCPU sleep.
 *
 * The policy raises pct between rounds and stops the thread before it
 * returns STOP_AND_COPY or ABORT, so the engine's own pause never races a
 * throttle resume.
 */
#include <errno.h>
#include <time.h>

#include "mig_internal.h"

#define PERIOD_NS 20000000ull

static void deadline_after(struct timespec *ts, uint64_t ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    uint64_t t = (uint64_t)ts->tv_nsec + ns;
    ts->tv_sec += (time_t)(t / 1000000000ull);
    ts->tv_nsec = (long)(t % 1000000000ull);
}

/* Waits up to ns or until stopped; false once stopped. */
static bool wait_ns(mig_throttle *t, uint64_t ns)
{
    struct timespec ts;
    deadline_after(&ts, ns);
    while (!t->stop) {
        if (pthread_cond_timedwait(&t->cv, &t->mu, &ts) == ETIMEDOUT)
            break;
    }
    return !t->stop;
}

static void *throttle_main(void *arg)
{
    mig_throttle *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        unsigned pct = t->pct;
        if (pct == 0) {
            wait_ns(t, PERIOD_NS);
            continue;
        }
        uint64_t held = PERIOD_NS * pct / 100;
        if (!wait_ns(t, PERIOD_NS - held))
            break;
        /* Only pause a VM that runs: a paused one is someone else's. */
        bool paused = !vmt_vm_is_paused(t->vm) && vmt_vm_pause(t->vm) == 0;
        wait_ns(t, held);
        if (paused)
            vmt_vm_resume(t->vm);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

int mig_throttle_start(mig_throttle *t, vmt_vm *vm)
{
    *t = (mig_throttle){.vm = vm};
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&t->th, NULL, throttle_main, t) != 0) {
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        return vmt_error_set(VMT_ERR, "cannot start the auto-converge thread");
    }
    t->started = true;
    return 0;
}

void mig_throttle_set(mig_throttle *t, unsigned pct)
{
    if (!t->started)
        return;
    pthread_mutex_lock(&t->mu);
    t->pct = pct > 99 ? 99 : pct;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

unsigned mig_throttle_get(mig_throttle *t)
{
    if (!t->started)
        return 0;
    pthread_mutex_lock(&t->mu);
    unsigned pct = t->pct;
    pthread_mutex_unlock(&t->mu);
    return pct;
}

void mig_throttle_stop(mig_throttle *t)
{
    if (!t->started)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->th, NULL);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    t->started = false;
}
