/* VM creation: guest RAM in a memfd, memory slots, vCPUs; RAM accessors. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vmm_internal.h"

#define TSS_ADDR 0xfffbd000ull
#define DEFAULT_RING_ENTRIES 65536u
#define MIN_RING_ENTRIES 1024u

void vmt_vm_config_init(vmt_vm_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mem_size = 256ull << 20;
    cfg->vcpus = 1;
    cfg->dirty_mode = VMT_DIRTY_BITMAP;
}

static int check_config(vmt_kvm *kvm, const vmt_vm_config *cfg)
{
    if (cfg->mem_size < VMT_VM_MIN_MEM || cfg->mem_size > VMT_VM_MAX_MEM)
        return vmt_error_set(VMT_ERANGE,
                             "memory size %llu bytes is outside [2 MiB, 64 GiB]",
                             (unsigned long long)cfg->mem_size);
    if (cfg->mem_size % (2u << 20))
        return vmt_error_set(VMT_EINVAL, "memory size %llu is not a multiple of 2 MiB",
                             (unsigned long long)cfg->mem_size);
    if (cfg->vcpus < 1 || cfg->vcpus > VMT_VM_MAX_VCPUS || cfg->vcpus > kvm->caps.max_vcpus)
        return vmt_error_set(VMT_ERANGE, "%u vCPUs is outside [1, %u]", cfg->vcpus,
                             VMT_MIN((unsigned)VMT_VM_MAX_VCPUS, kvm->caps.max_vcpus));
    if (cfg->irqchip && !kvm->caps.irqchip)
        return vmt_error_set(VMT_EUNSUPPORTED, "KVM lacks KVM_CAP_IRQCHIP");
    if (cfg->dirty_mode == VMT_DIRTY_RING) {
        uint32_t n = cfg->dirty_ring_entries ? cfg->dirty_ring_entries : DEFAULT_RING_ENTRIES;
        if (!kvm->caps.dirty_ring_max)
            return vmt_error_set(VMT_EUNSUPPORTED,
                                 "KVM lacks KVM_CAP_DIRTY_LOG_RING: use the bitmap mode");
        /* Rings below 1024 entries misbehave on some KVMs (a ring that is
         * reported full again right after a complete harvest and reset). */
        if (n & (n - 1) || n < MIN_RING_ENTRIES ||
            (uint64_t)n * sizeof(struct kvm_dirty_gfn) > kvm->caps.dirty_ring_max)
            return vmt_error_set(VMT_ERANGE,
                                 "dirty ring of %u entries: need a power of 2 from 1024 to %u", n,
                                 (unsigned)(kvm->caps.dirty_ring_max /
                                            sizeof(struct kvm_dirty_gfn)));
    } else if (cfg->dirty_mode != VMT_DIRTY_BITMAP) {
        return vmt_error_set(VMT_EINVAL, "unknown dirty mode %d", (int)cfg->dirty_mode);
    }
    return 0;
}

static int setup_ram(vmt_vm *vm)
{
    vm->ram_size = vm->cfg.mem_size;
    vm->ram_pages = vm->ram_size / VMT_PAGE_SIZE;
    vm->memfd = memfd_create("vmtree-guest-ram", MFD_CLOEXEC);
    if (vm->memfd < 0)
        return vmt_error_errno(VMT_EIO, errno, "memfd_create");
    if (ftruncate(vm->memfd, (off_t)vm->ram_size) != 0)
        return vmt_error_errno(VMT_EIO, errno, "sizing guest RAM to %llu bytes",
                               (unsigned long long)vm->ram_size);
    void *p = vm->cfg.huge_pages
                  ? vmt_map_shared_aligned(vm->memfd, vm->ram_size)
                  : mmap(NULL, vm->ram_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                         vm->memfd, 0);
    if (p == MAP_FAILED)
        return vmt_error_errno(VMT_EIO, errno, "mapping guest RAM");
    vm->ram = p;
    madvise(vm->ram, vm->ram_size, MADV_DONTDUMP);
    if (vm->cfg.huge_pages) {
        vm->ram_huge = vmt_ram_advise_huge(vm->ram, vm->ram_size) == 0;
        if (!vm->ram_huge)
            vmt_log(VMT_LOG_WARN, "guest RAM keeps 4 KiB pages: %s", vmt_error_last());
    }

    uint64_t low = VMT_MIN(vm->ram_size, VMT_RAM_HOLE_START);
    vm->slots[0] = (vmm_slot){.id = 0, .gpa = 0, .size = low, .ram_off = 0};
    vm->nslots = 1;
    if (vm->ram_size > low) {
        vm->slots[1] = (vmm_slot){.id = 1, .gpa = VMT_RAM_HOLE_END,
                                  .size = vm->ram_size - low, .ram_off = low};
        vm->nslots = 2;
    }
    for (unsigned i = 0; i < vm->nslots; i++) {
        int rc = vmm_slot_update(vm, &vm->slots[i], 0);
        if (rc)
            return rc;
    }
    return 0;
}

