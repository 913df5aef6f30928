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

/* The decoded state blob of record r (caller frees vst and cpus). */
static int read_state(vmt_store *s, const vmt_snap_record *r, vmt_vm_state **vst,
                      vmt_vcpu_state **cpus)
{
    void *blob = NULL;
    size_t len = 0;
    vmt_obj_type type;
    unsigned n = 0;
    *vst = NULL;
    *cpus = NULL;
    int rc = vmt_store_get(s, &r->state, &blob, &len, &type);
    if (rc)
        return vmt_error_wrap(rc, "reading the state blob");
    vmt_vm_state *v = malloc(sizeof(*v));
    vmt_vcpu_state *c = vmt_callocn(r->vcpus ? r->vcpus : 1, sizeof(*c));
    if (!v || !c)
        rc = vmt_error_set(VMT_ENOMEM, "out of memory for the VM state");
    else if (type != VMT_OBJ_BLOB)
        rc = vmt_error_set(VMT_ECORRUPT, "the snapshot's state object is not a blob");
    else if ((rc = vmt_state_decode(blob, len, v, c, r->vcpus, &n)) != 0)
        rc = vmt_error_wrap(rc == VMT_ERANGE ? VMT_ECORRUPT : rc, "decoding the state blob");
    else if (n != r->vcpus)
        rc = vmt_error_set(VMT_ECORRUPT, "the state blob has %u vCPUs, the record %u", n,
                           r->vcpus);
    free(blob);
    if (rc) {
        free(v);
        free(c);
        return rc;
    }
    *vst = v;
    *cpus = c;
    return 0;
}

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
        rc = read_state(s, r, &vst, &cpus);
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
    rc = vmt_restore_open(&rs, s, &r->map_root, ram, vmt_vm_ram_fd(vm), size, ro);
    if (rc)
        vmt_error_wrap(rc, "restoring guest RAM in place");
    now = vmt_now_ns();
    st.ram_ns = now - t;
    t = now;
    if (rc == 0)
        rc = vmt_vm_set_state(vm, vst);
    for (unsigned i = 0; rc == 0 && i < r->vcpus; i++)
        rc = vmt_vcpu_set_state(vm, i, &cpus[i]);
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
