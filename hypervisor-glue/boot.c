/*
 * ELF64 loader and Linux-64-bit-boot-protocol entry state: identity page
 * tables over all RAM, a boot GDT, boot_params (e820 + command line) at
 * VMT_BOOT_PARAMS_ADDR in RSI, 64-bit long mode at CPL0 with interrupts off.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm_internal.h"

#define MAX_PHDRS 64
#define GDT_CODE64 0x00af9b000000ffffull
#define GDT_DATA 0x00cf93000000ffffull
#define BOOT_CS 0x10
#define BOOT_DS 0x18
#define PTE_P 0x1ull
#define PTE_RW 0x2ull
#define PTE_PS 0x80ull
#define CR0_PE 0x1ull
#define CR0_MP 0x2ull
#define CR0_ET 0x10ull
#define CR0_NE 0x20ull
#define CR0_WP 0x10000ull
#define CR0_PG 0x80000000ull
#define CR4_PAE 0x20ull
#define CR4_OSFXSR 0x200ull
#define CR4_OSXMMEXCPT 0x400ull
#define EFER_LME 0x100ull
#define EFER_LMA 0x400ull

/* Offsets in struct boot_params (Documentation/arch/x86/zero-page.rst). */
#define BP_E820_ENTRIES 0x1e8
#define BP_SETUP_SECTS 0x1f1
#define BP_BOOT_FLAG 0x1fe
#define BP_HEADER 0x202
#define BP_VERSION 0x206
#define BP_TYPE_OF_LOADER 0x210
#define BP_CMD_LINE_PTR 0x228
#define BP_CMDLINE_SIZE 0x238
#define BP_E820_TABLE 0x2d0
#define E820_MAX 128
#define E820_RAM 1

typedef struct __attribute__((packed)) e820_entry {
    uint64_t addr, size;
    uint32_t type;
} e820_entry;

typedef struct elf_image {
    uint8_t *data;
    size_t size;
    const char *path;
} elf_image;

static int read_file(const char *path, uint64_t cap, elf_image *img)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vmt_error_errno(errno == ENOENT ? VMT_ENOENT : VMT_EIO, errno, "%s", path);
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = vmt_error_errno(VMT_EIO, errno, "%s", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = vmt_error_set(VMT_EINVAL, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > cap) {
        rc = vmt_error_set(VMT_ERANGE, "%s: %lld bytes is larger than guest RAM", path,
                           (long long)st.st_size);
        goto out;
    }
    img->size = (size_t)st.st_size;
    img->data = malloc(img->size ? img->size : 1);
    if (!img->data) {
        rc = vmt_error_set(VMT_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    size_t got = 0;
    while (got < img->size) {
        ssize_t n = pread(fd, img->data + got, img->size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = vmt_error_errno(VMT_EIO, n < 0 ? errno : EIO, "%s: read", path);
            goto out;
        }
        got += (size_t)n;
    }
out:
    close(fd);
    return rc;
}

static int check_ehdr(const elf_image *img, const Elf64_Ehdr **out)
{
    const char *p = img->path;
    if (img->size < EI_NIDENT || memcmp(img->data, ELFMAG, SELFMAG) != 0)
        return vmt_error_set(VMT_EINVAL, "%s: not an ELF file", p);
    if (img->data[EI_CLASS] != ELFCLASS64)
        return vmt_error_set(VMT_EINVAL, "%s: a 32-bit ELF; vmtree loads only 64-bit (ELFCLASS64)",
                             p);
    if (img->size < sizeof(Elf64_Ehdr))
        return vmt_error_set(VMT_EINVAL, "%s: truncated ELF header", p);
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)img->data;
    if (img->data[EI_DATA] != ELFDATA2LSB || img->data[EI_VERSION] != EV_CURRENT)
        return vmt_error_set(VMT_EINVAL, "%s: not a little-endian ELF version 1", p);
    if (eh->e_machine != EM_X86_64)
        return vmt_error_set(VMT_EINVAL, "%s: machine %u is not x86-64", p, eh->e_machine);
    if (eh->e_type != ET_EXEC)
        return vmt_error_set(VMT_EINVAL, "%s: ELF type %u is not an executable (ET_EXEC)", p,
                             eh->e_type);
    if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 || eh->e_phnum > MAX_PHDRS)
        return vmt_error_set(VMT_EINVAL, "%s: bad program header table (%u entries of %u bytes)",
                             p, eh->e_phnum, eh->e_phentsize);
    if (eh->e_phoff > img->size ||
        (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > img->size - eh->e_phoff)
        return vmt_error_set(VMT_EINVAL, "%s: program headers lie outside the file", p);
    *out = eh;
    return 0;
}

static int check_segment(vmt_vm *vm, const elf_image *img, const Elf64_Phdr *ph, unsigned i)
{
    const char *p = img->path;
    uint64_t off;
    if (ph->p_filesz > ph->p_memsz)
        return vmt_error_set(VMT_EINVAL, "%s: segment %u has file size > memory size", p, i);
    if (ph->p_offset > img->size || ph->p_filesz > img->size - ph->p_offset)
        return vmt_error_set(VMT_EINVAL, "%s: segment %u lies outside the file", p, i);
    if (ph->p_paddr < VMT_BOOT_RESERVED_END)
        return vmt_error_set(VMT_EINVAL,
                             "%s: segment %u at 0x%llx overlaps the boot structures below 0x%llx",
                             p, i, (unsigned long long)ph->p_paddr,
                             (unsigned long long)VMT_BOOT_RESERVED_END);
    if (vmt_vm_gpa_to_ram(vm, ph->p_paddr, ph->p_memsz, &off) != 0)
        return vmt_error_set(VMT_ERANGE,
                             "%s: segment %u (0x%llx, %llu bytes) lies outside guest RAM "
                             "(%llu MiB)",
                             p, i, (unsigned long long)ph->p_paddr,
                             (unsigned long long)ph->p_memsz,
                             (unsigned long long)(vm->ram_size >> 20));
    return 0;
}

static int check_overlaps(const elf_image *img, const Elf64_Phdr *ph, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (ph[i].p_type != PT_LOAD)
            continue;
        for (unsigned j = i + 1; j < n; j++) {
            if (ph[j].p_type != PT_LOAD)
                continue;
            if (ph[i].p_paddr < ph[j].p_paddr + ph[j].p_memsz &&
                ph[j].p_paddr < ph[i].p_paddr + ph[i].p_memsz)
                return vmt_error_set(VMT_EINVAL, "%s: segments %u and %u overlap", img->path,
                                     i, j);
        }
    }
    return 0;
}