int vmm_slot_update(vmt_vm *vm, vmm_slot *s, uint32_t flags)
{
    struct kvm_userspace_memory_region r = {
        .slot = s->id,
        .flags = flags,
        .guest_phys_addr = s->gpa,
        .memory_size = s->size,
        .userspace_addr = (uint64_t)(uintptr_t)(vm->ram + s->ram_off),
    };
    if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_SET_USER_MEMORY_REGION slot %u", s->id);
    s->flags = flags;
    return 0;
}

static int enable_cap(int fd, uint32_t cap, uint64_t arg0)
{
    struct kvm_enable_cap c = {.cap = cap, .args = {arg0}};
    return ioctl(fd, KVM_ENABLE_CAP, &c);
}

static int setup_vm_features(vmt_vm *vm)
{
    const vmt_kvm_caps *caps = &vm->kvm->caps;
    if (vm->cfg.dirty_mode == VMT_DIRTY_RING) {
        uint32_t n = vm->cfg.dirty_ring_entries ? vm->cfg.dirty_ring_entries
                                                : DEFAULT_RING_ENTRIES;
        uint32_t cap = caps->dirty_ring_acq_rel ? KVM_CAP_DIRTY_LOG_RING_ACQ_REL
                                                : KVM_CAP_DIRTY_LOG_RING;
        if (enable_cap(vm->fd, cap, (uint64_t)n * sizeof(struct kvm_dirty_gfn)) < 0)
            return vmt_error_errno(VMT_EIO, errno, "enabling the dirty ring (%u entries)", n);
        vm->cfg.dirty_ring_entries = n;
    } else if (caps->manual_protect) {
        uint64_t f = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
        if (caps->initially_set)
            f |= KVM_DIRTY_LOG_INITIALLY_SET;
        if (enable_cap(vm->fd, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, f) < 0)
            return vmt_error_errno(VMT_EIO, errno, "enabling manual dirty-log protection");
    }
    if (vm->cfg.mem_size <= TSS_ADDR && ioctl(vm->fd, KVM_SET_TSS_ADDR, TSS_ADDR) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_SET_TSS_ADDR");
    if (vm->cfg.irqchip) {
        if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0)
            return vmt_error_errno(VMT_EIO, errno, "KVM_CREATE_IRQCHIP");
        struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
        if (ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0)
            return vmt_error_errno(VMT_EIO, errno, "KVM_CREATE_PIT2");
    }
    return 0;
}

static int create_vcpu(vmt_vm *vm, unsigned idx)
{
    vmm_vcpu *vc = &vm->vcpus[idx];
    vc->vm = vm;
    vc->idx = idx;
    vc->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)idx);
    if (vc->fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_CREATE_VCPU %u", idx);
    int sz = ioctl(vm->kvm->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz <= 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_GET_VCPU_MMAP_SIZE");
    vc->run_size = (size_t)sz;
    void *p = mmap(NULL, vc->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vc->fd, 0);
    if (p == MAP_FAILED)
        return vmt_error_errno(VMT_EIO, errno, "mapping kvm_run of vCPU %u", idx);
    vc->run = p;
    if (vm->cfg.dirty_mode == VMT_DIRTY_RING) {
        size_t bytes = (size_t)vm->cfg.dirty_ring_entries * sizeof(struct kvm_dirty_gfn);
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, vc->fd,
                 KVM_DIRTY_LOG_PAGE_OFFSET * (off_t)sysconf(_SC_PAGESIZE));
        if (p == MAP_FAILED)
            return vmt_error_errno(VMT_EIO, errno, "mapping the dirty ring of vCPU %u", idx);
        vc->ring = p;
        vc->ring_entries = vm->cfg.dirty_ring_entries;
    }
    return vmm_kvm_setup_cpuid(vm->kvm, vc->fd, idx);
}

static int init_sync(vmt_vm *vm)
{
    pthread_condattr_t ca;
    int bad = pthread_condattr_init(&ca) || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) ||
              pthread_mutex_init(&vm->lock, NULL) || pthread_cond_init(&vm->cond, &ca) ||
              pthread_mutex_init(&vm->dirty_lock, NULL);
    pthread_condattr_destroy(&ca);
    if (bad)
        return vmt_error_set(VMT_ERR, "cannot initialise VM locks");
    return 0;
}

