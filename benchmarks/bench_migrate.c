/*
 * vmtree-bench migrate: live migration of a 1 GiB dirtier guest over
 * loopback, both ends in this process (the destination on a thread, as two
 * hosts sharing these 2 cores).  Workloads: idle (64 MiB touched, then no
 * writes), moderate (512 MiB region, ~50 MB/s of dirtying, calibrated and
 * reported) and heavy (512 MiB, as fast as the guest writes).  For each:
 * a baseline (1 stream, no compression, unlimited) and one change at a
 * time: 2 streams, lz4, zstd, 1 Gbit/s, and the destination holding a
 * snapshot taken just before (dedup).  --full runs the whole cross product.
 * The migrated VM becomes the next run's source (a 512 MiB fill costs ~7 s
 * of first touches here), so a workload is booted once.  Every figure is a
 * median of --runs migrations.  Where an RDMA device exists the baseline
 * runs once more over rdma:// ($VMTREE_RDMA_ADDR, default 127.0.0.1: an
 * address on the RDMA interface), printed next to TCP's ("config":"rdma");
 * elsewhere one line says why it was skipped.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "vmtree/migrate.h"
#include "vmtree/net.h"

#define GIB (1ull << 30)
#define REGION_BASE (64ull << 20)
#define SEC 1000000000ull
#define DONE_EVENT 0xfffffffeu
#define READY_EVENT 0xffffffffu

typedef struct events {
    pthread_mutex_t mu;
    unsigned passes; /* events after READY */
    bool ready, done;
} events;

static vmt_event_action on_event(void *ctx, vmt_vm *vm, unsigned vcpu, uint32_t value)
{
    events *e = ctx;
    (void)vm;
    (void)vcpu;
    pthread_mutex_lock(&e->mu);
    if (value == READY_EVENT)
        e->ready = true;
    else if (value == DONE_EVENT)
        e->done = true;
    else
        e->passes++;
    pthread_mutex_unlock(&e->mu);
    return VMT_EVENT_CONTINUE;
}

static void null_console(void *ctx, const char *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    (void)len;
}

typedef struct bmig {
    const vmt_bench_opts *o;
    vmt_kvm *kvm;
    vmt_vm *vm; /* the current source */
    events ev;
    vmt_store *store; /* for the dedup runs */
    vmt_catalog *cat;
    char dir[256];
} bmig;

static bool wait_flag(events *e, bool done, uint64_t timeout_ns)
{
    uint64_t end = vmt_now_ns() + timeout_ns;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        bool f = done ? e->done : e->ready;
        pthread_mutex_unlock(&e->mu);
        if (f)
            return true;
        if (vmt_now_ns() > end)
            return false;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}

static void base_config(bmig *b, vmt_vm_config *cfg)
{
    vmt_vm_config_init(cfg);
    cfg->mem_size = GIB;
    cfg->event = on_event;
    cfg->event_ctx = &b->ev;
    cfg->console = null_console;
}

static int boot(bmig *b, const char *args, bool until_done)
{
    vmt_vm_config cfg;
    base_config(b, &cfg);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "base=%llu fill=random event=1 %s", (unsigned long long)REGION_BASE,
             args);
    char *path = vmt_bench_guest(b->o, "dirtier");
    int rc = vmt_vm_create(&b->vm, b->kvm, &cfg);
    if (rc == 0)
        rc = vmt_vm_load_elf(b->vm, path, cmd);
    if (rc == 0)
        rc = vmt_vm_start(b->vm);
    free(path);
    if (rc == 0 && !wait_flag(&b->ev, until_done, 300 * SEC))
        rc = vmt_error_set(VMT_ETIMEDOUT, "the dirtier did not get ready");
    return rc;
}

