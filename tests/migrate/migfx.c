/* Helpers shared by the migrate/ suites (see migfx.h). */
#include "migfx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

/* ---- store + catalog ---------------------------------------------------- */

int migfx_store_open(migfx_store *st)
{
    memset(st, 0, sizeof(*st));
    st->dir = vmt_test_tmpdir("migrate");
    if (!st->dir)
        return -1;
    char path[4096];
    snprintf(path, sizeof(path), "%s/store", st->dir);
    int rc = vmt_store_init(path, NULL);
    if (rc == 0)
        rc = vmt_store_open(&st->s, path, NULL);
    if (rc == 0)
        rc = vmt_catalog_open(&st->c, path);
    if (rc)
        fprintf(stderr, "\n  store at %s: %s\n", path, vmt_error_last());
    return rc;
}

void migfx_store_close(migfx_store *st)
{
    vmt_catalog_close(st->c);
    vmt_store_close(st->s);
    if (st->dir)
        vmt_test_rmtree(st->dir);
    free(st->dir);
    memset(st, 0, sizeof(*st));
}

uint64_t migfx_store_objects(migfx_store *st)
{
    vmt_store_stats ss;
    if (vmt_store_get_stats(st->s, &ss) != 0)
        return 0;
    return ss.objects;
}

/* ---- guests ---------------------------------------------------------------- */

int migfx_boot(fx_guest *g, const char *name, const char *cmdline, uint64_t mem_size)
{
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = mem_size;
    return fx_boot(g, name, cmdline, &cfg);
}

/* As the fixture's own callback (fixture.c keeps it static). */
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

int migfx_restore(fx_guest *g, vmt_store *s, const vmt_id *id, vmt_restore_mode mode,
                  vmt_restore **restore, vmt_snap_record *rec)
{
    return migfx_restore_huge(g, s, id, mode, false, restore, rec);
}

int migfx_restore_huge(fx_guest *g, vmt_store *s, const vmt_id *id, vmt_restore_mode mode,
                       bool huge_pages, vmt_restore **restore, vmt_snap_record *rec)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (vmt_console_buf_new(&g->con) != 0)
        return -1;
    vmt_vm_config base;
    vmt_vm_config_init(&base);
    base.console = vmt_console_buf_sink;
    base.console_ctx = g->con;
    base.event = on_event;
    base.event_ctx = g;
    base.huge_pages = huge_pages;
    vmt_restore_opts ro = {.mode = mode};
    int rc = vmt_vm_from_snapshot(fx_kvm, s, id, &base, &ro, &g->vm, restore, rec);
    if (rc)
        fprintf(stderr, "\n  vmt_vm_from_snapshot: %s\n", vmt_error_last());
    return rc;
}

void migfx_free(fx_guest *g, vmt_restore *restore)
{
    fx_free(g);
    vmt_restore_free(restore);
}

int migfx_attach(vmt_vmsnap **vs, migfx_store *st, fx_guest *g, const vmt_id *head,
                 const char *name)
{
    vmt_vmsnap_info info = {.vm_name = name, .image = "test.elf", .cmdline = "test"};
    int rc = vmt_vmsnap_attach(vs, st->s, st->c, g->vm, head, &info);
    if (rc)
        fprintf(stderr, "\n  vmt_vmsnap_attach: %s\n", vmt_error_last());
    return rc;
}

int migfx_take(vmt_vmsnap *vs, unsigned max_rounds, uint64_t pause_pages, vmt_id *id,
               vmt_snap_take_stats *stats)
{
    vmt_snap_take_opts o;
    vmt_snap_take_opts_init(&o);
    o.max_rounds = max_rounds;
    o.pause_pages = pause_pages;
    o.message = "test";
    int rc = vmt_vmsnap_take(vs, &o, id, stats);
    if (rc)
        fprintf(stderr, "\n  vmt_vmsnap_take: %s\n", vmt_error_last());
    return rc;
}

bool migfx_wait_event_paused(fx_guest *g, unsigned n, uint64_t timeout_ns)
{
    if (!fx_wait_events(g, n, timeout_ns))
        return false;
    vmt_vm_pause(g->vm); /* the callback's pause may still be on its way */
    return true;
}

unsigned migfx_events(fx_guest *g)
{
    pthread_mutex_lock(&g->lock);
    unsigned n = g->nevents;
    pthread_mutex_unlock(&g->lock);
    return n;
}

/* ---- counter -------------------------------------------------------------- */

size_t migfx_counter_lines(const char *text, migfx_line **out)
{
    size_t n = 0, cap = 64;
    migfx_line *v = malloc(cap * sizeof(*v));
    for (const char *p = text; v && p && *p;) {
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        unsigned long long step, sum;
        int used = 0;
        if (sscanf(p, "counter: step %llu sum %16llx%n", &step, &sum, &used) == 2 &&
            p + used == nl) {
            if (n == cap) {
                cap *= 2;
                migfx_line *nv = realloc(v, cap * sizeof(*v));
                if (!nv)
                    break;
                v = nv;
            }
            v[n++] = (migfx_line){.step = step, .sum = sum};
        }
        p = nl + 1;
    }
    *out = v;
    return v ? n : 0;
}

uint64_t migfx_counter_step(fx_guest *g)
{
    char *text = vmt_console_buf_dup(g->con, NULL);
    migfx_line *v = NULL;
    size_t n = text ? migfx_counter_lines(text, &v) : 0;
    uint64_t step = n ? v[n - 1].step : 0;
    free(v);
    free(text);
    return step;
}

