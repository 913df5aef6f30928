/*
 * vmtree guest runtime: ring-0 setup.
 *
 * Guest CPL0 instructions may be emulated by the host (~0.5 us each), so
 * this file does the least that lets ring 3 run: page tables (1 GiB pages,
 * or 2 MiB pages where CPUID lacks pdpe1gb), GDT with one TSS per vCPU whose
 * I/O bitmap opens the ports the guests use, an IDT for exceptions 0..31,
 * then iretq to ring 3.  Everything here lives in .text.ring0.  The
 * secondary vCPUs wait for vCPU 0 to build the shared tables and then only
 * load them.  A measured budget is in docs/guests.md.
 */
#include <stddef.h>
#include <stdint.h>

#include "rt_layout.h"

#define R0 __attribute__((section(".text.ring0")))

_Static_assert(RT_KSTACK_SIZE == 1 << RT_KSTACK_SHIFT, "rt_entry.S shifts by RT_KSTACK_SHIFT");

/* x86 paging bits. */
#define PTE_P (1ull << 0)
#define PTE_RW (1ull << 1)
#define PTE_US (1ull << 2)
#define PTE_A (1ull << 5)
#define PTE_D (1ull << 6)
#define PTE_PS (1ull << 7)
/* A and D are set up front so the CPU never writes the tables back. */
#define PTE_TABLE (PTE_P | PTE_RW | PTE_US | PTE_A)
#define PTE_LEAF (PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | PTE_PS)

#define CR4_TSD (1ull << 2)
#define CR4_SMEP (1ull << 20)
#define CR4_SMAP (1ull << 21)

/* The 64-bit TSS with an I/O permission bitmap for ports 0..0x3ff. */
struct rt_tss {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
    uint8_t iomap[128 + 1]; /* one bit per port, 1 = denied; 0xff terminator */
    uint8_t pad[23];
} __attribute__((packed, aligned(8)));

_Static_assert(sizeof(struct rt_tss) == 256, "TSS slot size");
#define RT_TSS_LIMIT (offsetof(struct rt_tss, iomap) + 129 - 1)

/*
 * Allowed: 0xf4 (exit, byte 0x1e bit 4), 0xf8..0xfb (event, out32, byte 0x1f
 * bits 0..3), 0x3f8..0x3ff (COM1, byte 0x7f).
 */
#define RT_TSS_INIT                                                                                \
    {                                                                                              \
        .iomap_base = offsetof(struct rt_tss, iomap),                                              \
        .iomap = {[0 ... 0x1d] = 0xff,    [0x1e] = 0xef, [0x1f] = 0xf0,                            \
                  [0x20 ... 0x7e] = 0xff, [0x7f] = 0x00, [0x80] = 0xff},                           \
    }

struct rt_idt_gate {
    uint16_t off0;
    uint16_t sel;
    uint8_t ist;
    uint8_t type;
    uint16_t off1;
    uint32_t off2;
    uint32_t reserved;
};

/* The stubs' addresses are link-time constants (guest.ld): a static IDT. */
#define RT_ISR(v) (RT_ISR_STUBS_ADDR + (v)*RT_ISR_STUB_SIZE)
#define RT_GATE(v)                                                                                 \
    {                                                                                              \
        .off0 = RT_ISR(v) & 0xffff, .sel = RT_SEL_KCODE, .type = 0x8e,                             \
        .off1 = (RT_ISR(v) >> 16) & 0xffff                                                         \
    }
#define RT_GATES8(v)                                                                               \
    RT_GATE(v), RT_GATE(v + 1), RT_GATE(v + 2), RT_GATE(v + 3), RT_GATE(v + 4), RT_GATE(v + 5),    \
        RT_GATE(v + 6), RT_GATE(v + 7)

/* Present, DPL0, 64-bit interrupt gates; vectors >= 32 lie past the limit. */
static const struct rt_idt_gate rt_idt[RT_NR_EXCEPTIONS]
    __attribute__((aligned(16))) = {RT_GATES8(0), RT_GATES8(8), RT_GATES8(16), RT_GATES8(24)};

