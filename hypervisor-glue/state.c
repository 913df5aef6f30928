/* The whole VM and vCPU state as plain structs: get and set. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm_internal.h"

#define IOCTL_OR_FAIL(fd, req, arg, what, idx)                                                     \
    do {                                                                                           \
        if (ioctl((fd), (req), (arg)) < 0)                                                         \
            return vmt_error_errno(VMT_EIO, errno, "%s on vCPU %u", (what), (idx));               \
    } while (0)

int vmm_vcpu_get_regs(vmm_vcpu *vc, struct kvm_regs *regs, struct kvm_sregs *sregs)
{
    IOCTL_OR_FAIL(vc->fd, KVM_GET_REGS, regs, "KVM_GET_REGS", vc->idx);
    IOCTL_OR_FAIL(vc->fd, KVM_GET_SREGS, sregs, "KVM_GET_SREGS", vc->idx);
    return 0;
}

static int check_stopped(vmt_vm *vm, unsigned idx)
{
    if (idx >= vm->nvcpus)
        return vmt_error_set(VMT_EINVAL, "vCPU %u does not exist (the VM has %u)", idx,
                             vm->nvcpus);
    pthread_mutex_lock(&vm->lock);
    bool ok = !vm->running || vm->nparked + vm->nfinished == vm->nvcpus;
    pthread_mutex_unlock(&vm->lock);
    if (!ok)
        return vmt_error_set(VMT_EBUSY, "pause the VM before reading or writing its state");
    return 0;
}

static int get_xsave(vmm_vcpu *vc, vmt_vcpu_state *st)
{
    uint32_t size = vc->vm->kvm->caps.xsave_size;
    unsigned long req = size > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
    memset(st->xsave, 0, sizeof(st->xsave));
    IOCTL_OR_FAIL(vc->fd, req, st->xsave, "KVM_GET_XSAVE", vc->idx);
    st->xsave_size = size;
    return 0;
}

static int get_msrs(vmm_vcpu *vc, vmt_vcpu_state *st)
{
    const uint32_t *list;
    uint32_t count;
    int rc = vmm_kvm_msr_list(vc->vm->kvm, vc->vm->cfg.irqchip, &list, &count);
    if (rc)
        return rc;
    vmm_msr_buf buf;
    struct kvm_msrs *m = vmm_msrs(&buf);
    memset(&buf, 0, sizeof(buf));
    m->nmsrs = count;
    for (uint32_t i = 0; i < count; i++)
        m->entries[i].index = list[i];
    int n = ioctl(vc->fd, KVM_GET_MSRS, m);
    if (n < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_GET_MSRS on vCPU %u", vc->idx);
    if ((uint32_t)n != count)
        return vmt_error_set(VMT_EIO, "KVM_GET_MSRS on vCPU %u stopped at MSR 0x%x", vc->idx,
                             m->entries[n].index);
    st->nr_msrs = (uint32_t)n;
    for (int i = 0; i < n; i++)
        st->msrs[i] = (vmt_msr){.index = m->entries[i].index, .data = m->entries[i].data};
    return 0;
}

int vmt_vcpu_get_state(vmt_vm *vm, unsigned idx, vmt_vcpu_state *st)
{
    int rc = check_stopped(vm, idx);
    if (rc)
        return rc;
    vmm_vcpu *vc = &vm->vcpus[idx];
    memset(st, 0, sizeof(*st));
    if ((rc = vmm_vcpu_get_regs(vc, &st->regs, &st->sregs)) != 0)
        return rc;
    IOCTL_OR_FAIL(vc->fd, KVM_GET_XCRS, &st->xcrs, "KVM_GET_XCRS", idx);
    IOCTL_OR_FAIL(vc->fd, KVM_GET_VCPU_EVENTS, &st->events, "KVM_GET_VCPU_EVENTS", idx);
    IOCTL_OR_FAIL(vc->fd, KVM_GET_MP_STATE, &st->mp_state, "KVM_GET_MP_STATE", idx);
    IOCTL_OR_FAIL(vc->fd, KVM_GET_DEBUGREGS, &st->debugregs, "KVM_GET_DEBUGREGS", idx);
    if (vm->cfg.irqchip) {
        IOCTL_OR_FAIL(vc->fd, KVM_GET_LAPIC, &st->lapic, "KVM_GET_LAPIC", idx);
        st->has_lapic = 1;
    }
    if ((rc = get_xsave(vc, st)) != 0)
        return rc;
    return get_msrs(vc, st);
}

static int set_msrs(vmm_vcpu *vc, const vmt_vcpu_state *st)
{
    vmm_msr_buf buf;
    struct kvm_msrs *m = vmm_msrs(&buf);
    if (st->nr_msrs > VMT_MAX_MSRS)
        return vmt_error_set(VMT_ERANGE, "%u MSRs exceed the limit of %u", st->nr_msrs,
                             VMT_MAX_MSRS);
    memset(&buf, 0, sizeof(buf));
    m->nmsrs = st->nr_msrs;
    for (uint32_t i = 0; i < st->nr_msrs; i++)
        m->entries[i] = (struct kvm_msr_entry){.index = st->msrs[i].index,
                                               .data = st->msrs[i].data};
    int n = ioctl(vc->fd, KVM_SET_MSRS, m);
    if (n < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_SET_MSRS on vCPU %u", vc->idx);
    if ((uint32_t)n != st->nr_msrs)
        return vmt_error_set(VMT_EUNSUPPORTED, "KVM refused MSR 0x%x on vCPU %u",
                             m->entries[n].index, vc->idx);
    return 0;
}

int vmt_vcpu_set_state(vmt_vm *vm, unsigned idx, const vmt_vcpu_state *st)
{
    int rc = check_stopped(vm, idx);
    if (rc)
        return rc;
    vmm_vcpu *vc = &vm->vcpus[idx];
    if (st->has_lapic && !vm->cfg.irqchip)
        return vmt_error_set(VMT_EINVAL, "the state has a LAPIC but the VM has no irqchip");
    if (st->xsave_size > VMT_XSAVE_MAX || st->xsave_size < sizeof(struct kvm_xsave))
        return vmt_error_set(VMT_ERANGE, "XSAVE area of %u bytes is outside [%zu, %u]",
                             st->xsave_size, sizeof(struct kvm_xsave), VMT_XSAVE_MAX);
    /* The order KVM needs: sregs (EFER, CR*) before MSRs, LAPIC before events. */
    IOCTL_OR_FAIL(vc->fd, KVM_SET_REGS, &st->regs, "KVM_SET_REGS", idx);
    IOCTL_OR_FAIL(vc->fd, KVM_SET_XSAVE, st->xsave, "KVM_SET_XSAVE", idx);
    IOCTL_OR_FAIL(vc->fd, KVM_SET_XCRS, &st->xcrs, "KVM_SET_XCRS", idx);
    IOCTL_OR_FAIL(vc->fd, KVM_SET_SREGS, &st->sregs, "KVM_SET_SREGS", idx);
    if ((rc = set_msrs(vc, st)) != 0)
        return rc;
    IOCTL_OR_FAIL(vc->fd, KVM_SET_MP_STATE, &st->mp_state, "KVM_SET_MP_STATE", idx);
    if (st->has_lapic)
        IOCTL_OR_FAIL(vc->fd, KVM_SET_LAPIC, &st->lapic, "KVM_SET_LAPIC", idx);
    IOCTL_OR_FAIL(vc->fd, KVM_SET_VCPU_EVENTS, &st->events, "KVM_SET_VCPU_EVENTS", idx);
    IOCTL_OR_FAIL(vc->fd, KVM_SET_DEBUGREGS, &st->debugregs, "KVM_SET_DEBUGREGS", idx);
    return 0;
}

