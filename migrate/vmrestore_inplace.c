/*
 * Rolling a paused VM back to a snapshot in place: no new VM, its own RAM
 * memfd refilled by snapshot/ restore (which punches holes first), the VM
 * and vCPU state set from the state blob, and the dirty log emptied so that
 * "dirty since HEAD" starts again from the snapshot.
 *
 * Dirty log: the restore writes RAM from the host (eager: memcpy through
 * the mapping; lazy: UFFDIO_COPY / UFFDIO_ZEROPAGE from the fault and
 * prefetch threads).  KVM logs only guest writes through its own mappings
 * and the VMM logs only vmt_vm_write_ram / vmt_vm_mark_dirty, so none of
 * those fills is ever reported; the one sync below drops what the old run
 * had left in the log (and what the hole punch might have provoked).
 */
#include <stdlib.h>
#include <string.h>

#include "migrate_internal.h"
#include "vmtree/proto.h"

/* VMT_EINVAL unless the record's config is the VM's. */
static int check_config(vmt_vm *vm, const vmt_snap_record *r, const vmt_vm_state *snap_vst)
{
    uint64_t size = 0;
    (void)vmt_vm_ram(vm, &size);
    if (r->mem_size != size || r->vcpus != vmt_vm_vcpus(vm))
        return vmt_error_set(VMT_EINVAL,
                             "the snapshot's VM has %llu MiB and %u vCPUs, this one %llu MiB "
                             "and %u",
                             (unsigned long long)(r->mem_size >> 20), r->vcpus,
                             (unsigned long long)(size >> 20), vmt_vm_vcpus(vm));
    /* The irqchip is not in the public config accessors: read the VM-wide
     * state (a few ioctls on a paused VM). */
    vmt_vm_state *cur = malloc(sizeof(*cur));
    if (!cur)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    int rc = vmt_vm_get_state(vm, cur);
    if (rc == 0 && (!cur->has_irqchip != !r->irqchip || !cur->has_irqchip != !snap_vst->has_irqchip))
        rc = vmt_error_set(VMT_EINVAL, "the snapshot's VM %s an irqchip, this one %s",
                           r->irqchip ? "has" : "has no", cur->has_irqchip ? "has" : "has none");
    free(cur);
    return rc;
}

/* Drops everything in the dirty log (when logging is on). */
static int clear_dirty(vmt_vm *vm)
{
    if (!vmt_dirty_active(vm))
        return 0;
    uint64_t pages = vmt_vm_ram_pages(vm);
    uint64_t *bm = vmt_callocn(VMT_DIV_ROUND_UP(pages, 64), sizeof(uint64_t));
    if (!bm)
        return vmt_error_set(VMT_ENOMEM, "out of memory for a dirty bitmap");
    int rc = vmt_dirty_sync(vm, bm, pages, NULL);
    free(bm);
    return rc ? vmt_error_wrap(rc, "clearing the dirty log") : 0;
}

