/* Internals of hypervisor-glue shared between its files. */
#ifndef VMTREE_VMM_INTERNAL_H
#define VMTREE_VMM_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "vmtree/vmm.h"

#define VMM_MAX_SLOTS 2

struct vmt_kvm {
    int fd;
    vmt_kvm_caps caps;
    struct kvm_cpuid2 *cpuid; /* supported CPUID, patched per vCPU */
    pthread_mutex_t msr_lock; /* guards the lazily probed lists below */
    bool msr_probed[2];
    uint32_t *msr_list[2];    /* saveable MSRs that read and write back, */
    uint32_t nr_msrs[2];      /* [0] without, [1] with an in-kernel irqchip */
};

typedef struct vmm_slot {
    uint32_t id;
    uint64_t gpa;
    uint64_t size;
    uint64_t ram_off; /* offset of the slot in RAM (memfd) */
    uint32_t flags;
} vmm_slot;

typedef struct vmm_serial {
    pthread_mutex_t lock;
    vmt_serial_state regs;
    vmt_console_fn out;
    void *out_ctx;
} vmm_serial;

typedef struct vmm_vcpu {
    struct vmt_vm *vm;
    unsigned idx;
    int fd;
    struct kvm_run *run;
    size_t run_size;
    pthread_t thread;
    bool thread_started;
    bool parked;               /* under vm->lock */
    struct kvm_dirty_gfn *ring;/* dirty ring (ring mode) */
    uint32_t ring_entries;
    uint32_t ring_fetch;       /* next entry to harvest, under vm->dirty_lock */
} vmm_vcpu;

struct vmt_vm {
    vmt_kvm *kvm;
    vmt_vm_config cfg;
    int fd;
    int memfd;
    uint8_t *ram;
    uint64_t ram_size;
    bool ram_huge; /* RAM mapped 2 MiB aligned with MADV_HUGEPAGE */
    uint64_t ram_pages;
    vmm_slot slots[VMM_MAX_SLOTS];
    unsigned nslots;
    vmm_vcpu *vcpus;
    unsigned nvcpus;
    vmm_serial serial;

    /* run control, under lock */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool running;              /* threads started and not joined */
    bool pause_req;
    unsigned nparked;
    unsigned nfinished;        /* threads that left their run loop */
    bool stop_req;
    vmt_vm_exit exit;          /* first stopping exit */

    /* dirty tracking */
    pthread_mutex_t dirty_lock;
    atomic_bool dirty_on;
    bool dirty_report_all;     /* next sync reports every page */
    bool dirty_clear_all;      /* bitmap mode: INITIALLY_SET still pending */
    uint64_t *dirty_scratch;   /* one bitmap of ram_pages bits per slot use */
    _Atomic uint64_t *vmm_dirty;  /* pages written by the VMM itself */
    uint64_t *ring_pending;    /* ring mode: harvested on ring-full exits */
};

/* kvm.c */
int vmm_kvm_setup_cpuid(vmt_kvm *kvm, int vcpu_fd, unsigned idx);
/* The MSRs saved for a VM with or without an irqchip (probed on first use). */
int vmm_kvm_msr_list(vmt_kvm *kvm, bool irqchip, const uint32_t **list, uint32_t *n);

/* struct kvm_msrs ends in a flexible array: room for VMT_MAX_MSRS entries. */
typedef struct vmm_msr_buf {
    _Alignas(8) uint8_t raw[sizeof(struct kvm_msrs) + VMT_MAX_MSRS * sizeof(struct kvm_msr_entry)];
} vmm_msr_buf;

static inline struct kvm_msrs *vmm_msrs(vmm_msr_buf *b)
{
    return (struct kvm_msrs *)(void *)b->raw;
}

/* vm.c */
int vmm_slot_update(vmt_vm *vm, vmm_slot *s, uint32_t flags);

/* serial.c */
void vmm_serial_init(vmm_serial *s, vmt_console_fn out, void *ctx);
void vmm_serial_destroy(vmm_serial *s);
void vmm_serial_io(vmm_serial *s, uint16_t port, bool is_write, uint8_t *data);

/* vcpu.c */
void *vmm_vcpu_thread(void *arg);

/* dirty.c */
int vmm_dirty_init(vmt_vm *vm);
void vmm_dirty_fini(vmt_vm *vm);
/* Called on a vCPU thread on KVM_EXIT_DIRTY_RING_FULL. */
int vmm_dirty_ring_full(vmm_vcpu *vc);

/* state.c */
int vmm_vcpu_get_regs(vmm_vcpu *vc, struct kvm_regs *regs, struct kvm_sregs *sregs);

static inline void vmm_bitmap_set(uint64_t *bm, uint64_t bit)
{
    bm[bit / 64] |= 1ull << (bit % 64);
}

#endif
