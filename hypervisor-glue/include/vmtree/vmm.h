/*
 * vmtree hypervisor-glue: a minimal KVM virtual machine monitor.
 *
 * Mechanism only: VM and vCPU lifecycle on /dev/kvm, guest RAM in a memfd,
 * an ELF64 loader entering 64-bit long mode (Linux 64-bit boot protocol),
 * a COM1 8250 serial port, an exit port, pause/resume, the whole VM state as
 * plain structs, and dirty-page tracking.  It never decides when to snapshot
 * or migrate.
 *
 * Guest physical layout and boot protocol (docs/boot-protocol.md):
 *   - RAM occupies [0, min(mem, 3 GiB)) and, beyond 3 GiB of RAM,
 *     [4 GiB, 4 GiB + mem - 3 GiB).  The e820 table in boot_params says so.
 *   - RAM is addressed by the host as one contiguous region (the memfd);
 *     a "RAM page index" (pfn in dirty bitmaps) is offset-in-RAM / 4096.
 *   - [0, 1 MiB) is reserved for boot structures; ELF PT_LOAD segments must
 *     lie in RAM at or above VMT_BOOT_RESERVED_END.
 *   - Every vCPU enters the ELF entry point in 64-bit long mode, CPL0, with
 *     interrupts off, paging on an identity map of all guest-physical RAM
 *     (2 MiB pages, supervisor-only), CS/DS/SS flat 64-bit from the boot
 *     GDT, RSI = guest-physical address of a Linux `struct boot_params`
 *     (e820 table, hdr.cmd_line_ptr, hdr.cmdline_size), RSP = a small boot
 *     stack (per vCPU), RDI = the vCPU index.  vCPU n reads its index also
 *     from CPUID.1:EBX[31:24] (initial APIC id).
 *
 * Ports: COM1 at 0x3f8..0x3ff (8250, polled), VMT_PORT_EXIT (out8: the VM
 * stops with that status), VMT_PORT_EVENT (out32: delivered to the event
 * callback, which may ask for a pause).
 *
 * Threading: a vmt_vm is driven from one controlling thread (create, load,
 * start, get/set state, destroy).  vmt_vm_pause/resume/request_stop,
 * vmt_vm_wait and the dirty calls are safe from any thread.  Callbacks run
 * on vCPU threads.
 */
#ifndef VMTREE_VMM_H
#define VMTREE_VMM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/util.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VMT_PAGE_SIZE 4096u
#define VMT_PAGE_SHIFT 12

#define VMT_VM_MIN_MEM (2ull << 20)   /* 2 MiB */
#define VMT_VM_MAX_MEM (64ull << 30)  /* 64 GiB: documented maximum */
#define VMT_VM_MAX_VCPUS 64

/* Boot structures (guest-physical addresses). */
#define VMT_BOOT_GDT_ADDR 0x500ull
#define VMT_BOOT_PARAMS_ADDR 0x7000ull
#define VMT_BOOT_PML4_ADDR 0x9000ull
#define VMT_BOOT_PDPT_ADDR 0xa000ull
#define VMT_BOOT_PD_ADDR 0x10000ull    /* up to 68 page directories */
#define VMT_BOOT_STACKS_ADDR 0x60000ull /* 1 KiB per vCPU, 64 vCPUs */
#define VMT_BOOT_STACK_SIZE 0x400ull
#define VMT_BOOT_CMDLINE_ADDR 0x80000ull
#define VMT_BOOT_CMDLINE_MAX 4096u /* including the terminating NUL */
#define VMT_BOOT_RESERVED_END 0x100000ull
#define VMT_RAM_HOLE_START (3ull << 30)
#define VMT_RAM_HOLE_END (4ull << 30)

/* I/O ports. */
#define VMT_PORT_COM1 0x3f8
#define VMT_PORT_EXIT 0xf4
#define VMT_PORT_EVENT 0xf8

typedef struct vmt_kvm vmt_kvm;
typedef struct vmt_vm vmt_vm;

/* ---- the KVM system handle -------------------------------------------- */

