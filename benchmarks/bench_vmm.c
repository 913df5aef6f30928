/*
 * vmtree-bench vmm: start to first guest output, pause+resume latency,
 * dirty-sync cost (256 MiB and 1 GiB guests, 1/10/100 % dirty, bitmap vs
 * ring), and the dirty rate the dirtier guest reaches.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "vmtree/vmm.h"

#define SEC 1000000000ull
#define DIRTIER_BASE (64ull << 20)

/* Counts guest events and lets the bench wait for the n-th. */
typedef struct events {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned n;
    bool pause;
} events;

static vmt_event_action on_event(void *ctx, vmt_vm *vm, unsigned vcpu, uint32_t v)
{
    events *e = ctx;
    (void)vm;
    (void)vcpu;
    (void)v;
    pthread_mutex_lock(&e->lock);
    e->n++;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
    return e->pause ? VMT_EVENT_PAUSE : VMT_EVENT_CONTINUE;
}

static void wait_events(events *e, unsigned n)
{
    pthread_mutex_lock(&e->lock);
    while (e->n < n)
        pthread_cond_wait(&e->cond, &e->lock);
    pthread_mutex_unlock(&e->lock);
}

typedef struct first_out {
    uint64_t at;
} first_out;

static void on_console(void *ctx, const char *buf, size_t len)
{
    first_out *f = ctx;
    (void)buf;
    (void)len;
    if (!f->at)
        f->at = vmt_now_ns();
}

static int boot(vmt_kvm *kvm, const vmt_bench_opts *o, const char *guest, const char *cmdline,
                vmt_vm_config *cfg, vmt_vm **vm)
{
    char *path = vmt_bench_guest(o, guest);
    int rc = vmt_vm_create(vm, kvm, cfg);
    if (rc == 0)
        rc = vmt_vm_load_elf(*vm, path, cmdline);
    if (rc)
        fprintf(stderr, "vmtree-bench vmm: %s: %s\n", guest, vmt_error_last());
    free(path);
    return rc;
}

static int bench_first_output(vmt_kvm *kvm, const vmt_bench_opts *o)
{
    double t[64];
    unsigned runs = VMT_MIN(o->runs * 4, 64u);
    for (unsigned i = 0; i < runs; i++) {
        first_out f = {0};
        vmt_vm_config cfg;
        vmt_vm_config_init(&cfg);
        cfg.console = on_console;
        cfg.console_ctx = &f;
        vmt_vm *vm = NULL;
        uint64_t t0 = vmt_now_ns();
        if (boot(kvm, o, "hello", NULL, &cfg, &vm) != 0 || vmt_vm_start(vm) != 0) {
            vmt_vm_destroy(vm);
            return -1;
        }
        vmt_vm_wait(vm, 10 * SEC, NULL);
        vmt_vm_destroy(vm);
        t[i] = f.at ? (double)(f.at - t0) / 1e6 : -1;
    }
    vmt_bench_emit("vmm", "start_to_first_output", vmt_bench_median(t, runs), "ms",
                   "\"guest\":\"hello\",\"mem_mib\":256");
    return 0;
}

/* The same seen by a user: exec `vmtree run hello.elf` until the first
 * byte of its console arrives on a pipe (process start, KVM open included). */