int vmt_vm_restore_in_place(vmt_vm *vm, vmt_store *s, const vmt_id *snap,
                            const vmt_restore_opts *ro, vmt_restore **old,
                            vmt_restore **restore, vmt_snap_record *record,
                            vmt_inplace_stats *stats)
{
    vmt_restore_opts eager = {.mode = VMT_RESTORE_EAGER};
    vmt_inplace_stats st;
    memset(&st, 0, sizeof(st));
    uint64_t t = vmt_now_ns(), t0 = t;
    if (restore)
        *restore = NULL;
    if (!ro)
        ro = &eager;
    if (!restore && ro->mode != VMT_RESTORE_EAGER)
        return vmt_error_set(VMT_EINVAL, "a lazy restore needs somewhere to return its handle");
    vmt_snap_record *r = malloc(sizeof(*r));
    if (!r)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    vmt_vm_state *vst = NULL;
    vmt_vcpu_state *cpus = NULL;
    vmt_restore *rs = NULL;
    int rc = vmt_snap_record_read(s, snap, r);
    if (rc == 0)
        rc = mig_state_read(s, r, &vst, &cpus);
    uint64_t now = vmt_now_ns();
    st.read_ns = now - t;
    t = now;
    if (rc == 0)
        rc = check_config(vm, r, vst);
    now = vmt_now_ns();
    st.check_ns = now - t;
    t = now;
    if (rc)
        goto out; /* the VM is untouched */
    /* Committed: the RAM is replaced from here on. */
    st.ram_replaced = true;
    if (old && *old) {
        vmt_restore_free(*old);
        *old = NULL;
    }
    now = vmt_now_ns();
    st.old_ns = now - t;
    t = now;
    uint64_t size;
    uint8_t *ram = vmt_vm_ram(vm, &size);
    vmt_restore_opts o = *ro;
    o.ram_huge = vmt_vm_ram_huge(vm);
    rc = vmt_restore_open(&rs, s, &r->map_root, ram, vmt_vm_ram_fd(vm), size, &o);
    if (rc)
        vmt_error_wrap(rc, "restoring guest RAM in place");
    now = vmt_now_ns();
    st.ram_ns = now - t;
    t = now;
    if (rc == 0)
        rc = mig_state_set(vm, vst, cpus, r->vcpus);
    now = vmt_now_ns();
    st.state_ns = now - t;
    t = now;
    if (rc == 0)
        rc = clear_dirty(vm);
    now = vmt_now_ns();
    st.dirty_ns = now - t;
    if (rc == 0) {
        if (restore)
            *restore = rs;
        else
            vmt_restore_free(rs);
        rs = NULL;
        if (record)
            *record = *r;
    }
    /* On a failure past the checks the RAM is lost: rs is freed (a lazy
     * one stops serving faults) and the caller must not resume the VM. */
    vmt_restore_free(rs);
out:
    st.total_ns = vmt_now_ns() - t0;
    vmt_debug("in-place rollback: read %llu us, check %llu us, old restore %llu us, ram %llu us, "
              "state %llu us, dirty %llu us, total %llu us",
              (unsigned long long)(st.read_ns / 1000), (unsigned long long)(st.check_ns / 1000),
              (unsigned long long)(st.old_ns / 1000),
              (unsigned long long)(st.ram_ns / 1000), (unsigned long long)(st.state_ns / 1000),
              (unsigned long long)(st.dirty_ns / 1000), (unsigned long long)(st.total_ns / 1000));
    if (stats)
        *stats = st;
    free(vst);
    free(cpus);
    free(r);
    return rc;
}

/* ---- partial: only the pages that differ ---------------------------------- */

/* Gives the pages set in bm back to the VM's dirty log (a refused partial
 * rollback must leave "dirty since head" as it found it). */
static void give_back_dirty(vmt_vm *vm, const uint64_t *bm, uint64_t npages)
{
    for (uint64_t w = 0; w < VMT_DIV_ROUND_UP(npages, 64); w++) {
        uint64_t bits = bm[w];
        while (bits) { /* one call per run of set bits */
            unsigned b = (unsigned)__builtin_ctzll(bits);
            uint64_t x = bits >> b;
            unsigned run = ~x ? (unsigned)__builtin_ctzll(~x) : 64u - b;
            vmt_vm_mark_dirty(vm, w * 64 + b, run);
            bits &= run + b >= 64 ? 0 : ~((1ull << (run + b)) - 1);
        }
    }
}

/* head's map root; VMT_EINVAL unless head is of a VM with `size` bytes. */
static int head_root(vmt_store *s, const vmt_id *head, uint64_t size, vmt_id *root)
{
    vmt_snap_record *h = malloc(sizeof(*h));
    int rc = h ? vmt_snap_record_read(s, head, h) : VMT_ENOMEM;
    if (rc == 0 && h->mem_size != size)
        rc = vmt_error_set(VMT_EINVAL, "the VM's head is of a %llu MiB VM, this one has %llu MiB",
                           (unsigned long long)(h->mem_size >> 20),
                           (unsigned long long)(size >> 20));
    if (rc == 0)
        *root = h->map_root;
    free(h);
    return rc;
}

/* What a partial rollback works on. */
typedef struct partial_job {
    vmt_vm *vm;
    vmt_store *s;
    const vmt_partial_opts *o;
    vmt_snap_record *r;   /* snap's */
    vmt_vm_state *vst;
    vmt_vcpu_state *cpus;
    vmt_id head_root;
    uint64_t *dirty;      /* since head: the log and o->since_head */
    vmt_inplace_stats *st;
    vmt_restore_partial_stats *pst;
} partial_job;

/* Everything that may refuse, with the VM untouched. */
static int partial_check(partial_job *j, const vmt_id *head, const vmt_id *snap)
{
    uint64_t t = vmt_now_ns(), size = 0;
    (void)vmt_vm_ram(j->vm, &size);
    if (!vmt_dirty_active(j->vm))
        return vmt_error_set(VMT_EINVAL, "dirty logging is off: the pages written since the "
                                         "head are unknown");
    int rc = vmt_snap_record_read(j->s, snap, j->r);
    if (rc == 0)
        rc = mig_state_read(j->s, j->r, &j->vst, &j->cpus);
    if (rc == 0)
        rc = head_root(j->s, head, size, &j->head_root);
    uint64_t now = vmt_now_ns();
    j->st->read_ns = now - t;
    if (rc == 0)
        rc = check_config(j->vm, j->r, j->vst);
    j->st->check_ns = vmt_now_ns() - now;
    return rc;
}

