/*
 * vmtree guest runtime: the ring-3 library (console, exit and event ports,
 * command line, e820, memory functions).  See rt.h.
 */
#include <stdarg.h>

#include "rt.h"

/* rt_boot.c */
extern const uint8_t *rt_boot_params;
void rt_map_high(void);
void rt_wait_mapped(void);

void rt_user_main(unsigned cpu, const char *cmdline);

static rt_lock console_lock;
static void serial_init(void);

/* Entered from rt_user_start (rt_entry.S) in ring 3 on every vCPU. */
void rt_user_main(unsigned cpu, const char *cmdline)
{
    if (cpu == 0) {
        serial_init();
        rt_map_high();
    } else {
        rt_wait_mapped();
    }
    guest_main(cpu, cmdline);
    rt_exit(RT_STATUS_OK);
}

_Noreturn void rt_idle(void)
{
    for (;;)
        rt_pause();
}

_Noreturn void rt_exit(unsigned status)
{
    rt_outb(RT_PORT_EXIT, (uint8_t)status);
    rt_idle();
}

/* ---- console ------------------------------------------------------------ */

/*
 * Every port access is a VM exit (~100 us on the project's hosts), so the
 * console sends up to tx_burst bytes per LSR poll with one `rep outsb`:
 * with the 16550 FIFO enabled (FCR) and reported (IIR bits 7:6), THRE means
 * the 16-byte transmit FIFO is empty.  Without a FIFO, one byte per poll.
 */
static unsigned tx_burst = 1;

#define UART_IIR 2
#define UART_FCR 2
#define UART_LSR 5
#define UART_LSR_THRE 0x20

static void serial_init(void)
{
    rt_outb(RT_PORT_COM1 + UART_FCR, 0x07); /* enable and clear the FIFOs */
    if ((rt_inb(RT_PORT_COM1 + UART_IIR) & 0xc0) == 0xc0)
        tx_burst = 16;
}

/* Sends n bytes; the caller holds the console lock. */
static void tx(const char *s, size_t n)
{
    while (n) {
        size_t k = n < tx_burst ? n : tx_burst;
        while (!(rt_inb(RT_PORT_COM1 + UART_LSR) & UART_LSR_THRE))
            rt_pause();
        n -= k;
        __asm__ volatile("rep outsb" : "+S"(s), "+c"(k) : "d"((uint16_t)RT_PORT_COM1) : "memory");
    }
}

/* A line buffer on the stack: one tx() per line (or per 128 bytes). */
struct outbuf {
    size_t len;
    char data[128];
};

static void flush(struct outbuf *o)
{
    tx(o->data, o->len);
    o->len = 0;
}

static void put(struct outbuf *o, char c)
{
    if (o->len == sizeof(o->data))
        flush(o);
    o->data[o->len++] = c;
}

void rt_putc(char c)
{
    rt_lock_acquire(&console_lock);
    tx(&c, 1);
    rt_lock_release(&console_lock);
}

void rt_puts(const char *s)
{
    rt_lock_acquire(&console_lock);
    tx(s, rt_strlen(s));
    rt_lock_release(&console_lock);
}

static void put_num(struct outbuf *o, uint64_t v, unsigned base, unsigned width, char pad, bool neg)
{
    char buf[24];
    unsigned n = 0;

    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        buf[n++] = '-';
    while (width > n && width-- > 0)
        put(o, pad);
    while (n)
        put(o, buf[--n]);
}

/* Formats into o (flushing as it fills); the caller holds the console lock. */
static void vprint(struct outbuf *o, const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(o, *fmt);
            continue;
        }
        char pad = ' ';
        unsigned width = 0;
        bool l = false;
        fmt++;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (unsigned)(*fmt++ - '0');
        while (*fmt == 'l') {
            l = true;
            fmt++;
        }
        switch (*fmt) {
        case 'u':
            put_num(o, l ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width, pad, false);
            break;
        case 'd': {
            int64_t v = l ? va_arg(ap, int64_t) : va_arg(ap, int);
            put_num(o, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, 10, width, pad, v < 0);
            break;
        }
        case 'x':
            put_num(o, l ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width, pad, false);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            for (s = s ? s : "(null)"; *s; s++)
                put(o, *s);
            break;
        }
        case 'c':
            put(o, (char)va_arg(ap, int));
            break;
        case '%':
            put(o, '%');
            break;
        case '\0':
            return;
        default:
            put(o, '%');
            put(o, *fmt);
            break;
        }
    }
}

