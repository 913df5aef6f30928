/*
 * dirtier: increments the first byte of pages in a region, pass after pass,
 * with a cursor that continues where the previous pass stopped.  At any
 * moment all first bytes of a slice are equal except that the pages before
 * the cursor are one higher (mod 256): QEMU's migration-test invariant.
 * Parameters and the exact set of pages written: docs/guests.md.
 */
#include "rt.h"

enum { FILL_ZERO, FILL_TEXT, FILL_RANDOM };
enum { END_EXIT, END_SPIN, END_EVENT };

#define EVENT_READY 0xffffffffu /* after the fill, before the first pass */
#define EVENT_DONE 0xfffffffeu  /* end=event, after the last pass */

static const char *const keys[] = {"base",   "pages", "per_pass", "spin",  "fill", "mark",
                                   "passes", "end",   "event",    "vcpus", NULL};
static const char *const fills[] = {"zero", "text", "random", NULL};
static const char *const ends[] = {"exit", "spin", "event", NULL};

struct params {
    uint64_t base, pages, per_pass, spin, mark, passes, vcpus;
    unsigned fill, end;
    bool event;
};

/* Cross-vCPU flags (this image's .bss, below RT_WORK_BASE). */
static volatile uint64_t params_ok, filled, started, finished;

static void parse(const char *cmdline, struct params *p)
{
    uint64_t start, end;

    rt_params_check(cmdline, keys);
    p->base = rt_param_u64(cmdline, "base", 64ull << 20);
    p->vcpus = rt_param_u64(cmdline, "vcpus", 1);
    p->spin = rt_param_u64(cmdline, "spin", 0);
    p->mark = rt_param_u64(cmdline, "mark", 0);
    p->passes = rt_param_u64(cmdline, "passes", 0);
    p->fill = rt_param_choice(cmdline, "fill", fills, FILL_ZERO);
    p->end = rt_param_choice(cmdline, "end", ends, END_EXIT);
    p->event = rt_param_u64(cmdline, "event", 0) != 0;
    if (p->base < RT_WORK_BASE || p->base % RT_PAGE_SIZE)
        rt_die(RT_STATUS_BADPARAM, "dirtier: base=0x%lx must be page aligned and >= 0x%lx\n",
               p->base, RT_WORK_BASE);
    if (!rt_ram_range(p->base, &start, &end))
        rt_die(RT_STATUS_BADPARAM, "dirtier: base=0x%lx is not in RAM (RAM ends at 0x%lx)\n",
               p->base, rt_ram_end());
    p->pages = rt_param_u64(cmdline, "pages", (end - p->base) / RT_PAGE_SIZE);
    if (p->pages == 0 || p->pages > (end - p->base) / RT_PAGE_SIZE)
        rt_die(RT_STATUS_BADPARAM,
               "dirtier: pages=%lu: region must be non-empty and end within RAM (at most %lu "
               "pages from base=0x%lx)\n",
               p->pages, (end - p->base) / RT_PAGE_SIZE, p->base);
    if (p->vcpus == 0 || p->vcpus > RT_MAX_CPUS || p->vcpus > p->pages)
        rt_die(RT_STATUS_BADPARAM, "dirtier: vcpus=%lu must be in 1..%u and <= pages\n", p->vcpus,
               RT_MAX_CPUS);
    p->per_pass = rt_param_u64(cmdline, "per_pass", 0); /* 0: the slice size */
}

/*
 * Bytes 1..4095 of a page: words from a small dictionary chosen by an
 * xorshift64 seeded with the page number, which also appears in the text
 * now and then: compressible, and different on every page.
 */
static void fill_text(uint8_t *page, uint64_t pfn)
{
    static const char *const words[32] = {
        "the ",   "vmtree ", "page ",   "of ",      "guest ", "memory ",   "dirty ",   "snapshot ",
        "and ",   "tree ",   "branch ", "with ",    "log ",   "store ",    "migrate ", "copy ",
        "a ",     "to ",     "is ",     "in ",      "round ", "pre-copy ", "restore ", "golden ",
        "image ", "zero ",   "delta ",  "network ", "pause ", "resume ",   "vcpu ",    "bytes\n"};
    uint64_t s = rt_mix64(pfn) | 1;
    size_t pos = 1;
    char num[24];
    int n = 0;

    for (uint64_t v = pfn; n == 0 || v; v /= 10)
        num[n++] = (char)('0' + v % 10);
    while (pos < RT_PAGE_SIZE) {
        uint64_t r = rt_xorshift64(&s);
        if ((r & 15) == 0) { /* the page number, now and then */
            for (int i = n; i > 0 && pos < RT_PAGE_SIZE; i--)
                page[pos++] = (uint8_t)num[i - 1];
            if (pos < RT_PAGE_SIZE)
                page[pos++] = ' ';
            continue;
        }
        for (const char *w = words[(r >> 8) & 31]; *w && pos < RT_PAGE_SIZE; w++)
            page[pos++] = (uint8_t)*w;
    }
}