static int bench_first_output_cli(vmt_kvm *kvm, const vmt_bench_opts *o)
{
    (void)kvm;
    char *cli = NULL, *guest = vmt_bench_guest(o, "hello");
    if (asprintf(&cli, "%s/bin/vmtree", o->build_dir) < 0 || !guest) {
        free(guest);
        return -1;
    }
    double t[64];
    unsigned runs = VMT_MIN(o->runs * 4, 64u), ok = 0;
    for (unsigned i = 0; i < runs; i++) {
        int fds[2];
        if (pipe(fds) != 0)
            break;
        uint64_t t0 = vmt_now_ns();
        pid_t pid = fork();
        if (pid == 0) {
            dup2(fds[1], 1);
            close(fds[0]);
            execl(cli, cli, "run", guest, "--mem", "256M", (char *)NULL);
            _exit(127);
        }
        close(fds[1]);
        char c;
        ssize_t n = read(fds[0], &c, 1);
        uint64_t t1 = vmt_now_ns();
        close(fds[0]);
        int st;
        waitpid(pid, &st, 0);
        if (n == 1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
            t[ok++] = (double)(t1 - t0) / 1e6;
    }
    free(cli);
    free(guest);
    if (ok < runs) {
        fprintf(stderr, "vmtree-bench vmm: vmtree run hello.elf failed\n");
        return -1;
    }
    vmt_bench_emit("vmm", "cli_start_to_first_output", vmt_bench_median(t, ok), "ms",
                   "\"guest\":\"hello\",\"mem_mib\":256");
    return 0;
}

static int bench_pause_resume(vmt_kvm *kvm, const vmt_bench_opts *o)
{
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.vcpus = 2;
    vmt_vm *vm = NULL;
    if (boot(kvm, o, "dirtier", "pages=256 spin=1000 vcpus=2", &cfg, &vm) != 0 ||
        vmt_vm_start(vm) != 0) {
        vmt_vm_destroy(vm);
        return -1;
    }
    unsigned n = o->quick ? 50 : 200;
    double *p = calloc(n, sizeof(double)), *r = calloc(n, sizeof(double));
    for (unsigned i = 0; p && r && i < n; i++) {
        uint64_t t0 = vmt_now_ns();
        vmt_vm_pause(vm);
        uint64_t t1 = vmt_now_ns();
        vmt_vm_resume(vm);
        uint64_t t2 = vmt_now_ns();
        p[i] = (double)(t1 - t0) / 1e3;
        r[i] = (double)(t2 - t1) / 1e3;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    vmt_vm_destroy(vm);
    if (!p || !r) {
        free(p);
        free(r);
        return -1;
    }
    vmt_bench_emit("vmm", "pause_latency", vmt_bench_median(p, n), "us", "\"vcpus\":2");
    vmt_bench_emit("vmm", "pause_latency_max", p[n - 1], "us", "\"vcpus\":2");
    vmt_bench_emit("vmm", "resume_latency", vmt_bench_median(r, n), "us", "\"vcpus\":2");
    free(p);
    free(r);
    return 0;
}

/* One dirty-sync measurement: the guest dirties `pages` pages once, then the
 * VM is paused and one sync is timed. */
static int sync_once(vmt_kvm *kvm, const vmt_bench_opts *o, uint64_t mem, uint64_t pages,
                     vmt_dirty_mode mode, double *us)
{
    events ev = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
                 .pause = true};
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = mem;
    cfg.dirty_mode = mode;
    cfg.event = on_event;
    cfg.event_ctx = &ev;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%llu passes=1 end=event",
             (unsigned long long)DIRTIER_BASE, (unsigned long long)pages);
    vmt_vm *vm = NULL;
    uint64_t *bm = NULL;
    int rc = boot(kvm, o, "dirtier", cmd, &cfg, &vm);
    if (rc == 0)
        rc = vmt_dirty_start(vm, 0);
    if (rc == 0)
        rc = vmt_vm_start(vm);
    if (rc == 0) {
        wait_events(&ev, 1);
        vmt_vm_pause(vm);
        uint64_t nbits = vmt_vm_ram_pages(vm), n = 0;
        bm = calloc(VMT_DIV_ROUND_UP(nbits, 64), 8);
        uint64_t t0 = vmt_now_ns();
        rc = bm ? vmt_dirty_sync(vm, bm, nbits, &n) : -1;
        *us = (double)(vmt_now_ns() - t0) / 1e3;
        if (rc == 0 && n < pages) {
            fprintf(stderr, "vmtree-bench vmm: sync saw %llu of %llu pages\n",
                    (unsigned long long)n, (unsigned long long)pages);
            rc = -1;
        }
    }
    free(bm);
    vmt_vm_destroy(vm);
    return rc;
}

static int bench_dirty_sync(vmt_kvm *kvm, const vmt_bench_opts *o)
{
    static const uint64_t mems[] = {256ull << 20, 1ull << 30};
    static const unsigned pct[] = {1, 10, 100};
    const vmt_kvm_caps *caps = vmt_kvm_get_caps(kvm);
    for (unsigned m = 0; m < VMT_ARRAY_SIZE(mems); m++) {
        for (unsigned p = 0; p < VMT_ARRAY_SIZE(pct); p++) {
            for (int mode = 0; mode < 2; mode++) {
                if (mode == VMT_DIRTY_RING && !caps->dirty_ring_max)
                    continue;
                uint64_t avail = (mems[m] - DIRTIER_BASE) / VMT_PAGE_SIZE;
                uint64_t pages = VMT_MIN(mems[m] / VMT_PAGE_SIZE * pct[p] / 100, avail);
                double t[16];
                unsigned runs = VMT_MIN(o->runs, 16u);
                for (unsigned i = 0; i < runs; i++)
                    if (sync_once(kvm, o, mems[m], pages, (vmt_dirty_mode)mode, &t[i]) != 0)
                        return -1;
                char extra[160];
                snprintf(extra, sizeof(extra),
                         "\"mem_mib\":%llu,\"dirty_pct\":%u,\"dirty_pages\":%llu,"
                         "\"mode\":\"%s\"",
                         (unsigned long long)(mems[m] >> 20), pct[p],
                         (unsigned long long)pages, mode ? "ring" : "bitmap");
                vmt_bench_emit("vmm", "dirty_sync", vmt_bench_median(t, runs), "us", extra);
            }
        }
    }
    return 0;
}