/* The dirty set: o->since_head, then the log (emptied by the sync). */
static int partial_dirty(partial_job *j)
{
    uint64_t npages = vmt_vm_ram_pages(j->vm);
    j->dirty = vmt_callocn(VMT_DIV_ROUND_UP(npages, 64), sizeof(uint64_t));
    if (!j->dirty)
        return vmt_error_set(VMT_ENOMEM, "out of memory for a dirty bitmap");
    if (j->o && j->o->since_head)
        memcpy(j->dirty, j->o->since_head, VMT_DIV_ROUND_UP(npages, 64) * sizeof(uint64_t));
    int rc = vmt_dirty_sync(j->vm, j->dirty, npages, NULL);
    if (rc) {
        give_back_dirty(j->vm, j->dirty, npages); /* whatever the sync took */
        return vmt_error_wrap(rc, "reading the dirty log");
    }
    return 0;
}

/* Rewrites the differing pages, then the state; the dirty log is emptied. */
static int partial_apply(partial_job *j)
{
    uint64_t size, t = vmt_now_ns();
    uint8_t *ram = vmt_vm_ram(j->vm, &size);
    int rc = vmt_restore_partial(j->s, &j->head_root, &j->r->map_root, j->dirty, ram,
                                 vmt_vm_ram_fd(j->vm), size, j->o ? j->o->max_pages : 0, j->pst);
    uint64_t now = vmt_now_ns();
    j->st->ram_ns = now - t;
    if (rc && !j->pst->ram_touched) {
        give_back_dirty(j->vm, j->dirty, vmt_vm_ram_pages(j->vm));
        return rc; /* refused: untouched */
    }
    j->st->ram_replaced = true;
    if (rc)
        return vmt_error_wrap(rc, "restoring guest RAM in place");
    rc = mig_state_set(j->vm, j->vst, j->cpus, j->r->vcpus);
    t = vmt_now_ns();
    j->st->state_ns = t - now;
    /* The sync above emptied the log with the VM paused, and pwrite is a
     * host write; this one drops what punching holes might have logged. */
    if (rc == 0)
        rc = clear_dirty(j->vm);
    j->st->dirty_ns = vmt_now_ns() - t;
    return rc;
}

int vmt_vm_restore_partial(vmt_vm *vm, vmt_store *s, const vmt_id *head, const vmt_id *snap,
                           const vmt_partial_opts *o, vmt_snap_record *record,
                           vmt_inplace_stats *stats, vmt_restore_partial_stats *pst)
{
    vmt_inplace_stats st;
    vmt_restore_partial_stats pst_local;
    memset(&st, 0, sizeof(st));
    memset(&pst_local, 0, sizeof(pst_local));
    uint64_t t0 = vmt_now_ns();
    if (!vm || !s || !head || !snap)
        return vmt_error_set(VMT_EINVAL, "vmt_vm_restore_partial: NULL argument");
    partial_job j = {.vm = vm, .s = s, .o = o, .st = &st, .pst = pst ? pst : &pst_local};
    memset(j.pst, 0, sizeof(*j.pst));
    j.r = malloc(sizeof(*j.r));
    int rc = j.r ? partial_check(&j, head, snap) : vmt_error_set(VMT_ENOMEM, "out of memory");
    if (rc == 0)
        rc = partial_dirty(&j);
    if (rc == 0)
        rc = partial_apply(&j);
    if (rc == 0 && record)
        *record = *j.r;
    st.total_ns = vmt_now_ns() - t0;
    vmt_debug("partial rollback: read %llu us, check %llu us, ram %llu us (%llu pages: %llu "
              "differ, %llu dirty), state %llu us, dirty %llu us, total %llu us",
              (unsigned long long)(st.read_ns / 1000), (unsigned long long)(st.check_ns / 1000),
              (unsigned long long)(st.ram_ns / 1000),
              (unsigned long long)j.pst->pages_restored, (unsigned long long)j.pst->pages_diff,
              (unsigned long long)j.pst->pages_dirty, (unsigned long long)(st.state_ns / 1000),
              (unsigned long long)(st.dirty_ns / 1000), (unsigned long long)(st.total_ns / 1000));
    if (stats)
        *stats = st;
    free(j.dirty);
    free(j.vst);
    free(j.cpus);
    free(j.r);
    return rc;
}