typedef struct vmt_kvm_caps {
    int api_version;
    bool manual_protect;        /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 */
    bool initially_set;         /* ... with KVM_DIRTY_LOG_INITIALLY_SET */
    uint32_t dirty_ring_max;    /* max ring bytes per vCPU, 0 = no dirty ring */
    bool dirty_ring_acq_rel;
    bool irqchip;
    uint32_t xsave_size;        /* bytes of XSAVE state (KVM_CAP_XSAVE2) */
    bool xcrs, vcpu_events, debugregs, adjust_clock, immediate_exit;
    uint32_t max_vcpus;
    uint32_t nr_msrs;           /* saveable MSRs (0 until the first state access) */
} vmt_kvm_caps;

/*
 * Opens /dev/kvm (or $VMTREE_KVM_DEV), checks the API version and every
 * capability the VMM relies on; on a missing one fails with
 * VMT_EUNSUPPORTED naming it, and where /dev/kvm is absent with VMT_ENOENT
 * saying that KVM is needed.  *out is owned by the caller; close it after
 * every VM made from it is destroyed.
 */
int vmt_kvm_open(vmt_kvm **out);
void vmt_kvm_close(vmt_kvm *kvm);
const vmt_kvm_caps *vmt_kvm_get_caps(const vmt_kvm *kvm);

/* ---- configuration ---------------------------------------------------- */

typedef enum vmt_dirty_mode {
    VMT_DIRTY_BITMAP = 0, /* KVM_GET_DIRTY_LOG (+ CLEAR with manual protect) */
    VMT_DIRTY_RING = 1,   /* per-vCPU KVM dirty ring */
} vmt_dirty_mode;

/* Console output: called on a vCPU thread for each chunk the guest prints. */
typedef void (*vmt_console_fn)(void *ctx, const char *buf, size_t len);

typedef enum vmt_event_action {
    VMT_EVENT_CONTINUE = 0,
    VMT_EVENT_PAUSE = 1, /* pause the whole VM after this exit */
} vmt_event_action;

/* A 32-bit value written by the guest to VMT_PORT_EVENT (on a vCPU thread). */
typedef vmt_event_action (*vmt_event_fn)(void *ctx, vmt_vm *vm, unsigned vcpu, uint32_t value);

typedef struct vmt_vm_config {
    uint64_t mem_size;          /* bytes, multiple of 2 MiB, in [MIN, MAX] */
    unsigned vcpus;             /* 1..VMT_VM_MAX_VCPUS (and the host's max) */
    bool irqchip;               /* in-kernel irqchip + PIT (LAPIC state saved) */
    vmt_dirty_mode dirty_mode;  /* fixed for the VM's life (KVM requires it) */
    uint32_t dirty_ring_entries;/* ring mode: entries per vCPU, power of 2 >= 1024; 0 = 65536 */
    vmt_console_fn console;     /* NULL: output discarded */
    void *console_ctx;
    vmt_event_fn event;         /* NULL: events ignored */
    void *event_ctx;
    /* Ask for 2 MiB pages for guest RAM (mapped 2 MiB aligned, MADV_HUGEPAGE):
     * where the host gives shared memory none (its THP shmem mode is
     * "never"), RAM keeps 4 KiB pages and a warning says why
     * (vmt_vm_ram_huge tells which). */
    bool huge_pages;
} vmt_vm_config;

/* Fills cfg with defaults: 256 MiB, 1 vCPU, bitmap, no irqchip, no console. */
void vmt_vm_config_init(vmt_vm_config *cfg);

/* Ready-made console sinks. */
void vmt_console_to_fd(void *ctx /* (intptr_t) fd */, const char *buf, size_t len);

/* A thread-safe growing buffer of console output. */
typedef struct vmt_console_buf vmt_console_buf;
int vmt_console_buf_new(vmt_console_buf **out);
void vmt_console_buf_free(vmt_console_buf *cb);
void vmt_console_buf_sink(void *ctx /* vmt_console_buf* */, const char *buf, size_t len);
/* Copies the output so far into a new NUL-terminated string (caller frees). */
char *vmt_console_buf_dup(vmt_console_buf *cb, size_t *len);
/* Waits until the output contains `needle` (at or after byte `from`);
 * returns the offset just past it, or VMT_ETIMEDOUT. */