/* Pages/s the guest dirties, over `ms` of dirty logging. */
static double measure_rate(vmt_vm *vm, unsigned ms)
{
    uint64_t npages = vmt_vm_ram_pages(vm), n = 0;
    uint64_t *bm = calloc((npages + 63) / 64, 8);
    if (!bm || vmt_dirty_start(vm, 0) != 0) {
        free(bm);
        return -1;
    }
    uint64_t t0 = vmt_now_ns();
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    vmt_dirty_sync(vm, bm, npages, &n);
    double s = (double)(vmt_now_ns() - t0) / 1e9;
    vmt_dirty_stop(vm);
    free(bm);
    return (double)n / s;
}

static uint64_t nonzero_pages(vmt_vm *vm)
{
    uint64_t size = 0, n = 0;
    const uint8_t *ram = vmt_vm_ram(vm, &size);
    static const uint8_t zero[4096];
    for (uint64_t off = 0; off < size; off += 4096)
        n += memcmp(ram + off, zero, 4096) != 0;
    return n;
}

/* ---- one migration ------------------------------------------------------------ */

typedef struct bdest {
    bmig *b;
    vmt_listener *l;
    vmt_store *store;
    vmt_vm *vm;
    int rc;
    pthread_t th;
} bdest;

static void *dest_main(void *arg)
{
    bdest *d = arg;
    vmt_vm_config cfg;
    base_config(d->b, &cfg);
    vmt_migrate_recv_opts o = {.base = &cfg, .store = d->store, .timeout_ms = 30000};
    d->rc = vmt_migrate_receive(d->b->kvm, d->l, &o, &d->vm);
    if (d->rc)
        fprintf(stderr, "bench migrate: destination: %s\n", vmt_error_last());
    return NULL;
}

typedef struct bcfg {
    const char *name;
    unsigned streams;
    vmt_migrate_compress compress;
    uint64_t bandwidth;    /* bytes/s, 0 unlimited */
    bool dedup;            /* a snapshot at the destination */
    const char *rdma_host; /* non-NULL: over rdma:// at this address */
} bcfg;

typedef struct bres {
    double total_ms, down_ms, bytes, rounds, refs;
    uint64_t changed; /* dedup: pages that differ from the snapshot */
    bool ok;
} bres;

/* A snapshot of the source now (for the dedup runs): its id. */
static int snapshot_now(bmig *b, vmt_id *id)
{
    vmt_vmsnap *vs = NULL;
    vmt_vmsnap_info info = {.vm_name = "bench"};
    int rc = vmt_vmsnap_attach(&vs, b->store, b->cat, b->vm, NULL, &info);
    if (rc == 0)
        rc = vmt_vmsnap_take(vs, NULL, id, NULL);
    vmt_vmsnap_detach(vs);
    if (rc == 0 && vmt_dirty_active(b->vm))
        vmt_dirty_stop(b->vm);
    return rc;
}

static int migrate_once(bmig *b, const bcfg *c, bool auto_converge, bres *r)
{
    bdest d = {.b = b, .store = c->dedup ? b->store : NULL};
    vmt_id base;
    int rc = c->dedup ? snapshot_now(b, &base) : 0;
    char url[300], addr[300];
    snprintf(url, sizeof(url), "%s://%s:0", c->rdma_host ? "rdma" : "tcp",
             c->rdma_host ? c->rdma_host : "127.0.0.1");
    if (rc == 0)
        rc = vmt_listen_url(&d.l, url);
    if (rc)
        return rc;
    snprintf(addr, sizeof(addr), "%s://%s:%u", c->rdma_host ? "rdma" : "tcp",
             c->rdma_host ? c->rdma_host : "127.0.0.1", vmt_listener_port(d.l));
    pthread_create(&d.th, NULL, dest_main, &d);
    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    o.streams = c->streams;
    o.compress = c->compress;
    o.bandwidth = c->bandwidth;
    o.max_downtime_ms = 20;
    o.max_rounds = 40;
    o.auto_converge = auto_converge;
    o.base = c->dedup ? &base : NULL;
    o.timeout_ms = 30000;
    vmt_migrate_report rep;
    rc = vmt_migrate_send(b->vm, addr, &o, &rep);
    pthread_join(d.th, NULL);
    vmt_listener_close(d.l);
    *r = (bres){.total_ms = rep.total_ns / 1e6,
                .down_ms = rep.downtime_ns / 1e6,
                .bytes = (double)rep.wire_bytes,
                .rounds = rep.rounds,
                .refs = (double)rep.pages_by_enc[VMT_PAGE_REF],
                .ok = rc == 0};
    r->changed = rep.pages_sent - rep.pages_by_enc[VMT_PAGE_REF] - rep.pages_by_enc[VMT_PAGE_ZERO];
    if (rc) {
        fprintf(stderr, "bench migrate: %s: %s\n", c->name, rep.why);
        vmt_vm_destroy(d.vm);
        return 0; /* the source runs on: the run is reported as failed */
    }
    vmt_vm_destroy(b->vm); /* the destination's copy is the next source */
    b->vm = d.vm;
    return 0;
}

