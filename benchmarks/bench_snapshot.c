/*
 * vmtree-bench snapshot: snapshots of a running VM (DESIGN.md §6), 1 GiB
 * with a 512 MiB dirtier region (--quick: 256 MiB with 128 MiB, fewer runs).
 *
 *   take     the dirtier has filled its region with distinct random pages
 *            and spins without writing; after a full parent snapshot, k pages
 *            (0.1 %, 1 %, 10 % of RAM; spread over the region or in one run)
 *            are changed and a snapshot taken while the VM runs: pause, total
 *            and commit time, metadata bytes (map nodes + record + state blob).
 *   restore  from the last snapshot, the snapshotted VM paused: lazy
 *            (vmt_vm_from_snapshot with LAZY until vmt_vm_start returns;
 *            then until every page is in) and eager (non-zero bytes, and
 *            RAM bytes, per second, VM creation included).
 *            eager_restore_thp: the same into RAM on 2 MiB pages (--huge-pages)
 *            where the host gives them, else a skip line.
 *   rollback a 1 GiB dirtier (128 MiB of random pages) rolled back in place
 *            lazily (vmt_vm_restore_in_place): from the request (before the
 *            pause) until the VM runs again; then the CLI end to end:
 *            `vmtree rollback NAME SNAP --lazy` spawned against a detached
 *            1 GiB counter VM, wall time and the VM process's running_us.
 *   flat     rollback cost against populated RAM: 1 GiB dirtiers with 64,
 *            256, 512 and 960 MiB of random pages, paused at a snapshot S;
 *            then 16 pages changed and a partial in-place rollback to S
 *            (vmt_vm_restore_partial), pause to running, and the same with
 *            a full lazy in-place rollback for comparison (also run by
 *            `rollback`).
 *   series   N snapshots (100; --quick 10), 100 ms apart, of a dirtier that
 *            never stops (0.1 % of RAM a pass): pause and total time under
 *            load, then the store's disk bytes against N full memory dumps.
 *
 * `vmtree-bench snapshot [take] [restore] [rollback] [flat] [series]`: all by default
 * (restore needs take's snapshots and runs it).  The stores live in
 * temporary directories under $VMTREE_BENCH_DIR, $TMPDIR or /var/tmp,
 * removed at the end.
 */
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "vmtree/migrate.h"

#define SEC 1000000000ull
#define REGION_BASE (64ull << 20)
#define DIRTIER_READY 0xffffffffu
#define DIRTIER_DONE 0xfffffffeu

typedef struct events {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned n;
    uint32_t last;
} events;

static vmt_event_action on_event(void *ctx, vmt_vm *vm, unsigned vcpu, uint32_t v)
{
    events *e = ctx;
    (void)vm;
    (void)vcpu;
    pthread_mutex_lock(&e->lock);
    e->n++;
    e->last = v;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
    return VMT_EVENT_CONTINUE;
}

static bool wait_value(events *e, uint32_t v, uint64_t timeout_ns)
{
    uint64_t t0 = vmt_now_ns();
    pthread_mutex_lock(&e->lock);
    while (e->last != v && vmt_now_ns() - t0 < timeout_ns) {
        pthread_mutex_unlock(&e->lock);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&e->lock);
    }
    bool ok = e->last == v;
    pthread_mutex_unlock(&e->lock);
    return ok;
}

/* One store and the VM being snapshotted. */
typedef struct bsnap {
    const vmt_bench_opts *o;
    vmt_kvm *kvm;
    char *dir;
    vmt_store *s;
    vmt_catalog *c;
    events ev;
    vmt_vm *vm;
    vmt_vmsnap *vs;
    vmt_id last;   /* the newest snapshot */
    bool have_last;
    uint64_t rng;
    uint64_t mem, region_pages; /* 1 GiB and 512 MiB; --quick: 256 and 128 MiB */
} bsnap;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int store_open(bsnap *b, const char *tag)
{
    const char *base = getenv("VMTREE_BENCH_DIR");
    if (!base)
        base = getenv("TMPDIR");
    if (!base)
        base = "/var/tmp";
    if (asprintf(&b->dir, "%s/vmtree-bench-%s-XXXXXX", base, tag) < 0 || !mkdtemp(b->dir))
        return vmt_error_set(VMT_EIO, "cannot make a temporary directory under %s", base);
    char path[4096];
    snprintf(path, sizeof(path), "%s/store", b->dir);
    int rc = vmt_store_init(path, NULL);
    if (rc == 0)
        rc = vmt_store_open(&b->s, path, NULL);
    if (rc == 0)
        rc = vmt_catalog_open(&b->c, path);
    return rc;
}

