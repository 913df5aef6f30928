/*
 * The pre-copy engine (DESIGN.md §3, docs/precopy.md): rounds over the dirty
 * bitmap while the VM runs, a policy callback deciding when to stop, then
 * stop-and-copy.  Mechanism only: it never decides when to stop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmtree/migrate.h"
#include "vmtree/proto.h"

#define DEFAULT_BATCH 256u
#define MAX_BATCH 65536u

/* One run of the engine. */
typedef struct engine {
    vmt_vm *vm;
    uint64_t *pending;
    uint64_t npages, nwords;
    uint8_t *ram;
    const vmt_sink_ops *ops;
    void *sink;
    const vmt_precopy_opts *o;
    vmt_precopy_stats *st;
    size_t batch;
    uint64_t *pfns;          /* the batch being filled */
    const uint8_t **data;
    size_t n;
    uint64_t round_sent;     /* pages the sink accepted this round */
    uint64_t remaining;      /* pages of this round not yet accepted */
    uint64_t bytes_mark;     /* sink->bytes at the round's start */
    bool was_paused, paused_by_us;
    bool begun;              /* begin was called: abort is owed */
    vmt_precopy_info info;   /* what begin was told */
    uint64_t *tmp;           /* one sync, when o->dirtied is kept */
} engine;

/* Syncs the dirty log into pending (and into o->dirtied when kept). */
static int engine_sync(engine *e, uint64_t *ndirty)
{
    if (!e->o->dirtied)
        return vmt_dirty_sync(e->vm, e->pending, e->nwords * 64, ndirty);
    memset(e->tmp, 0, e->nwords * sizeof(uint64_t));
    int rc = vmt_dirty_sync(e->vm, e->tmp, e->nwords * 64, ndirty);
    for (uint64_t w = 0; rc == 0 && w < e->nwords; w++) {
        e->pending[w] |= e->tmp[w];
        e->o->dirtied[w] |= e->tmp[w];
    }
    return rc;
}

static uint64_t count_bits(const uint64_t *bm, uint64_t nwords)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < nwords; i++)
        n += (uint64_t)__builtin_popcountll(bm[i]);
    return n;
}

/* Hands the batch to the sink; its pages leave `pending` only once accepted. */
static int flush(engine *e, unsigned round)
{
    if (e->n == 0)
        return 0;
    int rc = e->ops->pages(e->sink, round, e->pfns, e->data, e->n);
    if (rc)
        return vmt_error_wrap(rc, "round %u: sink refused %zu pages", round, e->n);
    for (size_t i = 0; i < e->n; i++)
        e->pending[e->pfns[i] / 64] &= ~(1ull << (e->pfns[i] % 64));
    e->round_sent += e->n;
    e->st->pages_sent += e->n;
    e->remaining -= e->n;
    e->n = 0;
    if (e->o->progress)
        e->o->progress(e->o->progress_ctx, round, e->remaining, e->st->pages_sent);
    return 0;
}

/* Sends every page set in `pending`, in pfn order, batch by batch. */
static int send_round(engine *e, unsigned round)
{
    e->round_sent = 0;
    e->remaining = count_bits(e->pending, e->nwords);
    for (uint64_t i = 0; i < e->nwords; i++) {
        uint64_t w = e->pending[i];
        while (w) {
            uint64_t pfn = i * 64 + (uint64_t)__builtin_ctzll(w);
            w &= w - 1;
            if (pfn >= e->npages) { /* stray bits past RAM: not pages */
                e->pending[i] &= ~(1ull << (pfn % 64));
                e->remaining--;
                continue;
            }
            e->pfns[e->n] = pfn;
            e->data[e->n] = e->ram + pfn * VMT_PAGE_SIZE;
            if (++e->n == e->batch) {
                int rc = flush(e, round);
                if (rc)
                    return rc;
            }
        }
    }
    return flush(e, round);
}

static uint64_t sink_bytes(const engine *e)
{
    return e->ops->bytes ? e->ops->bytes(e->sink) : e->st->pages_sent * VMT_PAGE_SIZE;
}

/* The config the sink's begin is told: the caller's, checked, or read from
 * the VM.  KVM state is readable only while the VM is paused, so a running
 * VM is paused for that one call. */
static int probe_info(engine *e, vmt_precopy_info *info)
{
    const vmt_precopy_info *known = e->o->info;
    if (known) {
        uint64_t size;
        vmt_vm_ram(e->vm, &size);
        if (known->mem_size != size || known->vcpus != vmt_vm_vcpus(e->vm) ||
            known->npages != e->npages)
            return vmt_error_set(VMT_EINVAL, "pre-copy: the given config (%llu MiB, %u vCPUs) "
                                             "is not the VM's",
                                 (unsigned long long)(known->mem_size >> 20), known->vcpus);
        *info = *known;
        return 0;
    }
    vmt_vm_state *vs = malloc(sizeof(*vs));
    if (!vs)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    if (!e->was_paused)
        vmt_vm_pause(e->vm);
    int rc = vmt_vm_get_state(e->vm, vs);
    if (!e->was_paused)
        vmt_vm_resume(e->vm);
    if (rc == 0) {
        info->mem_size = vs->mem_size;
        info->vcpus = vs->nr_vcpus;
        info->irqchip = vs->has_irqchip != 0;
        info->npages = e->npages;
    }
    free(vs);
    return rc;
}