/* ---- the matrix ------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_of(double *v, unsigned n)
{
    qsort(v, n, sizeof(double), cmp_double);
    return n ? v[n / 2] : 0;
}

static void emit_config(const char *load, const bcfg *c, const bres *rs, unsigned n,
                        double dirty_mb_s, uint64_t nonzero)
{
    double t[16], dn[16], by[16], ro[16], rf[16], ch[16];
    unsigned ok = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!rs[i].ok)
            continue;
        t[ok] = rs[i].total_ms;
        dn[ok] = rs[i].down_ms;
        by[ok] = rs[i].bytes;
        ro[ok] = rs[i].rounds;
        rf[ok] = rs[i].refs;
        ch[ok] = (double)rs[i].changed;
        ok++;
    }
    char extra[512];
    int len =
        snprintf(extra, sizeof(extra),
                 "\"load\":\"%s\",\"config\":\"%s\",\"streams\":%u,\"compress\":\"%s\","
                 "\"bandwidth\":%llu,\"dedup\":%s,\"dirty_mb_s\":%.1f,\"runs\":%u,"
                 "\"ok\":%u",
                 load, c->name, c->streams,
                 c->compress == VMT_MIGRATE_COMPRESS_LZ4    ? "lz4"
                 : c->compress == VMT_MIGRATE_COMPRESS_ZSTD ? "zstd"
                                                            : "none",
                 (unsigned long long)c->bandwidth, c->dedup ? "true" : "false", dirty_mb_s, n, ok);
    if (ok == 0) {
        vmt_bench_emit("migrate", "failed", 1, "bool", extra);
        return;
    }
    double bytes = median_of(by, ok);
    snprintf(extra + len, sizeof(extra) - (size_t)len,
             ",\"downtime_ms\":%.2f,\"bytes\":%.0f,\"rounds\":%.0f,\"ref_pages\":%.0f,"
             "\"nonzero_bytes\":%llu,\"bytes_per_nonzero\":%.3f,\"changed_bytes\":%.0f",
             median_of(dn, ok), bytes, median_of(ro, ok), median_of(rf, ok),
             (unsigned long long)(nonzero * 4096), nonzero ? bytes / (double)(nonzero * 4096) : 0,
             median_of(ch, ok) * 4096);
    vmt_bench_emit("migrate", "total_ms", median_of(t, ok), "ms", extra);
}

static const bcfg base_cfgs[] = {
    {"baseline", 1, VMT_MIGRATE_COMPRESS_NONE, 0, false, NULL},
    {"streams2", 2, VMT_MIGRATE_COMPRESS_NONE, 0, false, NULL},
    {"lz4", 1, VMT_MIGRATE_COMPRESS_LZ4, 0, false, NULL},
    {"zstd", 1, VMT_MIGRATE_COMPRESS_ZSTD, 0, false, NULL},
    {"1gbit", 1, VMT_MIGRATE_COMPRESS_NONE, 125000000ull, false, NULL},
    {"dedup", 1, VMT_MIGRATE_COMPRESS_NONE, 0, true, NULL},
};

/* The baseline over RDMA when a device exists; NULL (and a skip line,
 * once) otherwise. */