static void bsnap_close(bsnap *b)
{
    vmt_vmsnap_detach(b->vs);
    vmt_vm_destroy(b->vm);
    vmt_catalog_close(b->c);
    vmt_store_close(b->s);
    if (b->dir)
        nftw(b->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(b->dir);
    b->vs = NULL;
    b->vm = NULL;
    b->c = NULL;
    b->s = NULL;
    b->dir = NULL;
}

static uint64_t disk_bytes(bsnap *b)
{
    vmt_store_stats ss;
    return vmt_store_get_stats(b->s, &ss) == 0 ? ss.disk_bytes : 0;
}

/* Boots the dirtier with `args`, attaches, starts, waits for `until`. */
static int boot_dirtier(bsnap *b, const char *args, uint32_t until)
{
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = b->mem;
    cfg.event = on_event;
    cfg.event_ctx = &b->ev;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "base=%llu pages=%llu fill=random event=1 %s",
             (unsigned long long)REGION_BASE, (unsigned long long)b->region_pages, args);
    char *path = vmt_bench_guest(b->o, "dirtier");
    vmt_vmsnap_info info = {.vm_name = "bench", .image = path, .cmdline = cmd};
    int rc = vmt_vm_create(&b->vm, b->kvm, &cfg);
    if (rc == 0)
        rc = vmt_vm_load_elf(b->vm, path, cmd);
    if (rc == 0)
        rc = vmt_vmsnap_attach(&b->vs, b->s, b->c, b->vm, NULL, &info);
    if (rc == 0)
        rc = vmt_vm_start(b->vm);
    free(path);
    if (rc == 0 && !wait_value(&b->ev, until, 120 * SEC))
        rc = vmt_error_set(VMT_ETIMEDOUT, "the dirtier did not get ready");
    return rc;
}

static int take(bsnap *b, unsigned max_rounds, vmt_snap_take_stats *ts)
{
    vmt_snap_take_opts o;
    vmt_snap_take_opts_init(&o);
    o.message = "bench";
    o.max_rounds = max_rounds;
    int rc = vmt_vmsnap_take(b->vs, &o, &b->last, ts);
    b->have_last = rc == 0;
    return rc;
}

static uint64_t next_rand(bsnap *b)
{
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return b->rng;
}

/* Changes k distinct pages of the region (a byte each) through the VMM,
 * which reports them dirty like the guest's own writes: spread at random
 * over the region, or one run of k pages at a random place. */
static int dirty_pages(bsnap *b, uint64_t k, bool clustered)
{
    uint8_t *ram = vmt_vm_ram(b->vm, NULL);
    uint64_t n = b->region_pages, start = next_rand(b) % n;
    uint64_t stride = clustered ? 1 : n / k;
    for (uint64_t i = 0; i < k; i++) {
        uint64_t jitter = clustered ? 0 : next_rand(b) % VMT_MAX(stride, 1);
        uint64_t page = (start + i * stride + jitter) % n;
        uint64_t off = REGION_BASE + page * VMT_PAGE_SIZE + 17;
        uint8_t v = (uint8_t)(ram[off] + 1);
        int rc = vmt_vm_write_ram(b->vm, off, &v, 1);
        if (rc)
            return rc;
    }
    return 0;
}

static void emit_take(bsnap *b, const char *metric, double v, const char *unit, double pct,
                      uint64_t k, const char *pattern, const char *more)
{
    char extra[320];
    snprintf(extra, sizeof(extra),
             "\"mem_mib\":%llu,\"dirty_pct\":%g,\"dirty_pages\":%llu,\"pattern\":\"%s\"%s%s",
             (unsigned long long)(b->mem >> 20), pct, (unsigned long long)k, pattern,
             more ? "," : "", more ? more : "");
    vmt_bench_emit("snapshot", metric, v, unit, extra);
}