int64_t vmt_console_buf_wait(vmt_console_buf *cb, const char *needle, size_t from,
                             uint64_t timeout_ns);

/* ---- VM lifecycle ----------------------------------------------------- */

/*
 * Creates a VM: guest RAM (memfd, mapped shared, zero), memory slots with
 * dirty logging available, vCPUs (not yet running).  The VM borrows `kvm`.
 */
int vmt_vm_create(vmt_vm **out, vmt_kvm *kvm, const vmt_vm_config *cfg);
/* Stops the vCPU threads if running and frees everything. NULL is fine. */
void vmt_vm_destroy(vmt_vm *vm);

/*
 * Validates and loads an ELF64 x86-64 executable (class, machine, program
 * headers, PT_LOAD segments inside RAM and above VMT_BOOT_RESERVED_END, no
 * overlaps), writes the boot structures and sets every vCPU's entry state.
 * `cmdline` may be NULL; at most VMT_BOOT_CMDLINE_MAX-1 bytes.
 */
int vmt_vm_load_elf(vmt_vm *vm, const char *path, const char *cmdline);

/* Starts one thread per vCPU running the guest. */
int vmt_vm_start(vmt_vm *vm);

/*
 * Pauses every vCPU (kicks them out of KVM_RUN) and returns once all are
 * parked, so state and RAM can be read consistently.  A port I/O
 * instruction a vCPU had exited for is completed (KVM_RUN with
 * immediate_exit) before it parks, so no completion is pending in KVM while
 * paused and state set then (an in-place rollback) is not altered by it.
 * Idempotent; safe from any thread except a vCPU thread (use
 * VMT_EVENT_PAUSE there).
 */
int vmt_vm_pause(vmt_vm *vm);
int vmt_vm_resume(vmt_vm *vm);
bool vmt_vm_is_paused(vmt_vm *vm);

typedef enum vmt_exit_kind {
    VMT_EXIT_NONE = 0,      /* still running */
    VMT_EXIT_PORT,          /* guest wrote its status to VMT_PORT_EXIT */
    VMT_EXIT_HLT,           /* HLT with nothing to wake it */
    VMT_EXIT_SHUTDOWN,      /* triple fault */
    VMT_EXIT_INTERNAL,      /* KVM internal error or entry failure */
    VMT_EXIT_UNHANDLED,     /* an exit the VMM does not emulate (MMIO, port) */
    VMT_EXIT_STOPPED,       /* stopped by vmt_vm_request_stop */
    VMT_EXIT_ERROR,         /* a host-side failure (ioctl) */
} vmt_exit_kind;

typedef struct vmt_vm_exit {
    vmt_exit_kind kind;
    int status;             /* VMT_EXIT_PORT: the guest's byte */
    unsigned vcpu;          /* the vCPU that stopped the VM */
    struct kvm_regs regs;   /* that vCPU's registers at the exit */
    struct kvm_sregs sregs;
    char reason[256];       /* one line a human can act on */
} vmt_vm_exit;

/* Waits until the VM has stopped (any vmt_exit_kind but NONE) or timeout
 * (0 = forever, returns VMT_ETIMEDOUT).  *out receives the exit. */
int vmt_vm_wait(vmt_vm *vm, uint64_t timeout_ns, vmt_vm_exit *out);
/* Asks every vCPU thread to end (VMT_EXIT_STOPPED) and joins them. */
int vmt_vm_request_stop(vmt_vm *vm);
const char *vmt_exit_kind_name(vmt_exit_kind k);

/* ---- guest RAM -------------------------------------------------------- */

