/*
 * Dirty-page tracking: KVM_GET_DIRTY_LOG (+ KVM_CLEAR_DIRTY_LOG with manual
 * protection) or the per-vCPU KVM dirty ring, plus the pages the VMM itself
 * writes.  Everything is reported as one bitmap over RAM page indexes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm_internal.h"

static uint64_t bitmap_words(const vmt_vm *vm)
{
    return VMT_DIV_ROUND_UP(vm->ram_pages, 64);
}

int vmm_dirty_init(vmt_vm *vm)
{
    uint64_t w = bitmap_words(vm);
    vm->dirty_scratch = calloc(w, sizeof(uint64_t));
    vm->vmm_dirty = calloc(w, sizeof(uint64_t));
    vm->ring_pending = calloc(w, sizeof(uint64_t));
    if (!vm->dirty_scratch || !vm->vmm_dirty || !vm->ring_pending)
        return vmt_error_set(VMT_ENOMEM, "out of memory for dirty bitmaps");
    return 0;
}

void vmm_dirty_fini(vmt_vm *vm)
{
    free(vm->dirty_scratch);
    free((void *)vm->vmm_dirty);
    free(vm->ring_pending);
}

void vmt_vm_mark_dirty(vmt_vm *vm, uint64_t first, uint64_t n)
{
    if (!atomic_load_explicit(&vm->dirty_on, memory_order_acquire))
        return;
    if (first > vm->ram_pages || n > vm->ram_pages - first)
        return;
    for (uint64_t p = first; p < first + n; p++)
        atomic_fetch_or_explicit(&vm->vmm_dirty[p / 64], 1ull << (p % 64),
                                 memory_order_relaxed);
}

/* Harvests one vCPU's ring into `bm`; caller holds dirty_lock. */
static void harvest_ring(vmt_vm *vm, vmm_vcpu *vc, uint64_t *bm)
{
    for (;;) {
        struct kvm_dirty_gfn *e = &vc->ring[vc->ring_fetch & (vc->ring_entries - 1)];
        uint32_t flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);
        if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
            break;
        uint32_t slot = e->slot & 0xffff;
        if (slot < vm->nslots && e->offset < vm->slots[slot].size / VMT_PAGE_SIZE)
            vmm_bitmap_set(bm, vm->slots[slot].ram_off / VMT_PAGE_SIZE + e->offset);
        __atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
        vc->ring_fetch++;
    }
}

static int reset_rings(vmt_vm *vm)
{
    if (ioctl(vm->fd, KVM_RESET_DIRTY_RINGS, 0) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_RESET_DIRTY_RINGS");
    return 0;
}

int vmm_dirty_ring_full(vmm_vcpu *vc)
{
    vmt_vm *vm = vc->vm;
    pthread_mutex_lock(&vm->dirty_lock);
    uint32_t before = vc->ring_fetch;
    harvest_ring(vm, vc, vm->ring_pending);
    int rc = reset_rings(vm);
    vmt_debug("vCPU %u: dirty ring full, harvested %u entries", vc->idx, vc->ring_fetch - before);
    pthread_mutex_unlock(&vm->dirty_lock);
    return rc;
}

/* Bitmap mode: reads (and with manual protection clears) each slot's log
 * into the scratch bitmap at the slot's place. */
static int collect_bitmap(vmt_vm *vm, uint64_t *bm)
{
    for (unsigned i = 0; i < vm->nslots; i++) {
        vmm_slot *s = &vm->slots[i];
        uint64_t *slot_bm = bm + s->ram_off / VMT_PAGE_SIZE / 64;
        uint64_t npages = s->size / VMT_PAGE_SIZE;
        struct kvm_dirty_log log = {.slot = s->id, .dirty_bitmap = slot_bm};
        if (ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log) < 0)
            return vmt_error_errno(VMT_EIO, errno, "KVM_GET_DIRTY_LOG slot %u", s->id);
        if (!vm->kvm->caps.manual_protect)
            continue;
        bool any = false;
        for (uint64_t w = 0; w < VMT_DIV_ROUND_UP(npages, 64) && !any; w++)
            any = slot_bm[w] != 0;
        if (!any)
            continue;
        struct kvm_clear_dirty_log clr = {.slot = s->id, .first_page = 0,
                                          .num_pages = (uint32_t)npages,
                                          .dirty_bitmap = slot_bm};
        if (ioctl(vm->fd, KVM_CLEAR_DIRTY_LOG, &clr) < 0)
            return vmt_error_errno(VMT_EIO, errno, "KVM_CLEAR_DIRTY_LOG slot %u", s->id);
    }
    return 0;
}