/* Pages/s the dirtier writes over `secs`, with dirty logging synced every
 * 100 ms (as during a migration) or off. */
static int dirty_rate(vmt_kvm *kvm, const vmt_bench_opts *o, bool logging, double *rate)
{
    events ev = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = 1ull << 30;
    cfg.event = on_event;
    cfg.event_ctx = &ev;
    vmt_vm *vm = NULL;
    /* A 32 MiB region, filled first so that every page is already backed
     * (first touches cost a fault each and would be measured instead), an
     * event per pass of 1024 pages. */
    int rc = boot(kvm, o, "dirtier", "pages=8192 per_pass=1024 event=1 fill=text", &cfg, &vm);
    uint64_t nbits = vm ? vmt_vm_ram_pages(vm) : 0;
    uint64_t *bm = calloc(VMT_DIV_ROUND_UP(nbits, 64) + 1, 8);
    if (rc == 0 && logging)
        rc = vmt_dirty_start(vm, 0);
    if (rc == 0)
        rc = vmt_vm_start(vm);
    if (rc == 0 && bm) {
        wait_events(&ev, 2); /* the fill is done */
        unsigned n0 = ev.n;
        uint64_t t0 = vmt_now_ns(), dur = (o->quick ? 1 : 2) * SEC;
        while (vmt_now_ns() - t0 < dur) {
            struct timespec ts = {0, 100000000};
            nanosleep(&ts, NULL);
            if (logging)
                vmt_dirty_sync(vm, bm, nbits, NULL);
        }
        pthread_mutex_lock(&ev.lock);
        unsigned n1 = ev.n;
        pthread_mutex_unlock(&ev.lock);
        *rate = (double)(n1 - n0) * 1024 / ((double)(vmt_now_ns() - t0) / 1e9);
    }
    free(bm);
    vmt_vm_destroy(vm);
    return rc;
}

static int bench_dirty_rate(vmt_kvm *kvm, const vmt_bench_opts *o)
{
    for (int logging = 0; logging < 2; logging++) {
        double r[16];
        unsigned runs = VMT_MIN(o->runs, 16u);
        for (unsigned i = 0; i < runs; i++)
            if (dirty_rate(kvm, o, logging, &r[i]) != 0)
                return -1;
        vmt_bench_emit("vmm", "dirtier_rate", vmt_bench_median(r, runs), "pages/s",
                       logging ? "\"dirty_logging\":true,\"sync_ms\":100"
                               : "\"dirty_logging\":false");
    }
    return 0;
}

/* `vmtree-bench vmm [boot] [pause] [sync] [rate]`: all parts by default. */
int vmt_bench_vmm(const vmt_bench_opts *o)
{
    static const struct {
        const char *name;
        int (*fn)(vmt_kvm *, const vmt_bench_opts *);
    } parts[] = {
        {"boot", bench_first_output},
        {"boot", bench_first_output_cli},
        {"pause", bench_pause_resume},
        {"sync", bench_dirty_sync},
        {"rate", bench_dirty_rate},
    };
    vmt_kvm *kvm = NULL;
    if (vmt_kvm_open(&kvm) != 0) {
        fprintf(stderr, "vmtree-bench vmm: %s\n", vmt_error_last());
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < VMT_ARRAY_SIZE(parts) && rc == 0; i++) {
        bool want = o->argc == 0;
        for (int a = 0; a < o->argc; a++)
            want |= strcmp(o->argv[a], parts[i].name) == 0;
        if (want)
            rc = parts[i].fn(kvm, o);
    }
    vmt_kvm_close(kvm);
    return rc;
}