/* Reads the paused VM's whole state and encodes the blob.  The state must
 * agree with the config the sink was told at begin. */
static int get_state_blob(vmt_vm *vm, bool irqchip, uint8_t **blob, size_t *len)
{
    unsigned n = vmt_vm_vcpus(vm);
    vmt_vm_state *vs = malloc(sizeof(*vs));
    vmt_vcpu_state *cpus = vmt_callocn(n, sizeof(*cpus));
    int rc = vs && cpus ? 0 : vmt_error_set(VMT_ENOMEM, "out of memory for the VM state");
    if (rc == 0)
        rc = vmt_vm_get_state(vm, vs);
    if (rc == 0 && (vs->has_irqchip != 0) != irqchip)
        rc = vmt_error_set(VMT_EINVAL, "pre-copy: the sink was told irqchip %s, the VM has %s",
                           irqchip ? "on" : "off", irqchip ? "none" : "one");
    for (unsigned i = 0; rc == 0 && i < n; i++)
        rc = vmt_vcpu_get_state(vm, i, &cpus[i]);
    if (rc == 0)
        rc = vmt_state_encode(vs, cpus, n, blob, len);
    free(vs);
    free(cpus);
    return rc;
}

/* One round while the VM runs: send, then collect what was dirtied meanwhile. */
static int live_round(engine *e, unsigned round, vmt_round_stats *r)
{
    uint64_t t0 = vmt_now_ns();
    e->bytes_mark = sink_bytes(e);
    int rc = send_round(e, round);
    if (rc)
        return rc;
    uint64_t dirty = 0;
    if ((rc = engine_sync(e, &dirty)) != 0)
        return vmt_error_wrap(rc, "round %u: dirty sync", round);
    uint64_t ns = vmt_now_ns() - t0;
    double secs = ns ? (double)ns / 1e9 : 1e-9;
    *r = (vmt_round_stats){
        .round = round,
        .pages_sent = e->round_sent,
        .bytes = sink_bytes(e) - e->bytes_mark,
        .ns = ns,
        .dirty_pages = dirty,
    };
    r->bandwidth = (double)r->bytes / secs;
    r->dirty_rate = (double)dirty / secs;
    e->st->rounds++;
    return 0;
}

/* Pause, send the last dirty set and the state, commit. */
static int stop_and_copy(engine *e, unsigned round)
{
    uint64_t t0 = vmt_now_ns();
    int rc = vmt_vm_pause(e->vm);
    if (rc)
        return rc;
    e->paused_by_us = !e->was_paused;
    e->st->rounds++;
    uint64_t tp = vmt_now_ns(), last = 0;
    if ((rc = engine_sync(e, &last)) != 0)
        return vmt_error_wrap(rc, "final round: dirty sync");
    uint64_t ts = vmt_now_ns();
    if ((rc = send_round(e, round)) != 0)
        return rc;
    uint64_t tr = vmt_now_ns();
    uint8_t *blob = NULL;
    size_t len = 0;
    if ((rc = get_state_blob(e->vm, e->info.irqchip, &blob, &len)) != 0)
        return vmt_error_wrap(rc, "reading the VM state");
    rc = e->ops->state(e->sink, blob, len);
    free(blob);
    if (rc)
        return vmt_error_wrap(rc, "sink refused the state blob");
    e->st->state_bytes = len;
    if (e->ops->flags & VMT_SINK_RESUME_BEFORE_COMMIT) {
        if (e->paused_by_us)
            vmt_vm_resume(e->vm);
        e->paused_by_us = false;
        e->st->pause_ns = vmt_now_ns() - t0;
    }
    uint64_t tc = vmt_now_ns();
    rc = e->ops->commit(e->sink);
    e->st->commit_ns = vmt_now_ns() - tc;
    vmt_debug("pre-copy: paused in %.2f ms, sync %.2f ms, last round %llu pages %.2f ms, "
              "state %.2f ms, commit %.2f ms",
              (tp - t0) / 1e6, (ts - tp) / 1e6, (unsigned long long)last, (tr - ts) / 1e6,
              (tc - tr) / 1e6, e->st->commit_ns / 1e6);
    if (rc == VMT_EINDOUBT) {
        /* The peer may run the VM now: it must never run here as well. */
        e->paused_by_us = false;
        e->st->pause_ns = vmt_now_ns() - t0;
    }
    if (rc)
        return vmt_error_wrap(rc, "sink commit");
    if (!(e->ops->flags & VMT_SINK_RESUME_BEFORE_COMMIT))
        e->st->pause_ns = vmt_now_ns() - t0;
    return 0;
}

