/* Overflow-checked allocation and time helpers (see util.h). */
#include "vmtree/util.h"

#include <stdlib.h>
#include <time.h>

void *vmt_mallocn(size_t n, size_t size)
{
    size_t bytes;
    if (vmt_mul_overflow(n, size, &bytes)) {
        vmt_error_set(VMT_ERANGE, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        vmt_error_set(VMT_ENOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *vmt_callocn(size_t n, size_t size)
{
    size_t bytes;
    if (vmt_mul_overflow(n, size, &bytes)) {
        vmt_error_set(VMT_ERANGE, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        vmt_error_set(VMT_ENOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *vmt_reallocn(void *old, size_t n, size_t size)
{
    size_t bytes;
    if (vmt_mul_overflow(n, size, &bytes)) {
        vmt_error_set(VMT_ERANGE, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    void *p = realloc(old, bytes ? bytes : 1);
    if (!p)
        vmt_error_set(VMT_ENOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

uint64_t vmt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
