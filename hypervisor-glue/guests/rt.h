/*
 * vmtree guest runtime: the ring-3 API every workload uses.
 *
 * A workload provides `void guest_main(unsigned cpu, const char *cmdline)`,
 * called on every vCPU in ring 3 once the runtime has set up the machine;
 * returning from it exits the VM with status 0.  All functions here run in
 * ring 3 and are safe on any vCPU; console output is serialized by a lock.
 * No interrupts: IF stays 0.  Nothing here allocates.  See docs/guests.md.
 */
#ifndef VMT_GUEST_RT_H
#define VMT_GUEST_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt_layout.h"

#define RT_PAGE_SIZE ((uint64_t)4096)
/* Workload memory starts here; the runtime writes nothing at or above it. */
#define RT_WORK_BASE ((uint64_t)0x400000)

/* The workload's entry point, on every vCPU (cmdline is never NULL). */
void guest_main(unsigned cpu, const char *cmdline);

/* ---- ports ------------------------------------------------------------ */

static inline __attribute__((always_inline)) void rt_outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}

static inline __attribute__((always_inline)) void rt_outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port));
}

static inline __attribute__((always_inline)) uint8_t rt_inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* Delivers `value` to the host's event callback (which may pause the VM).
 * Inline and register-only: it writes no memory. */
static inline __attribute__((always_inline)) void rt_event(uint32_t value)
{
    rt_outl(RT_PORT_EVENT, value);
}

/* Stops the VM with `status` (the low 8 bits); never returns. */
_Noreturn void rt_exit(unsigned status);
/* Spins forever in ring 3 without writing memory (ring 3 cannot HLT). */
_Noreturn void rt_idle(void);
/* Prints "guest: " + the message and exits with `status`. */
_Noreturn void rt_die(unsigned status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- console (COM1, polled) ------------------------------------------- */

void rt_putc(char c);
void rt_puts(const char *s);
/* Formats %u %d %x %s %c %% with optional '0', width and 'l' (64-bit):
 * e.g. "%lu", "%016lx".  The whole line is printed under the console lock. */
void rt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- command line: "key=value key=value" ------------------------------- */

/*
 * Numbers: decimal or 0x-hex, optionally followed by K, M or G (x 1024^n).
 * A malformed or overflowing value prints an error and exits with
 * RT_STATUS_BADPARAM.  Absent key: `def`.
 */
uint64_t rt_param_u64(const char *cmdline, const char *key, uint64_t def);
/* Copies the value into buf (NUL-terminated); returns its length, or -1
 * when the key is absent.  A value that does not fit exits BADPARAM. */
int rt_param_str(const char *cmdline, const char *key, char *buf, size_t size);
/* Index in `choices` (NULL-terminated) of the value; `def` when absent;
 * an unknown value exits BADPARAM listing the choices. */
unsigned rt_param_choice(const char *cmdline, const char *key, const char *const *choices,
                         unsigned def);
/* Exits BADPARAM if the command line has a key not in `keys` (NULL-ended). */
void rt_params_check(const char *cmdline, const char *const *keys);

/* ---- RAM (from the e820 table) ----------------------------------------- */

uint64_t rt_ram_size(void); /* bytes of usable RAM (sum of e820 RAM ranges) */
uint64_t rt_ram_end(void);  /* highest end of a RAM range */
/* The e820 RAM range holding `addr`: true and [*start, *end), else false. */
bool rt_ram_range(uint64_t addr, uint64_t *start, uint64_t *end);
/* True if [addr, addr + len) lies inside one RAM range (and len > 0). */
bool rt_ram_contains(uint64_t addr, uint64_t len);

/* ---- CPU helpers -------------------------------------------------------- */

static inline __attribute__((always_inline)) uint64_t rt_rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static inline __attribute__((always_inline)) void rt_pause(void)
{
    __asm__ volatile("pause");
}

/* ---- multi-vCPU ----------------------------------------------------------- */

typedef struct {
    volatile uint32_t v;
} rt_lock;

static inline __attribute__((always_inline)) void rt_lock_acquire(rt_lock *l)
{
    while (__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&l->v, __ATOMIC_RELAXED))
            rt_pause();
}

static inline __attribute__((always_inline)) void rt_lock_release(rt_lock *l)
{
    __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE);
}

static inline __attribute__((always_inline)) uint64_t rt_atomic_add(volatile uint64_t *p,
                                                                    uint64_t v)
{
    return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST);
}

static inline __attribute__((always_inline)) uint64_t rt_atomic_load(const volatile uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline __attribute__((always_inline)) void rt_atomic_store(volatile uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Spins (reading only) until *p >= v. */
static inline __attribute__((always_inline)) void rt_wait_ge(const volatile uint64_t *p, uint64_t v)
{
    while (rt_atomic_load(p) < v)
        rt_pause();
}

/* ---- hashing and pseudo-random numbers (deterministic) -------------------- */

/* splitmix64's finalizer: a good 64-bit mixer. */
static inline __attribute__((always_inline)) uint64_t rt_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* xorshift64; the state must not be 0. */
static inline __attribute__((always_inline)) uint64_t rt_xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* ---- what the compiler may call ------------------------------------------ */

void *memset(void *d, int c, size_t n);
void *memcpy(void *restrict d, const void *restrict s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t rt_strlen(const char *s);

#endif
