/* hypervisor-glue/state.c: the whole VM state round-trips through a fresh VM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "harness.h"

#define COUNTER_CMD "steps=60 every=1 work=200000"
#define MEM (64ull << 20)

static char *reference_output(vmt_vm_config *cfg)
{
    fx_guest g;
    if (fx_boot(&g, "counter", COUNTER_CMD, cfg) != 0)
        return NULL;
    vmt_vm_start(g.vm);
    vmt_vm_exit ex;
    vmt_vm_wait(g.vm, 60 * FX_SEC, &ex);
    CU_ASSERT_EQUAL(ex.kind, VMT_EXIT_PORT);
    CU_ASSERT_EQUAL(ex.status, 0);
    char *out = vmt_console_buf_dup(g.con, NULL);
    fx_free(&g);
    return out;
}

typedef struct saved {
    vmt_vm_state vm;
    vmt_vcpu_state *vcpus;
    uint8_t *ram;
    uint64_t ram_size;
} saved;

static void save(vmt_vm *vm, saved *s)
{
    unsigned n = vmt_vm_vcpus(vm);
    s->vcpus = calloc(n, sizeof(*s->vcpus));
    CU_ASSERT_EQUAL(vmt_vm_get_state(vm, &s->vm), 0);
    for (unsigned i = 0; i < n; i++)
        CU_ASSERT_EQUAL(vmt_vcpu_get_state(vm, i, &s->vcpus[i]), 0);
    uint8_t *ram = vmt_vm_ram(vm, &s->ram_size);
    s->ram = malloc(s->ram_size);
    memcpy(s->ram, ram, s->ram_size);
}

static void restore(vmt_vm *vm, const saved *s)
{
    uint64_t size;
    uint8_t *ram = vmt_vm_ram(vm, &size);
    CU_ASSERT_EQUAL_FATAL(size, s->ram_size);
    memcpy(ram, s->ram, size);
    CU_ASSERT_EQUAL(vmt_vm_set_state(vm, &s->vm), 0);
    for (unsigned i = 0; i < vmt_vm_vcpus(vm); i++)
        if (vmt_vcpu_set_state(vm, i, &s->vcpus[i]) != 0) {
            fprintf(stderr, "\n  set_state: %s\n", vmt_error_last());
            CU_FAIL_FATAL("vmt_vcpu_set_state");
        }
}

/* Pause counter mid-run, save, restore into a brand-new VM, resume there:
 * the output before the pause plus the new VM's output equals an
 * uninterrupted run's. */
static void round_trip(bool irqchip)
{
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = MEM;
    cfg.irqchip = irqchip;
    char *ref = reference_output(&cfg);
    CU_ASSERT_FATAL(ref != NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(strstr(ref, "counter: step 60 "));

    fx_guest a, b;
    CU_ASSERT_FATAL(fx_boot(&a, "counter", COUNTER_CMD, &cfg) == 0);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(a.vm), 0);
    CU_ASSERT_FATAL(vmt_console_buf_wait(a.con, "counter: step 20 ", 0, 30 * FX_SEC) > 0);
    CU_ASSERT_EQUAL(vmt_vm_pause(a.vm), 0);
    saved s;
    save(a.vm, &s);
    size_t before_len;
    char *before = vmt_console_buf_dup(a.con, &before_len);
    fx_free(&a);

    CU_ASSERT_FATAL(fx_boot(&b, "hello", NULL, &cfg) == 0); /* any image: RAM is replaced */
    restore(b.vm, &s);
    vmt_vcpu_state check;
    CU_ASSERT_EQUAL(vmt_vcpu_get_state(b.vm, 0, &check), 0);
    CU_ASSERT_EQUAL(memcmp(&check.regs, &s.vcpus[0].regs, sizeof(check.regs)), 0);
    CU_ASSERT_EQUAL(check.sregs.cr3, s.vcpus[0].sregs.cr3);
    CU_ASSERT_EQUAL(check.has_lapic, irqchip);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(b.vm), 0);
    vmt_vm_exit ex;
    CU_ASSERT_EQUAL(vmt_vm_wait(b.vm, 60 * FX_SEC, &ex), 0);
    CU_ASSERT_EQUAL(ex.kind, VMT_EXIT_PORT);
    CU_ASSERT_EQUAL(ex.status, 0);
    char *after = vmt_console_buf_dup(b.con, NULL);
    size_t total = before_len + strlen(after);
    char *joined = malloc(total + 1);
    memcpy(joined, before, before_len);
    strcpy(joined + before_len, after);
    CU_ASSERT_STRING_EQUAL(joined, ref);
    CU_ASSERT(strlen(after) > 0);
    free(joined);
    free(after);
    free(before);
    free(ref);
    free(s.ram);
    free(s.vcpus);
    fx_free(&b);
}

static void counter_continues_exactly_after_restore(void)
{
    round_trip(false);
}

static void counter_continues_exactly_with_irqchip(void)
{
    if (!vmt_kvm_get_caps(fx_kvm)->irqchip)
        return;
    round_trip(true);
}

static void state_access_needs_a_paused_matching_vm(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(fx_boot(&g, "dirtier", "pages=64 spin=100000", NULL) == 0);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    vmt_vm_state st;
    vmt_vcpu_state *vs = malloc(sizeof(*vs));
    CU_ASSERT_EQUAL(vmt_vm_get_state(g.vm, &st), VMT_EBUSY);
    CU_ASSERT_EQUAL(vmt_vcpu_get_state(g.vm, 0, vs), VMT_EBUSY);
    vmt_vm_pause(g.vm);
    CU_ASSERT_EQUAL(vmt_vm_get_state(g.vm, &st), 0);
    CU_ASSERT_EQUAL(vmt_vcpu_get_state(g.vm, 0, vs), 0);
    CU_ASSERT_EQUAL(vmt_vcpu_get_state(g.vm, 1, vs), VMT_EINVAL);
    CU_ASSERT(vs->nr_msrs > 0);
    CU_ASSERT(vs->xsave_size >= 4096);
    st.mem_size *= 2;
    CU_ASSERT_EQUAL(vmt_vm_set_state(g.vm, &st), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "this VM has 256 MiB"));
    vs->xsave_size = VMT_XSAVE_MAX + 1;
    CU_ASSERT_EQUAL(vmt_vcpu_set_state(g.vm, 0, vs), VMT_ERANGE);
    free(vs);
    fx_free(&g);
}

int main(void)
{
    fx_require_kvm();
    static const vmt_test_case cases[] = {
        {"counter_continues_exactly_after_restore", counter_continues_exactly_after_restore},
        {"counter_continues_exactly_with_irqchip", counter_continues_exactly_with_irqchip},
        {"state_access_needs_a_paused_matching_vm", state_access_needs_a_paused_matching_vm},
        {NULL, NULL},
    };
    return vmt_test_run("vmm_state", cases, fx_setup, fx_teardown);
}
