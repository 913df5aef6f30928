/*
 * The VM and vCPU state of a snapshot or a migration: decoding the state
 * blob (proto/) with its checks, and setting it into a VM that is not
 * running.  One place for what vmrestore.c, vmrestore_inplace.c,
 * golden_lazy.c and mig_dest.c all do.
 */
#include <stdlib.h>

#include "migrate_internal.h"
#include "vmtree/proto.h"

int mig_state_decode(const void *blob, size_t len, unsigned vcpus, vmt_vm_state **vst,
                     vmt_vcpu_state **cpus)
{
    vmt_vm_state *v = malloc(sizeof(*v));
    vmt_vcpu_state *c = vmt_callocn(vcpus ? vcpus : 1, sizeof(*c));
    unsigned n = 0;
    int rc = 0;
    *vst = NULL;
    *cpus = NULL;
    if (!v || !c)
        rc = vmt_error_set(VMT_ENOMEM, "out of memory for the VM state");
    else if ((rc = vmt_state_decode(blob, len, v, c, vcpus, &n)) != 0)
        rc = vmt_error_wrap(rc == VMT_ERANGE ? VMT_ECORRUPT : rc, "decoding the state blob");
    else if (n != vcpus)
        rc = vmt_error_set(VMT_ECORRUPT, "the state blob has %u vCPUs, the VM %u", n, vcpus);
    if (rc) {
        free(v);
        free(c);
        return rc;
    }
    *vst = v;
    *cpus = c;
    return 0;
}

int mig_state_read(vmt_store *s, const vmt_snap_record *r, vmt_vm_state **vst,
                   vmt_vcpu_state **cpus)
{
    void *blob = NULL;
    size_t len = 0;
    vmt_obj_type type;
    *vst = NULL;
    *cpus = NULL;
    int rc = vmt_store_get(s, &r->state, &blob, &len, &type);
    if (rc)
        return vmt_error_wrap(rc, "reading the state blob");
    rc = type == VMT_OBJ_BLOB
             ? mig_state_decode(blob, len, r->vcpus, vst, cpus)
             : vmt_error_set(VMT_ECORRUPT, "the snapshot's state object is not a blob");
    free(blob);
    return rc;
}

int mig_state_set(vmt_vm *vm, const vmt_vm_state *vst, const vmt_vcpu_state *cpus, unsigned n)
{
    int rc = vmt_vm_set_state(vm, vst);
    for (unsigned i = 0; rc == 0 && i < n; i++)
        rc = vmt_vcpu_set_state(vm, i, &cpus[i]);
    return rc;
}

int mig_state_apply_blob(vmt_vm *vm, unsigned vcpus, const void *blob, size_t len)
{
    vmt_vm_state *vst;
    vmt_vcpu_state *cpus;
    int rc = mig_state_decode(blob, len, vcpus, &vst, &cpus);
    if (rc == 0)
        rc = mig_state_set(vm, vst, cpus, vcpus);
    free(vst);
    free(cpus);
    return rc;
}

int mig_state_apply_record(vmt_vm *vm, vmt_store *s, const vmt_snap_record *r)
{
    vmt_vm_state *vst;
    vmt_vcpu_state *cpus;
    int rc = mig_state_read(s, r, &vst, &cpus);
    if (rc == 0)
        rc = mig_state_set(vm, vst, cpus, r->vcpus);
    free(vst);
    free(cpus);
    return rc;
}

int mig_vm_create(vmt_kvm *kvm, const vmt_snap_record *r, const vmt_vm_config *base,
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
