/*
 * hello: prints "hello from vmtree guest\n" and exits.
 * Parameters: status=N (default 0) exit status; fault=none|ud|gp|pf|de
 * (default none) raises that exception after printing, to exercise the
 * runtime's fault path (exit status RT_STATUS_FAULT + vector).
 * vCPUs other than 0 idle.
 */
#include "rt.h"

enum { FAULT_NONE, FAULT_UD, FAULT_GP, FAULT_PF, FAULT_DE };

static const char *const keys[] = {"status", "fault", NULL};
static const char *const faults[] = {"none", "ud", "gp", "pf", "de", NULL};

static void raise_fault(unsigned which)
{
    switch (which) {
    case FAULT_UD:
        __asm__ volatile("ud2");
        break;
    case FAULT_GP:
        __asm__ volatile("hlt"); /* privileged: #GP(0) in ring 3 */
        break;
    case FAULT_PF:
        /* 1 TiB: beyond the single PML4 entry the runtime maps. */
        *(volatile uint8_t *)(1ull << 40) = 1;
        break;
    case FAULT_DE: {
        volatile uint64_t zero = 0;
        uint64_t q;
        __asm__ volatile("divq %2" : "=a"(q) : "a"(1), "r"(zero), "d"(0));
        (void)q;
        break;
    }
    default:
        break;
    }
}

void guest_main(unsigned cpu, const char *cmdline)
{
    if (cpu != 0)
        rt_idle();
    rt_params_check(cmdline, keys);
    uint64_t status = rt_param_u64(cmdline, "status", 0);
    unsigned fault = rt_param_choice(cmdline, "fault", faults, FAULT_NONE);
    if (status > 255)
        rt_die(RT_STATUS_BADPARAM, "hello: status=%lu out of range 0..255\n", status);
    rt_puts("hello from vmtree guest\n");
    raise_fault(fault);
    rt_exit((unsigned)status);
}
