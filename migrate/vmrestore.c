/*
 * VMs from snapshots: create the VM from the record's config, fill its RAM
 * through snapshot/ restore (eager or lazy), set the VM and vCPU state from
 * the state blob.  The VM is left not started.
 */
#include <stdlib.h>
#include <string.h>

#include "migrate_internal.h"
#include "vmtree/proto.h"

/* Reads the state blob and sets it into the (not started) VM. */
static int set_state(vmt_vm *vm, vmt_store *s, const vmt_snap_record *r)
{
    void *blob = NULL;
    size_t len = 0;
    vmt_obj_type type;
    int rc = vmt_store_get(s, &r->state, &blob, &len, &type);
    if (rc)
        return vmt_error_wrap(rc, "reading the state blob");
    vmt_vm_state *vst = malloc(sizeof(*vst));
    vmt_vcpu_state *cpus = vmt_callocn(r->vcpus, sizeof(*cpus));
    unsigned n = 0;
    if (!vst || !cpus)
        rc = vmt_error_set(VMT_ENOMEM, "out of memory for the VM state");
    else if (type != VMT_OBJ_BLOB)
        rc = vmt_error_set(VMT_ECORRUPT, "the snapshot's state object is not a blob");
    else if ((rc = vmt_state_decode(blob, len, vst, cpus, r->vcpus, &n)) != 0)
        rc = vmt_error_wrap(rc == VMT_ERANGE ? VMT_ECORRUPT : rc, "decoding the state blob");
    else if (n != r->vcpus)
        rc = vmt_error_set(VMT_ECORRUPT, "the state blob has %u vCPUs, the record %u", n,
                           r->vcpus);
    if (rc == 0)
        rc = vmt_vm_set_state(vm, vst);
    for (unsigned i = 0; rc == 0 && i < n; i++)
        rc = vmt_vcpu_set_state(vm, i, &cpus[i]);
    free(blob);
    free(vst);
    free(cpus);
    return rc;
}

static int create_vm(vmt_kvm *kvm, const vmt_snap_record *r, const vmt_vm_config *base,
                     vmt_vm **vm)
{
    vmt_vm_config cfg;
    if (base)
        cfg = *base;
    else
        vmt_vm_config_init(&cfg);
    cfg.mem_size = r->mem_size;
    cfg.vcpus = r->vcpus;
    cfg.irqchip = r->irqchip;
    int rc = vmt_vm_create(vm, kvm, &cfg);
    return rc ? vmt_error_wrap(rc, "creating the VM") : 0;
}

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
        rc = create_vm(kvm, r, base, &v);
    if (rc == 0) {
        uint64_t size;
        uint8_t *ram = vmt_vm_ram(v, &size);
        rc = vmt_restore_open(&rs, s, &r->map_root, ram, vmt_vm_ram_fd(v), size, ro);
        if (rc)
            vmt_error_wrap(rc, "restoring guest RAM");
    }
    if (rc == 0)
        rc = set_state(v, s, r);
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
