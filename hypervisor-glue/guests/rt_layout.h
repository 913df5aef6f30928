/*
 * vmtree guest runtime: layout constants shared by the assembly entry code,
 * the ring-0 setup (rt_boot.c) and the ring-3 library (rt.c).  Plain
 * #defines only, so the .S files can include it too.
 */
#ifndef VMT_GUEST_RT_LAYOUT_H
#define VMT_GUEST_RT_LAYOUT_H

#define RT_MAX_CPUS 64      /* vCPU indexes 0..63; VMT_VM_MAX_VCPUS */
#define RT_KSTACK_SIZE 1024 /* ring-0 stack per vCPU (setup, faults) */
#define RT_KSTACK_SHIFT 10
#define RT_USTACK_SIZE 8192 /* ring-3 stack per vCPU (the workload) */

/*
 * The image (code, data, stacks, the first GiB's page directory) ends below
 * 2 MiB, so even the smallest VM (2 MiB) runs hello.  Only with more than
 * 1 GiB of RAM and no 1 GiB pages does the runtime use the page directories
 * for GiB 1..RT_PD_HIGH_PAGES at RT_PD_HIGH_ADDR (filled once at boot).
 */
#define RT_IMAGE_LIMIT 0x200000
#define RT_PD_HIGH_ADDR 0x200000
#define RT_PD_HIGH_PAGES 65 /* 2 MiB pages map up to 66 GiB */

/* GDT selectors.  Order as SYSRET expects (STAR[63:48] = 0x10). */
#define RT_SEL_KCODE 0x08
#define RT_SEL_KDATA 0x10
#define RT_SEL_UDATA 0x1b /* 0x18 | RPL 3 */
#define RT_SEL_UCODE 0x23 /* 0x20 | RPL 3 */
#define RT_SEL_TSS0 0x28  /* vCPU n: 0x28 + 16 * n */
#define RT_GDT_ENTRIES (5 + 2 * RT_MAX_CPUS)

#define RT_NR_EXCEPTIONS 32
#define RT_ISR_STUB_SIZE 16        /* each exception stub is 16-byte aligned */
#define RT_ISR_STUBS_ADDR 0x100000 /* guest.ld puts the stubs first */

/* Ports (must match VMT_PORT_* in vmtree/vmm.h). */
#define RT_PORT_COM1 0x3f8
#define RT_PORT_EXIT 0xf4
#define RT_PORT_EVENT 0xf8

/* Exit statuses the runtime itself uses. */
#define RT_STATUS_OK 0x00
#define RT_STATUS_BADPARAM 0x02      /* a workload rejected its command line */
#define RT_STATUS_FAULT 0x80         /* + vector: CPU exception 0..31 */
#define RT_STATUS_TOO_MANY_CPUS 0xfd /* vCPU index >= RT_MAX_CPUS */

/* Offsets into the Linux boot_params ("zero page"). */
#define RT_BP_EXT_CMDLINE_PTR 0x0c8
#define RT_BP_E820_ENTRIES 0x1e8
#define RT_BP_CMDLINE_PTR 0x228
#define RT_BP_CMDLINE_SIZE 0x238
#define RT_BP_E820_TABLE 0x2d0
#define RT_BP_E820_MAX 128
#define RT_E820_RAM 1

#endif