typedef struct take_runs {
    double pause[16], total[16], commit[16], meta[16], pmax;
} take_runs;

static int take_k(bsnap *b, uint64_t k, bool clustered, unsigned runs, take_runs *t)
{
    t->pmax = 0;
    for (unsigned r = 0; r < runs; r++) {
        vmt_snap_take_stats ts;
        int rc = dirty_pages(b, k, clustered);
        if (rc == 0)
            rc = take(b, 8, &ts);
        if (rc)
            return rc;
        t->pause[r] = (double)ts.precopy.pause_ns / 1e6;
        t->total[r] = (double)ts.precopy.total_ns / 1e6;
        t->commit[r] = (double)ts.precopy.commit_ns / 1e6;
        t->meta[r] = (double)(ts.node_bytes + ts.record_bytes + ts.precopy.state_bytes);
        t->pmax = VMT_MAX(t->pmax, t->pause[r]);
    }
    return 0;
}

/* The full parent, then k = 0.1 / 1 / 10 % of RAM changed per snapshot. */
static int bench_take(bsnap *b)
{
    static const double pcts[] = {0.1, 1, 10};
    vmt_snap_take_stats ts;
    int rc = take(b, 8, &ts);
    if (rc)
        return rc;
    char extra[160];
    snprintf(extra, sizeof(extra), "\"mem_mib\":%llu,\"region_mib\":%llu,\"fill\":\"random\"",
             (unsigned long long)(b->mem >> 20), (unsigned long long)(b->region_pages >> 8));
    vmt_bench_emit("snapshot", "full_total", (double)ts.precopy.total_ns / 1e6, "ms", extra);
    vmt_bench_emit("snapshot", "full_pause", (double)ts.precopy.pause_ns / 1e6, "ms", extra);
    unsigned runs = VMT_MIN(b->o->runs, 16u);
    for (size_t p = 0; p < VMT_ARRAY_SIZE(pcts); p++) {
        uint64_t k = (uint64_t)((double)(b->mem / VMT_PAGE_SIZE) * pcts[p] / 100.0);
        for (int clustered = 0; clustered < 2; clustered++) {
            const char *pat = clustered ? "clustered" : "spread";
            take_runs t;
            if ((rc = take_k(b, k, clustered, runs, &t)) != 0)
                return rc;
            char more[64];
            snprintf(more, sizeof(more), "\"max\":%.3f", t.pmax);
            emit_take(b, "pause", vmt_bench_median(t.pause, runs), "ms", pcts[p], k, pat, more);
            emit_take(b, "total", vmt_bench_median(t.total, runs), "ms", pcts[p], k, pat, NULL);
            emit_take(b, "commit", vmt_bench_median(t.commit, runs), "ms", pcts[p], k, pat,
                      "\"of\":\"map nodes, record, store and catalog sync; the VM runs\"");
            emit_take(b, "metadata_bytes", vmt_bench_median(t.meta, runs), "bytes", pcts[p], k,
                      pat, "\"of\":\"map nodes + record + state blob\"");
        }
    }
    return 0;
}

/* Lazy: until the restored VM runs, then until all of RAM is in.  Eager:
 * non-zero bytes per second into RAM. */
