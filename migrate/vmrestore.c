/*
 * VMs from snapshots: create the VM from the record's config, fill its RAM
 * through snapshot/ restore (eager or lazy), set the VM and vCPU state from
 * the state blob.  The VM is left not started.
 */
#include <stdlib.h>
#include <string.h>

#include "migrate_internal.h"
#include "vmtree/proto.h"

int vmt_vm_from_snapshot(vmt_kvm *kvm, vmt_store *s, const vmt_id *snap,
                         const vmt_vm_config *base, const vmt_restore_opts *ro, vmt_vm **vm,
                         vmt_restore **restore, vmt_snap_record *record)
{
    vmt_restore_opts eager = {.mode = VMT_RESTORE_EAGER};
    *vm = NULL;
    if (restore)
        *restore = NULL;
    if (!ro)
        ro = &eager;
    if (!restore && ro->mode != VMT_RESTORE_EAGER)
        return vmt_error_set(VMT_EINVAL, "a lazy restore needs somewhere to return its handle");
    vmt_snap_record *r = malloc(sizeof(*r));
    if (!r)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    vmt_vm *v = NULL;
    vmt_restore *rs = NULL;
    int rc = vmt_snap_record_read(s, snap, r);
    if (rc == 0)
        rc = mig_vm_create(kvm, r, base, &v);
    if (rc == 0) {
        uint64_t size;
        uint8_t *ram = vmt_vm_ram(v, &size);
        vmt_restore_opts o = *ro;
        o.ram_huge = vmt_vm_ram_huge(v);
        rc = vmt_restore_open(&rs, s, &r->map_root, ram, vmt_vm_ram_fd(v), size, &o);
        if (rc)
            vmt_error_wrap(rc, "restoring guest RAM");
    }
    if (rc == 0)
        rc = mig_state_apply_record(v, s, r);
    if (rc) {
        vmt_vm_destroy(v); /* before the restore: a lazy one serves its RAM */
        vmt_restore_free(rs);
    } else {
        *vm = v;
        if (restore)
            *restore = rs;
        else
            vmt_restore_free(rs);
        if (record)
            *record = *r;
    }
    free(r);
    return rc;
}