static int load_segments(vmt_vm *vm, const elf_image *img, uint64_t *entry)
{
    const Elf64_Ehdr *eh = NULL;
    int rc = check_ehdr(img, &eh);
    if (rc)
        return rc;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(img->data + eh->e_phoff);
    unsigned nload = 0;
    bool entry_ok = false;
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD)
            continue;
        if ((rc = check_segment(vm, img, &ph[i], i)) != 0)
            return rc;
        nload++;
        if (eh->e_entry >= ph[i].p_paddr && eh->e_entry - ph[i].p_paddr < ph[i].p_memsz &&
            (ph[i].p_flags & PF_X))
            entry_ok = true;
    }
    if (nload == 0)
        return vmt_error_set(VMT_EINVAL, "%s: no loadable segment", img->path);
    if (!entry_ok)
        return vmt_error_set(VMT_EINVAL, "%s: entry point 0x%llx is not in an executable segment",
                             img->path, (unsigned long long)eh->e_entry);
    if ((rc = check_overlaps(img, ph, eh->e_phnum)) != 0)
        return rc;
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        uint64_t off;
        if (ph[i].p_type != PT_LOAD)
            continue;
        vmt_vm_gpa_to_ram(vm, ph[i].p_paddr, ph[i].p_memsz, &off);
        vmt_vm_write_ram(vm, off, img->data + ph[i].p_offset, ph[i].p_filesz);
        memset(vm->ram + off + ph[i].p_filesz, 0, ph[i].p_memsz - ph[i].p_filesz);
        vmt_vm_mark_dirty(vm, off / VMT_PAGE_SIZE,
                          VMT_DIV_ROUND_UP(off % VMT_PAGE_SIZE + ph[i].p_memsz, VMT_PAGE_SIZE));
    }
    *entry = eh->e_entry;
    return 0;
}

static void put64(vmt_vm *vm, uint64_t gpa, uint64_t v)
{
    vmt_vm_write_ram(vm, gpa, &v, sizeof(v)); /* low RAM: gpa == RAM offset */
}

static uint64_t max_gpa(const vmt_vm *vm)
{
    const vmm_slot *last = &vm->slots[vm->nslots - 1];
    return last->gpa + last->size;
}

static void write_page_tables(vmt_vm *vm)
{
    uint64_t npd = VMT_DIV_ROUND_UP(max_gpa(vm), 1ull << 30);
    put64(vm, VMT_BOOT_PML4_ADDR, VMT_BOOT_PDPT_ADDR | PTE_P | PTE_RW);
    for (uint64_t i = 0; i < npd; i++) {
        uint64_t pd = VMT_BOOT_PD_ADDR + i * VMT_PAGE_SIZE;
        uint64_t ent[512];
        put64(vm, VMT_BOOT_PDPT_ADDR + i * 8, pd | PTE_P | PTE_RW);
        for (uint64_t j = 0; j < 512; j++)
            ent[j] = ((i * 512 + j) << 21) | PTE_P | PTE_RW | PTE_PS;
        vmt_vm_write_ram(vm, pd, ent, sizeof(ent));
    }
}