struct rt_desc_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

/* Shared with rt_entry.S and rt.c. */
/* Own sections: guest.ld puts them at fixed addresses. */
uint8_t rt_kstack[RT_MAX_CPUS][RT_KSTACK_SIZE]
    __attribute__((section(".bss.rt_kstack"), aligned(4096)));
uint8_t rt_ustack[RT_MAX_CPUS][RT_USTACK_SIZE]
    __attribute__((section(".bss.rt_ustack"), aligned(4096)));
/* Page directories for GiB 1 and up (2 MiB fallback only). */
#define rt_pd_hi ((uint64_t *)RT_PD_HIGH_ADDR)
const uint8_t *rt_boot_params; /* written once by vCPU 0 */
const char *rt_cmdline = "";   /* written once by vCPU 0 */

void rt_map_high(void);
void rt_wait_mapped(void);
void rt_boot(uint64_t cpu, const uint8_t *bp) __attribute__((noreturn));
void rt_fault(uint64_t vector, uint64_t err, uint64_t rip, uint64_t cr2, uint64_t cs)
    __attribute__((noreturn));
void rt_enter_user(uint64_t cpu, const char *cmdline, uint64_t rsp) __attribute__((noreturn));

/*
 * The first GiB's 2 MiB mappings and the PML4 are the same for every RAM
 * size: static data, no ring-0 work.  Only PDPT entries are written at boot.
 */
#define PD_E(i) ((uint64_t)(i) << 21 | PTE_LEAF)
#define PD_E8(i)                                                                                   \
    PD_E(i), PD_E(i + 1), PD_E(i + 2), PD_E(i + 3), PD_E(i + 4), PD_E(i + 5), PD_E(i + 6),         \
        PD_E(i + 7)
#define PD_E64(i)                                                                                  \
    PD_E8(i), PD_E8(i + 8), PD_E8(i + 16), PD_E8(i + 24), PD_E8(i + 32), PD_E8(i + 40),            \
        PD_E8(i + 48), PD_E8(i + 56)
static uint64_t rt_pd0[512] __attribute__((section(".data.rt_tables"), aligned(4096))) = {
    PD_E64(0),   PD_E64(64),  PD_E64(128), PD_E64(192),
    PD_E64(256), PD_E64(320), PD_E64(384), PD_E64(448)};
static uint64_t rt_pdpt[512] __attribute__((aligned(4096)));
static uint64_t rt_pml4[512]
    __attribute__((section(".data.rt_tables"), aligned(4096))) = {(uint64_t)rt_pdpt + PTE_TABLE};
static uint64_t rt_pd_gigs; /* GiB mapped with 2 MiB pages; 0 with 1 GiB pages */
static volatile uint32_t rt_map_done;
static volatile uint32_t rt_boot_done;
static volatile uint32_t rt_fault_lock;

static struct rt_tss rt_tss[RT_MAX_CPUS]
    __attribute__((section(".data.rt_tables"))) = {[0 ... RT_MAX_CPUS - 1] = RT_TSS_INIT};

/* Accessed bits preset: the CPU does not write descriptors it loads. */
static uint64_t rt_gdt[RT_GDT_ENTRIES] __attribute__((section(".data.rt_tables"), aligned(16))) = {
    0,
    0x00af9b000000ffffull, /* 0x08 kernel code64 */
    0x00cf93000000ffffull, /* 0x10 kernel data */
    0x00cff3000000ffffull, /* 0x18 user data, DPL3 */
    0x00affb000000ffffull, /* 0x20 user code64, DPL3 */
};

R0 static uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}

R0 static uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}

/* Highest end of an e820 RAM range; 4 GiB if the table is empty. */
R0 static uint64_t e820_ram_end(const uint8_t *bp)
{
    unsigned n = bp[RT_BP_E820_ENTRIES];
    uint64_t end = 0;

    if (n > RT_BP_E820_MAX)
        n = RT_BP_E820_MAX;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *e = bp + RT_BP_E820_TABLE + 20 * i;
        uint64_t last = load64(e) + load64(e + 8);
        if (load32(e + 16) == RT_E820_RAM && last > end)
            end = last;
    }
    return end ? end : 4ull << 30;
}