void rt_printf(const char *fmt, ...)
{
    va_list ap;

    struct outbuf o = {.len = 0};

    va_start(ap, fmt);
    rt_lock_acquire(&console_lock);
    vprint(&o, fmt, ap);
    flush(&o);
    rt_lock_release(&console_lock);
    va_end(ap);
}

_Noreturn void rt_die(unsigned status, const char *fmt, ...)
{
    va_list ap;

    struct outbuf o = {.len = 7, .data = "guest: "};

    va_start(ap, fmt);
    rt_lock_acquire(&console_lock);
    vprint(&o, fmt, ap);
    flush(&o);
    rt_lock_release(&console_lock);
    va_end(ap);
    rt_exit(status);
}

/* ---- command line ------------------------------------------------------- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Finds the last "key=value" token for `key`.  *val points at the value
 * (*len bytes) or is NULL for a bare "key" token.  Returns false if absent.
 */
static bool find_param(const char *cmdline, const char *key, const char **val, size_t *len)
{
    size_t klen = rt_strlen(key);
    bool found = false;
    const char *p = cmdline;

    while (*p) {
        while (is_space(*p))
            p++;
        const char *tok = p;
        while (*p && !is_space(*p))
            p++;
        if (p == tok)
            break;
        size_t tlen = (size_t)(p - tok);
        if (tlen >= klen && memcmp(tok, key, klen) == 0 && (tlen == klen || tok[klen] == '=')) {
            found = true;
            *val = tlen == klen ? NULL : tok + klen + 1;
            *len = tlen == klen ? 0 : tlen - klen - 1;
        }
    }
    return found;
}

static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0, base = 10;
    size_t i = 0;
    bool any = false;

    if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    }
    for (; i < len; i++) {
        unsigned d;
        char c = s[i];
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            break;
        if (v > (UINT64_MAX - d) / base)
            return false;
        v = v * base + d;
        any = true;
    }
    if (!any)
        return false;
    if (i < len) {
        unsigned shift;
        switch (s[i]) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        default:
            return false;
        }
        if (i + 1 != len || v > (UINT64_MAX >> shift))
            return false;
        v <<= shift;
    }
    *out = v;
    return true;
}

uint64_t rt_param_u64(const char *cmdline, const char *key, uint64_t def)
{
    const char *val;
    size_t len;
    uint64_t v;

    if (!find_param(cmdline, key, &val, &len))
        return def;
    if (!val || !parse_u64(val, len, &v))
        rt_die(RT_STATUS_BADPARAM, "bad number for %s= (decimal or 0x hex, optional K/M/G)\n", key);
    return v;
}

int rt_param_str(const char *cmdline, const char *key, char *buf, size_t size)
{
    const char *val;
    size_t len;

    if (!find_param(cmdline, key, &val, &len))
        return -1;
    if (len >= size)
        rt_die(RT_STATUS_BADPARAM, "value of %s= too long\n", key);
    memcpy(buf, val ? val : "", len);
    buf[len] = '\0';
    return (int)len;
}

unsigned rt_param_choice(const char *cmdline, const char *key, const char *const *choices,
                         unsigned def)
{
    const char *val;
    size_t len;

    if (!find_param(cmdline, key, &val, &len))
        return def;
    for (unsigned i = 0; val && choices[i]; i++)
        if (rt_strlen(choices[i]) == len && memcmp(choices[i], val, len) == 0)
            return i;
    rt_printf("guest: bad value for %s=, expected one of:", key);
    for (unsigned i = 0; choices[i]; i++)
        rt_printf(" %s", choices[i]);
    rt_puts("\n");
    rt_exit(RT_STATUS_BADPARAM);
}

