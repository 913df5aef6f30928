/* hypervisor-glue/vcpu.c: run control: pause, resume, events, stop, crashes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixture.h"
#include "harness.h"

#define BASE (64ull << 20)

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static uint64_t region_sum(fx_guest *g, unsigned pages)
{
    uint8_t *ram = vmt_vm_ram(g->vm, NULL);
    uint64_t s = 0;
    for (unsigned i = 0; i < pages; i++)
        s += ram[BASE + i * 4096ull];
    return s;
}

static void pause_freezes_both_vcpus_and_resume_continues(void)
{
    fx_guest g;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.vcpus = 2;
    CU_ASSERT_FATAL(fx_boot(&g, "dirtier", "pages=512 vcpus=2 event=1", &cfg) == 0);
    CU_ASSERT_EQUAL(vmt_vm_pause(g.vm), 0); /* before start: nothing to wait for */
    CU_ASSERT_EQUAL(vmt_vm_resume(g.vm), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    CU_ASSERT_EQUAL(vmt_vm_start(g.vm), VMT_EBUSY);
    CU_ASSERT_FATAL(fx_wait_events(&g, 8, 20 * FX_SEC));
    for (int round = 0; round < 5; round++) {
        uint64_t t0 = vmt_now_ns();
        CU_ASSERT_EQUAL(vmt_vm_pause(g.vm), 0);
        uint64_t took = vmt_now_ns() - t0;
        CU_ASSERT(took < 100000000ull); /* "within milliseconds"; generous for CI */
        CU_ASSERT(vmt_vm_is_paused(g.vm));
        CU_ASSERT_EQUAL(vmt_vm_pause(g.vm), 0); /* idempotent */
        uint64_t s1 = region_sum(&g, 512);
        unsigned ev1 = g.nevents;
        sleep_ms(30);
        CU_ASSERT_EQUAL(region_sum(&g, 512), s1);
        CU_ASSERT_EQUAL(g.nevents, ev1);
        CU_ASSERT_EQUAL(vmt_vm_resume(g.vm), 0);
        CU_ASSERT(fx_wait_events(&g, ev1 + 4, 10 * FX_SEC));
    }
    vmt_vm_exit ex;
    CU_ASSERT_EQUAL(vmt_vm_wait(g.vm, 1000000, &ex), VMT_ETIMEDOUT);
    CU_ASSERT_EQUAL(vmt_vm_request_stop(g.vm), 0);
    CU_ASSERT_EQUAL(vmt_vm_wait(g.vm, FX_SEC, &ex), 0);
    CU_ASSERT_EQUAL(ex.kind, VMT_EXIT_STOPPED);
    fx_free(&g);
}

static void event_callback_can_pause_the_vm(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(fx_boot(&g, "dirtier", "pages=64 passes=2 event=1 end=exit", NULL) == 0);
    g.pause_on_event = true;
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    CU_ASSERT_FATAL(fx_wait_events(&g, 1, 20 * FX_SEC));
    vmt_vm_pause(g.vm); /* returns once the self-requested pause has parked it */
    sleep_ms(20);
    CU_ASSERT_EQUAL(g.nevents, 1);
    CU_ASSERT_EQUAL(g.events[0], DIRTIER_READY);
    g.pause_on_event = false;
    vmt_vm_resume(g.vm);
    vmt_vm_exit ex;
    CU_ASSERT_EQUAL(vmt_vm_wait(g.vm, 20 * FX_SEC, &ex), 0);
    CU_ASSERT_EQUAL(ex.kind, VMT_EXIT_PORT);
    CU_ASSERT_EQUAL(ex.status, 0);
    fx_free(&g);
}

/* A vCPU sent to an unmapped address with no IDT triple-faults: the VM
 * stops with VMT_EXIT_SHUTDOWN and the registers of that vCPU. */
static void triple_fault_is_reported_with_registers(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(fx_boot(&g, "hello", NULL, NULL) == 0);
    vmt_vcpu_state *st = malloc(sizeof(*st));
    CU_ASSERT_EQUAL_FATAL(vmt_vcpu_get_state(g.vm, 0, st), 0);
    st->regs.rip = 0x7fffffff000ull;
    st->sregs.idt.limit = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_vcpu_set_state(g.vm, 0, st), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    vmt_vm_exit ex;
    CU_ASSERT_EQUAL(vmt_vm_wait(g.vm, 10 * FX_SEC, &ex), 0);
    CU_ASSERT_EQUAL(ex.kind, VMT_EXIT_SHUTDOWN);
    CU_ASSERT_PTR_NOT_NULL(strstr(ex.reason, "triple fault"));
    CU_ASSERT_EQUAL(ex.sregs.cr3, VMT_BOOT_PML4_ADDR);
    free(st);
    fx_free(&g);
}

/* Bad parameters make the guest itself refuse (status 2) with a message. */
static void guest_rejects_bad_parameters(void)
{
    fx_guest g;
    CU_ASSERT_FATAL(fx_boot(&g, "dirtier", "base=0x40000000", NULL) == 0); /* past 256 MiB */
    CU_ASSERT_EQUAL_FATAL(vmt_vm_start(g.vm), 0);
    vmt_vm_exit ex;
    CU_ASSERT_EQUAL(vmt_vm_wait(g.vm, 10 * FX_SEC, &ex), 0);
    CU_ASSERT_EQUAL(ex.kind, VMT_EXIT_PORT);
    CU_ASSERT_EQUAL(ex.status, 2);
    char *out = vmt_console_buf_dup(g.con, NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "base="));
    free(out);
    fx_free(&g);
}

int main(void)
{
    fx_require_kvm();
    static const vmt_test_case cases[] = {
        {"pause_freezes_both_vcpus_and_resume_continues",
         pause_freezes_both_vcpus_and_resume_continues},
        {"event_callback_can_pause_the_vm", event_callback_can_pause_the_vm},
        {"triple_fault_is_reported_with_registers", triple_fault_is_reported_with_registers},
        {"guest_rejects_bad_parameters", guest_rejects_bad_parameters},
        {NULL, NULL},
    };
    return vmt_test_run("vmm_vcpu", cases, fx_setup, fx_teardown);
}