static const char *rdma_host(void)
{
    static const char *const dflt = "127.0.0.1";
    if (vmt_rdma_probe() != 0)
        return NULL;
    const char *a = getenv("VMTREE_RDMA_ADDR");
    return a && *a ? a : dflt;
}

static int run_load(bmig *b, const char *load, const char *args, bool idle, bool full)
{
    memset(&b->ev, 0, sizeof(b->ev));
    pthread_mutex_init(&b->ev.mu, NULL);
    int rc = boot(b, args, idle);
    if (rc)
        return rc;
    double rate = measure_rate(b->vm, 500) * 4096 / 1e6;
    uint64_t nonzero = nonzero_pages(b->vm);
    unsigned runs = b->o->runs ? b->o->runs : 3;
    bcfg all[2 * 2 * 3 * 2 + 1];
    size_t n = 0;
    if (full) {
        for (int bw = 0; bw < 2; bw++)
            for (unsigned s = 1; s <= 2; s++)
                for (int cz = 0; cz < 3; cz++)
                    for (int dd = 0; dd < 2; dd++)
                        all[n++] =
                            (bcfg){"full",  s,   (vmt_migrate_compress)cz, bw ? 125000000ull : 0,
                                   dd != 0, NULL};
    } else {
        memcpy(all, base_cfgs, sizeof(base_cfgs));
        n = VMT_ARRAY_SIZE(base_cfgs);
    }
    const char *rh = rdma_host();
    if (rh)
        all[n++] = (bcfg){"rdma", 1, VMT_MIGRATE_COMPRESS_NONE, 0, false, rh};
    for (size_t i = 0; i < n && rc == 0; i++) {
        bres rs[16];
        for (unsigned r = 0; r < runs && r < 16 && rc == 0; r++)
            rc = migrate_once(b, &all[i], !idle && strcmp(load, "moderate"), &rs[r]);
        if (rc == 0)
            emit_config(load, &all[i], rs, VMT_MIN(runs, 16u), rate, nonzero);
    }
    vmt_vm_destroy(b->vm);
    b->vm = NULL;
    return rc;
}

int vmt_bench_migrate(const vmt_bench_opts *o)
{
    bmig b = {.o = o};
    bool full = false;
    for (int i = 0; i < o->argc; i++)
        full |= !strcmp(o->argv[i], "--full");
    snprintf(b.dir, sizeof(b.dir), "/tmp/vmtree-bench-migrate-%d", (int)getpid());
    int rc = vmt_kvm_open(&b.kvm);
    if (rc == 0)
        rc = vmt_store_init(b.dir, NULL);
    if (rc == 0)
        rc = vmt_store_open(&b.store, b.dir, NULL);
    if (rc == 0)
        rc = vmt_catalog_open(&b.cat, b.dir);
    /* idle: 64 MiB touched, then nothing; moderate: ~50 MB/s over 512 MiB;
     * heavy: as fast as it goes (auto-converge on). */
    if (rc == 0 && vmt_rdma_probe() != 0)
        vmt_bench_skip("migrate", "total_ms", "rdma", vmt_error_last());
    vmt_error_clear();
    if (rc == 0)
        rc = run_load(&b, "idle", "pages=16384 passes=1 end=event", true, full);
    if (rc == 0 && !o->quick)
        rc = run_load(&b, "moderate", "pages=131072 per_pass=64 spin=3000000", false, full);
    if (rc == 0 && !o->quick)
        rc = run_load(&b, "heavy", "pages=131072 per_pass=4096", false, full);
    if (rc)
        fprintf(stderr, "bench migrate: %s\n", vmt_error_last());
    vmt_catalog_close(b.cat);
    vmt_store_close(b.store);
    vmt_kvm_close(b.kvm);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", b.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench migrate: could not remove %s\n", b.dir);
    return rc;
}
