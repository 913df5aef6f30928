/*
 * Human summary of a state blob (`vmtree show`).  Decodes fully first, so
 * it prints only blobs that would restore, and says why otherwise.
 */
#include "proto_internal.h"

#include <stdlib.h>

#define EFER_LMA (1ull << 10)
#define CR0_PE 1ull

static const char *mp_state_name(uint32_t s)
{
    static const char *const names[] = {
        "runnable",   "uninitialized", "init-received", "halted",        "sipi-received", "stopped",
        "check-stop", "operating",     "load",          "ap-reset-hold", "suspended",
    };
    return s < VMT_ARRAY_SIZE(names) ? names[s] : "unknown";
}

static const char *cpu_mode(const struct kvm_sregs *s)
{
    if (s->efer & EFER_LMA)
        return s->cs.l ? "64-bit" : "compatibility";
    return (s->cr0 & CR0_PE) ? "protected" : "real";
}

static void show_vm(FILE *out, const vmt_vm_state *vm)
{
    const vmt_serial_state *u = &vm->serial;

    fprintf(out, "vm: %llu MiB RAM, %u vCPU%s, in-kernel irqchip: %s\n",
            (unsigned long long)(vm->mem_size >> 20), vm->nr_vcpus, vm->nr_vcpus == 1 ? "" : "s",
            vm->has_irqchip ? "yes" : "no");
    fprintf(out, "clock: %llu ns (flags 0x%x)\n", (unsigned long long)vm->clock.clock,
            vm->clock.flags);
    fprintf(out,
            "serial: ier %02x iir %02x lcr %02x mcr %02x lsr %02x msr %02x scr %02x "
            "divisor %u fcr %02x\n",
            u->ier, u->iir, u->lcr, u->mcr, u->lsr, u->msr, u->scr, (unsigned)u->dlm << 8 | u->dll,
            u->fcr);
    if (vm->has_irqchip)
        fprintf(out, "pic: imr %02x/%02x, ioapic id %u, pit mode %u/%u/%u\n",
                vm->pic_master.chip.pic.imr, vm->pic_slave.chip.pic.imr, vm->ioapic.chip.ioapic.id,
                vm->pit.channels[0].mode, vm->pit.channels[1].mode, vm->pit.channels[2].mode);
}

static void show_vcpu(FILE *out, unsigned i, const vmt_vcpu_state *st)
{
    const struct kvm_sregs *s = &st->sregs;

    fprintf(out, "vcpu %u: %s mode, cpl %u, %s, rip 0x%llx rsp 0x%llx rflags 0x%llx\n", i,
            cpu_mode(s), s->cs.selector & 3u, mp_state_name(st->mp_state.mp_state),
            (unsigned long long)st->regs.rip, (unsigned long long)st->regs.rsp,
            (unsigned long long)st->regs.rflags);
    fprintf(out, "  cr0 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx\n", (unsigned long long)s->cr0,
            (unsigned long long)s->cr3, (unsigned long long)s->cr4, (unsigned long long)s->efer);
    fprintf(out, "  xsave %u B, lapic %s, %u MSRs, %u XCRs\n", st->xsave_size,
            st->has_lapic ? "yes" : "no", st->nr_msrs, st->xcrs.nr_xcrs);
}

int vmt_state_describe(const uint8_t *buf, size_t len, FILE *out)
{
    vmt_proto_header_info hdr;
    vmt_vm_state vm;
    unsigned n = 0;

    if (!out)
        return vmt_error_set(VMT_EINVAL, "state describe: NULL output");
    vmt_vcpu_state *vcpus = vmt_callocn(VMT_VM_MAX_VCPUS, sizeof(*vcpus));
    if (!vcpus)
        return VMT_ENOMEM;
    int rc = vmt_proto_state_decode(buf, len, &vm, vcpus, VMT_VM_MAX_VCPUS, &n, &hdr);
    if (rc == 0) {
        fprintf(out, "state blob: format %u.%u, %zu bytes, writer \"%s\"\n", hdr.major, hdr.minor,
                len, hdr.writer);
        show_vm(out, &vm);
        for (unsigned i = 0; i < n; i++)
            show_vcpu(out, i, &vcpus[i]);
        if (fflush(out) != 0 || ferror(out))
            rc = vmt_error_set(VMT_EIO, "state describe: writing the summary failed");
    }
    free(vcpus);
    return rc;
}