static void write_boot_params(vmt_vm *vm, size_t cmdlen)
{
    uint8_t bp[4096] = {0};
    uint32_t u32;
    uint16_t u16;
    uint8_t n = 0;
    e820_entry e820[E820_MAX];

    e820[n++] = (e820_entry){0, 0xa0000, E820_RAM};
    uint64_t low_end = vm->slots[0].size;
    if (low_end > VMT_BOOT_RESERVED_END)
        e820[n++] = (e820_entry){VMT_BOOT_RESERVED_END, low_end - VMT_BOOT_RESERVED_END,
                                      E820_RAM};
    if (vm->nslots > 1)
        e820[n++] = (e820_entry){vm->slots[1].gpa, vm->slots[1].size, E820_RAM};
    bp[BP_E820_ENTRIES] = n;
    memcpy(bp + BP_E820_TABLE, e820, n * sizeof(e820[0]));
    bp[BP_SETUP_SECTS] = 0;
    u16 = 0xaa55;
    memcpy(bp + BP_BOOT_FLAG, &u16, 2);
    memcpy(bp + BP_HEADER, "HdrS", 4);
    u16 = 0x020f;
    memcpy(bp + BP_VERSION, &u16, 2);
    bp[BP_TYPE_OF_LOADER] = 0xff;
    u32 = (uint32_t)VMT_BOOT_CMDLINE_ADDR;
    memcpy(bp + BP_CMD_LINE_PTR, &u32, 4);
    u32 = (uint32_t)cmdlen;
    memcpy(bp + BP_CMDLINE_SIZE, &u32, 4);
    vmt_vm_write_ram(vm, VMT_BOOT_PARAMS_ADDR, bp, sizeof(bp));
}

static void set_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
    memset(s, 0, sizeof(*s));
    s->selector = sel;
    s->limit = 0xfffff;
    s->type = type;
    s->present = 1;
    s->s = 1;
    s->g = 1;
    s->l = code;
    s->db = !code;
}

static int set_entry_state(vmm_vcpu *vc, uint64_t entry)
{
    struct kvm_sregs sr;
    if (ioctl(vc->fd, KVM_GET_SREGS, &sr) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_GET_SREGS on vCPU %u", vc->idx);
    set_seg(&sr.cs, BOOT_CS, 11, true);
    set_seg(&sr.ds, BOOT_DS, 3, false);
    sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
    sr.gdt.base = VMT_BOOT_GDT_ADDR;
    sr.gdt.limit = 4 * 8 - 1;
    sr.idt.base = 0;
    sr.idt.limit = 0;
    sr.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sr.cr3 = VMT_BOOT_PML4_ADDR;
    sr.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sr.efer = EFER_LME | EFER_LMA;
    if (ioctl(vc->fd, KVM_SET_SREGS, &sr) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_SET_SREGS on vCPU %u", vc->idx);
    struct kvm_regs r = {
        .rip = entry,
        .rsi = VMT_BOOT_PARAMS_ADDR,
        .rdi = vc->idx,
        .rsp = VMT_BOOT_STACKS_ADDR + (vc->idx + 1) * VMT_BOOT_STACK_SIZE - 16,
        .rflags = 0x2,
    };
    if (ioctl(vc->fd, KVM_SET_REGS, &r) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_SET_REGS on vCPU %u", vc->idx);
    struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
    if (ioctl(vc->fd, KVM_SET_FPU, &fpu) < 0)
        return vmt_error_errno(VMT_EIO, errno, "KVM_SET_FPU on vCPU %u", vc->idx);
    return 0;
}

int vmt_vm_load_elf(vmt_vm *vm, const char *path, const char *cmdline)
{
    elf_image img = {.path = path};
    uint64_t entry = 0;
    size_t cmdlen = cmdline ? strlen(cmdline) : 0;
    int rc;

    if (cmdlen >= VMT_BOOT_CMDLINE_MAX)
        return vmt_error_set(VMT_ERANGE, "command line of %zu bytes exceeds the limit of %u",
                             cmdlen, VMT_BOOT_CMDLINE_MAX - 1);
    if (vm->running)
        return vmt_error_set(VMT_EBUSY, "cannot load an image into a running VM");
    if ((rc = read_file(path, vm->ram_size, &img)) != 0)
        goto out;
    if ((rc = load_segments(vm, &img, &entry)) != 0)
        goto out;
    uint64_t gdt[4] = {0, 0, GDT_CODE64, GDT_DATA};
    vmt_vm_write_ram(vm, VMT_BOOT_GDT_ADDR, gdt, sizeof(gdt));
    write_page_tables(vm);
    write_boot_params(vm, cmdlen);
    char zero = 0;
    vmt_vm_write_ram(vm, VMT_BOOT_CMDLINE_ADDR, cmdline ? cmdline : "", cmdlen);
    vmt_vm_write_ram(vm, VMT_BOOT_CMDLINE_ADDR + cmdlen, &zero, 1);
    for (unsigned i = 0; i < vm->nvcpus; i++)
        if ((rc = set_entry_state(&vm->vcpus[i], entry)) != 0)
            goto out;
out:
    free(img.data);
    return rc;
}
