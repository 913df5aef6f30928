/* Thread-local error messages (see util.h). */
#include "vmtree/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MSG_MAX 1024

static _Thread_local char err_msg[MSG_MAX];

__attribute__((format(printf, 2, 0))) static int vset(int code, const char *fmt, va_list ap)
{
    vsnprintf(err_msg, sizeof(err_msg), fmt, ap);
    return code;
}

int vmt_error_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(code, fmt, ap);
    va_end(ap);
    return code;
}

int vmt_error_errno(int code, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(code, fmt, ap);
    va_end(ap);
    size_t n = strlen(err_msg);
    if (n < sizeof(err_msg))
        snprintf(err_msg + n, sizeof(err_msg) - n, ": %s", strerror(errnum));
    return code;
}

int vmt_error_wrap(int code, const char *fmt, ...)
{
    char old[MSG_MAX];
    char prefix[MSG_MAX];
    va_list ap;

    memcpy(old, err_msg, sizeof(old));
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    /* Truncation of an over-long message is fine; build it piecewise. */
    size_t n = strnlen(prefix, sizeof(err_msg) - 1);
    memcpy(err_msg, prefix, n);
    err_msg[n] = '\0';
    if (old[0] && n + 2 < sizeof(err_msg)) {
        memcpy(err_msg + n, ": ", 2);
        size_t m = strnlen(old, sizeof(err_msg) - n - 3);
        memcpy(err_msg + n + 2, old, m);
        err_msg[n + 2 + m] = '\0';
    }
    return code;
}

const char *vmt_error_last(void)
{
    return err_msg;
}

void vmt_error_clear(void)
{
    err_msg[0] = '\0';
}

const char *vmt_strerror(int code)
{
    switch (code) {
    case VMT_OK: return "VMT_OK";
    case VMT_ERR: return "VMT_ERR";
    case VMT_ENOMEM: return "VMT_ENOMEM";
    case VMT_EINVAL: return "VMT_EINVAL";
    case VMT_EIO: return "VMT_EIO";
    case VMT_ENOENT: return "VMT_ENOENT";
    case VMT_EEXIST: return "VMT_EEXIST";
    case VMT_ECORRUPT: return "VMT_ECORRUPT";
    case VMT_EUNSUPPORTED: return "VMT_EUNSUPPORTED";
    case VMT_EBUSY: return "VMT_EBUSY";
    case VMT_ERANGE: return "VMT_ERANGE";
    case VMT_ETIMEDOUT: return "VMT_ETIMEDOUT";
    case VMT_ECANCELED: return "VMT_ECANCELED";
    case VMT_EPROTO: return "VMT_EPROTO";
    case VMT_EAUTH: return "VMT_EAUTH";
    case VMT_EINDOUBT: return "VMT_EINDOUBT";
    default: return "VMT_E?";
    }
}
