/* Shared fixture for the hypervisor-glue suites (see fixture.h). */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

vmt_kvm *fx_kvm;

void fx_require_kvm(void)
{
    const char *why = vmt_test_kvm_unavailable();
    if (why) {
        printf("SKIP: %s\n", why);
        exit(VMT_TEST_SKIP);
    }
}

int fx_setup(void)
{
    if (vmt_kvm_open(&fx_kvm) != 0) {
        fprintf(stderr, "vmt_kvm_open: %s\n", vmt_error_last());
        return 1;
    }
    return 0;
}

int fx_teardown(void)
{
    vmt_kvm_close(fx_kvm);
    fx_kvm = NULL;
    return 0;
}

static vmt_event_action on_event(void *ctx, vmt_vm *vm, unsigned vcpu, uint32_t value)
{
    fx_guest *g = ctx;
    (void)vm;
    pthread_mutex_lock(&g->lock);
    if (g->nevents < FX_MAX_EVENTS) {
        g->events[g->nevents] = value;
        g->event_vcpu[g->nevents] = vcpu;
        g->nevents++;
    }
    pthread_cond_broadcast(&g->cond);
    bool pause = g->pause_on_event;
    pthread_mutex_unlock(&g->lock);
    return pause ? VMT_EVENT_PAUSE : VMT_EVENT_CONTINUE;
}

int fx_boot(fx_guest *g, const char *name, const char *cmdline, const vmt_vm_config *cfg)
{
    vmt_vm_config c;
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (cfg)
        c = *cfg;
    else
        vmt_vm_config_init(&c);
    if (vmt_console_buf_new(&g->con) != 0)
        return -1;
    c.console = vmt_console_buf_sink;
    c.console_ctx = g->con;
    c.event = on_event;
    c.event_ctx = g;
    char *path = vmt_test_guest_path(name);
    int rc = vmt_vm_create(&g->vm, fx_kvm, &c);
    if (rc == 0)
        rc = vmt_vm_load_elf(g->vm, path, cmdline);
    if (rc)
        fprintf(stderr, "fx_boot %s: %s\n", name, vmt_error_last());
    free(path);
    return rc;
}

void fx_free(fx_guest *g)
{
    vmt_vm_destroy(g->vm);
    vmt_console_buf_free(g->con);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
    g->vm = NULL;
    g->con = NULL;
}

static void deadline(struct timespec *dl, uint64_t timeout_ns)
{
    clock_gettime(CLOCK_MONOTONIC, dl);
    uint64_t t = (uint64_t)dl->tv_nsec + timeout_ns;
    dl->tv_sec += (time_t)(t / FX_SEC);
    dl->tv_nsec = (long)(t % FX_SEC);
}

bool fx_wait_events(fx_guest *g, unsigned n, uint64_t timeout_ns)
{
    struct timespec dl;
    deadline(&dl, timeout_ns);
    pthread_mutex_lock(&g->lock);
    int e = 0;
    while (g->nevents < n && e == 0)
        e = pthread_cond_timedwait(&g->cond, &g->lock, &dl);
    bool ok = g->nevents >= n;
    pthread_mutex_unlock(&g->lock);
    return ok;
}

static unsigned count_value(fx_guest *g, uint32_t value)
{
    uint64_t seen = 0;
    for (unsigned i = 0; i < g->nevents; i++)
        if (g->events[i] == value)
            seen |= 1ull << (g->event_vcpu[i] % 64);
    return (unsigned)__builtin_popcountll(seen);
}

bool fx_wait_value(fx_guest *g, uint32_t value, unsigned count, uint64_t timeout_ns)
{
    struct timespec dl;
    deadline(&dl, timeout_ns);
    pthread_mutex_lock(&g->lock);
    int e = 0;
    while (count_value(g, value) < count && e == 0)
        e = pthread_cond_timedwait(&g->cond, &g->lock, &dl);
    bool ok = count_value(g, value) >= count;
    pthread_mutex_unlock(&g->lock);
    return ok;
}

uint64_t *fx_bitmap(const fx_guest *g)
{
    return calloc(VMT_DIV_ROUND_UP(vmt_vm_ram_pages(g->vm), 64) + 1, sizeof(uint64_t));
}

bool fx_test_bit(const uint64_t *bm, uint64_t bit)
{
    return (bm[bit / 64] >> (bit % 64)) & 1;
}

uint64_t fx_count_range(const uint64_t *bm, uint64_t from, uint64_t to)
{
    uint64_t n = 0;
    for (uint64_t b = from; b < to; b++)
        n += fx_test_bit(bm, b);
    return n;
}