bool migfx_wait_step(fx_guest *g, uint64_t step, uint64_t timeout_ns)
{
    uint64_t t0 = vmt_now_ns();
    while (migfx_counter_step(g) < step) {
        if (vmt_now_ns() - t0 > timeout_ns)
            return false;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

long migfx_restore_compare(vmt_store *s, const vmt_id *snap, const char *orig, uint64_t at,
                           vmt_snap_record *rec)
{
    fx_guest r;
    vmt_restore *rs = NULL;
    if (migfx_restore(&r, s, snap, VMT_RESTORE_EAGER, &rs, rec) != 0)
        return -1;
    long n = -1;
    if (vmt_vm_start(r.vm) == 0 && migfx_wait_step(&r, at + 10, 30 * FX_SEC)) {
        char *after = vmt_console_buf_dup(r.con, NULL);
        n = migfx_counter_compare(orig, after, NULL);
        free(after);
    }
    migfx_free(&r, rs);
    return n;
}

long migfx_counter_compare(const char *orig, const char *restored, uint64_t *first)
{
    migfx_line *a = NULL, *b = NULL;
    size_t na = migfx_counter_lines(orig, &a), nb = migfx_counter_lines(restored, &b);
    long compared = 0;
    if (first)
        *first = nb ? b[0].step : 0;
    for (size_t i = 0; i < nb && compared >= 0; i++) {
        size_t j = 0;
        while (j < na && a[j].step != b[i].step)
            j++;
        if (j == na) {
            fprintf(stderr, "\n  restored step %llu is not in the original run (%zu lines)\n",
                    (unsigned long long)b[i].step, na);
            compared = -1;
        } else if (a[j].sum != b[i].sum) {
            fprintf(stderr, "\n  step %llu: sum %016llx after restore, %016llx originally\n",
                    (unsigned long long)b[i].step, (unsigned long long)b[i].sum,
                    (unsigned long long)a[j].sum);
            compared = -1;
        } else {
            compared++;
        }
    }
    free(a);
    free(b);
    return compared;
}

/* ---- dirtier ------------------------------------------------------------ */

static bool slice_invariant(const uint8_t *ram, uint64_t base, uint64_t first, uint64_t n,
                            char *why, size_t cap)
{
    uint8_t hi = ram[base + first * 4096], lo = (uint8_t)(hi - 1);
    bool stepped = false;
    for (uint64_t i = first; i < first + n; i++) {
        uint8_t b = ram[base + i * 4096];
        if (b == (stepped ? lo : hi))
            continue;
        if (!stepped && b == lo) {
            stepped = true;
            continue;
        }
        snprintf(why, cap, "page %llu of the region: first byte %u after %u (%s the step)",
                 (unsigned long long)i, b, stepped ? lo : hi, stepped ? "after" : "before");
        return false;
    }
    return true;
}

bool migfx_dirtier_invariant(const uint8_t *ram, uint64_t base, uint64_t pages, unsigned slices,
                             char *why, size_t cap)
{
    for (unsigned c = 0; c < slices; c++) {
        uint64_t first = c * pages / slices, n = (c + 1) * pages / slices - first;
        if (!slice_invariant(ram, base, first, n, why, cap))
            return false;
    }
    return true;
}

/* ---- fault injection -------------------------------------------------------- */

static bool fire(migfx_faulty *f, int op)
{
    if (f->op != op || f->fired || ++f->counted != f->nth)
        return false;
    f->fired = true;
    return true;
}

static int f_begin(void *ctx, const vmt_precopy_info *info)
{
    migfx_faulty *f = ctx;
    return f->inner.ops->begin(f->inner.ctx, info);
}

static int f_pages(void *ctx, unsigned round, const uint64_t *pfns, const uint8_t *const *data,
                   size_t n)
{
    migfx_faulty *f = ctx;
    if (round > f->max_round)
        f->max_round = round;
    if (round >= f->min_round && fire(f, MIGFX_OP_PAGES))
        return vmt_error_set(VMT_EIO, "injected failure of pages in round %u", round);
    if (f->on_round && round >= f->rounds_seen) {
        f->rounds_seen = round + 1;
        f->on_round(f->on_round_ctx, round);
    }
    return f->inner.ops->pages(f->inner.ctx, round, pfns, data, n);
}

static int f_state(void *ctx, const uint8_t *blob, size_t len)
{
    migfx_faulty *f = ctx;
    if (fire(f, MIGFX_OP_STATE))
        return vmt_error_set(VMT_EIO, "injected failure of state");
    return f->inner.ops->state(f->inner.ctx, blob, len);
}

static int f_commit(void *ctx)
{
    migfx_faulty *f = ctx;
    if (fire(f, MIGFX_OP_COMMIT))
        return vmt_error_set(VMT_EIO, "injected failure of commit");
    return f->inner.ops->commit(f->inner.ctx);
}

static void f_abort(void *ctx)
{
    migfx_faulty *f = ctx;
    f->aborts++;
    f->inner.ops->abort(f->inner.ctx);
}

static const vmt_sink_ops faulty_ops = {
    .begin = f_begin,
    .pages = f_pages,
    .state = f_state,
    .commit = f_commit,
    .abort = f_abort,
};

vmt_sink migfx_faulty_interpose(void *ctx, vmt_sink inner)
{
    migfx_faulty *f = ctx;
    f->inner = inner;
    f->ops = faulty_ops;
    f->ops.flags = inner.ops->flags;
    return (vmt_sink){.ops = &f->ops, .ctx = f};
}

int migfx_incoming(fx_guest *g)
{
    pthread_condattr_t ca;
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cond, &ca);
    pthread_condattr_destroy(&ca);
    return vmt_console_buf_new(&g->con) == 0 ? 0 : -1;
}

void migfx_incoming_config(fx_guest *g, vmt_vm_config *cfg)
{
    vmt_vm_config_init(cfg);
    cfg->console = vmt_console_buf_sink;
    cfg->console_ctx = g->con;
}