static int bench_restore(bsnap *b)
{
    unsigned runs = VMT_MIN(b->o->runs, 16u);
    double run_ms[16], done_ms[16], eager[16], thp[16];
    bool got_thp = false;
    vmt_vm_config huge;
    vmt_vm_config_init(&huge);
    huge.huge_pages = true;
    vmt_snap_record *rec = malloc(sizeof(*rec));
    /* The snapshotted dirtier spins on one of the cores: not what is
     * measured here. */
    int rc = rec ? vmt_vm_pause(b->vm) : VMT_ENOMEM;
    for (unsigned r = 0; rc == 0 && r < runs; r++) {
        vmt_vm *vm = NULL;
        vmt_restore *rs = NULL;
        vmt_restore_opts lazy = {.mode = VMT_RESTORE_LAZY};
        uint64_t t0 = vmt_now_ns();
        rc = vmt_vm_from_snapshot(b->kvm, b->s, &b->last, NULL, &lazy, &vm, &rs, rec);
        if (rc == 0)
            rc = vmt_vm_start(vm);
        uint64_t t1 = vmt_now_ns();
        if (rc == 0)
            rc = vmt_restore_wait(rs, 120 * SEC);
        uint64_t t2 = vmt_now_ns();
        vmt_vm_destroy(vm);
        vmt_restore_free(rs);
        run_ms[r] = (double)(t1 - t0) / 1e6;
        done_ms[r] = (double)(t2 - t0) / 1e6;
        vm = NULL;
        uint64_t t3 = vmt_now_ns();
        if (rc == 0)
            rc = vmt_vm_from_snapshot(b->kvm, b->s, &b->last, NULL, NULL, &vm, NULL, rec);
        eager[r] = (double)rec->nonzero_pages * 4096 / ((double)(vmt_now_ns() - t3) / 1e9) / 1e9;
        vmt_vm_destroy(vm);
        /* The same into RAM on 2 MiB pages (vmtree branch --huge-pages). */
        vm = NULL;
        uint64_t t4 = vmt_now_ns();
        if (rc == 0)
            rc = vmt_vm_from_snapshot(b->kvm, b->s, &b->last, &huge, NULL, &vm, NULL, rec);
        thp[r] = (double)rec->nonzero_pages * 4096 / ((double)(vmt_now_ns() - t4) / 1e9) / 1e9;
        got_thp = rc == 0 && vmt_vm_ram_huge(vm);
        vmt_vm_destroy(vm);
    }
    if (rc == 0) {
        char extra[128];
        snprintf(extra, sizeof(extra), "\"mem_mib\":%llu,\"nonzero_mib\":%llu",
                 (unsigned long long)(b->mem >> 20),
                 (unsigned long long)(rec->nonzero_pages * 4096 >> 20));
        vmt_bench_emit("snapshot", "lazy_restore_running", vmt_bench_median(run_ms, runs), "ms",
                       extra);
        vmt_bench_emit("snapshot", "lazy_restore_complete", vmt_bench_median(done_ms, runs), "ms",
                       extra);
        vmt_bench_emit("snapshot", "eager_restore", vmt_bench_median(eager, runs), "GB/s", extra);
        for (unsigned r = 0; r < runs; r++)
            eager[r] *= (double)b->mem / ((double)rec->nonzero_pages * 4096);
        vmt_bench_emit("snapshot", "eager_restore_ram_rate", vmt_bench_median(eager, runs),
                       "GB/s", extra);
        if (got_thp)
            vmt_bench_emit("snapshot", "eager_restore_thp", vmt_bench_median(thp, runs), "GB/s",
                           extra);
        else
            vmt_bench_skip("snapshot", "eager_restore_thp", "2 MiB-page RAM",
                           "the host gives shared memory no huge pages (scripts/host-tune.sh)");
    }
    free(rec);
    return rc;
}

/* Snapshots while the guest dirties about 1 % of RAM between two of them
 * (per_pass pages, then a pause of the VM's own making with spin). */
static int bench_load(bsnap *b, unsigned n, double *pause, double *total, double *rounds,
                      double *sent)
{
    for (unsigned i = 0; i < n; i++) {
        struct timespec gap = {0, 100000000};
        nanosleep(&gap, NULL);
        vmt_snap_take_stats ts;
        int rc = take(b, 8, &ts);
        if (rc)
            return rc;
        pause[i] = (double)ts.precopy.pause_ns / 1e6;
        total[i] = (double)ts.precopy.total_ns / 1e6;
        rounds[i] = ts.precopy.rounds;
        sent[i] = (double)ts.precopy.pages_sent;
    }
    return 0;
}