/* Bytes 1..4095 of a page: xorshift64 seeded by the page number. */
static void fill_random(uint8_t *page, uint64_t pfn)
{
    uint64_t s = rt_mix64(pfn + 0x9e3779b97f4a7c15ull) | 1;
    uint64_t first = rt_xorshift64(&s);

    for (size_t i = 1; i < 8; i++)
        page[i] = (uint8_t)(first >> (8 * i));
    for (size_t off = 8; off < RT_PAGE_SIZE; off += 8) {
        uint64_t v = rt_xorshift64(&s);
        memcpy(page + off, &v, 8);
    }
}

static void fill(uint8_t *start, uint64_t n, unsigned how)
{
    for (uint64_t i = 0; i < n; i++) {
        uint8_t *page = start + i * RT_PAGE_SIZE;
        uint64_t pfn = (uint64_t)page / RT_PAGE_SIZE;
        if (how == FILL_TEXT)
            fill_text(page, pfn);
        else if (how == FILL_RANDOM)
            fill_random(page, pfn);
    }
}

/* What one vCPU's passes need; read-only once the passes start. */
struct run {
    uint8_t *start;
    uint64_t n, per_pass, spin, mark, passes, vcpus;
    unsigned cpu, end;
    bool event;
};

/*
 * The passes.  The ready line and event come first, here, so that nothing
 * this function pushes is written after the host sees the event.  From then
 * on the loop keeps its state in registers (`r` is only read): apart from
 * the region it writes memory only through rt_printf (mark=, vCPU 0), plus
 * the `started` flag once when vcpus > 1.  end=spin and (with one vCPU)
 * end=event stay here; the other ends return to finish().
 */
__attribute__((noinline)) static void run_passes(const struct run *r)
{
    if (r->cpu == 0) {
        rt_puts("dirtier: ready\n");
        if (r->event)
            rt_event(EVENT_READY);
        if (r->vcpus > 1)
            rt_atomic_store(&started, 1);
    } else {
        rt_wait_ge(&started, 1);
    }

    uint8_t *start = r->start;
    uint64_t cur = 0, n = r->n;

    for (uint64_t pass = 1; r->passes == 0 || pass <= r->passes; pass++) {
        for (uint64_t i = r->per_pass; i > 0; i--) {
            volatile uint8_t *b = start + (cur << 12);
            *b = (uint8_t)(*b + 1);
            if (++cur == n)
                cur = 0;
        }
        for (uint64_t s = r->spin; s > 0; s--)
            __asm__ volatile("");
        if (r->event)
            rt_event((uint32_t)pass);
        if (r->cpu == 0 && r->mark && pass % r->mark == 0)
            rt_printf("dirtier: pass %lu\n", pass);
    }
    /* Ends that must not write memory are handled here, without a call. */
    if (r->end == END_SPIN || (r->end == END_EVENT && r->vcpus == 1)) {
        if (r->end == END_EVENT)
            rt_event(EVENT_DONE);
        for (;;)
            rt_pause();
    }
}

/*
 * Waits until `n` vCPUs have counted themselves in *count.  A VM with fewer
 * vCPUs than vcpus= would wait forever: say so once, after ~5e9 cycles.
 */
static void wait_all(const volatile uint64_t *count, uint64_t n)
{
    uint64_t t0 = rt_rdtsc();
    bool warned = false;

    while (rt_atomic_load(count) < n) {
        if (!warned && rt_rdtsc() - t0 > 5000000000ull) {
            rt_printf("dirtier: still waiting for vCPUs: %lu of %lu (vcpus= exceeds the VM's "
                      "vCPUs?)\n",
                      rt_atomic_load(count), n);
            warned = true;
        }
        rt_pause();
    }
}

static void finish(unsigned cpu, const struct params *p)
{
    if (p->vcpus > 1) {
        rt_atomic_add(&finished, 1);
        if (cpu != 0)
            for (;;)
                rt_pause();
        rt_wait_ge(&finished, p->vcpus);
    }
    if (p->end == END_EXIT)
        rt_exit(RT_STATUS_OK);
    rt_event(EVENT_DONE);
    for (;;)
        rt_pause();
}

void guest_main(unsigned cpu, const char *cmdline)
{
    struct params p;
    struct run r;

    if (cpu != 0)
        rt_wait_ge(&params_ok, 1); /* vCPU 0 reports bad parameters, once */
    parse(cmdline, &p);
    if (cpu == 0)
        rt_atomic_store(&params_ok, 1);
    if (cpu >= p.vcpus)
        rt_idle();

    uint64_t first = cpu * p.pages / p.vcpus;
    r.n = (cpu + 1) * p.pages / p.vcpus - first;
    r.start = (uint8_t *)(p.base + first * RT_PAGE_SIZE);
    r.per_pass = p.per_pass ? p.per_pass : r.n;
    r.spin = p.spin;
    r.mark = p.mark;
    r.passes = p.passes;
    r.vcpus = p.vcpus;
    r.cpu = cpu;
    r.end = p.end;
    r.event = p.event;

    fill(r.start, r.n, p.fill);
    if (p.vcpus > 1) {
        rt_atomic_add(&filled, 1);
        wait_all(&filled, p.vcpus);
    }
    run_passes(&r);
    finish(cpu, &p);
}
