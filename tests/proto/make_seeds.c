/*
 * Writes the seed corpus of fuzz_proto_state (fuzz/corpus/proto_state/):
 * valid blobs of a few representative shapes.  Not a test; rebuild the
 * seeds after a format change with
 *   make proto_make_seeds && ./tests/proto_make_seeds ../fuzz/corpus/proto_state
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmtree/proto.h"

#define CR0_PE 0x1ull
#define CR0_PG 0x80000000ull
#define EFER_LME 0x100ull
#define EFER_LMA 0x400ull

/* A vCPU as the VMM leaves it in 64-bit mode, with some activity. */
static void long_mode_vcpu(vmt_vcpu_state *st, unsigned idx, uint32_t xsave, uint32_t msrs)
{
    memset(st, 0, sizeof(*st));
    st->regs.rip = 0x200000 + idx * 0x40;
    st->regs.rsp = 0x60000 + (idx + 1) * 0x400;
    st->regs.rdi = idx;
    st->regs.rsi = 0x7000;
    st->regs.rflags = 0x202;
    st->sregs.cr0 = CR0_PE | CR0_PG | 0x10;
    st->sregs.cr3 = 0x9000;
    st->sregs.cr4 = 0x20 | 0x200;
    st->sregs.efer = EFER_LME | EFER_LMA;
    st->sregs.apic_base = 0xfee00900;
    st->sregs.cs = (struct kvm_segment){
        .limit = 0xffffffff, .selector = 0x8, .type = 11, .present = 1, .s = 1, .l = 1, .g = 1};
    st->sregs.ds = (struct kvm_segment){
        .limit = 0xffffffff, .selector = 0x10, .type = 3, .present = 1, .s = 1, .db = 1, .g = 1};
    st->sregs.es = st->sregs.fs = st->sregs.gs = st->sregs.ss = st->sregs.ds;
    st->sregs.tr = (struct kvm_segment){
        .base = 0x1000, .limit = 0x67, .selector = 0x28, .type = 11, .present = 1};
    st->sregs.ldt.unusable = 1;
    st->sregs.gdt = (struct kvm_dtable){.base = 0x500, .limit = 0x2f};
    st->xcrs.nr_xcrs = 1;
    st->xcrs.xcrs[0].value = 7;
    st->events.flags = KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_NMI_PENDING;
    st->debugregs.dr6 = 0xffff0ff0;
    st->debugregs.dr7 = 0x400;
    st->mp_state.mp_state = idx ? KVM_MP_STATE_HALTED : KVM_MP_STATE_RUNNABLE;
    st->xsave_size = xsave;
    for (uint32_t i = 0; i < xsave; i += 64)
        st->xsave[i] = (uint8_t)(i >> 6);
    st->nr_msrs = msrs;
    for (uint32_t i = 0; i < msrs; i++) {
        st->msrs[i].index = i < 8 ? 0xc0000080 + i : 0x10 + i;
        st->msrs[i].data = (uint64_t)i * 0x1001;
    }
}

static int write_seed(const char *dir, const char *name, vmt_vm_state *vm, vmt_vcpu_state *vcpus,
                      unsigned n)
{
    char path[4096];
    uint8_t *blob = NULL;
    size_t len = 0;

    vm->nr_vcpus = n;
    if (vmt_state_encode(vm, vcpus, n, &blob, &len) != 0) {
        fprintf(stderr, "%s: %s\n", name, vmt_error_last());
        return 1;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int bad = !f || fwrite(blob, 1, len, f) != len;
    if (f && fclose(f) != 0)
        bad = 1;
    free(blob);
    if (bad)
        perror(path);
    else
        printf("%s: %zu bytes\n", path, len);
    return bad;
}

int main(int argc, char **argv)
{
    vmt_vm_state vm;
    vmt_vcpu_state *v = calloc(4, sizeof(*v));
    int bad = 0;

    if (argc != 2 || !v) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    memset(&vm, 0, sizeof(vm));
    vm.mem_size = 2u << 20;
    bad |= write_seed(argv[1], "minimal", &vm, v, 1);

    vm.mem_size = 256u << 20;
    vm.clock.clock = 123456789;
    vm.clock.flags = KVM_CLOCK_TSC_STABLE;
    vm.serial = (vmt_serial_state){.lcr = 3, .mcr = 8, .lsr = 0x60, .iir = 1, .dll = 1};
    long_mode_vcpu(&v[0], 0, 1024, 12);
    bad |= write_seed(argv[1], "one_vcpu_long_mode", &vm, v, 1);

    vm.has_irqchip = 1;
    vm.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
    vm.pic_master.chip.pic.imr = 0xfb;
    vm.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    vm.pic_slave.chip.pic.imr = 0xff;
    vm.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
    vm.ioapic.chip.ioapic.base_address = 0xfec00000;
    for (unsigned i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
        vm.ioapic.chip.ioapic.redirtbl[i].bits = 0x10000 | (0x20 + i);
    vm.pit.channels[0].count = 65536;
    vm.pit.channels[0].mode = 2;
    for (unsigned i = 0; i < 4; i++) {
        long_mode_vcpu(&v[i], i, 4096, 24);
        v[i].has_lapic = 1;
        v[i].lapic.regs[0x23] = (char)i; /* APIC ID: bits 24..31 of register 0x20 */
    }
    bad |= write_seed(argv[1], "four_vcpus_irqchip", &vm, v, 4);
    free(v);
    return bad;
}