static void emit_load(bsnap *b, const char *bench_metric, double *pause, double *total,
                      double *rounds, double *sent, unsigned n, const char *what)
{
    char extra[256];
    double s = vmt_bench_median(sent, n);
    snprintf(extra, sizeof(extra),
             "\"mem_mib\":%llu,\"snapshots\":%u,\"pages_sent\":%.0f,\"sent_pct\":%.2f,"
             "\"rounds\":%.0f,\"load\":\"%s\"",
             (unsigned long long)(b->mem >> 20), n, s,
             s * 100 / (double)(b->mem / VMT_PAGE_SIZE), vmt_bench_median(rounds, n), what);
    double pmax = 0;
    for (unsigned i = 0; i < n; i++)
        pmax = VMT_MAX(pmax, pause[i]);
    char extra2[320];
    snprintf(extra2, sizeof(extra2), "%s,\"max\":%.3f", extra, pmax);
    char m[64];
    snprintf(m, sizeof(m), "%s_pause", bench_metric);
    vmt_bench_emit("snapshot", m, vmt_bench_median(pause, n), "ms", extra2);
    snprintf(m, sizeof(m), "%s_total", bench_metric);
    vmt_bench_emit("snapshot", m, vmt_bench_median(total, n), "ms", extra);
}

/* The guest dirties continuously: 0.1 % of RAM a pass, `spin` between
 * (a few ms of ring-3 loop). */
#define LOAD_SPIN 20000000

static int run_series(bsnap *b, unsigned n, const char *args)
{
    double *pause = calloc(n, sizeof(double)), *total = calloc(n, sizeof(double));
    double *rounds = calloc(n, sizeof(double)), *sent = calloc(n, sizeof(double));
    int rc = pause && total && rounds && sent ? 0 : VMT_ENOMEM;
    if (rc == 0)
        rc = bench_load(b, n, pause, total, rounds, sent);
    if (rc == 0) {
        emit_load(b, "load", pause, total, rounds, sent, n, args);
        uint64_t disk = disk_bytes(b);
        char extra[200];
        snprintf(extra, sizeof(extra),
                 "\"mem_mib\":%llu,\"snapshots\":%u,\"full_dumps_bytes\":%llu,"
                 "\"store_bytes\":%llu",
                 (unsigned long long)(b->mem >> 20), n, (unsigned long long)(n * b->mem),
                 (unsigned long long)disk);
        vmt_bench_emit("snapshot", "series_store_bytes", (double)disk, "bytes", extra);
        vmt_bench_emit("snapshot", "series_store_vs_dumps", (double)disk / (double)(n * b->mem),
                       "ratio", extra);
    }
    free(pause);
    free(total);
    free(rounds);
    free(sent);
    return rc;
}

/* A fresh store; the dirtier running without a stop; N snapshots. */
static int bench_series(bsnap *b)
{
    bsnap s = {.o = b->o, .kvm = b->kvm, .rng = 88172645463325252ull, .mem = b->mem,
               .region_pages = b->region_pages,
               .ev = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER}};
    char args[96];
    snprintf(args, sizeof(args), "per_pass=%llu spin=%u",
             (unsigned long long)(b->mem / VMT_PAGE_SIZE / 1000), LOAD_SPIN);
    int rc = store_open(&s, "series");
    if (rc == 0)
        rc = boot_dirtier(&s, args, DIRTIER_READY);
    if (rc == 0)
        rc = run_series(&s, b->o->quick ? 10 : 100, args);
    bsnap_close(&s);
    return rc;
}

/* ---- rollback ------------------------------------------------------------ */

/* In place and lazily, at the library level: a paused take of the running
 * dirtier, then rollbacks to it while it runs (request = pause). */
static int bench_rollback_lib(bsnap *b, unsigned runs, double *ms)
{
    vmt_snap_take_stats ts;
    int rc = take(b, 8, &ts);
    vmt_vmsnap_detach(b->vs); /* the VM process keeps no vmsnap attached */
    b->vs = NULL;
    if (rc == 0)
        rc = vmt_dirty_start(b->vm, 0); /* ... but logging on */
    vmt_restore *prev = NULL;
    for (unsigned r = 0; rc == 0 && r < runs; r++) {
        vmt_restore *rs = NULL;
        vmt_restore_opts lazy = {.mode = VMT_RESTORE_LAZY};
        uint64_t t0 = vmt_now_ns();
        rc = vmt_vm_pause(b->vm);
        if (rc == 0)
            rc = vmt_vm_restore_in_place(b->vm, b->s, &b->last, &lazy, &prev, &rs, NULL, NULL);
        if (rc == 0)
            rc = vmt_vm_resume(b->vm);
        ms[r] = (double)(vmt_now_ns() - t0) / 1e6;
        prev = rs;
        /* Let it run a little and the prefetch go on, as between requests. */
        struct timespec gap = {0, 20000000};
        nanosleep(&gap, NULL);
    }
    if (prev && rc == 0)
        rc = vmt_restore_wait(prev, 120 * SEC);
    vmt_vm_destroy(b->vm); /* before its restore: that one serves its RAM */
    b->vm = NULL;
    vmt_restore_free(prev);
    return rc;
}

