/* COM1 8250 UART (polled) and console output sinks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmm_internal.h"

#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40
#define UART_LCR_DLAB 0x80
#define UART_IIR_NO_INT 0x01
#define UART_MSR_DEFAULT 0xb0 /* DCD | DSR | CTS */

void vmm_serial_init(vmm_serial *s, vmt_console_fn out, void *ctx)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->regs.iir = UART_IIR_NO_INT;
    s->regs.lsr = UART_LSR_THRE | UART_LSR_TEMT;
    s->regs.msr = UART_MSR_DEFAULT;
    s->regs.dll = 12; /* 9600 baud, the power-on divisor */
    s->out = out;
    s->out_ctx = ctx;
}

void vmm_serial_destroy(vmm_serial *s)
{
    pthread_mutex_destroy(&s->lock);
}

static uint8_t serial_read(vmm_serial *s, unsigned reg)
{
    vmt_serial_state *r = &s->regs;
    bool dlab = r->lcr & UART_LCR_DLAB;
    switch (reg) {
    case 0: return dlab ? r->dll : 0; /* no input: RBR reads 0 */
    case 1: return dlab ? r->dlm : r->ier;
    case 2: return (uint8_t)(UART_IIR_NO_INT | ((r->fcr & 1) ? 0xc0 : 0));
    case 3: return r->lcr;
    case 4: return r->mcr;
    case 5: return UART_LSR_THRE | UART_LSR_TEMT; /* transmitter always empty */
    case 6: return (r->mcr & 0x10) ? (uint8_t)((r->mcr & 0x0f) << 4) : r->msr;
    default: return r->scr;
    }
}

/* Returns true when `data` is a byte to transmit. */
static bool serial_write(vmm_serial *s, unsigned reg, uint8_t v)
{
    vmt_serial_state *r = &s->regs;
    bool dlab = r->lcr & UART_LCR_DLAB;
    switch (reg) {
    case 0:
        if (dlab) {
            r->dll = v;
            return false;
        }
        return !(r->mcr & 0x10); /* loopback mode does not transmit */
    case 1:
        if (dlab)
            r->dlm = v;
        else
            r->ier = v & 0x0f;
        return false;
    case 2: r->fcr = v; return false;
    case 3: r->lcr = v; return false;
    case 4: r->mcr = v & 0x1f; return false;
    case 7: r->scr = v; return false;
    default: return false; /* LSR/MSR are read-only */
    }
}

void vmm_serial_io(vmm_serial *s, uint16_t port, bool is_write, uint8_t *data)
{
    unsigned reg = (unsigned)(port - VMT_PORT_COM1) & 7;
    pthread_mutex_lock(&s->lock);
    if (!is_write) {
        *data = serial_read(s, reg);
        pthread_mutex_unlock(&s->lock);
        return;
    }
    bool tx = serial_write(s, reg, *data);
    vmt_console_fn out = s->out;
    void *ctx = s->out_ctx;
    pthread_mutex_unlock(&s->lock);
    if (tx && out)
        out(ctx, (const char *)data, 1);
}

void vmt_console_to_fd(void *ctx, const char *buf, size_t len)
{
    int fd = (int)(intptr_t)ctx;
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* console output is best effort */
        buf += n;
        len -= (size_t)n;
    }
}

struct vmt_console_buf {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char *data;
    size_t len, cap;
};

int vmt_console_buf_new(vmt_console_buf **out)
{
    vmt_console_buf *cb = calloc(1, sizeof(*cb));
    if (!cb)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    pthread_mutex_init(&cb->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cb->cond, &ca);
    pthread_condattr_destroy(&ca);
    *out = cb;
    return 0;
}

void vmt_console_buf_free(vmt_console_buf *cb)
{
    if (!cb)
        return;
    pthread_mutex_destroy(&cb->lock);
    pthread_cond_destroy(&cb->cond);
    free(cb->data);
    free(cb);
}

void vmt_console_buf_sink(void *ctx, const char *buf, size_t len)
{
    vmt_console_buf *cb = ctx;
    pthread_mutex_lock(&cb->lock);
    if (cb->len + len + 1 > cb->cap) {
        size_t ncap = VMT_MAX(cb->cap * 2, cb->len + len + 1024);
        char *nd = realloc(cb->data, ncap);
        if (!nd) {
            pthread_mutex_unlock(&cb->lock);
            return; /* drop output rather than fail the guest */
        }
        cb->data = nd;
        cb->cap = ncap;
    }
    memcpy(cb->data + cb->len, buf, len);
    cb->len += len;
    cb->data[cb->len] = '\0';
    pthread_cond_broadcast(&cb->cond);
    pthread_mutex_unlock(&cb->lock);
}

char *vmt_console_buf_dup(vmt_console_buf *cb, size_t *len)
{
    pthread_mutex_lock(&cb->lock);
    char *s = malloc(cb->len + 1);
    if (s) {
        if (cb->len)
            memcpy(s, cb->data, cb->len);
        s[cb->len] = '\0';
        if (len)
            *len = cb->len;
    }
    pthread_mutex_unlock(&cb->lock);
    return s;
}

int64_t vmt_console_buf_wait(vmt_console_buf *cb, const char *needle, size_t from,
                             uint64_t timeout_ns)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    uint64_t t = (uint64_t)dl.tv_nsec + timeout_ns;
    dl.tv_sec += (time_t)(t / 1000000000ull);
    dl.tv_nsec = (long)(t % 1000000000ull);
    int64_t found = -1;
    pthread_mutex_lock(&cb->lock);
    for (;;) {
        if (cb->data && from < cb->len) {
            char *p = strstr(cb->data + from, needle);
            if (p) {
                found = (int64_t)(p - cb->data) + (int64_t)strlen(needle);
                break;
            }
        }
        if (pthread_cond_timedwait(&cb->cond, &cb->lock, &dl) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&cb->lock);
    if (found < 0)
        return vmt_error_set(VMT_ETIMEDOUT, "console did not print '%s' in time", needle);
    return found;
}