static int get_irqchip(vmt_vm *vm, vmt_vm_state *st)
{
    struct kvm_irqchip *chips[3] = {&st->pic_master, &st->pic_slave, &st->ioapic};
    for (uint32_t i = 0; i < 3; i++) {
        chips[i]->chip_id = i;
        if (ioctl(vm->fd, KVM_GET_IRQCHIP, chips[i]) < 0)
            return vmt_error_errno(VMT_EIO, errno, "KVM_GET_IRQCHIP %u", i);
    }
    if (ioctl(vm->fd, KVM_GET_PIT2, &st->pit) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_GET_PIT2");
    return 0;
}

int vmt_vm_get_state(vmt_vm *vm, vmt_vm_state *st)
{
    int rc = check_stopped(vm, 0);
    if (rc)
        return rc;
    memset(st, 0, sizeof(*st));
    st->mem_size = vm->ram_size;
    st->nr_vcpus = vm->nvcpus;
    st->has_irqchip = vm->cfg.irqchip;
    if (ioctl(vm->fd, KVM_GET_CLOCK, &st->clock) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_GET_CLOCK");
    pthread_mutex_lock(&vm->serial.lock);
    st->serial = vm->serial.regs;
    pthread_mutex_unlock(&vm->serial.lock);
    return vm->cfg.irqchip ? get_irqchip(vm, st) : 0;
}

static int set_irqchip(vmt_vm *vm, const vmt_vm_state *st)
{
    const struct kvm_irqchip *chips[3] = {&st->pic_master, &st->pic_slave, &st->ioapic};
    for (uint32_t i = 0; i < 3; i++) {
        struct kvm_irqchip c = *chips[i];
        c.chip_id = i;
        if (ioctl(vm->fd, KVM_SET_IRQCHIP, &c) < 0)
            return vmt_error_errno(VMT_EIO, errno, "KVM_SET_IRQCHIP %u", i);
    }
    if (ioctl(vm->fd, KVM_SET_PIT2, &st->pit) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_SET_PIT2");
    return 0;
}

int vmt_vm_set_state(vmt_vm *vm, const vmt_vm_state *st)
{
    int rc = check_stopped(vm, 0);
    if (rc)
        return rc;
    if (st->mem_size != vm->ram_size || st->nr_vcpus != vm->nvcpus ||
        (bool)st->has_irqchip != vm->cfg.irqchip)
        return vmt_error_set(VMT_EINVAL,
                             "state is for %llu MiB, %u vCPUs, irqchip %s; this VM has %llu MiB, "
                             "%u vCPUs, irqchip %s",
                             (unsigned long long)(st->mem_size >> 20), st->nr_vcpus,
                             st->has_irqchip ? "on" : "off",
                             (unsigned long long)(vm->ram_size >> 20), vm->nvcpus,
                             vm->cfg.irqchip ? "on" : "off");
    struct kvm_clock_data clk = {.clock = st->clock.clock};
    if (ioctl(vm->fd, KVM_SET_CLOCK, &clk) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_SET_CLOCK");
    pthread_mutex_lock(&vm->serial.lock);
    vm->serial.regs = st->serial;
    pthread_mutex_unlock(&vm->serial.lock);
    return st->has_irqchip ? set_irqchip(vm, st) : 0;
}