R0 static int has_1g_pages(void)
{
    uint32_t a, b, c, d;

    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x80000000u), "c"(0));
    if (a < 0x80000001u)
        return 0;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x80000001u), "c"(0));
    return (d >> 26) & 1;
}

/*
 * Identity map [0, end) with user, writable pages under one PML4 entry.
 * With 1 GiB pages: one PDPT entry per GiB (at most 65 for 64 GiB of RAM).
 * Without: the first GiB's page directory is static (rt_pd0), ring 0
 * points the PDPT at it and at the other directories, and rt_map_high()
 * fills those from ring 3, at native speed, before any workload code runs
 * and before anything touches memory above 1 GiB.
 */
R0 static void build_page_tables(uint64_t end)
{
    uint64_t gigs = (end + (1ull << 30) - 1) >> 30;

    if (has_1g_pages()) {
        if (gigs > 512)
            gigs = 512;
        for (uint64_t g = 0; g < gigs; g++)
            rt_pdpt[g] = (g << 30) | PTE_LEAF;
    } else {
        if (gigs > RT_PD_HIGH_PAGES + 1)
            gigs = RT_PD_HIGH_PAGES + 1;
        rt_pdpt[0] = (uint64_t)rt_pd0 | PTE_TABLE;
        for (uint64_t g = 1; g < gigs; g++)
            rt_pdpt[g] = (uint64_t)&rt_pd_hi[(g - 1) * 512] | PTE_TABLE;
        rt_pd_gigs = gigs;
    }
}

/*
 * Ring 3, vCPU 0, before guest_main: GiB 1 and up with 2 MiB pages.  The
 * directories are written whole (mapping the last GiB past the end of RAM,
 * as 1 GiB pages would), so their previous contents do not matter.
 */
void rt_map_high(void)
{
    for (uint64_t i = 512; i < rt_pd_gigs * 512; i++)
        rt_pd_hi[i - 512] = (i << 21) | PTE_LEAF;
    __atomic_store_n(&rt_map_done, 1, __ATOMIC_RELEASE);
}

R0 static const char *find_cmdline(const uint8_t *bp)
{
    uint64_t p = load32(bp + RT_BP_CMDLINE_PTR) | (uint64_t)load32(bp + RT_BP_EXT_CMDLINE_PTR)
                                                      << 32;
    return p ? (const char *)p : "";
}

/* Loads the shared tables and this vCPU's TSS. */
R0 static void load_cpu(uint64_t cpu)
{
    struct rt_desc_ptr gdtr = {sizeof(rt_gdt) - 1, (uint64_t)rt_gdt};
    struct rt_desc_ptr idtr = {sizeof(rt_idt) - 1, (uint64_t)rt_idt};
    uint64_t tss = (uint64_t)&rt_tss[cpu];
    uint64_t cr4;

    /* SMEP/SMAP would forbid ring 0 from using the (user) pages; TSD rdtsc. */
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    if (cr4 & (CR4_TSD | CR4_SMEP | CR4_SMAP))
        __asm__ volatile("mov %0, %%cr4" ::"r"(cr4 & ~(CR4_TSD | CR4_SMEP | CR4_SMAP)));
    __asm__ volatile("mov %0, %%cr3" ::"r"((uint64_t)rt_pml4) : "memory");

    rt_tss[cpu].rsp[0] = (uint64_t)rt_kstack + (cpu + 1) * RT_KSTACK_SIZE;
    rt_gdt[5 + 2 * cpu] =
        RT_TSS_LIMIT | (tss & 0xffffff) << 16 | 0x89ull << 40 | ((tss >> 24) & 0xff) << 56;
    rt_gdt[6 + 2 * cpu] = tss >> 32;

    __asm__ volatile("lgdt %0" ::"m"(gdtr) : "memory");
    __asm__ volatile("pushq %0\n\t"
                     "leaq 1f(%%rip), %%rax\n\t"
                     "pushq %%rax\n\t"
                     "lretq\n"
                     "1:\n\t"
                     "mov %1, %%ss\n\t"
                     "mov %2, %%ds\n\t"
                     "mov %2, %%es\n\t"
                     "mov %2, %%fs\n\t"
                     "mov %2, %%gs"
                     :
                     : "i"(RT_SEL_KCODE), "r"(RT_SEL_KDATA), "r"(0)
                     : "rax", "memory");
    __asm__ volatile("lidt %0" ::"m"(idtr));
    __asm__ volatile("ltr %w0" ::"r"(RT_SEL_TSS0 + 16 * cpu));
}