/* Runs build/bin/vmtree with argv (NULL-terminated); its stdout into out. */
static int run_cli(const char *exe, char *const *argv, char *out, size_t cap)
{
    int fds[2];
    if (pipe(fds) != 0)
        return vmt_error_set(VMT_EIO, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(exe, argv);
        _exit(127);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(fds[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)k;
    out[n] = 0;
    close(fds[0]);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return vmt_error_set(VMT_EIO, "%s %s %s failed (status %d): %.200s", exe, argv[1],
                             argv[2] ? argv[2] : "", st, out);
    return 0;
}

/* `vmtree rollback --lazy` end to end against a detached 1 GiB counter;
 * then `vmtree branch --lazy --detach` of its HEAD, spawn to exit. */
static int bench_rollback_cli(bsnap *b, unsigned runs, double *wall, double *running,
                              double *branch)
{
    char exe[PATH_MAX], store[PATH_MAX + 16], out[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 16);
    if (n <= 0)
        return vmt_error_set(VMT_EIO, "cannot find this executable");
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    snprintf(slash + 1, sizeof(exe) - (size_t)(slash + 1 - exe), "vmtree");
    if (access(exe, X_OK) != 0)
        return vmt_error_set(VMT_ENOENT, "no %s to run", exe);
    const char *base = getenv("VMTREE_BENCH_DIR");
    base = base ? base : getenv("TMPDIR");
    base = base ? base : "/var/tmp";
    if (asprintf(&b->dir, "%s/vmtree-bench-rbcli-XXXXXX", base) < 0 || !mkdtemp(b->dir))
        return vmt_error_set(VMT_EIO, "cannot make a temporary directory under %s", base);
    snprintf(store, sizeof(store), "%s/store", b->dir);
    char *guest = vmt_bench_guest(b->o, "counter");
    char *init[] = {exe, "store", "init", "--store", store, NULL};
    char *run[] = {exe, "run", guest, "--mem", "1G", "--name", "rb", "--detach", "--store",
                   store, "--cmdline", "steps=0 every=1 work=200000", NULL};
    char *snap[] = {exe, "snapshot", "rb", "--store", store, NULL};
    char *rb[] = {exe, "rollback", "rb", "rb", "--lazy", "--store", store, NULL};
    char *stop[] = {exe, "stop", "rb", "--store", store, NULL};
    int rc = run_cli(exe, init, out, sizeof(out));
    if (rc == 0)
        rc = run_cli(exe, run, out, sizeof(out));
    bool started = rc == 0;
    if (rc == 0)
        rc = run_cli(exe, snap, out, sizeof(out));
    for (unsigned r = 0; rc == 0 && r < runs; r++) {
        struct timespec gap = {0, 50000000};
        nanosleep(&gap, NULL);
        uint64_t t0 = vmt_now_ns();
        rc = run_cli(exe, rb, out, sizeof(out));
        wall[r] = (double)(vmt_now_ns() - t0) / 1e6;
        const char *m = strstr(out, "running after ");
        running[r] = m ? strtod(m + 14, NULL) : -1;
    }
    for (unsigned r = 0; rc == 0 && r < runs; r++) {
        char name[16];
        snprintf(name, sizeof(name), "br%u", r);
        char *br[] = {exe, "branch", "rb", "--name", name, "--lazy", "--detach", "--store",
                      store, NULL};
        char *brstop[] = {exe, "stop", name, "--store", store, NULL};
        uint64_t t0 = vmt_now_ns();
        rc = run_cli(exe, br, out, sizeof(out));
        branch[r] = (double)(vmt_now_ns() - t0) / 1e6;
        if (rc == 0)
            rc = run_cli(exe, brstop, out, sizeof(out));
    }
    if (started)
        run_cli(exe, stop, out, sizeof(out));
    free(guest);
    return rc;
}

static int bench_rollback(const vmt_bench_opts *o, vmt_kvm *kvm)
{
    unsigned runs = VMT_MIN(o->runs, 16u);
    double lib[16], wall[16], running[16], branch[16];
    bsnap b = {.o = o, .kvm = kvm, .rng = 88172645463325252ull, .mem = 1ull << 30,
               .region_pages = 32768,
               .ev = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER}};
    int rc = store_open(&b, "rollback");
    if (rc == 0)
        rc = boot_dirtier(&b, "passes=1 end=event", DIRTIER_DONE);
    if (rc == 0)
        rc = bench_rollback_lib(&b, runs, lib);
    bsnap_close(&b);
    if (rc == 0) {
        vmt_bench_emit("snapshot", "rollback_lazy_running", vmt_bench_median(lib, runs), "ms",
                       "\"mem_mib\":1024,\"nonzero_mib\":128,\"of\":\"in place: pause, "
                       "vmt_vm_restore_in_place, resume\"");
        rc = bench_rollback_cli(&b, runs, wall, running, branch);
        bsnap_close(&b);
    }
    if (rc == 0) {
        vmt_bench_emit("snapshot", "rollback_lazy_cli_wall", vmt_bench_median(wall, runs), "ms",
                       "\"mem_mib\":1024,\"of\":\"vmtree rollback --lazy, spawn to exit\"");
        vmt_bench_emit("snapshot", "rollback_lazy_cli_running", vmt_bench_median(running, runs),
                       "ms", "\"mem_mib\":1024,\"of\":\"VM process: request to running\"");
        vmt_bench_emit("snapshot", "branch_lazy_cli_wall", vmt_bench_median(branch, runs), "ms",
                       "\"mem_mib\":1024,\"of\":\"vmtree branch --lazy --detach, spawn to "
                       "exit (a new process and VM: store open, KVM_CREATE_VM, catalog)\"");
    }
    return rc;
}

/* ---- rollback cost against populated RAM -------------------------------- */

/* Pause, roll back in place (partial S -> S, or a full lazy restore of S),
 * resume: ms from the request (the pause) until the VM runs. */
static int rollback_once(bsnap *b, bool partial, vmt_restore **prev, double *ms,
                         uint64_t *restored)
{
    vmt_restore_partial_stats pst;
    vmt_restore_opts lazy = {.mode = VMT_RESTORE_LAZY};
    vmt_restore *rs = NULL;
    uint64_t t0 = vmt_now_ns();
    int rc = vmt_vm_pause(b->vm);
    if (rc == 0 && partial)
        rc = vmt_vm_restore_partial(b->vm, b->s, &b->last, &b->last, NULL, NULL, NULL, &pst);
    else if (rc == 0)
        rc = vmt_vm_restore_in_place(b->vm, b->s, &b->last, &lazy, prev, &rs, NULL, NULL);
    if (rc == 0)
        rc = vmt_vm_resume(b->vm);
    *ms = (double)(vmt_now_ns() - t0) / 1e6;
    if (partial)
        *restored = pst.pages_restored;
    else
        *prev = rs;
    return rc;
}

/* k pages of the region changed through the VMM (reported dirty, as the
 * guest's writes are), then a little time for the guest to run. */
static int touch_few(bsnap *b, unsigned k)
{
    int rc = dirty_pages(b, k, false);
    struct timespec gap = {0, 20000000};
    nanosleep(&gap, NULL);
    return rc;
}

/* A 1 GiB dirtier with `mib` MiB of random pages, paused at snapshot S with
 * logging on (RAM == S); partial rollbacks with 16 pages written between
 * them, then full lazy ones for comparison. */
static int rollback_flat_one(const vmt_bench_opts *o, vmt_kvm *kvm, uint64_t mib)
{
    enum { K = 16 };
    unsigned runs = VMT_MIN(o->runs, 16u);
    double part[16], full[16], nrest[16];
    bsnap b = {.o = o, .kvm = kvm, .rng = 88172645463325252ull, .mem = 1ull << 30,
               .region_pages = mib << 8,
               .ev = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER}};
    vmt_restore *prev = NULL;
    vmt_snap_take_stats ts;
    int rc = store_open(&b, "rbflat");
    if (rc == 0)
        rc = boot_dirtier(&b, "passes=1 end=event", DIRTIER_DONE);
    if (rc == 0)
        rc = vmt_vm_pause(b.vm);
    if (rc == 0)
        rc = take(&b, 8, &ts); /* paused: RAM is exactly S */
    vmt_vmsnap_detach(b.vs); /* stops the logging it started ... */
    b.vs = NULL;
    if (rc == 0)
        rc = vmt_dirty_start(b.vm, 0); /* ... on again, as the VM process has it */
    if (rc == 0)
        rc = vmt_vm_resume(b.vm);
    for (unsigned r = 0; rc == 0 && r < runs; r++) {
        uint64_t n = 0;
        rc = touch_few(&b, K);
        if (rc == 0)
            rc = rollback_once(&b, true, NULL, &part[r], &n);
        nrest[r] = (double)n;
    }
    for (unsigned r = 0; rc == 0 && r < runs; r++)
        if ((rc = touch_few(&b, K)) == 0)
            rc = rollback_once(&b, false, &prev, &full[r], NULL);
    if (prev && rc == 0)
        rc = vmt_restore_wait(prev, 120 * SEC);
    vmt_vm_destroy(b.vm); /* before its restore: that one serves its RAM */
    b.vm = NULL;
    vmt_restore_free(prev);
    bsnap_close(&b);
    if (rc == 0) {
        char extra[200];
        snprintf(extra, sizeof(extra),
                 "\"mem_mib\":1024,\"populated_mib\":%llu,\"pages_written\":%d,"
                 "\"pages_restored\":%.0f",
                 (unsigned long long)mib, K, vmt_bench_median(nrest, runs));
        vmt_bench_emit("snapshot", "rollback_partial_running", vmt_bench_median(part, runs), "ms",
                       extra);
        vmt_bench_emit("snapshot", "rollback_full_lazy_running", vmt_bench_median(full, runs),
                       "ms", extra);
    }
    return rc;
}