static int collect_ring(vmt_vm *vm, uint64_t *bm)
{
    for (unsigned i = 0; i < vm->nvcpus; i++)
        harvest_ring(vm, &vm->vcpus[i], bm);
    uint64_t w = bitmap_words(vm);
    for (uint64_t i = 0; i < w; i++) {
        bm[i] |= vm->ring_pending[i];
        vm->ring_pending[i] = 0;
    }
    return reset_rings(vm);
}

/* Collects everything dirty since the last call into vm->dirty_scratch. */
static int collect(vmt_vm *vm)
{
    uint64_t w = bitmap_words(vm);
    uint64_t *bm = vm->dirty_scratch;
    memset(bm, 0, w * sizeof(uint64_t));
    int rc = vm->cfg.dirty_mode == VMT_DIRTY_RING ? collect_ring(vm, bm) : collect_bitmap(vm, bm);
    if (rc)
        return rc;
    for (uint64_t i = 0; i < w; i++)
        bm[i] |= atomic_exchange_explicit(&vm->vmm_dirty[i], 0, memory_order_relaxed);
    if (vm->dirty_report_all) {
        memset(bm, 0xff, w * sizeof(uint64_t));
        if (vm->ram_pages % 64)
            bm[w - 1] = (1ull << (vm->ram_pages % 64)) - 1;
        vm->dirty_report_all = false;
    }
    return 0;
}

int vmt_dirty_start(vmt_vm *vm, unsigned flags)
{
    int rc = 0;
    pthread_mutex_lock(&vm->dirty_lock);
    if (atomic_load(&vm->dirty_on)) {
        rc = vmt_error_set(VMT_EBUSY, "dirty logging is already on");
        goto out;
    }
    for (unsigned i = 0; i < vm->nslots; i++)
        if ((rc = vmm_slot_update(vm, &vm->slots[i], KVM_MEM_LOG_DIRTY_PAGES)) != 0)
            goto out;
    atomic_store(&vm->dirty_on, true);
    /* Establish the baseline: with KVM_DIRTY_LOG_INITIALLY_SET the log starts
     * all-set and unprotected; one collect clears and protects it.  Entries
     * left in the rings from an earlier session are dropped the same way. */
    vm->dirty_report_all = false;
    if ((rc = collect(vm)) != 0)
        goto out;
    vm->dirty_report_all = (flags & VMT_DIRTY_START_ALL) != 0;
out:
    pthread_mutex_unlock(&vm->dirty_lock);
    return rc;
}

int vmt_dirty_sync(vmt_vm *vm, uint64_t *bitmap, uint64_t nbits, uint64_t *ndirty)
{
    if (nbits < vm->ram_pages)
        return vmt_error_set(VMT_ERANGE, "dirty bitmap of %llu bits is smaller than RAM (%llu "
                                         "pages)",
                             (unsigned long long)nbits, (unsigned long long)vm->ram_pages);
    pthread_mutex_lock(&vm->dirty_lock);
    int rc;
    if (!atomic_load(&vm->dirty_on)) {
        rc = vmt_error_set(VMT_EINVAL, "dirty logging is not on");
        goto out;
    }
    if ((rc = collect(vm)) != 0)
        goto out;
    uint64_t count = 0, w = bitmap_words(vm);
    for (uint64_t i = 0; i < w; i++) {
        bitmap[i] |= vm->dirty_scratch[i];
        count += (uint64_t)__builtin_popcountll(vm->dirty_scratch[i]);
    }
    if (ndirty)
        *ndirty = count;
out:
    pthread_mutex_unlock(&vm->dirty_lock);
    return rc;
}

int vmt_dirty_stop(vmt_vm *vm)
{
    int rc = 0;
    pthread_mutex_lock(&vm->dirty_lock);
    if (!atomic_load(&vm->dirty_on))
        goto out;
    atomic_store(&vm->dirty_on, false);
    for (unsigned i = 0; i < vm->nslots; i++)
        if ((rc = vmm_slot_update(vm, &vm->slots[i], 0)) != 0)
            goto out;
    if (vm->cfg.dirty_mode == VMT_DIRTY_RING) {
        for (unsigned i = 0; i < vm->nvcpus; i++)
            harvest_ring(vm, &vm->vcpus[i], vm->dirty_scratch);
        rc = reset_rings(vm);
    }
    memset(vm->ring_pending, 0, bitmap_words(vm) * sizeof(uint64_t));
out:
    pthread_mutex_unlock(&vm->dirty_lock);
    return rc;
}

bool vmt_dirty_active(vmt_vm *vm)
{
    return atomic_load(&vm->dirty_on);
}

vmt_dirty_mode vmt_vm_dirty_mode(const vmt_vm *vm)
{
    return vm->cfg.dirty_mode;
}
