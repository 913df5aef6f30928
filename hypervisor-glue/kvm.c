/* The /dev/kvm system handle: API and capability checks, CPUID, MSR list. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmm_internal.h"

#define CPUID_MAX_ENTRIES 256
#define MSR_LIST_MAX 1024

static int check_ext(int fd, long cap)
{
    int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

/* Capabilities every VM relies on: missing any is a clear refusal. */
static int require_caps(vmt_kvm *kvm)
{
    static const struct {
        long cap;
        const char *name;
    } need[] = {
        {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
        {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
        {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
        {KVM_CAP_XSAVE, "KVM_CAP_XSAVE"},
        {KVM_CAP_XCRS, "KVM_CAP_XCRS"},
        {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS"},
        {KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS"},
        {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
        {KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK"},
        {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    };
    for (size_t i = 0; i < VMT_ARRAY_SIZE(need); i++) {
        if (!check_ext(kvm->fd, need[i].cap))
            return vmt_error_set(VMT_EUNSUPPORTED, "KVM lacks %s, which vmtree needs",
                                 need[i].name);
    }
    vmt_kvm_caps *c = &kvm->caps;
    c->xcrs = c->vcpu_events = c->debugregs = c->adjust_clock = c->immediate_exit = true;
    int mp = check_ext(kvm->fd, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    c->manual_protect = mp != 0;
    c->initially_set = (mp & KVM_DIRTY_LOG_INITIALLY_SET) != 0;
    c->dirty_ring_max = (uint32_t)check_ext(kvm->fd, KVM_CAP_DIRTY_LOG_RING);
    c->dirty_ring_acq_rel = check_ext(kvm->fd, KVM_CAP_DIRTY_LOG_RING_ACQ_REL) != 0;
    if (!c->dirty_ring_max)
        c->dirty_ring_max = (uint32_t)check_ext(kvm->fd, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
    c->irqchip = check_ext(kvm->fd, KVM_CAP_IRQCHIP) != 0;
    int xs = check_ext(kvm->fd, KVM_CAP_XSAVE2);
    c->xsave_size = xs > (int)sizeof(struct kvm_xsave) ? (uint32_t)xs : sizeof(struct kvm_xsave);
    if (c->xsave_size > VMT_XSAVE_MAX)
        return vmt_error_set(VMT_EUNSUPPORTED, "XSAVE state of %u bytes exceeds vmtree's %u",
                             c->xsave_size, VMT_XSAVE_MAX);
    c->max_vcpus = (uint32_t)check_ext(kvm->fd, KVM_CAP_MAX_VCPUS);
    if (!c->max_vcpus)
        c->max_vcpus = (uint32_t)check_ext(kvm->fd, KVM_CAP_NR_VCPUS);
    if (!c->max_vcpus)
        c->max_vcpus = 4;
    return 0;
}

static int load_cpuid(vmt_kvm *kvm)
{
    size_t sz = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    kvm->cpuid = calloc(1, sz);
    if (!kvm->cpuid)
        return vmt_error_set(VMT_ENOMEM, "out of memory for CPUID");
    kvm->cpuid->nent = CPUID_MAX_ENTRIES;
    if (ioctl(kvm->fd, KVM_GET_SUPPORTED_CPUID, kvm->cpuid) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_GET_SUPPORTED_CPUID");
    return 0;
}

int vmm_kvm_setup_cpuid(vmt_kvm *kvm, int vcpu_fd, unsigned idx)
{
    size_t sz = sizeof(struct kvm_cpuid2) + kvm->cpuid->nent * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *c = malloc(sz);
    if (!c)
        return vmt_error_set(VMT_ENOMEM, "out of memory for CPUID");
    memcpy(c, kvm->cpuid, sz);
    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        if (e->function == 1)
            e->ebx = (e->ebx & 0x00ffffffu) | (idx << 24); /* initial APIC id */
        if (e->function == 0xb || e->function == 0x1f)
            e->edx = idx; /* x2APIC id */
    }
    int rc = 0;
    if (ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0)
        rc = vmt_error_errno(VMT_EIO, errno, "KVM_SET_CPUID2 on vCPU %u", idx);
    free(c);
    return rc;
}

static int get_msr_index_list(vmt_kvm *kvm, uint32_t **out, uint32_t *n)
{
    struct kvm_msr_list *l = calloc(1, sizeof(*l) + MSR_LIST_MAX * sizeof(uint32_t));
    if (!l)
        return vmt_error_set(VMT_ENOMEM, "out of memory for the MSR list");
    l->nmsrs = MSR_LIST_MAX;
    if (ioctl(kvm->fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
        int e = errno;
        free(l);
        return vmt_error_errno(VMT_EIO, e, "KVM_GET_MSR_INDEX_LIST");
    }
    *n = VMT_MIN(l->nmsrs, (uint32_t)MSR_LIST_MAX);
    *out = malloc(*n * sizeof(uint32_t) + 1);
    if (!*out) {
        free(l);
        return vmt_error_set(VMT_ENOMEM, "out of memory for the MSR list");
    }
    memcpy(*out, l->indices, *n * sizeof(uint32_t));
    free(l);
    return 0;
}

/* Keeps the MSRs of `all` that a fresh vCPU of `vm` reads and accepts back. */
static void filter_msrs(int vcpu, const uint32_t *all, uint32_t n, uint32_t *keep,
                        uint32_t *nkeep)
{
    vmm_msr_buf buf;
    struct kvm_msrs *m = vmm_msrs(&buf);
    *nkeep = 0;
    for (uint32_t i = 0; i < n && *nkeep < VMT_MAX_MSRS; i++) {
        memset(&buf, 0, sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry));
        m->nmsrs = 1;
        m->entries[0].index = all[i];
        if (ioctl(vcpu, KVM_GET_MSRS, m) == 1 && ioctl(vcpu, KVM_SET_MSRS, m) == 1)
            keep[(*nkeep)++] = all[i];
    }
}

/*
 * KVM lists MSRs it can save, but some read back only with certain CPUID
 * bits or an in-kernel irqchip, or cannot be written back; keep those a
 * fresh vCPU of each kind of VM reads and accepts, so that get/set state
 * never fails half-way.
 */
static int probe_msrs(vmt_kvm *kvm, const uint32_t *all, uint32_t n, bool irqchip)
{
    int rc = 0, vcpu = -1;
    int vm = ioctl(kvm->fd, KVM_CREATE_VM, 0);
    if (vm < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_CREATE_VM");
    if (irqchip && ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) {
        rc = vmt_error_errno(VMT_EIO, errno, "KVM_CREATE_IRQCHIP");
        goto out;
    }
    vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) {
        rc = vmt_error_errno(VMT_EIO, errno, "KVM_CREATE_VCPU");
        goto out;
    }
    if ((rc = vmm_kvm_setup_cpuid(kvm, vcpu, 0)) != 0)
        goto out;
    uint32_t *list = malloc((n + 1) * sizeof(uint32_t));
    if (!list) {
        rc = vmt_error_set(VMT_ENOMEM, "out of memory for the MSR list");
        goto out;
    }
    filter_msrs(vcpu, all, n, list, &kvm->nr_msrs[irqchip]);
    kvm->msr_list[irqchip] = list;
out:
    if (vcpu >= 0)
        close(vcpu);
    close(vm);
    return rc;
}

/*
 * Probing costs a throw-away VM (~20 ms here), so it happens on the first
 * state read or write of each kind of VM, not at open: booting stays fast.
 */
int vmm_kvm_msr_list(vmt_kvm *kvm, bool irqchip, const uint32_t **list, uint32_t *n)
{
    int rc = 0;
    pthread_mutex_lock(&kvm->msr_lock);
    if (!kvm->msr_probed[irqchip]) {
        uint32_t *all = NULL, nall = 0;
        rc = get_msr_index_list(kvm, &all, &nall);
        if (rc == 0)
            rc = probe_msrs(kvm, all, nall, irqchip);
        free(all);
        kvm->msr_probed[irqchip] = rc == 0;
        if (rc == 0 && !irqchip)
            kvm->caps.nr_msrs = kvm->nr_msrs[0];
    }
    *list = kvm->msr_list[irqchip];
    *n = kvm->nr_msrs[irqchip];
    pthread_mutex_unlock(&kvm->msr_lock);
    return rc;
}

int vmt_kvm_open(vmt_kvm **out)
{
    const char *dev = getenv("VMTREE_KVM_DEV");
    int rc;

    *out = NULL;
    if (!dev)
        dev = "/dev/kvm";
    vmt_kvm *kvm = calloc(1, sizeof(*kvm));
    if (!kvm)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    kvm->fd = open(dev, O_RDWR | O_CLOEXEC);
    if (kvm->fd < 0) {
        int e = errno;
        free(kvm);
        if (e == ENOENT)
            return vmt_error_set(VMT_ENOENT, "%s does not exist: vmtree needs KVM "
                                             "(load kvm-intel or kvm-amd)", dev);
        return vmt_error_errno(VMT_EIO, e, "cannot open %s (vmtree needs KVM)", dev);
    }
    kvm->caps.api_version = ioctl(kvm->fd, KVM_GET_API_VERSION, 0);
    if (kvm->caps.api_version != KVM_API_VERSION) {
        rc = vmt_error_set(VMT_EUNSUPPORTED, "KVM API version %d, vmtree needs %d",
                           kvm->caps.api_version, KVM_API_VERSION);
        goto fail;
    }
    pthread_mutex_init(&kvm->msr_lock, NULL);
    if ((rc = require_caps(kvm)) != 0 || (rc = load_cpuid(kvm)) != 0)
        goto fail;
    *out = kvm;
    return 0;
fail:
    vmt_kvm_close(kvm);
    return rc;
}

void vmt_kvm_close(vmt_kvm *kvm)
{
    if (!kvm)
        return;
    if (kvm->fd >= 0)
        close(kvm->fd);
    free(kvm->cpuid);
    free(kvm->msr_list[0]);
    free(kvm->msr_list[1]);
    pthread_mutex_destroy(&kvm->msr_lock);
    free(kvm);
}

const vmt_kvm_caps *vmt_kvm_get_caps(const vmt_kvm *kvm)
{
    return &kvm->caps;
}