/* Rounds while the VM runs, as long as the policy says so. */
static int run_rounds(engine *e)
{
    int rc = engine_sync(e, NULL);
    if (rc)
        return vmt_error_wrap(rc, "round 0: dirty sync");
    for (unsigned round = 0;; round++) {
        vmt_round_stats r;
        if ((rc = live_round(e, round, &r)) != 0)
            return rc;
        vmt_policy_decision d = e->o->policy(e->o->policy_ctx, r);
        if (d == VMT_POLICY_ABORT)
            return vmt_error_set(VMT_ECANCELED, "the policy gave up after round %u (%llu pages "
                                                "dirty, %.0f pages/s)",
                                 round, (unsigned long long)r.dirty_pages, r.dirty_rate);
        if (d == VMT_POLICY_STOP_AND_COPY)
            return stop_and_copy(e, round + 1);
    }
}

static int check_args(vmt_vm *vm, const uint64_t *pending, const vmt_sink_ops *ops,
                      const vmt_precopy_opts *o)
{
    if (!vm || !pending || !ops || !o)
        return vmt_error_set(VMT_EINVAL, "pre-copy: vm, pending, sink ops and opts are required");
    if (!o->policy)
        return vmt_error_set(VMT_EINVAL, "pre-copy: a policy is required");
    if (!ops->begin || !ops->pages || !ops->state || !ops->commit || !ops->abort)
        return vmt_error_set(VMT_EINVAL, "pre-copy: the sink lacks an operation");
    if (o->batch_pages > MAX_BATCH)
        return vmt_error_set(VMT_ERANGE, "pre-copy: batch of %zu pages exceeds %u",
                             o->batch_pages, MAX_BATCH);
    if (!vmt_dirty_active(vm))
        return vmt_error_set(VMT_EINVAL, "pre-copy: dirty logging is not on");
    return 0;
}

/* Ends a failed copy: abort the sink and resume the VM if we paused it,
 * keeping the first error's message. */
static int fail(engine *e, int rc)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", vmt_error_last());
    if (e->begun)
        e->ops->abort(e->sink);
    if (e->paused_by_us)
        vmt_vm_resume(e->vm);
    e->paused_by_us = false;
    return vmt_error_set(rc, "%s", msg);
}

int vmt_precopy_run(vmt_vm *vm, uint64_t *pending, const vmt_sink_ops *ops, void *sink,
                    const vmt_precopy_opts *o, vmt_precopy_stats *stats)
{
    vmt_precopy_stats local;
    vmt_precopy_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof(*st));
    int rc = check_args(vm, pending, ops, o);
    if (rc)
        return rc;
    uint64_t t0 = vmt_now_ns();
    engine e = {.vm = vm, .pending = pending, .ops = ops, .sink = sink, .o = o, .st = st};
    e.npages = vmt_vm_ram_pages(vm);
    e.nwords = VMT_DIV_ROUND_UP(e.npages, 64);
    e.ram = vmt_vm_ram(vm, NULL);
    e.batch = o->batch_pages ? o->batch_pages : DEFAULT_BATCH;
    e.was_paused = vmt_vm_is_paused(vm);
    e.pfns = vmt_mallocn(e.batch, sizeof(*e.pfns));
    e.data = vmt_mallocn(e.batch, sizeof(*e.data));
    if (o->dirtied)
        e.tmp = vmt_callocn((size_t)e.nwords, sizeof(uint64_t));
    if (!e.pfns || !e.data || (o->dirtied && !e.tmp))
        rc = vmt_error_set(VMT_ENOMEM, "out of memory for a batch of %zu pages", e.batch);
    else if ((rc = probe_info(&e, &e.info)) == 0) {
        e.begun = true;
        if ((rc = ops->begin(sink, &e.info)) != 0)
            rc = vmt_error_wrap(rc, "sink begin");
    }
    if (rc == 0)
        rc = run_rounds(&e);
    if (rc)
        rc = fail(&e, rc);
    free(e.pfns);
    free(e.data);
    free(e.tmp);
    st->total_ns = vmt_now_ns() - t0;
    return rc;
}

vmt_policy_decision vmt_simple_policy_fn(void *ctx, vmt_round_stats r)
{
    const vmt_simple_policy *p = ctx;
    if (!p || r.dirty_pages <= p->pause_pages || r.round + 1 >= p->max_rounds)
        return VMT_POLICY_STOP_AND_COPY;
    return VMT_POLICY_CONTINUE;
}