/* Host mapping of all guest RAM, `*size` bytes; valid until destroy. */
uint8_t *vmt_vm_ram(vmt_vm *vm, uint64_t *size);
int vmt_vm_ram_fd(const vmt_vm *vm);
/* Whether RAM got 2 MiB pages (config huge_pages and the host allowed it). */
bool vmt_vm_ram_huge(const vmt_vm *vm);
uint64_t vmt_vm_ram_pages(const vmt_vm *vm);
/* Guest-physical address -> offset into RAM; VMT_ERANGE outside RAM. */
int vmt_vm_gpa_to_ram(const vmt_vm *vm, uint64_t gpa, uint64_t len, uint64_t *off);
/* Writes into guest RAM at a RAM offset; the pages are reported dirty. */
int vmt_vm_write_ram(vmt_vm *vm, uint64_t off, const void *buf, size_t len);
/* Marks RAM pages [first, first+n) dirty (after writing through vmt_vm_ram). */
void vmt_vm_mark_dirty(vmt_vm *vm, uint64_t first_page, uint64_t npages);

/* ---- dirty tracking --------------------------------------------------- */

#define VMT_DIRTY_START_ALL 1u /* the first sync reports every page */

/*
 * Starts dirty logging on every slot.  Without VMT_DIRTY_START_ALL, a sync
 * reports exactly the pages written after start (by the guest or through
 * vmt_vm_write_ram); with it, the first sync also reports every page, which
 * is cheap with KVM_DIRTY_LOG_INITIALLY_SET (pages are write-protected as they
 * are cleared rather than all at start).
 */
int vmt_dirty_start(vmt_vm *vm, unsigned flags);
/*
 * ORs into `bitmap` (one bit per RAM page, `nbits` >= vmt_vm_ram_pages) every
 * page written since the previous sync (or start) and re-arms tracking for
 * them before returning, so a page written after this call is reported by the
 * next one.  *ndirty (may be NULL) receives the number of pages reported.
 */
int vmt_dirty_sync(vmt_vm *vm, uint64_t *bitmap, uint64_t nbits, uint64_t *ndirty);
int vmt_dirty_stop(vmt_vm *vm);
bool vmt_dirty_active(vmt_vm *vm);
vmt_dirty_mode vmt_vm_dirty_mode(const vmt_vm *vm);

/* ---- state ------------------------------------------------------------ */

#define VMT_XSAVE_MAX 16384u
#define VMT_MAX_MSRS 256u

typedef struct vmt_msr {
    uint32_t index;
    uint32_t pad;
    uint64_t data;
} vmt_msr;

/* One vCPU's whole architectural state.  Plain data, no pointers. */
typedef struct vmt_vcpu_state {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xcrs xcrs;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp_state;
    struct kvm_debugregs debugregs;
    struct kvm_lapic_state lapic;
    uint32_t has_lapic;
    uint32_t xsave_size;
    uint8_t xsave[VMT_XSAVE_MAX];
    uint32_t nr_msrs;
    uint32_t pad;
    vmt_msr msrs[VMT_MAX_MSRS];
} vmt_vcpu_state;

/* 8250 UART registers (the divisor latch and scratch included). */
typedef struct vmt_serial_state {
    uint8_t ier, iir, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
} vmt_serial_state;

/* Everything VM-wide that is not RAM or per-vCPU. Plain data. */
typedef struct vmt_vm_state {
    uint64_t mem_size;
    uint32_t nr_vcpus;
    uint32_t has_irqchip;
    struct kvm_clock_data clock;
    vmt_serial_state serial;
    struct kvm_irqchip pic_master, pic_slave, ioapic;
    struct kvm_pit_state2 pit;
} vmt_vm_state;

/* The VM must be paused (or not started) for get/set. */
int vmt_vcpu_get_state(vmt_vm *vm, unsigned idx, vmt_vcpu_state *out);
int vmt_vcpu_set_state(vmt_vm *vm, unsigned idx, const vmt_vcpu_state *st);
int vmt_vm_get_state(vmt_vm *vm, vmt_vm_state *out);
/* Refuses a state whose mem_size, nr_vcpus or irqchip differ from the VM's. */
int vmt_vm_set_state(vmt_vm *vm, const vmt_vm_state *st);
unsigned vmt_vm_vcpus(const vmt_vm *vm);

#ifdef __cplusplus
}
#endif
#endif