int vmt_vm_create(vmt_vm **out, vmt_kvm *kvm, const vmt_vm_config *cfg)
{
    int rc;
    *out = NULL;
    if ((rc = check_config(kvm, cfg)) != 0)
        return rc;
    vmt_vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    vm->kvm = kvm;
    vm->cfg = *cfg;
    vm->fd = vm->memfd = -1;
    vm->nvcpus = cfg->vcpus;
    vmm_serial_init(&vm->serial, cfg->console, cfg->console_ctx);
    if ((rc = init_sync(vm)) != 0)
        goto fail;
    vm->vcpus = calloc(vm->nvcpus, sizeof(*vm->vcpus));
    if (!vm->vcpus) {
        rc = vmt_error_set(VMT_ENOMEM, "out of memory");
        goto fail;
    }
    for (unsigned i = 0; i < vm->nvcpus; i++)
        vm->vcpus[i].fd = -1;
    vm->fd = ioctl(kvm->fd, KVM_CREATE_VM, 0);
    if (vm->fd < 0) {
        rc = vmt_error_errno(VMT_EIO, errno, "KVM_CREATE_VM");
        goto fail;
    }
    if ((rc = setup_vm_features(vm)) != 0 || (rc = setup_ram(vm)) != 0 ||
        (rc = vmm_dirty_init(vm)) != 0)
        goto fail;
    for (unsigned i = 0; i < vm->nvcpus; i++)
        if ((rc = create_vcpu(vm, i)) != 0)
            goto fail;
    *out = vm;
    return 0;
fail:
    vmt_vm_destroy(vm);
    return rc;
}

void vmt_vm_destroy(vmt_vm *vm)
{
    if (!vm)
        return;
    vmt_vm_request_stop(vm);
    for (unsigned i = 0; vm->vcpus && i < vm->nvcpus; i++) {
        vmm_vcpu *vc = &vm->vcpus[i];
        if (vc->ring)
            munmap(vc->ring, (size_t)vc->ring_entries * sizeof(struct kvm_dirty_gfn));
        if (vc->run)
            munmap(vc->run, vc->run_size);
        if (vc->fd >= 0)
            close(vc->fd);
    }
    free(vm->vcpus);
    vmm_dirty_fini(vm);
    if (vm->fd >= 0)
        close(vm->fd);
    if (vm->ram)
        munmap(vm->ram, vm->ram_size);
    if (vm->memfd >= 0)
        close(vm->memfd);
    vmm_serial_destroy(&vm->serial);
    pthread_mutex_destroy(&vm->lock);
    pthread_cond_destroy(&vm->cond);
    pthread_mutex_destroy(&vm->dirty_lock);
    free(vm);
}

uint8_t *vmt_vm_ram(vmt_vm *vm, uint64_t *size)
{
    if (size)
        *size = vm->ram_size;
    return vm->ram;
}

int vmt_vm_ram_fd(const vmt_vm *vm)
{
    return vm->memfd;
}

bool vmt_vm_ram_huge(const vmt_vm *vm)
{
    return vm->ram_huge;
}

uint64_t vmt_vm_ram_pages(const vmt_vm *vm)
{
    return vm->ram_pages;
}

unsigned vmt_vm_vcpus(const vmt_vm *vm)
{
    return vm->nvcpus;
}

int vmt_vm_gpa_to_ram(const vmt_vm *vm, uint64_t gpa, uint64_t len, uint64_t *off)
{
    for (unsigned i = 0; i < vm->nslots; i++) {
        const vmm_slot *s = &vm->slots[i];
        if (gpa >= s->gpa && gpa - s->gpa <= s->size && len <= s->size - (gpa - s->gpa)) {
            *off = s->ram_off + (gpa - s->gpa);
            return 0;
        }
    }
    return vmt_error_set(VMT_ERANGE, "guest-physical range 0x%llx+0x%llx is not in RAM",
                         (unsigned long long)gpa, (unsigned long long)len);
}

int vmt_vm_write_ram(vmt_vm *vm, uint64_t off, const void *buf, size_t len)
{
    if (off > vm->ram_size || len > vm->ram_size - off)
        return vmt_error_set(VMT_ERANGE, "RAM write at 0x%llx+0x%zx is past the end of RAM",
                             (unsigned long long)off, len);
    if (len == 0)
        return 0;
    memcpy(vm->ram + off, buf, len);
    uint64_t first = off / VMT_PAGE_SIZE;
    vmt_vm_mark_dirty(vm, first, (off + len - 1) / VMT_PAGE_SIZE - first + 1);
    return 0;
}
