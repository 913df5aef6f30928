/*
 * counter: a deterministic computation over a buffer at RT_WORK_BASE,
 * printing a running checksum, so that a restored, branched or migrated VM
 * can be checked to continue exactly.  Output is a pure function of the
 * parameters.  vCPUs other than 0 idle.  docs/guests.md has the details.
 */
#include "rt.h"

static const char *const keys[] = {"buf", "work", "every", "steps", "seed", NULL};

static uint64_t rotl(uint64_t x, unsigned r)
{
    return x << r | x >> (64 - r);
}

/* Uniform index in [0, n) from a 64-bit random value. */
static uint64_t pick(uint64_t r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)r * n) >> 64);
}

static uint64_t hash_buffer(const uint64_t *w, uint64_t nwords, uint64_t step)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (uint64_t i = 0; i < nwords; i++)
        h = (rotl(h, 5) ^ w[i]) * 0x100000001b3ull;
    return rt_mix64(h ^ step);
}

void guest_main(unsigned cpu, const char *cmdline)
{
    if (cpu != 0)
        rt_idle();
    rt_params_check(cmdline, keys);
    uint64_t kib = rt_param_u64(cmdline, "buf", 1024);
    uint64_t work = rt_param_u64(cmdline, "work", 100000);
    uint64_t every = rt_param_u64(cmdline, "every", 1);
    uint64_t steps = rt_param_u64(cmdline, "steps", 0);
    uint64_t seed = rt_param_u64(cmdline, "seed", 1);

    if (kib == 0 || kib > (1ull << 40) || !rt_ram_contains(RT_WORK_BASE, kib << 10))
        rt_die(RT_STATUS_BADPARAM,
               "counter: buf=%lu KiB must be >= 1 and fit in RAM from 0x%lx (RAM ends at 0x%lx)\n",
               kib, RT_WORK_BASE, rt_ram_end());
    if (every == 0)
        rt_die(RT_STATUS_BADPARAM, "counter: every= must be >= 1\n");

    uint64_t *w = (uint64_t *)RT_WORK_BASE;
    uint64_t nwords = kib << 7;
    uint64_t x = rt_mix64(seed) | 1;

    rt_puts("counter: start\n");
    for (uint64_t i = 0; i < nwords; i++)
        w[i] = rt_mix64(seed ^ (i * 0x9e3779b97f4a7c15ull));
    for (uint64_t step = 1; steps == 0 || step <= steps; step++) {
        for (uint64_t k = 0; k < work; k++) {
            uint64_t r = rt_xorshift64(&x);
            uint64_t *p = &w[pick(r, nwords)];
            *p = rotl(*p ^ r, 17) * 0x9e3779b97f4a7c15ull + k;
        }
        if (step % every == 0)
            rt_printf("counter: step %lu sum %016lx\n", step, hash_buffer(w, nwords, step));
    }
    rt_exit(RT_STATUS_OK);
}