/* Partial in-place rollback (only the pages that differ) should cost the
 * same whatever the populated RAM; the full lazy one punches all of it. */
static int bench_rollback_flat(const vmt_bench_opts *o, vmt_kvm *kvm)
{
    static const uint64_t mib[] = {64, 256, 512, 960};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < VMT_ARRAY_SIZE(mib); i++)
        if (!o->quick || mib[i] <= 256)
            rc = rollback_flat_one(o, kvm, mib[i]);
    return rc;
}

static bool wanted(const vmt_bench_opts *o, const char *part)
{
    bool want = o->argc == 0;
    for (int a = 0; a < o->argc; a++)
        want |= strcmp(o->argv[a], part) == 0;
    return want;
}

int vmt_bench_snapshot(const vmt_bench_opts *o)
{
    bsnap b = {.o = o, .rng = 2463534242ull,
               .mem = o->quick ? 256ull << 20 : 1ull << 30,
               .region_pages = o->quick ? 32768 : 131072,
               .ev = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER}};
    int rc = vmt_kvm_open(&b.kvm);
    bool need_vm = wanted(o, "take") || wanted(o, "restore");
    if (rc == 0 && need_vm)
        rc = store_open(&b, "take");
    /* Fill, one pass, then spin without writing (end=event). */
    if (rc == 0 && need_vm)
        rc = boot_dirtier(&b, "passes=1 end=event", DIRTIER_DONE);
    if (rc == 0 && need_vm)
        rc = bench_take(&b);
    if (rc == 0 && wanted(o, "restore"))
        rc = bench_restore(&b);
    bsnap_close(&b);
    if (rc == 0 && wanted(o, "rollback"))
        rc = bench_rollback(o, b.kvm);
    if (rc == 0 && (wanted(o, "rollback") || wanted(o, "flat")))
        rc = bench_rollback_flat(o, b.kvm);
    if (rc == 0 && wanted(o, "series"))
        rc = bench_series(&b);
    if (rc)
        fprintf(stderr, "vmtree-bench snapshot: %s\n", vmt_error_last());
    vmt_kvm_close(b.kvm);
    return rc;
}