R0 void rt_boot(uint64_t cpu, const uint8_t *bp)
{
    if (cpu == 0) {
        build_page_tables(e820_ram_end(bp));
        rt_boot_params = bp;
        rt_cmdline = find_cmdline(bp);
        __asm__ volatile("" ::: "memory");
        rt_boot_done = 1;
    } else {
        while (!rt_boot_done)
            __asm__ volatile("pause");
    }
    load_cpu(cpu);
    rt_enter_user(cpu, rt_cmdline, (uint64_t)rt_ustack + (cpu + 1) * RT_USTACK_SIZE);
}

/* Ring 3, vCPUs other than 0: waits for rt_map_high(). */
void rt_wait_mapped(void)
{
    while (!__atomic_load_n(&rt_map_done, __ATOMIC_ACQUIRE))
        __asm__ volatile("pause");
}

/* ---- the fatal exception path (ring 0, so as short as it can be) ------ */

R0 static void r0_putc(char c)
{
    uint8_t lsr;

    do
        __asm__ volatile("inb %1, %0" : "=a"(lsr) : "Nd"((uint16_t)(RT_PORT_COM1 + 5)));
    while (!(lsr & 0x20));
    __asm__ volatile("outb %0, %1" ::"a"(c), "Nd"((uint16_t)RT_PORT_COM1));
}

R0 static void r0_puts(const char *s)
{
    while (*s)
        r0_putc(*s++);
}

R0 static void r0_puthex(uint64_t v)
{
    int shift = 60;

    r0_puts("0x");
    while (shift > 0 && !(v >> shift))
        shift -= 4;
    for (; shift >= 0; shift -= 4)
        r0_putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

R0 static void r0_putdec(uint64_t v)
{
    char buf[24];
    int i = 0;

    do
        buf[i++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (i > 0)
        r0_putc(buf[--i]);
}

/*
 * Called by rt_isr_common for any exception: prints one line on COM1 and
 * stops the VM with status RT_STATUS_FAULT + vector.
 */
R0 void rt_fault(uint64_t vector, uint64_t err, uint64_t rip, uint64_t cr2, uint64_t cs)
{
    uint16_t tr;

    /* Bounded wait: a vCPU that faulted while holding it must not hang us. */
    for (unsigned i = 0; i < 100000 && __atomic_exchange_n(&rt_fault_lock, 1, __ATOMIC_ACQUIRE);
         i++)
        __asm__ volatile("pause");
    __asm__ volatile("str %0" : "=r"(tr));
    r0_puts("guest: fault vector ");
    r0_putdec(vector);
    r0_puts(" err ");
    r0_puthex(err);
    r0_puts(" rip ");
    r0_puthex(rip);
    r0_puts(" cr2 ");
    r0_puthex(cr2);
    r0_puts(" cpl ");
    r0_putdec(cs & 3);
    r0_puts(" cpu ");
    r0_putdec(tr >= RT_SEL_TSS0 ? (uint64_t)(tr - RT_SEL_TSS0) / 16 : 0);
    r0_putc('\n');
    __asm__ volatile("outb %0, %1" ::"a"((uint8_t)(RT_STATUS_FAULT + vector)),
                     "Nd"((uint16_t)RT_PORT_EXIT));
    for (;;)
        __asm__ volatile("cli; hlt");
}