void rt_params_check(const char *cmdline, const char *const *keys)
{
    const char *p = cmdline;

    while (*p) {
        while (is_space(*p))
            p++;
        const char *tok = p;
        while (*p && !is_space(*p) && *p != '=')
            p++;
        size_t klen = (size_t)(p - tok);
        while (*p && !is_space(*p))
            p++;
        if (klen == 0)
            continue;
        bool known = false;
        for (unsigned i = 0; keys[i] && !known; i++)
            known = rt_strlen(keys[i]) == klen && memcmp(keys[i], tok, klen) == 0;
        if (!known) {
            rt_printf("guest: unknown parameter '");
            for (size_t i = 0; i < klen; i++)
                rt_putc(tok[i]);
            rt_printf("', known:");
            for (unsigned i = 0; keys[i]; i++)
                rt_printf(" %s", keys[i]);
            rt_puts("\n");
            rt_exit(RT_STATUS_BADPARAM);
        }
    }
}

/* ---- RAM ------------------------------------------------------------------ */

static unsigned e820_count(void)
{
    unsigned n = rt_boot_params[RT_BP_E820_ENTRIES];
    return n > RT_BP_E820_MAX ? RT_BP_E820_MAX : n;
}

/* Entry i if it is RAM: true and [*start, *end). */
static bool e820_ram(unsigned i, uint64_t *start, uint64_t *end)
{
    const uint8_t *e = rt_boot_params + RT_BP_E820_TABLE + 20 * i;
    uint64_t size;
    uint32_t type;

    memcpy(start, e, 8);
    memcpy(&size, e + 8, 8);
    memcpy(&type, e + 16, 4);
    *end = *start + size;
    return type == RT_E820_RAM && size > 0;
}

uint64_t rt_ram_size(void)
{
    uint64_t total = 0, s, e;

    for (unsigned i = 0; i < e820_count(); i++)
        if (e820_ram(i, &s, &e))
            total += e - s;
    return total;
}

uint64_t rt_ram_end(void)
{
    uint64_t end = 0, s, e;

    for (unsigned i = 0; i < e820_count(); i++)
        if (e820_ram(i, &s, &e) && e > end)
            end = e;
    return end;
}

/* Adjacent RAM entries (e.g. [0, 640K) + [640K, ...)) are merged. */
bool rt_ram_range(uint64_t addr, uint64_t *start, uint64_t *end)
{
    uint64_t lo = addr, hi = addr, s, e;
    bool grew = true, found = false;

    while (grew) {
        grew = false;
        for (unsigned i = 0; i < e820_count(); i++) {
            if (!e820_ram(i, &s, &e))
                continue;
            bool touches = found ? (s <= hi && e >= lo) : (s <= addr && addr < e);
            if (touches && (!found || s < lo || e > hi)) {
                lo = found && lo < s ? lo : s;
                hi = found && hi > e ? hi : e;
                found = grew = true;
            }
        }
    }
    if (found) {
        *start = lo;
        *end = hi;
    }
    return found;
}

bool rt_ram_contains(uint64_t addr, uint64_t len)
{
    uint64_t s, e;

    return len > 0 && addr + len > addr && rt_ram_range(addr, &s, &e) && addr + len <= e;
}

/* ---- memory functions (rep movs/stos: no call back into memset) -------- */

void *memset(void *d, int c, size_t n)
{
    void *ret = d;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return ret;
}

void *memcpy(void *restrict d, const void *restrict s, size_t n)
{
    void *ret = d;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return ret;
}

void *memmove(void *d, const void *s, size_t n)
{
    if ((uintptr_t)d - (uintptr_t)s >= n)
        return memcpy(d, s, n);
    void *ret = d;
    d = (char *)d + n - 1;
    s = (const char *)s + n - 1;
    __asm__ volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return ret;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;

    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

size_t rt_strlen(const char *s)
{
    size_t n = 0;

    while (s[n])
        n++;
    return n;
}
